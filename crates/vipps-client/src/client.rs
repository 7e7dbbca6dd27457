//! [`Client`], [`ClientBuilder`] and the one request pipeline every API call goes through.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use tracing::Instrument;
use url::Url;
use vipps_types::env::Environment;
use vipps_types::headers::{
    self as h, IdempotencyKey, MerchantSerialNumber, SystemHeader, SystemInfo, SystemValue,
};
use vipps_types::token::{ACCESS_TOKEN_PATH, AccessTokenResponse};

use crate::auth::{DEFAULT_REFRESH_MARGIN, Token, TokenCache, TokenKey};
use crate::clock::{Clock, Entropy, OsEntropy, SystemClock, uuid_v4};
use crate::config::{Credentials, Timeouts};
use crate::error::{ApiError, Error, ErrorKind, cut_body};
use crate::request::CallOptions;
use crate::retry::{self, RetryPolicy, parse_retry_after};

/// The `User-Agent` of every request: this crate's name and version.
pub const USER_AGENT_VALUE: &str = concat!("vipps-client/", env!("CARGO_PKG_VERSION"));

/// Response headers that may carry a trace id when the body does not.
const TRACE_HEADERS: [&str; 3] = ["traceparent", "x-trace-id", "request-id"];

/// A client for one sales unit (MSN) in one environment. Cheap to clone; clones share the connection pool and
/// the token cache.
///
/// ```no_run
/// use vipps_client::{Client, Credentials};
/// use vipps_types::env::Environment;
///
/// # async fn run() -> Result<(), vipps_client::Error> {
/// let client = Client::builder()
///     .environment(Environment::Test)
///     .credentials(Credentials::new("client-id", "client-secret", "subscription-key"))
///     .merchant_serial_number("123456")
///     .system("acme-shop", "1.4.2")
///     .build()?;
/// let payment = client.epayment().get(&"acme-order-1001".parse().unwrap()).await?;
/// println!("{}", payment.state);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    environment: Environment,
    base_url: Url,
    credentials: Credentials,
    msn: MerchantSerialNumber,
    system: Option<SystemInfo>,
    api_headers: HeaderMap,
    token_headers: HeaderMap,
    timeouts: Timeouts,
    retry: RetryPolicy,
    pub(crate) clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    tokens: TokenCache,
    token_key: TokenKey,
    /// This client's entry in the token cache.
    token_slot: Arc<crate::auth::Slot>,
    refresh_margin: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Client")
            .field("base_url", &i.base_url.as_str())
            .field("credentials", &i.credentials)
            .field("msn", &i.msn)
            .field("system", &i.system)
            .field("timeouts", &i.timeouts)
            .field("retry", &i.retry)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`Client`]; everything is checked by [`ClientBuilder::build`].
#[derive(Default)]
pub struct ClientBuilder {
    environment: Option<Environment>,
    base_url: Option<String>,
    credentials: Option<Credentials>,
    msn: Option<String>,
    system_name: Option<String>,
    system_version: Option<String>,
    plugin: Option<(String, String)>,
    timeouts: Timeouts,
    retry: RetryPolicy,
    clock: Option<Arc<dyn Clock>>,
    entropy: Option<Arc<dyn Entropy>>,
    tokens: Option<TokenCache>,
    refresh_margin: Option<Duration>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("environment", &self.environment)
            .field("base_url", &self.base_url)
            .field("credentials", &self.credentials)
            .field("msn", &self.msn)
            .field("system_name", &self.system_name)
            .field("system_version", &self.system_version)
            .field("plugin", &self.plugin)
            .field("timeouts", &self.timeouts)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The API environment: [`Environment::Test`], [`Environment::Production`] or a custom base URL.
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self.base_url = None;
        self
    }

    /// A custom base URL such as `http://127.0.0.1:8080`, checked when the client is built.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self.environment = None;
        self
    }

    /// The sales unit's API keys.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The merchant serial number (4 to 7 digits), checked when the client is built.
    pub fn merchant_serial_number(mut self, msn: impl Into<String>) -> Self {
        self.msn = Some(msn.into());
        self
    }

    /// `Vipps-System-Name` and `Vipps-System-Version` (1 to 30 printable ASCII characters each), checked when
    /// the client is built. Without them no `Vipps-System-*` header is sent.
    pub fn system(self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.system_name(name).system_version(version)
    }

    /// `Vipps-System-Name` alone. The vendor asks for as much of the system information as is known, so a name
    /// without a version is sent as it is (and nothing stands in for the missing version).
    pub fn system_name(mut self, name: impl Into<String>) -> Self {
        self.system_name = Some(name.into());
        self
    }

    /// `Vipps-System-Version` alone (see [`ClientBuilder::system_name`]).
    pub fn system_version(mut self, version: impl Into<String>) -> Self {
        self.system_version = Some(version.into());
        self
    }

    /// `Vipps-System-Plugin-Name` and `-Version`; empty strings mean "not set", and then, when both the system
    /// name and version are set, those are sent in their place.
    pub fn plugin(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.plugin = Some((name.into(), version.into()));
        self
    }

    /// Connect, per-attempt and total timeouts.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// How calls are retried.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The clock for backoff, deadlines, polling and token expiry (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The randomness for jitter and generated idempotency keys (default [`OsEntropy`]).
    pub fn entropy(mut self, entropy: impl Entropy) -> Self {
        self.entropy = Some(Arc::new(entropy));
        self
    }

    /// A token cache to share with other clients (default: a new one per client).
    pub fn token_cache(mut self, cache: TokenCache) -> Self {
        self.tokens = Some(cache);
        self
    }

    /// How long before expiry a token is renewed (default 3 minutes, at most half the token's lifetime).
    pub fn token_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = Some(margin);
        self
    }

    /// Checks every setting and builds the client. Fails, before any request, on a missing environment or
    /// credentials, an invalid MSN, an invalid `Vipps-System-*` value or a credential that cannot be a header.
    pub fn build(self) -> Result<Client, Error> {
        let environment = match (self.environment, self.base_url) {
            (Some(e), _) => e,
            (None, Some(url)) => {
                Environment::custom(&url).map_err(|e| Error::config(format!("environment: {e}")))?
            }
            (None, None) => return Err(Error::config("environment or base URL is required")),
        };
        let credentials = self
            .credentials
            .ok_or_else(|| Error::config("credentials are required"))?;
        for (field, value) in [
            ("client id", credentials.client_id()),
            ("client secret", credentials.client_secret()),
            ("subscription key", credentials.subscription_key()),
        ] {
            if value.trim().is_empty() {
                return Err(Error::config(format!("the {field} is empty")));
            }
            if HeaderValue::from_str(value).is_err() {
                // Never echo the value: it may be a secret.
                return Err(Error::config(format!(
                    "the {field} has characters that cannot be sent in a header"
                )));
            }
        }
        let msn = self
            .msn
            .ok_or_else(|| Error::config("merchant serial number is required"))?;
        let msn = MerchantSerialNumber::new(&msn).map_err(|e| Error::config(e.to_string()))?;
        let invalid = |e: vipps_types::headers::ValueError| Error::config(e.to_string());
        let mut system_headers: Vec<(&'static str, String)> = Vec::new();
        let system = match (self.system_name, self.system_version) {
            (Some(name), Some(version)) => {
                let info = SystemInfo::new(&name, &version).map_err(invalid)?;
                let info = match self.plugin {
                    Some((pn, pv)) => info.with_plugin(&pn, &pv).map_err(invalid)?,
                    None => info,
                };
                system_headers.extend(info.headers().map(|(n, v)| (n, v.to_owned())));
                Some(info)
            }
            (name, version) => {
                // Only part of the system information: what is set is sent, and nothing stands in for the rest.
                let (pn, pv) = self.plugin.unzip();
                for (header, value) in [
                    (SystemHeader::Name, name),
                    (SystemHeader::Version, version),
                    (SystemHeader::PluginName, pn),
                    (SystemHeader::PluginVersion, pv),
                ] {
                    let value = value.as_deref().unwrap_or("");
                    if let Some(v) = SystemValue::new_optional(header, value).map_err(invalid)? {
                        system_headers.push((header.header_name(), v.as_str().to_owned()));
                    }
                }
                None
            }
        };

        let base_url = environment.base_url();
        let mut common = HeaderMap::new();
        common.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        common.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        common.insert(
            HeaderName::from_static("ocp-apim-subscription-key"),
            sensitive(credentials.subscription_key())?,
        );
        common.insert(
            HeaderName::from_static("merchant-serial-number"),
            HeaderValue::from_str(msn.as_str()).map_err(|_| Error::config("MSN"))?,
        );
        for (name, value) in &system_headers {
            common.insert(
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| Error::config(*name))?,
                HeaderValue::from_str(value).map_err(|_| Error::config(*name))?,
            );
        }
        let api_headers = common.clone();
        let mut token_headers = common;
        token_headers.insert(
            HeaderName::from_static("client_id"),
            HeaderValue::from_str(credentials.client_id())
                .map_err(|_| Error::config("client id"))?,
        );
        token_headers.insert(
            HeaderName::from_static("client_secret"),
            sensitive(credentials.client_secret())?,
        );

        let http = reqwest::Client::builder()
            .connect_timeout(self.timeouts.connect)
            .timeout(self.timeouts.attempt)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::config(format!("HTTP client: {e}")))?;
        let token_key = TokenKey {
            base_url: base_url.to_string(),
            client_id: credentials.client_id().to_owned(),
            msn: msn.as_str().to_owned(),
        };
        let tokens = self.tokens.unwrap_or_default();
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                environment,
                base_url,
                credentials,
                msn,
                system,
                api_headers,
                token_headers,
                timeouts: self.timeouts,
                retry: self.retry,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                entropy: self.entropy.unwrap_or_else(|| Arc::new(OsEntropy)),
                token_slot: tokens.slot(&token_key),
                tokens,
                token_key,
                refresh_margin: self.refresh_margin.unwrap_or(DEFAULT_REFRESH_MARGIN),
            }),
        })
    }
}

fn sensitive(value: &str) -> Result<HeaderValue, Error> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| Error::config("a credential cannot be sent in a header"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// The result of a write: the answer, the idempotency key it was sent with (persist it to retry the same
/// operation after a restart), whether the server replayed an earlier answer, and how many requests were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Idempotent<T> {
    /// The decoded answer.
    pub value: T,
    /// The key every attempt carried.
    pub idempotency_key: IdempotencyKey,
    /// Whether the answer carried `Idempotent-Replayed: true`.
    pub replayed: bool,
    /// HTTP requests sent for this call.
    pub attempts: u32,
}

type AttemptFuture = Pin<Box<dyn Future<Output = Result<Answer, Error>> + Send + 'static>>;

/// What every attempt of one call shares.
struct Shared {
    call: Call,
    url: Url,
    deadline: Option<Instant>,
    renewed: AtomicBool,
    sent: AtomicU32,
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// `Authorization: Bearer` from the token cache.
    Bearer,
    /// `client_id` and `client_secret` headers (the access-token request).
    TokenRequest,
    /// The API keys in headers on every call, no token (the Checkout API).
    ClientKeys,
}

/// One logical call: fixed before the first attempt, so every retry sends the same method, URL, key and bytes.
pub(crate) struct Call {
    pub(crate) operation: &'static str,
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) body: Option<Bytes>,
    pub(crate) key: Option<IdempotencyKey>,
    pub(crate) reference: Option<String>,
    pub(crate) auth: Auth,
    pub(crate) options: CallOptions,
}

/// A 2xx answer.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
    pub(crate) replayed: bool,
    pub(crate) attempts: u32,
    pub(crate) key: Option<IdempotencyKey>,
}

impl Client {
    /// Settings for a new client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The environment.
    pub fn environment(&self) -> &Environment {
        &self.inner.environment
    }

    /// The base URL requests go to (ends in `/`).
    pub fn base_url(&self) -> &Url {
        &self.inner.base_url
    }

    /// The merchant serial number.
    pub fn merchant_serial_number(&self) -> &MerchantSerialNumber {
        &self.inner.msn
    }

    /// The `Vipps-System-*` values, if set.
    pub fn system_info(&self) -> Option<&SystemInfo> {
        self.inner.system.as_ref()
    }

    /// The headers every API request carries besides `Authorization` and `Idempotency-Key`, with secret values
    /// replaced by `[redacted]`. For diagnostics and tests.
    pub fn default_headers(&self) -> Vec<(String, String)> {
        self.inner
            .api_headers
            .iter()
            .map(|(k, v)| {
                let shown = if v.is_sensitive() {
                    "[redacted]".to_owned()
                } else {
                    v.to_str().unwrap_or("[binary]").to_owned()
                };
                (k.as_str().to_owned(), shown)
            })
            .collect()
    }

    /// Fetches a new access token (`POST /accesstoken/get`), with retries, and caches it for later calls. API
    /// calls fetch tokens by themselves; use this to check credentials.
    pub async fn access_token(&self) -> Result<AccessTokenResponse, Error> {
        let call = Call {
            operation: "accesstoken.get",
            method: http::Method::POST,
            path: ACCESS_TOKEN_PATH.to_owned(),
            body: None,
            key: None,
            reference: None,
            auth: Auth::TokenRequest,
            options: CallOptions::default(),
        };
        let started = self.inner.clock.now();
        let answer = self.execute(call).await?;
        let token = decode_token(&answer).map_err(|e| e.with_operation("accesstoken.get"))?;
        let i = &self.inner;
        let lifetime = token_lifetime(&token);
        i.tokens.store(
            &i.token_key,
            &*i.clock,
            i.refresh_margin,
            SecretString::from(token.access_token.clone()),
            lifetime.saturating_sub(i.clock.now() - started),
        );
        Ok(token)
    }

    /// The caller's key, or a new random one (a UUID v4).
    pub(crate) fn key_or_new(&self, key: Option<IdempotencyKey>) -> IdempotencyKey {
        key.unwrap_or_else(|| {
            IdempotencyKey::new(&uuid_v4(&*self.inner.entropy)).expect("a UUID is a valid key")
        })
    }

    /// Serializes a body once, before the first attempt.
    pub(crate) fn body<B: serde::Serialize>(
        &self,
        operation: &'static str,
        body: &B,
    ) -> Result<Bytes, Error> {
        serde_json::to_vec(body).map(Bytes::from).map_err(|e| {
            Error::invalid_request(format!("cannot serialize the body: {e}"))
                .with_operation(operation)
        })
    }

    /// The pipeline: one span per call, the retry loop, the total deadline, and the key on every error.
    ///
    /// Boxed as a `Send` future: this erases the retry loop's closure types, whose higher-ranked lifetimes the
    /// compiler otherwise cannot prove `Send` in callers that spawn the call.
    pub(crate) fn execute(
        &self,
        call: Call,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, Error>> + Send + '_>> {
        let span = tracing::debug_span!(
            "vipps.call",
            operation = call.operation,
            method = %call.method,
            path = %call.path,
            reference = call.reference.as_deref(),
            idempotency_key = call.key.as_ref().map(IdempotencyKey::as_str),
            attempts = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        Box::pin(self.execute_inner(call, span.clone()).instrument(span))
    }

    async fn execute_inner(&self, call: Call, span: tracing::Span) -> Result<Answer, Error> {
        let i = &self.inner;
        let url = i
            .base_url
            .join(call.path.trim_start_matches('/'))
            .map_err(|e| {
                Error::invalid_request(format!("bad path: {e}"))
                    .with_operation(call.operation)
                    .with_key(call.key.clone())
            })?;
        let total = call.options.timeout.or(i.timeouts.total);
        let deadline = total.map(|t| i.clock.now() + t);
        let shared = Arc::new(Shared {
            call,
            url,
            deadline,
            renewed: AtomicBool::new(false),
            sent: AtomicU32::new(0),
        });
        let policy = shared.call.options.retry.as_ref().unwrap_or(&i.retry);
        let attempts = retry::run(policy, &i.clock, &*i.entropy, deadline, |n| {
            let attempt_span =
                tracing::debug_span!("vipps.attempt", attempt = n, status = tracing::field::Empty);
            // Each attempt owns what it uses, so no attempt future borrows from this closure.
            let (this, shared) = (self.clone(), Arc::clone(&shared));
            let fut: AttemptFuture =
                Box::pin(async move { this.attempt(&shared).await }.instrument(attempt_span));
            fut
        });
        // The hard stop of the total deadline runs on real time: an injected clock that jumps ahead when asked
        // to sleep (like `ManualClock`) must not end every call at once. The retry loop also refuses, on the
        // injected clock, any retry that would start past the deadline.
        let result = match total {
            Some(total) => match tokio::time::timeout(total, attempts).await {
                Ok((r, _)) => r,
                Err(_) => Err(Error::new(ErrorKind::Timeout {
                    may_have_reached_server: shared.sent.load(Ordering::Relaxed) > 0,
                    total: true,
                })),
            },
            None => attempts.await.0,
        };
        let sent = shared.sent.load(Ordering::Relaxed);
        span.record("attempts", sent);
        match result {
            Ok(mut answer) => {
                span.record("status", answer.status);
                answer.attempts = sent;
                answer.key = shared.call.key.clone();
                Ok(answer)
            }
            Err(e) => {
                if let Some(s) = e.status() {
                    span.record("status", s);
                }
                let e = e
                    .with_operation(shared.call.operation)
                    .with_key(shared.call.key.clone())
                    .with_attempts(sent);
                tracing::debug!(error = %e, "call failed");
                Err(e)
            }
        }
    }

    /// One attempt: a token, the request, and after a 401 one renewal and one resend per call.
    async fn attempt(&self, shared: &Shared) -> Result<Answer, Error> {
        let Shared {
            call,
            url,
            deadline,
            renewed,
            sent,
        } = shared;
        let deadline = *deadline;
        let token = match call.auth {
            Auth::Bearer => Some(self.token().await?),
            Auth::TokenRequest | Auth::ClientKeys => None,
        };
        sent.fetch_add(1, Ordering::Relaxed);
        let mut answer = self.send(call, url, token.as_ref(), deadline).await;
        if let (Some(stale), Err(e)) = (&token, &answer)
            && e.status() == Some(401)
            && !renewed.swap(true, Ordering::Relaxed)
        {
            tracing::debug!("401: renewing the access token once");
            let fresh = self.renew_token(stale.generation).await?;
            sent.fetch_add(1, Ordering::Relaxed);
            answer = self.send(call, url, Some(&fresh), deadline).await;
        }
        answer
    }

    /// Sends one request and reads the whole answer.
    async fn send(
        &self,
        call: &Call,
        url: &Url,
        token: Option<&Token>,
        deadline: Option<Instant>,
    ) -> Result<Answer, Error> {
        let i = &self.inner;
        let headers = match call.auth {
            Auth::Bearer => &i.api_headers,
            Auth::TokenRequest | Auth::ClientKeys => &i.token_headers,
        };
        let mut headers = headers.clone();
        if let Some(msn) = &call.options.msn {
            headers.insert(
                HeaderName::from_static("merchant-serial-number"),
                HeaderValue::from_str(msn.as_str())
                    .map_err(|_| Error::invalid_request("the MSN cannot be sent in a header"))?,
            );
        }
        if let Some(t) = token {
            let v = t.bearer.clone().ok_or_else(|| {
                Error::invalid_request("the access token cannot be sent in a header")
            })?;
            headers.insert(http::header::AUTHORIZATION, v);
        }
        let mut req = i
            .http
            .request(call.method.clone(), url.clone())
            .headers(headers);
        if let Some(k) = &call.key {
            req = req.header(h::IDEMPOTENCY_KEY, k.as_str());
        }
        req = match &call.body {
            Some(b) => req.body(b.clone()),
            None if call.method == http::Method::POST => req.header(CONTENT_LENGTH, "0"),
            None => req,
        };
        let mut timeout = i.timeouts.attempt;
        if let Some(d) = deadline {
            timeout = timeout.min(d.saturating_duration_since(i.clock.now()));
        }
        let resp = req.timeout(timeout).send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        tracing::Span::current().record("status", status);
        tracing::debug!(status, "answered");
        let replayed = resp
            .headers()
            .get(h::IDEMPOTENT_REPLAYED)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let retry_after = resp
            .headers()
            .get(h::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, i.clock.system_now(), i.retry.max_retry_after()));
        let trace_id = TRACE_HEADERS.iter().find_map(|name| {
            resp.headers()
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        let body = resp.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            Ok(Answer {
                status,
                body,
                replayed,
                attempts: 0,
                key: None,
            })
        } else {
            Err(Error::new(ErrorKind::Api(ApiError::from_parts(
                status,
                &body,
                retry_after,
                trace_id,
            ))))
        }
    }

    async fn token(&self) -> Result<Token, Error> {
        let i = &self.inner;
        i.tokens
            .get_in(&i.token_slot, &*i.clock, i.refresh_margin, || {
                self.fetch_token_once()
            })
            .await
    }

    async fn renew_token(&self, stale: u64) -> Result<Token, Error> {
        let i = &self.inner;
        i.tokens
            .renew_in(&i.token_slot, stale, &*i.clock, i.refresh_margin, || {
                self.fetch_token_once()
            })
            .await
    }

    /// One token request, without retries of its own: a failure fails the attempt that needed the token, and
    /// the call's retry loop decides.
    async fn fetch_token_once(&self) -> Result<(SecretString, Duration), Error> {
        let call = Call {
            operation: "accesstoken.get",
            method: http::Method::POST,
            path: ACCESS_TOKEN_PATH.to_owned(),
            body: None,
            key: None,
            reference: None,
            auth: Auth::TokenRequest,
            options: CallOptions::default(),
        };
        let url = self
            .inner
            .base_url
            .join(ACCESS_TOKEN_PATH.trim_start_matches('/'))
            .map_err(|e| Error::invalid_request(format!("bad path: {e}")))?;
        let span = tracing::debug_span!("vipps.token", status = tracing::field::Empty);
        let answer = self.send(&call, &url, None, None).instrument(span).await?;
        let token = decode_token(&answer)?;
        let lifetime = token_lifetime(&token);
        Ok((SecretString::from(token.access_token), lifetime))
    }
}

fn token_lifetime(t: &AccessTokenResponse) -> Duration {
    Duration::from_secs(t.expires_in.max(0) as u64)
}

fn decode_token(answer: &Answer) -> Result<AccessTokenResponse, Error> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        Error::new(ErrorKind::Decode {
            status: answer.status,
            message: e.to_string(),
            // The body may hold a token: never kept.
            body: None,
        })
    })
}

pub(crate) fn decode<T: DeserializeOwned>(answer: &Answer) -> Result<T, Error> {
    let body: &[u8] = if answer.body.is_empty() {
        b"null"
    } else {
        &answer.body
    };
    serde_json::from_slice(body).map_err(|e| {
        Error::new(ErrorKind::Decode {
            status: answer.status,
            message: e.to_string(),
            body: Some(cut_body(&answer.body)),
        })
    })
}

/// Maps a transport failure without exposing the transport's types.
fn transport(e: reqwest::Error) -> Error {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        Error::new(ErrorKind::Timeout {
            may_have_reached_server: !e.is_connect(),
            total: false,
        })
    } else if e.is_connect() {
        Error::new(ErrorKind::Connect { message })
    } else {
        Error::new(ErrorKind::Network { message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> ClientBuilder {
        Client::builder()
            .base_url("http://127.0.0.1:9/")
            .credentials(Credentials::new("client-1", "s3cr3t-value", "subkey-value"))
            .merchant_serial_number("123456")
    }

    #[test]
    fn headers_on_every_request() {
        let c = builder().system("acme", "1.2.3").build().unwrap();
        let headers: std::collections::HashMap<_, _> = c.default_headers().into_iter().collect();
        assert_eq!(headers["user-agent"], USER_AGENT_VALUE);
        assert!(USER_AGENT_VALUE.starts_with("vipps-client/"));
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["ocp-apim-subscription-key"], "[redacted]");
        assert_eq!(headers["merchant-serial-number"], "123456");
        assert_eq!(headers["vipps-system-name"], "acme");
        assert_eq!(headers["vipps-system-version"], "1.2.3");
        // No plugin set: the system name and version stand in.
        assert_eq!(headers["vipps-system-plugin-name"], "acme");
        assert_eq!(headers["vipps-system-plugin-version"], "1.2.3");
        assert!(!headers.contains_key("authorization"));
        assert!(headers.values().all(|v| !v.is_empty()));

        let c = builder()
            .system("acme", "1.2.3")
            .plugin("acme-webshop", "4.5.6")
            .build()
            .unwrap();
        let headers: std::collections::HashMap<_, _> = c.default_headers().into_iter().collect();
        assert_eq!(headers["vipps-system-plugin-name"], "acme-webshop");

        // Part of it set: what is set is sent, nothing stands in for the rest.
        let c = builder().system_name("acme").build().unwrap();
        let headers: std::collections::HashMap<_, _> = c.default_headers().into_iter().collect();
        assert_eq!(headers["vipps-system-name"], "acme");
        assert!(!headers.contains_key("vipps-system-version"));
        assert!(!headers.contains_key("vipps-system-plugin-name"));
        let c = builder()
            .system_version("1.2.3")
            .plugin("", "9")
            .build()
            .unwrap();
        let headers: std::collections::HashMap<_, _> = c.default_headers().into_iter().collect();
        assert_eq!(headers["vipps-system-version"], "1.2.3");
        assert_eq!(headers["vipps-system-plugin-version"], "9");
        assert!(!headers.contains_key("vipps-system-name"));
        assert!(!headers.contains_key("vipps-system-plugin-name"));

        // Nothing set: no system headers at all, never empty strings.
        let c = builder().build().unwrap();
        assert!(
            c.default_headers()
                .iter()
                .all(|(k, _)| !k.starts_with("vipps-system"))
        );
    }

    #[test]
    fn build_checks_settings_before_any_request() {
        let e = builder().system("n".repeat(31), "1").build().unwrap_err();
        assert!(e.is_usage());
        assert!(e.to_string().contains("Vipps-System-Name"), "{e}");
        assert_eq!(e.attempts(), 0);
        assert!(builder().merchant_serial_number("12").build().is_err());
        assert!(builder().base_url("ftp://x").build().is_err());
        assert!(builder().system_name("n".repeat(31)).build().is_err());
        let e = builder()
            .credentials(Credentials::new("id", "bad\nsecret", "k"))
            .build()
            .unwrap_err();
        assert!(!e.to_string().contains("bad"), "{e}");
        assert!(
            Client::builder()
                .credentials(Credentials::new("a", "b", "c"))
                .merchant_serial_number("1234")
                .build()
                .is_err()
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = builder().build().unwrap();
        let shown = format!("{c:?} {:?}", builder());
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!shown.contains("subkey-value"), "{shown}");
        assert!(shown.contains("123456"));
    }

    #[test]
    fn generated_keys_are_fixed_by_the_entropy() {
        let a = builder()
            .entropy(crate::clock::SeededEntropy::new(3))
            .build()
            .unwrap();
        let b = builder()
            .entropy(crate::clock::SeededEntropy::new(3))
            .build()
            .unwrap();
        assert_eq!(a.key_or_new(None), b.key_or_new(None));
        let mine = IdempotencyKey::new("order-42-capture-1").unwrap();
        assert_eq!(a.key_or_new(Some(mine.clone())), mine);
    }
}
