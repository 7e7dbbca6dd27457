//! `vipps allowlist ...`: DNS-driven allowlists of the Vipps MobilePay request servers (issue 6).
//!
//! `resolve` shows what the names resolve to now, `export` writes one artefact, `watch` keeps a file in step
//! with DNS and runs a command when its content changes. All three share the resolution and safety options.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use vipps_allowlist::refresh::RefreshReport;
use vipps_allowlist::resolve::ResolverOptions;
use vipps_allowlist::{
    AllowSet, Diff, DnsResolver, Error, ExportOptions, Format, IpNet, Policy, Refresher, export,
};
use vipps_types::servers::Profile;

use crate::exit::{Class, classify};

/// Allowlist commands.
#[derive(Debug, Subcommand)]
pub enum AllowlistCommand {
    /// Resolve the request-server names once and show the addresses per name.
    Resolve {
        #[command(flatten)]
        common: Common,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ResolveFormat::Text)]
        format: ResolveFormat,
    },
    /// Resolve once and write one firewall or proxy artefact (stdout, or a file written atomically).
    Export {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        target: Target,
        /// The file to write atomically (temporary file and rename); stdout when absent.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Keep a file in step with DNS: refresh by TTL, rewrite atomically on change, run a command on change.
    Watch {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        target: Target,
        /// The file to keep up to date (written atomically).
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// A shell command run after each change of the file's content (`sh -c`; the file is in
        /// `$VIPPS_ALLOWLIST_FILE`), for example `nft -f "$VIPPS_ALLOWLIST_FILE"`.
        #[arg(long, value_name = "CMD")]
        on_change: Option<String>,
        /// Refresh once and exit.
        #[arg(long, conflicts_with = "max_iterations")]
        once: bool,
        /// Stop after this many refreshes.
        #[arg(long, value_name = "N")]
        max_iterations: Option<u64>,
    },
}

/// `resolve` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResolveFormat {
    /// A table a person can read.
    Text,
    /// JSON with every name's status and the resulting set.
    Json,
}

/// Resolution and safety options shared by every allowlist command.
#[derive(Debug, Args)]
pub struct Common {
    /// The request servers: `production` (callback-1..4 and callback-dr-1..4) or `test` (callback-mt-1..2).
    /// Default: production, unless `--name` is given.
    #[arg(long, value_parser = parse_profile, conflicts_with = "names")]
    profile: Option<Profile>,
    /// A hostname to allow instead of a profile (repeatable).
    #[arg(long = "name", value_name = "HOST")]
    names: Vec<String>,
    /// A DNS server to ask instead of the system configuration (repeatable); the port defaults to 53.
    #[arg(long = "nameserver", value_name = "IP:PORT", value_parser = parse_nameserver)]
    nameservers: Vec<SocketAddr>,
    /// Admit answers in private and special-purpose ranges (tests only).
    #[arg(long)]
    allow_private: bool,
    /// Admit answers in this network even if it is special-purpose, e.g. 127.0.0.0/8 (repeatable).
    #[arg(long = "allow-net", value_name = "CIDR", value_parser = parse_net)]
    allow_nets: Vec<IpNet>,
    /// The snapshot file: loaded at start (last-known-good) and saved after each refresh.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// How long an address stays allowed after it was last seen (`90s`, `10m`, `1h`, or seconds).
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    grace: Duration,
    /// The shortest refresh interval, whatever the TTL.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    min_ttl: Duration,
    /// The longest refresh interval, whatever the TTL.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    max_ttl: Duration,
    /// The cap on the number of allowed addresses.
    #[arg(long, default_value_t = 256)]
    max_addresses: usize,
    /// The cap on addresses kept per name.
    #[arg(long, default_value_t = 32)]
    max_per_name: usize,
    /// The cap on added plus removed addresses per refresh.
    #[arg(long, default_value_t = 64)]
    max_churn: usize,
    /// The timeout of one DNS query.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    timeout: Duration,
}

/// What to export and the names inside the artefacts.
#[derive(Debug, Args)]
pub struct Target {
    /// nft (table file), nft-update (flush + add elements), ipset, iptables, ip6tables, nginx, haproxy,
    /// haproxy-runtime, json.
    #[arg(long, value_parser = parse_format)]
    format: Format,
    /// The nftables table (family inet).
    #[arg(long, default_value = "vipps_allow")]
    nft_table: String,
    /// The TCP port the nftables chain guards.
    #[arg(long, default_value_t = 443)]
    port: u16,
    /// The HAProxy ACL file as named in haproxy.cfg (for haproxy-runtime).
    #[arg(long, default_value = "/etc/haproxy/vipps.lst")]
    haproxy_acl_file: String,
}

impl Target {
    fn options(&self) -> ExportOptions {
        ExportOptions {
            nft_table: self.nft_table.clone(),
            port: self.port,
            haproxy_acl_file: self.haproxy_acl_file.clone(),
            ..ExportOptions::default()
        }
    }
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    s.parse::<Profile>().map_err(|e| e.to_string())
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse::<Format>().map_err(|e| e.to_string())
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|e| format!("`{s}` is not a network (CIDR): {e}"))
}

fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("`{s}` is not IP:PORT"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 30s, 10m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h, d)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

impl Common {
    fn names(&self) -> Vec<String> {
        if self.names.is_empty() {
            self.profile
                .clone()
                .unwrap_or(Profile::Production)
                .hostnames()
        } else {
            Profile::Custom(self.names.clone()).hostnames()
        }
    }

    fn policy(&self) -> Policy {
        Policy {
            grace: self.grace,
            min_ttl: self.min_ttl,
            max_ttl: self.max_ttl,
            max_addresses: self.max_addresses,
            max_per_name: self.max_per_name,
            max_churn: self.max_churn,
            allow_private: self.allow_private,
            allow_nets: self.allow_nets.clone(),
        }
    }

    fn refresher(&self) -> anyhow::Result<Refresher> {
        if self.min_ttl > self.max_ttl {
            return Err(classify(
                Class::Usage,
                anyhow::anyhow!("--min-ttl is larger than --max-ttl"),
            ));
        }
        let opts = ResolverOptions {
            timeout: self.timeout,
            ..ResolverOptions::default()
        };
        let resolver = if self.nameservers.is_empty() {
            DnsResolver::system(opts)
        } else {
            DnsResolver::with_nameservers(&self.nameservers, opts)
        }
        .map_err(|e| classify(Class::Network, e))?;
        let refresher = Refresher::new(resolver, self.names(), self.policy());
        match &self.state {
            Some(path) => refresher
                .with_state_file(path)
                .map_err(|e| classify(Class::Usage, e)),
            None => Ok(refresher),
        }
    }
}

/// A refresh error in the classes of the binary: nothing known is a network failure (fail closed).
fn refresh_error(e: Error) -> anyhow::Error {
    match e {
        Error::NoData { .. } | Error::Resolver(_) => classify(Class::Network, e),
        other => anyhow::Error::new(other),
    }
}

/// Refreshes once; on a refused update falls back to the last-known-good set (from the snapshot), and fails
/// closed when there is none.
async fn refresh_or_lkg(
    refresher: &mut Refresher,
) -> anyhow::Result<(Arc<AllowSet>, Option<RefreshReport>)> {
    match refresher.refresh().await {
        Ok(report) => Ok((report.set.clone(), Some(report))),
        Err(e) => {
            let current = refresher.shared().current();
            if current.is_empty() {
                Err(refresh_error(e))
            } else {
                eprintln!(
                    "warning: {e}; using the last-known-good set of {} addresses",
                    current.len()
                );
                Ok((current, None))
            }
        }
    }
}

/// Runs an allowlist command.
pub async fn run(cmd: AllowlistCommand) -> anyhow::Result<()> {
    match cmd {
        AllowlistCommand::Resolve { common, format } => resolve(common, format).await,
        AllowlistCommand::Export {
            common,
            target,
            output,
        } => {
            let mut refresher = common.refresher()?;
            let (set, _) = refresh_or_lkg(&mut refresher).await?;
            let content = export::render(target.format, &set, &target.options());
            match output {
                Some(path) => vipps_allowlist::write_atomic(&path, content.as_bytes())?,
                None => print!("{content}"),
            }
            Ok(())
        }
        AllowlistCommand::Watch {
            common,
            target,
            output,
            on_change,
            once,
            max_iterations,
        } => {
            let max = if once { Some(1) } else { max_iterations };
            watch(common, target, output, on_change, max).await
        }
    }
}

async fn resolve(common: Common, format: ResolveFormat) -> anyhow::Result<()> {
    let mut refresher = common.refresher()?;
    let report = refresher.refresh().await.map_err(refresh_error)?;
    match format {
        ResolveFormat::Json => {
            let doc = serde_json::json!({
                "names": report.names,
                "addresses": report.set.entries(),
                "added": report.diff.added,
                "removed": report.diff.removed,
                "nextRefreshSecs": report.next_refresh.as_secs(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        ResolveFormat::Text => {
            let width = report.names.iter().map(|n| n.name.len()).max().unwrap_or(0);
            for n in &report.names {
                let list = |v: &[IpAddr]| {
                    v.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut line = format!("{:width$}  {:8}  {}", n.name, n.status, list(&n.answered));
                if let Some(ttl) = n.ttl {
                    line.push_str(&format!(" (ttl {ttl}s)"));
                }
                let kept: Vec<IpAddr> = n
                    .allowed
                    .iter()
                    .filter(|a| !n.answered.contains(a))
                    .copied()
                    .collect();
                if !kept.is_empty() {
                    line.push_str(&format!(" kept: {}", list(&kept)));
                }
                if let Some(e) = &n.error {
                    line.push_str(&format!(" error: {e}"));
                }
                if !n.rejected.is_empty() {
                    line.push_str(&format!(
                        " rejected (special-purpose): {}",
                        list(&n.rejected)
                    ));
                }
                println!("{}", line.trim_end());
            }
            println!("{}", report.status_line());
        }
    }
    Ok(())
}

fn stamp() -> String {
    vipps_types::signing::format_date(SystemTime::now())
}

fn print_diff(diff: &Diff) {
    for e in &diff.added {
        println!(
            "{} allowlist: + {} ({})",
            stamp(),
            e.address,
            e.names.join(", ")
        );
    }
    for e in &diff.removed {
        println!(
            "{} allowlist: - {} ({})",
            stamp(),
            e.address,
            e.names.join(", ")
        );
    }
}

async fn run_hook(cmd: &str, file: &Path) {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("VIPPS_ALLOWLIST_FILE", file)
        .status()
        .await;
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("{} warning: --on-change command exited with {s}", stamp()),
        Err(e) => eprintln!(
            "{} warning: cannot run the --on-change command: {e}",
            stamp()
        ),
    }
}

async fn watch(
    common: Common,
    target: Target,
    output: PathBuf,
    on_change: Option<String>,
    max_iterations: Option<u64>,
) -> anyhow::Result<()> {
    let mut refresher = common.refresher()?;
    let opts = target.options();
    let mut on_disk = std::fs::read_to_string(&output).ok();
    let mut iteration = 0u64;
    loop {
        iteration += 1;
        let (set, report) = match refresher.refresh().await {
            Ok(report) => {
                print_diff(&report.diff);
                (report.set.clone(), Some(report))
            }
            Err(e) => {
                let current = refresher.shared().current();
                if current.is_empty() {
                    return Err(refresh_error(e));
                }
                eprintln!("{} warning: {e}", stamp());
                (current, None)
            }
        };
        let content = export::render(target.format, &set, &opts);
        let changed = on_disk.as_deref() != Some(content.as_str());
        if changed {
            vipps_allowlist::write_atomic(&output, content.as_bytes())
                .with_context(|| format!("updating {}", output.display()))?;
            println!(
                "{} allowlist: wrote {} ({} addresses)",
                stamp(),
                output.display(),
                set.len()
            );
            on_disk = Some(content);
            if let Some(cmd) = &on_change {
                run_hook(cmd, &output).await;
            }
        }
        let status = match &report {
            Some(r) => r.status_line(),
            None => format!(
                "{} addresses (last-known-good, update refused); next refresh in {}s",
                set.len(),
                refresher.next_refresh().as_secs()
            ),
        };
        println!(
            "{} allowlist: {status}{}",
            stamp(),
            if changed { "" } else { "; unchanged" }
        );
        if max_iterations.is_some_and(|m| iteration >= m) {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(refresher.next_refresh()) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_nameserver("127.0.0.1:5353").unwrap().port(), 5353);
        assert_eq!(parse_nameserver("::1").unwrap().port(), 53);
        assert_eq!(parse_net("127.0.0.0/8").unwrap().prefix_len(), 8);
        assert_eq!(parse_net("127.0.0.1").unwrap().prefix_len(), 32);
    }
}
