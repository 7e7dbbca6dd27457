//! The unmodified official npm SDK, `@vippsmobilepay/sdk` (pinned in `tests/official-sdk/package.json`), against
//! an in-process emulator: access token, a webhook registered, listed and deleted, the 13 Recurring methods
//! (agreement create, list, info, update, force accept; charge create, create multiple, info, info by id, list,
//! capture, refund, cancel), Checkout `create` and `info` (a session whose payment is approved through the user
//! control and then read as an ePayment payment), create (WEB_REDIRECT), force
//! approve, partial capture, refund, an over-refund refused with a problem body, a second payment cancelled before
//! approval, the aggregate and the event log, and every event's signed delivery received and verified. The flow and
//! its assertions live in `tests/official-sdk/run.mjs`; this test installs the package from the committed lockfile
//! (`npm ci`) when `node_modules` is absent or stale, runs the script and checks its summary.
//!
//! It runs twice: once with the script's `fetch` wrapper pointing the SDK at the plain listener, and once with
//! nothing wrapped and no option changed: the SDK calls `https://apitest.vipps.no` itself, which reaches the
//! emulator's HTTPS listener on 127.0.0.1:443 inside a private network namespace (so port 443 is free) whose
//! private mount namespace has its own `/etc/hosts`, and Node trusts the emulator's authority through
//! `NODE_EXTRA_CA_CERTS`.
//!
//! Without `node`/`npm` or without access to the npm registry the test is skipped with a message, unless the
//! `CI` environment variable is set, in which case it fails. The second run also needs root (namespaces).
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tokio::process::Command;
use vipps_emulator::{Config, Emulator};
use vipps_test_support::netns::NetNs;

const SDK: &str = "@vippsmobilepay/sdk";
const NPM_CI_TIMEOUT: Duration = Duration::from_secs(240);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("official-sdk")
}

/// A missing prerequisite: fails under `CI`, skips (with the reason) otherwise.
fn unavailable(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("official SDK test cannot run and CI is set: {reason}");
    }
    eprintln!("SKIPPED official SDK test: {reason} (set CI=1 to make this a failure)");
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

/// Runs a command with a deadline; `Err` describes why it could not run or did not finish.
async fn run(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let std = cmd.as_std();
    let what = std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let what = format!("`{what}`");
    match tokio::time::timeout(limit, cmd.output()).await {
        Err(_) => Err(format!("{what} did not finish within {limit:?}")),
        Ok(Err(e)) => Err(format!("{what} could not be started: {e}")),
        Ok(Ok(out)) => Ok(out),
    }
}

/// The version of the SDK pinned in package.json.
fn pinned_version(dir: &Path) -> String {
    let pkg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("package.json")).expect("package.json is readable"),
    )
    .expect("package.json is JSON");
    let v = pkg["dependencies"][SDK]
        .as_str()
        .expect("package.json pins the SDK")
        .to_owned();
    assert!(
        v.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "package.json must pin an exact SDK version, found {v:?}"
    );
    v
}

/// The version of the SDK in node_modules, if a complete install is there (npm writes
/// `node_modules/.package-lock.json` last, so an interrupted `npm ci` is not mistaken for an install).
fn installed_version(dir: &Path) -> Option<String> {
    if !dir
        .join("node_modules")
        .join(".package-lock.json")
        .is_file()
    {
        return None;
    }
    let raw =
        std::fs::read_to_string(dir.join("node_modules").join(SDK).join("package.json")).ok()?;
    let pkg: serde_json::Value = serde_json::from_str(&raw).ok()?;
    pkg["version"].as_str().map(str::to_owned)
}

/// Whether npm's output says it could not reach the registry (as opposed to a real install error).
fn is_network_failure(output: &str) -> bool {
    let o = output.to_ascii_lowercase();
    [
        "enotfound",
        "eai_again",
        "econnrefused",
        "econnreset",
        "etimedout",
        "enetunreach",
        "ehostunreach",
        "network",
        "socket hang up",
        "fetch failed",
        "request to https://",
        "self signed certificate",
        "unable to get local issuer certificate",
        "proxy",
    ]
    .iter()
    .any(|m| o.contains(m))
}

/// Makes sure node (18+, for the global fetch) is present and the pinned SDK is installed. `Err` is the reason
/// the test cannot run in this environment.
async fn prepare(dir: &Path) -> Result<(), String> {
    let node = run(Command::new("node").arg("--version"), PROBE_TIMEOUT).await?;
    if !node.status.success() {
        return Err(format!("`node --version` failed: {}", text(&node.stderr)));
    }
    let version = text(&node.stdout);
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 18 {
        return Err(format!(
            "node {version} is too old; the SDK needs Node.js 18 or later"
        ));
    }
    let pinned = pinned_version(dir);
    if installed_version(dir).as_deref() == Some(pinned.as_str()) {
        return Ok(());
    }
    let npm = run(Command::new("npm").arg("--version"), PROBE_TIMEOUT).await?;
    if !npm.status.success() {
        return Err(format!("`npm --version` failed: {}", text(&npm.stderr)));
    }
    eprintln!(
        "installing {SDK}@{pinned} with `npm ci` in {} ...",
        dir.display()
    );
    let t0 = Instant::now();
    let out = run(
        Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--prefer-offline",
                "--loglevel=error",
            ])
            .current_dir(dir),
        NPM_CI_TIMEOUT,
    )
    .await?;
    let log = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    if !out.status.success() {
        if is_network_failure(&log) {
            return Err(format!("`npm ci` could not reach the npm registry:\n{log}"));
        }
        panic!(
            "`npm ci` failed (not a network problem; check package.json and package-lock.json):\n{log}"
        );
    }
    match installed_version(dir) {
        Some(v) if v == pinned => {
            eprintln!("installed {SDK}@{v} in {:.1?}", t0.elapsed());
            Ok(())
        }
        other => panic!("after `npm ci`, {SDK} is {other:?}, expected {pinned}"),
    }
}

/// [`prepare`], once for all the tests of this binary: they run in parallel, and two `npm ci` in one folder would
/// trip over each other.
async fn prepared(dir: &Path) -> Result<(), String> {
    static READY: tokio::sync::OnceCell<Result<(), String>> = tokio::sync::OnceCell::const_new();
    READY.get_or_init(|| prepare(dir)).await.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_npm_sdk_runs_the_epayment_flow_against_the_emulator() {
    let dir = sdk_dir();
    if let Err(reason) = prepared(&dir).await {
        unavailable(&reason);
        return;
    }

    let emu = Emulator::start(Config::ephemeral())
        .await
        .expect("the emulator starts");
    let demo = emu.demo_merchant().expect("the demo merchant").clone();
    let t0 = Instant::now();
    let out = run(
        Command::new("node")
            .arg("run.mjs")
            .current_dir(&dir)
            .env_remove("NODE_OPTIONS")
            .env("VIPPS_EMULATOR_URL", emu.base_url().as_str())
            .env("VIPPS_MSN", demo.msn.as_str())
            .env("VIPPS_CLIENT_ID", &demo.client_id)
            .env("VIPPS_CLIENT_SECRET", &demo.client_secret)
            .env("VIPPS_SUBSCRIPTION_KEY", &demo.subscription_key)
            .env(
                "VIPPS_SDK_TEST_TIMEOUT_MS",
                (SCRIPT_TIMEOUT - Duration::from_secs(10))
                    .as_millis()
                    .to_string(),
            ),
        SCRIPT_TIMEOUT,
    )
    .await;
    let elapsed = t0.elapsed();
    emu.shutdown().await;
    let out = out.unwrap_or_else(|e| panic!("the SDK script did not complete: {e}"));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "the official SDK flow failed against the emulator ({}):\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}",
        out.status
    );

    let summary = check_summary(&dir, &stdout);
    assert_eq!(summary["unwrapped"], false, "summary: {summary}");
    eprintln!("official SDK flow passed in {elapsed:.1?}: {summary}");
}

/// Checks the script's JSON summary (its last stdout line) and returns it.
fn check_summary(dir: &Path, stdout: &str) -> serde_json::Value {
    let last = stdout.lines().last().unwrap_or_default();
    let summary: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("the last stdout line is not the JSON summary ({e}): {last:?}\n{stdout}")
    });
    assert_eq!(summary["ok"], true, "summary: {summary}");
    assert_eq!(summary["sdk"], SDK, "summary: {summary}");
    assert_eq!(
        summary["sdkVersion"].as_str(),
        Some(pinned_version(dir).as_str()),
        "summary: {summary}"
    );
    assert_eq!(summary["finalState"], "AUTHORIZED", "summary: {summary}");
    assert_eq!(
        summary["events"],
        serde_json::json!(["CREATED", "AUTHORIZED", "CAPTURED", "REFUNDED"]),
        "summary: {summary}"
    );
    let by_payment = &summary["webhookEvents"];
    let main = summary["reference"].as_str().unwrap_or_default();
    let cancelled = summary["cancelledReference"].as_str().unwrap_or_default();
    assert_eq!(
        by_payment[main],
        serde_json::json!(["CREATED", "AUTHORIZED", "CAPTURED", "REFUNDED"]),
        "signed deliveries of the first payment, in order; summary: {summary}"
    );
    assert_eq!(
        by_payment[cancelled],
        serde_json::json!(["CREATED", "TERMINATED"]),
        "signed deliveries of the cancelled payment; summary: {summary}"
    );
    // The SDK's 13 Recurring methods (`info` of agreements and charges twice, `infoById` inside `refund`).
    let recurring: Vec<&str> = summary["recurring"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    for m in [
        "agreement.create",
        "agreement.list",
        "agreement.forceAccept",
        "agreement.update",
        "charge.create",
        "charge.createMultiple",
        "charge.capture",
        "charge.refund",
        "charge.cancel",
        "charge.list",
    ] {
        assert!(
            recurring.contains(&m),
            "Recurring method {m} not exercised; summary: {summary}"
        );
    }
    let checkout: Vec<&str> = summary["checkout"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    for m in [
        "create",
        "info (SessionCreated)",
        "info (PaymentSuccessful)",
    ] {
        assert!(
            checkout.contains(&m),
            "Checkout call {m} not exercised; summary: {summary}"
        );
    }
    assert_eq!(
        summary["checkoutState"], "PaymentSuccessful",
        "summary: {summary}"
    );
    summary
}

/// The hosts file of the private mount namespace: the vendor's API hostnames on the HTTPS listener.
const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 api.vipps.no apitest.vipps.no\n";

#[test]
fn official_npm_sdk_unmodified_reaches_the_emulator_as_apitest_vipps_no_over_tls() {
    let dir = sdk_dir();
    let probe = tokio::runtime::Runtime::new().expect("a runtime");
    if let Err(reason) = probe.block_on(prepared(&dir)) {
        unavailable(&reason);
        return;
    }
    drop(probe);
    let Some(ns) = NetNs::new("sdk-tls") else {
        return;
    };
    let machine_hosts = std::fs::read("/etc/hosts").ok();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let hosts = tmp.path().join("hosts");
    std::fs::write(&hosts, HOSTS).expect("write the hosts file");
    let ca = tmp.path().join("emulator-ca.pem");
    let Some(mut node) = ns.tokio_command_with_hosts(&hosts, "node") else {
        return;
    };
    let out = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // This thread and the runtime's threads live in the namespace: the emulator binds 443 there.
                ns.enter_current_thread();
                ns.runtime(2).block_on(async {
                    let emu = Emulator::start(Config {
                        tls_listen: Some("127.0.0.1:443".parse().expect("an address")),
                        ..Config::ephemeral()
                    })
                    .await
                    .expect("the emulator starts with HTTPS on 127.0.0.1:443 in the namespace");
                    std::fs::write(&ca, emu.ca_pem().expect("the authority"))
                        .expect("write the CA file");
                    let demo = emu.demo_merchant().expect("the demo merchant").clone();
                    node.arg("run.mjs")
                        .current_dir(&dir)
                        // Nothing points the SDK anywhere: no wrapper URL, no options; only the trust.
                        .env_remove("VIPPS_EMULATOR_URL")
                        .env_remove("NODE_OPTIONS")
                        .env_remove("HTTPS_PROXY")
                        .env_remove("https_proxy")
                        .env("NODE_EXTRA_CA_CERTS", &ca)
                        .env("VIPPS_MSN", demo.msn.as_str())
                        .env("VIPPS_CLIENT_ID", &demo.client_id)
                        .env("VIPPS_CLIENT_SECRET", &demo.client_secret)
                        .env("VIPPS_SUBSCRIPTION_KEY", &demo.subscription_key)
                        .env(
                            "VIPPS_SDK_TEST_TIMEOUT_MS",
                            (SCRIPT_TIMEOUT - Duration::from_secs(10))
                                .as_millis()
                                .to_string(),
                        );
                    let out = run(&mut node, SCRIPT_TIMEOUT).await;
                    emu.shutdown().await;
                    out
                })
            })
            .join()
            .expect("the namespace thread")
    });
    assert_eq!(
        std::fs::read("/etc/hosts").ok(),
        machine_hosts,
        "the machine's hosts file must not change"
    );
    let out = out.unwrap_or_else(|e| panic!("the SDK script did not complete: {e}"));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "the unmodified official SDK failed against https://apitest.vipps.no (the emulator) ({}):\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}",
        out.status
    );
    let summary = check_summary(&dir, &stdout);
    assert_eq!(summary["unwrapped"], true, "summary: {summary}");
    eprintln!("the unmodified official SDK passed over TLS: {summary}");
}
