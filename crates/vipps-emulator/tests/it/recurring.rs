//! Recurring API v3: agreements and charges over HTTP, their state transitions (as tables, including time-driven
//! ones across a month end and through `retryDays`), idempotency on every write, the Recurring problem format,
//! isolation between sales units, and every webhook event delivered signed.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use vipps_test_support::table::{Case, check_async, expect_eq};

use crate::common::*;
use crate::delivery::Receiver;

const DAY: i64 = 86_400;

fn draft_body(amount: i64) -> Value {
    json!({
        "pricing": {"type": "LEGACY", "amount": amount, "currency": "NOK"},
        "interval": {"unit": "MONTH", "count": 1},
        "merchantRedirectUrl": "https://example.com/redirect",
        "merchantAgreementUrl": "https://example.com/agreement",
        "phoneNumber": "4791234567",
        "productName": "MyNews Digital"
    })
}

async fn send(
    env: &Env,
    m: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Response {
    // A fresh token each time: tests move the clock past a token's lifetime.
    let t = env.token().await;
    let mut b = env.authed(m, path, &t);
    if let Some(k) = key {
        b = b.header("Idempotency-Key", k);
    }
    if let Some(v) = body {
        b = b.json(&v);
    }
    b.send().await.unwrap()
}

async fn json_of(r: Response, status: u16) -> Value {
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "unexpected status; body {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

/// A Recurring problem: status, `contextId`, and the fields in `extraDetails`.
async fn rproblem(r: Response, status: u16) -> Vec<String> {
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let v = json_of(r, status).await;
    assert_eq!(v["status"], status);
    assert!(v["contextId"].is_string(), "contextId in {v}");
    assert!(
        v["type"]
            .as_str()
            .unwrap()
            .contains("recurring-api-problems"),
        "{v}"
    );
    v["extraDetails"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn draft(env: &Env, body: Value, key: &str) -> Value {
    json_of(
        send(
            env,
            Method::POST,
            "/recurring/v3/agreements",
            Some(key),
            Some(body),
        )
        .await,
        201,
    )
    .await
}

async fn agreement(env: &Env, id: &str) -> Value {
    json_of(
        send(
            env,
            Method::GET,
            &format!("/recurring/v3/agreements/{id}"),
            None,
            None,
        )
        .await,
        200,
    )
    .await
}

async fn charge(env: &Env, agr: &str, id: &str) -> Value {
    json_of(
        send(
            env,
            Method::GET,
            &format!("/recurring/v3/agreements/{agr}/charges/{id}"),
            None,
            None,
        )
        .await,
        200,
    )
    .await
}

async fn force_accept(env: &Env, id: &str, key: &str) -> Response {
    send(
        env,
        Method::PATCH,
        &format!("/recurring/v3/agreements/{id}/accept"),
        Some(key),
        Some(json!({"phoneNumber": "4791234567"})),
    )
    .await
}

/// A drafted and accepted agreement's id.
async fn active(env: &Env, amount: i64) -> String {
    let key = format!("draft-{}", uuid::Uuid::new_v4().simple());
    let d = draft(env, draft_body(amount), &key[..30]).await;
    let id = d["agreementId"].as_str().unwrap().to_owned();
    assert_eq!(force_accept(env, &id, &key[..29]).await.status(), 204);
    id
}

async fn now(env: &Env) -> OffsetDateTime {
    let v: Value = env
        .control(Method::GET, "/_emulator/clock", None)
        .await
        .json()
        .await
        .unwrap();
    OffsetDateTime::parse(
        v["now"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

async fn advance(env: &Env, seconds: i64) {
    // One second more: the clock reads whole seconds, the emulator counts milliseconds.
    let r = env
        .control(
            Method::POST,
            "/_emulator/clock/advance",
            Some(json!({"seconds": seconds + 1})),
        )
        .await;
    assert_eq!(r.status(), 200);
}

fn date(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

async fn create_charge(env: &Env, agr: &str, body: Value, key: &str) -> Response {
    send(
        env,
        Method::POST,
        &format!("/recurring/v3/agreements/{agr}/charges"),
        Some(key),
        Some(body),
    )
    .await
}

fn charge_body(amount: i64, due: &str, retry_days: i64, tt: &str) -> Value {
    json!({"amount": amount, "transactionType": tt, "description": "Monthly", "due": due, "retryDays": retry_days})
}

#[tokio::test]
async fn draft_accept_and_get() {
    let env = start().await;
    let mut body = draft_body(2500);
    body["initialCharge"] =
        json!({"amount": 1000, "description": "First month", "transactionType": "DIRECT_CAPTURE"});
    body["scope"] = json!("name phoneNumber");
    body["externalId"] = json!("ext-agr-1");
    let d = draft(&env, body, "draft-1").await;
    let id = d["agreementId"].as_str().unwrap();
    assert!(id.starts_with("agr_"));
    assert!(uuid::Uuid::parse_str(d["uuid"].as_str().unwrap()).is_ok());
    let charge_id = d["chargeId"].as_str().unwrap();
    let url = d["vippsConfirmationUrl"].as_str().unwrap();
    assert!(url.contains("/_emulator/recurring/confirm?"), "{url}");

    let a = agreement(&env, id).await;
    assert_eq!(a["status"], "PENDING");
    assert_eq!(
        a["pricing"],
        json!({"type": "LEGACY", "currency": "NOK", "amount": 2500})
    );
    assert_eq!(a["interval"]["text"], "every month");
    assert_eq!(a["externalId"], "ext-agr-1");
    let c = charge(&env, id, charge_id).await;
    assert_eq!(c["status"], "PENDING");
    assert_eq!(c["type"], "INITIAL");

    // The confirmation page, then accepting through it as the user.
    let page = env
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("MyNews Digital") && page.contains("25.00 NOK"),
        "{page}"
    );
    // The payer pages' look, the terms, and the two buttons.
    assert!(
        page.contains("class=\"phone\"") && page.contains("Vipps MobilePay emulator"),
        "{page}"
    );
    assert!(
        page.contains("every month") && page.contains("10.00 NOK") && page.contains("First month"),
        "{page}"
    );
    assert!(
        page.contains("value=\"accept\"") && page.contains("value=\"reject\""),
        "{page}"
    );
    let q: std::collections::HashMap<String, String> = url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .post(env.url("/_emulator/recurring/confirm"))
        .form(&[
            ("msn", q["msn"].as_str()),
            ("agreementId", q["agreementId"].as_str()),
            ("token", q["token"].as_str()),
            ("action", "accept"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "https://example.com/redirect");

    let a = agreement(&env, id).await;
    assert_eq!(a["status"], "ACTIVE");
    assert!(a["start"].is_string());
    // Once accepted, the page says so and offers no buttons.
    let after = env.http.get(url).send().await.unwrap();
    assert_eq!(after.headers()["content-type"], "text/html; charset=utf-8");
    let after = after.text().await.unwrap();
    assert!(
        after.contains("This agreement is active") && !after.contains("value=\"accept\""),
        "{after}"
    );
    assert!(a["sub"].is_string() && a["userinfoUrl"].is_string());
    let c = charge(&env, id, charge_id).await;
    assert_eq!(c["status"], "CHARGED");
    assert_eq!(c["summary"]["captured"], 1000);
    let by_id = json_of(
        send(
            &env,
            Method::GET,
            &format!("/recurring/v3/charges/{charge_id}"),
            None,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(by_id["id"], charge_id);

    // Listing: ACTIVE by default; other statuses on request.
    let list = json_of(
        send(&env, Method::GET, "/recurring/v3/agreements", None, None).await,
        200,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let pending = json_of(
        send(
            &env,
            Method::GET,
            "/recurring/v3/agreements?status=PENDING",
            None,
            None,
        )
        .await,
        200,
    )
    .await;
    assert!(pending.as_array().unwrap().is_empty());
}

#[derive(Debug)]
struct AgreementCase {
    name: &'static str,
    initial: Option<(i64, &'static str)>,
    /// What happens: `accept`, `reject`, `expire`, `stop`, `user-stop`.
    action: &'static str,
    status: &'static str,
    initial_status: Option<&'static str>,
}

impl Case for AgreementCase {
    fn name(&self) -> String {
        self.name.to_owned()
    }
}

#[tokio::test]
async fn agreement_transitions() {
    let env = start().await;
    let cases = [
        AgreementCase {
            name: "accept",
            initial: None,
            action: "accept",
            status: "ACTIVE",
            initial_status: None,
        },
        AgreementCase {
            name: "accept with direct capture",
            initial: Some((1000, "DIRECT_CAPTURE")),
            action: "accept",
            status: "ACTIVE",
            initial_status: Some("CHARGED"),
        },
        AgreementCase {
            name: "accept with reserve",
            initial: Some((1000, "RESERVE_CAPTURE")),
            action: "accept",
            status: "ACTIVE",
            initial_status: Some("RESERVED"),
        },
        AgreementCase {
            name: "initial charge fails (magic 151)",
            initial: Some((151, "DIRECT_CAPTURE")),
            action: "accept",
            status: "EXPIRED",
            initial_status: Some("FAILED"),
        },
        AgreementCase {
            name: "reject",
            initial: Some((1000, "DIRECT_CAPTURE")),
            action: "reject",
            status: "STOPPED",
            initial_status: Some("CANCELLED"),
        },
        AgreementCase {
            name: "expire after 10 minutes",
            initial: Some((1000, "DIRECT_CAPTURE")),
            action: "expire",
            status: "EXPIRED",
            initial_status: Some("CANCELLED"),
        },
        AgreementCase {
            name: "merchant stops",
            initial: None,
            action: "stop",
            status: "STOPPED",
            initial_status: None,
        },
        AgreementCase {
            name: "user stops in the app",
            initial: None,
            action: "user-stop",
            status: "STOPPED",
            initial_status: None,
        },
    ];
    check_async(&cases, |c| {
        let env = &env;
        async move {
            let mut body = draft_body(2500);
            if let Some((amount, tt)) = c.initial {
                body["initialCharge"] =
                    json!({"amount": amount, "description": "First", "transactionType": tt});
            }
            let key = format!("d-{}", c.name.replace(' ', "-").replace(['(', ')'], ""));
            let d = draft(env, body, &key[..key.len().min(40)]).await;
            let id = d["agreementId"].as_str().unwrap().to_owned();
            match c.action {
                "accept" => expect_eq(
                    "accept",
                    force_accept(env, &id, &format!("a-{id}"))
                        .await
                        .status()
                        .as_u16(),
                    204,
                )?,
                "reject" => expect_eq(
                    "reject",
                    env.control(
                        Method::POST,
                        &format!("/_emulator/recurring/agreements/{id}/reject"),
                        None,
                    )
                    .await
                    .status()
                    .as_u16(),
                    200,
                )?,
                "expire" => advance(env, 601).await,
                "stop" => {
                    force_accept(env, &id, &format!("a-{id}")).await;
                    let r = send(
                        env,
                        Method::PATCH,
                        &format!("/recurring/v3/agreements/{id}"),
                        Some(&format!("s-{id}")),
                        Some(json!({"status": "STOPPED"})),
                    )
                    .await;
                    expect_eq("stop", r.status().as_u16(), 204)?;
                }
                "user-stop" => {
                    force_accept(env, &id, &format!("a-{id}")).await;
                    let r = env
                        .control(
                            Method::POST,
                            &format!("/_emulator/recurring/agreements/{id}/stop"),
                            None,
                        )
                        .await;
                    expect_eq("user stop", r.status().as_u16(), 200)?;
                }
                other => return Err(format!("unknown action {other}")),
            }
            let a = agreement(env, &id).await;
            expect_eq("status", a["status"].as_str().unwrap(), c.status)?;
            if let (Some(want), Some(cid)) = (c.initial_status, d["chargeId"].as_str()) {
                let ch = charge(env, &id, cid).await;
                expect_eq("initial charge", ch["status"].as_str().unwrap(), want)?;
                if want == "FAILED" {
                    expect_eq(
                        "reason",
                        ch["failureReason"].as_str().unwrap(),
                        "user_action_required",
                    )?;
                }
            }
            Ok(())
        }
    })
    .await;
}

#[derive(Debug)]
struct ChargeCase {
    name: &'static str,
    amount: i64,
    transaction_type: &'static str,
    retry_days: i64,
    /// Seconds to move the clock after creation (relative to the due date's midnight when `from_due`).
    steps: &'static [(i64, &'static str)],
}

impl Case for ChargeCase {
    fn name(&self) -> String {
        self.name.to_owned()
    }
}

/// Charges due in 40 days: PENDING, DUE 30 days before, PROCESSING on the due date, then charged, reserved or
/// failed after the retry days. Each step is (seconds after the due date's midnight, expected status).
#[tokio::test]
async fn charge_transitions_on_emulator_time() {
    let env = start().await;
    let cases = [
        ChargeCase {
            name: "direct capture",
            amount: 1000,
            transaction_type: "DIRECT_CAPTURE",
            retry_days: 0,
            steps: &[
                (-31 * DAY, "PENDING"),
                (-29 * DAY, "DUE"),
                (60, "PROCESSING"),
                (3600, "CHARGED"),
            ],
        },
        ChargeCase {
            name: "reserve capture",
            amount: 1000,
            transaction_type: "RESERVE_CAPTURE",
            retry_days: 0,
            steps: &[(-1, "DUE"), (3600, "RESERVED")],
        },
        ChargeCase {
            name: "magic 151 fails after two retry days",
            amount: 151,
            transaction_type: "DIRECT_CAPTURE",
            retry_days: 2,
            steps: &[
                (3600, "PROCESSING"),
                (DAY + 3600, "PROCESSING"),
                (2 * DAY + 3600, "FAILED"),
            ],
        },
        ChargeCase {
            name: "magic 190 with no retry days fails at once",
            amount: 190,
            transaction_type: "DIRECT_CAPTURE",
            retry_days: 0,
            steps: &[(3600, "FAILED")],
        },
    ];
    let base = now(&env).await;
    check_async(&cases, |c| {
        let env = &env;
        async move {
            let agr = active(env, 2500).await;
            let clock = now(env).await;
            // Due 40 days after the test began, whatever earlier rows did to the clock.
            let due_day = base + time::Duration::days(40) + (clock - base);
            let due = date(due_day);
            let due_midnight = due_day.replace_time(time::Time::MIDNIGHT);
            let key = format!("c-{}", &agr[4..]);
            let r = create_charge(
                env,
                &agr,
                charge_body(c.amount, &due, c.retry_days, c.transaction_type),
                &key,
            )
            .await;
            let id = json_of(r, 201).await["chargeId"]
                .as_str()
                .unwrap()
                .to_owned();
            for (at, want) in c.steps {
                let target = due_midnight + time::Duration::seconds(*at);
                let delta = (target - now(env).await).whole_seconds();
                if delta > 0 {
                    advance(env, delta).await;
                }
                let ch = charge(env, &agr, &id).await;
                expect_eq(
                    &format!("status at {at}s"),
                    ch["status"].as_str().unwrap(),
                    *want,
                )?;
            }
            Ok(())
        }
    })
    .await;
}

/// A charge due on the last day of a month, failing with 3 retry days: its attempts cross into the next month,
/// and it fails on the third day of that month.
#[tokio::test]
async fn retries_cross_a_month_end() {
    let env = start().await;
    let agr = active(&env, 2500).await;
    let n = now(&env).await;
    // The last day of the month after next.
    let (y, m) = (n.year(), u8::from(n.month()));
    let (y2, m2) = if m >= 11 {
        (y + 1, m + 2 - 12)
    } else {
        (y, m + 2)
    };
    let first_of_m3 = if m2 == 12 {
        time::Date::from_calendar_date(y2 + 1, time::Month::January, 1).unwrap()
    } else {
        time::Date::from_calendar_date(y2, time::Month::try_from(m2 + 1).unwrap(), 1).unwrap()
    };
    let last = first_of_m3.previous_day().unwrap();
    let due = format!(
        "{:04}-{:02}-{:02}",
        last.year(),
        u8::from(last.month()),
        last.day()
    );
    let r = create_charge(
        &env,
        &agr,
        charge_body(151, &due, 3, "DIRECT_CAPTURE"),
        "month-end",
    )
    .await;
    let id = json_of(r, 201).await["chargeId"]
        .as_str()
        .unwrap()
        .to_owned();
    let due_ts = last.midnight().assume_utc();
    advance(&env, (due_ts - n).whole_seconds() + 2 * DAY + 7200).await;
    let c = charge(&env, &agr, &id).await;
    assert_eq!(
        c["status"], "PROCESSING",
        "still retrying on the 2nd of the month: {c}"
    );
    advance(&env, DAY).await;
    let c = charge(&env, &agr, &id).await;
    assert_eq!(c["status"], "FAILED");
    assert_eq!(c["failureReason"], "user_action_required");
    let failed_at = OffsetDateTime::parse(
        c["history"].as_array().unwrap().last().unwrap()["occurred"]
            .as_str()
            .unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        failed_at.date(),
        first_of_m3.next_day().unwrap().next_day().unwrap()
    );
}

#[tokio::test]
async fn capture_refund_cancel_and_the_failure_control() {
    let env = start().await;
    let agr = active(&env, 5000).await;
    let n = now(&env).await;
    let due = date(n + time::Duration::days(2));
    let r = create_charge(
        &env,
        &agr,
        charge_body(5000, &due, 0, "RESERVE_CAPTURE"),
        "reserve-1",
    )
    .await;
    let id = json_of(r, 201).await["chargeId"]
        .as_str()
        .unwrap()
        .to_owned();
    advance(&env, 3 * DAY).await;
    assert_eq!(charge(&env, &agr, &id).await["status"], "RESERVED");
    let path = |op: &str| format!("/recurring/v3/agreements/{agr}/charges/{id}/{op}");
    let r = send(
        &env,
        Method::POST,
        &path("capture"),
        Some("cap-1"),
        Some(json!({"amount": 2000, "description": "part"})),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        charge(&env, &agr, &id).await["status"],
        "PARTIALLY_CAPTURED"
    );
    let r = send(
        &env,
        Method::POST,
        &path("capture"),
        Some("cap-2"),
        Some(json!({"amount": 9000, "description": "too much"})),
    )
    .await;
    assert_eq!(rproblem(r, 400).await, ["amount"]);
    let r = send(
        &env,
        Method::POST,
        &path("capture"),
        Some("cap-3"),
        Some(json!({"amount": 3000, "description": "rest"})),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(charge(&env, &agr, &id).await["status"], "CHARGED");
    let r = send(
        &env,
        Method::POST,
        &path("refund"),
        Some("ref-1"),
        Some(json!({"amount": 1000, "description": "discount"})),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        charge(&env, &agr, &id).await["status"],
        "PARTIALLY_REFUNDED"
    );
    let r = send(
        &env,
        Method::POST,
        &path("refund"),
        Some("ref-2"),
        Some(json!({"amount": 4000, "description": "all"})),
    )
    .await;
    assert_eq!(r.status(), 204);
    let c = charge(&env, &agr, &id).await;
    assert_eq!(c["status"], "REFUNDED");
    assert_eq!(
        c["summary"],
        json!({"captured": 5000, "refunded": 5000, "cancelled": 0})
    );
    let events: Vec<&str> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "CREATE", "RESERVE", "CAPTURE", "CAPTURE", "REFUND", "REFUND"
        ]
    );

    // Cancel a pending charge; cancel again is refused.
    let due = date(n + time::Duration::days(60));
    let r = create_charge(
        &env,
        &agr,
        charge_body(1000, &due, 0, "DIRECT_CAPTURE"),
        "pending-1",
    )
    .await;
    let id2 = json_of(r, 201).await["chargeId"]
        .as_str()
        .unwrap()
        .to_owned();
    let del = format!("/recurring/v3/agreements/{agr}/charges/{id2}");
    assert_eq!(
        send(&env, Method::DELETE, &del, Some("del-1"), None)
            .await
            .status(),
        204
    );
    assert_eq!(charge(&env, &agr, &id2).await["status"], "CANCELLED");
    assert_eq!(
        rproblem(
            send(&env, Method::DELETE, &del, Some("del-2"), None).await,
            409
        )
        .await,
        ["status"]
    );

    // The control makes an ordinary charge fail.
    let r = create_charge(
        &env,
        &agr,
        charge_body(1000, &due, 0, "DIRECT_CAPTURE"),
        "pending-2",
    )
    .await;
    let id3 = json_of(r, 201).await["chargeId"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = env
        .control(
            Method::POST,
            &format!("/_emulator/recurring/charges/{id3}/fail"),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    advance(&env, 61 * DAY).await;
    let c = charge(&env, &agr, &id3).await;
    assert_eq!(c["status"], "FAILED");

    // Listing with a status filter.
    let all = json_of(
        send(
            &env,
            Method::GET,
            &format!("/recurring/v3/agreements/{agr}/charges"),
            None,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(all.as_array().unwrap().len(), 3);
    let failed = json_of(
        send(
            &env,
            Method::GET,
            &format!("/recurring/v3/agreements/{agr}/charges?status=FAILED"),
            None,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["id"], id3.as_str());
}

#[tokio::test]
async fn unscheduled_bulk_and_stop_cancels_open_charges() {
    let env = start().await;
    let agr = active(&env, 5000).await;
    let r = create_charge(&env, &agr, json!({"amount": 700, "transactionType": "DIRECT_CAPTURE", "description": "Extra", "type": "UNSCHEDULED"}), "unsched").await;
    let id = json_of(r, 201).await["chargeId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(charge(&env, &agr, &id).await["status"], "PROCESSING");
    advance(&env, 61).await;
    let c = charge(&env, &agr, &id).await;
    assert_eq!(
        (c["status"].as_str(), c["type"].as_str()),
        (Some("CHARGED"), Some("UNSCHEDULED"))
    );

    let due = date(now(&env).await + time::Duration::days(45));
    let items: Vec<Value> = (0..5)
        .map(|i| json!({"agreementId": agr, "amount": 1000 + i, "transactionType": "DIRECT_CAPTURE", "description": "Bulk", "due": due, "retryDays": 1}))
        .chain(std::iter::once(json!({"agreementId": "agr_missing", "amount": 1000, "transactionType": "DIRECT_CAPTURE", "description": "Bulk", "due": due, "retryDays": 1})))
        .collect();
    let bulk = Value::Array(items);
    let r = send(
        &env,
        Method::POST,
        "/recurring/v3/agreements/charges",
        Some("bulk-1"),
        Some(bulk.clone()),
    )
    .await;
    let v = json_of(r, 202).await;
    assert_eq!(v["validCharges"].as_array().unwrap().len(), 5);
    let invalid = v["invalidCharges"].as_array().unwrap();
    assert_eq!(invalid.len(), 1);
    assert_eq!(
        invalid[0]["chargeBatchItemDto"]["agreementId"],
        "agr_missing"
    );
    assert!(
        invalid[0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("agreementId"),
        "{v}"
    );
    // A replay answers the same ids.
    let again = json_of(
        send(
            &env,
            Method::POST,
            "/recurring/v3/agreements/charges",
            Some("bulk-1"),
            Some(bulk),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(again["validCharges"], v["validCharges"]);
    let list = json_of(
        send(
            &env,
            Method::GET,
            &format!("/recurring/v3/agreements/{agr}/charges"),
            None,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 6);

    // Stopping the agreement cancels what has not been charged; the charged one stays.
    let r = send(
        &env,
        Method::PATCH,
        &format!("/recurring/v3/agreements/{agr}"),
        Some("stop-1"),
        Some(json!({"status": "STOPPED"})),
    )
    .await;
    assert_eq!(r.status(), 204);
    let list = json_of(
        send(
            &env,
            Method::GET,
            &format!("/recurring/v3/agreements/{agr}/charges"),
            None,
            None,
        )
        .await,
        200,
    )
    .await;
    let statuses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "CHARGED",
            "CANCELLED",
            "CANCELLED",
            "CANCELLED",
            "CANCELLED",
            "CANCELLED"
        ]
    );
    // No charge on a stopped agreement.
    let r = create_charge(
        &env,
        &agr,
        charge_body(1000, &due, 0, "DIRECT_CAPTURE"),
        "after-stop",
    )
    .await;
    assert_eq!(rproblem(r, 400).await, ["agreement.status"]);
}

#[derive(Debug)]
struct Invalid {
    name: &'static str,
    path: &'static str,
    patch: Value,
    field: &'static str,
}

impl Case for Invalid {
    fn name(&self) -> String {
        self.name.to_owned()
    }
}

#[tokio::test]
async fn validation_names_the_field() {
    let env = start().await;
    let agr = active(&env, 2500).await;
    let tomorrow = date(now(&env).await + time::Duration::days(1));
    let today = date(now(&env).await);
    let cases = [
        Invalid {
            name: "currency",
            path: "draft",
            patch: json!({"pricing": {"type": "LEGACY", "amount": 2500, "currency": "SEK"}}),
            field: "pricing.currency",
        },
        Invalid {
            name: "amount below 100",
            path: "draft",
            patch: json!({"pricing": {"type": "LEGACY", "amount": 99, "currency": "NOK"}}),
            field: "pricing.amount",
        },
        Invalid {
            name: "variable without max",
            path: "draft",
            patch: json!({"pricing": {"type": "VARIABLE", "currency": "NOK"}}),
            field: "pricing.suggestedMaxAmount",
        },
        Invalid {
            name: "interval count",
            path: "draft",
            patch: json!({"interval": {"unit": "WEEK", "count": 40}}),
            field: "interval.count",
        },
        Invalid {
            name: "product name too long",
            path: "draft",
            patch: json!({"productName": "x".repeat(46)}),
            field: "productName",
        },
        Invalid {
            name: "http agreement url",
            path: "draft",
            patch: json!({"merchantAgreementUrl": "http://example.com/a"}),
            field: "merchantAgreementUrl",
        },
        Invalid {
            name: "phone",
            path: "draft",
            patch: json!({"phoneNumber": "12ab"}),
            field: "phoneNumber",
        },
        Invalid {
            name: "scope",
            path: "draft",
            patch: json!({"scope": "name shoeSize"}),
            field: "scope",
        },
        Invalid {
            name: "unknown field",
            path: "draft",
            patch: json!({"colour": "red"}),
            field: "colour",
        },
        Invalid {
            name: "due today",
            path: "charge",
            patch: json!({"due": today}),
            field: "due",
        },
        Invalid {
            name: "due not a date",
            path: "charge",
            patch: json!({"due": "31/12/2030"}),
            field: "due",
        },
        Invalid {
            name: "retry days 15",
            path: "charge",
            patch: json!({"due": tomorrow, "retryDays": 15}),
            field: "retryDays",
        },
        Invalid {
            name: "above the legacy price",
            path: "charge",
            patch: json!({"due": tomorrow, "amount": 2501}),
            field: "amount",
        },
        Invalid {
            name: "description too long",
            path: "charge",
            patch: json!({"due": tomorrow, "description": "x".repeat(46)}),
            field: "description",
        },
        Invalid {
            name: "order id",
            path: "charge",
            patch: json!({"due": tomorrow, "orderId": "a b"}),
            field: "orderId",
        },
    ];
    let mut n = 0;
    check_async(&cases, |c| {
        n += 1;
        let (env, agr) = (&env, &agr);
        let key = format!("invalid-{n}");
        async move {
            let (path, mut body) = match c.path {
                "draft" => ("/recurring/v3/agreements".to_owned(), draft_body(2500)),
                _ => (
                    format!("/recurring/v3/agreements/{agr}/charges"),
                    charge_body(1000, "2099-01-01", 0, "DIRECT_CAPTURE"),
                ),
            };
            for (k, v) in c.patch.as_object().unwrap() {
                body[k] = v.clone();
            }
            let r = send(env, Method::POST, &path, Some(&key), Some(body)).await;
            let fields = rproblem(r, 400).await;
            expect_eq("fields", fields, vec![c.field.to_owned()])
        }
    })
    .await;
}

#[tokio::test]
async fn idempotency_on_every_write() {
    let env = start().await;
    // Key rules: 1 to 40 characters, none of # ? / \.
    for bad in ["", "a/b", "a#b", "a?b", "a\\b", &"k".repeat(41)] {
        let r = send(
            &env,
            Method::POST,
            "/recurring/v3/agreements",
            Some(bad),
            Some(draft_body(2500)),
        )
        .await;
        assert_eq!(rproblem(r, 400).await, ["Idempotency-Key"], "key {bad:?}");
    }
    let r = send(
        &env,
        Method::POST,
        "/recurring/v3/agreements",
        None,
        Some(draft_body(2500)),
    )
    .await;
    assert_eq!(rproblem(r, 400).await, ["Idempotency-Key"]);

    // Draft: replay answers the same agreement, a changed body 409.
    let a = send(
        &env,
        Method::POST,
        "/recurring/v3/agreements",
        Some("k-draft"),
        Some(draft_body(2500)),
    )
    .await;
    assert_eq!(a.status(), 201);
    let a: Value = a.json().await.unwrap();
    let b = send(
        &env,
        Method::POST,
        "/recurring/v3/agreements",
        Some("k-draft"),
        Some(draft_body(2500)),
    )
    .await;
    assert_eq!(b.headers()["idempotent-replayed"], "true");
    assert_eq!(b.json::<Value>().await.unwrap(), a);
    let c = send(
        &env,
        Method::POST,
        "/recurring/v3/agreements",
        Some("k-draft"),
        Some(draft_body(3000)),
    )
    .await;
    rproblem(c, 409).await;
    let agr = a["agreementId"].as_str().unwrap().to_owned();

    // Force accept, charge create, capture, refund, cancel, update: replayed, and a sticky 4xx.
    for _ in 0..2 {
        assert_eq!(force_accept(&env, &agr, "k-accept").await.status(), 204);
    }
    let due = date(now(&env).await + time::Duration::days(3));
    let r1 = create_charge(
        &env,
        &agr,
        charge_body(2000, &due, 0, "RESERVE_CAPTURE"),
        "k-charge",
    )
    .await;
    let r1: Value = json_of(r1, 201).await;
    let r2 = create_charge(
        &env,
        &agr,
        charge_body(2000, &due, 0, "RESERVE_CAPTURE"),
        "k-charge",
    )
    .await;
    assert_eq!(r2.headers()["idempotent-replayed"], "true");
    assert_eq!(json_of(r2, 201).await, r1);
    rproblem(
        create_charge(
            &env,
            &agr,
            charge_body(2100, &due, 0, "RESERVE_CAPTURE"),
            "k-charge",
        )
        .await,
        409,
    )
    .await;
    let list = json_of(
        send(
            &env,
            Method::GET,
            &format!("/recurring/v3/agreements/{agr}/charges"),
            None,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "a replay does not list a charge twice"
    );
    let id = r1["chargeId"].as_str().unwrap();
    // Capturing before the reservation is refused, and the refusal sticks to its key even once it would pass.
    let cap = format!("/recurring/v3/agreements/{agr}/charges/{id}/capture");
    let body = json!({"amount": 1000, "description": "part"});
    rproblem(
        send(&env, Method::POST, &cap, Some("k-cap"), Some(body.clone())).await,
        409,
    )
    .await;
    advance(&env, 4 * DAY).await;
    assert_eq!(charge(&env, &agr, id).await["status"], "RESERVED");
    let sticky = send(&env, Method::POST, &cap, Some("k-cap"), Some(body.clone())).await;
    assert_eq!(sticky.headers()["idempotent-replayed"], "true");
    rproblem(sticky, 409).await;
    for _ in 0..2 {
        assert_eq!(
            send(
                &env,
                Method::POST,
                &cap,
                Some("k-cap-2"),
                Some(body.clone())
            )
            .await
            .status(),
            204
        );
    }
    let del = format!("/recurring/v3/agreements/{agr}/charges/{id}");
    for _ in 0..2 {
        assert_eq!(
            send(&env, Method::DELETE, &del, Some("k-del"), None)
                .await
                .status(),
            204
        );
    }
    let reff = format!("/recurring/v3/agreements/{agr}/charges/{id}/refund");
    for _ in 0..2 {
        assert_eq!(
            send(&env, Method::POST, &reff, Some("k-ref"), Some(body.clone()))
                .await
                .status(),
            204
        );
    }
    let c = charge(&env, &agr, id).await;
    assert_eq!(
        c["summary"],
        json!({"captured": 1000, "refunded": 1000, "cancelled": 1000}),
        "each replayed once"
    );
    let upd = format!("/recurring/v3/agreements/{agr}");
    for _ in 0..2 {
        assert_eq!(
            send(
                &env,
                Method::PATCH,
                &upd,
                Some("k-upd"),
                Some(json!({"productName": "Renamed"}))
            )
            .await
            .status(),
            204
        );
    }
    rproblem(
        send(
            &env,
            Method::PATCH,
            &upd,
            Some("k-upd"),
            Some(json!({"productName": "Other"})),
        )
        .await,
        409,
    )
    .await;
    assert_eq!(agreement(&env, &agr).await["productName"], "Renamed");
}

#[tokio::test]
async fn other_merchants_and_unknown_ids() {
    let env = start_with(vipps_emulator::Config::ephemeral().with_merchant(other_merchant())).await;
    let agr = active(&env, 2500).await;
    let other = env.token_for("other-id", "other-secret", "other-key").await;
    let r = env
        .http
        .get(env.url(&format!("/recurring/v3/agreements/{agr}")))
        .bearer_auth(&other)
        .header("Ocp-Apim-Subscription-Key", "other-key")
        .header("Merchant-Serial-Number", "654321")
        .send()
        .await
        .unwrap();
    assert_eq!(rproblem(r, 404).await, ["agreementId"]);
    let r = send(
        &env,
        Method::GET,
        "/recurring/v3/agreements/agr_nothing",
        None,
        None,
    )
    .await;
    assert_eq!(rproblem(r, 404).await, ["agreementId"]);
    let r = send(
        &env,
        Method::GET,
        "/recurring/v3/charges/chr-nothing",
        None,
        None,
    )
    .await;
    assert_eq!(rproblem(r, 404).await, ["chargeId"]);
    let r = env
        .http
        .get(env.url("/recurring/v3/agreements"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// Every Recurring event, delivered signed to a registered webhook.
#[tokio::test]
async fn every_event_is_delivered_signed() {
    let env = start().await;
    let rx = Receiver::start().await;
    let t = env.token().await;
    let r = env
        .post_json(
            &t,
            "/webhooks/v1/webhooks",
            None,
            json!({"url": rx.url(), "events": vipps_types::recurring::recurring_event_types()}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let secret = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    // activated (+ charge reserved), captured, refunded, canceled, failed, stopped (merchant), rejected, expired.
    let mut body = draft_body(5000);
    body["initialCharge"] =
        json!({"amount": 5000, "description": "First", "transactionType": "RESERVE_CAPTURE"});
    let d = draft(&env, body, "ev-draft").await;
    let agr = d["agreementId"].as_str().unwrap().to_owned();
    let first = d["chargeId"].as_str().unwrap().to_owned();
    assert_eq!(force_accept(&env, &agr, "ev-accept").await.status(), 204);
    let cpath = |op: &str| format!("/recurring/v3/agreements/{agr}/charges/{first}/{op}");
    send(
        &env,
        Method::POST,
        &cpath("capture"),
        Some("ev-cap"),
        Some(json!({"amount": 3000, "description": "x"})),
    )
    .await;
    send(
        &env,
        Method::POST,
        &cpath("refund"),
        Some("ev-ref"),
        Some(json!({"amount": 1000, "description": "x"})),
    )
    .await;
    let due = date(now(&env).await + time::Duration::days(2));
    let r = create_charge(
        &env,
        &agr,
        charge_body(1000, &due, 0, "DIRECT_CAPTURE"),
        "ev-c2",
    )
    .await;
    let second = json_of(r, 201).await["chargeId"]
        .as_str()
        .unwrap()
        .to_owned();
    send(
        &env,
        Method::DELETE,
        &format!("/recurring/v3/agreements/{agr}/charges/{second}"),
        Some("ev-del"),
        None,
    )
    .await;
    let r = create_charge(
        &env,
        &agr,
        charge_body(182, &due, 0, "DIRECT_CAPTURE"),
        "ev-c3",
    )
    .await;
    json_of(r, 201).await;
    // A bulk item refused after the request is accepted: charge-creation-failed, once, also when replayed.
    let refused = json!([{"agreementId": agr, "amount": 900, "transactionType": "DIRECT_CAPTURE",
        "description": "Bulk", "due": due, "retryDays": 20, "orderId": "ev-bulk-refused-1"}]);
    for _ in 0..2 {
        let r = send(
            &env,
            Method::POST,
            "/recurring/v3/agreements/charges",
            Some("ev-bulk"),
            Some(refused.clone()),
        )
        .await;
        assert_eq!(
            json_of(r, 202).await["invalidCharges"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
    advance(&env, 3 * DAY).await;
    send(
        &env,
        Method::PATCH,
        &format!("/recurring/v3/agreements/{agr}"),
        Some("ev-stop"),
        Some(json!({"status": "STOPPED"})),
    )
    .await;
    let rejected = draft(&env, draft_body(100), "ev-draft-2").await["agreementId"]
        .as_str()
        .unwrap()
        .to_owned();
    env.control(
        Method::POST,
        &format!("/_emulator/recurring/agreements/{rejected}/reject"),
        None,
    )
    .await;
    let expired = draft(&env, draft_body(100), "ev-draft-3").await["agreementId"]
        .as_str()
        .unwrap()
        .to_owned();
    advance(&env, 601).await;

    let want = [
        "recurring.agreement-activated.v1",
        "recurring.charge-reserved.v1",
        "recurring.charge-captured.v1",
        "recurring.charge-refunded.v1",
        "recurring.charge-canceled.v1",
        "recurring.charge-failed.v1",
        "recurring.charge-creation-failed.v1",
        "recurring.agreement-stopped.v1",
        "recurring.agreement-rejected.v1",
        "recurring.agreement-expired.v1",
    ];
    let mut got = Vec::new();
    for _ in 0..500 {
        got = rx.state.got.lock().clone();
        if want
            .iter()
            .all(|w| got.iter().any(|g| g.json()["eventType"] == *w))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in want {
        let g = got
            .iter()
            .find(|g| g.json()["eventType"] == w)
            .unwrap_or_else(|| {
                panic!(
                    "no {w} delivered; got {:?}",
                    got.iter()
                        .map(|g| g.json()["eventType"].clone())
                        .collect::<Vec<_>>()
                )
            });
        let d = vipps_types::signing::Delivery {
            path_and_query: &g.path,
            host: g.headers["host"].to_str().unwrap(),
            x_ms_date: g.headers["x-ms-date"].to_str().unwrap(),
            x_ms_content_sha256: g.headers["x-ms-content-sha256"].to_str().unwrap(),
            authorization: g.headers["authorization"].to_str().unwrap(),
            body: &g.body,
        };
        vipps_types::signing::verify(
            &secret,
            &d,
            std::time::SystemTime::now(),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{w}: {e}"));
        let body = g.json();
        assert_eq!(body["msn"], MSN, "{w}");
        assert!(body["occurred"].is_string(), "{w}");
        match w {
            "recurring.agreement-stopped.v1" => assert_eq!(body["actor"], "MERCHANT"),
            "recurring.agreement-rejected.v1" => assert_eq!(body["agreementId"], rejected.as_str()),
            "recurring.agreement-expired.v1" => assert_eq!(body["agreementId"], expired.as_str()),
            "recurring.charge-failed.v1" => {
                assert_eq!(body["failureReason"], "user_action_required")
            }
            "recurring.charge-creation-failed.v1" => {
                assert_eq!(
                    (
                        body["chargeId"].as_str(),
                        body["agreementId"].as_str(),
                        body["failureReason"].as_str()
                    ),
                    (
                        Some("ev-bulk-refused-1"),
                        Some(agr.as_str()),
                        Some("non_technical_error")
                    )
                );
                assert!(
                    body["failureDescription"]
                        .as_str()
                        .unwrap()
                        .contains("retryDays"),
                    "{body}"
                );
                let n = got.iter().filter(|g| g.json()["eventType"] == w).count();
                assert_eq!(n, 1, "reported once, not per replay");
            }
            "recurring.charge-captured.v1" => {
                assert_eq!(
                    (body["chargeId"].as_str(), body["amount"].as_i64()),
                    (Some(first.as_str()), Some(3000))
                )
            }
            _ => {}
        }
    }
}
