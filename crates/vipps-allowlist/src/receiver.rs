//! A webhook receiver for Vipps MobilePay deliveries: the allowlist, HMAC verification over the raw body, an
//! `x-ms-date` window and duplicate suppression, in that order.
//!
//! Deliveries are retried, so the same event can arrive more than once; a duplicate is reported as accepted
//! with [`Accepted::duplicate`] set, so the handler answers `200` without processing it again. Only verified
//! deliveries are remembered, and memory is bounded by a capacity and a time window.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use vipps_allowlist::{AllowSet, SharedAllowlist, WebhookReceiver};
//!
//! let allowlist = SharedAllowlist::new(AllowSet::from_pairs([("8.8.8.8".parse().unwrap(), "callback-1.vipps.no")]));
//! let receiver = WebhookReceiver::new("secret").with_allowlist(allowlist);
//! let url = url::Url::parse("https://shop.example/hooks/vipps").unwrap();
//! let body = br#"{"pspReference":"p1","name":"CAPTURED"}"#;
//! let signed = vipps_types::signing::sign("secret", &url, body, SystemTime::now());
//! let req = http::Request::post("/hooks/vipps")
//!     .header("host", &signed.host)
//!     .header("x-ms-date", &signed.x_ms_date)
//!     .header("x-ms-content-sha256", &signed.x_ms_content_sha256)
//!     .header("authorization", &signed.authorization)
//!     .body(()).unwrap();
//! let (parts, ()) = req.into_parts();
//! let peer = "8.8.8.8:40000".parse().unwrap();
//! let first = receiver.check(peer, &parts, body).unwrap();
//! assert!(!first.duplicate);
//! assert!(receiver.check(peer, &parts, body).unwrap().duplicate);
//! assert!(receiver.check("9.9.9.9:1".parse().unwrap(), &parts, body).is_err());
//! ```

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use ipnet::IpNet;
use vipps_types::problem::Problem;
use vipps_types::signing::{self, Delivery, VerifyError};

use crate::layer::{ClientIpError, ForwardedHeader, client_ip_from};
use crate::{Clock, SharedAllowlist, SystemClock};

/// A verified delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The client address that sent it.
    pub client: IpAddr,
    /// The event identity used for duplicate suppression.
    pub event_id: String,
    /// Whether this event was already accepted within the window (answer `200`, do not process).
    pub duplicate: bool,
}

/// Why a delivery was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The client address is not in the allowlist.
    #[error("client {0} is not an allowed request server")]
    NotAllowed(IpAddr),
    /// No client address could be determined.
    #[error(transparent)]
    ClientIp(#[from] ClientIpError),
    /// A required header is missing or not text.
    #[error("missing or invalid header `{0}`")]
    MissingHeader(&'static str),
    /// The signature, content hash or date did not verify.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

impl Rejection {
    /// The HTTP status for the rejection: `403` for the allowlist, `401` for authentication.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::NotAllowed(_) | Rejection::ClientIp(_) => StatusCode::FORBIDDEN,
            Rejection::MissingHeader(_) | Rejection::Verify(_) => StatusCode::UNAUTHORIZED,
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let title = if status == StatusCode::FORBIDDEN {
            "Forbidden"
        } else {
            "Unauthorized"
        };
        let detail = match &self {
            Rejection::NotAllowed(_) => {
                "the client address is not an allowed request server".to_string()
            }
            other => other.to_string(),
        };
        let body = serde_json::to_string(&Problem::new(status.as_u16(), title, detail))
            .expect("serialises");
        (
            status,
            [(http::header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<(u64, String)>,
}

/// The webhook receiver. Share it behind an `Arc`.
pub struct WebhookReceiver {
    secret: String,
    allowlist: Option<SharedAllowlist>,
    trusted: Vec<IpNet>,
    header: ForwardedHeader,
    skew: Duration,
    capacity: usize,
    window: Duration,
    clock: Arc<dyn Clock>,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("secret", &"<redacted>")
            .field(
                "allowlist",
                &self.allowlist.as_ref().map(|a| a.current().len()),
            )
            .field("trusted", &self.trusted)
            .field("skew", &self.skew)
            .field("capacity", &self.capacity)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl WebhookReceiver {
    /// A receiver for the webhook `secret` (as returned at registration). Defaults: no allowlist, the signing
    /// crate's default skew, 10 000 remembered events for 24 hours.
    pub fn new(secret: impl Into<String>) -> Self {
        WebhookReceiver {
            secret: secret.into(),
            allowlist: None,
            trusted: Vec::new(),
            header: ForwardedHeader::XForwardedFor,
            skew: signing::DEFAULT_SKEW,
            capacity: 10_000,
            window: Duration::from_secs(24 * 3600),
            clock: Arc::new(SystemClock),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Requires the client address to be in `allowlist`.
    pub fn with_allowlist(mut self, allowlist: SharedAllowlist) -> Self {
        self.allowlist = Some(allowlist);
        self
    }

    /// Trusts the forwarding header (`X-Forwarded-For` unless [`WebhookReceiver::forwarded_header`] says
    /// otherwise) from peers in these networks (see [`client_ip_from`]).
    pub fn trust_proxies(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted = nets.into_iter().collect();
        self
    }

    /// Reads this header from trusted proxies (the one the proxy writes; the other is ignored).
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The allowed distance between `x-ms-date` and the clock.
    pub fn with_skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }

    /// How many events, and for how long, are remembered for duplicate suppression.
    pub fn with_dedup(mut self, capacity: usize, window: Duration) -> Self {
        self.capacity = capacity.max(1);
        self.window = window;
        self
    }

    /// Uses another clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks a delivery from `peer` with the request head `parts` and the raw `body` bytes.
    pub fn check(
        &self,
        peer: SocketAddr,
        parts: &Parts,
        body: &[u8],
    ) -> Result<Accepted, Rejection> {
        let client = client_ip_from(peer.ip(), &parts.headers, &self.trusted, self.header)?;
        if let Some(a) = &self.allowlist {
            if !a.contains(client) {
                tracing::warn!(%client, "webhook rejected: not in the allowlist");
                return Err(Rejection::NotAllowed(client));
            }
        }
        let header = |name: &'static str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(Rejection::MissingHeader(name))
        };
        let host = match parts.headers.get(http::header::HOST) {
            Some(v) => v.to_str().map_err(|_| Rejection::MissingHeader("host"))?,
            None => parts
                .uri
                .authority()
                .map(|a| a.as_str())
                .ok_or(Rejection::MissingHeader("host"))?,
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let delivery = Delivery {
            path_and_query,
            host,
            x_ms_date: header(signing::X_MS_DATE)?,
            x_ms_content_sha256: header(signing::X_MS_CONTENT_SHA256)?,
            authorization: header("authorization")?,
            body,
        };
        let now = self.clock.now();
        signing::verify(&self.secret, &delivery, now, self.skew).inspect_err(|e| {
            tracing::warn!(%client, error = %e, "webhook rejected: verification failed");
        })?;
        let event_id = event_identity(body)
            .unwrap_or_else(|| format!("sha256:{}", delivery.x_ms_content_sha256));
        let duplicate = self.remember(&event_id, now);
        Ok(Accepted {
            client,
            event_id,
            duplicate,
        })
    }

    /// Records `id`; returns whether it was already there.
    fn remember(&self, id: &str, now: std::time::SystemTime) -> bool {
        let now_s = now
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((at, _)) = seen.order.front() {
            if now_s.saturating_sub(*at) > self.window.as_secs()
                || seen.order.len() >= self.capacity
            {
                let (_, old) = seen.order.pop_front().expect("front exists");
                seen.ids.remove(&old);
            } else {
                break;
            }
        }
        if seen.ids.contains(id) {
            return true;
        }
        seen.ids.insert(id.to_owned());
        seen.order.push_back((now_s, id.to_owned()));
        false
    }
}

/// The identity of an event: the ePayment `pspReference` with the event `name` when the body has them.
fn event_identity(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let psp = v.get("pspReference")?.as_str()?;
    let name = v.get("name").and_then(|n| n.as_str()).unwrap_or("");
    Some(format!("{psp}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    struct Fixed(SystemTime);
    impl Clock for Fixed {
        fn now(&self) -> SystemTime {
            self.0
        }
    }

    fn parts(signed: &signing::SignedHeaders, path: &str) -> Parts {
        http::Request::post(path)
            .header("host", &signed.host)
            .header("x-ms-date", &signed.x_ms_date)
            .header("x-ms-content-sha256", &signed.x_ms_content_sha256)
            .header("authorization", &signed.authorization)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn skew_dedup_bounds_and_order() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let url = url::Url::parse("http://127.0.0.1:9000/hook").unwrap();
        let r = WebhookReceiver::new("s")
            .with_clock(Arc::new(Fixed(t0 + Duration::from_secs(301))))
            .with_dedup(2, Duration::from_secs(60));
        let peer: SocketAddr = "8.8.8.8:1".parse().unwrap();
        let body = br#"{"pspReference":"p1","name":"CAPTURED"}"#;
        let s = signing::sign("s", &url, body, t0);
        assert!(matches!(
            r.check(peer, &parts(&s, "/hook"), body),
            Err(Rejection::Verify(VerifyError::DateOutsideWindow { .. }))
        ));
        let r = r.with_clock(Arc::new(Fixed(t0)));
        assert_eq!(
            r.check(peer, &parts(&s, "/hook"), body).unwrap().event_id,
            "p1/CAPTURED"
        );
        assert!(r.check(peer, &parts(&s, "/hook"), body).unwrap().duplicate);
        // Bad signature is not remembered and is 401.
        let e = r.check(peer, &parts(&s, "/other"), body).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        // Capacity 2: a third and fourth event push p1 out.
        for psp in ["p2", "p3"] {
            let b = format!(r#"{{"pspReference":"{psp}","name":"CAPTURED"}}"#);
            let s = signing::sign("s", &url, b.as_bytes(), t0);
            assert!(
                !r.check(peer, &parts(&s, "/hook"), b.as_bytes())
                    .unwrap()
                    .duplicate
            );
        }
        assert!(!r.check(peer, &parts(&s, "/hook"), body).unwrap().duplicate);
        // A body without an event identity falls back to the content hash.
        let s2 = signing::sign("s", &url, b"hello", t0);
        assert!(
            r.check(peer, &parts(&s2, "/hook"), b"hello")
                .unwrap()
                .event_id
                .starts_with("sha256:")
        );
    }

    #[test]
    fn the_allowlist_reads_the_configured_forwarding_header_from_trusted_proxies_only() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let url = url::Url::parse("http://127.0.0.1:9000/hook").unwrap();
        let body = br#"{"pspReference":"p1","name":"CAPTURED"}"#;
        let s = signing::sign("s", &url, body, t0);
        let allow = SharedAllowlist::new(crate::AllowSet::from_pairs([(
            "8.8.8.8".parse().unwrap(),
            "callback-1.vipps.no",
        )]));
        let r = WebhookReceiver::new("s")
            .with_clock(Arc::new(Fixed(t0)))
            .with_allowlist(allow)
            .trust_proxies(["127.0.0.1/32".parse().unwrap()])
            .forwarded_header(ForwardedHeader::Forwarded);
        let with = |name: &str, value: &str| {
            let mut p = parts(&s, "/hook");
            p.headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
            p
        };
        let proxy: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let stranger: SocketAddr = "9.9.9.9:1".parse().unwrap();
        assert!(
            r.check(proxy, &with("forwarded", "for=8.8.8.8"), body)
                .is_ok()
        );
        // The other header through the proxy, or any header from an untrusted peer: refused.
        for (peer, name, value) in [
            (proxy, "x-forwarded-for", "8.8.8.8"),
            (stranger, "forwarded", "for=8.8.8.8"),
            (proxy, "forwarded", "for=unknown"),
        ] {
            let e = r.check(peer, &with(name, value), body).unwrap_err();
            assert_eq!(e.status(), StatusCode::FORBIDDEN, "{peer} {name}: {value}");
        }
    }
}
