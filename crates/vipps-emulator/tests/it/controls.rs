//! Test controls: faults, clock, acting as the user, landing page, switching controls off.

use reqwest::Method;
use serde_json::{Value, json};
use vipps_emulator::Config;

use crate::common::*;

#[tokio::test]
async fn status_faults_count_down_and_are_listed() {
    let env = start().await;
    let t = env.token().await;
    let r = env
        .control(Method::POST, "/_emulator/faults", Some(json!({"method": "GET", "path": "/epayment/v1/payments/*", "times": 2, "action": "status", "status": 503, "retry_after": 2})))
        .await;
    assert_eq!(r.status(), 201);
    let rules: Vec<Value> = env
        .control(Method::GET, "/_emulator/faults", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["remaining"], 2);
    for _ in 0..2 {
        let r = env.get(&t, "/epayment/v1/payments/order-fault-01").await;
        assert_eq!(r.headers()["retry-after"], "2");
        problem(r, 503, None).await;
    }
    problem(
        env.get(&t, "/epayment/v1/payments/order-fault-01").await,
        404,
        None,
    )
    .await;
    assert_eq!(
        env.control(Method::GET, "/_emulator/faults", None)
            .await
            .json::<Vec<Value>>()
            .await
            .unwrap()
            .len(),
        0
    );
    // Events of other paths are not affected; DELETE clears.
    env.control(Method::POST, "/_emulator/faults", Some(json!({"path": "/epayment/v1/payments/*/capture", "times": 5, "action": "status", "status": 500}))).await;
    assert_eq!(
        env.control(Method::DELETE, "/_emulator/faults", None)
            .await
            .status(),
        204
    );
    assert_eq!(
        env.control(Method::GET, "/_emulator/faults", None)
            .await
            .json::<Vec<Value>>()
            .await
            .unwrap()
            .len(),
        0
    );
    // Bad rules name the field.
    let r = env
        .control(
            Method::POST,
            "/_emulator/faults",
            Some(json!({"path": "/x", "action": "status", "status": 200})),
        )
        .await;
    assert_eq!(fields(&problem(r, 400, None).await), ["status"]);
    let r = env
        .control(
            Method::POST,
            "/_emulator/faults",
            Some(json!({"path": "/x", "action": "explode"})),
        )
        .await;
    problem(r, 400, None).await;
    let recs = env.requests("status=503").await;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["fault"], "status");
}

#[tokio::test]
async fn delay_fault_slows_a_read() {
    let env = start().await;
    let t = env.token().await;
    env.control(
        Method::POST,
        "/_emulator/faults",
        Some(json!({"path": "/epayment/v1/payments/*", "action": "delay", "ms": 300})),
    )
    .await;
    let started = std::time::Instant::now();
    let _ = env.get(&t, "/epayment/v1/payments/order-slow-0001").await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

#[tokio::test]
async fn acting_as_the_user_and_landing_page() {
    let env = start().await;
    let t = env.token().await;
    let created: Value = env
        .create(&t, "order-user-0001", 1000, "u1")
        .await
        .json()
        .await
        .unwrap();
    env.create(&t, "order-user-0002", 1000, "u2").await;
    let r = env
        .control(
            Method::POST,
            "/_emulator/payments/order-user-0001/approve",
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "AUTHORIZED");
    let r = env
        .control(
            Method::POST,
            "/_emulator/payments/order-user-0002/reject?msn=123456",
            None,
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "ABORTED");
    let events: Vec<Value> = env
        .get(&t, "/epayment/v1/payments/order-user-0002/events")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events.last().unwrap()["name"], "ABORTED");
    problem(
        env.control(
            Method::POST,
            "/_emulator/payments/order-nobody-01/approve",
            None,
        )
        .await,
        404,
        None,
    )
    .await;
    // The redirect URL is a landing page on the emulator.
    let landing = created["redirectUrl"].as_str().unwrap();
    let html = env
        .http
        .get(landing)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("order-user-0001") && html.contains("AUTHORIZED"));
    let bad = landing.replace("token=", "token=x");
    assert_eq!(env.http.get(bad).send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn clock_rejects_going_backwards() {
    let env = start().await;
    let r = env
        .control(
            Method::POST,
            "/_emulator/clock/advance",
            Some(json!({"seconds": -5})),
        )
        .await;
    assert_eq!(fields(&problem(r, 400, None).await), ["seconds"]);
    let before: Value = env
        .control(Method::GET, "/_emulator/clock", None)
        .await
        .json()
        .await
        .unwrap();
    let after: Value = env
        .control(
            Method::POST,
            "/_emulator/clock/advance",
            Some(json!({"seconds": 86400})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        after["offset_seconds"].as_f64().unwrap() - before["offset_seconds"].as_f64().unwrap()
            >= 86400.0
    );
}

#[tokio::test]
async fn controls_can_be_switched_off() {
    let env = start_with(Config {
        controls: false,
        ..Config::ephemeral()
    })
    .await;
    let r = env
        .control(
            Method::POST,
            "/_emulator/clock/advance",
            Some(json!({"seconds": 1})),
        )
        .await;
    problem(r, 404, None).await;
    // The dashboard and the payer pages go with them.
    for path in [
        "/_emulator/ui",
        "/_emulator/landing",
        "/_emulator/inbox/4712345678",
    ] {
        let r = env.control(Method::GET, path, None).await;
        assert_eq!(r.status(), 404, "{path}");
    }
}
