//! End-to-end tests: the client against the real emulator over 127.0.0.1, using its fault injection and its
//! request record. Each test starts its own in-memory emulator so that faults never leak between tests.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vipps_client::clock::{ManualClock, SeededEntropy};
use vipps_client::{
    Client, ClientBuilder, Credentials, ErrorKind, PollOptions, RetryPolicy, Timeouts,
};
use vipps_emulator::{Config, Emulator};
use vipps_types::epayment::{
    CreatePaymentRequest, ForceApprove, PaymentEventName, State, UserFlow,
};
use vipps_types::headers::IdempotencyKey;
use vipps_types::ids::Reference;
use vipps_types::money::{Amount, Currency};
use vipps_types::problem::ErrorCode;
use vipps_types::webhooks::RegisterRequest;

struct Env {
    emu: Emulator,
    http: reqwest::Client,
}

impl Env {
    async fn start() -> Env {
        let emu = Emulator::start(Config::ephemeral())
            .await
            .expect("emulator starts");
        Env {
            emu,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        self.emu
            .base_url()
            .join(path.trim_start_matches('/'))
            .unwrap()
            .to_string()
    }

    /// A client for the demo merchant with fast backoff.
    fn builder(&self) -> ClientBuilder {
        let m = self.emu.demo_merchant().expect("the demo merchant");
        Client::builder()
            .base_url(self.emu.base_url().as_str())
            .credentials(Credentials::new(
                &m.client_id,
                &m.client_secret,
                &m.subscription_key,
            ))
            .merchant_serial_number(m.msn.as_str())
            .system("e2e-shop", "1.0.0")
            .retry_policy(
                RetryPolicy::default()
                    .with_max_attempts(4)
                    .with_initial_backoff(Duration::from_millis(10))
                    .with_max_backoff(Duration::from_millis(50)),
            )
            .timeouts(Timeouts::default().with_total(Duration::from_secs(20)))
    }

    fn client(&self) -> Client {
        self.builder().build().unwrap()
    }

    async fn fault(&self, spec: Value) {
        let r = self
            .http
            .post(self.url("/_emulator/faults"))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "fault {spec}: {}",
            r.text().await.unwrap()
        );
    }

    async fn requests(&self, query: &[(&str, &str)]) -> Vec<Value> {
        let r = self
            .http
            .get(self.url("/_emulator/requests"))
            .query(query)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        r.json().await.unwrap()
    }

    async fn user_approves(&self, reference: &Reference) {
        let path = format!("/_emulator/payments/{reference}/approve");
        let r = self.http.post(self.url(&path)).send().await.unwrap();
        assert!(
            r.status().is_success(),
            "approve: {}",
            r.text().await.unwrap()
        );
    }

    async fn advance_clock(&self, seconds: u64) {
        let r = self
            .http
            .post(self.url("/_emulator/clock/advance"))
            .json(&json!({ "seconds": seconds }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

fn reference(tag: &str) -> Reference {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    Reference::new(&format!("e2e-{tag}-{}", &unique[..12])).unwrap()
}

fn nok(value: i64) -> Amount {
    Amount::new(Currency::Nok, value).unwrap()
}

fn create_request(r: &Reference, value: i64) -> CreatePaymentRequest {
    CreatePaymentRequest::new(nok(value), r.clone(), UserFlow::WebRedirect)
        .with_return_url("https://example.com/return")
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::new(s).unwrap()
}

/// Statuses of the requests that carried `key`, oldest first.
async fn statuses(env: &Env, key: &IdempotencyKey) -> Vec<u64> {
    let mut v: Vec<u64> = env
        .requests(&[("idempotency_key", key.as_str())])
        .await
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    v.reverse();
    v
}

#[tokio::test]
async fn response_lost_after_commit_on_create_gives_success_and_one_payment() {
    let env = Env::start().await;
    let client = env.client();
    env.fault(json!({"method": "POST", "path": "/epayment/v1/payments", "times": 1, "action": "drop_after_commit"}))
        .await;
    let r = reference("lost");
    let created = client
        .epayment()
        .create(&create_request(&r, 1000))
        .await
        .unwrap();
    assert_eq!(created.value.reference, r);
    assert_eq!(created.attempts, 2);
    assert!(
        created.replayed,
        "the second attempt is answered from the stored result"
    );
    // Both attempts carried the one generated key.
    let records = env
        .requests(&[("idempotency_key", created.idempotency_key.as_str())])
        .await;
    assert_eq!(records.len(), 2);
    // Exactly one payment: one CREATED event.
    let events = client.epayment().events(&r).await.unwrap();
    let created_events = events
        .iter()
        .filter(|e| e.name == PaymentEventName::Created)
        .count();
    assert_eq!(created_events, 1, "{events:?}");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn two_503s_then_success_with_the_same_key_in_three_attempts() {
    let env = Env::start().await;
    let client = env.client();
    let r = reference("c503");
    client
        .epayment()
        .create(&create_request(&r, 1000))
        .await
        .unwrap();
    env.user_approves(&r).await;
    env.fault(
        json!({"method": "POST", "path": "/epayment/v1/payments/*/capture", "times": 2,
        "action": "status", "status": 503}),
    )
    .await;
    let k = key("order-c503-capture-1");
    let captured = client
        .epayment()
        .capture(&r, nok(600))
        .idempotency_key(k.clone())
        .await
        .unwrap();
    assert_eq!(captured.idempotency_key, k);
    assert_eq!(captured.attempts, 3);
    assert_eq!(captured.value.aggregate.captured_amount.value, 600);
    assert_eq!(statuses(&env, &k).await, vec![503, 503, 200]);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn retry_after_2_seconds_is_honoured() {
    let env = Env::start().await;
    let client = env.client();
    let r = reference("r429");
    client
        .epayment()
        .create(&create_request(&r, 1000))
        .await
        .unwrap();
    env.fault(
        json!({"method": "GET", "path": "/epayment/v1/payments/*", "times": 1,
        "action": "status", "status": 429, "retry_after": 2}),
    )
    .await;
    let started = Instant::now();
    let payment = client.epayment().get(&r).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(payment.state, State::Created);
    assert!(waited >= Duration::from_secs(2), "waited only {waited:?}");
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    let path = format!("/epayment/v1/payments/{r}");
    let statuses: Vec<u64> = env
        .requests(&[("path", &path)])
        .await
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200, 429]);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn a_400_is_never_retried_and_carries_the_problem() {
    let env = Env::start().await;
    let client = env.client();
    let r = reference("b400");
    client
        .epayment()
        .create(&create_request(&r, 1000))
        .await
        .unwrap();
    // Capture before the user approved: a real 4xx from the emulator.
    let k = key("order-b400-capture-1");
    let err = client
        .epayment()
        .capture(&r, nok(500))
        .idempotency_key(k.clone())
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(err.attempts(), 1);
    assert_eq!(err.idempotency_key(), Some(&k));
    assert!(
        err.status().is_some_and(|s| (400..500).contains(&s)),
        "{err}"
    );
    assert!(err.error_code().is_some(), "{err}");
    assert!(err.trace_id().is_some_and(|t| !t.is_empty()), "{err:?}");
    assert_eq!(statuses(&env, &k).await.len(), 1);

    // An injected 400 is not retried either.
    env.fault(
        json!({"method": "GET", "path": "/epayment/v1/payments/*", "times": 1,
        "action": "status", "status": 400}),
    )
    .await;
    let err = client.epayment().get(&r).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.attempts(), 1);
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_calls_on_a_cold_client_fetch_one_token() {
    let env = Env::start().await;
    let r = reference("many");
    env.client()
        .epayment()
        .create(&create_request(&r, 1000))
        .await
        .unwrap();
    let before = env.requests(&[("path", "/accesstoken/get")]).await.len();
    let cold = env.client();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let c = cold.clone();
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            c.epayment().get(&r).await.map(|p| p.state)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), State::Created);
    }
    let after = env.requests(&[("path", "/accesstoken/get")]).await.len();
    assert_eq!(after - before, 1, "one token request for 64 callers");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn a_31_character_system_name_fails_when_built_before_any_request() {
    let env = Env::start().await;
    let before = env.requests(&[]).await.len();
    let err = env
        .builder()
        .system("s".repeat(31), "1.0.0")
        .build()
        .unwrap_err();
    assert!(err.is_usage(), "{err}");
    assert!(matches!(err.kind(), ErrorKind::Config { .. }));
    assert!(err.to_string().contains("Vipps-System-Name"), "{err}");
    assert!(!err.may_have_reached_server());
    assert_eq!(env.requests(&[]).await.len(), before);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn system_headers_reach_the_server_with_plugin_fallback() {
    let env = Env::start().await;
    let r = reference("hdrs");
    env.client()
        .epayment()
        .create(&create_request(&r, 1000))
        .await
        .unwrap();
    let records = env
        .requests(&[("path", "/epayment/v1/payments"), ("method", "POST")])
        .await;
    let rec = &records[0];
    assert_eq!(
        rec["msn"],
        env.emu
            .demo_merchant()
            .expect("the demo merchant")
            .msn
            .as_str()
    );
    assert_eq!(rec["system_name"], "e2e-shop");
    assert_eq!(rec["system_version"], "1.0.0");
    assert_eq!(rec["plugin_name"], "e2e-shop");
    assert_eq!(rec["plugin_version"], "1.0.0");

    let plugin = env.builder().plugin("e2e-plugin", "2.0").build().unwrap();
    plugin.epayment().get(&r).await.unwrap();
    let rec = &env
        .requests(&[("path", &format!("/epayment/v1/payments/{r}"))])
        .await[0];
    assert_eq!(rec["plugin_name"], "e2e-plugin");
    assert_eq!(rec["plugin_version"], "2.0");
    env.emu.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_is_renewed_once_after_a_401() {
    let env = Env::start().await;
    let client = env.client();
    let r = reference("t401");
    client
        .epayment()
        .create(&create_request(&r, 1000))
        .await
        .unwrap();
    // The emulator's clock moves past the token's life; the client's clock does not, so it still trusts it.
    env.advance_clock(7200).await;
    let payment = client.epayment().get(&r).await.unwrap();
    assert_eq!(payment.reference, r);
    let tokens = env.requests(&[("path", "/accesstoken/get")]).await.len();
    assert_eq!(tokens, 2);
    let statuses: Vec<u64> = env
        .requests(&[("path", &format!("/epayment/v1/payments/{r}"))])
        .await
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200, 401]);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn an_attempt_timeout_is_retried_with_the_same_key() {
    let env = Env::start().await;
    let client = env
        .builder()
        .timeouts(
            Timeouts::default()
                .with_attempt(Duration::from_millis(300))
                .with_total(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    env.fault(json!({"method": "POST", "path": "/epayment/v1/payments", "times": 1, "action": "delay", "ms": 800}))
        .await;
    let r = reference("slow");
    let k = key("order-slow-create-1");
    let created = client
        .epayment()
        .create(&create_request(&r, 1000))
        .idempotency_key(k.clone())
        .await
        .unwrap();
    assert_eq!(created.value.reference, r);
    assert_eq!(created.idempotency_key, k);
    // The first attempt times out on the client, but the emulator finishes it (as a real server would): the
    // retries meet the still-running request (423, retried) and then its stored answer (replayed 201).
    assert!(created.attempts >= 2, "attempts: {}", created.attempts);
    let seen = statuses(&env, &k).await;
    assert_eq!(seen.len() as u32, created.attempts, "{seen:?}");
    assert_eq!(seen.last(), Some(&201));
    assert!(
        seen[1..seen.len() - 1].iter().all(|s| *s == 423),
        "{seen:?}"
    );
    let events = client.epayment().events(&r).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.name == PaymentEventName::Created)
            .count(),
        1
    );
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_conflict_423_is_retried_after_its_retry_after() {
    let env = Env::start().await;
    let client = env.client();
    env.fault(json!({"method": "POST", "path": "/epayment/v1/payments", "times": 1, "action": "delay", "ms": 600}))
        .await;
    let r = reference("lock");
    let k = key("order-lock-create-1");
    let request = create_request(&r, 1000);
    let first = {
        let (c, req, k) = (client.clone(), request.clone(), k.clone());
        tokio::spawn(async move { c.epayment().create(&req).idempotency_key(k).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    let second = client
        .epayment()
        .create(&request)
        .idempotency_key(k.clone())
        .await
        .unwrap();
    let waited = started.elapsed();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.attempts, 1);
    assert_eq!(second.attempts, 2);
    assert!(second.replayed);
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After: 1 honoured, waited {waited:?}"
    );
    let seen = statuses(&env, &k).await;
    assert!(seen.contains(&423), "{seen:?}");
    let locked = env
        .requests(&[("idempotency_key", k.as_str()), ("status", "423")])
        .await;
    assert_eq!(locked.len(), 1);
    let events = client.epayment().events(&r).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.name == PaymentEventName::Created)
            .count(),
        1
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn same_key_with_a_different_body_is_a_409_and_not_retried() {
    let env = Env::start().await;
    let client = env.client();
    let r = reference("k409");
    client
        .epayment()
        .create(&create_request(&r, 1000))
        .await
        .unwrap();
    env.user_approves(&r).await;
    let k = key("order-k409-capture-1");
    client
        .epayment()
        .capture(&r, nok(100))
        .idempotency_key(k.clone())
        .await
        .unwrap();
    let again = client
        .epayment()
        .capture(&r, nok(100))
        .idempotency_key(k.clone())
        .await
        .unwrap();
    assert!(again.replayed);
    let err = client
        .epayment()
        .capture(&r, nok(200))
        .idempotency_key(k.clone())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert_eq!(err.attempts(), 1);
    assert_eq!(err.idempotency_key(), Some(&k));
    env.emu.shutdown().await;
}

#[tokio::test]
async fn whole_payment_flow_and_webhooks() {
    let env = Env::start().await;
    let client = env.client();
    let token = client.access_token().await.unwrap();
    assert_eq!(token.token_type, "Bearer");
    assert!(token.expires_in > 0);

    let r = reference("flow");
    let created = client
        .epayment()
        .create(&create_request(&r, 2000))
        .await
        .unwrap();
    assert!(created.value.redirect_url.is_some());
    client
        .epayment()
        .force_approve(&r, &ForceApprove::default())
        .await
        .unwrap();
    let p = client
        .epayment()
        .wait_for_final_state(
            &r,
            &PollOptions {
                initial_delay: Duration::ZERO,
                interval: Duration::from_millis(20),
                max_polls: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(p.state, State::Authorized);
    let c = client.epayment().capture(&r, nok(1500)).await.unwrap();
    assert_eq!(c.value.aggregate.captured_amount.value, 1500);
    let f = client.epayment().refund(&r, nok(500)).await.unwrap();
    assert_eq!(f.value.aggregate.refunded_amount.value, 500);
    let x = client.epayment().cancel(&r).await.unwrap();
    assert_eq!(x.value.aggregate.cancelled_amount.value, 500);
    let names: Vec<PaymentEventName> = client
        .epayment()
        .events(&r)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    for n in [
        PaymentEventName::Created,
        PaymentEventName::Authorized,
        PaymentEventName::Captured,
        PaymentEventName::Refunded,
        PaymentEventName::Cancelled,
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }

    // cancelTransactionOnly refuses an authorized payment (6060).
    let r2 = reference("cto");
    client
        .epayment()
        .create(&create_request(&r2, 1000))
        .await
        .unwrap();
    env.user_approves(&r2).await;
    let err = client
        .epayment()
        .cancel_transaction_only(&r2)
        .await
        .unwrap_err();
    assert_eq!(
        err.error_code(),
        Some(ErrorCode::CannotCancelAuthorized),
        "{err}"
    );

    let reg = client
        .webhooks()
        .register(&RegisterRequest {
            url: "https://example.com/hooks".into(),
            events: vec!["epayments.payment.captured.v1".into()],
        })
        .await
        .unwrap();
    assert!(!reg.value.secret.is_empty());
    let list = client.webhooks().list().await.unwrap();
    assert!(list.webhooks.iter().any(|w| w.id == reg.value.id));
    client.webhooks().delete(&reg.value.id).await.unwrap();
    assert!(
        !client
            .webhooks()
            .list()
            .await
            .unwrap()
            .webhooks
            .iter()
            .any(|w| w.id == reg.value.id)
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn polling_gives_up_within_its_bounds() {
    let env = Env::start().await;
    let client = env.client();
    let r = reference("poll");
    client
        .epayment()
        .create(&create_request(&r, 1000))
        .await
        .unwrap();
    let err = client
        .epayment()
        .wait_for_final_state(
            &r,
            &PollOptions {
                initial_delay: Duration::from_millis(5),
                interval: Duration::from_millis(5),
                max_polls: 3,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::PollExhausted { polls: 3, .. }),
        "{err:?}"
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn nothing_listening_is_a_network_error_that_never_reached_the_server() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::builder()
        .base_url(format!("http://{addr}"))
        .credentials(Credentials::new("id", "secret", "key"))
        .merchant_serial_number("123456")
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(5)),
        )
        .build()
        .unwrap();
    let err = client
        .epayment()
        .capture(&reference("down"), nok(100))
        .await
        .unwrap_err();
    assert!(err.is_network() && err.is_retryable(), "{err}");
    assert!(!err.may_have_reached_server());
    assert!(
        err.idempotency_key().is_some(),
        "the generated key is returned to persist"
    );
}

#[tokio::test]
async fn a_connection_reset_before_an_answer_is_retried() {
    // A raw TCP server that accepts and closes the first connection without answering, then proxies nothing:
    // the second attempt goes to the emulator through the same port by forwarding.
    let env = Env::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap();
    let back = env.emu.local_addr();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            if first {
                first = false;
                drop(inbound);
                continue;
            }
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(back).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let m = env.emu.demo_merchant().expect("the demo merchant");
    let client = Client::builder()
        .base_url(format!("http://{front}"))
        .credentials(Credentials::new(
            &m.client_id,
            &m.client_secret,
            &m.subscription_key,
        ))
        .merchant_serial_number(m.msn.as_str())
        .retry_policy(RetryPolicy::default().with_initial_backoff(Duration::from_millis(5)))
        .build()
        .unwrap();
    let r = reference("reset");
    let created = client
        .epayment()
        .create(&create_request(&r, 1000))
        .await
        .unwrap();
    assert_eq!(created.value.reference, r);
    env.emu.shutdown().await;
}

#[tokio::test]
async fn injected_clock_and_entropy_make_backoff_and_keys_deterministic() {
    let env = Env::start().await;
    let clock = ManualClock::new();
    let policy = RetryPolicy::default()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_secs(5))
        .with_max_backoff(Duration::from_secs(60))
        .with_jitter(false);
    let client = env
        .builder()
        .clock(clock.clone())
        .entropy(SeededEntropy::new(7))
        .retry_policy(policy)
        .build()
        .unwrap();
    let r = reference("clock");
    let request = create_request(&r, 1000);
    let first = client.epayment().create(&request).await.unwrap();
    // Another client with the same seed makes the same key: the same request is answered as a replay.
    let twin = env
        .builder()
        .entropy(SeededEntropy::new(7))
        .build()
        .unwrap();
    let second = twin.epayment().create(&request).await.unwrap();
    assert_eq!(first.idempotency_key, second.idempotency_key);
    assert!(second.replayed);

    env.user_approves(&r).await;
    env.fault(
        json!({"method": "POST", "path": "/epayment/v1/payments/*/capture", "times": 2,
        "action": "status", "status": 503}),
    )
    .await;
    let started = Instant::now();
    let captured = client.epayment().capture(&r, nok(100)).await.unwrap();
    assert_eq!(captured.attempts, 3);
    // 15 s of backoff on the injected clock, none in real time.
    assert_eq!(
        clock.sleeps(),
        vec![Duration::from_secs(5), Duration::from_secs(10)]
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    env.emu.shutdown().await;
}

#[tokio::test]
async fn the_total_deadline_ends_the_call() {
    let env = Env::start().await;
    let client = env
        .builder()
        .timeouts(Timeouts::default().with_total(Duration::from_millis(400)))
        .build()
        .unwrap();
    let r = reference("dead");
    client
        .epayment()
        .create(&create_request(&r, 1000))
        .await
        .unwrap();
    env.fault(json!({"method": "GET", "path": "/epayment/v1/payments/*", "times": 1, "action": "delay", "ms": 3000}))
        .await;
    let started = Instant::now();
    let err = client.epayment().get(&r).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_timeout() && err.is_network(), "{err}");
    assert!(err.may_have_reached_server());

    // A Retry-After longer than the time left is not waited for: the 429 comes back at once.
    env.fault(
        json!({"method": "GET", "path": "/epayment/v1/payments/*", "times": 1,
        "action": "status", "status": 429, "retry_after": 5}),
    )
    .await;
    let started = Instant::now();
    let err = client.epayment().get(&r).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.api().unwrap().retry_after, Some(Duration::from_secs(5)));
    assert!(started.elapsed() < Duration::from_secs(1));
    env.emu.shutdown().await;
}

#[tokio::test]
async fn the_emulators_rate_limit_is_waited_out_as_retry_after_says() {
    // The vendor's limits on: 120 reads per minute per reference and subscription key.
    let emu = Emulator::start(Config {
        rate_limits: true,
        ..Config::ephemeral()
    })
    .await
    .expect("emulator starts");
    let env = Env {
        emu,
        http: reqwest::Client::new(),
    };
    let clock = ManualClock::new();
    let client = env
        .builder()
        .clock(clock.clone())
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(2)
                .with_initial_backoff(Duration::from_millis(10))
                .with_jitter(false)
                .with_max_retry_after(Duration::from_secs(120)),
        )
        .timeouts(Timeouts::default().with_total(Duration::from_secs(600)))
        .build()
        .unwrap();
    let r = reference("limit");
    client
        .epayment()
        .create(&create_request(&r, 1000))
        .await
        .unwrap();
    for _ in 0..120 {
        client.epayment().get(&r).await.unwrap();
    }
    assert!(clock.sleeps().is_empty(), "{:?}", clock.sleeps());
    // The 121st read is refused with Retry-After: the client waits that long (on its clock) before its retry,
    // which the emulator refuses too, since emulator time has not moved.
    let err = client.epayment().get(&r).await.unwrap_err();
    assert_eq!(err.status(), Some(429), "{err}");
    assert_eq!(err.attempts(), 2);
    let waited = clock.sleeps();
    assert_eq!(waited.len(), 1, "{waited:?}");
    let asked = err.api().unwrap().retry_after.expect("Retry-After");
    assert!(
        asked >= Duration::from_secs(59) && asked <= Duration::from_secs(60),
        "{asked:?}"
    );
    assert!(
        waited[0] >= Duration::from_secs(59),
        "waited {:?}, asked {asked:?}",
        waited[0]
    );
    // A minute of emulator time later the window has passed.
    env.advance_clock(60).await;
    assert_eq!(
        client.epayment().get(&r).await.unwrap().state,
        State::Created
    );
    env.emu.shutdown().await;
}
