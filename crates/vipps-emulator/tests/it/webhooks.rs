//! Webhooks API v1: register, list, delete, validation, limits, isolation.

use reqwest::Method;
use serde_json::{Value, json};
use vipps_emulator::Config;

use crate::common::*;

#[tokio::test]
async fn register_list_delete() {
    let env = start().await;
    let t = env.token().await;
    let r = env
        .post_json(&t, "/webhooks/v1/webhooks", None, json!({"url": "http://127.0.0.1:9/hook", "events": ["epayments.payment.captured.v1", "epayments.payment.created.v1"]}))
        .await;
    assert_eq!(r.status(), 201);
    let reg: Value = r.json().await.unwrap();
    let id = reg["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    assert!(reg["secret"].as_str().unwrap().len() >= 32);
    let list: Value = env
        .get(&t, "/webhooks/v1/webhooks")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);
    assert_eq!(list["webhooks"][0]["id"], id.as_str());
    assert!(
        list["webhooks"][0].get("secret").is_none(),
        "secrets are shown only at registration"
    );
    assert!(!list.to_string().contains(reg["secret"].as_str().unwrap()));
    let r = env
        .authed(Method::DELETE, &format!("/webhooks/v1/webhooks/{id}"), &t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = env
        .authed(Method::DELETE, &format!("/webhooks/v1/webhooks/{id}"), &t)
        .send()
        .await
        .unwrap();
    problem(r, 404, None).await;
    let r = env
        .authed(Method::DELETE, "/webhooks/v1/webhooks/not-a-uuid", &t)
        .send()
        .await
        .unwrap();
    assert_eq!(fields(&problem(r, 400, None).await), ["id"]);
}

#[tokio::test]
async fn validation_and_limits() {
    let env = start_with(Config {
        limits: vipps_emulator::config::Limits {
            webhooks_per_event: 2,
            ..Default::default()
        },
        ..Config::ephemeral().with_merchant(other_merchant())
    })
    .await;
    let t = env.token().await;
    let reg = |url: &str, events: Value| {
        env.post_json(
            &t,
            "/webhooks/v1/webhooks",
            None,
            json!({"url": url, "events": events}),
        )
    };
    assert_eq!(
        fields(
            &problem(
                reg("not a url", json!(["epayments.payment.created.v1"])).await,
                400,
                None
            )
            .await
        ),
        ["url"]
    );
    assert_eq!(
        fields(
            &problem(
                reg("ftp://x.example/h", json!(["epayments.payment.created.v1"])).await,
                400,
                None
            )
            .await
        ),
        ["url"]
    );
    assert_eq!(
        fields(
            &problem(
                reg("https://x.example/h", json!(["epayments.payment.nope.v1"])).await,
                400,
                None
            )
            .await
        ),
        ["events[0]"]
    );
    assert_eq!(
        fields(&problem(reg("https://x.example/h", json!([])).await, 400, None).await),
        ["events"]
    );
    let r = env.post_json(&t, "/webhooks/v1/webhooks", None, json!({"url": "https://x.example/h", "events": ["epayments.payment.created.v1"], "extra": true})).await;
    assert_eq!(fields(&problem(r, 400, None).await), ["extra"]);
    assert_eq!(
        reg(
            "https://x.example/1",
            json!(["epayments.payment.created.v1"])
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        reg(
            "https://x.example/2",
            json!([
                "epayments.payment.created.v1",
                "epayments.payment.captured.v1"
            ])
        )
        .await
        .status(),
        201
    );
    let p = problem(
        reg(
            "https://x.example/3",
            json!(["epayments.payment.created.v1"]),
        )
        .await,
        400,
        None,
    )
    .await;
    assert_eq!(fields(&p), ["events"]);
    // Another merchant has its own registrations and cannot delete these.
    let t2 = env.token_for("other-id", "other-secret", "other-key").await;
    let theirs = |m: Method, p: String| {
        env.http
            .request(m, env.url(&p))
            .bearer_auth(&t2)
            .header("Ocp-Apim-Subscription-Key", "other-key")
    };
    let list: Value = theirs(Method::GET, "/webhooks/v1/webhooks".into())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 0);
    let mine: Value = env
        .get(&t, "/webhooks/v1/webhooks")
        .await
        .json()
        .await
        .unwrap();
    let id = mine["webhooks"][0]["id"].as_str().unwrap();
    problem(
        theirs(Method::DELETE, format!("/webhooks/v1/webhooks/{id}"))
            .send()
            .await
            .unwrap(),
        404,
        None,
    )
    .await;
}

#[tokio::test]
async fn strict_webhook_urls_demand_https_and_public_hosts() {
    let env = start_with(Config {
        strict_webhook_urls: true,
        ..Config::ephemeral()
    })
    .await;
    let t = env.token().await;
    for url in [
        "http://shop.example/h",
        "https://127.0.0.1/h",
        "https://localhost/h",
        "https://10.1.2.3/h",
    ] {
        let r = env
            .post_json(
                &t,
                "/webhooks/v1/webhooks",
                None,
                json!({"url": url, "events": ["epayments.payment.created.v1"]}),
            )
            .await;
        assert_eq!(fields(&problem(r, 400, None).await), ["url"], "{url}");
    }
    let r = env
        .post_json(
            &t,
            "/webhooks/v1/webhooks",
            None,
            json!({"url": "https://shop.example/h", "events": ["epayments.payment.created.v1"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
}
