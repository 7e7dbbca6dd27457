//! The payer pages and the dashboard in a real browser: Debian's Chromium, headless, driven by Playwright
//! (`playwright-core`, pinned in `tests/browser/package.json`, installed with `npm ci` from the committed lockfile;
//! no browser download). The flow and its checks live in `tests/browser/run.mjs`: pay through the landing page with
//! a changed phone number and come back to the shop, reject, a magic amount's failure in the app, the push inbox,
//! expiry on emulator time ("+1 day" on the dashboard), rotating a request server and its DNS answer, fault rules,
//! payment filters and pagination, a payment's timeline, replays and deliveries, **Resend** arriving at the shop's
//! receiver and appearing live, and a Checkout session completed on the hosted page (details typed in, a shipping
//! option chosen, back at the shop, the callback received). This test starts the emulator and the shop, creates the payments, runs the script,
//! then decodes the QR code the browser rendered and follows it. Screenshots of every page are left in
//! `target/tmp/browser/` (`VIPPS_UPDATE_SCREENSHOT=1` also copies the dashboard's to `docs/dashboard.png`).
//!
//! Without Chromium (`/usr/bin/chromium`, or `CHROMIUM`), `node` or the npm registry the test is skipped with a
//! message, unless `CI` is set: then it fails.
#![allow(clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::process::Command;
use vipps_emulator::{Config, Emulator};

const MSN: &str = "123456";
const KEY: &str = "demo-subscription-key";
const BULK: usize = 60;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("browser")
}

/// A missing prerequisite: fails under `CI`, skips (with the reason) otherwise.
fn unavailable(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("the browser test cannot run and CI is set: {reason}");
    }
    eprintln!("SKIPPED browser test: {reason} (set CI=1 to make this a failure)");
}

async fn output(cmd: &mut Command, limit: Duration) -> Result<std::process::Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(limit, cmd.output()).await {
        Err(_) => Err(format!("{cmd:?} did not finish within {limit:?}")),
        Ok(Err(e)) => Err(format!("{cmd:?} could not be started: {e}")),
        Ok(Ok(o)) => Ok(o),
    }
}

/// Node and the pinned playwright-core (installed with `npm ci` when missing or stale).
async fn prepare(dir: &Path) -> Result<(), String> {
    let node = output(
        Command::new("node").arg("--version"),
        Duration::from_secs(20),
    )
    .await?;
    if !node.status.success() {
        return Err("`node --version` failed".into());
    }
    let pinned: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("package.json")).unwrap()).unwrap();
    let want = pinned["dependencies"]["playwright-core"]
        .as_str()
        .unwrap()
        .to_owned();
    let installed = std::fs::read_to_string(dir.join("node_modules/playwright-core/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned));
    if installed.as_deref() == Some(want.as_str())
        && dir.join("node_modules/.package-lock.json").is_file()
    {
        return Ok(());
    }
    eprintln!("installing playwright-core@{want} with `npm ci` ...");
    let out = output(
        Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--prefer-offline",
                "--loglevel=error",
            ])
            .current_dir(dir),
        Duration::from_secs(240),
    )
    .await?;
    if !out.status.success() {
        return Err(format!(
            "`npm ci` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The shop: a webhook receiver and the page the payer returns to.
#[derive(Default)]
struct Shop {
    hooks: Mutex<Vec<Value>>,
}

async fn hook(State(s): State<Arc<Shop>>, body: axum::body::Bytes) -> http::StatusCode {
    if let Ok(v) = serde_json::from_slice(&body) {
        s.hooks.lock().push(v);
    }
    http::StatusCode::OK
}

async fn back_at_the_shop() -> axum::response::Html<&'static str> {
    axum::response::Html("<!doctype html><title>Shop</title><h1>Back at the shop</h1>")
}

async fn start_shop() -> (SocketAddr, Arc<Shop>) {
    let shop = Arc::new(Shop::default());
    let app = Router::new()
        .route("/hooks", post(hook))
        .route("/return", get(back_at_the_shop))
        .with_state(shop.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, shop)
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn new(base: &str) -> Api {
        let http = reqwest::Client::new();
        let r: Value = http
            .post(format!("{base}/accesstoken/get"))
            .header("client_id", "demo-client-id")
            .header("client_secret", "demo-client-secret")
            .header("Ocp-Apim-Subscription-Key", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Api {
            http,
            base: base.to_owned(),
            token: r["access_token"].as_str().unwrap().to_owned(),
        }
    }

    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
        let mut b = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Ocp-Apim-Subscription-Key", KEY)
            .header("Merchant-Serial-Number", MSN)
            .header("Vipps-System-Name", "browser-shop")
            .header("Vipps-System-Version", "1.0.0")
            .json(&body);
        if let Some(k) = key {
            b = b.header("Idempotency-Key", k);
        }
        let r = b.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or_default())
    }

    async fn create(&self, key: &str, body: Value) -> Value {
        let (status, v) = self.post("/epayment/v1/payments", Some(key), body).await;
        assert_eq!(status, 201, "create: {v}");
        v
    }
}

fn payment(reference: &str, value: i64, flow: &str, return_url: Option<&str>) -> Value {
    let mut b = json!({
        "amount": {"currency": "NOK", "value": value},
        "paymentMethod": {"type": "WALLET"},
        "reference": reference,
        "userFlow": flow,
    });
    if let Some(u) = return_url {
        b["returnUrl"] = json!(u);
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payer_pages_and_dashboard_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).is_file() {
        return unavailable(&format!(
            "no Chromium at {chromium} (Debian package `chromium`; .ci/run installs it)"
        ));
    }
    let dir = dir();
    if let Err(why) = prepare(&dir).await {
        return unavailable(&why);
    }
    let emu = Emulator::start(Config::ephemeral()).await.unwrap();
    let base = emu.base_url().to_string().trim_end_matches('/').to_owned();
    let (shop_addr, shop) = start_shop().await;
    let api = Api::new(&base).await;
    let (status, _) = api
        .post(
            "/webhooks/v1/webhooks",
            None,
            json!({"url": format!("http://{shop_addr}/hooks"), "events": vipps_types::webhooks::epayment_event_types()}),
        )
        .await;
    assert_eq!(status, 201);
    let return_url = |r: &str| format!("http://{shop_addr}/return?order={r}");

    // The payment paid through the landing page: phone, scope, a description with markup.
    let mut pay = payment(
        "browser-pay-0001",
        24900,
        "WEB_REDIRECT",
        Some(&return_url("browser-pay-0001")),
    );
    pay["customer"] = json!({"phoneNumber": "4791234567"});
    pay["profile"] = json!({"scope": "name email phoneNumber"});
    pay["paymentDescription"] = json!("Two tickets <b>not bold</b>");
    let paid = api.create("browser-pay-key", pay.clone()).await;
    // A replay of the same create, which the detail page marks.
    let (status, _) = api
        .post("/epayment/v1/payments", Some("browser-pay-key"), pay)
        .await;
    assert_eq!(status, 201);
    let rejected = api
        .create(
            "browser-reject",
            payment(
                "browser-reject-01",
                1000,
                "WEB_REDIRECT",
                Some(&return_url("browser-reject-01")),
            ),
        )
        .await;
    let magic = api
        .create(
            "browser-magic",
            payment(
                "browser-magic-01",
                151,
                "WEB_REDIRECT",
                Some(&return_url("browser-magic-01")),
            ),
        )
        .await;
    let expiring = api
        .create(
            "browser-expire",
            payment(
                "browser-expire-01",
                1000,
                "WEB_REDIRECT",
                Some(&return_url("browser-expire-01")),
            ),
        )
        .await;
    let qr = api
        .create("browser-qr", payment("browser-qr-000001", 1000, "QR", None))
        .await;
    let mut push = payment("browser-push-0001", 1000, "PUSH_MESSAGE", None);
    push["customer"] = json!({"phoneNumber": "4798765432"});
    api.create("browser-push", push).await;
    for i in 0..BULK {
        api.create(
            &format!("browser-bulk-{i}"),
            payment(
                &format!("bulk-{i:04}-order"),
                1000,
                "WEB_REDIRECT",
                Some(&return_url("bulk")),
            ),
        )
        .await;
    }

    // A checkout session whose user types in what was not prefilled and picks a shipping option.
    let checkout_ref = "browser-checkout-01";
    let r = reqwest::Client::new()
        .post(format!("{base}/checkout/v3/session"))
        .header("client_id", "demo-client-id")
        .header("client_secret", "demo-client-secret")
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Merchant-Serial-Number", MSN)
        .json(&json!({
            "merchantInfo": {
                "callbackUrl": format!("http://{shop_addr}/hooks"),
                "returnUrl": return_url(checkout_ref),
                "callbackAuthorizationToken": "browser-callback-token"
            },
            "transaction": {
                "amount": {"value": 14900, "currency": "NOK"},
                "reference": checkout_ref,
                "paymentDescription": "A <i>scarf</i>"
            },
            "logistics": {"fixedOptions": [
                {"brand": "POSTEN", "amount": {"value": 9900, "currency": "NOK"}, "id": "home", "priority": 0, "isDefault": true},
                {"brand": "OTHER", "title": "Pick up in store", "amount": {"value": 0, "currency": "NOK"}, "id": "store", "priority": 1, "isDefault": false}
            ]},
            "prefillCustomer": {"firstName": "Kari"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let session: Value = r.json().await.unwrap();
    let checkout_page = format!(
        "{}?token={}",
        session["checkoutFrontendUrl"].as_str().unwrap(),
        session["token"].as_str().unwrap()
    );

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let cfg = json!({
        "chromium": chromium,
        "base": base,
        "out": out,
        "bulk": BULK,
        "pay": {"landing": paid["redirectUrl"], "reference": "browser-pay-0001", "key": "browser-pay-key", "returnUrl": return_url("browser-pay-0001")},
        "reject": {"landing": rejected["redirectUrl"], "reference": "browser-reject-01", "returnUrl": return_url("browser-reject-01")},
        "magic": {"landing": magic["redirectUrl"]},
        "expire": {"landing": expiring["redirectUrl"]},
        "qr": {"redirectUrl": qr["redirectUrl"]},
        "push": {"phone": "4798765432", "reference": "browser-push-0001"},
        "checkout": {"page": checkout_page, "reference": checkout_ref},
    });
    let run = output(
        Command::new("node")
            .arg("run.mjs")
            .env("BROWSER_TEST", cfg.to_string())
            .current_dir(&dir),
        Duration::from_secs(240),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the browser script failed:\n{stdout}\n{stderr}"
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    eprintln!("browser summary: {summary}");
    assert!(summary["checks"].as_u64().unwrap() >= 25);

    // The QR code as Chromium drew it decodes to the app screen of that payment, and the link opens it.
    let link = decode_qr(&std::fs::read(out.join("qr.png")).unwrap());
    assert!(
        link.starts_with(&format!("{base}/_emulator/app?")) && link.contains("browser-qr-000001"),
        "{link}"
    );
    let app = reqwest::get(&link).await.unwrap().text().await.unwrap();
    assert!(app.contains("browser-qr-000001"));

    // The resent event arrived at the shop again: the AUTHORIZED or CREATED event of the paid payment, twice.
    let hooks = shop.hooks.lock().clone();
    let of_paid: Vec<_> = hooks
        .iter()
        .filter(|h| h["reference"] == "browser-pay-0001")
        .collect();
    assert!(
        of_paid.len() >= 3,
        "created, authorized and a resend: {of_paid:?}"
    );
    let mut names: Vec<_> = of_paid
        .iter()
        .map(|h| h["pspReference"].to_string())
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() < of_paid.len(), "one event arrived twice");

    // The checkout completed in the browser: the session has what the user typed and chose, and the shop got the
    // callback with its token.
    let r = reqwest::Client::new()
        .get(format!("{base}/checkout/v3/session/{checkout_ref}"))
        .header("client_id", "demo-client-id")
        .header("client_secret", "demo-client-secret")
        .header("Ocp-Apim-Subscription-Key", KEY)
        .header("Merchant-Serial-Number", MSN)
        .send()
        .await
        .unwrap();
    let s: Value = r.json().await.unwrap();
    assert_eq!(s["sessionState"], "PaymentSuccessful", "{s}");
    assert_eq!(s["billingDetails"]["firstName"], "Kari");
    assert_eq!(s["billingDetails"]["lastName"], "Nordmann");
    assert_eq!(s["shippingDetails"]["shippingMethodId"], "store");
    let mut called = false;
    for _ in 0..200 {
        called =
            shop.hooks.lock().iter().any(|h| {
                h["reference"] == checkout_ref && h["sessionState"] == "PaymentSuccessful"
            });
        if called {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(called, "the checkout callback reached the shop");

    if std::env::var_os("VIPPS_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard.png");
        std::fs::copy(out.join("dashboard.png"), docs).unwrap();
    }
    emu.shutdown().await;
}

/// The text of the one QR code in a PNG screenshot (RGB or RGBA).
fn decode_qr(png_bytes: &[u8]) -> String {
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
    assert_eq!(grids.len(), 1, "one QR code in the screenshot");
    grids[0].decode().unwrap().1
}
