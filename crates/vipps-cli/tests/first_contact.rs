//! What a new user meets first, with the real binary: a merchant configured on the vendor's example MSN starts
//! (the demo merchant steps aside and the banner says so), the `Vipps-System-*` headers are sent as far as they
//! are set, and `vipps env` tells how to reach a running emulator (or why it cannot).
#![allow(clippy::print_stderr)]

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use vipps_emulator::{Config, Emulator, MerchantConfig};
use vipps_test_support::process::Lines;
use vipps_test_support::table::{Case, check_async, expect_eq};

fn vipps() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_vipps"));
    for (k, _) in std::env::vars() {
        if k.starts_with("VIPPS_") || k == "RUST_LOG" || k.to_ascii_lowercase().ends_with("_proxy")
        {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_on_the_demo_msn_starts_and_the_banner_says_the_demo_merchant_stepped_aside() {
    let mut cmd = vipps();
    cmd.args([
        "emulator",
        "--in-memory",
        "--listen",
        "127.0.0.1:0",
        "--merchant",
        "123456:my-client-id:my-client-secret:my-subscription-key",
    ]);
    let mut emu = Lines::spawn(cmd);
    let banner = emu
        .until("the banner", Duration::from_secs(30), |l| {
            l.contains("test controls:")
        })
        .await;
    let base = banner[0]
        .rsplit(' ')
        .next()
        .expect("the URL")
        .trim_end_matches('/')
        .to_owned();
    let all = banner.join("\n");
    assert!(all.contains("demo merchant:    not added"), "{all}");
    assert!(all.contains("MSN 123456"), "{all}");
    assert!(!all.contains("demo-client-secret"), "{all}");
    assert!(!all.contains("my-client-secret"), "{all}");
    let r = reqwest::Client::new()
        .post(format!("{base}/accesstoken/get"))
        .header("client_id", "my-client-id")
        .header("client_secret", "my-client-secret")
        .header("Ocp-Apim-Subscription-Key", "my-subscription-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    emu.stop().await;
}

/// `vipps token` with some of the system variables set.
#[derive(Debug)]
struct SystemVars {
    name: Option<&'static str>,
    version: Option<&'static str>,
    warns: bool,
}

impl Case for SystemVars {
    fn name(&self) -> String {
        format!("name {:?}, version {:?}", self.name, self.version)
    }
}

const SYSTEM_VARS: &[SystemVars] = &[
    SystemVars {
        name: Some("acme-shop"),
        version: Some("2.0.0"),
        warns: false,
    },
    SystemVars {
        name: Some("acme-shop"),
        version: None,
        warns: false,
    },
    SystemVars {
        name: None,
        version: Some("2.0.0"),
        warns: true,
    },
    SystemVars {
        name: None,
        version: None,
        warns: false,
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_information_is_sent_as_far_as_it_is_set() {
    let emu = Emulator::start(Config::ephemeral()).await.unwrap();
    let demo: MerchantConfig = emu.demo_merchant().expect("the demo merchant").clone();
    let base = emu.base_url().to_string();
    let http = reqwest::Client::new();
    check_async(SYSTEM_VARS, |c| {
        let (demo, base, http) = (&demo, &base, &http);
        async move {
            let mut cmd = vipps();
            cmd.arg("token")
                .env("VIPPS_BASE_URL", base)
                .env("VIPPS_CLIENT_ID", &demo.client_id)
                .env("VIPPS_CLIENT_SECRET", &demo.client_secret)
                .env("VIPPS_SUBSCRIPTION_KEY", &demo.subscription_key)
                .env("VIPPS_MSN", demo.msn.as_str());
            if let Some(n) = c.name {
                cmd.env("VIPPS_SYSTEM_NAME", n);
            }
            if let Some(v) = c.version {
                cmd.env("VIPPS_SYSTEM_VERSION", v);
            }
            let out: Output = cmd.output().await.map_err(|e| e.to_string())?;
            let stderr = text(&out.stderr);
            expect_eq("exit code", out.status.code(), Some(0))
                .map_err(|e| format!("{e}: {stderr}"))?;
            expect_eq("warns", stderr.contains("warning"), c.warns)
                .map_err(|e| format!("{e}: {stderr}"))?;
            let records: Vec<Value> = http
                .get(format!("{base}_emulator/requests?limit=1"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let last = records.first().ok_or("no request recorded")?;
            expect_eq("Vipps-System-Name", last["system_name"].as_str(), c.name)?;
            expect_eq(
                "Vipps-System-Version",
                last["system_version"].as_str(),
                c.version,
            )
        }
    })
    .await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vipps_env_prints_what_to_export() {
    let emu = Emulator::start(Config {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        proxy_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::ephemeral()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env_json = |format: &'static str| {
        let mut c = vipps();
        c.args([
            "env",
            "--url",
            emu.base_url().as_str(),
            "--format",
            format,
            "--dir",
        ])
        .arg(dir.path());
        c
    };
    let out = env_json("json").output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let vars = &v["variables"];
    let ca = dir.path().join("emulator-ca.pem");
    let bundle = dir.path().join("emulator-ca-bundle.pem");
    assert_eq!(std::fs::read_to_string(&ca).unwrap(), emu.ca_pem().unwrap());
    assert!(
        std::fs::read_to_string(&bundle)
            .unwrap()
            .ends_with(emu.ca_pem().unwrap()),
        "the bundle ends with the emulator's authority"
    );
    assert_eq!(vars["NODE_EXTRA_CA_CERTS"], ca.display().to_string());
    for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
        assert_eq!(vars[name], bundle.display().to_string(), "{name}");
    }
    assert_eq!(
        vars["HTTPS_PROXY"],
        format!("http://{}", emu.proxy_addr().unwrap())
    );
    assert_eq!(vars["VIPPS_BASE_URL"], emu.base_url().as_str());
    assert_eq!(vars["VIPPS_MSN"], "123456");
    assert_eq!(vars["VIPPS_CLIENT_ID"], "demo-client-id");
    assert_eq!(v["hosts_line"], "127.0.0.1 api.vipps.no apitest.vipps.no");

    let out = env_json("shell").output().await.unwrap();
    let shell = text(&out.stdout);
    assert!(
        shell.contains(&format!("export NODE_EXTRA_CA_CERTS='{}'", ca.display())),
        "{shell}"
    );
    assert!(
        shell.contains("#   127.0.0.1 api.vipps.no apitest.vipps.no"),
        "{shell}"
    );
    // The shell form is what `eval` takes: every line is an export or a comment.
    assert!(
        shell
            .lines()
            .all(|l| l.starts_with("export ") || l.starts_with('#')),
        "{shell}"
    );
    emu.shutdown().await;

    // Nobody there: a network failure (exit 4) that says what to check.
    let mut c = vipps();
    c.args(["env", "--url", "http://127.0.0.1:9/"]);
    let out = c.output().await.unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("is it running?"),
        "{}",
        text(&out.stderr)
    );
}
