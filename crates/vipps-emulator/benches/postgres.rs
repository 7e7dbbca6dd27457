//! Create-payment throughput and latency on PostgreSQL with one and with two emulator instances, next to the
//! embedded SQLite store, in the same run.
//!
//! `VIPPS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench -p vipps-emulator --bench postgres`
//! Knobs (environment): `BENCH_SECONDS` (10), `BENCH_CONNECTIONS` (64), `BENCH_DIR` (parent of the SQLite store).
//!
//! Method: each scenario starts fresh emulators (a fresh PostgreSQL database each), then `BENCH_CONNECTIONS`
//! clients create payments with a fresh idempotency key and reference each, closed loop, for `BENCH_SECONDS` after a
//! 2 s warm-up; with two instances the clients alternate between them. Every request carries the full header set.
//! Latency is measured per request by the client (reqwest). SQLite uses `Durability::Fsync`; PostgreSQL runs with
//! its own settings (`synchronous_commit = on` by default). Server, database and load generator share the cores.
#![allow(clippy::print_stdout)]

/// The same allocator as the `vipps` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use vipps_emulator::{Config, Durability, Emulator, Storage};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Target {
    base: String,
    token: String,
}

async fn token(http: &reqwest::Client, base: &str) -> String {
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
    v["access_token"].as_str().unwrap().to_owned()
}

struct Outcome {
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
}

async fn run(
    http: reqwest::Client,
    targets: Arc<Vec<Target>>,
    name: &'static str,
    conns: usize,
    secs: u64,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let lat: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (http, targets, stop, measuring, count, errors, lat) = (
            http.clone(),
            targets.clone(),
            stop.clone(),
            measuring.clone(),
            count.clone(),
            errors.clone(),
            lat.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let t = &targets[c % targets.len()];
            let mut mine = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let reference = format!("{name}-{c:03}-{n:09}");
                n += 1;
                let body = serde_json::json!({"amount": {"currency": "NOK", "value": 1000},
                    "paymentMethod": {"type": "WALLET"}, "reference": reference, "userFlow": "WEB_REDIRECT",
                    "returnUrl": "https://example.com/r"});
                let started = Instant::now();
                let r = http
                    .post(format!("{}/epayment/v1/payments", t.base))
                    .bearer_auth(&t.token)
                    .header("Ocp-Apim-Subscription-Key", "demo-subscription-key")
                    .header("Merchant-Serial-Number", "123456")
                    .header("Vipps-System-Name", "bench")
                    .header("Vipps-System-Version", "1")
                    .header("Vipps-System-Plugin-Name", "bench")
                    .header("Vipps-System-Plugin-Version", "1")
                    .header("Idempotency-Key", &reference)
                    .json(&body)
                    .send()
                    .await;
                let ok = matches!(&r, Ok(r) if r.status() == 201);
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        count.fetch_add(1, Ordering::Relaxed);
                        mine.push(started.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat.lock().extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let window = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let mut v = std::mem::take(&mut *lat.lock());
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() as f64 - 1.0) * p).round() as usize]
        }
    };
    Outcome {
        rate: count.load(Ordering::Relaxed) as f64 / window,
        p50: pct(0.5),
        p99: pct(0.99),
        p999: pct(0.999),
        errors: errors.load(Ordering::Relaxed),
    }
}

async fn fresh_database(admin: &str) -> String {
    let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL reachable");
    tokio::spawn(conn);
    let name = format!("vipps_bench_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

fn main() {
    let secs = env_num("BENCH_SECONDS", 10);
    let conns = env_num("BENCH_CONNECTIONS", 64) as usize;
    let Ok(admin) = std::env::var("VIPPS_TEST_POSTGRES_URL") else {
        println!(
            "set VIPPS_TEST_POSTGRES_URL (such as postgres://postgres@127.0.0.1:5432/postgres) to run this benchmark"
        );
        return;
    };
    let parent = std::env::var_os("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    println!(
        "create-payment benchmark: {conns} connections, 2 s warm-up, {secs} s measured; {} cores shared by servers, PostgreSQL and load generator",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| store | instances | creates/s | p50 ms | p99 ms | p99.9 ms | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let scenarios: [(&'static str, usize); 3] = [("sqlite", 1), ("postgres", 1), ("postgres", 2)];
    for (store, instances) in scenarios {
        let dir = tempfile::tempdir_in(&parent).unwrap();
        let url = if store == "postgres" {
            Some(client.block_on(fresh_database(&admin)))
        } else {
            None
        };
        let mut emus = Vec::new();
        for _ in 0..instances {
            let storage = match &url {
                Some(u) => Storage::Postgres(u.clone()),
                None => Storage::Dir(dir.path().to_owned()),
            };
            let cfg = Config {
                listen: "127.0.0.1:0".parse().unwrap(),
                storage,
                durability: Durability::Fsync,
                ..Config::default()
            };
            emus.push(
                server
                    .block_on(Emulator::start(cfg))
                    .expect("emulator starts"),
            );
        }
        let targets: Vec<Target> = emus
            .iter()
            .map(|e| {
                let base = e.base_url().to_string().trim_end_matches('/').to_owned();
                let token = client.block_on(token(&http, &base));
                Target { base, token }
            })
            .collect();
        let name: &'static str = match (store, instances) {
            ("sqlite", _) => "sqlite",
            (_, 1) => "pg1",
            _ => "pg2",
        };
        let o = client.block_on(run(http.clone(), Arc::new(targets), name, conns, secs));
        println!(
            "| {store} | {instances} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            o.rate, o.p50, o.p99, o.p999, o.errors
        );
        for e in emus {
            server.block_on(e.shutdown());
        }
        if let Some(u) = url {
            let name = url::Url::parse(&u)
                .unwrap()
                .path()
                .trim_start_matches('/')
                .to_owned();
            client.block_on(async {
                let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let _ = c
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        }
    }
}
