//! Emulator configuration: merchants, partners, token lifetimes, limits, validation mode, storage.
//!
//! Built in code ([`Config::ephemeral`], [`Config::default`]) or read from a TOML file
//! ([`Config::apply_toml`]); see `docs/emulator.toml` in the repository for every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vipps_types::headers::MerchantSerialNumber;

/// MSN of the demo merchant, which exists unless a configured merchant has this MSN (the vendor's example MSN).
pub const DEMO_MSN: &str = "123456";
/// Client id of the demo merchant.
pub const DEMO_CLIENT_ID: &str = "demo-client-id";
/// Client secret of the demo merchant (a test credential, printed at start).
pub const DEMO_CLIENT_SECRET: &str = "demo-client-secret";
/// Subscription key of the demo merchant.
pub const DEMO_SUBSCRIPTION_KEY: &str = "demo-subscription-key";

/// Which Vipps environment a merchant's keys belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MerchantEnvironment {
    /// Test keys: 1 h tokens, force approve and magic amounts available, test request servers.
    Test,
    /// Production keys: 24 h tokens, no force approve.
    Production,
}

/// A sales unit with its own API keys.
#[derive(Clone, PartialEq, Eq)]
pub struct MerchantConfig {
    /// The merchant serial number.
    pub msn: MerchantSerialNumber,
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
    /// `Ocp-Apim-Subscription-Key`.
    pub subscription_key: String,
    /// Test or production.
    pub environment: MerchantEnvironment,
}

impl std::fmt::Debug for MerchantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantConfig")
            .field("msn", &self.msn)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("subscription_key", &"[redacted]")
            .field("environment", &self.environment)
            .finish()
    }
}

/// A configuration value that is not valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A `MSN:CLIENT_ID:CLIENT_SECRET:SUBSCRIPTION_KEY` or partner spec is malformed.
    #[error("{0}")]
    BadSpec(String),
    /// The TOML file cannot be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Two principals share a client id or subscription key, or another rule is broken.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl MerchantConfig {
    /// A test merchant.
    pub fn test(
        msn: &str,
        client_id: &str,
        client_secret: &str,
        subscription_key: &str,
    ) -> Result<Self, ConfigError> {
        Ok(MerchantConfig {
            msn: MerchantSerialNumber::new(msn).map_err(|e| ConfigError::BadSpec(e.to_string()))?,
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            subscription_key: subscription_key.to_owned(),
            environment: MerchantEnvironment::Test,
        })
    }

    /// The demo test merchant, added at start unless a configured merchant or partner already uses its MSN, client
    /// id or subscription key (see [`Config::merchants`]).
    pub fn demo() -> Self {
        MerchantConfig::test(
            DEMO_MSN,
            DEMO_CLIENT_ID,
            DEMO_CLIENT_SECRET,
            DEMO_SUBSCRIPTION_KEY,
        )
        .expect("demo merchant is valid")
    }

    /// Parses `MSN:CLIENT_ID:CLIENT_SECRET:SUBSCRIPTION_KEY` (a test merchant).
    ///
    /// ```
    /// let m = vipps_emulator::MerchantConfig::parse_spec("654321:id:secret:key").unwrap();
    /// assert_eq!(m.msn.as_str(), "654321");
    /// assert!(vipps_emulator::MerchantConfig::parse_spec("654321:id:secret").is_err());
    /// ```
    pub fn parse_spec(spec: &str) -> Result<Self, ConfigError> {
        let parts: Vec<&str> = spec.split(':').collect();
        if parts.len() != 4 || parts.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::BadSpec(
                "--merchant expects MSN:CLIENT_ID:CLIENT_SECRET:SUBSCRIPTION_KEY with four non-empty parts".into(),
            ));
        }
        MerchantConfig::test(parts[0], parts[1], parts[2], parts[3])
    }
}

/// A partner: one set of keys acting for several sales units.
#[derive(Clone, PartialEq, Eq)]
pub struct PartnerConfig {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
    /// `Ocp-Apim-Subscription-Key`.
    pub subscription_key: String,
    /// The sales units this partner may act for.
    pub msns: Vec<MerchantSerialNumber>,
    /// Test or production.
    pub environment: MerchantEnvironment,
}

impl std::fmt::Debug for PartnerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("subscription_key", &"[redacted]")
            .field("msns", &self.msns)
            .field("environment", &self.environment)
            .finish()
    }
}

impl PartnerConfig {
    /// Parses `CLIENT_ID:CLIENT_SECRET:SUBSCRIPTION_KEY:MSN,MSN,...` (a test partner).
    pub fn parse_spec(spec: &str) -> Result<Self, ConfigError> {
        let parts: Vec<&str> = spec.split(':').collect();
        if parts.len() != 4 || parts.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::BadSpec(
                "--partner expects CLIENT_ID:CLIENT_SECRET:SUBSCRIPTION_KEY:MSN,MSN,... with four non-empty parts"
                    .into(),
            ));
        }
        let msns = parts[3]
            .split(',')
            .map(|m| {
                MerchantSerialNumber::new(m.trim()).map_err(|e| ConfigError::BadSpec(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PartnerConfig {
            client_id: parts[0].into(),
            client_secret: parts[1].into(),
            subscription_key: parts[2].into(),
            msns,
            environment: MerchantEnvironment::Test,
        })
    }
}

/// Where state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A throwaway database (in RAM-backed `/dev/shm` where available), deleted at shutdown.
    Ephemeral,
    /// A SQLite database `vipps-emulator.sqlite3` in this directory, kept across restarts.
    Dir(PathBuf),
    /// A PostgreSQL database (`postgres://user@host:port/db`), which several instances may share.
    Postgres(String),
}

impl Storage {
    /// Parses a `--store` value: `postgres://...` (or `postgresql://...`), `memory`, or a directory.
    pub fn parse(s: &str) -> Storage {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Storage::Postgres(s.to_owned())
        } else if s == "memory" || s == ":memory:" {
            Storage::Ephemeral
        } else {
            Storage::Dir(PathBuf::from(s.strip_prefix("sqlite://").unwrap_or(s)))
        }
    }
}

/// How hard a commit is pushed to disk before a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `fsync` on every group commit: survives power loss (SQLite `synchronous=FULL`).
    Fsync,
    /// Written to the OS before acknowledging: survives a crash of the process (`synchronous=NORMAL`).
    Process,
}

/// What happens to a header that breaks the contract (a `Vipps-System-*` value over 30 characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validation {
    /// 400 problem+json naming the header (the default).
    Strict,
    /// Accept and log a warning.
    Lenient,
}

/// Token lifetimes per environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetimes {
    /// Test merchants (default 1 hour).
    pub test: Duration,
    /// Production merchants (default 24 hours).
    pub production: Duration,
}

impl Default for TokenLifetimes {
    fn default() -> Self {
        TokenLifetimes {
            test: Duration::from_secs(3600),
            production: Duration::from_secs(86_400),
        }
    }
}

/// Limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Webhook registrations per event type per merchant.
    pub webhooks_per_event: usize,
    /// Requests kept in the request record (oldest dropped first).
    pub request_log_capacity: usize,
    /// Longest payment reference accepted (64 by default; 50 is the spec v1.4.1 value).
    pub reference_max_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 256 * 1024,
            webhooks_per_event: 25,
            request_log_capacity: 100_000,
            reference_max_len: vipps_types::ids::REFERENCE_MAX_LEN,
        }
    }
}

/// The whole emulator configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8080` by default; port 0 picks a free port).
    pub listen: SocketAddr,
    /// Where the same API is served over HTTPS as `api.vipps.no` (production) and `apitest.vipps.no` (test), with
    /// certificates from the emulator's local certificate authority (`None`: no HTTPS listener). Unmodified
    /// clients need it on port 443.
    pub tls_listen: Option<SocketAddr>,
    /// Where the HTTPS proxy listens: it accepts `CONNECT` to `api.vipps.no:443` and `apitest.vipps.no:443` only,
    /// terminates TLS with the local certificate authority and serves the request itself; every other
    /// destination is refused, never forwarded (`None`: no proxy).
    pub proxy_listen: Option<SocketAddr>,
    /// Whether the embedded DNS server also answers `api.vipps.no` and `apitest.vipps.no` (with
    /// [`Config::dns_api_address`], else the TLS listener's address). Needs `dns_listen` and `tls_listen`.
    pub dns_api_hosts: bool,
    /// The address the DNS answers for the API hostnames carry, when the TLS listener's own address is not the
    /// one clients reach (it listens on `0.0.0.0`, or behind a port mapping). Implies `dns_api_hosts`.
    pub dns_api_address: Option<std::net::IpAddr>,
    /// Where state lives.
    pub storage: Storage,
    /// Durability of acknowledged writes.
    pub durability: Durability,
    /// Merchants. At start the demo merchant ([`MerchantConfig::demo`]) is added unless one of these (or a
    /// partner) already uses its MSN, client id or subscription key: configured merchants win.
    pub merchants: Vec<MerchantConfig>,
    /// Partners.
    pub partners: Vec<PartnerConfig>,
    /// Token lifetimes.
    pub tokens: TokenLifetimes,
    /// Strict or lenient header validation.
    pub validation: Validation,
    /// Whether `/_emulator/*` test controls are served.
    pub controls: bool,
    /// Whether Prometheus metrics are kept and served at `GET /metrics` (on by default).
    pub metrics: bool,
    /// Whether the vendor's documented rate limits apply (429 with `Retry-After`; off by default).
    pub rate_limits: bool,
    /// Demand `https` and public addresses for webhook URLs (off by default for local use).
    pub strict_webhook_urls: bool,
    /// How long idempotency records are kept (24 hours by default).
    pub idempotency_retention: Duration,
    /// How long a payment may stay `CREATED` before it expires (10 minutes).
    pub payment_expiry: Duration,
    /// Limits.
    pub limits: Limits,
    /// Where the embedded DNS server listens (UDP and TCP); `None` runs no DNS server.
    pub dns_listen: Option<SocketAddr>,
    /// TTL of DNS answers, in seconds.
    pub dns_ttl: u32,
    /// Explicit addresses per request-server hostname (defaults are loopback addresses 127.0.P.N).
    pub request_server_addresses: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
    /// How often the active request servers rotate, in emulator time (about 90 days).
    pub rotation_period: Duration,
    /// How long a webhook receiver may take to answer before the attempt fails (10 s).
    pub delivery_timeout: Duration,
    /// With PostgreSQL: how long an instance owns a delivery it started before another instance may take it over
    /// (default: the delivery timeout plus 30 seconds).
    pub delivery_lease: Option<Duration>,
    /// Webhook registrations that fail without any success for this long are removed (2 weeks).
    pub unresponsive_removal: Duration,
    /// At most this many deliveries in flight at once.
    pub delivery_concurrency: usize,
    /// Snapshot and scenario files read at start and written at exit.
    pub state_files: StateFiles,
}

/// Files the emulator starts from or leaves behind (`--import`, `--scenario`, `--export-on-exit`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateFiles {
    /// A snapshot to load at start, into an empty store, before anything else is written.
    pub import: Option<PathBuf>,
    /// A scenario file (merchants' payments, webhooks) to seed at start, after the import.
    pub scenario: Option<PathBuf>,
    /// Where to write a snapshot when the emulator shuts down.
    pub export_on_exit: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_listen: None,
            proxy_listen: None,
            dns_api_hosts: false,
            dns_api_address: None,
            storage: Storage::Dir(default_data_dir()),
            durability: Durability::Fsync,
            merchants: vec![],
            partners: vec![],
            tokens: TokenLifetimes::default(),
            validation: Validation::Strict,
            controls: true,
            metrics: true,
            rate_limits: false,
            strict_webhook_urls: false,
            idempotency_retention: Duration::from_secs(24 * 3600),
            payment_expiry: Duration::from_secs(600),
            limits: Limits::default(),
            dns_listen: None,
            dns_ttl: 5,
            request_server_addresses: Default::default(),
            rotation_period: Duration::from_secs(90 * 86_400),
            delivery_timeout: Duration::from_secs(10),
            delivery_lease: None,
            unresponsive_removal: Duration::from_secs(14 * 86_400),
            delivery_concurrency: 256,
            state_files: StateFiles::default(),
        }
    }
}

/// The default data directory: `$VIPPS_EMULATOR_DATA`, else `$XDG_DATA_HOME/vipps-emulator`, else
/// `~/.local/share/vipps-emulator`, else `./.vipps-emulator`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VIPPS_EMULATOR_DATA") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return Path::new(&d).join("vipps-emulator");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return Path::new(&h).join(".local/share/vipps-emulator");
    }
    PathBuf::from(".vipps-emulator")
}

impl Config {
    /// For tests: a throwaway store, `127.0.0.1:0`, controls on, durability `process`.
    pub fn ephemeral() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            storage: Storage::Ephemeral,
            durability: Durability::Process,
            ..Config::default()
        }
    }

    /// Adds a merchant.
    pub fn with_merchant(mut self, m: MerchantConfig) -> Self {
        self.merchants.push(m);
        self
    }

    /// Adds a partner.
    pub fn with_partner(mut self, p: PartnerConfig) -> Self {
        self.partners.push(p);
        self
    }

    /// Reads a TOML file and applies what it sets on top of this configuration.
    pub fn apply_toml_file(self, path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        self.apply_toml(&text).map_err(|e| match e {
            ConfigError::File { message, .. } => ConfigError::File {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Applies a TOML document on top of this configuration. Unknown keys are errors.
    ///
    /// ```
    /// let cfg = vipps_emulator::Config::ephemeral().apply_toml(r#"
    ///     validation = "lenient"
    ///     [tokens]
    ///     test_seconds = 60
    ///     [[merchants]]
    ///     msn = "654321"
    ///     client_id = "prod-id"
    ///     client_secret = "prod-secret"
    ///     subscription_key = "prod-key"
    ///     environment = "production"
    /// "#).unwrap();
    /// assert_eq!(cfg.tokens.test.as_secs(), 60);
    /// assert_eq!(cfg.merchants.len(), 1);
    /// ```
    pub fn apply_toml(mut self, text: &str) -> Result<Self, ConfigError> {
        let f: FileConfig = toml::from_str(text).map_err(|e| ConfigError::File {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        if let Some(l) = f.listen {
            self.listen = l;
        }
        if let Some(l) = f.tls_listen {
            self.tls_listen = Some(l);
        }
        if let Some(l) = f.proxy_listen {
            self.proxy_listen = Some(l);
        }
        if let Some(d) = f.dns_api_hosts {
            self.dns_api_hosts = d;
        }
        if let Some(a) = f.dns_api_address {
            self.dns_api_address = Some(a);
            self.dns_api_hosts = true;
        }
        if let Some(d) = f.data_dir {
            self.storage = Storage::Dir(d);
        }
        if let Some(s) = f.store {
            self.storage = Storage::parse(&s);
        }
        if let Some(d) = f.durability {
            self.durability = d;
        }
        if let Some(v) = f.validation {
            self.validation = v;
        }
        if let Some(c) = f.controls {
            self.controls = c;
        }
        if let Some(m) = f.metrics {
            self.metrics = m;
        }
        if let Some(r) = f.rate_limits {
            self.rate_limits = r;
        }
        if let Some(c) = f.strict_webhook_urls {
            self.strict_webhook_urls = c;
        }
        if let Some(t) = f.tokens {
            if let Some(s) = t.test_seconds {
                self.tokens.test = Duration::from_secs(s);
            }
            if let Some(s) = t.production_seconds {
                self.tokens.production = Duration::from_secs(s);
            }
        }
        if let Some(r) = f.retention {
            if let Some(h) = r.idempotency_hours {
                self.idempotency_retention = Duration::from_secs(h * 3600);
            }
        }
        if let Some(p) = f.payments {
            if let Some(s) = p.expiry_seconds {
                self.payment_expiry = Duration::from_secs(s);
            }
        }
        if let Some(l) = f.limits {
            if let Some(v) = l.max_body_bytes {
                self.limits.max_body_bytes = v;
            }
            if let Some(v) = l.webhooks_per_event {
                self.limits.webhooks_per_event = v;
            }
            if let Some(v) = l.request_log_capacity {
                self.limits.request_log_capacity = v;
            }
            if let Some(v) = l.reference_max_len {
                self.limits.reference_max_len = v;
            }
        }
        if let Some(w) = f.webhooks {
            if let Some(v) = w.delivery_timeout_seconds {
                self.delivery_timeout = Duration::from_secs(v);
            }
            if let Some(v) = w.unresponsive_removal_days {
                self.unresponsive_removal = Duration::from_secs(v * 86_400);
            }
            if let Some(v) = w.concurrency {
                self.delivery_concurrency = v.max(1);
            }
        }
        if let Some(r) = f.request_servers {
            if let Some(d) = r.dns_listen {
                self.dns_listen = Some(d);
            }
            if let Some(t) = r.dns_ttl {
                self.dns_ttl = t;
            }
            if let Some(days) = r.rotation_days {
                self.rotation_period = Duration::from_secs_f64(days * 86_400.0);
            }
            for (host, addrs) in r.addresses {
                if !vipps_types::servers::all_hostnames().contains(&host) {
                    return Err(ConfigError::Invalid(format!(
                        "request_servers.addresses: `{host}` is not a request-server hostname"
                    )));
                }
                if addrs.is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "request_servers.addresses.`{host}` is empty"
                    )));
                }
                self.request_server_addresses.insert(host, addrs);
            }
        }
        for m in f.merchants {
            let mut mc =
                MerchantConfig::test(&m.msn, &m.client_id, &m.client_secret, &m.subscription_key)?;
            mc.environment = m.environment.unwrap_or(MerchantEnvironment::Test);
            self.merchants.push(mc);
        }
        for p in f.partners {
            let msns = p
                .msns
                .iter()
                .map(|m| {
                    MerchantSerialNumber::new(m).map_err(|e| ConfigError::BadSpec(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.partners.push(PartnerConfig {
                client_id: p.client_id,
                client_secret: p.client_secret,
                subscription_key: p.subscription_key,
                msns,
                environment: p.environment.unwrap_or(MerchantEnvironment::Test),
            });
        }
        Ok(self)
    }

    /// Checks cross-field rules: unique client ids, subscription keys and MSNs; sane limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        let mut msns = std::collections::HashSet::new();
        for m in &self.merchants {
            if !ids.insert(m.client_id.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "client_id `{}` is used twice",
                    m.client_id
                )));
            }
            if !keys.insert(m.subscription_key.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "a subscription key is used twice (MSN {})",
                    m.msn
                )));
            }
            if !msns.insert(m.msn.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "MSN {} is configured twice",
                    m.msn
                )));
            }
        }
        for p in &self.partners {
            if !ids.insert(p.client_id.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "client_id `{}` is used twice",
                    p.client_id
                )));
            }
            if !keys.insert(p.subscription_key.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "a subscription key is used twice (partner {})",
                    p.client_id
                )));
            }
            if p.msns.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "partner `{}` has no MSN",
                    p.client_id
                )));
            }
        }
        if self.limits.reference_max_len < vipps_types::ids::REFERENCE_MIN_LEN
            || self.limits.reference_max_len > vipps_types::ids::REFERENCE_MAX_LEN
        {
            return Err(ConfigError::Invalid(
                "limits.reference_max_len must be between 8 and 64".into(),
            ));
        }
        if self.dns_api_hosts || self.dns_api_address.is_some() {
            if self.dns_listen.is_none() {
                return Err(ConfigError::Invalid(
                    "dns_api_hosts needs the embedded DNS server: set dns_listen (--dns-listen)"
                        .into(),
                ));
            }
            match (self.tls_listen, self.dns_api_address) {
                (None, _) => {
                    return Err(ConfigError::Invalid(
                        "dns_api_hosts answers with the HTTPS listener's address: set tls_listen (--tls-listen)"
                            .into(),
                    ));
                }
                (Some(l), None) if l.ip().is_unspecified() => {
                    return Err(ConfigError::Invalid(format!(
                        "dns_api_hosts: the HTTPS listener's address {l} is not one a client can reach; set \
                         dns_api_address (--dns-api-address) to the address clients should use"
                    )));
                }
                _ => {}
            }
        }
        if self.limits.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "limits.max_body_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    tls_listen: Option<SocketAddr>,
    proxy_listen: Option<SocketAddr>,
    dns_api_hosts: Option<bool>,
    dns_api_address: Option<std::net::IpAddr>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    durability: Option<Durability>,
    validation: Option<Validation>,
    controls: Option<bool>,
    metrics: Option<bool>,
    rate_limits: Option<bool>,
    strict_webhook_urls: Option<bool>,
    tokens: Option<FileTokens>,
    retention: Option<FileRetention>,
    payments: Option<FilePayments>,
    limits: Option<FileLimits>,
    webhooks: Option<FileWebhooks>,
    request_servers: Option<FileRequestServers>,
    #[serde(default)]
    merchants: Vec<FileMerchant>,
    #[serde(default)]
    partners: Vec<FilePartner>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTokens {
    test_seconds: Option<u64>,
    production_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetention {
    idempotency_hours: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePayments {
    expiry_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_body_bytes: Option<usize>,
    webhooks_per_event: Option<usize>,
    request_log_capacity: Option<usize>,
    reference_max_len: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebhooks {
    delivery_timeout_seconds: Option<u64>,
    unresponsive_removal_days: Option<u64>,
    concurrency: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRequestServers {
    dns_listen: Option<SocketAddr>,
    dns_ttl: Option<u32>,
    rotation_days: Option<f64>,
    #[serde(default)]
    addresses: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMerchant {
    msn: String,
    client_id: String,
    client_secret: String,
    subscription_key: String,
    environment: Option<MerchantEnvironment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePartner {
    client_id: String,
    client_secret: String,
    subscription_key: String,
    msns: Vec<String>,
    environment: Option<MerchantEnvironment>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/emulator.toml");
        let cfg = Config::ephemeral().apply_toml_file(&path).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.merchants.len(), 1);
        assert_eq!(cfg.tls_listen, None, "TLS is off by default");
        assert_eq!(cfg.partners[0].msns.len(), 2);
        assert_eq!(cfg.limits.webhooks_per_event, 25);
    }

    #[test]
    fn the_tls_edge_is_set_in_the_file() {
        let cfg = Config::ephemeral()
            .apply_toml(
                r#"
                tls_listen = "127.0.0.1:443"
                proxy_listen = "127.0.0.1:3128"
                dns_api_address = "10.0.0.5"
                [request_servers]
                dns_listen = "127.0.0.1:5353"
                "#,
            )
            .unwrap();
        cfg.validate().unwrap();
        assert_eq!(
            cfg.tls_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 443)))
        );
        assert_eq!(
            cfg.proxy_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 3128)))
        );
        assert!(cfg.dns_api_hosts, "an address implies the DNS answers");
        assert_eq!(cfg.dns_api_address, Some([10, 0, 0, 5].into()));
    }

    #[test]
    fn bad_files_and_specs_are_refused() {
        assert!(Config::ephemeral().apply_toml("colour = 1").is_err());
        assert!(
            Config::ephemeral()
                .apply_toml("[tokens]\ntest_seconds = \"x\"")
                .is_err()
        );
        assert!(MerchantConfig::parse_spec("12:a:b:c").is_err());
        assert!(PartnerConfig::parse_spec("a:b:c:").is_err());
        let dup = Config::ephemeral()
            .with_merchant(MerchantConfig::test("654321", "x", "y", "z").unwrap())
            .with_merchant(MerchantConfig::test("654321", "x2", "y2", "z2").unwrap());
        assert!(dup.validate().is_err());
        // The DNS answers for the API hostnames need the DNS server and an address a client can reach.
        let mut dns = Config::ephemeral();
        dns.dns_api_hosts = true;
        assert!(dns.validate().is_err());
        dns.dns_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        assert!(dns.validate().is_err());
        dns.tls_listen = Some(SocketAddr::from(([0, 0, 0, 0], 443)));
        assert!(
            dns.validate()
                .unwrap_err()
                .to_string()
                .contains("dns_api_address")
        );
        dns.dns_api_address = Some([10, 0, 0, 5].into());
        dns.validate().unwrap();
        let m = MerchantConfig::demo();
        assert!(!format!("{m:?}").contains(DEMO_CLIENT_SECRET));
    }
}
