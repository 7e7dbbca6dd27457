//! A tower [`Layer`] that admits a request only when its client address is in the current allowlist.
//!
//! The client address is the TCP peer: axum's `ConnectInfo<SocketAddr>` (serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`), or a plain [`SocketAddr`] that a hyper server put into
//! the request extensions. The forwarding header (`X-Forwarded-For` by default, or the standard `Forwarded` of
//! RFC 7239, whichever the proxy writes) is read only when the peer is in a configured trusted-proxy network,
//! right to left, skipping trusted hops; a malformed, unknown or obfuscated entry on the way rejects the request.
//! The other header is ignored, so a client cannot smuggle a spoofed one past a proxy that only writes its own. Everything is
//! canonicalised (`::ffff:a.b.c.d` is `a.b.c.d`). Other requests get `403` with a problem+json body. The check is
//! an atomic load and a binary search: no lock, no DNS.
//!
//! ```
//! use std::net::SocketAddr;
//! use axum::{Router, routing::post};
//! use vipps_allowlist::{AllowSet, AllowlistLayer, SharedAllowlist};
//!
//! let allowlist = SharedAllowlist::new(AllowSet::from_pairs([("127.0.0.11".parse().unwrap(), "callback-mt-1.vipps.no")]));
//! let app: Router = Router::new()
//!     .route("/vipps/webhook", post(|| async { "ok" }))
//!     .layer(AllowlistLayer::new(allowlist).trust_proxies(["10.0.0.0/8".parse().unwrap()]));
//! let _make = app.into_make_service_with_connect_info::<SocketAddr>();
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use futures_util::future::{Either, Ready, ready};
use http::header::{CONTENT_TYPE, HeaderMap};
use http::{HeaderValue, Request, Response, StatusCode};
use ipnet::IpNet;
use tower::{Layer, Service};
use vipps_types::problem::Problem;

use crate::SharedAllowlist;
use crate::addr::canonical;

/// The client address that the layer admitted, inserted into the request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Why no client address could be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientIpError {
    /// The request carries no peer address (the server was not set up to provide one).
    #[error(
        "the request has no peer address (serve with into_make_service_with_connect_info::<SocketAddr>())"
    )]
    NoPeer,
    /// A forwarding header entry from a trusted proxy is not an address (or is `unknown` or obfuscated).
    #[error("malformed forwarding header entry `{0}`")]
    Malformed(String),
    /// Every hop is a trusted proxy: there is no client address.
    #[error("every forwarding hop is a trusted proxy")]
    NoClient,
}

/// The header a trusted proxy writes the client address into. Only this one is read; a proxy that writes one
/// header usually passes the other through from the client unchanged, so reading both would trust the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, ...`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client;proto=https, for="[2001:db8::1]:4711"` (RFC 7239); the `for` parameter of each
    /// element.
    Forwarded,
}

/// Splits `s` on `sep` outside double quotes (RFC 7230 quoted-string with backslash escapes).
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The `for` value of one `Forwarded` element, unquoted; `None` when the element has none or is malformed.
fn forwarded_for(element: &str) -> Option<String> {
    let mut found = None;
    for pair in split_unquoted(element, ';') {
        let (key, value) = pair.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            continue;
        }
        if found.is_some() {
            // Two `for` parameters in one element: ambiguous.
            return None;
        }
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(rest) => rest.strip_suffix('"')?.replace("\\", ""),
            None => value.to_owned(),
        };
        found = Some(value);
    }
    found
}

/// The TCP peer from the request extensions: axum `ConnectInfo<SocketAddr>` or a plain `SocketAddr`.
pub fn peer_addr(ext: &http::Extensions) -> Option<SocketAddr> {
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| ext.get::<SocketAddr>().copied())
}

fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
}

/// The client address of a request: the canonical `peer` unless it is a trusted proxy; then the rightmost
/// `X-Forwarded-For` entry that is not a trusted proxy (all header lines joined in order).
///
/// ```
/// use vipps_allowlist::layer::client_ip;
/// let trusted = ["127.0.0.1/32".parse().unwrap()];
/// let mut h = http::HeaderMap::new();
/// h.insert("x-forwarded-for", "6.6.6.6, 8.8.8.8".parse().unwrap());
/// // Through the trusted proxy: the rightmost untrusted hop.
/// assert_eq!(client_ip("127.0.0.1".parse().unwrap(), &h, &trusted), Ok("8.8.8.8".parse().unwrap()));
/// // From anyone else the header is ignored.
/// assert_eq!(client_ip("9.9.9.9".parse().unwrap(), &h, &trusted), Ok("9.9.9.9".parse().unwrap()));
/// ```
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Result<IpAddr, ClientIpError> {
    client_ip_from(peer, headers, trusted, ForwardedHeader::XForwardedFor)
}

/// [`client_ip`] reading `header`: the canonical `peer` unless it is a trusted proxy; then the rightmost entry of
/// `header` that is not a trusted proxy. The other forwarding header is ignored.
///
/// ```
/// use vipps_allowlist::layer::{client_ip_from, ForwardedHeader};
/// let trusted = ["127.0.0.1/32".parse().unwrap()];
/// let mut h = http::HeaderMap::new();
/// h.insert("forwarded", "for=6.6.6.6, for=\"[2a01:4f8::1]:4711\";proto=https".parse().unwrap());
/// h.insert("x-forwarded-for", "7.7.7.7".parse().unwrap());
/// assert_eq!(
///     client_ip_from("127.0.0.1".parse().unwrap(), &h, &trusted, ForwardedHeader::Forwarded),
///     Ok("2a01:4f8::1".parse().unwrap())
/// );
/// ```
pub fn client_ip_from(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ForwardedHeader,
) -> Result<IpAddr, ClientIpError> {
    let peer = canonical(peer);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Ok(peer);
    }
    let name = match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    let mut hops: Vec<String> = Vec::new();
    for value in headers.get_all(name) {
        let value = value
            .to_str()
            .map_err(|_| ClientIpError::Malformed("<non-ASCII>".into()))?;
        match header {
            ForwardedHeader::XForwardedFor => hops.extend(value.split(',').map(str::to_owned)),
            ForwardedHeader::Forwarded => {
                for element in split_unquoted(value, ',') {
                    hops.push(forwarded_for(element).ok_or_else(|| {
                        ClientIpError::Malformed(element.trim().chars().take(64).collect())
                    })?);
                }
            }
        }
    }
    for hop in hops.iter().rev() {
        let hop = hop.trim();
        let ip = parse_hop(hop)
            .map(canonical)
            .ok_or_else(|| ClientIpError::Malformed(hop.chars().take(64).collect()))?;
        if !is_trusted(&ip) {
            return Ok(ip);
        }
    }
    Err(ClientIpError::NoClient)
}

/// The layer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AllowlistLayer {
    allowlist: SharedAllowlist,
    trusted: Arc<[IpNet]>,
    header: ForwardedHeader,
}

impl AllowlistLayer {
    /// A layer over `allowlist` that trusts no proxy (the peer address decides).
    pub fn new(allowlist: SharedAllowlist) -> Self {
        AllowlistLayer {
            allowlist,
            trusted: Arc::from(Vec::new()),
            header: ForwardedHeader::XForwardedFor,
        }
    }

    /// Trusts the forwarding header (`X-Forwarded-For` unless [`AllowlistLayer::forwarded_header`] says
    /// otherwise) from peers in these networks.
    pub fn trust_proxies(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted = nets.into_iter().collect::<Vec<_>>().into();
        self
    }

    /// Reads this header from trusted proxies (the one the proxy writes; the other is ignored).
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }
}

impl<S> Layer<S> for AllowlistLayer {
    type Service = AllowlistService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AllowlistService {
            inner,
            allowlist: self.allowlist.clone(),
            trusted: self.trusted.clone(),
            header: self.header,
        }
    }
}

/// The service of [`AllowlistLayer`].
#[derive(Debug, Clone)]
pub struct AllowlistService<S> {
    inner: S,
    allowlist: SharedAllowlist,
    trusted: Arc<[IpNet]>,
    header: ForwardedHeader,
}

/// A `403` problem+json response.
pub fn forbidden<B: From<String>>(detail: &str) -> Response<B> {
    let body = serde_json::to_string(&Problem::new(403, "Forbidden", detail)).expect("serialises");
    let mut res = Response::new(B::from(body));
    *res.status_mut() = StatusCode::FORBIDDEN;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for AllowlistService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: From<String>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<ResB>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let decision = peer_addr(req.extensions())
            .ok_or(ClientIpError::NoPeer)
            .and_then(|peer| client_ip_from(peer.ip(), req.headers(), &self.trusted, self.header));
        match decision {
            Ok(ip) if self.allowlist.contains(ip) => {
                req.extensions_mut().insert(ClientIp(ip));
                Either::Left(self.inner.call(req))
            }
            Ok(ip) => {
                tracing::warn!(client = %ip, path = %req.uri().path(), "rejected: not in the allowlist");
                Either::Right(ready(Ok(forbidden(
                    "the client address is not an allowed request server",
                ))))
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %req.uri().path(), "rejected: no usable client address");
                Either::Right(ready(Ok(forbidden(
                    "the client address could not be determined",
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append("x-forwarded-for", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn xff_walk() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let p = |s: &str| s.parse::<IpAddr>().unwrap();
        // Spoofed leftmost entry, real client on the right, then a trusted hop.
        assert_eq!(
            client_ip(
                p("127.0.0.1"),
                &h(&["6.6.6.6, 8.8.8.8", "10.1.1.1"]),
                &trusted
            ),
            Ok(p("8.8.8.8"))
        );
        // Ports and brackets.
        assert_eq!(
            client_ip(p("127.0.0.1"), &h(&["[2a01:4f8::1]:443"]), &trusted),
            Ok(p("2a01:4f8::1"))
        );
        assert_eq!(
            client_ip(p("127.0.0.1"), &h(&["8.8.8.8:1234"]), &trusted),
            Ok(p("8.8.8.8"))
        );
        // Mapped forms are canonical, also for the peer.
        assert_eq!(
            client_ip(p("::ffff:127.0.0.1"), &h(&["::ffff:8.8.8.8"]), &trusted),
            Ok(p("8.8.8.8"))
        );
        assert_eq!(
            client_ip(p("::ffff:9.9.9.9"), &h(&[]), &trusted),
            Ok(p("9.9.9.9"))
        );
        // Malformed on the way: reject.
        assert!(matches!(
            client_ip(p("127.0.0.1"), &h(&["8.8.8.8, unknown"]), &trusted),
            Err(ClientIpError::Malformed(_))
        ));
        assert!(matches!(
            client_ip(p("127.0.0.1"), &h(&["8.8.8.8,"]), &trusted),
            Err(ClientIpError::Malformed(_))
        ));
        // Only trusted hops.
        assert_eq!(
            client_ip(p("127.0.0.1"), &h(&["10.0.0.1"]), &trusted),
            Err(ClientIpError::NoClient)
        );
        assert_eq!(
            client_ip(p("127.0.0.1"), &h(&[]), &trusted),
            Err(ClientIpError::NoClient)
        );
    }

    fn fwd(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append("forwarded", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn forwarded_walk() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let p = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxy = p("127.0.0.1");
        let f = ForwardedHeader::Forwarded;
        let ok = |headers: &[&str], want: &str| {
            assert_eq!(
                client_ip_from(proxy, &fwd(headers), &trusted, f),
                Ok(p(want)),
                "{headers:?}"
            );
        };
        ok(&["for=8.8.8.8"], "8.8.8.8");
        ok(&["For=\"8.8.8.8:4711\";proto=https;by=10.0.0.1"], "8.8.8.8");
        ok(&["for=\"[2a01:4f8::1]:4711\""], "2a01:4f8::1");
        ok(&["for=\"[2a01:4f8::1]\""], "2a01:4f8::1");
        // Spoofed leftmost element, the real client on the right, then a trusted hop (also in a second line).
        ok(
            &["for=6.6.6.6, for=8.8.8.8", "for=10.1.1.1;proto=http"],
            "8.8.8.8",
        );
        ok(&["proto=https;for=\"::ffff:8.8.8.8\""], "8.8.8.8");
        let bad = |headers: &[&str]| {
            let got = client_ip_from(proxy, &fwd(headers), &trusted, f);
            assert!(
                matches!(got, Err(ClientIpError::Malformed(_))),
                "{headers:?}: {got:?}"
            );
        };
        // Unknown and obfuscated identifiers cannot be checked: reject.
        bad(&["for=8.8.8.8, for=unknown"]);
        bad(&["for=_hidden"]);
        bad(&["proto=https"]);
        bad(&["for=8.8.8.8;for=9.9.9.9"]);
        bad(&["for=\"8.8.8.8"]);
        bad(&["for=8.8.8.8,"]);
        assert_eq!(
            client_ip_from(proxy, &fwd(&["for=10.0.0.1"]), &trusted, f),
            Err(ClientIpError::NoClient)
        );
        // Only the configured header counts: X-Forwarded-For is ignored when Forwarded is read, and the other way.
        let mut both = fwd(&["for=8.8.8.8"]);
        both.append("x-forwarded-for", "6.6.6.6".parse().unwrap());
        assert_eq!(client_ip_from(proxy, &both, &trusted, f), Ok(p("8.8.8.8")));
        assert_eq!(client_ip(proxy, &both, &trusted), Ok(p("6.6.6.6")));
        // From an untrusted peer neither header counts.
        assert_eq!(
            client_ip_from(p("9.9.9.9"), &both, &trusted, f),
            Ok(p("9.9.9.9"))
        );
    }
}
