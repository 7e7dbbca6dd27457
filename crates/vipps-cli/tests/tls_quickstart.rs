//! The README's quick start for unmodified clients, as written, with the real `vipps` binary, curl and Python
//! `requests`: `vipps emulator --tls-listen 127.0.0.1:443` (and `--proxy-listen 127.0.0.1:3128`), then
//! `eval "$(vipps env)"` and plain calls to `https://apitest.vipps.no`.
//!
//! Each scenario runs in its own private network namespace, so ports 443, 3128 and 8080 on 127.0.0.1 are free
//! and nothing can leave the machine; the hosts-file scenario adds a private mount namespace whose `/etc/hosts`
//! maps the vendor's hostnames (the machine's own hosts file is never written). Each script prints `name value`
//! lines that the tables below check. Needs root, `ip`, `unshare`, curl and Python with `requests`: without them
//! the tests print why and skip, and on CI they fail.
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vipps_test_support::netns::NetNs;
use vipps_test_support::process::Lines;
use vipps_test_support::table::{Case, check, expect_eq};
use vipps_test_support::tools;

/// The demo merchant's token request, as the README writes it.
const TOKEN: &str = r#"-X POST https://apitest.vipps.no/accesstoken/get -H "client_id: $VIPPS_CLIENT_ID" -H "client_secret: $VIPPS_CLIENT_SECRET" -H "Ocp-Apim-Subscription-Key: $VIPPS_SUBSCRIPTION_KEY""#;

/// Python `requests`, unchanged but for the environment: a token, a payment created and read back, and test keys
/// refused on production.
const PYTHON: &str = r#"
import os, uuid, requests
keys = {"client_id": os.environ["VIPPS_CLIENT_ID"], "client_secret": os.environ["VIPPS_CLIENT_SECRET"],
        "Ocp-Apim-Subscription-Key": os.environ["VIPPS_SUBSCRIPTION_KEY"]}
r = requests.post("https://apitest.vipps.no/accesstoken/get", headers=keys)
print("python-token", r.status_code)
api = {"Authorization": "Bearer " + r.json()["access_token"], "Merchant-Serial-Number": os.environ["VIPPS_MSN"],
       "Ocp-Apim-Subscription-Key": os.environ["VIPPS_SUBSCRIPTION_KEY"]}
reference = "py-" + uuid.uuid4().hex[:12]
r = requests.post("https://apitest.vipps.no/epayment/v1/payments",
                  headers={**api, "Idempotency-Key": reference},
                  json={"amount": {"currency": "NOK", "value": 1000}, "paymentMethod": {"type": "WALLET"},
                        "reference": reference, "userFlow": "WEB_REDIRECT", "returnUrl": "https://example.com/back"})
print("python-create", r.status_code)
r = requests.get("https://apitest.vipps.no/epayment/v1/payments/" + reference, headers=api)
print("python-state", r.json()["state"])
r = requests.post("https://api.vipps.no/accesstoken/get", headers=keys)
print("python-production-with-test-keys", r.status_code)
if os.environ.get("HTTPS_PROXY"):
    try:
        requests.get("https://example.com/", timeout=10)
        print("python-elsewhere", "forwarded")
    except requests.exceptions.ProxyError as e:
        print("python-elsewhere", "refused-403" if "403" in str(e) else "refused")
"#;

/// The hosts-file scenario, as the README's first quick start (the hosts line comes from the private mount
/// namespace instead of `sudo tee -a /etc/hosts`).
fn hosts_script() -> String {
    format!(
        r#"set -eu
eval "$(vipps env)"
curl -sS -o token.json -w 'curl-token %{{http_code}}\n' {TOKEN}
python3 - <<'PY'
{PYTHON}
PY
curl -sS -o /dev/null -w 'curl-production-with-test-keys %{{http_code}}\n' {prod}
curl -sS -o /dev/null https://example.com/ --resolve example.com:443:127.0.0.1 2>/dev/null || echo "curl-unknown-name refused"
curl -sS -o /dev/null -w 'curl-after-refusal %{{http_code}}\n' https://apitest.vipps.no/_emulator/health
"#,
        prod = TOKEN.replace("apitest.vipps.no", "api.vipps.no")
    )
}

/// The proxy scenario, as the README's second quick start, plus `curl --resolve` without a proxy or hosts file.
fn proxy_script() -> String {
    format!(
        r#"set -eu
eval "$(vipps env)"
HTTPS_PROXY= https_proxy= curl -sS -o /dev/null -w 'curl-resolve %{{http_code}}\n' --resolve apitest.vipps.no:443:127.0.0.1 {TOKEN}
curl -sS -o /dev/null -w 'curl-proxy %{{http_code}}\n' {TOKEN}
python3 - <<'PY'
{PYTHON}
PY
if curl -sS -o /dev/null https://example.com/ 2>elsewhere.txt; then echo "curl-elsewhere forwarded"; fi
grep -q 403 elsewhere.txt && echo "curl-elsewhere refused-403"
curl -sS -o /dev/null -w 'curl-proxy-after-refusal %{{http_code}}\n' {TOKEN}
"#
    )
}

/// A line the script must print.
#[derive(Debug)]
struct Says {
    name: &'static str,
    value: &'static str,
}

impl Case for Says {
    fn name(&self) -> String {
        self.name.to_owned()
    }
}

const HOSTS_SAYS: &[Says] = &[
    Says {
        name: "curl-token",
        value: "200",
    },
    Says {
        name: "python-token",
        value: "200",
    },
    Says {
        name: "python-create",
        value: "201",
    },
    Says {
        name: "python-state",
        value: "CREATED",
    },
    Says {
        name: "python-production-with-test-keys",
        value: "401",
    },
    Says {
        name: "curl-production-with-test-keys",
        value: "401",
    },
    Says {
        name: "curl-unknown-name",
        value: "refused",
    },
    Says {
        name: "curl-after-refusal",
        value: "200",
    },
];

const PROXY_SAYS: &[Says] = &[
    Says {
        name: "curl-resolve",
        value: "200",
    },
    Says {
        name: "curl-proxy",
        value: "200",
    },
    Says {
        name: "python-token",
        value: "200",
    },
    Says {
        name: "python-create",
        value: "201",
    },
    Says {
        name: "python-state",
        value: "CREATED",
    },
    Says {
        name: "python-production-with-test-keys",
        value: "401",
    },
    Says {
        name: "python-elsewhere",
        value: "refused-403",
    },
    Says {
        name: "curl-elsewhere",
        value: "refused-403",
    },
    Says {
        name: "curl-proxy-after-refusal",
        value: "200",
    },
];

/// The tools the scripts use, or `None` (skip outside CI).
fn prerequisites() -> Option<()> {
    tools::tool("curl", "curl")?;
    let python = std::process::Command::new("python3")
        .args(["-c", "import requests"])
        .output();
    match python {
        Ok(o) if o.status.success() => Some(()),
        _ => tools::skip(
            "python3 with `requests` is not installed (apt-get install -y python3-requests)",
        ),
    }
}

/// `PATH` with the `vipps` under test first, as after `cargo install --path crates/vipps-cli`.
fn path_with_vipps() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_vipps"))
        .parent()
        .expect("the binary's folder")
        .to_owned();
    let rest = std::env::var("PATH").unwrap_or_default();
    format!("{}:{rest}", bin.display())
}

/// Starts `vipps emulator ARGS` in `ns` and waits for its banner; runs `script` with `sh` (in a private mount
/// namespace with `hosts` as `/etc/hosts`, when given) and returns its `name value` lines.
async fn scenario(
    ns: &NetNs,
    emulator_args: &[&str],
    hosts: Option<&Path>,
    script: &str,
) -> Option<BTreeMap<String, String>> {
    let work = tempfile::tempdir().expect("a temporary directory");
    let mut emulator = ns.tokio_command(env!("CARGO_BIN_EXE_vipps"));
    emulator
        .arg("emulator")
        .args(emulator_args)
        .env_remove("VIPPS_EMULATOR_LISTEN")
        .env_remove("VIPPS_EMULATOR_STORE");
    let mut emulator = Lines::spawn(emulator);
    emulator
        .until("the banner", Duration::from_secs(30), |l| {
            l.contains("test controls:")
        })
        .await;
    let mut sh = match hosts {
        Some(h) => ns.tokio_command_with_hosts(h, "sh")?,
        None => ns.tokio_command("sh"),
    };
    for (k, _) in std::env::vars() {
        if k.starts_with("VIPPS_") || k.to_ascii_lowercase().ends_with("_proxy") {
            sh.env_remove(k);
        }
    }
    sh.args(["-c", script])
        .current_dir(work.path())
        .env("PATH", path_with_vipps())
        // `vipps env` writes its certificate files here.
        .env("XDG_CACHE_HOME", work.path())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), sh.output())
        .await
        .expect("the script finishes within 2 minutes")
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let log = emulator.report("the script failed").await;
        panic!(
            "the quick-start script failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- emulator ---\n{log}",
            out.status
        );
    }
    eprintln!("{stdout}");
    emulator.stop().await;
    Some(
        stdout
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

fn expect(says: &[Says], got: &BTreeMap<String, String>) {
    check(says, |c| {
        expect_eq(c.name, got.get(c.name).map(String::as_str), Some(c.value))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_https_on_443_with_a_hosts_line() {
    if prerequisites().is_none() {
        return;
    }
    let Some(ns) = NetNs::new("tls-hosts") else {
        return;
    };
    let machine_hosts = std::fs::read("/etc/hosts").ok();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let hosts: PathBuf = tmp.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 api.vipps.no apitest.vipps.no\n",
    )
    .expect("write the hosts file");
    let Some(got) = scenario(
        &ns,
        &["--in-memory", "--tls-listen", "127.0.0.1:443"],
        Some(&hosts),
        &hosts_script(),
    )
    .await
    else {
        return;
    };
    expect(HOSTS_SAYS, &got);
    assert_eq!(std::fs::read("/etc/hosts").ok(), machine_hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_through_the_proxy_and_with_curl_resolve() {
    if prerequisites().is_none() {
        return;
    }
    let Some(ns) = NetNs::new("tls-proxy") else {
        return;
    };
    let Some(got) = scenario(
        &ns,
        &[
            "--in-memory",
            "--tls-listen",
            "127.0.0.1:443",
            "--proxy-listen",
            "127.0.0.1:3128",
        ],
        None,
        &proxy_script(),
    )
    .await
    else {
        return;
    };
    expect(PROXY_SAYS, &got);
}
