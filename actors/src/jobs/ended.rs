//! What the job queue remembers of jobs that have ended: a status and a
//! time each, never the whole job (that is in the store).
//!
//! Why it is a type of its own: three things must move together. The queue
//! looks up an ended job's status by id (dependencies, cancel), archives the
//! live ones oldest end first (auto-archive), and reports how many live ones
//! ended each way (`kiln queue status`). The last used to walk every live
//! ended job, formatting a string for each, inside the queue actor: at a
//! million of them a status request held up every submission for as long
//! as that walk took. Here the counts are kept as jobs end and leave, so
//! the answer costs a few map entries whatever the table's size.
//!
//! An archived job is forgotten (the store answers for it), unless a job
//! still waiting depends on it: a daemon that runs for months must not hold
//! every job it ever ran.

use std::collections::{BTreeMap, BTreeSet};

use kiln_store::{JobId, JobStatus, Timestamp};

#[derive(Default)]
pub(super) struct EndedJobs {
    /// Every ended job the queue knows: the live ones, and archived ones
    /// a waiting job depends on. Its status and when it ended. A B-tree, not a hash map: ids only grow, so inserts
    /// land on its right edge, and it never rehashes (at a million ended
    /// jobs a rehash copied the whole table while every submission waited).
    by_id: BTreeMap<JobId, (JobStatus, Timestamp)>,
    /// The ended jobs still in the live table, oldest end first.
    live: BTreeSet<(Timestamp, JobId)>,
    /// How many of `live` ended in each status.
    live_counts: BTreeMap<JobStatus, usize>,
}

impl EndedJobs {
    /// A job that ended and is in the live table.
    pub(super) fn ended(&mut self, id: JobId, status: JobStatus, at: Timestamp) {
        if let Some((old_status, old_at)) = self.by_id.insert(id, (status, at)) {
            // Told twice (not done by the queue): count it once.
            self.forget_live(old_status, old_at, id);
        }
        self.live.insert((at, id));
        *self.live_counts.entry(status).or_default() += 1;
    }

    /// A job found in the archive (for a dependency on it): known, not live.
    pub(super) fn found_archived(&mut self, id: JobId, status: JobStatus, at: Timestamp) {
        if let Some((old_status, old_at)) = self.by_id.insert(id, (status, at)) {
            self.forget_live(old_status, old_at, id);
        }
    }

    /// The job was moved to the archive: no longer live, and forgotten
    /// unless `still_needed` (a waiting job depends on it).
    pub(super) fn archived(&mut self, id: JobId, still_needed: bool) {
        if !still_needed {
            return self.forget(id);
        }
        if let Some(&(status, at)) = self.by_id.get(&id) {
            self.forget_live(status, at, id);
        }
    }

    /// Nothing of the job is kept: it was archived and nothing waits for
    /// it, or it never was (its submission was refused after it was told
    /// here; see the queue's `withdraw`).
    pub(super) fn forget(&mut self, id: JobId) {
        if let Some((status, at)) = self.by_id.remove(&id) {
            self.forget_live(status, at, id);
        }
    }

    fn forget_live(&mut self, status: JobStatus, at: Timestamp, id: JobId) {
        if self.live.remove(&(at, id))
            && let Some(count) = self.live_counts.get_mut(&status)
        {
            *count -= 1;
            if *count == 0 {
                self.live_counts.remove(&status);
            }
        }
    }

    /// How the job ended and when, if it has.
    pub(super) fn get(&self, id: JobId) -> Option<(JobStatus, Timestamp)> {
        self.by_id.get(&id).copied()
    }

    pub(super) fn contains(&self, id: JobId) -> bool {
        self.by_id.contains_key(&id)
    }

    /// The live ended jobs that ended before `cutoff`, oldest first.
    pub(super) fn live_before(&self, cutoff: Timestamp) -> Vec<JobId> {
        self.live.iter().take_while(|(at, _)| *at < cutoff).map(|(_, id)| *id).collect()
    }

    /// How many live ended jobs ended in each status (absent: none).
    pub(super) fn live_counts(&self) -> impl Iterator<Item = (JobStatus, usize)> + '_ {
        self.live_counts.iter().map(|(status, count)| (*status, *count))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::*;

    fn at(second: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(second)
    }

    fn counts(ended: &EndedJobs) -> Vec<(JobStatus, usize)> {
        ended.live_counts().collect()
    }

    #[test]
    fn counts_follow_jobs_as_they_end_and_leave_for_the_archive() {
        let mut ended = EndedJobs::default();
        ended.ended(JobId(1), JobStatus::Success, at(1));
        ended.ended(JobId(2), JobStatus::Error, at(2));
        ended.ended(JobId(3), JobStatus::Success, at(3));
        assert_eq!(counts(&ended), [(JobStatus::Success, 2), (JobStatus::Error, 1)]);

        ended.archived(JobId(1), false);
        ended.archived(JobId(2), true);
        assert_eq!(counts(&ended), [(JobStatus::Success, 1)]);
        // Forgotten, unless still needed: then known by id, with how it ended.
        assert!(!ended.contains(JobId(1)));
        assert_eq!(ended.get(JobId(2)), Some((JobStatus::Error, at(2))));
        assert_eq!(ended.live_before(at(10)), [JobId(3)]);

        // Archiving twice, or a job never seen, changes nothing.
        ended.archived(JobId(2), true);
        ended.archived(JobId(99), false);
        assert_eq!(counts(&ended), [(JobStatus::Success, 1)]);
        assert_eq!(ended.get(JobId(2)), Some((JobStatus::Error, at(2))));
        assert_eq!(ended.get(JobId(99)), None);
        ended.archived(JobId(2), false);
        assert!(!ended.contains(JobId(2)));
    }

    #[test]
    fn live_jobs_are_listed_by_end_time_not_by_id() {
        let mut ended = EndedJobs::default();
        ended.ended(JobId(7), JobStatus::Canceled, at(5));
        ended.ended(JobId(8), JobStatus::Success, at(1));
        ended.ended(JobId(9), JobStatus::Success, at(9));
        ended.found_archived(JobId(4), JobStatus::Error, at(0));
        assert_eq!(ended.live_before(at(6)), [JobId(8), JobId(7)]);
        assert_eq!(ended.live_before(at(1)), []);
        assert_eq!(counts(&ended), [(JobStatus::Success, 2), (JobStatus::Canceled, 1)]);
    }

    #[test]
    fn a_job_told_twice_is_counted_once() {
        let mut ended = EndedJobs::default();
        ended.ended(JobId(1), JobStatus::Error, at(1));
        ended.ended(JobId(1), JobStatus::Success, at(2));
        assert_eq!(counts(&ended), [(JobStatus::Success, 1)]);
        assert_eq!(ended.live_before(at(10)), [JobId(1)]);
        ended.found_archived(JobId(1), JobStatus::Success, at(2));
        assert_eq!(counts(&ended), []);
        assert_eq!(ended.live_before(at(10)), []);
    }
}
