//! The platform core: what every product API shares and what the vendor documents once. Authentication and
//! access tokens, the header contract, idempotency, problem answers, the durable store of aggregates, the webhook
//! outbox and its delivery from the request servers (with their DNS), clock, ids, faults, the request record and
//! the background jobs. Nothing here names a product API: products plug in through [`product::Product`].

pub(crate) mod aggregate;
pub(crate) mod auth;
pub(crate) mod clock;
pub(crate) mod events;
pub(crate) mod extract;
pub(crate) mod faults;
pub(crate) mod html;
pub(crate) mod http;
pub(crate) mod idempotency;
pub(crate) mod ids;
pub(crate) mod jobs;
pub(crate) mod metrics;
pub(crate) mod middleware;
pub(crate) mod openapi;
pub(crate) mod product;
pub(crate) mod ratelimit;
pub(crate) mod reqlog;
pub(crate) mod scenario;
pub(crate) mod snapshot;
pub(crate) mod store;
pub(crate) mod token;
pub(crate) mod webhooks;

use std::sync::Arc;

use tokio::sync::Notify;
use url::Url;

use crate::config::Config;
use clock::EmulatorClock;
use faults::Faults;
use idempotency::InFlight;
use ids::IdGen;
use product::Registry;
use reqlog::RequestLog;
use store::Store;
use webhooks::dns::ZoneAnswers;
use webhooks::request_servers::RequestServers;

/// The shared handle every handler and job holds.
pub(crate) type Shared = Arc<Platform>;

/// Everything a request handler or background job needs.
pub(crate) struct Platform {
    /// Configuration.
    pub config: Config,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Emulator time.
    pub clock: EmulatorClock,
    /// Identifier generator.
    pub ids: Arc<dyn IdGen>,
    /// API keys, principals and access tokens.
    pub auth: auth::Authenticator,
    /// The request record.
    pub requests: RequestLog,
    /// Fault rules.
    pub faults: Faults,
    /// In-flight idempotent requests.
    pub inflight: InFlight,
    /// Wakes the background sweeper (after the clock moves).
    pub sweep: Notify,
    /// Held by the sweep that runs (the sweeper's, or a clock move's): two at once would settle the same due
    /// aggregates twice over, the second time for nothing.
    pub sweeping: tokio::sync::Mutex<()>,
    /// The base URL clients use (for redirect URLs).
    pub base_url: Url,
    /// Woken when the delivery outbox changed (new events, finished attempts, the clock moved).
    pub outbox: Arc<Notify>,
    /// The request servers (active server, addresses).
    pub request_servers: parking_lot::RwLock<RequestServers>,
    /// The DNS answers, updated whenever the request servers change.
    pub dns_answers: Arc<ZoneAnswers>,
    /// The address of the embedded DNS server, if it runs.
    pub dns_addr: Option<std::net::SocketAddr>,
    /// The HTTPS listener and proxy, and the certificate authority clients trust.
    pub edge: Edge,
    /// The product APIs.
    pub products: Registry,
    /// Counts changes (writes, recorded requests, delivery attempts, request-server moves), so that open dashboard
    /// pages update themselves (server-sent events).
    pub changes: tokio::sync::watch::Sender<u64>,
    /// The Prometheus metrics (`None`: turned off).
    pub metrics: Option<Arc<metrics::Metrics>>,
    /// The machine-readable event stream (aggregate state changes, delivery attempts).
    pub events: events::Events,
    /// Delivery-side chaos rules.
    pub chaos: webhooks::chaos::Chaos,
}

impl Platform {
    /// Tells open dashboard pages that something changed.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The demo merchant, if it was added (configured merchants win over it).
    pub(crate) fn demo_merchant(&self) -> Option<&crate::config::MerchantConfig> {
        let demo = crate::config::MerchantConfig::demo();
        self.config.merchants.iter().find(|m| **m == demo)
    }
}

/// How clients reach the platform besides the plain HTTP listener: the HTTPS listener for the vendor's API
/// hostnames and the proxy, with the local certificate authority they must trust.
#[derive(Debug, Clone, Default)]
pub(crate) struct Edge {
    /// The HTTPS listener's address.
    pub tls_addr: Option<std::net::SocketAddr>,
    /// The proxy's address.
    pub proxy_addr: Option<std::net::SocketAddr>,
    /// The local certificate authority's certificate (PEM), when either runs.
    pub ca_pem: Option<Arc<str>>,
    /// Where that certificate was written (`ca.pem` in the data directory).
    pub ca_file: Option<std::path::PathBuf>,
    /// The address the embedded DNS server gives for the API hostnames, when it answers them.
    pub dns_api_address: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("base_url", &self.base_url.as_str())
            .field("products", &self.products)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tidy {
    //! The core must not depend on a product API.

    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable source folder") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn the_core_names_no_product() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&root.join("platform"), &mut files);
        files.push(root.join("serve.rs"));
        files.push(root.join("controls.rs"));
        rust_files(&root.join("dashboard"), &mut files);
        rust_files(&root.join("machine"), &mut files);
        // Built at run time so that this file does not name what it forbids.
        let needle = ["products", "::"].concat();
        let mut offenders = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).expect("readable source");
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if code.contains(&needle) {
                    offenders.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "the platform core must not name a product module:\n{}",
            offenders.join("\n")
        );
    }
}
