//! The TLS edge's cost: the same API GET over plain HTTP and over HTTPS (keep-alive), and full TLS handshakes per
//! second. `cargo bench -p vipps-emulator --bench tls`.
//!
//! One in-process emulator with a plain and a TLS listener on 127.0.0.1, on its own runtime; the load generator
//! runs on another. Both GET scenarios send `GET /epayment/v1/payments/{reference}` with the full header set
//! (bearer token, subscription key, MSN, the four `Vipps-System-*` headers) over N keep-alive HTTP/1.1
//! connections, closed loop; the HTTPS one negotiates HTTP/1.1 by ALPN with `apitest.vipps.no` as the server
//! name and trusts only the emulator's authority, so the difference is TLS alone. The handshake scenario opens
//! connections as fast as C concurrent loops can: TCP connect, a full TLS 1.3 handshake (no resumption: a new
//! client configuration has no tickets), one `GET /_emulator/clock`, close.
//!
//! Knobs (environment): `BENCH_SECONDS` (measured seconds per scenario, 10), `BENCH_WARMUP` (2),
//! `BENCH_CONNECTIONS` (64), `BENCH_HANDSHAKE_CONCURRENCY` (16), `BENCH_SERVER_THREADS` (2),
//! `BENCH_CLIENT_THREADS` (2).
#![allow(clippy::print_stdout)]

/// The same allocator as the `vipps` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use vipps_emulator::{Config, Emulator};

const REFERENCE: &str = "bench-tls-0000001";
const SERVER_NAME: &str = "apitest.vipps.no";

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Where and how the load generator connects.
#[derive(Clone)]
enum Target {
    Plain(SocketAddr),
    Tls(SocketAddr, tokio_rustls::TlsConnector),
}

impl Target {
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let addr = match self {
            Target::Plain(a) | Target::Tls(a, _) => *a,
        };
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        match self {
            Target::Plain(_) => handshake(tcp).await,
            Target::Tls(_, tls) => {
                let name = ServerName::try_from(SERVER_NAME).expect("a DNS name");
                let stream = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
                handshake(stream).await
            }
        }
    }
}

async fn handshake<I>(io: I) -> Result<SendRequest<Full<Bytes>>, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// A fresh client configuration that trusts only the emulator's authority (and so holds no session tickets).
fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .expect("the CA certificate");
    roots.add(der).expect("a usable CA certificate");
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // HTTP/1.1 on both sides, so that the comparison with plain HTTP is TLS alone.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn get_request(token: &str, host: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::GET)
        .uri(format!("/epayment/v1/payments/{REFERENCE}"))
        .header("host", host)
        .header("authorization", format!("Bearer {token}"))
        .header("ocp-apim-subscription-key", "demo-subscription-key")
        .header("merchant-serial-number", "123456")
        .header("vipps-system-name", "bench")
        .header("vipps-system-version", "1.0.0")
        .header("vipps-system-plugin-name", "bench-plugin")
        .header("vipps-system-plugin-version", "1.0.0")
        .body(Full::new(Bytes::new()))
        .expect("a request")
}

/// What one scenario measured.
#[derive(Default)]
struct Outcome {
    done: u64,
    errors: u64,
    latencies_ns: Vec<u64>,
    first_error: Option<String>,
    seconds: f64,
}

impl Outcome {
    fn merge(&mut self, o: Outcome) {
        self.done += o.done;
        self.errors += o.errors;
        self.latencies_ns.extend(o.latencies_ns);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn per_second(&self) -> f64 {
        self.done as f64 / self.seconds
    }

    fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return f64::NAN;
        }
        self.latencies_ns.sort_unstable();
        let i = ((q * self.latencies_ns.len() as f64).ceil() as usize)
            .clamp(1, self.latencies_ns.len());
        self.latencies_ns[i - 1] as f64 / 1e6
    }
}

/// `connections` keep-alive connections, each sending its next GET when the previous answer is read; counts
/// what completes inside the measured window.
async fn keep_alive(
    target: Target,
    token: Arc<str>,
    host: &'static str,
    connections: usize,
    warmup: Duration,
    measure: Duration,
) -> Outcome {
    let start = Instant::now();
    let (from, until) = (start + warmup, start + warmup + measure);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (target, token) = (target.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut o = Outcome::default();
            let mut send = None;
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                if send.is_none() {
                    match target.connect().await {
                        Ok(s) => send = Some(s),
                        Err(e) => {
                            o.errors += 1;
                            o.first_error.get_or_insert(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let s = send.as_mut().expect("connected");
                let result = async {
                    s.ready().await?;
                    let resp = s.send_request(get_request(&token, host)).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    Ok::<_, hyper::Error>(status)
                }
                .await;
                let t1 = Instant::now();
                if t0 < from {
                    continue;
                }
                match result {
                    Ok(StatusCode::OK) => {
                        o.done += 1;
                        o.latencies_ns.push((t1 - t0).as_nanos() as u64);
                    }
                    Ok(status) => {
                        o.errors += 1;
                        o.first_error
                            .get_or_insert_with(|| format!("status {status}"));
                    }
                    Err(e) => {
                        o.errors += 1;
                        o.first_error.get_or_insert_with(|| e.to_string());
                        send = None;
                    }
                }
            }
            o
        }));
    }
    let mut all = Outcome {
        seconds: measure.as_secs_f64(),
        ..Outcome::default()
    };
    for t in tasks {
        all.merge(t.await.expect("a load task"));
    }
    all
}

/// `concurrency` loops of: connect, full handshake, one small GET, close.
async fn handshakes(
    target: Target,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> Outcome {
    let start = Instant::now();
    let (from, until) = (start + warmup, start + warmup + measure);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (target, stop) = (target.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut o = Outcome::default();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                if t0 >= until {
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
                let result = async {
                    let mut s = target.connect().await?;
                    let req = Request::builder()
                        .uri("/_emulator/clock")
                        .header("host", SERVER_NAME)
                        .body(Full::new(Bytes::new()))
                        .expect("a request");
                    let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
                    let status = resp.status();
                    resp.into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(status)
                }
                .await;
                let t1 = Instant::now();
                if t0 < from {
                    continue;
                }
                match result {
                    Ok(StatusCode::OK) => {
                        o.done += 1;
                        o.latencies_ns.push((t1 - t0).as_nanos() as u64);
                    }
                    Ok(status) => {
                        o.errors += 1;
                        o.first_error
                            .get_or_insert_with(|| format!("status {status}"));
                    }
                    Err(e) => {
                        o.errors += 1;
                        o.first_error.get_or_insert(e);
                    }
                }
            }
            o
        }));
    }
    let mut all = Outcome {
        seconds: measure.as_secs_f64(),
        ..Outcome::default()
    };
    for t in tasks {
        all.merge(t.await.expect("a handshake task"));
    }
    all
}

fn row(name: &str, o: &mut Outcome, unit: &str) {
    println!(
        "| {name} | {:.0} {unit} | {:.3} | {:.3} | {} |",
        o.per_second(),
        o.quantile_ms(0.5),
        o.quantile_ms(0.99),
        o.errors
    );
    if let Some(e) = &o.first_error {
        println!("|   first error: {e} | | | | |");
    }
}

fn main() {
    let seconds = Duration::from_secs(knob("BENCH_SECONDS", 10).max(1));
    let warmup = Duration::from_secs(knob("BENCH_WARMUP", 2));
    let connections = knob("BENCH_CONNECTIONS", 64).max(1) as usize;
    let concurrency = knob("BENCH_HANDSHAKE_CONCURRENCY", 16).max(1) as usize;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(knob("BENCH_SERVER_THREADS", 2).max(1) as usize)
        .enable_all()
        .build()
        .expect("the server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(knob("BENCH_CLIENT_THREADS", 2).max(1) as usize)
        .enable_all()
        .build()
        .expect("the client runtime");
    let emu = server_rt
        .block_on(Emulator::start(Config {
            tls_listen: Some("127.0.0.1:0".parse().expect("an address")),
            ..Config::ephemeral()
        }))
        .expect("the emulator starts");
    let plain = emu.local_addr();
    let tls = emu.tls_addr().expect("the TLS listener");
    let ca = emu.ca_pem().expect("the authority").to_owned();
    let base = emu.base_url().clone();
    let token: Arc<str> = client_rt.block_on(async {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("a client");
        let token: serde_json::Value = http
            .post(base.join("accesstoken/get").expect("a URL"))
            .header("client_id", "demo-client-id")
            .header("client_secret", "demo-client-secret")
            .header("ocp-apim-subscription-key", "demo-subscription-key")
            .send()
            .await
            .expect("a token")
            .json()
            .await
            .expect("JSON");
        let token = token["access_token"].as_str().expect("a token").to_owned();
        let created = http
            .post(base.join("epayment/v1/payments").expect("a URL"))
            .bearer_auth(&token)
            .header("ocp-apim-subscription-key", "demo-subscription-key")
            .header("merchant-serial-number", "123456")
            .header("idempotency-key", "bench-tls-create")
            .json(&serde_json::json!({
                "amount": {"currency": "NOK", "value": 1000},
                "paymentMethod": {"type": "WALLET"},
                "reference": REFERENCE,
                "userFlow": "WEB_REDIRECT",
                "returnUrl": "https://example.com/back"
            }))
            .send()
            .await
            .expect("a payment");
        assert_eq!(created.status(), 201, "the payment is created");
        Arc::from(token)
    });
    println!(
        "TLS edge benchmark: {connections} keep-alive connections, {concurrency} handshake loops, {}s measured after {}s warm-up",
        seconds.as_secs(),
        warmup.as_secs()
    );
    println!("| scenario | throughput | p50 ms | p99 ms | errors |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut http = client_rt.block_on(keep_alive(
        Target::Plain(plain),
        token.clone(),
        "127.0.0.1",
        connections,
        warmup,
        seconds,
    ));
    row(
        "HTTP GET /epayment/v1/payments/{ref}, keep-alive",
        &mut http,
        "req/s",
    );
    let mut https = client_rt.block_on(keep_alive(
        Target::Tls(tls, tls_connector(&ca)),
        token.clone(),
        SERVER_NAME,
        connections,
        warmup,
        seconds,
    ));
    row(
        "HTTPS GET /epayment/v1/payments/{ref}, keep-alive",
        &mut https,
        "req/s",
    );
    let mut hs = client_rt.block_on(handshakes(
        Target::Tls(tls, tls_connector(&ca)),
        concurrency,
        warmup,
        seconds,
    ));
    row(
        "TLS 1.3 handshake + one GET + close",
        &mut hs,
        "handshakes/s",
    );
    let ratio = https.per_second() / http.per_second();
    println!();
    println!(
        "HTTPS / HTTP keep-alive throughput: {ratio:.2} (target at least 0.5: {})",
        if ratio >= 0.5 { "pass" } else { "FAIL" }
    );
    server_rt.block_on(emu.shutdown());
}
