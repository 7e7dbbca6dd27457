//! How a session moves with the products it builds on, and what it sends to the merchant.
//!
//! - **Payment sessions** follow their ePayment payment (through `epayment::facade`): when the payment ends
//!   (approved, rejected, expired, cancelled), the session completes the same way. That happens when the user
//!   acts on the checkout page, when a person acts through ePayment's controls (the registry's follow
//!   notification), and on every read of the session, so a notification lost with a crash is made good.
//! - **Subscription sessions** create their Recurring agreement (through `recurring::facade`) when the user
//!   approves.
//! - **The "payment completed" callback** is due in the same write that completes the session, and its first
//!   attempt is made at once: `Authorization: <callbackAuthorizationToken>`, the session as body, from the active
//!   request server. A failed attempt is retried three times (1, 2 and 4 seconds of emulator time later) when the
//!   sweeper finds the session due; each attempt is claimed with a lease and recorded on the session, so a retry
//!   survives a restart and two instances never send the same attempt.
//! - **Dynamic logistics**: the checkout page asks `logistics.dynamicOptionsCallback` for shipping options for the
//!   user's address, and falls back to `fixedOptions` when the answer fails, is late (8 seconds), or is empty.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use vipps_types::checkout::{LogisticsCallbackRequest, LogisticsOption};

use super::commands::{self, Change};
use super::domain::{Attempt, Completion, Kind, Session, UserDetails};
use super::render::{self, PaymentFacts};
use crate::platform::Shared as S;
use crate::platform::http::{ApiError, RequestMeta};
use crate::platform::idempotency::{internal, read_settled, run_write};
use crate::platform::store::{BoxFut, Op};
use crate::products::epayment::facade as epayment;
use crate::products::recurring::facade as recurring;

/// How long the page waits for the dynamic-logistics answer (the spec's 8 seconds).
const LOGISTICS_TIMEOUT: Duration = Duration::from_secs(8);

/// A session with what it builds on, as of now.
#[derive(Debug, Clone)]
pub(super) struct Loaded {
    pub session: Arc<Session>,
    pub payment: Option<PaymentFacts>,
    pub agreement_state: Option<&'static str>,
}

impl Loaded {
    /// The wire body.
    pub(super) fn render(&self) -> vipps_types::checkout::SessionResponse {
        render::session(&self.session, self.payment.as_ref(), self.agreement_state)
    }
}

/// Reads a session, persisting what time has done to it; `None` when it does not exist.
pub(super) async fn read(
    s: &S,
    meta: &RequestMeta,
    msn: &str,
    reference: &str,
) -> Result<Option<Arc<Session>>, ApiError> {
    read_settled::<Session>(s, meta, &commands::key(msn, reference), || {
        commands::modify(msn, reference, Change::Settle)
    })
    .await
}

/// Reads a session and brings it up to date with its payment (completing it when the payment has ended).
pub(super) async fn load(
    s: &S,
    meta: &RequestMeta,
    msn: &str,
    reference: &str,
) -> Result<Option<Loaded>, ApiError> {
    let Some(mut session) = read(s, meta, msn, reference).await? else {
        return Ok(None);
    };
    let mut payment = None;
    if session.kind == Kind::Payment {
        if let Some(p) = epayment::read(s, meta, msn, reference).await? {
            if session.state.open() && p.state != "CREATED" {
                let c = if p.state == "AUTHORIZED" {
                    let typed = session.details.clone().map(Box::new);
                    success(&session, p.phone_number.as_deref(), typed)
                } else {
                    Completion::Terminated
                };
                complete(s, meta, &session, c).await?;
                if let Some(now) = read(s, meta, msn, reference).await? {
                    session = now;
                }
            }
            payment = Some(PaymentFacts {
                state: p.state,
                authorized: p.authorized,
                captured: p.captured,
                refunded: p.refunded,
                cancelled: p.cancelled,
            });
        }
    }
    let agreement_state = match &session.agreement {
        Some((id, _)) => recurring::status(s, meta, msn, id).await?,
        None => None,
    };
    Ok(Some(Loaded {
        session,
        payment,
        agreement_state,
    }))
}

/// The user's `sub`: stable per phone number, like a real user's.
fn sub_of(phone: &str) -> String {
    let d = Sha256::digest(format!("checkout-sub:{phone}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    crate::platform::ids::uuid_from(b)
}

/// The details of a user who completed without typing any: the prefilled ones, or the emulator's test user.
pub(super) fn default_details(s: &Session, phone: Option<&str>) -> UserDetails {
    let p = s.prefill.clone().unwrap_or_default();
    let full = !matches!(
        s.config.elements.as_ref().map(|e| e.as_str()),
        Some("PaymentOnly") | Some("PaymentAndContactInfo")
    );
    let shipping = s
        .logistics
        .as_ref()
        .and_then(|l| l.fixed_options.as_ref())
        .and_then(|o| default_option(o))
        .map(|o| (o.id.clone(), o.amount.clone()));
    UserDetails {
        first_name: p.first_name.unwrap_or_else(|| "Ada".into()),
        last_name: p.last_name.unwrap_or_else(|| "Lovelace".into()),
        email: p.email.unwrap_or_else(|| "ada@example.com".into()),
        phone_number: phone
            .map(str::to_owned)
            .or(p.phone_number)
            .unwrap_or_else(|| "4791234567".into()),
        street_address: full.then(|| {
            p.street_address
                .unwrap_or_else(|| "Robert Levins gate 5".into())
        }),
        postal_code: full.then(|| p.postal_code.unwrap_or_else(|| "0154".into())),
        city: full.then(|| p.city.unwrap_or_else(|| "Oslo".into())),
        country: full.then(|| p.country.unwrap_or_else(|| "NO".into())),
        shipping: if full { shipping } else { None },
        consent: s.config.custom_consent.as_ref().map(|_| true),
    }
}

/// The option chosen unless the user picks another: the one marked default, else the first by priority.
pub(super) fn default_option(options: &[LogisticsOption]) -> Option<&LogisticsOption> {
    options
        .iter()
        .find(|o| o.is_default)
        .or_else(|| options.iter().min_by_key(|o| o.priority))
}

/// A successful completion with these details (or the defaults).
fn success(s: &Session, phone: Option<&str>, details: Option<Box<UserDetails>>) -> Completion {
    let details = details.unwrap_or_else(|| Box::new(default_details(s, phone)));
    Completion::Success {
        sub: sub_of(&details.phone_number),
        details,
        agreement: None,
    }
}

/// Completes a session; when this changed it, sends the callback.
async fn complete(
    s: &S,
    meta: &RequestMeta,
    session: &Session,
    c: Completion,
) -> Result<(), ApiError> {
    let resp = run_write(
        s,
        meta,
        Op::Execute(commands::modify(
            &session.msn,
            &session.reference,
            Change::Complete(Box::new(c)),
        )),
    )
    .await?;
    if !resp.status().is_success() {
        return Ok(());
    }
    let body = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map_err(|e| internal(meta, &e))?;
    let changed = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["changed"].as_bool())
        .unwrap_or(false);
    if changed {
        tokio::spawn(deliver_due(
            s.clone(),
            session.msn.clone(),
            session.reference.clone(),
        ));
    }
    Ok(())
}

/// What the user does on the checkout page (or through the checkout controls).
#[derive(Debug, Clone)]
pub(super) enum UserAction {
    /// Pay or subscribe, with these details (`None`: the defaults).
    Approve(Option<Box<UserDetails>>),
    /// Abort.
    Abort,
}

/// Acts as the user. `Err` carries a refusal to show the user (a failed payment, a session no longer open).
pub(super) async fn act(
    s: &S,
    meta: &RequestMeta,
    session: &Session,
    action: UserAction,
) -> Result<Result<(), String>, ApiError> {
    if !session.state.open() {
        return Ok(Err(format!(
            "This checkout is {}; nothing more can be done here.",
            session.state.as_str()
        )));
    }
    match (session.kind, action) {
        (Kind::Payment, action) => {
            let decision = match action {
                UserAction::Approve(d) => {
                    let phone = d.as_ref().map(|d| d.phone_number.clone());
                    if let Some(d) = d {
                        run_write(
                            s,
                            meta,
                            Op::Execute(commands::modify(
                                &session.msn,
                                &session.reference,
                                Change::Details(d),
                            )),
                        )
                        .await?;
                    }
                    epayment::Decision::Approve { phone }
                }
                UserAction::Abort => epayment::Decision::Reject,
            };
            let resp = run_write(
                s,
                meta,
                Op::Execute(epayment::decide(&session.msn, &session.reference, decision)),
            )
            .await?;
            let refused = if resp.status().is_success() {
                None
            } else {
                let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
                    .await
                    .unwrap_or_default();
                Some(
                    serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["detail"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "The payment could not be completed.".into()),
                )
            };
            // The session follows what the decision did to the payment (authorized, aborted, or still waiting:
            // a failed approval, or one being processed, which completes the session when it resolves).
            let now = load(s, meta, &session.msn, &session.reference).await?;
            if let Some(detail) = refused {
                return Ok(Err(detail));
            }
            let waiting = now.is_some_and(|l| {
                l.session.state.open() && l.payment.is_some_and(|p| p.state == "CREATED")
            });
            if waiting {
                run_write(
                    s,
                    meta,
                    Op::Execute(commands::modify(
                        &session.msn,
                        &session.reference,
                        Change::AwaitPayment,
                    )),
                )
                .await?;
            }
        }
        (Kind::Subscription, UserAction::Approve(d)) => {
            let c = success(session, None, d);
            let Completion::Success { details, sub, .. } = c else {
                return Err(internal(meta, &"a success is a success"));
            };
            let sub_spec = session
                .subscription
                .clone()
                .ok_or_else(|| internal(meta, &"a subscription session without subscription"))?;
            let (id, status) = recurring::create_accepted(
                s,
                meta,
                recurring::NewAgreement {
                    msn: session.msn.clone(),
                    product_name: sub_spec.product_name.clone(),
                    product_description: sub_spec.product_description.clone(),
                    amount: sub_spec.amount.value,
                    interval: (sub_spec.interval.unit.clone(), sub_spec.interval.count),
                    campaign: sub_spec.campaign.clone(),
                    merchant_agreement_url: sub_spec.merchant_agreement_url.clone(),
                    merchant_redirect_url: session.merchant_info.return_url.clone(),
                    phone_number: Some(details.phone_number.clone()),
                    initial: session.amount.as_ref().map(|a| {
                        (
                            a.value,
                            session
                                .description
                                .clone()
                                .unwrap_or_else(|| sub_spec.product_name.clone()),
                            session.reference.clone(),
                        )
                    }),
                    base_url: s.base_url.clone(),
                    test: session.test,
                    key: format!("checkout-{}", session.session_id),
                },
            )
            .await?;
            let c = if status == "ACTIVE" {
                Completion::Success {
                    details,
                    sub,
                    agreement: Some((id, status.to_owned())),
                }
            } else {
                Completion::Terminated
            };
            complete(s, meta, session, c).await?;
        }
        (Kind::Subscription, UserAction::Abort) => {
            complete(s, meta, session, Completion::Terminated).await?;
        }
    }
    Ok(Ok(()))
}

/// The user opened the checkout page.
pub(super) async fn initiate(s: &S, meta: &RequestMeta, session: &Session) -> Result<(), ApiError> {
    if session.state == super::domain::SState::Created {
        run_write(
            s,
            meta,
            Op::Execute(commands::modify(
                &session.msn,
                &session.reference,
                Change::Initiate,
            )),
        )
        .await?;
    }
    Ok(())
}

/// A request facts value for work that no request carries (the callback task).
pub(super) fn background_meta(path: &str) -> RequestMeta {
    RequestMeta {
        trace_id: Arc::from(""),
        method: http::Method::POST,
        path: Arc::from(path),
        delay: None,
        environment: None,
    }
}

/// Makes a session's callback attempt if one is due and this caller claims it, and records it. Run in a task of
/// its own: by the request that completed the session (the first attempt at once), and by the sweeper when a retry
/// (or an attempt a crash interrupted) is due.
/// (Boxed: completing a session starts it, and it reads the session, which may complete it.)
pub(super) fn deliver_due(s: S, msn: String, reference: String) -> BoxFut<'static, ()> {
    Box::pin(async move {
        let meta = background_meta("/checkout/v3/callback");
        if let Err(e) = attempt_if_due(&s, &meta, &msn, &reference).await {
            tracing::warn!(%msn, %reference, status = %e.0.status(), "checkout callback attempt failed to run");
        }
    })
}

async fn attempt_if_due(
    s: &S,
    meta: &RequestMeta,
    msn: &str,
    reference: &str,
) -> Result<(), ApiError> {
    // The lease outlasts an attempt (the delivery timeout), so no one else makes it meanwhile.
    let lease_ms =
        i64::try_from(s.config.delivery_timeout.as_millis()).unwrap_or(i64::MAX / 4) + 1_000;
    let resp = run_write(
        s,
        meta,
        Op::Execute(commands::modify(
            msn,
            reference,
            Change::ClaimAttempt(lease_ms),
        )),
    )
    .await?;
    let body = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map_err(|e| internal(meta, &e))?;
    let claimed = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["claimed"].as_bool())
        .unwrap_or(false);
    if !claimed {
        return Ok(());
    }
    let Some(l) = load(s, meta, msn, reference).await? else {
        return Ok(());
    };
    let body = serde_json::to_vec(&l.render()).map_err(|e| internal(meta, &e))?;
    let info = &l.session.merchant_info;
    let at_ms = s.clock.unix_ms();
    let outcome: Result<u16, String> = async {
        let (client, _, _) = crate::platform::webhooks::delivery::callback_client(
            s,
            msn,
            s.config.delivery_timeout,
        )?;
        let resp = client
            .post(&info.callback_url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::AUTHORIZATION,
                &info.callback_authorization_token,
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timeout: no answer within the delivery timeout".to_owned()
                } else {
                    e.to_string()
                }
            })?;
        Ok(resp.status().as_u16())
    }
    .await;
    let a = match outcome {
        Ok(st) => Attempt {
            at_ms,
            status: Some(st),
            error: None,
            delivered: (200..300).contains(&st),
        },
        Err(e) => Attempt {
            at_ms,
            status: None,
            error: Some(e),
            delivered: false,
        },
    };
    tracing::debug!(%msn, %reference, status = ?a.status, delivered = a.delivered, "checkout callback attempt");
    run_write(
        s,
        meta,
        Op::Execute(commands::modify(msn, reference, Change::Attempt(a))),
    )
    .await?;
    Ok(())
}

/// The shipping options the page offers for an address: the dynamic ones when the merchant's callback answers
/// with some in time, else the fixed ones. Answers the options and where they came from.
pub(super) async fn shipping_options(
    s: &S,
    session: &Session,
    address: Option<LogisticsCallbackRequest>,
) -> (Vec<LogisticsOption>, &'static str) {
    let Some(l) = &session.logistics else {
        return (Vec::new(), "none");
    };
    let fixed = || {
        let mut o = l.fixed_options.clone().unwrap_or_default();
        o.sort_by_key(|o| o.priority);
        o
    };
    let (Some(url), Some(address)) = (&l.dynamic_options_callback, address) else {
        return (fixed(), "fixed");
    };
    let asked: Result<Vec<LogisticsOption>, String> = async {
        let (client, _, _) = crate::platform::webhooks::delivery::callback_client(
            s,
            &session.msn,
            LOGISTICS_TIMEOUT,
        )?;
        let resp = client
            .post(url)
            .header(
                http::header::AUTHORIZATION,
                &session.merchant_info.callback_authorization_token,
            )
            .json(&address)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice::<Option<Vec<LogisticsOption>>>(&bytes)
            .map(Option::unwrap_or_default)
            .map_err(|e| e.to_string())
    }
    .await;
    match asked {
        Ok(mut o) if !o.is_empty() => {
            o.sort_by_key(|o| o.priority);
            (o, "dynamic")
        }
        Ok(_) => (fixed(), "fixed (the callback answered no options)"),
        Err(e) => {
            tracing::info!(reference = %session.reference, error = %e, "dynamic logistics failed; fixed options used");
            (fixed(), "fixed (the callback failed)")
        }
    }
}
