//! The sync thread: makes group commits durable while the store thread
//! applies the next ones.
//!
//! Why it exists: with `synchronous=FULL` the store thread waits out one
//! fsync after every group (0.3-0.6 ms on the bench machine), and nothing is
//! applied meanwhile, so submitters and store take turns instead of running
//! side by side. A backend that hands out a [`LogSync`] commits without
//! syncing; the store thread passes each group's answers here and goes on.
//! This thread syncs the log once for every group that arrived while it was
//! busy, then answers them all.
//!
//! The rules that keep an acknowledgement meaning "durable":
//!
//! - A group reaches this thread only after its commit returned, so the
//!   sync that follows covers it. No answer is sent before that sync
//!   succeeded.
//! - Syncs run one after another, and groups are answered in arrival order,
//!   so when a commit is acknowledged every commit before it is durable too.
//! - **A failed sync is final.** After fsync fails the kernel may have
//!   dropped the dirty pages, and a later successful fsync proves nothing
//!   about them. Every group waiting then, and every commit after it, gets
//!   [`StoreError::NotDurable`]; the store thread stops applying writes.
//! - Dropping the [`Syncer`] answers what is in flight and joins the thread,
//!   so the store closes its backend only after the last sync.
//! - Reads on the store thread see a group as soon as it is applied, before
//!   its sync: a reader may see a change that a power cut then takes back.
//!   Nobody is told a change happened before its sync (a node actor adopts
//!   a change only on the acknowledgement; the job queue takes a job in
//!   when it sends its insert, but gives no client its id and lets no
//!   opcode of it act before a later commit of that job is acknowledged),
//!   so nothing acts on it.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::stats::StatsCells;
use crate::{Batch, LogSync, StoreError};

/// A commit's answer: its outcome, and the batch itself. The batch goes
/// back so that it is freed on the thread that built it. Measured under
/// glibc's malloc, before the `kiln` binary moved to jemalloc, freeing here
/// what the actix thread allocated took the slow cross-thread path for
/// every job write, and handing it back cut the store thread's
/// instructions per job by 7% (callgrind, `kiln bench jobs`); it still
/// spares an embedding application on glibc that cost, and costs nothing.
pub(crate) type Committed = (Result<(), StoreError>, Batch);

pub(crate) type CommitReply = oneshot::Sender<Committed>;

/// A committed batch's reply and what to send once it is durable.
pub(crate) type Answer = (CommitReply, Committed);

/// A committed group: when its commit returned, and its answers.
type Applied = (Instant, Vec<Answer>);

/// The sync thread's handle, owned by the store thread.
pub(crate) struct Syncer {
    groups: Option<mpsc::Sender<Applied>>,
    thread: Option<JoinHandle<()>>,
    /// Why the log could not be synced, once it could not: set once, by the
    /// sync thread (or here, if the thread could not start).
    failure: Arc<OnceLock<String>>,
    unsynced: Arc<Unsynced>,
}

/// The commits handed to the sync thread and not yet synced, so that the
/// store thread can tell whether a sync is under way and wait for its end.
#[derive(Default)]
struct Unsynced {
    state: Mutex<UnsyncedState>,
    synced: Condvar,
}

#[derive(Default)]
struct UnsyncedState {
    commits: usize,
    /// The store thread waits on `synced`: only then is it notified, so a
    /// sync nobody waits for costs no wake-up call.
    waiting: bool,
}

impl Unsynced {
    fn lock(&self) -> std::sync::MutexGuard<'_, UnsyncedState> {
        // The counts stay meaningful whoever panicked holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `n` commits were synced (or refused): the store thread, if it waits
    /// for the last of them, goes on.
    fn done(&self, n: usize) {
        let mut state = self.lock();
        state.commits = state.commits.saturating_sub(n);
        if state.commits == 0 && state.waiting {
            self.synced.notify_one();
        }
    }
}

impl Syncer {
    /// Starts the thread that syncs `log`, counting its syncs in `stats`.
    pub(crate) fn start(log: Box<dyn LogSync>, stats: Arc<StatsCells>) -> Syncer {
        let failure = Arc::new(OnceLock::new());
        let (groups, inbox) = mpsc::channel();
        let shared = failure.clone();
        let unsynced = Arc::new(Unsynced::default());
        let counts = unsynced.clone();
        match std::thread::Builder::new()
            .name("kiln-sync".into())
            .spawn(move || run(log, inbox, shared, &stats, &counts))
        {
            Ok(thread) => Syncer { groups: Some(groups), thread: Some(thread), failure, unsynced },
            Err(error) => {
                // Commits are not durable on their own: without the thread
                // none may be acknowledged.
                tracing::error!(message = "Cannot start the store's sync thread; the store refuses writes.", %error);
                let _ = failure.set(format!("cannot start the sync thread: {error}"));
                Syncer { groups: None, thread: None, failure, unsynced }
            }
        }
    }

    /// Why commits can no longer be made durable, if that has happened.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// How many commits are waiting for a sync that is under way or about
    /// to start; 0 when the sync thread has nothing to do.
    pub(crate) fn unsynced(&self) -> usize {
        self.unsynced.lock().commits
    }

    /// Waits, at most `max`, until every commit handed over so far is
    /// synced.
    pub(crate) fn wait_synced(&self, max: Duration) {
        let mut state = self.unsynced.lock();
        state.waiting = true;
        let (mut state, _) = self
            .unsynced
            .synced
            .wait_timeout_while(state, max, |s| s.commits > 0)
            .unwrap_or_else(PoisonError::into_inner);
        state.waiting = false;
    }

    /// Sends `answers` once the log has been synced past their commit,
    /// which returned at `applied`.
    pub(crate) fn answer_when_durable(&self, applied: Instant, answers: Vec<Answer>) {
        let Some(groups) = &self.groups else {
            return refuse(answers, self.failure().unwrap_or("the sync thread is gone"));
        };
        let n = answers.len();
        self.unsynced.lock().commits += n;
        if let Err(mpsc::SendError((_, answers))) = groups.send((applied, answers)) {
            self.unsynced.done(n);
            // The thread ended early (a panic in the sync): nothing it
            // would have answered can be called durable.
            let _ = self.failure.set("the sync thread stopped".into());
            refuse(answers, self.failure().unwrap_or_default());
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.groups.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sync thread's loop: wait for a group, take every group queued behind
/// it, sync once, answer them all.
fn run(
    mut log: Box<dyn LogSync>,
    inbox: mpsc::Receiver<Applied>,
    failure: Arc<OnceLock<String>>,
    stats: &StatsCells,
    unsynced: &Unsynced,
) {
    let mut waiting: Vec<Answer> = Vec::new();
    // When each waiting group was applied, and its size.
    let mut applied: Vec<(Instant, usize)> = Vec::new();
    while let Ok((at, group)) = inbox.recv() {
        applied.push((at, group.len()));
        waiting.extend(group);
        while let Ok((at, more)) = inbox.try_recv() {
            applied.push((at, more.len()));
            waiting.extend(more);
        }
        let began = Instant::now();
        if failure.get().is_none()
            && let Err(error) = log.sync()
        {
            tracing::error!(
                message = "Syncing the store's log failed; the store refuses writes until kiln is restarted.",
                %error,
            );
            let _ = failure.set(format!("syncing the log failed: {error}"));
        }
        stats.synced(applied.drain(..), began, Instant::now());
        // Before the answers go out: the store thread may start its next
        // group while this thread answers.
        unsynced.done(waiting.len());
        match failure.get() {
            None => {
                for (reply, committed) in waiting.drain(..) {
                    let _ = reply.send(committed);
                }
            }
            Some(why) => refuse(waiting.drain(..), why),
        }
    }
}

/// Answers every committed batch in `answers` with [`StoreError::NotDurable`];
/// a batch that had failed on its own changed nothing and keeps its error.
fn refuse(answers: impl IntoIterator<Item = Answer>, why: &str) {
    for (reply, (result, batch)) in answers {
        let _ = reply.send((result.and(Err(StoreError::NotDurable(why.to_string()))), batch));
    }
}
