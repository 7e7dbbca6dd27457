//! The event stream (`GET /_emulator/events`, server-sent events) and waiting (`GET /_emulator/wait`), over HTTP.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use vipps_test_support::table::{Case, check_async, expect_eq};

use crate::common::*;
use crate::delivery::{Receiver, register};

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// A subscription to `/_emulator/events`, read frame by frame.
pub struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    /// Subscribes with a query (`reference=...`); returns once the stream answered, so events published from now
    /// on arrive.
    pub async fn open(env: &Env, query: &str) -> Sse {
        let resp = env
            .http
            .get(env.url(&format!("/_emulator/events?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped), or `None` after `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = ("message".to_owned(), None, String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !data.is_empty() {
                    return Some(SseEvent {
                        event,
                        id,
                        data: serde_json::from_str(&data).expect("JSON data"),
                    });
                }
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(other) => panic!("the event stream ended: {other:?}"),
                Err(_) => return None,
            }
        }
    }

    /// The next `n` events, failing the test when they do not arrive in time.
    pub async fn take(&mut self, n: usize) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next_within(Duration::from_secs(10)).await {
                Some(e) => out.push(e),
                None => panic!("only {} of {n} events arrived: {out:?}", out.len()),
            }
        }
        out
    }
}

fn amount(v: i64) -> Value {
    json!({"modificationAmount": {"currency": "NOK", "value": v}})
}

#[tokio::test]
async fn state_changes_and_deliveries_stream_in_order() {
    let env = start().await;
    let rx = Receiver::start().await;
    let t = env.token().await;
    register(&env, &t, &rx.url()).await;
    let r = "order-events-0001";
    let mut states = Sse::open(&env, &format!("reference={r}&type=state")).await;
    let mut deliveries = Sse::open(&env, &format!("reference={r}&type=delivery")).await;
    let mut tenant = Sse::open(&env, &format!("msn={MSN}")).await;

    assert_eq!(env.create(&t, r, 1000, "ev-create").await.status(), 201);
    // Another payment, which the reference filter leaves out.
    assert_eq!(
        env.create(&t, "order-events-0002", 500, "ev-create-2")
            .await
            .status(),
        201
    );
    assert_eq!(env.approve(&t, r).await.status(), 200);
    let path = |op: &str| format!("/epayment/v1/payments/{r}/{op}");
    let ok = env
        .post_json(&t, &path("capture"), Some("ev-c"), amount(600))
        .await;
    assert_eq!(ok.status(), 200);
    let ok = env
        .post_json(&t, &path("refund"), Some("ev-r"), amount(100))
        .await;
    assert_eq!(ok.status(), 200);

    let got = states.take(4).await;
    let summary: Vec<(String, String, Option<String>, String, String)> = got
        .iter()
        .map(|e| {
            (
                e.event.clone(),
                e.data["state"].as_str().unwrap().to_owned(),
                e.data["previous_state"].as_str().map(str::to_owned),
                e.data["kind"].as_str().unwrap().to_owned(),
                e.data["msn"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let st = |s: &str, p: Option<&str>| {
        (
            "state".to_owned(),
            s.to_owned(),
            p.map(str::to_owned),
            "epayment.payment".to_owned(),
            MSN.to_owned(),
        )
    };
    assert_eq!(
        summary,
        vec![
            st("CREATED", None),
            st("AUTHORIZED", Some("CREATED")),
            st("AUTHORIZED", Some("AUTHORIZED")),
            st("AUTHORIZED", Some("AUTHORIZED")),
        ]
    );
    let seqs: Vec<u64> = got
        .iter()
        .map(|e| e.data["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "numbered in order: {seqs:?}"
    );
    assert!(
        got.iter()
            .all(|e| e.id.as_deref() == Some(&*e.data["seq"].to_string())),
        "the SSE id is the event's number"
    );
    assert!(
        got.iter()
            .all(|e| e.data["id"] == r && e.data["reference"] == r)
    );

    // Deliveries of one payment leave in order, and each attempt is an event.
    let got = deliveries.take(4).await;
    let names: Vec<&str> = got
        .iter()
        .map(|e| e.data["attempt"]["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["CREATED", "AUTHORIZED", "CAPTURED", "REFUNDED"]);
    for e in &got {
        assert_eq!(e.event, "delivery");
        assert_eq!(e.data["kind"], "webhook.delivery");
        assert_eq!(e.data["state"], "delivered");
        assert_eq!(e.data["msn"], MSN);
        assert!(
            e.data["attempt"].get("request_headers").is_none(),
            "signatures stay out of the stream"
        );
    }

    // The tenant filter sees both payments, state changes and deliveries alike.
    let mut refs = std::collections::BTreeSet::new();
    let mut types = std::collections::BTreeSet::new();
    for e in tenant.take(10).await {
        refs.insert(e.data["reference"].as_str().unwrap().to_owned());
        types.insert(e.event);
    }
    assert!(
        refs.contains("order-events-0002") && refs.contains(r),
        "{refs:?}"
    );
    assert_eq!(types.into_iter().collect::<Vec<_>>(), ["delivery", "state"]);
}

#[tokio::test]
async fn another_tenant_sees_nothing() {
    let env = start().await;
    let t = env.token().await;
    let mut other = Sse::open(&env, "msn=654321").await;
    env.create(&t, "order-events-0003", 1000, "ev-3").await;
    assert!(
        other
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "an event of another MSN passed the filter"
    );
}

#[tokio::test]
async fn wait_answers_when_the_state_is_reached_or_408() {
    let env = start().await;
    let t = env.token().await;
    let r = "order-wait-0001";
    env.create(&t, r, 1000, "w-create").await;

    // Already there: at once.
    let v: Value = env
        .control(
            Method::GET,
            &format!("/_emulator/wait?reference={r}&state=CREATED&timeout=5"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"kind": "epayment.payment", "id": r, "msn": MSN, "state": "CREATED"})
    );

    // Reached while waiting: answered when the approval lands, well before the timeout.
    let waiting = {
        let http = env.http.clone();
        let url = env.url(&format!(
            "/_emulator/wait?reference={r}&state=AUTHORIZED,ABORTED&timeout=20"
        ));
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = http.get(url).send().await.unwrap();
            (
                resp.status(),
                resp.json::<Value>().await.unwrap(),
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "answered before the state was reached"
    );
    env.approve(&t, r).await;
    let (status, body, took) = waiting.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["state"], "AUTHORIZED");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // Not reached: 408 after the timeout, naming the state it is in.
    let started = Instant::now();
    let resp = env
        .control(
            Method::GET,
            &format!("/_emulator/wait?reference={r}&state=TERMINATED&timeout=0.3"),
            None,
        )
        .await;
    let p = problem(resp, 408, None).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(p["detail"].as_str().unwrap().contains("AUTHORIZED"), "{p}");
    assert!(fields(&p).contains(&"current_state".to_owned()), "{p}");

    // A reference that never appears.
    let resp = env
        .control(
            Method::GET,
            "/_emulator/wait?reference=order-never-0001&state=CREATED&timeout=0.2",
            None,
        )
        .await;
    let p = problem(resp, 408, None).await;
    assert!(
        p["detail"].as_str().unwrap().contains("No aggregate"),
        "{p}"
    );
}

#[tokio::test]
async fn wait_reports_a_time_driven_change() {
    let env = start().await;
    let t = env.token().await;
    let r = "order-wait-0002";
    env.create(&t, r, 1000, "w2-create").await;
    let waiting = {
        let http = env.http.clone();
        let url = env.url(&format!(
            "/_emulator/wait?reference={r}&state=EXPIRED&timeout=20"
        ));
        tokio::spawn(async move { http.get(url).send().await.unwrap().json::<Value>().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Past the default expiry: the sweeper settles it, and the wait sees the change.
    let r2 = env
        .control(
            Method::POST,
            "/_emulator/clock/advance",
            Some(json!({"seconds": 3 * 86_400})),
        )
        .await;
    assert_eq!(r2.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the wait answered")
        .unwrap()
        .unwrap();
    assert_eq!(body["state"], "EXPIRED");
}

#[derive(Debug)]
struct BadQuery {
    path: &'static str,
    field: &'static str,
}

impl Case for BadQuery {
    fn name(&self) -> String {
        self.path.to_owned()
    }
}

#[tokio::test]
async fn bad_queries_name_the_field() {
    let env = start().await;
    let cases = [
        BadQuery {
            path: "/_emulator/wait?state=CREATED",
            field: "reference",
        },
        BadQuery {
            path: "/_emulator/wait?reference=order-x-0001",
            field: "state",
        },
        BadQuery {
            path: "/_emulator/wait?reference=order-x-0001&state=PAID",
            field: "state",
        },
        BadQuery {
            path: "/_emulator/wait?reference=order-x-0001&state=CREATED&timeout=soon",
            field: "timeout",
        },
        BadQuery {
            path: "/_emulator/wait?reference=order-x-0001&state=CREATED&timeout=601",
            field: "timeout",
        },
        BadQuery {
            path: "/_emulator/wait?reference=order-x-0001&state=CREATED&kind=nope",
            field: "kind",
        },
        BadQuery {
            path: "/_emulator/wait?reference=order-x-0001&state=CREATED&colour=red",
            field: "colour",
        },
        BadQuery {
            path: "/_emulator/events?type=everything",
            field: "type",
        },
        BadQuery {
            path: "/_emulator/events?ref=order-x-0001",
            field: "ref",
        },
    ];
    check_async(&cases, |c| {
        let env = &env;
        async move {
            let resp = env.control(Method::GET, c.path, None).await;
            expect_eq("status", resp.status().as_u16(), 400)?;
            expect_eq(
                "content type",
                resp.headers()["content-type"].to_str().unwrap().to_owned(),
                "application/problem+json".to_owned(),
            )?;
            let p: Value = resp.json().await.map_err(|e| e.to_string())?;
            expect_eq("fields", fields(&p), vec![c.field.to_owned()])
        }
    })
    .await;
}
