//! Starting, serving and stopping the emulator.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use url::Url;

use crate::api::{self, ConnKiller, S};
use crate::clock::{EmulatorClock, SystemTime, TimeSource};
use crate::config::{Config, ConfigError, MerchantConfig, MerchantEnvironment, Storage};
use crate::dns::{DnsServer, ZoneAnswers};
use crate::faults::Faults;
use crate::ids::{IdGen, RandomIds};
use crate::reqlog::RequestLog;
use crate::request_servers::RequestServers;
use crate::state::{AppState, InFlight, Principal};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Op, Store, StoreError, WriteRequest};

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// What can be replaced for tests: the base time source and the id generator.
pub struct Injected {
    /// The base clock (the system clock by default).
    pub time: Arc<dyn TimeSource>,
    /// The id generator (random by default).
    pub ids: Arc<dyn IdGen>,
}

impl Default for Injected {
    fn default() -> Self {
        Injected {
            time: Arc::new(SystemTime),
            ids: Arc::new(RandomIds::default()),
        }
    }
}

/// A running emulator.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let emu = vipps_emulator::Emulator::start(vipps_emulator::Config::ephemeral()).await?;
/// println!("listening on {}", emu.base_url());
/// let demo = emu.demo_merchant();
/// assert_eq!(demo.msn.as_str(), "123456");
/// emu.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Emulator {
    state: S,
    addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Starts an emulator with the system clock and random ids.
    pub async fn start(config: Config) -> Result<Emulator, StartError> {
        Self::start_with(config, Injected::default()).await
    }

    /// Starts an emulator with an injected clock and id generator.
    pub async fn start_with(
        mut config: Config,
        injected: Injected,
    ) -> Result<Emulator, StartError> {
        if !config
            .merchants
            .iter()
            .any(|m| m.msn.as_str() == crate::config::DEMO_MSN)
        {
            config.merchants.insert(0, MerchantConfig::demo());
        }
        config.validate()?;
        let ids = injected.ids;
        let outbox = Arc::new(tokio::sync::Notify::new());
        let store: Arc<dyn Store> = match &config.storage {
            Storage::Ephemeral => Arc::new(SqliteStore::ephemeral(ids.clone(), outbox.clone())?),
            Storage::Dir(d) => Arc::new(SqliteStore::open_dir(
                d,
                config.durability,
                ids.clone(),
                outbox.clone(),
            )?),
            Storage::Postgres(url) => Arc::new(
                PostgresStore::connect(
                    url,
                    ids.clone(),
                    outbox.clone(),
                    config
                        .delivery_lease
                        .unwrap_or(config.delivery_timeout + Duration::from_secs(30)),
                )
                .await?,
            ),
        };
        let write_meta = |key: &str, value: String| WriteRequest {
            idem: None,
            op: Op::SetMeta {
                key: key.into(),
                value,
            },
            now_ms: 0,
            trace_id: String::new(),
            instance: String::new(),
        };
        let jwt_key = match store.meta("jwt_key").await? {
            Some(k) => k,
            None => {
                let k = crate::ids::hex(&[ids.bytes16(), ids.bytes16()].concat());
                store.write(write_meta("jwt_key", k.clone())).await?;
                k
            }
        };
        let offset = store
            .meta("clock_offset_ms")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let clock = EmulatorClock::new(injected.time, offset);
        let fresh_servers = || {
            let mut rs = RequestServers::new(&config.request_server_addresses);
            rs.last_rotation_ms = clock.unix_ms();
            rs
        };
        let request_servers = match store.meta("request_servers").await? {
            Some(json) => match serde_json::from_str::<RequestServers>(&json) {
                // Explicitly configured addresses win over the stored ones.
                Ok(mut rs) => {
                    for ps in &mut rs.pools {
                        for srv in &mut ps.servers {
                            if let Some(a) = config.request_server_addresses.get(&srv.hostname) {
                                srv.addresses = a.clone();
                            }
                        }
                    }
                    rs.move_on_rotation = config.request_server_addresses.is_empty();
                    rs
                }
                Err(_) => fresh_servers(),
            },
            None => fresh_servers(),
        };
        store
            .write(write_meta(
                "request_servers",
                serde_json::to_string(&request_servers).unwrap_or_default(),
            ))
            .await?;
        let mut owner_pairs = Vec::new();
        for p in &config.partners {
            for m in &p.msns {
                owner_pairs.push((m.as_str().to_owned(), format!("partner:{}", p.client_id)));
            }
        }
        store
            .write(WriteRequest {
                idem: None,
                op: Op::SetPartnerOwners { pairs: owner_pairs },
                now_ms: 0,
                trace_id: String::new(),
                instance: String::new(),
            })
            .await?;
        let dns_answers = Arc::new(ZoneAnswers::new(&request_servers.records(), config.dns_ttl));
        let dns = match config.dns_listen {
            Some(a) => Some(
                DnsServer::start(a, dns_answers.clone())
                    .await
                    .map_err(|source| StartError::Bind { addr: a, source })?,
            ),
            None => None,
        };
        let dns_addr = dns.as_ref().map(|d| d.addr);

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            addr.ip().to_string()
        };
        let host = if addr.is_ipv6() && !addr.ip().is_unspecified() {
            format!("[{host}]")
        } else {
            host
        };
        let base_url = Url::parse(&format!("http://{host}:{}/", addr.port())).expect("valid URL");

        let mut by_subscription_key = HashMap::new();
        let mut msns = HashMap::new();
        for m in &config.merchants {
            by_subscription_key.insert(
                m.subscription_key.clone(),
                Principal::Merchant(Arc::new(m.clone())),
            );
            msns.insert(m.msn.as_str().to_owned(), m.environment);
        }
        for p in &config.partners {
            by_subscription_key.insert(
                p.subscription_key.clone(),
                Principal::Partner(Arc::new(p.clone())),
            );
            for m in &p.msns {
                msns.entry(m.as_str().to_owned()).or_insert(p.environment);
            }
        }
        let state: S = Arc::new(AppState {
            requests: RequestLog::new(config.limits.request_log_capacity),
            config,
            store,
            clock,
            ids,
            jwt_key: jwt_key.into_bytes(),
            by_subscription_key,
            msns,
            faults: Faults::default(),
            inflight: InFlight::default(),
            sweep: tokio::sync::Notify::new(),
            base_url,
            outbox,
            request_servers: parking_lot::RwLock::new(request_servers),
            dns_answers,
            dns_addr,
            verified_tokens: Default::default(),
        });
        let shutdown = CancellationToken::new();
        let mut tasks = vec![
            tokio::spawn(serve(listener, state.clone(), shutdown.clone())),
            tokio::spawn(sweeper(state.clone(), shutdown.clone())),
            tokio::spawn(crate::delivery::dispatcher(state.clone(), shutdown.clone())),
        ];
        if state.store.shared() {
            tasks.push(tokio::spawn(sync_shared(state.clone(), shutdown.clone())));
        }
        if let Some(dns) = dns {
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                stop.cancelled().await;
                dns.shutdown().await;
            }));
        }
        Ok(Emulator {
            state,
            addr,
            shutdown,
            tasks,
        })
    }

    /// The base URL, such as `http://127.0.0.1:8080/`.
    pub fn base_url(&self) -> &Url {
        &self.state.base_url
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The active request servers: (test hostname, test source address, production hostname, production source).
    pub fn request_servers(&self) -> (String, std::net::IpAddr, String, std::net::IpAddr) {
        use crate::request_servers::Side;
        let rs = self.state.request_servers.read();
        (
            rs.active(Side::Test).hostname.clone(),
            rs.source(Side::Test),
            rs.active(Side::Production).hostname.clone(),
            rs.source(Side::Production),
        )
    }

    /// The address of the embedded DNS server (UDP and TCP), if it runs.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.state.dns_addr
    }

    /// The demo merchant's credentials.
    pub fn demo_merchant(&self) -> &MerchantConfig {
        self.state
            .config
            .merchants
            .iter()
            .find(|m| m.msn.as_str() == crate::config::DEMO_MSN)
            .expect("the demo merchant always exists")
    }

    /// The configuration in force (with the demo merchant added).
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// Stops serving and waits for the background tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Waits until the emulator stops (after [`Emulator::shutdown`] from elsewhere or a fatal error).
    pub async fn wait(&mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Returns a token that stops the emulator when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Whether a merchant environment is test.
pub fn is_test(env: MerchantEnvironment) -> bool {
    env == MerchantEnvironment::Test
}

async fn serve(listener: TcpListener, state: S, shutdown: CancellationToken) {
    let router = api::router(state);
    loop {
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let killer = CancellationToken::new();
        let router = router.clone();
        let k = killer.clone();
        let svc = tower::service_fn(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnKiller(k.clone()));
                router.clone().oneshot(req.map(axum::body::Body::new))
            },
        );
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
            tokio::select! {
                _ = conn => {}
                _ = killer.cancelled() => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// How often an instance on a shared store reads the shared clock and request-server state.
const SHARED_SYNC: Duration = Duration::from_millis(100);

/// On a shared store: keeps this instance's clock offset and request servers (and so its DNS answers) equal to
/// the shared state that any instance may change.
async fn sync_shared(s: S, shutdown: CancellationToken) {
    let mut last_rs: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SHARED_SYNC) => {}
            _ = shutdown.cancelled() => return,
        }
        sync_shared_once(&s, &mut last_rs).await;
    }
}

/// Reads the shared clock offset and request-server state once and applies what changed.
pub async fn sync_shared_once(s: &S, last_rs: &mut Option<String>) {
    if let Ok(Some(v)) = s.store.meta("clock_offset_ms").await {
        if let Ok(offset) = v.parse::<i64>() {
            if offset > s.clock.offset_ms() {
                s.clock.set_offset_ms(offset);
                s.sweep.notify_one();
                s.outbox.notify_one();
            }
        }
    }
    if let Ok(Some(json)) = s.store.meta("request_servers").await {
        if last_rs.as_deref() != Some(json.as_str()) {
            if let Ok(mut rs) = serde_json::from_str::<RequestServers>(&json) {
                let records = {
                    let mut cur = s.request_servers.write();
                    // A stored state older than ours is one we are about to replace; one as new as ours but
                    // different comes from another instance that changed it at the same time: the store decides.
                    if rs.version < cur.version {
                        *last_rs = Some(json);
                        return;
                    }
                    // Locally configured addresses win, as at start.
                    for ps in &mut rs.pools {
                        for srv in &mut ps.servers {
                            if let Some(a) = s.config.request_server_addresses.get(&srv.hostname) {
                                srv.addresses = a.clone();
                            }
                        }
                    }
                    rs.move_on_rotation = s.config.request_server_addresses.is_empty();
                    *cur = rs;
                    cur.records()
                };
                s.dns_answers.set(&records);
            }
            *last_rs = Some(json);
        }
    }
}

/// Saves the request-server state and publishes it to DNS at once.
pub async fn request_servers_changed(s: &S) {
    let (json, records) = {
        let rs = s.request_servers.read();
        (
            serde_json::to_string(&*rs).unwrap_or_default(),
            rs.records(),
        )
    };
    s.dns_answers.set(&records);
    let w = WriteRequest {
        idem: None,
        op: Op::SetMeta {
            key: "request_servers".into(),
            value: json,
        },
        now_ms: s.clock.unix_ms(),
        trace_id: String::new(),
        instance: String::new(),
    };
    if let Err(e) = s.store.write(w).await {
        tracing::warn!(error = %e, "could not save the request-server state");
    }
}

/// Runs the scheduled rotation when its period has passed, and removes unresponsive webhooks.
pub async fn rotate_if_due(s: &S) {
    let now = s.clock.unix_ms();
    let period = s.config.rotation_period.as_millis() as i64;
    let due = {
        let mut rs = s.request_servers.write();
        if period > 0 && now - rs.last_rotation_ms >= period {
            rs.rotate_all(now);
            true
        } else {
            false
        }
    };
    if due {
        tracing::info!("scheduled rotation of the request servers");
        request_servers_changed(s).await;
    }
    let before = now - s.config.unresponsive_removal.as_millis() as i64;
    let _ = s
        .store
        .write(WriteRequest {
            idem: None,
            op: Op::RemoveUnresponsive { before_ms: before },
            now_ms: now,
            trace_id: String::new(),
            instance: String::new(),
        })
        .await;
}

/// Persists the changes time has made (expiries, pending approvals) for every payment that is due.
pub async fn sweep_once(s: &S) {
    loop {
        let now = s.clock.unix_ms();
        let due = match s.store.due_payments(now, 500).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "sweep failed");
                return;
            }
        };
        let n = due.len();
        let writes: Vec<_> = due
            .into_iter()
            .map(|(msn, reference)| {
                s.store.write(WriteRequest {
                    idem: None,
                    op: Op::Settle { msn, reference },
                    now_ms: now,
                    trace_id: String::new(),
                    instance: String::new(),
                })
            })
            .collect();
        for w in futures::future::join_all(writes).await {
            if let Err(e) = w {
                tracing::warn!(error = %e, "settling a payment failed");
            }
        }
        if n < 500 {
            return;
        }
    }
}

async fn sweeper(s: S, shutdown: CancellationToken) {
    let mut last_purge = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = s.sweep.notified() => {}
            _ = shutdown.cancelled() => return,
        }
        sweep_once(&s).await;
        rotate_if_due(&s).await;
        if last_purge.elapsed() >= Duration::from_secs(60) {
            last_purge = std::time::Instant::now();
            let before = s.clock.unix_ms() - s.config.idempotency_retention.as_millis() as i64;
            let _ = s
                .store
                .write(WriteRequest {
                    idem: None,
                    op: Op::PurgeIdempotency { before_ms: before },
                    now_ms: s.clock.unix_ms(),
                    trace_id: String::new(),
                    instance: String::new(),
                })
                .await;
            let keep = crate::delivery::HORIZON_MS + 86_400_000;
            let _ = s
                .store
                .write(WriteRequest {
                    idem: None,
                    op: Op::PurgeDeliveries {
                        before_ms: s.clock.unix_ms() - keep,
                    },
                    now_ms: s.clock.unix_ms(),
                    trace_id: String::new(),
                    instance: String::new(),
                })
                .await;
        }
    }
}
