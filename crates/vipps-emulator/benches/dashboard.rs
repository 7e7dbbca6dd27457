//! Render latency of the dashboard and the payer pages with many payments in the store.
//!
//! `cargo bench -p vipps-emulator --bench dashboard` fills an ephemeral (SQLite) emulator with `BENCH_PAYMENTS`
//! payments (100,000 by default) through the API, authorizes every hundredth, then requests each page
//! `BENCH_ROUNDS` times (50) one after the other over one keep-alive connection and prints the median, p95 and
//! maximum of the whole request (loopback HTTP included, so an upper bound of the server time). Pages: the
//! overview, the payment list (first page, filtered by a rare state, by reference prefix, by MSN and a time
//! window, and a page deep in the list), a payment's detail page, the deliveries and request record, and the payer's
//! landing page and app screen.
#![allow(clippy::print_stdout)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vipps_emulator::{Config, Emulator};

const KEY: &str = "demo-subscription-key";
const MSN: &str = "123456";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let payments = env_num("BENCH_PAYMENTS", 100_000);
    let rounds = env_num("BENCH_ROUNDS", 50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(payments, rounds));
}

async fn run(payments: usize, rounds: usize) {
    let emu = Emulator::start(Config::ephemeral())
        .await
        .expect("emulator");
    let base = emu.base_url().to_string().trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let token: Value = http
        .post(format!("{base}/accesstoken/get"))
        .header("client_id", "demo-client-id")
        .header("client_secret", "demo-client-secret")
        .header("Ocp-Apim-Subscription-Key", KEY)
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let token = token["access_token"].as_str().expect("token").to_owned();

    let t0 = Instant::now();
    let created = std::sync::Arc::new(tokio::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    let workers = 32;
    for w in 0..workers {
        let (http, base, token, created) =
            (http.clone(), base.clone(), token.clone(), created.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < payments {
                let reference = format!("bench-{i:07}");
                let mut body = json!({
                    "amount": {"currency": "NOK", "value": 1000 + (i % 500) as i64},
                    "paymentMethod": {"type": "WALLET"},
                    "reference": reference,
                    "userFlow": "WEB_REDIRECT",
                    "returnUrl": "https://example.com/return",
                    "paymentDescription": format!("Order number {i}"),
                });
                if i % 3 == 0 {
                    body["customer"] = json!({"phoneNumber": "4791234567"});
                }
                let r = http
                    .post(format!("{base}/epayment/v1/payments"))
                    .bearer_auth(&token)
                    .header("Ocp-Apim-Subscription-Key", KEY)
                    .header("Merchant-Serial-Number", MSN)
                    .header("Idempotency-Key", format!("bench-key-{i}"))
                    .json(&body)
                    .send()
                    .await
                    .expect("create");
                assert_eq!(r.status(), 201);
                if i == payments / 2 {
                    let v: Value = r.json().await.expect("json");
                    *created.lock().await = v["redirectUrl"].as_str().map(str::to_owned);
                }
                if i % 100 == 0 {
                    let r = http
                        .post(format!(
                            "{base}/epayment/v1/test/payments/{reference}/approve"
                        ))
                        .bearer_auth(&token)
                        .header("Ocp-Apim-Subscription-Key", KEY)
                        .header("Merchant-Serial-Number", MSN)
                        .json(&json!({"customer": {"phoneNumber": "4791234567"}}))
                        .send()
                        .await
                        .expect("approve");
                    assert_eq!(r.status(), 200);
                }
                i += workers;
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    println!(
        "filled {payments} payments (every hundredth authorized) in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let landing = created
        .lock()
        .await
        .clone()
        .expect("the middle payment's redirect URL");
    let app = landing.replace("/_emulator/landing?", "/_emulator/app?");
    let middle = payments / 2;
    let kind = "/_emulator/ui/aggregates/epayment.payment";
    // A cursor in the middle of the list: the payment created in the middle, found through the reference filter.
    let deep = {
        let page: String = get(&http, &format!("{base}{kind}?reference=bench-{middle:07}"))
            .await
            .1;
        let after_ms = page
            .split("UTC</td>")
            .next()
            .and_then(|s| s.rsplit("<td>").next())
            .map(|s| s.trim().to_owned())
            .expect("a created time");
        let t = time::PrimitiveDateTime::parse(
            &after_ms,
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        )
        .expect("time")
        .assume_utc();
        let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64 + 999;
        format!("{kind}?after_ms={ms}&after_tenant={MSN}&after_id=bench-{middle:07}")
    };
    let now = time::OffsetDateTime::now_utc();
    let from = (now - Duration::from_secs(3600))
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]"
        ))
        .expect("format");
    let pages: Vec<(&str, String)> = vec![
        ("overview", "/_emulator/ui".into()),
        ("payments, first page", kind.into()),
        (
            "payments, state AUTHORIZED",
            format!("{kind}?state=AUTHORIZED"),
        ),
        (
            "payments, state ABORTED (none)",
            format!("{kind}?state=ABORTED"),
        ),
        (
            "payments, reference prefix",
            format!("{kind}?reference=bench-00500"),
        ),
        (
            "payments, MSN and time window",
            format!("{kind}?msn={MSN}&from={from}"),
        ),
        ("payments, page in the middle", deep),
        ("payment detail", format!("{kind}/{MSN}/bench-{middle:07}")),
        ("deliveries", "/_emulator/ui/deliveries".into()),
        ("request record", "/_emulator/ui/requests".into()),
        (
            "payer landing page",
            landing.trim_start_matches(&base).to_owned(),
        ),
        ("payer app screen", app.trim_start_matches(&base).to_owned()),
    ];
    println!("{rounds} sequential requests per page, {payments} payments in the store:");
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>9}",
        "page", "median ms", "p95 ms", "max ms", "bytes"
    );
    for (name, path) in pages {
        let url = format!("{base}{path}");
        let (status, body) = get(&http, &url).await;
        assert_eq!(status, 200, "{name}: {url}");
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            let (status, _) = get(&http, &url).await;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        println!(
            "{name:<34} {:>10.2} {:>10.2} {:>10.2} {:>9}",
            pct(0.5),
            pct(0.95),
            times[times.len() - 1],
            body.len()
        );
    }
    emu.shutdown().await;
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let r = http
        .get(url)
        .header("Accept", "text/html")
        .send()
        .await
        .expect("get");
    (r.status().as_u16(), r.text().await.expect("body"))
}
