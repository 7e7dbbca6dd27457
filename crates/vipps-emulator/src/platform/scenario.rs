//! Scenario files: merchants, webhooks and product items (payments in given states, say) seeded at start, so a
//! test or a demo begins from a known state without a setup script. TOML or JSON, by the file's extension; the
//! format is in `docs/scenario.md`.
//!
//! Merchants are added to the configuration before anything starts (they are configured merchants). Webhooks are
//! registered directly, with the secret the file gives (so a receiver can verify from its first delivery). Every
//! other top-level array is a product's section: the product turns each item into requests
//! ([`super::product::Product::seed`]) that the platform sends to its own routes as the item's merchant, in file
//! order, so seeded state is made exactly as a client would make it (events, webhooks, idempotency records).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::Shared;
use super::product::SeedRequest;
use super::store::{Op, WebhookRow};
use crate::config::{MerchantConfig, MerchantEnvironment};

/// A scenario file. Every other top-level key is a section (an unknown one is refused when seeding, naming it).
#[derive(Debug, Deserialize)]
pub(crate) struct Scenario {
    /// Merchants to add.
    #[serde(default)]
    pub merchants: Vec<ScenarioMerchant>,
    /// Webhooks to register.
    #[serde(default)]
    pub webhooks: Vec<ScenarioWebhook>,
    /// Products' sections (`payments`, ...), in the order they appear.
    #[serde(flatten)]
    pub sections: BTreeMap<String, Vec<serde_json::Value>>,
}

/// A merchant (the fields of `[[merchants]]` in the configuration file).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioMerchant {
    msn: String,
    client_id: String,
    client_secret: String,
    subscription_key: String,
    environment: Option<MerchantEnvironment>,
}

/// A webhook registration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioWebhook {
    /// The sales unit (default: the first merchant).
    msn: Option<String>,
    /// Where deliveries go.
    url: String,
    /// Event types (default: every type of every product).
    events: Option<Vec<String>>,
    /// The signing secret (default: a random one).
    secret: Option<String>,
}

/// Reads a scenario file (`.json`: JSON, anything else: TOML).
pub(crate) fn read(path: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str(&text).map_err(|e| e.to_string())
    }
}

impl Scenario {
    /// The merchants as configuration.
    pub(crate) fn merchant_configs(&self) -> Result<Vec<MerchantConfig>, String> {
        self.merchants
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut c = MerchantConfig::test(
                    &m.msn,
                    &m.client_id,
                    &m.client_secret,
                    &m.subscription_key,
                )
                .map_err(|e| format!("merchants[{i}]: {e}"))?;
                if let Some(env) = m.environment {
                    c.environment = env;
                }
                Ok(c)
            })
            .collect()
    }
}

/// Seeds a started emulator: webhooks, then each product section's items through `router`.
pub(crate) async fn seed(s: &Shared, router: &axum::Router, sc: &Scenario) -> Result<(), String> {
    let first = s
        .config
        .merchants
        .first()
        .map(|m| m.msn.as_str().to_owned())
        .ok_or("no merchant to seed for")?;
    let all_events = s.products.event_types();
    for (i, w) in sc.webhooks.iter().enumerate() {
        let msn = w.msn.clone().unwrap_or_else(|| first.clone());
        if !s.auth.msns.contains_key(&msn) {
            return Err(format!(
                "webhooks[{i}]: MSN {msn} is not a configured merchant"
            ));
        }
        let events = w.events.clone().unwrap_or_else(|| all_events.clone());
        if let Some(e) = events.iter().find(|e| !all_events.contains(e)) {
            return Err(format!("webhooks[{i}]: unknown event type `{e}`"));
        }
        if url::Url::parse(&w.url).is_err() {
            return Err(format!("webhooks[{i}]: `{}` is not a URL", w.url));
        }
        let row = WebhookRow {
            id: super::ids::uuid_from(s.ids.bytes16()),
            owner: format!("msn:{msn}"),
            url: w.url.clone(),
            events,
            secret: w
                .secret
                .clone()
                .unwrap_or_else(|| super::ids::hex(&s.ids.bytes16())),
            created_ms: s.clock.unix_ms(),
        };
        let op = Op::RegisterWebhook {
            row,
            max_per_event: s.config.limits.webhooks_per_event,
        };
        let written = s
            .write(op.background(s.clock.unix_ms()))
            .await
            .map_err(|e| format!("webhooks[{i}]: {e}"))?;
        if let super::store::WriteResult::Fresh(r) = written {
            if r.status >= 300 {
                return Err(format!(
                    "webhooks[{i}]: {}",
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
    }
    let mut tokens: BTreeMap<String, String> = BTreeMap::new();
    for (section, items) in &sc.sections {
        for (i, item) in items.iter().enumerate() {
            let at = format!("{section}[{i}]");
            let requests = s
                .products
                .iter()
                .find_map(|p| p.seed(section, item))
                .ok_or_else(|| format!("`{section}` is no product's scenario section"))?
                .map_err(|e| format!("{at}: {e}"))?;
            for req in requests {
                let msn = req.msn.clone().unwrap_or_else(|| first.clone());
                let Some(m) = s.config.merchants.iter().find(|m| m.msn.as_str() == msn) else {
                    return Err(format!("{at}: MSN {msn} is not a configured merchant"));
                };
                let token = match tokens.get(&msn) {
                    Some(t) => t.clone(),
                    None => {
                        let t = token_for(router, m)
                            .await
                            .map_err(|e| format!("{at}: {e}"))?;
                        tokens.insert(msn.clone(), t.clone());
                        t
                    }
                };
                send(router, m, &token, &req)
                    .await
                    .map_err(|e| format!("{at}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// One request through the emulator's own router; `Err` unless it answers 2xx.
async fn call(
    router: &axum::Router,
    req: http::Request<axum::body::Body>,
) -> Result<Vec<u8>, String> {
    use tower::ServiceExt as _;
    let what = format!("{} {}", req.method(), req.uri());
    let resp = router
        .clone()
        .oneshot(req)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if status.is_success() {
        Ok(body.to_vec())
    } else {
        Err(format!(
            "{what} answered {status}: {}",
            String::from_utf8_lossy(&body)
        ))
    }
}

async fn token_for(router: &axum::Router, m: &MerchantConfig) -> Result<String, String> {
    let req = http::Request::post("/accesstoken/get")
        .header("client_id", &m.client_id)
        .header("client_secret", &m.client_secret)
        .header("Ocp-Apim-Subscription-Key", &m.subscription_key)
        .body(axum::body::Body::empty())
        .map_err(|e| e.to_string())?;
    let body = call(router, req).await?;
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["access_token"].as_str().map(str::to_owned))
        .ok_or_else(|| "no access token".to_owned())
}

async fn send(
    router: &axum::Router,
    m: &MerchantConfig,
    token: &str,
    r: &SeedRequest,
) -> Result<(), String> {
    let mut b = http::Request::builder()
        .method(r.method.clone())
        .uri(&r.path)
        .header("authorization", format!("Bearer {token}"))
        .header("Ocp-Apim-Subscription-Key", &m.subscription_key)
        .header("Merchant-Serial-Number", m.msn.as_str())
        .header("Vipps-System-Name", "vipps-emulator-scenario")
        .header("Vipps-System-Version", env!("CARGO_PKG_VERSION"));
    if let Some(k) = &r.idempotency_key {
        b = b.header("Idempotency-Key", k);
    }
    let body = match &r.body {
        Some(v) => {
            b = b.header("content-type", "application/json");
            axum::body::Body::from(v.to_string())
        }
        None => axum::body::Body::empty(),
    };
    call(router, b.body(body).map_err(|e| e.to_string())?)
        .await
        .map(drop)
}
