//! Archive waves: which ended jobs leave the live table, and how many
//! archive writes go to the store at once.
//!
//! The age is measured on the site clock (`SiteConfig.clock`), so a test
//! moves a [`crate::clock::ManualClock`] instead of sleeping, and the
//! selection is a pure function of the jobs' end times and `now`.

use std::time::Duration;

use kiln_store::{JobId, Timestamp};

use super::ended::EndedJobs;

/// Archive writes in flight at once while archiving old jobs: each its own
/// batch (one job that cannot be archived fails alone), one group commit.
/// The store serves requests in order, so a million archive writes sent at
/// once would queue every submission behind them; between two waves a
/// submission waits for one wave at most.
pub(super) const ARCHIVE_WAVE: usize = 256;

/// The end time before which a job is older than `age` at `now`.
pub(super) fn cutoff(now: Timestamp, age: Duration) -> Timestamp {
    // An age past what a timestamp can hold takes in every job, not a panic.
    chrono::Duration::from_std(age).ok().and_then(|age| now.checked_sub_signed(age)).unwrap_or(Timestamp::MIN_UTC)
}

/// The live ended jobs older than `age` at `now`, oldest end first.
pub(super) fn older_than(ended: &EndedJobs, now: Timestamp, age: Duration) -> Vec<JobId> {
    ended.live_before(cutoff(now, age))
}

/// `ids` in waves of [`ARCHIVE_WAVE`], in order.
pub(super) fn waves(ids: &[JobId]) -> impl Iterator<Item = &[JobId]> {
    ids.chunks(ARCHIVE_WAVE)
}
