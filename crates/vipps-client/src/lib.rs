//! A merchant client for the Vipps MobilePay APIs: access token, ePayment API v1, Recurring API v3, Checkout API
//! v3 and Webhooks API v1.
//!
//! Every wire type, header name and validated value comes from [`vipps_types`]. The client adds what a careful
//! merchant integration needs around them:
//!
//! - **Configuration checked at build time**: environment (test, production or any base URL), credentials held
//!   as secrets, MSN and `Vipps-System-*` values validated by [`ClientBuilder::build`], timeouts (connect,
//!   per attempt, total) and a [`RetryPolicy`].
//! - **Tokens**: fetched lazily, cached per base URL, client id and MSN ([`TokenCache`]), renewed before expiry,
//!   fetched once when many callers need one at the same time; after a 401 a call renews once and resends once.
//! - **Headers** on every request: `Authorization`, `Ocp-Apim-Subscription-Key`, `Merchant-Serial-Number`, the
//!   `Vipps-System-*` values that are set (never empty strings), `Content-Type` and `User-Agent`
//!   ([`USER_AGENT_VALUE`]).
//! - **Idempotency**: every write takes the caller's key or makes one before the first attempt; every retry
//!   sends the same key and the same bytes; the key comes back in [`Idempotent`] and in [`Error`].
//! - **Retries** ([`retry`]): connection failures, timeouts, 408, 423, 429 and 5xx, with exponential backoff and
//!   jitter (on `backon`), honouring `Retry-After`, bounded by attempts and a total deadline. Never other 4xx.
//! - **One request shape** ([`Read`], [`Write`]): every API method returns a builder that is awaited directly,
//!   with per-call options (idempotency key, timeout, retry policy, MSN); handles own a clone of the client.
//! - **One error type**, [`Error`], with predicates, the parsed [`Problem`](vipps_types::problem::Problem)
//!   and its error code, the idempotency key and the trace id. No transport types in the public API.
//! - **Tracing**: a `vipps.call` span per call and a `vipps.attempt` span per attempt, with operation,
//!   reference, idempotency key, attempt and status; never a secret.
//! - **Injectable time and randomness** ([`clock`]) so that tests control backoff, expiry, jitter and keys.
//!
//! ```no_run
//! use std::time::Duration;
//! use vipps_client::{Client, Credentials, RetryPolicy, Timeouts};
//! use vipps_types::epayment::{CreatePaymentRequest, UserFlow};
//! use vipps_types::env::Environment;
//! use vipps_types::headers::IdempotencyKey;
//! use vipps_types::money::{Amount, Currency};
//!
//! # async fn run() -> Result<(), vipps_client::Error> {
//! let client = Client::builder()
//!     .environment(Environment::Test)
//!     .credentials(Credentials::new("client-id", "client-secret", "subscription-key"))
//!     .merchant_serial_number("123456")
//!     .system("acme-shop", "1.4.2")
//!     .timeouts(Timeouts::default().with_total(Duration::from_secs(30)))
//!     .retry_policy(RetryPolicy::default().with_max_attempts(5))
//!     .build()?;
//!
//! let reference = "acme-order-1001".parse().unwrap();
//! let amount = Amount::new(Currency::Nok, 49_900).unwrap();
//! let request = CreatePaymentRequest::new(amount, reference, UserFlow::WebRedirect)
//!     .with_return_url("https://example.com/return");
//! let key = IdempotencyKey::new("acme-order-1001-create").unwrap();
//! match client.epayment().create(&request).idempotency_key(key).await {
//!     Ok(created) => println!("redirect to {:?}", created.value.redirect_url),
//!     Err(e) if e.is_retryable() => {
//!         // Persist e.idempotency_key() and try again later: the payment is created at most once.
//!     }
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod auth;
mod checkout;
mod client;
pub mod clock;
mod config;
mod epayment;
mod error;
mod recurring;
mod request;
pub mod retry;
mod webhooks;

pub use auth::{DEFAULT_REFRESH_MARGIN, TokenCache};
pub use checkout::Checkout;
pub use client::{Client, ClientBuilder, Idempotent, USER_AGENT_VALUE};
pub use config::{Credentials, Timeouts};
pub use epayment::{EPayment, PollOptions, force_approve_path};
pub use error::{ApiError, Error, ErrorKind, MAX_KEPT_BODY};
pub use recurring::{AgreementQuery, Recurring};
pub use request::{CallFuture, Read, Write};
pub use retry::RetryPolicy;
pub use webhooks::Webhooks;

/// The contract crate, re-exported so that callers use the same types.
pub use vipps_types as types;
