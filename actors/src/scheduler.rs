//! The scheduler actor: Nova's periodic tasks as actor messages
//! (docs/jobs.md, "Periodic tasks").
//!
//! [`Schedule`] is the plain part: which task is due when, given an
//! `Instant`, so it is tested with made-up instants and no clock at all. The
//! [`Scheduler`] actor is the shell: it sleeps until the next due task (one
//! timer, no polling), runs each task in a spawned tokio task so a panic is a
//! counted failure rather than a dead scheduler, never starts a task that is
//! still running, and keeps what `kiln periodic list` shows.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use actix::prelude::*;
use chrono::Utc;
use futures::future::BoxFuture;
use kiln_store::Timestamp;
use serde::{Deserialize, Serialize};

use crate::KilnError;

/// Why a run of a periodic task failed, in the task's words (shown by
/// `kiln periodic list` and logged; the scheduler goes on either way).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TaskFailed(pub String);

impl From<String> for TaskFailed {
    fn from(why: String) -> Self {
        TaskFailed(why)
    }
}

impl From<&str> for TaskFailed {
    fn from(why: &str) -> Self {
        TaskFailed(why.to_string())
    }
}

impl From<KilnError> for TaskFailed {
    fn from(e: KilnError) -> Self {
        TaskFailed(crate::error::error_chain(&e))
    }
}

/// How a run of a periodic task ends: a one-line summary, or why it failed.
pub type TaskResult = Result<String, TaskFailed>;

/// What a periodic task runs: a future that ends with a [`TaskResult`].
pub type TaskFn = Arc<dyn Fn() -> BoxFuture<'static, TaskResult> + Send + Sync>;

/// A task to register.
#[derive(Clone)]
pub struct PeriodicTask {
    pub name: String,
    /// Time between the start of one run and the next (0 = every tick).
    pub spacing: Duration,
    pub run_immediately: bool,
    pub enabled: bool,
    pub run: TaskFn,
}

/// How often a task with spacing 0 runs: the scheduler's tick.
pub const TICK: Duration = Duration::from_secs(1);

/// One task's place in the schedule.
#[derive(Clone, Debug)]
pub struct Slot {
    pub name: String,
    pub spacing: Duration,
    pub enabled: bool,
    pub next_due: Instant,
    pub running: bool,
}

/// Which task is due when. Pure: every method takes `now`.
#[derive(Debug, Default)]
pub struct Schedule {
    pub slots: Vec<Slot>,
}

impl Schedule {
    /// Adds a task; it is first due now (`run_immediately`) or one spacing
    /// from now.
    pub fn add(&mut self, name: &str, spacing: Duration, run_immediately: bool, enabled: bool, now: Instant) {
        let next_due = if run_immediately { now } else { now + spacing.max(TICK) };
        self.slots.push(Slot { name: name.into(), spacing, enabled, next_due, running: false });
    }

    /// The tasks to start now: enabled, due, and not running.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| {
                let s = &self.slots[i];
                s.enabled && !s.running && s.next_due <= now
            })
            .collect()
    }

    /// Marks a task started at `now`. A run on schedule keeps the schedule
    /// (the next is one spacing after it was due, so timer latency does not
    /// drift it); a run out of turn (`kiln periodic run`) starts it anew.
    pub fn started(&mut self, i: usize, now: Instant) {
        let s = &mut self.slots[i];
        s.running = true;
        let spacing = s.spacing.max(TICK);
        let next = if s.next_due <= now { s.next_due + spacing } else { now + spacing };
        s.next_due = next.max(now);
    }

    /// Marks a task finished.
    pub fn finished(&mut self, i: usize) {
        self.slots[i].running = false;
    }

    /// When the scheduler must wake next (`None`: nothing to wait for).
    pub fn next_wake(&self) -> Option<Instant> {
        self.slots.iter().filter(|s| s.enabled && !s.running).map(|s| s.next_due).min()
    }

    /// Changes a task's spacing and enabled flag. A new spacing counts from
    /// now (a task due sooner keeps its time); a task enabled again is due
    /// one spacing from now.
    pub fn retune(&mut self, i: usize, spacing: Duration, enabled: bool, now: Instant) {
        let s = &mut self.slots[i];
        if spacing != s.spacing || (enabled && !s.enabled) {
            let next = now + spacing.max(TICK);
            s.next_due = if s.enabled && enabled { s.next_due.min(next) } else { next };
        }
        s.spacing = spacing;
        s.enabled = enabled;
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.name == name)
    }
}

/// What `kiln periodic list` shows of a task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodicInfo {
    pub name: String,
    pub spacing_s: u64,
    pub enabled: bool,
    pub running: bool,
    pub last_run: Option<Timestamp>,
    pub last_duration_ms: Option<u64>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub runs: u64,
    pub failures: u64,
    /// When the task is due next (`None` while it is disabled or running:
    /// its next time is set when the run ends).
    #[serde(default)]
    pub next_run: Option<Timestamp>,
}

/// The scheduler actor.
pub struct Scheduler {
    schedule: Schedule,
    runs: Vec<TaskFn>,
    info: Vec<PeriodicInfo>,
    /// Callers of `RunPeriodic` waiting for a run's end, by task.
    waiting: Vec<Vec<tokio::sync::oneshot::Sender<PeriodicInfo>>>,
    timer: Option<SpawnHandle>,
}

impl Scheduler {
    pub fn new(tasks: Vec<PeriodicTask>) -> Self {
        let now = Instant::now();
        let mut s =
            Scheduler { schedule: Schedule::default(), runs: vec![], info: vec![], waiting: vec![], timer: None };
        for t in tasks {
            s.push(t, now);
        }
        s
    }

    fn push(&mut self, t: PeriodicTask, now: Instant) {
        self.schedule.add(&t.name, t.spacing, t.run_immediately, t.enabled, now);
        self.info.push(PeriodicInfo {
            name: t.name.clone(),
            spacing_s: t.spacing.as_secs(),
            enabled: t.enabled,
            ..Default::default()
        });
        self.runs.push(t.run);
        self.waiting.push(Vec::new());
    }

    /// Sets the one timer for the next due task.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        if let Some(at) = self.schedule.next_wake() {
            let wait = at.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                act.tick(ctx);
            }));
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        for i in self.schedule.due(Instant::now()) {
            self.start(i, ctx);
        }
        self.arm(ctx);
    }

    fn start(&mut self, i: usize, ctx: &mut Context<Self>) {
        let began = Instant::now();
        self.schedule.started(i, began);
        self.info[i].running = true;
        self.info[i].last_run = Some(Utc::now());
        let name = self.info[i].name.clone();
        // The run's own lines carry the task's name.
        let span = tracing::info_span!("periodic", task = %name);
        let running = tokio::spawn(tracing::Instrument::instrument((self.runs[i])(), span));
        ctx.spawn(running.into_actor(self).map(move |joined, act, ctx| {
            let outcome = match joined {
                Ok(r) => r,
                Err(e) => Err(TaskFailed(format!("panicked: {}", crate::panics::join_text(e)))),
            };
            let info = &mut act.info[i];
            info.running = false;
            info.runs += 1;
            info.last_duration_ms = Some(began.elapsed().as_millis() as u64);
            match outcome {
                Ok(summary) => {
                    tracing::debug!(task = %name, result = %summary, "periodic task done");
                    info.last_result = Some(summary);
                    info.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(task = %name, error = %e, "periodic task failed");
                    info.failures += 1;
                    info.last_error = Some(e.0);
                }
            }
            let done = info.clone();
            for tx in act.waiting[i].drain(..) {
                let _ = tx.send(done.clone());
            }
            act.schedule.finished(i);
            act.arm(ctx);
        }));
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.arm(ctx);
    }
}

/// Every task and its last run.
#[derive(Debug, Message)]
#[rtype(result = "Vec<PeriodicInfo>")]
pub struct ListPeriodic;

impl Handler<ListPeriodic> for Scheduler {
    type Result = MessageResult<ListPeriodic>;
    fn handle(&mut self, _: ListPeriodic, _: &mut Context<Self>) -> Self::Result {
        let (now, wall) = (Instant::now(), Utc::now());
        let mut list = self.info.clone();
        for (info, slot) in list.iter_mut().zip(&self.schedule.slots) {
            info.next_run = (slot.enabled && !slot.running).then(|| {
                let ahead = slot.next_due.saturating_duration_since(now);
                wall + chrono::Duration::from_std(ahead).unwrap_or_default()
            });
        }
        MessageResult(list)
    }
}

/// Runs a task now (enabled or not) and answers when that run has ended; a
/// task already running is not started twice.
#[derive(Debug, Message)]
#[rtype(result = "Result<PeriodicInfo, KilnError>")]
pub struct RunPeriodic(pub String);

impl Handler<RunPeriodic> for Scheduler {
    type Result = ResponseFuture<Result<PeriodicInfo, KilnError>>;
    fn handle(&mut self, RunPeriodic(name): RunPeriodic, ctx: &mut Context<Self>) -> Self::Result {
        let Some(i) = self.schedule.find(&name) else {
            let names: Vec<String> = self.info.iter().map(|t| t.name.clone()).collect();
            let err = KilnError::NotFound(format!("no periodic task '{name}' (tasks: {})", names.join(", ")));
            return Box::pin(async move { Err(err) });
        };
        if self.schedule.slots[i].running {
            let err = KilnError::Conflict(format!("periodic task '{name}' is already running"));
            return Box::pin(async move { Err(err) });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting[i].push(tx);
        self.start(i, ctx);
        self.arm(ctx);
        Box::pin(async move { rx.await.map_err(|_| KilnError::Unavailable("the scheduler stopped".into())) })
    }
}

/// Registers a task (an embedding application's own). A name already
/// registered is refused (`Conflict`): two tasks of one name could not be
/// told apart by `kiln periodic run` or `list`.
#[derive(Message)]
#[rtype(result = "Result<(), KilnError>")]
pub struct RegisterPeriodic(pub PeriodicTask);

impl Handler<RegisterPeriodic> for Scheduler {
    type Result = Result<(), KilnError>;
    fn handle(&mut self, RegisterPeriodic(t): RegisterPeriodic, ctx: &mut Context<Self>) -> Self::Result {
        if self.schedule.find(&t.name).is_some() {
            return Err(KilnError::Conflict(format!("a periodic task named '{}' is already registered", t.name)));
        }
        self.push(t, Instant::now());
        self.arm(ctx);
        Ok(())
    }
}

/// Replaces the spacing, enabled flag and body of the tasks with these
/// names, keeping their counters and last run (a config reload); a task
/// not registered yet is added. A run in progress finishes as it began.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retune(pub Vec<PeriodicTask>);

impl Handler<Retune> for Scheduler {
    type Result = ();
    fn handle(&mut self, Retune(tasks): Retune, ctx: &mut Context<Self>) {
        let now = Instant::now();
        for t in tasks {
            let Some(i) = self.schedule.find(&t.name) else {
                self.push(t, now);
                continue;
            };
            self.schedule.retune(i, t.spacing, t.enabled, now);
            self.info[i].spacing_s = t.spacing.as_secs();
            self.info[i].enabled = t.enabled;
            self.runs[i] = t.run;
        }
        self.arm(ctx);
    }
}

/// Starts no task on its own any more (a graceful shutdown); runs in flight
/// go on to their end. Answers how many are still running.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct StopScheduler;

impl Handler<StopScheduler> for Scheduler {
    type Result = usize;
    fn handle(&mut self, _: StopScheduler, ctx: &mut Context<Self>) -> usize {
        for slot in &mut self.schedule.slots {
            slot.enabled = false;
        }
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        self.schedule.slots.iter().filter(|s| s.running).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_task_is_due_by_its_spacing_and_never_while_running() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.add("a", Duration::from_secs(60), false, true, t0);
        s.add("b", Duration::from_secs(10), true, true, t0);
        s.add("off", Duration::from_secs(1), true, false, t0);
        assert_eq!(s.due(t0), vec![1], "only run_immediately and enabled");
        s.started(1, t0);
        assert_eq!(s.due(t0 + Duration::from_secs(30)), Vec::<usize>::new(), "b runs; a not due yet");
        assert_eq!(s.next_wake(), Some(t0 + Duration::from_secs(60)));
        s.finished(1);
        assert_eq!(s.next_wake(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(s.due(t0 + Duration::from_secs(60)), vec![0, 1]);
    }

    #[test]
    fn a_retuned_task_counts_its_new_spacing_from_now() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.add("a", Duration::from_secs(600), false, true, t0);
        s.add("off", Duration::from_secs(60), false, false, t0);
        let t1 = t0 + Duration::from_secs(100);
        s.retune(0, Duration::from_secs(30), true, t1);
        assert_eq!(s.slots[0].next_due, t1 + Duration::from_secs(30), "sooner than the old 600 s");
        s.retune(0, Duration::from_secs(900), true, t1);
        assert_eq!(s.slots[0].next_due, t1 + Duration::from_secs(30), "a due time already set is kept");
        assert_eq!(s.due(t1 + Duration::from_secs(60)), vec![0]);
        s.retune(1, Duration::from_secs(60), true, t1);
        assert_eq!(s.slots[1].next_due, t1 + Duration::from_secs(60), "enabled: one spacing from now");
        s.retune(0, Duration::from_secs(900), false, t1);
        assert_eq!(s.next_wake(), Some(t1 + Duration::from_secs(60)), "disabled: not waited for");
    }

    #[test]
    fn spacing_zero_means_every_tick() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.add("z", Duration::ZERO, true, true, t0);
        s.started(0, t0);
        s.finished(0);
        assert_eq!(s.next_wake(), Some(t0 + TICK));
    }

    fn counting(name: &str, spacing: u64, counter: Arc<AtomicU32>, outcome: fn(u32) -> TaskResult) -> PeriodicTask {
        PeriodicTask {
            name: name.into(),
            spacing: Duration::from_secs(spacing),
            run_immediately: true,
            enabled: true,
            run: Arc::new(move || {
                let c = counter.clone();
                Box::pin(async move {
                    let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                    outcome(n)
                })
            }),
        }
    }

    /// Virtual time (tokio's paused clock): ten minutes pass without a real
    /// second going by, and no test sleeps.
    #[test]
    fn failing_and_panicking_tasks_are_counted_and_the_others_go_on() {
        actix::System::new().block_on(async {
            tokio::time::pause();
            let ok = Arc::new(AtomicU32::new(0));
            let bad = Arc::new(AtomicU32::new(0));
            let boom = Arc::new(AtomicU32::new(0));
            let scheduler = Scheduler::new(vec![
                counting("ok", 60, ok.clone(), |n| Ok(format!("run {n}"))),
                counting("bad", 60, bad.clone(), |_| Err("no luck".into())),
                counting("boom", 60, boom.clone(), |_| panic!("task exploded")),
            ])
            .start();
            tokio::time::sleep(Duration::from_secs(600) + Duration::from_millis(10)).await;
            let list = scheduler.send(ListPeriodic).await.unwrap();
            let by = |n: &str| list.iter().find(|t| t.name == n).unwrap().clone();
            assert_eq!(by("ok").runs, 11, "at 0, 60, ..., 600 s");
            assert_eq!(by("ok").failures, 0);
            assert_eq!(by("ok").last_result.as_deref(), Some("run 11"));
            assert_eq!(by("bad").failures, 11);
            assert_eq!(by("bad").last_error.as_deref(), Some("no luck"));
            assert_eq!(by("boom").failures, 11);
            assert!(by("boom").last_error.unwrap().contains("task exploded"));

            let run = scheduler.send(RunPeriodic("ok".into())).await.unwrap().unwrap();
            assert_eq!(run.runs, 12);
            let err = scheduler.send(RunPeriodic("nope".into())).await.unwrap().unwrap_err();
            assert!(err.to_string().contains("tasks: ok, bad, boom"), "{err}");
        });
    }

    #[test]
    fn a_slow_task_never_overlaps_itself() {
        actix::System::new().block_on(async {
            tokio::time::pause();
            let live = Arc::new(AtomicU32::new(0));
            let overlapped = Arc::new(AtomicU32::new(0));
            let (l, o) = (live.clone(), overlapped.clone());
            let slow = PeriodicTask {
                name: "slow".into(),
                spacing: Duration::from_secs(10),
                run_immediately: true,
                enabled: true,
                run: Arc::new(move || {
                    let (l, o) = (l.clone(), o.clone());
                    Box::pin(async move {
                        if l.fetch_add(1, Ordering::SeqCst) > 0 {
                            o.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::time::sleep(Duration::from_secs(25)).await;
                        l.fetch_sub(1, Ordering::SeqCst);
                        Ok(String::new())
                    })
                }),
            };
            let scheduler = Scheduler::new(vec![slow]).start();
            tokio::time::sleep(Duration::from_secs(100)).await;
            let runs = scheduler.send(ListPeriodic).await.unwrap()[0].runs;
            assert_eq!(overlapped.load(Ordering::SeqCst), 0);
            assert!((3..=4).contains(&runs), "25 s runs, back to back: {runs}");
        });
    }

    #[test]
    fn a_second_task_of_one_name_is_refused_and_the_list_says_when_each_runs_next() {
        actix::System::new().block_on(async {
            tokio::time::pause();
            let (a, b) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
            let scheduler = Scheduler::new(vec![counting("sync", 60, a.clone(), |_| Ok(String::new()))]).start();
            let err = scheduler.send(RegisterPeriodic(counting("sync", 5, b.clone(), |_| Ok(String::new())))).await;
            let err = err.unwrap().unwrap_err();
            assert!(matches!(err, KilnError::Conflict(_)) && err.to_string().contains("'sync'"), "{err}");
            let mut off = counting("off", 30, b.clone(), |_| Ok(String::new()));
            off.enabled = false;
            scheduler.send(RegisterPeriodic(off)).await.unwrap().unwrap();

            tokio::time::sleep(Duration::from_millis(10)).await;
            let before = Utc::now();
            let list = scheduler.send(ListPeriodic).await.unwrap();
            assert_eq!(list.len(), 2, "the refused task was not added");
            let next = list[0].next_run.expect("an enabled task has a next run");
            let ahead = (next - before).num_milliseconds();
            assert!((59_000..=60_100).contains(&ahead), "ran at start, next in a minute: {ahead} ms");
            assert_eq!(list[1].next_run, None, "a disabled task is not due");
            assert_eq!(b.load(Ordering::SeqCst), 0, "the refused body never ran");
        });
    }
}
