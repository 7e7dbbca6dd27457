//! What the Prometheus metrics cost, with the load generator the other benchmarks use (`common/loadgen.rs`).
//!
//! `cargo bench -p vipps-emulator --bench metrics` runs two scenarios:
//!
//! 1. `overhead`: two emulators side by side, one with metrics (the default) and one without (`metrics = false`,
//!    as `--no-metrics`), each with the same pre-created payments; `GET /epayment/v1/payments/{reference}` is run
//!    against them in alternating rounds (on, off, on, off, ...), and the cost is the ratio of the median
//!    throughputs of the same run. Target: at most 3 %.
//! 2. `scrape`: an emulator with `BENCH_SCRAPE_PAYMENTS` payments (100,000), then `GET /metrics` one at a time;
//!    the aggregate gauges are kept as writes happen, so a scrape never counts the table. Target: p99 under 5 ms.
//!    The scrape is checked to count every payment.
//!
//! Knobs (environment): those of `common/loadgen.rs` (`BENCH_SECONDS` per round, `BENCH_WARMUP`,
//! `BENCH_CONNECTIONS`, `BENCH_PRECREATE`, `BENCH_SERVER_THREADS`, `BENCH_CLIENT_THREADS`, `BENCH_DIR`,
//! `BENCH_ONLY`: `overhead,scrape`), plus `BENCH_ROUNDS` (rounds per emulator, 3), `BENCH_SCRAPE_PAYMENTS`
//! (100000) and `BENCH_SCRAPES` (1000).
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

include!("common/loadgen.rs");

/// A started emulator with its API client and store directory.
struct Running {
    emu: Emulator,
    api: Arc<Api>,
    _dir: tempfile::TempDir,
}

fn start(k: &Knobs, server_rt: &Runtime, client_rt: &Runtime, metrics: bool) -> Running {
    let dir = tempfile::Builder::new()
        .prefix("vipps-emulator-bench-")
        .tempdir_in(&k.dir)
        .expect("tempdir");
    let cfg = Config {
        metrics,
        ..emulator_config(dir.path(), Durability::Process)
    };
    let emu = block(server_rt, Emulator::start(cfg)).expect("start emulator");
    let api = Arc::new(block(client_rt, Api::new(emu.local_addr())));
    Running {
        emu,
        api,
        _dir: dir,
    }
}

fn precreate(k: &Knobs, client_rt: &Runtime, r: &Running, n: u64, run: &'static str) {
    let res = block(
        client_rt,
        load(
            r.emu.local_addr(),
            k.connections,
            Stop::Count(n),
            StatusCode::CREATED,
            create_maker(r.api.clone(), run),
        ),
    );
    report_errors(&Row {
        name: format!("(pre-create {n})"),
        r: res,
    });
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let k = Knobs::from_env();
    let rounds = env_num("BENCH_ROUNDS", 3).max(1);
    let scrape_payments = env_num("BENCH_SCRAPE_PAYMENTS", 100_000).max(1);
    let scrapes = env_num("BENCH_SCRAPES", 1000).max(1);
    let server_rt = runtime(k.server_threads, "server");
    let client_rt = runtime(k.client_threads, "loadgen");
    std::fs::create_dir_all(&k.dir).expect("BENCH_DIR");
    println!("vipps-emulator metrics benchmark");
    println!("stores under {} — {}", k.dir.display(), mount_of(&k.dir));
    println!(
        "{} CPUs ({}); {} keep-alive connections; {} s per round after {} s warm-up; {} rounds per emulator",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model(),
        k.connections,
        k.seconds,
        k.warmup,
        rounds
    );
    let mut rows = Vec::new();
    let mut verdicts = Vec::new();

    if k.wants("overhead") {
        let on = start(&k, &server_rt, &client_rt, true);
        let off = start(&k, &server_rt, &client_rt, false);
        println!("pre-creating {} payments in each ...", k.precreate);
        precreate(&k, &client_rt, &on, k.precreate, "pre");
        precreate(&k, &client_rt, &off, k.precreate, "pre");
        let get = |r: &Running| -> MakeReq {
            let (a, n) = (r.api.clone(), k.precreate);
            Arc::new(move |i| {
                let r = reference("pre", (i.wrapping_mul(7919)) % n);
                a.request(
                    Method::GET,
                    &format!("/epayment/v1/payments/{r}"),
                    None,
                    None,
                )
            })
        };
        let timed = Stop::Timed(
            Duration::from_secs(k.warmup),
            Duration::from_secs(k.seconds),
        );
        let (mut rps_on, mut rps_off) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            for (label, r, acc) in [("on", &on, &mut rps_on), ("off", &off, &mut rps_off)] {
                println!("round {round}: GET with metrics {label} ...");
                let res = block(
                    &client_rt,
                    load(
                        r.emu.local_addr(),
                        k.connections,
                        timed,
                        StatusCode::OK,
                        get(r),
                    ),
                );
                acc.push(res.rps());
                rows.push(Row {
                    name: format!("GET, metrics {label}, round {round}"),
                    r: res,
                });
            }
        }
        let (m_on, m_off) = (median(rps_on), median(rps_off));
        let cost = (1.0 - m_on / m_off) * 100.0;
        verdicts.push(format!(
            "metrics cost on GET: {cost:.2} % (median {m_on:.0} req/s on, {m_off:.0} req/s off; target at most 3 %) — {}",
            if cost <= 3.0 { "met" } else { "NOT met" }
        ));
        block(&server_rt, on.emu.shutdown());
        block(&server_rt, off.emu.shutdown());
    }

    if k.wants("scrape") {
        let r = start(&k, &server_rt, &client_rt, true);
        println!("creating {scrape_payments} payments ...");
        precreate(&k, &client_rt, &r, scrape_payments, "scrape");
        let a = r.api.clone();
        let make: MakeReq = Arc::new(move |_| a.request(Method::GET, "/metrics", None, None));
        println!("scraping /metrics {scrapes} times, one at a time ...");
        let res = block(
            &client_rt,
            load(
                r.emu.local_addr(),
                1,
                Stop::Count(scrapes),
                StatusCode::OK,
                make,
            ),
        );
        let p99 = res.hist.quantile_ms(0.99);
        verdicts.push(format!(
            "GET /metrics with {scrape_payments} payments: p50 {:.3} ms, p99 {p99:.3} ms (target under 5 ms) — {}",
            res.hist.quantile_ms(0.50),
            if p99 < 5.0 { "met" } else { "NOT met" }
        ));
        rows.push(Row {
            name: format!("GET /metrics, {scrape_payments} payments"),
            r: res,
        });
        // The gauges count every payment without reading the table.
        let text = block(&client_rt, async {
            let mut send = connect(r.emu.local_addr()).await.expect("connect");
            let resp = send
                .send_request(r.api.request(Method::GET, "/metrics", None, None))
                .await
                .expect("scrape");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            String::from_utf8_lossy(&body).into_owned()
        });
        let counted = text
            .lines()
            .find(|l| {
                l.starts_with("vipps_emulator_aggregates{")
                    && l.contains("kind=\"payments\"")
                    && l.contains("state=\"CREATED\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
        assert_eq!(counted, Some(scrape_payments), "the CREATED gauge");
        block(&server_rt, r.emu.shutdown());
    }

    println!();
    print_header();
    for row in &rows {
        print_row(row);
    }
    println!();
    for v in verdicts {
        println!("{v}");
    }
}
