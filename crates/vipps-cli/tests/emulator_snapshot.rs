//! `vipps emulator --export-on-exit FILE` writes the whole state when the emulator stops (SIGTERM), and
//! `--import FILE` starts another from it; a spoiled file stops the start with a clear message.
#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use vipps_test_support::platform::demo_token;

/// Starts `vipps emulator` in memory with extra arguments; answers the child and its base URL.
fn spawn(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vipps"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--in-memory"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the emulator");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "first line: {line}");
    (child, url)
}

fn api(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
) -> reqwest::RequestBuilder {
    http.request(method, url)
        .bearer_auth(token)
        .header("Ocp-Apim-Subscription-Key", "demo-subscription-key")
        .header("Merchant-Serial-Number", "123456")
}

#[tokio::test]
async fn export_on_exit_then_import_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.snapshot");
    let file_arg = file.to_string_lossy().into_owned();
    let (a, base) = spawn(&["--export-on-exit", &file_arg]);
    let http = reqwest::Client::new();
    let t = demo_token(&http, &base).await;
    let r = api(
        &http,
        reqwest::Method::POST,
        format!("{base}/epayment/v1/payments"),
        &t,
    )
    .header("Idempotency-Key", "cli-snap-1")
    .json(
        &json!({"amount": {"currency": "NOK", "value": 1000}, "paymentMethod": {"type": "WALLET"},
                      "reference": "order-cli-snap-1", "userFlow": "WEB_REDIRECT",
                      "returnUrl": "https://example.com/r"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let get = format!("{base}/epayment/v1/payments/order-cli-snap-1");
    let before: Value = api(&http, reqwest::Method::GET, get, &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let term = Command::new("kill")
        .args(["-TERM", &a.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = a.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stopped cleanly: {err}");
    assert!(err.contains("snapshot written to"), "{err}");

    let (mut b, base_b) = spawn(&["--import", &file_arg]);
    // The token of the first emulator is good here: the signing key is part of the state.
    let after: Value = api(
        &http,
        reqwest::Method::GET,
        format!("{base_b}/epayment/v1/payments/order-cli-snap-1"),
        &t,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(before, after);
    b.kill().unwrap();
    b.wait().unwrap();

    // A truncated copy is refused before the emulator serves, saying why.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.snapshot");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vipps"))
        .args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--in-memory",
            "--import",
        ])
        .arg(&cut)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("truncated"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "it did not serve"
    );
}
