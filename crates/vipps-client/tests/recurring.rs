//! The Recurring API end to end: the client against an in-process emulator over 127.0.0.1, through the request
//! builders (keys fixed before retries, per-call options, typed errors, handles moved into tasks).

use std::time::Duration;

use serde_json::json;
use vipps_client::{AgreementQuery, Client, Credentials, RetryPolicy, Timeouts};
use vipps_emulator::{Config, Emulator};
use vipps_types::headers::{MerchantSerialNumber, RecurringIdempotencyKey};
use vipps_types::recurring::{
    AgreementStatus, BulkChargeItem, BulkChargesRequest, CaptureChargeRequest, ChargeStatus,
    CreateChargeRequest, DraftAgreementRequest, ForceAcceptRequest, InitialChargeRequest,
    IntervalRequest, PeriodUnit, PricingRequest, PricingType, RefundChargeRequest, TimePeriod,
    TransactionType,
};

fn client(emu: &Emulator) -> Client {
    let m = emu.demo_merchant().expect("the demo merchant");
    Client::builder()
        .base_url(emu.base_url().as_str())
        .credentials(Credentials::new(
            &m.client_id,
            &m.client_secret,
            &m.subscription_key,
        ))
        .merchant_serial_number(m.msn.as_str())
        .system("e2e-shop", "1.0.0")
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(10))
                .with_max_backoff(Duration::from_millis(50)),
        )
        .timeouts(Timeouts::default().with_total(Duration::from_secs(20)))
        .build()
        .unwrap()
}

fn draft(initial: Option<i64>) -> DraftAgreementRequest {
    DraftAgreementRequest {
        campaign: None,
        pricing: PricingRequest {
            type_: Some(PricingType::Legacy),
            currency: "NOK".into(),
            amount: Some(5000),
            suggested_max_amount: None,
        },
        phone_number: Some("4791234567".into()),
        initial_charge: initial.map(|amount| InitialChargeRequest {
            amount,
            currency: Some("NOK".into()),
            description: "First month".into(),
            transaction_type: TransactionType::ReserveCapture,
            order_id: None,
            external_id: None,
        }),
        interval: IntervalRequest::Period(TimePeriod {
            unit: PeriodUnit::Month,
            count: 1,
        }),
        is_app: None,
        merchant_agreement_url: "https://example.com/agreement".into(),
        merchant_redirect_url: "https://example.com/redirect".into(),
        product_name: "MyNews Digital".into(),
        product_description: None,
        scope: None,
        skip_landing_page: None,
        external_id: None,
        country_code: None,
    }
}

fn key(k: &str) -> RecurringIdempotencyKey {
    RecurringIdempotencyKey::new(k).unwrap()
}

async fn advance(emu: &Emulator, seconds: i64) {
    let r = reqwest::Client::new()
        .post(emu.base_url().join("_emulator/clock/advance").unwrap())
        .json(&json!({"seconds": seconds}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

#[tokio::test]
async fn agreement_and_charges_end_to_end() {
    let emu = Emulator::start(Config::ephemeral()).await.unwrap();
    let client = client(&emu);
    let recurring = client.recurring();

    let drafted = recurring
        .draft_agreement(&draft(Some(5000)))
        .idempotency_key(key("signup-1"))
        .timeout(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(drafted.idempotency_key.as_str(), "signup-1");
    assert!(!drafted.replayed);
    let agr = drafted.value.agreement_id.clone();
    let initial = drafted.value.charge_id.clone().unwrap();
    // The same key and body: replayed, the same agreement.
    let again = recurring
        .draft_agreement(&draft(Some(5000)))
        .idempotency_key(key("signup-1"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.value.agreement_id, agr);

    assert_eq!(
        recurring.agreement(&agr).await.unwrap().status,
        AgreementStatus::Pending
    );
    // The handle moves into a task.
    let task = {
        let r = recurring.clone();
        let agr = agr.clone();
        tokio::spawn(async move {
            r.force_accept(
                &agr,
                &ForceAcceptRequest {
                    phone_number: "4791234567".into(),
                },
            )
            .await
        })
    };
    let accepted = task.await.unwrap().unwrap();
    assert!(
        accepted.idempotency_key.as_str().len() <= 40,
        "a generated key fits Recurring's rule"
    );
    let a = recurring.agreement(&agr).await.unwrap();
    assert_eq!(a.status, AgreementStatus::Active);
    let listed = recurring
        .agreements(AgreementQuery::new().status(AgreementStatus::Active))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);

    // The initial charge was reserved: capture part, refund part.
    let c = recurring.charge(&agr, &initial).await.unwrap();
    assert_eq!(c.status, ChargeStatus::Reserved);
    recurring
        .capture_charge(
            &agr,
            &initial,
            &CaptureChargeRequest {
                amount: 3000,
                description: "part".into(),
            },
        )
        .await
        .unwrap();
    recurring
        .refund_charge(
            &agr,
            &initial,
            &RefundChargeRequest {
                amount: 1000,
                description: "goodwill".into(),
            },
        )
        .await
        .unwrap();
    let c = recurring.charge_by_id(&initial).await.unwrap();
    assert_eq!(c.status, ChargeStatus::PartiallyRefunded);
    assert_eq!((c.summary.captured, c.summary.refunded), (3000, 1000));

    // A recurring charge, moved along by the clock.
    let due = time::OffsetDateTime::now_utc() + time::Duration::days(3);
    let due = format!(
        "{:04}-{:02}-{:02}",
        due.year(),
        u8::from(due.month()),
        due.day()
    );
    let charge = CreateChargeRequest {
        amount: 4000,
        transaction_type: TransactionType::DirectCapture,
        description: "December".into(),
        due: Some(due.clone()),
        retry_days: Some(2),
        type_: None,
        order_id: Some("order-dec-1".into()),
        external_id: None,
    };
    let created = recurring.create_charge(&agr, &charge).await.unwrap();
    assert_eq!(created.value.charge_id, "order-dec-1");
    // Reusing the key with another body: 409, and the key is on the error.
    let mut other = charge.clone();
    other.amount = 4100;
    let err = recurring
        .create_charge(&agr, &other)
        .idempotency_key(RecurringIdempotencyKey::new(created.idempotency_key.as_str()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert_eq!(
        err.idempotency_key().map(|k| k.as_str()),
        Some(created.idempotency_key.as_str())
    );
    advance(&emu, 5 * 86_400).await;
    // The token of the client has expired with the clock: the client renews it by itself.
    let c = recurring.charge(&agr, "order-dec-1").await.unwrap();
    assert_eq!(c.status, ChargeStatus::Charged);

    // Bulk, then a list by status, then cancel one and stop the agreement.
    let due2 = time::OffsetDateTime::now_utc() + time::Duration::days(45);
    let due2 = format!(
        "{:04}-{:02}-{:02}",
        due2.year(),
        u8::from(due2.month()),
        due2.day()
    );
    let bulk = BulkChargesRequest {
        charges: (0..3)
            .map(|i| BulkChargeItem {
                agreement_id: agr.clone(),
                amount: 1000 + i,
                transaction_type: TransactionType::DirectCapture,
                description: "Bulk".into(),
                due: Some(due2.clone()),
                retry_days: Some(0),
                type_: None,
                order_id: None,
                external_id: None,
            })
            .collect(),
    };
    let made = recurring.create_charges(&bulk).await.unwrap();
    assert!(made.value.invalid_charges.is_empty());
    assert_eq!(made.value.valid_charges.len(), 3);
    let first = made.value.valid_charges[0].clone();
    recurring.cancel_charge(&agr, &first).await.unwrap();
    let cancelled = recurring
        .charges_in_status(&agr, &ChargeStatus::Cancelled)
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 1);
    recurring.stop_agreement(&agr).await.unwrap();
    assert_eq!(
        recurring.agreement(&agr).await.unwrap().status,
        AgreementStatus::Stopped
    );
    assert_eq!(recurring.charges(&agr).await.unwrap().len(), 5);

    // Typed errors: unknown ids are 404 with the Recurring problem's field.
    let err = recurring.agreement("agr_nothing").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    // Another sales unit (a partner's MSN option): this one is not configured, so 401/403, not a leak.
    let err = recurring
        .agreement(&agr)
        .merchant_serial_number(MerchantSerialNumber::new("999999").unwrap())
        .retry_policy(RetryPolicy::default().with_max_attempts(1))
        .await
        .unwrap_err();
    assert!(matches!(err.status(), Some(401 | 403 | 404)), "{err}");
}
