//! `vipps emulator`: runs the platform emulator until Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use vipps_emulator::{
    Config, Durability, Emulator, MerchantConfig, PartnerConfig, Storage, Validation,
};

use crate::exit::{Class, classify};

/// Options of `vipps emulator`.
#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on; port 0 picks a free port (the bound URL is printed).
    #[arg(long, default_value = "127.0.0.1:8080", env = "VIPPS_EMULATOR_LISTEN")]
    listen: SocketAddr,
    /// Directory for the SQLite database (default: $VIPPS_EMULATOR_DATA, else ~/.local/share/vipps-emulator).
    #[arg(long, conflicts_with = "in_memory")]
    data: Option<PathBuf>,
    /// Keep state in a throwaway database that is deleted at exit.
    #[arg(long, conflicts_with = "store")]
    in_memory: bool,
    /// Where state lives: `postgres://user@host:port/db` (PostgreSQL; several instances may share it), or a
    /// directory for SQLite (the embedded default).
    #[arg(
        long,
        value_name = "URL|DIR",
        env = "VIPPS_EMULATOR_STORE",
        conflicts_with = "data"
    )]
    store: Option<String>,
    /// Add a test merchant: MSN:CLIENT_ID:CLIENT_SECRET:SUBSCRIPTION_KEY (repeatable).
    #[arg(long = "merchant", value_name = "SPEC")]
    merchants: Vec<String>,
    /// Add a test partner: CLIENT_ID:CLIENT_SECRET:SUBSCRIPTION_KEY:MSN,MSN,... (repeatable).
    #[arg(long = "partner", value_name = "SPEC")]
    partners: Vec<String>,
    /// A TOML configuration file (merchants, token lifetimes, limits, validation, retention).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Accept and log headers that break the contract instead of answering 400.
    #[arg(long)]
    lenient: bool,
    /// Turn off the /_emulator test controls.
    #[arg(long)]
    no_controls: bool,
    /// Turn off the Prometheus metrics (GET /metrics).
    #[arg(long)]
    no_metrics: bool,
    /// Enforce the vendor's documented rate limits (ePayment, Recurring): 429 with Retry-After, on emulator time.
    #[arg(long)]
    rate_limits: bool,
    /// Acknowledge writes once they reach the OS instead of after fsync (survives a process crash, not power loss).
    #[arg(long)]
    no_fsync: bool,
    /// Demand https and public addresses for webhook URLs.
    #[arg(long)]
    strict_webhook_urls: bool,
    /// Answer DNS (UDP and TCP) for the request-server hostnames on this address, such as 127.0.0.1:5353.
    #[arg(long, value_name = "ADDR", env = "VIPPS_EMULATOR_DNS_LISTEN")]
    dns_listen: Option<SocketAddr>,
    /// Serve the API over HTTPS as api.vipps.no (production keys) and apitest.vipps.no (test keys) on this
    /// address, such as 127.0.0.1:443, with certificates from the emulator's local certificate authority.
    #[arg(long, value_name = "ADDR", env = "VIPPS_EMULATOR_TLS_LISTEN")]
    tls_listen: Option<SocketAddr>,
    /// Run an HTTPS proxy on this address, such as 127.0.0.1:3128: CONNECT to api.vipps.no:443 and
    /// apitest.vipps.no:443 is answered by the emulator itself; every other destination is refused.
    #[arg(long, value_name = "ADDR", env = "VIPPS_EMULATOR_PROXY_LISTEN")]
    proxy_listen: Option<SocketAddr>,
    /// Let the embedded DNS server (--dns-listen) also answer api.vipps.no and apitest.vipps.no, with the
    /// --tls-listen address.
    #[arg(long)]
    dns_api_hosts: bool,
    /// The address those DNS answers carry instead of the --tls-listen one (implies --dns-api-hosts).
    #[arg(long, value_name = "IP")]
    dns_api_address: Option<IpAddr>,
    /// Start from a snapshot file (POST /_emulator/snapshot, --export-on-exit) loaded into an empty store; a
    /// malformed, truncated, corrupt or newer-format file is refused before anything is loaded.
    #[arg(long, value_name = "FILE")]
    import: Option<PathBuf>,
    /// Seed merchants' payments and webhooks from a scenario file (TOML or JSON, docs/scenario.md) at start.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Write a snapshot of the whole state to this file (atomically) when the emulator stops.
    #[arg(long, value_name = "FILE")]
    export_on_exit: Option<PathBuf>,
}

fn build_config(a: &EmulatorArgs) -> anyhow::Result<Config> {
    let mut cfg = Config::default();
    if let Some(path) = &a.config {
        cfg = cfg
            .apply_toml_file(path)
            .map_err(|e| classify(Class::Usage, e))?;
    }
    cfg.listen = a.listen;
    if a.in_memory {
        cfg.storage = Storage::Ephemeral;
    } else if let Some(d) = &a.data {
        cfg.storage = Storage::Dir(d.clone());
    } else if let Some(st) = &a.store {
        cfg.storage = Storage::parse(st);
    }
    for m in &a.merchants {
        cfg.merchants
            .push(MerchantConfig::parse_spec(m).map_err(|e| classify(Class::Usage, e))?);
    }
    for p in &a.partners {
        cfg.partners
            .push(PartnerConfig::parse_spec(p).map_err(|e| classify(Class::Usage, e))?);
    }
    if a.lenient {
        cfg.validation = Validation::Lenient;
    }
    if a.no_controls {
        cfg.controls = false;
    }
    if a.no_metrics {
        cfg.metrics = false;
    }
    if a.rate_limits {
        cfg.rate_limits = true;
    }
    if a.no_fsync {
        cfg.durability = Durability::Process;
    }
    if a.strict_webhook_urls {
        cfg.strict_webhook_urls = true;
    }
    if let Some(d) = a.dns_listen {
        cfg.dns_listen = Some(d);
    }
    if let Some(l) = a.tls_listen {
        cfg.tls_listen = Some(l);
    }
    if let Some(l) = a.proxy_listen {
        cfg.proxy_listen = Some(l);
    }
    if a.dns_api_hosts {
        cfg.dns_api_hosts = true;
    }
    if let Some(ip) = a.dns_api_address {
        cfg.dns_api_address = Some(ip);
        cfg.dns_api_hosts = true;
    }
    if let Some(f) = &a.import {
        cfg.state_files.import = Some(f.clone());
    }
    if let Some(f) = &a.scenario {
        cfg.state_files.scenario = Some(f.clone());
    }
    if let Some(f) = &a.export_on_exit {
        cfg.state_files.export_on_exit = Some(f.clone());
    }
    cfg.validate().map_err(|e| classify(Class::Usage, e))?;
    Ok(cfg)
}

/// Prints a line to stdout, ignoring a closed pipe: a server must not die because nobody reads its banner.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Runs the emulator until interrupted.
pub async fn run(args: EmulatorArgs) -> anyhow::Result<()> {
    let cfg = build_config(&args)?;
    let storage = match &cfg.storage {
        Storage::Ephemeral => "in memory (throwaway)".to_owned(),
        Storage::Dir(d) => d.display().to_string(),
        Storage::Postgres(url) => vipps_emulator::redact_url(url),
    };
    let mut emu = Emulator::start(cfg)
        .await
        .context("starting the emulator")?;
    let demo = emu.demo_merchant().cloned();
    say!("Vipps emulator listening on {}", emu.base_url());
    say!("  data:             {storage}");
    match &demo {
        Some(demo) => {
            say!("  demo merchant:    MSN {} (test)", demo.msn);
            say!("    client_id:        {}", demo.client_id);
            say!("    client_secret:    {}", demo.client_secret);
            say!("    subscription key: {}", demo.subscription_key);
        }
        None => say!(
            "  demo merchant:    not added: a configured merchant or partner has its MSN {}, client id or \
             subscription key (configured merchants win)",
            vipps_emulator::config::DEMO_MSN
        ),
    }
    for m in emu
        .config()
        .merchants
        .iter()
        .filter(|m| Some(*m) != demo.as_ref())
    {
        say!(
            "  merchant:         MSN {} ({:?}), client_id {}",
            m.msn,
            m.environment,
            m.client_id
        );
    }
    for p in &emu.config().partners {
        let msns: Vec<_> = p.msns.iter().map(|m| m.as_str()).collect();
        say!(
            "  partner:          client_id {} for MSN {}",
            p.client_id,
            msns.join(", ")
        );
    }
    if let Some(dns) = emu.dns_addr() {
        match emu.dns_api_address() {
            Some(ip) => say!(
                "  DNS:              {dns} (UDP and TCP) for callback-*.vipps.no, and api.vipps.no and \
                 apitest.vipps.no as {ip}"
            ),
            None => say!("  DNS:              {dns} (UDP and TCP) for callback-*.vipps.no"),
        }
    }
    if let Some(tls) = emu.tls_addr() {
        say!(
            "  HTTPS:            https://apitest.vipps.no (test keys) and https://api.vipps.no (production keys) \
             on {tls}"
        );
        let ip = if tls.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            tls.ip().to_string()
        };
        say!("    hosts line:       {ip} api.vipps.no apitest.vipps.no");
        if tls.port() != 443 {
            say!(
                "    note:             port {} is not 443, which unmodified clients call: use --tls-listen \
                 {ip}:443, or the proxy",
                tls.port()
            );
        }
    }
    if let Some(proxy) = emu.proxy_addr() {
        say!(
            "  proxy:            HTTPS_PROXY=http://{proxy} (CONNECT to api.vipps.no:443 and apitest.vipps.no:443 \
             only; nothing is forwarded)"
        );
    }
    if emu.ca_pem().is_some() {
        let url = emu.base_url().join("_emulator/tls/ca.pem")?;
        match emu.ca_file() {
            Some(f) => say!("  CA certificate:   {} and {url}", f.display()),
            None => say!("  CA certificate:   {url}"),
        }
        say!(
            "    trust it:         eval \"$(vipps env --url {})\" (NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, ...)",
            emu.base_url()
        );
    }
    {
        let rs = emu.request_servers();
        say!(
            "  request servers:  test {} ({}), production {} ({})",
            rs.0,
            rs.1,
            rs.2,
            rs.3
        );
    }
    if emu.config().controls {
        say!(
            "  test controls:    {}_emulator/ (clock, faults, requests, approve/reject)",
            emu.base_url()
        );
        say!(
            "  control API:      {}_emulator/openapi.json (OpenAPI 3.1); official specs under {}_emulator/specs/",
            emu.base_url(),
            emu.base_url()
        );
    }
    if emu.config().metrics {
        say!("  metrics:          {}metrics (Prometheus)", emu.base_url());
    }
    if emu.config().rate_limits {
        say!(
            "  rate limits:      on, as the vendor documents them: 429 with Retry-After, on emulator time \
             (vipps-client and the vipps commands wait as Retry-After says, then retry)"
        );
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let token = emu.shutdown_token();
    let interrupted = tokio::select! {
        _ = stop_signal() => true,
        _ = emu.wait() => false,
    };
    if interrupted {
        eprintln!("stopping");
        token.cancel();
        emu.wait().await;
    }
    if let Some(path) = emu.config().state_files.export_on_exit.clone() {
        emu.export_snapshot(&path)
            .await
            .with_context(|| format!("writing the snapshot to {}", path.display()))?;
        eprintln!("snapshot written to {}", path.display());
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM where there is one (a container or service manager stopping the emulator).
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
