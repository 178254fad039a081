//! The store thread: many concurrent committers, read-after-commit, failures
//! that stay with their batch, whole-group failures, and shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Utc;
use kiln_store::*;

fn db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kiln.db");
    (dir, path)
}

fn node(name: &str) -> NodeRecord {
    NodeRecord::enroll(name.into(), DriverKind::Fake, Utc::now())
}

fn history(node: NodeId, event: &str) -> HistoryEntry {
    HistoryEntry {
        node,
        at: Utc::now(),
        event: event.into(),
        from_state: ProvisionState::Enroll,
        to_state: ProvisionState::Verifying,
        error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_committers_all_land() {
    const TASKS: usize = 64;
    const BATCHES: usize = 100;
    let (_dir, path) = db();
    let store = StoreHandle::open_sqlite(&path).unwrap();

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for b in 0..BATCHES {
                let n = node(&format!("t{t}-b{b}"));
                let id = n.uuid;
                store
                    .commit(vec![Write::InsertNode(n.into()), Write::AppendHistory(history(id, "enroll"))])
                    .await
                    .unwrap();
                // Every acknowledged commit is visible to a later read.
                if b % 25 == 0 {
                    let seen = store.read(move |s| s.load_node(id)).await.unwrap();
                    assert!(seen.is_some());
                }
                ids.push(id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }

    let nodes = store.read(|s| s.load_nodes()).await.unwrap();
    assert_eq!(nodes.len(), TASKS * BATCHES);
    let probe = ids[ids.len() / 2];
    let lines = store.read(move |s| s.load_history(probe, 10)).await.unwrap();
    assert_eq!(lines.len(), 1);

    // Durable: a fresh backend on the file sees them all once the thread
    // has let go of it.
    drop(store);
    let store = StoreHandle::open_sqlite(&path).unwrap();
    let count = store.read(|s| Ok(s.load_nodes()?.len())).await.unwrap();
    assert_eq!(count, TASKS * BATCHES);
}

#[tokio::test]
async fn a_failed_batch_does_not_fail_the_others() {
    let (_dir, path) = db();
    let store = StoreHandle::open_sqlite(&path).unwrap();
    store.commit(vec![Write::InsertNode(node("taken").into())]).await.unwrap();

    // Sent together, so most likely grouped in one transaction; either way
    // each gets its own answer.
    let clash = store.commit(vec![Write::InsertNode(node("taken").into())]);
    let fine = store.commit(vec![Write::InsertNode(node("free").into())]);
    let (clash, fine) = tokio::join!(clash, fine);
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    fine.unwrap();

    let names: Vec<String> = store.read(|s| s.load_nodes()).await.unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(names, vec!["free", "taken"]);
}

#[test]
fn blocking_callers_work_without_a_runtime() {
    let (_dir, path) = db();
    let store = StoreHandle::open_sqlite(&path).unwrap();
    let n = node("sync");
    store.commit_blocking(vec![Write::InsertNode(n.clone().into())]).unwrap();
    let seen = store.read_blocking(move |s| s.load_node(n.uuid)).unwrap().unwrap();
    assert_eq!(seen.name, "sync");
    store.read_blocking(|s| s.checkpoint()).unwrap();
}

#[test]
fn a_panicking_read_does_not_stop_the_store() {
    let (_dir, path) = db();
    let store = StoreHandle::open_sqlite(&path).unwrap();
    let err = store.read_blocking(|_| -> Result<(), StoreError> { panic!("a bug in a reader") }).unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err:?}");
    store.commit_blocking(vec![Write::InsertNode(node("after").into())]).unwrap();
    assert_eq!(store.read_blocking(|s| s.load_nodes()).unwrap().len(), 1);
}

/// A backend whose transaction always fails, counting how many batches it
/// was offered.
struct BrokenDisk {
    offered: Arc<AtomicUsize>,
    /// Dropped with the backend, so a test can see the thread end.
    _alive: std::sync::mpsc::Sender<()>,
}

/// The reads of a backend that holds nothing: these tests only commit.
macro_rules! no_reads {
    () => {
        fn load_nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn load_node(&mut self, _: NodeId) -> Result<Option<NodeRecord>, StoreError> {
            Ok(None)
        }
        fn load_ports(&mut self, _: Option<NodeId>) -> Result<Vec<PortRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn load_port_groups(&mut self, _: Option<NodeId>) -> Result<Vec<PortGroupRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn load_port_group(&mut self, _: &str) -> Result<Option<PortGroupRecord>, StoreError> {
            Ok(None)
        }
        fn load_history(&mut self, _: NodeId, _: usize) -> Result<Vec<HistoryEntry>, StoreError> {
            Ok(Vec::new())
        }
        fn load_live_jobs(&mut self) -> Result<Vec<JobRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn load_job(&mut self, _: JobId) -> Result<Option<(JobRecord, bool)>, StoreError> {
            Ok(None)
        }
        fn load_job_log(&mut self, _: JobId, _: u64, _: usize) -> Result<Vec<JobLogEntry>, StoreError> {
            Ok(Vec::new())
        }
        fn max_job_id(&mut self) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn load_meta(&mut self, _: &str) -> Result<Option<String>, StoreError> {
            Ok(None)
        }
        fn list_archived_jobs(&mut self, _: usize) -> Result<Vec<JobRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn list_live_jobs(
            &mut self,
            _: Option<JobStatus>,
            _: Option<JobId>,
            _: usize,
        ) -> Result<Vec<JobRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn checkpoint(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
    };
}

impl Backend for BrokenDisk {
    fn commit(&mut self, batches: &[Batch]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.offered.fetch_add(batches.len(), Ordering::SeqCst);
        Err(StoreError::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        )))
    }
    no_reads!();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_fails_every_batch_in_it_with_the_cause() {
    let offered = Arc::new(AtomicUsize::new(0));
    let (alive, _backend_gone) = std::sync::mpsc::channel();
    let store = StoreHandle::start(Box::new(BrokenDisk { offered: offered.clone(), _alive: alive }));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(
            async move { store.commit(vec![Write::InsertNode(node(&format!("n{i}")).into())]).await },
        ));
    }
    for task in tasks {
        match task.await.unwrap() {
            Err(StoreError::CommitFailed(m)) => {
                assert!(m.starts_with("database error: database or disk is full"), "{m}")
            }
            other => panic!("expected CommitFailed, got {other:?}"),
        }
    }
    assert_eq!(offered.load(Ordering::SeqCst), 32);
}

#[test]
fn the_thread_ends_with_the_last_handle_after_serving_the_queue() {
    let offered = Arc::new(AtomicUsize::new(0));
    let (alive, backend_gone) = std::sync::mpsc::channel::<()>();
    let store = StoreHandle::start(Box::new(BrokenDisk { offered: offered.clone(), _alive: alive }));
    let clone = store.clone();
    drop(store);
    // One handle left: the thread still serves.
    assert!(matches!(clone.commit_blocking(vec![]), Err(StoreError::CommitFailed(_))));
    drop(clone);
    // The backend (and the sender it holds) is dropped when the thread ends;
    // recv returns then, with no sleep.
    assert!(backend_gone.recv().is_err());
    assert_eq!(offered.load(Ordering::SeqCst), 1);
}

/// A backend that accepts everything and records the size of each group;
/// with a `log`, its commits are durable only once that log is synced.
struct Recorder {
    groups: Arc<std::sync::Mutex<Vec<usize>>>,
    log: Option<Box<dyn LogSync>>,
}

impl Backend for Recorder {
    fn commit(&mut self, batches: &[Batch]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.groups.lock().unwrap().push(batches.len());
        Ok(batches.iter().map(|_| Ok(())).collect())
    }
    fn log_sync(&mut self) -> Option<Box<dyn LogSync>> {
        self.log.take()
    }
    no_reads!();
}

type Pending<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Polls every future once, which is enough to put its request on the
/// store's queue, and returns them for awaiting.
async fn enqueue<T>(mut futures: Vec<Pending<'_, T>>) -> Vec<Pending<'_, T>> {
    std::future::poll_fn(|cx| {
        for f in &mut futures {
            assert!(f.as_mut().poll(cx).is_pending());
        }
        std::task::Poll::Ready(())
    })
    .await;
    futures
}

/// The thread held in a read until the returned sender sends, then the
/// read answers.
fn thread_held(store: &StoreHandle) -> (std::sync::mpsc::Sender<()>, Pending<'_, Result<(), StoreError>>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    (release, Box::pin(store.read(move |_| held.recv().map_err(|_| StoreError::Closed))))
}

#[tokio::test]
async fn queued_commits_share_one_transaction_and_reads_keep_their_place() {
    let groups = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = StoreHandle::start(Box::new(Recorder { groups: groups.clone(), log: None }));

    // Hold the thread in a read until everything else is queued.
    let (release, read) = thread_held(&store);
    let mut requests: Vec<Pending<'_, Result<(), StoreError>>> = vec![read];
    for _ in 0..3 {
        requests.push(Box::pin(store.commit(vec![])));
    }
    // A read between commits sees the first three committed, not the rest.
    let seen = groups.clone();
    requests.push(Box::pin(store.read(move |_| {
        assert_eq!(*seen.lock().unwrap(), vec![3]);
        Ok(())
    })));
    for _ in 0..(kiln_store::writer::MAX_GROUP + 2) {
        requests.push(Box::pin(store.commit(vec![])));
    }
    let requests = enqueue(requests).await;
    release.send(()).unwrap();
    for r in requests {
        r.await.unwrap();
    }
    assert_eq!(*groups.lock().unwrap(), vec![3, kiln_store::writer::MAX_GROUP, 2]);
}

/// A log whose sync says it has begun, then waits for the test to say how
/// it ends.
struct GatedLog {
    began: std::sync::mpsc::Sender<()>,
    outcome: std::sync::mpsc::Receiver<std::io::Result<()>>,
}

impl LogSync for GatedLog {
    fn sync(&mut self) -> std::io::Result<()> {
        let _ = self.began.send(());
        self.outcome.recv().unwrap_or(Ok(()))
    }
}

/// A store over a [`Recorder`] with a [`GatedLog`].
struct Gated {
    store: StoreHandle,
    /// The groups the backend applied.
    groups: Arc<std::sync::Mutex<Vec<usize>>>,
    /// One message each time a sync begins.
    began: std::sync::mpsc::Receiver<()>,
    /// Ends the sync in progress, with this outcome.
    end_sync: std::sync::mpsc::Sender<std::io::Result<()>>,
}

fn gated_store() -> Gated {
    let groups = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (began_tx, began) = std::sync::mpsc::channel();
    let (end_sync, outcome) = std::sync::mpsc::channel();
    let log = GatedLog { began: began_tx, outcome };
    let store = StoreHandle::start(Box::new(Recorder { groups: groups.clone(), log: Some(Box::new(log)) }));
    Gated { store, groups, began, end_sync }
}

/// Whether `f` is still waiting, polled once.
async fn still_pending<T>(f: &mut Pending<'_, T>) -> bool {
    std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx).is_pending())).await
}

#[tokio::test]
async fn an_acknowledgement_waits_for_its_sync_while_the_next_group_is_applied() {
    let Gated { store, groups, began, end_sync } = gated_store();
    let mut first = enqueue(vec![Box::pin(store.commit(vec![]))]).await.remove(0);
    // The first group is committed and its sync has begun; hold it there.
    began.recv().unwrap();
    let mut second = enqueue(vec![Box::pin(store.commit(vec![]))]).await.remove(0);
    // A read runs after the commits sent before it: the second group is
    // applied although the first one's sync has not ended.
    store.read(|_| Ok(())).await.unwrap();
    assert_eq!(*groups.lock().unwrap(), vec![1, 1]);
    assert!(still_pending(&mut first).await, "acknowledged before its sync ended");

    end_sync.send(Ok(())).unwrap();
    first.await.unwrap();
    // The second group began after that sync: it waits for one of its own.
    began.recv().unwrap();
    assert!(still_pending(&mut second).await, "acknowledged by a sync that began before it was written");
    end_sync.send(Ok(())).unwrap();
    second.await.unwrap();
}

#[tokio::test]
async fn under_heavy_load_a_group_waits_for_the_sync_under_way_and_takes_in_what_arrives_meanwhile() {
    let Gated { store, groups, began, end_sync } = gated_store();
    let hold_at = kiln_store::writer::HOLD_AT;
    // HOLD_AT commits queued behind a read, so they make one group.
    let (release, read) = thread_held(&store);
    let mut first: Vec<Pending<'_, Result<(), StoreError>>> = vec![read];
    first.extend((0..hold_at).map(|_| Box::pin(store.commit(vec![])) as Pending<'_, _>));
    let mut first = enqueue(first).await;
    release.send(()).unwrap();
    first.remove(0).await.unwrap();
    // Its sync has begun; it is held there.
    began.recv().unwrap();

    // Six more, then three more once the thread is free to take the six:
    // with HOLD_AT commits waiting for the sync, none of them is applied
    // until that sync ends, and then all nine go as one group.
    let (release, read) = thread_held(&store);
    let mut second: Vec<Pending<'_, Result<(), StoreError>>> = vec![read];
    second.extend((0..6).map(|_| Box::pin(store.commit(vec![])) as Pending<'_, _>));
    let mut second = enqueue(second).await;
    release.send(()).unwrap();
    second.remove(0).await.unwrap();
    let third = enqueue((0..3).map(|_| Box::pin(store.commit(vec![])) as Pending<'_, _>).collect()).await;
    assert_eq!(*groups.lock().unwrap(), vec![hold_at], "applied beside the sync under way");

    end_sync.send(Ok(())).unwrap();
    for commit in first {
        commit.await.unwrap();
    }
    began.recv().unwrap();
    end_sync.send(Ok(())).unwrap();
    for commit in second.into_iter().chain(third) {
        commit.await.unwrap();
    }
    assert_eq!(*groups.lock().unwrap(), vec![hold_at, 9]);
}

#[tokio::test]
async fn a_failed_sync_refuses_its_group_and_every_later_write() {
    let Gated { store, groups, began, end_sync } = gated_store();
    let first = enqueue(vec![Box::pin(store.commit(vec![]))]).await.remove(0);
    began.recv().unwrap();
    end_sync.send(Err(std::io::Error::other("EIO on the WAL"))).unwrap();
    match first.await {
        Err(StoreError::NotDurable(m)) => assert!(m.contains("EIO on the WAL"), "{m}"),
        other => panic!("expected NotDurable, got {other:?}"),
    }
    // Later commits are refused without being applied; reads still answer.
    let later = store.commit(vec![Write::InsertNode(node("after").into())]).await.unwrap_err();
    assert!(later.to_string().contains("refuses writes until kiln is restarted"), "{later}");
    assert!(later.to_string().contains("EIO on the WAL"), "{later}");
    assert_eq!(*groups.lock().unwrap(), vec![1]);
    assert!(store.read(|b| b.load_nodes()).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_stats_split_a_commits_wait_into_queued_applying_and_syncing() {
    let Gated { store, groups, began, end_sync } = gated_store();
    let before = store.stats();
    let first = enqueue(vec![Box::pin(store.commit(vec![]))]).await.remove(0);
    began.recv().unwrap();
    // The first sync is held from here until the release below.
    let held = std::time::Instant::now();
    // The next two commits form one group: the thread is held in a read
    // until both are queued.
    let (release, read) = thread_held(&store);
    let mut rest: Vec<Pending<'_, Result<(), StoreError>>> =
        vec![read, Box::pin(store.commit(vec![])), Box::pin(store.commit(vec![]))];
    rest = enqueue(rest).await;
    release.send(()).unwrap();
    rest.remove(0).await.unwrap();
    store.read(|_| Ok(())).await.unwrap();
    assert_eq!(*groups.lock().unwrap(), vec![1, 2]);
    let during = store.stats().since(&before);
    assert_eq!((during.commits, during.groups, during.syncs), (3, 2, 0));
    assert_eq!(during.sync_time, std::time::Duration::ZERO, "a sync counted before it returned");
    let hold = held.elapsed();
    end_sync.send(Ok(())).unwrap();
    first.await.unwrap();
    began.recv().unwrap();
    end_sync.send(Ok(())).unwrap();
    for commit in rest {
        commit.await.unwrap();
    }

    let stats = store.stats().since(&before);
    assert_eq!((stats.commits, stats.groups, stats.syncs), (3, 2, 2));
    // The first commit waited out the whole hold in its sync.
    assert!(stats.syncing >= hold, "{stats:?}, held {hold:?}");
    let (_, _, syncing) = stats.mean_stages();
    assert_eq!(syncing, stats.syncing / 3);
    // The first sync itself lasted the hold.
    assert!(stats.sync_time >= hold, "{stats:?}, held {hold:?}");
    assert_eq!(stats.mean_sync(), stats.sync_time / 2);
    // An interval is the difference of two readings.
    assert_eq!(store.stats().since(&store.stats()), kiln_store::StoreStats::default());
}
