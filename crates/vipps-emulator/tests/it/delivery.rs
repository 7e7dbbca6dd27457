//! Webhook delivery from the request servers: signatures, source addresses, rotation, DNS, retries and ordering.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{Value, json};
use vipps_emulator::{Config, MerchantConfig, MerchantEnvironment};

use crate::common::*;

/// One received request.
#[derive(Debug, Clone)]
pub struct Received {
    pub peer: IpAddr,
    pub path: String,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
pub struct ReceiverState {
    pub got: Mutex<Vec<Received>>,
    /// Remaining failures per payment reference.
    pub fail: Mutex<std::collections::HashMap<String, u32>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub state: Arc<ReceiverState>,
}

async fn receive(
    State(st): State<Arc<ReceiverState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> StatusCode {
    let reference = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["reference"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let status = {
        let mut fail = st.fail.lock();
        match fail.get_mut(&reference) {
            Some(n) if *n > 0 => {
                *n -= 1;
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::OK,
        }
    };
    st.got.lock().push(Received {
        peer: peer.ip(),
        path: uri.to_string(),
        headers,
        body,
        status: status.as_u16(),
    });
    status
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new()
            .route("/hooks/vipps", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Receiver { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/vipps?shop=1", self.addr)
    }

    pub fn for_reference(&self, reference: &str) -> Vec<Received> {
        self.state
            .got
            .lock()
            .iter()
            .filter(|r| r.json()["reference"] == reference)
            .cloned()
            .collect()
    }

    pub async fn wait_for(&self, reference: &str, n: usize) -> Vec<Received> {
        for _ in 0..500 {
            let got = self.for_reference(reference);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "timed out waiting for {n} deliveries of {reference}; got {:?}",
            self.for_reference(reference).len()
        );
    }
}

/// Waits until the emulator has recorded `n` delivery attempts for `reference`. The receiver sees a delivery before
/// the emulator records its outcome (and, for a failure, when to retry), so a test that moves the clock or reads
/// the record right after the receiver got a delivery must wait for the record first.
pub async fn attempts_recorded(env: &Env, reference: &str, n: usize) -> Vec<Value> {
    for _ in 0..500 {
        let attempts: Vec<Value> = env
            .control(
                Method::GET,
                &format!("/_emulator/deliveries?reference={reference}"),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        if attempts.len() >= n {
            return attempts;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {n} recorded delivery attempts of {reference}");
}

pub async fn register(env: &Env, token: &str, url: &str) -> (String, String) {
    let events = vipps_types::webhooks::epayment_event_types();
    let r = env
        .post_json(
            token,
            "/webhooks/v1/webhooks",
            None,
            json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

/// Verifies a delivery with an independent implementation (Python's hmac and hashlib).
fn verify_independently(secret: &str, r: &Received, host: &str) {
    let script = r#"
import base64, hashlib, hmac, json, sys
d = json.load(sys.stdin)
body = base64.b64decode(d["body"])
h = base64.b64encode(hashlib.sha256(body).digest()).decode()
msg = "POST\n" + d["path"] + "\n" + d["date"] + ";" + d["host"] + ";" + h
sig = base64.b64encode(hmac.new(d["secret"].encode("utf-8"), msg.encode("utf-8"), hashlib.sha256).digest()).decode()
print(json.dumps({"hash": h, "authorization": "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=" + sig}))
"#;
    use base64::Engine as _;
    let input = json!({
        "secret": secret,
        "path": r.path,
        "host": host,
        "date": r.headers["x-ms-date"].to_str().unwrap(),
        "body": base64::engine::general_purpose::STANDARD.encode(&r.body),
    });
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r.headers["x-ms-content-sha256"].to_str().unwrap(),
        v["hash"]
    );
    assert_eq!(
        r.headers["authorization"].to_str().unwrap(),
        v["authorization"]
    );
    assert_eq!(r.headers["host"].to_str().unwrap(), host);
}

pub async fn dns_lookup(server: SocketAddr, name: &str) -> Vec<IpAddr> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    let mut ns = NameServerConfig::udp(server.ip());
    for c in ns.connections.iter_mut() {
        c.port = server.port();
    }
    let cfg = ResolverConfig::from_parts(None, vec![], vec![ns]);
    let resolver =
        hickory_resolver::Resolver::builder_with_config(cfg, TokioRuntimeProvider::default())
            .build()
            .unwrap();
    let lookup = resolver.lookup_ip(name).await.unwrap();
    lookup.iter().collect()
}

#[tokio::test]
async fn signed_delivery_from_the_active_server_and_rotation() {
    let cfg = Config {
        dns_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::ephemeral()
    };
    let env = start_with(cfg).await;
    let dns = env.emu.dns_addr().unwrap();
    let rx = Receiver::start().await;
    let t = env.token().await;
    let (hook_id, secret) = register(&env, &t, &rx.url()).await;
    env.create(&t, "order-hook-0001", 1000, "create-key").await;
    let got = rx.wait_for("order-hook-0001", 1).await;
    let r = &got[0];
    assert_eq!(
        r.peer.to_string(),
        "127.0.3.1",
        "test merchants' webhooks leave from callback-mt-1"
    );
    assert_eq!(r.path, "/hooks/vipps?shop=1");
    let body = r.json();
    assert_eq!(body["name"], "CREATED");
    assert_eq!(body["msn"], "123456");
    assert_eq!(body["amount"], json!({"currency": "NOK", "value": 1000}));
    assert_eq!(body["idempotencyKey"], "create-key");
    assert_eq!(body["success"], true);
    assert!(body["pspReference"].is_string() && body["timestamp"].is_string());
    verify_independently(&secret, r, &rx.addr.to_string());
    // And with the contract crate's verifier.
    let d = vipps_types::signing::Delivery {
        path_and_query: &r.path,
        host: r.headers["host"].to_str().unwrap(),
        x_ms_date: r.headers["x-ms-date"].to_str().unwrap(),
        x_ms_content_sha256: r.headers["x-ms-content-sha256"].to_str().unwrap(),
        authorization: r.headers["authorization"].to_str().unwrap(),
        body: &r.body,
    };
    vipps_types::signing::verify(
        &secret,
        &d,
        std::time::SystemTime::now(),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(
        dns_lookup(dns, "callback-mt-1.vipps.no").await,
        vec!["127.0.3.1".parse::<IpAddr>().unwrap()]
    );

    // The attempt is in the delivery record.
    let attempts = attempts_recorded(&env, "order-hook-0001", 1).await;
    assert_eq!(attempts.len(), 1);
    let a = &attempts[0];
    assert_eq!(a["event"], "epayments.payment.created.v1");
    assert_eq!(a["webhook_id"], hook_id.as_str());
    assert_eq!(a["attempt"], 1);
    assert_eq!(a["response_status"], 200);
    assert_eq!(a["source_address"], "127.0.3.1");
    assert!(
        a["request_headers"]["x-ms-date"].is_string()
            && a["latency_ms"].is_number()
            && a["time"].is_string()
    );
    assert!(
        !a.to_string().contains(&secret),
        "the secret is never recorded"
    );

    // Rotation: the next server becomes active at a new address, in DNS and as the peer.
    let view: Value = env
        .control(
            Method::POST,
            "/_emulator/request-servers/rotate",
            Some(json!({"pool": "test"})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["test"]["active"], "callback-mt-2.vipps.no");
    let new_ip: IpAddr = view["test"]["source_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(new_ip.to_string(), "127.0.3.2");
    assert_eq!(
        dns_lookup(dns, "callback-mt-2.vipps.no").await,
        vec![new_ip]
    );
    env.approve(&t, "order-hook-0001").await;
    let got = rx.wait_for("order-hook-0001", 2).await;
    assert_eq!(got[1].json()["name"], "AUTHORIZED");
    assert_eq!(got[1].peer, new_ip);
}

#[tokio::test]
async fn failing_receiver_gets_retries_in_order_without_blocking_other_payments() {
    let env = start().await;
    let rx = Receiver::start().await;
    let t = env.token().await;
    register(&env, &t, &rx.url()).await;
    rx.state.fail.lock().insert("order-retry-0001".into(), 3);
    env.create(&t, "order-retry-0001", 1000, "a").await;
    env.approve(&t, "order-retry-0001").await;
    rx.wait_for("order-retry-0001", 1).await;
    // Another payment is not held back by the failing one.
    env.create(&t, "order-other-0001", 1000, "b").await;
    let other = rx.wait_for("order-other-0001", 1).await;
    assert_eq!(other[0].status, 200);
    assert_eq!(
        rx.for_reference("order-retry-0001").len(),
        1,
        "retries wait for emulator time"
    );
    // Retries follow emulator time: 2 s apart at first (counted from when the failure is recorded).
    for n in 2..=4 {
        attempts_recorded(&env, "order-retry-0001", n - 1).await;
        env.control(
            Method::POST,
            "/_emulator/clock/advance",
            Some(json!({"seconds": 2})),
        )
        .await;
        rx.wait_for("order-retry-0001", n).await;
    }
    let got = rx.wait_for("order-retry-0001", 5).await;
    let seq: Vec<(String, u16)> = got
        .iter()
        .map(|r| (r.json()["name"].as_str().unwrap().to_owned(), r.status))
        .collect();
    assert_eq!(
        seq,
        [
            ("CREATED".into(), 500),
            ("CREATED".into(), 500),
            ("CREATED".into(), 500),
            ("CREATED".into(), 200),
            ("AUTHORIZED".into(), 200)
        ],
        "the event arrives four times, then the next event of the same payment"
    );
    // The same event keeps its identity across attempts.
    let ids: std::collections::HashSet<String> = got[..4]
        .iter()
        .map(|r| r.json()["pspReference"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
    let attempts = attempts_recorded(&env, "order-retry-0001", 5).await;
    let nums: Vec<i64> = attempts
        .iter()
        .map(|a| a["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(nums, [1, 2, 3, 4, 1]);
    assert_eq!(attempts[0]["outcome"], "retry");
    assert_eq!(attempts[3]["outcome"], "delivered");
}

#[tokio::test]
async fn production_merchants_use_production_servers_and_failover() {
    let prod = MerchantConfig {
        environment: MerchantEnvironment::Production,
        ..MerchantConfig::test("222222", "p-id", "p-secret", "p-key").unwrap()
    };
    let env = start_with(Config::ephemeral().with_merchant(prod)).await;
    let rx = Receiver::start().await;
    let t = env.token_for("p-id", "p-secret", "p-key").await;
    let call = |m: Method, p: &str| {
        env.http
            .request(m, env.url(p))
            .bearer_auth(&t)
            .header("Ocp-Apim-Subscription-Key", "p-key")
            .header("Merchant-Serial-Number", "222222")
    };
    let events = vipps_types::webhooks::epayment_event_types();
    assert_eq!(
        call(Method::POST, "/webhooks/v1/webhooks")
            .json(&json!({"url": rx.url(), "events": events}))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    call(Method::POST, "/epayment/v1/payments")
        .header("Idempotency-Key", "p1")
        .json(&create_body("order-prod-hook1", 1000))
        .send()
        .await
        .unwrap();
    assert_eq!(
        rx.wait_for("order-prod-hook1", 1).await[0].peer.to_string(),
        "127.0.1.1"
    );
    let v: Value = env
        .control(
            Method::POST,
            "/_emulator/request-servers/failover",
            Some(json!({"to": "disaster-recovery"})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["production"]["active"], "callback-dr-1.vipps.no");
    call(
        Method::POST,
        "/epayment/v1/payments/order-prod-hook1/cancel",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        rx.wait_for("order-prod-hook1", 2).await[1].peer.to_string(),
        "127.0.2.1"
    );
    let v: Value = env
        .control(
            Method::POST,
            "/_emulator/request-servers/failover",
            Some(json!({"to": "production"})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["production"]["failover"], false);
}

#[tokio::test]
async fn scheduled_rotation_give_up_and_removal_follow_emulator_time() {
    let env = start().await;
    let rx = Receiver::start().await;
    let t = env.token().await;
    let (hook_id, _) = register(&env, &t, &rx.url()).await;
    rx.state
        .fail
        .lock()
        .insert("order-dead-00001".into(), u32::MAX);
    env.create(&t, "order-dead-00001", 1000, "d").await;
    rx.wait_for("order-dead-00001", 1).await;
    // Eight days later the event is given up.
    env.control(
        Method::POST,
        "/_emulator/clock/advance",
        Some(json!({"seconds": 8 * 86400})),
    )
    .await;
    rx.wait_for("order-dead-00001", 2).await;
    let mut outcome = Value::Null;
    for _ in 0..200 {
        let attempts: Vec<Value> = env
            .control(
                Method::GET,
                "/_emulator/deliveries?reference=order-dead-00001&event=epayments.payment.created.v1",
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        outcome = attempts
            .last()
            .map(|a| a["outcome"].clone())
            .unwrap_or_default();
        if outcome == "given_up" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if outcome != "given_up" {
        let all: Value = env.control(Method::GET, "/_emulator/deliveries?reference=order-dead-00001&event=epayments.payment.created.v1", None).await.json().await.unwrap();
        eprintln!("{all:#}");
    }
    assert_eq!(outcome, "given_up");
    // Two weeks without a success: the registration is removed.
    env.control(
        Method::POST,
        "/_emulator/clock/advance",
        Some(json!({"seconds": 7 * 86400})),
    )
    .await;
    let list: Value = env
        .get(&env.token().await, "/webhooks/v1/webhooks")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        list["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["id"] != hook_id.as_str())
    );
    // About 90 days after start the active servers rotate by themselves.
    let before: Value = env
        .control(Method::GET, "/_emulator/request-servers", None)
        .await
        .json()
        .await
        .unwrap();
    env.control(
        Method::POST,
        "/_emulator/clock/advance",
        Some(json!({"seconds": 76 * 86400})),
    )
    .await;
    let after: Value = env
        .control(Method::GET, "/_emulator/request-servers", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before["test"]["active"], "callback-mt-1.vipps.no");
    assert_eq!(after["test"]["active"], "callback-mt-2.vipps.no");
    assert_eq!(after["production"]["active"], "callback-2.vipps.no");
}
