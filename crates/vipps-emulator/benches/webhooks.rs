//! Webhook delivery benchmark: deliveries per second to a local receiver that answers 200 at once, and the time
//! from a state change to its delivery.
//!
//! `cargo bench -p vipps-emulator --bench webhooks`. Knobs (environment): `BENCH_CONNECTIONS` (64),
//! `BENCH_LATENCY_EVENTS` (2000), `BENCH_BURST` (20000), `BENCH_DIR` (parent of the on-disk store; the system
//! temporary directory).
//!
//! Method: the emulator runs on its own 2-thread runtime with an on-disk store (`Durability::Fsync`, the default:
//! every commit, including each attempt's record, is fsynced). A hyper receiver on 127.0.0.1 answers 200 and
//! records, per delivery, the time since the event's `timestamp` (emulator time, which equals the system clock
//! here, truncated to the millisecond, so latencies are over-estimated by up to 1 ms). Latency is measured with
//! creates one at a time (no queueing); throughput with a burst: `BENCH_BURST` payments expire at once when the
//! clock moves, and the rate is their count over the time until the last EXPIRED event arrives. Server, receiver and load generator share
//! the machine's cores.
#![allow(clippy::print_stdout)]

/// The same allocator as the `vipps` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use vipps_emulator::{Config, Durability, Emulator, Storage};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

#[derive(Default)]
struct Sink {
    count: AtomicU64,
    latencies: Mutex<Vec<f64>>,
    record: AtomicBool,
}

async fn start_receiver(sink: Arc<Sink>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let sink = sink.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let arrived = now_ms_f64();
                            sink.count.fetch_add(1, Ordering::Relaxed);
                            if sink.record.load(Ordering::Relaxed) {
                                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                                    if let Some(ts) = v["timestamp"].as_str() {
                                        if let Ok(t) = time::OffsetDateTime::parse(
                                            ts,
                                            &time::format_description::well_known::Rfc3339,
                                        ) {
                                            let ev = t.unix_timestamp_nanos() as f64 / 1e6;
                                            sink.latencies.lock().push(arrived - ev);
                                        }
                                    }
                                }
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::new(),
                            )))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .header("Ocp-Apim-Subscription-Key", "demo-subscription-key")
            .header("Merchant-Serial-Number", "123456")
            .header("Vipps-System-Name", "bench")
            .header("Vipps-System-Version", "1")
    }

    async fn create(&self, reference: &str) -> u16 {
        let body = serde_json::json!({"amount": {"currency": "NOK", "value": 1000}, "paymentMethod": {"type": "WALLET"},
            "reference": reference, "userFlow": "WEB_REDIRECT", "returnUrl": "https://example.com/r"});
        match self
            .post("/epayment/v1/payments")
            .header("Idempotency-Key", reference)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }
}

fn main() {
    let connections = env_num("BENCH_CONNECTIONS", 64) as usize;
    let latency_events = env_num("BENCH_LATENCY_EVENTS", 2000);
    let parent = std::env::var_os("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(parent).unwrap();

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sink = Arc::new(Sink::default());
    let (emu, receiver) = server_rt.block_on(async {
        let cfg = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            storage: Storage::Dir(dir.path().to_owned()),
            durability: Durability::Fsync,
            ..Config::default()
        };
        let emu = Emulator::start(cfg).await.unwrap();
        let receiver = start_receiver(sink.clone()).await;
        (emu, receiver)
    });
    let base = emu.base_url().to_string().trim_end_matches('/').to_owned();
    let api = client_rt.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let v: serde_json::Value = http
            .post(format!("{base}/accesstoken/get"))
            .header("client_id", "demo-client-id")
            .header("client_secret", "demo-client-secret")
            .header("Ocp-Apim-Subscription-Key", "demo-subscription-key")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let api = Api {
            http,
            base: base.clone(),
            token: v["access_token"].as_str().unwrap().to_owned(),
        };
        let r = api
            .post("/webhooks/v1/webhooks")
            .json(
                &serde_json::json!({"url": format!("http://{receiver}/hook"),
                "events": ["epayments.payment.created.v1", "epayments.payment.expired.v1"]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        Arc::new(api)
    });

    println!(
        "webhook delivery benchmark: {} cores, on-disk store with fsync at {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        dir.path().display()
    );

    // Latency: one state change at a time.
    sink.record.store(true, Ordering::Relaxed);
    client_rt.block_on(async {
        for i in 0..latency_events {
            let target = sink.count.load(Ordering::Relaxed) + 1;
            assert_eq!(api.create(&format!("lat-{i:08}")).await, 201);
            let t0 = Instant::now();
            while sink.count.load(Ordering::Relaxed) < target
                && t0.elapsed() < Duration::from_secs(5)
            {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    });
    sink.record.store(false, Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *sink.latencies.lock());
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "latency state change -> delivery ({} events, one at a time): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );

    // Throughput: a burst of events. `BENCH_BURST` payments are created (their CREATED events are delivered as they
    // come), then the emulator clock moves past their expiry, so every one of them expires at once and the
    // dispatcher has `BENCH_BURST` EXPIRED events to deliver; the rate is events / time until the last arrives.
    let burst = env_num("BENCH_BURST", 20_000);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let create_started = Instant::now();
    client_rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (api, next, errors) = (api.clone(), next.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= burst {
                        break;
                    }
                    if api.create(&format!("burst-{n:09}")).await != 201 {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let create_secs = create_started.elapsed().as_secs_f64();
    let expected_created = latency_events + burst - errors.load(Ordering::Relaxed);
    let t0 = Instant::now();
    while sink.count.load(Ordering::Relaxed) < expected_created
        && t0.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "created {burst} payments in {create_secs:.2} s ({:.0}/s, {} errors); their CREATED events were delivered alongside ({:.0} deliveries/s)",
        burst as f64 / create_secs,
        errors.load(Ordering::Relaxed),
        (expected_created - latency_events) as f64 / (create_secs + t0.elapsed().as_secs_f64()),
    );
    let before = sink.count.load(Ordering::Relaxed);
    let started = Instant::now();
    client_rt.block_on(async {
        let r = api
            .http
            .post(format!("{}/_emulator/clock/advance", api.base))
            .json(&serde_json::json!({"seconds": 601}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    let expected = before + latency_events + burst;
    while sink.count.load(Ordering::Relaxed) < expected
        && started.elapsed() < Duration::from_secs(300)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let got = sink.count.load(Ordering::Relaxed) - before;
    println!(
        "burst: {got} EXPIRED events delivered in {elapsed:.2} s after the clock moved: {:.0} deliveries/s (each attempt recorded with fsync)",
        got as f64 / elapsed
    );
    server_rt.block_on(emu.shutdown());
}
