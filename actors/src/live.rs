//! What a running site can change without a restart (the daemon does it on
//! SIGHUP; an embedding application calls [`Site::reconfigure`]).
//!
//! Two kinds of setting, two ways to change them. Values every node actor
//! or request reads on its way (`lock_wait`, `default_fanout`, the node
//! groups) live in one shared [`LiveSettings`], read at the moment they are
//! used: telling 100,000 node actors about a new `lock_wait` one message at
//! a time would be the slow way to store one number. State an actor owns
//! (the job queue's `max_running`, the scheduler's table) changes by a
//! message to that actor, which applies it between two of its messages.
//!
//! Nothing here guards node state: the node actors' records still change
//! only in their own mailboxes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::{KilnError, Site, SiteConfig, jobs, periodic, scheduler};

/// Settings read where they are used, changeable while the site runs.
#[derive(Debug)]
pub struct LiveSettings {
    lock_wait_us: AtomicU64,
    default_fanout: AtomicUsize,
    /// Replaced whole, never edited in place: a reader holds a consistent
    /// set of groups for as long as it needs.
    groups: RwLock<Arc<BTreeMap<String, String>>>,
}

impl Default for LiveSettings {
    fn default() -> Self {
        LiveSettings::new(&SiteConfig::default())
    }
}

impl LiveSettings {
    pub fn new(config: &SiteConfig) -> Self {
        let live = LiveSettings {
            lock_wait_us: AtomicU64::new(0),
            default_fanout: AtomicUsize::new(1),
            groups: RwLock::new(Arc::new(BTreeMap::new())),
        };
        live.set(config);
        live
    }

    /// How long an exclusive request waits for a busy node.
    pub fn lock_wait(&self) -> Duration {
        Duration::from_micros(self.lock_wait_us.load(Ordering::Relaxed))
    }

    /// How many nodes of a bulk operation run at once unless it says.
    pub fn default_fanout(&self) -> usize {
        self.default_fanout.load(Ordering::Relaxed).max(1)
    }

    /// The node groups (`@name`).
    pub fn groups(&self) -> Arc<BTreeMap<String, String>> {
        // A poisoned lock only means a writer panicked between two whole
        // values: the value inside is still a whole one.
        self.groups.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, config: &SiteConfig) {
        let us = u64::try_from(config.lock_wait.as_micros()).unwrap_or(u64::MAX);
        self.lock_wait_us.store(us, Ordering::Relaxed);
        self.default_fanout.store(config.default_fanout.max(1), Ordering::Relaxed);
        *self.groups.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config.groups.clone());
    }
}

impl Site {
    /// Applies the live settings of `new` to the running site: `lock_wait`,
    /// `default_fanout`, `groups`, `max_running_jobs` and every periodic
    /// setting (intervals, enabled, concurrency, retries, ages). The others
    /// (`data_dir`, `driver_call_timeout`, `demo_nodes`) only take effect at
    /// the next start. Applying the same config twice changes nothing.
    pub async fn reconfigure(&self, new: &SiteConfig) -> Result<(), KilnError> {
        let gone = |what: &str| KilnError::Unavailable(format!("the {what} is not running"));
        self.live.set(new);
        self.jobs.send(jobs::SetMaxRunning(new.max_running_jobs)).await.map_err(|_| gone("job queue"))?;
        let tasks = periodic::builtin(
            self.router(),
            self.jobs.clone(),
            self.store.clone(),
            new.periodic.clone(),
            self.metrics.clone(),
        );
        self.scheduler.send(scheduler::Retune(tasks)).await.map_err(|_| gone("scheduler"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_what_was_last_set() {
        let mut c = SiteConfig { lock_wait: Duration::from_millis(1500), default_fanout: 0, ..Default::default() };
        c.groups.insert("rack1".into(), "n[1-4]".into());
        let live = LiveSettings::new(&c);
        assert_eq!(live.lock_wait(), Duration::from_millis(1500));
        assert_eq!(live.default_fanout(), 1, "never 0");
        let before = live.groups();
        c.groups.clear();
        c.default_fanout = 8;
        live.set(&c);
        assert_eq!(live.default_fanout(), 8);
        assert!(live.groups().is_empty());
        assert_eq!(before.get("rack1").map(String::as_str), Some("n[1-4]"), "a reader keeps its whole set");
    }
}
