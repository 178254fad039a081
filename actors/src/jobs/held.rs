//! Inserts held back for the rest of the turn that admitted their jobs.
//!
//! Why: a job is admitted, placed and, when a slot is free, started in the
//! same turn of the queue actor, and a short job (`sleep 0`, a job whose
//! first opcode needs a durable start) commits a change of itself before
//! that turn ends. Sent apart, the insert and that change are two batches:
//! two waits in the store's queue, two answers from the sync thread, two
//! futures on the actor, though the store then writes the row once
//! (`kiln_store`'s `coalesce`). Held here until the turn has run its
//! effects, they go as one insert of the row as the last change left it,
//! and the change's follow-up runs when that insert is acknowledged.
//!
//! What keeps it the same as sending them apart:
//!
//! - The row inserted is the record the last merged change would have
//!   written, not the job as the turn leaves it: a job that started
//!   without a durable start is stored queued, as before, so a crash
//!   still runs it again rather than calling it interrupted.
//! - The insert is durable before any merged change is acknowledged, as
//!   the store's order gave before; a change of the job made in a later
//!   turn is sent after the insert, which is sent when this turn ends.
//! - A refused insert refuses its changes too (an update of a row that was
//!   never inserted failed before as well): the job is withdrawn first,
//!   then each follow-up learns why.
//!
//! The turn also has one time ([`HeldInserts::at`]): what it admits,
//! starts and ends is stamped with the reading taken as it began, as if it
//! took no time at all (it takes microseconds), and the site clock is read
//! once per turn rather than at every step.

use actix::Context;
use kiln_store::{Batch, JobId, JobLogEntry, JobRecord, JobStatus, Timestamp, Write};

use super::actor::JobQueue;
use super::model::JobView;

/// What runs once a change is durable (or could not be stored): the
/// caller's follow-up, with why the commit failed, if it did.
pub(super) type Then = Box<dyn FnOnce(&mut JobQueue, &mut Context<JobQueue>, Option<String>)>;

/// A change of a job on its way to the store, in an update of its own or
/// with its insert: how far its log is written, the status it commits, and
/// its follow-up.
pub(super) struct PendingChange {
    pub(super) written: usize,
    pub(super) status: JobStatus,
    pub(super) then: Then,
}

/// The inserts of one turn's admitted jobs, by id, and the turn's time.
pub(super) struct HeldInserts {
    at: Timestamp,
    held: Vec<Held>,
}

struct Held {
    id: JobId,
    row: Row,
    after: Vec<PendingChange>,
}

/// The row a held insert writes.
enum Row {
    /// The job as admitted, with its first log line: made a record only if
    /// no change replaces it (a short job's end usually does, and then
    /// serialising its body twice would be wasted).
    Admitted(JobView, JobLogEntry),
    Record(JobRecord),
}

impl Row {
    fn into_record(self) -> JobRecord {
        match self {
            Row::Admitted(view, entry) => view.to_record(vec![entry]),
            Row::Record(record) => record,
        }
    }
}

impl HeldInserts {
    /// Holds the insert of one job, as admitted at `at` (`view`, with its
    /// first log line `entry`).
    pub(super) fn admitted(view: JobView, entry: JobLogEntry, at: Timestamp) -> Self {
        HeldInserts { at, held: vec![Held { id: view.id, row: Row::Admitted(view, entry), after: Vec::new() }] }
    }

    /// Holds the inserts of `records`, each as admitted at `at`.
    pub(super) fn new(records: Vec<JobRecord>, at: Timestamp) -> Self {
        let mut held: Vec<Held> = records
            .into_iter()
            .map(|record| Held { id: record.id, row: Row::Record(record), after: Vec::new() })
            .collect();
        held.sort_unstable_by_key(|h| h.id);
        HeldInserts { at, held }
    }

    /// The time of the turn that admitted these jobs.
    pub(super) fn at(&self) -> Timestamp {
        self.at
    }

    /// Makes `record` the row `id`'s insert writes, and `after` run when it
    /// is acknowledged; gives `after` back when `id` is not held here.
    pub(super) fn merge(
        &mut self,
        id: JobId,
        record: impl FnOnce() -> JobRecord,
        after: PendingChange,
    ) -> Result<(), PendingChange> {
        let Some(held) = self.held.binary_search_by_key(&id, |h| h.id).ok().map(|n| &mut self.held[n]) else {
            return Err(after);
        };
        held.row = Row::Record(record());
        held.after.push(after);
        Ok(())
    }

    /// The one batch of inserts to send, and the follow-ups to run once
    /// it is acknowledged, in the order their changes were made per job.
    pub(super) fn release(self) -> (Batch, Vec<(JobId, PendingChange)>) {
        let mut after = Vec::new();
        let batch = self
            .held
            .into_iter()
            .map(|held| {
                after.extend(held.after.into_iter().map(|a| (held.id, a)));
                Write::InsertJob(held.row.into_record())
            })
            .collect();
        (batch, after)
    }
}
