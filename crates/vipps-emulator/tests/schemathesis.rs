//! Conformance fuzzing: schemathesis (from PyPI) generates requests from the vendor's official ePayment, Webhooks,
//! Recurring and Checkout specs (vendored in `specs/`, the files `/_emulator/specs/` serves) against a running
//! emulator, for a bounded time each, and checks that no answer is a 5xx and every answer matches the spec's
//! response schemas, content types and headers, with the documented exceptions of the configuration files in
//! `tests/schemathesis/` (where the spec is wrong).
//!
//! Needs the `st` command (`python3 -m pip install schemathesis`); the test installs it when it is missing, and
//! is skipped with a message only when that fails. `VIPPS_SCHEMATHESIS_SECONDS` sets the budget per spec
//! (default 10). With `VIPPS_TEST_POSTGRES_URL` set, it runs on PostgreSQL as well.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use vipps_emulator::{Config, Emulator, Storage};

/// The `st` command, installed from PyPI when missing; `None` when it cannot be had.
fn schemathesis() -> Option<PathBuf> {
    let works = |cmd: &Path| {
        Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let st = PathBuf::from("st");
    if works(&st) {
        return Some(st);
    }
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "schemathesis"])
        .status()
        .is_ok_and(|s| s.success());
    if installed && works(&st) {
        return Some(st);
    }
    None
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis")
}

/// What the runs act on: the demo merchant's token, and ids of things it created first.
struct Prepared {
    token: String,
    reference: String,
    webhook: String,
    agreement: String,
    charge: String,
    session: String,
}

/// The demo merchant's token, a created payment, a webhook, an active agreement with a charge and a Checkout
/// session on a running emulator.
async fn prepare(base: &str) -> Prepared {
    let http = reqwest::Client::new();
    let token = vipps_test_support::platform::demo_token(&http, base).await;
    let api = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(&token)
            .header("Ocp-Apim-Subscription-Key", "demo-subscription-key")
            .header("Merchant-Serial-Number", "123456")
    };
    let reference = "order-schemathesis-1";
    let r = api(reqwest::Method::POST, "/epayment/v1/payments")
        .header("Idempotency-Key", "schemathesis-1")
        .json(&json!({"amount": {"currency": "NOK", "value": 1000}, "paymentMethod": {"type": "WALLET"},
                      "reference": reference, "userFlow": "WEB_REDIRECT",
                      "returnUrl": "https://example.com/return"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = api(reqwest::Method::POST, "/webhooks/v1/webhooks")
        .json(&json!({"url": "https://example.com/hooks", "events": ["epayments.payment.captured.v1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let webhook = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = api(reqwest::Method::POST, "/recurring/v3/agreements")
        .header("Idempotency-Key", "schemathesis-agreement")
        .json(&json!({"pricing": {"type": "LEGACY", "amount": 1000, "currency": "NOK"},
                      "interval": {"unit": "MONTH", "count": 1},
                      "merchantRedirectUrl": "https://example.com/r", "merchantAgreementUrl": "https://example.com/a",
                      "productName": "Schemathesis", "phoneNumber": "4712345678"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let agreement = r.json::<Value>().await.unwrap()["agreementId"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = http
        .post(format!(
            "{base}/_emulator/recurring/agreements/{agreement}/accept"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let due = (time::OffsetDateTime::now_utc() + time::Duration::days(10)).date();
    let r = api(
        reqwest::Method::POST,
        &format!("/recurring/v3/agreements/{agreement}/charges"),
    )
    .header("Idempotency-Key", "schemathesis-charge")
    // With an `externalId`: the spec marks it required in every charge it answers, though a charge may be created
    // without one (the emulator then leaves the field out).
    .json(&json!({"amount": 1000, "description": "Schemathesis", "due": due.to_string(), "retryDays": 2,
                  "transactionType": "DIRECT_CAPTURE", "externalId": "schemathesis-charge-1"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let charge = r.json::<Value>().await.unwrap()["chargeId"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = "checkout-schemathesis-1";
    let r = http
        .post(format!("{base}/checkout/v3/session"))
        .header("client_id", "demo-client-id")
        .header("client_secret", "demo-client-secret")
        .header("Ocp-Apim-Subscription-Key", "demo-subscription-key")
        .header("Merchant-Serial-Number", "123456")
        .json(&json!({"merchantInfo": {"callbackUrl": "https://example.com/cb", "returnUrl": "https://example.com/r",
                                       "callbackAuthorizationToken": "schemathesis"},
                      "transaction": {"amount": {"value": 1000, "currency": "NOK"}, "reference": session,
                                      "paymentDescription": "Schemathesis"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    Prepared {
        token,
        reference: reference.to_owned(),
        webhook,
        agreement,
        charge,
        session: session.to_owned(),
    }
}

/// Runs schemathesis on one spec with one configuration file; answers its output when it found a failure.
fn run(
    st: &Path,
    (spec, config): (&str, &str),
    url: &str,
    env: &[(&str, &str)],
    seconds: u64,
) -> Result<(), String> {
    let out = Command::new(st)
        .arg("--config-file")
        .arg(dir().join(config))
        .arg("run")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("specs")
                .join(spec),
        )
        .args(["--url", url, "--max-time", &seconds.to_string()])
        .args(["--seed", "1", "--workers", "1", "--no-color"])
        .envs(env.iter().copied())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{spec}: schemathesis failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

async fn conform(st: &Path, storage: Storage, seconds: u64) {
    let emu = Emulator::start(Config {
        storage,
        ..Config::ephemeral()
    })
    .await
    .unwrap();
    let base = emu.base_url().as_str().trim_end_matches('/').to_owned();
    let p = prepare(&base).await;
    let st = st.to_owned();
    let failures = tokio::task::spawn_blocking(move || {
        let env = [
            ("VIPPS_ST_TOKEN", p.token.as_str()),
            ("VIPPS_ST_REFERENCE", p.reference.as_str()),
            ("VIPPS_ST_WEBHOOK_ID", p.webhook.as_str()),
            ("VIPPS_ST_AGREEMENT", p.agreement.as_str()),
            ("VIPPS_ST_CHARGE", p.charge.as_str()),
            ("VIPPS_ST_SESSION", p.session.as_str()),
        ];
        let main = "schemathesis.toml";
        [
            run(&st, ("epayment.v1.yml", main), &base, &env, seconds),
            run(
                &st,
                ("webhooks.v1.yml", main),
                &format!("{base}/webhooks"),
                &env,
                seconds,
            ),
            run(
                &st,
                ("recurring.v3.yml", "recurring.toml"),
                &base,
                &env,
                seconds,
            ),
            run(
                &st,
                ("checkout.v3.yml", "checkout.toml"),
                &format!("{base}/checkout/v3"),
                &env,
                seconds,
            ),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    emu.shutdown().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_specs_find_no_5xx_and_no_undocumented_answer() {
    let Some(st) = schemathesis() else {
        eprintln!(
            "skipping the schemathesis run: `st` is not on the PATH and `python3 -m pip install schemathesis` \
             failed (no Python, no pip or no network)"
        );
        return;
    };
    let seconds = std::env::var("VIPPS_SCHEMATHESIS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    conform(&st, Storage::Ephemeral, seconds).await;
    if let Some(db) = vipps_test_support::pg::PgDb::create().await {
        conform(&st, Storage::Postgres(db.url.clone()), seconds).await;
    }
}
