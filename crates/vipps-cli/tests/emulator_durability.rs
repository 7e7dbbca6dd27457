//! `kill -9` of the emulator process loses no acknowledged write.
#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use vipps_test_support::platform::demo_token;

fn spawn(dir: &std::path::Path) -> (Child, String) {
    spawn_on(dir, &dir.to_string_lossy())
}

/// Starts `vipps emulator` on a store (a directory or a PostgreSQL URL); its log goes to `dir`.
fn spawn_on(dir: &std::path::Path, store: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vipps"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--store", store])
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("emulator.log"))
                .unwrap(),
        )
        .env("VIPPS_LOG", "vipps_emulator=debug")
        .spawn()
        .expect("start the emulator");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    // Keep reading so the emulator never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "unexpected first line: {line}"
    );
    (child, url)
}

fn body(reference: &str) -> Value {
    json!({"amount": {"currency": "NOK", "value": 1000}, "paymentMethod": {"type": "WALLET"},
           "reference": reference, "userFlow": "WEB_REDIRECT", "returnUrl": "https://example.com/r"})
}

fn req(http: &reqwest::Client, base: &str, token: &str, path: &str) -> reqwest::RequestBuilder {
    http.post(format!("{base}{path}"))
        .bearer_auth(token)
        .header("Ocp-Apim-Subscription-Key", "demo-subscription-key")
        .header("Merchant-Serial-Number", "123456")
}

/// Sends `n` creates at once (references `{prefix}-00000`...), SIGKILLs the emulator as soon as `kill_after` of
/// them are acknowledged, and answers the references that were acknowledged (201) before it died.
async fn kill_during_creates(
    child: &mut Child,
    http: &reqwest::Client,
    base: &str,
    token: &str,
    prefix: &str,
    n: usize,
    kill_after: usize,
) -> Vec<String> {
    let acked = Arc::new(parking_lot_free::AckList::default());
    let count = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (http, base, t, acked, count) = (
            http.clone(),
            base.to_owned(),
            token.to_owned(),
            acked.clone(),
            count.clone(),
        );
        let reference = format!("{prefix}-{i:05}");
        tasks.push(tokio::spawn(async move {
            let r = req(&http, &base, &t, "/epayment/v1/payments")
                .header("Idempotency-Key", reference.clone())
                .json(&body(&reference))
                .send()
                .await;
            if let Ok(r) = r {
                if r.status() == 201 {
                    acked.push(reference);
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    while count.load(Ordering::SeqCst) < kill_after {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    child.kill().expect("SIGKILL"); // std's kill() sends SIGKILL on Unix
    child.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    acked.take()
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn(dir.path());
    let http = reqwest::Client::new();
    let t = demo_token(&http, &base).await;

    // One payment through capture, fully acknowledged before the crash.
    let r = req(&http, &base, &t, "/epayment/v1/payments")
        .header("Idempotency-Key", "pre-1")
        .json(&body("durable-pre-0001"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let first_body = r.bytes().await.unwrap();
    req(
        &http,
        &base,
        &t,
        "/epayment/v1/test/payments/durable-pre-0001/approve",
    )
    .send()
    .await
    .unwrap();
    let r = req(
        &http,
        &base,
        &t,
        "/epayment/v1/payments/durable-pre-0001/capture",
    )
    .header("Idempotency-Key", "cap-1")
    .json(&json!({"modificationAmount": {"currency": "NOK", "value": 400}}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    // Many creates in flight; the process is killed while they run.
    let acked = kill_during_creates(&mut child, &http, &base, &t, "durable", 400, 100).await;
    eprintln!("{} creates acknowledged before the kill", acked.len());
    assert!(acked.len() >= 100);

    // Restart on the same data directory: every acknowledged write is there.
    let (mut child, base) = spawn(dir.path());
    // The token from before the crash still works (the signing key is durable).
    for reference in &acked {
        let r = http
            .get(format!("{base}/epayment/v1/payments/{reference}"))
            .bearer_auth(&t)
            .header("Ocp-Apim-Subscription-Key", "demo-subscription-key")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged payment {reference} lost");
    }
    let p: Value = http
        .get(format!("{base}/epayment/v1/payments/durable-pre-0001"))
        .bearer_auth(&t)
        .header("Ocp-Apim-Subscription-Key", "demo-subscription-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(p["state"], "AUTHORIZED");
    assert_eq!(p["aggregate"]["capturedAmount"]["value"], 400);
    // Idempotency records survived too: a retry replays the original answer byte for byte.
    let r = req(&http, &base, &t, "/epayment/v1/payments")
        .header("Idempotency-Key", "pre-1")
        .json(&body("durable-pre-0001"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(r.bytes().await.unwrap(), first_body);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// On PostgreSQL an idempotency key is held by the database transaction of the write that uses it, never by a
/// lease: when an instance is killed in the middle of many writes, its keys are free as soon as its connections are
/// gone. A careful client retries every write that got no answer, with the same key and body, honouring
/// `Retry-After`; each one must be answered (fresh or replayed) within 3 s of the restart, and each reference must
/// exist exactly once.
#[tokio::test]
async fn keys_of_a_killed_postgres_instance_are_free_at_once() {
    let Some(db) = vipps_test_support::pg::PgDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn_on(dir.path(), &db.url);
    let http = reqwest::Client::new();
    let t = demo_token(&http, &base).await;

    let n = 400;
    let acked: std::collections::HashSet<String> =
        kill_during_creates(&mut child, &http, &base, &t, "pgkill", n, 50)
            .await
            .into_iter()
            .collect();
    eprintln!(
        "{} of {n} creates acknowledged before the kill",
        acked.len()
    );

    let (mut child, base) = spawn_on(dir.path(), &db.url);
    // Every client retries at once, as clients whose requests failed together would.
    let restarted = std::time::Instant::now();
    let acked = Arc::new(acked);
    let locked = Arc::new(AtomicUsize::new(0));
    let mut retries = Vec::new();
    for i in 0..n {
        let (http, base, t, acked, locked) = (
            http.clone(),
            base.clone(),
            t.clone(),
            acked.clone(),
            locked.clone(),
        );
        retries.push(tokio::spawn(async move {
            let reference = format!("pgkill-{i:05}");
            loop {
                let r = req(&http, &base, &t, "/epayment/v1/payments")
                    .header("Idempotency-Key", reference.clone())
                    .json(&body(&reference))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    201 => {
                        let replayed = r.headers().get("idempotent-replayed").is_some();
                        assert!(
                            replayed || !acked.contains(&reference),
                            "{reference} was acknowledged but its retry was not a replay"
                        );
                        return restarted.elapsed();
                    }
                    423 => {
                        locked.fetch_add(1, Ordering::SeqCst);
                        let wait: u64 = r.headers()["retry-after"]
                            .to_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                    }
                    s => panic!("{reference}: unexpected {s}: {}", r.text().await.unwrap()),
                }
            }
        }));
    }
    let mut slowest = std::time::Duration::ZERO;
    for r in retries {
        slowest = slowest.max(r.await.unwrap());
    }
    let locked = locked.load(Ordering::SeqCst);
    eprintln!(
        "all {n} keys answered within {slowest:?} of the restart ({locked} answers of 423 on the way)"
    );
    assert!(
        slowest < std::time::Duration::from_secs(3),
        "keys were held for {slowest:?} after the restart"
    );
    assert_eq!(locked, 0, "no key may still be held by the dead instance");
    // Nothing duplicated: exactly one payment per reference.
    let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT id) FROM aggregates WHERE id LIKE 'pgkill-%'",
            &[],
        )
        .await
        .unwrap();
    let (all, distinct): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((all, distinct), (n as i64, n as i64));
    child.kill().unwrap();
    child.wait().unwrap();
}

mod parking_lot_free {
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct AckList(Mutex<Vec<String>>);

    impl AckList {
        pub fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
        pub fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }
}

/// A bare HTTP receiver on 127.0.0.1 that answers every request with the current status.
struct RawReceiver {
    addr: std::net::SocketAddr,
    status: Arc<AtomicUsize>,
    bodies: Arc<std::sync::Mutex<Vec<(u16, String)>>>,
}

impl RawReceiver {
    async fn start(status: u16) -> RawReceiver {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let st = Arc::new(AtomicUsize::new(status as usize));
        let bodies: Arc<std::sync::Mutex<Vec<(u16, String)>>> = Arc::default();
        let (st2, b2) = (st.clone(), bodies.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (st, bodies) = (st2.clone(), b2.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text[..end]
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len])
                                    .to_string();
                                let code = st.load(Ordering::SeqCst) as u16;
                                bodies.lock().unwrap().push((code, body));
                                let resp = format!(
                                    "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                                );
                                let _ = sock.write_all(resp.as_bytes()).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        RawReceiver {
            addr,
            status: st,
            bodies,
        }
    }
}

#[tokio::test]
async fn undelivered_webhooks_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn(dir.path());
    let http = reqwest::Client::new();
    let t = demo_token(&http, &base).await;
    let rx = RawReceiver::start(503).await;
    let r = req(&http, &base, &t, "/webhooks/v1/webhooks")
        .json(&json!({"url": format!("http://{}/hook", rx.addr), "events": ["epayments.payment.created.v1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = req(&http, &base, &t, "/epayment/v1/payments")
        .header("Idempotency-Key", "wh-1")
        .json(&body("webhook-crash-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for _ in 0..300 {
        if !rx.bodies.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        rx.bodies.lock().unwrap().len(),
        1,
        "the first attempt failed"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    rx.status.store(200, Ordering::SeqCst);
    let (mut child, _base) = spawn(dir.path());
    let mut delivered = false;
    for _ in 0..1000 {
        if rx
            .bodies
            .lock()
            .unwrap()
            .iter()
            .any(|(code, _)| *code == 200)
        {
            delivered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if !delivered {
        eprintln!(
            "{}",
            std::fs::read_to_string(dir.path().join("emulator.log")).unwrap_or_default()
        );
        eprintln!("received: {:?}", rx.bodies.lock().unwrap());
    }
    assert!(
        delivered,
        "the pending event was delivered after the restart"
    );
    let bodies = rx.bodies.lock().unwrap().clone();
    let ev: Value = serde_json::from_str(&bodies.last().unwrap().1).unwrap();
    assert_eq!(ev["reference"], "webhook-crash-01");
    assert_eq!(ev["name"], "CREATED");
    child.kill().unwrap();
    child.wait().unwrap();
}
