//! One row write for a job that is inserted and changed in the same group.
//!
//! Why: under load the job queue starts a job as soon as it is admitted, so
//! a short job's insert and its later changes (its end) often reach the
//! store thread together and share a transaction. Writing the row once, as
//! it ends up, instead of inserting it and then rewriting it (a larger row
//! each time, which SQLite moves within its page) is about half the work
//! of a `sleep 0` job on the store thread (`kiln bench jobs`,
//! `writer_ceiling_per_s`: 119-159k jobs/s for insert then update, 189-266k
//! for one insert of the final row).
//!
//! The final state is the same: a put or an update replaces every column,
//! so inserting the last one's record is what the insert followed by them
//! leaves. Only the plainest case is taken: an insert and then puts or
//! updates of one job, each a batch of its own, and nothing else in the
//! group naming that job. Everything else is applied as sent. The plan is used
//! only on the fast path (no write fails); a group with a failure is redone
//! batch by batch as sent, so each batch still gets its own result.

use std::collections::HashMap;

use crate::{Batch, JobId, Write};

/// What the fast path does with one batch of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Apply its writes as sent.
    Apply,
    /// Insert the job as the single put or update in batch `n` (its last
    /// in the group) has it.
    InsertAs(usize),
    /// Nothing: the job's insert wrote this change's row.
    Taken,
}

/// Per job named in the group: where its insert is, where its last put or
/// update is, and whether it can be written once.
struct Seen {
    insert: Option<usize>,
    last_put: Option<usize>,
    plain: bool,
}

/// The steps for `batches`, or `None` when every batch is applied as sent.
pub(super) fn plan(batches: &[Batch]) -> Option<Vec<Step>> {
    if !batches.iter().any(|b| matches!(b.as_slice(), [Write::InsertJob(_)])) {
        return None;
    }
    let mut seen: HashMap<JobId, Seen> = HashMap::new();
    for (n, batch) in batches.iter().enumerate() {
        for write in batch {
            let (id, insert) = match write {
                Write::InsertJob(job) => (job.id, true),
                Write::PutJob(job) | Write::UpdateJob(job) => (job.id, false),
                Write::ArchiveJob(id) => {
                    seen.entry(*id).or_insert(Seen { insert: None, last_put: None, plain: false }).plain = false;
                    continue;
                }
                _ => continue,
            };
            let job = seen.entry(id).or_insert(Seen { insert: None, last_put: None, plain: true });
            match (insert, batch.len() == 1) {
                (true, true) if job.insert.is_none() && job.last_put.is_none() => job.insert = Some(n),
                (false, true) if job.insert.is_some() => job.last_put = Some(n),
                _ => job.plain = false,
            }
        }
    }
    seen.retain(|_, job| job.plain && job.insert.is_some() && job.last_put.is_some());
    if seen.is_empty() {
        return None;
    }
    let steps = batches
        .iter()
        .map(|batch| match batch.as_slice() {
            [Write::InsertJob(job)] => match seen.get(&job.id) {
                Some(Seen { last_put: Some(last), .. }) => Step::InsertAs(*last),
                _ => Step::Apply,
            },
            [Write::PutJob(job) | Write::UpdateJob(job)] if seen.contains_key(&job.id) => Step::Taken,
            _ => Step::Apply,
        })
        .collect();
    Some(steps)
}

#[cfg(test)]
mod tests {
    use super::Step::*;
    use super::*;
    use crate::{JobRecord, JobStatus};

    fn job(id: u64) -> JobRecord {
        JobRecord {
            id: JobId(id),
            priority: 0,
            status: JobStatus::Queued,
            submitted_at: chrono::Utc::now(),
            started_at: None,
            ended_at: None,
            body: "{}".into(),
            log: Vec::new(),
        }
    }

    fn insert(id: u64) -> Batch {
        vec![Write::InsertJob(job(id))]
    }

    fn update(id: u64) -> Batch {
        vec![Write::UpdateJob(job(id))]
    }

    #[test]
    fn an_insert_takes_the_last_change_of_its_job() {
        let group = vec![insert(1), insert(2), update(1), vec![Write::PutJob(job(2))], update(1), update(3)];
        assert_eq!(plan(&group), Some(vec![InsertAs(4), InsertAs(3), Taken, Taken, Taken, Apply]));
    }

    #[test]
    fn groups_without_an_insert_and_a_later_change_are_applied_as_sent() {
        assert_eq!(plan(&[update(1), update(1)]), None);
        assert_eq!(plan(&[insert(1), insert(2)]), None);
        // The change before the insert: not the insert's to take.
        assert_eq!(plan(&[update(1), insert(1)]), None);
    }

    #[test]
    fn a_job_named_otherwise_in_the_group_is_applied_as_sent() {
        let archive = vec![Write::ArchiveJob(JobId(1))];
        assert_eq!(plan(&[insert(1), update(1), archive]), None);
        // In a batch with other writes: that batch must stay whole.
        let both = vec![Write::UpdateJob(job(1)), Write::UpdateJob(job(2))];
        assert_eq!(plan(&[insert(1), insert(2), both]), None);
        assert_eq!(plan(&[vec![Write::InsertJob(job(1)), Write::InsertJob(job(2))], update(1)]), None);
        // Inserted twice: the second insert must fail as sent.
        assert_eq!(plan(&[insert(1), update(1), insert(1)]), None);
        // The other jobs of the group are still written once.
        assert_eq!(
            plan(&[insert(1), insert(2), update(1), update(2), insert(1)]),
            Some(vec![Apply, InsertAs(3), Apply, Taken, Apply])
        );
    }
}
