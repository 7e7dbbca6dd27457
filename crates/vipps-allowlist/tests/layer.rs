//! The layer and the webhook receiver on a real axum server, with clients bound to chosen loopback addresses.

#![allow(clippy::print_stderr)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use vipps_allowlist::layer::ForwardedHeader;
use vipps_allowlist::{AllowSet, AllowlistLayer, ClientIp, SharedAllowlist, WebhookReceiver};

async fn serve(app: Router, bind: &str) -> Option<SocketAddr> {
    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("SKIPPED part: cannot bind {bind}: {e}");
            return None;
        }
    };
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Some(addr)
}

/// Sends one request from the local address `from`.
async fn send(
    from: &str,
    to: SocketAddr,
    req: http::Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, String) {
    let from: IpAddr = from.parse().unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let to = SocketAddr::new("127.0.0.1".parse().unwrap(), to.port());
    let stream = sock.connect(to).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = sender.send_request(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get_req(xff: Option<&str>) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::get("/cb").header("host", "merchant.test");
    if let Some(x) = xff {
        b = b.header("x-forwarded-for", x);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

fn app(allowlist: SharedAllowlist, trusted: &[&str]) -> Router {
    Router::new()
        .route(
            "/cb",
            get(|req: Request| async move {
                let ip = req
                    .extensions()
                    .get::<ClientIp>()
                    .map(|c| c.0.to_string())
                    .unwrap_or_default();
                format!("hello {ip}")
            }),
        )
        .layer(
            AllowlistLayer::new(allowlist)
                .trust_proxies(trusted.iter().map(|s| s.parse().unwrap())),
        )
}

fn set(ips: &[&str]) -> AllowSet {
    AllowSet::from_pairs(
        ips.iter()
            .map(|s| (s.parse().unwrap(), "callback-mt-1.vipps.no")),
    )
}

#[tokio::test]
async fn peer_address_decides_and_spoofed_xff_is_rejected() {
    let allowlist = SharedAllowlist::new(set(&["127.0.0.2"]));
    let addr = serve(app(allowlist.clone(), &[]), "127.0.0.1:0")
        .await
        .unwrap();

    let (s, _, body) = send("127.0.0.2", addr, get_req(None)).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "hello 127.0.0.2"));

    let (s, h, body) = send("127.0.0.1", addr, get_req(None)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(h["content-type"], "application/problem+json");
    let p: vipps_types::problem::Problem = serde_json::from_str(&body).unwrap();
    assert_eq!(p.status, Some(403));

    // No proxy is trusted: a forged header from an untrusted peer changes nothing.
    let (s, _, _) = send("127.0.0.3", addr, get_req(Some("127.0.0.2"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A new set is swapped in without a restart.
    allowlist.store(Arc::new(set(&["127.0.0.3"])));
    assert_eq!(
        send("127.0.0.3", addr, get_req(None)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send("127.0.0.2", addr, get_req(None)).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn xff_only_through_trusted_proxies_right_to_left() {
    let allowlist = SharedAllowlist::new(set(&["127.0.0.2"]));
    let addr = serve(app(allowlist, &["127.0.0.1/32"]), "127.0.0.1:0")
        .await
        .unwrap();
    // Through the trusted proxy (peer 127.0.0.1): the rightmost untrusted entry decides.
    let (s, _, body) = send("127.0.0.1", addr, get_req(Some("127.0.0.2"))).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "hello 127.0.0.2"));
    assert_eq!(
        send(
            "127.0.0.1",
            addr,
            get_req(Some("127.0.0.9, 127.0.0.2, 127.0.0.1"))
        )
        .await
        .0,
        StatusCode::OK
    );
    // The client put the allowed address on the left; the proxy appended the real one.
    assert_eq!(
        send("127.0.0.1", addr, get_req(Some("127.0.0.2, 127.0.0.9")))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // Garbage on the way, or only trusted hops: rejected.
    assert_eq!(
        send("127.0.0.1", addr, get_req(Some("127.0.0.2, bogus")))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send("127.0.0.1", addr, get_req(None)).await.0,
        StatusCode::FORBIDDEN
    );
    // From an untrusted peer the header is ignored.
    assert_eq!(
        send("127.0.0.5", addr, get_req(Some("127.0.0.2"))).await.0,
        StatusCode::FORBIDDEN
    );
}

fn req_with(headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::get("/cb").header("host", "merchant.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// `Forwarded` (RFC 7239) from a trusted proxy on 127.0.0.1, over real sockets: one row per request, the peer it
/// comes from, its headers and the answer. Spoofed headers from untrusted peers, and the other header smuggled
/// through the proxy, change nothing.
#[tokio::test]
async fn forwarded_only_through_trusted_proxies_and_spoofing_is_refused() {
    let allowlist = SharedAllowlist::new(set(&["127.0.0.2"]));
    let router = Router::new()
        .route(
            "/cb",
            get(|req: Request| async move {
                let ip = req.extensions().get::<ClientIp>().map(|c| c.0.to_string());
                format!("hello {}", ip.unwrap_or_default())
            }),
        )
        .layer(
            AllowlistLayer::new(allowlist)
                .trust_proxies(["127.0.0.1/32".parse().unwrap()])
                .forwarded_header(ForwardedHeader::Forwarded),
        );
    let addr = serve(router, "127.0.0.1:0").await.unwrap();
    let ok = StatusCode::OK;
    let no = StatusCode::FORBIDDEN;
    // (case, from, headers, expected status)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], StatusCode);
    let cases: &[Case<'_>] = &[
        (
            "through the proxy",
            "127.0.0.1",
            &[("forwarded", "for=127.0.0.2;proto=https")],
            ok,
        ),
        (
            "quoted with a port",
            "127.0.0.1",
            &[("forwarded", "for=\"127.0.0.2:4711\"")],
            ok,
        ),
        (
            "client-chosen left element",
            "127.0.0.1",
            &[("forwarded", "for=127.0.0.2, for=127.0.0.9")],
            no,
        ),
        (
            "right to left over lines",
            "127.0.0.1",
            &[
                ("forwarded", "for=127.0.0.9"),
                ("forwarded", "for=127.0.0.2"),
            ],
            ok,
        ),
        ("unknown", "127.0.0.1", &[("forwarded", "for=unknown")], no),
        (
            "obfuscated",
            "127.0.0.1",
            &[("forwarded", "for=_proxy1")],
            no,
        ),
        (
            "no for parameter",
            "127.0.0.1",
            &[("forwarded", "proto=https")],
            no,
        ),
        (
            "X-Forwarded-For smuggled past the proxy",
            "127.0.0.1",
            &[("x-forwarded-for", "127.0.0.2")],
            no,
        ),
        (
            "spoofed Forwarded from an untrusted peer",
            "127.0.0.5",
            &[("forwarded", "for=127.0.0.2")],
            no,
        ),
        (
            "spoofed X-Forwarded-For from an untrusted peer",
            "127.0.0.5",
            &[("x-forwarded-for", "127.0.0.2")],
            no,
        ),
        (
            "the allowed peer itself, header ignored",
            "127.0.0.2",
            &[("forwarded", "for=127.0.0.9")],
            ok,
        ),
    ];
    for (case, from, headers, want) in cases {
        let (status, _, body) = send(from, addr, req_with(headers)).await;
        assert_eq!(status, *want, "{case}: {body}");
        if *want == ok {
            assert_eq!(body, "hello 127.0.0.2", "{case}");
        }
    }
}

#[tokio::test]
async fn ipv4_mapped_peer_on_a_dual_stack_listener_matches_the_ipv4_entry() {
    let allowlist = SharedAllowlist::new(set(&["127.0.0.2"]));
    let Some(addr) = serve(app(allowlist, &[]), "[::]:0").await else {
        return;
    };
    // The server sees ::ffff:127.0.0.2 and must match 127.0.0.2.
    let (s, _, body) = send("127.0.0.2", addr, get_req(None)).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "hello 127.0.0.2"));
    assert_eq!(
        send("127.0.0.4", addr, get_req(None)).await.0,
        StatusCode::FORBIDDEN
    );
}

async fn webhook(
    State(receiver): State<Arc<WebhookReceiver>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    match receiver.check(peer, &parts, &bytes) {
        Ok(a) if a.duplicate => (StatusCode::OK, "duplicate").into_response(),
        Ok(_) => (StatusCode::OK, "processed").into_response(),
        Err(rejection) => rejection.into_response(),
    }
}

#[tokio::test]
async fn webhook_receiver_end_to_end() {
    let allowlist = SharedAllowlist::new(set(&["127.0.0.2"]));
    let receiver = Arc::new(WebhookReceiver::new("hook-secret").with_allowlist(allowlist));
    let app = Router::new()
        .route("/hooks/vipps", post(webhook))
        .with_state(receiver);
    let addr = serve(app, "127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://127.0.0.1:{}/hooks/vipps", addr.port())).unwrap();
    let body = r#"{"msn":"123456","reference":"r1","pspReference":"psp-1","name":"AUTHORIZED"}"#;
    let req = |secret: &str, body: &str| {
        let s = vipps_types::signing::sign(secret, &url, body.as_bytes(), SystemTime::now());
        http::Request::post("/hooks/vipps")
            .header("host", &s.host)
            .header("x-ms-date", &s.x_ms_date)
            .header("x-ms-content-sha256", &s.x_ms_content_sha256)
            .header("authorization", &s.authorization)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    };
    assert_eq!(
        send("127.0.0.2", addr, req("hook-secret", body)).await.2,
        "processed"
    );
    assert_eq!(
        send("127.0.0.2", addr, req("hook-secret", body)).await.2,
        "duplicate"
    );
    assert_eq!(
        send("127.0.0.2", addr, req("wrong", body)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send("127.0.0.1", addr, req("hook-secret", body)).await.0,
        StatusCode::FORBIDDEN
    );
}
