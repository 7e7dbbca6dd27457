//! The vendor's rate limits (`--rate-limits`, off by default): each product lists its documented limits as
//! [`RateLimit`]s keyed by route template, and a request over one is answered 429 problem+json with
//! `Retry-After`. Windows run on emulator time, so advancing the clock resets them.
//!
//! A limit counts per key: the values of its [`KeyPart`]s (a path parameter, a top-level field of the JSON body,
//! the MSN, the subscription key, the idempotency key). Keys are kept as hashes, so no subscription key is held
//! in memory here. Each instance counts its own requests.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use vipps_types::headers as h;

use super::Shared;
use super::http::{RequestMeta, read_body};

/// One part of what a limit counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyPart {
    /// A path parameter of the route template (`reference`).
    Path(&'static str),
    /// A top-level string field of the JSON body (`reference` of a create).
    Body(&'static str),
    /// The `Merchant-Serial-Number` header; without it, the subscription key (the sales unit its keys belong to).
    Merchant,
    /// The `Ocp-Apim-Subscription-Key` header.
    SubscriptionKey,
    /// The `Idempotency-Key` header.
    IdempotencyKey,
}

/// A documented limit: at most `per_minute` requests per minute of emulator time, per key.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    /// The method.
    pub method: http::Method,
    /// The route template as registered (`/epayment/v1/payments/{reference}/capture`).
    pub route: &'static str,
    /// Requests allowed in one window.
    pub per_minute: u32,
    /// What it counts per.
    pub key: &'static [KeyPart],
}

/// The window of every documented limit.
const WINDOW_MS: i64 = 60_000;

/// Above this many counted keys, windows that have ended are dropped.
const PRUNE_ABOVE: usize = 100_000;

/// A window: when it started (emulator ms) and how many requests it counted.
#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: i64,
    count: u32,
}

/// The limits of every product, and the windows of their keys.
#[derive(Debug)]
pub(crate) struct Limiter {
    limits: HashMap<(http::Method, &'static str), RateLimit>,
    windows: Mutex<HashMap<[u8; 16], Window>>,
}

impl Limiter {
    /// The limiter for these limits.
    pub(crate) fn new(limits: impl IntoIterator<Item = RateLimit>) -> Limiter {
        Limiter {
            limits: limits
                .into_iter()
                .map(|l| ((l.method.clone(), l.route), l))
                .collect(),
            windows: Mutex::default(),
        }
    }

    /// Counts one request under `key` at `now_ms`; `Err(seconds)` when it is over the limit, with how long until
    /// its window ends (at least 1).
    fn hit(&self, key: [u8; 16], per_minute: u32, now_ms: i64) -> Result<(), u64> {
        let mut w = self.windows.lock();
        if w.len() > PRUNE_ABOVE {
            w.retain(|_, v| now_ms - v.start_ms < WINDOW_MS);
        }
        let win = w.entry(key).or_insert(Window {
            start_ms: now_ms,
            count: 0,
        });
        if now_ms - win.start_ms >= WINDOW_MS {
            *win = Window {
                start_ms: now_ms,
                count: 0,
            };
        }
        if win.count >= per_minute {
            let left_ms = win.start_ms + WINDOW_MS - now_ms;
            return Err(((left_ms + 999) / 1000).max(1) as u64);
        }
        win.count += 1;
        Ok(())
    }
}

/// The middleware: finds the limit of the matched route, builds its key and counts the request.
pub(crate) async fn layer(
    State((s, limiter)): State<(Shared, Arc<Limiter>)>,
    req: Request,
    next: Next,
) -> Response {
    let limit = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| limiter.limits.get(&(req.method().clone(), p.as_str())));
    let Some(limit) = limit.cloned() else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let mut hasher = Sha256::new();
    hasher.update(limit.method.as_str());
    hasher.update([0]);
    hasher.update(limit.route);
    let mut body = Some(body);
    let mut bytes = None;
    let params = if limit.key.iter().any(|k| matches!(k, KeyPart::Path(_))) {
        use axum::extract::FromRequestParts;
        RawPathParams::from_request_parts(&mut parts, &())
            .await
            .ok()
    } else {
        None
    };
    for part in limit.key {
        hasher.update([0]);
        match part {
            KeyPart::Path(name) => {
                let v = params
                    .as_ref()
                    .and_then(|p| p.iter().find(|(k, _)| k == name).map(|(_, v)| v));
                hasher.update(v.unwrap_or_default());
            }
            KeyPart::Body(field) => {
                if bytes.is_none() {
                    let b = body.take().unwrap_or_default();
                    // Read as the handler would (413 above the limit), and handed on to it as read.
                    let meta = RequestMeta::of(&parts);
                    match read_body(&meta, b, s.config.limits.max_body_bytes).await {
                        Ok(b) => bytes = Some(b),
                        Err(e) => return e.into_response(),
                    }
                }
                let v = bytes
                    .as_ref()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                    .and_then(|v| v.get(*field).and_then(|f| f.as_str()).map(str::to_owned));
                hasher.update(v.unwrap_or_default());
            }
            KeyPart::Merchant => {
                let v = parts
                    .headers
                    .get(h::MERCHANT_SERIAL_NUMBER)
                    .or_else(|| parts.headers.get(h::SUBSCRIPTION_KEY));
                hasher.update(v.map(|v| v.as_bytes()).unwrap_or_default());
            }
            KeyPart::SubscriptionKey => {
                let v = parts.headers.get(h::SUBSCRIPTION_KEY);
                hasher.update(v.map(|v| v.as_bytes()).unwrap_or_default());
            }
            KeyPart::IdempotencyKey => {
                let v = parts.headers.get(h::IDEMPOTENCY_KEY);
                hasher.update(v.map(|v| v.as_bytes()).unwrap_or_default());
            }
        }
    }
    let digest = hasher.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    let body = match (body, bytes) {
        (_, Some(b)) => axum::body::Body::from(b),
        (Some(b), None) => b,
        (None, None) => axum::body::Body::empty(),
    };
    let req = Request::from_parts(parts, body);
    match limiter.hit(key, limit.per_minute, s.clock.unix_ms()) {
        Ok(()) => next.run(req).await,
        Err(secs) => {
            let meta = RequestMeta::of_request(&req);
            meta.problem(
                429,
                "Too Many Requests",
                format!(
                    "Rate limit exceeded: at most {} requests per minute to {} {} for the same {}; retry after {secs} s",
                    limit.per_minute,
                    limit.method,
                    limit.route,
                    describe(limit.key),
                ),
            )
            .retry_after(secs)
            .into_response()
        }
    }
}

/// What a key counts per, for the problem's detail.
fn describe(key: &[KeyPart]) -> String {
    key.iter()
        .map(|k| match k {
            KeyPart::Path(n) | KeyPart::Body(n) => (*n).to_owned(),
            KeyPart::Merchant => "merchant".to_owned(),
            KeyPart::SubscriptionKey => "subscription key".to_owned(),
            KeyPart::IdempotencyKey => "idempotency key".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_to_its_limit_then_answers_the_seconds_left() {
        let l = Limiter::new([]);
        let k = [1; 16];
        for _ in 0..5 {
            assert_eq!(l.hit(k, 5, 1_000), Ok(()));
        }
        assert_eq!(l.hit(k, 5, 1_000), Err(60));
        assert_eq!(l.hit(k, 5, 30_500), Err(31));
        assert_eq!(l.hit(k, 5, 61_000), Ok(()), "a new window");
        assert_eq!(l.hit([2; 16], 5, 61_000), Ok(()), "keys count apart");
    }
}
