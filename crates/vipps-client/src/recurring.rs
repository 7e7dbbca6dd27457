//! Recurring API v3: agreements (draft, list, get, update, stop, force accept) and charges (create, bulk create,
//! get, list, capture, refund, cancel).

use http::Method;
use vipps_types::headers::RecurringIdempotencyKey;
use vipps_types::recurring::{
    AgreementResponse, AgreementStatus, BASE_PATH, BulkChargesRequest, BulkChargesResponse,
    CaptureChargeRequest, ChargeReference, ChargeResponse, ChargeStatus, CreateChargeRequest,
    DraftAgreementRequest, DraftAgreementResponse, ForceAcceptRequest, PatchAgreementRequest,
    RefundChargeRequest,
};

use crate::client::Client;
use crate::request::{Read, Write};

/// A Recurring write: its key is a [`RecurringIdempotencyKey`] (1 to 40 characters, none of `#?/\`).
pub type RecurringWrite<T> = Write<T, RecurringIdempotencyKey>;

/// The Recurring API of a [`Client`]: `client.recurring()`. It owns a clone of the client, so it can move into a
/// task.
///
/// ```no_run
/// use vipps_client::{AgreementQuery, Client};
/// use vipps_types::recurring::{AgreementStatus, CreateChargeRequest, TransactionType};
///
/// # async fn run(client: Client) -> Result<(), vipps_client::Error> {
/// let recurring = client.recurring();
/// for a in recurring.agreements(AgreementQuery::new().status(AgreementStatus::Active)).await? {
///     let charge = CreateChargeRequest {
///         amount: 49_900, transaction_type: TransactionType::DirectCapture,
///         description: "December".into(), due: Some("2030-12-01".into()), retry_days: Some(5),
///         type_: None, order_id: None, external_id: None,
///     };
///     let created = recurring.create_charge(&a.id, &charge).await?;
///     println!("{} charged as {}", a.id, created.value.charge_id);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Recurring {
    client: Client,
}

/// Filters of [`Recurring::agreements`]: the vendor lists `ACTIVE` agreements unless a status is given, page 1 of
/// 500 by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgreementQuery {
    status: Option<AgreementStatus>,
    created_after_ms: Option<i64>,
    page_number: Option<u32>,
    page_size: Option<u32>,
}

impl AgreementQuery {
    /// Every filter at its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only agreements in this status.
    pub fn status(mut self, status: AgreementStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only agreements created after this time (Unix milliseconds).
    pub fn created_after_ms(mut self, ms: i64) -> Self {
        self.created_after_ms = Some(ms);
        self
    }

    /// This page (from 1).
    pub fn page_number(mut self, n: u32) -> Self {
        self.page_number = Some(n);
        self
    }

    /// This many per page.
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = Some(n);
        self
    }

    fn query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(s) = &self.status {
            q.append_pair("status", s.as_str());
        }
        if let Some(t) = self.created_after_ms {
            q.append_pair("createdAfter", &t.to_string());
        }
        if let Some(n) = self.page_number {
            q.append_pair("pageNumber", &n.to_string());
        }
        if let Some(n) = self.page_size {
            q.append_pair("pageSize", &n.to_string());
        }
        q.finish()
    }
}

/// A path segment: ids are letters, digits, `-` and `_`; anything else is percent-encoded.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// The Recurring API.
    pub fn recurring(&self) -> Recurring {
        Recurring {
            client: self.clone(),
        }
    }
}

impl Recurring {
    fn agreement_path(id: &str) -> String {
        format!("{BASE_PATH}/agreements/{}", seg(id))
    }

    fn charge_path(agreement: &str, charge: &str) -> String {
        format!(
            "{BASE_PATH}/agreements/{}/charges/{}",
            seg(agreement),
            seg(charge)
        )
    }

    /// `POST /recurring/v3/agreements`: drafts an agreement for the user to accept at `vippsConfirmationUrl`.
    pub fn draft_agreement(
        &self,
        request: &DraftAgreementRequest,
    ) -> RecurringWrite<DraftAgreementResponse> {
        Write::json(
            &self.client,
            "recurring.draft_agreement",
            Method::POST,
            format!("{BASE_PATH}/agreements"),
            Some(request),
        )
    }

    /// `GET /recurring/v3/agreements`: agreements by status, newest filters in `query`.
    pub fn agreements(&self, query: AgreementQuery) -> Read<Vec<AgreementResponse>> {
        let q = query.query();
        let path = if q.is_empty() {
            format!("{BASE_PATH}/agreements")
        } else {
            format!("{BASE_PATH}/agreements?{q}")
        };
        Read::new(&self.client, "recurring.list_agreements", path)
    }

    /// `GET /recurring/v3/agreements/{agreementId}`.
    pub fn agreement(&self, agreement_id: &str) -> Read<AgreementResponse> {
        Read::new(
            &self.client,
            "recurring.get_agreement",
            Self::agreement_path(agreement_id),
        )
        .reference(agreement_id)
    }

    /// `PATCH /recurring/v3/agreements/{agreementId}`: pricing, product fields, or `status: STOPPED`.
    pub fn update_agreement(
        &self,
        agreement_id: &str,
        request: &PatchAgreementRequest,
    ) -> RecurringWrite<()> {
        Write::empty(
            &self.client,
            "recurring.update_agreement",
            Method::PATCH,
            Self::agreement_path(agreement_id),
            Some(request),
        )
        .reference(agreement_id)
    }

    /// Stops an agreement (`PATCH` with `status: STOPPED`); irreversible.
    pub fn stop_agreement(&self, agreement_id: &str) -> RecurringWrite<()> {
        let stop = PatchAgreementRequest {
            status: Some(AgreementStatus::Stopped),
            ..Default::default()
        };
        self.update_agreement(agreement_id, &stop)
    }

    /// `PATCH /recurring/v3/agreements/{agreementId}/accept`: accepts as the user (test environment only).
    pub fn force_accept(
        &self,
        agreement_id: &str,
        request: &ForceAcceptRequest,
    ) -> RecurringWrite<()> {
        Write::empty(
            &self.client,
            "recurring.force_accept",
            Method::PATCH,
            format!("{}/accept", Self::agreement_path(agreement_id)),
            Some(request),
        )
        .reference(agreement_id)
    }

    /// `POST /recurring/v3/agreements/{agreementId}/charges`.
    pub fn create_charge(
        &self,
        agreement_id: &str,
        request: &CreateChargeRequest,
    ) -> RecurringWrite<ChargeReference> {
        Write::json(
            &self.client,
            "recurring.create_charge",
            Method::POST,
            format!("{}/charges", Self::agreement_path(agreement_id)),
            Some(request),
        )
        .reference(agreement_id)
    }

    /// `POST /recurring/v3/agreements/charges`: up to 2,000 charges at once; the answer has one result each.
    pub fn create_charges(
        &self,
        request: &BulkChargesRequest,
    ) -> RecurringWrite<BulkChargesResponse> {
        Write::json(
            &self.client,
            "recurring.create_charges",
            Method::POST,
            format!("{BASE_PATH}/agreements/charges"),
            Some(request),
        )
    }

    /// `GET /recurring/v3/agreements/{agreementId}/charges/{chargeId}`.
    pub fn charge(&self, agreement_id: &str, charge_id: &str) -> Read<ChargeResponse> {
        Read::new(
            &self.client,
            "recurring.get_charge",
            Self::charge_path(agreement_id, charge_id),
        )
        .reference(charge_id)
    }

    /// `GET /recurring/v3/charges/{chargeId}`: a charge without its agreement id.
    pub fn charge_by_id(&self, charge_id: &str) -> Read<ChargeResponse> {
        Read::new(
            &self.client,
            "recurring.get_charge_by_id",
            format!("{BASE_PATH}/charges/{}", seg(charge_id)),
        )
        .reference(charge_id)
    }

    /// `GET /recurring/v3/agreements/{agreementId}/charges`: every charge of an agreement.
    pub fn charges(&self, agreement_id: &str) -> Read<Vec<ChargeResponse>> {
        Read::new(
            &self.client,
            "recurring.list_charges",
            format!("{}/charges", Self::agreement_path(agreement_id)),
        )
        .reference(agreement_id)
    }

    /// `GET /recurring/v3/agreements/{agreementId}/charges?status=`: the charges in one status.
    pub fn charges_in_status(
        &self,
        agreement_id: &str,
        status: &ChargeStatus,
    ) -> Read<Vec<ChargeResponse>> {
        Read::new(
            &self.client,
            "recurring.list_charges",
            format!(
                "{}/charges?status={}",
                Self::agreement_path(agreement_id),
                seg(status.as_str())
            ),
        )
        .reference(agreement_id)
    }

    /// `POST .../charges/{chargeId}/capture`: captures (part of) a reserved charge.
    pub fn capture_charge(
        &self,
        agreement_id: &str,
        charge_id: &str,
        request: &CaptureChargeRequest,
    ) -> RecurringWrite<()> {
        Write::empty(
            &self.client,
            "recurring.capture_charge",
            Method::POST,
            format!("{}/capture", Self::charge_path(agreement_id, charge_id)),
            Some(request),
        )
        .reference(charge_id)
    }

    /// `POST .../charges/{chargeId}/refund`: refunds (part of) a charged charge.
    pub fn refund_charge(
        &self,
        agreement_id: &str,
        charge_id: &str,
        request: &RefundChargeRequest,
    ) -> RecurringWrite<()> {
        Write::empty(
            &self.client,
            "recurring.refund_charge",
            Method::POST,
            format!("{}/refund", Self::charge_path(agreement_id, charge_id)),
            Some(request),
        )
        .reference(charge_id)
    }

    /// `DELETE .../charges/{chargeId}`: cancels a charge not yet charged, or the rest of a reservation.
    pub fn cancel_charge(&self, agreement_id: &str, charge_id: &str) -> RecurringWrite<()> {
        Write::empty::<()>(
            &self.client,
            "recurring.cancel_charge",
            Method::DELETE,
            Self::charge_path(agreement_id, charge_id),
            None,
        )
        .reference(charge_id)
    }
}
