//! The job queue actor: Ganeti's job queue over the store's group commit.
//!
//! It assigns serial ids, commits each submission before acknowledging it,
//! orders runnable jobs by (priority, id), holds jobs whose dependencies have
//! not ended, runs at most `max_running` jobs at once, and keeps each job's
//! log for the long poll. Only jobs that have not ended are kept whole in
//! memory; an ended job is a status and a time here, and whole in the store.
//!
//! A submission of several jobs ([`SubmitJobs`], Ganeti's SubmitManyJobs)
//! is checked whole before any id is given out and stored as one batch, so
//! it is one commit and all or nothing; its jobs may depend on each other
//! by position. `max_queued_jobs` bounds the jobs that have not ended (their
//! memory is here), and the drain flag refuses every submission.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use kiln_store::{JobId, JobLogEntry, JobStatus, LogLevel, NodeId, StoreHandle, Timestamp, Write};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::ended::EndedJobs;
use super::model::*;
use crate::KilnError;
use crate::node::Op;
use crate::supervisor::{FanOutControl, Router};

/// The key the drain flag is stored under.
const DRAIN_KEY: &str = "queue_drained";

/// At most this many failed nodes get a line of their own in a job's log.
const MAX_NODE_LOG_LINES: usize = 100;

/// A job that has not ended.
struct ActiveJob {
    view: JobView,
    /// Nodes this job holds (its `hold` opcodes), released when it ends.
    held: Vec<NodeId>,
    /// The status as last committed: what watchers see. `view.status` runs
    /// ahead of it while a commit is in flight, and a watcher told "ended"
    /// before the end's log line is committed would stop without it.
    committed_status: JobStatus,
    /// Every log line written (handed to a commit), oldest first: a commit
    /// carries the whole log, so one built while another is in flight still
    /// holds that one's lines.
    log: Vec<JobLogEntry>,
    /// How many of `log` are committed: what watchers see.
    committed: usize,
    control: FanOutControl,
    /// Nodes in the running node-set opcode.
    progress_total: u64,
    watchers: Vec<(u64, oneshot::Sender<JobChange>)>,
    /// Log lines to commit with the job's next change.
    /// With the time a line was made, when that is not the commit's (a
    /// sleep's start line waits for the sleep's end to be committed).
    pending: Vec<(LogLevel, String, Option<Timestamp>)>,
}

impl ActiveJob {
    /// Appends `lines` to the log with the next serials. Serials are handed
    /// out when a line is written, not when its commit lands, so two commits
    /// in flight for one job never claim the same serial. Lines written
    /// together are committed together, and carry that one time.
    fn write_lines(&mut self, lines: Vec<(LogLevel, String, Option<Timestamp>)>) {
        let first = self.log.last().map_or(1, |e| e.serial + 1);
        let (job, now) = (self.view.id, Utc::now());
        self.log.extend(lines.into_iter().zip(first..).map(|((level, message, at), serial)| JobLogEntry {
            job,
            serial,
            at: at.unwrap_or(now),
            level,
            message,
        }));
    }

    /// The view with the committed log: what `kiln job show` prints.
    fn shown(&self) -> JobView {
        JobView { log: Some(self.log[..self.committed].to_vec()), ..self.view.clone() }
    }

    fn change_after(&self, after: u64) -> JobChange {
        JobChange {
            id: self.view.id,
            status: self.committed_status,
            log: self.log[..self.committed].iter().filter(|e| e.serial > after).cloned().collect(),
            progress: (self.view.status == JobStatus::Running && self.progress_total > 0)
                .then(|| (self.control.done.load(Ordering::Relaxed), self.progress_total)),
        }
    }
}

/// The job queue.
pub struct JobQueue {
    store: StoreHandle,
    router: Router,
    /// Boxed: a job leaves the map from its oldest end, and a B-tree
    /// removal shifts the node's other entries, a few hundred bytes each
    /// unboxed (`memmove` was a twentieth of the actor thread per job).
    active: BTreeMap<JobId, Box<ActiveJob>>,
    /// Jobs that have ended, live or archived: a status and a time each.
    ended: EndedJobs,
    runnable: BTreeSet<(i32, JobId)>,
    waiting: BTreeSet<JobId>,
    /// The waiting jobs by a job they wait for (under each such job), so
    /// that a job's end looks at its own dependents only: walking every
    /// waiting job at every end made 10,000 waiting jobs slow the whole
    /// queue from 57,000 to 1,000 jobs a second. Entries for jobs that
    /// have since left `waiting` are skipped when read.
    dependents: BTreeMap<JobId, Vec<JobId>>,
    next_id: u64,
    drained: bool,
    running: usize,
    max_running: usize,
    /// At most this many jobs that have not ended (`active`).
    max_queued: usize,
    metrics: Arc<crate::metrics::Metrics>,
    /// Set by [`StopStarting`] (a graceful shutdown): no job and no opcode
    /// starts any more; the reason goes into the jobs cut short.
    stopping: Option<String>,
}

impl Actor for JobQueue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Jobs recovered from the store may be runnable at once.
        self.promote_waiting(ctx);
        self.schedule(ctx);
    }
}

/// Why a dependency does or does not let a job run.
enum DepState {
    Met,
    Pending,
    Failed(String),
}

/// The span a job's work runs in: every log line of the job carries its id.
fn job_span(id: JobId) -> tracing::Span {
    tracing::info_span!("job", job = %id)
}

impl JobQueue {
    /// Loads the queue from the store and applies the restart rule: a job
    /// that was running is marked `error` ("daemon restarted while running");
    /// queued and waiting jobs will run, except one whose stored body cannot
    /// be read, which is marked `error` saying so and never acts on a node.
    pub async fn load(store: StoreHandle, router: Router, max_running: usize) -> Result<JobQueue, KilnError> {
        let drained = store.read(|b| b.load_meta(DRAIN_KEY)).await?.as_deref() == Some("true");
        let last = store.read(|b| b.max_job_id()).await?;
        let live = store.read(|b| b.load_live_queue()).await?;
        let mut q = JobQueue {
            store: store.clone(),
            router,
            active: BTreeMap::new(),
            ended: EndedJobs::default(),
            runnable: BTreeSet::new(),
            waiting: BTreeSet::new(),
            dependents: BTreeMap::new(),
            next_id: last + 1,
            drained,
            running: 0,
            max_running: max_running.max(1),
            max_queued: usize::MAX,
            metrics: Default::default(),
            stopping: None,
        };
        let mut repairs = Vec::new();
        let now = Utc::now();
        for end in live.ended {
            q.ended.ended(end.id, end.status, end.ended_at.unwrap_or(now));
        }
        for r in live.unfinished {
            let (mut view, unreadable) = JobView::decode(&r, false);
            let cut_short = matches!(r.status, JobStatus::Running | JobStatus::Canceling)
                .then(|| "daemon restarted while running".to_string());
            if let Some(why) = unreadable.or(cut_short) {
                for op in view.ops.iter_mut().filter(|o| !o.status.is_finished()) {
                    op.status = JobStatus::Error;
                    op.ended_at = Some(now);
                    op.error = Some(why.clone());
                }
                view.status = JobStatus::Error;
                view.ended_at = Some(now);
                view.error = Some(why.clone());
                let mut log = r.log.clone();
                let serial = log.last().map_or(1, |e| e.serial + 1);
                log.push(JobLogEntry { job: r.id, serial, at: now, level: LogLevel::Error, message: why });
                repairs.push(vec![Write::PutJob(view.to_record(log))]);
            }
            if view.status.is_finished() {
                let at = view.ended_at.unwrap_or(now);
                q.ended.ended(view.id, view.status, at);
                continue;
            }
            let id = view.id;
            let log = r.log;
            q.active.insert(
                id,
                Box::new(ActiveJob {
                    committed_status: view.status,
                    view,
                    committed: log.len(),
                    log,
                    control: FanOutControl::default(),
                    held: Vec::new(),
                    progress_total: 0,
                    watchers: Vec::new(),
                    pending: Vec::new(),
                }),
            );
            q.hold(id);
        }
        for batch in repairs {
            store.commit(batch).await?;
        }
        // Dependencies on archived jobs: learn their final status once.
        let unknown: BTreeSet<JobId> = q
            .active
            .values()
            .flat_map(|j| j.view.depends.iter().map(|d| d.job))
            .filter(|id| !q.active.contains_key(id) && !q.ended.contains(*id))
            .collect();
        for id in unknown {
            if let Some((r, _)) = store.read(move |b| b.load_job(id)).await? {
                q.ended.found_archived(id, r.status, r.ended_at.unwrap_or(now));
            }
        }
        Ok(q)
    }

    /// Refuses submissions that would leave more than `limit` jobs not
    /// ended (`max_queued_jobs`; unlimited unless set).
    pub fn with_max_queued(mut self, limit: usize) -> Self {
        self.max_queued = limit.max(1);
        self
    }

    /// Counts the queue's work in `metrics` (the daemon's and an embedding
    /// application's site do this; a queue built alone counts for nobody).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self.report_depth();
        self
    }

    /// Publishes how many jobs are queued, waiting and running.
    fn report_depth(&self) {
        self.metrics.job_queue(self.runnable.len(), self.waiting.len(), self.running);
    }

    fn dep_state(&self, dep: &Dependency) -> DepState {
        match self.ended.get(dep.job) {
            Some((status, _)) if dep.statuses.is_empty() || dep.statuses.contains(&status) => DepState::Met,
            Some((status, _)) => DepState::Failed(format!(
                "dependency on job {} cannot be met: it ended as {status}, not {}",
                dep.job,
                dep.statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ")
            )),
            None if self.active.contains_key(&dep.job) => DepState::Pending,
            None => DepState::Failed(format!("dependency on job {} cannot be met: no such job", dep.job)),
        }
    }

    /// Where a job with these dependencies stands now.
    fn deps_state(&self, deps: &[Dependency]) -> DepState {
        let mut pending = false;
        for d in deps {
            match self.dep_state(d) {
                DepState::Met => {}
                DepState::Pending => pending = true,
                failed @ DepState::Failed(_) => return failed,
            }
        }
        if pending { DepState::Pending } else { DepState::Met }
    }

    /// Puts a job among the waiting, under every job it waits for that
    /// has not ended.
    fn hold(&mut self, id: JobId) {
        let Some(job) = self.active.get(&id) else { return };
        for dep in &job.view.depends {
            if !self.ended.contains(dep.job) {
                self.dependents.entry(dep.job).or_default().push(id);
            }
        }
        self.waiting.insert(id);
    }

    /// The jobs that waiting jobs depend on: an archived one among them
    /// stays known, so its dependents need not ask the store again.
    fn waited_for(&self) -> BTreeSet<JobId> {
        let waiting = self.waiting.iter().filter_map(|id| self.active.get(id));
        waiting.flat_map(|job| job.view.depends.iter().map(|d| d.job)).collect()
    }

    /// Looks at every waiting job once (at start, when jobs come back from
    /// the store); later, a job's end looks at its own dependents only.
    fn promote_waiting(&mut self, ctx: &mut Context<Self>) {
        let ids: Vec<JobId> = self.waiting.iter().copied().collect();
        for id in ids {
            self.recheck(id, ctx);
        }
        self.report_depth();
    }

    /// Moves a waiting job on if its dependencies allow: to the run queue
    /// when they are met, to `error` when one cannot be.
    fn recheck(&mut self, id: JobId, ctx: &mut Context<Self>) {
        if !self.waiting.contains(&id) {
            return;
        }
        let Some(job) = self.active.get(&id) else { return };
        match self.deps_state(&job.view.depends) {
            DepState::Pending => {
                if job.view.status != JobStatus::Waiting {
                    self.set_status(id, JobStatus::Waiting, LogLevel::Info, "waiting for dependencies".into(), ctx);
                }
            }
            DepState::Met => {
                self.waiting.remove(&id);
                self.runnable.insert((job.view.priority, id));
                if job.view.status != JobStatus::Queued {
                    self.set_status(id, JobStatus::Queued, LogLevel::Info, "dependencies met; queued".into(), ctx);
                }
            }
            DepState::Failed(why) => {
                self.waiting.remove(&id);
                self.finish(id, JobStatus::Error, Some(why), ctx);
            }
        }
    }

    /// Starts runnable jobs while there is room.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        while self.running < self.max_running && self.stopping.is_none() {
            let Some((_, id)) = self.runnable.pop_first() else { break };
            let Some(job) = self.active.get_mut(&id) else { continue };
            self.running += 1;
            job.view.status = JobStatus::Running;
            let now = Utc::now();
            job.view.started_at = Some(now);
            self.metrics.job_started((now - job.view.submitted_at).to_std().unwrap_or_default());
            job_span(id).in_scope(|| tracing::info!(opcodes = job.view.ops.len(), "job started"));
            self.run_op(id, 0, ctx);
        }
        self.report_depth();
    }

    /// Commits the job's current view with its pending log lines and
    /// `message`, in one batch, then wakes its watchers and calls `then`
    /// with why the commit failed, if it did.
    fn commit_job<F>(&mut self, id: JobId, message: (LogLevel, String), ctx: &mut Context<Self>, then: F)
    where
        F: FnOnce(&mut Self, &mut Context<Self>, Option<String>) + 'static,
    {
        let Some(job) = self.active.get_mut(&id) else { return };
        let mut lines = std::mem::take(&mut job.pending);
        lines.push((message.0, message.1, None));
        let status = job.view.status;
        job.write_lines(lines);
        let written = job.log.len();
        let batch = vec![Write::UpdateJob(job.view.to_record(job.log.clone()))];
        let stored = self.store.send(batch);
        ctx.spawn(stored.into_actor(self).map(move |res, act, ctx| {
            let failure = match res {
                Ok(()) => {
                    if let Some(job) = act.active.get_mut(&id) {
                        job.committed = job.committed.max(written);
                        job.committed_status = status;
                        wake(job);
                    }
                    None
                }
                Err(e) => {
                    tracing::error!(job = %id, error = %e, "cannot commit a job change");
                    Some(e.to_string())
                }
            };
            then(act, ctx, failure)
        }));
    }

    fn set_status(&mut self, id: JobId, status: JobStatus, level: LogLevel, message: String, ctx: &mut Context<Self>) {
        if let Some(job) = self.active.get_mut(&id) {
            job.view.status = status;
        }
        self.commit_job(id, (level, message), ctx, |_, _, _| {});
    }

    /// Runs opcode `idx` of a running job, then the next.
    fn run_op(&mut self, id: JobId, idx: usize, ctx: &mut Context<Self>) {
        let Some(job) = self.active.get_mut(&id) else { return };
        if job.control.cancel.load(Ordering::Relaxed) {
            return self.finish(id, JobStatus::Canceled, Some("canceled".into()), ctx);
        }
        let total = job.view.ops.len();
        if idx >= total {
            return self.finish(id, JobStatus::Success, None, ctx);
        }
        if let Some(why) = &self.stopping {
            let error = format!("{why}: opcode {}/{total} was not started", idx + 1);
            return self.finish(id, JobStatus::Error, Some(error), ctx);
        }
        let op = &mut job.view.ops[idx];
        let started = Utc::now();
        op.status = JobStatus::Running;
        op.started_at = Some(started);
        let opcode = op.opcode.clone();
        let message = format!("opcode {}/{total} started: {}", idx + 1, opcode.summary());
        if opcode.has_side_effects() {
            // Durable before it acts: after a crash the job is `error`, never
            // run twice. A start that could not be stored does not act at all.
            self.commit_job(id, (LogLevel::Info, message), ctx, move |act, ctx, failure| match failure {
                None => act.execute(id, idx, opcode, ctx),
                Some(why) => {
                    let error = format!("opcode {}/{total} did not run: its start could not be stored: {why}", idx + 1);
                    act.finish(id, JobStatus::Error, Some(error), ctx)
                }
            });
        } else {
            // Nothing to protect: the start goes out with the opcode's end,
            // one commit fewer per opcode (a crash in between reruns it).
            job.pending.push((LogLevel::Info, message, Some(started)));
            self.execute(id, idx, opcode, ctx);
        }
    }

    fn execute(&mut self, id: JobId, idx: usize, opcode: Opcode, ctx: &mut Context<Self>) {
        let Some(job) = self.active.get_mut(&id) else { return };
        let control = job.control.clone();
        control.done.store(0, Ordering::Relaxed);
        let router = self.router.clone();
        let span = job_span(id);
        match opcode {
            // A zero sleep ends in this turn: no timer, no task, and the
            // job's end goes to the store right behind its insert.
            Opcode::Sleep { seconds } if seconds <= 0.0 => self.op_done(id, idx, Vec::new(), None, ctx),
            Opcode::Sleep { seconds } => {
                let wait = async move { control.sleep_unless_canceled(Duration::from_secs_f64(seconds)).await }
                    .instrument(span);
                ctx.spawn(wait.into_actor(self).map(move |canceled, act, ctx| {
                    let error = canceled.then(|| "canceled during the sleep".to_string());
                    act.op_done(id, idx, Vec::new(), error, ctx)
                }));
            }
            Opcode::Exec { nodes, spec } => {
                let router = router.clone();
                let fut = async move {
                    let targets = crate::exec::targets(&router, &nodes).await?;
                    Ok::<_, KilnError>(crate::exec::run(&spec, targets).await)
                }
                .instrument(span);
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
                    Ok(outcomes) => {
                        let results = outcomes.iter().map(NodeResult::of_exec).collect();
                        act.op_done(id, idx, results, None, ctx)
                    }
                    Err(e) => act.op_done(id, idx, Vec::new(), Some(e.to_string()), ctx),
                }));
            }
            Opcode::Hold { nodes } => {
                let nodes = match router.registry.resolve(&nodes) {
                    Ok(n) => n,
                    Err(e) => return self.op_done(id, idx, Vec::new(), Some(e.to_string()), ctx),
                };
                job.progress_total = nodes.len() as u64;
                let fanout = router.registry.live.default_fanout();
                let fut = async move {
                    let holder = holder_name(id);
                    router
                        .fan_out_with(nodes, fanout, &control, |r, node| {
                            let holder = holder.clone();
                            async move { r.hold(node, &holder).await }
                        })
                        .await
                }
                .instrument(span);
                ctx.spawn(fut.into_actor(self).map(move |outcomes, act, ctx| {
                    // Every node held is remembered, even when others failed:
                    // the job's end releases them all.
                    if let Some(job) = act.active.get_mut(&id) {
                        for o in outcomes.iter().filter_map(|o| o.result.as_ref().ok()) {
                            job.held.push(o.uuid);
                        }
                    }
                    let results = outcomes.iter().map(|o| NodeResult::of(o.node.clone(), &o.result)).collect();
                    act.op_done(id, idx, results, None, ctx)
                }));
            }
            Opcode::Node { nodes, op, fanout } => {
                let resolved = router.registry.resolve(&nodes);
                let nodes = match resolved {
                    Ok(n) => n,
                    Err(e) => return self.op_done(id, idx, Vec::new(), Some(e.to_string()), ctx),
                };
                job.progress_total = nodes.len() as u64;
                // One default for every way an opcode comes: the site's
                // `default_fanout` as it is when the opcode starts.
                let fanout = fanout.map(|f| f as usize).unwrap_or_else(|| router.registry.live.default_fanout());
                let fut = async move {
                    // As the job: a node the job holds lets it in.
                    let holder = holder_name(id);
                    let outcomes = router
                        .fan_out_with(nodes, fanout, &control, |r, node| {
                            let (op, holder): (Op, &str) = (op.clone(), &holder);
                            async move { r.run_for(node, op, true, Some(holder)).await }
                        })
                        .await;
                    let mut results = Vec::with_capacity(outcomes.len());
                    for o in &outcomes {
                        let mut result = NodeResult::of(o.node.clone(), &o.result);
                        // A node that failed shows the state it is in now
                        // (its failed state, or where a lock kept it), not
                        // `-`: a shared read, answered at once.
                        if !result.ok
                            && result.provision_state.is_none()
                            && result.error_kind.as_deref() != Some("canceled")
                            && let Some((node, _)) = router.registry.find(&o.node)
                            && let Ok(now) = router.show(node).await
                        {
                            result.provision_state = Some(now.provision_state.to_string());
                            result.power_state = now.power_state.map(|p| p.to_string());
                        }
                        results.push(result);
                    }
                    results
                }
                .instrument(span);
                ctx.spawn(fut.into_actor(self).map(move |results, act, ctx| act.op_done(id, idx, results, None, ctx)));
            }
        }
    }

    /// An opcode ended: record its results, then go on, or end the job.
    fn op_done(
        &mut self,
        id: JobId,
        idx: usize,
        results: Vec<NodeResult>,
        error: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let Some(job) = self.active.get_mut(&id) else { return };
        if job.view.status.is_finished() {
            // Ended meanwhile (abandoned at shutdown): the result comes too late.
            return;
        }
        job.progress_total = 0;
        // Nodes a cancel kept from starting did not fail: they are counted
        // and named apart.
        let not_started = |r: &&NodeResult| r.error_kind.as_deref() == Some("canceled");
        let failed: Vec<&NodeResult> = results.iter().filter(|r| !r.ok && !not_started(r)).collect();
        let skipped: Vec<&str> = results.iter().filter(not_started).map(|r| r.node.as_str()).collect();
        let total = results.len();
        let error = error.or_else(|| match (failed.len(), skipped.len()) {
            (0, 0) => None,
            (f, 0) => Some(format!("{f} of {total} nodes failed")),
            (0, s) => Some(format!("{s} of {total} nodes not started")),
            (f, s) => Some(format!("{f} of {total} nodes failed, {s} not started")),
        });
        job_span(id).in_scope(|| {
            for r in failed.iter().take(MAX_NODE_LOG_LINES) {
                let error = r.error.as_deref().unwrap_or("failed");
                tracing::warn!(opcode = idx + 1, node_name = %r.node, error, "node failed");
            }
        });
        let mut lines: Vec<(LogLevel, String, Option<Timestamp>)> =
            failed.iter().take(MAX_NODE_LOG_LINES).map(|r| (LogLevel::Warning, node_failure(r), None)).collect();
        if !skipped.is_empty() {
            let set = crate::nodeset::NodeSet::from_names(skipped.iter().copied()).fold();
            lines.push((LogLevel::Warning, format!("nodes not started (the job was canceled): {set}"), None));
        }
        let canceled = job.control.cancel.load(Ordering::Relaxed);
        let op = &mut job.view.ops[idx];
        op.results = results;
        op.ended_at = Some(Utc::now());
        op.status = match (&error, canceled) {
            (None, _) => JobStatus::Success,
            (Some(_), true) => JobStatus::Canceled,
            (Some(_), false) => JobStatus::Error,
        };
        op.error = error.clone();
        lines.push(match (&error, canceled) {
            (None, _) => (LogLevel::Info, format!("opcode {} succeeded", idx + 1), None),
            (Some(e), true) => (LogLevel::Warning, format!("opcode {} canceled: {e}", idx + 1), None),
            (Some(e), false) => (LogLevel::Error, format!("opcode {} failed: {e}", idx + 1), None),
        });
        // The lines go out with the next commit (the next opcode's start or
        // the job's end): one commit per opcode boundary.
        job.pending.extend(lines);
        match error {
            _ if canceled => self.finish(id, JobStatus::Canceled, Some("canceled".into()), ctx),
            Some(e) => self.finish(id, JobStatus::Error, Some(e), ctx),
            None => self.run_op(id, idx + 1, ctx),
        }
    }

    /// Ends a job: the final status is committed, watchers get it, jobs that
    /// depended on it move on.
    fn finish(&mut self, id: JobId, status: JobStatus, error: Option<String>, ctx: &mut Context<Self>) {
        let Some(job) = self.active.get_mut(&id) else { return };
        if job.view.status.is_finished() {
            // Already ending: its end is being committed.
            return;
        }
        let was_running = job.view.started_at.is_some();
        let now = Utc::now();
        let ran = job.view.started_at.map(|at| (now - at).to_std().unwrap_or_default());
        job.view.status = status;
        job.view.ended_at = Some(now);
        job.view.error = error;
        let leftover = if status == JobStatus::Canceled { JobStatus::Canceled } else { JobStatus::Error };
        for op in job.view.ops.iter_mut().filter(|o| !o.status.is_finished()) {
            op.status = leftover;
        }
        // Out of the run queues now, so nothing starts it while the end commits.
        let key = (job.view.priority, id);
        self.runnable.remove(&key);
        self.waiting.remove(&id);
        let level = match status {
            JobStatus::Success => LogLevel::Info,
            JobStatus::Canceled => LogLevel::Warning,
            _ => LogLevel::Error,
        };
        let message = match &job.view.error {
            // "canceled (canceled)" says nothing twice.
            Some(e) if e != status.as_str() => (level, format!("job ended: {status} ({e})")),
            _ => (level, format!("job ended: {status}")),
        };
        job_span(id).in_scope(|| match &job.view.error {
            Some(e) => tracing::warn!(status = %status, error = %e, "job ended"),
            None => tracing::info!(status = %status, "job ended"),
        });
        let held = std::mem::take(&mut job.held);
        if !held.is_empty() {
            // However the job ends, what it held is let go.
            let router = self.router.clone();
            actix::spawn(async move {
                let holder = holder_name(id);
                for node in held {
                    router.release(node, &holder).await;
                }
            });
        }
        self.commit_job(id, message, ctx, move |act, ctx, _| {
            // Gone only if withdrawn meanwhile (its insert was refused):
            // then there is no end to record.
            let Some(mut job) = act.active.remove(&id) else { return };
            wake_all(&mut job);
            act.ended.ended(id, status, now);
            act.metrics.job_ended(status, ran);
            if was_running {
                act.running -= 1;
            }
            if act.recheck_dependents(id, ctx) {
                act.report_depth();
            }
            act.schedule(ctx);
        });
    }

    /// The jobs waiting for `id`, which has ended or is gone, move on if
    /// they can; false when none waited.
    fn recheck_dependents(&mut self, id: JobId, ctx: &mut Context<Self>) -> bool {
        let Some(dependents) = self.dependents.remove(&id) else { return false };
        for waiting in dependents {
            self.recheck(waiting, ctx);
        }
        true
    }
}

/// Who a job is when it holds nodes: what `NodeLocked` shows others
/// ("held by job 12").
fn holder_name(id: JobId) -> String {
    format!("job {id}")
}

/// A failed node's log line: `node NAME: ERROR`, without naming the node
/// twice when the error does.
fn node_failure(r: &NodeResult) -> String {
    let error = r.error.as_deref().unwrap_or("failed");
    let named =
        error.strip_prefix("node ").and_then(|e| e.strip_prefix(r.node.as_str())).is_some_and(|e| e.starts_with(':'));
    if named { error.to_string() } else { format!("node {}: {error}", r.node) }
}

/// Answers the watchers that have something new.
fn wake(job: &mut ActiveJob) {
    let last = job.log[..job.committed].last().map_or(0, |e| e.serial);
    let (ready, rest): (Vec<_>, Vec<_>) = job.watchers.drain(..).partition(|(after, _)| *after < last);
    job.watchers = rest;
    for (after, tx) in ready {
        let _ = tx.send(job.change_after(after));
    }
}

/// Answers every watcher (the job ended).
fn wake_all(job: &mut ActiveJob) {
    for (after, tx) in std::mem::take(&mut job.watchers) {
        let _ = tx.send(job.change_after(after));
    }
}

// ----- messages ------------------------------------------------------------------

/// Submits a job; answered with its id once it is durable.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<JobId, KilnError>")]
pub struct SubmitJob {
    pub ops: Vec<Opcode>,
    pub priority: i32,
    pub depends: Vec<Dependency>,
}

/// Submits several jobs at once (Ganeti's SubmitManyJobs); answered with
/// their ids, in order, once all are durable. All or nothing: every job is
/// checked before any id is given out, and all are inserted in one batch
/// (one commit), so one bad job refuses the whole submission and stores
/// nothing. A job may depend on one before it in the same submission
/// ([`JobRef::Earlier`]).
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<Vec<JobId>, KilnError>")]
pub struct SubmitJobs(pub Vec<NewJob>);

/// `e` with `prefix` before its message, when it is one of the errors
/// about the input.
fn prefixed(prefix: &str, e: KilnError) -> KilnError {
    match e {
        KilnError::NotFound(m) => KilnError::NotFound(format!("{prefix}{m}")),
        KilnError::InvalidInput(m) => KilnError::InvalidInput(format!("{prefix}{m}")),
        other => other,
    }
}

fn validate(ops: &[Opcode], priority: i32, router: &Router) -> Result<(), KilnError> {
    if ops.is_empty() {
        return Err(KilnError::InvalidInput("a job needs at least one opcode".into()));
    }
    if !(-20..=19).contains(&priority) {
        return Err(KilnError::InvalidInput(format!("priority {priority} is out of range -20..19")));
    }
    // A job of one opcode (every CLI verb) speaks of its opcode plainly.
    let at = |i: usize, m: String| if ops.len() == 1 { m } else { format!("opcode {}: {m}", i + 1) };
    for (i, op) in ops.iter().enumerate() {
        match op {
            Opcode::Sleep { seconds } if !seconds.is_finite() || !(0.0..=86_400.0).contains(seconds) => {
                return Err(KilnError::InvalidInput(at(i, format!("sleep {seconds}: expected 0 to 86400 seconds"))));
            }
            Opcode::Hold { nodes } => {
                router.registry.resolve(nodes).map_err(|e| match e {
                    KilnError::NotFound(m) => KilnError::NotFound(at(i, m)),
                    KilnError::InvalidInput(m) => KilnError::InvalidInput(at(i, m)),
                    other => other,
                })?;
            }
            Opcode::Node { nodes, fanout, .. } => {
                router.registry.resolve(nodes).map_err(|e| match e {
                    KilnError::NotFound(m) => KilnError::NotFound(at(i, m)),
                    KilnError::InvalidInput(m) => KilnError::InvalidInput(at(i, m)),
                    other => other,
                })?;
                if *fanout == Some(0) {
                    return Err(KilnError::InvalidInput(at(i, "fanout must be at least 1".into())));
                }
            }
            Opcode::Sleep { .. } => {}
            Opcode::Exec { nodes, spec } => {
                router.registry.parse(nodes).map_err(|e| match e {
                    KilnError::InvalidInput(m) => KilnError::InvalidInput(at(i, m)),
                    other => other,
                })?;
                if spec.command.trim().is_empty() {
                    return Err(KilnError::InvalidInput(at(i, "exec needs a command".into())));
                }
            }
        }
    }
    Ok(())
}

/// A dependency may only wait for a final status.
fn final_statuses(job: impl std::fmt::Display, statuses: &[JobStatus]) -> Result<(), KilnError> {
    match statuses.iter().find(|s| !s.is_finished()) {
        Some(s) => Err(KilnError::InvalidInput(format!(
            "dependency on job {job}: '{s}' is not a final status (use success, error or canceled)"
        ))),
        None => Ok(()),
    }
}

/// Checks every job of a submission of several, naming the job at fault
/// by its place in the submission.
fn validate_many(jobs: &[NewJob], router: &Router) -> Result<(), KilnError> {
    if jobs.is_empty() {
        return Err(KilnError::InvalidInput("a submission needs at least one job".into()));
    }
    for (k, job) in jobs.iter().enumerate() {
        let prefix = if jobs.len() == 1 { String::new() } else { format!("job {} of {}: ", k + 1, jobs.len()) };
        let check = || {
            validate(&job.ops, job.priority, router)?;
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

/// Jobs named by dependencies that the queue does not know: each must be
/// archived (its status is read from the store), or the submission fails.
async fn find_archived(
    store: StoreHandle,
    unknown: Vec<JobId>,
) -> Result<Vec<(JobId, JobStatus, kiln_store::Timestamp)>, KilnError> {
    let mut found = Vec::new();
    for id in unknown {
        match store.read(move |b| b.load_job(id)).await? {
            Some((r, _)) => found.push((id, r.status, r.ended_at.unwrap_or_else(Utc::now))),
            None => return Err(KilnError::NotFound(format!("dependency on job {id}: no such job"))),
        }
    }
    Ok(found)
}

/// What became of an admitted job's insert: stored (the job's id, and its
/// status when admitted), or refused (its id, and why).
type Stored = Result<(JobId, JobStatus), (JobId, KilnError)>;

/// What became of a submission of several jobs' one insert, and the jobs
/// it admitted (their ids and statuses when admitted).
type StoredMany = (Result<(), KilnError>, Vec<(JobId, JobStatus)>);

impl Handler<SubmitJob> for JobQueue {
    type Result = ResponseActFuture<Self, Result<JobId, KilnError>>;

    fn handle(&mut self, msg: SubmitJob, _: &mut Context<Self>) -> Self::Result {
        if self.drained {
            return Box::pin(actix::fut::ready(Err(KilnError::Drained)));
        }
        let checked = validate(&msg.ops, msg.priority, &self.router)
            .and_then(|()| msg.depends.iter().try_for_each(|d| final_statuses(d.job, &d.statuses)));
        if let Err(e) = checked {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        // Dependencies on jobs this queue does not know must be archived ones.
        let unknown = self.unknown(msg.depends.iter().map(|d| d.job));
        Box::pin(
            find_archived(self.store.clone(), unknown)
                .into_actor(self)
                .then(move |found, act, ctx| {
                    let ready = found.and_then(|found| {
                        act.learn_archived(found);
                        act.room_for(1)?;
                        Ok(act.admit(msg.ops, msg.priority, msg.depends))
                    });
                    // The job joins the queue, and may start, while its insert
                    // is on its way to the store: a short job's end then often
                    // shares the insert's transaction and its row is written
                    // once (see `kiln_store`'s `coalesce`). That is safe because
                    // the insert is sent first and the store applies in order:
                    // every later change of the job is an `UpdateJob`, which
                    // fails when the insert did, and an opcode acts only after
                    // its start is stored, so after the insert. No client is
                    // given the id before the insert is durable.
                    let admitted = ready.map(|(view, entry)| {
                        let (id, status) = (view.id, view.status);
                        let stored = act.store.send(vec![Write::InsertJob(view.to_record(vec![entry.clone()]))]);
                        act.register(view, entry);
                        act.place(id, ctx);
                        act.schedule(ctx);
                        (id, status, stored)
                    });
                    async move {
                        let (id, status, stored) = admitted?;
                        Ok(match stored.await {
                            Ok(()) => Ok((id, status)),
                            Err(refused) => Err((id, KilnError::from(refused))),
                        })
                    }
                    .into_actor(act)
                })
                .map(|res: Result<Stored, KilnError>, act, ctx| match res? {
                    Ok((id, status)) => {
                        act.count_submitted(status);
                        Ok(id)
                    }
                    Err((id, refused)) => {
                        act.withdraw(id, ctx);
                        Err(refused)
                    }
                }),
        )
    }
}

impl Handler<SubmitJobs> for JobQueue {
    type Result = ResponseActFuture<Self, Result<Vec<JobId>, KilnError>>;

    fn handle(&mut self, SubmitJobs(jobs): SubmitJobs, _: &mut Context<Self>) -> Self::Result {
        if self.drained {
            return Box::pin(actix::fut::ready(Err(KilnError::Drained)));
        }
        if let Err(e) = validate_many(&jobs, &self.router) {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let named = jobs.iter().flat_map(|j| j.depends.iter()).filter_map(|d| match d.job {
            JobRef::Id(id) => Some(id),
            JobRef::Earlier(_) => None,
        });
        let unknown = self.unknown(named);
        Box::pin(
            find_archived(self.store.clone(), unknown)
                .into_actor(self)
                .then(move |found, act, ctx| {
                    let ready = found.and_then(|found| {
                        act.learn_archived(found);
                        act.room_for(jobs.len())?;
                        Ok(act.admit_many(jobs))
                    });
                    // As for one job: every insert goes to the store (in one
                    // batch) before any of the jobs can start.
                    let admitted = ready.map(|(records, admitted)| {
                        let stored = act.store.send(records.into_iter().map(Write::InsertJob).collect());
                        for (id, _) in &admitted {
                            act.place(*id, ctx);
                        }
                        act.schedule(ctx);
                        (admitted, stored)
                    });
                    async move {
                        let (admitted, stored) = admitted?;
                        Ok((stored.await.map_err(KilnError::from), admitted))
                    }
                    .into_actor(act)
                })
                .map(|res: Result<StoredMany, KilnError>, act, ctx| {
                    let (stored, admitted) = res?;
                    match stored {
                        Ok(()) => {
                            for (_, status) in &admitted {
                                act.count_submitted(*status);
                            }
                            Ok(admitted.into_iter().map(|(id, _)| id).collect())
                        }
                        Err(refused) => {
                            // The last first: none of them is then waited
                            // for by one still here.
                            for (id, _) in admitted.into_iter().rev() {
                                act.withdraw(id, ctx);
                            }
                            Err(refused)
                        }
                    }
                }),
        )
    }
}

impl JobQueue {
    /// The jobs among `ids` this queue does not know (archived, or never).
    fn unknown(&self, ids: impl Iterator<Item = JobId>) -> Vec<JobId> {
        let unknown: BTreeSet<JobId> =
            ids.filter(|id| !self.active.contains_key(id) && !self.ended.contains(*id)).collect();
        unknown.into_iter().collect()
    }

    fn learn_archived(&mut self, found: Vec<(JobId, JobStatus, kiln_store::Timestamp)>) {
        for (id, status, at) in found {
            self.ended.found_archived(id, status, at);
        }
    }

    /// Refuses a submission of `adding` jobs that would leave more than
    /// `max_queued` jobs not ended.
    fn room_for(&self, adding: usize) -> Result<(), KilnError> {
        let unfinished = self.active.len();
        if unfinished.saturating_add(adding) > self.max_queued {
            return Err(KilnError::QueueFull { unfinished, adding, limit: self.max_queued });
        }
        Ok(())
    }

    fn count_submitted(&self, status: JobStatus) {
        self.metrics.job_submitted();
        if status.is_finished() {
            self.metrics.job_ended(status, None);
        }
    }

    /// Assigns the id and builds the job as it will be stored.
    fn admit(&mut self, ops: Vec<Opcode>, priority: i32, depends: Vec<Dependency>) -> (JobView, JobLogEntry) {
        let id = JobId(self.next_id);
        self.next_id += 1;
        let now = Utc::now();
        let (status, error, level, message) = match self.deps_state(&depends) {
            DepState::Met => (JobStatus::Queued, None, LogLevel::Info, format!("submitted: {} opcode(s)", ops.len())),
            DepState::Pending => (
                JobStatus::Waiting,
                None,
                LogLevel::Info,
                format!("submitted: {} opcode(s); waiting for dependencies", ops.len()),
            ),
            DepState::Failed(why) => {
                (JobStatus::Error, Some(why.clone()), LogLevel::Error, format!("submitted and failed: {why}"))
            }
        };
        let ended = status.is_finished();
        let view = JobView {
            id,
            priority,
            status,
            submitted_at: now,
            started_at: None,
            ended_at: ended.then_some(now),
            archived: false,
            ops: ops
                .into_iter()
                .map(|opcode| OpState {
                    opcode,
                    status: if ended { JobStatus::Error } else { JobStatus::Queued },
                    started_at: None,
                    ended_at: None,
                    results: Vec::new(),
                    error: None,
                })
                .collect(),
            depends,
            error,
            log: None,
        };
        (view, JobLogEntry { job: id, serial: 1, at: now, level, message })
    }

    /// Admits the jobs of one submission in order, each known to the queue
    /// before the next is admitted (so a later one sees an earlier one it
    /// depends on). Returns their records to insert, and their ids and
    /// statuses.
    fn admit_many(&mut self, jobs: Vec<NewJob>) -> (Vec<kiln_store::JobRecord>, Vec<(JobId, JobStatus)>) {
        let first = self.next_id;
        let mut records = Vec::with_capacity(jobs.len());
        let mut admitted = Vec::with_capacity(jobs.len());
        for (k, job) in jobs.into_iter().enumerate() {
            let depends = job
                .depends
                .into_iter()
                .map(|d| Dependency {
                    // Checked by `validate_many`: 1 ≤ n ≤ k.
                    job: match d.job {
                        JobRef::Id(id) => id,
                        JobRef::Earlier(n) => JobId(first + k as u64 - u64::from(n)),
                    },
                    statuses: d.statuses,
                })
                .collect();
            let (view, entry) = self.admit(job.ops, job.priority, depends);
            records.push(view.to_record(vec![entry.clone()]));
            admitted.push((view.id, view.status));
            self.register(view, entry);
        }
        (records, admitted)
    }

    /// Takes out a job whose insert the store refused. Nobody was told its
    /// id, and no change of it can be stored (an `UpdateJob` finds no row),
    /// so it leaves as if never submitted; an opcode it runs is canceled.
    /// It has acted on nothing: an opcode acts only once its start is
    /// stored, and that needs the row.
    fn withdraw(&mut self, id: JobId, ctx: &mut Context<Self>) {
        self.ended.forget(id);
        let Some(mut job) = self.active.remove(&id) else { return };
        job.control.request_cancel();
        self.runnable.remove(&(job.view.priority, id));
        self.waiting.remove(&id);
        if job.view.started_at.is_some() {
            // Counted as running since it started; its end, if one is on
            // its way, finds it gone and counts nothing.
            self.running -= 1;
        }
        wake_all(&mut job);
        self.recheck_dependents(id, ctx);
        self.schedule(ctx);
    }

    /// Makes an admitted job known: among the active jobs, or, when it
    /// ended at admission (a dependency that cannot be met), the ended.
    fn register(&mut self, view: JobView, entry: JobLogEntry) {
        let id = view.id;
        if view.status.is_finished() {
            let at = view.ended_at.unwrap_or_else(Utc::now);
            self.ended.ended(id, view.status, at);
            return;
        }
        self.active.insert(
            id,
            Box::new(ActiveJob {
                committed_status: view.status,
                view,
                log: vec![entry],
                committed: 1,
                control: FanOutControl::default(),
                held: Vec::new(),
                progress_total: 0,
                watchers: Vec::new(),
                pending: Vec::new(),
            }),
        );
    }

    /// Puts a registered job where it belongs: the run queue, or among the
    /// waiting. The caller schedules.
    fn place(&mut self, id: JobId, ctx: &mut Context<Self>) {
        let Some(job) = self.active.get(&id) else { return };
        if job.view.status == JobStatus::Waiting {
            self.hold(id);
            // A dependency may have ended since the job was admitted.
            self.recheck(id, ctx);
        } else {
            self.runnable.insert((job.view.priority, id));
        }
    }
}

/// One job, live or archived, with its log.
#[derive(Debug, Message)]
#[rtype(result = "Result<JobView, KilnError>")]
pub struct GetJob(pub JobId);

impl Handler<GetJob> for JobQueue {
    type Result = ResponseFuture<Result<JobView, KilnError>>;
    fn handle(&mut self, GetJob(id): GetJob, _: &mut Context<Self>) -> Self::Result {
        if let Some(job) = self.active.get(&id) {
            let view = job.shown();
            return Box::pin(async move { Ok(view) });
        }
        let store = self.store.clone();
        Box::pin(async move {
            match store.read(move |b| b.load_job(id)).await? {
                Some((r, archived)) => Ok(JobView { log: Some(r.log.clone()), ..JobView::from_record(&r, archived) }),
                None => Err(KilnError::NotFound(format!("no such job: {id}"))),
            }
        })
    }
}

/// Live jobs, oldest first: the newest `limit` of them (all of them when
/// `None`), only those in `status` when it is given.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<JobView>, KilnError>")]
pub struct ListJobs {
    pub status: Option<JobStatus>,
    pub limit: Option<usize>,
}

impl Handler<ListJobs> for JobQueue {
    type Result = ResponseActFuture<Self, Result<Vec<JobView>, KilnError>>;
    fn handle(&mut self, msg: ListJobs, _: &mut Context<Self>) -> Self::Result {
        let limit = msg.limit.unwrap_or(usize::MAX);
        if let Some(status) = msg.status.filter(|s| !s.is_finished()) {
            // Every unfinished job is here, and newer than its row.
            let mut views: Vec<JobView> = self
                .active
                .values()
                .rev()
                .filter(|j| j.view.status == status)
                .take(limit)
                .map(|j| j.view.clone())
                .collect();
            views.reverse();
            return Box::pin(actix::fut::ready(Ok(views)));
        }
        // The store reads only the rows listed (a live table can hold
        // millions of ended jobs), a page at a time: between two pages the
        // store commits and this actor answers others. What is proportional
        // to the whole list (parsing each row, putting the pages together)
        // runs on blocking threads: at a million jobs it takes seconds, and
        // this thread acknowledges submissions. A job still running is shown
        // as it is now rather than as last stored.
        let store = self.store.clone();
        let status = msg.status;
        let pages = async move {
            // Newest page first, each page oldest first.
            let mut pages: Vec<Vec<JobView>> = Vec::new();
            let (mut listed, mut before) = (0, None);
            while listed < limit {
                let page = LIST_PAGE.min(limit - listed);
                let records = store.read(move |b| b.list_live_jobs(status, before, page)).await?;
                before = records.last().map(|r| r.id);
                listed += records.len();
                let full = records.len() == page;
                pages.push(
                    off_thread(move || records.iter().rev().map(|r| JobView::from_record(r, false)).collect()).await?,
                );
                if !full {
                    break;
                }
            }
            Ok::<_, KilnError>(pages)
        };
        Box::pin(
            pages
                .into_actor(self)
                .map(move |pages, act, _| {
                    let mut pages = pages?;
                    for page in &mut pages {
                        let (Some(first), Some(last)) = (page.first(), page.last()) else { continue };
                        for (id, job) in act.active.range(first.id..=last.id) {
                            if let Ok(at) = page.binary_search_by_key(id, |v| v.id) {
                                page[at] = job.view.clone();
                            }
                        }
                    }
                    Ok(pages)
                })
                .then(move |pages: Result<Vec<Vec<JobView>>, KilnError>, act, _| {
                    let joined = async move {
                        let pages = pages?;
                        off_thread(move || {
                            pages.into_iter().rev().flatten().filter(|v| status.is_none_or(|s| v.status == s)).collect()
                        })
                        .await
                    };
                    joined.into_actor(act)
                }),
        )
    }
}

/// Runs `work` on a blocking thread, away from the actors' thread.
async fn off_thread<T, F>(work: F) -> Result<T, KilnError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| KilnError::Unavailable(format!("cannot list the jobs: {e}")))
}

/// Live jobs read from the store at once while listing them (small in the
/// unit tests, so that their few hundred jobs take several pages).
#[cfg(not(test))]
const LIST_PAGE: usize = 1_000;
#[cfg(test)]
const LIST_PAGE: usize = 64;

/// Cancels a job: at once if it has not started, before its next opcode
/// (and its next node) if it runs.
#[derive(Debug, Message)]
#[rtype(result = "Result<JobStatus, KilnError>")]
pub struct CancelJob(pub JobId);

impl Handler<CancelJob> for JobQueue {
    type Result = Result<JobStatus, KilnError>;
    fn handle(&mut self, CancelJob(id): CancelJob, ctx: &mut Context<Self>) -> Self::Result {
        let Some(job) = self.active.get_mut(&id) else {
            return match self.ended.get(id) {
                Some((status, _)) => Err(KilnError::InvalidInput(format!("job {id} already ended: {status}"))),
                // Ids are serial: a lower one not live here was archived
                // (the queue forgets archived jobs) or never stored.
                None if id.0 < self.next_id => {
                    Err(KilnError::InvalidInput(format!("job {id} already ended: it is not in the live queue")))
                }
                None => Err(KilnError::NotFound(format!("no such job: {id}"))),
            };
        };
        job.control.request_cancel();
        match job.view.status {
            JobStatus::Queued | JobStatus::Waiting => {
                self.finish(id, JobStatus::Canceled, Some("canceled before it started".into()), ctx);
                Ok(JobStatus::Canceled)
            }
            JobStatus::Running => {
                self.set_status(
                    id,
                    JobStatus::Canceling,
                    LogLevel::Warning,
                    "cancel requested; stopping before the next opcode".into(),
                    ctx,
                );
                Ok(JobStatus::Canceling)
            }
            other => Ok(other),
        }
    }
}

/// Moves an ended job out of the live table.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), KilnError>")]
pub struct ArchiveJob(pub JobId);

impl Handler<ArchiveJob> for JobQueue {
    type Result = ResponseActFuture<Self, Result<(), KilnError>>;
    fn handle(&mut self, ArchiveJob(id): ArchiveJob, _: &mut Context<Self>) -> Self::Result {
        if let Some(job) = self.active.get(&id) {
            let err =
                KilnError::InvalidInput(format!("job {id} is {}; only ended jobs can be archived", job.view.status));
            return Box::pin(actix::fut::ready(Err(err)));
        }
        let store = self.store.clone();
        let archive = async move {
            match store.commit(vec![Write::ArchiveJob(id)]).await {
                Ok(()) => Ok(()),
                // Not live: say why, as `kiln job cancel` does.
                Err(kiln_store::StoreError::NotFound(_)) => match store.read(move |b| b.load_job(id)).await? {
                    Some((_, true)) => Err(KilnError::InvalidInput(format!("job {id} is already archived"))),
                    _ => Err(KilnError::NotFound(format!("no such job: {id}"))),
                },
                Err(e) => Err(KilnError::from(e)),
            }
        };
        Box::pin(archive.into_actor(self).map(move |res, act, _| {
            res?;
            let needed = act.waited_for().contains(&id);
            act.ended.archived(id, needed);
            Ok(())
        }))
    }
}

/// Archives every live job that ended more than `age` ago; answers how many.
/// The archive writes go to the store [`ARCHIVE_WAVE`] at a time.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, KilnError>")]
pub struct ArchiveOld {
    pub age: Duration,
}

/// Archive writes in flight at once while archiving old jobs: each its own
/// batch (one job that cannot be archived fails alone), one group commit.
const ARCHIVE_WAVE: usize = 256;

impl Handler<ArchiveOld> for JobQueue {
    type Result = ResponseActFuture<Self, Result<usize, KilnError>>;
    fn handle(&mut self, msg: ArchiveOld, _: &mut Context<Self>) -> Self::Result {
        let cutoff = Utc::now() - chrono::Duration::from_std(msg.age).unwrap_or(chrono::Duration::MAX);
        let ids = self.ended.live_before(cutoff);
        let store = self.store.clone();
        Box::pin(
            async move {
                // A wave at a time: the store serves requests in order, so
                // a million archive writes sent at once would queue every
                // submission behind them for seconds; between two waves a
                // submission waits for one wave at most.
                let mut results = Vec::with_capacity(ids.len());
                for wave in ids.chunks(ARCHIVE_WAVE) {
                    let commits = wave.iter().map(|id| store.commit(vec![Write::ArchiveJob(*id)]));
                    results.extend(futures::future::join_all(commits).await);
                }
                (results, ids)
            }
            .into_actor(self)
            .map(move |(results, ids), act, _| {
                let mut archived = 0;
                let needed = act.waited_for();
                for (id, res) in ids.into_iter().zip(results) {
                    if res.is_ok() {
                        act.ended.archived(id, needed.contains(&id));
                        archived += 1;
                    }
                }
                Ok(archived)
            }),
        )
    }
}

/// Changes the priority of a job that has not started (queued or
/// waiting); answered with the job once the change is durable. A running
/// or ended job is refused: its priority no longer orders anything.
#[derive(Debug, Message)]
#[rtype(result = "Result<JobView, KilnError>")]
pub struct SetJobPriority {
    pub job: JobId,
    pub priority: i32,
}

impl Handler<SetJobPriority> for JobQueue {
    type Result = ResponseFuture<Result<JobView, KilnError>>;
    fn handle(&mut self, msg: SetJobPriority, ctx: &mut Context<Self>) -> Self::Result {
        let (id, new) = (msg.job, msg.priority);
        let refused = |e| -> Self::Result { Box::pin(async move { Err(e) }) };
        if !(-20..=19).contains(&new) {
            return refused(KilnError::InvalidInput(format!("priority {new} is out of range -20..19")));
        }
        let only = "only a queued or waiting job's priority can change";
        let Some(job) = self.active.get_mut(&id) else {
            return refused(match self.ended.get(id) {
                Some((status, _)) => KilnError::InvalidInput(format!("job {id} already ended ({status}); {only}")),
                None if id.0 < self.next_id => {
                    KilnError::InvalidInput(format!("job {id} already ended: it is not in the live queue; {only}"))
                }
                None => KilnError::NotFound(format!("no such job: {id}")),
            });
        };
        let old = job.view.priority;
        match job.view.status {
            JobStatus::Queued | JobStatus::Waiting => {}
            other => return refused(KilnError::InvalidInput(format!("job {id} is {other}; {only}"))),
        }
        if old == new {
            let view = job.shown();
            return Box::pin(async move { Ok(view) });
        }
        job.view.priority = new;
        if self.runnable.remove(&(old, id)) {
            self.runnable.insert((new, id));
        }
        let (tx, rx) = oneshot::channel();
        let message = (LogLevel::Info, format!("priority changed from {old} to {new}"));
        self.commit_job(id, message, ctx, move |act, _, failure| {
            let Some(job) = act.active.get_mut(&id) else {
                // Withdrawn: its insert was refused, so it never was.
                let _ = tx.send(Err(KilnError::NotFound(format!("no such job: {id}"))));
                return;
            };
            let answer = match failure {
                None => Ok(job.shown()),
                Some(why) => {
                    // Not durable: not told, and not kept either.
                    if job.view.priority == new && !job.view.status.is_finished() {
                        job.view.priority = old;
                        if act.runnable.remove(&(new, id)) {
                            act.runnable.insert((old, id));
                        }
                    }
                    Err(KilnError::Store(why))
                }
            };
            let _ = tx.send(answer);
        });
        Box::pin(async move { rx.await.map_err(|_| KilnError::Unavailable("the job queue stopped".into()))? })
    }
}

/// Refuses with [`KilnError::Drained`] while the queue is drained: what
/// the admin socket asks before a change that is not a job (`node set`,
/// `node delete`, ...), so that drain refuses the same things whichever way
/// they come.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), KilnError>")]
pub struct CheckNotDrained;

impl Handler<CheckNotDrained> for JobQueue {
    type Result = Result<(), KilnError>;
    fn handle(&mut self, _: CheckNotDrained, _: &mut Context<Self>) -> Self::Result {
        if self.drained { Err(KilnError::Drained) } else { Ok(()) }
    }
}

/// Sets or clears the drain flag (persisted).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), KilnError>")]
pub struct SetDrain(pub bool);

impl Handler<SetDrain> for JobQueue {
    type Result = ResponseActFuture<Self, Result<(), KilnError>>;
    fn handle(&mut self, SetDrain(on): SetDrain, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let write = Write::SetMeta { key: DRAIN_KEY.into(), value: on.to_string() };
        Box::pin(async move { store.commit(vec![write]).await.map_err(KilnError::from) }.into_actor(self).map(
            move |res, act, _| {
                res?;
                act.drained = on;
                Ok(())
            },
        ))
    }
}

/// Changes how many jobs may run at once (a config reload). Raising it
/// starts queued jobs at once; lowering it lets running jobs finish.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetMaxRunning(pub usize);

impl Handler<SetMaxRunning> for JobQueue {
    type Result = ();
    fn handle(&mut self, SetMaxRunning(n): SetMaxRunning, ctx: &mut Context<Self>) {
        self.max_running = n.max(1);
        self.schedule(ctx);
    }
}

/// The queue at a glance.
#[derive(Debug, Message)]
#[rtype(result = "QueueInfo")]
pub struct GetQueueInfo;

impl Handler<GetQueueInfo> for JobQueue {
    type Result = MessageResult<GetQueueInfo>;
    fn handle(&mut self, _: GetQueueInfo, _: &mut Context<Self>) -> Self::Result {
        // Counted by status first, named once each: no string per job.
        let mut counts: BTreeMap<JobStatus, usize> = self.ended.live_counts().collect();
        for j in self.active.values() {
            *counts.entry(j.view.status).or_default() += 1;
        }
        MessageResult(QueueInfo {
            drained: self.drained,
            by_status: counts.into_iter().map(|(status, n)| (status.to_string(), n)).collect(),
            running: self.running,
            max_running: self.max_running,
            unfinished: self.active.len(),
            max_queued: self.max_queued,
            last_job_id: self.next_id - 1,
        })
    }
}

/// The long poll: the job's log after `after_serial`, answered at once when
/// there is something, else when something happens or `timeout` passes.
#[derive(Debug, Message)]
#[rtype(result = "Result<JobChange, KilnError>")]
pub struct WaitJobChange {
    pub job: JobId,
    pub after_serial: u64,
    pub timeout: Duration,
}

impl Handler<WaitJobChange> for JobQueue {
    type Result = ResponseFuture<Result<JobChange, KilnError>>;
    fn handle(&mut self, msg: WaitJobChange, ctx: &mut Context<Self>) -> Self::Result {
        let id = msg.job;
        if let Some(job) = self.active.get_mut(&id) {
            let change = job.change_after(msg.after_serial);
            if !change.log.is_empty() || msg.timeout.is_zero() {
                return Box::pin(async move { Ok(change) });
            }
            let (tx, rx) = oneshot::channel();
            job.watchers.push((msg.after_serial, tx));
            let after = msg.after_serial;
            ctx.run_later(msg.timeout.min(Duration::from_secs(3600)), move |act, _| {
                if let Some(job) = act.active.get_mut(&id) {
                    // Answer the watchers whose time is up (closed ones too).
                    let change = job.change_after(after);
                    let (due, keep): (Vec<_>, Vec<_>) =
                        job.watchers.drain(..).partition(|(a, tx)| *a == after || tx.is_closed());
                    job.watchers = keep;
                    for (_, tx) in due {
                        let _ = tx.send(change.clone());
                    }
                }
            });
            return Box::pin(
                async move { rx.await.map_err(|_| KilnError::Unavailable("the job queue stopped".into())) },
            );
        }
        let store = self.store.clone();
        let after = msg.after_serial;
        let timeout = msg.timeout.min(Duration::from_secs(3600));
        Box::pin(async move {
            let Some((r, _)) = store.read(move |b| b.load_job(id)).await? else {
                return Err(KilnError::NotFound(format!("no such job: {id}")));
            };
            let log = store.read(move |b| b.load_job_log(id, after, 10_000)).await?;
            if log.is_empty() && !r.status.is_finished() {
                // Not active here yet not ended in the store: only a failed
                // commit leaves a job so. Answer after the timeout rather than
                // at once, so a follower never spins.
                tracing::warn!(job = %id, status = %r.status, "job is neither running nor ended");
                tokio::time::sleep(timeout).await;
            }
            Ok(JobChange { id, status: r.status, log, progress: None })
        })
    }
}

/// A graceful shutdown's first step: no job and no opcode starts from now
/// on. Running opcodes go on; when one ends, its job ends `error` with `why`
/// instead of starting the next. A job in a `sleep` ends so at once: waiting
/// out a sleep protects nothing, and a shutdown should not wait for one.
/// Queued and waiting jobs stay as they are (durable), to run after the
/// restart. Answers how many jobs are running.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct StopStarting {
    pub why: String,
}

impl Handler<StopStarting> for JobQueue {
    type Result = usize;
    fn handle(&mut self, msg: StopStarting, ctx: &mut Context<Self>) -> usize {
        let sleeping: Vec<JobId> = self
            .active
            .iter()
            .filter(|(_, j)| {
                j.view.ops.iter().any(|o| o.status == JobStatus::Running && matches!(o.opcode, Opcode::Sleep { .. }))
            })
            .map(|(id, _)| *id)
            .collect();
        let why = format!("{} during a sleep", msg.why);
        self.stopping = Some(msg.why);
        for id in sleeping {
            self.abandon(id, &why, ctx);
        }
        self.running
    }
}

impl JobQueue {
    /// Ends a running job `error` with `why` now, as the restart rule
    /// would: it starts no further node or opcode, and its running opcode
    /// ends with `why`.
    fn abandon(&mut self, id: JobId, why: &str, ctx: &mut Context<Self>) {
        if let Some(job) = self.active.get_mut(&id) {
            job.control.request_cancel();
            let now = Utc::now();
            for op in job.view.ops.iter_mut().filter(|o| o.status == JobStatus::Running) {
                op.ended_at = Some(now);
                op.error = Some(why.to_string());
            }
        }
        self.finish(id, JobStatus::Error, Some(why.to_string()), ctx);
    }
}

/// A graceful shutdown's last step, once its grace period has run out: every
/// running job stops starting nodes and ends `error` with `why`, as the
/// restart rule would end it. Answers how many jobs it ended; they are
/// committed once [`GetQueueInfo`] shows none running.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct AbandonRunning {
    pub why: String,
}

impl Handler<AbandonRunning> for JobQueue {
    type Result = usize;
    fn handle(&mut self, msg: AbandonRunning, ctx: &mut Context<Self>) -> usize {
        self.stopping.get_or_insert_with(|| msg.why.clone());
        let running: Vec<JobId> = self
            .active
            .iter()
            .filter(|(_, j)| matches!(j.view.status, JobStatus::Running | JobStatus::Canceling))
            .map(|(id, _)| *id)
            .collect();
        for id in &running {
            self.abandon(*id, &msg.why, ctx);
        }
        running.len()
    }
}
