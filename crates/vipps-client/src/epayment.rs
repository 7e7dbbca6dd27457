//! ePayment API v1: create, get, events, capture, refund, cancel, force approve, and polling for a final state.

use std::time::Duration;

use vipps_types::epayment::{
    CancelModificationRequest, CreatePaymentRequest, CreatePaymentResponse, ForceApprove,
    GetPaymentResponse, ModificationRequest, ModificationResponse, PAYMENTS_PATH, PaymentEvent,
    payment_path,
};
use vipps_types::ids::Reference;
use vipps_types::money::Amount;

use crate::client::Client;
use crate::error::{Error, ErrorKind};
use crate::request::{Read, Write};

/// The path of force approve (test environment only).
pub fn force_approve_path(reference: &Reference) -> String {
    format!("/epayment/v1/test/payments/{reference}/approve")
}

/// The ePayment API of a [`Client`]: `client.epayment()`.
///
/// Every method returns a request builder ([`Read`] or [`Write`]) that is awaited directly; a write takes the
/// caller's key with [`Write::idempotency_key`], or makes one once before the first attempt. Either way the key
/// comes back in [`crate::Idempotent::idempotency_key`] and in [`Error::idempotency_key`].
///
/// ```no_run
/// use vipps_client::Client;
/// use vipps_types::epayment::{CreatePaymentRequest, UserFlow};
/// use vipps_types::headers::IdempotencyKey;
/// use vipps_types::money::{Amount, Currency};
///
/// # async fn run(client: Client) -> Result<(), vipps_client::Error> {
/// let reference = "acme-order-1001".parse().unwrap();
/// let request = CreatePaymentRequest::new(Amount::new(Currency::Nok, 49_900).unwrap(), reference,
///     UserFlow::WebRedirect).with_return_url("https://example.com/return");
/// let key = IdempotencyKey::new("acme-order-1001-create").unwrap();
/// let created = client.epayment().create(&request).idempotency_key(key).await?;
/// println!("send the user to {:?}", created.value.redirect_url);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EPayment {
    client: Client,
}

/// How [`EPayment::wait_for_final_state`] polls: the vendor's guidance is a first poll after 5 s, then one every
/// 2 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollOptions {
    /// Before the first poll.
    pub initial_delay: Duration,
    /// Between polls.
    pub interval: Duration,
    /// The most polls before giving up with [`ErrorKind::PollExhausted`].
    pub max_polls: u32,
}

impl Default for PollOptions {
    /// 5 s, then every 2 s, at most 150 polls (about 5 minutes).
    fn default() -> Self {
        PollOptions {
            initial_delay: Duration::from_secs(5),
            interval: Duration::from_secs(2),
            max_polls: 150,
        }
    }
}

impl Client {
    /// The ePayment API (owns a clone of the client).
    pub fn epayment(&self) -> EPayment {
        EPayment {
            client: self.clone(),
        }
    }
}

impl EPayment {
    /// `POST /epayment/v1/payments`: creates a payment.
    pub fn create(&self, request: &CreatePaymentRequest) -> Write<CreatePaymentResponse> {
        Write::json(
            &self.client,
            "epayment.create",
            http::Method::POST,
            PAYMENTS_PATH.to_owned(),
            Some(request),
        )
        .reference(request.reference.to_string())
    }

    /// `GET /epayment/v1/payments/{reference}`: the payment's state and totals.
    pub fn get(&self, reference: &Reference) -> Read<GetPaymentResponse> {
        Read::new(&self.client, "epayment.get", payment_path(reference))
            .reference(reference.to_string())
    }

    /// `GET /epayment/v1/payments/{reference}/events`: the payment's event log.
    pub fn events(&self, reference: &Reference) -> Read<Vec<PaymentEvent>> {
        Read::new(
            &self.client,
            "epayment.events",
            format!("{}/events", payment_path(reference)),
        )
        .reference(reference.to_string())
    }

    /// `POST .../capture`: captures `amount` of an authorized payment.
    pub fn capture(&self, reference: &Reference, amount: Amount) -> Write<ModificationResponse> {
        self.modify(
            "epayment.capture",
            reference,
            "capture",
            &ModificationRequest {
                modification_amount: amount,
            },
        )
    }

    /// `POST .../refund`: refunds `amount` of a captured payment.
    pub fn refund(&self, reference: &Reference, amount: Amount) -> Write<ModificationResponse> {
        self.modify(
            "epayment.refund",
            reference,
            "refund",
            &ModificationRequest {
                modification_amount: amount,
            },
        )
    }

    /// `POST .../cancel`: cancels the payment. See [`EPayment::cancel_transaction_only`] for cancelling only a
    /// payment that is not yet authorized.
    pub fn cancel(&self, reference: &Reference) -> Write<ModificationResponse> {
        self.modify(
            "epayment.cancel",
            reference,
            "cancel",
            &CancelModificationRequest {
                cancel_transaction_only: None,
            },
        )
    }

    /// `POST .../cancel` with `cancelTransactionOnly`: cancels only a payment that is not yet authorized (an
    /// authorized payment fails with code 6060).
    pub fn cancel_transaction_only(&self, reference: &Reference) -> Write<ModificationResponse> {
        self.modify(
            "epayment.cancel",
            reference,
            "cancel",
            &CancelModificationRequest {
                cancel_transaction_only: Some(true),
            },
        )
    }

    /// `POST /epayment/v1/test/payments/{reference}/approve`: approves the payment as a test user. Refused
    /// before sending anything when the client is for production.
    pub fn force_approve(&self, reference: &Reference, request: &ForceApprove) -> Write<()> {
        let w = Write::empty(
            &self.client,
            "epayment.force_approve",
            http::Method::POST,
            force_approve_path(reference),
            Some(request),
        )
        .reference(reference.to_string());
        if self.client.environment().is_production() {
            return w.refuse(Error::invalid_request(
                "force approve exists only in the test environment, not in production",
            ));
        }
        w
    }

    /// Polls the payment until its state is final (anything but `CREATED`): the first poll after
    /// `options.initial_delay`, then one every `options.interval`, at most `options.max_polls`.
    pub async fn wait_for_final_state(
        &self,
        reference: &Reference,
        options: &PollOptions,
    ) -> Result<GetPaymentResponse, Error> {
        let clock = &self.client.inner.clock;
        clock.sleep(options.initial_delay).await;
        let mut polls = 0;
        loop {
            let payment = self.get(reference).await?;
            polls += 1;
            if payment.state.is_final() {
                return Ok(payment);
            }
            if polls >= options.max_polls {
                return Err(Error::new(ErrorKind::PollExhausted {
                    last_state: payment.state.to_string(),
                    polls,
                })
                .with_operation("epayment.wait_for_final_state"));
            }
            clock.sleep(options.interval).await;
        }
    }

    fn modify<B: serde::Serialize>(
        &self,
        op: &'static str,
        reference: &Reference,
        action: &str,
        body: &B,
    ) -> Write<ModificationResponse> {
        Write::json(
            &self.client,
            op,
            http::Method::POST,
            format!("{}/{action}", payment_path(reference)),
            Some(body),
        )
        .reference(reference.to_string())
    }
}

#[cfg(test)]
mod tests {
    use vipps_types::env::Environment;

    use super::*;
    use crate::Credentials;

    #[tokio::test]
    async fn force_approve_refuses_production_before_sending() {
        let client = Client::builder()
            .environment(Environment::Production)
            .credentials(Credentials::new("id", "secret", "key"))
            .merchant_serial_number("123456")
            .build()
            .unwrap();
        let r: Reference = "acme-order-1001".parse().unwrap();
        let err = client
            .epayment()
            .force_approve(&r, &ForceApprove::default())
            .await
            .unwrap_err();
        assert!(err.is_usage(), "{err}");
        assert_eq!(err.attempts(), 0);
        assert!(!err.may_have_reached_server());
        assert_eq!(err.operation(), "epayment.force_approve");
    }
}
