//! ePayment API v1: create, get, events, capture, refund, cancel, force approve, and polling for a final state.

use std::time::Duration;

use vipps_types::epayment::{
    CancelModificationRequest, CreatePaymentRequest, CreatePaymentResponse, ForceApprove,
    GetPaymentResponse, ModificationRequest, ModificationResponse, PAYMENTS_PATH, PaymentEvent,
    payment_path,
};
use vipps_types::headers::IdempotencyKey;
use vipps_types::ids::Reference;
use vipps_types::money::Amount;

use crate::client::{Auth, Call, Client, Idempotent};
use crate::error::{Error, ErrorKind};

/// The path of force approve (test environment only).
pub fn force_approve_path(reference: &Reference) -> String {
    format!("/epayment/v1/test/payments/{reference}/approve")
}

/// The ePayment API of a [`Client`]: `client.epayment()`.
///
/// Writes take an optional idempotency key; without one, a key is made once before the first attempt. Either
/// way the key comes back in [`Idempotent::idempotency_key`] and in [`Error::idempotency_key`].
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
/// let created = client.epayment().create(&request, Some(key)).await?;
/// println!("send the user to {:?}", created.value.redirect_url);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct EPayment<'a> {
    client: &'a Client,
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
    /// The ePayment API.
    pub fn epayment(&self) -> EPayment<'_> {
        EPayment { client: self }
    }
}

impl<'a> EPayment<'a> {
    /// `POST /epayment/v1/payments`: creates a payment.
    pub async fn create(
        &self,
        request: &CreatePaymentRequest,
        key: Option<IdempotencyKey>,
    ) -> Result<Idempotent<CreatePaymentResponse>, Error> {
        let op = "epayment.create";
        let body = self.client.body(op, request)?;
        self.client
            .write(Call {
                operation: op,
                method: http::Method::POST,
                path: PAYMENTS_PATH.to_owned(),
                body: Some(body),
                key: Some(self.client.key_or_new(key)),
                reference: Some(request.reference.to_string()),
                auth: Auth::Bearer,
            })
            .await
    }

    /// `GET /epayment/v1/payments/{reference}`: the payment's state and totals.
    pub async fn get(&self, reference: &Reference) -> Result<GetPaymentResponse, Error> {
        self.client
            .json(read("epayment.get", payment_path(reference), reference))
            .await
    }

    /// `GET /epayment/v1/payments/{reference}/events`: the payment's event log.
    pub async fn events(&self, reference: &Reference) -> Result<Vec<PaymentEvent>, Error> {
        self.client
            .json(read(
                "epayment.events",
                format!("{}/events", payment_path(reference)),
                reference,
            ))
            .await
    }

    /// `POST .../capture`: captures `amount` of an authorized payment.
    pub async fn capture(
        &self,
        reference: &Reference,
        amount: Amount,
        key: Option<IdempotencyKey>,
    ) -> Result<Idempotent<ModificationResponse>, Error> {
        self.modify(
            "epayment.capture",
            reference,
            "capture",
            &ModificationRequest {
                modification_amount: amount,
            },
            key,
        )
        .await
    }

    /// `POST .../refund`: refunds `amount` of a captured payment.
    pub async fn refund(
        &self,
        reference: &Reference,
        amount: Amount,
        key: Option<IdempotencyKey>,
    ) -> Result<Idempotent<ModificationResponse>, Error> {
        self.modify(
            "epayment.refund",
            reference,
            "refund",
            &ModificationRequest {
                modification_amount: amount,
            },
            key,
        )
        .await
    }

    /// `POST .../cancel`: cancels the payment (or only a not-yet-authorized one, with
    /// `cancel_transaction_only`; then an authorized payment fails with code 6060).
    pub async fn cancel(
        &self,
        reference: &Reference,
        cancel_transaction_only: bool,
        key: Option<IdempotencyKey>,
    ) -> Result<Idempotent<ModificationResponse>, Error> {
        let body = CancelModificationRequest {
            cancel_transaction_only: cancel_transaction_only.then_some(true),
        };
        self.modify("epayment.cancel", reference, "cancel", &body, key)
            .await
    }

    /// `POST /epayment/v1/test/payments/{reference}/approve`: approves the payment as a test user. Refused
    /// before sending anything when the client is for production.
    pub async fn force_approve(
        &self,
        reference: &Reference,
        request: &ForceApprove,
        key: Option<IdempotencyKey>,
    ) -> Result<Idempotent<()>, Error> {
        let op = "epayment.force_approve";
        if self.client.environment().is_production() {
            return Err(Error::invalid_request(
                "force approve exists only in the test environment, not in production",
            )
            .with_operation(op));
        }
        let body = self.client.body(op, request)?;
        self.client
            .write_empty(Call {
                operation: op,
                method: http::Method::POST,
                path: force_approve_path(reference),
                body: Some(body),
                key: Some(self.client.key_or_new(key)),
                reference: Some(reference.to_string()),
                auth: Auth::Bearer,
            })
            .await
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

    async fn modify<B: serde::Serialize>(
        &self,
        op: &'static str,
        reference: &Reference,
        action: &str,
        body: &B,
        key: Option<IdempotencyKey>,
    ) -> Result<Idempotent<ModificationResponse>, Error> {
        let body = self.client.body(op, body)?;
        self.client
            .write(Call {
                operation: op,
                method: http::Method::POST,
                path: format!("{}/{action}", payment_path(reference)),
                body: Some(body),
                key: Some(self.client.key_or_new(key)),
                reference: Some(reference.to_string()),
                auth: Auth::Bearer,
            })
            .await
    }
}

fn read(op: &'static str, path: String, reference: &Reference) -> Call {
    Call {
        operation: op,
        method: http::Method::GET,
        path,
        body: None,
        key: None,
        reference: Some(reference.to_string()),
        auth: Auth::Bearer,
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
            .force_approve(&r, &ForceApprove::default(), None)
            .await
            .unwrap_err();
        assert!(err.is_usage(), "{err}");
        assert_eq!(err.attempts(), 0);
        assert!(!err.may_have_reached_server());
        assert_eq!(err.operation(), "epayment.force_approve");
    }
}
