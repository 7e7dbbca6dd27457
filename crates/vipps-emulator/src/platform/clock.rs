//! Emulator time: the system clock plus an offset that tests move forward.
//!
//! Everything that depends on time (token lifetimes, payment expiry, idempotency retention) reads
//! [`EmulatorClock::now`], never the system clock directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// A source of the current time.
pub trait TimeSource: Send + Sync + 'static {
    /// Now, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemTime;

impl TimeSource for SystemTime {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to (for tests).
#[derive(Debug)]
pub struct ManualTime(parking_lot::Mutex<OffsetDateTime>);

impl ManualTime {
    /// Starts at `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        ManualTime(parking_lot::Mutex::new(at))
    }
    /// Moves to `at`.
    pub fn set(&self, at: OffsetDateTime) {
        *self.0.lock() = at;
    }
}

impl TimeSource for ManualTime {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock()
    }
}

/// The emulator's clock: a base time source plus an offset in milliseconds.
#[derive(Clone)]
pub(crate) struct EmulatorClock {
    base: Arc<dyn TimeSource>,
    offset_ms: Arc<AtomicI64>,
}

impl std::fmt::Debug for EmulatorClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorClock")
            .field("offset_ms", &self.offset_ms.load(Ordering::Relaxed))
            .finish()
    }
}

impl EmulatorClock {
    /// A clock over `base`, starting with an offset.
    pub(crate) fn new(base: Arc<dyn TimeSource>, offset_ms: i64) -> Self {
        EmulatorClock {
            base,
            offset_ms: Arc::new(AtomicI64::new(offset_ms)),
        }
    }

    /// Emulator time now, truncated to milliseconds.
    pub(crate) fn now(&self) -> OffsetDateTime {
        let t =
            self.base.now() + time::Duration::milliseconds(self.offset_ms.load(Ordering::Acquire));
        let ms = t.millisecond();
        t.replace_millisecond(ms).unwrap_or(t)
    }

    /// The base clock's time, without the test offset: what a webhook's `x-ms-date` carries, so that receivers
    /// checking it against their own clock keep working after the emulator clock was moved.
    pub(crate) fn wall(&self) -> std::time::SystemTime {
        let t = self.base.now();
        std::time::UNIX_EPOCH
            + std::time::Duration::from_nanos(t.unix_timestamp_nanos().max(0) as u64)
    }

    /// Emulator time as Unix seconds.
    pub(crate) fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// Emulator time as Unix milliseconds.
    pub(crate) fn unix_ms(&self) -> i64 {
        (self.now().unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// Moves emulator time forward; returns the new offset in milliseconds.
    pub(crate) fn advance_ms(&self, ms: i64) -> i64 {
        self.offset_ms.fetch_add(ms, Ordering::AcqRel) + ms
    }

    /// Sets the offset (from the shared store); time never moves backwards.
    pub(crate) fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.fetch_max(offset_ms, Ordering::AcqRel);
    }

    /// The current offset from the base clock in milliseconds.
    pub(crate) fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Acquire)
    }
}

/// Formats a time as RFC 3339 in UTC (`2024-01-01T12:00:00.123Z`).
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now() {
        let base = Arc::new(ManualTime::new(OffsetDateTime::UNIX_EPOCH));
        let c = EmulatorClock::new(base.clone(), 0);
        assert_eq!(c.unix(), 0);
        c.advance_ms(90_000);
        assert_eq!(c.unix(), 90);
        base.set(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(10));
        assert_eq!(c.unix(), 100);
        assert_eq!(rfc3339(c.now()), "1970-01-01T00:01:40Z");
    }
}
