//! The TTL-driven refresh loop and the lock-free published set.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::resolve::DnsResolver;
use crate::snapshot::{NameReport, Policy, Snapshot, apply};
use crate::{AllowSet, Clock, Diff, Error, SystemClock};

/// The current allowlist, shared between the refresher and request handlers. Readers take an atomic load and
/// never block; the refresher swaps in a new immutable [`AllowSet`].
#[derive(Debug, Clone, Default)]
pub struct SharedAllowlist(Arc<ArcSwap<AllowSet>>);

impl SharedAllowlist {
    /// A shared allowlist that starts with `set`.
    pub fn new(set: AllowSet) -> Self {
        SharedAllowlist(Arc::new(ArcSwap::from_pointee(set)))
    }

    /// Whether `ip` is allowed now. Lock-free; no DNS.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.load().contains(ip)
    }

    /// The current set.
    pub fn current(&self) -> Arc<AllowSet> {
        self.0.load_full()
    }

    /// Publishes a new set.
    pub fn store(&self, set: Arc<AllowSet>) {
        self.0.store(set);
    }
}

/// The outcome of one successful refresh.
#[derive(Debug, Clone)]
pub struct RefreshReport {
    /// The published set.
    pub set: Arc<AllowSet>,
    /// What changed.
    pub diff: Diff,
    /// Per-name results.
    pub names: Vec<NameReport>,
    /// When to refresh next.
    pub next_refresh: Duration,
}

impl RefreshReport {
    /// A one-line summary a person can read.
    pub fn status_line(&self) -> String {
        let ok = self.names.iter().filter(|n| n.status != "failed").count();
        let v4 = self.set.v4().count();
        let failed: Vec<String> = self
            .names
            .iter()
            .filter_map(|n| match n.failed_families().as_slice() {
                [] => None,
                [f] => Some(format!("{} ({f})", n.name)),
                _ => Some(n.name.clone()),
            })
            .collect();
        let mut line = format!(
            "{} addresses ({} IPv4, {} IPv6) from {}/{} names answering; +{} -{}; next refresh in {}s",
            self.set.len(),
            v4,
            self.set.len() - v4,
            ok,
            self.names.len(),
            self.diff.added.len(),
            self.diff.removed.len(),
            self.next_refresh.as_secs()
        );
        if !failed.is_empty() {
            line.push_str(&format!(
                "; failing (last-known-good kept): {}",
                failed.join(", ")
            ));
        }
        line
    }
}

/// Keeps a [`SharedAllowlist`] in step with DNS: resolves the names, applies the [`snapshot`](crate::snapshot)
/// rules, persists the snapshot and publishes the set.
///
/// ```no_run
/// # async fn demo() -> Result<(), vipps_allowlist::Error> {
/// use vipps_allowlist::{DnsResolver, Policy, Refresher};
/// use vipps_allowlist::resolve::ResolverOptions;
/// use vipps_types::servers::Profile;
///
/// let resolver = DnsResolver::system(ResolverOptions::default())?;
/// let mut refresher = Refresher::new(resolver, Profile::Production.hostnames(), Policy::default())
///     .with_state_file("/var/lib/vipps/allowlist.json")?;
/// refresher.refresh().await?; // fail fast when nothing is known
/// let (allowlist, _task) = refresher.spawn();
/// assert!(!allowlist.current().is_empty());
/// # Ok(()) }
/// ```
pub struct Refresher {
    resolver: DnsResolver,
    names: Vec<String>,
    policy: Policy,
    snapshot: Snapshot,
    state_path: Option<PathBuf>,
    shared: SharedAllowlist,
    clock: Arc<dyn Clock>,
    next_refresh: Duration,
    refreshed: bool,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("resolver", &self.resolver)
            .field("names", &self.names)
            .field("policy", &self.policy)
            .field("state_path", &self.state_path)
            .finish_non_exhaustive()
    }
}

impl Refresher {
    /// A refresher for `names` that starts with nothing known.
    pub fn new(resolver: DnsResolver, names: Vec<String>, policy: Policy) -> Self {
        let next_refresh = policy.min_ttl;
        Refresher {
            resolver,
            names,
            policy,
            snapshot: Snapshot::default(),
            state_path: None,
            shared: SharedAllowlist::default(),
            clock: Arc::new(SystemClock),
            next_refresh,
            refreshed: false,
        }
    }

    /// Loads the snapshot from `path` if it exists (and publishes its set at once), and saves every new
    /// snapshot there.
    pub fn with_state_file(mut self, path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        if let Some(snap) = Snapshot::load(&path)? {
            let set = snap.allow_set(&self.names, &self.policy);
            tracing::info!(path = %path.display(), addresses = set.len(), "loaded the allowlist snapshot");
            self.shared.store(Arc::new(set));
            self.snapshot = snap;
        }
        self.state_path = Some(path);
        Ok(self)
    }

    /// Uses another clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Publishes into an existing shared allowlist (its current set is replaced by this refresher's).
    pub fn with_shared(mut self, shared: SharedAllowlist) -> Self {
        shared.store(self.shared.current());
        self.shared = shared;
        self
    }

    /// The shared allowlist this refresher publishes to.
    pub fn shared(&self) -> SharedAllowlist {
        self.shared.clone()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The delay before the next refresh, as of the last one.
    pub fn next_refresh(&self) -> Duration {
        self.next_refresh
    }

    /// Resolves every name once, applies the answers and publishes the new set. On an error the previous set
    /// stays published and the next refresh is scheduled after `min_ttl`.
    pub async fn refresh(&mut self) -> Result<RefreshReport, Error> {
        let answers = self.resolver.lookup_all(&self.names).await;
        let now = self.clock.now();
        self.refreshed = true;
        let update = match apply(&self.snapshot, &self.names, answers, &self.policy, now) {
            Ok(u) => u,
            Err(e) => {
                self.next_refresh = self.policy.min_ttl;
                tracing::error!(error = %e, "allowlist update refused; the previous set stays in force");
                return Err(e);
            }
        };
        for n in update.names.iter().filter(|n| n.status == "failed") {
            tracing::warn!(name = %n.name, error = n.error.as_deref().unwrap_or(""), kept = n.allowed.len(),
                "lookup failed; keeping the last-known-good addresses");
        }
        for n in update.names.iter().filter(|n| n.status == "partial") {
            tracing::warn!(name = %n.name, error = n.error.as_deref().unwrap_or(""), allowed = n.allowed.len(),
                "one address family failed; the other is used, the failing one keeps its last-known-good");
        }
        for e in &update.diff.added {
            tracing::info!(address = %e.address, names = %e.names.join(","), "allowlist: added");
        }
        for e in &update.diff.removed {
            tracing::info!(address = %e.address, names = %e.names.join(","), "allowlist: removed");
        }
        self.snapshot = update.snapshot;
        self.next_refresh = update.next_refresh;
        if let Some(path) = &self.state_path {
            if let Err(e) = self.snapshot.save(path) {
                tracing::warn!(error = %e, "cannot save the allowlist snapshot");
            }
        }
        let set = Arc::new(update.set);
        if !update.diff.is_empty() || self.shared.current().is_empty() {
            self.shared.store(set.clone());
        }
        Ok(RefreshReport {
            set,
            diff: update.diff,
            names: update.names,
            next_refresh: update.next_refresh,
        })
    }

    /// Refreshes until `shutdown` completes, sleeping the TTL-derived delay in between.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut first = !self.refreshed;
        loop {
            if !first {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(self.next_refresh) => {}
                }
            }
            first = false;
            let _ = self.refresh().await;
        }
    }

    /// Runs the loop in a background task (forever) and returns the shared allowlist and the task.
    pub fn spawn(self) -> (SharedAllowlist, tokio::task::JoinHandle<()>) {
        let shared = self.shared();
        let task = tokio::spawn(self.run_until(std::future::pending()));
        (shared, task)
    }
}
