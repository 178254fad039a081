//! Running nodes this process has just taken: at start, the ones it owns;
//! on a store shared by several members, also the ones a dead or departed
//! member left, as they are claimed (`kiln_store::Backend::claim_orphans`).
//!
//! Either way nothing of what the store shows mid-task can still be
//! running here, so the restart rule ([`crate::node::plan::recover`])
//! releases it first, with its reason in the node's history; only then
//! is the node added to the registry (at rest: its first request starts
//! its actor).

use std::time::Duration;

use kiln_store::{Claimed, NodeRecord, StoreError, StoreHandle, Timestamp, Write};

use crate::Site;
use crate::supervisor::{AdoptRecords, Registry};

/// Applies the restart rule to every record, in place, and returns the
/// writes that store the repairs (a record and a history line each).
pub fn recover_all(records: &mut [NodeRecord], why: &str, now: Timestamp) -> Vec<Write> {
    let mut repairs = Vec::new();
    for r in records.iter_mut() {
        if let Some((fixed, entry)) = crate::node::plan::recover(r, why, now) {
            *r = fixed.clone();
            repairs.push(Write::UpdateNode(fixed.into()));
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

/// How many records a start-up reads at a time.
const START_BATCH: usize = 8192;

/// Reads the nodes this process runs into `registry`, at rest, a batch at a
/// time while the store reads the next, so that a start-up's reading and
/// adopting overlap (a million nodes: about 1.5 s and 1 s) and it never
/// holds every record twice. Nodes the store shows mid-task wait until the
/// read is done, are repaired by the restart rule (`why`), then added.
/// Returns how many nodes, and how many were repaired.
pub async fn load_at_start(
    store: &StoreHandle,
    registry: &Registry,
    why: &str,
    now: Timestamp,
) -> Result<(usize, usize), StoreError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NodeRecord>>(8);
    // On the store thread, outside any runtime: it may block while the
    // batches before wait here.
    let read = store.read(move |b| {
        b.stream_owned_nodes(START_BATCH, &mut |batch| {
            // Refused only once the receiving end gave up (an error there).
            let _ = tx.blocking_send(batch);
        })
    });
    let adopt = async {
        let mut cut_short = Vec::new();
        while let Some(batch) = rx.recv().await {
            for record in batch {
                if crate::node::plan::cut_short(&record) {
                    cut_short.push(record);
                } else {
                    registry.add(record);
                }
            }
        }
        cut_short
    };
    let (count, mut cut_short) = futures::join!(read, adopt);
    let count = count?;
    let repaired = repair(store, &mut cut_short, why, now).await?;
    for record in cut_short {
        registry.add(record);
    }
    Ok((count, repaired))
}

/// Takes on nodes this member has just claimed: repairs them at once, then
/// adds each to the registry; for a node whose last owner died, only
/// after `fence_delay`, so that a BMC call the dead member sent cannot land
/// after one of this member's (a BMC cannot check who asks). Meanwhile its
/// requests wait in the store and reads come from there. Returns how many
/// were repaired.
pub async fn adopt(site: &Site, claimed: Vec<Claimed>, why: &str, fence_delay: Duration) -> Result<usize, StoreError> {
    if claimed.is_empty() {
        return Ok(0);
    }
    let dead: std::collections::HashSet<_> =
        claimed.iter().filter(|c| c.from_dead_owner).map(|c| c.node.uuid).collect();
    let mut records: Vec<NodeRecord> = claimed.into_iter().map(|c| c.node).collect();
    let repaired = repair(&site.store, &mut records, why, site.config.clock.now()).await?;
    let orphaned = crate::remote::fail_orphaned(&site.router(), dead.iter().copied().collect())
        .await
        .map_err(|e| StoreError::Database { message: e.to_string(), constraint: None })?;
    if orphaned > 0 {
        tracing::warn!(requests = orphaned, "ended the node requests a dead member was running");
    }
    let (later, now): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| dead.contains(&r.uuid));
    tracing::info!(message = "Took over nodes.", released = now.len(), from_dead = later.len(), repaired, why);
    site.supervisor.send(AdoptRecords(now)).await.map_err(|_| StoreError::Closed)?;
    if !later.is_empty() {
        let supervisor = site.supervisor.clone();
        let clock = site.config.clock.clone();
        actix::spawn(async move {
            clock.sleep(fence_delay).await;
            let _ = supervisor.send(AdoptRecords(later)).await;
        });
    }
    Ok(repaired)
}
