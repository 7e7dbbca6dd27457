//! Identifier generation, injectable so tests can be reproducible.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::{Rng, SeedableRng};

/// Makes the identifiers the emulator hands out.
pub trait IdGen: Send + Sync + 'static {
    /// 16 random bytes.
    fn bytes16(&self) -> [u8; 16];
    /// A numeric pspReference (unique for the lifetime of the store).
    fn psp_reference(&self) -> String;
    /// A number that grows by one with every call, from a random start, so short ids built from it differ
    /// within a process and sort in the order they were issued. The default draws a random number each time
    /// (unique with high probability, unordered).
    fn sequence(&self) -> u64 {
        let b = self.bytes16();
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

/// Random identifiers from the operating system's generator.
#[derive(Debug)]
pub struct RandomIds {
    counter: AtomicU64,
    sequence: AtomicU64,
}

impl Default for RandomIds {
    fn default() -> Self {
        RandomIds {
            counter: AtomicU64::new(0),
            sequence: AtomicU64::new(rand::rng().random()),
        }
    }
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
    fn sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }
}

/// Reproducible identifiers from a seed (for tests).
#[derive(Debug)]
pub struct SeededIds {
    rng: parking_lot::Mutex<rand::rngs::StdRng>,
    counter: AtomicU64,
    sequence: AtomicU64,
}

impl SeededIds {
    /// From a seed.
    pub fn new(seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let sequence = AtomicU64::new(rng.random());
        SeededIds {
            rng: parking_lot::Mutex::new(rng),
            counter: AtomicU64::new(1),
            sequence,
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
    fn sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
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
