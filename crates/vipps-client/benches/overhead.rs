//! The client's time per call against raw `reqwest` doing the same requests to the same emulator in the same
//! run. Prints a table; see `crates/vipps-client/BENCHMARKS.md`.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/targets/client cargo bench -p vipps-client --bench overhead
//! ```
//!
//! Both sides send the same headers (token, subscription key, MSN, system headers, content type, user agent),
//! decode the same JSON type and reuse one connection pool; calls run one after another, alternating sides
//! call by call so that drift in the machine's load hits both sides alike. `VIPPS_BENCH_ROUNDS` and
//! `VIPPS_BENCH_CALLS` (their product is the number of calls per side and operation) change the sample size.
#![allow(clippy::print_stdout, missing_docs)]

use std::time::{Duration, Instant};

use vipps_client::{Client, Credentials, USER_AGENT_VALUE};
use vipps_emulator::{Config, Emulator};
use vipps_types::epayment::{
    CreatePaymentRequest, GetPaymentResponse, ModificationRequest, ModificationResponse, UserFlow,
};
use vipps_types::headers::IdempotencyKey;
use vipps_types::ids::Reference;
use vipps_types::money::{Amount, Currency};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Raw {
    http: reqwest::Client,
    base: url::Url,
    token: String,
    sub: String,
    msn: String,
}

impl Raw {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.base.join(path).unwrap())
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Ocp-Apim-Subscription-Key", &self.sub)
            .header("Merchant-Serial-Number", &self.msn)
            .header("Vipps-System-Name", "bench")
            .header("Vipps-System-Version", "1.0.0")
            .header("Vipps-System-Plugin-Name", "bench")
            .header("Vipps-System-Plugin-Version", "1.0.0")
            .header("Content-Type", "application/json")
            .header("User-Agent", USER_AGENT_VALUE)
    }

    async fn get(&self, r: &Reference) -> GetPaymentResponse {
        let resp = self
            .request(reqwest::Method::GET, &format!("epayment/v1/payments/{r}"))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
    }

    async fn capture(&self, r: &Reference, key: &str) -> ModificationResponse {
        let body = serde_json::to_vec(&ModificationRequest {
            modification_amount: Amount::new(Currency::Nok, 1).unwrap(),
        })
        .unwrap();
        let resp = self
            .request(
                reqwest::Method::POST,
                &format!("epayment/v1/payments/{r}/capture"),
            )
            .header("Idempotency-Key", key)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
    }
}

#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn stats(&mut self) -> (f64, f64, f64) {
        self.0.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let n = self.0.len();
        // The mean of the fastest 90%: the slowest tail on a shared machine is other processes' noise.
        let kept = &self.0[..n - n / 10];
        let mean = kept.iter().map(|d| us(*d)).sum::<f64>() / kept.len() as f64;
        (us(self.0[n / 2]), mean, us(self.0[(n * 99) / 100]))
    }
}

fn main() {
    let rounds = env_usize("VIPPS_BENCH_ROUNDS", 20);
    let calls = env_usize("VIPPS_BENCH_CALLS", 250);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let emu = Emulator::start(Config::ephemeral()).await.unwrap();
        let m = emu.demo_merchant().expect("the demo merchant").clone();
        let client = Client::builder()
            .base_url(emu.base_url().as_str())
            .credentials(Credentials::new(
                &m.client_id,
                &m.client_secret,
                &m.subscription_key,
            ))
            .merchant_serial_number(m.msn.as_str())
            .system("bench", "1.0.0")
            .build()
            .unwrap();
        let token = client.access_token().await.unwrap().access_token;
        let raw = Raw {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(20))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: emu.base_url().clone(),
            token,
            sub: m.subscription_key.clone(),
            msn: m.msn.as_str().to_owned(),
        };

        let reference: Reference = "bench-payment-0001".parse().unwrap();
        let amount = Amount::new(Currency::Nok, 60_000_000).unwrap();
        let request = CreatePaymentRequest::new(amount, reference.clone(), UserFlow::WebRedirect)
            .with_return_url("https://example.com/return");
        client.epayment().create(&request).await.unwrap();
        client
            .epayment()
            .force_approve(&reference, &Default::default())
            .await
            .unwrap();

        // Warm-up: connections, allocator, the emulator's caches.
        for i in 0..200 {
            client.epayment().get(&reference).await.unwrap();
            raw.get(&reference).await;
            let k = format!("warm-{i}");
            client
                .epayment()
                .capture(
                    &reference,
                    Amount::new(Currency::Nok, 1).unwrap(),
                )
                .idempotency_key(IdempotencyKey::new(&format!("c-{k}")).unwrap())
                .await
                .unwrap();
            raw.capture(&reference, &format!("r-{k}")).await;
        }

        let (mut cg, mut rg) = (Samples::default(), Samples::default());
        let (mut cc, mut rc) = (Samples::default(), Samples::default());
        let total = rounds * calls;
        for i in 0..total {
            // Calls alternate one by one (client first on even calls), so load drift hits both sides alike.
            for side in 0..2 {
                let use_client = (side == 0) == (i % 2 == 0);
                let t = Instant::now();
                if use_client {
                    client.epayment().get(&reference).await.unwrap();
                    cg.0.push(t.elapsed());
                } else {
                    raw.get(&reference).await;
                    rg.0.push(t.elapsed());
                }
            }
            for side in 0..2 {
                let use_client = (side == 0) == (i % 2 == 0);
                let key = format!("k-{i}-{side}");
                let t = Instant::now();
                if use_client {
                    client
                        .epayment()
                        .capture(
                            &reference,
                            Amount::new(Currency::Nok, 1).unwrap(),
                        )
                        .idempotency_key(IdempotencyKey::new(&key).unwrap())
                        .await
                        .unwrap();
                    cc.0.push(t.elapsed());
                } else {
                    raw.capture(&reference, &key).await;
                    rc.0.push(t.elapsed());
                }
            }
        }

        println!(
            "{total} calls per side and operation, sequential and interleaved, one connection pool each"
        );
        println!(
            "| operation | side | median µs | trimmed mean µs | p99 µs | overhead (median) | overhead (trimmed mean) |"
        );
        println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
        for (name, c, r) in [
            ("GET payment", &mut cg, &mut rg),
            ("POST capture", &mut cc, &mut rc),
        ] {
            let (rm, rmean, rp) = r.stats();
            let (cm, cmean, cp) = c.stats();
            println!("| {name} | raw reqwest | {rm:.1} | {rmean:.1} | {rp:.1} | | |");
            println!(
                "| {name} | vipps-client | {cm:.1} | {cmean:.1} | {cp:.1} | {:+.1}% | {:+.1}% |",
                (cm / rm - 1.0) * 100.0,
                (cmean / rmean - 1.0) * 100.0
            );
        }
        emu.shutdown().await;
    });
}
