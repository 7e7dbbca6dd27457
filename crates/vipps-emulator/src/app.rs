//! The composition root: opens the store, registers the product APIs, binds the listeners (plain HTTP, and the
//! TLS and proxy edges with the local certificate authority) and starts the background jobs. Starting, serving
//! and stopping the emulator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::{Config, ConfigError, MerchantConfig, Storage};
use crate::platform::auth::Authenticator;
use crate::platform::clock::{EmulatorClock, SystemTime, TimeSource};
use crate::platform::faults::Faults;
use crate::platform::idempotency::InFlight;
use crate::platform::ids::{IdGen, RandomIds};
use crate::platform::reqlog::RequestLog;
use crate::platform::store::postgres::PostgresStore;
use crate::platform::store::sqlite::SqliteStore;
use crate::platform::store::{Op, Store, StoreError};
use crate::platform::webhooks::dns::{DnsServer, ZoneAnswers};
use crate::platform::webhooks::request_servers::RequestServers;
use crate::platform::{Edge, Platform, Shared};
use crate::tls::{CA_META_KEY, LocalCa, TlsError};

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
    /// The local certificate authority or the TLS configuration could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The snapshot to start from was refused, or could not be loaded.
    #[error("cannot start from the snapshot: {0}")]
    Snapshot(#[from] crate::platform::snapshot::SnapshotError),
    /// The scenario file could not be read, or seeding it failed.
    #[error("scenario {path}: {message}")]
    Scenario {
        /// The file.
        path: PathBuf,
        /// What is wrong (the item and the reason).
        message: String,
    },
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
/// let demo = emu.demo_merchant().expect("no configured merchant took its MSN");
/// assert_eq!(demo.msn.as_str(), "123456");
/// emu.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Emulator {
    state: Shared,
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
        // A scenario's merchants are configured merchants: read it before anything depends on the merchants.
        let scenario = match &config.state_files.scenario {
            Some(path) => {
                let bad = |message: String| StartError::Scenario {
                    path: path.clone(),
                    message,
                };
                let sc = crate::platform::scenario::read(path).map_err(bad)?;
                config.merchants.extend(sc.merchant_configs().map_err(bad)?);
                Some((path.clone(), sc))
            }
            None => None,
        };
        // Configured merchants win: the demo merchant is added only where it clashes with nobody (its MSN is the
        // vendor's example MSN, which a user may well configure for themselves).
        let demo = MerchantConfig::demo();
        let demo_clashes = config.merchants.iter().any(|m| {
            m.msn == demo.msn
                || m.client_id == demo.client_id
                || m.subscription_key == demo.subscription_key
        }) || config
            .partners
            .iter()
            .any(|p| p.client_id == demo.client_id || p.subscription_key == demo.subscription_key);
        if !demo_clashes {
            config.merchants.insert(0, demo);
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
        let products = crate::products::registry();
        // Before anything else is written: the snapshot's signing key, certificate authority, clock and request
        // servers are the ones this start then finds.
        if let Some(path) = &config.state_files.import {
            let loaded =
                crate::platform::snapshot::import_from(store.as_ref(), &products, path).await?;
            tracing::info!(path = %path.display(), rows = ?loaded.rows, "started from a snapshot");
        }
        let write_meta = |key: &str, value: String| {
            Op::SetMeta {
                key: key.into(),
                value,
            }
            .background(0)
        };
        // Insert if absent, then read back: instances starting at once on an empty shared store all end up with
        // the first key stored, so a token from one is valid on every other.
        let jwt_key = match store.meta("jwt_key").await? {
            Some(k) => k,
            None => {
                let k = crate::platform::ids::hex(&[ids.bytes16(), ids.bytes16()].concat());
                let init = Op::InitMeta {
                    key: "jwt_key".into(),
                    value: k.clone(),
                }
                .background(0);
                store.write(init).await?;
                store.meta("jwt_key").await?.unwrap_or(k)
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
            .write(Op::SetPartnerOwners { pairs: owner_pairs }.background(0))
            .await?;
        let bind = |addr: SocketAddr| async move {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            Ok::<_, StartError>((listener, bound))
        };
        let tls_listener = match config.tls_listen {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let proxy_listener = match config.proxy_listen {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let tls = if tls_listener.is_some() || proxy_listener.is_some() {
            let ca = local_ca(store.as_ref(), &clock, ids.as_ref()).await?;
            let server_config =
                ca.server_config(time::OffsetDateTime::from(clock.wall()), || ids.bytes16())?;
            let ca_file = match &config.storage {
                Storage::Dir(d) => write_ca_file(d, ca.cert_pem()),
                _ => None,
            };
            Some((ca, server_config, ca_file))
        } else {
            None
        };
        let dns_api_address = match (config.dns_api_hosts, &tls_listener) {
            (true, Some((_, bound))) => Some(config.dns_api_address.unwrap_or(bound.ip())),
            _ => None,
        };
        let fixed_records = dns_api_address
            .map(|ip| {
                vipps_types::env::API_HOSTS
                    .iter()
                    .map(|h| ((*h).to_owned(), vec![ip]))
                    .collect()
            })
            .unwrap_or_default();
        let dns_answers = Arc::new(ZoneAnswers::new(
            &request_servers.records(),
            fixed_records,
            config.dns_ttl,
        ));
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

        let edge = Edge {
            tls_addr: tls_listener.as_ref().map(|(_, a)| *a),
            proxy_addr: proxy_listener.as_ref().map(|(_, a)| *a),
            ca_pem: tls.as_ref().map(|(ca, _, _)| Arc::from(ca.cert_pem())),
            ca_file: tls.as_ref().and_then(|(_, _, f)| f.clone()),
            dns_api_address,
        };
        let products = crate::products::registry();
        let metrics = config
            .metrics
            .then(|| Arc::new(crate::platform::metrics::Metrics::new(&products)));
        if let Some(m) = &metrics {
            let m = m.clone();
            store.on_commit(Arc::new(move |writes, took| m.commit(writes, took)));
        }
        let state: Shared = Arc::new(Platform {
            requests: RequestLog::new(config.limits.request_log_capacity),
            auth: Authenticator::new(&config, jwt_key.into_bytes()),
            config,
            store,
            clock,
            ids,
            faults: Faults::default(),
            inflight: InFlight::default(),
            sweep: tokio::sync::Notify::new(),
            sweeping: tokio::sync::Mutex::new(()),
            base_url,
            outbox,
            request_servers: parking_lot::RwLock::new(request_servers),
            dns_answers,
            dns_addr,
            edge,
            products,
            changes: tokio::sync::watch::Sender::new(0),
            metrics,
            events: Default::default(),
            chaos: Default::default(),
        });
        crate::platform::metrics::recount(&state).await;
        let shutdown = CancellationToken::new();
        let router = crate::platform::middleware::router(
            state.clone(),
            crate::controls::routes()
                .merge(crate::dashboard::routes().into())
                .merge(crate::machine::routes()),
            axum::routing::get(crate::controls::ca_pem),
        );
        if let Some((path, sc)) = &scenario {
            crate::platform::scenario::seed(&state, &router, sc)
                .await
                .map_err(|message| StartError::Scenario {
                    path: path.clone(),
                    message,
                })?;
            tracing::info!(path = %path.display(), "seeded the scenario");
        }
        let mut tasks = vec![tokio::spawn(crate::serve::serve(
            listener,
            router.clone(),
            None,
            shutdown.clone(),
        ))];
        if let Some((_, server_config, _)) = &tls {
            if let Some((l, _)) = tls_listener {
                tasks.push(tokio::spawn(crate::serve::serve(
                    l,
                    router.clone(),
                    Some(server_config.clone()),
                    shutdown.clone(),
                )));
            }
            if let Some((l, _)) = proxy_listener {
                tasks.push(tokio::spawn(crate::proxy::serve(
                    l,
                    router.clone(),
                    server_config.clone(),
                    shutdown.clone(),
                )));
            }
        }
        tasks.extend(crate::platform::jobs::spawn(&state, &shutdown));
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
        use crate::platform::webhooks::request_servers::Side;
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

    /// The demo merchant's credentials; `None` when a configured merchant or partner took its MSN, client id or
    /// subscription key (configured merchants win).
    pub fn demo_merchant(&self) -> Option<&MerchantConfig> {
        self.state.demo_merchant()
    }

    /// The address of the HTTPS listener for `api.vipps.no` and `apitest.vipps.no`, if it runs.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.state.edge.tls_addr
    }

    /// The address of the HTTPS proxy, if it runs.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.state.edge.proxy_addr
    }

    /// The local certificate authority's certificate (PEM) that clients trust, when the HTTPS listener or the
    /// proxy runs. Also served at `/_emulator/tls/ca.pem`.
    pub fn ca_pem(&self) -> Option<&str> {
        self.state.edge.ca_pem.as_deref()
    }

    /// Where the certificate authority's certificate was written (`ca.pem` in the data directory), if it was.
    pub fn ca_file(&self) -> Option<&Path> {
        self.state.edge.ca_file.as_deref()
    }

    /// The address the embedded DNS server gives for the API hostnames, if it answers them.
    pub fn dns_api_address(&self) -> Option<std::net::IpAddr> {
        self.state.edge.dns_api_address
    }

    /// The configuration in force (with the demo merchant, if it was added).
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// Stops serving and waits for the background tasks; then writes the snapshot the configuration asks for
    /// (`export_on_exit`), logging a failure.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Some(path) = &self.state.config.state_files.export_on_exit {
            match self.export_snapshot(path).await {
                Ok(()) => tracing::info!(path = %path.display(), "snapshot written"),
                Err(e) => tracing::error!(error = %e, "could not write the snapshot at exit"),
            }
        }
    }

    /// Writes the whole state to a snapshot file, atomically (a temporary file beside it, then a rename). Start
    /// another emulator from it with [`StateFiles::import`](crate::StateFiles::import).
    pub async fn export_snapshot(
        &self,
        path: &Path,
    ) -> Result<(), crate::platform::snapshot::SnapshotError> {
        let now = crate::platform::clock::rfc3339(self.state.clock.now());
        crate::platform::snapshot::export_to(self.state.store.as_ref(), path, now)
            .await
            .map(drop)
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

/// The local certificate authority: the stored one, or a new one stored for next time. Several instances starting
/// at once on a shared store all end up with the first one stored.
async fn local_ca(
    store: &dyn Store,
    clock: &EmulatorClock,
    ids: &dyn IdGen,
) -> Result<LocalCa, StartError> {
    // Wall-clock time: clients check certificates against their own clocks, never against emulator time.
    let now = time::OffsetDateTime::from(clock.wall());
    let write = |value: String, replace: bool| {
        let key = CA_META_KEY.to_owned();
        if replace {
            Op::SetMeta { key, value }
        } else {
            Op::InitMeta { key, value }
        }
        .background(0)
    };
    match store.meta(CA_META_KEY).await? {
        Some(json) => {
            let ca = LocalCa::from_stored(&json)?;
            if !ca.expires_soon(now) {
                return Ok(ca);
            }
            tracing::warn!(
                "the local certificate authority expires soon; a new one replaces it (clients must trust the new \
                 one: /_emulator/tls/ca.pem)"
            );
            let (ca, json) = LocalCa::generate(now, ids.bytes16())?;
            store.write(write(json, true)).await?;
            Ok(ca)
        }
        None => {
            let (ca, json) = LocalCa::generate(now, ids.bytes16())?;
            store.write(write(json.clone(), false)).await?;
            match store.meta(CA_META_KEY).await? {
                Some(stored) if stored != json => Ok(LocalCa::from_stored(&stored)?),
                _ => Ok(ca),
            }
        }
    }
}

/// Writes the authority's certificate to `ca.pem` in the data directory (atomically, so a reader never sees half
/// a file), for users to point their clients at. A failure is logged, not fatal: the certificate is also served
/// at `/_emulator/tls/ca.pem`.
fn write_ca_file(dir: &Path, pem: &str) -> Option<PathBuf> {
    let path = dir.join("ca.pem");
    let tmp = dir.join(".ca.pem.tmp");
    let result = std::fs::write(&tmp, pem).and_then(|()| std::fs::rename(&tmp, &path));
    match result {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the CA certificate file");
            None
        }
    }
}
