//! Listing without a store query: small index pages (`recurring.index`, at most [`PAGE`] ids each) per sales unit
//! (its agreements) and per agreement (its charges), appended after the write that creates the listed document.
//!
//! The append is a second write, so a crash between the two leaves a document that is not listed yet; every
//! replay of the creating request appends again (appending is idempotent), which is how a client's retry repairs
//! it. Pages are found by probing (`0, 1, 2, 4, ...` then bisecting), reads the store answers from its cache.

use super::commands::{IndexPage, PAGE, index_append, index_key};
use crate::platform::Shared as S;
use crate::platform::aggregate::decode;
use crate::platform::store::{Op, StoreError, WriteResult};

async fn page(
    s: &S,
    msn: &str,
    agreement: Option<&str>,
    n: usize,
) -> Result<Option<std::sync::Arc<IndexPage>>, StoreError> {
    Ok(s.store
        .aggregate(&index_key(msn, agreement, n), decode::<IndexPage>)
        .await?
        .and_then(|d| d.downcast::<IndexPage>().ok()))
}

/// The last existing page (0 when there is none).
async fn last_page(s: &S, msn: &str, agreement: Option<&str>) -> Result<usize, StoreError> {
    if page(s, msn, agreement, 0).await?.is_none() {
        return Ok(0);
    }
    // Invariant: `lo` exists; `hi` does not.
    let mut lo = 0usize;
    let mut hi = 1usize;
    while page(s, msn, agreement, hi).await?.is_some() {
        lo = hi;
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if page(s, msn, agreement, mid).await?.is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Appends ids to an index, page by page.
pub(super) async fn append(
    s: &S,
    msn: &str,
    agreement: Option<&str>,
    mut ids: Vec<String>,
) -> Result<(), StoreError> {
    let mut n = last_page(s, msn, agreement).await?;
    while !ids.is_empty() {
        let cmd = index_append(index_key(msn, agreement, n), ids.clone());
        let w = s
            .store
            .write(Op::Execute(cmd).background(s.clock.unix_ms()))
            .await?;
        let taken = match w {
            WriteResult::Fresh(r) | WriteResult::Replayed(r) => {
                serde_json::from_slice::<usize>(&r.body).unwrap_or(0)
            }
            _ => 0,
        };
        ids.drain(..taken.min(ids.len()));
        if !ids.is_empty() {
            n += 1;
        }
    }
    Ok(())
}

/// Whether an index lists `id` (for replays, which must not add an id twice on different pages).
pub(super) async fn contains(
    s: &S,
    msn: &str,
    agreement: Option<&str>,
    id: &str,
) -> Result<bool, StoreError> {
    let mut n = 0;
    while let Some(p) = page(s, msn, agreement, n).await? {
        if p.ids.iter().any(|i| i == id) {
            return Ok(true);
        }
        if p.ids.len() < PAGE {
            break;
        }
        n += 1;
    }
    Ok(false)
}

/// Every id of an index, oldest first.
pub(super) async fn list(
    s: &S,
    msn: &str,
    agreement: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut n = 0;
    while let Some(p) = page(s, msn, agreement, n).await? {
        out.extend(p.ids.iter().cloned());
        n += 1;
    }
    Ok(out)
}
