// The load generator, baseline server, emulator API client, histogram and report helpers that the `emulator` and
// `recurring` benchmarks share; each includes this file (`include!`), so both measure with exactly the same code.
// Items one of them does not use are allowed to be dead there.

// ---------------------------------------------------------------------------------------------------------------
// Knobs

struct Knobs {
    seconds: u64,
    warmup: u64,
    connections: usize,
    /// `BENCH_CREATES` (the emulator benchmark's memory run).
    #[allow(dead_code)]
    creates: u64,
    /// `BENCH_SWEEP` (the Recurring benchmark's due charges).
    #[allow(dead_code)]
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
            creates: env_num("BENCH_CREATES", 1_000_000),
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
#[allow(dead_code)]
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

#[allow(dead_code)]
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[allow(dead_code)]
fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

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

#[allow(dead_code)]
fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
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
