//! Load benchmark of the emulator over real HTTP/1.1, with a built-in hyper load generator.
//!
//! One command runs every scenario: `cargo bench -p vipps-emulator --bench emulator`.
//!
//! Scenarios, all driven by the same generator (N keep-alive connections, one task per connection, closed loop):
//!
//! 1. `baseline`: a minimal axum server with one JSON handler (same accept loop as the emulator);
//! 2. `get`: the emulator's `GET /epayment/v1/payments/{reference}` over pre-created payments;
//! 3. `create fsync` / `create process`: `POST /epayment/v1/payments` with a fresh `Idempotency-Key` and reference
//!    per request, on an on-disk store with `Durability::Fsync` and `Durability::Process`;
//! 4. `create xM`: a fresh durable (`Fsync`) emulator, `BENCH_CREATES` creates, resident memory before and after.
//!
//! Every request carries the full header set: bearer token, subscription key, MSN and the four `Vipps-System-*`
//! headers (the baseline ignores them but receives them too). Any status other than the expected one is an error.
//!
//! Knobs (environment): `BENCH_SECONDS` (measured seconds per timed scenario, 10), `BENCH_WARMUP` (2),
//! `BENCH_CONNECTIONS` (64), `BENCH_CREATES` (1000000; 0 skips the memory run), `BENCH_PRECREATE` (10000),
//! `BENCH_SERVER_THREADS` (2), `BENCH_CLIENT_THREADS` (2), `BENCH_DIR` (parent of the on-disk stores; the
//! system temporary directory by default), `BENCH_ONLY` (comma-separated subset of
//! `baseline,get,fsync,process,memory`).
#![allow(clippy::print_stdout)]

/// The same allocator as the `vipps` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use vipps_emulator::{Config, Durability, Emulator, Storage};

include!("common/loadgen.rs");

type Bf<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

fn main() {
    // `cargo bench` passes `--bench`; other arguments are ignored.
    let k = Knobs::from_env();
    let rss_start = rss_kib();
    let server_rt = runtime(k.server_threads, "server");
    let client_rt = runtime(k.client_threads, "loadgen");
    let timed = Stop::Timed(
        Duration::from_secs(k.warmup),
        Duration::from_secs(k.seconds),
    );
    std::fs::create_dir_all(&k.dir).expect("BENCH_DIR");

    println!("vipps-emulator load benchmark");
    println!(
        "machine: {} CPUs ({}), {} GiB RAM; kernel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model(),
        std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib / 1024 / 1024)
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "load: {} keep-alive HTTP/1.1 connections, closed loop; warm-up {} s, measured {} s per timed scenario",
        k.connections, k.warmup, k.seconds
    );
    println!(
        "threads: server runtime {} workers (+ SQLite writer thread), load generator runtime {} workers — \
         server and load generator share the same CPUs",
        k.server_threads, k.client_threads
    );
    println!("stores under {} — {}", k.dir.display(), mount_of(&k.dir));
    println!("RSS at process start: {}", mib(rss_start));
    println!();

    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    // 1. Baseline.
    if k.wants("baseline") {
        let (addr, task) = block(&server_rt, start_baseline());
        let api = Arc::new(block(&client_rt, async {
            // The baseline ignores the headers; it receives the same set as the emulator does.
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
        notes.push(format!("RSS after baseline: {}", mib(rss_kib())));
    }

    // 2 + 3a. GET and durable create on one emulator.
    if k.wants("get") || k.wants("fsync") {
        let tmp = tempfile::Builder::new()
            .prefix("vipps-emulator-bench-")
            .tempdir_in(&k.dir)
            .expect("tempdir");
        let emu = block(
            &server_rt,
            Emulator::start(emulator_config(tmp.path(), Durability::Fsync)),
        )
        .expect("start emulator");
        let addr = emu.local_addr();
        let api = Arc::new(block(&client_rt, Api::new(addr)));
        if k.wants("get") {
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
            let row = Row {
                name: format!("(pre-create {}, fsync)", k.precreate),
                r: pre,
            };
            report_errors(&row);
            rows.push(row);
            let a = api.clone();
            let n = k.precreate;
            // Stride through the pre-created payments so consecutive requests hit different rows.
            let make: MakeReq = Arc::new(move |i| {
                let r = reference("pre", (i.wrapping_mul(7919)) % n);
                a.request(
                    Method::GET,
                    &format!("/epayment/v1/payments/{r}"),
                    None,
                    None,
                )
            });
            println!("running emulator GET ...");
            let r = block(
                &client_rt,
                load(addr, k.connections, timed, StatusCode::OK, make),
            );
            rows.push(Row {
                name: "emulator GET /payments/{ref}".into(),
                r,
            });
        }
        if k.wants("fsync") {
            println!("running emulator create (fsync) ...");
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
                name: "emulator create, Durability::Fsync".into(),
                r,
            });
        }
        block(&server_rt, emu.shutdown());
        notes.push(format!(
            "store after GET/fsync runs: {}",
            mib(dir_size(tmp.path()) / 1024)
        ));
    }

    // 3b. Create with Durability::Process.
    if k.wants("process") {
        let tmp = tempfile::Builder::new()
            .prefix("vipps-emulator-bench-")
            .tempdir_in(&k.dir)
            .expect("tempdir");
        let emu = block(
            &server_rt,
            Emulator::start(emulator_config(tmp.path(), Durability::Process)),
        )
        .expect("start emulator");
        let addr = emu.local_addr();
        let api = Arc::new(block(&client_rt, Api::new(addr)));
        println!("running emulator create (process) ...");
        let r = block(
            &client_rt,
            load(
                addr,
                k.connections,
                timed,
                StatusCode::CREATED,
                create_maker(api, "proc"),
            ),
        );
        rows.push(Row {
            name: "emulator create, Durability::Process".into(),
            r,
        });
        block(&server_rt, emu.shutdown());
    }

    // 4. Resident memory after many durable creates.
    let mut memory: Option<(u64, u64, u64, u64)> = None;
    if k.wants("memory") && k.creates > 0 {
        let tmp = tempfile::Builder::new()
            .prefix("vipps-emulator-bench-")
            .tempdir_in(&k.dir)
            .expect("tempdir");
        let before_start = rss_kib();
        let emu = block(
            &server_rt,
            Emulator::start(emulator_config(tmp.path(), Durability::Fsync)),
        )
        .expect("start emulator");
        let addr = emu.local_addr();
        let api = Arc::new(block(&client_rt, Api::new(addr)));
        let before = rss_kib();
        println!(
            "running {} durable creates for the memory figure (takes a while) ...",
            k.creates
        );
        let done = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(before));
        let sampler = {
            let (done, peak) = (done.clone(), peak.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        let r = block(
            &client_rt,
            load(
                addr,
                k.connections,
                Stop::Count(k.creates),
                StatusCode::CREATED,
                create_maker(api.clone(), "mem"),
            ),
        );
        done.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        let after = rss_kib();
        // Prove the last payments are readable.
        let check: Bf<'_, StatusCode> = Box::pin(async {
            let mut s = connect(addr).await.expect("connect");
            let req = api.request(
                Method::GET,
                &format!("/epayment/v1/payments/{}", reference("mem", k.creates - 1)),
                None,
                None,
            );
            s.send_request(req).await.expect("get").status()
        });
        let st = block(&client_rt, check);
        notes.push(format!(
            "GET of the last of the {} payments: {st}",
            k.creates
        ));
        let db = dir_size(tmp.path());
        rows.push(Row {
            name: format!("emulator create x{} (fsync)", k.creates),
            r,
        });
        block(&server_rt, emu.shutdown());
        notes.push(format!(
            "RSS before emulator start (memory run): {}",
            mib(before_start)
        ));
        memory = Some((before, after, peak.load(Ordering::Relaxed).max(after), db));
    }

    println!();
    print_header();
    for r in &rows {
        print_row(r);
    }
    println!();
    for r in &rows {
        report_errors(r);
    }
    let find = |p: &str| rows.iter().find(|r| r.name.starts_with(p)).map(|r| &r.r);
    let base = find("baseline");
    let get = find("emulator GET");
    let fsync = find("emulator create, Durability::Fsync");
    let process = find("emulator create, Durability::Process");
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!("targets ({} connections):", k.connections);
    if let (Some(b), Some(g)) = (base, get) {
        let ratio = g.rps() / b.rps();
        println!(
            "  GET / baseline throughput = {:.0} / {:.0} = {:.1} %  (target >= 40 %): {}",
            g.rps(),
            b.rps(),
            ratio * 100.0,
            verdict(ratio >= 0.40 && g.errors == 0)
        );
    }
    if let Some(f) = fsync {
        println!(
            "  durable creates/s = {:.0}  (target >= 10000): {}",
            f.rps(),
            verdict(f.rps() >= 10_000.0 && f.errors == 0)
        );
    }
    if let (Some(f), Some(p)) = (fsync, process) {
        println!(
            "  create Process / Fsync throughput = {:.2}x",
            p.rps() / f.rps()
        );
    }
    for (name, r) in [
        ("baseline", base),
        ("GET", get),
        ("create fsync", fsync),
        ("create process", process),
    ] {
        if let Some(r) = r {
            let p99 = r.hist.quantile_ms(0.99);
            println!(
                "  p99 {name} = {p99:.3} ms  (target < 10 ms): {}",
                verdict(p99 < 10.0)
            );
        }
    }
    if let Some((before, after, peak, db)) = memory {
        println!(
            "  RSS after {} creates: {} (before: {}, growth {}, peak {}); database on disk {}",
            k.creates,
            mib(after),
            mib(before),
            mib(after.saturating_sub(before)),
            mib(peak),
            mib(db / 1024)
        );
    }
    for n in &notes {
        println!("  {n}");
    }
    println!(
        "  (RSS is the whole benchmark process: emulator, baseline runtime and load generator; process start RSS {})",
        mib(rss_start)
    );
    drop(client_rt);
    drop(server_rt);
}
