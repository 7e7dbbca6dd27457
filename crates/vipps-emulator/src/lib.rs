//! A local, stateful, durable Vipps MobilePay API platform for tests and development.
//!
//! It serves the access-token endpoint, the ePayment API v1 and the Webhooks API v1 with the vendor's status
//! codes, field names and problem bodies; enforces the header contract; makes create, capture, refund and cancel
//! idempotent (replays byte for byte, refuses a reused key with a different body, answers 423 while the first
//! request still runs); keeps state in SQLite with group commit; and offers test controls under `/_emulator/`:
//! a movable clock, acting as the user, fault injection and a request record, with a dashboard for browsers at
//! `/_emulator/` and payer pages (landing page, app screen, QR image, push inbox) behind `redirectUrl`. Unmodified clients, which always
//! call `https://apitest.vipps.no` or `https://api.vipps.no`, reach it through the TLS edge
//! ([`Config::tls_listen`], [`Config::proxy_listen`]) with certificates from a local certificate authority kept in
//! the store ([`Emulator::ca_pem`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use vipps_emulator::{Config, Emulator, MerchantConfig};
//!
//! let config = Config::ephemeral().with_merchant(MerchantConfig::test("654321", "id", "secret", "key")?);
//! let emu = Emulator::start(config).await?;
//! let base = emu.base_url().clone(); // http://127.0.0.1:<port>/
//! # let _ = base;
//! emu.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod app;
pub mod config;
mod controls;
mod dashboard;
mod machine;
mod platform;
mod products;
mod proxy;
mod serve;
mod tls;

pub use app::{Emulator, Injected, StartError};
pub use config::{
    Config, Durability, MerchantConfig, MerchantEnvironment, PartnerConfig, StateFiles, Storage,
    Validation,
};
pub use platform::clock::{ManualTime, SystemTime, TimeSource};
pub use platform::ids::{IdGen, RandomIds, SeededIds};
pub use platform::snapshot::SnapshotError;
pub use platform::store::postgres::redact_url;
pub use tls::TlsError;
