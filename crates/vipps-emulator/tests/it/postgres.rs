//! PostgreSQL only: several emulator instances on one database behave as one platform.
//!
//! These tests need `VIPPS_TEST_POSTGRES_URL`; without it they print why and pass (with `CI` set they fail).
//! The rest of the suite runs on PostgreSQL too with `VIPPS_TEST_STORE=postgres` (the conformance run).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vipps_emulator::{Config, Storage};

use crate::common::*;

async fn on(db: &PgDb, cfg: Config) -> Env {
    let mut env = start_with(Config {
        storage: Storage::Postgres(db.url.clone()),
        ..cfg
    })
    .await;
    env.pg = None;
    env
}

async fn count(db: &PgDb, sql: &str) -> i64 {
    let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out: {what}");
}

/// Instances that start at the same moment on an empty database agree on one token signing key (the first one
/// stored wins), so a token from either works on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_starting_together_share_one_signing_key() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let (a, b, c) = tokio::join!(
        on(&db, Config::ephemeral()),
        on(&db, Config::ephemeral()),
        on(&db, Config::ephemeral())
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM meta WHERE key = 'jwt_key'").await,
        1
    );
    for (from, to) in [(&a, &b), (&b, &c), (&c, &a)] {
        let t = from.token().await;
        let r = to.get(&t, "/epayment/v1/payments/order-unknown-0001").await;
        assert_eq!(
            r.status(),
            404,
            "a token from one instance is valid on another"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_identical_creates_on_two_instances_make_one_payment() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = Arc::new(on(&db, Config::ephemeral()).await);
    let b = Arc::new(on(&db, Config::ephemeral()).await);
    // The signing key is shared, so a token from one instance works on the other.
    let t = a.token().await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let env = if i % 2 == 0 { a.clone() } else { b.clone() };
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let r = env.create(&t, "order-pg-race-0001", 1000, "race-key").await;
            (
                r.status().as_u16(),
                r.headers().contains_key("idempotent-replayed"),
            )
        }));
    }
    let mut fresh = 0;
    for task in tasks {
        let (status, replayed) = task.await.unwrap();
        assert!(status == 201 || status == 423, "unexpected status {status}");
        if status == 201 && !replayed {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one request executed");
    assert_eq!(count(&db, "SELECT count(*) FROM aggregates").await, 1);
    // A retry now replays on either instance.
    for env in [&a, &b] {
        let r = env.create(&t, "order-pg-race-0001", 1000, "race-key").await;
        assert_eq!(r.status(), 201);
        assert!(r.headers().contains_key("idempotent-replayed"));
    }
    let r = b.create(&t, "order-pg-race-0001", 2000, "race-key").await;
    assert_eq!(r.status(), 409, "same key, different body");
}

/// Writes that arrive together share one transaction (group commit). Captures of one payment with different keys
/// must still each see the one before (they run in successive rounds), creates must each make one payment, and
/// every answer must be stored with its change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_to_one_payment_and_many_creates_are_each_applied_once() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = Arc::new(on(&db, Config::ephemeral()).await);
    let b = Arc::new(on(&db, Config::ephemeral()).await);
    let t = a.token().await;
    assert_eq!(
        a.create(&t, "order-pg-batch-0001", 1000, "batch-create")
            .await
            .status(),
        201
    );
    assert_eq!(a.approve(&t, "order-pg-batch-0001").await.status(), 200);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let env = if i % 2 == 0 { a.clone() } else { b.clone() };
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let capture = env
                .post_json(
                    &t,
                    "/epayment/v1/payments/order-pg-batch-0001/capture",
                    Some(&format!("batch-capture-{i}")),
                    json!({"modificationAmount": {"currency": "NOK", "value": 10}}),
                )
                .await
                .status()
                .as_u16();
            let create = env
                .create(
                    &t,
                    &format!("order-pg-batch-c{i:04}"),
                    500,
                    &format!("batch-c{i}"),
                )
                .await
                .status()
                .as_u16();
            (capture, create)
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), (200, 201));
    }
    let r = a.get(&t, "/epayment/v1/payments/order-pg-batch-0001").await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["aggregate"]["capturedAmount"]["value"], 400, "{v}");
    assert_eq!(count(&db, "SELECT count(*) FROM aggregates").await, 41);
    assert_eq!(count(&db, "SELECT count(*) FROM idempotency").await, 81);
    // Every key replays on either instance.
    let r = b
        .post_json(
            &t,
            "/epayment/v1/payments/order-pg-batch-0001/capture",
            Some("batch-capture-7"),
            json!({"modificationAmount": {"currency": "NOK", "value": 10}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("idempotent-replayed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clock_request_servers_and_faults_are_shared() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let cfg = || Config {
        dns_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::ephemeral()
    };
    let a = on(&db, cfg()).await;
    let b = on(&db, cfg()).await;

    // The clock.
    let r = a
        .http
        .post(a.url("/_emulator/clock/advance"))
        .json(&json!({"seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let a_offset = r.json::<Value>().await.unwrap()["offset_seconds"].clone();
    assert_eq!(a_offset, json!(3600.0));
    eventually("the other instance sees the advanced clock", || async {
        let v: Value = b
            .http
            .get(b.url("/_emulator/clock"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["offset_seconds"] == json!(3600.0)
    })
    .await;
    // Advances from both instances add up (atomic in the database).
    for env in [&a, &b] {
        let r = env
            .http
            .post(env.url("/_emulator/clock/advance"))
            .json(&json!({"seconds": 60}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    eventually("both instances at +3720 s", || async {
        let mut same = true;
        for env in [&a, &b] {
            let v: Value = env
                .http
                .get(env.url("/_emulator/clock"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            same &= v["offset_seconds"] == json!(3720.0);
        }
        same
    })
    .await;

    // Request-server rotation: the other instance serves the same active servers (and DNS answers).
    let before = b.emu.request_servers();
    let r = a
        .http
        .post(a.url("/_emulator/request-servers/rotate"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let after_a = a.emu.request_servers();
    assert_ne!(before, after_a, "rotation changes the active servers");
    eventually("the other instance follows the rotation", || async {
        b.emu.request_servers() == after_a
    })
    .await;
    let name = after_a.0.clone();
    let mut from_a = crate::delivery::dns_lookup(a.emu.dns_addr().unwrap(), &name).await;
    let mut from_b = crate::delivery::dns_lookup(b.emu.dns_addr().unwrap(), &name).await;
    from_a.sort();
    from_b.sort();
    assert!(!from_a.is_empty());
    assert_eq!(from_a, from_b, "the same DNS answers from both instances");

    // A fault rule added on one instance applies to a request on the other, once.
    let r = a
        .http
        .post(a.url("/_emulator/faults"))
        .json(&json!({"method": "GET", "path": "/epayment/v1/payments/*", "action": "status", "status": 503}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t = b.token().await;
    let r = b.get(&t, "/epayment/v1/payments/order-none-0001").await;
    assert_eq!(r.status(), 503, "the rule from the other instance applies");
    let r = a.get(&t, "/epayment/v1/payments/order-none-0001").await;
    assert_eq!(r.status(), 404, "and was used up");
    let rules: Value = a
        .http
        .get(a.url("/_emulator/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rules, json!([]));
}

/// A receiver whose first connection hangs (the delivering instance dies meanwhile); later ones answer 200.
async fn hanging_receiver() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hung = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let (h, o) = (hung.clone(), ok.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let first = h.fetch_add(1, Ordering::SeqCst) == 0;
            let o = o.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                if first {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                o.fetch_add(1, Ordering::SeqCst);
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (format!("http://{addr}/hooks"), hung, ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_of_a_dead_instance_is_taken_over_after_its_lease() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let cfg = || Config {
        delivery_timeout: Duration::from_secs(30),
        delivery_lease: Some(Duration::from_secs(2)),
        ..Config::ephemeral()
    };
    let a = on(&db, cfg()).await;
    let (url, connections, delivered) = hanging_receiver().await;
    let t = a.token().await;
    let r = a
        .post_json(
            &t,
            "/webhooks/v1/webhooks",
            None,
            json!({"url": url, "events": ["epayments.payment.created.v1"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let r = a.create(&t, "order-pg-lease-0001", 1000, "lease-key").await;
    assert_eq!(r.status(), 201);
    eventually("instance A starts the delivery", || async {
        connections.load(Ordering::SeqCst) >= 1
    })
    .await;
    // A dies mid-delivery (its attempt never completes); B starts and takes the delivery over after the lease.
    a.emu.shutdown().await;
    let b = on(&db, cfg()).await;
    for _ in 0..200 {
        if delivered.load(Ordering::SeqCst) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered.load(Ordering::SeqCst), 1, "delivered once by B");
    eventually("B records the delivery", || async {
        count(
            &db,
            "SELECT count(*) FROM deliveries WHERE state = 'delivered'",
        )
        .await
            == 1
    })
    .await;
    let attempts: Value = b
        .http
        .get(b.url("/_emulator/deliveries?reference=order-pg-lease-0001"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        attempts.to_string().contains("order-pg-lease-0001"),
        "{attempts}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(delivered.load(Ordering::SeqCst), 1, "not delivered twice");
}

/// The aggregate gauges of an instance follow the writes of the others too (a background recount), and a scrape
/// never counts the table itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_state_gauges_of_one_instance_see_the_writes_of_another() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let a = on(&db, Config::ephemeral()).await;
    let b = on(&db, Config::ephemeral()).await;
    let t = a.token().await;
    assert_eq!(
        a.create(&t, "order-pg-gauge-0001", 1000, "gauge-key")
            .await
            .status(),
        201
    );
    let created = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("vipps_emulator_aggregates{")
                    && l.contains("kind=\"payments\"")
                    && l.contains("state=\"CREATED\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    let scrape = |env: &Env| {
        let req = env.http.get(env.url("/metrics"));
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(
        created(&scrape(&a).await),
        Some(1),
        "the writing instance counts at once"
    );
    for _ in 0..200 {
        if created(&scrape(&b).await) == Some(1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the other instance never counted the payment: {}",
        scrape(&b).await
    );
}
