//! Jobs: ordered opcodes submitted together, run by the [`JobQueue`] actor
//! (docs/jobs.md; Ganeti's job queue).
//!
//! Every bulk node verb is a job: a node-set opcode runs its nodes through
//! their node actors in parallel under a fanout limit, and the job keeps each
//! node's result.

mod ended;
pub mod model;
mod queue;

pub use model::*;
pub use queue::{
    AbandonRunning, ArchiveJob, ArchiveOld, CancelJob, CheckNotDrained, GetJob, GetQueueInfo, JobQueue, ListJobs,
    SetDrain, SetJobPriority, SetMaxRunning, StopStarting, SubmitJob, SubmitJobs, WaitJobChange,
};
