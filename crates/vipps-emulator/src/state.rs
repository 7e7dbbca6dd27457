//! Shared state of a running emulator.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use url::Url;

use crate::clock::EmulatorClock;
use crate::config::{Config, MerchantConfig, MerchantEnvironment, PartnerConfig};
use crate::faults::Faults;
use crate::ids::IdGen;
use crate::reqlog::RequestLog;
use crate::store::Store;

/// Who a set of API keys belongs to.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A sales unit's own keys.
    Merchant(Arc<MerchantConfig>),
    /// A partner acting for several sales units.
    Partner(Arc<PartnerConfig>),
}

impl Principal {
    /// The client id.
    pub fn client_id(&self) -> &str {
        match self {
            Principal::Merchant(m) => &m.client_id,
            Principal::Partner(p) => &p.client_id,
        }
    }
    /// The client secret.
    pub fn client_secret(&self) -> &str {
        match self {
            Principal::Merchant(m) => &m.client_secret,
            Principal::Partner(p) => &p.client_secret,
        }
    }
    /// Test or production.
    pub fn environment(&self) -> MerchantEnvironment {
        match self {
            Principal::Merchant(m) => m.environment,
            Principal::Partner(p) => p.environment,
        }
    }
    /// A stable identity for scoping (`merchant:<client_id>` or `partner:<client_id>`).
    pub fn scope_id(&self) -> String {
        match self {
            Principal::Merchant(m) => format!("merchant:{}", m.client_id),
            Principal::Partner(p) => format!("partner:{}", p.client_id),
        }
    }
}

/// Claims of an in-flight idempotent request, so a concurrent duplicate is answered 423 instead of waiting.
#[derive(Debug, Default)]
pub struct InFlight {
    scopes: Mutex<HashSet<String>>,
}

/// Releases an in-flight claim when dropped.
#[derive(Debug)]
pub struct InFlightGuard<'a> {
    owner: &'a InFlight,
    scope: String,
}

impl InFlight {
    /// Claims `scope`; `None` when another request holds it.
    pub fn claim(&self, scope: &str) -> Option<InFlightGuard<'_>> {
        if self.scopes.lock().insert(scope.to_owned()) {
            Some(InFlightGuard {
                owner: self,
                scope: scope.to_owned(),
            })
        } else {
            None
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.owner.scopes.lock().remove(&self.scope);
    }
}

/// Everything a request handler needs.
pub struct AppState {
    /// Configuration.
    pub config: Config,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Emulator time.
    pub clock: EmulatorClock,
    /// Identifier generator.
    pub ids: Arc<dyn IdGen>,
    /// The key that signs access tokens (kept in the store so tokens survive a restart).
    pub jwt_key: Vec<u8>,
    /// Principals by subscription key.
    pub by_subscription_key: HashMap<String, Principal>,
    /// MSNs that exist, with their environment.
    pub msns: HashMap<String, MerchantEnvironment>,
    /// The request record.
    pub requests: RequestLog,
    /// Fault rules.
    pub faults: Faults,
    /// In-flight idempotent requests.
    pub inflight: InFlight,
    /// Wakes the background sweeper (after the clock moves).
    pub sweep: Notify,
    /// The base URL clients use (for redirect URLs).
    pub base_url: Url,
    /// Woken when the delivery outbox changed (new events, finished attempts, the clock moved).
    pub outbox: Arc<Notify>,
    /// The request servers (active server, addresses).
    pub request_servers: parking_lot::RwLock<crate::request_servers::RequestServers>,
    /// The DNS answers, updated whenever the request servers change.
    pub dns_answers: Arc<crate::dns::ZoneAnswers>,
    /// The address of the embedded DNS server, if it runs.
    pub dns_addr: Option<std::net::SocketAddr>,
    /// Tokens whose signature was already verified, with their claims (expiry is still checked on every call).
    pub verified_tokens: parking_lot::RwLock<HashMap<Box<str>, Arc<crate::auth::Claims>>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("base_url", &self.base_url.as_str())
            .finish_non_exhaustive()
    }
}
