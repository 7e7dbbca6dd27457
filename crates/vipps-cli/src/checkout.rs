//! `vipps checkout create|get`: the Checkout API v3 through `vipps-client`.
//!
//! Connection settings and output are those of `vipps payment` (see `api.rs`): `get` prints the session as JSON;
//! `create` prints `{"idempotencyKey", "replayed", "attempts", "result"}` where `result` has the `token`, the
//! `checkoutFrontendUrl` and the `pollingUrl`, plus `checkoutUrl`, the page to open (`checkoutFrontendUrl?token=`);
//! exit codes 2 (usage), 3 (API error), 4 (network). Checkout authenticates with the API keys themselves, so no
//! access token is fetched.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use vipps_types::checkout::{
    Amount, InitiateSessionRequest, MerchantInfo, PaymentTransaction, PrefillCustomer,
};

use crate::api::{Conn, api_error, key, keyed, print_json, usage};

/// Checkout session commands.
#[derive(Debug, Subcommand)]
pub enum CheckoutCommand {
    /// Create a payment session from flags, or any session from a request body (`--body FILE`, `-` for stdin).
    Create(Box<CreateArgs>),
    /// Print a session.
    Get(Box<GetArgs>),
}

/// `checkout create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    conn: Conn,
    /// The request body as JSON; `-` reads stdin. Excludes the field flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["amount", "reference"])]
    body: Option<PathBuf>,
    /// Amount in minor units (øre).
    #[arg(long, required_unless_present = "body")]
    amount: Option<i64>,
    /// Currency.
    #[arg(long, default_value = "NOK")]
    currency: String,
    /// The session's reference (8 to 50 letters, digits or dashes).
    #[arg(long, required_unless_present = "body")]
    reference: Option<String>,
    /// Shown to the user.
    #[arg(long, default_value = "Checkout from the command line")]
    description: String,
    /// Where the "payment completed" callback goes.
    #[arg(long, default_value = "https://example.com/vipps/callback")]
    callback_url: String,
    /// Sent back as the callback's Authorization header.
    #[arg(long, default_value = "vipps-cli-callback-token")]
    callback_token: String,
    /// Where the user returns to.
    #[arg(long, default_value = "https://example.com/vipps/return")]
    return_url: String,
    /// The user's phone number, prefilled on the page.
    #[arg(long)]
    phone: Option<String>,
    /// Idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `checkout get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    conn: Conn,
    /// The session's reference.
    reference: String,
}

/// Runs a `checkout` command.
pub async fn run(cmd: CheckoutCommand) -> anyhow::Result<()> {
    match cmd {
        CheckoutCommand::Create(a) => {
            let client = a.conn.client()?;
            let key = key(a.idempotency_key.as_deref())?;
            let request: InitiateSessionRequest = match &a.body {
                Some(path) => crate::api::read_body(path)?,
                None => InitiateSessionRequest {
                    type_: None,
                    merchant_info: MerchantInfo {
                        callback_url: a.callback_url.clone(),
                        return_url: a.return_url.clone(),
                        callback_authorization_token: a.callback_token.clone(),
                        terms_and_conditions_url: None,
                    },
                    transaction: Some(PaymentTransaction {
                        amount: Amount {
                            value: a.amount.ok_or_else(|| usage("--amount is required"))?,
                            currency: a.currency.to_ascii_uppercase(),
                        },
                        reference: a
                            .reference
                            .clone()
                            .ok_or_else(|| usage("--reference is required"))?,
                        payment_description: a.description.clone(),
                        order_summary: None,
                    }),
                    reference: None,
                    subscription: None,
                    logistics: None,
                    prefill_customer: a.phone.clone().map(|p| PrefillCustomer {
                        phone_number: Some(p),
                        ..Default::default()
                    }),
                    configuration: None,
                },
            };
            let d = keyed(client.checkout().create_session(&request), key)
                .await
                .map_err(api_error)?;
            let mut result = serde_json::to_value(&d.value)?;
            result["checkoutUrl"] = serde_json::Value::String(format!(
                "{}?token={}",
                d.value.checkout_frontend_url, d.value.token
            ));
            print_json(&serde_json::json!({
                "idempotencyKey": d.idempotency_key.as_str(),
                "replayed": d.replayed,
                "attempts": d.attempts,
                "result": result,
            }))
        }
        CheckoutCommand::Get(a) => {
            let client = a.conn.client()?;
            let s = client
                .checkout()
                .session(&a.reference)
                .await
                .map_err(api_error)?;
            print_json(&s)
        }
    }
}
