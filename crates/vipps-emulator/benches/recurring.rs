//! Benchmark of the Recurring API over real HTTP/1.1, against the bare axum baseline and ePayment in the same run
//! (the same load generator, knobs and tables as `benches/emulator.rs`, whose infrastructure this copies).
//!
//! `cargo bench -p vipps-emulator --bench recurring` runs:
//!
//! 1. `baseline`: a minimal axum JSON handler;
//! 2. `epayment get` and `epayment create`: the reference ratios (as in `benches/emulator.rs`);
//! 3. `agreement get`: `GET /recurring/v3/agreements/{id}` over pre-created, accepted agreements;
//! 4. `charge create`: `POST /recurring/v3/agreements/{id}/charges`, a fresh key per request, spread over the
//!    pre-created agreements (each charge is its own document plus an index append);
//! 5. `sweep`: `BENCH_SWEEP` (100,000) charges created through the bulk endpoint, due the next day; the clock is
//!    moved past their due date and the time until the sweeper has charged every one is measured.
//!
//! Knobs as in `benches/emulator.rs` (`BENCH_SECONDS`, `BENCH_WARMUP`, `BENCH_CONNECTIONS`, `BENCH_PRECREATE`,
//! `BENCH_SERVER_THREADS`, `BENCH_CLIENT_THREADS`, `BENCH_DIR`), plus `BENCH_SWEEP` and `BENCH_ONLY` (subset of
//! `baseline,epayment,agreement,charge,sweep`). All stores are on disk with `Durability::Fsync`.
#![allow(clippy::print_stdout)]

/// The same allocator as the `vipps` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use vipps_emulator::{Config, Durability, Emulator, Storage};

// ---------------------------------------------------------------------------------------------------------------
// Knobs

struct Knobs {
    seconds: u64,
    warmup: u64,
    connections: usize,
    sweep: u64,
    precreate: u64,
    server_threads: usize,
    client_threads: usize,
    dir: PathBuf,
    only: Option<Vec<String>>,
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got `{v}`")),
        Err(_) => default,
    }
}

impl Knobs {
    fn from_env() -> Self {
        Knobs {
            seconds: env_num("BENCH_SECONDS", 10).max(1),
            warmup: env_num("BENCH_WARMUP", 2),
            connections: env_num("BENCH_CONNECTIONS", 64).max(1) as usize,
            sweep: env_num("BENCH_SWEEP", 100_000),
            precreate: env_num("BENCH_PRECREATE", 10_000).max(1),
            server_threads: env_num("BENCH_SERVER_THREADS", 2).max(1) as usize,
            client_threads: env_num("BENCH_CLIENT_THREADS", 2).max(1) as usize,
            dir: std::env::var_os("BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            only: std::env::var("BENCH_ONLY").ok().map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            }),
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == name))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A log-linear latency histogram (HDR-style, < 1 % relative error, fixed size).

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (2 * SUB + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

#[derive(Clone)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as u64; // >= SUB_BITS + 1
        let shift = e - SUB_BITS as u64;
        let m = v >> shift; // in SUB..2*SUB
        (2 * SUB + (e - SUB_BITS as u64 - 1) * SUB + (m - SUB)) as usize
    }

    /// The middle of the bucket.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * SUB {
            return i;
        }
        let k = i - 2 * SUB;
        let e = k / SUB + SUB_BITS as u64 + 1;
        let m = k % SUB + SUB;
        let shift = e - SUB_BITS as u64;
        (m << shift) + (1 << shift) / 2
    }

    fn record(&mut self, ns: u64) {
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.sum_ns += ns as u128;
        self.max_ns = self.max_ns.max(ns);
    }

    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.sum_ns += o.sum_ns;
        self.max_ns = self.max_ns.max(o.max_ns);
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return f64::NAN;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max_ns) as f64 / 1e6;
            }
        }
        self.max_ns as f64 / 1e6
    }

    fn mean_ms(&self) -> f64 {
        if self.total == 0 {
            f64::NAN
        } else {
            self.sum_ns as f64 / self.total as f64 / 1e6
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The load generator

type Body = Full<Bytes>;
/// Builds request number `seq` (unique across connections in one run).
type MakeReq = Arc<dyn Fn(u64) -> Request<Body> + Send + Sync>;

#[derive(Clone, Copy)]
enum Stop {
    /// Warm up for the first duration, then measure for the second.
    Timed(Duration, Duration),
    /// Send exactly this many requests in total, all measured.
    Count(u64),
}

struct RunResult {
    hist: Histogram,
    ok: u64,
    errors: u64,
    statuses: Vec<(u16, u64)>,
    transport_errors: u64,
    elapsed: Duration,
    first_error: Option<String>,
}

impl RunResult {
    fn rps(&self) -> f64 {
        (self.ok + self.errors) as f64 / self.elapsed.as_secs_f64()
    }
}

struct ConnResult {
    hist: Histogram,
    ok: u64,
    statuses: Vec<(u16, u64)>,
    transport_errors: u64,
    first_error: Option<String>,
    last_done: Option<Instant>,
}

async fn connect(
    addr: SocketAddr,
) -> std::io::Result<hyper::client::conn::http1::SendRequest<Body>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Drives `connections` keep-alive connections against `addr`, each sending its next request as soon as the
/// previous answer's body is read.
async fn load(
    addr: SocketAddr,
    connections: usize,
    stop: Stop,
    expect: StatusCode,
    make: MakeReq,
) -> RunResult {
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (measure_from, deadline) = match stop {
        Stop::Timed(w, m) => (start + w, Some(start + w + m)),
        Stop::Count(_) => (start, None),
    };
    let limit = match stop {
        Stop::Count(n) => n,
        Stop::Timed(..) => u64::MAX,
    };
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let seq = seq.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = ConnResult {
                hist: Histogram::new(),
                ok: 0,
                statuses: Vec::new(),
                transport_errors: 0,
                first_error: None,
                last_done: None,
            };
            let mut send = None;
            loop {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                let t0 = Instant::now();
                if deadline.is_some_and(|d| t0 >= d) {
                    break;
                }
                let measured = t0 >= measure_from;
                if send.is_none() {
                    match connect(addr).await {
                        Ok(s) => send = Some(s),
                        Err(e) => {
                            r.transport_errors += 1;
                            r.first_error.get_or_insert_with(|| format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let s = send.as_mut().expect("connected");
                let req = make(n);
                let outcome = async {
                    s.ready().await?;
                    let resp = s.send_request(req).await?;
                    let status = resp.status();
                    let body = resp.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>((status, body))
                }
                .await;
                let t1 = Instant::now();
                match outcome {
                    Ok((status, body)) => {
                        if measured {
                            r.hist.record((t1 - t0).as_nanos() as u64);
                            r.last_done = Some(t1);
                            if status == expect {
                                r.ok += 1;
                            } else {
                                match r.statuses.iter_mut().find(|(c, _)| *c == status.as_u16()) {
                                    Some((_, k)) => *k += 1,
                                    None => r.statuses.push((status.as_u16(), 1)),
                                }
                                r.first_error.get_or_insert_with(|| {
                                    format!(
                                        "{status}: {}",
                                        String::from_utf8_lossy(&body[..body.len().min(300)])
                                    )
                                });
                            }
                        }
                    }
                    Err(e) => {
                        r.transport_errors += 1;
                        r.first_error
                            .get_or_insert_with(|| format!("transport: {e}"));
                        send = None;
                    }
                }
            }
            r
        }));
    }
    let mut out = RunResult {
        hist: Histogram::new(),
        ok: 0,
        errors: 0,
        statuses: Vec::new(),
        transport_errors: 0,
        elapsed: Duration::ZERO,
        first_error: None,
    };
    let mut last = measure_from;
    for t in tasks {
        let r = t.await.expect("load task panicked");
        out.hist.merge(&r.hist);
        out.ok += r.ok;
        out.transport_errors += r.transport_errors;
        for (c, k) in r.statuses {
            out.errors += k;
            match out.statuses.iter_mut().find(|(x, _)| *x == c) {
                Some((_, n)) => *n += k,
                None => out.statuses.push((c, k)),
            }
        }
        if out.first_error.is_none() {
            out.first_error = r.first_error;
        }
        if let Some(d) = r.last_done {
            last = last.max(d);
        }
    }
    out.errors += out.transport_errors;
    out.elapsed = last
        .saturating_duration_since(measure_from)
        .max(Duration::from_millis(1));
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Servers

/// The baseline: one axum JSON handler behind the same hyper-util accept loop the emulator uses.
async fn start_baseline() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::Json;
    use axum::routing::get;
    use tower::ServiceExt;

    let router: axum::Router = axum::Router::new().route(
        "/json",
        get(|| async { Json(serde_json::json!({ "message": "Hello, World!" })) }),
    );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind baseline");
    let addr = listener.local_addr().expect("baseline address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            let svc =
                tower::service_fn(move |req: axum::extract::Request<hyper::body::Incoming>| {
                    router.clone().oneshot(req.map(axum::body::Body::new))
                });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(
                        TokioIo::new(stream),
                        hyper_util::service::TowerToHyperService::new(svc),
                    )
                    .await;
            });
        }
    });
    (addr, task)
}

fn emulator_config(dir: &Path, durability: Durability) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        storage: Storage::Dir(dir.to_owned()),
        durability,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Requests

struct Api {
    headers: HeaderMap,
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("valid header value")
}

async fn fetch_token(addr: SocketAddr) -> String {
    let mut send = connect(addr).await.expect("connect for token");
    let req = Request::builder()
        .method(Method::POST)
        .uri("/accesstoken/get")
        .header("host", addr.to_string())
        .header("client_id", "demo-client-id")
        .header("client_secret", "demo-client-secret")
        .header("Ocp-Apim-Subscription-Key", "demo-subscription-key")
        .header("content-length", "0")
        .body(Full::new(Bytes::new()))
        .expect("token request");
    let resp = send.send_request(req).await.expect("token request sent");
    assert_eq!(resp.status(), StatusCode::OK, "token status");
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("token body")
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("token JSON");
    v["access_token"].as_str().expect("access_token").to_owned()
}

impl Api {
    async fn new(addr: SocketAddr) -> Api {
        let token = fetch_token(addr).await;
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, hv(&addr.to_string()));
        headers.insert(http::header::AUTHORIZATION, hv(&format!("Bearer {token}")));
        let mut add = |k: &'static str, v: &str| {
            headers.insert(HeaderName::from_static(k), hv(v));
        };
        add("ocp-apim-subscription-key", "demo-subscription-key");
        add("merchant-serial-number", "123456");
        add("vipps-system-name", "vipps-bench");
        add("vipps-system-version", "1.0.0");
        add("vipps-system-plugin-name", "emulator-bench");
        add("vipps-system-plugin-version", "1.0.0");
        Api { headers }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        extra: Option<(&'static str, String)>,
        body: Option<String>,
    ) -> Request<Body> {
        let mut req = Request::new(match &body {
            Some(b) => Full::new(Bytes::from(b.clone())),
            None => Full::new(Bytes::new()),
        });
        *req.method_mut() = method;
        *req.uri_mut() = path.parse().expect("valid path");
        let h = req.headers_mut();
        h.clone_from(&self.headers);
        if let Some((k, v)) = extra {
            h.insert(HeaderName::from_static(k), hv(&v));
        }
        if let Some(b) = body {
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(b.len()));
        }
        req
    }
}

fn reference(run: &str, n: u64) -> String {
    format!("bench-{run}-{n:010}")
}

fn create_maker(api: Arc<Api>, run: &'static str) -> MakeReq {
    Arc::new(move |n| {
        let r = reference(run, n);
        let body = format!(
            r#"{{"amount":{{"currency":"NOK","value":1000}},"paymentMethod":{{"type":"WALLET"}},"reference":"{r}","userFlow":"WEB_REDIRECT","returnUrl":"https://example.com/r"}}"#
        );
        api.request(
            Method::POST,
            "/epayment/v1/payments",
            Some(("idempotency-key", format!("key-{r}"))),
            Some(body),
        )
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Reporting

struct Row {
    name: String,
    r: RunResult,
}

fn print_row(row: &Row) {
    let r = &row.r;
    println!(
        "| {:<38} | {:>10} | {:>11.0} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} | {:>7} |",
        row.name,
        r.ok + r.errors,
        r.rps(),
        r.hist.mean_ms(),
        r.hist.quantile_ms(0.50),
        r.hist.quantile_ms(0.99),
        r.hist.quantile_ms(0.999),
        r.hist.max_ns as f64 / 1e6,
        r.errors,
    );
}

fn print_header() {
    println!(
        "| {:<38} | {:>10} | {:>11} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>7} |",
        "scenario",
        "requests",
        "req/s",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors"
    );
    println!(
        "|{:-<40}|{:->12}|{:->13}|{:->10}|{:->10}|{:->10}|{:->10}|{:->10}|{:->9}|",
        "", "", "", "", "", "", "", "", ""
    );
}

fn report_errors(row: &Row) {
    let r = &row.r;
    if r.errors > 0 {
        println!(
            "   ! {}: {} errors (statuses {:?}, transport {}); first: {}",
            row.name,
            r.errors,
            r.statuses,
            r.transport_errors,
            r.first_error.as_deref().unwrap_or("-")
        );
    }
}

/// The mount (device, type) holding `p`, from /proc/self/mounts.
fn mount_of(p: &Path) -> String {
    let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if p.starts_with(f[1]) && best.as_ref().is_none_or(|(n, _)| f[1].len() > *n) {
            best = Some((f[1].len(), format!("{} on {} ({})", f[0], f[1], f[2])));
        }
    }
    best.map(|b| b.1).unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------------------------------

fn runtime(threads: usize, name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn block<F: Future>(rt: &Runtime, f: F) -> F::Output {
    rt.block_on(f)
}

// ---------------------------------------------------------------------------------------------------------------
// Recurring setup (through the public API, with reqwest; not measured)

struct Setup {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Setup {
    async fn new(addr: SocketAddr) -> Setup {
        Setup {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
            token: fetch_token(addr).await,
        }
    }

    fn req(&self, m: reqwest::Method, path: &str, key: Option<String>) -> reqwest::RequestBuilder {
        let mut b = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Ocp-Apim-Subscription-Key", "demo-subscription-key")
            .header("Merchant-Serial-Number", "123456");
        if let Some(k) = key {
            b = b.header("Idempotency-Key", k);
        }
        b
    }

    /// `n` drafted and force-accepted agreements (price 1,000,000 øre), 16 at a time.
    async fn agreements(&self, n: u64, run: &str) -> Vec<String> {
        use futures::StreamExt;
        futures::stream::iter(0..n)
            .map(|i| async move {
                let body = serde_json::json!({
                    "pricing": {"type": "LEGACY", "amount": 1_000_000, "currency": "NOK"},
                    "interval": {"unit": "MONTH", "count": 1},
                    "merchantRedirectUrl": "https://example.com/r",
                    "merchantAgreementUrl": "https://example.com/a",
                    "productName": "Bench"
                });
                let r = self
                    .req(
                        reqwest::Method::POST,
                        "/recurring/v3/agreements",
                        Some(format!("{run}-d-{i}")),
                    )
                    .json(&body)
                    .send()
                    .await
                    .expect("draft");
                assert_eq!(r.status(), 201, "draft");
                let v: serde_json::Value = r.json().await.expect("draft body");
                let id = v["agreementId"].as_str().expect("agreementId").to_owned();
                let r = self
                    .req(
                        reqwest::Method::PATCH,
                        &format!("/recurring/v3/agreements/{id}/accept"),
                        Some(format!("{run}-a-{i}")),
                    )
                    .json(&serde_json::json!({"phoneNumber": "4791234567"}))
                    .send()
                    .await
                    .expect("accept");
                assert_eq!(r.status(), 204, "accept");
                id
            })
            .buffered(16)
            .collect()
            .await
    }

    async fn clock_now(&self) -> time::OffsetDateTime {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/_emulator/clock", self.base))
            .send()
            .await
            .expect("clock")
            .json()
            .await
            .expect("clock body");
        time::OffsetDateTime::parse(
            v["now"].as_str().expect("now"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("rfc3339")
    }

    async fn advance(&self, seconds: i64) {
        let r = self
            .http
            .post(format!("{}/_emulator/clock/advance", self.base))
            .json(&serde_json::json!({"seconds": seconds}))
            .send()
            .await
            .expect("advance");
        assert_eq!(r.status(), 200, "advance");
    }

    async fn due(&self) -> u64 {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/_emulator/recurring/due", self.base))
            .send()
            .await
            .expect("due")
            .json()
            .await
            .expect("due body");
        v["due"].as_u64().expect("due count")
    }
}

fn due_date(now: time::OffsetDateTime, days: i64) -> String {
    let d = (now + time::Duration::days(days)).date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn charge_maker(
    api: Arc<Api>,
    agreements: Arc<Vec<String>>,
    due: String,
    run: &'static str,
) -> MakeReq {
    Arc::new(move |n| {
        let agr = &agreements[(n as usize) % agreements.len()];
        let body = format!(
            r#"{{"amount":1000,"transactionType":"DIRECT_CAPTURE","description":"Monthly","due":"{due}","retryDays":2}}"#
        );
        api.request(
            Method::POST,
            &format!("/recurring/v3/agreements/{agr}/charges"),
            Some(("idempotency-key", format!("{run}-{n}"))),
            Some(body),
        )
    })
}

fn main() {
    let k = Knobs::from_env();
    let server_rt = runtime(k.server_threads, "server");
    let client_rt = runtime(k.client_threads, "loadgen");
    let timed = Stop::Timed(
        Duration::from_secs(k.warmup),
        Duration::from_secs(k.seconds),
    );
    std::fs::create_dir_all(&k.dir).expect("BENCH_DIR");
    println!("vipps-emulator Recurring benchmark");
    println!(
        "machine: {} CPUs ({}); load: {} keep-alive connections, warm-up {} s, measured {} s; server {} / load generator {} threads on the same CPUs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model(),
        k.connections,
        k.warmup,
        k.seconds,
        k.server_threads,
        k.client_threads,
    );
    println!("stores under {} — {}", k.dir.display(), mount_of(&k.dir));
    println!();
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    if k.wants("baseline") {
        let (addr, task) = block(&server_rt, start_baseline());
        let api = Arc::new(block(&client_rt, async {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::HOST, hv(&addr.to_string()));
            headers.insert(
                http::header::AUTHORIZATION,
                hv(&format!("Bearer {}", "x".repeat(300))),
            );
            for (n, v) in [
                ("ocp-apim-subscription-key", "demo-subscription-key"),
                ("merchant-serial-number", "123456"),
                ("vipps-system-name", "vipps-bench"),
                ("vipps-system-version", "1.0.0"),
                ("vipps-system-plugin-name", "emulator-bench"),
                ("vipps-system-plugin-version", "1.0.0"),
            ] {
                headers.insert(HeaderName::from_static(n), hv(v));
            }
            Api { headers }
        }));
        let a = api.clone();
        let make: MakeReq = Arc::new(move |_| a.request(Method::GET, "/json", None, None));
        println!("running baseline ...");
        let r = block(
            &client_rt,
            load(addr, k.connections, timed, StatusCode::OK, make),
        );
        rows.push(Row {
            name: "baseline axum JSON GET /json".into(),
            r,
        });
        task.abort();
    }

    let tmp = tempfile::Builder::new()
        .prefix("vipps-recurring-bench-")
        .tempdir_in(&k.dir)
        .expect("tempdir");
    let emu = block(
        &server_rt,
        Emulator::start(emulator_config(tmp.path(), Durability::Fsync)),
    )
    .expect("start emulator");
    let addr = emu.local_addr();
    let api = Arc::new(block(&client_rt, Api::new(addr)));
    let setup = block(&client_rt, Setup::new(addr));

    if k.wants("epayment") {
        println!("pre-creating {} payments ...", k.precreate);
        let pre = block(
            &client_rt,
            load(
                addr,
                k.connections,
                Stop::Count(k.precreate),
                StatusCode::CREATED,
                create_maker(api.clone(), "pre"),
            ),
        );
        report_errors(&Row {
            name: "pre-create payments".into(),
            r: pre,
        });
        let a = api.clone();
        let n = k.precreate;
        let make: MakeReq = Arc::new(move |i| {
            let r = reference("pre", (i.wrapping_mul(7919)) % n);
            a.request(
                Method::GET,
                &format!("/epayment/v1/payments/{r}"),
                None,
                None,
            )
        });
        println!("running ePayment GET ...");
        let r = block(
            &client_rt,
            load(addr, k.connections, timed, StatusCode::OK, make),
        );
        rows.push(Row {
            name: "ePayment GET /payments/{ref}".into(),
            r,
        });
        println!("running ePayment create ...");
        let r = block(
            &client_rt,
            load(
                addr,
                k.connections,
                timed,
                StatusCode::CREATED,
                create_maker(api.clone(), "fsync"),
            ),
        );
        rows.push(Row {
            name: "ePayment create".into(),
            r,
        });
    }

    let agreements = if k.wants("agreement") || k.wants("charge") {
        let n = (k.precreate / 10).max(1);
        println!("pre-creating {n} accepted agreements ...");
        Arc::new(block(&client_rt, setup.agreements(n, "pre")))
    } else {
        Arc::new(Vec::new())
    };

    if k.wants("agreement") {
        let a = api.clone();
        let ags = agreements.clone();
        let make: MakeReq = Arc::new(move |i| {
            let id = &ags[(i.wrapping_mul(7919) as usize) % ags.len()];
            a.request(
                Method::GET,
                &format!("/recurring/v3/agreements/{id}"),
                None,
                None,
            )
        });
        println!("running agreement GET ...");
        let r = block(
            &client_rt,
            load(addr, k.connections, timed, StatusCode::OK, make),
        );
        rows.push(Row {
            name: "Recurring GET /agreements/{id}".into(),
            r,
        });
    }

    if k.wants("charge") {
        let now = block(&client_rt, setup.clock_now());
        let due = due_date(now, 40);
        println!("running charge create ...");
        let r = block(
            &client_rt,
            load(
                addr,
                k.connections,
                timed,
                StatusCode::CREATED,
                charge_maker(api.clone(), agreements.clone(), due, "chg"),
            ),
        );
        rows.push(Row {
            name: "Recurring charge create".into(),
            r,
        });
    }
    block(&server_rt, emu.shutdown());

    println!();
    print_header();
    for row in &rows {
        print_row(row);
    }
    for row in &rows {
        report_errors(row);
    }
    if let Some(base) = rows.iter().find(|r| r.name.starts_with("baseline")) {
        println!();
        for row in rows.iter().filter(|r| !r.name.starts_with("baseline")) {
            println!(
                "{:<40} {:.3}x baseline",
                row.name,
                row.r.rps() / base.r.rps()
            );
        }
    }
    println!();

    if k.wants("sweep") && k.sweep > 0 {
        let tmp = tempfile::Builder::new()
            .prefix("vipps-recurring-sweep-")
            .tempdir_in(&k.dir)
            .expect("tempdir");
        let emu = block(
            &server_rt,
            Emulator::start(emulator_config(tmp.path(), Durability::Fsync)),
        )
        .expect("start emulator");
        let addr = emu.local_addr();
        let setup = block(&client_rt, Setup::new(addr));
        let per_agreement = 1000u64;
        let n_agr = k.sweep.div_ceil(per_agreement);
        println!(
            "sweep: {n_agr} agreements, {} charges through the bulk endpoint ...",
            k.sweep
        );
        let ags = block(&client_rt, setup.agreements(n_agr, "sweep"));
        let now = block(&client_rt, setup.clock_now());
        let due = due_date(now, 2);
        let t0 = Instant::now();
        block(&client_rt, async {
            use futures::StreamExt;
            let batches: Vec<u64> = (0..k.sweep.div_ceil(2000)).collect();
            futures::stream::iter(batches)
                .map(|b| {
                    let setup = &setup;
                    let ags = &ags;
                    let due = &due;
                    async move {
                        let items: Vec<serde_json::Value> = (b * 2000
                            ..((b + 1) * 2000).min(k.sweep))
                            .map(|i| {
                                serde_json::json!({
                                    "agreementId": ags[(i % ags.len() as u64) as usize],
                                    "amount": 1000, "transactionType": "DIRECT_CAPTURE",
                                    "description": "Month end", "due": due, "retryDays": 0
                                })
                            })
                            .collect();
                        let r = setup
                            .req(
                                reqwest::Method::POST,
                                "/recurring/v3/agreements/charges",
                                Some(format!("bulk-{b}")),
                            )
                            .json(&items)
                            .send()
                            .await
                            .expect("bulk");
                        assert_eq!(r.status(), 202, "bulk");
                        let v: serde_json::Value = r.json().await.expect("bulk body");
                        let failed = v["charges"]
                            .as_array()
                            .map_or(0, |a| a.iter().filter(|c| c["chargeId"].is_null()).count());
                        assert_eq!(failed, 0, "bulk items failed: {v}");
                    }
                })
                .buffer_unordered(2)
                .collect::<Vec<()>>()
                .await;
        });
        let created_in = t0.elapsed();
        notes.push(format!(
            "sweep setup: {} charges created through the bulk endpoint in {:.1} s ({:.0}/s)",
            k.sweep,
            created_in.as_secs_f64(),
            k.sweep as f64 / created_in.as_secs_f64()
        ));
        // Past the due date and the first attempt: every charge is due for DUE -> PROCESSING -> CHARGED.
        let t1 = Instant::now();
        block(&client_rt, setup.advance(3 * 86_400));
        let mut last = u64::MAX;
        loop {
            let n = block(&client_rt, setup.due());
            if n == 0 {
                break;
            }
            if n != last {
                last = n;
            }
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                t1.elapsed() < Duration::from_secs(600),
                "sweeper did not finish"
            );
        }
        let took = t1.elapsed();
        notes.push(format!(
            "sweep: {} due charges charged by the sweeper in {:.2} s: {:.0} charges/s (target >= 5,000/s)",
            k.sweep,
            took.as_secs_f64(),
            k.sweep as f64 / took.as_secs_f64()
        ));
        block(&server_rt, emu.shutdown());
    }

    for n in notes {
        println!("{n}");
    }
}
