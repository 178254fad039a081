//! The store thread: the single owner of the backend, with group commit.
//!
//! Why it is shaped so:
//!
//! - **One thread owns the backend.** SQLite calls block (an fsync per
//!   commit), so none may run on an async arbiter. Every read and write is a
//!   request on one channel to the thread named `kiln-store`; callers await a
//!   oneshot reply. There is no lock around the connection because nothing
//!   else can reach it.
//! - **Group commit.** The thread blocks for one request, then drains what is
//!   already queued (up to [`MAX_GROUP`] batches) and hands them all to one
//!   [`Backend::commit`]: one transaction, one fsync, each batch in its own
//!   savepoint. Under load the fsync cost is shared by every waiting caller,
//!   which is how 64 concurrent submitters get durable acknowledgements
//!   without 64 fsyncs each (docs/jobs.md). With no load a batch commits
//!   alone at once: there is no timer and no added latency.
//! - **The fsync runs beside the next group.** A backend that hands out a
//!   [`LogSync`](crate::LogSync) (SQLite: its WAL) commits without syncing;
//!   the group's answers go to the sync thread (`syncer`), which syncs the
//!   log and only then acknowledges them, while this thread applies the
//!   groups that arrived meanwhile. Under load one fsync covers every group
//!   applied during the one before it.
//! - **Under heavy load a group waits for the sync under way.** A group
//!   applied while an fsync runs is covered by the next fsync, which starts
//!   when this one ends: applying it at once saves its commits only the
//!   apply's own time (about 0.1 ms), and costs a group's fixed work (its
//!   transaction, the index and table pages every group writes to the WAL
//!   again, the sync and checkpoint of those pages: about 90 µs of CPU in
//!   all, `docs/performance.md`). With few commits in flight the first
//!   matters: each client waits for its commit before its next, so its
//!   latency is its rate. With many the second does: the machine's cores
//!   bound the rate and every fixed cost comes out of it, and the store
//!   that took small groups eagerly took smaller ones still as the CPU
//!   grew short (groups of 20 to 100 from run to run, ±15% in rate). So
//!   when at least [`HOLD_AT`] commits are waiting in the store (in the
//!   group and for the sync) and a sync is under way, the store thread
//!   waits for that sync to end, then takes what arrived meanwhile into
//!   the same group. Below that, as at low load, a group is applied as
//!   soon as it is taken.
//! - **Arrival order.** Requests are served in the order they were sent: a
//!   read stops the draining, so it runs after the commits sent before it
//!   and before those sent after it. A read sent after a commit was
//!   acknowledged therefore sees it.
//! - **A failure stays with its batch.** A batch that breaks a rule
//!   (duplicate name) fails alone. Only when the shared transaction itself
//!   fails does every batch in it get [`StoreError::CommitFailed`], carrying a
//!   textual copy of the cause, since [`StoreError`] cannot be cloned.
//! - **Shutdown is dropping.** The thread ends, closing the backend, once
//!   every [`StoreHandle`] is gone and the queue is empty; requests already
//!   sent are still served. A request whose thread is gone gets
//!   [`StoreError::Closed`].
//! - **Where each commit waited is counted** ([`crate::stats`]): queued,
//!   applying, syncing, for the metrics and `kiln bench jobs`. Every
//!   request carries the time it was sent; the counters are added to once
//!   per group, never per row.
//! - The thread needs no tokio runtime: it uses a std channel and answers
//!   through `tokio::sync::oneshot`, whose sender is runtime-agnostic.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::error_chain;
use crate::sqlite::SqliteBackend;
use crate::stats::{StatsCells, StoreStats};
use crate::syncer::{Answer, CommitReply, Committed, Syncer};
use crate::{Backend, Batch, StoreError};

/// The most batches one transaction takes; bounds a commit's latency and
/// memory when the queue is very long.
pub const MAX_GROUP: usize = 4096;

/// Commits waiting in the store (taken into the group, or applied and
/// waiting for their sync) from which a group waits for the sync under
/// way rather than being applied beside it. Where it lies: `n` clients
/// each waiting for its commit get at most `n / latency`, the cores at
/// most `cores / CPU per commit`; with an acknowledgement of about
/// 0.6 ms and 10 µs of CPU a commit on two cores, the cores are the lower
/// bound from about 120 commits in flight. 64 job submitters stay below
/// it (at most about 90 waiting), a 1,024-node fanout goes above it.
pub const HOLD_AT: usize = 128;

/// The longest a group waits for the sync under way. Only a safety net:
/// however long a sync takes, the group could not be acknowledged before
/// it ended, so waiting for it delays an acknowledgement by the group's
/// apply alone.
pub const MAX_HOLD: Duration = Duration::from_secs(1);

/// A read to run on the store thread; it carries its own reply sender.
type ReadJob = Box<dyn FnOnce(&mut dyn Backend) + Send>;

enum Request {
    /// A batch, where to answer, and when it was sent.
    Commit(Batch, CommitReply, Instant),
    Read(ReadJob),
}

/// A way to the store thread; clone it freely. The thread lives as long as
/// any handle does.
#[derive(Clone)]
pub struct StoreHandle {
    requests: mpsc::Sender<Request>,
    stats: Arc<StatsCells>,
}

impl StoreHandle {
    /// Starts the store thread, which owns `backend` from now on.
    pub fn start(backend: Box<dyn Backend>) -> StoreHandle {
        let (requests, inbox) = mpsc::channel();
        let stats = Arc::new(StatsCells::default());
        let cells = stats.clone();
        let spawned =
            std::thread::Builder::new().name("kiln-store".into()).spawn(move || serve(backend, inbox, &cells));
        if let Err(error) = spawned {
            // The inbox went down with the closure, so every request on this
            // handle answers Closed: the caller learns it at its first use.
            tracing::error!(message = "Cannot start the store thread.", %error);
        }
        StoreHandle { requests, stats }
    }

    /// Where this store's commits have spent their time since it opened.
    pub fn stats(&self) -> StoreStats {
        self.stats.read()
    }

    /// Opens the SQLite store at `path` and starts its thread.
    pub fn open_sqlite(path: &Path) -> Result<StoreHandle, StoreError> {
        let backend = SqliteBackend::open(path)?;
        Ok(StoreHandle::start(Box::new(backend)))
    }

    /// Commits `batch` atomically, returning once it is durable.
    ///
    /// If the future is dropped after the batch was sent, the batch may still
    /// be committed: cancelling is not undoing.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.send(batch).await
    }

    /// Sends `batch` to the store thread now, and returns the wait for its
    /// answer, which [`commit`](Self::commit) would give. Batches sent this
    /// way are applied in the order of these calls, however their futures
    /// are polled later; `commit` sends only when first polled.
    pub fn send(&self, batch: Batch) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + use<> {
        let sent = self.send_commit(batch);
        async move {
            let (result, _batch) = sent?.await.map_err(|_| StoreError::Closed)?;
            result
        }
    }

    /// [`commit`](Self::commit) for callers outside async code.
    ///
    /// # Panics
    ///
    /// When called from inside a tokio runtime (it would block a worker);
    /// use `commit().await` there.
    pub fn commit_blocking(&self, batch: Batch) -> Result<(), StoreError> {
        let reply = self.send_commit(batch)?;
        let (result, _batch) = reply.blocking_recv().map_err(|_| StoreError::Closed)?;
        result
    }

    /// Runs `f` on the store thread between commits and returns its result.
    /// It sees every commit acknowledged before this call was made.
    ///
    /// `f` holds up every other request while it runs: keep it to loads. If
    /// it panics, the store carries on and this call returns
    /// [`StoreError::Closed`].
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut dyn Backend) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let reply = self.send_read(f)?;
        reply.await.map_err(|_| StoreError::Closed)?
    }

    /// [`read`](Self::read) for callers outside async code.
    ///
    /// # Panics
    ///
    /// When called from inside a tokio runtime; use `read().await` there.
    pub fn read_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut dyn Backend) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let reply = self.send_read(f)?;
        reply.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    fn send_commit(&self, batch: Batch) -> Result<oneshot::Receiver<Committed>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Commit(batch, reply, Instant::now())).map_err(|_| StoreError::Closed)?;
        Ok(answer)
    }

    fn send_read<T, F>(&self, f: F) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError>
    where
        F: FnOnce(&mut dyn Backend) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |backend| {
            // The caller may have given up waiting; that is not our error.
            let _ = reply.send(f(backend));
        });
        self.requests.send(Request::Read(job)).map_err(|_| StoreError::Closed)?;
        Ok(answer)
    }
}

/// The store thread's loop: until every handle is gone, serve requests in
/// arrival order, grouping consecutive commits.
fn serve(mut backend: Box<dyn Backend>, inbox: mpsc::Receiver<Request>, stats: &Arc<StatsCells>) {
    // Declared after the backend, so it is dropped (its last sync done)
    // before the backend closes.
    let syncer = backend.log_sync().map(|log| Syncer::start(log, stats.clone()));
    let mut group = Group::default();
    let mut next = inbox.recv().ok();
    while let Some(request) = next.take() {
        match request {
            Request::Read(job) => run_read(&mut *backend, job),
            Request::Commit(batch, reply, sent) => {
                group.push(batch, reply, sent);
                next = take_queued(&inbox, &mut group);
                if next.is_none()
                    && let Some(syncer) = syncer.as_ref()
                    && worth_holding(group.batches.len(), syncer)
                {
                    syncer.wait_synced(MAX_HOLD);
                    next = take_queued(&inbox, &mut group);
                }
                commit_group(&mut *backend, &mut group, syncer.as_ref(), stats);
            }
        }
        if next.is_none() {
            next = inbox.recv().ok();
        }
    }
    tracing::debug!(message = "Store thread stopping: every handle is gone.");
}

/// Moves the commits already queued into `group`, up to [`MAX_GROUP`];
/// returns the read that stopped it, if one did (a read waits for the
/// commits sent before it).
fn take_queued(inbox: &mpsc::Receiver<Request>, group: &mut Group) -> Option<Request> {
    while group.batches.len() < MAX_GROUP {
        match inbox.try_recv() {
            Ok(Request::Commit(batch, reply, sent)) => group.push(batch, reply, sent),
            Ok(read) => return Some(read),
            Err(_) => return None,
        }
    }
    None
}

/// Whether a group of `taken` commits should wait for the sync under way
/// (see the module's notes): one is under way, and the store holds at
/// least [`HOLD_AT`] commits with this group. Never once syncs have failed
/// (nothing more will be synced) or when the group is already full.
fn worth_holding(taken: usize, syncer: &Syncer) -> bool {
    if taken >= MAX_GROUP || syncer.failure().is_some() {
        return false;
    }
    let unsynced = syncer.unsynced();
    unsynced > 0 && unsynced + taken >= HOLD_AT
}

fn run_read(backend: &mut dyn Backend, job: ReadJob) {
    // A panicking read drops its reply (the caller sees Closed) but must not
    // take the whole site's store down with it.
    if catch_unwind(AssertUnwindSafe(|| job(backend))).is_err() {
        tracing::error!(message = "A store read panicked; the store carries on.");
    }
}

/// The commits taken for one transaction, with where to answer each and
/// when each was sent. Reused from group to group.
#[derive(Default)]
struct Group {
    batches: Vec<Batch>,
    replies: Vec<CommitReply>,
    sent: Vec<Instant>,
}

impl Group {
    fn push(&mut self, batch: Batch, reply: CommitReply, sent: Instant) {
        self.batches.push(batch);
        self.replies.push(reply);
        self.sent.push(sent);
    }
}

/// Commits one group and answers every caller in it: at once, or through
/// the sync thread once the group is durable. Leaves the group empty.
fn commit_group(backend: &mut dyn Backend, group: &mut Group, syncer: Option<&Syncer>, stats: &StatsCells) {
    let Group { batches, replies, sent } = group;
    if let Some(why) = syncer.and_then(Syncer::failure) {
        sent.clear();
        for (reply, batch) in replies.drain(..).zip(batches.drain(..)) {
            let _ = reply.send((Err(StoreError::NotDurable(why.to_string())), batch));
        }
        return;
    }
    let taken = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| backend.commit(batches)));
    let applied = Instant::now();
    stats.group_applied(sent, taken, applied);
    sent.clear();
    let failure = match outcome {
        Ok(Ok(results)) if results.len() == replies.len() => {
            let answers = replies.drain(..).zip(results).zip(batches.drain(..));
            match syncer {
                Some(syncer) => syncer.answer_when_durable(
                    applied,
                    answers.map(|((reply, result), batch)| (reply, (result, batch))).collect::<Vec<Answer>>(),
                ),
                None => {
                    for ((reply, result), batch) in answers {
                        let _ = reply.send((result, batch));
                    }
                }
            }
            return;
        }
        Ok(Ok(results)) => format!(
            "the backend answered {} results for {} batches; which of them were committed is unknown",
            results.len(),
            batches.len()
        ),
        Ok(Err(error)) => error_chain(&error),
        Err(_) => "the store panicked while committing".to_string(),
    };
    tracing::error!(
        message = "A group commit failed; every batch in it is refused.",
        batches = batches.len(),
        error = %failure,
    );
    for (reply, batch) in replies.drain(..).zip(batches.drain(..)) {
        let _ = reply.send((Err(StoreError::CommitFailed(failure.clone())), batch));
    }
}
