//! The one request shape of every API: a builder that is awaited directly.
//!
//! An API method (`client.recurring().agreement(&id)`, `client.epayment().create(&request)`) returns a [`Read`]
//! or a [`Write`]. Per-call options are methods on it, and `.await` sends it (the builder implements
//! [`IntoFuture`]): no positional `Option`s, no boolean arguments.
//!
//! ```no_run
//! use std::time::Duration;
//! use vipps_client::{Client, RetryPolicy};
//! use vipps_types::headers::RecurringIdempotencyKey;
//!
//! # async fn run(client: Client, request: vipps_types::recurring::DraftAgreementRequest) -> Result<(), vipps_client::Error> {
//! let drafted = client
//!     .recurring()
//!     .draft_agreement(&request)
//!     .idempotency_key(RecurringIdempotencyKey::new("signup-1001").unwrap())
//!     .timeout(Duration::from_secs(20))
//!     .retry_policy(RetryPolicy::default())
//!     .await?;
//! println!("send the user to {:?}", drafted.value.vipps_confirmation_url);
//! # Ok(()) }
//! ```
//!
//! Options:
//! - [`Write::idempotency_key`]: the caller's key (the API's own key type: [`IdempotencyKey`] for ePayment and
//!   Webhooks and Checkout, [`vipps_types::headers::RecurringIdempotencyKey`] for Recurring). Without one, a key is made once
//!   before the first attempt; it is fixed for every retry and returned with the answer and with any error.
//! - `timeout`: the whole call, every attempt and the waits between them (instead of [`crate::Timeouts::total`]).
//! - `retry_policy`: instead of the client's [`RetryPolicy`].
//! - `merchant_serial_number`: another sales unit, for partners acting for several (sent as
//!   `Merchant-Serial-Number`; the access token is the client's).
//!
//! A builder owns a cheap clone of the [`Client`] (an `Arc`), so it and the future it becomes can move into a
//! spawned task.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use serde::de::DeserializeOwned;
use vipps_types::headers::{IdempotencyKey, MerchantSerialNumber};

use crate::client::{Answer, Auth, Call, Client, Idempotent, decode};
use crate::error::Error;
use crate::retry::RetryPolicy;

/// Options of one call, set on its builder.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallOptions {
    /// The whole call (all attempts).
    pub(crate) timeout: Option<Duration>,
    /// Instead of the client's policy.
    pub(crate) retry: Option<RetryPolicy>,
    /// Another sales unit.
    pub(crate) msn: Option<MerchantSerialNumber>,
}

/// How an answer becomes the value.
type Decode<T> = fn(&Answer) -> Result<T, Error>;

fn decode_nothing(_: &Answer) -> Result<(), Error> {
    Ok(())
}

/// A boxed, `Send` future of a call.
pub type CallFuture<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'static>>;

/// A read (`GET`): await it for the decoded answer.
#[must_use = "a request does nothing until it is awaited"]
pub struct Read<T> {
    client: Client,
    call: Call,
    decode: Decode<T>,
}

impl<T> std::fmt::Debug for Read<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Read")
            .field("operation", &self.call.operation)
            .field("path", &self.call.path)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Read<T> {
    pub(crate) fn new(client: &Client, operation: &'static str, path: String) -> Self {
        Read {
            client: client.clone(),
            call: Call {
                operation,
                method: http::Method::GET,
                path,
                body: None,
                key: None,
                reference: None,
                auth: Auth::Bearer,
                options: CallOptions::default(),
            },
            decode: decode::<T>,
        }
    }
}

impl<T> Read<T> {
    pub(crate) fn auth(mut self, auth: Auth) -> Self {
        self.call.auth = auth;
        self
    }

    pub(crate) fn reference(mut self, reference: impl Into<String>) -> Self {
        self.call.reference = Some(reference.into());
        self
    }

    /// A limit for the whole call: every attempt and the waits between them.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.call.options.timeout = Some(timeout);
        self
    }

    /// The retry policy of this call, instead of the client's.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.call.options.retry = Some(policy);
        self
    }

    /// Sends `Merchant-Serial-Number` for another sales unit (partners).
    pub fn merchant_serial_number(mut self, msn: MerchantSerialNumber) -> Self {
        self.call.options.msn = Some(msn);
        self
    }
}

impl<T: Send + 'static> IntoFuture for Read<T> {
    type Output = Result<T, Error>;
    type IntoFuture = CallFuture<T>;

    fn into_future(self) -> Self::IntoFuture {
        let Read {
            client,
            call,
            decode,
        } = self;
        Box::pin(async move {
            let op = call.operation;
            let answer = client.execute(call).await?;
            decode(&answer).map_err(|e| e.with_operation(op))
        })
    }
}

/// A write (`POST`, `PATCH`, `PUT`, `DELETE` with an `Idempotency-Key`): await it for the decoded answer with
/// its key. `K` is the API's key type.
#[must_use = "a request does nothing until it is awaited"]
pub struct Write<T, K = IdempotencyKey> {
    client: Client,
    call: Call,
    decode: Decode<T>,
    /// A body that could not be serialized: the error the call answers.
    invalid: Option<Error>,
    _key: PhantomData<fn(K)>,
}

impl<T, K> std::fmt::Debug for Write<T, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write")
            .field("operation", &self.call.operation)
            .field("path", &self.call.path)
            .field("idempotency_key", &self.call.key)
            .finish_non_exhaustive()
    }
}

impl<K> Write<(), K> {
    /// A write whose answer has no body worth reading.
    pub(crate) fn empty<B: serde::Serialize>(
        client: &Client,
        operation: &'static str,
        method: http::Method,
        path: String,
        body: Option<&B>,
    ) -> Self {
        Self::with_decode(client, operation, method, path, body, decode_nothing)
    }
}

impl<T: DeserializeOwned, K> Write<T, K> {
    /// A write whose answer is JSON.
    pub(crate) fn json<B: serde::Serialize>(
        client: &Client,
        operation: &'static str,
        method: http::Method,
        path: String,
        body: Option<&B>,
    ) -> Self {
        Self::with_decode(client, operation, method, path, body, decode::<T>)
    }
}

impl<T, K> Write<T, K> {
    fn with_decode<B: serde::Serialize>(
        client: &Client,
        operation: &'static str,
        method: http::Method,
        path: String,
        body: Option<&B>,
        decode: Decode<T>,
    ) -> Self {
        let (body, invalid) = match body.map(|b| client.body(operation, b)) {
            None => (None, None),
            Some(Ok(b)) => (Some(b), None),
            Some(Err(e)) => (None, Some(e)),
        };
        Write {
            client: client.clone(),
            call: Call {
                operation,
                method,
                path,
                body,
                key: None,
                reference: None,
                auth: Auth::Bearer,
                options: CallOptions::default(),
            },
            decode,
            invalid,
            _key: PhantomData,
        }
    }

    pub(crate) fn reference(mut self, reference: impl Into<String>) -> Self {
        self.call.reference = Some(reference.into());
        self
    }

    pub(crate) fn auth(mut self, auth: Auth) -> Self {
        self.call.auth = auth;
        self
    }

    /// Refuses the call before sending anything: awaiting it answers `e`.
    pub(crate) fn refuse(mut self, e: Error) -> Self {
        self.invalid = Some(e.with_operation(self.call.operation));
        self
    }

    /// The caller's idempotency key: retries of this call and later calls with the same key and body get the
    /// first answer (replayed). Without one, a new key is made once before the first attempt.
    pub fn idempotency_key(mut self, key: K) -> Self
    where
        K: Into<IdempotencyKey>,
    {
        self.call.key = Some(key.into());
        self
    }

    /// A limit for the whole call: every attempt and the waits between them.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.call.options.timeout = Some(timeout);
        self
    }

    /// The retry policy of this call, instead of the client's.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.call.options.retry = Some(policy);
        self
    }

    /// Sends `Merchant-Serial-Number` for another sales unit (partners).
    pub fn merchant_serial_number(mut self, msn: MerchantSerialNumber) -> Self {
        self.call.options.msn = Some(msn);
        self
    }
}

impl<T: Send + 'static, K> IntoFuture for Write<T, K> {
    type Output = Result<Idempotent<T>, Error>;
    type IntoFuture = CallFuture<Idempotent<T>>;

    fn into_future(self) -> Self::IntoFuture {
        let Write {
            client,
            mut call,
            decode,
            invalid,
            ..
        } = self;
        Box::pin(async move {
            if let Some(e) = invalid {
                return Err(e);
            }
            call.key = Some(client.key_or_new(call.key.take()));
            let op = call.operation;
            let answer = client.execute(call).await?;
            let value =
                decode(&answer).map_err(|e| e.with_operation(op).with_key(answer.key.clone()))?;
            Ok(Idempotent {
                value,
                idempotency_key: answer.key.expect("writes carry a key"),
                replayed: answer.replayed,
                attempts: answer.attempts,
            })
        })
    }
}
