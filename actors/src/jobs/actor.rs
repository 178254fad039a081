//! The job queue actor: Ganeti's job queue over the store's group commit,
//! a thin shell around the plain [`JobCore`].
//!
//! The core decides (admission, priorities, dependencies, which job runs,
//! cancel, the end of a job); this actor reads the site clock and hands the
//! reading in, and carries out what the core asks for: commits to the
//! store, running opcodes ([`super::execute`]), answering callers and the
//! long poll's watchers. Each submission is committed before it is
//! acknowledged; only jobs that have not ended are kept whole in memory,
//! an ended job is a status and a time here, and whole in the store.
//!
//! A submission of several jobs ([`SubmitJobs`], Ganeti's SubmitManyJobs)
//! is checked whole before any id is given out and stored as one batch, so
//! it is one commit and all or nothing; its jobs may depend on each other
//! by position. `max_queued_jobs` bounds the jobs that have not ended (their
//! memory is here), and the drain flag refuses every submission.
//!
//! On a store several members share, this queue runs only its member's
//! jobs: it loads those, gives ids from blocks the store hands it
//! ([`super::ids`]), and adopts the jobs of a member that died when told
//! to ([`AdoptJobs`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use kiln_store::{JobId, JobRecord, JobStatus, LogLevel, StoreHandle, Write};
use tokio::sync::oneshot;

use super::admission;
use super::archive;
use super::core::{Effect, Job, JobCore, JobEnd, PriorityChange, Shell, job_span};
use super::execute::holder_name;
use super::held::{HeldInserts, PendingChange};
use super::ids::{self, JobIds};
use super::model::*;
use super::restart;
use crate::clock::SharedClock;
use crate::supervisor::{FanOutControl, Router};
use crate::{KilnError, SiteConfig};

/// The key the drain flag is stored under.
const DRAIN_KEY: &str = "queue_drained";

/// What the actor keeps with each job beside the core's part.
#[derive(Default)]
pub(super) struct Running {
    /// Stops the job's running work (a fanout, a sleep).
    pub(super) control: FanOutControl,
    /// Nodes in the running node-set opcode.
    pub(super) progress_total: u64,
    /// Long polls waiting for the job's log after a serial.
    watchers: Vec<(u64, oneshot::Sender<JobChange>)>,
}

impl Shell for Running {
    fn request_cancel(&self) {
        self.control.request_cancel();
    }
}

/// What changed in `job` since log serial `after`, as committed.
fn change_after(job: &Job<Running>, after: u64) -> JobChange {
    JobChange {
        id: job.view.id,
        status: job.committed_status,
        log: job.log[..job.committed].iter().filter(|e| e.serial > after).cloned().collect(),
        progress: (job.view.status == JobStatus::Running && job.shell.progress_total > 0)
            .then(|| (job.shell.control.done.load(Ordering::Relaxed), job.shell.progress_total)),
    }
}

/// Answers the watchers that have something new.
fn wake(job: &mut Job<Running>) {
    let last = job.log[..job.committed].last().map_or(0, |e| e.serial);
    let (ready, rest): (Vec<_>, Vec<_>) = job.shell.watchers.drain(..).partition(|(after, _)| *after < last);
    job.shell.watchers = rest;
    for (after, tx) in ready {
        let _ = tx.send(change_after(job, after));
    }
}

/// Answers every watcher (the job ended).
fn wake_all(job: &mut Job<Running>) {
    for (after, tx) in std::mem::take(&mut job.shell.watchers) {
        let _ = tx.send(change_after(job, after));
    }
}

/// The job queue.
pub struct JobQueue {
    pub(super) core: JobCore<Running>,
    store: StoreHandle,
    pub(super) router: Router,
    /// Where every time the queue stamps or measures comes from.
    pub(super) clock: SharedClock,
    metrics: Arc<crate::metrics::Metrics>,
    /// A look in the store for the jobs of other members that jobs here
    /// wait for is in flight.
    sweeping: bool,
    /// The inserts of the jobs the current turn admitted, while it runs
    /// their first effects ([`super::held`]).
    held: Option<HeldInserts>,
}

/// How often the queue looks in the store for the end of jobs other
/// members run that jobs here wait for.
const SWEEP_ELSEWHERE: std::time::Duration = crate::remote::SWEEP;

impl Actor for JobQueue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Jobs recovered from the store may be runnable at once.
        let mut effects = Vec::new();
        self.core.promote_waiting(self.clock.now(), &mut effects);
        self.core.schedule(&mut effects);
        self.apply(effects, ctx);
        ctx.run_interval(SWEEP_ELSEWHERE, |act, ctx| act.sweep_elsewhere(ctx));
    }
}

impl JobQueue {
    /// Looks in the store for the end of the jobs other members run that
    /// jobs here wait for; their dependents move on as on a local end.
    fn sweep_elsewhere(&mut self, ctx: &mut Context<Self>) {
        let ids = self.core.waited_elsewhere();
        if ids.is_empty() || self.sweeping {
            return;
        }
        self.sweeping = true;
        let (store, now) = (self.store.clone(), self.clock.now());
        let fut = async move { look_up(&store, ids, now).await };
        ctx.spawn(fut.into_actor(self).map(|found, act, ctx| {
            act.sweeping = false;
            let found = match found {
                Ok(found) => found,
                Err(e) => return tracing::warn!(error = %e, "cannot look up the jobs of other members waited for"),
            };
            let ended = found.ended.into_iter().map(|(id, status, at)| (id, Some((status, at))));
            let gone = found.missing.into_iter().map(|id| (id, None));
            let mut effects = Vec::new();
            act.core.ended_elsewhere(ended.chain(gone).collect(), act.clock.now(), &mut effects);
            act.core.schedule(&mut effects);
            act.apply(effects, ctx);
        }));
    }

    /// Loads the queue from the store and applies the restart rule
    /// ([`restart::recover`]) to every unfinished job, with the limits and
    /// the clock of `config`. Ids go on after the largest stored one, or,
    /// on a shared store, come from a first block of [`ids::BLOCK`].
    pub async fn load(store: StoreHandle, router: Router, config: &SiteConfig) -> Result<JobQueue, KilnError> {
        let drained = store.read(|b| b.load_meta(DRAIN_KEY)).await?.as_deref() == Some("true");
        let ids = match store.read(|b| b.job_id_block(ids::BLOCK)).await? {
            Some(first) => JobIds::blocks(first, ids::BLOCK),
            None => JobIds::after(store.read(|b| b.max_job_id()).await?),
        };
        let live = store.read(|b| b.load_live_queue()).await?;
        let clock = config.clock.clone();
        let mut core = JobCore::new(ids, config.max_running_jobs, config.max_queued_jobs, drained);
        let now = clock.now();
        for end in live.ended {
            core.ended.ended(end.id, end.status, end.ended_at.unwrap_or(now));
        }
        let (repairs, _) = core.adopt(&live.unfinished, now, restart::CUT_SHORT);
        for record in repairs {
            store.commit(vec![Write::PutJob(record)]).await?;
        }
        // Dependencies on archived jobs: learn their final status once.
        let unknown = core.unknown(core.active.values().flat_map(|j| j.view.depends.iter().map(|d| d.job)));
        core.learn(look_up(&store, unknown, now).await?);
        Ok(JobQueue { core, store, router, clock, metrics: Default::default(), sweeping: false, held: None })
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
        let (queued, waiting, running) = self.core.depth();
        self.metrics.job_queue(queued, waiting, running);
    }

    /// Carries out what the core asked for, in order.
    pub(super) fn apply(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        if effects.is_empty() {
            return;
        }
        for effect in effects {
            match effect {
                Effect::Commit { job, line } => self.commit_job(job, line, ctx, |_, _, _| {}),
                Effect::Started(id) => {
                    let now = self.now();
                    let Some(view) = self.core.mark_started(id, now) else { continue };
                    self.metrics.job_started((now - view.submitted_at).to_std().unwrap_or_default());
                    job_span(id).in_scope(|| tracing::info!(opcodes = view.ops.len(), "job started"));
                    self.execute_opcode(id, 0, ctx);
                }
                Effect::End(end) => self.end(end, ctx),
                Effect::FetchIds(size) => self.fetch_ids(size, ctx),
            }
        }
        self.report_depth();
    }

    /// The time to stamp a change with: the admitting turn's while one
    /// runs ([`super::held`]), else the site clock's.
    pub(super) fn now(&self) -> kiln_store::Timestamp {
        match &self.held {
            Some(held) => held.at(),
            None => self.clock.now(),
        }
    }

    /// Fetches the next block of job ids, ahead of need; a failure is
    /// logged and the next admission asks again.
    fn fetch_ids(&mut self, size: u64, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let block = async move { store.read(move |b| b.job_id_block(size)).await };
        ctx.spawn(block.into_actor(self).map(move |res, act, _| match res {
            Ok(Some(first)) => {
                tracing::debug!(first, size, "fetched a block of job ids");
                act.core.add_id_block(first, size);
            }
            Ok(None) => {
                tracing::error!("the store handed out no block of job ids: it is not shared (any more)");
                act.core.id_block_failed();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot fetch a block of job ids; the next submission asks again");
                act.core.id_block_failed();
            }
        }));
    }

    /// Ends a job now (see [`JobCore::finish`]).
    pub(super) fn finish(&mut self, id: JobId, status: JobStatus, error: Option<String>, ctx: &mut Context<Self>) {
        let mut effects = Vec::new();
        self.core.finish(id, status, error, self.now(), &mut effects);
        self.apply(effects, ctx);
    }

    /// Commits a job's end: what it held is let go, watchers get the end,
    /// and the core moves the jobs that waited for it.
    fn end(&mut self, mut end: JobEnd, ctx: &mut Context<Self>) {
        let held = std::mem::take(&mut end.held);
        if !held.is_empty() {
            // However the job ends, what it held is let go.
            let router = self.router.clone();
            let id = end.job;
            actix::spawn(async move {
                let holder = holder_name(id);
                for node in held {
                    router.release(node, &holder).await;
                }
            });
        }
        let line = end.line.clone();
        self.commit_job(end.job, line, ctx, move |act, ctx, _| {
            let mut effects = Vec::new();
            let Some(mut job) = act.core.end_committed(&end, act.clock.now(), &mut effects) else { return };
            wake_all(&mut job);
            act.metrics.job_ended(end.status, end.ran);
            act.apply(effects, ctx);
            act.report_depth();
        });
    }

    /// Commits the job's current view with its pending log lines and
    /// `line`, in one batch (in the turn that admitted the job, with its
    /// insert: [`super::held`]), then wakes its watchers and calls `then`
    /// with why the commit failed, if it did.
    pub(super) fn commit_job<F>(&mut self, id: JobId, line: (LogLevel, String), ctx: &mut Context<Self>, then: F)
    where
        F: FnOnce(&mut Self, &mut Context<Self>, Option<String>) + 'static,
    {
        let now = self.now();
        let Some(job) = self.core.active.get_mut(&id) else { return };
        let mut lines = std::mem::take(&mut job.pending);
        lines.push((line.0, line.1, None));
        let status = job.view.status;
        job.write_lines(lines, now);
        let mut change = PendingChange { written: job.log.len(), status, then: Box::new(then) };
        if let Some(held) = self.held.as_mut() {
            // Made in the turn that admitted the job: written with its insert.
            match held.merge(id, || job.view.to_record(job.log.clone()), change) {
                Ok(()) => return,
                Err(not_held) => change = not_held,
            }
        }
        let stored = self.store.send(vec![Write::UpdateJob(job.view.to_record(job.log.clone()))]);
        ctx.spawn(stored.into_actor(self).map(move |res, act, ctx| {
            let failure = res.err().map(|e| {
                tracing::error!(job = %id, error = %e, "cannot commit a job change");
                e.to_string()
            });
            act.change_committed(id, change, failure, ctx)
        }));
    }

    /// A change of job `id` is durable, or `failure` says why not: its
    /// log is committed that far and its watchers answered, then its
    /// follow-up runs.
    fn change_committed(&mut self, id: JobId, after: PendingChange, failure: Option<String>, ctx: &mut Context<Self>) {
        if failure.is_none()
            && let Some(job) = self.core.active.get_mut(&id)
        {
            job.committed = job.committed.max(after.written);
            job.committed_status = after.status;
            wake(job);
        }
        (after.then)(self, ctx, failure)
    }

    /// Runs this turn's `effects` of the newly `admitted` jobs with their
    /// inserts `held` ([`super::held`]), then sends the inserts as one
    /// batch. Returns the jobs, its acknowledgement and the follow-ups of
    /// the changes it carries, for [`Self::inserted`].
    fn insert_admitted(
        &mut self,
        held: HeldInserts,
        effects: Vec<Effect>,
        admitted: AdmittedIds,
        ctx: &mut Context<Self>,
    ) -> Admitted<impl Future<Output = Result<(), kiln_store::StoreError>> + use<>> {
        let outer = self.held.replace(held);
        self.apply(effects, ctx);
        let held = std::mem::replace(&mut self.held, outer);
        let (batch, after) = held.map(HeldInserts::release).unwrap_or_default();
        (admitted, self.store.send(batch), after)
    }

    /// The inserts carrying `after` were acknowledged, or refused for
    /// `refused`: a refused job is withdrawn before its changes learn why.
    fn inserted(&mut self, after: Vec<(JobId, PendingChange)>, refused: Option<String>, ctx: &mut Context<Self>) {
        for (id, after) in after {
            self.change_committed(id, after, refused.clone(), ctx);
        }
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

/// What the store shows of jobs the queue does not know (dependencies on
/// archived jobs, or on a shared store on jobs of other members).
#[derive(Default)]
struct Found {
    /// Those that ended: how, and when.
    ended: Vec<(JobId, JobStatus, kiln_store::Timestamp)>,
    /// Those that have not ended: another member runs them.
    elsewhere: Vec<JobId>,
    /// Those the store does not have.
    missing: Vec<JobId>,
}

impl Found {
    /// Refuses a dependency on a job that does not exist.
    fn all_exist(self) -> Result<Found, KilnError> {
        match self.missing.first() {
            Some(id) => Err(KilnError::NotFound(format!("dependency on job {id}: no such job"))),
            None => Ok(self),
        }
    }
}

/// [`look_up`] for a submission: a dependency on a job that does not
/// exist refuses it.
async fn look_up_owned(store: StoreHandle, ids: Vec<JobId>, now: kiln_store::Timestamp) -> Result<Found, KilnError> {
    look_up(&store, ids, now).await?.all_exist()
}

/// Looks up `ids` in the store, in one read.
async fn look_up(store: &StoreHandle, ids: Vec<JobId>, now: kiln_store::Timestamp) -> Result<Found, KilnError> {
    if ids.is_empty() {
        return Ok(Found::default());
    }
    let statuses = store
        .read(move |b| {
            ids.into_iter()
                .map(|id| Ok((id, b.load_job(id)?.map(|(r, _)| (r.status, r.ended_at)))))
                .collect::<Result<Vec<_>, kiln_store::StoreError>>()
        })
        .await?;
    let mut found = Found::default();
    for (id, status) in statuses {
        match status {
            Some((status, ended_at)) if status.is_finished() => found.ended.push((id, status, ended_at.unwrap_or(now))),
            Some(_) => found.elsewhere.push(id),
            None => found.missing.push(id),
        }
    }
    Ok(found)
}

impl JobCore<Running> {
    /// Learns what the store showed: ended jobs by status, the others as
    /// run by another member (a job here may wait for them).
    fn learn(&mut self, found: Found) {
        self.learn_archived(found.ended);
        self.learn_elsewhere(found.elsewhere);
    }
}

/// The jobs a submission admitted: their ids and statuses when admitted.
type AdmittedIds = Vec<(JobId, JobStatus)>;

/// The jobs a submission admitted, their one insert's acknowledgement,
/// and the follow-ups of the changes stored with them.
type Admitted<F> = (AdmittedIds, F, Vec<(JobId, PendingChange)>);

/// What became of a submission's one insert, the jobs it admitted, and
/// the follow-ups of the changes stored with them.
type Stored = (Result<(), KilnError>, AdmittedIds, Vec<(JobId, PendingChange)>);

/// Waits for the one insert of a submission's admitted jobs.
async fn stored<F>(admitted: Result<Admitted<F>, KilnError>) -> Result<Stored, KilnError>
where
    F: Future<Output = Result<(), kiln_store::StoreError>>,
{
    let (admitted, stored, after) = admitted?;
    Ok((stored.await.map_err(KilnError::from), admitted, after))
}

impl Handler<SubmitJob> for JobQueue {
    type Result = ResponseActFuture<Self, Result<JobId, KilnError>>;

    fn handle(&mut self, msg: SubmitJob, ctx: &mut Context<Self>) -> Self::Result {
        let checked = self.core.check_not_drained().and_then(|()| {
            admission::validate(&msg.ops, msg.priority, &self.router.registry)?;
            msg.depends.iter().try_for_each(|d| admission::final_statuses(d.job, &d.statuses))
        });
        if let Err(e) = checked {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        // Dependencies on jobs this queue does not know must be archived
        // ones, looked up first; with none, the job is admitted in this turn.
        let unknown = self.core.unknown(msg.depends.iter().map(|d| d.job));
        if unknown.is_empty() {
            let admitted = self.admit_one(msg, Ok(Found::default()), ctx);
            return Box::pin(stored(admitted).into_actor(self).map(Self::one_submitted));
        }
        Box::pin(
            look_up_owned(self.store.clone(), unknown, self.clock.now())
                .into_actor(self)
                .then(move |found, act, ctx| stored(act.admit_one(msg, found, ctx)).into_actor(act))
                .map(Self::one_submitted),
        )
    }
}

impl Handler<SubmitJobs> for JobQueue {
    type Result = ResponseActFuture<Self, Result<Vec<JobId>, KilnError>>;

    fn handle(&mut self, SubmitJobs(jobs): SubmitJobs, ctx: &mut Context<Self>) -> Self::Result {
        let checked =
            self.core.check_not_drained().and_then(|()| admission::validate_many(&jobs, &self.router.registry));
        if let Err(e) = checked {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let named = jobs.iter().flat_map(|j| j.depends.iter()).filter_map(|d| match d.job {
            JobRef::Id(id) => Some(id),
            JobRef::Earlier(_) => None,
        });
        let unknown = self.core.unknown(named);
        if unknown.is_empty() {
            let admitted = self.admit_many(jobs, Ok(Found::default()), ctx);
            return Box::pin(stored(admitted).into_actor(self).map(Self::submitted));
        }
        Box::pin(
            look_up_owned(self.store.clone(), unknown, self.clock.now())
                .into_actor(self)
                .then(move |found, act, ctx| stored(act.admit_many(jobs, found, ctx)).into_actor(act))
                .map(Self::submitted),
        )
    }
}

impl JobQueue {
    /// Admits a submitted job ([`Self::admit`]).
    fn admit_one(
        &mut self,
        msg: SubmitJob,
        found: Result<Found, KilnError>,
        ctx: &mut Context<Self>,
    ) -> Result<Admitted<impl Future<Output = Result<(), kiln_store::StoreError>> + use<>>, KilnError> {
        let (held, effects, admitted) = self.admit(found, 1, ctx, move |core, now, effects| {
            let (view, entry) = core.admit(msg.ops, msg.priority, msg.depends, now, effects)?;
            let (id, status) = (view.id, view.status);
            let held = HeldInserts::admitted(view.clone(), entry.clone(), now);
            core.register(view, entry);
            core.place(id, now, effects);
            Ok((held, vec![(id, status)]))
        })?;
        Ok(self.insert_admitted(held, effects, admitted, ctx))
    }

    /// Admits a submission of several jobs ([`Self::admit`]): every insert
    /// goes to the store in one batch.
    fn admit_many(
        &mut self,
        jobs: Vec<NewJob>,
        found: Result<Found, KilnError>,
        ctx: &mut Context<Self>,
    ) -> Result<Admitted<impl Future<Output = Result<(), kiln_store::StoreError>> + use<>>, KilnError> {
        let (held, effects, admitted) = self.admit(found, jobs.len(), ctx, move |core, now, effects| {
            let (records, admitted) = core.admit_many(jobs, now, effects)?;
            core.place_all(admitted.iter().map(|(id, _)| *id), now, effects);
            Ok((HeldInserts::new(records, now), admitted))
        })?;
        Ok(self.insert_admitted(held, effects, admitted, ctx))
    }

    /// Admits `count` submitted jobs through `admit`, with what the store
    /// showed of the jobs they depend on. They join the queue, and may
    /// start and even end, before their insert goes to the store at the
    /// end of this turn ([`Self::insert_admitted`]), with the changes the
    /// turn made of them ([`super::held`]). An opcode acts only after its
    /// start is stored, so after the insert; no client is given an id
    /// before the insert is durable. Returns their held inserts, the
    /// effects still to run, and their ids and statuses.
    fn admit<A>(
        &mut self,
        found: Result<Found, KilnError>,
        count: usize,
        ctx: &mut Context<Self>,
        admit: A,
    ) -> Result<(HeldInserts, Vec<Effect>, AdmittedIds), KilnError>
    where
        A: FnOnce(
            &mut JobCore<Running>,
            kiln_store::Timestamp,
            &mut Vec<Effect>,
        ) -> Result<(HeldInserts, AdmittedIds), KilnError>,
    {
        let now = self.clock.now();
        let mut effects = Vec::new();
        let ready = found.and_then(|found| {
            self.core.learn(found);
            self.core.room_for(count)?;
            admit(&mut self.core, now, &mut effects)
        });
        match ready {
            Ok((held, admitted)) => Ok((held, effects, admitted)),
            Err(e) => {
                self.apply(effects, ctx);
                Err(e)
            }
        }
    }

    /// The submitter's answer once the insert of the jobs a submission
    /// admitted is durable, or refused: all are answered, or all withdrawn.
    fn submitted(
        res: Result<Stored, KilnError>,
        act: &mut Self,
        ctx: &mut Context<Self>,
    ) -> Result<Vec<JobId>, KilnError> {
        let (stored, admitted, after) = res?;
        match stored {
            Ok(()) => {
                for (_, status) in &admitted {
                    act.count_submitted(*status);
                }
                act.inserted(after, None, ctx);
                Ok(admitted.into_iter().map(|(id, _)| id).collect())
            }
            Err(refused) => {
                // The last first: none of them is then waited
                // for by one still here.
                for (id, _) in admitted.into_iter().rev() {
                    act.withdraw(id, ctx);
                }
                act.inserted(after, Some(refused.to_string()), ctx);
                Err(refused)
            }
        }
    }

    /// [`Self::submitted`] for a submission of one job.
    fn one_submitted(
        res: Result<Stored, KilnError>,
        act: &mut Self,
        ctx: &mut Context<Self>,
    ) -> Result<JobId, KilnError> {
        let ids = Self::submitted(res, act, ctx)?;
        ids.first().copied().ok_or_else(|| KilnError::Store("a submission of one job admitted none".into()))
    }
}

impl JobQueue {
    fn count_submitted(&self, status: JobStatus) {
        self.metrics.job_submitted();
        if status.is_finished() {
            self.metrics.job_ended(status, None);
        }
    }

    /// Takes out a job whose insert the store refused ([`JobCore::withdraw`]).
    /// It has acted on nothing: an opcode acts only once its start is
    /// stored, and that needs the row.
    fn withdraw(&mut self, id: JobId, ctx: &mut Context<Self>) {
        let mut effects = Vec::new();
        if let Some(mut job) = self.core.withdraw(id, self.clock.now(), &mut effects) {
            wake_all(&mut job);
        }
        self.apply(effects, ctx);
        self.report_depth();
    }
}

/// One job, live or archived, with its log.
#[derive(Debug, Message)]
#[rtype(result = "Result<JobView, KilnError>")]
pub struct GetJob(pub JobId);

impl Handler<GetJob> for JobQueue {
    type Result = ResponseFuture<Result<JobView, KilnError>>;
    fn handle(&mut self, GetJob(id): GetJob, _: &mut Context<Self>) -> Self::Result {
        if let Some(job) = self.core.active.get(&id) {
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
                .core
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
                        for (id, job) in act.core.active.range(first.id..=last.id) {
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
        let mut effects = Vec::new();
        let status = self.core.cancel(id, self.clock.now(), &mut effects)?;
        self.apply(effects, ctx);
        Ok(status)
    }
}

/// Moves an ended job out of the live table.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), KilnError>")]
pub struct ArchiveJob(pub JobId);

impl Handler<ArchiveJob> for JobQueue {
    type Result = ResponseActFuture<Self, Result<(), KilnError>>;
    fn handle(&mut self, ArchiveJob(id): ArchiveJob, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.core.check_archivable(id) {
            return Box::pin(actix::fut::ready(Err(e)));
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
            act.core.archived([id]);
            Ok(())
        }))
    }
}

/// Archives every live job that ended more than `age` ago by the site
/// clock; answers how many. The archive writes go to the store a wave at a
/// time ([`archive::ARCHIVE_WAVE`]).
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, KilnError>")]
pub struct ArchiveOld {
    pub age: Duration,
}

impl Handler<ArchiveOld> for JobQueue {
    type Result = ResponseActFuture<Self, Result<usize, KilnError>>;
    fn handle(&mut self, msg: ArchiveOld, _: &mut Context<Self>) -> Self::Result {
        let ids = archive::older_than(&self.core.ended, self.clock.now(), msg.age);
        let store = self.store.clone();
        Box::pin(
            async move {
                let mut results = Vec::with_capacity(ids.len());
                for wave in archive::waves(&ids) {
                    let commits = wave.iter().map(|id| store.commit(vec![Write::ArchiveJob(*id)]));
                    results.extend(futures::future::join_all(commits).await);
                }
                (results, ids)
            }
            .into_actor(self)
            .map(move |(results, ids), act, _| {
                let mut archived = Vec::new();
                let mut others = Vec::new();
                for (id, res) in ids.into_iter().zip(results) {
                    match res {
                        Ok(()) => archived.push(id),
                        // Another member's job (a shared store loads every
                        // member's ended jobs), or one no longer live (that
                        // member archived it): not this queue's to archive,
                        // so it forgets it as if archived, and no later wave
                        // tries again.
                        Err(kiln_store::StoreError::Fenced(_) | kiln_store::StoreError::NotFound(_)) => others.push(id),
                        Err(_) => {}
                    }
                }
                let count = archived.len();
                act.core.archived(archived.into_iter().chain(others));
                Ok(count)
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
        let old = match self.core.set_priority(id, new) {
            Err(e) => return Box::pin(async move { Err(e) }),
            Ok(PriorityChange::Unchanged(view)) => return Box::pin(async move { Ok(view) }),
            Ok(PriorityChange::Changed { old }) => old,
        };
        let (tx, rx) = oneshot::channel();
        let line = (LogLevel::Info, format!("priority changed from {old} to {new}"));
        self.commit_job(id, line, ctx, move |act, _, failure| {
            let Some(job) = act.core.active.get(&id) else {
                // Withdrawn: its insert was refused, so it never was.
                let _ = tx.send(Err(KilnError::NotFound(format!("no such job: {id}"))));
                return;
            };
            let answer = match failure {
                None => Ok(job.shown()),
                Some(why) => {
                    // Not durable: not told, and not kept either.
                    act.core.revert_priority(id, old, new);
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
        self.core.check_not_drained()
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
                act.core.drained = on;
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
        let mut effects = Vec::new();
        self.core.set_max_running(n, &mut effects);
        self.apply(effects, ctx);
        self.report_depth();
    }
}

/// The queue at a glance.
#[derive(Debug, Message)]
#[rtype(result = "QueueInfo")]
pub struct GetQueueInfo;

impl Handler<GetQueueInfo> for JobQueue {
    type Result = MessageResult<GetQueueInfo>;
    fn handle(&mut self, _: GetQueueInfo, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.info())
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
        if let Some(job) = self.core.active.get_mut(&id) {
            let change = change_after(job, msg.after_serial);
            if !change.log.is_empty() || msg.timeout.is_zero() {
                return Box::pin(async move { Ok(change) });
            }
            let (tx, rx) = oneshot::channel();
            job.shell.watchers.push((msg.after_serial, tx));
            let after = msg.after_serial;
            let timeout = self.clock.sleep(msg.timeout.min(Duration::from_secs(3600)));
            ctx.spawn(timeout.into_actor(self).map(move |(), act, _| {
                if let Some(job) = act.core.active.get_mut(&id) {
                    // Answer the watchers whose time is up (closed ones too).
                    let change = change_after(job, after);
                    let (due, keep): (Vec<_>, Vec<_>) =
                        job.shell.watchers.drain(..).partition(|(a, tx)| *a == after || tx.is_closed());
                    job.shell.watchers = keep;
                    for (_, tx) in due {
                        let _ = tx.send(change.clone());
                    }
                }
            }));
            return Box::pin(
                async move { rx.await.map_err(|_| KilnError::Unavailable("the job queue stopped".into())) },
            );
        }
        let store = self.store.clone();
        let after = msg.after_serial;
        let timeout = self.clock.sleep(msg.timeout.min(Duration::from_secs(3600)));
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
                timeout.await;
            }
            Ok(JobChange { id, status: r.status, log, progress: None })
        })
    }
}

/// Adopts jobs this member just took over from a member that died
/// ([`kiln_store::Backend::claim_orphan_jobs`]), as [`JobQueue::load`] takes
/// the jobs it finds at start: the restart rule ends a job the dead member
/// was running `error` ("the member running it died ..."), since its
/// opcodes may have acted, and queues a queued or waiting one again. The
/// repairs are committed before the answer, and what may run starts. A job
/// this queue already knows is left alone.
#[derive(Debug, Message)]
#[rtype(result = "Result<Adopted, KilnError>")]
pub struct AdoptJobs(pub Vec<JobRecord>);

/// What [`AdoptJobs`] made of the jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Queued or waiting: back in this queue.
    pub resumed: usize,
    /// Cut short (or unreadable): ended `error`.
    pub ended: usize,
}

impl Handler<AdoptJobs> for JobQueue {
    type Result = ResponseActFuture<Self, Result<Adopted, KilnError>>;
    fn handle(&mut self, AdoptJobs(records): AdoptJobs, _: &mut Context<Self>) -> Self::Result {
        let now = self.clock.now();
        let (repairs, resumed) = self.core.adopt(&records, now, restart::MEMBER_DIED);
        let adopted = Adopted { resumed, ended: repairs.len() };
        if !records.is_empty() {
            tracing::warn!(resumed, ended = adopted.ended, "adopted the jobs of a member that died");
        }
        let unknown = self.core.unknown(self.core.active.values().flat_map(|j| j.view.depends.iter().map(|d| d.job)));
        let store = self.store.clone();
        let commits: Vec<_> = repairs.into_iter().map(|r| store.send(vec![Write::PutJob(r)])).collect();
        let work = async move {
            let failed = futures::future::join_all(commits).await.into_iter().find_map(Result::err);
            let found = look_up(&store, unknown, now).await;
            (failed, found)
        };
        Box::pin(work.into_actor(self).map(move |(failed, found), act, ctx| {
            let found = found.map(|found| act.core.learn(found));
            let mut effects = Vec::new();
            act.core.promote_waiting(act.clock.now(), &mut effects);
            act.core.schedule(&mut effects);
            act.apply(effects, ctx);
            if let Some(e) = failed {
                tracing::error!(error = %e, "cannot store the end of an adopted job");
                return Err(KilnError::from(e));
            }
            found.map(|()| adopted)
        }))
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
        let mut effects = Vec::new();
        let running = self.core.stop_starting(msg.why, self.clock.now(), &mut effects);
        self.apply(effects, ctx);
        running
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
        let mut effects = Vec::new();
        let ended = self.core.abandon_running(&msg.why, self.clock.now(), &mut effects);
        self.apply(effects, ctx);
        ended
    }
}
