//! DNS-driven allowlists of the Vipps MobilePay request servers (the hosts that send webhooks and callbacks).
//!
//! Vipps MobilePay publishes the addresses of its request servers only through DNS
//! (`callback-1..4`, `callback-dr-1..4`, `callback-mt-1..2` under `vipps.no`) and changes them without warning.
//! This crate keeps an allowlist in step with DNS, safely:
//!
//! - [`resolve`]: A and AAAA lookups with hickory, the system configuration or explicit name servers;
//! - [`snapshot`]: the pure state update. Per-name last-known-good, a grace period after an address was last seen,
//!   rejection of special-purpose ranges, caps on size and churn, canonical addresses, a persisted snapshot, and
//!   never an empty set;
//! - [`refresh`]: the TTL-driven loop that publishes an immutable [`AllowSet`] through a lock-free
//!   [`SharedAllowlist`];
//! - [`apply`]: nftables or ipset applied in one transaction, with drift detection;
//! - [`export`]: deterministic nftables, ipset, iptables, nginx, HAProxy and JSON artefacts;
//! - [`layer`]: a tower [`Layer`](tower::Layer) for axum and hyper that answers 403 problem+json to clients not in
//!   the set (no DNS on the request path);
//! - [`receiver`]: a webhook receiver that combines the allowlist, HMAC verification, a date window and duplicate
//!   suppression.
//!
//! The allowlist is defence in depth; the HMAC signature is the authentication.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use vipps_allowlist::snapshot::{apply, NameAnswer, Policy, Snapshot};
//!
//! let names = vec!["callback-1.vipps.no".to_string()];
//! let policy = Policy::default();
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let answers = vec![(names[0].clone(), NameAnswer::Addresses(vec![("104.45.17.199".parse().unwrap(), 300)]))];
//! let update = apply(&Snapshot::default(), &names, answers, &policy, now).unwrap();
//! assert!(update.set.contains("::ffff:104.45.17.199".parse().unwrap()));
//! assert_eq!(update.diff.added.len(), 1);
//! ```
#![deny(missing_docs)]

pub mod addr;
pub mod apply;
pub mod export;
pub mod layer;
pub mod receiver;
pub mod refresh;
pub mod resolve;
pub mod snapshot;

mod error;
mod set;

use std::time::SystemTime;

pub use error::Error;
pub use export::{ExportOptions, Format};
pub use ipnet::IpNet;
pub use layer::{AllowlistLayer, ClientIp, ForwardedHeader};
pub use receiver::WebhookReceiver;
pub use refresh::{Refresher, SharedAllowlist};
pub use resolve::DnsResolver;
pub use set::{AllowSet, Diff, Entry};
pub use snapshot::{Policy, Snapshot};

/// A source of the current time, injected so grace periods, date windows and duplicate windows are testable
/// without sleeping.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, flushed to disk, then renamed
/// over the target. Readers see the old or the new file, never a partial one. The file is made world-readable
/// (`0644`) so a proxy running as another user can read it.
pub fn write_atomic(path: &std::path::Path, contents: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    let err = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".vipps-allowlist-")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(contents).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(err)?;
    }
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}
