//! The queue's rules tested on the plain core: no actix, no store, and a
//! [`ManualClock`] for every time. A test plays the actor's part in a few
//! lines ([`Queue`]): it takes the core's effects, marks started jobs
//! running, and tells the core when an end is committed.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use kiln_store::{JobId, JobLogEntry, JobRecord, JobStatus, LogLevel, Timestamp};

use super::admission::{self, NodeNames};
use super::archive;
use super::core::{Effect, JobCore, PriorityChange};
use super::ids::JobIds;
use super::model::*;
use super::restart::{self, Recovered};
use crate::KilnError;
use crate::clock::{Clock, ManualClock};

/// Nodes that exist, for admission.
struct Names(&'static [&'static str]);

impl NodeNames for Names {
    fn resolve(&self, nodes: &str) -> Result<(), KilnError> {
        if self.0.contains(&nodes) { Ok(()) } else { Err(KilnError::NotFound(format!("no such node: {nodes}"))) }
    }
    fn parse(&self, nodes: &str) -> Result<(), KilnError> {
        if nodes.is_empty() { Err(KilnError::InvalidInput("empty node set".into())) } else { Ok(()) }
    }
}

const NAMES: Names = Names(&["n1", "n2"]);

fn start() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn sleep(seconds: f64) -> Vec<Opcode> {
    vec![Opcode::Sleep { seconds }]
}

fn node_op(nodes: &str) -> Opcode {
    Opcode::Node { nodes: nodes.into(), op: crate::node::Op::Verb(crate::fsm::Verb::Manage), fanout: None, wait: true }
}

fn exec_op(command: &str, fanout: Option<u32>) -> Opcode {
    let spec = crate::exec::ExecSpec {
        worker: crate::exec::Worker::Exec,
        command: command.into(),
        fanout: 0,
        connect_timeout: Duration::from_secs(1),
        command_timeout: None,
    };
    Opcode::Exec { nodes: "n1".into(), spec, fanout }
}

fn on(job: JobId, statuses: &[JobStatus]) -> Dependency {
    Dependency { job, statuses: statuses.to_vec() }
}

fn invalid(e: KilnError) -> String {
    match e {
        KilnError::InvalidInput(m) | KilnError::NotFound(m) => m,
        other => panic!("not an input error: {other:?}"),
    }
}

/// The core with the actor's part played: effects are taken as they come.
struct Queue {
    core: JobCore<()>,
    clock: ManualClock,
    /// Jobs started, in order.
    started: Vec<JobId>,
    /// Log lines committed with a change or an end (job, line), in order.
    commits: Vec<(JobId, String)>,
    /// Blocks of ids asked for (their sizes), in order.
    fetches: Vec<u64>,
}

impl Queue {
    fn new(max_running: usize, max_queued: usize) -> Self {
        Queue {
            core: JobCore::new(JobIds::after(0), max_running, max_queued, false),
            clock: ManualClock::starting_at(start()),
            started: Vec::new(),
            commits: Vec::new(),
            fetches: Vec::new(),
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Admits and places a job as `SubmitJob` does.
    fn submit(&mut self, ops: Vec<Opcode>, priority: i32, depends: Vec<Dependency>) -> Result<JobId, KilnError> {
        self.core.check_not_drained()?;
        admission::validate(&ops, priority, &NAMES)?;
        self.core.room_for(1)?;
        let now = self.now();
        let mut effects = Vec::new();
        let admitted = self.core.admit(ops, priority, depends, now, &mut effects);
        let (view, entry) = match admitted {
            Ok(admitted) => admitted,
            Err(e) => {
                self.apply(effects);
                return Err(e);
            }
        };
        let id = view.id;
        self.core.register(view, entry);
        self.core.place(id, now, &mut effects);
        self.apply(effects);
        Ok(id)
    }

    fn job(&mut self, priority: i32) -> JobId {
        self.submit(sleep(1.0), priority, Vec::new()).unwrap()
    }

    /// Carries out effects: starts are marked, ends are committed at once.
    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            let now = self.now();
            match effect {
                Effect::Commit { job, line } => self.commits.push((job, line.1)),
                Effect::Started(id) => {
                    self.core.mark_started(id, now).expect("a started job is active");
                    self.started.push(id);
                }
                Effect::End(end) => {
                    self.commits.push((end.job, end.line.1.clone()));
                    let mut more = Vec::new();
                    self.core.end_committed(&end, now, &mut more);
                    self.apply(more);
                }
                Effect::FetchIds(size) => self.fetches.push(size),
            }
        }
    }

    /// Runs a started job's opcodes, each ending with `error`.
    fn run(&mut self, id: JobId, error: Option<&str>) {
        let mut idx = 0;
        loop {
            let mut effects = Vec::new();
            let start = self.core.start_op(id, idx, self.now(), &mut effects);
            self.apply(effects);
            if start.is_none() {
                return;
            }
            let mut effects = Vec::new();
            let next = self.core.op_done(id, idx, Vec::new(), error.map(String::from), self.now(), &mut effects);
            self.apply(effects);
            match next {
                Some(n) => idx = n,
                None => return,
            }
        }
    }

    fn cancel(&mut self, id: JobId) -> Result<JobStatus, KilnError> {
        let mut effects = Vec::new();
        let status = self.core.cancel(id, self.now(), &mut effects);
        self.apply(effects);
        status
    }

    /// A job's status: live, or how it ended.
    fn status(&self, id: JobId) -> JobStatus {
        match self.core.active.get(&id) {
            Some(job) => job.view.status,
            None => self.core.ended.get(id).expect("known job").0,
        }
    }
}

// ----- admission -----------------------------------------------------------------

#[test]
fn a_job_needs_an_opcode() {
    let e = admission::validate(&[], 0, &NAMES).unwrap_err();
    assert_eq!(invalid(e), "a job needs at least one opcode");
}

#[test]
fn priorities_run_from_minus_20_to_19() {
    for ok in [-20, 0, 19] {
        admission::validate(&sleep(1.0), ok, &NAMES).unwrap();
    }
    for bad in [-21, 20, i32::MAX] {
        let e = admission::validate(&sleep(1.0), bad, &NAMES).unwrap_err();
        assert_eq!(invalid(e), format!("priority {bad} is out of range -20..19"));
    }
}

#[test]
fn a_sleep_is_0_to_86400_seconds() {
    for bad in [-1.0, 86_400.5, f64::NAN, f64::INFINITY] {
        let e = admission::validate(&sleep(bad), 0, &NAMES).unwrap_err();
        assert!(invalid(e).contains("expected 0 to 86400 seconds"));
    }
    admission::validate(&sleep(0.0), 0, &NAMES).unwrap();
    admission::validate(&sleep(86_400.0), 0, &NAMES).unwrap();
}

#[test]
fn unknown_nodes_are_refused_naming_the_opcode_when_there_are_several() {
    let e = admission::validate(&[node_op("n9")], 0, &NAMES).unwrap_err();
    assert!(matches!(&e, KilnError::NotFound(m) if m == "no such node: n9"), "{e:?}");
    let ops = [node_op("n1"), Opcode::Hold { nodes: "n7".into() }];
    let e = admission::validate(&ops, 0, &NAMES).unwrap_err();
    assert_eq!(invalid(e), "opcode 2: no such node: n7");
}

#[test]
fn a_fanout_of_zero_and_an_empty_command_are_refused() {
    let zero = Opcode::Node {
        nodes: "n1".into(),
        op: crate::node::Op::Verb(crate::fsm::Verb::Manage),
        fanout: Some(0),
        wait: false,
    };
    assert_eq!(invalid(admission::validate(&[zero], 0, &NAMES).unwrap_err()), "fanout must be at least 1");
    let e = admission::validate(&[exec_op("uptime", Some(0))], 0, &NAMES).unwrap_err();
    assert_eq!(invalid(e), "fanout must be at least 1");
    let e = admission::validate(&[sleep(1.0)[0].clone(), exec_op("  ", None)], 0, &NAMES).unwrap_err();
    assert_eq!(invalid(e), "opcode 2: exec needs a command");
    admission::validate(&[exec_op("uptime", None)], 0, &NAMES).unwrap();
}

#[test]
fn a_dependency_waits_only_for_final_statuses() {
    admission::final_statuses(JobId(3), &[JobStatus::Success, JobStatus::Canceled]).unwrap();
    let e = admission::final_statuses(JobId(3), &[JobStatus::Running]).unwrap_err();
    assert!(invalid(e).starts_with("dependency on job 3: 'running' is not a final status"));
}

#[test]
fn a_submission_of_several_names_the_job_at_fault_and_relative_ids_must_point_back() {
    assert!(admission::validate_many(&[], &NAMES).is_err());
    let job = |depends: Vec<NewDependency>| NewJob { ops: sleep(1.0), priority: 0, depends };
    let back = |n| vec![NewDependency { job: JobRef::Earlier(n), statuses: Vec::new() }];
    let e = admission::validate_many(&[job(back(1))], &NAMES).unwrap_err();
    assert_eq!(invalid(e), "dependency on job -1: no job comes before it in this submission");
    let e = admission::validate_many(&[job(vec![]), job(back(2))], &NAMES).unwrap_err();
    assert_eq!(invalid(e), "job 2 of 2: dependency on job -2: only 1 job comes before it in this submission");
    let e = admission::validate_many(&[job(vec![]), job(back(0))], &NAMES).unwrap_err();
    assert!(invalid(e).starts_with("job 2 of 2: dependency on job -0"));
    admission::validate_many(&[job(vec![]), job(back(1)), job(back(2))], &NAMES).unwrap();
}

#[test]
fn the_queue_limit_counts_jobs_not_ended() {
    let mut q = Queue::new(1, 2);
    let a = q.job(0);
    q.job(0);
    let e = q.submit(sleep(1.0), 0, Vec::new()).unwrap_err();
    assert!(matches!(e, KilnError::QueueFull { unfinished: 2, adding: 1, limit: 2 }), "{e:?}");
    // An ended job makes room.
    q.run(a, None);
    q.job(0);
    assert!(admission::room_for(5, 3, 7).is_err());
    admission::room_for(5, 2, 7).unwrap();
}

#[test]
fn a_drained_queue_refuses_submissions() {
    let mut q = Queue::new(1, 10);
    q.core.drained = true;
    assert!(matches!(q.submit(sleep(1.0), 0, Vec::new()), Err(KilnError::Drained)));
}

#[test]
fn ids_are_serial_after_the_last_stored_one() {
    let mut q = Queue::new(1, 10);
    q.core = JobCore::new(JobIds::after(41), 1, 10, false);
    assert_eq!([q.job(0), q.job(0)], [JobId(42), JobId(43)]);
    assert_eq!(q.core.info().last_job_id, 43);
}

#[test]
fn a_dependency_that_cannot_be_met_fails_the_job_at_admission() {
    let mut q = Queue::new(1, 10);
    let unknown = q.submit(sleep(1.0), 0, vec![on(JobId(99), &[])]).unwrap();
    assert_eq!(q.status(unknown), JobStatus::Error);
    let a = q.job(0);
    q.run(a, Some("boom"));
    let wrong = q.submit(sleep(1.0), 0, vec![on(a, &[JobStatus::Success])]).unwrap();
    assert_eq!(q.status(wrong), JobStatus::Error);
    let right = q.submit(sleep(1.0), 0, vec![on(a, &[JobStatus::Error])]).unwrap();
    assert_eq!(q.status(right), JobStatus::Running);
}

#[test]
fn a_refused_dependency_says_why() {
    let mut q = Queue::new(1, 10);
    let a = q.job(0);
    q.run(a, Some("boom"));
    let (view, entry) =
        q.core.admit(sleep(1.0), 0, vec![on(a, &[JobStatus::Success])], q.now(), &mut Vec::new()).unwrap();
    assert_eq!(view.error.as_deref(), Some("dependency on job 1 cannot be met: it ended as error, not success"));
    assert_eq!(entry.level, LogLevel::Error);
    assert!(view.ops.iter().all(|o| o.status == JobStatus::Error));
}

// ----- timestamps ----------------------------------------------------------------

#[test]
fn job_times_come_from_the_clock_given() {
    let mut q = Queue::new(1, 10);
    let a = q.job(0);
    let submitted = q.now();
    q.clock.advance(Duration::from_secs(5));
    let b = q.job(0);
    let view = &q.core.active[&b].view;
    assert_eq!(view.submitted_at, submitted + chrono::Duration::seconds(5));
    assert_eq!(q.core.active[&a].view.started_at, Some(submitted));
    q.clock.advance(Duration::from_secs(60));
    q.run(a, None);
    let (status, ended) = q.core.ended.get(a).unwrap();
    assert_eq!((status, ended), (JobStatus::Success, submitted + chrono::Duration::seconds(65)));
    // `b` started when `a` ended, on the same clock.
    assert_eq!(q.core.active[&b].view.started_at, Some(ended));
}

#[test]
fn a_log_line_is_stamped_when_written_unless_it_carries_its_own_time() {
    let mut q = Queue::new(1, 10);
    let a = q.job(0);
    let early = q.now();
    let job = q.core.active.get_mut(&a).unwrap();
    let later = early + chrono::Duration::seconds(9);
    job.write_lines(vec![(LogLevel::Info, "one".into(), Some(early)), (LogLevel::Info, "two".into(), None)], later);
    let tail: Vec<(u64, Timestamp)> = job.log.iter().skip(1).map(|e| (e.serial, e.at)).collect();
    assert_eq!(tail, [(2, early), (3, later)]);
}

// ----- priorities ----------------------------------------------------------------

#[test]
fn runnable_jobs_start_by_priority_then_by_id() {
    let mut q = Queue::new(1, 10);
    let first = q.job(5);
    let low = q.job(10);
    let high = q.job(-10);
    let high2 = q.job(-10);
    let mid = q.job(0);
    assert_eq!(q.started, [first]);
    for id in [first, high, high2, mid] {
        q.run(id, None);
    }
    assert_eq!(q.started, [first, high, high2, mid, low]);
}

#[test]
fn a_queued_jobs_priority_change_reorders_it() {
    let mut q = Queue::new(1, 10);
    let running = q.job(0);
    let a = q.job(0);
    let b = q.job(0);
    assert_eq!(q.core.set_priority(b, -5).unwrap(), PriorityChange::Changed { old: 0 });
    q.run(running, None);
    assert_eq!(q.started, [running, b]);
    assert!(matches!(q.core.set_priority(a, 0).unwrap(), PriorityChange::Unchanged(v) if v.id == a));
}

#[test]
fn only_a_job_not_started_may_change_priority() {
    let mut q = Queue::new(1, 10);
    let a = q.job(0);
    let e = q.core.set_priority(a, 3).unwrap_err();
    assert_eq!(invalid(e), "job 1 is running; only a queued or waiting job's priority can change");
    let e = q.core.set_priority(a, 30).unwrap_err();
    assert!(invalid(e).contains("out of range"));
    q.run(a, None);
    let e = q.core.set_priority(a, 3).unwrap_err();
    assert!(invalid(e).starts_with("job 1 already ended (success)"));
    assert!(matches!(q.core.set_priority(JobId(9), 3), Err(KilnError::NotFound(_))));
}

#[test]
fn a_priority_change_that_was_not_stored_is_undone() {
    let mut q = Queue::new(1, 10);
    let running = q.job(0);
    let a = q.job(0);
    let b = q.job(0);
    q.core.set_priority(b, -5).unwrap();
    q.core.revert_priority(b, 0, -5);
    assert_eq!(q.core.active[&b].view.priority, 0);
    q.run(running, None);
    assert_eq!(q.started, [running, a]);
}

// ----- dependencies --------------------------------------------------------------

#[test]
fn a_waiting_job_runs_once_its_dependency_succeeds() {
    let mut q = Queue::new(4, 10);
    let a = q.job(0);
    let b = q.submit(sleep(1.0), 0, vec![on(a, &[JobStatus::Success])]).unwrap();
    assert_eq!(q.status(b), JobStatus::Waiting);
    assert_eq!(q.core.depth(), (0, 1, 1));
    q.run(a, None);
    assert_eq!(q.status(b), JobStatus::Running);
    assert!(q.commits.contains(&(b, "dependencies met; queued".into())));
}

#[test]
fn a_waiting_job_fails_when_its_dependency_fails() {
    let mut q = Queue::new(4, 10);
    let a = q.job(0);
    let b = q.submit(sleep(1.0), 0, vec![on(a, &[JobStatus::Success])]).unwrap();
    let c = q.submit(sleep(1.0), 0, vec![on(b, &[])]).unwrap();
    q.run(a, Some("boom"));
    assert_eq!(q.status(b), JobStatus::Error);
    // Any end meets a dependency that names no status.
    assert_eq!(q.status(c), JobStatus::Running);
    let error = q.commits.iter().find(|(id, _)| *id == b).map(|(_, m)| m.clone()).unwrap();
    assert!(error.contains("it ended as error, not success"), "{error}");
}

#[test]
fn a_dependency_on_a_cancel_runs_the_job_after_the_cancel() {
    let mut q = Queue::new(1, 10);
    let running = q.job(0);
    let a = q.job(0);
    let cleanup = q.submit(sleep(1.0), 0, vec![on(a, &[JobStatus::Canceled])]).unwrap();
    let next = q.submit(sleep(1.0), 0, vec![on(a, &[JobStatus::Success])]).unwrap();
    assert_eq!(q.cancel(a).unwrap(), JobStatus::Canceled);
    assert_eq!(q.status(next), JobStatus::Error);
    assert_eq!(q.status(cleanup), JobStatus::Queued);
    q.run(running, None);
    assert_eq!(q.status(cleanup), JobStatus::Running);
}

#[test]
fn jobs_of_one_submission_name_each_other_by_position() {
    let mut q = Queue::new(1, 10);
    q.core = JobCore::new(JobIds::after(10), 1, 10, false);
    let job = |depends: Vec<NewDependency>| NewJob { ops: sleep(1.0), priority: 0, depends };
    let back = |n| vec![NewDependency { job: JobRef::Earlier(n), statuses: vec![JobStatus::Success] }];
    let (records, admitted) =
        q.core.admit_many(vec![job(vec![]), job(back(1)), job(back(2))], q.now(), &mut Vec::new()).unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(
        admitted,
        [(JobId(11), JobStatus::Queued), (JobId(12), JobStatus::Waiting), (JobId(13), JobStatus::Waiting)]
    );
    assert_eq!(q.core.active[&JobId(13)].view.depends, [on(JobId(11), &[JobStatus::Success])]);
    let mut effects = Vec::new();
    q.core.place_all(admitted.iter().map(|(id, _)| *id), q.now(), &mut effects);
    q.apply(effects);
    q.run(JobId(11), None);
    assert_eq!(q.started, [JobId(11), JobId(12)]);
    assert_eq!(q.status(JobId(13)), JobStatus::Queued);
}

#[test]
fn a_withdrawn_job_frees_its_slot_and_fails_its_dependents() {
    let mut q = Queue::new(1, 10);
    let a = q.job(0);
    let b = q.job(0);
    let c = q.submit(sleep(1.0), 0, vec![on(a, &[])]).unwrap();
    let mut effects = Vec::new();
    assert!(q.core.withdraw(a, q.now(), &mut effects).is_some());
    q.apply(effects);
    assert_eq!(q.started, [a, b]);
    assert_eq!(q.status(c), JobStatus::Error);
    assert!(!q.core.ended.contains(a));
}

// ----- cancel --------------------------------------------------------------------

#[test]
fn a_queued_job_is_canceled_at_once() {
    let mut q = Queue::new(1, 10);
    q.job(0);
    let b = q.job(0);
    assert_eq!(q.cancel(b).unwrap(), JobStatus::Canceled);
    assert_eq!(q.status(b), JobStatus::Canceled);
    assert_eq!(q.core.depth(), (0, 0, 1));
}

#[test]
fn a_running_job_is_canceling_until_its_opcode_ends() {
    let mut q = Queue::new(1, 10);
    let a = q.submit(vec![Opcode::Sleep { seconds: 1.0 }, Opcode::Sleep { seconds: 2.0 }], 0, Vec::new()).unwrap();
    let mut effects = Vec::new();
    assert!(q.core.start_op(a, 0, q.now(), &mut effects).is_some());
    assert_eq!(q.cancel(a).unwrap(), JobStatus::Canceling);
    assert_eq!(q.commits.last().unwrap().1, "cancel requested; stopping before the next opcode");
    let next = q.core.op_done(a, 0, Vec::new(), Some("canceled during the sleep".into()), q.now(), &mut effects);
    assert_eq!(next, None);
    q.apply(effects);
    assert_eq!(q.status(a), JobStatus::Canceled);
    // A cancel also ends a job whose opcode ended well before it saw it.
    let b = q.submit(vec![Opcode::Sleep { seconds: 1.0 }, Opcode::Sleep { seconds: 2.0 }], 0, Vec::new()).unwrap();
    q.cancel(b).unwrap();
    let mut effects = Vec::new();
    assert!(q.core.start_op(b, 0, q.now(), &mut effects).is_none());
    q.apply(effects);
    assert_eq!(q.status(b), JobStatus::Canceled);
}

#[test]
fn an_ended_or_unknown_job_cannot_be_canceled() {
    let mut q = Queue::new(1, 10);
    let a = q.job(0);
    q.run(a, None);
    assert_eq!(invalid(q.cancel(a).unwrap_err()), "job 1 already ended: success");
    assert!(matches!(q.cancel(JobId(7)), Err(KilnError::NotFound(_))));
    // Archived and forgotten: a lower id ended.
    q.core.archived([a]);
    assert_eq!(invalid(q.cancel(a).unwrap_err()), "job 1 already ended: it is not in the live queue");
}

// ----- running -------------------------------------------------------------------

#[test]
fn at_most_max_running_jobs_run_and_raising_it_starts_more() {
    let mut q = Queue::new(2, 10);
    let ids: Vec<JobId> = (0..5).map(|_| q.job(0)).collect();
    assert_eq!(q.started, ids[..2]);
    q.run(ids[0], None);
    assert_eq!(q.started, ids[..3]);
    let mut effects = Vec::new();
    q.core.set_max_running(10, &mut effects);
    q.apply(effects);
    assert_eq!(q.started, ids);
    assert_eq!(q.core.depth(), (0, 0, 4));
}

#[test]
fn failed_and_skipped_nodes_are_counted_apart() {
    let mut q = Queue::new(1, 10);
    let a = q.submit(vec![node_op("n1"), Opcode::Sleep { seconds: 1.0 }], 0, Vec::new()).unwrap();
    let mut effects = Vec::new();
    let start = q.core.start_op(a, 0, q.now(), &mut effects).unwrap();
    assert!(start.durable_start.is_some(), "a node opcode's start is committed before it acts");
    let failed = NodeResult::of("n1".into(), &Err(KilnError::NotFound("gone".into())));
    let skipped = NodeResult::of("n2".into(), &Err(KilnError::Canceled("not started".into())));
    let ok = NodeResult { ok: true, error: None, ..failed.clone() };
    let next = q.core.op_done(a, 0, vec![failed, skipped, ok], None, q.now(), &mut effects);
    assert_eq!(next, None);
    q.apply(effects);
    let (status, _) = q.core.ended.get(a).unwrap();
    assert_eq!(status, JobStatus::Error);
}

#[test]
fn a_sleeps_start_goes_out_with_its_end() {
    let mut q = Queue::new(1, 10);
    let a = q.job(0);
    let mut effects = Vec::new();
    let start = q.core.start_op(a, 0, q.now(), &mut effects).unwrap();
    assert_eq!(start.durable_start, None);
    assert_eq!(q.core.active[&a].pending.len(), 1);
}

#[test]
fn a_stopping_queue_starts_nothing_and_ends_sleeping_jobs() {
    let mut q = Queue::new(2, 10);
    let sleeping = q.job(0);
    let node = q.submit(vec![node_op("n1")], 0, Vec::new()).unwrap();
    let queued = q.job(0);
    let mut effects = Vec::new();
    q.core.start_op(sleeping, 0, q.now(), &mut effects);
    q.core.start_op(node, 0, q.now(), &mut effects);
    assert_eq!(q.core.stop_starting("shutting down".into(), q.now(), &mut effects), 2);
    q.apply(effects);
    assert_eq!(q.status(sleeping), JobStatus::Error);
    assert_eq!(q.status(queued), JobStatus::Queued, "a queued job stays for the restart");
    assert_eq!(q.started, [sleeping, node]);
    let mut effects = Vec::new();
    assert_eq!(q.core.abandon_running("grace period over", q.now(), &mut effects), 1);
    q.apply(effects);
    assert_eq!(q.status(node), JobStatus::Error);
    assert_eq!(q.status(queued), JobStatus::Queued);
}

// ----- the restart rule ----------------------------------------------------------

fn stored(status: JobStatus, body: &str) -> JobRecord {
    let at = start();
    JobRecord {
        id: JobId(5),
        priority: 0,
        status,
        submitted_at: at,
        started_at: None,
        ended_at: None,
        body: body.into(),
        log: vec![JobLogEntry { job: JobId(5), serial: 1, at, level: LogLevel::Info, message: "submitted".into() }],
    }
}

fn body(ops: &[(Opcode, JobStatus)]) -> String {
    let ops = ops
        .iter()
        .map(|(opcode, status)| OpState {
            opcode: opcode.clone(),
            status: *status,
            started_at: None,
            ended_at: None,
            results: Vec::new(),
            error: None,
        })
        .collect();
    serde_json::to_string(&JobBody { ops, depends: Vec::new(), error: None }).unwrap()
}

#[test]
fn a_job_found_running_ends_in_error_keeping_what_finished() {
    let now = start() + chrono::Duration::hours(1);
    for status in [JobStatus::Running, JobStatus::Canceling] {
        let ops = [
            (node_op("n1"), JobStatus::Success),
            (node_op("n2"), JobStatus::Running),
            (node_op("n1"), JobStatus::Queued),
        ];
        let Recovered::Ended { id, status: ended, at, repair } =
            restart::recover(&stored(status, &body(&ops)), now, restart::CUT_SHORT)
        else {
            panic!("a {status} job resumed");
        };
        assert_eq!((id, ended, at), (JobId(5), JobStatus::Error, now));
        let repair = repair.expect("the end is stored");
        let view = JobView::from_record(&repair, false);
        assert_eq!(view.error.as_deref(), Some(restart::CUT_SHORT));
        let statuses: Vec<JobStatus> = view.ops.iter().map(|o| o.status).collect();
        assert_eq!(statuses, [JobStatus::Success, JobStatus::Error, JobStatus::Error]);
        assert_eq!(view.ops[0].error, None);
        let last = repair.log.last().unwrap();
        assert_eq!((last.serial, last.level, last.at), (2, LogLevel::Error, now));
    }
}

#[test]
fn a_job_found_queued_or_waiting_resumes_as_it_was() {
    for status in [JobStatus::Queued, JobStatus::Waiting] {
        let record = stored(status, &body(&[(node_op("n1"), JobStatus::Queued)]));
        let Recovered::Resume { view, log } = restart::recover(&record, start(), restart::CUT_SHORT) else {
            panic!("{status} ended")
        };
        assert_eq!(view, JobView::from_record(&record, false));
        assert_eq!(log, record.log);
    }
}

#[test]
fn a_job_whose_body_cannot_be_read_ends_without_running() {
    let now = start();
    let Recovered::Ended { status, repair, .. } =
        restart::recover(&stored(JobStatus::Queued, "{not json"), now, restart::CUT_SHORT)
    else {
        panic!("an unreadable job resumed");
    };
    assert_eq!(status, JobStatus::Error);
    let view = JobView::from_record(&repair.unwrap(), false);
    assert!(view.error.unwrap().starts_with("the stored job body cannot be read"));
    assert!(view.ops.is_empty());
}

#[test]
fn a_row_already_ended_needs_no_repair() {
    let mut record = stored(JobStatus::Success, &body(&[(node_op("n1"), JobStatus::Success)]));
    record.ended_at = Some(start());
    let recovered = restart::recover(&record, start() + chrono::Duration::hours(1), restart::CUT_SHORT);
    assert_eq!(recovered, Recovered::Ended { id: JobId(5), status: JobStatus::Success, at: start(), repair: None });
}

#[test]
fn resumed_jobs_wait_until_their_dependencies_have_ended() {
    let mut q = Queue::new(4, 10);
    q.core = JobCore::new(JobIds::after(10), 4, 10, false);
    q.core.ended.ended(JobId(1), JobStatus::Success, start());
    let job = |id, status, depends: Vec<Dependency>| {
        let mut record = stored(status, &body(&[(node_op("n1"), JobStatus::Queued)]));
        record.id = JobId(id);
        let Recovered::Resume { mut view, log } = restart::recover(&record, start(), restart::CUT_SHORT) else {
            panic!()
        };
        view.depends = depends;
        (view, log)
    };
    for (view, log) in [
        job(7, JobStatus::Waiting, vec![on(JobId(1), &[JobStatus::Success])]),
        job(8, JobStatus::Waiting, vec![on(JobId(9), &[])]),
        job(9, JobStatus::Queued, vec![]),
    ] {
        q.core.resume(view, log);
    }
    let mut effects = Vec::new();
    q.core.promote_waiting(q.now(), &mut effects);
    q.core.schedule(&mut effects);
    q.apply(effects);
    assert_eq!(q.started, [JobId(7), JobId(9)]);
    assert_eq!(q.status(JobId(8)), JobStatus::Waiting);
    q.run(JobId(9), None);
    assert_eq!(q.status(JobId(8)), JobStatus::Running);
}

// ----- archive waves -------------------------------------------------------------

#[test]
fn an_archive_wave_takes_jobs_older_than_the_age_on_the_clock() {
    let mut q = Queue::new(4, 10);
    let old = q.job(0);
    q.run(old, None);
    q.clock.advance(Duration::from_secs(600));
    let newer = q.job(0);
    q.run(newer, None);
    let hour = Duration::from_secs(3600);
    assert_eq!(archive::older_than(&q.core.ended, q.now(), hour), []);
    // Older than the age, not as old.
    q.clock.advance(Duration::from_secs(3000));
    assert_eq!(archive::older_than(&q.core.ended, q.now(), hour), []);
    q.clock.advance(Duration::from_secs(1));
    assert_eq!(archive::older_than(&q.core.ended, q.now(), hour), [old]);
    q.clock.advance(Duration::from_secs(600));
    assert_eq!(archive::older_than(&q.core.ended, q.now(), hour), [old, newer]);
    assert_eq!(archive::older_than(&q.core.ended, q.now(), Duration::ZERO), [old, newer]);
    q.core.archived([old]);
    assert_eq!(archive::older_than(&q.core.ended, q.now(), hour), [newer]);
    assert_eq!(q.core.info().by_status.get("success"), Some(&1));
}

#[test]
fn an_archived_job_a_waiting_job_depends_on_stays_known() {
    let mut q = Queue::new(1, 10);
    let running = q.job(0);
    let a = q.job(0);
    q.cancel(a).unwrap();
    let b = q.submit(sleep(1.0), 0, vec![on(running, &[])]).unwrap();
    let c = q.submit(sleep(1.0), 0, vec![on(a, &[JobStatus::Canceled]), on(b, &[])]).unwrap();
    q.core.archived([a]);
    assert_eq!(q.core.ended.get(a).map(|(s, _)| s), Some(JobStatus::Canceled));
    q.run(running, None);
    q.run(b, None);
    assert_eq!(q.status(c), JobStatus::Running);
}

#[test]
fn archive_writes_go_out_in_waves() {
    let ids: Vec<JobId> = (0..600).map(JobId).collect();
    let sizes: Vec<usize> = archive::waves(&ids).map(<[JobId]>::len).collect();
    assert_eq!(sizes, [archive::ARCHIVE_WAVE, archive::ARCHIVE_WAVE, 600 - 2 * archive::ARCHIVE_WAVE]);
    // An age no timestamp can hold takes every job rather than panicking.
    assert_eq!(archive::cutoff(start(), Duration::MAX), Timestamp::MIN_UTC);
    assert_eq!(archive::cutoff(start(), Duration::from_secs(60)), start() - chrono::Duration::minutes(1));
}

#[test]
fn an_unfinished_job_cannot_be_archived() {
    let mut q = Queue::new(1, 10);
    let a = q.job(0);
    assert_eq!(invalid(q.core.check_archivable(a).unwrap_err()), "job 1 is running; only ended jobs can be archived");
    q.run(a, None);
    q.core.check_archivable(a).unwrap();
}

// ----- ids from blocks (a shared store) ------------------------------------------

/// A queue whose ids come in blocks of `size`, the first at `first`.
fn in_blocks(first: u64, size: u64) -> Queue {
    let mut q = Queue::new(1, 100);
    q.core = JobCore::new(JobIds::blocks(first, size), 1, 100, false);
    q
}

fn no_ids_left(e: KilnError) -> String {
    match e {
        KilnError::Unavailable(m) if m.starts_with("no job ids left") => m,
        other => panic!("not a refusal for want of ids: {other:?}"),
    }
}

#[test]
fn ids_come_from_blocks_and_the_next_is_asked_for_once_when_less_than_half_is_left() {
    let mut q = in_blocks(1000, 4);
    assert_eq!([q.job(0), q.job(0)], [JobId(1000), JobId(1001)]);
    assert!(q.fetches.is_empty(), "half of the block is left");
    assert_eq!(q.job(0), JobId(1002));
    assert_eq!(q.fetches, [4], "less than half left: the next block is asked for");
    assert_eq!(q.job(0), JobId(1003));
    assert_eq!(q.fetches, [4], "asked for once while it is on its way");
    assert_eq!(q.core.info().last_job_id, 1003);

    // The block arrives: ids go on from it, increasing.
    q.core.add_id_block(5000, 4);
    assert_eq!([q.job(0), q.job(0), q.job(0)], [JobId(5000), JobId(5001), JobId(5002)]);
    assert_eq!(q.fetches, [4, 4]);
}

#[test]
fn a_submission_with_no_id_left_is_refused_and_asks_again_after_a_failed_fetch() {
    let mut q = in_blocks(1, 2);
    q.job(0);
    q.job(0);
    assert_eq!(q.fetches, [2]);
    let m = no_ids_left(q.submit(sleep(1.0), 0, Vec::new()).unwrap_err());
    assert!(m.contains("being fetched"), "{m}");
    assert_eq!(q.fetches, [2], "still on its way: not asked twice");
    assert_eq!(q.core.info().last_job_id, 2, "no id given out");

    // The fetch failed: the next submission is refused too, and asks again.
    q.core.id_block_failed();
    no_ids_left(q.submit(sleep(1.0), 0, Vec::new()).unwrap_err());
    assert_eq!(q.fetches, [2, 2]);
    q.core.add_id_block(10, 2);
    assert_eq!(q.job(0), JobId(10));
}

#[test]
fn a_block_fetched_ahead_is_used_once_the_current_one_is() {
    let mut q = in_blocks(1, 3);
    q.job(0);
    q.job(0);
    assert_eq!(q.fetches, [3]);
    q.core.add_id_block(100, 3);
    assert_eq!([q.job(0), q.job(0)], [JobId(3), JobId(100)]);
}

#[test]
fn a_submission_of_several_spans_two_blocks_and_refers_back_by_place() {
    let mut q = in_blocks(1, 4);
    q.job(0);
    q.job(0);
    q.job(0);
    q.core.add_id_block(500, 4);
    let job = |depends: Vec<NewDependency>| NewJob { ops: sleep(1.0), priority: 0, depends };
    let back = |n| vec![NewDependency { job: JobRef::Earlier(n), statuses: vec![JobStatus::Success] }];
    let mut effects = Vec::new();
    let (_, admitted) =
        q.core.admit_many(vec![job(vec![]), job(back(1)), job(back(2))], q.now(), &mut effects).unwrap();
    let ids: Vec<JobId> = admitted.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [JobId(4), JobId(500), JobId(501)]);
    assert_eq!(q.core.active[&JobId(500)].view.depends, [on(JobId(4), &[JobStatus::Success])]);
    assert_eq!(q.core.active[&JobId(501)].view.depends, [on(JobId(4), &[JobStatus::Success])]);

    assert!(effects.is_empty(), "half of the new block is left: {effects:?}");

    // More jobs than ids left: refused whole, no id given out.
    assert_eq!(q.job(0), JobId(502));
    assert_eq!(q.fetches, [4, 4]);
    let e = q.core.admit_many((0..3).map(|_| job(vec![])).collect(), q.now(), &mut effects).unwrap_err();
    assert!(no_ids_left(e).contains("1 of this member's block remain for 3 job(s)"));
    assert_eq!(q.core.info().last_job_id, 502);
}

#[test]
fn serial_ids_never_run_out_and_ask_for_no_block() {
    let mut q = Queue::new(1, 10);
    for _ in 0..5 {
        q.job(0);
    }
    assert!(q.fetches.is_empty());
    assert_eq!(q.core.info().last_job_id, 5);
}

// ----- adopting a dead member's jobs ---------------------------------------------

#[test]
fn adopted_jobs_follow_the_restart_rule_naming_the_dead_member() {
    let mut q = in_blocks(100, 10);
    let record = |id, status: JobStatus, depends: Vec<Dependency>| {
        let mut r = stored(status, &body(&[(node_op("n1"), status)]));
        r.id = JobId(id);
        let mut view = JobView::from_record(&r, false);
        view.depends = depends;
        view.to_record(r.log.clone())
    };
    let records = [
        record(7, JobStatus::Running, vec![]),
        record(8, JobStatus::Queued, vec![]),
        record(9, JobStatus::Waiting, vec![on(JobId(7), &[JobStatus::Success])]),
        record(10, JobStatus::Waiting, vec![on(JobId(8), &[])]),
    ];
    let now = q.now();
    let (repairs, resumed) = q.core.adopt(&records, now, restart::MEMBER_DIED);
    assert_eq!(resumed, 3);
    assert_eq!(repairs.len(), 1);
    let ended = JobView::from_record(&repairs[0], false);
    assert_eq!((ended.id, ended.status), (JobId(7), JobStatus::Error));
    assert!(ended.error.as_deref().unwrap().contains("member running it died"), "{:?}", ended.error);
    assert_eq!(repairs[0].log.last().unwrap().message, restart::MEMBER_DIED);

    // Adopted twice (a repeated claim): nothing changes.
    let (again, resumed) = q.core.adopt(&records, now, restart::MEMBER_DIED);
    assert!(again.is_empty() && resumed == 0);

    let mut effects = Vec::new();
    q.core.promote_waiting(now, &mut effects);
    q.core.schedule(&mut effects);
    q.apply(effects);
    assert_eq!(q.started, [JobId(8)]);
    assert_eq!(q.status(JobId(9)), JobStatus::Error, "its dependency was cut short");
    q.run(JobId(8), None);
    assert_eq!(q.started, [JobId(8), JobId(10)]);
    assert_eq!(q.job(0), JobId(100), "new ids still come from this member's block");
}
