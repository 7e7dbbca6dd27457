//! The one error type of the client, with predicates instead of matching on transport details.

use std::fmt;
use std::time::Duration;

use vipps_types::headers::IdempotencyKey;
use vipps_types::problem::{ErrorCode, GatewayError, Problem};

/// The longest error body kept for logs; longer bodies are cut at a character boundary.
pub const MAX_KEPT_BODY: usize = 8 * 1024;

/// Everything that can go wrong, from building a client to the last retry of a call.
///
/// An `Error` never holds a secret: credentials and access tokens are not part of any message, and the body of a
/// failed access-token answer is not kept. Use the predicates rather than matching on [`Error::kind`] where you
/// can:
///
/// ```
/// use vipps_client::Error;
///
/// fn advice(err: &Error) -> &'static str {
///     if err.is_retryable() {
///         "try again later with the same idempotency key"
///     } else if err.status() == Some(409) {
///         "the key was used for a different request"
///     } else {
///         "fix the request"
///     }
/// }
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    operation: &'static str,
    idempotency_key: Option<IdempotencyKey>,
    attempts: u32,
}

/// What went wrong. `#[non_exhaustive]`: new cases may be added.
// `Error` boxes its contents, so the size of the largest variant costs nothing on the happy path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The client settings are invalid (found by [`ClientBuilder::build`](crate::ClientBuilder::build)).
    Config {
        /// What is wrong, naming the setting.
        message: String,
    },
    /// The call was refused before anything was sent, such as force approve against production.
    InvalidRequest {
        /// Why.
        message: String,
    },
    /// The server answered with a status outside 2xx.
    Api(ApiError),
    /// No connection could be made; nothing reached the server.
    Connect {
        /// The transport's description.
        message: String,
    },
    /// An attempt or the whole call ran out of time.
    Timeout {
        /// Whether the request may have reached the server before the time ran out.
        may_have_reached_server: bool,
        /// Whether it was the total deadline of the call (`false`: one attempt's timeout).
        total: bool,
    },
    /// The connection failed after the request was (possibly) sent, such as a reset or a closed connection.
    Network {
        /// The transport's description.
        message: String,
    },
    /// A 2xx answer whose body could not be read as the expected type.
    Decode {
        /// The HTTP status.
        status: u16,
        /// The parser's description.
        message: String,
        /// The body, cut to [`MAX_KEPT_BODY`]; `None` where it could hold a secret (access tokens).
        body: Option<String>,
    },
    /// The payment did not reach a final state within the polling bounds.
    PollExhausted {
        /// The state last seen.
        last_state: String,
        /// How many times the payment was fetched.
        polls: u32,
    },
}

/// An error answer from the API: status, headers of interest, parsed body and the raw body.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The body as `application/problem+json`, when it parses as one.
    pub problem: Option<Problem>,
    /// The API gateway's `{statusCode, message}` body, when it is one.
    pub gateway: Option<GatewayError>,
    /// The raw body (cut to [`MAX_KEPT_BODY`]) for logs.
    pub body: String,
    /// The `Retry-After` delay the server asked for, already capped by the retry policy.
    pub retry_after: Option<Duration>,
    /// The trace id, from the problem body or a trace header.
    pub trace_id: Option<String>,
}

impl ApiError {
    /// Reads an error answer. `body` is the raw body.
    pub(crate) fn from_parts(
        status: u16,
        body: &[u8],
        retry_after: Option<Duration>,
        header_trace_id: Option<String>,
    ) -> Self {
        let problem = serde_json::from_slice::<Problem>(body)
            .ok()
            .filter(|p| p.title.is_some() || p.status.is_some() || p.extra_details.is_some());
        let gateway = if problem.is_none() {
            serde_json::from_slice::<GatewayError>(body).ok()
        } else {
            None
        };
        let trace_id = problem
            .as_ref()
            .and_then(|p| p.trace_id.clone())
            .or(header_trace_id);
        ApiError {
            status,
            problem,
            gateway,
            body: cut_body(body),
            retry_after,
            trace_id,
        }
    }
}

pub(crate) fn cut_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.len() <= MAX_KEPT_BODY {
        return text.into_owned();
    }
    let mut end = MAX_KEPT_BODY;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                operation: "",
                idempotency_key: None,
                attempts: 0,
            }),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config {
            message: message.into(),
        })
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidRequest {
            message: message.into(),
        })
    }

    pub(crate) fn with_operation(mut self, operation: &'static str) -> Self {
        self.inner.operation = operation;
        self
    }

    pub(crate) fn with_key(mut self, key: Option<IdempotencyKey>) -> Self {
        self.inner.idempotency_key = key;
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: u32) -> Self {
        self.inner.attempts = attempts;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.inner.kind
    }

    /// The operation that failed, such as `epayment.capture`; empty for build errors.
    pub fn operation(&self) -> &'static str {
        self.inner.operation
    }

    /// Whether trying the same call again (with the same idempotency key) may succeed: connection failures,
    /// timeouts, 408, 423, 429 and 5xx. The client has already retried these within its policy; this tells a
    /// caller whether to retry later, such as after a restart.
    pub fn is_retryable(&self) -> bool {
        match &self.inner.kind {
            ErrorKind::Api(api) => crate::retry::is_retryable_status(api.status),
            ErrorKind::Connect { .. } | ErrorKind::Timeout { .. } | ErrorKind::Network { .. } => {
                true
            }
            ErrorKind::PollExhausted { .. } => true,
            ErrorKind::Config { .. }
            | ErrorKind::InvalidRequest { .. }
            | ErrorKind::Decode { .. } => false,
        }
    }

    /// Whether an attempt or the whole call ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Timeout { .. })
    }

    /// Whether the request failed on the network (no connection, timeout, reset) rather than with an answer.
    pub fn is_network(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::Connect { .. } | ErrorKind::Timeout { .. } | ErrorKind::Network { .. }
        )
    }

    /// Whether the client settings or the call's input were refused before anything was sent.
    pub fn is_usage(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::Config { .. } | ErrorKind::InvalidRequest { .. }
        )
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match &self.inner.kind {
            ErrorKind::Api(api) => Some(api.status),
            ErrorKind::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error answer, if the server sent one.
    pub fn api(&self) -> Option<&ApiError> {
        match &self.inner.kind {
            ErrorKind::Api(api) => Some(api),
            _ => None,
        }
    }

    /// The parsed `application/problem+json` body, if the server sent one.
    pub fn problem(&self) -> Option<&Problem> {
        self.api().and_then(|a| a.problem.as_ref())
    }

    /// The Vipps error code from the problem's `extraDetails`.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.problem().and_then(Problem::error_code)
    }

    /// Whether the request may have reached the server, so that the operation may have happened. `false` only
    /// when it certainly did not (build and input errors, connection failures).
    pub fn may_have_reached_server(&self) -> bool {
        match &self.inner.kind {
            ErrorKind::Config { .. } | ErrorKind::InvalidRequest { .. } => false,
            ErrorKind::Connect { .. } => self.inner.attempts > 1,
            ErrorKind::Timeout {
                may_have_reached_server,
                ..
            } => *may_have_reached_server || self.inner.attempts > 1,
            _ => true,
        }
    }

    /// The idempotency key the call used (given by the caller or generated once); persist it to retry the same
    /// operation later.
    pub fn idempotency_key(&self) -> Option<&IdempotencyKey> {
        self.inner.idempotency_key.as_ref()
    }

    /// The trace id to quote to Vipps MobilePay support.
    pub fn trace_id(&self) -> Option<&str> {
        self.api().and_then(|a| a.trace_id.as_deref())
    }

    /// The raw body of an error answer, for logs.
    pub fn raw_body(&self) -> Option<&str> {
        match &self.inner.kind {
            ErrorKind::Api(api) => Some(&api.body),
            ErrorKind::Decode { body, .. } => body.as_deref(),
            _ => None,
        }
    }

    /// How many HTTP requests the call sent (0 when it failed before sending).
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.inner.operation.is_empty() {
            write!(f, "{}: ", self.inner.operation)?;
        }
        match &self.inner.kind {
            ErrorKind::Config { message } => write!(f, "invalid client settings: {message}")?,
            ErrorKind::InvalidRequest { message } => write!(f, "request refused: {message}")?,
            ErrorKind::Api(api) => {
                write!(f, "HTTP {}", api.status)?;
                if let Some(p) = &api.problem {
                    if let Some(t) = &p.title {
                        write!(f, " {t}")?;
                    }
                    if let Some(d) = &p.detail {
                        write!(f, ": {d}")?;
                    }
                    if let Some(c) = p.error_code() {
                        write!(f, " (code {})", c.code())?;
                    }
                } else if let Some(g) = &api.gateway {
                    write!(f, " {}", g.message)?;
                } else if !api.body.is_empty() {
                    write!(f, " {}", api.body.chars().take(200).collect::<String>())?;
                }
                if let Some(t) = &api.trace_id {
                    write!(f, " [trace id {t}]")?;
                }
            }
            ErrorKind::Connect { message } => write!(f, "cannot connect: {message}")?,
            ErrorKind::Timeout { total: true, .. } => f.write_str("the call's deadline passed")?,
            ErrorKind::Timeout { total: false, .. } => f.write_str("the request timed out")?,
            ErrorKind::Network { message } => write!(f, "network failure: {message}")?,
            ErrorKind::Decode {
                status, message, ..
            } => write!(f, "cannot read the HTTP {status} answer: {message}")?,
            ErrorKind::PollExhausted { last_state, polls } => write!(
                f,
                "payment still {last_state} after {polls} polls; giving up"
            )?,
        }
        if self.inner.attempts > 1 {
            write!(f, " after {} attempts", self.inner.attempts)?;
        }
        if let Some(k) = &self.inner.idempotency_key {
            write!(f, " (idempotency key {k})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("operation", &self.inner.operation)
            .field("idempotency_key", &self.inner.idempotency_key)
            .field("attempts", &self.inner.attempts)
            .finish()
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, body: &str) -> Error {
        Error::new(ErrorKind::Api(ApiError::from_parts(
            status,
            body.as_bytes(),
            None,
            None,
        )))
    }

    #[test]
    fn predicates_per_kind() {
        let e = api(
            400,
            r#"{"title":"Bad Request","status":400,"detail":"Capture too high","traceId":"00-a-b-01",
               "extraDetails":[{"name":"ErrorCode","reason":"6090"}]}"#,
        )
        .with_key(Some(IdempotencyKey::new("k-1").unwrap()))
        .with_attempts(1)
        .with_operation("epayment.capture");
        assert!(!e.is_retryable());
        assert!(!e.is_timeout());
        assert!(!e.is_network());
        assert_eq!(e.status(), Some(400));
        assert_eq!(e.error_code(), Some(ErrorCode::CaptureAmountTooHigh));
        assert_eq!(e.trace_id(), Some("00-a-b-01"));
        assert_eq!(e.idempotency_key().unwrap().as_str(), "k-1");
        assert!(e.may_have_reached_server());
        assert!(e.raw_body().unwrap().contains("Capture too high"));
        let text = e.to_string();
        assert!(text.starts_with("epayment.capture: HTTP 400 Bad Request: Capture too high"));
        assert!(text.contains("code 6090"), "{text}");
        assert!(text.contains("idempotency key k-1"), "{text}");

        for s in [408, 423, 429, 500, 502, 503, 504] {
            assert!(api(s, "").is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(!api(s, "").is_retryable(), "{s}");
        }

        let c = Error::new(ErrorKind::Connect {
            message: "refused".into(),
        })
        .with_attempts(1);
        assert!(c.is_retryable() && c.is_network() && !c.may_have_reached_server());
        assert_eq!(c.status(), None);

        let t = Error::new(ErrorKind::Timeout {
            may_have_reached_server: true,
            total: false,
        });
        assert!(t.is_timeout() && t.is_retryable() && t.may_have_reached_server());

        let u = Error::config("Vipps-System-Name must be at most 30 characters long");
        assert!(u.is_usage() && !u.is_retryable() && !u.may_have_reached_server());
        assert_eq!(u.attempts(), 0);
    }

    #[test]
    fn gateway_body_and_raw_text() {
        let e = api(
            401,
            r#"{"statusCode":401,"message":"Access denied due to invalid subscription key."}"#,
        );
        assert!(e.problem().is_none());
        assert_eq!(e.api().unwrap().gateway.as_ref().unwrap().status_code, 401);
        assert!(e.to_string().contains("Access denied"));
        let e = api(502, "<html>bad gateway</html>");
        assert!(e.api().unwrap().problem.is_none() && e.api().unwrap().gateway.is_none());
        assert!(e.to_string().contains("bad gateway"));
    }

    #[test]
    fn long_bodies_are_cut_at_a_char_boundary() {
        let body = "ø".repeat(MAX_KEPT_BODY);
        let kept = cut_body(body.as_bytes());
        assert!(kept.len() <= MAX_KEPT_BODY + '…'.len_utf8());
        assert!(kept.ends_with('…'));
    }
}
