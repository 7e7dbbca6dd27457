//! The Vipps MobilePay wire contract, shared by the emulator, the merchant client and the callback guard.
//!
//! This crate does no I/O, has no async code and depends on no HTTP client or server. It holds:
//!
//! - [`env`]: the API environments (production, test, any custom base URL);
//! - [`servers`]: the inventory of request servers that make callbacks;
//! - [`headers`]: header names and validated header values ([`headers::SystemInfo`],
//!   [`headers::MerchantSerialNumber`], [`headers::IdempotencyKey`]);
//! - [`ids`]: [`ids::Reference`] and [`ids::PspReference`];
//! - [`money`]: [`money::Amount`] in minor units;
//! - [`problem`]: the `application/problem+json` error model and the ePayment error codes;
//! - [`token`]: the access-token response;
//! - [`checkout`]: Checkout API v3 request and response bodies, states and its problem format;
//! - [`epayment`]: ePayment API v1 request and response bodies, states and events;
//! - [`receipt`]: the Order Management receipt that a payment may carry;
//! - [`webhooks`]: Webhooks API v1 bodies;
//! - [`signing`]: webhook request signing and verification exactly as Vipps does it.
//!
//! A validated value that can be constructed is valid: every constructor checks the rule and returns a typed
//! error naming it.
//!
//! ```
//! use vipps_types::headers::{IdempotencyKey, SystemInfo};
//!
//! let info = SystemInfo::new("acme", "1.2.3").unwrap();
//! assert_eq!(info.name().as_str(), "acme");
//! assert!(IdempotencyKey::new("order-42-capture-1").is_ok());
//! assert!(IdempotencyKey::new("has,comma").is_err());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checkout;
pub mod enums;
pub mod env;
pub mod epayment;
pub mod headers;
pub mod ids;
pub mod money;
pub mod problem;
pub mod receipt;
pub mod recurring;
pub mod servers;
pub mod signing;
pub mod token;
pub mod webhooks;
