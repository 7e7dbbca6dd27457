//! The dashboard and the payer pages over HTTP: status codes and content types of every page, hostile merchant
//! input shown as text, the same-origin guard on state-changing forms, no secrets in any page, keyset pagination,
//! the QR image decoded and followed to the app screen, and Resend delivering an event again.

use reqwest::Method;
use serde_json::{Value, json};
use vipps_test_support::table::{Case, check_async, expect_eq};

use crate::common::*;
use crate::delivery::{Receiver, attempts_recorded, register};

const KIND: &str = "epayment.payment";

async fn html(env: &Env, path: &str) -> (u16, String, String) {
    let r = env
        .http
        .get(env.url(path))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

#[derive(Debug)]
struct Page {
    path: String,
    status: u16,
    contains: &'static str,
}

impl Case for Page {
    fn name(&self) -> String {
        self.path.clone()
    }
}

fn page(path: impl Into<String>, status: u16, contains: &'static str) -> Page {
    Page {
        path: path.into(),
        status,
        contains,
    }
}

#[tokio::test]
async fn every_page_answers_html_and_hostile_input_stays_text() {
    let env = start().await;
    let t = env.token().await;
    let hostile = "<script>alert('pwned')</script>";
    let mut body = create_body("order-dash-0001", 1000);
    body["paymentDescription"] = json!(hostile);
    let r = env
        .http
        .post(env.url("/epayment/v1/payments"))
        .bearer_auth(&t)
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Merchant-Serial-Number", MSN)
        .header("Vipps-System-Name", "<img src=x onerror=alert(1)>")
        .header("Idempotency-Key", "dash-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    let created: Value = r.json().await.unwrap();
    // A refused request: its problem body is in the record.
    env.create(&t, "order-dash-0001", 1000, "dash-2").await;
    let landing = created["redirectUrl"].as_str().unwrap().to_owned();
    let detail = format!("/_emulator/ui/aggregates/{KIND}/{MSN}/order-dash-0001");
    let pages = [
        page("/_emulator/", 200, "Emulator clock"),
        page("/_emulator/ui", 200, "Request servers"),
        page(
            format!("/_emulator/ui/aggregates/{KIND}"),
            200,
            "order-dash-0001",
        ),
        page(
            format!("/_emulator/ui/aggregates/{KIND}?state=CREATED&reference=order-dash"),
            200,
            "order-dash-0001",
        ),
        page(
            format!("/_emulator/ui/aggregates/{KIND}?state=AUTHORIZED"),
            200,
            "Nothing matches",
        ),
        page(&detail, 200, "Event timeline"),
        page(
            format!("/_emulator/ui/aggregates/{KIND}/{MSN}/order-none-0001"),
            404,
            "Not found",
        ),
        page("/_emulator/ui/aggregates/no.such.kind", 404, "Unknown kind"),
        page("/_emulator/ui/deliveries", 200, "Webhook deliveries"),
        page("/_emulator/ui/requests?status=409", 200, "Problem body"),
        page("/_emulator/ui/webhooks", 200, "Webhook registrations"),
        page("/_emulator/inbox/4712345678", 200, "No payment requests"),
        page(landing.trim_start_matches(&env.base), 200, "Next"),
        page(
            landing
                .trim_start_matches(&env.base)
                .replace("token=", "token=x"),
            403,
            "Not your payment",
        ),
    ];
    check_async(&pages, |p| {
        let env = &env;
        async move {
            let (status, ct, text) = html(env, &p.path).await;
            expect_eq("status", status, p.status)?;
            expect_eq("content type", ct.as_str(), "text/html; charset=utf-8")?;
            if !text.contains(p.contains) {
                return Err(format!("the page does not contain {:?}", p.contains));
            }
            if text.contains("<script>alert") || text.contains("<img src=x") {
                return Err("merchant input reached the page unescaped".into());
            }
            Ok(())
        }
    })
    .await;
    // The markup is there, as text.
    let (_, _, d) = html(&env, &detail).await;
    assert!(
        d.contains("&lt;script&gt;alert('pwned')&lt;/script&gt;"),
        "{d}"
    );
    let (_, _, req) = html(&env, "/_emulator/ui/requests").await;
    assert!(req.contains("&lt;img src=x onerror=alert(1)&gt;"), "{req}");
    // Programs still get JSON at /_emulator/.
    let r = env.control(Method::GET, "/_emulator/", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["dashboard"],
        "/_emulator/ui"
    );
}

async fn clock(env: &Env) -> f64 {
    let r = env.control(Method::GET, "/_emulator/clock", None).await;
    r.json::<Value>().await.unwrap()["offset_seconds"]
        .as_f64()
        .unwrap()
}

#[tokio::test]
async fn forms_refuse_cross_site_posts_and_pages_show_no_secrets() {
    let env = start().await;
    let t = env.token().await;
    let (_, secret) = register(&env, &t, "https://example.com/hooks").await;
    let before = clock(&env).await;
    let host = env.base.trim_start_matches("http://").to_owned();
    let post = |origin: &'static str, site: &'static str| {
        env.http
            .post(env.url("/_emulator/ui/clock/advance"))
            .header("Origin", origin)
            .header("Sec-Fetch-Site", site)
            .form(&[("seconds", "60"), ("return_to", "/_emulator/ui")])
            .send()
    };
    let r = post("https://evil.example", "cross-site").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(clock(&env).await, before, "a refused post changed nothing");
    let r = env
        .http
        .post(env.url("/_emulator/ui/request-servers/rotate"))
        .header("Origin", "http://localhost:1")
        .form(&[("pool", "test")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The same origin is allowed, and answers with a redirect back to the page.
    let own = format!("http://{host}");
    let r = env
        .http
        .post(env.url("/_emulator/ui/clock/advance"))
        .header("Origin", own.as_str())
        .header("Sec-Fetch-Site", "same-origin")
        .form(&[("seconds", "60"), ("return_to", "/_emulator/ui")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "followed the 303 back to the overview");
    assert!(clock(&env).await >= before + 60.0);
    // The payer's approve button is guarded too.
    let created: Value = env
        .create(&t, "order-dash-0002", 1000, "dash-3")
        .await
        .json()
        .await
        .unwrap();
    let q = url::Url::parse(created["redirectUrl"].as_str().unwrap()).unwrap();
    let mut form: Vec<(String, String)> = q.query_pairs().into_owned().collect();
    form.push(("action".into(), "approve".into()));
    let r = env
        .http
        .post(env.url("/_emulator/app"))
        .header("Origin", "https://evil.example")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // No page shows a secret: the client secret, the subscription key, the webhook secret or a token.
    for path in [
        "/_emulator/ui",
        "/_emulator/ui/webhooks",
        "/_emulator/ui/requests",
        "/_emulator/ui/deliveries",
        &format!("/_emulator/ui/aggregates/{KIND}"),
        &format!("/_emulator/ui/aggregates/{KIND}/{MSN}/order-dash-0002"),
    ] {
        let (status, _, text) = html(&env, path).await;
        assert_eq!(status, 200, "{path}");
        for s in ["demo-client-secret", KEY, secret.as_str(), t.as_str()] {
            assert!(!text.contains(s), "{path} shows a secret");
        }
    }
}

#[tokio::test]
async fn lists_page_by_keyset_without_gaps_or_repeats() {
    let env = start().await;
    let t = env.token().await;
    for i in 0..57 {
        let r = env
            .create(
                &t,
                &format!("order-page-{i:04}"),
                1000,
                &format!("page-{i}"),
            )
            .await;
        assert_eq!(r.status(), 201);
        // Creation times differ, so newest first is well defined (and ties are ordered by id anyway).
        env.control(
            Method::POST,
            "/_emulator/clock/advance",
            Some(json!({"seconds": 1})),
        )
        .await;
    }
    let refs = |text: &str| -> Vec<String> {
        text.match_indices(">order-page-")
            .map(|(i, _)| text[i + 1..i + 16].to_owned())
            .collect()
    };
    let (_, _, first) = html(&env, &format!("/_emulator/ui/aggregates/{KIND}")).await;
    let page1 = refs(&first);
    assert_eq!(page1.len(), 50);
    assert_eq!(page1[0], "order-page-0056", "newest first");
    let next = first
        .split("rel=\"next\" href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a next page link")
        .replace("&amp;", "&");
    let (_, _, second) = html(&env, &next).await;
    let page2 = refs(&second);
    assert_eq!(page2.len(), 7);
    assert_eq!(page2.last().unwrap(), "order-page-0000");
    assert!(!second.contains("rel=\"next\""), "no page after the last");
    let mut all: Vec<_> = page1.into_iter().chain(page2).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 57);
}

#[tokio::test]
async fn the_qr_image_decodes_to_the_app_screen_and_the_payer_approves_there() {
    let env = start().await;
    let t = env.token().await;
    let mut body = create_body("order-qr-000001", 1000);
    body["userFlow"] = json!("QR");
    body["qrFormat"] = json!({"format": "IMAGE/PNG", "size": 400});
    body.as_object_mut().unwrap().remove("returnUrl");
    let r = env
        .authed(Method::POST, "/epayment/v1/payments", &t)
        .header("Idempotency-Key", "qr-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let qr_url = created["redirectUrl"].as_str().unwrap();
    let r = env.http.get(qr_url).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    let png = r.bytes().await.unwrap();
    let link = decode_qr(&png);
    assert!(
        link.starts_with(&format!("{}/_emulator/app?", env.base)),
        "{link}"
    );
    // SVG when asked for.
    let r = env
        .http
        .get(qr_url)
        .header("Accept", "image/svg+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert!(r.text().await.unwrap().contains("<svg"));
    // The link opens the app screen; approving there authorizes the payment.
    let app = env
        .http
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(app.contains("order-qr-000001") && app.contains("Approve"));
    let mut form: Vec<(String, String)> = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    form.push(("action".into(), "approve".into()));
    let r = env
        .http
        .post(env.url("/_emulator/app"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("Payment approved"));
    let p: Value = env
        .get(&t, "/epayment/v1/payments/order-qr-000001")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(p["state"], "AUTHORIZED");
}

/// The text of the one QR code in a PNG image.
pub fn decode_qr(png_bytes: &[u8]) -> String {
    let dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.line_size / w;
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        buf[y * info.line_size + x * channels]
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

#[tokio::test]
async fn resend_delivers_the_event_again_as_a_new_attempt() {
    let env = start().await;
    let t = env.token().await;
    let rx = Receiver::start().await;
    register(&env, &t, &rx.url()).await;
    env.create(&t, "order-resend-01", 1000, "rs-1").await;
    rx.wait_for("order-resend-01", 1).await;
    let attempts = attempts_recorded(&env, "order-resend-01", 1).await;
    let id = attempts[0]["delivery_id"].as_i64().unwrap();
    let r = env
        .http
        .post(env.url(&format!("/_emulator/ui/deliveries/{id}/resend")))
        .form(&[("return_to", "/_emulator/ui/deliveries")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = rx.wait_for("order-resend-01", 2).await;
    assert_eq!(got[0].body, got[1].body, "the same event, signed again");
    let attempts = attempts_recorded(&env, "order-resend-01", 2).await;
    assert_ne!(
        attempts[1]["delivery_id"].as_i64().unwrap(),
        id,
        "a new delivery"
    );
    let r = env
        .http
        .post(env.url("/_emulator/ui/deliveries/999999/resend"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn recurring_agreements_and_charges_are_listed() {
    let env = start().await;
    let t = env.token().await;
    let body = json!({
        "pricing": {"type": "LEGACY", "amount": 2500, "currency": "NOK"},
        "interval": {"unit": "MONTH", "count": 1},
        "merchantRedirectUrl": "https://example.com/redirect",
        "merchantAgreementUrl": "https://example.com/agreement",
        "phoneNumber": "4791234567",
        "productName": "<b>MyNews</b> Digital",
        "initialCharge": {"amount": 1000, "description": "First month", "transactionType": "DIRECT_CAPTURE"}
    });
    let r = env
        .authed(Method::POST, "/recurring/v3/agreements", &t)
        .header("Idempotency-Key", "dash-agr-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let d: Value = r.json().await.unwrap();
    let agr = d["agreementId"].as_str().unwrap().to_owned();
    let chr = d["chargeId"].as_str().unwrap().to_owned();
    let confirm = d["vippsConfirmationUrl"].as_str().unwrap().to_owned();

    let (status, ct, list) = html(&env, "/_emulator/ui/aggregates/recurring.agreement").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ct, "text/html; charset=utf-8");
    assert!(list.contains(&agr), "{list}");
    assert!(
        list.contains("every 1 MONTH") && list.contains("4791234567"),
        "{list}"
    );
    assert!(
        !list.contains("<b>MyNews"),
        "merchant input unescaped: {list}"
    );

    let (status, _, filtered) = html(
        &env,
        "/_emulator/ui/aggregates/recurring.agreement?state=ACTIVE",
    )
    .await;
    assert_eq!(status, 200);
    assert!(!filtered.contains(&agr), "{filtered}");

    let detail = format!("/_emulator/ui/aggregates/recurring.agreement/{MSN}/{agr}");
    let (status, _, page) = html(&env, &detail).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&agr) && page.contains(&chr), "{page}");
    assert!(page.contains("&lt;b&gt;MyNews&lt;/b&gt; Digital"), "{page}");
    let confirm_html = confirm.replace('&', "&amp;");
    assert!(
        page.contains(&confirm_html) || page.contains(&confirm),
        "the confirmation page is linked: {page}"
    );

    let (status, _, charges) = html(&env, "/_emulator/ui/aggregates/recurring.charge").await;
    assert_eq!(status, 200, "{charges}");
    assert!(
        charges.contains(&chr) && charges.contains(&agr),
        "{charges}"
    );
    assert!(charges.contains("INITIAL"), "{charges}");
    let (status, _, c) = html(
        &env,
        &format!("/_emulator/ui/aggregates/recurring.charge/{MSN}/{chr}"),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    assert!(
        c.contains("First month") && c.contains("Event timeline"),
        "{c}"
    );

    // A kind no product has (the listing index of earlier versions) is 404, and no page links to it.
    let (status, _, _) = html(&env, "/_emulator/ui/aggregates/recurring.index").await;
    assert_eq!(status, 404);
    let (status, _, overview) = html(&env, "/_emulator/ui").await;
    assert_eq!(status, 200);
    assert!(
        overview.contains("/_emulator/ui/aggregates/recurring.agreement"),
        "{overview}"
    );
    assert!(
        !overview.contains("/_emulator/ui/aggregates/recurring.index"),
        "{overview}"
    );
}
