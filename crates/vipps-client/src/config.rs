//! Credentials and timeouts.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// The API keys of a sales unit: client id, client secret and subscription key.
///
/// The secret and the subscription key are held as [`SecretString`]s: `Debug` never prints them, and their
/// memory is zeroed on drop. The client id is not secret, but is shown only in part.
///
/// ```
/// use vipps_client::Credentials;
///
/// let c = Credentials::new("0a1b2c3d-client", "very-secret", "subscription-key-123");
/// let shown = format!("{c:?}");
/// assert!(!shown.contains("very-secret") && !shown.contains("subscription-key-123"));
/// assert_eq!(c.client_id(), "0a1b2c3d-client");
/// ```
#[derive(Clone)]
pub struct Credentials {
    client_id: String,
    client_secret: SecretString,
    subscription_key: SecretString,
}

impl Credentials {
    /// The three keys from the merchant portal.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        subscription_key: impl Into<String>,
    ) -> Self {
        Credentials {
            client_id: client_id.into(),
            client_secret: SecretString::from(client_secret.into()),
            subscription_key: SecretString::from(subscription_key.into()),
        }
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub(crate) fn client_secret(&self) -> &str {
        self.client_secret.expose_secret()
    }

    pub(crate) fn subscription_key(&self) -> &str {
        self.subscription_key.expose_secret()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.client_id.chars().take(4).collect();
        f.debug_struct("Credentials")
            .field("client_id", &format_args!("{shown}…"))
            .field("client_secret", &"[redacted]")
            .field("subscription_key", &"[redacted]")
            .finish()
    }
}

/// Time limits of a call.
///
/// ```
/// use std::time::Duration;
/// use vipps_client::Timeouts;
///
/// let t = Timeouts::default().with_total(Duration::from_secs(10));
/// assert_eq!(t.connect, Duration::from_secs(5));
/// assert_eq!(t.total, Some(Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection (TCP and TLS).
    pub connect: Duration,
    /// One attempt: from sending the request to the end of the answer's body.
    pub attempt: Duration,
    /// The whole call, every retry and backoff included; `None` for no limit beyond the attempts'.
    pub total: Option<Duration>,
}

impl Default for Timeouts {
    /// 5 s to connect, 20 s per attempt, 60 s in total.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            attempt: Duration::from_secs(20),
            total: Some(Duration::from_secs(60)),
        }
    }
}

impl Timeouts {
    /// Sets the connect timeout.
    pub fn with_connect(mut self, d: Duration) -> Self {
        self.connect = d;
        self
    }

    /// Sets the per-attempt timeout.
    pub fn with_attempt(mut self, d: Duration) -> Self {
        self.attempt = d;
        self
    }

    /// Sets the total deadline of a call.
    pub fn with_total(mut self, d: Duration) -> Self {
        self.total = Some(d);
        self
    }

    /// Removes the total deadline.
    pub fn without_total(mut self) -> Self {
        self.total = None;
        self
    }
}
