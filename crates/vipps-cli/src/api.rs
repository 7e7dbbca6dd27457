//! `vipps token`, `vipps payment ...`, `vipps webhook ...`: merchant API calls through `vipps-client`.
//!
//! Credentials come from flags or the environment (`VIPPS_BASE_URL` or `VIPPS_ENV`, `VIPPS_CLIENT_ID`,
//! `VIPPS_CLIENT_SECRET`, `VIPPS_SUBSCRIPTION_KEY`, `VIPPS_MSN`, optional `VIPPS_SYSTEM_*` and
//! `VIPPS_PLUGIN_*`). Output is JSON on stdout: reads print the API's answer; writes print
//! `{"idempotencyKey", "replayed", "attempts", "result"}` so that the key can be kept for a retry. Errors go to
//! stderr with the problem's title, detail and code; the exit code tells a usage error (2), an API error (3)
//! and a network failure (4) apart.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use vipps_client::{Client, Credentials, Idempotent, PollOptions, RetryPolicy, Timeouts, Write};
use vipps_types::env::Environment;
use vipps_types::epayment::{CreatePaymentRequest, Customer, ForceApprove, UserFlow};
use vipps_types::headers::IdempotencyKey;
use vipps_types::ids::Reference;
use vipps_types::money::{Amount, Currency};
use vipps_types::webhooks::{RegisterRequest, epayment_event_types};

use crate::exit::{Class, classify};

/// Merchant API commands.
#[derive(Debug, Subcommand)]
pub enum ApiCommand {
    /// Fetch an access token and print the token response as JSON.
    Token(Conn),
    /// ePayment API calls.
    #[command(subcommand)]
    Payment(PaymentCommand),
    /// Webhooks API calls.
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

/// Where to send requests and as whom.
#[derive(Debug, Args)]
pub struct Conn {
    /// API base URL, such as an emulator's `http://127.0.0.1:8080` (overrides `--env`).
    #[arg(long, env = "VIPPS_BASE_URL")]
    base_url: Option<String>,
    /// `test` or `production` (used when no base URL is given).
    #[arg(long = "env", env = "VIPPS_ENV")]
    environment: Option<String>,
    /// Client id.
    #[arg(long, env = "VIPPS_CLIENT_ID")]
    client_id: Option<String>,
    /// Client secret (prefer the environment variable: flags show in process lists).
    #[arg(long, env = "VIPPS_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Subscription key (`Ocp-Apim-Subscription-Key`).
    #[arg(long, env = "VIPPS_SUBSCRIPTION_KEY", hide_env_values = true)]
    subscription_key: Option<String>,
    /// Merchant serial number.
    #[arg(long, env = "VIPPS_MSN")]
    msn: Option<String>,
    /// `Vipps-System-Name`.
    #[arg(long, env = "VIPPS_SYSTEM_NAME")]
    system_name: Option<String>,
    /// `Vipps-System-Version`.
    #[arg(long, env = "VIPPS_SYSTEM_VERSION")]
    system_version: Option<String>,
    /// `Vipps-System-Plugin-Name`.
    #[arg(long, env = "VIPPS_PLUGIN_NAME")]
    plugin_name: Option<String>,
    /// `Vipps-System-Plugin-Version`.
    #[arg(long, env = "VIPPS_PLUGIN_VERSION")]
    plugin_version: Option<String>,
    /// Total time limit of a call in seconds, retries included.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    timeout: f64,
    /// Most attempts per call.
    #[arg(long, default_value_t = 4)]
    max_attempts: u32,
}

/// ePayment commands.
#[derive(Debug, Subcommand)]
pub enum PaymentCommand {
    /// Create a payment from flags or from a whole request body (`--body FILE`, `-` for stdin).
    Create(CreateArgs),
    /// Print a payment.
    Get(RefArgs),
    /// Print a payment's event log.
    Events(RefArgs),
    /// Capture an amount of an authorized payment.
    Capture(AmountArgs),
    /// Refund an amount of a captured payment.
    Refund(AmountArgs),
    /// Cancel a payment.
    Cancel(CancelArgs),
    /// Approve a payment as a test user (test environment and emulator only).
    Approve(ApproveArgs),
    /// Poll a payment until it leaves CREATED (first after 5 s, then every 2 s).
    Wait(WaitArgs),
}

/// `payment create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    conn: Conn,
    /// The request body as JSON; `-` reads stdin. Excludes the field flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["reference", "amount", "currency", "return_url", "flow", "phone", "description"])]
    body: Option<PathBuf>,
    /// Payment reference (8 to 64 of a-z, A-Z, 0-9 and -).
    #[arg(long, required_unless_present = "body")]
    reference: Option<String>,
    /// Amount in minor units (øre, cents).
    #[arg(long, required_unless_present = "body")]
    amount: Option<i64>,
    /// NOK, DKK or EUR.
    #[arg(long)]
    currency: Option<String>,
    /// Where the user returns.
    #[arg(long)]
    return_url: Option<String>,
    /// WEB_REDIRECT, NATIVE_REDIRECT, PUSH_MESSAGE or QR.
    #[arg(long)]
    flow: Option<String>,
    /// The customer's phone number (MSISDN digits, such as 4791234567).
    #[arg(long)]
    phone: Option<String>,
    /// Payment description shown to the user.
    #[arg(long)]
    description: Option<String>,
    /// Idempotency key (default: a new UUID, printed with the result).
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// A command on one payment.
#[derive(Debug, Args)]
pub struct RefArgs {
    #[command(flatten)]
    conn: Conn,
    /// Payment reference.
    reference: String,
}

/// `capture` and `refund`.
#[derive(Debug, Args)]
pub struct AmountArgs {
    #[command(flatten)]
    conn: Conn,
    /// Payment reference.
    reference: String,
    /// Amount in minor units.
    #[arg(long)]
    amount: i64,
    /// Currency (default: the payment's own, looked up first).
    #[arg(long)]
    currency: Option<String>,
    /// Idempotency key (default: a new UUID, printed with the result).
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    conn: Conn,
    /// Payment reference.
    reference: String,
    /// Cancel only if not yet authorized (`cancelTransactionOnly`).
    #[arg(long)]
    transaction_only: bool,
    /// Idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    conn: Conn,
    /// Payment reference.
    reference: String,
    /// The test customer's phone number.
    #[arg(long)]
    phone: Option<String>,
    /// The token from the create answer's redirect URL.
    #[arg(long)]
    token: Option<String>,
    /// Idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    conn: Conn,
    /// Payment reference.
    reference: String,
    /// Before the first poll, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    initial_delay_ms: u64,
    /// Between polls, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    interval_ms: u64,
    /// Most polls.
    #[arg(long, default_value_t = 150)]
    max_polls: u32,
}

/// Webhooks commands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Register a URL for event types (default: every ePayment event). Prints the secret once.
    Register(RegisterArgs),
    /// List registrations.
    List(Conn),
    /// Delete a registration.
    Delete(DeleteArgs),
}

/// `webhook register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    conn: Conn,
    /// Where events are sent.
    #[arg(long)]
    url: String,
    /// An event type such as `epayments.payment.captured.v1`; repeat for more.
    #[arg(long = "event")]
    events: Vec<String>,
    /// Idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `webhook delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    conn: Conn,
    /// Registration id.
    id: String,
    /// Idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Runs a merchant API command.
pub async fn run(cmd: ApiCommand) -> anyhow::Result<()> {
    match cmd {
        ApiCommand::Token(conn) => {
            let client = conn.client()?;
            print_json(&client.access_token().await.map_err(api_error)?)
        }
        ApiCommand::Payment(cmd) => payment(cmd).await,
        ApiCommand::Webhook(cmd) => webhook(cmd).await,
    }
}

async fn payment(cmd: PaymentCommand) -> anyhow::Result<()> {
    match cmd {
        PaymentCommand::Create(a) => {
            let client = a.conn.client()?;
            let key = key(a.idempotency_key.as_deref())?;
            let request = create_request(&a)?;
            print_write(keyed(client.epayment().create(&request), key).await)
        }
        PaymentCommand::Get(a) => {
            let client = a.conn.client()?;
            let r = reference(&a.reference)?;
            print_json(&client.epayment().get(&r).await.map_err(api_error)?)
        }
        PaymentCommand::Events(a) => {
            let client = a.conn.client()?;
            let r = reference(&a.reference)?;
            print_json(&client.epayment().events(&r).await.map_err(api_error)?)
        }
        PaymentCommand::Capture(a) => {
            let (client, r, amount, key) = modification(&a).await?;
            print_write(keyed(client.epayment().capture(&r, amount), key).await)
        }
        PaymentCommand::Refund(a) => {
            let (client, r, amount, key) = modification(&a).await?;
            print_write(keyed(client.epayment().refund(&r, amount), key).await)
        }
        PaymentCommand::Cancel(a) => {
            let client = a.conn.client()?;
            let r = reference(&a.reference)?;
            let key = key(a.idempotency_key.as_deref())?;
            let w = if a.transaction_only {
                client.epayment().cancel_transaction_only(&r)
            } else {
                client.epayment().cancel(&r)
            };
            print_write(keyed(w, key).await)
        }
        PaymentCommand::Approve(a) => {
            let client = a.conn.client()?;
            let r = reference(&a.reference)?;
            let key = key(a.idempotency_key.as_deref())?;
            let body = ForceApprove {
                customer: a.phone.map(Customer::phone),
                token: a.token,
            };
            print_write(keyed(client.epayment().force_approve(&r, &body), key).await)
        }
        PaymentCommand::Wait(a) => {
            let client = a.conn.client()?;
            let r = reference(&a.reference)?;
            let options = PollOptions {
                initial_delay: Duration::from_millis(a.initial_delay_ms),
                interval: Duration::from_millis(a.interval_ms),
                max_polls: a.max_polls.max(1),
            };
            let payment = client
                .epayment()
                .wait_for_final_state(&r, &options)
                .await
                .map_err(api_error)?;
            print_json(&payment)
        }
    }
}

async fn webhook(cmd: WebhookCommand) -> anyhow::Result<()> {
    match cmd {
        WebhookCommand::Register(a) => {
            let client = a.conn.client()?;
            let key = key(a.idempotency_key.as_deref())?;
            let events = if a.events.is_empty() {
                epayment_event_types()
            } else {
                a.events
            };
            let request = RegisterRequest { url: a.url, events };
            print_write(keyed(client.webhooks().register(&request), key).await)
        }
        WebhookCommand::List(conn) => {
            let client = conn.client()?;
            print_json(&client.webhooks().list().await.map_err(api_error)?)
        }
        WebhookCommand::Delete(a) => {
            let client = a.conn.client()?;
            let key = key(a.idempotency_key.as_deref())?;
            print_write(keyed(client.webhooks().delete(&a.id), key).await)
        }
    }
}

impl Conn {
    /// A client for these settings.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let mut b = Client::builder();
        b = match (&self.base_url, self.environment.as_deref()) {
            (Some(url), _) if !url.trim().is_empty() => b.base_url(url.trim()),
            (_, Some(env)) => match env.trim().to_ascii_lowercase().as_str() {
                "test" | "mt" => b.environment(Environment::Test),
                "production" | "prod" => b.environment(Environment::Production),
                other => {
                    return Err(usage(format!(
                        "VIPPS_ENV / --env must be `test` or `production`, not `{other}`"
                    )));
                }
            },
            _ => {
                return Err(usage(
                    "no API environment: set --base-url / VIPPS_BASE_URL or --env / VIPPS_ENV",
                ));
            }
        };
        let client_id = required(&self.client_id, "--client-id / VIPPS_CLIENT_ID")?;
        let secret = required(&self.client_secret, "--client-secret / VIPPS_CLIENT_SECRET")?;
        let sub = required(
            &self.subscription_key,
            "--subscription-key / VIPPS_SUBSCRIPTION_KEY",
        )?;
        let msn = required(&self.msn, "--msn / VIPPS_MSN")?;
        b = b
            .credentials(Credentials::new(client_id, secret, sub))
            .merchant_serial_number(msn);
        let set = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        // The vendor asks for as much of the system information as is known, not all or nothing: what is set is
        // sent.
        let (name, version) = (set(&self.system_name), set(&self.system_version));
        if name.is_none() && version.is_some() {
            eprintln!(
                "warning: VIPPS_SYSTEM_VERSION (--system-version) is set without VIPPS_SYSTEM_NAME (--system-name); \
                 sending the version alone"
            );
        }
        if let Some(n) = name {
            b = b.system_name(n);
        }
        if let Some(v) = version {
            b = b.system_version(v);
        }
        let (pn, pv) = (set(&self.plugin_name), set(&self.plugin_version));
        if pn.is_some() || pv.is_some() {
            b = b.plugin(pn.unwrap_or_default(), pv.unwrap_or_default());
        }
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err(usage("--timeout must be a positive number of seconds"));
        }
        b = b
            .timeouts(Timeouts::default().with_total(Duration::from_secs_f64(self.timeout)))
            .retry_policy(RetryPolicy::default().with_max_attempts(self.max_attempts));
        b.build().map_err(|e| classify(Class::Usage, e))
    }
}

fn required<'a>(value: &'a Option<String>, what: &str) -> anyhow::Result<&'a str> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(usage(format!("missing {what}"))),
    }
}

pub(crate) fn usage(message: impl std::fmt::Display) -> anyhow::Error {
    classify(Class::Usage, anyhow::anyhow!("{message}"))
}

fn reference(text: &str) -> anyhow::Result<Reference> {
    Reference::new(text).map_err(usage)
}

/// A write with the caller's key, when one was given.
pub(crate) fn keyed<T, K: Into<IdempotencyKey>>(w: Write<T, K>, key: Option<K>) -> Write<T, K> {
    match key {
        Some(k) => w.idempotency_key(k),
        None => w,
    }
}

pub(crate) fn key(text: Option<&str>) -> anyhow::Result<Option<IdempotencyKey>> {
    text.map(|t| IdempotencyKey::new(t).map_err(usage))
        .transpose()
}

fn currency(text: &str) -> anyhow::Result<Currency> {
    text.parse::<Currency>().map_err(usage)
}

fn amount(currency: Currency, value: i64) -> anyhow::Result<Amount> {
    Amount::new(currency, value).map_err(usage)
}

fn flow(text: &str) -> anyhow::Result<UserFlow> {
    let wire = text.trim().to_ascii_uppercase().replace('-', "_");
    let flow = UserFlow::from_wire(&wire);
    if flow.is_known() {
        Ok(flow)
    } else {
        Err(usage(format!(
            "--flow must be WEB_REDIRECT, NATIVE_REDIRECT, PUSH_MESSAGE or QR, not `{text}`"
        )))
    }
}

/// A whole request body from a file, or stdin for `-`.
pub(crate) fn read_body<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> anyhow::Result<T> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the body from stdin")
            .map_err(|e| classify(Class::Usage, e))?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(|e| classify(Class::Usage, e))?;
    }
    serde_json::from_str(&text).map_err(|e| usage(format!("the body is not a valid request: {e}")))
}

fn create_request(a: &CreateArgs) -> anyhow::Result<CreatePaymentRequest> {
    if let Some(path) = &a.body {
        return read_body(path);
    }
    let (Some(r), Some(value)) = (&a.reference, a.amount) else {
        return Err(usage(
            "--reference and --amount are required without --body",
        ));
    };
    let cur = currency(a.currency.as_deref().unwrap_or("NOK"))?;
    let flow = flow(a.flow.as_deref().unwrap_or("WEB_REDIRECT"))?;
    let mut req = CreatePaymentRequest::new(amount(cur, value)?, reference(r)?, flow);
    if let Some(u) = &a.return_url {
        req = req.with_return_url(u);
    }
    if let Some(p) = &a.phone {
        req = req.with_phone_number(p);
    }
    if let Some(d) = &a.description {
        req = req.with_description(d);
    }
    Ok(req)
}

async fn modification(
    a: &AmountArgs,
) -> anyhow::Result<(Client, Reference, Amount, Option<IdempotencyKey>)> {
    let client = a.conn.client()?;
    let r = reference(&a.reference)?;
    let key = key(a.idempotency_key.as_deref())?;
    let cur = match &a.currency {
        Some(c) => currency(c)?,
        None => {
            client
                .epayment()
                .get(&r)
                .await
                .map_err(api_error)?
                .amount
                .currency
        }
    };
    let amount = amount(cur, a.amount)?;
    Ok((client, r, amount, key))
}

/// Classifies a client error for the exit code.
pub(crate) fn api_error(e: vipps_client::Error) -> anyhow::Error {
    let class = if e.is_usage() {
        Class::Usage
    } else if e.is_network() {
        Class::Network
    } else {
        Class::Api
    };
    // A rate-limited call was already retried as the server's `Retry-After` asked; say so, and how long it asks
    // to wait now, so the user does not retry at once.
    let rate_limited = e.api().filter(|a| a.status == 429).map(|a| {
        let wait = a
            .retry_after
            .map(|d| format!("; the server asks to wait {} s", d.as_secs().max(1)))
            .unwrap_or_default();
        format!(
            "rate limited after {} attempt(s), each retry waiting as Retry-After said{wait}",
            e.attempts()
        )
    });
    match rate_limited {
        Some(note) => classify(class, anyhow::Error::new(e).context(note)),
        None => classify(class, e),
    }
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot write JSON")?;
    println!("{text}");
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WriteOutput<'a, T> {
    idempotency_key: &'a str,
    replayed: bool,
    attempts: u32,
    result: &'a T,
}

pub(crate) fn print_write<T: Serialize>(
    result: Result<Idempotent<T>, vipps_client::Error>,
) -> anyhow::Result<()> {
    let done = result.map_err(api_error)?;
    print_json(&WriteOutput {
        idempotency_key: done.idempotency_key.as_str(),
        replayed: done.replayed,
        attempts: done.attempts,
        result: &done.value,
    })
}
