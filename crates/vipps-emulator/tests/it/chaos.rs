//! Delivery-side chaos (`/_emulator/webhook-chaos`): each action observed by a real receiver over HTTP, and
//! recorded like any attempt.

use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde_json::{Value, json};
use vipps_test_support::table::{Case, check_async, expect_eq};
use vipps_types::signing::{self, VerifyError};

use crate::common::*;
use crate::delivery::{Received, Receiver, attempts_recorded, register};

async fn rule(env: &Env, body: Value) -> Value {
    let r = env
        .control(Method::POST, "/_emulator/webhook-chaos", Some(body))
        .await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn advance(env: &Env, seconds: u64) {
    let r = env
        .control(
            Method::POST,
            "/_emulator/clock/advance",
            Some(json!({"seconds": seconds})),
        )
        .await;
    assert_eq!(r.status(), 200);
}

fn names(got: &[Received]) -> Vec<(String, u16)> {
    got.iter()
        .map(|r| (r.json()["name"].as_str().unwrap().to_owned(), r.status))
        .collect()
}

/// Verifies a received delivery with the contract crate's verifier, at the receiver's clock.
fn verify(secret: &str, r: &Received) -> Result<(), VerifyError> {
    let d = signing::Delivery {
        path_and_query: &r.path,
        host: r.headers["host"].to_str().unwrap(),
        x_ms_date: r.headers["x-ms-date"].to_str().unwrap(),
        x_ms_content_sha256: r.headers["x-ms-content-sha256"].to_str().unwrap(),
        authorization: r.headers["authorization"].to_str().unwrap(),
        body: &r.body,
    };
    signing::verify(secret, &d, SystemTime::now(), signing::DEFAULT_SKEW)
}

#[tokio::test]
async fn drop_is_not_sent_and_is_retried_on_schedule() {
    let env = start().await;
    let rx = Receiver::start().await;
    let t = env.token().await;
    register(&env, &t, &rx.url()).await;
    let added = rule(&env, json!({"action": "drop", "event": "CREATED"})).await;
    assert_eq!(added["remaining"], 1);
    let r = "order-chaos-drop1";
    env.create(&t, r, 1000, "cd-1").await;
    let attempts = attempts_recorded(&env, r, 1).await;
    assert_eq!(attempts[0]["outcome"], "retry");
    assert_eq!(attempts[0]["chaos"]["action"], "drop");
    assert_eq!(attempts[0]["chaos"]["rule"], added["id"]);
    assert!(attempts[0]["error"].as_str().unwrap().contains("dropped"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.for_reference(r).is_empty(), "a dropped attempt was sent");
    // The rule is used up; the retry 2 s later (emulator time) is sent.
    let rules: Vec<Value> = env
        .control(Method::GET, "/_emulator/webhook-chaos", None)
        .await
        .json()
        .await
        .unwrap();
    assert!(rules.is_empty());
    advance(&env, 2).await;
    let got = rx.wait_for(r, 1).await;
    assert_eq!(names(&got), [("CREATED".to_owned(), 200)]);
    let attempts = attempts_recorded(&env, r, 2).await;
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["outcome"], "delivered");
}

#[tokio::test]
async fn duplicate_is_sent_twice_with_one_identity() {
    let env = start().await;
    let rx = Receiver::start().await;
    let t = env.token().await;
    register(&env, &t, &rx.url()).await;
    rule(
        &env,
        json!({"action": "duplicate", "event": "epayments.payment.created.v1"}),
    )
    .await;
    let r = "order-chaos-dup01";
    env.create(&t, r, 1000, "cdup-1").await;
    let got = rx.wait_for(r, 2).await;
    assert_eq!(got[0].body, got[1].body, "the same event, byte for byte");
    assert_eq!(got[0].json()["name"], "CREATED");
    let attempts = attempts_recorded(&env, r, 1).await;
    assert_eq!(attempts.len(), 1, "one attempt, sent twice");
    assert_eq!(attempts[0]["chaos"]["action"], "duplicate");
    assert_eq!(attempts[0]["chaos"]["copies"], json!([200]));
    assert_eq!(attempts[0]["outcome"], "delivered");
}

#[tokio::test]
async fn delay_holds_the_attempt_back() {
    let env = start().await;
    let rx = Receiver::start().await;
    let t = env.token().await;
    register(&env, &t, &rx.url()).await;
    rule(&env, json!({"action": "delay", "ms": 400, "url": rx.url()})).await;
    let r = "order-chaos-delay";
    let sent = std::time::Instant::now();
    env.create(&t, r, 1000, "cdel-1").await;
    rx.wait_for(r, 1).await;
    assert!(sent.elapsed() >= Duration::from_millis(400));
    let attempts = attempts_recorded(&env, r, 1).await;
    assert!(attempts[0]["latency_ms"].as_f64().unwrap() >= 400.0);
    assert_eq!(
        attempts[0]["chaos"],
        json!({"action": "delay", "ms": 400, "rule": 1})
    );
}

#[tokio::test]
async fn reorder_moves_an_event_behind_the_next_one_of_its_payment() {
    let env = start().await;
    let rx = Receiver::start().await;
    let t = env.token().await;
    register(&env, &t, &rx.url()).await;
    let r = "order-chaos-reord";
    // The first CREATED fails, so AUTHORIZED queues behind its retry.
    rx.state.fail.lock().insert(r.into(), 1);
    env.create(&t, r, 1000, "cre-1").await;
    attempts_recorded(&env, r, 1).await;
    env.approve(&t, r).await;
    rule(&env, json!({"action": "reorder", "event": "CREATED"})).await;
    advance(&env, 2).await;
    let got = rx.wait_for(r, 3).await;
    assert_eq!(
        names(&got),
        [
            ("CREATED".to_owned(), 500),
            ("AUTHORIZED".to_owned(), 200),
            ("CREATED".to_owned(), 200),
        ],
        "the retried CREATED went behind AUTHORIZED"
    );
    assert_eq!(got[0].body, got[2].body, "the same event identity");
    let attempts = attempts_recorded(&env, r, 4).await;
    let outcomes: Vec<(&str, &str)> = attempts
        .iter()
        .map(|a| {
            (
                a["event_name"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("CREATED", "retry"),
            ("CREATED", "reordered"),
            ("AUTHORIZED", "delivered"),
            ("CREATED", "delivered"),
        ]
    );
}

#[derive(Debug)]
struct Spoiled {
    rule: Value,
    want: Result<(), VerifyError>,
}

impl Case for Spoiled {
    fn name(&self) -> String {
        self.rule["action"].to_string()
    }
}

#[tokio::test]
async fn spoiled_signatures_fail_verification() {
    let env = start().await;
    let rx = Receiver::start().await;
    let t = env.token().await;
    let (_, secret) = register(&env, &t, &rx.url()).await;
    let outside = Err(VerifyError::DateOutsideWindow {
        skew_secs: signing::DEFAULT_SKEW.as_secs(),
    });
    let cases = [
        Spoiled {
            rule: json!({"action": "wrong_signature"}),
            want: Err(VerifyError::BadSignature),
        },
        Spoiled {
            rule: json!({"action": "stale_signature"}),
            want: outside.clone(),
        },
        Spoiled {
            rule: json!({"action": "stale_signature", "seconds": 30}),
            want: Ok(()),
        },
        Spoiled {
            rule: json!({"action": "skew_date", "seconds": 60}),
            want: Err(VerifyError::BadSignature),
        },
        Spoiled {
            rule: json!({"action": "skew_date", "seconds": -3600}),
            want: outside,
        },
    ];
    let n = std::sync::atomic::AtomicU32::new(0);
    check_async(&cases, |c| {
        let (env, rx, t, secret, n) = (&env, &rx, &t, &secret, &n);
        async move {
            let r = format!(
                "order-chaos-sig{:02}",
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            rule(env, {
                let mut v = c.rule.clone();
                v["event"] = "CREATED".into();
                v
            })
            .await;
            env.create(t, &r, 1000, &format!("{r}-k")).await;
            let got = rx.wait_for(&r, 1).await;
            expect_eq("verification", verify(secret, &got[0]), c.want.clone())?;
            let attempts = attempts_recorded(env, &r, 1).await;
            expect_eq(
                "recorded rule",
                attempts[0]["chaos"]["action"].clone(),
                c.rule["action"].clone(),
            )?;
            // The record keeps the headers that were actually sent.
            expect_eq(
                "recorded authorization",
                attempts[0]["request_headers"]["authorization"].as_str(),
                got[0].headers["authorization"].to_str().ok(),
            )
        }
    })
    .await;
    // Without a rule, the next delivery verifies.
    env.create(&t, "order-chaos-clean", 1000, "clean-k").await;
    let got = rx.wait_for("order-chaos-clean", 1).await;
    assert_eq!(verify(&secret, &got[0]), Ok(()));
}

#[derive(Debug)]
struct BadRule {
    body: Value,
    field: &'static str,
}

impl Case for BadRule {
    fn name(&self) -> String {
        self.body.to_string()
    }
}

#[tokio::test]
async fn bad_rules_are_refused_naming_the_field() {
    let env = start().await;
    let cases = [
        BadRule {
            body: json!({"action": "explode"}),
            field: "action",
        },
        BadRule {
            body: json!({"action": "drop", "times": 0}),
            field: "times",
        },
        BadRule {
            body: json!({"action": "drop", "times": 1001}),
            field: "times",
        },
        BadRule {
            body: json!({"action": "delay"}),
            field: "ms",
        },
        BadRule {
            body: json!({"action": "delay", "ms": 60001}),
            field: "ms",
        },
        BadRule {
            body: json!({"action": "skew_date", "seconds": 0}),
            field: "seconds",
        },
        BadRule {
            body: json!({"action": "stale_signature", "seconds": 0}),
            field: "seconds",
        },
        BadRule {
            body: json!({"action": "drop", "event": "SHIPPED"}),
            field: "event",
        },
        BadRule {
            body: json!({"action": "drop", "url": ""}),
            field: "url",
        },
        BadRule {
            body: json!({"action": "drop", "ms": 3}),
            field: "ms",
        },
        BadRule {
            body: json!({"action": "delay", "ms": 3, "seconds": 1}),
            field: "seconds",
        },
    ];
    check_async(&cases, |c| {
        let env = &env;
        async move {
            let r = env
                .control(
                    Method::POST,
                    "/_emulator/webhook-chaos",
                    Some(c.body.clone()),
                )
                .await;
            expect_eq("status", r.status().as_u16(), 400)?;
            let p: Value = r.json().await.map_err(|e| e.to_string())?;
            expect_eq("fields", fields(&p), vec![c.field.to_owned()])
        }
    })
    .await;
    let r = env
        .control(Method::DELETE, "/_emulator/webhook-chaos", None)
        .await;
    assert_eq!(r.status(), 204);
}
