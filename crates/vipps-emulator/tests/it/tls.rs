//! The TLS edge over real sockets: the HTTPS listener chooses its certificate by SNI and refuses other names, the
//! environment split by hostname, the local certificate authority kept in the store, the CONNECT-only proxy, the
//! DNS answers for the API hostnames, and the demo merchant yielding to a configured one.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vipps_emulator::{Config, MerchantConfig, MerchantEnvironment};
use vipps_test_support::table::{Case, check_async, expect_eq};

use crate::common::*;

const ANY: &str = "127.0.0.1:0";

fn tls_config() -> Config {
    Config {
        tls_listen: Some(ANY.parse().unwrap()),
        proxy_listen: Some(ANY.parse().unwrap()),
        ..Config::ephemeral()
    }
    .with_merchant(production_merchant())
}

fn production_merchant() -> MerchantConfig {
    let mut m = MerchantConfig::test("765432", "prod-id", "prod-secret", "prod-key").unwrap();
    m.environment = MerchantEnvironment::Production;
    m
}

/// A client that trusts only the emulator's authority and reaches the vendor's hostnames (and `example.com`, to
/// ask for a name the emulator does not serve) at the HTTPS listener.
fn https_client(env: &Env) -> Client {
    let tls = env.emu.tls_addr().expect("the HTTPS listener runs");
    let ca = reqwest::Certificate::from_pem(env.emu.ca_pem().unwrap().as_bytes()).unwrap();
    Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve("api.vipps.no", tls)
        .resolve("apitest.vipps.no", tls)
        .resolve("example.com", tls)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn https(host: &str, env: &Env, path: &str) -> String {
    format!(
        "https://{host}:{}{path}",
        env.emu.tls_addr().unwrap().port()
    )
}

#[tokio::test]
async fn https_serves_the_vendor_hostnames_and_refuses_other_names_without_harm_to_other_connections()
 {
    let env = start_with(tls_config()).await;
    let client = https_client(&env);
    let ok = client
        .get(https("apitest.vipps.no", &env, "/_emulator/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.version(), reqwest::Version::HTTP_2, "h2 by ALPN");
    // Another name: the handshake fails, cleanly, for that connection only.
    let refused = client
        .get(https("example.com", &env, "/_emulator/health"))
        .send()
        .await
        .unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");
    // The pooled connection and new ones still work.
    for host in ["apitest.vipps.no", "api.vipps.no"] {
        let r = client
            .get(https(host, &env, "/_emulator/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    // A client that does not trust the authority is refused by its own verifier.
    let untrusting = Client::builder()
        .no_proxy()
        .resolve("apitest.vipps.no", env.emu.tls_addr().unwrap())
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(https("apitest.vipps.no", &env, "/"))
            .send()
            .await
            .is_err()
    );
    // Plain HTTP on the TLS port is not HTTP: the connection is closed, the listener keeps serving.
    let mut plain = tokio::net::TcpStream::connect(env.emu.tls_addr().unwrap())
        .await
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: apitest.vipps.no\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
    let r = client
        .get(https("apitest.vipps.no", &env, "/_emulator/clock"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A token request on one host with one merchant's keys.
#[derive(Debug)]
struct KeysOnHost {
    host: &'static str,
    merchant: &'static str,
    status: u16,
}

impl Case for KeysOnHost {
    fn name(&self) -> String {
        format!("{} keys on {}", self.merchant, self.host)
    }
}

const KEYS_ON_HOSTS: &[KeysOnHost] = &[
    KeysOnHost {
        host: "apitest.vipps.no",
        merchant: "test",
        status: 200,
    },
    KeysOnHost {
        host: "api.vipps.no",
        merchant: "test",
        status: 401,
    },
    KeysOnHost {
        host: "api.vipps.no",
        merchant: "production",
        status: 200,
    },
    KeysOnHost {
        host: "apitest.vipps.no",
        merchant: "production",
        status: 401,
    },
    // Plain HTTP without a vendor host keeps working for both.
    KeysOnHost {
        host: "plain",
        merchant: "test",
        status: 200,
    },
    KeysOnHost {
        host: "plain",
        merchant: "production",
        status: 200,
    },
    // A vendor host on the plain listener names its environment too.
    KeysOnHost {
        host: "plain as api.vipps.no",
        merchant: "test",
        status: 401,
    },
];

#[tokio::test]
async fn keys_work_only_on_their_own_environment_as_on_the_real_platform() {
    let env = start_with(tls_config()).await;
    let client = https_client(&env);
    check_async(KEYS_ON_HOSTS, |c| {
        let (client, env) = (&client, &env);
        async move {
            let (id, secret, key) = match c.merchant {
                "test" => ("demo-client-id", "demo-client-secret", KEY),
                _ => ("prod-id", "prod-secret", "prod-key"),
            };
            let req = match c.host {
                "plain" => env.http.post(env.url("/accesstoken/get")),
                "plain as api.vipps.no" => env
                    .http
                    .post(env.url("/accesstoken/get"))
                    .header("host", "api.vipps.no"),
                host => client.post(https(host, env, "/accesstoken/get")),
            };
            let r = req
                .header("client_id", id)
                .header("client_secret", secret)
                .header("Ocp-Apim-Subscription-Key", key)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.map_err(|e| e.to_string())?;
            expect_eq("status", status, c.status)?;
            if status == 401 {
                // The gateway's answer for a key it does not know.
                let message = body["message"].as_str().unwrap_or_default();
                if !message.contains("invalid subscription key") {
                    return Err(format!("not the gateway's answer: {body}"));
                }
            }
            Ok(())
        }
    })
    .await;

    // A test token used against production is refused by the gateway too, before the token is looked at.
    let token = env.token().await;
    let r = client
        .get(https(
            "api.vipps.no",
            &env,
            "/epayment/v1/payments/order-tls-0001",
        ))
        .bearer_auth(&token)
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Merchant-Serial-Number", MSN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client
        .get(https(
            "apitest.vipps.no",
            &env,
            "/epayment/v1/payments/order-tls-0001",
        ))
        .bearer_auth(&token)
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Merchant-Serial-Number", MSN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "authenticated on its own environment"
    );
}

#[tokio::test]
async fn the_authority_is_kept_in_the_data_directory_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || Config {
        storage: vipps_emulator::Storage::Dir(dir.path().to_owned()),
        tls_listen: Some(ANY.parse().unwrap()),
        ..Config::ephemeral()
    };
    let first = vipps_emulator::Emulator::start(cfg()).await.unwrap();
    let pem = first.ca_pem().unwrap().to_owned();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let file = first
        .ca_file()
        .expect("ca.pem in the data directory")
        .to_owned();
    assert_eq!(file, dir.path().join("ca.pem"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), pem);
    let served = reqwest::get(format!("{}_emulator/tls/ca.pem", first.base_url()))
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.text().await.unwrap(), pem);
    first.shutdown().await;
    // The same authority after a restart: clients that trusted it keep working.
    let again = vipps_emulator::Emulator::start(cfg()).await.unwrap();
    assert_eq!(again.ca_pem(), Some(pem.as_str()));
    again.shutdown().await;
    // A throwaway emulator makes its own.
    let fresh = start_with(tls_config()).await;
    assert_ne!(fresh.emu.ca_pem(), Some(pem.as_str()));
}

#[tokio::test]
async fn without_tls_there_is_no_authority_and_the_certificate_is_served_without_controls() {
    let env = start().await;
    assert_eq!(env.emu.ca_pem(), None);
    let r = env
        .control(reqwest::Method::GET, "/_emulator/tls/ca.pem", None)
        .await;
    let p = problem(r, 404, None).await;
    assert!(
        p["detail"].as_str().unwrap().contains("--tls-listen"),
        "{p}"
    );

    let env = start_with(Config {
        controls: false,
        ..tls_config()
    })
    .await;
    let r = env
        .control(reqwest::Method::GET, "/_emulator/tls/ca.pem", None)
        .await;
    assert_eq!(r.status(), 200);
    let r = env
        .control(reqwest::Method::GET, "/_emulator/env", None)
        .await;
    assert_eq!(r.status(), 404, "the other controls are off");
}

#[tokio::test]
async fn env_describes_how_to_reach_the_emulator() {
    let env = start_with(tls_config()).await;
    let v: Value = env
        .control(reqwest::Method::GET, "/_emulator/env", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["base_url"], format!("{}/", env.base));
    assert_eq!(v["tls"]["listen"], env.emu.tls_addr().unwrap().to_string());
    assert_eq!(
        v["proxy"]["listen"],
        env.emu.proxy_addr().unwrap().to_string()
    );
    assert_eq!(
        v["tls"]["hosts"],
        serde_json::json!(["api.vipps.no", "apitest.vipps.no"])
    );
    assert_eq!(v["demo_merchant"]["client_secret"], "demo-client-secret");
    // A configured merchant's secrets are never in it.
    assert!(!v.to_string().contains("prod-secret"), "{v}");
}

/// What the proxy is asked, raw, and what it must answer.
#[derive(Debug)]
struct ProxyAsk {
    request: &'static str,
    status: u16,
    because: &'static str,
}

impl Case for ProxyAsk {
    fn name(&self) -> String {
        self.request.lines().next().unwrap_or_default().to_owned()
    }
}

const PROXY_ASKS: &[ProxyAsk] = &[
    ProxyAsk {
        request: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        status: 403,
        because: "example.com:443 was refused",
    },
    ProxyAsk {
        request: "CONNECT api.vipps.no:8443 HTTP/1.1\r\nHost: api.vipps.no:8443\r\n\r\n",
        status: 403,
        because: "never forwards",
    },
    ProxyAsk {
        request: "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n",
        status: 403,
        because: "127.0.0.1:443 was refused",
    },
    ProxyAsk {
        request: "GET http://api.vipps.no/accesstoken/get HTTP/1.1\r\nHost: api.vipps.no\r\n\r\n",
        status: 403,
        because: "only opens HTTPS tunnels (CONNECT)",
    },
    ProxyAsk {
        request: "CONNECT apitest.vipps.no:443 HTTP/1.1\r\nHost: apitest.vipps.no:443\r\n\r\n",
        status: 200,
        because: "",
    },
];

async fn ask_proxy(proxy: SocketAddr, request: &str) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(proxy)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    // Read the head and, for a refusal, the body it announces.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .map_err(|_| format!("no answer yet; so far {:?}", String::from_utf8_lossy(&got)))?
            .map_err(|e| e.to_string())?;
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len || n == 0 {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("not an HTTP answer: {head}"))?;
                return Ok((status, body.to_owned()));
            }
        }
        if n == 0 {
            return Err(format!("closed early: {text}"));
        }
    }
}

#[tokio::test]
async fn the_proxy_tunnels_to_the_vendor_hostnames_only_and_never_forwards() {
    let env = start_with(tls_config()).await;
    let proxy = env.emu.proxy_addr().unwrap();
    check_async(PROXY_ASKS, |c| async move {
        let (status, body) = ask_proxy(proxy, c.request).await?;
        expect_eq("status", status, c.status)?;
        if !body.contains(c.because) {
            return Err(format!("the body does not say `{}`: {body}", c.because));
        }
        Ok(())
    })
    .await;

    // A client that honours a proxy: the request is answered by the emulator, on its test environment.
    let ca = reqwest::Certificate::from_pem(env.emu.ca_pem().unwrap().as_bytes()).unwrap();
    let client = Client::builder()
        .proxy(reqwest::Proxy::https(format!("http://{proxy}")).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = client
        .post("https://apitest.vipps.no/accesstoken/get")
        .header("client_id", "demo-client-id")
        .header("client_secret", "demo-client-secret")
        .header("Ocp-Apim-Subscription-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post("https://api.vipps.no/accesstoken/get")
        .header("client_id", "demo-client-id")
        .header("client_secret", "demo-client-secret")
        .header("Ocp-Apim-Subscription-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "test keys on production, through the proxy"
    );
    let refused = client.get("https://example.com/").send().await.unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");
    let recorded = env.requests("path=/accesstoken/get").await;
    assert_eq!(
        recorded.len(),
        2,
        "both tunnelled requests were served here"
    );
}

#[tokio::test]
async fn the_embedded_dns_answers_the_api_hostnames_with_the_https_address() {
    let env = start_with(Config {
        dns_listen: Some(ANY.parse().unwrap()),
        dns_api_hosts: true,
        ..tls_config()
    })
    .await;
    let dns = env.emu.dns_addr().unwrap();
    let ip = env.emu.tls_addr().unwrap().ip();
    assert_eq!(env.emu.dns_api_address(), Some(ip));
    for host in ["api.vipps.no", "apitest.vipps.no"] {
        assert_eq!(
            crate::delivery::dns_lookup(dns, host).await,
            vec![ip],
            "{host}"
        );
    }
    // A rotation rewrites the request servers' answers and keeps these.
    let r = env
        .control(
            reqwest::Method::POST,
            "/_emulator/request-servers/rotate",
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        crate::delivery::dns_lookup(dns, "apitest.vipps.no").await,
        vec![ip]
    );
    assert!(
        !crate::delivery::dns_lookup(dns, "callback-mt-2.vipps.no")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_configured_merchant_with_the_demo_msn_wins_over_the_demo_merchant() {
    let mine = MerchantConfig::test("123456", "my-id", "my-secret", "my-key").unwrap();
    let env = start_with(Config::ephemeral().with_merchant(mine)).await;
    assert!(env.emu.demo_merchant().is_none());
    assert_eq!(env.emu.config().merchants.len(), 1);
    env.token_for("my-id", "my-secret", "my-key").await;
    let r = env
        .http
        .post(env.url("/accesstoken/get"))
        .header("client_id", "demo-client-id")
        .header("client_secret", "demo-client-secret")
        .header("Ocp-Apim-Subscription-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the demo keys do not exist");
    let v: Value = env
        .control(reqwest::Method::GET, "/_emulator/env", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["demo_merchant"], Value::Null);
    // Another MSN leaves the demo merchant in place.
    let env = start_with(Config::ephemeral().with_merchant(other_merchant())).await;
    assert_eq!(env.emu.demo_merchant().unwrap().msn.as_str(), "123456");
}
