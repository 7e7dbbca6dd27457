//! Time and randomness, injectable so that tests control backoff, token expiry, jitter and generated keys.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// A boxed sleep future.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The source of time for the client: the monotonic clock (token expiry, deadlines), the wall clock
/// (`Retry-After` as an HTTP date) and sleeping (backoff, polling).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The monotonic time now.
    fn now(&self) -> Instant;
    /// The wall-clock time now.
    fn system_now(&self) -> SystemTime;
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// The real clock: `std::time` and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock for tests: time moves only when told, and sleeping moves it forward at once and records the
/// duration.
///
/// ```
/// use std::time::Duration;
/// use vipps_client::clock::{Clock, ManualClock};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.sleep(Duration::from_secs(5)).await;
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(clock.now() - start, Duration::from_secs(6));
/// assert_eq!(clock.sleeps(), vec![Duration::from_secs(5)]);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    base: Instant,
    base_system: SystemTime,
    offset: Mutex<Duration>,
    sleeps: Mutex<Vec<Duration>>,
}

impl ManualClock {
    /// A clock starting at the real time now.
    pub fn new() -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                base: Instant::now(),
                base_system: SystemTime::now(),
                offset: Mutex::new(Duration::ZERO),
                sleeps: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        *self.inner.offset.lock() += by;
    }

    /// Every duration slept so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.inner.sleeps.lock().clone()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.base + *self.inner.offset.lock()
    }
    fn system_now(&self) -> SystemTime {
        self.inner.base_system + *self.inner.offset.lock()
    }
    fn sleep(&self, duration: Duration) -> Sleep {
        self.inner.sleeps.lock().push(duration);
        self.advance(duration);
        Box::pin(tokio::task::yield_now())
    }
}

/// Randomness for jitter and generated idempotency keys.
pub trait Entropy: Send + Sync + fmt::Debug + 'static {
    /// 64 random bits.
    fn next_u64(&self) -> u64;
}

/// The operating system's randomness (through `rand`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn next_u64(&self) -> u64 {
        rand::random()
    }
}

/// A deterministic sequence (SplitMix64) for tests: the same seed gives the same keys and jitter.
///
/// ```
/// use vipps_client::clock::{Entropy, SeededEntropy};
///
/// let a = SeededEntropy::new(7);
/// let b = SeededEntropy::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// ```
#[derive(Debug)]
pub struct SeededEntropy {
    state: AtomicU64,
}

impl SeededEntropy {
    /// A sequence from a seed.
    pub fn new(seed: u64) -> Self {
        SeededEntropy {
            state: AtomicU64::new(seed),
        }
    }
}

impl Entropy for SeededEntropy {
    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A version-4 UUID from the entropy source, for generated idempotency keys.
pub(crate) fn uuid_v4(entropy: &dyn Entropy) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&entropy.next_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&entropy.next_u64().to_le_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_keys_repeat_and_are_uuids() {
        let a = uuid_v4(&SeededEntropy::new(1));
        let b = uuid_v4(&SeededEntropy::new(1));
        let c = uuid_v4(&SeededEntropy::new(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 4);
        assert_ne!(uuid_v4(&OsEntropy), uuid_v4(&OsEntropy));
    }
}
