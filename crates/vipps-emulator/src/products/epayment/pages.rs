//! The payer's pages, served by the emulator like the vendor serves them: the landing page a `redirectUrl` opens
//! (merchant, amount, description, a phone number prefilled from `customer.phoneNumber`, "Next"), the emulated
//! app screen where the payer approves or rejects (with the amount and the profile data the merchant asked for),
//! then the way back to the merchant's `returnUrl`; the QR image of a `QR` payment (`qr.rs`), and the "app inbox"
//! where `PUSH_MESSAGE` payments appear per phone number. Expiry counts down on emulator time; an expired payment
//! says so, and the magic test amounts show what the app shows when an approval fails.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::api::{load_settled, path_reference};
use super::commands::{self, Modification};
use super::domain::{PState, Payment};
use crate::platform::Shared as S;
use crate::platform::html::{error_page, money, page, respond};
use crate::platform::http::RequestMeta;
use crate::platform::idempotency::run_write;
use crate::platform::store::{AggregateQuery, Op};

/// The payer's routes (behind the same-origin guard: approving is a state change).
pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/_emulator/landing", get(landing).post(act))
        .route("/_emulator/app", get(app).post(act))
        .route("/_emulator/qr", get(super::qr::qr))
        .route("/_emulator/inbox", get(inbox_form))
        .route("/_emulator/inbox/{phone}", get(inbox))
}

/// Which payment a payer page is about: the link carries its sales unit, reference and token.
#[derive(Debug, Deserialize)]
pub(super) struct PayerQuery {
    pub(super) msn: String,
    pub(super) reference: String,
    pub(super) token: String,
    /// The phone number the payer typed on the landing page.
    #[serde(default)]
    pub(super) phone: Option<String>,
}

/// The payment of a payer link, settled on emulator time; an HTML error page when the link is wrong.
pub(super) async fn payer_payment(
    s: &S,
    meta: &RequestMeta,
    q: &PayerQuery,
) -> Result<Arc<Payment>, Response> {
    let reference = path_reference(s, meta, &q.reference).map_err(|_| {
        error_page(
            400,
            "Not a payment link",
            "The link does not name a valid payment reference.",
        )
    })?;
    let p = load_settled(s, meta, &q.msn, &reference)
        .await
        .map_err(|e| {
            let status = e.into_response().status().as_u16();
            if status == 404 {
                error_page(
                    404,
                    "Payment not found",
                    "No payment matches this link. It may belong to another emulator.",
                )
            } else {
                error_page(
                    status,
                    "Something went wrong",
                    "The emulator could not load the payment; see its log.",
                )
            }
        })?;
    if p.token != q.token {
        return Err(error_page(
            403,
            "Not your payment",
            "The token in this link does not belong to the payment.",
        ));
    }
    Ok(p)
}

/// A link to one of the payer's pages for this payment.
pub(super) fn payer_link(s: &S, path: &str, p: &Payment, phone: Option<&str>) -> String {
    let mut u = s.base_url.join(path).expect("static path joins");
    u.query_pairs_mut()
        .append_pair("msn", &p.msn)
        .append_pair("reference", &p.reference)
        .append_pair("token", &p.token);
    if let Some(ph) = phone {
        u.query_pairs_mut().append_pair("phone", ph);
    }
    u.to_string()
}

fn amount(p: &Payment) -> String {
    money(p.amount, p.currency.code())
}

/// The merchant's name as the payer sees it.
fn merchant_name(p: &Payment) -> String {
    format!("Merchant {}", p.msn)
}

/// What the payer is told about a payment that can no longer be approved, if so.
fn final_notice(p: &Payment) -> Option<(&'static str, bool)> {
    match p.state {
        PState::Created if p.pending_until_ms.is_some() => Some((
            "The approval is being processed. The result will be known later.",
            true,
        )),
        PState::Created => None,
        PState::Authorized => Some(("Payment approved.", true)),
        PState::Aborted => Some(("You rejected this payment.", false)),
        PState::Expired => Some((
            "This payment has expired: it was not approved in time.",
            false,
        )),
        PState::Terminated => Some(("The merchant cancelled this payment.", false)),
    }
}

/// Seconds left until expiry on emulator time, with the script that counts down and reloads at zero (the page
/// then says the payment expired).
fn countdown(s: &S, p: &Payment) -> Markup {
    let left = ((p.expires_ms - s.clock.unix_ms()) / 1000).max(0);
    html! {
        p class="countdown" {
            "Time left to approve: "
            span id="countdown" data-seconds=(left) aria-live="off" { (format!("{}:{:02}", left / 60, left % 60)) }
            " (emulator time)"
        }
        script {
            (PreEscaped(r#"(function(){var el=document.getElementById('countdown');var n=+el.dataset.seconds;
    setInterval(function(){n-=1;if(n<=0){location.reload();return;}el.textContent=Math.floor(n/60)+':'+String(n%60).padStart(2,'0');},1000);})();"#))
        }
    }
}

fn summary(p: &Payment) -> Markup {
    html! {
        p class="merchant" { (merchant_name(p)) }
        p class="amount" data-testid="amount" { (amount(p)) }
        @if let Some(d) = &p.description { p class="description" { (d) } }
        p class="muted" { "Reference " span class="mono" { (p.reference) } " · " span class={"state state-" (p.state.as_str())} { (p.state.as_str()) } }
    }
}

fn notice(text: &str, ok: bool) -> Markup {
    html! { div class=@if ok { "notice ok" } @else { "notice" } role="status" { (text) } }
}

/// `GET /_emulator/landing`: the vendor's landing page.
async fn landing(State(s): State<S>, meta: RequestMeta, Query(q): Query<PayerQuery>) -> Response {
    let p = match payer_payment(&s, &meta, &q).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let content = html! {
        div class="phone" {
            div class="appbar" { "Vipps MobilePay" }
            (summary(&p))
            @if let Some((text, ok)) = final_notice(&p) {
                (notice(text, ok))
            } @else {
                form method="get" action="/_emulator/app" {
                    input type="hidden" name="msn" value=(p.msn);
                    input type="hidden" name="reference" value=(p.reference);
                    input type="hidden" name="token" value=(p.token);
                    label for="phone" { "Your phone number"
                        input id="phone" name="phone" type="tel" inputmode="numeric" autocomplete="tel"
                            pattern="[0-9]{8,15}" required value=(p.phone_number.as_deref().unwrap_or(""));
                    }
                    div class="actions" { button class="primary" type="submit" { "Next" } }
                }
                (countdown(&s, &p))
            }
        }
    };
    respond(
        200,
        page("Pay with Vipps MobilePay", "payer", None, content),
    )
}

/// The profile data a scope word stands for, with the emulated payer's value.
fn profile_item(word: &str, phone: &str) -> (&'static str, String) {
    match word {
        "name" => ("Name", "Ada Lovelace".into()),
        "address" => ("Address", "Robert Levins gate 5, 0154 Oslo, NO".into()),
        "email" => ("Email", "ada@example.com".into()),
        "phoneNumber" => ("Phone number", phone.to_owned()),
        "birthDate" => ("Birth date", "1990-12-10".into()),
        "nin" => ("National identity number", "10129012345".into()),
        _ => ("Other", word.to_owned()),
    }
}

fn app_screen(s: &S, p: &Payment, phone: &str, failure: Option<&str>) -> Markup {
    let content = html! {
        div class="phone" {
            div class="appbar" { "Vipps MobilePay app (emulated) · " (phone) }
            (summary(p))
            @if let Some(f) = failure {
                div class="notice" role="alert" { strong { "Payment failed. " } (f) }
            }
            @if let Some((text, ok)) = final_notice(p) {
                (notice(text, ok))
                @if let Some(u) = &p.return_url {
                    p { a class="button primary" href=(u) { "Back to the merchant" } }
                }
            } @else {
                @if let Some(scope) = &p.scope {
                    h2 { "The merchant asks for" }
                    dl class="fields" data-testid="profile" {
                        @for w in scope.split_whitespace() {
                            @let (label, value) = profile_item(w, phone);
                            dt { (label) } dd { (value) }
                        }
                    }
                }
                form method="post" action="/_emulator/app" {
                    input type="hidden" name="msn" value=(p.msn);
                    input type="hidden" name="reference" value=(p.reference);
                    input type="hidden" name="token" value=(p.token);
                    input type="hidden" name="phone" value=(phone);
                    div class="actions" {
                        button type="submit" name="action" value="reject" { "Reject" }
                        button class="primary" type="submit" name="action" value="approve" { "Approve " (amount(p)) }
                    }
                }
                (countdown(s, p))
            }
        }
    };
    page("Vipps MobilePay app", "payer", None, content)
}

/// `GET /_emulator/app`: the emulated app screen.
async fn app(State(s): State<S>, meta: RequestMeta, Query(q): Query<PayerQuery>) -> Response {
    let p = match payer_payment(&s, &meta, &q).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let phone = q
        .phone
        .clone()
        .filter(|p| !p.is_empty())
        .or_else(|| p.phone_number.clone())
        .unwrap_or_default();
    respond(200, app_screen(&s, &p, &phone, None))
}

/// `POST /_emulator/app` (and the landing page's older form): approve or reject, then back to the merchant.
async fn act(State(s): State<S>, meta: RequestMeta, bytes: Bytes) -> Response {
    let mut fields = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&bytes) {
        fields.insert(k.into_owned(), v.into_owned());
    }
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let q = PayerQuery {
        msn: get("msn"),
        reference: get("reference"),
        token: get("token"),
        phone: fields.get("phone").cloned().filter(|p| !p.is_empty()),
    };
    let p = match payer_payment(&s, &meta, &q).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let m = match get("action").as_str() {
        "approve" => Modification::PayerApprove {
            phone: q.phone.clone(),
        },
        "reject" => Modification::UserReject,
        _ => {
            return error_page(400, "Unknown action", "The form must approve or reject.");
        }
    };
    let cmd = commands::modify(&p.msn, &p.reference, m);
    let resp = match run_write(&s, &meta, Op::Execute(cmd)).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    super::facade::notify_followers(&s, &p.msn, &p.reference).await;
    let phone = q
        .phone
        .clone()
        .or_else(|| p.phone_number.clone())
        .unwrap_or_default();
    if !resp.status().is_success() {
        // The app's failure message: the problem's detail (the magic amounts say what the real app says).
        let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "The payment could not be completed.".into());
        let now = match payer_payment(&s, &meta, &q).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        return respond(200, app_screen(&s, &now, &phone, Some(&detail)));
    }
    match &p.return_url {
        Some(u) => Redirect::to(u).into_response(),
        None => Redirect::to(&payer_link(&s, "_emulator/app", &p, Some(&phone))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct InboxQuery {
    phone: Option<String>,
}

/// `GET /_emulator/inbox?phone=`: opens a phone's inbox.
async fn inbox_form(Query(q): Query<InboxQuery>) -> Response {
    match q.phone.filter(|p| !p.is_empty()) {
        Some(p) => {
            let enc: String = url::form_urlencoded::byte_serialize(p.as_bytes()).collect();
            Redirect::to(&format!("/_emulator/inbox/{enc}")).into_response()
        }
        None => respond(
            200,
            page(
                "App inbox",
                "payer",
                None,
                html! {
                    div class="phone" {
                        div class="appbar" { "Vipps MobilePay app (emulated)" }
                        form method="get" action="/_emulator/inbox" {
                            label for="phone" { "Phone number" input id="phone" name="phone" type="tel" required; }
                            div class="actions" { button class="primary" type="submit" { "Open inbox" } }
                        }
                    }
                },
            ),
        ),
    }
}

/// How many of the newest waiting payments the inbox looks through.
const INBOX_SCAN: usize = 2000;

/// `GET /_emulator/inbox/{phone}`: the push messages a phone has received: waiting `PUSH_MESSAGE` payments for
/// that number, newest first.
async fn inbox(State(s): State<S>, meta: RequestMeta, Path(phone): Path<String>) -> Response {
    let rows = match s
        .store
        .list_aggregates(&AggregateQuery {
            kind: <Payment as crate::platform::aggregate::Aggregate>::KIND.into(),
            state: Some(PState::Created.as_str().into()),
            limit: INBOX_SCAN,
            ..AggregateQuery::default()
        })
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(trace_id = %meta.trace_id, error = %e, "inbox");
            return error_page(500, "Something went wrong", "The inbox could not be read.");
        }
    };
    let now = s.clock.unix_ms();
    let waiting: Vec<Payment> = rows
        .iter()
        .filter_map(|r| serde_json::from_slice::<Payment>(&r.data).ok())
        .filter(|p| {
            p.user_flow == "PUSH_MESSAGE"
                && p.phone_number.as_deref() == Some(phone.as_str())
                && p.expires_ms > now
                && p.pending_until_ms.is_none()
        })
        .collect();
    let content = html! {
        div class="phone" {
            div class="appbar" { "Vipps MobilePay app (emulated) · " (phone) }
            h1 { "Inbox" }
            @if waiting.is_empty() {
                p class="muted" { "No payment requests waiting for " (phone) "." }
            }
            ul role="list" {
                @for p in &waiting {
                    li class="card" {
                        p class="merchant" { (merchant_name(p)) " requests " strong { (amount(p)) } }
                        @if let Some(d) = &p.description { p { (d) } }
                        a class="button primary" href=(payer_link(&s, "_emulator/app", p, Some(&phone))) { "Open payment " (p.reference) }
                    }
                }
            }
        }
    };
    respond(200, page("App inbox", "payer", None, content))
}
