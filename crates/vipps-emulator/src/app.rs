//! The composition root: opens the store, registers the product APIs, binds the listeners and starts the
//! background jobs. Starting, serving and stopping the emulator.

use std::net::SocketAddr;
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
use crate::platform::{Platform, Shared};

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
        let write_meta = |key: &str, value: String| {
            Op::SetMeta {
                key: key.into(),
                value,
            }
            .background(0)
        };
        let jwt_key = match store.meta("jwt_key").await? {
            Some(k) => k,
            None => {
                let k = crate::platform::ids::hex(&[ids.bytes16(), ids.bytes16()].concat());
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
            .write(Op::SetPartnerOwners { pairs: owner_pairs }.background(0))
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
            base_url,
            outbox,
            request_servers: parking_lot::RwLock::new(request_servers),
            dns_answers,
            dns_addr,
            products: crate::products::registry(),
        });
        let shutdown = CancellationToken::new();
        let router = crate::platform::middleware::router(state.clone(), crate::controls::routes());
        let mut tasks = vec![tokio::spawn(crate::serve::serve(
            listener,
            router,
            shutdown.clone(),
        ))];
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
