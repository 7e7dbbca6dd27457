//! The machine interfaces over HTTP: Prometheus metrics parsed by a Prometheus text parser, the control API's
//! OpenAPI document validated by an OpenAPI 3.1 parser and checked against every registered control, the vendored
//! official specs, and the vendor's rate limits (429 after the documented count, with `Retry-After`, reset by
//! emulator time).

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use vipps_emulator::Config;
use vipps_test_support::platform::Receiver;
use vipps_test_support::table::{Case, check_async, expect_eq};

use crate::common::*;

/// A scrape, parsed by `prometheus-parse`.
async fn scrape(env: &Env) -> (String, prometheus_parse::Scrape) {
    let r = env.control(Method::GET, "/metrics", None).await;
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("a valid text exposition");
    (text, parsed)
}

/// The value of one sample: `name` with exactly these labels among its own.
fn sample(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => h.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

fn count(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(s, name, labels).unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_real_requests_and_carry_only_bounded_labels() {
    let env = start().await;
    let receiver = Receiver::start().await;
    let token = env.token().await;
    let (_, before) = scrape(&env).await;
    assert_eq!(
        count(
            &before,
            "vipps_emulator_aggregates",
            &[("kind", "payments"), ("state", "CREATED")]
        ),
        0.0,
        "declared states exist before the first payment"
    );

    let hook = env
        .post_json(
            &token,
            "/webhooks/v1/webhooks",
            None,
            json!({"url": format!("http://{}/hook", receiver.addr), "events": ["epayments.payment.created.v1"]}),
        )
        .await;
    assert_eq!(hook.status(), 201);
    let (paid, waiting) = ("metrics-paid-0001", "metrics-wait-0001");
    assert_eq!(env.create(&token, paid, 1000, "k-paid").await.status(), 201);
    assert_eq!(
        env.create(&token, waiting, 1000, "k-wait").await.status(),
        201
    );
    assert_eq!(env.approve(&token, paid).await.status(), 200);
    // A replay, a conflict (same key, other body), a read and an unknown route.
    assert_eq!(env.create(&token, paid, 1000, "k-paid").await.status(), 201);
    assert_eq!(env.create(&token, paid, 2000, "k-paid").await.status(), 409);
    assert_eq!(
        env.get(&token, &format!("/epayment/v1/payments/{paid}"))
            .await
            .status(),
        200
    );
    assert_eq!(env.get(&token, "/no/such/route").await.status(), 404);
    // An in-flight duplicate (the first create is slowed down by a fault): 423.
    let fault = json!({"method": "POST", "path": "/epayment/v1/payments", "times": 1, "action": "delay", "ms": 500});
    assert_eq!(
        env.control(Method::POST, "/_emulator/faults", Some(fault))
            .await
            .status(),
        201
    );
    let slow = env.create(&token, "metrics-slow-0001", 1000, "k-slow");
    let duplicate = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        env.create(&token, "metrics-slow-0001", 1000, "k-slow")
            .await
    };
    let (first, second) = tokio::join!(slow, duplicate);
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (201, 423)
    );
    let rotated = env
        .control(
            Method::POST,
            "/_emulator/request-servers/rotate",
            Some(json!({"pool": "test"})),
        )
        .await;
    assert_eq!(rotated.status(), 200);

    // Deliveries are asynchronous: wait (bounded) for the three `created` events to be recorded.
    let mut after = scrape(&env).await;
    for _ in 0..100 {
        if count(
            &after.1,
            "vipps_emulator_webhook_deliveries_total",
            &[("outcome", "delivered")],
        ) >= 3.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = scrape(&env).await;
    }
    let (text, m) = after;
    let route = |r: &'static str, method: &'static str, status: &'static str| {
        count(
            &m,
            "vipps_emulator_http_requests_total",
            &[("route", r), ("method", method), ("status", status)],
        )
    };
    let rows: Vec<(&str, f64, f64)> = vec![
        (
            "create 201",
            route("/epayment/v1/payments", "POST", "201"),
            4.0,
        ),
        (
            "create 423",
            route("/epayment/v1/payments", "POST", "423"),
            1.0,
        ),
        (
            "create 409",
            route("/epayment/v1/payments", "POST", "409"),
            1.0,
        ),
        (
            "get 200",
            route("/epayment/v1/payments/:reference", "GET", "200"),
            1.0,
        ),
        ("unmatched 404", route("unmatched", "GET", "404"), 1.0),
        ("token", route("/accesstoken/get", "POST", "200"), 1.0),
        (
            "payments AUTHORIZED",
            count(
                &m,
                "vipps_emulator_aggregates",
                &[("kind", "payments"), ("state", "AUTHORIZED")],
            ),
            1.0,
        ),
        (
            "payments CREATED",
            count(
                &m,
                "vipps_emulator_aggregates",
                &[("kind", "payments"), ("state", "CREATED")],
            ),
            2.0,
        ),
        (
            "replayed",
            count(
                &m,
                "vipps_emulator_idempotency_total",
                &[("outcome", "replayed")],
            ),
            1.0,
        ),
        (
            "conflict",
            count(
                &m,
                "vipps_emulator_idempotency_total",
                &[("outcome", "conflict")],
            ),
            1.0,
        ),
        (
            "in flight",
            count(
                &m,
                "vipps_emulator_idempotency_total",
                &[("outcome", "in_flight")],
            ),
            1.0,
        ),
        (
            "delivered",
            count(
                &m,
                "vipps_emulator_webhook_deliveries_total",
                &[("outcome", "delivered")],
            ),
            3.0,
        ),
        (
            "delivery latency observations",
            count(
                &m,
                "vipps_emulator_webhook_delivery_duration_seconds_count",
                &[],
            ),
            3.0,
        ),
        (
            "rotation of the test pool",
            count(
                &m,
                "vipps_emulator_request_server_rotations_total",
                &[("pool", "test"), ("trigger", "control")],
            ),
            1.0,
        ),
    ];
    let failures: Vec<String> = rows
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(name, got, want)| format!("{name}: got {got}, want {want}"))
        .collect();
    assert!(failures.is_empty(), "{}\n{text}", failures.join("\n"));
    assert!(
        count(
            &m,
            "vipps_emulator_http_request_duration_seconds_count",
            &[("route", "/epayment/v1/payments")]
        ) >= 4.0
    );
    assert!(
        count(
            &m,
            "vipps_emulator_store_commit_duration_seconds_count",
            &[]
        ) >= 1.0,
        "{text}"
    );
    assert!(
        count(&m, "vipps_emulator_store_commit_batch_size_sum", &[]) >= 4.0,
        "{text}"
    );

    // Bounded labels and no secrets: no reference, key, token or secret appears anywhere in the exposition.
    for leak in [
        paid,
        waiting,
        "k-paid",
        KEY,
        "demo-client-secret",
        token.as_str(),
        "/no/such/route",
    ] {
        assert!(!text.contains(leak), "the metrics contain {leak:?}");
    }
    let routes: BTreeSet<&str> = m
        .samples
        .iter()
        .filter_map(|s| s.labels.get("route"))
        .collect();
    for r in &routes {
        assert!(*r == "unmatched" || r.starts_with('/'), "route label {r:?}");
        assert!(!r.contains(['{', '}']), "route label {r:?}");
    }
    assert!(
        routes.contains("/epayment/v1/test/payments/:reference/approve"),
        "{routes:?}"
    );
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let env = start_with(Config {
        metrics: false,
        ..Config::ephemeral()
    })
    .await;
    assert_eq!(
        env.control(Method::GET, "/metrics", None).await.status(),
        404
    );
}

/// Routes under `/_emulator/` registered as plain routes, which are not JSON and so not in the document.
const NOT_JSON: &[(&str, &str)] = &[
    ("/_emulator", "the dashboard (HTML)"),
    ("/_emulator/", "the dashboard (HTML)"),
    ("/_emulator/ui", "the dashboard (HTML)"),
    ("/_emulator/ui/", "the dashboard (HTML)"),
    ("/_emulator/ui/aggregates/{kind}", "the dashboard (HTML)"),
    (
        "/_emulator/ui/aggregates/{kind}/{tenant}/{id}",
        "the dashboard (HTML)",
    ),
    ("/_emulator/ui/deliveries", "the dashboard (HTML)"),
    ("/_emulator/ui/requests", "the dashboard (HTML)"),
    ("/_emulator/ui/webhooks", "the dashboard (HTML)"),
    (
        "/_emulator/ui/events",
        "the dashboard's live updates (server-sent events)",
    ),
    (
        "/_emulator/ui/clock/advance",
        "a dashboard form (redirects)",
    ),
    (
        "/_emulator/ui/request-servers/rotate",
        "a dashboard form (redirects)",
    ),
    (
        "/_emulator/ui/request-servers/failover",
        "a dashboard form (redirects)",
    ),
    ("/_emulator/ui/faults", "a dashboard form (redirects)"),
    ("/_emulator/ui/faults/clear", "a dashboard form (redirects)"),
    (
        "/_emulator/ui/deliveries/{id}/resend",
        "a dashboard form (redirects)",
    ),
    ("/_emulator/tls/ca.pem", "the CA certificate (PEM)"),
    ("/_emulator/landing", "the payer's landing page (HTML)"),
    ("/_emulator/app", "the payer's app screen (HTML)"),
    ("/_emulator/qr", "the QR image (SVG, PNG or text)"),
    ("/_emulator/inbox", "the push inbox (HTML)"),
    ("/_emulator/inbox/{phone}", "the push inbox (HTML)"),
    (
        "/_emulator/recurring/confirm",
        "the agreement confirmation page (HTML)",
    ),
];

/// Every `.route("/_emulator…"` literal in the crate's sources: the routes registered without an OpenAPI
/// operation.
fn plain_control_routes() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut found = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            let arg = rest.trim_start();
            if let Some(lit) = arg.strip_prefix('"') {
                let path = &lit[..lit.find('"').unwrap()];
                if path.starts_with("/_emulator") {
                    found.insert(path.to_owned());
                }
            }
        }
    }
    found
}

/// A concrete path for a template (`{reference}` → a well-formed reference that does not exist).
fn concrete(template: &str) -> String {
    template
        .replace("{reference}", "openapi-probe-1")
        .replace("{agreement_id}", "agr_openapiprobe")
        .replace("{charge_id}", "chr_openapiprobe")
        .replace("{name}", "webhooks.v1.yml")
}

#[tokio::test]
async fn the_control_api_document_is_valid_openapi_31_and_covers_every_control() {
    let env = start().await;
    let r = env
        .control(Method::GET, "/_emulator/openapi.json", None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let text = r.text().await.unwrap();
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let doc: Value = serde_json::from_str(&text).unwrap();
    let paths = doc["paths"].as_object().expect("paths");

    // Every route registered as a plain route is a page, not JSON, and every documented path is under /_emulator/.
    let plain = plain_control_routes();
    let undocumented: Vec<&String> = plain
        .iter()
        .filter(|p| !paths.contains_key(p.as_str()) && !NOT_JSON.iter().any(|(n, _)| n == p))
        .collect();
    assert!(
        undocumented.is_empty(),
        "JSON controls missing from the document: {undocumented:?}"
    );
    let stale: Vec<&&str> = NOT_JSON
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !plain.contains(**n))
        .collect();
    assert!(
        stale.is_empty(),
        "listed as pages but not registered: {stale:?}"
    );
    for must in [
        "/_emulator/health",
        "/_emulator/clock/advance",
        "/_emulator/faults",
        "/_emulator/payments/{reference}",
        "/_emulator/recurring/due",
        "/_emulator/openapi.json",
        "/_emulator/specs/{name}",
    ] {
        assert!(paths.contains_key(must), "{must} is not documented");
    }

    // Every documented operation is served (the router knows it: no 404 "no API operation", no 405), has a
    // response, and every request body and JSON response names a schema.
    let mut failures = Vec::new();
    for (path, item) in paths {
        assert!(path.starts_with("/_emulator/"), "{path}");
        for (method, op) in item.as_object().unwrap() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            if op["responses"].as_object().is_none_or(|r| r.is_empty()) {
                failures.push(format!("{method} {path}: no responses"));
            }
            for (status, resp) in op["responses"].as_object().into_iter().flatten() {
                for (ct, media) in resp["content"].as_object().into_iter().flatten() {
                    if media.get("schema").is_none() {
                        failures.push(format!("{method} {path} {status} {ct}: no schema"));
                    }
                }
            }
            if let Some(body) = op.get("requestBody") {
                if body["content"]["application/json"]["schema"].is_null() {
                    failures.push(format!("{method} {path}: request body without a schema"));
                }
            }
            if m == Method::DELETE {
                continue; // would clear the fault rules; served, as `GET` on the same path shows
            }
            let resp = env.control(m.clone(), &concrete(path), None).await;
            let status = resp.status().as_u16();
            // The event stream never ends: its head is enough.
            let streaming = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let body = if streaming {
                String::new()
            } else {
                resp.text().await.unwrap_or_default()
            };
            if status == 405 || (status == 404 && body.contains("No API operation")) {
                failures.push(format!("{method} {path}: not served ({status} {body})"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn the_vendored_official_specs_are_served() {
    let env = start().await;
    let r = env.control(Method::GET, "/_emulator/specs", None).await;
    assert_eq!(r.status(), 200);
    let list: Vec<Value> = r.json().await.unwrap();
    let names: BTreeSet<&str> = list.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "checkout.v3.yml",
            "epayment.v1.yml",
            "recurring.v3.yml",
            "webhooks.v1.yml"
        ])
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    for s in &list {
        let name = s["name"].as_str().unwrap();
        let url = s["url"].as_str().unwrap();
        let r = env.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/yaml")
        );
        let served = r.text().await.unwrap();
        assert_eq!(
            served,
            std::fs::read_to_string(dir.join(name)).unwrap(),
            "{name}"
        );
        assert!(served.starts_with("openapi: 3.0"), "{name}");
    }
    let missing = env
        .control(Method::GET, "/_emulator/specs/nope.yml", None)
        .await;
    let p = problem(missing, 404, None).await;
    assert_eq!(fields(&p), vec!["name"]);
}

/// One documented limit: `limit` requests are let through in a minute of emulator time, the next is refused.
#[derive(Debug)]
struct Limit {
    name: &'static str,
    method: Method,
    path: &'static str,
    /// Another key of the same limit, counted apart (a path-keyed limit only).
    other: Option<&'static str>,
    limit: u32,
    body: Option<Value>,
    /// The Recurring `Idempotency-Key` (a charge's create counts per agreement and key).
    idem: Option<&'static str>,
}

impl Case for Limit {
    fn name(&self) -> String {
        format!("{} ({} {})", self.name, self.method, self.path)
    }
}

fn limits() -> Vec<Limit> {
    let l = |name, method, path, other, limit| Limit {
        name,
        method,
        path,
        other,
        limit,
        body: None,
        idem: None,
    };
    let capture = json!({"modificationAmount": {"currency": "NOK", "value": 100}});
    vec![
        Limit {
            body: Some(create_body("limited-create-1", 1000)),
            idem: Some("limited-create-key"),
            ..l(
                "ePayment create",
                Method::POST,
                "/epayment/v1/payments",
                None,
                5,
            )
        },
        Limit {
            body: Some(capture.clone()),
            ..l(
                "ePayment capture",
                Method::POST,
                "/epayment/v1/payments/limited-ref-1/capture",
                Some("/epayment/v1/payments/limited-ref-2/capture"),
                5,
            )
        },
        Limit {
            body: Some(capture.clone()),
            ..l(
                "ePayment refund",
                Method::POST,
                "/epayment/v1/payments/limited-ref-1/refund",
                None,
                5,
            )
        },
        l(
            "ePayment cancel",
            Method::POST,
            "/epayment/v1/payments/limited-ref-1/cancel",
            None,
            5,
        ),
        l(
            "ePayment get",
            Method::GET,
            "/epayment/v1/payments/limited-ref-1",
            Some("/epayment/v1/payments/limited-ref-2"),
            120,
        ),
        l(
            "ePayment events",
            Method::GET,
            "/epayment/v1/payments/limited-ref-1/events",
            None,
            120,
        ),
        l(
            "Recurring list agreements",
            Method::GET,
            "/recurring/v3/agreements",
            None,
            5,
        ),
        l(
            "Recurring draft agreement",
            Method::POST,
            "/recurring/v3/agreements",
            None,
            300,
        ),
        l(
            "Recurring fetch agreement",
            Method::GET,
            "/recurring/v3/agreements/agr_limited1",
            Some("/recurring/v3/agreements/agr_limited2"),
            120,
        ),
        l(
            "Recurring update agreement",
            Method::PATCH,
            "/recurring/v3/agreements/agr_limited1",
            None,
            5,
        ),
        Limit {
            idem: Some("limited-charge-key"),
            ..l(
                "Recurring create charge",
                Method::POST,
                "/recurring/v3/agreements/agr_limited1/charges",
                None,
                2,
            )
        },
        l(
            "Recurring list charges",
            Method::GET,
            "/recurring/v3/agreements/agr_limited1/charges",
            None,
            10,
        ),
        l(
            "Recurring fetch charge",
            Method::GET,
            "/recurring/v3/agreements/agr_limited1/charges/chr_limited1",
            Some("/recurring/v3/agreements/agr_limited1/charges/chr_limited2"),
            10,
        ),
        l(
            "Recurring cancel charge",
            Method::DELETE,
            "/recurring/v3/agreements/agr_limited1/charges/chr_limited1",
            None,
            5,
        ),
        l(
            "Recurring capture charge",
            Method::POST,
            "/recurring/v3/agreements/agr_limited1/charges/chr_limited1/capture",
            None,
            5,
        ),
        l(
            "Recurring refund charge",
            Method::POST,
            "/recurring/v3/agreements/agr_limited1/charges/chr_limited1/refund",
            None,
            5,
        ),
        l(
            "Recurring fetch charge by id",
            Method::GET,
            "/recurring/v3/charges/chr_limited1",
            None,
            100,
        ),
    ]
}

async fn send(env: &Env, token: &str, c: &Limit, path: &str) -> reqwest::Response {
    let mut b = env.authed(c.method.clone(), path, token);
    if let Some(body) = &c.body {
        b = b.json(body);
    }
    if let Some(k) = c.idem {
        b = b.header("Idempotency-Key", k);
    }
    b.send().await.unwrap()
}

#[tokio::test]
async fn the_documented_rate_limits_answer_429_with_retry_after_and_reset_on_emulator_time() {
    let env = start_with(Config {
        rate_limits: true,
        ..Config::ephemeral()
    })
    .await;
    let token = env.token().await;
    let cases = limits();
    check_async(&cases, |c| {
        let (env, token) = (&env, &token);
        async move {
            for i in 0..c.limit {
                let r = send(env, token, c, c.path).await;
                if r.status() == 429 {
                    return Err(format!("request {} of {} refused", i + 1, c.limit));
                }
            }
            let r = send(env, token, c, c.path).await;
            expect_eq("status after the limit", r.status().as_u16(), 429)?;
            let retry_after: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            if !(1..=60).contains(&retry_after) {
                return Err(format!("Retry-After {retry_after}"));
            }
            expect_eq(
                "content type",
                r.headers()["content-type"].to_str().unwrap(),
                "application/problem+json",
            )?;
            let p: Value = r.json().await.unwrap();
            expect_eq("problem status", p["status"].as_u64(), Some(429))?;
            if let Some(other) = c.other {
                let r = send(env, token, c, other).await;
                if r.status() == 429 {
                    return Err("another key of the same limit was refused".into());
                }
            }
            Ok(())
        }
    })
    .await;
    let advanced = env
        .control(
            Method::POST,
            "/_emulator/clock/advance",
            Some(json!({"seconds": 60})),
        )
        .await;
    assert_eq!(advanced.status(), 200);
    check_async(&cases, |c| {
        let (env, token) = (&env, &token);
        async move {
            let r = send(env, token, c, c.path).await;
            if r.status() == 429 {
                return Err("still refused a minute of emulator time later".into());
            }
            Ok(())
        }
    })
    .await;
    // The 429s are in the request record, like any answer.
    assert!(!env.requests("status=429").await.is_empty());
    // A create whose reference the limiter reads from the body: a body over the size limit is refused as the
    // handler would refuse it.
    let huge = json!({"reference": "limited-huge-1", "padding": "x".repeat(2 * 1024 * 1024)});
    let r = env
        .post_json(&token, "/epayment/v1/payments", Some("huge-key"), huge)
        .await;
    let p = problem(r, 413, None).await;
    assert_eq!(fields(&p), vec!["body"]);
}

#[tokio::test]
async fn rate_limits_are_off_by_default() {
    let env = start().await;
    let token = env.token().await;
    for _ in 0..10 {
        let r = env
            .get(&token, "/epayment/v1/payments/unlimited-ref-1")
            .await;
        assert_eq!(r.status(), 404);
    }
}
