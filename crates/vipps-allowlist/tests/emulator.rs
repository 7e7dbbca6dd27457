//! End to end against the emulator (issue 6): the emulator's request servers deliver signed webhooks from their
//! own loopback addresses to an axum receiver behind [`AllowlistLayer`] and [`WebhookReceiver`], with the
//! allowlist resolved from the emulator's embedded DNS.
//!
//! - the active server's deliveries are admitted and verified, another loopback address is refused with 403;
//! - after a rotation the new address is refused until the allowlist refreshes from DNS, then the emulator's retry
//!   is admitted;
//! - a DNS failure (the DNS unreachable, then the emulator gone) keeps the last good set in force.

#![allow(clippy::print_stderr)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{ConnectInfo, Extension, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};
use vipps_allowlist::resolve::ResolverOptions;
use vipps_allowlist::{
    AllowlistLayer, ClientIp, DnsResolver, Policy, Refresher, SharedAllowlist, WebhookReceiver,
};
use vipps_test_support::platform::{Platform, Relay};
use vipps_types::servers::Profile;

/// The bound on each test.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The bound on each wait for something asynchronous.
const WAIT: Duration = vipps_test_support::platform::WAIT;

const MT1: &str = "callback-mt-1.vipps.no";
const MT2: &str = "callback-mt-2.vipps.no";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    vipps_test_support::bounded(TEST_TIMEOUT, f).await;
}

// ---------------------------------------------------------------------------------------------------------------
// The merchant's receiver: axum behind the allowlist layer, verifying with the registration secret.
// ---------------------------------------------------------------------------------------------------------------

/// One delivery the handler saw (only verified ones get this far).
#[derive(Debug, Clone)]
struct Seen {
    peer: IpAddr,
    client: IpAddr,
    name: String,
    reference: String,
    duplicate: bool,
}

struct Hooks {
    receiver: WebhookReceiver,
    seen: Mutex<Vec<Seen>>,
}

async fn hook(
    State(hooks): State<Arc<Hooks>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(ClientIp(client)): Extension<ClientIp>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    match hooks.receiver.check(peer, &parts, &body) {
        Ok(accepted) => {
            let v: Value = serde_json::from_slice(&body).unwrap();
            hooks.seen.lock().unwrap().push(Seen {
                peer: peer.ip(),
                client,
                name: v["name"].as_str().unwrap_or_default().to_owned(),
                reference: v["reference"].as_str().unwrap_or_default().to_owned(),
                duplicate: accepted.duplicate,
            });
            StatusCode::OK.into_response()
        }
        Err(rejection) => rejection.into_response(),
    }
}

struct Shop {
    url: String,
    addr: SocketAddr,
    secret: String,
    hooks: Arc<Hooks>,
}

impl Shop {
    /// Binds, registers the webhook with the platform and serves the receiver behind the layer.
    async fn open(platform: &Platform, allowlist: SharedAllowlist) -> Shop {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}/hooks/vipps");
        let secret = platform.register(&url).await;
        let hooks = Arc::new(Hooks {
            receiver: WebhookReceiver::new(secret.clone()).with_allowlist(allowlist.clone()),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/hooks/vipps", post(hook))
            .with_state(hooks.clone())
            .layer(AllowlistLayer::new(allowlist));
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Shop {
            url,
            addr,
            secret,
            hooks,
        }
    }

    fn seen(&self, reference: &str) -> Vec<Seen> {
        self.hooks
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.reference == reference)
            .cloned()
            .collect()
    }

    /// Posts a delivery signed with `secret` from the local address `from`, as an impostor would.
    async fn post_from(
        &self,
        from: &str,
        secret: &str,
        body: &[u8],
    ) -> (StatusCode, String, Value) {
        let url = url::Url::parse(&self.url).unwrap();
        let signed = vipps_types::signing::sign(secret, &url, body, SystemTime::now());
        let client = reqwest::Client::builder()
            .local_address(ip(from))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let r = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-ms-date", &signed.x_ms_date)
            .header("x-ms-content-sha256", &signed.x_ms_content_sha256)
            .header("authorization", &signed.authorization)
            .body(body.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("posting from {from} to {}: {e}", self.addr));
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let v = r.json().await.unwrap_or(Value::Null);
        (status, ct, v)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The allowlist, resolved from the emulator's DNS.
// ---------------------------------------------------------------------------------------------------------------

fn refresher(dns: SocketAddr) -> Refresher {
    let resolver = DnsResolver::with_nameservers(
        &[dns],
        ResolverOptions {
            timeout: Duration::from_millis(300),
            attempts: 1,
        },
    )
    .unwrap();
    let policy = Policy {
        allow_nets: vec!["127.0.0.0/8".parse().unwrap()],
        min_ttl: Duration::from_millis(200),
        max_ttl: Duration::from_secs(1),
        ..Policy::default()
    };
    Refresher::new(resolver, Profile::Test.hostnames(), policy)
}

/// The set as `address → names`, for exact comparisons.
fn set_of(allowlist: &SharedAllowlist) -> Vec<(IpAddr, Vec<String>)> {
    allowlist
        .current()
        .entries()
        .iter()
        .map(|e| (e.address, e.names.clone()))
        .collect()
}

fn entries(list: &[(&str, &str)]) -> Vec<(IpAddr, Vec<String>)> {
    list.iter()
        .map(|(a, n)| (ip(a), vec![(*n).to_owned()]))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------------------------

/// (a) Deliveries from the active request server are admitted and verified; a correctly signed request from
/// another loopback address is refused by the layer with 403 problem+json; a pool member with a bad signature is
/// admitted by the layer and refused by the receiver with 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_from_the_active_server_pass_the_allowlist_and_others_are_refused() {
    bounded(async {
        let started = Instant::now();
        let platform = Platform::start().await;
        let mut refresher = refresher(platform.dns());
        let report = refresher.refresh().await.expect("the first refresh");
        assert!(report.names.iter().all(|n| n.status == "ok"), "{report:?}");
        let allowlist = refresher.shared();
        assert_eq!(
            set_of(&allowlist),
            entries(&[("127.0.3.1", MT1), ("127.0.3.2", MT2)]),
            "the test profile from the emulator's DNS"
        );
        let shop = Shop::open(&platform, allowlist.clone()).await;

        let reference = "order-allow-00001";
        platform.create(reference).await;
        let a = platform.wait_attempt(reference, "CREATED", 1).await;
        assert_eq!(a["response_status"], 200, "{a:#}");
        assert_eq!(a["outcome"], "delivered");
        assert_eq!(a["source_address"], "127.0.3.1");
        assert_eq!(a["source_hostname"], MT1);
        platform.approve(reference).await;
        let a = platform.wait_attempt(reference, "AUTHORIZED", 1).await;
        assert_eq!(a["response_status"], 200, "{a:#}");

        let seen = shop.seen(reference);
        let names: Vec<&str> = seen.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["CREATED", "AUTHORIZED"]);
        for s in &seen {
            assert_eq!(s.peer, ip("127.0.3.1"), "the TCP peer is the active server");
            assert_eq!(s.client, ip("127.0.3.1"), "the layer admitted that address");
            assert!(!s.duplicate);
        }

        // An impostor on another loopback address, even with a valid signature: refused by the layer.
        let body = json!({"reference": reference, "name": "CAPTURED", "pspReference": "forged-1"})
            .to_string();
        let (status, ct, problem) = shop
            .post_from("127.0.0.77", &shop.secret, body.as_bytes())
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(ct, "application/problem+json");
        assert_eq!(problem["status"], 403, "{problem}");
        assert_eq!(problem["title"], "Forbidden", "{problem}");
        // A pool member (callback-mt-2, not active) passes the layer, but a wrong signature does not verify.
        let (status, ct, problem) = shop
            .post_from("127.0.3.2", "not-the-secret", body.as_bytes())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
        assert_eq!(ct, "application/problem+json");
        assert_eq!(
            shop.seen(reference).len(),
            2,
            "neither request reached the handler"
        );
        eprintln!("(a) took {:?}", started.elapsed());
        platform.emu.shutdown().await;
    })
    .await;
}

/// (b) After a rotation the new active server's address is refused until the allowlist refreshes from DNS; the
/// emulator's retry (2 s later in emulator time) is then admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_rotation_the_new_address_is_refused_until_the_allowlist_refreshes() {
    bounded(async {
        let started = Instant::now();
        let platform = Platform::start().await;
        let mut refresher = refresher(platform.dns());
        refresher.refresh().await.expect("the first refresh");
        let allowlist = refresher.shared();
        let shop = Shop::open(&platform, allowlist.clone()).await;

        let reference = "order-rotate-0001";
        platform.create(reference).await;
        let a = platform.wait_attempt(reference, "CREATED", 1).await;
        assert_eq!(a["response_status"], 200, "{a:#}");

        let (active, new_ip) = platform.rotate_test().await;
        assert_eq!(active, MT2);
        assert_eq!(
            new_ip,
            ip("127.0.3.12"),
            "callback-mt-2 moved to a fresh address"
        );
        assert!(!allowlist.contains(new_ip), "not refreshed yet");

        platform.approve(reference).await;
        let a = platform.wait_attempt(reference, "AUTHORIZED", 1).await;
        assert_eq!(a["source_address"], "127.0.3.12");
        assert_eq!(
            a["response_status"], 403,
            "the stale allowlist refuses: {a:#}"
        );
        assert_eq!(a["outcome"], "retry");
        assert!(
            shop.seen(reference).iter().all(|s| s.name != "AUTHORIZED"),
            "the handler never saw the refused delivery"
        );
        platform.assert_no_attempt(reference, "AUTHORIZED", 2).await;

        // The allowlist learns the new address from DNS (the old one stays for its grace period).
        let report = refresher.refresh().await.expect("refresh after rotation");
        let added: Vec<(IpAddr, Vec<String>)> = report
            .diff
            .added
            .iter()
            .map(|e| (e.address, e.names.clone()))
            .collect();
        assert_eq!(added, entries(&[("127.0.3.12", MT2)]));
        assert!(report.diff.removed.is_empty(), "grace keeps 127.0.3.2");
        assert_eq!(
            set_of(&allowlist),
            entries(&[("127.0.3.1", MT1), ("127.0.3.2", MT2), ("127.0.3.12", MT2)])
        );

        // The retry, due 2 s later in emulator time, is admitted and verified.
        platform.advance(2).await;
        let a = platform.wait_attempt(reference, "AUTHORIZED", 2).await;
        assert_eq!(a["response_status"], 200, "{a:#}");
        assert_eq!(a["outcome"], "delivered");
        assert_eq!(a["source_address"], "127.0.3.12");
        let seen = shop.seen(reference);
        let authorized: Vec<&Seen> = seen.iter().filter(|s| s.name == "AUTHORIZED").collect();
        assert_eq!(authorized.len(), 1, "{seen:?}");
        assert_eq!(authorized[0].peer, ip("127.0.3.12"));
        assert!(!authorized[0].duplicate);
        eprintln!("(b) took {:?}", started.elapsed());
        platform.emu.shutdown().await;
    })
    .await;
}

/// (b') The same with the background refresh loop: nobody calls `refresh`; the loop picks the rotation up within
/// its TTL-driven interval and a later retry is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_refresh_loop_follows_a_rotation() {
    bounded(async {
        let started = Instant::now();
        let platform = Platform::start().await;
        let mut refresher = refresher(platform.dns());
        refresher.refresh().await.expect("the first refresh");
        let (allowlist, task) = refresher.spawn();
        let shop = Shop::open(&platform, allowlist.clone()).await;

        let (_, new_ip) = platform.rotate_test().await;
        let deadline = Instant::now() + WAIT;
        while !allowlist.contains(new_ip) {
            assert!(
                Instant::now() < deadline,
                "the loop did not pick up {new_ip}: {:?}",
                set_of(&allowlist)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reference = "order-loop-00001";
        platform.create(reference).await;
        let a = platform.wait_attempt(reference, "CREATED", 1).await;
        assert_eq!(a["source_address"], new_ip.to_string());
        assert_eq!(a["response_status"], 200, "{a:#}");
        assert_eq!(shop.seen(reference).len(), 1);
        task.abort();
        eprintln!("(b') took {:?}", started.elapsed());
        platform.emu.shutdown().await;
    })
    .await;
}

/// (c) DNS failures keep the last good set: with the DNS unreachable every name fails, the set stays as it was
/// and deliveries from the active server are still admitted; a rotation during the outage is learnt once DNS
/// answers again; with the emulator (and its DNS) gone the set still stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_failure_keeps_the_last_good_set() {
    bounded(async {
        let started = Instant::now();
        let platform = Platform::start().await;
        let relay = Relay::start(platform.dns()).await;
        let mut refresher = refresher(relay.addr);
        refresher
            .refresh()
            .await
            .expect("the first refresh through the relay");
        let allowlist = refresher.shared();
        let good = entries(&[("127.0.3.1", MT1), ("127.0.3.2", MT2)]);
        assert_eq!(set_of(&allowlist), good);
        let shop = Shop::open(&platform, allowlist.clone()).await;

        // DNS unreachable: every lookup fails, the last good set stays in force.
        relay.set_up(false);
        let report = refresher
            .refresh()
            .await
            .expect("a failed lookup is not a refused update");
        assert!(
            report.names.iter().all(|n| n.status == "failed"),
            "{:?}",
            report.names
        );
        assert!(report.diff.is_empty());
        assert_eq!(set_of(&allowlist), good);
        assert!(report.status_line().contains("last-known-good kept"));

        let reference = "order-dnsfail-001";
        platform.create(reference).await;
        let a = platform.wait_attempt(reference, "CREATED", 1).await;
        assert_eq!(
            a["response_status"], 200,
            "admitted during the DNS outage: {a:#}"
        );

        // A rotation during the outage cannot be learnt: refused, and still refused after a failed refresh.
        let (_, new_ip) = platform.rotate_test().await;
        platform.approve(reference).await;
        let a = platform.wait_attempt(reference, "AUTHORIZED", 1).await;
        assert_eq!(a["response_status"], 403, "{a:#}");
        refresher.refresh().await.unwrap();
        assert_eq!(set_of(&allowlist), good);
        platform.advance(2).await;
        let a = platform.wait_attempt(reference, "AUTHORIZED", 2).await;
        assert_eq!(a["response_status"], 403, "{a:#}");

        // DNS back: the new address is learnt and the next retry is admitted.
        relay.set_up(true);
        let report = refresher.refresh().await.unwrap();
        assert!(report.names.iter().all(|n| n.status == "ok"));
        assert!(allowlist.contains(new_ip));
        platform.advance(2).await;
        let a = platform.wait_attempt(reference, "AUTHORIZED", 3).await;
        assert_eq!(a["response_status"], 200, "{a:#}");
        assert_eq!(shop.seen(reference).len(), 2);
        let before = set_of(&allowlist);

        // The emulator and its DNS gone: lookups fail, nothing is lost.
        platform.emu.shutdown().await;
        let report = refresher
            .refresh()
            .await
            .expect("failed lookups keep the set");
        assert!(report.names.iter().all(|n| n.status == "failed"));
        assert_eq!(set_of(&allowlist), before);
        assert!(allowlist.contains(ip("127.0.3.1")) && allowlist.contains(new_ip));
        eprintln!("(c) took {:?}", started.elapsed());
    })
    .await;
}

/// (d) Delivery-side chaos from the emulator (`/_emulator/webhook-chaos`) against the receiver: deliveries with a
/// wrong secret, a stale signature or a skewed `x-ms-date` are refused with 401 (and the emulator records the 401
/// and retries); a duplicated delivery is accepted once and reported as a duplicate the second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_refuses_spoiled_signatures_and_spots_duplicates() {
    bounded(async {
        let platform = Platform::start().await;
        let mut refresher = refresher(platform.dns());
        refresher.refresh().await.expect("the first refresh");
        let shop = Shop::open(&platform, refresher.shared()).await;
        let spoiled = [
            json!({"action": "wrong_signature"}),
            json!({"action": "stale_signature", "seconds": 900}),
            json!({"action": "skew_date", "seconds": 60}),
            json!({"action": "skew_date", "seconds": -900}),
        ];
        for (i, rule) in spoiled.iter().enumerate() {
            let reference = format!("order-spoil-{i:05}");
            let mut rule = rule.clone();
            rule["event"] = "CREATED".into();
            platform
                .control(Method::POST, "/_emulator/webhook-chaos", Some(rule.clone()))
                .await;
            platform.create(&reference).await;
            let a = platform.wait_attempt(&reference, "CREATED", 1).await;
            assert_eq!(a["response_status"], 401, "{rule}: {a:#}");
            assert_eq!(a["outcome"], "retry", "{rule}");
            assert_eq!(a["chaos"]["action"], rule["action"]);
            assert!(shop.seen(&reference).is_empty(), "{rule} was accepted");
        }
        // The retries carry good signatures again.
        platform.advance(2).await;
        for i in 0..spoiled.len() {
            let reference = format!("order-spoil-{i:05}");
            let a = platform.wait_attempt(&reference, "CREATED", 2).await;
            assert_eq!(a["response_status"], 200, "{a:#}");
            assert_eq!(shop.seen(&reference).len(), 1);
        }

        platform
            .control(
                Method::POST,
                "/_emulator/webhook-chaos",
                Some(json!({"action": "duplicate", "url": shop.url})),
            )
            .await;
        let reference = "order-dupe-00001";
        platform.create(reference).await;
        let a = platform.wait_attempt(reference, "CREATED", 1).await;
        assert_eq!(a["response_status"], 200);
        assert_eq!(a["chaos"]["copies"], json!([200]));
        let seen = shop.seen(reference);
        let dupes: Vec<bool> = seen.iter().map(|s| s.duplicate).collect();
        assert_eq!(dupes, [false, true], "the second copy is the same event");
    })
    .await;
}
