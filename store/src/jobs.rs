//! The records of the job queue (docs/jobs.md): jobs, their log, and the
//! queue's few site-wide settings.
//!
//! Why they are shaped so:
//!
//! - **The store does not know what a job does.** Opcodes, dependencies and
//!   per-node results are the job queue's vocabulary, and they change as the
//!   queue grows new opcodes; the store keeps them as one opaque [`JobRecord::body`]
//!   and only sees the columns it must order or select by (id, priority,
//!   status, times). A schema change is never needed for a new opcode, and the
//!   store stays free of `kiln-actors`' types.
//! - **Ids are serial and never reused.** A [`JobId`] is a plain number an
//!   operator types (`kiln job show 42`); the queue picks `max_job_id() + 1`
//!   at startup, and the store keeps archived jobs' ids so that an id, once
//!   given out, means one job for the life of the site. A store shared by
//!   several members hands each one blocks of ids instead
//!   ([`crate::Backend::job_id_block`]): unique still, increasing per
//!   member, not across members.
//! - **Live and archived jobs live apart.** The live table holds what the
//!   queue must reload after a restart (queued, waiting, running and recently
//!   finished jobs) and stays small however long the site runs; archiving
//!   moves a finished job out in one atomic step. An archived job is frozen:
//!   writing it again is refused rather than silently resurrecting it.
//! - **The log outlives the move.** Log lines are keyed by (job, serial) with
//!   no reference to either table, so archiving moves one row and leaves the
//!   log where it is; `job watch` asks for "entries after serial N", which the
//!   key serves directly.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::records::Timestamp;
use crate::string_enum;

/// A job's serial id, unique for the life of the site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(JobId)
    }
}

string_enum!(
    /// Where a job is in its life (docs/jobs.md); opcodes use the same words.
    JobStatus, "job status" {
        Queued => "queued",
        Waiting => "waiting",
        Running => "running",
        Success => "success",
        Error => "error",
        Canceling => "canceling",
        Canceled => "canceled",
    }
);

impl JobStatus {
    /// Whether the job is over for good: nothing will run or change it again,
    /// so it may be archived and dependents may look at its outcome.
    pub fn is_finished(self) -> bool {
        match self {
            JobStatus::Success | JobStatus::Error | JobStatus::Canceled => true,
            JobStatus::Queued | JobStatus::Waiting | JobStatus::Running | JobStatus::Canceling => false,
        }
    }
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    /// -20 … 19, lower runs first (as Ganeti).
    pub priority: i32,
    pub status: JobStatus,
    pub submitted_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// The opcodes, dependencies and results as the job queue encodes them
    /// (JSON text); the store keeps it opaque.
    pub body: String,
    /// The job's whole log, oldest first, serials increasing. It is written
    /// with the row: the queue rewrites the row at every change anyway.
    pub log: Vec<JobLogEntry>,
}

/// What the job queue reloads at start ([`crate::Backend::load_live_queue`]):
/// the live jobs that have not ended, whole, and of the ended ones only how
/// and when they ended. A live table may hold millions of ended jobs (they
/// stay live for `job_archive_age`); reading them whole took 5-8 s and 700 MB
/// at a million.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveQueue {
    /// By id.
    pub unfinished: Vec<JobRecord>,
    /// By id.
    pub ended: Vec<JobEnd>,
}

/// How and when a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobEnd {
    pub id: JobId,
    pub status: JobStatus,
    pub ended_at: Option<Timestamp>,
}

string_enum!(
    /// How much a job's log line matters (Ganeti's log types, in the words
    /// of log levels): most lines are `info`; a failed node or a cancel is
    /// a `warning`, a failed opcode or job an `error`.
    LogLevel, "log level" {
        Info => "info",
        Warning => "warning",
        Error => "error",
    }
);

/// One timestamped line of a job's log; `serial` counts up from the job's
/// first line and is what `job watch` resumes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogEntry {
    pub job: JobId,
    pub serial: u64,
    pub at: Timestamp,
    /// Lines stored before levels existed read back as `info`.
    pub level: LogLevel,
    pub message: String,
}

impl JobLogEntry {
    /// An `info` line.
    pub fn info(job: JobId, serial: u64, at: Timestamp, message: String) -> JobLogEntry {
        JobLogEntry { job, serial, at, level: LogLevel::Info, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_only_three_are_finished() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
        }
        let finished: Vec<&str> = JobStatus::ALL.iter().filter(|s| s.is_finished()).map(|s| s.as_str()).collect();
        assert_eq!(finished, ["success", "error", "canceled"]);
        let err = "done".parse::<JobStatus>().unwrap_err();
        assert!(err.to_string().starts_with("unknown job status 'done'"), "{err}");
    }

    #[test]
    fn job_ids_are_plain_numbers_in_text_and_json() {
        assert_eq!(JobId(42).to_string(), "42");
        assert_eq!("42".parse::<JobId>().unwrap(), JobId(42));
        assert!("-1".parse::<JobId>().is_err());
        assert_eq!(serde_json::to_string(&JobId(7)).unwrap(), "7");
        assert_eq!(serde_json::to_string(&JobStatus::Canceling).unwrap(), "\"canceling\"");
    }
}
