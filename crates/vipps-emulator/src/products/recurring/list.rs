//! Listing: the agreements of a sales unit and the charges of an agreement, read from the store's index of
//! aggregates by kind, tenant and parent (a charge names its agreement as its parent), so that creating a charge
//! or an agreement is one write and a listing needs no document of its own.

use super::domain::{Agreement, Charge};
use crate::platform::Shared as S;
use crate::platform::aggregate::Aggregate;
use crate::platform::store::{AggregateQuery, StoreError};

/// Rows read per store query while walking a listing.
const BATCH: usize = 1000;

/// Every id of one kind of a sales unit (of one parent, if given), oldest first (by creation time, then id).
async fn ids(
    s: &S,
    kind: &str,
    msn: &str,
    parent: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let mut q = AggregateQuery {
        kind: kind.to_owned(),
        tenant: Some(msn.to_owned()),
        parent: parent.map(str::to_owned),
        limit: BATCH,
        ..AggregateQuery::default()
    };
    let mut out = Vec::new();
    loop {
        let rows = s.store.list_aggregates(&q).await?;
        let full = rows.len() == BATCH;
        if let Some(last) = rows.last() {
            q.after = Some((last.created_ms, last.tenant.clone(), last.id.clone()));
        }
        out.extend(rows.into_iter().map(|r| r.id));
        if !full {
            break;
        }
    }
    // The store lists newest first; the Recurring API lists oldest first.
    out.reverse();
    Ok(out)
}

/// The agreements of a sales unit, oldest first.
pub(super) async fn agreements(s: &S, msn: &str) -> Result<Vec<String>, StoreError> {
    ids(s, Agreement::KIND, msn, None).await
}

/// The charges of an agreement, oldest first.
pub(super) async fn charges(s: &S, msn: &str, agreement: &str) -> Result<Vec<String>, StoreError> {
    ids(s, Charge::KIND, msn, Some(agreement)).await
}
