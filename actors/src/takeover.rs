//! Running nodes this process has just taken: at start, the ones it owns;
//! on a store shared by several members, also the ones a dead or departed
//! member left, as they are claimed (`kiln_store::Backend::claim_orphans`).
//!
//! Either way nothing of what the store shows mid-task can still be
//! running here, so the restart rule ([`crate::node::plan::recover`])
//! releases it first, with its reason in the node's history; only then
//! does a node actor start for it.

use kiln_store::{NodeRecord, StoreError, StoreHandle, Timestamp, Write};

use crate::Site;
use crate::supervisor::AdoptRecords;

/// Applies the restart rule to every record, in place, and returns the
/// writes that store the repairs (a record and a history line each).
pub fn recover_all(records: &mut [NodeRecord], why: &str, now: Timestamp) -> Vec<Write> {
    let mut repairs = Vec::new();
    for r in records.iter_mut() {
        if let Some((fixed, entry)) = crate::node::plan::recover(r, why, now) {
            *r = fixed.clone();
            repairs.push(Write::UpdateNode(fixed));
            repairs.push(Write::AppendHistory(entry));
        }
    }
    repairs
}

/// Repairs what `records` were left doing (`why` says who left them) and
/// commits that, all or nothing.
pub async fn repair(
    store: &StoreHandle,
    records: &mut [NodeRecord],
    why: &str,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let repairs = recover_all(records, why, now);
    let repaired = repairs.len() / 2;
    if !repairs.is_empty() {
        store.commit(repairs).await?;
    }
    Ok(repaired)
}

/// Takes on nodes this member has just claimed: repairs them, then starts
/// a node actor for each. Returns how many were repaired.
pub async fn adopt(site: &Site, mut records: Vec<NodeRecord>, why: &str) -> Result<usize, StoreError> {
    if records.is_empty() {
        return Ok(0);
    }
    let repaired = repair(&site.store, &mut records, why, site.config.clock.now()).await?;
    let nodes = records.len();
    site.supervisor.send(AdoptRecords(records)).await.map_err(|_| StoreError::Closed)?;
    tracing::info!(message = "Took over nodes.", nodes, repaired, why);
    Ok(repaired)
}
