//! HTTP plumbing shared by the handlers: problem answers, body reading and JSON parsing that name the field.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;
use vipps_types::problem::{ErrorCode, GatewayError, Problem};

use super::aggregate::RequestInfo;

/// A complete HTTP answer as stored for idempotent replay: status, headers and body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers that are part of the answer (`Content-Type`, `Retry-After`, ...).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Bytes,
}

impl StoredResponse {
    /// A JSON answer.
    pub(crate) fn json<T: serde::Serialize>(status: u16, value: &T) -> Self {
        StoredResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        }
    }

    /// An answer without a body.
    pub(crate) fn empty(status: u16) -> Self {
        StoredResponse {
            status,
            headers: vec![],
            body: Bytes::new(),
        }
    }

    /// A problem+json answer.
    pub(crate) fn problem(p: &Problem) -> Self {
        StoredResponse {
            status: p.status.unwrap_or(500),
            headers: vec![(
                "content-type".into(),
                vipps_types::headers::PROBLEM_JSON.into(),
            )],
            body: Bytes::from(serde_json::to_vec(p).unwrap_or_default()),
        }
    }
}

/// A problem body with the emulator's conventions (`traceId`, `instance`, an optional code), for answers built
/// inside the store's transaction, where only the request's [`RequestInfo`] is at hand.
pub(crate) fn problem(
    status: u16,
    title: &str,
    detail: impl Into<String>,
    code: Option<ErrorCode>,
    request: &RequestInfo,
) -> Problem {
    let mut p = Problem::new(status, title, detail)
        .with_instance(&*request.instance)
        .with_trace_id(&*request.trace_id);
    if let Some(c) = code {
        p = p.with_code(c);
    }
    p
}

/// Per-request facts set by the outermost middleware.
#[derive(Debug, Clone)]
pub(crate) struct RequestMeta {
    /// The trace id.
    pub trace_id: std::sync::Arc<str>,
    /// The request method.
    pub method: http::Method,
    /// The request path.
    pub path: std::sync::Arc<str>,
    /// A delay fault that the write applies once its key is claimed (set by the fault middleware).
    pub delay: Option<DeferredDelay>,
    /// The vendor environment the request names by its host (`apitest.vipps.no`: test, `api.vipps.no`:
    /// production), whose keys alone are accepted; `None` for any other host, where keys of both work.
    pub environment: Option<crate::config::MerchantEnvironment>,
}

/// A delay an injected fault asks for, applied by the write itself (after claiming its idempotency key, so a
/// duplicate sent meanwhile is answered 423), or by the fault middleware when no write took it.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeferredDelay(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl DeferredDelay {
    /// A delay of `ms` milliseconds, not yet taken.
    pub(crate) fn new(ms: u64) -> Self {
        DeferredDelay(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(ms)))
    }

    /// Takes the delay (once).
    pub(crate) fn take(&self) -> Option<u64> {
        match self.0.swap(0, std::sync::atomic::Ordering::AcqRel) {
            0 => None,
            ms => Some(ms),
        }
    }
}

/// An early answer: a handler returns `Err(ApiError)` to stop with this response.
#[derive(Debug)]
pub(crate) struct ApiError(pub Box<Response>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// Result of a handler.
pub(crate) type ApiResult = Result<Response, ApiError>;

impl RequestMeta {
    /// The meta the outer middleware set on the request; a bare one (no trace id) where none did.
    pub(crate) fn of(parts: &http::request::Parts) -> Self {
        Self::from_parts(&parts.extensions, &parts.method, parts.uri.path())
    }

    /// [`RequestMeta::of`] for a whole request.
    pub(crate) fn of_request(req: &axum::extract::Request) -> Self {
        Self::from_parts(req.extensions(), req.method(), req.uri().path())
    }

    fn from_parts(ext: &http::Extensions, method: &http::Method, path: &str) -> Self {
        ext.get::<RequestMeta>()
            .cloned()
            .unwrap_or_else(|| RequestMeta {
                trace_id: std::sync::Arc::from(""),
                method: method.clone(),
                path: std::sync::Arc::from(path),
                delay: None,
                environment: None,
            })
    }

    /// Takes the deferred delay of an injected fault, if any.
    pub(crate) fn deferred_delay(&self) -> Option<u64> {
        self.delay.as_ref().and_then(DeferredDelay::take)
    }

    /// What the store needs of the request.
    pub(crate) fn info(&self) -> RequestInfo {
        RequestInfo {
            trace_id: self.trace_id.clone(),
            instance: self.path.clone(),
        }
    }

    /// A problem answer.
    pub(crate) fn problem(
        &self,
        status: u16,
        title: &str,
        detail: impl Into<String>,
    ) -> ProblemBuilder {
        ProblemBuilder {
            problem: Problem::new(status, title, detail)
                .with_instance(&*self.path)
                .with_trace_id(&*self.trace_id),
            retry_after: None,
        }
    }
}

/// Builds a problem answer.
#[derive(Debug)]
pub(crate) struct ProblemBuilder {
    problem: Problem,
    retry_after: Option<u64>,
}

impl ProblemBuilder {
    /// Adds the Vipps error code.
    pub(crate) fn code(mut self, c: ErrorCode) -> Self {
        self.problem = self.problem.with_code(c);
        self
    }
    /// Adds a field detail.
    pub(crate) fn field(mut self, name: impl Into<String>, reason: impl Into<String>) -> Self {
        self.problem = self.problem.with_detail(name, reason);
        self
    }
    /// Adds `Retry-After`.
    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
    /// As an error.
    pub(crate) fn err(self) -> ApiError {
        ApiError(Box::new(self.into_response()))
    }
}

impl IntoResponse for ProblemBuilder {
    fn into_response(self) -> Response {
        let mut r = stored_to_response(StoredResponse::problem(&self.problem), false);
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// The gateway's 401 body for a missing or unknown subscription key.
pub(crate) fn gateway_401(message: &str) -> ApiError {
    let body = serde_json::to_vec(&GatewayError {
        status_code: 401,
        message: message.into(),
    })
    .unwrap_or_default();
    ApiError(Box::new(
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap_or_default(),
    ))
}

/// Turns a stored answer into a response, marking replays.
pub(crate) fn stored_to_response(r: StoredResponse, replayed: bool) -> Response {
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in &r.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    if replayed {
        resp.headers_mut().insert(
            vipps_types::headers::IDEMPOTENT_REPLAYED,
            HeaderValue::from_static("true"),
        );
    }
    resp
}

/// Reads a body up to `limit` bytes; 413 above.
pub(crate) async fn read_body(
    meta: &RequestMeta,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_big {
                Err(meta
                    .problem(
                        413,
                        "Payload Too Large",
                        format!("The request body is larger than {limit} bytes"),
                    )
                    .field("body", format!("at most {limit} bytes"))
                    .err())
            } else {
                Err(meta
                    .problem(
                        400,
                        "Bad Request",
                        format!("The request body could not be read: {e}"),
                    )
                    .err())
            }
        }
    }
}

/// Parses JSON, answering 400 with the path of the offending field and the rule it broke.
pub(crate) fn parse_json<T: DeserializeOwned>(
    meta: &RequestMeta,
    bytes: &[u8],
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(meta
            .problem(
                400,
                "Bad Request",
                "The request body is empty; a JSON object is required",
            )
            .field("body", "a JSON object is required")
            .code(ErrorCode::MissingRequiredParameter)
            .err());
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.to_string();
            let field = if path == "." || path.is_empty() {
                field_from_message(&msg)
            } else {
                path
            };
            let detail = if inner.is_syntax() || inner.is_eof() {
                format!("The request body is not valid JSON: {msg}")
            } else {
                format!("Invalid value for `{field}`: {msg}")
            };
            Err(meta
                .problem(400, "Bad Request", detail)
                .field(field, clean_reason(&msg))
                .err())
        }
    }
}

fn field_from_message(msg: &str) -> String {
    // serde reports missing and unknown fields at the parent: take the name from the message.
    for marker in ["missing field `", "unknown field `"] {
        if let Some(i) = msg.find(marker) {
            let rest = &msg[i + marker.len()..];
            if let Some(end) = rest.find('`') {
                return rest[..end].to_owned();
            }
        }
    }
    "body".to_owned()
}

fn clean_reason(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Parses an optional JSON body: an empty (or all-whitespace) body gives the default.
pub(crate) fn parse_optional_json<T: DeserializeOwned + Default>(
    meta: &RequestMeta,
    bytes: &[u8],
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(meta, bytes)
    }
}

/// A header value as text, if present and not empty.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The rule for a URL a merchant gives a product API to send a person or a request to (return, callback, terms
/// and agreement URLs): `https`, or `http` to a loopback host for local development; never `javascript:`, `data:`
/// or `file:`; another scheme (an app's own, to return to an app) only when `app_scheme`. One rule for every
/// product, so a URL that works for ePayment works for Recurring and Checkout. Answers why not.
pub(crate) fn merchant_url(raw: &str, app_scheme: bool) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a valid absolute URL ({e})"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err("must use https:// (http:// is accepted for loopback hosts only)".into()),
        s @ ("javascript" | "data" | "file") => Err(format!("the `{s}` scheme is not allowed")),
        _ if app_scheme => Ok(url),
        _ => Err("must use https://".into()),
    }
}

/// A text field's length rule, counted in characters: answers why not.
pub(crate) fn char_count(v: &str, min: usize, max: usize) -> Result<(), String> {
    let n = v.chars().count();
    if (min..=max).contains(&n) {
        Ok(())
    } else {
        Err(format!("must be {min} to {max} characters, got {n}"))
    }
}

#[cfg(test)]
mod merchant_url_tests {
    use super::merchant_url;

    #[test]
    fn https_loopback_http_and_app_schemes() {
        // (url, app scheme allowed, accepted)
        let cases = [
            ("https://example.com/return", false, true),
            ("http://localhost:3000/cb", false, true),
            ("http://127.0.0.2/cb", false, true),
            ("http://[::1]:8080/cb", false, true),
            ("http://example.com/cb", false, false),
            ("http://localhost.example.com/cb", false, false),
            ("myapp://return", true, true),
            ("myapp://return", false, false),
            ("javascript:alert(1)", true, false),
            ("data:text/html,hi", true, false),
            ("file:///etc/passwd", true, false),
            ("not a url", true, false),
        ];
        for (url, app, ok) in cases {
            assert_eq!(
                merchant_url(url, app).is_ok(),
                ok,
                "{url} (app scheme {app})"
            );
        }
    }
}
