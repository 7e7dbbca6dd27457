//! Webhooks API v1: register, list and delete webhook registrations.

use vipps_types::webhooks::{QueryResponse, RegisterRequest, RegisterResponse, WEBHOOKS_PATH};

use crate::client::Client;
use crate::error::Error;
use crate::request::{Read, Write};

/// The Webhooks API of a [`Client`]: `client.webhooks()`.
///
/// ```no_run
/// use vipps_client::Client;
/// use vipps_types::webhooks::{RegisterRequest, epayment_event_types};
///
/// # async fn run(client: Client) -> Result<(), vipps_client::Error> {
/// let request = RegisterRequest { url: "https://example.com/hooks".into(), events: epayment_event_types() };
/// let registered = client.webhooks().register(&request).await?;
/// // Store `registered.value.secret` to verify deliveries; it is shown only once.
/// for hook in client.webhooks().list().await?.webhooks {
///     println!("{} {}", hook.id, hook.url);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Webhooks {
    client: Client,
}

impl Client {
    /// The Webhooks API (owns a clone of the client).
    pub fn webhooks(&self) -> Webhooks {
        Webhooks {
            client: self.clone(),
        }
    }
}

impl Webhooks {
    /// `POST /webhooks/v1/webhooks`: registers a URL for event types. The answer holds the signing secret.
    pub fn register(&self, request: &RegisterRequest) -> Write<RegisterResponse> {
        Write::json(
            &self.client,
            "webhooks.register",
            http::Method::POST,
            WEBHOOKS_PATH.to_owned(),
            Some(request),
        )
    }

    /// `GET /webhooks/v1/webhooks`: the registrations of the sales unit.
    pub fn list(&self) -> Read<QueryResponse> {
        Read::new(&self.client, "webhooks.list", WEBHOOKS_PATH.to_owned())
    }

    /// `DELETE /webhooks/v1/webhooks/{id}`: removes a registration.
    pub fn delete(&self, id: &str) -> Write<()> {
        let valid = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let path = if valid {
            format!("{WEBHOOKS_PATH}/{id}")
        } else {
            WEBHOOKS_PATH.to_owned()
        };
        let w = Write::empty::<()>(
            &self.client,
            "webhooks.delete",
            http::Method::DELETE,
            path,
            None,
        );
        if valid {
            w
        } else {
            w.refuse(Error::invalid_request(
                "a webhook id has only letters, digits and dashes",
            ))
        }
    }
}
