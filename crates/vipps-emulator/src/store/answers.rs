//! What every backend answers: the problem bodies of the store's own refusals, and the step every backend runs
//! on a loaded payment (domain change, then the rendered answer). Pure; the backends only load and save.

use vipps_types::problem::ErrorCode;

use super::{Op, WriteRequest};
use crate::domain::{Ctx, DomainError, Payment};
use crate::render::{self, StoredResponse};

/// The answer when the payment of an operation does not exist.
pub(super) fn missing_payment(req: &WriteRequest, reference: &str) -> StoredResponse {
    match req.op {
        Op::Settle { .. } => StoredResponse::empty(204),
        _ => not_found(req, reference),
    }
}

/// Applies an operation on an existing payment and renders the answer. Returns whether the payment must be saved:
/// always, except a settle that changed nothing (time-based changes noticed on the way are kept even when the
/// operation itself is refused).
pub(super) fn apply_to_payment(
    req: &WriteRequest,
    p: &mut Payment,
    ctx: &Ctx<'_>,
) -> (bool, StoredResponse) {
    let modified = |p: &Payment, r: Result<(), DomainError>| match r {
        Ok(()) => StoredResponse::json(200, &render::modification(p)),
        Err(e) => domain_problem(req, &e),
    };
    match &req.op {
        Op::Capture { amount, key, .. } => {
            let r = p.capture(ctx, amount.currency, amount.value, key);
            (true, modified(p, r))
        }
        Op::Refund { amount, key, .. } => {
            let r = p.refund(ctx, amount.currency, amount.value, key);
            (true, modified(p, r))
        }
        Op::Cancel {
            transaction_only,
            key,
            ..
        } => {
            let r = p.cancel(ctx, *transaction_only, key.as_deref());
            (true, modified(p, r))
        }
        Op::ForceApprove { .. } => match p.approve(ctx) {
            Ok(()) => (true, StoredResponse::empty(200)),
            Err(e) => (true, domain_problem(req, &e)),
        },
        Op::UserApprove { .. } | Op::UserReject { .. } => {
            let r = if matches!(req.op, Op::UserReject { .. }) {
                p.reject(ctx)
            } else {
                p.approve(ctx)
            };
            match r {
                Ok(()) => (true, StoredResponse::json(200, &render::payment(p))),
                Err(e) => (true, domain_problem(req, &e)),
            }
        }
        Op::Settle { .. } => (p.settle(ctx), StoredResponse::empty(204)),
        _ => (false, StoredResponse::empty(204)),
    }
}

pub(super) fn not_found(req: &WriteRequest, reference: &str) -> StoredResponse {
    StoredResponse::problem(&render::problem(
        404,
        "Payment not found",
        format!("No payment with reference `{reference}` exists for this merchant serial number"),
        Some(ErrorCode::ReferenceNotFound),
        &req.instance,
        &req.trace_id,
    ))
}

pub(super) fn domain_problem(req: &WriteRequest, e: &DomainError) -> StoredResponse {
    StoredResponse::problem(&render::problem(
        e.status,
        e.code.title(),
        &e.detail,
        Some(e.code),
        &req.instance,
        &req.trace_id,
    ))
}

pub(super) fn reference_exists(req: &WriteRequest, reference: &str) -> StoredResponse {
    StoredResponse::problem(&render::problem(
        409,
        "Reference already exists",
        format!(
            "A payment with reference `{reference}` already exists for this merchant serial number"
        ),
        Some(ErrorCode::ReferenceAlreadyExists),
        &req.instance,
        &req.trace_id,
    ))
}

pub(super) fn too_many_webhooks(
    req: &WriteRequest,
    max_per_event: usize,
    ev: &str,
) -> StoredResponse {
    StoredResponse::problem(
        &render::problem(
            400,
            "Too many webhooks",
            format!("At most {max_per_event} webhooks can be registered per event type; `{ev}` has reached the limit"),
            None,
            &req.instance,
            &req.trace_id,
        )
        .with_detail("events", format!("at most {max_per_event} registrations per event type")),
    )
}

pub(super) fn webhook_not_found(req: &WriteRequest, id: &str) -> StoredResponse {
    StoredResponse::problem(&render::problem(
        404,
        "Webhook not found",
        format!("No webhook with id `{id}` is registered for this merchant"),
        None,
        &req.instance,
        &req.trace_id,
    ))
}
