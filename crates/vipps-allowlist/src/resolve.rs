//! A and AAAA lookups with hickory-resolver.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::Error;
use crate::snapshot::{FamilyAnswer, NameAnswer};

/// Resolver tunables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverOptions {
    /// The timeout of one query.
    pub timeout: Duration,
    /// How many times a query is tried.
    pub attempts: usize,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        ResolverOptions {
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }
}

/// A DNS resolver for the request-server names: the system configuration or explicit name servers, the hosts
/// file ignored, and no answer reused from its cache across refreshes.
///
/// ```no_run
/// # async fn demo() -> Result<(), vipps_allowlist::Error> {
/// use vipps_allowlist::resolve::{DnsResolver, ResolverOptions};
/// let resolver = DnsResolver::with_nameservers(&["127.0.0.1:5353".parse().unwrap()], ResolverOptions::default())?;
/// let answers = resolver.lookup_all(&["callback-mt-1.vipps.no".to_string()]).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DnsResolver {
    inner: TokioResolver,
    description: String,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsResolver")
            .field("servers", &self.description)
            .finish()
    }
}

fn opts(o: &ResolverOptions) -> ResolverOpts {
    let mut opts = ResolverOpts::default();
    opts.timeout = o.timeout;
    opts.attempts = o.attempts;
    opts.use_hosts_file = ResolveHosts::Never;
    opts
}

impl DnsResolver {
    /// The system configuration (`/etc/resolv.conf`).
    pub fn system(options: ResolverOptions) -> Result<Self, Error> {
        let mut builder =
            TokioResolver::builder_tokio().map_err(|e| Error::Resolver(e.to_string()))?;
        *builder.options_mut() = {
            let mut o = builder.options_mut().clone();
            let ours = opts(&options);
            o.timeout = ours.timeout;
            o.attempts = ours.attempts;
            o.use_hosts_file = ours.use_hosts_file;
            o
        };
        let inner = builder
            .build()
            .map_err(|e| Error::Resolver(e.to_string()))?;
        Ok(DnsResolver {
            inner,
            description: "system".into(),
        })
    }

    /// Explicit name servers (UDP, with TCP on truncation), each `IP:PORT`.
    pub fn with_nameservers(
        servers: &[SocketAddr],
        options: ResolverOptions,
    ) -> Result<Self, Error> {
        if servers.is_empty() {
            return Err(Error::Resolver("no name server given".into()));
        }
        let configs = servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                let mut ns = NameServerConfig::udp(s.ip());
                ns.connections = vec![udp, tcp];
                ns
            })
            .collect();
        let config = ResolverConfig::from_parts(None, vec![], configs);
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts(&options))
            .build()
            .map_err(|e| Error::Resolver(e.to_string()))?;
        Ok(DnsResolver {
            inner,
            description: servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        })
    }

    /// `system` or the name servers, for logs.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Looks up A and AAAA of one name, concurrently. The two are separate facts: when one fails and the other
    /// answers, the answer keeps both ([`NameAnswer::Families`]).
    pub async fn lookup(&self, name: &str) -> NameAnswer {
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        for rt in [RecordType::A, RecordType::AAAA] {
            self.inner.clear_lookup_cache(fqdn.as_str(), rt);
        }
        let (a, aaaa) = tokio::join!(
            self.inner.lookup(fqdn.as_str(), RecordType::A),
            self.inner.lookup(fqdn.as_str(), RecordType::AAAA)
        );
        let answer = combine(family(a), family(aaaa));
        tracing::debug!(%name, ?answer, resolver = %self.description, "looked up");
        answer
    }

    /// Looks up every name concurrently; the result is in the order of `names`.
    pub async fn lookup_all(&self, names: &[String]) -> Vec<(String, NameAnswer)> {
        let lookups = names
            .iter()
            .map(|n| async move { (n.clone(), self.lookup(n).await) });
        futures_util::future::join_all(lookups).await
    }
}

fn family(r: Result<hickory_resolver::lookup::Lookup, NetError>) -> FamilyAnswer {
    match r {
        Ok(lookup) => {
            let list: Vec<(IpAddr, u32)> = lookup
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::A(a) => Some((IpAddr::V4(a.0), rec.ttl)),
                    RData::AAAA(a) => Some((IpAddr::V6(a.0), rec.ttl)),
                    _ => None,
                })
                .collect();
            if list.is_empty() {
                FamilyAnswer::NoData
            } else {
                FamilyAnswer::Records(list)
            }
        }
        Err(e) if e.is_nx_domain() => FamilyAnswer::NoSuchName,
        Err(e) if e.is_no_records_found() => FamilyAnswer::NoData,
        Err(e) => FamilyAnswer::Failed(e.to_string()),
    }
}

/// One answer for the name: the simple forms when both families agree, [`NameAnswer::Families`] when exactly one
/// failed (so the other family's answer is not lost).
fn combine(a: FamilyAnswer, aaaa: FamilyAnswer) -> NameAnswer {
    use FamilyAnswer as F;
    match (a, aaaa) {
        (F::Failed(e1), F::Failed(e2)) if e1 == e2 => NameAnswer::Failed(e1),
        (F::Failed(e1), F::Failed(e2)) => NameAnswer::Failed(format!("A: {e1}; AAAA: {e2}")),
        (a @ F::Failed(_), aaaa) | (a, aaaa @ F::Failed(_)) => NameAnswer::Families { a, aaaa },
        (F::NoSuchName, F::NoSuchName | F::NoData) | (F::NoData, F::NoSuchName) => {
            NameAnswer::NoSuchName
        }
        (a, aaaa) => {
            let mut out = Vec::new();
            for f in [a, aaaa] {
                if let F::Records(list) = f {
                    out.extend(list);
                }
            }
            NameAnswer::Addresses(out)
        }
    }
}
