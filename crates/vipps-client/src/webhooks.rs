//! Webhooks API v1: register, list and delete webhook registrations.

use vipps_types::headers::IdempotencyKey;
use vipps_types::webhooks::{QueryResponse, RegisterRequest, RegisterResponse, WEBHOOKS_PATH};

use crate::client::{Auth, Call, Client, Idempotent};
use crate::error::Error;

/// The Webhooks API of a [`Client`]: `client.webhooks()`.
///
/// ```no_run
/// use vipps_client::Client;
/// use vipps_types::webhooks::{RegisterRequest, epayment_event_types};
///
/// # async fn run(client: Client) -> Result<(), vipps_client::Error> {
/// let request = RegisterRequest { url: "https://example.com/hooks".into(), events: epayment_event_types() };
/// let registered = client.webhooks().register(&request, None).await?;
/// // Store `registered.value.secret` to verify deliveries; it is shown only once.
/// for hook in client.webhooks().list().await?.webhooks {
///     println!("{} {}", hook.id, hook.url);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Webhooks<'a> {
    client: &'a Client,
}

impl Client {
    /// The Webhooks API.
    pub fn webhooks(&self) -> Webhooks<'_> {
        Webhooks { client: self }
    }
}

impl<'a> Webhooks<'a> {
    /// `POST /webhooks/v1/webhooks`: registers a URL for event types. The answer holds the signing secret.
    pub async fn register(
        &self,
        request: &RegisterRequest,
        key: Option<IdempotencyKey>,
    ) -> Result<Idempotent<RegisterResponse>, Error> {
        let op = "webhooks.register";
        let body = self.client.body(op, request)?;
        self.client
            .write(Call {
                operation: op,
                method: http::Method::POST,
                path: WEBHOOKS_PATH.to_owned(),
                body: Some(body),
                key: Some(self.client.key_or_new(key)),
                reference: None,
                auth: Auth::Bearer,
            })
            .await
    }

    /// `GET /webhooks/v1/webhooks`: the registrations of the sales unit.
    pub async fn list(&self) -> Result<QueryResponse, Error> {
        self.client
            .json(Call {
                operation: "webhooks.list",
                method: http::Method::GET,
                path: WEBHOOKS_PATH.to_owned(),
                body: None,
                key: None,
                reference: None,
                auth: Auth::Bearer,
            })
            .await
    }

    /// `DELETE /webhooks/v1/webhooks/{id}`: removes a registration.
    pub async fn delete(
        &self,
        id: &str,
        key: Option<IdempotencyKey>,
    ) -> Result<Idempotent<()>, Error> {
        let op = "webhooks.delete";
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(
                Error::invalid_request("a webhook id has only letters, digits and dashes")
                    .with_operation(op),
            );
        }
        self.client
            .write_empty(Call {
                operation: op,
                method: http::Method::DELETE,
                path: format!("{WEBHOOKS_PATH}/{id}"),
                body: None,
                key: Some(self.client.key_or_new(key)),
                reference: None,
                auth: Auth::Bearer,
            })
            .await
    }
}
