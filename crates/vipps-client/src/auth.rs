//! Access tokens: a cache keyed by base URL, client id and MSN, filled lazily with one fetch at a time
//! (single-flight) and renewed before the token expires.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};

use crate::clock::Clock;
use crate::error::Error;

/// The most a token is renewed ahead of its expiry.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(180);

/// Which token: one per base URL, client id and merchant serial number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TokenKey {
    pub(crate) base_url: String,
    pub(crate) client_id: String,
    pub(crate) msn: String,
}

/// A token in the cache. Its generation tells a renewal after a 401 whether someone else has already renewed.
#[derive(Clone)]
pub(crate) struct Token {
    /// `Bearer <token>`, built once per token (sensitive), so a call does not format it again.
    pub(crate) bearer: Option<http::HeaderValue>,
    pub(crate) generation: u64,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"[redacted]")
            .field("generation", &self.generation)
            .finish()
    }
}

impl Token {
    #[cfg(test)]
    pub(crate) fn expose(&self) -> &str {
        self.bearer
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.strip_prefix("Bearer "))
            .unwrap_or("")
    }
}

struct Cached {
    token: Token,
    refresh_at: Instant,
    expires_at: Instant,
}

/// The cache entry of one (base URL, client id, MSN); a client keeps its own so a call skips the map lookup.
#[derive(Default)]
pub(crate) struct Slot {
    current: Mutex<Option<Cached>>,
    /// Held while a fetch is under way: the single flight.
    fetching: tokio::sync::Mutex<()>,
}

/// A shared access-token cache. Every [`Client`](crate::Client) has one; clients built with the same cache
/// (see [`ClientBuilder::token_cache`](crate::ClientBuilder::token_cache)) share tokens when their base URL,
/// client id and MSN match. Cloning shares the cache.
#[derive(Clone, Default)]
pub struct TokenCache {
    slots: Arc<Mutex<HashMap<TokenKey, Arc<Slot>>>>,
    generations: Arc<std::sync::atomic::AtomicU64>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.slots.lock().len())
            .finish()
    }
}

impl TokenCache {
    /// An empty cache.
    pub fn new() -> Self {
        TokenCache::default()
    }

    pub(crate) fn slot(&self, key: &TokenKey) -> Arc<Slot> {
        Arc::clone(self.slots.lock().entry(key.clone()).or_default())
    }

    /// A usable token: the cached one while it is fresh; a cached one near expiry while someone else renews it;
    /// otherwise one fetch shared by every caller waiting at the same time.
    #[cfg(test)]
    pub(crate) async fn get<F, Fut>(
        &self,
        key: &TokenKey,
        clock: &dyn Clock,
        margin: Duration,
        fetch: F,
    ) -> Result<Token, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(SecretString, Duration), Error>>,
    {
        self.get_in(&self.slot(key), clock, margin, fetch).await
    }

    /// [`TokenCache::get`] for a slot the caller holds.
    pub(crate) async fn get_in<F, Fut>(
        &self,
        slot: &Slot,
        clock: &dyn Clock,
        margin: Duration,
        fetch: F,
    ) -> Result<Token, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(SecretString, Duration), Error>>,
    {
        let now = clock.now();
        {
            let current = slot.current.lock();
            if let Some(c) = current.as_ref() {
                if now < c.refresh_at {
                    return Ok(c.token.clone());
                }
                if now < c.expires_at && slot.fetching.try_lock().is_err() {
                    // Someone is renewing; the old token is still valid.
                    return Ok(c.token.clone());
                }
            }
        }
        let _flight = slot.fetching.lock().await;
        if let Some(c) = slot.current.lock().as_ref()
            && clock.now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        self.fill(slot, clock, margin, fetch).await
    }

    /// Renews after a 401 for the token of generation `stale`: a caller that finds it already renewed uses the
    /// new one instead of fetching again.
    #[cfg(test)]
    pub(crate) async fn renew<F, Fut>(
        &self,
        key: &TokenKey,
        stale: u64,
        clock: &dyn Clock,
        margin: Duration,
        fetch: F,
    ) -> Result<Token, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(SecretString, Duration), Error>>,
    {
        self.renew_in(&self.slot(key), stale, clock, margin, fetch)
            .await
    }

    /// [`TokenCache::renew`] for a slot the caller holds.
    pub(crate) async fn renew_in<F, Fut>(
        &self,
        slot: &Slot,
        stale: u64,
        clock: &dyn Clock,
        margin: Duration,
        fetch: F,
    ) -> Result<Token, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(SecretString, Duration), Error>>,
    {
        let _flight = slot.fetching.lock().await;
        if let Some(c) = slot.current.lock().as_ref()
            && c.token.generation != stale
            && clock.now() < c.expires_at
        {
            return Ok(c.token.clone());
        }
        self.fill(slot, clock, margin, fetch).await
    }

    /// Stores a token fetched outside the cache (such as by [`Client::access_token`](crate::Client::access_token)).
    pub(crate) fn store(
        &self,
        key: &TokenKey,
        clock: &dyn Clock,
        margin: Duration,
        value: SecretString,
        lifetime: Duration,
    ) {
        let slot = self.slot(key);
        let started = clock.now();
        self.put(&slot, started, margin, value, lifetime);
    }

    async fn fill<F, Fut>(
        &self,
        slot: &Slot,
        clock: &dyn Clock,
        margin: Duration,
        fetch: F,
    ) -> Result<Token, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(SecretString, Duration), Error>>,
    {
        // The lifetime counts from before the request, so the cached expiry is never late.
        let started = clock.now();
        let (value, lifetime) = fetch().await?;
        Ok(self.put(slot, started, margin, value, lifetime))
    }

    fn put(
        &self,
        slot: &Slot,
        started: Instant,
        margin: Duration,
        value: SecretString,
        lifetime: Duration,
    ) -> Token {
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let bearer = http::HeaderValue::from_str(&format!("Bearer {}", value.expose_secret()))
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        let token = Token { bearer, generation };
        let expires_at = started + lifetime;
        let refresh_at = expires_at - refresh_margin(margin, lifetime);
        *slot.current.lock() = Some(Cached {
            token: token.clone(),
            refresh_at,
            expires_at,
        });
        token
    }
}

/// How long before expiry a token is renewed: the configured margin, but at most half the lifetime so that a
/// short-lived token is still used.
pub(crate) fn refresh_margin(margin: Duration, lifetime: Duration) -> Duration {
    margin.min(lifetime / 2)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::clock::ManualClock;

    fn key(msn: &str) -> TokenKey {
        TokenKey {
            base_url: "http://127.0.0.1:1/".into(),
            client_id: "id".into(),
            msn: msn.into(),
        }
    }

    async fn fetcher(
        count: &AtomicU32,
        lifetime: Duration,
    ) -> Result<(SecretString, Duration), Error> {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::task::yield_now().await;
        Ok((SecretString::from(format!("token-{n}")), lifetime))
    }

    #[tokio::test]
    async fn cached_until_the_margin_then_renewed() {
        let clock = ManualClock::new();
        let cache = TokenCache::new();
        let count = AtomicU32::new(0);
        let hour = Duration::from_secs(3600);
        let margin = DEFAULT_REFRESH_MARGIN;
        let t = cache
            .get(&key("1234"), &clock, margin, || fetcher(&count, hour))
            .await
            .unwrap();
        assert_eq!(t.expose(), "token-1");
        clock.advance(hour - margin - Duration::from_secs(1));
        let t = cache
            .get(&key("1234"), &clock, margin, || fetcher(&count, hour))
            .await
            .unwrap();
        assert_eq!(t.expose(), "token-1");
        clock.advance(Duration::from_secs(1));
        let t = cache
            .get(&key("1234"), &clock, margin, || fetcher(&count, hour))
            .await
            .unwrap();
        assert_eq!(t.expose(), "token-2");
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // Another MSN has its own token.
        let t = cache
            .get(&key("5678"), &clock, margin, || fetcher(&count, hour))
            .await
            .unwrap();
        assert_eq!(t.expose(), "token-3");
    }

    #[tokio::test]
    async fn short_lifetimes_use_half_the_lifetime_as_margin() {
        assert_eq!(
            refresh_margin(DEFAULT_REFRESH_MARGIN, Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert_eq!(
            refresh_margin(DEFAULT_REFRESH_MARGIN, Duration::from_secs(86_400)),
            DEFAULT_REFRESH_MARGIN
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_fetch_for_many_callers() {
        let clock = ManualClock::new();
        let cache = TokenCache::new();
        let count = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let cache = cache.clone();
            let clock = clock.clone();
            let count = Arc::clone(&count);
            tasks.push(tokio::spawn(async move {
                cache
                    .get(&key("1234"), &clock, DEFAULT_REFRESH_MARGIN, || async {
                        count.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok((SecretString::from("t"), Duration::from_secs(3600)))
                    })
                    .await
                    .unwrap()
                    .generation
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 1);
        }
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn renew_after_401_fetches_once_per_stale_generation() {
        let clock = ManualClock::new();
        let cache = TokenCache::new();
        let count = AtomicU32::new(0);
        let hour = Duration::from_secs(3600);
        let m = DEFAULT_REFRESH_MARGIN;
        let t1 = cache
            .get(&key("1234"), &clock, m, || fetcher(&count, hour))
            .await
            .unwrap();
        let t2 = cache
            .renew(&key("1234"), t1.generation, &clock, m, || {
                fetcher(&count, hour)
            })
            .await
            .unwrap();
        assert_eq!(t2.expose(), "token-2");
        // A second caller that saw the same stale token gets the renewed one without a fetch.
        let t3 = cache
            .renew(&key("1234"), t1.generation, &clock, m, || {
                fetcher(&count, hour)
            })
            .await
            .unwrap();
        assert_eq!(t3.expose(), "token-2");
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert!(!format!("{t3:?}").contains("token-2"));
    }

    #[tokio::test]
    async fn failed_fetch_is_not_cached() {
        let clock = ManualClock::new();
        let cache = TokenCache::new();
        let m = DEFAULT_REFRESH_MARGIN;
        let err = cache
            .get(&key("1234"), &clock, m, || async {
                Err(Error::invalid_request("no"))
            })
            .await;
        assert!(err.is_err());
        let count = AtomicU32::new(0);
        let t = cache
            .get(&key("1234"), &clock, m, || {
                fetcher(&count, Duration::from_secs(60))
            })
            .await
            .unwrap();
        assert_eq!(t.expose(), "token-1");
    }
}
