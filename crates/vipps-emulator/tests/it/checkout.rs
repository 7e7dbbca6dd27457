//! Checkout API v3 over HTTP: the session lifecycle as a table (the checkout page, ePayment's user controls,
//! the merchant's cancel, expiry on emulator time), validation and the Checkout problem format, authentication
//! with the API keys, duplicate references and idempotent replays, the "payment completed" callback with its
//! token and retries, dynamic logistics with its fallback, capture through ePayment, and subscription sessions
//! that become active Recurring agreements.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use parking_lot::Mutex;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use vipps_test_support::table::{Case, check_async, expect_eq};

use crate::common::*;
use crate::delivery::Receiver;

/// A Checkout request with the API keys in headers (no access token).
fn keyed(env: &Env, m: Method, path: &str) -> reqwest::RequestBuilder {
    keyed_with(env, m, path, "demo-client-secret")
}

/// [`keyed`] with this client secret.
fn keyed_with(env: &Env, m: Method, path: &str, secret: &str) -> reqwest::RequestBuilder {
    env.http
        .request(m, env.url(path))
        .header("client_id", "demo-client-id")
        .header("client_secret", secret)
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Merchant-Serial-Number", MSN)
        .header("Vipps-System-Name", "acme")
        .header("Vipps-System-Version", "1.0.0")
        .header("Vipps-System-Plugin-Name", "acme-tests")
        .header("Vipps-System-Plugin-Version", "0.1.0")
}

fn body(reference: &str, callback: &str) -> Value {
    json!({
        "merchantInfo": {
            "callbackUrl": callback,
            "returnUrl": "https://example.com/return",
            "callbackAuthorizationToken": "cb-secret-token-1",
            "termsAndConditionsUrl": "https://example.com/terms"
        },
        "transaction": {
            "amount": {"value": 2000, "currency": "NOK"},
            "reference": reference,
            "paymentDescription": "One pair of socks"
        },
        "logistics": {
            "fixedOptions": [
                {"brand": "POSTEN", "amount": {"value": 300, "currency": "NOK"}, "id": "posten-home",
                 "priority": 1, "isDefault": true, "description": "Home delivery"},
                {"brand": "OTHER", "title": "Pick up in store", "amount": {"value": 0, "currency": "NOK"},
                 "id": "store", "priority": 2, "isDefault": false}
            ]
        },
        "prefillCustomer": {
            "firstName": "Ola", "lastName": "Nordmann", "email": "ola@example.com",
            "phoneNumber": "4748644347", "streetAddress": "Robert Levins gate 5",
            "city": "Oslo", "postalCode": "0150", "country": "NO"
        },
        "configuration": {"elements": "Full", "countries": {"supported": ["NO", "SE"]}}
    })
}

async fn create(env: &Env, b: &Value, key: Option<&str>) -> Response {
    let mut r = keyed(env, Method::POST, "/checkout/v3/session").json(b);
    if let Some(k) = key {
        r = r.header("Idempotency-Key", k);
    }
    r.send().await.unwrap()
}

async fn created(env: &Env, b: &Value) -> Value {
    let r = create(env, b, None).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "create: {v}");
    v
}

async fn session(env: &Env, reference: &str) -> (u16, Value) {
    let r = keyed(
        env,
        Method::GET,
        &format!("/checkout/v3/session/{reference}"),
    )
    .send()
    .await
    .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// A browser that does not follow the page's redirect to the merchant.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The checkout page of a created session.
fn page_url(created: &Value) -> String {
    format!(
        "{}?token={}",
        created["checkoutFrontendUrl"].as_str().unwrap(),
        created["token"].as_str().unwrap()
    )
}

async fn submit(page: &str, token: &str, action: &str, extra: &[(&str, &str)]) -> Response {
    let mut form = vec![("token", token), ("action", action)];
    form.extend_from_slice(extra);
    let url = page.split('?').next().unwrap().to_owned();
    browser().post(url).form(&form).send().await.unwrap()
}

/// Waits for `n` callbacks of a session (the retries wait 1, 2 and 4 seconds).
async fn callbacks(rx: &Receiver, reference: &str, n: usize) -> Vec<crate::delivery::Received> {
    for _ in 0..300 {
        let got = rx.for_reference(reference);
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{reference}: {} callbacks, expected {n}",
        rx.for_reference(reference).len()
    );
}

async fn advance(env: &Env, seconds: i64) {
    let r = env
        .control(
            Method::POST,
            "/_emulator/clock/advance",
            Some(json!({"seconds": seconds + 1})),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// The user opens the checkout page.
    Open,
    /// The user pays on the page.
    PagePay,
    /// The user aborts on the page.
    PageAbort,
    /// ePayment's user control approves the payment.
    ControlApprove,
    /// ePayment's user control rejects it.
    ControlReject,
    /// The merchant cancels the payment through ePayment.
    MerchantCancel,
    /// Eleven minutes pass.
    Expire,
}

#[derive(Debug)]
struct Row {
    name: &'static str,
    steps: &'static [Step],
    /// The status of `GET /session/{reference}`, the session state and the payment state.
    want: (u16, &'static str, Option<&'static str>),
    /// Whether `userInfo`, `shippingDetails` and `billingDetails` are there.
    details: bool,
}

impl Case for Row {
    fn name(&self) -> String {
        self.name.into()
    }
}

#[tokio::test]
async fn session_lifecycle() {
    use Step::*;
    let env = start().await;
    let rows = [
        Row {
            name: "created",
            steps: &[],
            want: (200, "SessionCreated", None),
            details: false,
        },
        Row {
            name: "page opened",
            steps: &[Open],
            want: (200, "PaymentInitiated", Some("CREATED")),
            details: false,
        },
        Row {
            name: "paid on the page",
            steps: &[Open, PagePay],
            want: (200, "PaymentSuccessful", Some("AUTHORIZED")),
            details: true,
        },
        Row {
            name: "aborted on the page",
            steps: &[Open, PageAbort],
            want: (200, "PaymentTerminated", Some("TERMINATED")),
            details: false,
        },
        Row {
            name: "approved through ePayment's control",
            steps: &[ControlApprove],
            want: (200, "PaymentSuccessful", Some("AUTHORIZED")),
            details: true,
        },
        Row {
            name: "rejected through ePayment's control",
            steps: &[Open, ControlReject],
            want: (200, "PaymentTerminated", Some("TERMINATED")),
            details: false,
        },
        Row {
            name: "cancelled by the merchant",
            steps: &[Open, MerchantCancel],
            want: (200, "PaymentTerminated", Some("TERMINATED")),
            details: false,
        },
        Row {
            name: "expired: polling answers 404",
            steps: &[Open, Expire],
            want: (404, "", None),
            details: false,
        },
        Row {
            name: "paid, then time passes",
            steps: &[PagePay, Expire],
            want: (200, "PaymentSuccessful", Some("AUTHORIZED")),
            details: true,
        },
    ];
    let n = std::sync::atomic::AtomicUsize::new(0);
    check_async(&rows, |row| {
        let env = &env;
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let reference = format!("lifecycle-{i:04}");
            let c = created(env, &body(&reference, "https://example.com/cb")).await;
            let page = page_url(&c);
            let token = c["token"].as_str().unwrap();
            for step in row.steps {
                let st = match step {
                    Open => browser().get(&page).send().await.unwrap().status().as_u16(),
                    PagePay => submit(&page, token, "approve", &[]).await.status().as_u16(),
                    PageAbort => submit(&page, token, "abort", &[]).await.status().as_u16(),
                    ControlApprove | ControlReject => {
                        let verb = if matches!(step, ControlApprove) {
                            "approve"
                        } else {
                            "reject"
                        };
                        env.control(
                            Method::POST,
                            &format!("/_emulator/payments/{reference}/{verb}"),
                            None,
                        )
                        .await
                        .status()
                        .as_u16()
                    }
                    MerchantCancel => {
                        let t = env.token().await;
                        env.authed(
                            Method::POST,
                            &format!("/epayment/v1/payments/{reference}/cancel"),
                            &t,
                        )
                        .header("Idempotency-Key", format!("{reference}-cancel"))
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                    }
                    Expire => {
                        advance(env, 660).await;
                        200
                    }
                };
                if !(200..400).contains(&st) {
                    return Err(format!("step {step:?} answered {st}"));
                }
            }
            let (status, s) = session(env, &reference).await;
            expect_eq("status", status, row.want.0)?;
            if status != 200 {
                return expect_eq("errorCode", s["errorCode"].as_str(), Some("NotFound"));
            }
            expect_eq("sessionState", s["sessionState"].as_str(), Some(row.want.1))?;
            expect_eq(
                "payment state",
                s["paymentDetails"]["state"].as_str(),
                row.want.2,
            )?;
            expect_eq(
                "reference",
                s["reference"].as_str(),
                Some(reference.as_str()),
            )?;
            expect_eq(
                "billingDetails",
                s["billingDetails"].is_object(),
                row.details,
            )?;
            expect_eq(
                "shippingDetails",
                s["shippingDetails"].is_object(),
                row.details,
            )?;
            expect_eq("userInfo", s["userInfo"]["sub"].is_string(), row.details)?;
            if row.details {
                expect_eq(
                    "prefilled name",
                    s["billingDetails"]["firstName"].as_str(),
                    Some("Ola"),
                )?;
                expect_eq(
                    "default shipping",
                    s["shippingDetails"]["shippingMethodId"].as_str(),
                    Some("posten-home"),
                )?;
            }
            Ok(())
        }
    })
    .await;
}

#[derive(Debug)]
struct Bad {
    name: &'static str,
    patch: fn(&mut Value),
    field: &'static str,
}

impl Case for Bad {
    fn name(&self) -> String {
        self.name.into()
    }
}

#[tokio::test]
async fn invalid_sessions_are_refused_naming_the_field() {
    let env = start().await;
    let rows = [
        Bad {
            name: "http callback to a public host",
            patch: |b| b["merchantInfo"]["callbackUrl"] = json!("http://example.com/cb"),
            field: "merchantInfo.callbackUrl",
        },
        Bad {
            name: "javascript return URL",
            patch: |b| b["merchantInfo"]["returnUrl"] = json!("javascript:alert(1)"),
            field: "merchantInfo.returnUrl",
        },
        Bad {
            name: "http terms",
            patch: |b| b["merchantInfo"]["termsAndConditionsUrl"] = json!("http://example.com/t"),
            field: "merchantInfo.termsAndConditionsUrl",
        },
        Bad {
            name: "short reference",
            patch: |b| b["transaction"]["reference"] = json!("short"),
            field: "transaction.reference",
        },
        Bad {
            name: "reference with a slash",
            patch: |b| b["transaction"]["reference"] = json!("order/0001"),
            field: "transaction.reference",
        },
        Bad {
            name: "amount below the minimum",
            patch: |b| b["transaction"]["amount"]["value"] = json!(10),
            field: "transaction.amount.value",
        },
        Bad {
            name: "unknown currency",
            patch: |b| b["transaction"]["amount"]["currency"] = json!("USD"),
            field: "transaction.amount.currency",
        },
        Bad {
            name: "short description",
            patch: |b| b["transaction"]["paymentDescription"] = json!("ab"),
            field: "transaction.paymentDescription",
        },
        Bad {
            name: "no transaction",
            patch: |b| {
                b.as_object_mut().unwrap().remove("transaction");
            },
            field: "transaction",
        },
        Bad {
            name: "OTHER option without title",
            patch: |b| {
                b["logistics"]["fixedOptions"][1]
                    .as_object_mut()
                    .unwrap()
                    .remove("title");
            },
            field: "logistics.fixedOptions[1].title",
        },
        Bad {
            name: "option in another currency",
            patch: |b| b["logistics"]["fixedOptions"][0]["amount"]["currency"] = json!("EUR"),
            field: "logistics.fixedOptions[0].amount.currency",
        },
        Bad {
            name: "http dynamic logistics to a public host",
            patch: |b| b["logistics"]["dynamicOptionsCallback"] = json!("http://example.com/l"),
            field: "logistics.dynamicOptionsCallback",
        },
        Bad {
            name: "phone number with letters",
            patch: |b| b["prefillCustomer"]["phoneNumber"] = json!("47abc"),
            field: "prefillCustomer.phoneNumber",
        },
        Bad {
            name: "unknown elements",
            patch: |b| b["configuration"]["elements"] = json!("Everything"),
            field: "configuration.elements",
        },
        Bad {
            name: "lower-case country",
            patch: |b| b["configuration"]["countries"]["supported"] = json!(["no"]),
            field: "configuration.countries.supported[0]",
        },
        Bad {
            name: "subscription in a payment session",
            patch: |b| b["subscription"] = json!({"productName": "x", "amount": {"value": 100, "currency": "NOK"}, "interval": {"unit": "MONTH", "count": 1}, "merchantAgreementUrl": "https://example.com/a"}),
            field: "subscription",
        },
        Bad {
            name: "unknown field",
            patch: |b| b["transaction"]["colour"] = json!("red"),
            field: "transaction",
        },
    ];
    check_async(&rows, |row| {
        let env = &env;
        async move {
            let mut b = body("valid-ref-0001", "https://example.com/cb");
            (row.patch)(&mut b);
            let r = create(env, &b, None).await;
            expect_eq("status", r.status().as_u16(), 400)?;
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            expect_eq("errorCode", v["errorCode"].as_str(), Some("BadRequest"))?;
            let fields: Vec<&String> = v["errors"]
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            if !fields.iter().any(|f| f.starts_with(row.field)) {
                return Err(format!("errors name {fields:?}, not {}: {v}", row.field));
            }
            Ok(())
        }
    })
    .await;
    // Nothing of it was stored.
    let (st, _) = session(&env, "valid-ref-0001").await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn keys_duplicates_and_idempotent_replays() {
    let env = start().await;
    // Wrong client secret: 401 in the Checkout format, naming the header; the secret is not echoed.
    let r = keyed_with(
        &env,
        Method::POST,
        "/checkout/v3/session",
        "wrong-secret-value",
    )
    .json(&body("auth-ref-0001", "https://example.com/cb"))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    assert!(!text.contains("wrong-secret-value"), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["errorCode"], "Unauthorized", "{v}");
    assert!(v["errors"]["client_secret"].is_array(), "{v}");
    // Missing client_id.
    let r = env
        .http
        .get(env.url("/checkout/v3/session/auth-ref-0001"))
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Merchant-Serial-Number", MSN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["errors"]["client_id"].is_array());
    // Wrong subscription key: the gateway's answer.
    let r = env
        .http
        .get(env.url("/checkout/v3/session/auth-ref-0001"))
        .header("client_id", "demo-client-id")
        .header("client_secret", "demo-client-secret")
        .header("Ocp-Apim-Subscription-Key", "nope")
        .header("Merchant-Serial-Number", MSN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // An MSN of other keys.
    let r = env
        .http
        .get(env.url("/checkout/v3/session/auth-ref-0001"))
        .header("client_id", "demo-client-id")
        .header("client_secret", "demo-client-secret")
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Merchant-Serial-Number", "999999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The same key replays the first answer; a duplicate reference is 409.
    let b = body("dup-ref-0001", "https://example.com/cb");
    let first = create(&env, &b, Some("idem-1")).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let again = create(&env, &b, Some("idem-1")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    for key in [None, Some("idem-2")] {
        let r = create(&env, &b, key).await;
        assert_eq!(r.status(), 409, "key {key:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errorCode"], "Conflict", "{v}");
    }
    // A reference an ePayment payment already has is a duplicate too.
    let t = env.token().await;
    assert_eq!(
        env.create(&t, "epay-ref-0001", 1000, "k-epay")
            .await
            .status(),
        201
    );
    let r = create(&env, &body("epay-ref-0001", "https://example.com/cb"), None).await;
    assert_eq!(r.status(), 409);
    // The answer's URLs: the emulator's page and the polling URL.
    assert!(
        first["checkoutFrontendUrl"]
            .as_str()
            .unwrap()
            .starts_with(&env.base)
    );
    assert_eq!(
        first["pollingUrl"].as_str().unwrap(),
        format!("{}/checkout/v3/session/dup-ref-0001", env.base)
    );
}

#[tokio::test]
async fn callback_carries_the_token_and_is_retried_after_failures() {
    let env = start().await;
    let rx = Receiver::start().await;
    let reference = "callback-0001";
    rx.state.fail.lock().insert(reference.to_owned(), 2);
    let c = created(&env, &body(reference, &rx.url())).await;
    let r = submit(
        &page_url(&c),
        c["token"].as_str().unwrap(),
        "approve",
        &[("firstName", "Kari")],
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "https://example.com/return");
    let got = callbacks(&rx, reference, 3).await;
    assert_eq!(
        got.iter().map(|g| g.status).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    for g in &got {
        assert_eq!(g.headers["authorization"], "cb-secret-token-1");
        let v = g.json();
        assert_eq!(v["sessionState"], "PaymentSuccessful");
        assert_eq!(v["paymentDetails"]["state"], "AUTHORIZED");
        assert_eq!(
            v["billingDetails"]["firstName"], "Kari",
            "typed on the page"
        );
    }
    // The attempts are recorded on the session.
    let mut rec = Value::Null;
    for _ in 0..200 {
        rec = env
            .control(
                Method::GET,
                &format!("/_emulator/checkout/sessions/{reference}"),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        if rec["callback"]["state"] == "DELIVERED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rec["callback"]["state"], "DELIVERED", "{rec}");
    let statuses: Vec<Value> = rec["callback"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(500), json!(500), json!(200)]);
    // The dashboard lists the session and shows its attempts, never the callback token.
    let list = env
        .http
        .get(env.url("/_emulator/ui/aggregates/checkout.session"))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    assert!(list.text().await.unwrap().contains(reference));
    let ui = env
        .http
        .get(env.url(&format!(
            "/_emulator/ui/aggregates/checkout.session/{MSN}/{reference}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 200);
    let html = ui.text().await.unwrap();
    assert!(
        html.contains("PaymentSuccessful") && html.contains("CALLBACK #3"),
        "{html}"
    );
    assert!(!html.contains("cb-secret-token-1"));

    // A receiver that always fails: four attempts (the first and three retries), then given up.
    let reference = "callback-0002";
    rx.state.fail.lock().insert(reference.to_owned(), 100);
    created(&env, &body(reference, &rx.url())).await;
    env.control(
        Method::POST,
        &format!("/_emulator/payments/{reference}/approve"),
        None,
    )
    .await;
    let got = callbacks(&rx, reference, 4).await;
    assert_eq!(got.len(), 4);
    for _ in 0..200 {
        let v: Value = env
            .control(
                Method::GET,
                &format!("/_emulator/checkout/sessions/{reference}"),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        if v["callback"]["state"] == "GIVEN_UP" {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            assert_eq!(rx.for_reference(reference).len(), 4, "no fifth attempt");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the callback was not given up");
}

/// A merchant's dynamic-logistics endpoint: answers options, fails, or answers none.
#[derive(Default)]
struct Logistics {
    mode: Mutex<&'static str>,
    seen: Mutex<Vec<(Option<String>, Value)>>,
}

async fn logistics(
    State(st): State<Arc<Logistics>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    st.seen
        .lock()
        .push((auth, serde_json::from_slice(&body).unwrap_or(Value::Null)));
    match *st.mode.lock() {
        "fail" => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({}))),
        "empty" => (StatusCode::OK, axum::Json(json!([]))),
        _ => (
            StatusCode::OK,
            axum::Json(json!([
                {"brand": "POSTNORD", "amount": {"value": 4900, "currency": "NOK"}, "id": "dyn-postnord",
                 "priority": 0, "isDefault": true, "type": "PICKUP_POINT", "description": "Dynamic <b>option</b>"}
            ])),
        ),
    }
}

async fn logistics_server() -> (SocketAddr, Arc<Logistics>) {
    let st = Arc::new(Logistics::default());
    *st.mode.lock() = "ok";
    let app = axum::Router::new()
        .route("/logistics", axum::routing::post(logistics))
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, st)
}

#[tokio::test]
async fn dynamic_logistics_sets_the_options_with_fixed_ones_as_fallback() {
    let env = start().await;
    let (addr, st) = logistics_server().await;
    let mut b = body("logistics-0001", "https://example.com/cb");
    b["logistics"]["dynamicOptionsCallback"] = json!(format!("http://{addr}/logistics"));
    let c = created(&env, &b).await;
    let page = page_url(&c);
    let html = browser()
        .get(&page)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("dyn-postnord"), "dynamic option shown");
    assert!(
        html.contains("Dynamic &lt;b&gt;option&lt;/b&gt;"),
        "escaped"
    );
    assert!(!html.contains("posten-home"), "fixed options replaced");
    {
        let seen = st.seen.lock();
        let (auth, addr_body) = seen.last().unwrap();
        assert_eq!(auth.as_deref(), Some("cb-secret-token-1"));
        assert_eq!(addr_body["postalCode"], "0150");
        assert_eq!(addr_body["region"], "Oslo");
    }
    for mode in ["fail", "empty"] {
        *st.mode.lock() = mode;
        let html = browser()
            .get(&page)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains("posten-home") && !html.contains("dyn-postnord"),
            "{mode}: fixed options"
        );
    }
    // Paying with the dynamic option records it in the shipping details.
    *st.mode.lock() = "ok";
    let r = submit(
        &page,
        c["token"].as_str().unwrap(),
        "approve",
        &[("shipping", "dyn-postnord")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, s) = session(&env, "logistics-0001").await;
    assert_eq!(s["shippingDetails"]["shippingMethodId"], "dyn-postnord");
    assert_eq!(s["shippingDetails"]["amount"]["value"], 4900);
}

#[tokio::test]
async fn the_payment_is_captured_and_refunded_through_epayment() {
    let env = start().await;
    let reference = "capture-0001";
    let c = created(&env, &body(reference, "https://example.com/cb")).await;
    assert_eq!(
        submit(&page_url(&c), c["token"].as_str().unwrap(), "approve", &[])
            .await
            .status(),
        303
    );
    let t = env.token().await;
    let p: Value = env
        .get(&t, &format!("/epayment/v1/payments/{reference}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["state"], "AUTHORIZED");
    assert_eq!(p["amount"]["value"], 2000);
    let r = env
        .post_json(
            &t,
            &format!("/epayment/v1/payments/{reference}/capture"),
            Some("cap-1"),
            json!({"modificationAmount": {"currency": "NOK", "value": 2000}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = env
        .post_json(
            &t,
            &format!("/epayment/v1/payments/{reference}/refund"),
            Some("ref-1"),
            json!({"modificationAmount": {"currency": "NOK", "value": 500}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (_, s) = session(&env, reference).await;
    assert_eq!(
        s["paymentDetails"]["aggregate"]["capturedAmount"]["value"], 2000,
        "{s}"
    );
    assert_eq!(
        s["paymentDetails"]["aggregate"]["refundedAmount"]["value"],
        500
    );
    assert_eq!(
        s["paymentDetails"]["aggregate"]["authorizedAmount"]["value"],
        2000
    );
}

#[tokio::test]
async fn a_subscription_session_makes_an_active_agreement() {
    let env = start().await;
    let rx = Receiver::start().await;
    let reference = "subscription-0001";
    let b = json!({
        "type": "SUBSCRIPTION",
        "merchantInfo": {
            "callbackUrl": rx.url(),
            "returnUrl": "https://example.com/return",
            "callbackAuthorizationToken": "sub-token"
        },
        "transaction": {
            "amount": {"value": 4900, "currency": "NOK"},
            "reference": reference,
            "paymentDescription": "First month"
        },
        "subscription": {
            "productName": "Socks every month",
            "amount": {"value": 9900, "currency": "NOK"},
            "interval": {"unit": "MONTH", "count": 1},
            "merchantAgreementUrl": "https://example.com/agreement"
        },
        "configuration": {"elements": "PaymentAndContactInfo"}
    });
    let c = created(&env, &b).await;
    let (_, s) = session(&env, reference).await;
    assert_eq!(s["sessionState"], "SessionCreated");
    assert_eq!(s["subscriptionDetails"]["state"], "PENDING");
    let html = browser()
        .get(page_url(&c))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Socks every month"));
    let r = env
        .control(
            Method::POST,
            &format!("/_emulator/checkout/sessions/{reference}/approve"),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let (_, s) = session(&env, reference).await;
    assert_eq!(s["sessionState"], "PaymentSuccessful", "{s}");
    assert_eq!(s["subscriptionDetails"]["state"], "ACTIVE");
    assert_eq!(s["paymentDetails"]["state"], "AUTHORIZED");
    assert!(s["shippingDetails"].is_null(), "no address asked");
    let id = s["subscriptionDetails"]["agreementId"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = env.token().await;
    let a: Value = env
        .get(&t, &format!("/recurring/v3/agreements/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["status"], "ACTIVE", "{a}");
    assert_eq!(a["pricing"]["amount"], 9900);
    let charge: Value = env
        .get(
            &t,
            &format!("/recurring/v3/agreements/{id}/charges/{reference}"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(charge["type"], "INITIAL", "{charge}");
    assert_eq!(charge["amount"], 4900);
    let got = callbacks(&rx, reference, 1).await;
    assert_eq!(
        got[0].json()["subscriptionDetails"]["agreementId"],
        id.as_str()
    );
    // The merchant stops the agreement: the session reports it.
    let r = env
        .authed(Method::PATCH, &format!("/recurring/v3/agreements/{id}"), &t)
        .header("Idempotency-Key", "stop-1")
        .json(&json!({"status": "STOPPED"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, s) = session(&env, reference).await;
    assert_eq!(s["subscriptionDetails"]["state"], "STOPPED");
}

#[tokio::test]
async fn the_page_refuses_wrong_tokens_and_shows_what_was_prefilled() {
    let env = start().await;
    let mut b = body("page-0001", "https://example.com/cb");
    b["transaction"]["paymentDescription"] = json!("<script>alert(1)</script>");
    b["configuration"]["customConsent"] = json!({"text": "Send me offers", "required": true});
    let c = created(&env, &b).await;
    let page = page_url(&c);
    let html = browser()
        .get(&page)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Ola") && html.contains("Robert Levins gate 5"));
    assert!(
        !html.contains("<script>alert(1)"),
        "merchant text is escaped"
    );
    assert!(html.contains("Send me offers"));
    // A required consent left unchecked: not completed.
    let r = submit(&page, c["token"].as_str().unwrap(), "approve", &[]).await;
    assert_eq!(r.status(), 422);
    let r = submit(
        &page,
        c["token"].as_str().unwrap(),
        "approve",
        &[("consent", "yes")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, s) = session(&env, "page-0001").await;
    assert_eq!(s["customConsentProvided"], true);
    // Wrong or foreign tokens.
    let token = c["token"].as_str().unwrap();
    let forged = format!("{}x", token);
    let base = c["checkoutFrontendUrl"].as_str().unwrap();
    for (t, status) in [
        (forged.as_str(), 403),
        ("nonsense", 400),
        ("123456.no-such-ref.abc", 404),
    ] {
        let r = browser()
            .get(format!("{base}?token={t}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "token {t}");
    }
    // Another site cannot post the form.
    let r = browser()
        .post(base)
        .header("Origin", "https://evil.example")
        .form(&[("token", token), ("action", "abort")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn magic_amounts_on_the_page() {
    let env = start().await;
    let rx = Receiver::start().await;
    // 151: the approval fails; the page says why, the session waits, and the user can abort.
    let mut b = body("magic-151-0001", &rx.url());
    b["transaction"]["amount"]["value"] = json!(151);
    b["logistics"]["fixedOptions"][0]["amount"]["value"] = json!(0);
    let c = created(&env, &b).await;
    let (page, token) = (page_url(&c), c["token"].as_str().unwrap().to_owned());
    let r = submit(&page, &token, "approve", &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Insufficient funds"));
    let (_, s) = session(&env, "magic-151-0001").await;
    assert_eq!(s["sessionState"], "PaymentInitiated");
    assert_eq!(submit(&page, &token, "abort", &[]).await.status(), 303);
    let (_, s) = session(&env, "magic-151-0001").await;
    assert_eq!(s["sessionState"], "PaymentTerminated");

    // 201: the result is unknown for an hour; the session waits past its own lifetime and completes, with what
    // was typed, when time resolves the payment (the sweeper tells Checkout; no read is needed for the callback).
    let reference = "magic-201-0001";
    let mut b = body(reference, &rx.url());
    b["transaction"]["amount"]["value"] = json!(201);
    let c = created(&env, &b).await;
    let r = submit(
        &page_url(&c),
        c["token"].as_str().unwrap(),
        "approve",
        &[("firstName", "Typed")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, s) = session(&env, reference).await;
    assert_eq!(s["sessionState"], "PaymentInitiated", "{s}");
    assert_eq!(s["paymentDetails"]["state"], "CREATED");
    assert!(rx.for_reference(reference).is_empty());
    advance(&env, 3600).await;
    let got = callbacks(&rx, reference, 1).await;
    let v = got[0].json();
    assert_eq!(v["sessionState"], "PaymentSuccessful");
    assert_eq!(v["billingDetails"]["firstName"], "Typed");
    let (status, s) = session(&env, reference).await;
    assert_eq!(status, 200);
    assert_eq!(s["paymentDetails"]["state"], "AUTHORIZED");
}

#[tokio::test]
async fn subscription_sessions_without_a_payment_and_contact_only_pages() {
    let env = start().await;
    // A subscription session with only a top-level reference, aborted through the controls: no agreement.
    let b = json!({
        "type": "SUBSCRIPTION",
        "reference": "sub-only-0001",
        "merchantInfo": {"callbackUrl": "https://example.com/cb", "returnUrl": "https://example.com/r",
                         "callbackAuthorizationToken": "t"},
        "subscription": {"productName": "News", "amount": {"value": 9900, "currency": "NOK"},
                         "interval": {"unit": "WEEK", "count": 2}, "merchantAgreementUrl": "https://example.com/a"}
    });
    created(&env, &b).await;
    let r = env
        .control(
            Method::POST,
            "/_emulator/checkout/sessions/sub-only-0001/abort",
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let (_, s) = session(&env, "sub-only-0001").await;
    assert_eq!(s["sessionState"], "PaymentTerminated");
    assert!(s["paymentDetails"].is_null());
    assert!(s["subscriptionDetails"]["agreementId"].is_null());
    // Acting on a completed session is refused.
    let r = env
        .control(
            Method::POST,
            "/_emulator/checkout/sessions/sub-only-0001/approve",
            None,
        )
        .await;
    assert_eq!(r.status(), 409);
    // A subscription without its subscription is refused, naming it.
    let mut bad = b.clone();
    bad.as_object_mut().unwrap().remove("subscription");
    bad["reference"] = json!("sub-only-0002");
    let r = create(&env, &bad, None).await;
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["errors"]["subscription"].is_array());

    // PaymentOnly: the page asks for a phone number only, and no address comes back.
    let mut b = body("payonly-0001", "https://example.com/cb");
    b["configuration"]["elements"] = json!("PaymentOnly");
    b.as_object_mut().unwrap().remove("prefillCustomer");
    let c = created(&env, &b).await;
    let html = browser()
        .get(page_url(&c))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("phoneNumber")
            && !html.contains("streetAddress")
            && !html.contains("firstName")
    );
    let r = submit(
        &page_url(&c),
        c["token"].as_str().unwrap(),
        "approve",
        &[("phoneNumber", "4790000001")],
    )
    .await;
    assert_eq!(r.status(), 303);
    let (_, s) = session(&env, "payonly-0001").await;
    assert_eq!(s["sessionState"], "PaymentSuccessful");
    assert!(s["shippingDetails"].is_null(), "{s}");
    assert_eq!(s["billingDetails"]["phoneNumber"], "4790000001");
}

/// Callbacks received on a fixed port (so a receiver can come up where an earlier one was missing).
async fn receiver_on(addr: SocketAddr, got: Arc<Mutex<Vec<Value>>>) {
    async fn take(
        State(got): State<Arc<Mutex<Vec<Value>>>>,
        body: axum::body::Bytes,
    ) -> StatusCode {
        got.lock()
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        StatusCode::OK
    }
    let app = axum::Router::new()
        .route("/cb", axum::routing::post(take))
        .with_state(got);
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

#[tokio::test]
async fn a_due_callback_survives_a_restart() {
    // The store outlives the first emulator: a directory, or this test's PostgreSQL database.
    let dir = tempfile::tempdir().unwrap();
    let pg = if suite_on_postgres() {
        match PgDb::create().await {
            Some(db) => Some(db),
            None => return,
        }
    } else {
        None
    };
    let storage = match &pg {
        Some(db) => vipps_emulator::Storage::Postgres(db.url.clone()),
        None => vipps_emulator::Storage::Dir(dir.path().to_owned()),
    };
    let config = || vipps_emulator::Config {
        storage: storage.clone(),
        ..vipps_emulator::Config::ephemeral()
    };
    // A port where nothing listens yet: the first attempt is refused.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let env = start_with(config()).await;
    let reference = "restart-cb-0001";
    created(&env, &body(reference, &format!("http://{addr}/cb"))).await;
    let r = env
        .control(
            Method::POST,
            &format!("/_emulator/payments/{reference}/approve"),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut first = Value::Null;
    for _ in 0..200 {
        first = env
            .control(
                Method::GET,
                &format!("/_emulator/checkout/sessions/{reference}"),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        if first["callback"]["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(first["callback"]["state"], "PENDING", "{first}");
    assert!(
        first["callback"]["attempts"][0]["error"].is_string(),
        "{first}"
    );
    let Env { emu, .. } = env;
    emu.shutdown().await;

    // The merchant's server comes up; a new emulator on the same store makes the retry that was due.
    let got = Arc::new(Mutex::new(Vec::new()));
    receiver_on(addr, got.clone()).await;
    let env = start_with(config()).await;
    for _ in 0..300 {
        if !got.lock().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bodies = got.lock().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["sessionState"], "PaymentSuccessful");
    for _ in 0..200 {
        let v: Value = env
            .control(
                Method::GET,
                &format!("/_emulator/checkout/sessions/{reference}"),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        if v["callback"]["state"] == "DELIVERED" {
            assert_eq!(v["callback"]["attempts"].as_array().unwrap().len(), 2);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the retry was not recorded as delivered");
}
