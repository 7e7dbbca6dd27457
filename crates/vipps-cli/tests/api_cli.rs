//! `vipps token`, `vipps payment ...` and `vipps webhook ...` end to end: the real binary against an in-process
//! emulator, checking JSON output and exit codes (0 ok, 2 usage, 3 API error, 4 network).

use std::process::{Output, Stdio};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use vipps_emulator::{Config, Emulator, MerchantConfig};

struct Cli {
    base_url: String,
    merchant: MerchantConfig,
}

impl Cli {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_vipps"));
        for (k, _) in std::env::vars() {
            if k.starts_with("VIPPS_") || k == "RUST_LOG" {
                c.env_remove(k);
            }
        }
        c.args(args)
            .env("VIPPS_BASE_URL", &self.base_url)
            .env("VIPPS_CLIENT_ID", &self.merchant.client_id)
            .env("VIPPS_CLIENT_SECRET", &self.merchant.client_secret)
            .env("VIPPS_SUBSCRIPTION_KEY", &self.merchant.subscription_key)
            .env("VIPPS_MSN", self.merchant.msn.as_str())
            .env("VIPPS_SYSTEM_NAME", "cli-test")
            .env("VIPPS_SYSTEM_VERSION", "1.0.0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    async fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().await.unwrap();
        self.assert_no_secrets(&out);
        out
    }

    async fn run_with(
        &self,
        args: &[&str],
        f: impl FnOnce(&mut tokio::process::Command),
    ) -> Output {
        let mut c = self.command(args);
        f(&mut c);
        let out = c.output().await.unwrap();
        self.assert_no_secrets(&out);
        out
    }

    /// Runs a command that must succeed and returns its JSON output.
    async fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out:?}"))
    }

    fn assert_no_secrets(&self, out: &Output) {
        for stream in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(
                !text.contains(&self.merchant.client_secret),
                "client secret printed: {text}"
            );
            assert!(
                !text.contains(&self.merchant.subscription_key),
                "subscription key printed: {text}"
            );
        }
    }
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn start() -> (Emulator, Cli) {
    let emu = Emulator::start(Config::ephemeral()).await.unwrap();
    let cli = Cli {
        base_url: emu.base_url().to_string(),
        merchant: emu.demo_merchant().expect("the demo merchant").clone(),
    };
    (emu, cli)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_approve_capture_refund_with_json_and_exit_codes() {
    let (emu, cli) = start().await;
    let r = "cli-order-0001";

    let token = cli.ok(&["token"]).await;
    assert_eq!(token["token_type"], "Bearer");
    assert!(
        token["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    let created = cli
        .ok(&[
            "payment",
            "create",
            "--reference",
            r,
            "--amount",
            "2500",
            "--currency",
            "NOK",
            "--return-url",
            "https://example.com/return",
            "--flow",
            "web-redirect",
            "--description",
            "Two tickets",
            "--idempotency-key",
            "cli-order-0001-create",
        ])
        .await;
    assert_eq!(created["result"]["reference"], r);
    assert!(created["result"]["redirectUrl"].is_string());
    assert_eq!(created["idempotencyKey"], "cli-order-0001-create");
    assert_eq!(created["replayed"], false);

    let approved = cli.ok(&["payment", "approve", r]).await;
    assert!(
        approved["idempotencyKey"]
            .as_str()
            .is_some_and(|k| k.len() == 36),
        "{approved}"
    );

    let payment = cli.ok(&["payment", "get", r]).await;
    assert_eq!(payment["state"], "AUTHORIZED");
    let waited = cli
        .ok(&[
            "payment",
            "wait",
            r,
            "--initial-delay-ms",
            "0",
            "--interval-ms",
            "10",
            "--max-polls",
            "3",
        ])
        .await;
    assert_eq!(waited["state"], "AUTHORIZED");
    assert_eq!(payment["amount"]["value"], 2500);

    let args = [
        "payment",
        "capture",
        r,
        "--amount",
        "2000",
        "--idempotency-key",
        "cli-cap-1",
    ];
    let captured = cli.ok(&args).await;
    assert_eq!(
        captured["result"]["aggregate"]["capturedAmount"]["value"],
        2000
    );
    assert_eq!(captured["idempotencyKey"], "cli-cap-1");
    let again = cli.ok(&args).await;
    assert_eq!(again["replayed"], true);
    assert_eq!(
        again["result"]["aggregate"]["capturedAmount"]["value"],
        2000
    );

    let refunded = cli
        .ok(&[
            "payment",
            "refund",
            r,
            "--amount",
            "500",
            "--currency",
            "NOK",
        ])
        .await;
    assert_eq!(
        refunded["result"]["aggregate"]["refundedAmount"]["value"],
        500
    );

    let events = cli.ok(&["payment", "events", r]).await;
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for n in ["CREATED", "AUTHORIZED", "CAPTURED", "REFUNDED"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }

    // API error: more than is left to capture. Exit 3, the problem's title, detail and code on stderr.
    let out = cli
        .run(&["payment", "capture", r, "--amount", "100000"])
        .await;
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("HTTP 400") || err.contains("HTTP 409"),
        "{err}"
    );
    assert!(err.contains("code "), "{err}");
    assert!(err.contains("idempotency key"), "{err}");
    assert!(out.stdout.is_empty());

    // A payment that does not exist: 404, exit 3.
    let out = cli.run(&["payment", "get", "cli-order-missing"]).await;
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_from_a_body_on_stdin_and_cancel() {
    let (emu, cli) = start().await;
    let body = r#"{"amount":{"currency":"NOK","value":1000},"paymentMethod":{"type":"WALLET"},
        "reference":"cli-body-0001","userFlow":"WEB_REDIRECT","returnUrl":"https://example.com/r"}"#;
    let mut child = cli
        .command(&["payment", "create", "--body", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["result"]["reference"], "cli-body-0001");

    // Still CREATED after the polling bounds: exit 3 with the state named.
    let out = cli
        .run(&[
            "payment",
            "wait",
            "cli-body-0001",
            "--initial-delay-ms",
            "0",
            "--interval-ms",
            "10",
            "--max-polls",
            "2",
        ])
        .await;
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("CREATED"), "{}", stderr(&out));

    let cancelled = cli
        .ok(&["payment", "cancel", "cli-body-0001", "--transaction-only"])
        .await;
    assert_eq!(cancelled["result"]["state"], "TERMINATED");

    // A body with an unknown field is a usage error.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(&file, r#"{"reference":"cli-body-0002","surprise":1}"#).unwrap();
    let out = cli
        .run(&["payment", "create", "--body", file.to_str().unwrap()])
        .await;
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_and_network_failures_exit_4() {
    let (emu, cli) = start().await;
    // clap: missing --amount.
    assert_eq!(
        code(&cli.run(&["payment", "capture", "cli-order-0001"]).await),
        Some(2)
    );
    // An invalid reference, amount, currency or key.
    assert_eq!(
        code(&cli.run(&["payment", "get", "bad ref"]).await),
        Some(2)
    );
    let out = cli
        .run(&[
            "payment",
            "capture",
            "cli-order-0001",
            "--amount",
            "-5",
            "--currency",
            "NOK",
        ])
        .await;
    assert_eq!(code(&out), Some(2));
    let out = cli
        .run(&[
            "payment",
            "capture",
            "cli-order-0001",
            "--amount",
            "5",
            "--currency",
            "SEK",
        ])
        .await;
    assert_eq!(code(&out), Some(2));
    let out = cli
        .run(&[
            "payment",
            "capture",
            "cli-order-0001",
            "--amount",
            "5",
            "--currency",
            "NOK",
            "--idempotency-key",
            "a,b",
        ])
        .await;
    assert_eq!(code(&out), Some(2));
    // A 31-character system name fails before any request.
    let long = "s".repeat(31);
    let out = cli
        .run_with(&["token"], |c| {
            c.env("VIPPS_SYSTEM_NAME", &long);
        })
        .await;
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Vipps-System-Name"),
        "{}",
        stderr(&out)
    );
    // Missing credentials.
    let out = cli
        .run_with(&["token"], |c| {
            c.env_remove("VIPPS_CLIENT_SECRET");
        })
        .await;
    assert_eq!(code(&out), Some(2));
    assert!(stderr(&out).contains("VIPPS_CLIENT_SECRET"));
    // Force approve against production is refused client-side.
    let out = cli
        .run_with(&["payment", "approve", "cli-order-0001"], |c| {
            c.env_remove("VIPPS_BASE_URL")
                .env("VIPPS_ENV", "production");
        })
        .await;
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    // Wrong subscription key: the gateway's 401, exit 3.
    let out = cli
        .run_with(&["token"], |c| {
            c.env("VIPPS_SUBSCRIPTION_KEY", "not-the-key");
        })
        .await;
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));

    // Nothing listening: exit 4.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let out = cli
        .run_with(
            &["payment", "get", "cli-order-0001", "--max-attempts", "2"],
            |c| {
                c.env("VIPPS_BASE_URL", &closed);
            },
        )
        .await;
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_register_list_delete() {
    let (emu, cli) = start().await;
    let reg = cli
        .ok(&[
            "webhook",
            "register",
            "--url",
            "https://example.com/hooks",
            "--event",
            "epayments.payment.captured.v1",
        ])
        .await;
    let id = reg["result"]["id"].as_str().unwrap().to_owned();
    assert!(reg["result"]["secret"].is_string());
    let list = cli.ok(&["webhook", "list"]).await;
    assert!(
        list["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == id.as_str())
    );
    cli.ok(&["webhook", "delete", &id]).await;
    let list = cli.ok(&["webhook", "list"]).await;
    assert!(
        !list["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == id.as_str())
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recurring_agreement_and_charge_commands() {
    let (emu, cli) = start().await;
    let drafted = cli
        .ok(&[
            "agreement",
            "create",
            "--amount",
            "9900",
            "--product-name",
            "Premium",
            "--idempotency-key",
            "signup-1",
        ])
        .await;
    assert_eq!(drafted["idempotencyKey"], "signup-1");
    let agr = drafted["result"]["agreementId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(drafted["result"]["vippsConfirmationUrl"].is_string());
    let again = cli
        .ok(&[
            "agreement",
            "create",
            "--amount",
            "9900",
            "--product-name",
            "Premium",
            "--idempotency-key",
            "signup-1",
        ])
        .await;
    assert_eq!(again["replayed"], true);
    assert_eq!(
        cli.ok(&["agreement", "get", &agr]).await["status"],
        "PENDING"
    );
    cli.ok(&["agreement", "accept", &agr]).await;
    let list = cli.ok(&["agreement", "list"]).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    let due = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let due = format!(
        "{:04}-{:02}-{:02}",
        due.year(),
        u8::from(due.month()),
        due.day()
    );
    let created = cli
        .ok(&[
            "charge",
            "create",
            &agr,
            "--amount",
            "9900",
            "--due",
            &due,
            "--reserve",
        ])
        .await;
    let chg = created["result"]["chargeId"].as_str().unwrap().to_owned();
    let c = cli.ok(&["charge", "get", &chg]).await;
    assert_eq!(c["status"], "DUE");
    // Move the emulator's clock past the due date: the charge is reserved.
    let r = reqwest::Client::new()
        .post(emu.base_url().join("_emulator/clock/advance").unwrap())
        .json(&serde_json::json!({"seconds": 3 * 86_400}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let c = cli.ok(&["charge", "get", &chg, "--agreement", &agr]).await;
    assert_eq!(c["status"], "RESERVED");
    cli.ok(&["charge", "capture", &agr, &chg, "--amount", "5000"])
        .await;
    cli.ok(&["charge", "refund", &agr, &chg, "--amount", "1000"])
        .await;
    let listed = cli
        .ok(&["charge", "list", &agr, "--status", "PARTIALLY_REFUNDED"])
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    // Over-refund: an API error, exit 3; a bad key: usage, exit 2.
    let out = cli
        .run(&["charge", "refund", &agr, &chg, "--amount", "99999"])
        .await;
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    let out = cli
        .run(&["charge", "cancel", &agr, &chg, "--idempotency-key", "a/b"])
        .await;
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    cli.ok(&["agreement", "stop", &agr]).await;
    assert_eq!(
        cli.ok(&["agreement", "get", &agr]).await["status"],
        "STOPPED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_stays_rate_limited_says_it_waited_as_retry_after_asked() {
    let emu = Emulator::start(Config {
        rate_limits: true,
        ..Config::ephemeral()
    })
    .await
    .unwrap();
    let cli = Cli {
        base_url: emu.base_url().to_string(),
        merchant: emu.demo_merchant().expect("the demo merchant").clone(),
    };
    // ePayment allows 5 creates per minute per reference and MSN (replays included: the gateway counts requests).
    let create = [
        "payment",
        "create",
        "--reference",
        "cli-limited-0001",
        "--amount",
        "1000",
        "--return-url",
        "https://example.com/return",
        "--idempotency-key",
        "cli-limited-0001-create",
        "--max-attempts",
        "1",
    ];
    for _ in 0..5 {
        cli.ok(&create).await;
    }
    let out = cli.run(&create).await;
    assert_eq!(code(&out), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("HTTP 429"), "{err}");
    assert!(
        err.contains("rate limited after 1 attempt(s), each retry waiting as Retry-After said")
            && err.contains("the server asks to wait"),
        "{err}"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_create_and_get() {
    let (emu, cli) = start().await;
    let created = cli
        .ok(&[
            "checkout",
            "create",
            "--reference",
            "cli-checkout-0001",
            "--amount",
            "4900",
            "--phone",
            "4791234567",
            "--idempotency-key",
            "checkout-1",
        ])
        .await;
    assert_eq!(created["idempotencyKey"], "checkout-1");
    let url = created["result"]["checkoutUrl"].as_str().unwrap();
    assert!(
        url.starts_with(&cli.base_url) && url.contains("?token="),
        "{created}"
    );
    let again = cli
        .ok(&[
            "checkout",
            "create",
            "--reference",
            "cli-checkout-0001",
            "--amount",
            "4900",
            "--phone",
            "4791234567",
            "--idempotency-key",
            "checkout-1",
        ])
        .await;
    assert_eq!(again["replayed"], true);
    let s = cli.ok(&["checkout", "get", "cli-checkout-0001"]).await;
    assert_eq!(s["sessionState"], "SessionCreated");
    // A duplicate reference is an API error; an unknown one too; a missing flag is a usage error.
    let dup = cli
        .run(&[
            "checkout",
            "create",
            "--reference",
            "cli-checkout-0001",
            "--amount",
            "4900",
        ])
        .await;
    assert_eq!(code(&dup), Some(3), "{}", stderr(&dup));
    let missing = cli.run(&["checkout", "get", "cli-checkout-9999"]).await;
    assert_eq!(code(&missing), Some(3), "{}", stderr(&missing));
    let usage = cli.run(&["checkout", "create", "--amount", "4900"]).await;
    assert_eq!(code(&usage), Some(2), "{}", stderr(&usage));
    emu.shutdown().await;
}
