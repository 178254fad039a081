//! A group's node writes as arrays: the node updates and history entries
//! of many batches in one statement each.
//!
//! Why it is shaped so:
//!
//! - **Statements, not round trips, were the cost.** A group commit was
//!   already one round trip, but each transition is an `UpdateNode` and an
//!   `AppendHistory`, and each was its own statement: the server bound,
//!   planned and ran two statements (and a PL/pgSQL check) per transition,
//!   on the same two cores as the members. A run of such writes now goes
//!   as one `UPDATE … FROM unnest(…)` and one `INSERT … SELECT … FROM
//!   unnest(…)`, whatever the group's size.
//! - **Still fenced, row by row.** Each row carries the epoch this member
//!   holds for its node; a row is written only where the node's `owner`
//!   and `owner_epoch` match. Each statement returns the nodes it wrote and
//!   calls `kiln_node_written(0, node)` for every node it did not, which
//!   raises (fenced, or gone): the transaction aborts, the `COMMIT` becomes
//!   a rollback, and the group is redone batch by batch with the single
//!   statements (`PgBackend::commit`), so the batch that was refused fails
//!   alone with its own error, as before.
//! - **Order kept where it can matter.** Only consecutive `UpdateNode` and
//!   `AppendHistory` writes are merged (any other write ends a run and is
//!   sent on its own, in its place). Within a run the updates go before the
//!   entries: an update never changes what an entry's check reads (the
//!   node's uuid, owner and epoch), and a node updated twice in one run
//!   keeps its last record, as the single statements would leave it.
//!   Entries are inserted in their order, so their ids follow it.
//! - **Looked up by uuid, whatever the statistics say.** Right after a
//!   member claimed or created its nodes, the planner's statistics can
//!   say a member owns a handful of rows, and it then scanned the
//!   `nodes_owner` index for every row the member owns, once per group.
//!   The owner is compared with `IS NOT DISTINCT FROM` (the same test on a
//!   `NOT NULL` column, but one no index serves) and the rows are named by
//!   `uuid = ANY(…)`, which the primary key serves. The nodes a statement
//!   did not write are found by `EXCEPT` (hashed), not by a join of the
//!   run with itself.
//! - Only the fast path uses this; SQLite's path is untouched.

use std::collections::HashMap;

use super::{NODE_MAINTENANCE, Op, node_texts};
use crate::timestamp::timestamp_text;
use crate::{HistoryEntry, NodeId, NodeRecord, StoreError};

/// Consecutive node updates and history entries of a group, to be sent as
/// (at most) two statements.
#[derive(Default)]
pub(super) struct Run<'w> {
    /// Each node's last record, in the order the nodes first came.
    nodes: Vec<&'w NodeRecord>,
    index: HashMap<NodeId, usize>,
    history: Vec<&'w HistoryEntry>,
}

impl<'w> Run<'w> {
    pub(super) fn update(&mut self, node: &'w NodeRecord) {
        match self.index.get(&node.uuid) {
            Some(&i) => self.nodes[i] = node,
            None => {
                self.index.insert(node.uuid, self.nodes.len());
                self.nodes.push(node);
            }
        }
    }

    pub(super) fn append(&mut self, entry: &'w HistoryEntry) {
        self.history.push(entry);
    }

    /// The run's statements, the updates first, and empties it. `epoch`:
    /// the epoch this member holds for a node; `me`: the owner to match.
    pub(super) fn flush(&mut self, me: &str, epoch: impl Fn(NodeId) -> i64) -> Result<Vec<Op>, StoreError> {
        let mut ops = Vec::new();
        if !self.nodes.is_empty() {
            let mut columns: Vec<Vec<Option<String>>> = Vec::new();
            for node in &self.nodes {
                for (i, value) in node_texts(node)?.into_iter().enumerate() {
                    if columns.len() <= i {
                        columns.push(Vec::with_capacity(self.nodes.len()));
                    }
                    columns[i].push(value);
                }
            }
            let epochs: Vec<i64> = self.nodes.iter().map(|n| epoch(n.uuid)).collect();
            let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
            for (i, column) in columns.into_iter().enumerate() {
                if i == NODE_MAINTENANCE {
                    let flags: Vec<bool> = column.iter().map(|v| v.as_deref() == Some("true")).collect();
                    params.push(Box::new(flags));
                } else {
                    params.push(Box::new(column));
                }
            }
            params.push(Box::new(epochs));
            params.push(Box::new(me.to_string()));
            ops.push(Op { sql: UPDATE_NODES, params });
        }
        if !self.history.is_empty() {
            let h = &self.history;
            let text = |f: fn(&HistoryEntry) -> String| -> Vec<String> { h.iter().map(|e| f(e)).collect() };
            ops.push(Op {
                sql: APPEND_HISTORY,
                params: vec![
                    Box::new(text(|e| e.node.to_string())),
                    Box::new(text(|e| timestamp_text(e.at))),
                    Box::new(text(|e| e.event.clone())),
                    Box::new(text(|e| e.from_state.as_str().to_string())),
                    Box::new(text(|e| e.to_state.as_str().to_string())),
                    Box::new(h.iter().map(|e| e.error.clone()).collect::<Vec<Option<String>>>()),
                    Box::new(h.iter().map(|e| epoch(e.node)).collect::<Vec<i64>>()),
                    Box::new(me.to_string()),
                ],
            });
        }
        self.nodes.clear();
        self.index.clear();
        self.history.clear();
        Ok(ops)
    }
}

/// Every node of `$1`-`$25` (the columns of `node_columns!`, as arrays)
/// whose row `$27` owns at the epoch in `$26`; raises for any other.
pub(super) const UPDATE_NODES: &str = "WITH v AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                              $8::text[], $9::text[], $10::text[], $11::boolean[], $12::text[], $13::text[],
                              $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[],
                              $20::text[], $21::text[], $22::text[], $23::text[], $24::text[], $25::text[],
                              $26::bigint[])
             AS v(uuid, name, driver, driver_info, properties,
                  provision_state, target_provision_state, power_state, target_power_state,
                  boot_device, maintenance, maintenance_reason, fault, last_error,
                  reservation_purpose, reservation_since, created_at, updated_at,
                  bmc_last_contact, bmc_unreachable_since, power_verified_at, bmc_profile,
                  extra, instance_info, callback, epoch)),
     u AS (
         UPDATE nodes n SET
             name = v.name, driver = v.driver, driver_info = v.driver_info, properties = v.properties,
             provision_state = v.provision_state, target_provision_state = v.target_provision_state,
             power_state = v.power_state, target_power_state = v.target_power_state, boot_device = v.boot_device,
             maintenance = v.maintenance, maintenance_reason = v.maintenance_reason, fault = v.fault,
             last_error = v.last_error, reservation_purpose = v.reservation_purpose,
             reservation_since = v.reservation_since, created_at = v.created_at, updated_at = v.updated_at,
             bmc_last_contact = v.bmc_last_contact, bmc_unreachable_since = v.bmc_unreachable_since,
             power_verified_at = v.power_verified_at, bmc_profile = v.bmc_profile, extra = v.extra,
             instance_info = v.instance_info, callback = v.callback
         FROM v
         WHERE n.uuid = ANY($1::text[]) AND n.uuid = v.uuid
           AND n.owner IS NOT DISTINCT FROM $27 AND n.owner_epoch = v.epoch
         RETURNING n.uuid)
     SELECT kiln_node_written(0, m.uuid) FROM (SELECT uuid FROM v EXCEPT SELECT uuid FROM u) m";

/// The entries of `$1`-`$6` (node, at, event, from, to, error) whose node
/// `$8` owns at the epoch in `$7`, in their order; raises for any other.
pub(super) const APPEND_HISTORY: &str = "WITH h AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
             WITH ORDINALITY AS h(node, at, event, from_state, to_state, error, epoch, i)),
     i AS (
         INSERT INTO node_history (node, at, event, from_state, to_state, error)
         SELECT h.node, h.at, h.event, h.from_state, h.to_state, h.error FROM h
         WHERE EXISTS (SELECT 1 FROM nodes n
                       WHERE n.uuid = ANY($1::text[]) AND n.uuid = h.node
                         AND n.owner IS NOT DISTINCT FROM $8 AND n.owner_epoch = h.epoch)
         ORDER BY h.i
         RETURNING node)
     SELECT kiln_node_written(0, m.node) FROM (SELECT node FROM h EXCEPT SELECT node FROM i) m";
