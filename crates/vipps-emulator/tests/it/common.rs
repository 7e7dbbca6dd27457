//! Shared helpers: an emulator per test, tokens, request builders.

use reqwest::{Client, RequestBuilder, Response};
use serde_json::{Value, json};
use vipps_emulator::{Config, Emulator, MerchantConfig};
pub use vipps_test_support::pg::PgDb;

pub struct Env {
    #[allow(dead_code)]
    pub emu: Emulator,
    pub http: Client,
    pub base: String,
    /// The PostgreSQL database of this test (dropped last), when the suite runs on PostgreSQL.
    #[allow(dead_code)]
    pub pg: Option<PgDb>,
}

/// Whether the whole suite runs on PostgreSQL (`VIPPS_TEST_STORE=postgres`): the conformance run.
pub fn suite_on_postgres() -> bool {
    crate::SUITE_ON_POSTGRES || std::env::var("VIPPS_TEST_STORE").is_ok_and(|v| v == "postgres")
}

pub const MSN: &str = "123456";
pub const KEY: &str = "demo-subscription-key";

pub async fn start() -> Env {
    start_with(Config::ephemeral()).await
}

pub async fn start_with(mut cfg: Config) -> Env {
    let mut pg = None;
    if suite_on_postgres() && cfg.storage == vipps_emulator::Storage::Ephemeral {
        let Some(db) = PgDb::create().await else {
            // No database configured (and not on CI, where `pg_admin_url` fails instead): the whole PostgreSQL
            // conformance run is skipped, with the reason printed above.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipping the PostgreSQL conformance suite: set VIPPS_TEST_POSTGRES_URL (such as \
                 postgres://postgres@127.0.0.1:5432/postgres) to run it"
            );
            std::process::exit(0);
        };
        cfg.storage = vipps_emulator::Storage::Postgres(db.url.clone());
        pg = Some(db);
    }
    let emu = Emulator::start(cfg).await.expect("emulator starts");
    let base = emu.base_url().to_string().trim_end_matches('/').to_owned();
    Env {
        emu,
        http: Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
        base,
        pg,
    }
}

pub fn other_merchant() -> MerchantConfig {
    MerchantConfig::test("654321", "other-id", "other-secret", "other-key").unwrap()
}

impl Env {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn token_for(&self, id: &str, secret: &str, key: &str) -> String {
        let r = self
            .http
            .post(self.url("/accesstoken/get"))
            .header("client_id", id)
            .header("client_secret", secret)
            .header("Ocp-Apim-Subscription-Key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn token(&self) -> String {
        self.token_for("demo-client-id", "demo-client-secret", KEY)
            .await
    }

    /// A request with full demo-merchant authentication and system headers.
    pub fn authed(&self, method: reqwest::Method, path: &str, token: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(token)
            .header("Ocp-Apim-Subscription-Key", KEY)
            .header("Merchant-Serial-Number", MSN)
            .header("Vipps-System-Name", "acme")
            .header("Vipps-System-Version", "1.0.0")
            .header("Vipps-System-Plugin-Name", "acme-tests")
            .header("Vipps-System-Plugin-Version", "0.1.0")
    }

    pub async fn create(&self, token: &str, reference: &str, value: i64, key: &str) -> Response {
        self.authed(reqwest::Method::POST, "/epayment/v1/payments", token)
            .header("Idempotency-Key", key)
            .json(&create_body(reference, value))
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(
        &self,
        token: &str,
        path: &str,
        key: Option<&str>,
        body: Value,
    ) -> Response {
        let mut b = self.authed(reqwest::Method::POST, path, token).json(&body);
        if let Some(k) = key {
            b = b.header("Idempotency-Key", k);
        }
        b.send().await.unwrap()
    }

    pub async fn get(&self, token: &str, path: &str) -> Response {
        self.authed(reqwest::Method::GET, path, token)
            .send()
            .await
            .unwrap()
    }

    pub async fn approve(&self, token: &str, reference: &str) -> Response {
        self.authed(
            reqwest::Method::POST,
            &format!("/epayment/v1/test/payments/{reference}/approve"),
            token,
        )
        .json(&json!({"customer": {"phoneNumber": "4791234567"}}))
        .send()
        .await
        .unwrap()
    }

    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Response {
        let mut b = self.http.request(method, self.url(path));
        if let Some(v) = body {
            b = b.json(&v);
        }
        b.send().await.unwrap()
    }

    pub async fn requests(&self, query: &str) -> Vec<Value> {
        let r = self
            .control(
                reqwest::Method::GET,
                &format!("/_emulator/requests?{query}"),
                None,
            )
            .await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

pub fn create_body(reference: &str, value: i64) -> Value {
    json!({
        "amount": {"currency": "NOK", "value": value},
        "paymentMethod": {"type": "WALLET"},
        "reference": reference,
        "userFlow": "WEB_REDIRECT",
        "returnUrl": "https://example.com/return"
    })
}

/// Reads a problem body and asserts content type, status, traceId and (optionally) the error code.
pub async fn problem(r: Response, status: u16, code: Option<&str>) -> Value {
    assert_eq!(r.status().as_u16(), status, "unexpected status");
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(ct, "application/problem+json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], status);
    assert!(
        v["traceId"].as_str().is_some_and(|t| t.starts_with("00-")),
        "traceId missing: {v}"
    );
    if let Some(c) = code {
        assert_eq!(error_codes(&v), vec![c.to_owned()], "error code in {v}");
    }
    v
}

/// The Vipps error codes in a problem's extraDetails.
pub fn error_codes(p: &Value) -> Vec<String> {
    p["extraDetails"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|d| d["name"] == "ErrorCode")
                .filter_map(|d| d["reason"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The field names in a problem's extraDetails (without ErrorCode).
pub fn fields(p: &Value) -> Vec<String> {
    p["extraDetails"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|d| d["name"] != "ErrorCode")
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
