//! ePayment lifecycle, business rules, validation and magic test amounts.

use reqwest::Method;
use serde_json::{Value, json};
use vipps_test_support::table::{Case, check_async, expect_eq};

use crate::common::*;

#[tokio::test]
async fn full_lifecycle_with_aggregates_and_event_log() {
    let env = start().await;
    let t = env.token().await;
    let r = env.create(&t, "order-lifecycle-1", 1000, "k-create").await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reference"], "order-lifecycle-1");
    assert!(body["redirectUrl"].as_str().unwrap().starts_with(&env.base));

    let p: Value = env
        .get(&t, "/epayment/v1/payments/order-lifecycle-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["state"], "CREATED");
    assert_eq!(p["aggregate"]["authorizedAmount"]["value"], 0);

    // Capture before approval is refused with 6080.
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-lifecycle-1/capture",
            Some("c0"),
            json!({"modificationAmount": {"currency": "NOK", "value": 100}}),
        )
        .await;
    problem(r, 400, Some("6080")).await;

    let r = env.approve(&t, "order-lifecycle-1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(0));

    let cap = |v: i64| json!({"modificationAmount": {"currency": "NOK", "value": v}});
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-lifecycle-1/capture",
            Some("c1"),
            cap(300),
        )
        .await;
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["state"], "AUTHORIZED");
    assert_eq!(m["aggregate"]["capturedAmount"]["value"], 300);
    assert_eq!(
        m["pspReference"], p["pspReference"],
        "modification answers carry the payment's pspReference"
    );
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-lifecycle-1/capture",
            Some("c2"),
            cap(700),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-lifecycle-1/capture",
            Some("c3"),
            cap(1),
        )
        .await;
    problem(r, 400, Some("6170")).await;

    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-lifecycle-1/refund",
            Some("r1"),
            cap(1001),
        )
        .await;
    problem(r, 400, Some("6150")).await;
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-lifecycle-1/refund",
            Some("r2"),
            cap(1000),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-lifecycle-1/cancel",
            None,
            json!({}),
        )
        .await;
    problem(r, 400, Some("6040")).await;

    let events: Vec<Value> = env
        .get(&t, "/epayment/v1/payments/order-lifecycle-1/events")
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["CREATED", "AUTHORIZED", "CAPTURED", "CAPTURED", "REFUNDED"]
    );
    let keys: Vec<Value> = events.iter().map(|e| e["idempotencyKey"].clone()).collect();
    assert_eq!(
        keys,
        [
            json!("k-create"),
            Value::Null,
            json!("c1"),
            json!("c2"),
            json!("r2")
        ]
    );
    let psps: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["pspReference"].as_str().unwrap())
        .collect();
    assert_eq!(psps.len(), 5, "one pspReference per event");
    assert_eq!(events[0]["pspReference"], p["pspReference"]);
    for e in &events {
        let ts = e["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z'), "UTC RFC 3339: {ts}");
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap();
    }
}

#[tokio::test]
async fn cancel_before_and_after_approval() {
    let env = start().await;
    let t = env.token().await;
    env.create(&t, "order-cancel-01", 1000, "a").await;
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-cancel-01/cancel",
            None,
            json!({"cancelTransactionOnly": true}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "TERMINATED");

    env.create(&t, "order-cancel-02", 1000, "b").await;
    env.approve(&t, "order-cancel-02").await;
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-cancel-02/cancel",
            None,
            json!({"cancelTransactionOnly": true}),
        )
        .await;
    problem(r, 400, Some("6060")).await;
    env.post_json(
        &t,
        "/epayment/v1/payments/order-cancel-02/capture",
        Some("c"),
        json!({"modificationAmount": {"currency": "NOK", "value": 250}}),
    )
    .await;
    // Cancel without a body and without an Idempotency-Key (as real SDKs send it) releases the remainder.
    let r = env
        .authed(
            Method::POST,
            "/epayment/v1/payments/order-cancel-02/cancel",
            &t,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["state"], "AUTHORIZED");
    assert_eq!(m["aggregate"]["cancelledAmount"]["value"], 750);
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-cancel-02/capture",
            Some("c2"),
            json!({"modificationAmount": {"currency": "NOK", "value": 1}}),
        )
        .await;
    problem(r, 400, Some("6070")).await;
}

#[tokio::test]
async fn expiry_follows_emulator_time() {
    let env = start().await;
    let t = env.token().await;
    env.create(&t, "order-expire-1", 1000, "e1").await;
    let r = env
        .control(
            Method::POST,
            "/_emulator/clock/advance",
            Some(json!({"seconds": 599})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let p: Value = env
        .get(&t, "/epayment/v1/payments/order-expire-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["state"], "CREATED");
    env.control(
        Method::POST,
        "/_emulator/clock/advance",
        Some(json!({"seconds": 2})),
    )
    .await;
    let p: Value = env
        .get(&t, "/epayment/v1/payments/order-expire-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["state"], "EXPIRED");
    let r = env.approve(&t, "order-expire-1").await;
    problem(r, 400, Some("10010")).await;
    let events: Vec<Value> = env
        .get(&t, "/epayment/v1/payments/order-expire-1/events")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events.last().unwrap()["name"], "EXPIRED");
    // The token, issued for one hour, expires on emulator time too.
    env.control(
        Method::POST,
        "/_emulator/clock/advance",
        Some(json!({"seconds": 3600})),
    )
    .await;
    let r = env.get(&t, "/epayment/v1/payments/order-expire-1").await;
    problem(r, 401, None).await;
}

#[tokio::test]
async fn magic_amounts() {
    let env = start().await;
    let t = env.token().await;
    env.create(&t, "order-magic-151", 151, "m1").await;
    problem(env.approve(&t, "order-magic-151").await, 400, Some("6260")).await;
    env.create(&t, "order-magic-186", 186, "m2").await;
    problem(env.approve(&t, "order-magic-186").await, 500, Some("3010")).await;
    env.create(&t, "order-magic-201", 201, "m3").await;
    assert_eq!(env.approve(&t, "order-magic-201").await.status(), 200);
    let p: Value = env
        .get(&t, "/epayment/v1/payments/order-magic-201")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["state"], "CREATED", "201: result unknown for an hour");
    env.control(
        Method::POST,
        "/_emulator/clock/advance",
        Some(json!({"seconds": 3600})),
    )
    .await;
    let t = env.token().await;
    let p: Value = env
        .get(&t, "/epayment/v1/payments/order-magic-201")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["state"], "AUTHORIZED");
    env.post_json(
        &t,
        "/epayment/v1/payments/order-magic-201/capture",
        Some("c"),
        json!({"modificationAmount": {"currency": "NOK", "value": 201}}),
    )
    .await;
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-magic-201/refund",
            Some("r123"),
            json!({"modificationAmount": {"currency": "NOK", "value": 123}}),
        )
        .await;
    problem(r, 400, Some("5100")).await;
    let r = env
        .post_json(
            &t,
            "/epayment/v1/payments/order-magic-201/refund",
            Some("r124"),
            json!({"modificationAmount": {"currency": "NOK", "value": 124}}),
        )
        .await;
    problem(r, 400, Some("6220")).await;
}

/// A create request that must be refused: how it differs from a valid one, and the answer.
#[derive(Debug)]
struct Refused {
    name: &'static str,
    change: fn(&mut Value),
    code: Option<&'static str>,
    fields: &'static [&'static str],
}

impl Case for Refused {
    fn name(&self) -> String {
        self.name.to_owned()
    }
}

const REFUSED_CREATES: &[Refused] = &[
    Refused {
        name: "unknown field",
        change: |b| b["surprise"] = json!(1),
        code: None,
        fields: &["surprise"],
    },
    Refused {
        name: "amount as a string",
        change: |b| b["amount"]["value"] = json!("1000"),
        code: None,
        fields: &["amount.value"],
    },
    Refused {
        name: "no userFlow",
        change: |b| {
            b.as_object_mut().unwrap().remove("userFlow");
        },
        code: None,
        fields: &["userFlow"],
    },
    Refused {
        name: "reference too short",
        change: |b| b["reference"] = json!("short"),
        code: None,
        fields: &["reference"],
    },
    Refused {
        name: "amount below the minimum",
        change: |b| b["amount"]["value"] = json!(99),
        code: Some("6010"),
        fields: &["amount.value"],
    },
    Refused {
        name: "amount above the maximum",
        change: |b| b["amount"]["value"] = json!(65_000_001),
        code: Some("4040"),
        fields: &["amount.value"],
    },
    Refused {
        name: "no returnUrl for WEB_REDIRECT",
        change: |b| {
            b.as_object_mut().unwrap().remove("returnUrl");
        },
        code: Some("4140"),
        fields: &["returnUrl"],
    },
    Refused {
        name: "returnUrl over plain http to a public host",
        change: |b| b["returnUrl"] = json!("http://shop.example/return"),
        code: None,
        fields: &["returnUrl"],
    },
    Refused {
        name: "short phone number",
        change: |b| {
            b["userFlow"] = json!("PUSH_MESSAGE");
            b["customer"] = json!({"phoneNumber": "12"});
        },
        code: Some("4070"),
        fields: &["customer.phoneNumber"],
    },
    Refused {
        name: "PUSH_MESSAGE without a customer",
        change: |b| b["userFlow"] = json!("PUSH_MESSAGE"),
        code: None,
        fields: &["customer"],
    },
    Refused {
        name: "six metadata pairs",
        change: |b| b["metadata"] = json!({"a":"1","b":"2","c":"3","d":"4","e":"5","f":"6"}),
        code: Some("4100"),
        fields: &["metadata"],
    },
    Refused {
        name: "unknown scope",
        change: |b| b["profile"] = json!({"scope": "name shoeSize"}),
        code: None,
        fields: &["profile.scope"],
    },
    Refused {
        name: "description too short",
        change: |b| b["paymentDescription"] = json!("ab"),
        code: None,
        fields: &["paymentDescription"],
    },
    Refused {
        name: "qrFormat without the QR flow",
        change: |b| b["qrFormat"] = json!({"format": "IMAGE/SVG+XML"}),
        code: None,
        fields: &["qrFormat"],
    },
];

#[tokio::test]
async fn bad_input_names_the_field() {
    let env = start().await;
    let t = env.token().await;
    check_async(REFUSED_CREATES, |c| {
        let (env, t) = (&env, t.clone());
        async move {
            let mut b = create_body("order-bad-0001", 1000);
            (c.change)(&mut b);
            let key = c.name.replace(' ', "-");
            let r = env
                .post_json(&t, "/epayment/v1/payments", Some(&key), b)
                .await;
            expect_eq("status", r.status().as_u16(), 400)?;
            let ct = r.headers().get("content-type").cloned();
            expect_eq(
                "content type",
                ct.as_ref().and_then(|v| v.to_str().ok()),
                Some("application/problem+json"),
            )?;
            let p: Value = r.json().await.map_err(|e| e.to_string())?;
            if let Some(code) = c.code {
                expect_eq("code", error_codes(&p), vec![code.to_owned()])?;
            }
            expect_eq(
                "fields",
                fields(&p),
                c.fields.iter().map(|f| f.to_string()).collect(),
            )
        }
    })
    .await;

    let r = env
        .authed(Method::POST, "/epayment/v1/payments", &t)
        .header("Idempotency-Key", "b10")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(r, 400, None).await;
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(300 * 1024));
    let r = env
        .authed(Method::POST, "/epayment/v1/payments", &t)
        .header("Idempotency-Key", "b11")
        .body(huge)
        .send()
        .await
        .unwrap();
    let p = problem(r, 413, None).await;
    assert_eq!(fields(&p), ["body"]);
    // None of the rejected requests created anything.
    problem(
        env.get(&t, "/epayment/v1/payments/order-bad-0001").await,
        404,
        Some("5090"),
    )
    .await;
    // Unknown routes and methods are problems too.
    problem(env.get(&t, "/epayment/v1/nothing").await, 404, None).await;
    let r = env
        .authed(Method::DELETE, "/epayment/v1/payments", &t)
        .send()
        .await
        .unwrap();
    problem(r, 405, None).await;
}

#[tokio::test]
async fn reference_unique_per_merchant() {
    let env = start_with(vipps_emulator::Config::ephemeral().with_merchant(other_merchant())).await;
    let t = env.token().await;
    assert_eq!(
        env.create(&t, "order-unique-1", 1000, "u1").await.status(),
        201
    );
    problem(
        env.create(&t, "order-unique-1", 1000, "u2").await,
        409,
        Some("4150"),
    )
    .await;
    // Another merchant may use the same reference.
    let t2 = env.token_for("other-id", "other-secret", "other-key").await;
    let r = env
        .http
        .post(env.url("/epayment/v1/payments"))
        .bearer_auth(&t2)
        .header("Ocp-Apim-Subscription-Key", "other-key")
        .header("Merchant-Serial-Number", "654321")
        .header("Idempotency-Key", "u1")
        .json(&create_body("order-unique-1", 2000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}
