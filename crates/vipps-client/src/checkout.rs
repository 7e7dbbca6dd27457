//! Checkout API v3: create a session and read it. Checkout authenticates with the API keys themselves
//! (`client_id`, `client_secret`, the subscription key and the MSN) instead of an access token, so these calls
//! never fetch a token.

use http::Method;
use vipps_types::checkout::{
    BASE_PATH, InitiateSessionRequest, InitiateSessionResponse, SessionResponse,
};

use crate::client::{Auth, Client};
use crate::request::{Read, Write};

/// The Checkout API of a [`Client`]: `client.checkout()`. It owns a clone of the client, so it can move into a
/// task.
///
/// ```no_run
/// use vipps_client::Client;
/// use vipps_types::checkout::{Amount, InitiateSessionRequest, MerchantInfo, PaymentTransaction};
///
/// # async fn run(client: Client) -> Result<(), vipps_client::Error> {
/// let request = InitiateSessionRequest {
///     type_: None,
///     merchant_info: MerchantInfo {
///         callback_url: "https://example.com/vipps/callback".into(),
///         return_url: "https://example.com/vipps/return".into(),
///         callback_authorization_token: "a-secret-of-yours".into(),
///         terms_and_conditions_url: None,
///     },
///     transaction: Some(PaymentTransaction {
///         amount: Amount { value: 49_900, currency: "NOK".into() },
///         reference: "acme-order-1001".into(),
///         payment_description: "Two pairs of socks".into(),
///         order_summary: None,
///     }),
///     reference: None, subscription: None, logistics: None, prefill_customer: None, configuration: None,
/// };
/// let session = client.checkout().create_session(&request).await?;
/// println!("open {}?token={}", session.value.checkout_frontend_url, session.value.token);
/// let now = client.checkout().session("acme-order-1001").await?;
/// println!("{}", now.session_state);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Checkout {
    client: Client,
}

impl Client {
    /// The Checkout API.
    pub fn checkout(&self) -> Checkout {
        Checkout {
            client: self.clone(),
        }
    }
}

/// A reference as a path segment: letters, digits and `-` pass, anything else is percent-encoded.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Checkout {
    /// `POST /checkout/v3/session`: a payment or subscription session. The answer's `token` opens the checkout
    /// page (`checkoutFrontendUrl?token=`). Sent with an `Idempotency-Key` (the caller's, or one made before the
    /// first attempt), so a retry replays instead of meeting "duplicate reference".
    pub fn create_session(
        &self,
        request: &InitiateSessionRequest,
    ) -> Write<InitiateSessionResponse> {
        let w = Write::json(
            &self.client,
            "checkout.create_session",
            Method::POST,
            format!("{BASE_PATH}/session"),
            Some(request),
        )
        .auth(Auth::ClientKeys);
        match request.session_reference() {
            Some(r) => w.reference(r),
            None => w,
        }
    }

    /// `GET /checkout/v3/session/{reference}`: the session, its payment and, once completed, the user's details.
    pub fn session(&self, reference: &str) -> Read<SessionResponse> {
        Read::new(
            &self.client,
            "checkout.get_session",
            format!("{BASE_PATH}/session/{}", seg(reference)),
        )
        .auth(Auth::ClientKeys)
        .reference(reference)
    }
}

#[cfg(test)]
mod tests {
    use super::seg;

    #[test]
    fn references_are_path_safe() {
        assert_eq!(seg("order-1001"), "order-1001");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
    }
}
