//! Access tokens, authentication, MSN rules, partners, tenant isolation, the header contract.

use reqwest::Method;
use serde_json::{Value, json};
use vipps_emulator::{Config, MerchantConfig, MerchantEnvironment, PartnerConfig, Validation};

use crate::common::*;

#[tokio::test]
async fn token_endpoint_like_the_real_service() {
    let env = start().await;
    // Both path casings, an empty bearer and any content type, as the official SDK sends.
    for path in ["/accesstoken/get", "/accessToken/get"] {
        let r = env
            .http
            .post(env.url(path))
            .header("client_id", "demo-client-id")
            .header("client_secret", "demo-client-secret")
            .header("Ocp-Apim-Subscription-Key", KEY)
            .header("Authorization", "Bearer ")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["expires_in"], "3600", "numbers as strings");
        assert!(
            v["expires_on"].is_string()
                && v["not_before"].is_string()
                && v["ext_expires_in"].is_string()
        );
        let jwt = v["access_token"].as_str().unwrap();
        let payload = jwt.split('.').nth(1).unwrap();
        use base64::Engine as _;
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert!(claims["exp"].as_i64().unwrap() - claims["nbf"].as_i64().unwrap() == 3600);
    }
    // Missing and unknown subscription keys get the gateway body.
    let r = env
        .http
        .post(env.url("/accesstoken/get"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let g: Value = r.json().await.unwrap();
    assert_eq!(g["statusCode"], 401);
    assert!(
        g["message"]
            .as_str()
            .unwrap()
            .contains("missing subscription key")
    );
    let r = env
        .http
        .post(env.url("/accesstoken/get"))
        .header("Ocp-Apim-Subscription-Key", "nope")
        .send()
        .await
        .unwrap();
    assert!(
        r.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("invalid subscription key")
    );
    // A wrong secret is refused, and the secret is never echoed.
    let r = env
        .http
        .post(env.url("/accesstoken/get"))
        .header("client_id", "demo-client-id")
        .header("client_secret", "wrong-secret-value")
        .header("Ocp-Apim-Subscription-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    assert!(!text.contains("wrong-secret-value") && !text.contains("demo-client-secret"));
}

#[tokio::test]
async fn production_tokens_live_a_day() {
    let prod = MerchantConfig {
        environment: MerchantEnvironment::Production,
        ..MerchantConfig::test("222222", "p-id", "p-secret", "p-key").unwrap()
    };
    let env = start_with(Config::ephemeral().with_merchant(prod)).await;
    let r = env
        .http
        .post(env.url("/accesstoken/get"))
        .header("client_id", "p-id")
        .header("client_secret", "p-secret")
        .header("Ocp-Apim-Subscription-Key", "p-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["expires_in"], "86400");
    // Force approve is refused for production merchants.
    let t = env.token_for("p-id", "p-secret", "p-key").await;
    let create = env
        .http
        .post(env.url("/epayment/v1/payments"))
        .bearer_auth(&t)
        .header("Ocp-Apim-Subscription-Key", "p-key")
        .header("Merchant-Serial-Number", "222222")
        .header("Idempotency-Key", "p1")
        .json(&create_body("order-prod-0001", 1000))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);
    let r = env
        .http
        .post(env.url("/epayment/v1/test/payments/order-prod-0001/approve"))
        .bearer_auth(&t)
        .header("Ocp-Apim-Subscription-Key", "p-key")
        .header("Merchant-Serial-Number", "222222")
        .send()
        .await
        .unwrap();
    problem(r, 403, Some("10020")).await;
}

#[tokio::test]
async fn bearer_msn_and_isolation() {
    let env = start_with(Config::ephemeral().with_merchant(other_merchant())).await;
    let t = env.token().await;
    env.create(&t, "order-isolated1", 1000, "k").await;
    let path = "/epayment/v1/payments/order-isolated1";
    // No bearer, wrong scheme case, garbage token.
    let r = env
        .http
        .get(env.url(path))
        .header("Ocp-Apim-Subscription-Key", KEY)
        .send()
        .await
        .unwrap();
    problem(r, 401, None).await;
    let r = env
        .http
        .get(env.url(path))
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Authorization", format!("bearer {t}"))
        .send()
        .await
        .unwrap();
    problem(r, 401, None).await;
    let r = env
        .http
        .get(env.url(path))
        .header("Ocp-Apim-Subscription-Key", KEY)
        .bearer_auth("abc.def.ghi")
        .send()
        .await
        .unwrap();
    problem(r, 401, None).await;
    // Another merchant's token with the demo subscription key.
    let t2 = env.token_for("other-id", "other-secret", "other-key").await;
    let r = env
        .http
        .get(env.url(path))
        .header("Ocp-Apim-Subscription-Key", KEY)
        .bearer_auth(&t2)
        .send()
        .await
        .unwrap();
    problem(r, 401, None).await;
    // The other merchant, fully authenticated, cannot see or change the payment, whatever MSN it sends.
    let other = |m: Method, p: &str, msn: &str| {
        env.http
            .request(m, env.url(p))
            .bearer_auth(&t2)
            .header("Ocp-Apim-Subscription-Key", "other-key")
            .header("Merchant-Serial-Number", msn)
    };
    problem(
        other(Method::GET, path, "654321").send().await.unwrap(),
        404,
        None,
    )
    .await;
    problem(
        other(Method::GET, path, "123456").send().await.unwrap(),
        403,
        None,
    )
    .await;
    let r = other(
        Method::POST,
        "/epayment/v1/payments/order-isolated1/cancel",
        "654321",
    )
    .send()
    .await
    .unwrap();
    problem(r, 404, None).await;
    let p: Value = env.get(&t, path).await.json().await.unwrap();
    assert_eq!(p["state"], "CREATED");
    // A malformed MSN is a 400 naming the header; an MSN is optional with a merchant's own keys.
    let r = env
        .http
        .get(env.url(path))
        .bearer_auth(&t)
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Merchant-Serial-Number", "12x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(r, 400, None).await),
        ["Merchant-Serial-Number"]
    );
    let r = env
        .http
        .get(env.url(path))
        .bearer_auth(&t)
        .header("Ocp-Apim-Subscription-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn partners_must_name_one_of_their_sales_units() {
    let partner =
        PartnerConfig::parse_spec("partner-id:partner-secret:partner-key:123456,654321").unwrap();
    let env = start_with(
        Config::ephemeral()
            .with_merchant(other_merchant())
            .with_partner(partner),
    )
    .await;
    let pt = env
        .token_for("partner-id", "partner-secret", "partner-key")
        .await;
    let req = |msn: Option<&str>, reference: &str| {
        let mut b = env
            .http
            .post(env.url("/epayment/v1/payments"))
            .bearer_auth(&pt)
            .header("Ocp-Apim-Subscription-Key", "partner-key")
            .header("Idempotency-Key", reference.to_owned())
            .json(&create_body(reference, 1000));
        if let Some(m) = msn {
            b = b.header("Merchant-Serial-Number", m);
        }
        b.send()
    };
    problem(req(None, "order-partner-1").await.unwrap(), 403, None).await;
    problem(
        req(Some("999999"), "order-partner-1").await.unwrap(),
        403,
        None,
    )
    .await;
    assert_eq!(
        req(Some("654321"), "order-partner-1")
            .await
            .unwrap()
            .status(),
        201
    );
    // The payment belongs to sales unit 654321: the demo merchant (123456) does not see it.
    let t = env.token().await;
    problem(
        env.get(&t, "/epayment/v1/payments/order-partner-1").await,
        404,
        None,
    )
    .await;
}

#[tokio::test]
async fn system_headers_strict_and_lenient() {
    let env = start().await;
    let t = env.token().await;
    let long = "x".repeat(31);
    for h in [
        "Vipps-System-Name",
        "Vipps-System-Version",
        "Vipps-System-Plugin-Name",
        "Vipps-System-Plugin-Version",
    ] {
        let r = env
            .http
            .get(env.url("/epayment/v1/payments/whatever1"))
            .bearer_auth(&t)
            .header("Ocp-Apim-Subscription-Key", KEY)
            .header(h, &long)
            .send()
            .await
            .unwrap();
        let p = problem(r, 400, None).await;
        assert_eq!(fields(&p), [h]);
    }
    // Exactly 30 is fine; empty values are treated as absent (the official SDK sends empty strings).
    let r = env
        .http
        .get(env.url("/epayment/v1/payments/whatever1"))
        .bearer_auth(&t)
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Vipps-System-Name", "x".repeat(30))
        .header("Vipps-System-Version", "")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let lenient = start_with(Config {
        validation: Validation::Lenient,
        ..Config::ephemeral()
    })
    .await;
    let t = lenient.token().await;
    let r = lenient
        .http
        .get(lenient.url("/epayment/v1/payments/whatever1"))
        .bearer_auth(&t)
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Vipps-System-Name", &long)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "lenient mode accepts the header and goes on"
    );
}

#[tokio::test]
async fn request_record_is_queryable() {
    let env = start().await;
    let t = env.token().await;
    env.create(&t, "order-record-01", 1000, "rec-key").await;
    let _ = env
        .http
        .get(env.url("/epayment/v1/payments/order-record-01"))
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Vipps-System-Name", "other-system")
        .send()
        .await;
    let recs = env.requests("system_name=acme").await;
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r["method"], "POST");
    assert_eq!(r["path"], "/epayment/v1/payments");
    assert_eq!(r["status"], 201);
    assert_eq!(r["msn"], "123456");
    assert_eq!(r["system_version"], "1.0.0");
    assert_eq!(r["plugin_name"], "acme-tests");
    assert_eq!(r["plugin_version"], "0.1.0");
    assert_eq!(r["idempotency_key"], "rec-key");
    assert!(r["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(r["trace_id"].as_str().unwrap().starts_with("00-"));
    assert_eq!(env.requests("status=401").await.len(), 1);
    assert_eq!(env.requests("path=/accesstoken/get").await.len(), 1);
    assert_eq!(env.requests("limit=1").await.len(), 1);
    assert_eq!(env.requests("msn=123456&status=201").await.len(), 1);
    let r = env
        .control(Method::GET, "/_emulator/requests?status=abc", None)
        .await;
    problem(r, 400, None).await;
    let r = env
        .control(Method::GET, "/_emulator/requests?colour=red", None)
        .await;
    problem(r, 400, None).await;
    let _ = json!(null);
}
