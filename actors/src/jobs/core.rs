//! The job queue's plain core: every decision of the queue, without actix,
//! I/O or a clock.
//!
//! [`JobCore`] holds the jobs that have not ended and what is known of the
//! ended ones, and decides: admission (ids, the `max_queued_jobs` limit,
//! where a new job goes), priorities, dependencies, which job starts next
//! under `max_running`, how an opcode's results end it, cancel, and when a
//! job ends. Time is an input (`now`, read by the actor from the site
//! clock), and what must happen outside is handed back as [`Effect`]s: the
//! actor ([`super::actor`]) commits, runs opcodes and answers callers. So
//! the queue's rules are tested with plain `#[test]`s (`jobs/tests.rs`).
//!
//! A job's effects come back in the order they must happen: a status change
//! is committed before a later one of the same job, and a job's end is
//! committed before the jobs that depend on it move on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kiln_store::{JobId, JobLogEntry, JobStatus, LogLevel, NodeId, Timestamp};

use super::admission;
use super::ended::EndedJobs;
use super::ids::JobIds;
use super::model::*;
use super::restart::{self, Recovered};
use crate::KilnError;

/// At most this many failed nodes get a line of their own in a job's log.
const MAX_NODE_LOG_LINES: usize = 100;

/// A log line to write: its level, its text, and the time it was made when
/// that is not the commit's (a sleep's start line waits for its end).
pub(super) type Line = (LogLevel, String, Option<Timestamp>);

/// What the actor keeps with each job beside the core's part (the handle
/// that stops its running work, its watchers): nothing in the core's tests.
pub(super) trait Shell: Default {
    /// The job is canceled or abandoned: its running work starts nothing new.
    fn request_cancel(&self) {}
}

impl Shell for () {}

/// A job that has not ended.
pub(super) struct Job<S> {
    pub(super) view: JobView,
    /// Nodes this job holds (its `hold` opcodes), released when it ends.
    pub(super) held: Vec<NodeId>,
    /// The status as last committed: what watchers see. `view.status` runs
    /// ahead of it while a commit is in flight, and a watcher told "ended"
    /// before the end's log line is committed would stop without it.
    pub(super) committed_status: JobStatus,
    /// Every log line written (handed to a commit), oldest first: a commit
    /// carries the whole log, so one built while another is in flight still
    /// holds that one's lines.
    pub(super) log: Vec<JobLogEntry>,
    /// How many of `log` are committed: what watchers see.
    pub(super) committed: usize,
    /// Log lines to commit with the job's next change.
    pub(super) pending: Vec<Line>,
    /// A cancel was asked for: the job starts no further opcode.
    pub(super) cancel_requested: bool,
    pub(super) shell: S,
}

impl<S: Shell> Job<S> {
    fn new(view: JobView, log: Vec<JobLogEntry>) -> Self {
        Job {
            committed_status: view.status,
            view,
            committed: log.len(),
            log,
            held: Vec::new(),
            pending: Vec::new(),
            cancel_requested: false,
            shell: S::default(),
        }
    }

    /// Appends `lines` to the log with the next serials. Serials are handed
    /// out when a line is written, not when its commit lands, so two commits
    /// in flight for one job never claim the same serial. Lines written
    /// together are committed together, and carry that one time (`now`).
    pub(super) fn write_lines(&mut self, lines: Vec<Line>, now: Timestamp) {
        let first = self.log.last().map_or(1, |e| e.serial + 1);
        let job = self.view.id;
        self.log.extend(lines.into_iter().zip(first..).map(|((level, message, at), serial)| JobLogEntry {
            job,
            serial,
            at: at.unwrap_or(now),
            level,
            message,
        }));
    }

    /// The view with the committed log: what `kiln job show` prints.
    pub(super) fn shown(&self) -> JobView {
        JobView { log: Some(self.log[..self.committed].to_vec()), ..self.view.clone() }
    }

    fn request_cancel(&mut self) {
        self.cancel_requested = true;
        self.shell.request_cancel();
    }
}

/// What a submission of several jobs admitted: their records to insert,
/// and their ids and statuses, in order.
pub(super) type Admitted = (Vec<kiln_store::JobRecord>, Vec<(JobId, JobStatus)>);

/// What the actor must do for the core.
#[derive(Debug, PartialEq)]
pub(super) enum Effect {
    /// Commit the job as it now is, with its pending lines and `line`.
    Commit { job: JobId, line: (LogLevel, String) },
    /// The job was started (it is `running`): run its first opcode
    /// ([`JobCore::start_op`]).
    Started(JobId),
    /// The job ended: release what it held, commit the end, then tell the
    /// core ([`JobCore::end_committed`]).
    End(JobEnd),
    /// Fetch a block of this many job ids from the store, then hand it to
    /// [`JobCore::add_id_block`] (or tell [`JobCore::id_block_failed`]).
    FetchIds(u64),
}

/// A job's end, as it is to be committed.
#[derive(Debug, PartialEq)]
pub(super) struct JobEnd {
    pub(super) job: JobId,
    pub(super) status: JobStatus,
    pub(super) line: (LogLevel, String),
    /// Nodes to release: however the job ends, what it held is let go.
    pub(super) held: Vec<NodeId>,
    pub(super) at: Timestamp,
    /// How long it ran, if it started.
    pub(super) ran: Option<Duration>,
}

/// What to do to run an opcode ([`JobCore::start_op`]).
#[derive(Debug, PartialEq)]
pub(super) struct OpStart {
    pub(super) opcode: Opcode,
    /// The opcode acts outside the job: its start must be committed with
    /// this line before it runs (after a crash the job is `error`, never run
    /// twice). `None`: nothing to protect; its start line goes out with its
    /// end, one commit fewer (a crash in between reruns it).
    pub(super) durable_start: Option<(LogLevel, String)>,
}

/// Why a dependency does or does not let a job run.
#[derive(Debug, PartialEq)]
pub(super) enum DepState {
    Met,
    Pending,
    Failed(String),
}

/// The outcome of [`JobCore::set_priority`] that the actor acts on.
#[derive(Debug, PartialEq)]
pub(super) enum PriorityChange {
    /// The job already has that priority: nothing to commit.
    Unchanged(JobView),
    /// Changed from `old`: commit, and put it back ([`JobCore::revert_priority`])
    /// if the commit fails.
    Changed { old: i32 },
}

/// The queue's state and rules.
pub(super) struct JobCore<S> {
    /// Boxed: a job leaves the map from its oldest end, and a B-tree
    /// removal shifts the node's other entries, a few hundred bytes each
    /// unboxed.
    pub(super) active: BTreeMap<JobId, Box<Job<S>>>,
    /// Jobs that have ended, live or archived: a status and a time each.
    pub(super) ended: EndedJobs,
    runnable: BTreeSet<(i32, JobId)>,
    waiting: BTreeSet<JobId>,
    /// The waiting jobs by a job they wait for (under each such job), so
    /// that a job's end looks at its own dependents only, not at every
    /// waiting job. Entries for jobs that have since left `waiting` are
    /// skipped when read.
    dependents: BTreeMap<JobId, Vec<JobId>>,
    /// Jobs another member runs (on a shared store) that jobs here wait
    /// for: pending until the store shows them ended ([`JobCore::ended_elsewhere`]).
    elsewhere: BTreeSet<JobId>,
    ids: JobIds,
    pub(super) drained: bool,
    running: usize,
    max_running: usize,
    /// At most this many jobs that have not ended (`active`).
    max_queued: usize,
    /// Set at a graceful shutdown: no job and no opcode starts any more;
    /// the reason goes into the jobs cut short.
    stopping: Option<String>,
}

impl<S: Shell> JobCore<S> {
    /// An empty queue that gives out `ids`.
    pub(super) fn new(ids: JobIds, max_running: usize, max_queued: usize, drained: bool) -> Self {
        JobCore {
            active: BTreeMap::new(),
            ended: EndedJobs::default(),
            runnable: BTreeSet::new(),
            waiting: BTreeSet::new(),
            dependents: BTreeMap::new(),
            elsewhere: BTreeSet::new(),
            ids,
            drained,
            running: 0,
            max_running: max_running.max(1),
            max_queued: max_queued.max(1),
            stopping: None,
        }
    }

    /// Applies the restart rule ([`restart::recover`], `why` saying what
    /// cut a running job short) to jobs found unfinished in the store, at
    /// load or when adopted from a dead member: queued and waiting ones are
    /// resumed, the others are ended. Returns the records of the ended ones
    /// to store, and how many were resumed. A job already known here is
    /// left alone. Nothing starts until [`JobCore::promote_waiting`].
    pub(super) fn adopt(
        &mut self,
        records: &[kiln_store::JobRecord],
        now: Timestamp,
        why: &str,
    ) -> (Vec<kiln_store::JobRecord>, usize) {
        let (mut repairs, mut resumed) = (Vec::new(), 0);
        for r in records {
            if self.active.contains_key(&r.id) || self.ended.contains(r.id) {
                continue;
            }
            match restart::recover(r, now, why) {
                Recovered::Resume { view, log } => {
                    self.resume(view, log);
                    resumed += 1;
                }
                Recovered::Ended { id, status, at, repair } => {
                    repairs.extend(repair);
                    self.ended.ended(id, status, at);
                }
            }
        }
        (repairs, resumed)
    }

    /// Takes back a job the restart rule resumes (queued or waiting, with
    /// its log): it waits until [`JobCore::promote_waiting`] looks at it.
    pub(super) fn resume(&mut self, view: JobView, log: Vec<JobLogEntry>) {
        let id = view.id;
        self.active.insert(id, Box::new(Job::new(view, log)));
        self.hold(id);
    }

    /// How many jobs are queued, waiting and running.
    pub(super) fn depth(&self) -> (usize, usize, usize) {
        (self.runnable.len(), self.waiting.len(), self.running)
    }

    pub(super) fn set_max_running(&mut self, n: usize, out: &mut Vec<Effect>) {
        self.max_running = n.max(1);
        self.schedule(out);
    }

    /// The queue at a glance.
    pub(super) fn info(&self) -> QueueInfo {
        // Counted by status first, named once each: no string per job.
        let mut counts: BTreeMap<JobStatus, usize> = self.ended.live_counts().collect();
        for j in self.active.values() {
            *counts.entry(j.view.status).or_default() += 1;
        }
        QueueInfo {
            drained: self.drained,
            by_status: counts.into_iter().map(|(status, n)| (status.to_string(), n)).collect(),
            running: self.running,
            max_running: self.max_running,
            unfinished: self.active.len(),
            max_queued: self.max_queued,
            last_job_id: self.ids.last_given(),
        }
    }

    // ----- dependencies ----------------------------------------------------

    pub(super) fn dep_state(&self, dep: &Dependency) -> DepState {
        match self.ended.get(dep.job) {
            Some((status, _)) if dep.statuses.is_empty() || dep.statuses.contains(&status) => DepState::Met,
            Some((status, _)) => DepState::Failed(format!(
                "dependency on job {} cannot be met: it ended as {status}, not {}",
                dep.job,
                dep.statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ")
            )),
            None if self.active.contains_key(&dep.job) || self.elsewhere.contains(&dep.job) => DepState::Pending,
            None => DepState::Failed(format!("dependency on job {} cannot be met: no such job", dep.job)),
        }
    }

    /// Where a job with these dependencies stands now.
    pub(super) fn deps_state(&self, deps: &[Dependency]) -> DepState {
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
    pub(super) fn waited_for(&self) -> BTreeSet<JobId> {
        let waiting = self.waiting.iter().filter_map(|id| self.active.get(id));
        waiting.flat_map(|job| job.view.depends.iter().map(|d| d.job)).collect()
    }

    /// Looks at every waiting job once (at start, when jobs come back from
    /// the store); later, a job's end looks at its own dependents only.
    pub(super) fn promote_waiting(&mut self, now: Timestamp, out: &mut Vec<Effect>) {
        let ids: Vec<JobId> = self.waiting.iter().copied().collect();
        for id in ids {
            self.recheck(id, now, out);
        }
    }

    /// Moves a waiting job on if its dependencies allow: to the run queue
    /// when they are met, to `error` when one cannot be.
    fn recheck(&mut self, id: JobId, now: Timestamp, out: &mut Vec<Effect>) {
        if !self.waiting.contains(&id) {
            return;
        }
        let Some(job) = self.active.get(&id) else { return };
        match self.deps_state(&job.view.depends) {
            DepState::Pending => {
                if job.view.status != JobStatus::Waiting {
                    self.set_status(id, JobStatus::Waiting, LogLevel::Info, "waiting for dependencies", out);
                }
            }
            DepState::Met => {
                self.waiting.remove(&id);
                self.runnable.insert((job.view.priority, id));
                if job.view.status != JobStatus::Queued {
                    self.set_status(id, JobStatus::Queued, LogLevel::Info, "dependencies met; queued", out);
                }
            }
            DepState::Failed(why) => {
                self.waiting.remove(&id);
                self.finish(id, JobStatus::Error, Some(why), now, out);
            }
        }
    }

    /// The jobs waiting for `id`, which has ended or is gone, move on if
    /// they can.
    fn recheck_dependents(&mut self, id: JobId, now: Timestamp, out: &mut Vec<Effect>) {
        let Some(dependents) = self.dependents.remove(&id) else { return };
        for waiting in dependents {
            self.recheck(waiting, now, out);
        }
    }

    fn set_status(&mut self, id: JobId, status: JobStatus, level: LogLevel, message: &str, out: &mut Vec<Effect>) {
        if let Some(job) = self.active.get_mut(&id) {
            job.view.status = status;
            out.push(Effect::Commit { job: id, line: (level, message.to_string()) });
        }
    }

    // ----- admission -------------------------------------------------------

    /// The jobs among `ids` this queue does not know (archived, or never).
    pub(super) fn unknown(&self, ids: impl Iterator<Item = JobId>) -> Vec<JobId> {
        let unknown: BTreeSet<JobId> =
            ids.filter(|id| !self.active.contains_key(id) && !self.ended.contains(*id)).collect();
        unknown.into_iter().collect()
    }

    /// Jobs found in the archive (for dependencies on them): how they ended.
    pub(super) fn learn_archived(&mut self, found: Vec<(JobId, JobStatus, Timestamp)>) {
        for (id, status, at) in found {
            self.ended.found_archived(id, status, at);
        }
    }

    /// Jobs found in the store that another member runs and that have not
    /// ended: a job here may wait for them.
    pub(super) fn learn_elsewhere(&mut self, ids: impl IntoIterator<Item = JobId>) {
        self.elsewhere.extend(ids.into_iter().filter(|id| !self.active.contains_key(id) && !self.ended.contains(*id)));
    }

    /// The jobs of other members that jobs here wait for, to look up in
    /// the store; one this queue has since adopted or seen end is dropped.
    pub(super) fn waited_elsewhere(&mut self) -> Vec<JobId> {
        let (active, ended) = (&self.active, &self.ended);
        self.elsewhere.retain(|id| !active.contains_key(id) && !ended.contains(*id));
        self.elsewhere.iter().copied().collect()
    }

    /// How jobs of other members ended, as the store shows them (`None`:
    /// the store has no such job): their dependents move on.
    pub(super) fn ended_elsewhere(
        &mut self,
        found: Vec<(JobId, Option<(JobStatus, Timestamp)>)>,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        for (id, end) in found {
            if !self.elsewhere.remove(&id) {
                continue;
            }
            if let Some((status, at)) = end {
                self.ended.found_archived(id, status, at);
            }
            self.recheck_dependents(id, now, out);
        }
    }

    /// Refuses every submission while the queue is drained.
    pub(super) fn check_not_drained(&self) -> Result<(), KilnError> {
        if self.drained { Err(KilnError::Drained) } else { Ok(()) }
    }

    /// Refuses a submission of `adding` jobs that would leave more than
    /// `max_queued_jobs` jobs not ended.
    pub(super) fn room_for(&self, adding: usize) -> Result<(), KilnError> {
        admission::room_for(self.active.len(), adding, self.max_queued)
    }

    /// A block of ids arrived from the store.
    pub(super) fn add_id_block(&mut self, first: u64, size: u64) {
        self.ids.add_block(first, size);
    }

    /// The block of ids asked for could not be fetched; the next
    /// admission asks again.
    pub(super) fn id_block_failed(&mut self) {
        self.ids.block_failed();
    }

    /// Asks for the next block of ids ([`Effect::FetchIds`]) when it is
    /// time to.
    fn want_ids(&mut self, out: &mut Vec<Effect>) {
        if let Some(size) = self.ids.want_block() {
            out.push(Effect::FetchIds(size));
        }
    }

    /// Refuses a submission of `n` jobs for which no ids are left, before
    /// any is given out (and asks for more).
    fn check_ids(&mut self, n: usize, out: &mut Vec<Effect>) -> Result<(), KilnError> {
        let checked = self.ids.check(n);
        self.want_ids(out);
        checked
    }

    /// Assigns the id and builds the job as it will be stored, submitted
    /// at `now`. The caller then [`JobCore::register`]s it. Refused when no
    /// id is left; asks for the next block of ids when it is time to.
    pub(super) fn admit(
        &mut self,
        ops: Vec<Opcode>,
        priority: i32,
        depends: Vec<Dependency>,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) -> Result<(JobView, JobLogEntry), KilnError> {
        self.check_ids(1, out)?;
        self.admit_with_id(ops, priority, depends, now, out)
    }

    /// [`JobCore::admit`] once the ids are checked: taking one fails only
    /// if the check was not made.
    fn admit_with_id(
        &mut self,
        ops: Vec<Opcode>,
        priority: i32,
        depends: Vec<Dependency>,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) -> Result<(JobView, JobLogEntry), KilnError> {
        let id = self.ids.take()?;
        self.want_ids(out);
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
        Ok((view, JobLogEntry { job: id, serial: 1, at: now, level, message }))
    }

    /// Admits the jobs of one submission in order, each known to the queue
    /// before the next is admitted (so a later one sees an earlier one it
    /// depends on). Returns their records to insert, and their ids and
    /// statuses. The caller then [`JobCore::place`]s each. Refused, with no
    /// id given out, when fewer ids are left than jobs. One submission's
    /// ids need not follow each other (they may span two blocks), so a
    /// reference to an earlier job is resolved by its place.
    pub(super) fn admit_many(
        &mut self,
        jobs: Vec<NewJob>,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) -> Result<Admitted, KilnError> {
        self.check_ids(jobs.len(), out)?;
        let mut records = Vec::with_capacity(jobs.len());
        let mut admitted: Vec<(JobId, JobStatus)> = Vec::with_capacity(jobs.len());
        for (k, job) in jobs.into_iter().enumerate() {
            let depends = job
                .depends
                .into_iter()
                .map(|d| Dependency {
                    // Checked by `validate_many`: 1 ≤ n ≤ k.
                    job: match d.job {
                        JobRef::Id(id) => id,
                        JobRef::Earlier(n) => admitted[k - n as usize].0,
                    },
                    statuses: d.statuses,
                })
                .collect();
            let (view, entry) = self.admit_with_id(job.ops, job.priority, depends, now, out)?;
            records.push(view.to_record(vec![entry.clone()]));
            admitted.push((view.id, view.status));
            self.register(view, entry);
        }
        Ok((records, admitted))
    }

    /// Makes an admitted job known: among the active jobs, or, when it
    /// ended at admission (a dependency that cannot be met), the ended.
    pub(super) fn register(&mut self, view: JobView, entry: JobLogEntry) {
        let id = view.id;
        if view.status.is_finished() {
            let at = view.ended_at.unwrap_or(entry.at);
            self.ended.ended(id, view.status, at);
            return;
        }
        self.active.insert(id, Box::new(Job::new(view, vec![entry])));
    }

    /// Puts a registered job where it belongs, the run queue or among the
    /// waiting, and starts what may start.
    pub(super) fn place(&mut self, id: JobId, now: Timestamp, out: &mut Vec<Effect>) {
        self.place_one(id, now, out);
        self.schedule(out);
    }

    /// [`JobCore::place`] for every job of a submission, then one schedule.
    pub(super) fn place_all(&mut self, ids: impl Iterator<Item = JobId>, now: Timestamp, out: &mut Vec<Effect>) {
        for id in ids {
            self.place_one(id, now, out);
        }
        self.schedule(out);
    }

    fn place_one(&mut self, id: JobId, now: Timestamp, out: &mut Vec<Effect>) {
        let Some(job) = self.active.get(&id) else { return };
        if job.view.status == JobStatus::Waiting {
            self.hold(id);
            // A dependency may have ended since the job was admitted.
            self.recheck(id, now, out);
        } else {
            self.runnable.insert((job.view.priority, id));
        }
    }

    /// Takes out a job whose insert the store refused. Nobody was told its
    /// id, and no change of it can be stored, so it leaves as if never
    /// submitted; its running work is canceled. Returns the job (its
    /// watchers are to be answered).
    pub(super) fn withdraw(&mut self, id: JobId, now: Timestamp, out: &mut Vec<Effect>) -> Option<Box<Job<S>>> {
        self.ended.forget(id);
        let mut job = self.active.remove(&id)?;
        job.request_cancel();
        self.runnable.remove(&(job.view.priority, id));
        self.waiting.remove(&id);
        if job.view.started_at.is_some() {
            // Counted as running since it started; its end, if one is on
            // its way, finds it gone and counts nothing.
            self.running -= 1;
        }
        self.recheck_dependents(id, now, out);
        self.schedule(out);
        Some(job)
    }

    // ----- running ---------------------------------------------------------

    /// Starts runnable jobs, highest priority (lowest number) and oldest
    /// first, while fewer than `max_running` run.
    pub(super) fn schedule(&mut self, out: &mut Vec<Effect>) {
        while self.running < self.max_running && self.stopping.is_none() {
            let Some((_, id)) = self.runnable.pop_first() else { break };
            if !self.active.contains_key(&id) {
                continue;
            }
            self.running += 1;
            out.push(Effect::Started(id));
        }
    }

    /// Marks a job [`Effect::Started`] running from `now`.
    pub(super) fn mark_started(&mut self, id: JobId, now: Timestamp) -> Option<&JobView> {
        let job = self.active.get_mut(&id)?;
        job.view.status = JobStatus::Running;
        job.view.started_at = Some(now);
        Some(&job.view)
    }

    /// Opcode `idx` of a running job is to start at `now`: what to run,
    /// or nothing when the job ends instead (canceled, done, or stopping).
    pub(super) fn start_op(&mut self, id: JobId, idx: usize, now: Timestamp, out: &mut Vec<Effect>) -> Option<OpStart> {
        let job = self.active.get_mut(&id)?;
        if job.cancel_requested {
            self.finish(id, JobStatus::Canceled, Some("canceled".into()), now, out);
            return None;
        }
        let total = job.view.ops.len();
        if idx >= total {
            self.finish(id, JobStatus::Success, None, now, out);
            return None;
        }
        if let Some(why) = &self.stopping {
            let error = format!("{why}: opcode {}/{total} was not started", idx + 1);
            self.finish(id, JobStatus::Error, Some(error), now, out);
            return None;
        }
        let op = &mut job.view.ops[idx];
        op.status = JobStatus::Running;
        op.started_at = Some(now);
        let opcode = op.opcode.clone();
        let message = format!("opcode {}/{total} started: {}", idx + 1, opcode.summary());
        let durable_start = if opcode.has_side_effects() {
            Some((LogLevel::Info, message))
        } else {
            job.pending.push((LogLevel::Info, message, Some(now)));
            None
        };
        Some(OpStart { opcode, durable_start })
    }

    /// The nodes an opcode holds from now on (its `hold` results).
    pub(super) fn held(&mut self, id: JobId, nodes: impl Iterator<Item = NodeId>) {
        if let Some(job) = self.active.get_mut(&id) {
            job.held.extend(nodes);
        }
    }

    /// Opcode `idx` ended at `now` with `results` (and `error` when it
    /// failed as a whole): records them, then ends the job or answers the
    /// next opcode to start.
    pub(super) fn op_done(
        &mut self,
        id: JobId,
        idx: usize,
        results: Vec<NodeResult>,
        error: Option<String>,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) -> Option<usize> {
        let job = self.active.get_mut(&id)?;
        if job.view.status.is_finished() {
            // Ended meanwhile (abandoned at shutdown): the result comes too late.
            return None;
        }
        // Nodes a cancel kept from starting did not fail: they are counted
        // and named apart.
        let not_started = |r: &&NodeResult| r.error_kind() == Some("canceled");
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
                let error = r.error.as_ref().map_or("failed", |e| e.message.as_str());
                tracing::warn!(opcode = idx + 1, node_name = %r.node, error, "node failed");
            }
        });
        let mut lines: Vec<Line> =
            failed.iter().take(MAX_NODE_LOG_LINES).map(|r| (LogLevel::Warning, node_failure(r), None)).collect();
        if !skipped.is_empty() {
            let set = crate::nodeset::NodeSet::from_names(skipped.iter().copied()).fold();
            lines.push((LogLevel::Warning, format!("nodes not started (the job was canceled): {set}"), None));
        }
        let canceled = job.cancel_requested;
        let op = &mut job.view.ops[idx];
        op.results = results;
        op.ended_at = Some(now);
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
            _ if canceled => self.finish(id, JobStatus::Canceled, Some("canceled".into()), now, out),
            Some(e) => self.finish(id, JobStatus::Error, Some(e), now, out),
            None => return Some(idx + 1),
        }
        None
    }

    /// Ends a job at `now`: out of the run queues, its opcodes not run end
    /// with it, and its end is to be committed ([`Effect::End`]).
    pub(super) fn finish(
        &mut self,
        id: JobId,
        status: JobStatus,
        error: Option<String>,
        now: Timestamp,
        out: &mut Vec<Effect>,
    ) {
        let Some(job) = self.active.get_mut(&id) else { return };
        if job.view.status.is_finished() {
            // Already ending: its end is being committed.
            return;
        }
        let ran = job.view.started_at.map(|at| (now - at).to_std().unwrap_or_default());
        job.view.status = status;
        job.view.ended_at = Some(now);
        job.view.error = error;
        let leftover = if status == JobStatus::Canceled { JobStatus::Canceled } else { JobStatus::Error };
        for op in job.view.ops.iter_mut().filter(|o| !o.status.is_finished()) {
            op.status = leftover;
        }
        // Out of the run queues now, so nothing starts it while the end commits.
        self.runnable.remove(&(job.view.priority, id));
        self.waiting.remove(&id);
        let level = match status {
            JobStatus::Success => LogLevel::Info,
            JobStatus::Canceled => LogLevel::Warning,
            _ => LogLevel::Error,
        };
        let line = match &job.view.error {
            // "canceled (canceled)" says nothing twice.
            Some(e) if e != status.as_str() => (level, format!("job ended: {status} ({e})")),
            _ => (level, format!("job ended: {status}")),
        };
        job_span(id).in_scope(|| match &job.view.error {
            Some(e) => tracing::warn!(status = %status, error = %e, "job ended"),
            None => tracing::info!(status = %status, "job ended"),
        });
        let held = std::mem::take(&mut job.held);
        out.push(Effect::End(JobEnd { job: id, status, line, held, at: now, ran }));
    }

    /// A job's end is committed (or its commit failed: it ends all the
    /// same): it leaves the active jobs, and the jobs that waited for it
    /// move on. Returns it, unless it was withdrawn meanwhile (its insert
    /// was refused: there is no end to record).
    pub(super) fn end_committed(&mut self, end: &JobEnd, now: Timestamp, out: &mut Vec<Effect>) -> Option<Box<Job<S>>> {
        let job = self.active.remove(&end.job)?;
        self.ended.ended(end.job, end.status, end.at);
        if job.view.started_at.is_some() {
            self.running -= 1;
        }
        self.recheck_dependents(end.job, now, out);
        self.schedule(out);
        Some(job)
    }

    // ----- operators -------------------------------------------------------

    /// Why `id` is not live, for a verb that needs a live job.
    fn not_live(&self, id: JobId, only: &str) -> KilnError {
        match self.ended.get(id) {
            Some((status, _)) => KilnError::InvalidInput(format!("job {id} already ended: {status}{only}")),
            // Ids are serial: a lower one not live here was archived (the
            // queue forgets archived jobs) or never stored. On a shared
            // store it may also be another member's.
            None if id.0 <= self.ids.last_given() && self.ids.shared() => KilnError::InvalidInput(format!(
                "job {id} is not in this member's live queue: it ended, or another member runs it{only}"
            )),
            None if id.0 <= self.ids.last_given() => {
                KilnError::InvalidInput(format!("job {id} already ended: it is not in the live queue{only}"))
            }
            None => KilnError::NotFound(format!("no such job: {id}")),
        }
    }

    /// Cancels a job at `now`: at once if it has not started, before its
    /// next opcode (and its next node) if it runs.
    pub(super) fn cancel(&mut self, id: JobId, now: Timestamp, out: &mut Vec<Effect>) -> Result<JobStatus, KilnError> {
        let Some(job) = self.active.get_mut(&id) else { return Err(self.not_live(id, "")) };
        job.request_cancel();
        match job.view.status {
            JobStatus::Queued | JobStatus::Waiting => {
                self.finish(id, JobStatus::Canceled, Some("canceled before it started".into()), now, out);
                Ok(JobStatus::Canceled)
            }
            JobStatus::Running => {
                let message = "cancel requested; stopping before the next opcode";
                self.set_status(id, JobStatus::Canceling, LogLevel::Warning, message, out);
                Ok(JobStatus::Canceling)
            }
            other => Ok(other),
        }
    }

    /// Changes the priority of a job that has not started (queued or
    /// waiting). A running or ended job is refused: its priority no longer
    /// orders anything.
    pub(super) fn set_priority(&mut self, id: JobId, new: i32) -> Result<PriorityChange, KilnError> {
        admission::check_priority(new)?;
        let only = "only a queued or waiting job's priority can change";
        let Some(job) = self.active.get_mut(&id) else {
            return Err(match self.ended.get(id) {
                Some((status, _)) => KilnError::InvalidInput(format!("job {id} already ended ({status}); {only}")),
                None => self.not_live(id, &format!("; {only}")),
            });
        };
        let old = job.view.priority;
        match job.view.status {
            JobStatus::Queued | JobStatus::Waiting => {}
            other => return Err(KilnError::InvalidInput(format!("job {id} is {other}; {only}"))),
        }
        if old == new {
            return Ok(PriorityChange::Unchanged(job.shown()));
        }
        job.view.priority = new;
        if self.runnable.remove(&(old, id)) {
            self.runnable.insert((new, id));
        }
        Ok(PriorityChange::Changed { old })
    }

    /// A priority change that could not be stored is not kept either.
    pub(super) fn revert_priority(&mut self, id: JobId, old: i32, new: i32) {
        let Some(job) = self.active.get_mut(&id) else { return };
        if job.view.priority == new && !job.view.status.is_finished() {
            job.view.priority = old;
            if self.runnable.remove(&(new, id)) {
                self.runnable.insert((old, id));
            }
        }
    }

    /// Refuses to archive a job that has not ended.
    pub(super) fn check_archivable(&self, id: JobId) -> Result<(), KilnError> {
        match self.active.get(&id) {
            Some(job) => Err(KilnError::InvalidInput(format!(
                "job {id} is {}; only ended jobs can be archived",
                job.view.status
            ))),
            None => Ok(()),
        }
    }

    /// The jobs of `ids` are in the archive now.
    pub(super) fn archived(&mut self, ids: impl IntoIterator<Item = JobId>) {
        let needed = self.waited_for();
        for id in ids {
            self.ended.archived(id, needed.contains(&id));
        }
    }

    /// A graceful shutdown's first step, at `now`: no job and no opcode
    /// starts from now on, and a job in a sleep ends at once (waiting out a
    /// sleep protects nothing). Answers how many jobs run.
    pub(super) fn stop_starting(&mut self, why: String, now: Timestamp, out: &mut Vec<Effect>) -> usize {
        let sleeping: Vec<JobId> = self
            .active
            .iter()
            .filter(|(_, j)| {
                j.view.ops.iter().any(|o| o.status == JobStatus::Running && matches!(o.opcode, Opcode::Sleep { .. }))
            })
            .map(|(id, _)| *id)
            .collect();
        let during = format!("{why} during a sleep");
        self.stopping = Some(why);
        for id in sleeping {
            self.abandon(id, &during, now, out);
        }
        self.running
    }

    /// A graceful shutdown's last step: every running job ends `error` with
    /// `why` now, as the restart rule would end it. Answers how many.
    pub(super) fn abandon_running(&mut self, why: &str, now: Timestamp, out: &mut Vec<Effect>) -> usize {
        self.stopping.get_or_insert_with(|| why.to_string());
        let running: Vec<JobId> = self
            .active
            .iter()
            .filter(|(_, j)| matches!(j.view.status, JobStatus::Running | JobStatus::Canceling))
            .map(|(id, _)| *id)
            .collect();
        for id in &running {
            self.abandon(*id, why, now, out);
        }
        running.len()
    }

    /// Ends a running job `error` with `why` now: it starts no further node
    /// or opcode, and its running opcode ends with `why`.
    fn abandon(&mut self, id: JobId, why: &str, now: Timestamp, out: &mut Vec<Effect>) {
        if let Some(job) = self.active.get_mut(&id) {
            job.request_cancel();
            for op in job.view.ops.iter_mut().filter(|o| o.status == JobStatus::Running) {
                op.ended_at = Some(now);
                op.error = Some(why.to_string());
            }
        }
        self.finish(id, JobStatus::Error, Some(why.to_string()), now, out);
    }
}

/// The span a job's work runs in: every log line of the job carries its id.
pub(super) fn job_span(id: JobId) -> tracing::Span {
    tracing::info_span!("job", job = %id)
}

/// A failed node's log line: `node NAME: ERROR`, without naming the node
/// twice when the error does.
fn node_failure(r: &NodeResult) -> String {
    let error = r.error.as_ref().map_or("failed", |e| e.message.as_str());
    let named =
        error.strip_prefix("node ").and_then(|e| e.strip_prefix(r.node.as_str())).is_some_and(|e| e.starts_with(':'));
    if named { error.to_string() } else { format!("node {}: {error}", r.node) }
}
