//! Where the store's commits spend their time.
//!
//! A caller of [`StoreHandle::commit`](crate::StoreHandle::commit) waits
//! through three stages, and when acknowledgements are slow the operator
//! (through the metrics) and `kiln bench jobs` need to know which one:
//!
//! - **queued**: sent, while the store thread is still on earlier groups;
//! - **applying**: its group being applied and committed (with a backend that
//!   syncs inside its commit, the fsync is here);
//! - **syncing**: committed, waiting for a log sync begun after the commit to
//!   return: the rest of the sync running when it came, then its own.
//!
//! Each stage's time is summed over commits. The counters are relaxed
//! atomics added to a few times per group, never per row, so keeping them
//! costs nothing measurable; a reading is a consistent enough snapshot for
//! rates and means, not a transaction.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The store's commit counters since it opened; [`StoreStats::since`] gives
/// the figures of an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches applied (each caller's commit, failed ones included).
    pub commits: u64,
    /// Transactions those batches were grouped into.
    pub groups: u64,
    /// Log syncs (fsyncs) made by the sync thread.
    pub syncs: u64,
    /// Summed over syncs: the fsync itself, from its call to its return.
    /// Its mean under load is the disk's real floor for an acknowledgement.
    pub sync_time: Duration,
    /// Summed over commits: sent until the store thread took its group.
    pub queued: Duration,
    /// Summed over commits: the group's apply and commit.
    pub applying: Duration,
    /// Summed over commits: committed until a sync after it returned.
    pub syncing: Duration,
}

impl StoreStats {
    /// The figures of the interval from `earlier` to `self`.
    pub fn since(&self, earlier: &StoreStats) -> StoreStats {
        StoreStats {
            commits: self.commits.saturating_sub(earlier.commits),
            groups: self.groups.saturating_sub(earlier.groups),
            syncs: self.syncs.saturating_sub(earlier.syncs),
            sync_time: self.sync_time.saturating_sub(earlier.sync_time),
            queued: self.queued.saturating_sub(earlier.queued),
            applying: self.applying.saturating_sub(earlier.applying),
            syncing: self.syncing.saturating_sub(earlier.syncing),
        }
    }

    /// The mean time a commit spent in each stage: (queued, applying,
    /// syncing); zero without commits.
    pub fn mean_stages(&self) -> (Duration, Duration, Duration) {
        let n = u32::try_from(self.commits.max(1)).unwrap_or(u32::MAX);
        (self.queued / n, self.applying / n, self.syncing / n)
    }

    /// The mean time of one fsync; zero without syncs.
    pub fn mean_sync(&self) -> Duration {
        self.sync_time / u32::try_from(self.syncs.max(1)).unwrap_or(u32::MAX)
    }
}

/// The live counters, shared by the handles, the store thread and the sync
/// thread.
#[derive(Debug, Default)]
pub(crate) struct StatsCells {
    commits: AtomicU64,
    groups: AtomicU64,
    syncs: AtomicU64,
    sync_ns: AtomicU64,
    queued_ns: AtomicU64,
    applying_ns: AtomicU64,
    syncing_ns: AtomicU64,
}

impl StatsCells {
    pub(crate) fn read(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Relaxed),
            groups: self.groups.load(Relaxed),
            syncs: self.syncs.load(Relaxed),
            sync_time: Duration::from_nanos(self.sync_ns.load(Relaxed)),
            queued: Duration::from_nanos(self.queued_ns.load(Relaxed)),
            applying: Duration::from_nanos(self.applying_ns.load(Relaxed)),
            syncing: Duration::from_nanos(self.syncing_ns.load(Relaxed)),
        }
    }

    /// A group of commits sent at `sent` was taken at `taken` and applied
    /// by `applied`.
    pub(crate) fn group_applied(&self, sent: &[Instant], taken: Instant, applied: Instant) {
        let waited: Duration = sent.iter().map(|s| taken.saturating_duration_since(*s)).sum();
        let n = sent.len() as u64;
        self.commits.fetch_add(n, Relaxed);
        self.groups.fetch_add(1, Relaxed);
        self.queued_ns.fetch_add(nanos(waited), Relaxed);
        self.applying_ns.fetch_add(nanos(applied.saturating_duration_since(taken)).saturating_mul(n), Relaxed);
    }

    /// One sync, called at `began`, returned at `synced`, covering the
    /// groups applied at the given times, with how many commits each held.
    pub(crate) fn synced(&self, groups: impl Iterator<Item = (Instant, usize)>, began: Instant, synced: Instant) {
        let waited: u64 =
            groups.map(|(applied, n)| nanos(synced.saturating_duration_since(applied)).saturating_mul(n as u64)).sum();
        self.syncs.fetch_add(1, Relaxed);
        self.sync_ns.fetch_add(nanos(synced.saturating_duration_since(began)), Relaxed);
        self.syncing_ns.fetch_add(waited, Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
