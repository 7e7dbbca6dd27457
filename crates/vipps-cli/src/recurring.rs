//! `vipps agreement create|get|list|accept|stop` and `vipps charge create|get|list|capture|refund|cancel`: the
//! Recurring API v3 through `vipps-client`.
//!
//! Connection settings and output are those of `vipps payment` (see `api.rs`): reads print the API's answer as
//! JSON; writes print `{"idempotencyKey", "replayed", "attempts", "result"}`; exit codes 2 (usage), 3 (API
//! error), 4 (network). Keys follow the Recurring rule (1 to 40 characters, none of `#?/\`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use vipps_client::AgreementQuery;
use vipps_types::headers::RecurringIdempotencyKey;
use vipps_types::recurring::{
    AgreementStatus, CaptureChargeRequest, ChargeStatus, ChargeType, CreateChargeRequest,
    DraftAgreementRequest, ForceAcceptRequest, IntervalRequest, PeriodUnit, PricingRequest,
    PricingType, RefundChargeRequest, TimePeriod, TransactionType,
};

use crate::api::{Conn, api_error, keyed, print_json, print_write, usage};

/// Recurring agreement commands.
#[derive(Debug, Subcommand)]
pub enum AgreementCommand {
    /// Draft an agreement from flags or a whole request body (`--body FILE`, `-` for stdin).
    Create(AgreementCreateArgs),
    /// Print an agreement.
    Get(AgreementIdArgs),
    /// List agreements (ACTIVE unless `--status` says otherwise).
    List(AgreementListArgs),
    /// Accept an agreement as a test user (test environment and emulator only).
    Accept(AgreementAcceptArgs),
    /// Stop an agreement (irreversible).
    Stop(AgreementKeyedArgs),
}

/// Recurring charge commands.
#[derive(Debug, Subcommand)]
pub enum ChargeCommand {
    /// Create a charge on an active agreement.
    Create(ChargeCreateArgs),
    /// Print a charge (by agreement and charge id, or by charge id alone).
    Get(ChargeGetArgs),
    /// List an agreement's charges.
    List(ChargeListArgs),
    /// Capture (part of) a reserved charge.
    Capture(ChargeAmountArgs),
    /// Refund (part of) a charged charge.
    Refund(ChargeAmountArgs),
    /// Cancel a charge.
    Cancel(ChargeKeyedArgs),
}

/// `agreement create`.
#[derive(Debug, Args)]
pub struct AgreementCreateArgs {
    #[command(flatten)]
    conn: Conn,
    /// The request body as JSON; `-` reads stdin. Excludes the field flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["amount", "product_name"])]
    body: Option<PathBuf>,
    /// Price per interval in øre (LEGACY pricing).
    #[arg(long, required_unless_present = "body")]
    amount: Option<i64>,
    /// Product name.
    #[arg(long, required_unless_present = "body")]
    product_name: Option<String>,
    /// Interval unit: YEAR, MONTH, WEEK or DAY.
    #[arg(long, default_value = "MONTH")]
    interval: String,
    /// Interval count.
    #[arg(long, default_value_t = 1)]
    interval_count: i32,
    /// Where the user goes after accepting or rejecting.
    #[arg(long, default_value = "https://example.com/redirect")]
    redirect_url: String,
    /// Where the user manages the agreement.
    #[arg(long, default_value = "https://example.com/agreement")]
    agreement_url: String,
    /// The user's phone number.
    #[arg(long)]
    phone: Option<String>,
    /// Idempotency key (1 to 40 characters, none of #?/\).
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// An agreement id.
#[derive(Debug, Args)]
pub struct AgreementIdArgs {
    #[command(flatten)]
    conn: Conn,
    /// Agreement id.
    agreement_id: String,
}

/// An agreement id and a key.
#[derive(Debug, Args)]
pub struct AgreementKeyedArgs {
    #[command(flatten)]
    conn: Conn,
    /// Agreement id.
    agreement_id: String,
    /// Idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `agreement accept`.
#[derive(Debug, Args)]
pub struct AgreementAcceptArgs {
    #[command(flatten)]
    conn: Conn,
    /// Agreement id.
    agreement_id: String,
    /// The test user's phone number.
    #[arg(long, default_value = "4791234567")]
    phone: String,
    /// Idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `agreement list`.
#[derive(Debug, Args)]
pub struct AgreementListArgs {
    #[command(flatten)]
    conn: Conn,
    /// PENDING, ACTIVE, STOPPED or EXPIRED.
    #[arg(long)]
    status: Option<String>,
    /// Only agreements created after this time (Unix milliseconds).
    #[arg(long)]
    created_after: Option<i64>,
    /// Page number (from 1).
    #[arg(long)]
    page_number: Option<u32>,
    /// Page size.
    #[arg(long)]
    page_size: Option<u32>,
}

/// `charge create`.
#[derive(Debug, Args)]
pub struct ChargeCreateArgs {
    #[command(flatten)]
    conn: Conn,
    /// Agreement id.
    agreement_id: String,
    /// Amount in øre.
    #[arg(long)]
    amount: i64,
    /// Shown to the user.
    #[arg(long, default_value = "Recurring charge")]
    description: String,
    /// Due date, YYYY-MM-DD (at least tomorrow); leave out with `--unscheduled`.
    #[arg(long, required_unless_present = "unscheduled")]
    due: Option<String>,
    /// Days to retry after the due date (0 to 14).
    #[arg(long, default_value_t = 0)]
    retry_days: i32,
    /// Reserve first (RESERVE_CAPTURE) instead of charging directly.
    #[arg(long)]
    reserve: bool,
    /// An UNSCHEDULED charge, made at once.
    #[arg(long)]
    unscheduled: bool,
    /// Used as the charge id.
    #[arg(long)]
    order_id: Option<String>,
    /// Idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `charge get`.
#[derive(Debug, Args)]
pub struct ChargeGetArgs {
    #[command(flatten)]
    conn: Conn,
    /// Charge id.
    charge_id: String,
    /// Agreement id (without it, the charge is read by its id alone).
    #[arg(long)]
    agreement: Option<String>,
}

/// `charge list`.
#[derive(Debug, Args)]
pub struct ChargeListArgs {
    #[command(flatten)]
    conn: Conn,
    /// Agreement id.
    agreement_id: String,
    /// Only charges in this status.
    #[arg(long)]
    status: Option<String>,
}

/// `charge capture` and `charge refund`.
#[derive(Debug, Args)]
pub struct ChargeAmountArgs {
    #[command(flatten)]
    conn: Conn,
    /// Agreement id.
    agreement_id: String,
    /// Charge id.
    charge_id: String,
    /// Amount in øre.
    #[arg(long)]
    amount: i64,
    /// Why.
    #[arg(long, default_value = "vipps cli")]
    description: String,
    /// Idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `charge cancel`.
#[derive(Debug, Args)]
pub struct ChargeKeyedArgs {
    #[command(flatten)]
    conn: Conn,
    /// Agreement id.
    agreement_id: String,
    /// Charge id.
    charge_id: String,
    /// Idempotency key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

fn key(text: Option<&str>) -> anyhow::Result<Option<RecurringIdempotencyKey>> {
    text.map(|t| RecurringIdempotencyKey::new(t).map_err(usage))
        .transpose()
}

fn known<T>(value: T, known: bool, what: &str, allowed: &str) -> anyhow::Result<T> {
    if known {
        Ok(value)
    } else {
        Err(usage(format!("{what} must be one of {allowed}")))
    }
}

/// Runs an agreement command.
pub async fn agreement(cmd: AgreementCommand) -> anyhow::Result<()> {
    match cmd {
        AgreementCommand::Create(a) => {
            let client = a.conn.client()?;
            let key = key(a.idempotency_key.as_deref())?;
            let request: DraftAgreementRequest = match &a.body {
                Some(path) => crate::api::read_body(path)?,
                None => {
                    let unit = PeriodUnit::from_wire(&a.interval.to_ascii_uppercase());
                    let unit = known(
                        unit.clone(),
                        unit.is_known(),
                        "--interval",
                        "YEAR, MONTH, WEEK, DAY",
                    )?;
                    DraftAgreementRequest {
                        campaign: None,
                        pricing: PricingRequest {
                            type_: Some(PricingType::Legacy),
                            currency: "NOK".into(),
                            amount: a.amount,
                            suggested_max_amount: None,
                        },
                        phone_number: a.phone.clone(),
                        initial_charge: None,
                        interval: IntervalRequest::Period(TimePeriod {
                            unit,
                            count: a.interval_count,
                        }),
                        is_app: None,
                        merchant_agreement_url: a.agreement_url.clone(),
                        merchant_redirect_url: a.redirect_url.clone(),
                        product_name: a.product_name.clone().unwrap_or_default(),
                        product_description: None,
                        scope: None,
                        skip_landing_page: None,
                        external_id: None,
                        country_code: None,
                    }
                }
            };
            print_write(keyed(client.recurring().draft_agreement(&request), key).await)
        }
        AgreementCommand::Get(a) => {
            let client = a.conn.client()?;
            print_json(
                &client
                    .recurring()
                    .agreement(&a.agreement_id)
                    .await
                    .map_err(api_error)?,
            )
        }
        AgreementCommand::List(a) => {
            let client = a.conn.client()?;
            let mut q = AgreementQuery::new();
            if let Some(s) = &a.status {
                let st = AgreementStatus::from_wire(&s.to_ascii_uppercase());
                q = q.status(known(
                    st.clone(),
                    st.is_known(),
                    "--status",
                    "PENDING, ACTIVE, STOPPED, EXPIRED",
                )?);
            }
            if let Some(t) = a.created_after {
                q = q.created_after_ms(t);
            }
            if let Some(n) = a.page_number {
                q = q.page_number(n);
            }
            if let Some(n) = a.page_size {
                q = q.page_size(n);
            }
            print_json(&client.recurring().agreements(q).await.map_err(api_error)?)
        }
        AgreementCommand::Accept(a) => {
            let client = a.conn.client()?;
            let key = key(a.idempotency_key.as_deref())?;
            let body = ForceAcceptRequest {
                phone_number: a.phone,
            };
            print_write(keyed(client.recurring().force_accept(&a.agreement_id, &body), key).await)
        }
        AgreementCommand::Stop(a) => {
            let client = a.conn.client()?;
            let key = key(a.idempotency_key.as_deref())?;
            print_write(keyed(client.recurring().stop_agreement(&a.agreement_id), key).await)
        }
    }
}

/// Runs a charge command.
pub async fn charge(cmd: ChargeCommand) -> anyhow::Result<()> {
    match cmd {
        ChargeCommand::Create(a) => {
            let client = a.conn.client()?;
            let key = key(a.idempotency_key.as_deref())?;
            let request = CreateChargeRequest {
                amount: a.amount,
                transaction_type: if a.reserve {
                    TransactionType::ReserveCapture
                } else {
                    TransactionType::DirectCapture
                },
                description: a.description,
                due: a.due,
                retry_days: Some(a.retry_days),
                type_: a.unscheduled.then_some(ChargeType::Unscheduled),
                order_id: a.order_id,
                external_id: None,
            };
            print_write(
                keyed(
                    client.recurring().create_charge(&a.agreement_id, &request),
                    key,
                )
                .await,
            )
        }
        ChargeCommand::Get(a) => {
            let client = a.conn.client()?;
            let r = match &a.agreement {
                Some(agr) => client.recurring().charge(agr, &a.charge_id).await,
                None => client.recurring().charge_by_id(&a.charge_id).await,
            };
            print_json(&r.map_err(api_error)?)
        }
        ChargeCommand::List(a) => {
            let client = a.conn.client()?;
            let r = match &a.status {
                Some(s) => {
                    let st = ChargeStatus::from_wire(&s.to_ascii_uppercase());
                    let st = known(
                        st.clone(),
                        st.is_known(),
                        "--status",
                        "PENDING, DUE, PROCESSING, RESERVED, CHARGED, PARTIALLY_CAPTURED, FAILED, CANCELLED, PARTIALLY_REFUNDED, REFUNDED",
                    )?;
                    client
                        .recurring()
                        .charges_in_status(&a.agreement_id, &st)
                        .await
                }
                None => client.recurring().charges(&a.agreement_id).await,
            };
            print_json(&r.map_err(api_error)?)
        }
        ChargeCommand::Capture(a) => {
            let client = a.conn.client()?;
            let key = key(a.idempotency_key.as_deref())?;
            let body = CaptureChargeRequest {
                amount: a.amount,
                description: a.description,
            };
            print_write(
                keyed(
                    client
                        .recurring()
                        .capture_charge(&a.agreement_id, &a.charge_id, &body),
                    key,
                )
                .await,
            )
        }
        ChargeCommand::Refund(a) => {
            let client = a.conn.client()?;
            let key = key(a.idempotency_key.as_deref())?;
            let body = RefundChargeRequest {
                amount: a.amount,
                description: a.description,
            };
            print_write(
                keyed(
                    client
                        .recurring()
                        .refund_charge(&a.agreement_id, &a.charge_id, &body),
                    key,
                )
                .await,
            )
        }
        ChargeCommand::Cancel(a) => {
            let client = a.conn.client()?;
            let key = key(a.idempotency_key.as_deref())?;
            print_write(
                keyed(
                    client
                        .recurring()
                        .cancel_charge(&a.agreement_id, &a.charge_id),
                    key,
                )
                .await,
            )
        }
    }
}
