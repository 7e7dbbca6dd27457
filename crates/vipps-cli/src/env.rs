//! `vipps env`: what a user exports to reach a running emulator, for a POSIX shell (`eval "$(vipps env)"`) or as
//! JSON.
//!
//! It asks the emulator (`GET /_emulator/env`), writes its certificate authority to a file (and a bundle of the
//! system's roots plus that authority, for the variables that replace the trust store instead of adding to it),
//! and prints: the `VIPPS_*` variables this CLI reads, for the demo merchant; `NODE_EXTRA_CA_CERTS`,
//! `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE` and `CURL_CA_BUNDLE`; `HTTPS_PROXY` when the proxy runs; and the hosts
//! line that maps the vendor's hostnames to the HTTPS listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde::Deserialize;
use url::Url;

use crate::exit::{Class, classify};

/// Where `vipps emulator` listens by default.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Options of `vipps env`.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// The running emulator's plain-HTTP URL.
    #[arg(
        long,
        value_name = "URL",
        default_value = DEFAULT_URL,
        env = "VIPPS_EMULATOR_URL"
    )]
    url: String,
    /// `shell` (POSIX `export` lines, for `eval "$(vipps env)"`) or `json`.
    #[arg(long, value_enum, default_value_t = Format::Shell)]
    format: Format,
    /// Where to write the certificate files (default: $XDG_CACHE_HOME/vipps, else ~/.cache/vipps).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `export NAME='value'` lines and comments.
    Shell,
    /// One JSON object.
    Json,
}

/// What `GET /_emulator/env` answers (only the parts used here).
#[derive(Debug, Deserialize)]
struct Remote {
    base_url: Url,
    tls: Option<Listener>,
    proxy: Option<Listener>,
    demo_merchant: Option<Demo>,
}

#[derive(Debug, Deserialize)]
struct Listener {
    listen: SocketAddr,
}

#[derive(Deserialize)]
struct Demo {
    msn: String,
    client_id: String,
    client_secret: String,
    subscription_key: String,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo")
            .field("msn", &self.msn)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// System trust stores, by distribution: the bundle starts from the first one present.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// What is printed: variables in order, the hosts line and notes.
#[derive(Debug, serde::Serialize)]
struct Output {
    emulator: String,
    /// The command that printed this, for the header comment.
    command: String,
    variables: Vec<(String, String)>,
    hosts_line: Option<String>,
    ca_file: Option<PathBuf>,
    ca_bundle_file: Option<PathBuf>,
    notes: Vec<String>,
}

/// Runs `vipps env`.
pub async fn run(args: EnvArgs) -> anyhow::Result<()> {
    let base = Url::parse(args.url.trim())
        .and_then(|u| u.join("./"))
        .map_err(|e| classify(Class::Usage, anyhow::anyhow!("--url {}: {e}", args.url)))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let remote: Remote = {
        let url = base.join("_emulator/env")?;
        let resp = http.get(url.clone()).send().await.map_err(|e| {
            classify(
                Class::Network,
                anyhow::anyhow!("cannot reach the emulator at {base} (is it running? --url): {e}"),
            )
        })?;
        if !resp.status().is_success() {
            return Err(classify(
                Class::Api,
                anyhow::anyhow!(
                    "{url} answered {}: is this a Vipps emulator with its controls on (not --no-controls)?",
                    resp.status()
                ),
            ));
        }
        resp.json()
            .await
            .with_context(|| format!("{url} did not answer the emulator's JSON"))?
    };
    let default_url = Url::parse(DEFAULT_URL).ok().and_then(|u| u.join("./").ok());
    let command = if default_url.as_ref() == Some(&base) {
        "vipps env".to_owned()
    } else {
        format!("vipps env --url {base}")
    };
    let mut out = Output {
        command,
        emulator: remote.base_url.to_string(),
        variables: Vec::new(),
        hosts_line: None,
        ca_file: None,
        ca_bundle_file: None,
        notes: Vec::new(),
    };
    let mut set = |name: &str, value: String| out.variables.push((name.to_owned(), value));
    // The CLI talks to the plain listener: no certificate to trust, and any host.
    set("VIPPS_BASE_URL", base.to_string());
    match &remote.demo_merchant {
        Some(d) => {
            set("VIPPS_CLIENT_ID", d.client_id.clone());
            set("VIPPS_CLIENT_SECRET", d.client_secret.clone());
            set("VIPPS_SUBSCRIPTION_KEY", d.subscription_key.clone());
            set("VIPPS_MSN", d.msn.clone());
        }
        None => out.notes.push(
            "the demo merchant is not present (a configured merchant took its MSN): set VIPPS_CLIENT_ID, \
             VIPPS_CLIENT_SECRET, VIPPS_SUBSCRIPTION_KEY and VIPPS_MSN to your merchant's keys"
                .into(),
        ),
    }
    if remote.tls.is_some() || remote.proxy.is_some() {
        let pem = http
            .get(base.join("_emulator/tls/ca.pem")?)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| classify(Class::Network, anyhow::anyhow!("fetching the CA: {e}")))?
            .text()
            .await
            .context("reading the CA")?;
        let dir = args.dir.clone().unwrap_or_else(default_dir);
        let (ca, bundle, base_bundle) = write_ca(&dir, &pem).map_err(|e| {
            classify(
                Class::Usage,
                e.context(format!("writing to {}", dir.display())),
            )
        })?;
        let mut set = |name: &str, value: &Path| {
            out.variables
                .push((name.to_owned(), value.display().to_string()))
        };
        // Node adds NODE_EXTRA_CA_CERTS to its roots; the others replace the roots, so they get the bundle.
        set("NODE_EXTRA_CA_CERTS", &ca);
        set("SSL_CERT_FILE", &bundle);
        set("REQUESTS_CA_BUNDLE", &bundle);
        set("CURL_CA_BUNDLE", &bundle);
        match base_bundle {
            Some(b) => out.notes.push(format!(
                "{} holds the roots of {} plus the emulator's certificate authority",
                bundle.display(),
                b.display()
            )),
            None => out.notes.push(format!(
                "no system trust store was found: {} holds only the emulator's certificate authority, so other \
                 HTTPS sites fail in this shell",
                bundle.display()
            )),
        }
        out.ca_file = Some(ca);
        out.ca_bundle_file = Some(bundle);
    }
    if let Some(p) = &remote.proxy {
        let proxy = format!("http://{}", reachable(p.listen, &base));
        out.variables.push(("HTTPS_PROXY".into(), proxy.clone()));
        out.variables.push(("https_proxy".into(), proxy));
        out.notes.push(
            "with HTTPS_PROXY set, every HTTPS request of this shell goes to the emulator, which serves \
             api.vipps.no and apitest.vipps.no and refuses everything else (403); unset it for other work"
                .into(),
        );
    }
    if let Some(t) = &remote.tls {
        let at = reachable(t.listen, &base);
        let host = at.rsplit_once(':').map(|(h, _)| h).unwrap_or(&at);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        out.hosts_line = Some(format!("{host} api.vipps.no apitest.vipps.no"));
        if t.listen.port() != 443 {
            out.notes.push(format!(
                "the HTTPS listener is on port {}, not 443: unmodified clients need --tls-listen ...:443 (or the \
                 proxy)",
                t.listen.port()
            ));
        }
    } else if remote.proxy.is_none() {
        out.notes.push(
            "TLS is off: start the emulator with --tls-listen 127.0.0.1:443 or --proxy-listen 127.0.0.1:3128 \
             for unmodified clients"
                .into(),
        );
    }
    match args.format {
        Format::Json => {
            let vars: serde_json::Map<String, serde_json::Value> = out
                .variables
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            let json = serde_json::json!({
                "emulator": out.emulator,
                "variables": vars,
                "hosts_line": out.hosts_line,
                "ca_file": out.ca_file,
                "ca_bundle_file": out.ca_bundle_file,
                "notes": out.notes,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Format::Shell => print!("{}", shell(&out)),
    }
    Ok(())
}

/// `addr` as a client reaches it: an unspecified address (`0.0.0.0`) is replaced by the host of the URL the
/// emulator was reached at.
fn reachable(addr: SocketAddr, base: &Url) -> String {
    if !addr.ip().is_unspecified() {
        return addr.to_string();
    }
    match base.host_str() {
        Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{}", addr.port()),
        Some(h) => format!("{h}:{}", addr.port()),
        None => format!("127.0.0.1:{}", addr.port()),
    }
}

/// `$XDG_CACHE_HOME/vipps`, else `~/.cache/vipps`, else `./.vipps`.
fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Path::new(&d).join("vipps");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return Path::new(&h).join(".cache/vipps");
    }
    PathBuf::from(".vipps")
}

/// Writes `emulator-ca.pem` and `emulator-ca-bundle.pem` (the system's roots, or `$SSL_CERT_FILE`'s, plus the
/// authority) into `dir`; returns both paths and the trust store the bundle started from.
fn write_ca(dir: &Path, pem: &str) -> anyhow::Result<(PathBuf, PathBuf, Option<PathBuf>)> {
    std::fs::create_dir_all(dir)?;
    let ca = dir.join("emulator-ca.pem");
    let bundle = dir.join("emulator-ca-bundle.pem");
    // A trust store the user already chose wins over the system's, unless it is the bundle written here.
    let chosen = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .filter(|p| p != &bundle && p.is_file());
    let base = chosen.or_else(|| {
        SYSTEM_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    });
    let mut text = match &base {
        Some(b) => {
            std::fs::read_to_string(b).with_context(|| format!("reading {}", b.display()))?
        }
        None => String::new(),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(pem);
    write_atomic(&ca, pem)?;
    write_atomic(&bundle, &text)?;
    Ok((ca, bundle, base))
}

/// Writes through a temporary file and a rename, so that a client never reads half a file.
fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Single-quotes a value for a POSIX shell.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The shell form: comments, then `export` lines.
fn shell(out: &Output) -> String {
    let mut s = format!(
        "# Reach the Vipps emulator at {} (printed by `{cmd}`; use: eval \"$({cmd})\").\n",
        out.emulator,
        cmd = out.command
    );
    for note in &out.notes {
        s.push_str(&format!("# note: {note}\n"));
    }
    for (name, value) in &out.variables {
        s.push_str(&format!("export {name}={}\n", quote(value)));
    }
    if let Some(line) = &out.hosts_line {
        s.push_str(
            "# Unmodified clients call https://api.vipps.no and https://apitest.vipps.no: map both to the \
             emulator's HTTPS listener in /etc/hosts (or with docker --add-host):\n",
        );
        s.push_str(&format!("#   {line}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_and_reachable_addresses() {
        let table: [(&str, &str); 3] = [("plain", "'plain'"), ("it's", r"'it'\''s'"), ("", "''")];
        for (value, quoted) in table {
            assert_eq!(quote(value), quoted, "{value}");
        }
        let base = Url::parse("http://host.docker.internal:8080/").unwrap();
        let table: [(&str, &str); 3] = [
            ("127.0.0.1:443", "127.0.0.1:443"),
            ("0.0.0.0:3128", "host.docker.internal:3128"),
            ("[::]:443", "host.docker.internal:443"),
        ];
        for (addr, expected) in table {
            assert_eq!(reachable(addr.parse().unwrap(), &base), expected, "{addr}");
        }
    }
}
