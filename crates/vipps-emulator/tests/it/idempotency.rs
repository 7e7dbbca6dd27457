//! Idempotency: replay, conflicts, sticky 4xx, in-flight duplicates, concurrency.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn same_key_same_body_replays_byte_for_byte() {
    let env = start().await;
    let t = env.token().await;
    let first = env.create(&t, "order-replay-01", 1000, "key-1").await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.bytes().await.unwrap();
    env.approve(&t, "order-replay-01").await;
    // Key order and whitespace do not make a different request.
    let body = r#"{ "userFlow":"WEB_REDIRECT", "returnUrl":"https://example.com/return",
        "reference":"order-replay-01", "paymentMethod":{"type":"WALLET"}, "amount":{"value":1000,"currency":"NOK"} }"#;
    let again = env
        .authed(Method::POST, "/epayment/v1/payments", &t)
        .header("Idempotency-Key", "key-1")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["content-type"], "application/json");
    assert_eq!(again.bytes().await.unwrap(), first_body);
    let recs = env.requests("idempotency_key=key-1").await;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["replayed"], true);
}

#[tokio::test]
async fn same_key_different_body_conflicts_with_the_operation_code() {
    let env = start().await;
    let t = env.token().await;
    env.create(&t, "order-conflict-1", 1000, "k").await;
    problem(
        env.create(&t, "order-conflict-1", 1001, "k").await,
        409,
        Some("4020"),
    )
    .await;
    env.approve(&t, "order-conflict-1").await;
    let amt = |v: i64| json!({"modificationAmount": {"currency": "NOK", "value": v}});
    assert_eq!(
        env.post_json(
            &t,
            "/epayment/v1/payments/order-conflict-1/capture",
            Some("c"),
            amt(100)
        )
        .await
        .status(),
        200
    );
    problem(
        env.post_json(
            &t,
            "/epayment/v1/payments/order-conflict-1/capture",
            Some("c"),
            amt(200),
        )
        .await,
        409,
        Some("4010"),
    )
    .await;
    assert_eq!(
        env.post_json(
            &t,
            "/epayment/v1/payments/order-conflict-1/refund",
            Some("r"),
            amt(50)
        )
        .await
        .status(),
        200
    );
    problem(
        env.post_json(
            &t,
            "/epayment/v1/payments/order-conflict-1/refund",
            Some("r"),
            amt(60),
        )
        .await,
        409,
        Some("4150"),
    )
    .await;
    // The same key on another path is another scope.
    assert_eq!(
        env.post_json(
            &t,
            "/epayment/v1/payments/order-conflict-1/refund",
            Some("c"),
            amt(10)
        )
        .await
        .status(),
        200
    );
    let p: Value = env
        .get(&t, "/epayment/v1/payments/order-conflict-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["aggregate"]["capturedAmount"]["value"], 100);
    assert_eq!(p["aggregate"]["refundedAmount"]["value"], 60);
}

#[tokio::test]
async fn a_4xx_outcome_stays_the_answer_for_its_key() {
    let env = start().await;
    let t = env.token().await;
    env.create(&t, "order-sticky-01", 1000, "k").await;
    let amt = json!({"modificationAmount": {"currency": "NOK", "value": 100}});
    let first = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-sticky-01/capture",
            Some("cap"),
            amt.clone(),
        )
        .await;
    let first_body = problem(first, 400, Some("6080")).await;
    env.approve(&t, "order-sticky-01").await;
    let again = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-sticky-01/capture",
            Some("cap"),
            amt.clone(),
        )
        .await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again_body = problem(again, 400, Some("6080")).await;
    assert_eq!(first_body, again_body, "same traceId and all");
    // A new key executes.
    assert_eq!(
        env.post_json(
            &t,
            "/epayment/v1/payments/order-sticky-01/capture",
            Some("cap-2"),
            amt
        )
        .await
        .status(),
        200
    );
}

#[tokio::test]
async fn rejected_before_execution_is_not_stored_and_keys_are_validated() {
    let env = start().await;
    let t = env.token().await;
    let mut bad = create_body("order-unstored1", 1000);
    bad["amount"]["currency"] = json!("SEK");
    problem(
        env.post_json(&t, "/epayment/v1/payments", Some("k1"), bad)
            .await,
        400,
        None,
    )
    .await;
    assert_eq!(
        env.create(&t, "order-unstored1", 1000, "k1").await.status(),
        201,
        "the key was not consumed"
    );

    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments",
            None,
            create_body("order-unstored2", 1000),
        )
        .await;
    let p = problem(r, 400, Some("4140")).await;
    assert_eq!(fields(&p), ["Idempotency-Key"]);
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments",
            Some("a,b"),
            create_body("order-unstored2", 1000),
        )
        .await;
    assert_eq!(fields(&problem(r, 400, None).await), ["Idempotency-Key"]);
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments",
            Some(&"k".repeat(51)),
            create_body("order-unstored2", 1000),
        )
        .await;
    assert_eq!(fields(&problem(r, 400, None).await), ["Idempotency-Key"]);
    assert_eq!(
        env.post_json(
            &t,
            "/epayment/v1/payments",
            Some(&"k".repeat(50)),
            create_body("order-unstored2", 1000)
        )
        .await
        .status(),
        201
    );
    env.approve(&t, "order-unstored2").await;
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-unstored2/capture",
            None,
            json!({"modificationAmount": {"currency": "NOK", "value": 1}}),
        )
        .await;
    problem(r, 400, Some("4140")).await;
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-unstored2/refund",
            None,
            json!({"modificationAmount": {"currency": "NOK", "value": 1}}),
        )
        .await;
    problem(r, 400, Some("4140")).await;
}

#[tokio::test]
async fn hundred_simultaneous_identical_creates_make_one_payment() {
    let env = start().await;
    let t = env.token().await;
    let futs = (0..100).map(|_| env.create(&t, "order-herd-0001", 1000, "herd-key"));
    let responses = futures::future::join_all(futs).await;
    let mut fresh = 0;
    let mut replayed = 0;
    let mut locked = 0;
    for r in responses {
        match r.status().as_u16() {
            201 if r.headers().contains_key("idempotent-replayed") => replayed += 1,
            201 => fresh += 1,
            423 => {
                assert_eq!(r.headers()["retry-after"], "1");
                locked += 1
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(
        fresh, 1,
        "exactly one execution (replayed {replayed}, locked {locked})"
    );
    let events: Vec<Value> = env
        .get(&t, "/epayment/v1/payments/order-herd-0001/events")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let health: Value = env
        .control(Method::GET, "/_emulator/health", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(health["payments"], 1);
}

#[tokio::test]
async fn in_flight_duplicate_gets_423_with_retry_after() {
    let env = start().await;
    let t = env.token().await;
    let r = env
        .control(Method::POST, "/_emulator/faults", Some(json!({"method": "POST", "path": "/epayment/v1/payments", "times": 1, "action": "delay", "ms": 700})))
        .await;
    assert_eq!(r.status(), 201);
    let slow = env.create(&t, "order-inflight1", 1000, "same");
    let dup = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        env.create(&t, "order-inflight1", 1000, "same").await
    };
    let (a, b) = tokio::join!(slow, dup);
    assert_eq!(a.status(), 201);
    assert_eq!(b.headers()["retry-after"], "1");
    problem(b, 423, Some("6160")).await;
    let again = env.create(&t, "order-inflight1", 1000, "same").await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn response_lost_after_commit_then_retry_replays() {
    let env = start().await;
    let t = env.token().await;
    env.control(
        Method::POST,
        "/_emulator/faults",
        Some(json!({"path": "/epayment/v1/payments", "action": "drop_after_commit"})),
    )
    .await;
    let lost = env
        .authed(Method::POST, "/epayment/v1/payments", &t)
        .header("Idempotency-Key", "lost")
        .json(&create_body("order-lost-0001", 1000))
        .send()
        .await;
    assert!(lost.is_err(), "the connection is dropped without an answer");
    let retry = env.create(&t, "order-lost-0001", 1000, "lost").await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let recs = env.requests("idempotency_key=lost").await;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["dropped"], true);
    assert_eq!(recs[1]["status"], 201);
    assert_eq!(recs[1]["fault"], "drop_after_commit");
    let health: Value = env
        .control(Method::GET, "/_emulator/health", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(health["payments"], 1);
}
