//! Tests of the actors together: a site started in an actix system on a
//! temporary store, driven by the same messages an embedding application
//! sends.

use std::time::Duration;

use kiln_drivers::PowerAction;
use kiln_store::ProvisionState;

use crate::node::{CrashForTest, NodeUpdate, Op, RunOp};
use crate::*;

fn config(dir: &std::path::Path, demo: usize, lock_wait: Duration) -> SiteConfig {
    SiteConfig { data_dir: dir.to_path_buf(), demo_nodes: demo, lock_wait, ..Default::default() }
}

async fn act(site: &Site, node: &str, op: Op, wait: bool) -> Result<NodeView, KilnError> {
    site.supervisor.send(NodeAction { node: node.into(), op, wait }).await.unwrap()
}

fn slow(ms: u64) -> Op {
    let mut u = NodeUpdate::default();
    u.driver_info.insert("latency_ms".into(), Some(ms.to_string()));
    Op::Update(u)
}

#[test]
fn exclusive_requests_run_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let site = start(config(dir.path(), 1, Duration::from_secs(60))).await.unwrap();
        act(&site, "demo1", slow(50), true).await.unwrap();
        let node = site.registry.addr(site.registry.find("demo1").unwrap().0).unwrap();
        // `send` enqueues at once, so these arrive in this order.
        let first = node.send(RunOp { op: Op::Power(PowerAction::On), wait: true });
        let second = node.send(RunOp { op: Op::Maintenance { on: true, reason: Some("second".into()) }, wait: true });
        let third = node.send(RunOp { op: Op::Power(PowerAction::Off), wait: true });
        let (a, b, c) = futures::join!(first, second, third);
        let (a, b, c) = (a.unwrap().unwrap(), b.unwrap().unwrap(), c.unwrap().unwrap());
        assert!(a.updated_at < b.updated_at && b.updated_at < c.updated_at);
        assert_eq!(a.power_state, Some(kiln_store::PowerState::On));
        assert!(b.maintenance && b.power_state == Some(kiln_store::PowerState::On));
        assert_eq!(c.power_state, Some(kiln_store::PowerState::Off));
    });
}

#[test]
fn a_request_waits_at_most_lock_wait_then_fails_with_node_locked() {
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let site = start(config(dir.path(), 1, Duration::from_millis(100))).await.unwrap();
        act(&site, "demo1", slow(60_000), true).await.unwrap();
        act(&site, "demo1", Op::Power(PowerAction::On), false).await.unwrap();
        let err = act(&site, "demo1", Op::Verb(Verb::Manage), true).await.unwrap_err();
        match err {
            KilnError::NodeLocked { holder_purpose, .. } => assert_eq!(holder_purpose, "power on"),
            other => panic!("expected NodeLocked, got {other}"),
        }
        let v = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert_eq!(v.provision_state, ProvisionState::Enroll);
    });
}

/// A site whose two demo nodes are available, demo1's driver taking a
/// minute per task.
async fn two_available_demo1_slow(dir: &std::path::Path) -> Site {
    let site = start(config(dir, 2, Duration::ZERO)).await.unwrap();
    for node in ["demo1", "demo2"] {
        act(&site, node, Op::Verb(Verb::Manage), true).await.unwrap();
        act(&site, node, Op::Verb(Verb::Provide), true).await.unwrap();
    }
    act(&site, "demo1", slow(60_000), true).await.unwrap();
    site
}

#[test]
fn a_node_actor_that_panicked_is_recreated_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let site = two_available_demo1_slow(dir.path()).await;
        let started = act(&site, "demo1", Op::Verb(Verb::Deploy), false).await.unwrap();
        assert_eq!(started.provision_state, ProvisionState::Deploying);

        let dead = site.registry.addr(site.registry.find("demo1").unwrap().0).unwrap();
        dead.do_send(CrashForTest);
        // The next message finds the mailbox closed; the supervisor
        // re-creates the actor from the store and fails the cut-off task.
        let v = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert_eq!(v.provision_state, ProvisionState::DeployFailed);
        assert!(v.reservation.is_none());
        let err = v.last_error.clone().unwrap();
        assert!(err.contains("crash requested by a test") && err.contains("deploying"), "{err}");
        let alive = site.registry.addr(site.registry.find("demo1").unwrap().0).unwrap();
        assert!(alive != dead);

        // The other node never noticed.
        let v = act(&site, "demo2", Op::Verb(Verb::Deploy), true).await.unwrap();
        assert_eq!(v.provision_state, ProvisionState::Active);
        // The node gauges count each node once: the dead actor's share went
        // with it, the new actor counts the recovered record.
        assert_eq!(site.metrics.nodes_in(ProvisionState::DeployFailed), 1);
        assert_eq!(site.metrics.nodes_in(ProvisionState::Active), 1);
        assert_eq!(site.metrics.nodes_in(ProvisionState::Deploying), 0);
        assert_eq!(site.metrics.nodes_in(ProvisionState::Available), 0);
    });
}

#[test]
fn a_shutdown_fails_work_that_outlives_its_grace_as_the_restart_rule_would() {
    use crate::jobs::{GetJob, Opcode, SubmitJob};
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let site = two_available_demo1_slow(dir.path()).await;
        let ops = vec![
            Opcode::Node { nodes: "demo1".into(), op: Op::Verb(Verb::Deploy), fanout: None, wait: true },
            Opcode::Sleep { seconds: 0.0 },
        ];
        // Waits for the deploy's start event, not by polling the node.
        let (tx, mut events) = tokio::sync::mpsc::channel(64);
        let filter = crate::events::EventFilter::default();
        site.events.send(crate::events::SubscribeChannel { tx, backlog: false, filter }).await.unwrap();
        let job = site.jobs.send(SubmitJob { ops, priority: 0, depends: vec![] }).await.unwrap().unwrap();
        let started = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let e = events.recv().await.expect("the event bus is running");
                if e.node_name == "demo1" && e.kind == crate::events::EventKind::Start && e.action == "deploy" {
                    return e;
                }
            }
        })
        .await
        .expect("the deploy never started");
        assert_eq!(started.provision_state, ProvisionState::Deploying);

        let report = shutdown::shutdown(&site, Duration::from_millis(100), std::future::pending()).await;
        assert_eq!((report.running_jobs, report.busy_nodes), (1, 1), "{report:?}");
        assert!(!report.finished_in_grace);
        assert_eq!((report.jobs_abandoned, report.nodes_released), (1, 1), "{report:?}");

        // In the store, not only in memory: nothing for the restart rule.
        let (id, _) = site.registry.find("demo1").unwrap();
        let stored = site.store.read(move |b| b.load_node(id)).await.unwrap().unwrap();
        assert_eq!(stored.provision_state, ProvisionState::DeployFailed);
        assert!(stored.reservation.is_none() && stored.target_provision_state.is_none());
        assert!(stored.last_error.as_deref().unwrap().contains("grace period"), "{:?}", stored.last_error);
        let view = site.jobs.send(GetJob(job)).await.unwrap().unwrap();
        assert_eq!(view.status, kiln_store::JobStatus::Error);
        assert!(view.error.as_deref().unwrap().contains("grace period"), "{:?}", view.error);

        // A node closed by the shutdown takes no new work.
        let err = act(&site, "demo2", Op::Verb(Verb::Deploy), true).await.unwrap_err();
        assert!(matches!(err, KilnError::Unavailable(_)), "{err}");
    });
}

/// The SQLite store with a hook that sees every batch before it is
/// committed: it may refuse the batch (as a full disk would) or hold the
/// store thread until the test lets it go on.
struct Hooked {
    store: kiln_store::sqlite::SqliteBackend,
    before_commit: Box<BeforeCommit>,
    /// As a shared store: the first id of the next block of job ids it
    /// hands out. `None`: as SQLite, no blocks.
    id_blocks: Option<u64>,
}

/// Sees a batch before it is committed; an error refuses it.
type BeforeCommit = dyn FnMut(&kiln_store::Batch) -> Option<kiln_store::StoreError> + Send;

/// Whether the batch writes a job's opcode start.
fn an_opcode_start(batch: &kiln_store::Batch) -> bool {
    use kiln_store::Write;
    batch
        .iter()
        .any(|w| matches!(w, Write::PutJob(j) | Write::UpdateJob(j) if j.log.last().is_some_and(|l| l.message.contains(" started: "))))
}

impl kiln_store::Backend for Hooked {
    fn commit(
        &mut self,
        batches: &[kiln_store::Batch],
    ) -> Result<Vec<Result<(), kiln_store::StoreError>>, kiln_store::StoreError> {
        let refused: Vec<Option<kiln_store::StoreError>> = batches.iter().map(|b| (self.before_commit)(b)).collect();
        let kept: Vec<kiln_store::Batch> =
            batches.iter().zip(&refused).filter(|(_, r)| r.is_none()).map(|(b, _)| b.clone()).collect();
        let mut results = self.store.commit(&kept)?.into_iter();
        Ok(refused
            .into_iter()
            .map(|r| match r {
                Some(error) => Err(error),
                None => results.next().expect("one result per batch"),
            })
            .collect())
    }
    fn job_id_block(&mut self, size: u64) -> Result<Option<u64>, kiln_store::StoreError> {
        Ok(self.id_blocks.as_mut().map(|next| {
            let first = *next;
            *next += size;
            first
        }))
    }
    fn load_nodes(&mut self) -> Result<Vec<kiln_store::NodeRecord>, kiln_store::StoreError> {
        self.store.load_nodes()
    }
    fn load_node(&mut self, id: kiln_store::NodeId) -> Result<Option<kiln_store::NodeRecord>, kiln_store::StoreError> {
        self.store.load_node(id)
    }
    fn load_ports(
        &mut self,
        node: Option<kiln_store::NodeId>,
    ) -> Result<Vec<kiln_store::PortRecord>, kiln_store::StoreError> {
        self.store.load_ports(node)
    }
    fn load_port_groups(
        &mut self,
        node: Option<kiln_store::NodeId>,
    ) -> Result<Vec<kiln_store::PortGroupRecord>, kiln_store::StoreError> {
        self.store.load_port_groups(node)
    }
    fn load_port_group(&mut self, key: &str) -> Result<Option<kiln_store::PortGroupRecord>, kiln_store::StoreError> {
        self.store.load_port_group(key)
    }
    fn load_history(
        &mut self,
        node: kiln_store::NodeId,
        limit: usize,
    ) -> Result<Vec<kiln_store::HistoryEntry>, kiln_store::StoreError> {
        self.store.load_history(node, limit)
    }
    fn load_live_jobs(&mut self) -> Result<Vec<kiln_store::JobRecord>, kiln_store::StoreError> {
        self.store.load_live_jobs()
    }
    fn load_job(
        &mut self,
        id: kiln_store::JobId,
    ) -> Result<Option<(kiln_store::JobRecord, bool)>, kiln_store::StoreError> {
        self.store.load_job(id)
    }
    fn load_job_log(
        &mut self,
        id: kiln_store::JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<kiln_store::JobLogEntry>, kiln_store::StoreError> {
        self.store.load_job_log(id, after, limit)
    }
    fn max_job_id(&mut self) -> Result<u64, kiln_store::StoreError> {
        self.store.max_job_id()
    }
    fn load_meta(&mut self, key: &str) -> Result<Option<String>, kiln_store::StoreError> {
        self.store.load_meta(key)
    }
    fn list_archived_jobs(&mut self, limit: usize) -> Result<Vec<kiln_store::JobRecord>, kiln_store::StoreError> {
        self.store.list_archived_jobs(limit)
    }
    fn list_live_jobs(
        &mut self,
        status: Option<kiln_store::JobStatus>,
        before: Option<kiln_store::JobId>,
        limit: usize,
    ) -> Result<Vec<kiln_store::JobRecord>, kiln_store::StoreError> {
        self.store.list_live_jobs(status, before, limit)
    }
    fn checkpoint(&mut self) -> Result<(), kiln_store::StoreError> {
        self.store.checkpoint()
    }
}

/// A site with `demo` nodes in `dir`, over a [`Hooked`] SQLite store that
/// shows `before_commit` every batch.
async fn hooked_site(
    dir: &std::path::Path,
    demo: usize,
    before_commit: impl FnMut(&kiln_store::Batch) -> Option<kiln_store::StoreError> + Send + 'static,
) -> Site {
    let store = kiln_store::sqlite::SqliteBackend::open(&dir.join("kiln.sqlite")).unwrap();
    let hooked = Hooked { store, before_commit: Box::new(before_commit), id_blocks: None };
    start_with_store(config(dir, demo, Duration::ZERO), kiln_store::StoreHandle::start(Box::new(hooked))).await.unwrap()
}

/// A site whose store acts as a shared one for job ids: blocks from
/// `first_id` on.
async fn shared_site(dir: &std::path::Path, demo: usize, first_id: u64) -> Site {
    let store = kiln_store::sqlite::SqliteBackend::open(&dir.join("kiln.sqlite")).unwrap();
    let hooked = Hooked { store, before_commit: Box::new(|_| None), id_blocks: Some(first_id) };
    start_with_store(config(dir, demo, Duration::ZERO), kiln_store::StoreHandle::start(Box::new(hooked))).await.unwrap()
}

#[test]
fn adopted_jobs_are_ended_or_resumed_and_stored_and_ids_come_from_the_stores_block() {
    use crate::jobs::{AdoptJobs, Adopted, GetJob, JobBody, OpState, Opcode, SubmitJob};
    use kiln_store::{JobId, JobLogEntry, JobStatus, Write};
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let site = shared_site(dir.path(), 1, 1_000_000).await;
        let sleep = || vec![Opcode::Sleep { seconds: 0.0 }];
        let id = site.jobs.send(SubmitJob { ops: sleep(), priority: 0, depends: vec![] }).await.unwrap().unwrap();
        assert_eq!(id, JobId(1_000_000), "the first id of the store's block");

        // Two jobs of a member that died, as the store hands them over.
        let record = |id: u64, status: JobStatus| {
            let op = OpState {
                opcode: Opcode::Sleep { seconds: 0.0 },
                status,
                started_at: None,
                ended_at: None,
                results: Vec::new(),
                error: None,
            };
            let body = JobBody { ops: vec![op], depends: Vec::new(), error: None };
            let now = chrono::Utc::now();
            kiln_store::JobRecord {
                id: JobId(id),
                priority: 0,
                status,
                submitted_at: now,
                started_at: (status == JobStatus::Running).then_some(now),
                ended_at: None,
                body: serde_json::to_string(&body).unwrap(),
                log: vec![JobLogEntry::info(JobId(id), 1, now, "submitted".into())],
            }
        };
        let (cut, queued) = (record(5, JobStatus::Running), record(6, JobStatus::Queued));
        site.store.commit(vec![Write::PutJob(cut.clone()), Write::PutJob(queued.clone())]).await.unwrap();
        let adopted = site.jobs.send(AdoptJobs(vec![cut, queued])).await.unwrap().unwrap();
        assert_eq!(adopted, Adopted { resumed: 1, ended: 1 });

        let (stored, _) = site.store.read(|b| b.load_job(JobId(5))).await.unwrap().unwrap();
        assert_eq!(stored.status, JobStatus::Error, "the repair is stored before the answer");
        let shown = site.jobs.send(GetJob(JobId(5))).await.unwrap().unwrap();
        assert!(shown.error.unwrap().contains("member running it died"));
        assert_eq!(until_ended(&site, JobId(6)).await.status, JobStatus::Success, "the queued job ran here");
    });
}

#[test]
fn a_job_whose_insert_is_refused_leaves_the_queue_having_done_nothing() {
    use crate::jobs::{GetJob, GetQueueInfo, Opcode, SubmitJob};
    use kiln_store::Write;
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        // The first job's insert fails, as on a full disk; nothing else does.
        let refuse_job_1 = |b: &kiln_store::Batch| {
            b.iter()
                .any(|w| matches!(w, Write::InsertJob(j) if j.id.0 == 1))
                .then(|| kiln_store::StoreError::CommitFailed("database or disk is full".into()))
        };
        let site = hooked_site(dir.path(), 1, refuse_job_1).await;
        // A job starts as soon as it is admitted, before its insert is
        // stored: this one would power the node on if it could act.
        let power_on =
            || vec![Opcode::Node { nodes: "demo1".into(), op: Op::Power(PowerAction::On), fanout: None, wait: true }];
        let refused = site.jobs.send(SubmitJob { ops: power_on(), priority: 0, depends: vec![] }).await.unwrap();
        let error = refused.unwrap_err().to_string();
        assert!(error.contains("database or disk is full"), "{error}");
        let node = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert_ne!(node.power_state, Some(kiln_store::PowerState::On), "the refused job acted");
        assert!(node.reservation.is_none());
        assert!(site.jobs.send(GetJob(kiln_store::JobId(1))).await.unwrap().is_err(), "still known");
        let queue = site.jobs.send(GetQueueInfo).await.unwrap();
        assert_eq!(queue.running, 0, "{queue:?}");
        assert!(queue.by_status.is_empty(), "{queue:?}");

        // The queue goes on: the next job runs, and acts.
        let job = site.jobs.send(SubmitJob { ops: power_on(), priority: 0, depends: vec![] }).await.unwrap().unwrap();
        assert_eq!(job, kiln_store::JobId(2));
        assert_eq!(until_ended(&site, job).await.status, kiln_store::JobStatus::Success);
        let node = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert_eq!(node.power_state, Some(kiln_store::PowerState::On));
    });
}

#[test]
fn an_opcode_whose_start_cannot_be_stored_does_not_run() {
    use crate::jobs::{Opcode, SubmitJob};
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let refuse_starts = |b: &kiln_store::Batch| {
            an_opcode_start(b).then(|| kiln_store::StoreError::CommitFailed("database or disk is full".into()))
        };
        let site = hooked_site(dir.path(), 1, refuse_starts).await;
        // The node opcode starts after the sleep, in a later turn than the
        // one that admitted the job: its start is a commit of its own (a
        // start made in that turn goes with the insert, and is refused with
        // it: see the test above).
        let ops = vec![
            Opcode::Sleep { seconds: 0.001 },
            Opcode::Node { nodes: "demo1".into(), op: Op::Power(PowerAction::On), fanout: None, wait: true },
        ];
        let job = site.jobs.send(SubmitJob { ops, priority: 0, depends: vec![] }).await.unwrap().unwrap();
        let change = until_ended(&site, job).await;
        assert_eq!(change.status, kiln_store::JobStatus::Error);
        let view = site.jobs.send(crate::jobs::GetJob(job)).await.unwrap().unwrap();
        let error = view.error.unwrap_or_default();
        assert!(error.contains("opcode 2/2 did not run: its start could not be stored"), "{error}");
        let node = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert_ne!(node.power_state, Some(kiln_store::PowerState::On), "the opcode ran");
        assert!(node.reservation.is_none());
    });
}

/// Follows `job` until it ends; its last change.
async fn until_ended(site: &Site, job: kiln_store::JobId) -> crate::jobs::JobChange {
    use crate::jobs::WaitJobChange;
    let mut after = 0;
    for _ in 0..100 {
        let wait = WaitJobChange { job, after_serial: after, timeout: Duration::from_secs(30) };
        let change = site.jobs.send(wait).await.unwrap().unwrap();
        after = change.log.last().map_or(after, |l| l.serial);
        if change.status.is_finished() {
            return change;
        }
    }
    panic!("job {job} did not end");
}

#[test]
fn a_job_that_ends_in_the_turn_that_admitted_it_is_stored_in_one_commit() {
    use crate::jobs::{NewJob, Opcode, SubmitJob, SubmitJobs};
    use kiln_store::JobStatus;
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let site = start(config(dir.path(), 0, Duration::ZERO)).await.unwrap();
        let sleep = || vec![Opcode::Sleep { seconds: 0.0 }];
        let before = site.store.stats().commits;
        let job = site.jobs.send(SubmitJob { ops: sleep(), priority: 0, depends: vec![] }).await.unwrap().unwrap();
        let (stored, _) = site.store.read(move |b| b.load_job(job)).await.unwrap().unwrap();
        assert_eq!(stored.status, JobStatus::Success, "acknowledged with its end");
        let messages: Vec<_> = stored.log.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages.first(), Some(&"submitted: 1 opcode(s)"), "{messages:?}");
        assert_eq!(messages.last(), Some(&"job ended: success"), "{messages:?}");
        assert_eq!(until_ended(&site, job).await.status, JobStatus::Success);
        assert_eq!(site.store.stats().commits - before, 1, "the insert carried the end");

        let before = site.store.stats().commits;
        let jobs = (0..3).map(|_| NewJob { ops: sleep(), priority: 0, depends: vec![] }).collect();
        let ids = site.jobs.send(SubmitJobs(jobs)).await.unwrap().unwrap();
        for id in ids {
            assert_eq!(until_ended(&site, id).await.status, JobStatus::Success);
        }
        assert_eq!(site.store.stats().commits - before, 1, "one batch of three inserts, ends included");
    });
}

#[test]
fn a_job_that_starts_without_a_durable_start_is_inserted_queued() {
    use crate::jobs::{GetJob, Opcode, SubmitJob};
    use kiln_store::JobStatus;
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let site = start(config(dir.path(), 0, Duration::ZERO)).await.unwrap();
        // It starts at once, but a sleep acts on nothing: its start is not
        // stored, so a crash now runs it again rather than calling it
        // interrupted. The insert is the job as admitted.
        let ops = vec![Opcode::Sleep { seconds: 3600.0 }];
        let job = site.jobs.send(SubmitJob { ops, priority: 0, depends: vec![] }).await.unwrap().unwrap();
        assert_eq!(site.jobs.send(GetJob(job)).await.unwrap().unwrap().status, JobStatus::Running);
        let (stored, _) = site.store.read(move |b| b.load_job(job)).await.unwrap().unwrap();
        assert_eq!((stored.status, stored.started_at), (JobStatus::Queued, None));
        assert_eq!(stored.log.len(), 1, "{:?}", stored.log);
    });
}

#[test]
fn old_jobs_are_archived_in_waves_and_each_one_is_counted_once() {
    use crate::jobs::{ArchiveOld, GetQueueInfo, ListJobs, Opcode, SubmitJob};
    const JOBS: usize = 600; // more than two waves
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let site = start(config(dir.path(), 0, Duration::ZERO)).await.unwrap();
        let mut last = None;
        for _ in 0..JOBS {
            let ops = vec![Opcode::Sleep { seconds: 0.0 }];
            last = Some(site.jobs.send(SubmitJob { ops, priority: 0, depends: vec![] }).await.unwrap().unwrap());
        }
        until_ended(&site, last.unwrap()).await;
        let info = site.jobs.send(GetQueueInfo).await.unwrap();
        assert_eq!(info.by_status.get("success"), Some(&JOBS), "{:?}", info.by_status);
        // Listed a page at a time (64 in unit tests), oldest first, whole.
        let ids = |views: Vec<crate::jobs::JobView>| views.into_iter().map(|v| v.id.0).collect::<Vec<u64>>();
        let all = site.jobs.send(ListJobs { status: None, limit: None }).await.unwrap().unwrap();
        assert_eq!(ids(all), (1..=JOBS as u64).collect::<Vec<_>>());
        let success = ListJobs { status: Some(kiln_store::JobStatus::Success), limit: Some(250) };
        let newest = site.jobs.send(success).await.unwrap().unwrap();
        assert_eq!(ids(newest), ((JOBS as u64 - 249)..=JOBS as u64).collect::<Vec<_>>());

        let archived = site.jobs.send(ArchiveOld { age: Duration::ZERO }).await.unwrap().unwrap();
        assert_eq!(archived, JOBS);
        let info = site.jobs.send(GetQueueInfo).await.unwrap();
        assert!(info.by_status.is_empty(), "{:?}", info.by_status);
        let live = site.jobs.send(ListJobs { status: None, limit: None }).await.unwrap().unwrap();
        assert!(live.is_empty(), "{} live", live.len());
        let stored = site.store.read(|b| b.list_archived_jobs(usize::MAX)).await.unwrap();
        assert_eq!(stored.len(), JOBS);
        // Nothing is left to archive, and nothing is counted twice.
        assert_eq!(site.jobs.send(ArchiveOld { age: Duration::ZERO }).await.unwrap().unwrap(), 0);
    });
}

#[test]
fn a_job_submitted_while_its_dependency_ends_runs_once_that_end_is_stored() {
    use crate::jobs::{Dependency, GetJob, GetQueueInfo, Opcode, SubmitJob, WaitJobChange};
    use kiln_store::{JobStatus, Write};
    use std::sync::mpsc;
    let dir = tempfile::tempdir().unwrap();
    // The end of the first job is held on the store thread until the test
    // has submitted the second, so the second is admitted as waiting for a
    // job whose end is on its way to the disk.
    let (release, released) = mpsc::channel::<()>();
    let (holding, held) = tokio::sync::oneshot::channel::<()>();
    let mut holding = Some(holding);
    let hold_first_end = move |b: &kiln_store::Batch| {
        let ends_job_1 = b.iter().any(
            |w| matches!(w, Write::InsertJob(j) | Write::PutJob(j) | Write::UpdateJob(j) if j.id.0 == 1 && j.status == JobStatus::Success),
        );
        if ends_job_1 && let Some(holding) = holding.take() {
            let _ = holding.send(());
            released.recv_timeout(Duration::from_secs(30)).expect("the test lets the end go on");
        }
        None
    };
    actix::System::new().block_on(async {
        let site = hooked_site(dir.path(), 0, hold_first_end).await;
        let sleep = || vec![Opcode::Sleep { seconds: 0.0 }];
        // Not awaited: a job starts once admitted, and this one ends in the
        // same turn, so its end goes with its insert, and its
        // acknowledgement is held too.
        let submitted = actix::spawn(site.jobs.send(SubmitJob { ops: sleep(), priority: 0, depends: vec![] }));
        let first = kiln_store::JobId(1);
        // Ended as the queue sees it; its end is held before the disk.
        let held = tokio::time::timeout(Duration::from_secs(30), held).await;
        held.expect("the first job's end reaches the store in 30 s").unwrap();
        assert_eq!(site.jobs.send(GetJob(first)).await.unwrap().unwrap().status, JobStatus::Success);
        let depends = vec![Dependency { job: first, statuses: vec![] }];
        let second = site.jobs.send(SubmitJob { ops: sleep(), priority: 0, depends });
        let second = actix::spawn(second);
        // The queue handles messages in order: once this is answered, the
        // submission has been admitted (as waiting: the end is not stored).
        site.jobs.send(GetQueueInfo).await.unwrap();
        release.send(()).unwrap();
        assert_eq!(submitted.await.unwrap().unwrap().unwrap(), first);
        let second = second.await.unwrap().unwrap().unwrap();
        let mut after = 0;
        let mut status = JobStatus::Waiting;
        for _ in 0..100 {
            let wait = WaitJobChange { job: second, after_serial: after, timeout: Duration::from_secs(10) };
            let change = site.jobs.send(wait).await.unwrap().unwrap();
            after = change.log.last().map_or(after, |l| l.serial);
            status = change.status;
            if status.is_finished() || change.log.is_empty() {
                break;
            }
        }
        assert_eq!(status, JobStatus::Success, "the second job never left 'waiting'");
    });
}

#[test]
fn several_jobs_are_inserted_in_one_batch_and_a_refused_batch_leaves_none_of_them() {
    use crate::jobs::{GetJob, GetQueueInfo, JobRef, NewDependency, NewJob, Opcode, SubmitJobs};
    use kiln_store::{JobId, JobStatus, Write};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        // Records how many jobs each batch inserts; refuses the one that
        // inserts job 4, as a full disk would.
        let inserts = Arc::new(Mutex::new(Vec::new()));
        let seen = inserts.clone();
        let hook = move |b: &kiln_store::Batch| {
            let ids: Vec<u64> =
                b.iter().filter_map(|w| if let Write::InsertJob(j) = w { Some(j.id.0) } else { None }).collect();
            if !ids.is_empty() {
                seen.lock().unwrap().push(ids.len());
            }
            ids.contains(&4).then(|| kiln_store::StoreError::CommitFailed("database or disk is full".into()))
        };
        let site = hooked_site(dir.path(), 1, hook).await;
        let power =
            |action| vec![Opcode::Node { nodes: "demo1".into(), op: Op::Power(action), fanout: None, wait: true }];
        let after_previous = || vec![NewDependency { job: JobRef::Earlier(1), statuses: vec![JobStatus::Success] }];
        let jobs = vec![
            NewJob { ops: vec![Opcode::Sleep { seconds: 0.0 }], priority: 0, depends: vec![] },
            NewJob { ops: power(PowerAction::On), priority: 0, depends: after_previous() },
            NewJob { ops: vec![Opcode::Sleep { seconds: 0.0 }], priority: 0, depends: after_previous() },
        ];
        let ids = site.jobs.send(SubmitJobs(jobs)).await.unwrap().unwrap();
        assert_eq!(ids, [JobId(1), JobId(2), JobId(3)]);
        assert_eq!(inserts.lock().unwrap().as_slice(), [3], "one batch of three inserts");
        let second = site.jobs.send(GetJob(JobId(2))).await.unwrap().unwrap();
        assert_eq!(second.depends[0].job, JobId(1), "-1 is the job before");
        assert_eq!(until_ended(&site, JobId(3)).await.status, JobStatus::Success);
        let node = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert_eq!(node.power_state, Some(kiln_store::PowerState::On));

        // The next submission's batch is refused: none of its jobs is
        // known, none acted, and the queue goes on.
        let jobs = vec![
            NewJob { ops: power(PowerAction::Off), priority: 0, depends: vec![] },
            NewJob { ops: power(PowerAction::Off), priority: 0, depends: after_previous() },
        ];
        let error = site.jobs.send(SubmitJobs(jobs)).await.unwrap().unwrap_err().to_string();
        assert!(error.contains("database or disk is full"), "{error}");
        for id in [4, 5] {
            assert!(site.jobs.send(GetJob(JobId(id))).await.unwrap().is_err(), "job {id} is known");
        }
        let node = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert_eq!(node.power_state, Some(kiln_store::PowerState::On), "a refused job acted");
        let queue = site.jobs.send(GetQueueInfo).await.unwrap();
        assert_eq!((queue.running, queue.unfinished), (0, 0), "{queue:?}");
    });
}

/// A node that has waited for its callback for an hour, as a store left by
/// an earlier run would hold it.
fn an_hour_in_wait_call_back(name: &str) -> kiln_store::NodeRecord {
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut waiting = kiln_store::NodeRecord::enroll(name.into(), kiln_store::DriverKind::Fake, long_ago);
    waiting.provision_state = ProvisionState::WaitCallBack;
    waiting.target_provision_state = Some(ProvisionState::Active);
    waiting
}

/// A site started on a store that holds `records`.
async fn started_on(dir: &std::path::Path, records: Vec<kiln_store::NodeRecord>) -> Site {
    let store = kiln_store::StoreHandle::open_sqlite(&dir.join("kiln.sqlite")).unwrap();
    store.commit(records.into_iter().map(|n| kiln_store::Write::InsertNode(n.into())).collect()).await.unwrap();
    start_with_store(config(dir, 0, Duration::ZERO), store).await.unwrap()
}

#[test]
fn a_wait_that_timed_out_fails_the_node_unless_it_is_in_maintenance() {
    use crate::node::upkeep::{ExpireWait, WaitTimeouts};
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let mut waiting = an_hour_in_wait_call_back("w1");
        waiting.maintenance = true;
        let site = started_on(dir.path(), vec![waiting]).await;
        let node = site.registry.addr(site.registry.find("w1").unwrap().0).unwrap();
        let expire = || node.send(ExpireWait { timeouts: WaitTimeouts::all(Duration::from_secs(60)) });

        assert!(!expire().await.unwrap(), "in maintenance: left waiting");
        let v = site.supervisor.send(GetNode("w1".into())).await.unwrap().unwrap();
        assert_eq!(v.provision_state, ProvisionState::WaitCallBack);

        // Out of maintenance (which changes `updated_at`), it times out once
        // it has waited the timeout again.
        act(&site, "w1", Op::Maintenance { on: false, reason: None }, true).await.unwrap();
        assert!(!expire().await.unwrap(), "has not waited a minute since");
        assert!(node.send(ExpireWait { timeouts: WaitTimeouts::all(Duration::ZERO) }).await.unwrap());
        let v = site.supervisor.send(GetNode("w1".into())).await.unwrap().unwrap();
        assert_eq!(v.provision_state, ProvisionState::DeployFailed);
        assert!(v.last_error.as_deref().unwrap_or_default().contains("timed out in 'wait call-back'"), "{v:?}");
    });
}

#[test]
fn the_wait_timeout_task_wakes_a_node_at_rest_that_waits() {
    use crate::node::upkeep::WaitTimeouts;
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        // Adopted at start-up in a wait state, at rest: nothing has woken it.
        let idle = kiln_store::NodeRecord::enroll("idle".into(), kiln_store::DriverKind::Fake, chrono::Utc::now());
        let site = started_on(dir.path(), vec![an_hour_in_wait_call_back("w1"), idle]).await;
        let (idle, _) = site.registry.find("idle").unwrap();

        let expired = crate::periodic::expire_waits(&site.router(), WaitTimeouts::all(Duration::from_secs(60))).await;
        assert_eq!(expired, 1);
        let v = site.supervisor.send(GetNode("w1".into())).await.unwrap().unwrap();
        assert_eq!(v.provision_state, ProvisionState::DeployFailed);
        assert!(!site.registry.is_live(idle), "a node at rest in no wait state is not woken");
    });
}

#[test]
fn a_held_node_lets_in_only_its_holder_until_released() {
    use crate::node::{HoldNode, ReleaseNode, RunOpIn};
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let site = start(config(dir.path(), 1, Duration::ZERO)).await.unwrap();
        let node = site.registry.addr(site.registry.find("demo1").unwrap().0).unwrap();
        node.send(HoldNode { holder: "app".into() }).await.unwrap().unwrap();
        // Held again by the same holder: fine; by another: locked.
        node.send(HoldNode { holder: "app".into() }).await.unwrap().unwrap();
        let other = node.send(HoldNode { holder: "other".into() }).await.unwrap().unwrap_err();
        assert!(matches!(&other, KilnError::NodeLocked { holder_purpose, .. } if holder_purpose == "held by app"));
        // Anyone else's operation is refused; the holder's runs, and the
        // node stays held after it.
        let err = act(&site, "demo1", Op::Power(PowerAction::On), true).await.unwrap_err();
        assert!(matches!(err, KilnError::NodeLocked { .. }), "{err}");
        let run =
            |op| RunOpIn { run: RunOp { op, wait: true }, parent: tracing::Span::none(), holder: Some("app".into()) };
        let on = node.send(run(Op::Power(PowerAction::On))).await.unwrap().unwrap();
        assert_eq!(on.power_state, Some(kiln_store::PowerState::On));
        let v = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert_eq!(v.reservation.as_ref().map(|r| r.purpose.as_str()), Some("held by app"));
        // Only the holder releases it; then anyone may act again.
        assert!(!node.send(ReleaseNode { holder: "other".into() }).await.unwrap());
        assert!(node.send(ReleaseNode { holder: "app".into() }).await.unwrap());
        let v = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert_eq!(v.reservation, None);
        act(&site, "demo1", Op::Power(PowerAction::Off), true).await.unwrap();
    });
}

#[test]
fn a_node_opcode_ends_when_its_nodes_started_or_with_wait_when_they_settled() {
    use crate::jobs::{GetJob, Opcode, SubmitJob, WaitJobChange};
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let site = two_available_demo1_slow(dir.path()).await;
        let run = |nodes: &str, wait: bool| {
            let ops = vec![Opcode::Node { nodes: nodes.into(), op: Op::Verb(Verb::Deploy), fanout: None, wait }];
            let site = &site;
            async move {
                let job = site.jobs.send(SubmitJob { ops, priority: 0, depends: vec![] }).await.unwrap().unwrap();
                let mut after = 0;
                loop {
                    let poll = WaitJobChange { job, after_serial: after, timeout: Duration::from_secs(30) };
                    let change = site.jobs.send(poll).await.unwrap().unwrap();
                    if change.status.is_finished() {
                        return site.jobs.send(GetJob(job)).await.unwrap().unwrap();
                    }
                    after = change.log.last().map_or(after, |e| e.serial);
                }
            }
        };
        // demo1's BMC answers in a minute: without `wait` the job ends once
        // its deploy started, and says where the node was then.
        let started = run("demo1", false).await;
        assert_eq!(started.status, kiln_store::JobStatus::Success, "{started:?}");
        assert_eq!(started.ops[0].results[0].provision_state.as_deref(), Some("deploying"));
        let settled = run("demo2", true).await;
        assert_eq!(settled.status, kiln_store::JobStatus::Success, "{settled:?}");
        assert_eq!(settled.ops[0].results[0].provision_state.as_deref(), Some("active"));
    });
}

/// A site on a [`crate::clock::ManualClock`], with `lock_wait`.
async fn site_on(clock: &crate::clock::ManualClock, dir: &std::path::Path, lock_wait: Duration) -> Site {
    start(SiteConfig { clock: clock.shared(), ..config(dir, 1, lock_wait) }).await.unwrap()
}

/// Lets the actors run until `clock` has `n` sleeps under way: a timer is
/// set before the test moves the clock past it. Yields, never sleeps.
async fn until_sleeping(clock: &crate::clock::ManualClock, n: usize) {
    for _ in 0..1_000_000 {
        if clock.sleepers() == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("expected {n} sleeps on the clock, found {}", clock.sleepers());
}

#[test]
fn lock_wait_runs_out_on_the_site_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = crate::clock::ManualClock::starting_at(chrono::Utc::now());
    actix::System::new().block_on(async {
        let site = site_on(&clock, dir.path(), Duration::from_secs(600)).await;
        act(&site, "demo1", slow(600_000), true).await.unwrap();
        act(&site, "demo1", Op::Power(PowerAction::On), false).await.unwrap();
        let waiting = site.supervisor.send(NodeAction { node: "demo1".into(), op: Op::Verb(Verb::Manage), wait: true });
        let waiting = tokio::task::spawn_local(waiting);
        until_sleeping(&clock, 1).await;

        clock.advance(Duration::from_secs(599));
        assert_eq!(clock.sleepers(), 1, "still waiting a second before lock_wait");
        clock.advance(Duration::from_secs(1));
        match waiting.await.unwrap().unwrap() {
            Err(KilnError::NodeLocked { holder_purpose, .. }) => assert_eq!(holder_purpose, "power on"),
            other => panic!("expected NodeLocked, got {other:?}"),
        }
    });
}

#[test]
fn the_router_and_the_supervisors_messages_answer_alike() {
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let site = start(config(dir.path(), 3, Duration::ZERO)).await.unwrap();
        let router = site.router();
        let bulk = |nodes: &str| BulkAction { nodes: nodes.into(), op: Op::Verb(Verb::Manage), wait: true, fanout: 2 };
        let by_router = router.bulk_action(bulk("demo[1-2]")).await.unwrap();
        let by_message = site.supervisor.send(bulk("demo3")).await.unwrap().unwrap();
        for r in by_router.iter().chain(&by_message) {
            assert!(r.ok && r.error.is_none(), "{r:?}");
            assert_eq!(r.provision_state.as_deref(), Some("manageable"));
        }
        // Refusals keep their words on either path.
        let refused = router.get_node(GetNode("nope".into())).await.unwrap_err();
        let sent = site.supervisor.send(GetNode("nope".into())).await.unwrap().unwrap_err();
        assert_eq!(refused.to_string(), sent.to_string());
        assert_eq!(refused.to_string(), "no such node: nope");
        // A node deleted through the router leaves the registry.
        let deleted = router.delete_nodes(DeleteNodes("demo3".into())).await.unwrap();
        assert!(deleted[0].ok, "{deleted:?}");
        assert!(site.registry.find("demo3").is_none());
        let listed = router.list_nodes(ListNodes::default()).await.unwrap();
        assert_eq!(listed.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["demo1", "demo2"]);
    });
}

#[test]
fn the_job_long_poll_and_the_sleep_opcode_wait_on_the_site_clock() {
    use crate::jobs::{Opcode, SubmitJob, WaitJobChange};
    let dir = tempfile::tempdir().unwrap();
    let clock = crate::clock::ManualClock::starting_at(chrono::Utc::now());
    actix::System::new().block_on(async {
        let site = site_on(&clock, dir.path(), Duration::ZERO).await;
        let ops = vec![Opcode::Sleep { seconds: 3600.0 }];
        let job = site.jobs.send(SubmitJob { ops, priority: 0, depends: vec![] }).await.unwrap().unwrap();
        until_sleeping(&clock, 1).await;
        let now = WaitJobChange { job, after_serial: 0, timeout: Duration::ZERO };
        let after = site.jobs.send(now).await.unwrap().unwrap().log.last().map_or(0, |l| l.serial);

        // A poll of 30 s answers after 30 s on the clock, with nothing new.
        let poll = site.jobs.send(WaitJobChange { job, after_serial: after, timeout: Duration::from_secs(30) });
        let poll = tokio::task::spawn_local(poll);
        until_sleeping(&clock, 2).await;
        clock.advance(Duration::from_secs(29));
        assert_eq!(clock.sleepers(), 2, "the poll waits a second more");
        clock.advance(Duration::from_secs(1));
        let change = poll.await.unwrap().unwrap().unwrap();
        assert!(change.log.is_empty());
        assert!(!change.status.is_finished(), "{:?}", change.status);

        // The sleep ends when the clock reaches its end; the poll sees it.
        let poll = site.jobs.send(WaitJobChange { job, after_serial: after, timeout: Duration::from_secs(7200) });
        let poll = tokio::task::spawn_local(poll);
        until_sleeping(&clock, 2).await;
        clock.advance(Duration::from_secs(3570));
        let mut after = after;
        let mut status = poll.await.unwrap().unwrap().unwrap().status;
        while !status.is_finished() {
            let wait = WaitJobChange { job, after_serial: after, timeout: Duration::from_secs(7200) };
            let change = site.jobs.send(wait).await.unwrap().unwrap();
            after = change.log.last().map_or(after, |l| l.serial);
            status = change.status;
        }
        assert_eq!(status, kiln_store::JobStatus::Success);
    });
}

#[test]
fn a_site_on_one_thread_and_a_site_on_its_own_threads_both_run_tasks() {
    for threads in [crate::threads::Threads::One, crate::threads::Threads::Split] {
        let dir = tempfile::tempdir().unwrap();
        actix::System::new().block_on(async {
            let site = start(SiteConfig { threads, ..config(dir.path(), 1, Duration::ZERO) }).await.unwrap();
            assert_eq!(site.own_threads(), threads == crate::threads::Threads::Split);
            act(&site, "demo1", Op::Verb(Verb::Manage), true).await.unwrap();
            act(&site, "demo1", Op::Verb(Verb::Provide), true).await.unwrap();
            let v = act(&site, "demo1", Op::Verb(Verb::Deploy), true).await.unwrap();
            assert_eq!(v.provision_state, ProvisionState::Active, "{threads:?}");
            assert_eq!(v.power_state, Some(kiln_store::PowerState::On), "{threads:?}");
        });
    }
}

#[test]
fn new_nodes_and_ports_are_stamped_by_the_site_clock() {
    let dir = tempfile::tempdir().unwrap();
    let at: chrono::DateTime<chrono::Utc> = "2001-02-03T04:05:06Z".parse().unwrap();
    let clock = clock::ManualClock::starting_at(at);
    actix::System::new().block_on(async {
        let config = SiteConfig { clock: std::sync::Arc::new(clock), ..config(dir.path(), 0, Duration::ZERO) };
        let site = start(config).await.unwrap();
        let new = NewNode { name: "n1".into(), driver: "fake".into(), ..Default::default() };
        let created = site.supervisor.send(CreateNodes(vec![new])).await.unwrap().unwrap();
        assert_eq!(created[0].created_at, at);
        let port = CreatePort { address: "52:54:00:00:00:01".into(), node: "n1".into() };
        let port = site.router().create_port(port).await.unwrap();
        assert_eq!(port.created_at, at.to_rfc3339());
    });
}

#[test]
fn an_archive_wave_forgets_another_members_ended_jobs_instead_of_trying_them_again() {
    use crate::jobs::{ArchiveOld, GetQueueInfo, Opcode, SubmitJob};
    use kiln_store::{JobId, StoreError, Write};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        // Job 1 is refused as another member's would be on a shared store.
        let tries = Arc::new(Mutex::new(0));
        let counted = tries.clone();
        let hook = move |b: &kiln_store::Batch| {
            b.iter().any(|w| matches!(w, Write::ArchiveJob(JobId(1)))).then(|| {
                *counted.lock().unwrap() += 1;
                StoreError::Fenced("job 1 is run by another member; this write was refused".into())
            })
        };
        let site = hooked_site(dir.path(), 0, hook).await;
        for _ in 0..2 {
            let ops = vec![Opcode::Sleep { seconds: 0.0 }];
            site.jobs.send(SubmitJob { ops, priority: 0, depends: vec![] }).await.unwrap().unwrap();
        }
        until_ended(&site, JobId(2)).await;
        assert_eq!(site.jobs.send(ArchiveOld { age: Duration::ZERO }).await.unwrap().unwrap(), 1);
        assert_eq!(*tries.lock().unwrap(), 1);
        let info = site.jobs.send(GetQueueInfo).await.unwrap();
        assert!(info.by_status.is_empty(), "forgotten here: {:?}", info.by_status);
        assert_eq!(site.jobs.send(ArchiveOld { age: Duration::ZERO }).await.unwrap().unwrap(), 0);
        assert_eq!(*tries.lock().unwrap(), 1, "not tried again");
    });
}

/// Polls `cond` (bounded: 10 s) while the actors run; panics naming `what`.
async fn until_true(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10 s");
}

#[test]
fn a_node_with_nothing_to_do_goes_to_rest_and_its_next_message_wakes_it() {
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let mut cfg = config(dir.path(), 2, Duration::from_secs(10));
        cfg.node_rest_after = Some(Duration::from_millis(20));
        let site = start(cfg).await.unwrap();
        let (id, _) = site.registry.find("demo1").unwrap();
        assert_eq!(site.metrics.node_actors(), 0, "a site starts with every node at rest");
        let v = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert_eq!(v.provision_state, ProvisionState::Enroll);
        assert!(!site.registry.is_live(id), "reading a node at rest starts no actor");

        let v = act(&site, "demo1", Op::Verb(Verb::Manage), true).await.unwrap();
        assert_eq!(v.provision_state, ProvisionState::Manageable);
        until_true("demo1 at rest", || !site.registry.is_live(id)).await;
        let v = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert_eq!(v.provision_state, ProvisionState::Manageable, "the record at rest is the last one");
        assert_eq!(site.metrics.nodes_in(ProvisionState::Manageable), 1);
        assert_eq!(site.metrics.nodes_in(ProvisionState::Enroll), 1);

        // Rounds of requests sent in order while the node goes to rest and
        // wakes again and again: every one answered, in the order sent
        // (maintenance on, then off: off last), by one actor at a time.
        let router = site.router();
        for round in 0..40 {
            let reason = Some(format!("round {round}"));
            let on = router.run(id, Op::Maintenance { on: true, reason }, true);
            let off = router.run(id, Op::Maintenance { on: false, reason: None }, true);
            let power = router.run(id, Op::Power(PowerAction::On), true);
            let (on, off, power) = futures::join!(on, off, power);
            assert!(on.unwrap().maintenance, "round {round}: on first");
            assert!(!off.unwrap().maintenance, "round {round}: then off");
            power.unwrap();
            if round % 4 == 0 {
                until_true("demo1 at rest again", || !site.registry.is_live(id)).await;
            }
        }
        let v = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert!(!v.maintenance && v.reservation.is_none());
        let history = site.store.read(move |b| b.load_history(id, usize::MAX)).await.unwrap();
        let powered = history.iter().filter(|h| h.event.starts_with("power")).count();
        assert_eq!(powered, 40, "every power request ran once: {history:?}");
        until_true("demo1 at rest at the end", || !site.registry.is_live(id)).await;
        assert_eq!(site.metrics.nodes_in(ProvisionState::Manageable), 1, "counted once through it all");
        assert_eq!(site.metrics.nodes_in_maintenance(), 0);
        assert_eq!(site.metrics.nodes_reserved(), 0);
        assert_eq!(site.metrics.node_actors(), 0, "every actor that went to rest stopped");
    });
}

#[test]
fn a_site_shutting_down_closes_a_node_woken_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    actix::System::new().block_on(async {
        let site = start(config(dir.path(), 1, Duration::ZERO)).await.unwrap();
        site.registry.close("the daemon is stopping");
        let err = act(&site, "demo1", Op::Verb(Verb::Manage), true).await.unwrap_err();
        assert!(err.to_string().contains("the daemon is stopping"), "{err}");
        let v = site.supervisor.send(GetNode("demo1".into())).await.unwrap().unwrap();
        assert_eq!(v.provision_state, ProvisionState::Enroll, "nothing ran");
    });
}
