//! Jobs: ordered opcodes submitted together, run by the [`JobQueue`] actor
//! (docs/jobs.md; Ganeti's job queue).
//!
//! Every bulk node verb is a job: a node-set opcode runs its nodes through
//! their node actors in parallel under a fanout limit, and the job keeps each
//! node's result.
//!
//! The queue's rules live in a plain core that neither actix, I/O nor a
//! clock reaches, so they are tested directly (`tests.rs`):
//! - `core`: [`JobQueue`]'s state and decisions, handing back effects;
//! - `admission`: what a submission must be to join the queue;
//! - `restart`: the restart rule, what becomes of each job found at load
//!   or adopted from a member that died;
//! - `ids`: where job ids come from (serial, or blocks of a shared store);
//! - `archive`: which ended jobs an archive wave takes, by age;
//! - `ended`: what is remembered of jobs that have ended.
//!
//! The actor around it: `actor` (messages, commits, watchers), `execute`
//! (running opcodes over node sets) and `held` (a new job's insert carries
//! the changes made in the turn that admitted it).

mod actor;
mod admission;
mod archive;
mod core;
mod ended;
mod execute;
mod held;
mod ids;
pub mod model;
mod restart;
#[cfg(test)]
mod tests;

pub use actor::{
    AbandonRunning, AdoptJobs, Adopted, ArchiveJob, ArchiveOld, CancelJob, CheckNotDrained, GetJob, GetQueueInfo,
    JobQueue, ListJobs, SetDrain, SetJobPriority, SetMaxRunning, StopStarting, SubmitJob, SubmitJobs, WaitJobChange,
};
pub use ids::BLOCK as JOB_ID_BLOCK;
pub use model::*;
