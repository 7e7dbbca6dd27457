//! The hosted checkout page (`checkoutFrontendUrl?token=<token>`): the merchant, the amount (or the
//! subscription), the user's details (prefilled from `prefillCustomer`, or typed in), shipping options (fixed, or
//! asked from the merchant's dynamic-logistics callback for the address on the page), the custom consent box,
//! and Approve or Abort; then back to `returnUrl`. Opening it moves the session to `PaymentInitiated`.
//!
//! What the form shows follows `configuration.elements`: `PaymentOnly` asks only for a phone number,
//! `PaymentAndContactInfo` adds name and e-mail, `Full` (the default) adds the address and shipping.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;
use vipps_types::checkout::{LogisticsCallbackRequest, LogisticsOption};

use super::domain::{Kind, SState, Session, UserDetails};
use super::flow::{self, UserAction};
use super::render;
use crate::platform::Shared as S;
use crate::platform::html::{error_page, money, page, respond};
use crate::platform::http::RequestMeta;

/// The page's route (behind the same-origin guard: approving is a state change).
pub(super) fn routes() -> Router<S> {
    Router::new().route(&format!("/{}", render::FRONTEND_PATH), get(show).post(act))
}

/// What the page's forms send (the GET form re-asks for shipping options for a typed address).
#[derive(Debug, Default, Deserialize)]
struct Form {
    #[serde(default)]
    token: String,
    #[serde(default)]
    action: Option<String>,
    #[serde(default, rename = "firstName")]
    first_name: Option<String>,
    #[serde(default, rename = "lastName")]
    last_name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default, rename = "phoneNumber")]
    phone_number: Option<String>,
    #[serde(default, rename = "streetAddress")]
    street_address: Option<String>,
    #[serde(default, rename = "postalCode")]
    postal_code: Option<String>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    shipping: Option<String>,
    #[serde(default)]
    consent: Option<String>,
}

/// A radio button or checkbox with its text on one line (the shared stylesheet sizes inputs for text).
const OPTION: &str = "display:flex;flex-direction:row;align-items:center;gap:.5rem;margin:.4rem 0";
const BOX: &str = "width:auto;margin:0";

fn full(s: &Session) -> bool {
    !matches!(
        s.config.elements.as_ref().map(|e| e.as_str()),
        Some("PaymentOnly") | Some("PaymentAndContactInfo")
    )
}

fn contact(s: &Session) -> bool {
    !matches!(
        s.config.elements.as_ref().map(|e| e.as_str()),
        Some("PaymentOnly")
    )
}

/// The session a token names, with its secret checked; an HTML error page otherwise.
async fn session_of(s: &S, meta: &RequestMeta, token: &str) -> Result<flow::Loaded, Response> {
    let Some((msn, reference, secret)) = render::parse_token(token) else {
        return Err(error_page(
            400,
            "Not a checkout link",
            "Open the checkout with the token the merchant got: checkoutFrontendUrl?token=<token>.",
        ));
    };
    let loaded = flow::load(s, meta, msn, reference).await.map_err(|_| {
        error_page(
            500,
            "Something went wrong",
            "The emulator could not load the session; see its log.",
        )
    })?;
    let Some(l) = loaded else {
        return Err(error_page(
            404,
            "Checkout not found",
            "No checkout session matches this link. It may belong to another emulator.",
        ));
    };
    if l.session.token.0 != secret {
        return Err(error_page(
            403,
            "Not your checkout",
            "The token in this link does not belong to the session.",
        ));
    }
    Ok(l)
}

/// The details on the form: what was typed, else what was prefilled.
fn typed(f: &Form, s: &Session) -> UserDetails {
    let p = s.prefill.clone().unwrap_or_default();
    let pick = |typed: &Option<String>, pre: Option<String>| {
        typed
            .clone()
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim().to_owned())
            .or(pre)
            .unwrap_or_default()
    };
    let opt = |v: String| (!v.is_empty()).then_some(v);
    UserDetails {
        first_name: pick(&f.first_name, p.first_name),
        last_name: pick(&f.last_name, p.last_name),
        email: pick(&f.email, p.email),
        phone_number: pick(&f.phone_number, p.phone_number),
        street_address: opt(pick(&f.street_address, p.street_address)),
        postal_code: opt(pick(&f.postal_code, p.postal_code)),
        city: opt(pick(&f.city, p.city)),
        country: opt(pick(&f.country, p.country)),
        shipping: None,
        consent: s
            .config
            .custom_consent
            .as_ref()
            .map(|_| f.consent.is_some()),
    }
}

/// The address to ask shipping options for, when the form (or the prefill) has a whole one.
fn address(d: &UserDetails) -> Option<LogisticsCallbackRequest> {
    Some(LogisticsCallbackRequest {
        street_address: d.street_address.clone()?,
        postal_code: d.postal_code.clone()?,
        region: d.city.clone()?,
        country: d.country.clone()?,
    })
}

fn option_label(o: &LogisticsOption) -> String {
    let name = o
        .title
        .clone()
        .unwrap_or_else(|| o.brand.as_str().to_owned());
    let price = o
        .amount
        .as_ref()
        .map(|a| money(a.value, &a.currency))
        .unwrap_or_else(|| "price on delivery".into());
    match &o.description {
        Some(d) => format!("{name} · {price} · {d}"),
        None => format!("{name} · {price}"),
    }
}

fn field(label: &str, name: &str, kind: &str, value: &str, required: bool) -> Markup {
    html! {
        label for=(name) { (label)
            input id=(name) name=(name) type=(kind) value=(value) required[required];
        }
    }
}

/// The page for a session.
async fn render_page(s: &S, l: &flow::Loaded, f: &Form, failure: Option<&str>) -> Markup {
    let session = &l.session;
    let token = render::token(session);
    let d = typed(f, session);
    let (options, source) = if full(session) {
        flow::shipping_options(s, session, address(&d)).await
    } else {
        (Vec::new(), "none")
    };
    let chosen = f
        .shipping
        .clone()
        .or_else(|| flow::default_option(&options).map(|o| o.id.clone()));
    let amount = session.amount.as_ref().map(|a| money(a.value, &a.currency));
    let content = html! {
        div class="phone" {
            div class="appbar" { "Vipps MobilePay Checkout (emulated)" }
            p class="merchant" { "Merchant " (session.msn) }
            @if let Some(a) = &amount { p class="amount" data-testid="amount" { (a) } }
            @if let Some(desc) = &session.description { p class="description" { (desc) } }
            @if let Some(sub) = &session.subscription {
                div data-testid="subscription" {
                    p { strong { (sub.product_name) } }
                    p { (money(sub.amount.value, &sub.amount.currency)) " every " (sub.interval.count) " " (sub.interval.unit.to_lowercase()) }
                    @if let Some(pd) = &sub.product_description { p class="description" { (pd) } }
                }
            }
            p class="muted" { "Reference " span class="mono" { (session.reference) } " · "
                span class="state" data-testid="state" { (session.state.as_str()) } }
            @if let Some(msg) = failure {
                div class="notice" role="alert" { strong { "Not completed. " } (msg) }
            }
            @if !session.state.open() {
                div class=@if session.state == SState::Successful { "notice ok" } @else { "notice" } role="status" {
                    @match session.state {
                        SState::Successful => "Thank you! The checkout is complete.",
                        SState::Expired => "This checkout has expired.",
                        _ => "This checkout was not completed.",
                    }
                }
                p { a class="button primary" href=(session.merchant_info.return_url) { "Back to the merchant" } }
            } @else {
                form method="get" action={"/" (render::FRONTEND_PATH)} data-testid="details" {
                    input type="hidden" name="token" value=(token);
                    @if contact(session) {
                        (field("First name", "firstName", "text", &d.first_name, true))
                        (field("Last name", "lastName", "text", &d.last_name, true))
                        (field("E-mail", "email", "email", &d.email, true))
                    }
                    (field("Phone number", "phoneNumber", "tel", &d.phone_number, true))
                    @if full(session) {
                        (field("Street address", "streetAddress", "text", d.street_address.as_deref().unwrap_or(""), true))
                        (field("Postal code", "postalCode", "text", d.postal_code.as_deref().unwrap_or(""), true))
                        (field("City", "city", "text", d.city.as_deref().unwrap_or(""), true))
                        (field("Country", "country", "text", d.country.as_deref().unwrap_or(""), true))
                        @if session.logistics.is_some() {
                            h2 { "Shipping" }
                            p class="muted" data-testid="shipping-source" { "Options: " (source) }
                            @if options.is_empty() {
                                p class="notice" { "No shipping options are available for this address." }
                            }
                            @for o in &options {
                                label class="option" style=(OPTION) {
                                    input type="radio" name="shipping" value=(o.id) style=(BOX)
                                        checked[chosen.as_deref() == Some(o.id.as_str())];
                                    " " (option_label(o))
                                }
                            }
                            div class="actions" {
                                button type="submit" name="action" value="options" { "Update shipping options" }
                            }
                        }
                    }
                    @if let Some(cc) = &session.config.custom_consent {
                        label class="option" style=(OPTION) {
                            input type="checkbox" name="consent" value="yes" style=(BOX) checked[d.consent == Some(true)];
                            " " (cc.text)
                            @if cc.required { " (required)" }
                        }
                    }
                    div class="actions" {
                        button type="submit" formmethod="post" name="action" value="abort" formnovalidate { "Abort" }
                        button class="primary" type="submit" formmethod="post" name="action" value="approve" {
                            @if session.kind == Kind::Subscription { "Subscribe" } @else { "Pay " (amount.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    };
    page("Vipps MobilePay Checkout", "payer", None, content)
}

/// `GET checkoutFrontendUrl?token=`: the page (and the address form's "Update shipping options").
async fn show(State(s): State<S>, meta: RequestMeta, Query(f): Query<Form>) -> Response {
    let l = match session_of(&s, &meta, &f.token).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    if flow::initiate(&s, &meta, &l.session).await.is_err() {
        return error_page(
            500,
            "Something went wrong",
            "The emulator could not update the session.",
        );
    }
    let l = match session_of(&s, &meta, &f.token).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    respond(200, render_page(&s, &l, &f, None).await)
}

/// `POST checkoutFrontendUrl`: approve or abort, then back to the merchant.
async fn act(State(s): State<S>, meta: RequestMeta, bytes: Bytes) -> Response {
    let f: Form = match serde_urlencoded_form(&bytes) {
        Some(f) => f,
        None => return error_page(400, "Unreadable form", "The form could not be read."),
    };
    let l = match session_of(&s, &meta, &f.token).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let session = &l.session;
    let action = match f.action.as_deref() {
        Some("approve") => {
            let mut d = typed(&f, session);
            if let Some(msg) = missing(session, &d) {
                return respond(422, render_page(&s, &l, &f, Some(&msg)).await);
            }
            if full(session) && session.logistics.is_some() {
                let (options, _) = flow::shipping_options(&s, session, address(&d)).await;
                let pick = f
                    .shipping
                    .as_deref()
                    .and_then(|id| options.iter().find(|o| o.id == id))
                    .or_else(|| flow::default_option(&options));
                match pick {
                    Some(o) => d.shipping = Some((o.id.clone(), o.amount.clone())),
                    None => {
                        return respond(
                            422,
                            render_page(&s, &l, &f, Some("Choose a shipping option.")).await,
                        );
                    }
                }
            }
            UserAction::Approve(Some(Box::new(d)))
        }
        Some("abort") => UserAction::Abort,
        _ => return error_page(400, "Unknown action", "The form must approve or abort."),
    };
    // A form posted from the page means the user had it open.
    if let Err(e) = flow::initiate(&s, &meta, session).await {
        return e.into_response();
    }
    match flow::act(&s, &meta, session, action).await {
        Ok(Ok(())) => Redirect::to(&session.merchant_info.return_url).into_response(),
        Ok(Err(msg)) => {
            let now = match session_of(&s, &meta, &f.token).await {
                Ok(l) => l,
                Err(r) => return r,
            };
            respond(200, render_page(&s, &now, &f, Some(&msg)).await)
        }
        Err(e) => e.into_response(),
    }
}

/// What the user has left out, if anything.
fn missing(s: &Session, d: &UserDetails) -> Option<String> {
    let mut gaps = Vec::new();
    if d.phone_number.len() < 8 || !d.phone_number.bytes().all(|b| b.is_ascii_digit()) {
        gaps.push("a phone number (digits, with the country code)");
    }
    if contact(s) {
        if d.first_name.is_empty() || d.last_name.is_empty() {
            gaps.push("your name");
        }
        if !d.email.contains('@') {
            gaps.push("an e-mail address");
        }
    }
    if full(s) && address(d).is_none() {
        gaps.push("your address");
    }
    if let Some(cc) = &s.config.custom_consent {
        if cc.required && d.consent != Some(true) {
            gaps.push("the consent");
        }
    }
    (!gaps.is_empty()).then(|| format!("Please give {}.", gaps.join(", ")))
}

/// Parses an `application/x-www-form-urlencoded` body into the form.
fn serde_urlencoded_form(bytes: &[u8]) -> Option<Form> {
    let pairs: serde_json::Map<String, serde_json::Value> = url::form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
        .collect();
    serde_json::from_value(serde_json::Value::Object(pairs)).ok()
}
