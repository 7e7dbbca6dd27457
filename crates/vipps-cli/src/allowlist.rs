//! `vipps allowlist ...`: DNS-driven allowlists of the Vipps MobilePay request servers (issue 6).
//!
//! `resolve` shows what the names resolve to now, `export` writes one artefact, `watch` keeps a file and/or the
//! kernel firewall (`--apply nft|ipset`) in step with DNS and runs a command when the content changes, `check`
//! says whether an address is allowed now and why. All share the resolution and safety options.
//!
//! `watch` as a service: `--status-file` (JSON, rewritten atomically after every refresh and apply), SIGHUP
//! refreshes and re-applies at once, SIGTERM (or Ctrl-C) stops cleanly and leaves the applied rules in force.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use vipps_allowlist::apply::Backend;
use vipps_allowlist::refresh::RefreshReport;
use vipps_allowlist::resolve::ResolverOptions;
use vipps_allowlist::snapshot::Family;
use vipps_allowlist::{
    AllowSet, DnsResolver, Error, ExportOptions, Format, IpNet, Policy, Refresher, export,
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
    /// Keep a file and/or the kernel firewall in step with DNS: refresh by TTL, rewrite atomically and apply on
    /// change, run a command on change. SIGHUP: refresh and re-apply now; SIGTERM: stop (the rules stay).
    Watch {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        target: Target,
        /// The file to keep up to date (written atomically). Needed unless --apply is given.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Apply the allowlist to the kernel firewall: `nft` (one inet table, validated with `nft -c`, replaced in
        /// one transaction) or `ipset` (two sets swapped in atomically). A failing apply is reported and retried;
        /// a table changed or removed behind our back is restored.
        #[arg(long, value_enum, value_name = "BACKEND")]
        apply: Option<ApplyBackend>,
        /// How often the applied rules are compared with the kernel's between refreshes.
        #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
        check_interval: Duration,
        /// Write the status (JSON: last refresh, per name and family the addresses, TTLs and failures, next
        /// refresh, the last apply) to this file after every refresh and apply, atomically.
        #[arg(long, value_name = "FILE")]
        status_file: Option<PathBuf>,
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
    /// Is this address allowed now, and why? Exit 0 when it is, 5 when it is not. Reads a running watch's
    /// --status-file, or else resolves now (with --state as last-known-good).
    Check {
        /// The address to check.
        address: IpAddr,
        #[command(flatten)]
        common: Common,
        /// The status file of a running `watch` (what is in force now); DNS is not asked.
        #[arg(long, value_name = "FILE")]
        status_file: Option<PathBuf>,
    },
}

/// Firewall backends `watch --apply` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApplyBackend {
    /// nftables.
    Nft,
    /// ipset.
    Ipset,
}

impl ApplyBackend {
    pub(crate) fn backend(self) -> Backend {
        match self {
            ApplyBackend::Nft => Backend::Nft,
            ApplyBackend::Ipset => Backend::Ipset,
        }
    }
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
    pub(crate) profile: Option<Profile>,
    /// A hostname to allow instead of a profile (repeatable).
    #[arg(long = "name", value_name = "HOST")]
    pub(crate) names: Vec<String>,
    /// A DNS server to ask instead of the system configuration (repeatable); the port defaults to 53.
    #[arg(long = "nameserver", value_name = "IP:PORT", value_parser = parse_nameserver)]
    pub(crate) nameservers: Vec<SocketAddr>,
    /// Admit answers in private and special-purpose ranges (tests only).
    #[arg(long)]
    pub(crate) allow_private: bool,
    /// Admit answers in this network even if it is special-purpose, e.g. 127.0.0.0/8 (repeatable).
    #[arg(long = "allow-net", value_name = "CIDR", value_parser = parse_net)]
    pub(crate) allow_nets: Vec<IpNet>,
    /// The snapshot file: loaded at start (last-known-good) and saved after each refresh.
    #[arg(long, value_name = "FILE")]
    pub(crate) state: Option<PathBuf>,
    /// How long an address stays allowed after it was last seen (`90s`, `10m`, `1h`, or seconds).
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub(crate) grace: Duration,
    /// The shortest refresh interval, whatever the TTL.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub(crate) min_ttl: Duration,
    /// The longest refresh interval, whatever the TTL.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub(crate) max_ttl: Duration,
    /// The cap on the number of allowed addresses.
    #[arg(long, default_value_t = 256)]
    pub(crate) max_addresses: usize,
    /// The cap on addresses kept per name.
    #[arg(long, default_value_t = 32)]
    pub(crate) max_per_name: usize,
    /// The cap on added plus removed addresses per refresh.
    #[arg(long, default_value_t = 64)]
    pub(crate) max_churn: usize,
    /// The timeout of one DNS query.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub(crate) timeout: Duration,
}

/// What to export and the names inside the artefacts.
#[derive(Debug, Args)]
pub struct Target {
    /// nft (table file), nft-update (flush + add elements), ipset, iptables, ip6tables, nginx, haproxy,
    /// haproxy-runtime, json. With `watch --apply` it defaults to the applied backend's format.
    #[arg(long, value_parser = parse_format)]
    pub(crate) format: Option<Format>,
    /// The nftables table (family inet).
    #[arg(long, default_value = "vipps_allow")]
    pub(crate) nft_table: String,
    /// The TCP port the nftables chain guards.
    #[arg(long, default_value_t = 443)]
    pub(crate) port: u16,
    /// The HAProxy ACL file as named in haproxy.cfg (for haproxy-runtime).
    #[arg(long, default_value = "/etc/haproxy/vipps.lst")]
    pub(crate) haproxy_acl_file: String,
}

impl Target {
    pub(crate) fn options(&self) -> ExportOptions {
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

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
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
    pub(crate) fn names(&self) -> Vec<String> {
        if self.names.is_empty() {
            self.profile
                .clone()
                .unwrap_or(Profile::Production)
                .hostnames()
        } else {
            Profile::Custom(self.names.clone()).hostnames()
        }
    }

    pub(crate) fn policy(&self) -> Policy {
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

    pub(crate) fn refresher(&self) -> anyhow::Result<Refresher> {
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
pub(crate) fn refresh_error(e: Error) -> anyhow::Error {
    match e {
        Error::NoData { .. } | Error::Resolver(_) => classify(Class::Network, e),
        other => anyhow::Error::new(other),
    }
}

/// Refreshes once; on a refused update falls back to the last-known-good set (from the snapshot), and fails
/// closed when there is none.
pub(crate) async fn refresh_or_lkg(
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
            let format = target
                .format
                .ok_or_else(|| classify(Class::Usage, anyhow::anyhow!("--format is required")))?;
            let mut refresher = common.refresher()?;
            let (set, _) = refresh_or_lkg(&mut refresher).await?;
            let content = export::render(format, &set, &target.options());
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
            apply,
            check_interval,
            status_file,
            on_change,
            once,
            max_iterations,
        } => {
            let max = if once { Some(1) } else { max_iterations };
            crate::watch::run(crate::watch::WatchArgs {
                common,
                target,
                output,
                apply,
                check_interval,
                status_file,
                on_change,
                max_iterations: max,
            })
            .await
        }
        AllowlistCommand::Check {
            address,
            common,
            status_file,
        } => check(address, common, status_file).await,
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

/// `check ADDRESS`: whether the address is allowed now and why (the names that resolved to it, per family the
/// TTL and when it was last seen), from a running watch's status file or from DNS now.
async fn check(
    address: IpAddr,
    common: Common,
    status_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let ip = vipps_allowlist::addr::canonical(address);
    let (allowed_by, total, source): (Vec<String>, usize, String) = match &status_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the status file {}", path.display()))?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("the status file {} is not JSON", path.display()))?;
            let allowed = doc["allowed"].as_array().cloned().unwrap_or_default();
            let mut by = Vec::new();
            for e in &allowed {
                if e["address"].as_str().and_then(|a| a.parse::<IpAddr>().ok()) == Some(ip) {
                    by = e["names"]
                        .as_array()
                        .map(|v| {
                            v.iter()
                                .filter_map(|n| n.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                }
            }
            let mut why = Vec::new();
            for n in doc["names"].as_array().cloned().unwrap_or_default() {
                let name = n["name"].as_str().unwrap_or_default();
                if !by.iter().any(|b| b == name) {
                    continue;
                }
                for fam in ["A", "AAAA"] {
                    for a in n[fam]["addresses"].as_array().cloned().unwrap_or_default() {
                        if a["address"].as_str().and_then(|x| x.parse::<IpAddr>().ok()) == Some(ip)
                        {
                            why.push(format!(
                                "{name} ({fam}, ttl {}s, last seen {}, allowed until {})",
                                a["ttl"],
                                a["lastSeen"].as_str().unwrap_or("?"),
                                a["allowedUntil"].as_str().unwrap_or("?")
                            ));
                        }
                    }
                }
            }
            if why.is_empty() {
                why = by;
            }
            (
                why,
                allowed.len(),
                format!(
                    "the status of the running watch ({}, last refresh {})",
                    path.display(),
                    doc["lastRefresh"]["at"].as_str().unwrap_or("never")
                ),
            )
        }
        None => {
            let mut refresher = common.refresher()?;
            let (set, report) = refresh_or_lkg(&mut refresher).await?;
            let mut why = Vec::new();
            for name in set.names_of(ip).unwrap_or_default() {
                let st = refresher
                    .snapshot()
                    .names
                    .get(name)
                    .and_then(|n| n.addresses.get(&ip).copied());
                match st {
                    Some(st) => why.push(format!(
                        "{name} ({}, ttl {}s, last seen {})",
                        Family::of(ip),
                        st.ttl,
                        rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(st.last_seen))
                    )),
                    None => why.push(name.clone()),
                }
            }
            let source = if report.is_some() {
                format!("DNS now ({})", common.names().join(", "))
            } else {
                "the last-known-good snapshot (DNS refused the update)".to_owned()
            };
            if why.is_empty() && !common.policy().admits(ip) {
                println!(
                    "{ip} is NOT allowed: it is in a special-purpose range, which no request server uses \
                     (admit it with --allow-net for tests)"
                );
                return Err(classify(
                    Class::NotAllowed,
                    anyhow::anyhow!("{ip} is not allowed"),
                ));
            }
            (why, set.len(), source)
        }
    };
    if allowed_by.is_empty() {
        println!(
            "{ip} is NOT allowed: it is not among the {total} allowed addresses, per {source}"
        );
        Err(classify(
            Class::NotAllowed,
            anyhow::anyhow!("{ip} is not allowed"),
        ))
    } else {
        println!("{ip} is allowed, per {source}:");
        for w in allowed_by {
            println!("  {w}");
        }
        Ok(())
    }
}

/// RFC 3339 in UTC, for status files and messages.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
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
