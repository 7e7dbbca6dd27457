//! The Checkout API end to end: the client against an in-process emulator over 127.0.0.1, authenticated with the
//! API keys (no access token), through the request builders.

use std::time::Duration;

use vipps_client::{Client, Credentials, RetryPolicy, Timeouts};
use vipps_emulator::{Config, Emulator};
use vipps_types::checkout::{
    Amount, InitiateSessionRequest, MerchantInfo, PaymentState, PaymentTransaction, SessionState,
};
use vipps_types::headers::IdempotencyKey;

fn client(emu: &Emulator, secret: Option<&str>) -> Client {
    let m = emu.demo_merchant().expect("the demo merchant");
    Client::builder()
        .base_url(emu.base_url().as_str())
        .credentials(Credentials::new(
            &m.client_id,
            secret.unwrap_or(&m.client_secret),
            &m.subscription_key,
        ))
        .merchant_serial_number(m.msn.as_str())
        .system("e2e-shop", "1.0.0")
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .timeouts(Timeouts::default().with_total(Duration::from_secs(20)))
        .build()
        .unwrap()
}

fn request(reference: &str) -> InitiateSessionRequest {
    InitiateSessionRequest {
        type_: None,
        merchant_info: MerchantInfo {
            callback_url: "https://example.com/callback".into(),
            return_url: "https://example.com/return".into(),
            callback_authorization_token: "cb-token".into(),
            terms_and_conditions_url: None,
        },
        transaction: Some(PaymentTransaction {
            amount: Amount {
                value: 2500,
                currency: "NOK".into(),
            },
            reference: reference.into(),
            payment_description: "Two pairs of socks".into(),
            order_summary: None,
        }),
        reference: None,
        subscription: None,
        logistics: None,
        prefill_customer: None,
        configuration: None,
    }
}

#[tokio::test]
async fn sessions_are_created_read_and_completed() {
    let emu = Emulator::start(Config::ephemeral()).await.unwrap();
    let c = client(&emu, None);
    let key = IdempotencyKey::new("checkout-1").unwrap();
    let created = c
        .checkout()
        .create_session(&request("client-session-1"))
        .idempotency_key(key.clone())
        .await
        .unwrap();
    assert!(!created.replayed);
    assert!(
        created
            .value
            .checkout_frontend_url
            .starts_with(emu.base_url().as_str())
    );
    // The same key replays; another key meets the duplicate reference.
    let again = c
        .checkout()
        .create_session(&request("client-session-1"))
        .idempotency_key(key)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.value, created.value);
    let dup = c
        .checkout()
        .create_session(&request("client-session-1"))
        .await
        .unwrap_err();
    assert_eq!(dup.status(), Some(409), "{dup}");

    let s = c.checkout().session("client-session-1").await.unwrap();
    assert_eq!(s.session_state, SessionState::SessionCreated);
    let r = reqwest::Client::new()
        .post(
            emu.base_url()
                .join("_emulator/payments/client-session-1/approve")
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let s = c.checkout().session("client-session-1").await.unwrap();
    assert_eq!(s.session_state, SessionState::PaymentSuccessful);
    let p = s.payment_details.expect("payment details");
    assert_eq!(p.state, PaymentState::Authorized);
    assert_eq!(p.amount.value, 2500);
    assert!(s.billing_details.is_some());

    let missing = c.checkout().session("no-such-session").await.unwrap_err();
    assert_eq!(missing.status(), Some(404));
}

#[tokio::test]
async fn wrong_keys_are_refused_without_leaking_the_secret() {
    let emu = Emulator::start(Config::ephemeral()).await.unwrap();
    let c = client(&emu, Some("not-the-secret-at-all"));
    let e = c
        .checkout()
        .create_session(&request("client-session-2"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(!format!("{e} {e:?}").contains("not-the-secret-at-all"));
}
