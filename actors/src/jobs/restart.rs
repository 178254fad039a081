//! The restart rule: what becomes of each job the store shows unfinished
//! when the queue loads, decided without actix, I/O or a clock (as
//! [`crate::node::plan::recover`] decides it for nodes).
//!
//! Why it is a rule of its own: nothing can be running when the queue
//! loads, so a job the store shows `running` or `canceling` was cut short by
//! the previous run's end. It must not run again (its opcodes may have
//! acted on nodes), so it ends `error`. A queued or waiting job has acted on
//! nothing and runs as it would have. A job whose stored body cannot be read
//! ends `error` too: a job with no opcodes would otherwise "succeed".
//!
//! The same rule applies to the jobs a member adopts from a member that
//! died (issue #23): what the dead member was running is cut short just as
//! a restart cuts it, only the reason differs ([`MEMBER_DIED`]).

use kiln_store::{JobId, JobLogEntry, JobRecord, JobStatus, LogLevel, Timestamp};

use super::model::JobView;

/// Why a job found running at load ends.
pub(super) const CUT_SHORT: &str = "daemon restarted while running";

/// Why a job adopted from a dead member, which it was running, ends.
pub(super) const MEMBER_DIED: &str = "the member running it died; adopted by another member";

/// What the restart rule makes of one unfinished job.
#[derive(Debug, PartialEq)]
pub(super) enum Recovered {
    /// Queued or waiting: back into the queue as it was, with its log.
    Resume { view: JobView, log: Vec<JobLogEntry> },
    /// It ended: by the rule (then `repair` is its record to store, the job
    /// `error` saying why), or already (a row whose status is final).
    Ended { id: JobId, status: JobStatus, at: Timestamp, repair: Option<JobRecord> },
}

/// Applies the restart rule to a job the store shows unfinished; `now` is
/// when the queue loads (or adopts it), `why` what cut a running job short
/// ([`CUT_SHORT`], [`MEMBER_DIED`]).
pub(super) fn recover(r: &JobRecord, now: Timestamp, why: &str) -> Recovered {
    let (mut view, unreadable) = JobView::decode(r, false);
    let cut_short = matches!(r.status, JobStatus::Running | JobStatus::Canceling).then(|| why.to_string());
    let mut repair = None;
    if let Some(why) = unreadable.or(cut_short) {
        for op in view.ops.iter_mut().filter(|o| !o.status.is_finished()) {
            op.status = JobStatus::Error;
            op.ended_at = Some(now);
            op.error = Some(why.clone());
        }
        view.status = JobStatus::Error;
        view.ended_at = Some(now);
        view.error = Some(why.clone());
        let mut log = r.log.clone();
        let serial = log.last().map_or(1, |e| e.serial + 1);
        log.push(JobLogEntry { job: r.id, serial, at: now, level: LogLevel::Error, message: why });
        repair = Some(view.to_record(log));
    }
    if view.status.is_finished() {
        return Recovered::Ended { id: view.id, status: view.status, at: view.ended_at.unwrap_or(now), repair };
    }
    Recovered::Resume { view, log: r.log.clone() }
}
