//! Benchmark of the Recurring API over real HTTP/1.1, against the bare axum baseline and ePayment in the same run
//! (the same load generator, knobs and tables as `benches/emulator.rs`, whose infrastructure this copies).
//!
//! `cargo bench -p vipps-emulator --bench recurring` runs:
//!
//! 1. `baseline`: a minimal axum JSON handler;
//! 2. `epayment get` and `epayment create`: the reference ratios (as in `benches/emulator.rs`);
//! 3. `agreement get`: `GET /recurring/v3/agreements/{id}` over pre-created, accepted agreements;
//! 4. `charge create`: `POST /recurring/v3/agreements/{id}/charges`, a fresh key per request, spread over the
//!    pre-created agreements (each charge is its own document, listed by its agreement as parent: one write);
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

include!("common/loadgen.rs");

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
