//! The emulator through its public API and HTTP controls, a cuttable relay in front of its DNS, and a plain
//! webhook receiver.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::post;
use reqwest::Method;
use serde_json::{Value, json};
use vipps_emulator::{Config, Emulator};

/// The demo subscription key of the emulator.
pub const KEY: &str = "demo-subscription-key";
/// The demo merchant serial number.
pub const MSN: &str = "123456";

/// The bound on each wait for something asynchronous (a delivery, an attempt record).
pub const WAIT: Duration = Duration::from_secs(10);

/// An in-process emulator with its embedded DNS on 127.0.0.1, and a merchant's access token.
pub struct Platform {
    /// The emulator.
    pub emu: Emulator,
    /// Its base URL without the trailing slash.
    pub base: String,
    http: reqwest::Client,
    token: String,
}

impl Platform {
    /// Starts an ephemeral emulator whose DNS answers with the default TTL.
    pub async fn start() -> Platform {
        Self::start_with(None).await
    }

    /// Starts an ephemeral emulator whose DNS answers with TTL `dns_ttl` seconds (default when `None`).
    pub async fn start_with(dns_ttl: Option<u32>) -> Platform {
        let mut cfg = Config {
            dns_listen: Some("127.0.0.1:0".parse().expect("address")),
            ..Config::ephemeral()
        };
        if let Some(ttl) = dns_ttl {
            cfg.dns_ttl = ttl;
        }
        let emu = Emulator::start(cfg).await.expect("the emulator starts");
        let base = emu.base_url().as_str().trim_end_matches('/').to_owned();
        let http = reqwest::Client::new();
        let token = demo_token(&http, &base).await;
        Platform {
            emu,
            base,
            http,
            token,
        }
    }

    /// The embedded DNS.
    pub fn dns(&self) -> SocketAddr {
        self.emu.dns_addr().expect("the embedded DNS runs")
    }

    /// A merchant API request with the access token and headers.
    pub fn api(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Ocp-Apim-Subscription-Key", KEY)
            .header("Merchant-Serial-Number", MSN)
    }

    /// Registers a webhook for every ePayment event; returns the secret.
    pub async fn register(&self, url: &str) -> String {
        let events = vipps_types::webhooks::epayment_event_types();
        let r = self
            .api(Method::POST, "/webhooks/v1/webhooks")
            .json(&json!({"url": url, "events": events}))
            .send()
            .await
            .expect("register");
        assert_eq!(r.status(), 201, "webhook registration");
        let v: Value = r.json().await.expect("JSON");
        v["secret"].as_str().expect("secret").to_owned()
    }

    /// Creates a payment.
    pub async fn create(&self, reference: &str) {
        let r = self
            .api(Method::POST, "/epayment/v1/payments")
            .header("Idempotency-Key", format!("{reference}-create"))
            .json(&json!({
                "amount": {"currency": "NOK", "value": 1000},
                "paymentMethod": {"type": "WALLET"},
                "reference": reference,
                "userFlow": "WEB_REDIRECT",
                "returnUrl": "https://example.com/return"
            }))
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201, "create {reference}");
    }

    /// Approves a payment as the test user.
    pub async fn approve(&self, reference: &str) {
        let r = self
            .api(
                Method::POST,
                &format!("/epayment/v1/test/payments/{reference}/approve"),
            )
            .json(&json!({"customer": {"phoneNumber": "4791234567"}}))
            .send()
            .await
            .expect("approve");
        assert!(
            r.status().is_success(),
            "approve {reference}: {}",
            r.status()
        );
    }

    /// Calls an emulator control endpoint; asserts success and returns the JSON body.
    pub async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut b = self.http.request(method, format!("{}{path}", self.base));
        if let Some(v) = body {
            b = b.json(&v);
        }
        let r = b.send().await.expect("control request");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.expect("control JSON")
    }

    /// Advances the emulator clock.
    pub async fn advance(&self, seconds: u64) {
        self.control(
            Method::POST,
            "/_emulator/clock/advance",
            Some(json!({"seconds": seconds})),
        )
        .await;
    }

    /// Rotates a pool (`test`, `production`, `disaster-recovery`); returns the new state.
    pub async fn rotate(&self, pool: &str) -> Value {
        self.control(
            Method::POST,
            "/_emulator/request-servers/rotate",
            Some(json!({ "pool": pool })),
        )
        .await
    }

    /// Fails production over (`disaster-recovery`) or back (`production`); returns the new state.
    pub async fn failover(&self, to: &str) -> Value {
        self.control(
            Method::POST,
            "/_emulator/request-servers/failover",
            Some(json!({ "to": to })),
        )
        .await
    }

    /// Rotates the test pool; returns the new active server and its address.
    pub async fn rotate_test(&self) -> (String, IpAddr) {
        let v = self.rotate("test").await;
        (
            v["test"]["active"].as_str().expect("active").to_owned(),
            v["test"]["source_address"]
                .as_str()
                .expect("source_address")
                .parse()
                .expect("an address"),
        )
    }

    /// The delivery record of a payment, oldest attempt first.
    pub async fn attempts(&self, reference: &str) -> Vec<Value> {
        let v = self
            .control(
                Method::GET,
                &format!("/_emulator/deliveries?reference={reference}"),
                None,
            )
            .await;
        v.as_array().expect("an array").clone()
    }

    /// Waits (at most `wait`) until the delivery record of `reference` has attempt `attempt_no` of `event_name`.
    pub async fn wait_attempt_within(
        &self,
        reference: &str,
        event_name: &str,
        attempt_no: u64,
        wait: Duration,
    ) -> Value {
        let deadline = Instant::now() + wait;
        loop {
            let all = self.attempts(reference).await;
            if let Some(a) = all
                .iter()
                .find(|a| a["event_name"] == event_name && a["attempt"] == attempt_no)
            {
                return a.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no attempt {attempt_no} of {event_name} for {reference}; record: {all:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`Platform::wait_attempt_within`] with [`WAIT`].
    pub async fn wait_attempt(&self, reference: &str, event_name: &str, attempt_no: u64) -> Value {
        self.wait_attempt_within(reference, event_name, attempt_no, WAIT)
            .await
    }

    /// Asserts that attempt `attempt_no` of `event_name` has not come within 300 ms of real time (the emulator
    /// clock not advanced).
    pub async fn assert_no_attempt(&self, reference: &str, event_name: &str, attempt_no: u64) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let all = self.attempts(reference).await;
        assert!(
            !all.iter()
                .any(|a| a["event_name"] == event_name && a["attempt"] == attempt_no),
            "attempt {attempt_no} of {event_name} came before the emulator clock moved: {all:#?}"
        );
    }
}

/// A UDP relay in front of a DNS server that can be cut (packets dropped), to make DNS unreachable while
/// everything else keeps running. Stops on drop.
pub struct Relay {
    /// Where it listens.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts relaying to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Relay {
        let sock = Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
        let addr = sock.local_addr().expect("local address");
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let query = buf[..n].to_vec();
                let sock = sock.clone();
                tokio::spawn(async move {
                    let Ok(out) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
                        return;
                    };
                    if out.send_to(&query, upstream).await.is_err() {
                        return;
                    }
                    let mut answer = vec![0u8; 4096];
                    if let Ok(Ok(m)) =
                        tokio::time::timeout(Duration::from_secs(1), out.recv(&mut answer)).await
                    {
                        let _ = sock.send_to(&answer[..m], from).await;
                    }
                });
            }
        });
        Relay { addr, up, task }
    }

    /// Relays (`true`) or drops every query (`false`).
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
}

/// A plain webhook receiver on 127.0.0.1 that answers 200 to every POST and records it (no allowlist, no
/// signature check: what guards it is outside, for example the kernel firewall).
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Delivery>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn record(
    State(seen): State<Arc<Mutex<Vec<Delivery>>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> StatusCode {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().expect("seen").push(Delivery { peer, body });
    StatusCode::OK
}

impl Receiver {
    /// Serves on a free port of 127.0.0.1.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/{*path}", post(record))
            .with_state(seen.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        Receiver { addr, seen, task }
    }

    /// Every delivery so far.
    pub fn seen(&self) -> Vec<Delivery> {
        self.seen.lock().expect("seen").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An access token of the demo merchant from the emulator at `base` (no trailing slash).
pub async fn demo_token(http: &reqwest::Client, base: &str) -> String {
    let r = http
        .post(format!("{base}/accesstoken/get"))
        .header("client_id", "demo-client-id")
        .header("client_secret", "demo-client-secret")
        .header("Ocp-Apim-Subscription-Key", KEY)
        .send()
        .await
        .expect("access token request");
    assert_eq!(r.status(), 200, "access token");
    r.json::<Value>().await.expect("token JSON")["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}
