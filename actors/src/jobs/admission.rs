//! Admission: what a submission must be to join the queue, checked before
//! any id is given out, so a refused submission stores nothing.
//!
//! Pure functions of the submission and what the queue holds: node names
//! are looked up through [`NodeNames`] (the node registry in the daemon, a
//! list in the core's tests), so the rules are tested without actors.

use kiln_store::JobStatus;

use super::model::{JobRef, NewJob, Opcode};
use crate::KilnError;
use crate::supervisor::Registry;

/// The priorities a job may have: -20 (first) to 19 (last), as Ganeti's.
pub(super) const PRIORITIES: std::ops::RangeInclusive<i32> = -20..=19;

/// How admission asks whether an opcode's nodes exist.
pub(super) trait NodeNames {
    /// Every node of `nodes` exists (a node opcode acts on each).
    fn resolve(&self, nodes: &str) -> Result<(), KilnError>;
    /// `nodes` is a well-formed node set (an exec opcode reaches names that
    /// need not be enrolled).
    fn parse(&self, nodes: &str) -> Result<(), KilnError>;
}

impl NodeNames for Registry {
    /// On a shared store a name this member does not run may be another
    /// member's: only a set that is not well formed is refused here, and
    /// the opcode resolves it against the whole site when it starts.
    fn resolve(&self, nodes: &str) -> Result<(), KilnError> {
        match Registry::resolve(self, nodes) {
            Err(KilnError::NotFound(_)) if self.shared.is_some() => Registry::parse(self, nodes).map(|_| ()),
            other => other.map(|_| ()),
        }
    }
    fn parse(&self, nodes: &str) -> Result<(), KilnError> {
        Registry::parse(self, nodes).map(|_| ())
    }
}

/// Refuses a priority outside [`PRIORITIES`].
pub(super) fn check_priority(priority: i32) -> Result<(), KilnError> {
    if PRIORITIES.contains(&priority) {
        Ok(())
    } else {
        Err(KilnError::InvalidInput(format!("priority {priority} is out of range -20..19")))
    }
}

/// Refuses a submission of `adding` jobs that would leave more than `limit`
/// jobs not ended (`max_queued_jobs`: their memory is in the queue).
pub(super) fn room_for(unfinished: usize, adding: usize, limit: usize) -> Result<(), KilnError> {
    if unfinished.saturating_add(adding) > limit {
        return Err(KilnError::QueueFull { unfinished, adding, limit });
    }
    Ok(())
}

/// `e` with `prefix` before its message, when it is one of the errors
/// about the input.
fn prefixed(prefix: &str, e: KilnError) -> KilnError {
    match e {
        KilnError::NotFound(m) => KilnError::NotFound(format!("{prefix}{m}")),
        KilnError::InvalidInput(m) => KilnError::InvalidInput(format!("{prefix}{m}")),
        other => other,
    }
}

/// Checks one job's opcodes and priority.
pub(super) fn validate(ops: &[Opcode], priority: i32, names: &dyn NodeNames) -> Result<(), KilnError> {
    if ops.is_empty() {
        return Err(KilnError::InvalidInput("a job needs at least one opcode".into()));
    }
    check_priority(priority)?;
    // A job of one opcode (every CLI verb) speaks of its opcode plainly.
    let at = |i: usize| if ops.len() == 1 { String::new() } else { format!("opcode {}: ", i + 1) };
    for (i, op) in ops.iter().enumerate() {
        let checked = match op {
            Opcode::Sleep { seconds } if !seconds.is_finite() || !(0.0..=86_400.0).contains(seconds) => {
                Err(KilnError::InvalidInput(format!("sleep {seconds}: expected 0 to 86400 seconds")))
            }
            Opcode::Sleep { .. } => Ok(()),
            Opcode::Hold { nodes } => names.resolve(nodes),
            Opcode::Node { nodes, fanout, .. } => names.resolve(nodes).and_then(|()| check_fanout(*fanout)),
            Opcode::Exec { nodes, spec, fanout } => names.parse(nodes).and_then(|()| {
                if spec.command.trim().is_empty() {
                    return Err(KilnError::InvalidInput("exec needs a command".into()));
                }
                check_fanout(*fanout)
            }),
        };
        checked.map_err(|e| prefixed(&at(i), e))?;
    }
    Ok(())
}

fn check_fanout(fanout: Option<u32>) -> Result<(), KilnError> {
    if fanout == Some(0) {
        return Err(KilnError::InvalidInput("fanout must be at least 1".into()));
    }
    Ok(())
}

/// A dependency may only wait for a final status.
pub(super) fn final_statuses(job: impl std::fmt::Display, statuses: &[JobStatus]) -> Result<(), KilnError> {
    match statuses.iter().find(|s| !s.is_finished()) {
        Some(s) => Err(KilnError::InvalidInput(format!(
            "dependency on job {job}: '{s}' is not a final status (use success, error or canceled)"
        ))),
        None => Ok(()),
    }
}

/// Checks every job of a submission of several, naming the job at fault
/// by its place in the submission.
pub(super) fn validate_many(jobs: &[NewJob], names: &dyn NodeNames) -> Result<(), KilnError> {
    if jobs.is_empty() {
        return Err(KilnError::InvalidInput("a submission needs at least one job".into()));
    }
    for (k, job) in jobs.iter().enumerate() {
        let prefix = if jobs.len() == 1 { String::new() } else { format!("job {} of {}: ", k + 1, jobs.len()) };
        let check = || {
            validate(&job.ops, job.priority, names)?;
            for d in &job.depends {
                match d.job {
                    JobRef::Id(id) => final_statuses(id, &d.statuses)?,
                    JobRef::Earlier(n) => {
                        if n == 0 || n as usize > k {
                            let before = match k {
                                0 => "no job comes before it in this submission".to_string(),
                                1 => "only 1 job comes before it in this submission".to_string(),
                                k => format!("only {k} jobs come before it in this submission"),
                            };
                            return Err(KilnError::InvalidInput(format!("dependency on job -{n}: {before}")));
                        }
                        final_statuses(format_args!("-{n}"), &d.statuses)?
                    }
                }
            }
            Ok(())
        };
        check().map_err(|e| prefixed(&prefix, e))?;
    }
    Ok(())
}
