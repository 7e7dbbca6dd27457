//! Identifier generation, injectable so tests can be reproducible.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::{Rng, SeedableRng};

/// Makes the identifiers the emulator hands out.
pub trait IdGen: Send + Sync + 'static {
    /// 16 random bytes.
    fn bytes16(&self) -> [u8; 16];
    /// A numeric pspReference (unique for the lifetime of the store).
    fn psp_reference(&self) -> String;
}

/// Random identifiers from the operating system's generator.
#[derive(Debug, Default)]
pub struct RandomIds {
    counter: AtomicU64,
}

impl IdGen for RandomIds {
    fn bytes16(&self) -> [u8; 16] {
        rand::rng().random()
    }
    fn psp_reference(&self) -> String {
        // Time-ordered high part plus a random low part: unique and increasing within a process.
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let r: u32 = rand::rng().random_range(0..1000);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        format!("{}{:06}{:03}", t, n % 1_000_000, r)
    }
}

/// Reproducible identifiers from a seed (for tests).
#[derive(Debug)]
pub struct SeededIds {
    rng: parking_lot::Mutex<rand::rngs::StdRng>,
    counter: AtomicU64,
}

impl SeededIds {
    /// From a seed.
    pub fn new(seed: u64) -> Self {
        SeededIds {
            rng: parking_lot::Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            counter: AtomicU64::new(1),
        }
    }
}

impl IdGen for SeededIds {
    fn bytes16(&self) -> [u8; 16] {
        self.rng.lock().random()
    }
    fn psp_reference(&self) -> String {
        format!("{:012}", self.counter.fetch_add(1, Ordering::Relaxed))
    }
}

/// A UUID (version 4 layout) from 16 bytes.
pub(crate) fn uuid_from(bytes: [u8; 16]) -> String {
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// A W3C traceparent-shaped trace id: `00-<32 hex>-<16 hex>-01`.
pub(crate) fn trace_id(ids: &dyn IdGen) -> String {
    let a = ids.bytes16();
    let b = ids.bytes16();
    format!("00-{}-{}-01", hex(&a), hex(&b[..8]))
}
