//! The node core driven directly: no actix, no store, no BMC. A [`Sim`]
//! plays the world: it keeps a stored copy of the record (applying the
//! core's commits), answers driver calls from a script, and writes every
//! effect into a trace, so that a test reads the order of a path.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_drivers::{DriverError, Inspection, Nic, Power, PowerAction};
use kiln_store::{BootDevice, DriverKind, NodeRecord, PowerState, ProvisionState as S, StoreError, Write};
use tokio::sync::oneshot::{self, Receiver, error::TryRecvError};

use super::{Input, NodeCore, Request};
use crate::KilnError;
use crate::clock::ManualClock;
use crate::driver::{DriverCall, DriverReply};
use crate::events::{EventKind, NodeEvent};
use crate::fsm::Verb;
use crate::metrics::Metrics;
use crate::node::effects::{Effect, Ticket};
use crate::node::upkeep::WaitTimeouts;
use crate::node::upkeep::{POWER_FAILURE, SyncOutcome};
use crate::node::{CallbackToken, NodeUpdate, Op};
use crate::view::NodeView;

type NodeAnswer = Receiver<Result<NodeView, KilnError>>;

/// The world around one core.
struct Sim {
    clock: ManualClock,
    metrics: Arc<Metrics>,
    core: NodeCore,
    /// The record as the store holds it.
    stored: Option<NodeRecord>,
    /// The writes of each commit the store took, in order.
    commits: Vec<Vec<Write>>,
    /// Every effect (and fed result), in order, as a short word.
    trace: Vec<String>,
    events: Vec<NodeEvent>,
    timers: Vec<(u64, Duration)>,
    /// How the BMC answers each call, in order; an empty script answers
    /// like a healthy fake BMC.
    replies: VecDeque<Result<DriverReply, DriverError>>,
    /// The profile every driver reply brings.
    learned: kiln_drivers::Profile,
    /// Whether connecting to the BMC works.
    connect: Result<(), DriverError>,
    /// How the store answers the next commits, in order (empty: it works).
    store_results: VecDeque<Result<(), StoreError>>,
    /// With `park`, driver calls wait here until [`Sim::resume`].
    park: bool,
    parked: VecDeque<(Ticket, DriverCall)>,
    /// With `park_connects`, connecting waits here until [`Sim::connected`]
    /// (the actor builds the BMC client on a blocking thread).
    park_connects: bool,
    parked_connects: VecDeque<Ticket>,
    stopped: bool,
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
}

fn sim_in(state: S) -> Sim {
    let clock = ManualClock::starting_at(start());
    let mut record = NodeRecord::enroll("n1".into(), DriverKind::Fake, clock.shared().now());
    record.provision_state = state;
    record.power_state = Some(PowerState::Off);
    let metrics = Arc::new(Metrics::default());
    let core = NodeCore::new(record.clone(), metrics.clone(), clock.shared());
    Sim {
        clock,
        metrics,
        core,
        stored: Some(record),
        commits: Vec::new(),
        trace: Vec::new(),
        events: Vec::new(),
        timers: Vec::new(),
        replies: VecDeque::new(),
        learned: kiln_drivers::Profile::default(),
        connect: Ok(()),
        store_results: VecDeque::new(),
        park: false,
        parked: VecDeque::new(),
        park_connects: false,
        parked_connects: VecDeque::new(),
        stopped: false,
    }
}

fn request(op: Op, wait: bool, holder: Option<&str>, takes_hold: bool) -> (Request, NodeAnswer) {
    let (reply, rx) = oneshot::channel();
    let lock_wait = Duration::from_secs(5);
    let holder = holder.map(str::to_string);
    (Request { op, wait, reply, parent: tracing::Span::none(), holder, takes_hold, lock_wait }, rx)
}

fn healthy_reply(call: &DriverCall) -> DriverReply {
    match call {
        DriverCall::GetPower => DriverReply::Power(Power::Off),
        DriverCall::Inspect => DriverReply::Inspected(Default::default()),
        _ => DriverReply::Done,
    }
}

fn injected(what: &str) -> DriverError {
    DriverError::Injected(what.into())
}

impl Sim {
    /// Feeds `input` and everything that follows from it until the core
    /// waits for nothing the sim answers on its own.
    fn feed(&mut self, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            for effect in self.core.handle(input) {
                if let Some(next) = self.execute(effect) {
                    inputs.push_back(next);
                }
            }
        }
    }

    fn execute(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Commit { ticket, writes } => {
                let result = self.store_results.pop_front().unwrap_or(Ok(()));
                self.trace.push(if result.is_ok() { "commit" } else { "commit failed" }.into());
                if result.is_ok() {
                    for w in &writes {
                        match w {
                            Write::UpdateNode(r) => self.stored = Some(NodeRecord::clone(r)),
                            Write::DeleteNode(_) => self.stored = None,
                            _ => {}
                        }
                    }
                    self.commits.push(writes);
                }
                Some(Input::Committed { ticket, result })
            }
            Effect::Connect { ticket } => {
                self.trace.push("connect".into());
                if self.park_connects {
                    self.parked_connects.push_back(ticket);
                    return None;
                }
                Some(Input::Connected { ticket, result: self.connect.clone() })
            }
            Effect::CallDriver { ticket, call, .. } => {
                self.trace.push(format!("call {call:?}"));
                if self.park {
                    self.parked.push_back((ticket, call));
                    return None;
                }
                let result = self.replies.pop_front().unwrap_or_else(|| Ok(healthy_reply(&call)));
                Some(Input::DriverReplied { ticket, result, learned: self.learned })
            }
            Effect::ForgetDriver { .. } => {
                self.trace.push("forget driver".into());
                None
            }
            Effect::LoadStored { ticket } => {
                self.trace.push("load".into());
                Some(Input::Loaded { ticket, result: Ok(self.stored.clone()) })
            }
            Effect::Publish(event) => {
                self.trace.push(format!("publish {:?}", event.kind).to_lowercase());
                self.events.push(event);
                None
            }
            Effect::Answer(answer) => {
                self.trace.push("answer".into());
                answer.send();
                None
            }
            Effect::StartTimer { waiter, after } => {
                self.trace.push("timer".into());
                self.timers.push((waiter, after));
                None
            }
            Effect::Stop => {
                self.trace.push("stop".into());
                self.stopped = true;
                None
            }
        }
    }

    fn run(&mut self, op: Op, wait: bool) -> NodeAnswer {
        let (r, rx) = request(op, wait, None, false);
        self.feed(Input::Run(r));
        rx
    }

    fn run_for(&mut self, op: Op, holder: &str) -> NodeAnswer {
        let (r, rx) = request(op, true, Some(holder), false);
        self.feed(Input::Run(r));
        rx
    }

    fn hold(&mut self, holder: &str) -> NodeAnswer {
        let (r, rx) = request(Op::Noop, true, Some(holder), true);
        self.feed(Input::Run(r));
        rx
    }

    fn release_hold(&mut self, holder: &str) -> bool {
        let (reply, mut rx) = oneshot::channel();
        self.feed(Input::ReleaseHold { holder: holder.into(), reply });
        rx.try_recv().expect("answered at once")
    }

    /// Answers the first parked driver call (as a healthy BMC, or from the
    /// script).
    fn resume(&mut self) {
        let (ticket, call) = self.parked.pop_front().expect("a call is parked");
        let result = self.replies.pop_front().unwrap_or_else(|| Ok(healthy_reply(&call)));
        self.feed(Input::DriverReplied { ticket, result, learned: self.learned });
    }

    /// Ends the first parked connection with the sim's `connect` result.
    fn connected(&mut self) {
        let ticket = self.parked_connects.pop_front().expect("a connection is parked");
        self.feed(Input::Connected { ticket, result: self.connect.clone() });
    }

    fn sync(&mut self, force: bool, max_retries: u32) -> SyncOutcome {
        let (reply, mut rx) = oneshot::channel();
        self.feed(Input::SyncPower { force, max_retries, reply });
        rx.try_recv().expect("answered")
    }

    fn recover(&mut self) -> bool {
        let (reply, mut rx) = oneshot::channel();
        self.feed(Input::RecoverPowerFailure { reply });
        rx.try_recv().expect("answered")
    }

    fn expire(&mut self, timeout: Duration) -> bool {
        let (reply, mut rx) = oneshot::channel();
        self.feed(Input::ExpireWait { timeouts: crate::node::upkeep::WaitTimeouts::all(timeout), reply });
        rx.try_recv().expect("answered")
    }

    fn abandon(&mut self, why: &str) -> bool {
        let (reply, mut rx) = oneshot::channel();
        self.feed(Input::Abandon { why: why.into(), reply });
        rx.try_recv().expect("answered")
    }

    fn state(&self) -> S {
        self.core.record().provision_state
    }

    fn kinds(&self) -> Vec<EventKind> {
        self.events.iter().map(|e| e.kind).collect()
    }

    /// The gauges count this one node exactly as its record and
    /// reservation say (or not at all once deleted).
    fn assert_gauges(&self) {
        let m = &self.metrics;
        if self.stopped {
            for s in [S::Enroll, S::Manageable, S::Available, S::Active] {
                assert_eq!(m.nodes_in(s), 0, "a deleted node counts nowhere");
            }
            assert_eq!(m.nodes_reserved(), 0);
            return;
        }
        let r = self.core.record();
        assert_eq!(m.nodes_in(r.provision_state), 1, "the state gauge follows the record ({})", r.provision_state);
        let total: i64 = S::ALL.iter().map(|s| m.nodes_in(*s)).sum();
        assert_eq!(total, 1, "the node counts in one state only");
        assert_eq!(m.nodes_in_maintenance(), i64::from(r.maintenance));
        assert_eq!(m.nodes_reserved(), i64::from(self.core.view().reservation.is_some()));
    }
}

fn answered(rx: &mut NodeAnswer) -> Result<NodeView, KilnError> {
    rx.try_recv().expect("the caller is answered")
}

fn pending(rx: &mut NodeAnswer) {
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty, "the caller still waits");
}

// ----- operations: commit, adopt, publish, answer -------------------------

#[test]
fn an_immediate_verb_commits_then_publishes_then_answers() {
    let mut sim = sim_in(S::Available);
    let mut rx = sim.run(Op::Verb(Verb::Manage), false);
    let view = answered(&mut rx).unwrap();
    assert_eq!(view.provision_state, S::Manageable);
    assert_eq!(sim.trace, ["commit", "publish start", "publish end", "answer"]);
    assert_eq!(sim.stored.as_ref().unwrap().provision_state, S::Manageable);
    assert!(sim.events.iter().all(|e| e.provision_state == S::Manageable), "published after adopting");
    sim.assert_gauges();
}

#[test]
fn a_task_enters_its_working_state_answers_and_runs_its_steps() {
    let mut sim = sim_in(S::Enroll);
    let mut rx = sim.run(Op::Verb(Verb::Manage), false);
    assert_eq!(answered(&mut rx).unwrap().provision_state, S::Verifying, "answered at the first commit");
    assert_eq!(sim.trace, ["connect", "commit", "publish start", "answer", "call GetPower", "commit", "publish end"]);
    assert_eq!(sim.state(), S::Manageable);
    assert_eq!(sim.kinds(), [EventKind::Start, EventKind::End]);
    assert!(sim.core.view().reservation.is_none(), "released at the end");
    sim.assert_gauges();
}

#[test]
fn with_wait_the_answer_comes_at_the_end() {
    let mut sim = sim_in(S::Enroll);
    let mut rx = sim.run(Op::Verb(Verb::Manage), true);
    assert_eq!(answered(&mut rx).unwrap().provision_state, S::Manageable);
    assert_eq!(sim.trace.last().unwrap(), "answer");
    sim.assert_gauges();
}

#[test]
fn the_working_state_is_visible_and_gauged_while_the_step_runs() {
    let mut sim = sim_in(S::Enroll);
    sim.park = true;
    let _rx = sim.run(Op::Verb(Verb::Manage), true);
    assert_eq!(sim.state(), S::Verifying);
    assert_eq!(sim.core.view().reservation.clone().unwrap().purpose, "manage");
    sim.assert_gauges();
    sim.resume();
    assert_eq!(sim.state(), S::Manageable);
    sim.assert_gauges();
}

#[test]
fn a_failing_step_drops_to_the_failed_state_with_the_error() {
    let mut sim = sim_in(S::Available);
    // deploy: set boot, then power on; the power on fails.
    sim.replies = VecDeque::from([Ok(DriverReply::Done), Err(injected("no power"))]);
    let mut rx = sim.run(Op::Verb(Verb::Deploy), true);
    let err = answered(&mut rx).unwrap_err();
    assert!(matches!(&err, KilnError::Driver { message, .. } if message.contains("no power")), "{err}");
    assert_eq!(sim.state(), S::DeployFailed);
    assert!(sim.core.record().last_error.as_deref().unwrap().contains("no power"));
    assert_eq!(sim.kinds(), [EventKind::Start, EventKind::Error]);
    assert_eq!(sim.stored.as_ref().unwrap().provision_state, S::DeployFailed);
    sim.assert_gauges();
}

#[test]
fn what_the_steps_changed_is_committed_with_the_tasks_end_whether_it_succeeds_or_fails() {
    // deploy: set boot, then power on.
    let mut ok = sim_in(S::Available);
    assert_eq!(ok.core.record().boot_device, None);
    let _rx = ok.run(Op::Verb(Verb::Deploy), true);
    let stored = ok.stored.as_ref().unwrap();
    assert_eq!(stored.provision_state, S::Active);
    assert!(stored.boot_device.is_some(), "the boot device the BMC took");
    assert_eq!(stored.power_state, Some(PowerState::On));
    assert_eq!(ok.core.record(), stored, "the record is what was committed");

    let mut failed = sim_in(S::Available);
    failed.replies = VecDeque::from([Ok(DriverReply::Done), Err(injected("no power"))]);
    let _rx = failed.run(Op::Verb(Verb::Deploy), true);
    let stored = failed.stored.as_ref().unwrap();
    assert_eq!(stored.provision_state, S::DeployFailed);
    assert!(stored.boot_device.is_some(), "the boot device the BMC took is kept");
    assert_eq!(stored.power_state, Some(PowerState::Off), "the power on that failed is not");
}

#[test]
fn inspection_commits_a_port_if_free_per_nic_with_the_facts() {
    let mut sim = sim_in(S::Manageable);
    let found = Inspection {
        facts: [("cpus".to_string(), "4".to_string())].into(),
        nics: vec![Nic::new("NIC.1", "52:54:00:00:00:01").unwrap(), Nic::new("NIC.2", "52-54-00-00-00-0A").unwrap()],
    };
    sim.replies = VecDeque::from([Ok(DriverReply::Power(Power::Off)), Ok(DriverReply::Inspected(found))]);
    let mut rx = sim.run(Op::Verb(Verb::Inspect), true);
    assert_eq!(answered(&mut rx).unwrap().provision_state, S::Manageable);

    let last = sim.commits.last().expect("a commit ends the task");
    let Some(Write::UpdateNode(record)) = last.first() else { panic!("the node first: {last:?}") };
    assert_eq!(record.properties.get("cpus").map(String::as_str), Some("4"), "the facts in the same commit");
    let ports: Vec<_> = last
        .iter()
        .filter_map(|w| match w {
            Write::InsertPortIfFree(p) => Some(p),
            _ => None,
        })
        .collect();
    let macs: Vec<&str> = ports.iter().map(|p| p.address.as_str()).collect();
    assert_eq!(macs, ["52:54:00:00:00:01", "52:54:00:00:00:0a"]);
    let node = sim.core.record().uuid;
    assert!(ports.iter().all(|p| p.node == node && p.portgroup.is_none()), "{ports:?}");
    assert_ne!(ports[0].uuid, ports[1].uuid, "each port its own uuid");
    let earlier = &sim.commits[..sim.commits.len() - 1];
    assert!(
        earlier.iter().flatten().all(|w| !matches!(w, Write::InsertPortIfFree(_) | Write::InsertPort(_))),
        "ports are written once, with the facts"
    );
}

#[test]
fn an_inspection_without_nics_writes_no_port() {
    let mut sim = sim_in(S::Manageable);
    let mut rx = sim.run(Op::Verb(Verb::Inspect), true);
    assert_eq!(answered(&mut rx).unwrap().provision_state, S::Manageable);
    assert!(sim.commits.iter().flatten().all(|w| !matches!(w, Write::InsertPortIfFree(_))), "{:?}", sim.commits);
}

#[test]
fn a_driver_that_cannot_be_had_changes_nothing_and_says_so() {
    let mut sim = sim_in(S::Available);
    sim.connect = Err(injected("bad info"));
    let before = sim.core.record().clone();
    let mut rx = sim.run(Op::Verb(Verb::Deploy), false);
    assert!(matches!(answered(&mut rx), Err(KilnError::Driver { .. })));
    assert_eq!(sim.trace, ["connect", "answer"]);
    assert_eq!(sim.core.record(), &before);
    assert!(sim.core.view().reservation.is_none());
    sim.assert_gauges();
}

#[test]
fn a_failed_first_commit_answers_the_error_and_releases_unchanged() {
    let mut sim = sim_in(S::Enroll);
    sim.store_results = VecDeque::from([Err(StoreError::Corrupt("disk".into()))]);
    let mut rx = sim.run(Op::Verb(Verb::Manage), false);
    assert!(answered(&mut rx).is_err());
    assert_eq!(sim.trace, ["connect", "commit failed", "answer"]);
    assert_eq!(sim.state(), S::Enroll, "nothing adopted");
    assert!(sim.events.is_empty(), "nothing published");
    assert!(sim.core.view().reservation.is_none());
    sim.assert_gauges();
}

#[test]
fn a_failed_last_commit_answers_the_error_and_publishes_nothing_more() {
    let mut sim = sim_in(S::Enroll);
    sim.store_results = VecDeque::from([Ok(()), Err(StoreError::Corrupt("disk".into()))]);
    let mut rx = sim.run(Op::Verb(Verb::Manage), true);
    assert!(answered(&mut rx).is_err());
    assert_eq!(sim.state(), S::Verifying, "the last change was never adopted");
    assert_eq!(sim.kinds(), [EventKind::Start]);
    assert!(sim.core.view().reservation.is_none());
    sim.assert_gauges();
}

#[test]
fn an_invalid_verb_is_refused_without_a_commit() {
    let mut sim = sim_in(S::Enroll);
    let mut rx = sim.run(Op::Verb(Verb::Deploy), false);
    assert!(matches!(answered(&mut rx), Err(KilnError::InvalidState { .. })));
    assert_eq!(sim.trace, ["answer"]);
    sim.assert_gauges();
}

#[test]
fn power_records_its_target_then_the_result() {
    let mut sim = sim_in(S::Manageable);
    sim.park = true;
    let mut rx = sim.run(Op::Power(PowerAction::On), false);
    assert_eq!(answered(&mut rx).unwrap().target_power_state, Some(PowerState::On));
    assert_eq!(sim.core.record().target_power_state, Some(PowerState::On));
    sim.resume();
    let r = sim.core.record();
    assert_eq!((r.power_state, r.target_power_state), (Some(PowerState::On), None));
    assert_eq!(sim.kinds(), [EventKind::Start, EventKind::End]);
    sim.assert_gauges();
}

#[test]
fn a_failed_power_action_keeps_the_state_and_records_the_error() {
    let mut sim = sim_in(S::Manageable);
    sim.replies = VecDeque::from([Err(injected("psu"))]);
    let mut rx = sim.run(Op::Power(PowerAction::On), true);
    assert!(matches!(answered(&mut rx), Err(KilnError::Driver { .. })));
    let r = sim.core.record();
    assert_eq!((r.power_state, r.target_power_state), (Some(PowerState::Off), None));
    assert!(r.last_error.as_deref().unwrap().contains("psu"));
    assert_eq!(sim.kinds(), [EventKind::Start, EventKind::Error]);
    sim.assert_gauges();
}

#[test]
fn the_boot_device_is_recorded_after_the_bmc_took_it() {
    let mut sim = sim_in(S::Manageable);
    let mut rx = sim.run(Op::BootDevice { device: BootDevice::Pxe, persistent: true }, true);
    assert_eq!(answered(&mut rx).unwrap().boot_device, Some(BootDevice::Pxe));
    assert_eq!(sim.trace[..3], ["connect", "call SetBoot(Pxe, true)", "commit"]);
    sim.assert_gauges();
}

#[test]
fn maintenance_on_and_off_keep_the_maintenance_gauge() {
    let mut sim = sim_in(S::Manageable);
    let on = Op::Maintenance { on: true, reason: Some("disk".into()) };
    answered(&mut sim.run(on, true)).unwrap();
    assert!(sim.core.record().maintenance);
    sim.assert_gauges();
    answered(&mut sim.run(Op::Maintenance { on: false, reason: None }, true)).unwrap();
    assert!(!sim.core.record().maintenance);
    sim.assert_gauges();
}

#[test]
fn an_update_of_driver_info_forgets_the_driver_and_a_bad_one_is_refused() {
    let mut sim = sim_in(S::Manageable);
    let mut update = NodeUpdate::default();
    update.driver_info.insert("power".into(), Some("on".into()));
    answered(&mut sim.run(Op::Update(update), true)).unwrap();
    assert_eq!(sim.trace[0], "forget driver");
    let mut bad = NodeUpdate::default();
    bad.driver_info.insert("bogus".into(), Some("x".into()));
    sim.trace.clear();
    let res = answered(&mut sim.run(Op::Update(bad), true));
    assert!(matches!(res, Err(KilnError::InvalidInput(_))), "{res:?}");
    assert_eq!(sim.trace, ["answer"]);
    sim.assert_gauges();
}

#[test]
fn delete_takes_the_node_out_of_the_gauges_and_stops() {
    let mut sim = sim_in(S::Manageable);
    answered(&mut sim.run(Op::Delete, true)).unwrap();
    assert_eq!(sim.trace, ["commit", "answer", "stop"]);
    assert!(sim.stored.is_none());
    assert!(sim.stopped);
    sim.assert_gauges();
}

#[test]
fn delete_is_refused_from_a_busy_state() {
    let mut sim = sim_in(S::Active);
    let res = answered(&mut sim.run(Op::Delete, true));
    assert!(matches!(res, Err(KilnError::InvalidInput(_))));
    assert!(!sim.stopped);
    sim.assert_gauges();
}

#[test]
fn commits_are_stamped_by_the_site_clock() {
    let mut sim = sim_in(S::Available);
    sim.clock.advance(Duration::from_secs(3600));
    answered(&mut sim.run(Op::Verb(Verb::Manage), true)).unwrap();
    let hour_later = start() + chrono::Duration::hours(1);
    assert_eq!(sim.core.record().updated_at, hour_later);
    assert_eq!(sim.events[0].at, hour_later);
}

// ----- the lock ---------------------------------------------------------------

#[test]
fn exclusive_requests_queue_in_fifo_order() {
    let mut sim = sim_in(S::Manageable);
    sim.park = true;
    let mut first = sim.run(Op::Power(PowerAction::On), true);
    let mut second = sim.run(Op::Maintenance { on: true, reason: None }, true);
    let mut third = sim.run(Op::Maintenance { on: false, reason: None }, true);
    assert_eq!(sim.timers.len(), 2, "each waiter gets its lock_wait timer");
    pending(&mut second);
    pending(&mut third);
    sim.resume();
    answered(&mut first).unwrap();
    assert!(answered(&mut second).unwrap().maintenance, "the first waiter ran first");
    assert!(!answered(&mut third).unwrap().maintenance, "then the second");
    assert!(sim.core.view().reservation.is_none());
    sim.assert_gauges();
}

#[test]
fn a_waiter_whose_lock_wait_runs_out_gets_node_locked() {
    let mut sim = sim_in(S::Manageable);
    sim.park = true;
    let _first = sim.run(Op::Power(PowerAction::On), true);
    let mut second = sim.run(Op::Noop, true);
    let (waiter, after) = sim.timers[0];
    assert_eq!(after, Duration::from_secs(5));
    sim.feed(Input::LockWaitOver { waiter });
    match answered(&mut second) {
        Err(KilnError::NodeLocked { holder_purpose, since, .. }) => {
            assert_eq!(holder_purpose, "power on");
            assert_eq!(since, "2026-01-01T00:00:00.000Z", "the reservation's time, from the site clock");
        }
        other => panic!("{other:?}"),
    }
    // The timer of a waiter that already ran does nothing.
    sim.feed(Input::LockWaitOver { waiter });
    sim.resume();
    sim.assert_gauges();
}

#[test]
fn with_no_lock_wait_a_busy_node_refuses_at_once() {
    let mut sim = sim_in(S::Manageable);
    sim.park = true;
    let _first = sim.run(Op::Power(PowerAction::On), true);
    let (mut r, mut rx) = request(Op::Noop, true, None, false);
    r.lock_wait = Duration::ZERO;
    sim.feed(Input::Run(r));
    assert!(matches!(answered(&mut rx), Err(KilnError::NodeLocked { .. })));
    assert!(sim.timers.is_empty());
}

#[test]
fn a_waiter_whose_caller_left_is_skipped() {
    let mut sim = sim_in(S::Manageable);
    sim.park = true;
    let _first = sim.run(Op::Power(PowerAction::On), true);
    let gone = sim.run(Op::Maintenance { on: true, reason: None }, true);
    drop(gone);
    let mut next = sim.run(Op::Noop, true);
    sim.resume();
    assert!(!answered(&mut next).unwrap().maintenance, "the abandoned request never ran");
    sim.assert_gauges();
}

#[test]
fn a_hold_admits_only_its_holder_until_released() {
    let mut sim = sim_in(S::Manageable);
    answered(&mut sim.hold("job-1")).unwrap();
    assert_eq!(sim.core.view().reservation.clone().unwrap().purpose, "held by job-1");
    sim.assert_gauges();
    // The holder's operation runs at once; anyone else's waits.
    answered(&mut sim.run_for(Op::Maintenance { on: true, reason: None }, "job-1")).unwrap();
    let mut other = sim.run(Op::Maintenance { on: false, reason: None }, true);
    pending(&mut other);
    assert_eq!(sim.core.view().reservation.clone().unwrap().purpose, "held by job-1", "the hold outlives the task");
    assert!(!sim.release_hold("job-2"), "only the holder releases");
    assert!(sim.release_hold("job-1"));
    assert!(!answered(&mut other).unwrap().maintenance, "the waiter ran on release");
    assert!(sim.core.view().reservation.is_none());
    sim.assert_gauges();
}

#[test]
fn taking_a_hold_twice_answers_at_once_and_others_see_held_by() {
    let mut sim = sim_in(S::Manageable);
    answered(&mut sim.hold("job-1")).unwrap();
    answered(&mut sim.hold("job-1")).unwrap();
    let (mut r, mut rx) = request(Op::Noop, true, None, false);
    r.lock_wait = Duration::ZERO;
    sim.feed(Input::Run(r));
    match answered(&mut rx) {
        Err(KilnError::NodeLocked { holder_purpose, .. }) => assert_eq!(holder_purpose, "held by job-1"),
        other => panic!("{other:?}"),
    }
}

// ----- upkeep -------------------------------------------------------------------

#[test]
fn power_sync_skips_a_busy_node_and_a_held_one() {
    let mut sim = sim_in(S::Manageable);
    sim.park = true;
    let _task = sim.run(Op::Power(PowerAction::On), true);
    assert_eq!(sim.sync(false, 3), SyncOutcome::Skipped("reserved".into()));
    sim.resume();
    sim.park = false;
    answered(&mut sim.hold("job")).unwrap();
    assert_eq!(sim.sync(false, 3), SyncOutcome::Skipped("reserved".into()));
    assert!(!sim.recover());
    sim.assert_gauges();
}

#[test]
fn power_sync_skips_maintenance_enroll_and_a_power_target() {
    let mut sim = sim_in(S::Enroll);
    assert_eq!(sim.sync(false, 3), SyncOutcome::Skipped("enroll".into()));
    let mut sim = sim_in(S::Manageable);
    answered(&mut sim.run(Op::Maintenance { on: true, reason: None }, true)).unwrap();
    assert_eq!(sim.sync(false, 3), SyncOutcome::Skipped("maintenance".into()));
}

#[test]
fn power_sync_records_the_bmc_state_and_releases() {
    let mut sim = sim_in(S::Manageable);
    assert_eq!(sim.sync(false, 3), SyncOutcome::InSync);
    sim.replies = VecDeque::from([Ok(DriverReply::Power(Power::On))]);
    let outcome = sim.sync(false, 3);
    assert_eq!(outcome, SyncOutcome::Updated { from: Some(PowerState::Off), to: PowerState::On });
    assert_eq!(sim.core.record().power_state, Some(PowerState::On));
    assert_eq!(sim.kinds(), [EventKind::End]);
    assert_eq!(sim.events[0].action, "power sync");
    assert!(sim.core.view().reservation.is_none());
    sim.assert_gauges();
}

#[test]
fn forced_power_sync_sets_the_bmc_back() {
    let mut sim = sim_in(S::Manageable);
    sim.replies = VecDeque::from([Ok(DriverReply::Power(Power::On))]);
    assert_eq!(sim.sync(true, 3), SyncOutcome::Forced { to: PowerState::Off });
    assert!(sim.trace.contains(&"call SetPower(Off)".to_string()));
    assert_eq!(sim.core.record().power_state, Some(PowerState::Off));
    sim.assert_gauges();
}

#[test]
fn repeated_power_read_failures_put_the_node_in_maintenance_then_recovery_takes_it_out() {
    let mut sim = sim_in(S::Manageable);
    sim.replies = VecDeque::from([Err(injected("a")), Err(injected("b"))]);
    let first = sim.sync(false, 2);
    assert!(matches!(first, SyncOutcome::Failed { attempts: 1, maintenance: false, .. }), "{first:?}");
    let second = sim.sync(false, 2);
    assert!(matches!(second, SyncOutcome::Failed { attempts: 2, maintenance: true, .. }), "{second:?}");
    let r = sim.core.record();
    assert!(r.maintenance);
    assert_eq!(r.fault.as_deref(), Some(POWER_FAILURE));
    assert_eq!(sim.kinds(), [EventKind::Error]);
    sim.assert_gauges();

    assert!(sim.recover());
    let r = sim.core.record();
    assert!(!r.maintenance && r.fault.is_none());
    sim.assert_gauges();
}

#[test]
fn recovery_leaves_a_node_whose_bmc_still_fails() {
    let mut sim = sim_in(S::Manageable);
    sim.replies = VecDeque::from([Err(injected("a"))]);
    assert!(matches!(sim.sync(false, 1), SyncOutcome::Failed { maintenance: true, .. }));
    sim.replies = VecDeque::from([Err(injected("still"))]);
    assert!(!sim.recover());
    assert!(sim.core.record().maintenance);
    assert!(sim.core.view().reservation.is_none());
    sim.assert_gauges();
}

#[test]
fn a_wait_state_expires_by_the_site_clock() {
    let mut sim = sim_in(S::WaitCallBack);
    let timeout = Duration::from_secs(600);
    assert!(!sim.expire(timeout), "not yet");
    sim.clock.advance(Duration::from_secs(601));
    assert!(sim.expire(timeout));
    assert_eq!(sim.state(), S::DeployFailed);
    assert!(sim.core.record().last_error.as_deref().unwrap().contains("timed out"));
    assert_eq!(sim.kinds(), [EventKind::Error]);
    assert!(sim.core.view().reservation.is_none());
    sim.assert_gauges();
}

#[test]
fn a_failed_upkeep_commit_changes_nothing_and_releases() {
    let mut sim = sim_in(S::WaitCallBack);
    sim.clock.advance(Duration::from_secs(601));
    sim.store_results = VecDeque::from([Err(StoreError::Corrupt("disk".into()))]);
    assert!(!sim.expire(Duration::from_secs(600)));
    assert_eq!(sim.state(), S::WaitCallBack);
    assert!(sim.events.is_empty());
    assert!(sim.core.view().reservation.is_none());
    sim.assert_gauges();
}

// ----- callbacks: the wait states ------------------------------------------

/// `sim` with `instance_info.KEY = value`, set through the core.
fn asking(sim: &mut Sim, key: &str, value: serde_json::Value) {
    let update = NodeUpdate { instance_info: [(key.to_string(), Some(value))].into(), ..Default::default() };
    answered(&mut sim.run(Op::Update(update), true)).unwrap();
}

fn callback(sim: &mut Sim, token: &str, failure: Option<&str>) -> Result<NodeView, KilnError> {
    let op = Op::Callback { token: CallbackToken(token.into()), failure: failure.map(str::to_string) };
    answered(&mut sim.run(op, true))
}

/// A node whose deploy asked for a callback, waiting in `wait call-back`.
fn deployed_waiting() -> Sim {
    let mut sim = sim_in(S::Available);
    asking(&mut sim, "deploy_callback", serde_json::json!(true));
    answered(&mut sim.run(Op::Verb(Verb::Deploy), true)).unwrap();
    sim
}

fn issued_token(sim: &Sim) -> String {
    sim.core.record().callback.as_ref().expect("a token is issued").token.clone()
}

#[test]
fn a_deploy_asking_for_a_callback_waits_then_the_right_token_makes_it_active() {
    let mut sim = sim_in(S::Available);
    asking(&mut sim, "deploy_callback", serde_json::json!(true));
    let view = answered(&mut sim.run(Op::Verb(Verb::Deploy), true)).unwrap();
    assert_eq!(view.provision_state, S::WaitCallBack, "the task ends waiting");
    assert_eq!(sim.core.record().target_provision_state, Some(S::Active), "the target is kept");
    assert!(sim.core.view().reservation.is_none(), "a waiting node is not reserved");
    let token = issued_token(&sim);
    assert_eq!(token.len(), 64, "256 bits in hex");
    assert_eq!(sim.stored.as_ref().unwrap().callback.as_ref().unwrap().token, token, "the token is stored");
    sim.assert_gauges();

    let view = callback(&mut sim, &token, None).unwrap();
    assert_eq!(view.provision_state, S::Active);
    assert_eq!(sim.core.record().target_provision_state, None);
    assert!(sim.core.record().callback.is_none(), "the token is spent");
    assert!(sim.stored.as_ref().unwrap().callback.is_none());
    assert_eq!(sim.metrics.callbacks_counted(false), 1);
    assert_eq!(callback(&mut sim, &token, None).unwrap_err().kind(), "invalid_state", "a spent token moves nothing");
    sim.assert_gauges();
}

#[test]
fn a_wrong_token_is_refused_counted_and_changes_nothing() {
    let mut sim = deployed_waiting();
    let token = issued_token(&sim);
    let stored = sim.stored.clone();
    let events = sim.events.len();
    // The issued token with its last digit changed (never equal to it).
    let last = if token.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &token[..63]);
    for bad in [wrong.as_str(), "", &token[..32]] {
        let err = callback(&mut sim, bad, None).unwrap_err();
        assert_eq!(err.kind(), "invalid_input", "{err}");
        assert!(!err.to_string().contains(&token), "the error does not show the token");
    }
    assert_eq!(sim.metrics.callbacks_counted(true), 3);
    assert_eq!(sim.metrics.callbacks_counted(false), 0);
    assert_eq!(sim.stored, stored, "nothing stored");
    assert_eq!(sim.events.len(), events, "nothing published");
    assert_eq!(sim.state(), S::WaitCallBack);
    assert_eq!(callback(&mut sim, &token, None).unwrap().provision_state, S::Active, "the right one still works");
}

#[test]
fn a_reported_failure_fails_the_deploy_with_the_message() {
    let mut sim = deployed_waiting();
    let token = issued_token(&sim);
    let view = callback(&mut sim, &token, Some("grub-install failed")).unwrap();
    assert_eq!(view.provision_state, S::DeployFailed);
    let error = sim.core.record().last_error.clone().unwrap();
    assert!(error.contains("grub-install failed"), "{error}");
    assert!(sim.core.record().callback.is_none());
    assert_eq!(sim.kinds().last(), Some(&EventKind::Error));
    sim.assert_gauges();
}

#[test]
fn a_callback_outside_a_wait_state_is_refused() {
    let mut sim = sim_in(S::Active);
    let err = callback(&mut sim, "whatever", None).unwrap_err();
    assert_eq!(err.kind(), "invalid_state", "{err}");
    assert_eq!(sim.state(), S::Active);
    assert_eq!(sim.metrics.callbacks_counted(true), 0, "not a token guess: nothing was issued");
}

#[test]
fn a_callback_setting_that_is_not_a_bool_is_refused_before_anything_moves() {
    let mut sim = sim_in(S::Available);
    asking(&mut sim, "deploy_callback", serde_json::json!("yes"));
    let stored = sim.stored.clone();
    let err = answered(&mut sim.run(Op::Verb(Verb::Deploy), true)).unwrap_err();
    assert_eq!(err.kind(), "invalid_input", "{err}");
    assert!(err.to_string().contains("deploy_callback"), "{err}");
    assert_eq!(sim.stored, stored);
    asking(&mut sim, "deploy_callback", serde_json::json!(false));
    assert_eq!(answered(&mut sim.run(Op::Verb(Verb::Deploy), true)).unwrap().provision_state, S::Active);
}

#[test]
fn clean_waits_in_clean_wait_and_a_callback_ends_it() {
    let mut sim = sim_in(S::Manageable);
    asking(&mut sim, "clean_callback", serde_json::json!(true));
    assert_eq!(answered(&mut sim.run(Op::Verb(Verb::Clean), true)).unwrap().provision_state, S::CleanWait);
    let token = issued_token(&sim);
    assert_eq!(callback(&mut sim, &token, None).unwrap().provision_state, S::Manageable);
    assert_eq!(answered(&mut sim.run(Op::Verb(Verb::Clean), true)).unwrap().provision_state, S::CleanWait);
    let token = issued_token(&sim);
    assert_eq!(callback(&mut sim, &token, Some("disk 3 did not wipe")).unwrap().provision_state, S::CleanFailed);
    sim.assert_gauges();
}

#[test]
fn each_wait_state_times_out_by_its_own_setting() {
    let mut sim = sim_in(S::Manageable);
    asking(&mut sim, "inspect_callback", serde_json::json!(true));
    assert_eq!(answered(&mut sim.run(Op::Verb(Verb::Inspect), true)).unwrap().provision_state, S::InspectWait);
    let long = Duration::from_secs(3600);
    let short = Duration::from_secs(60);
    let others_short = WaitTimeouts { deploy_callback: short, clean_callback: short, inspect_wait: long, other: short };
    sim.clock.advance(Duration::from_secs(120));
    let (reply, mut rx) = oneshot::channel();
    sim.feed(Input::ExpireWait { timeouts: others_short, reply });
    assert!(!rx.try_recv().unwrap(), "inspect wait has its own, longer timeout");
    let inspect_short = WaitTimeouts { inspect_wait: short, ..WaitTimeouts::all(long) };
    let (reply, mut rx) = oneshot::channel();
    sim.feed(Input::ExpireWait { timeouts: inspect_short, reply });
    assert!(rx.try_recv().unwrap());
    assert_eq!(sim.state(), S::InspectFailed);
    let error = sim.core.record().last_error.clone().unwrap();
    assert!(error.contains("inspect_wait_timeout"), "the error names the setting: {error}");
    assert!(sim.core.record().callback.is_none(), "a timed-out wait's token is spent");
    sim.assert_gauges();
}

#[test]
fn an_operation_while_waiting_does_not_restart_the_wait_clock() {
    let mut sim = deployed_waiting();
    sim.clock.advance(Duration::from_secs(500));
    answered(&mut sim.run(Op::Power(PowerAction::On), true)).unwrap();
    sim.clock.advance(Duration::from_secs(200));
    assert!(sim.expire(Duration::from_secs(600)), "700 s since the wait began");
    assert_eq!(sim.state(), S::DeployFailed);
}

// ----- abandonment at shutdown ----------------------------------------------------

#[test]
fn abandoning_an_idle_node_closes_it_and_changes_nothing() {
    let mut sim = sim_in(S::Manageable);
    assert!(!sim.abandon("shutting down"));
    let res = answered(&mut sim.run(Op::Noop, true));
    assert!(matches!(res, Err(KilnError::Unavailable(m)) if m.contains("shutting down")));
    assert_eq!(sim.sync(false, 3), SyncOutcome::Skipped("reserved".into()), "closed nodes get no upkeep");
    sim.assert_gauges();
}

#[test]
fn a_node_is_handed_over_only_when_idle_and_starts_nothing_after() {
    let mut busy = sim_in(S::Available);
    busy.park = true;
    let _task = busy.run(Op::Verb(Verb::Deploy), true);
    assert!(!busy.core.hand_over(), "a running task keeps the node here");
    let mut sim = sim_in(S::Available);
    let commits = sim.trace.iter().filter(|t| t.starts_with("commit")).count();
    assert!(sim.core.hand_over(), "idle: given up");
    let res = answered(&mut sim.run(Op::Noop, true));
    assert!(matches!(res, Err(KilnError::Unavailable(m)) if m.contains("handed over")), "nothing starts after");
    assert_eq!(sim.sync(false, 3), SyncOutcome::Skipped("reserved".into()), "and no upkeep");
    assert_eq!(sim.trace.iter().filter(|t| t.starts_with("commit")).count(), commits, "nothing more is written");
    sim.assert_gauges();
}

#[test]
fn abandoning_a_task_fails_the_node_answers_everyone_and_keeps_the_gauges() {
    let mut sim = sim_in(S::Available);
    sim.park = true;
    let mut task = sim.run(Op::Verb(Verb::Deploy), true);
    let mut waiter = sim.run(Op::Noop, true);
    assert_eq!(sim.state(), S::Deploying);
    sim.assert_gauges();

    assert!(sim.abandon("shutting down"));
    assert!(matches!(answered(&mut task), Err(KilnError::Driver { message, .. }) if message == "shutting down"));
    assert!(matches!(answered(&mut waiter), Err(KilnError::Unavailable(_))));
    assert_eq!(sim.state(), S::DeployFailed, "the restart rule's change is adopted");
    assert_eq!(sim.stored.as_ref().unwrap().provision_state, S::DeployFailed);
    assert!(sim.core.view().reservation.is_none());
    let last = sim.events.last().unwrap();
    assert_eq!((last.kind, last.action.as_str()), (EventKind::Error, "deploy"));
    sim.assert_gauges();

    // The BMC's late answer finds no task to continue, and nothing is committed.
    let commits = sim.trace.iter().filter(|t| t.starts_with("commit")).count();
    sim.resume();
    assert_eq!(sim.trace.iter().filter(|t| t.starts_with("commit")).count(), commits);
    assert_eq!(sim.state(), S::DeployFailed);
    sim.assert_gauges();
}

#[test]
fn abandoning_a_task_whose_fix_cannot_be_committed_answers_false() {
    let mut sim = sim_in(S::Available);
    sim.park = true;
    let _task = sim.run(Op::Verb(Verb::Deploy), true);
    sim.store_results = VecDeque::from([Err(StoreError::Corrupt("disk".into()))]);
    assert!(!sim.abandon("shutting down"));
    assert_eq!(sim.state(), S::Deploying, "nothing adopted: the restart rule will fix it");
    assert!(sim.core.view().reservation.is_none());
    sim.assert_gauges();
}

#[test]
fn a_request_arriving_while_the_bmc_is_connecting_waits_for_the_task() {
    let mut sim = sim_in(S::Available);
    sim.park_connects = true;
    let mut deploy = sim.run(Op::Verb(Verb::Deploy), true);
    assert_eq!(sim.state(), S::Available, "no working state before the BMC can be reached");
    let mut second = sim.run(Op::Maintenance { on: true, reason: None }, true);
    assert_eq!(sim.timers.len(), 1, "the second request waits its lock_wait");
    assert!(matches!(second.try_recv(), Err(TryRecvError::Empty)));

    assert_eq!(sim.sync(false, 3), SyncOutcome::Skipped("reserved".into()), "upkeep skips a node connecting");

    sim.connected();
    assert!(answered(&mut deploy).is_ok());
    assert_eq!(sim.state(), S::Active);
    assert!(answered(&mut second).is_ok(), "the waiter runs once the task ends");
    assert!(sim.core.record().maintenance);
    sim.assert_gauges();
}

#[test]
fn a_connection_ending_after_the_task_was_abandoned_changes_nothing() {
    let mut sim = sim_in(S::Available);
    sim.park_connects = true;
    let mut deploy = sim.run(Op::Verb(Verb::Deploy), true);
    assert!(!sim.abandon("shutting down"), "nothing was stored mid-task");
    assert!(matches!(answered(&mut deploy), Err(KilnError::Driver { .. })));

    let commits = sim.trace.iter().filter(|t| t.starts_with("commit")).count();
    sim.connected();
    assert_eq!(sim.trace.iter().filter(|t| t.starts_with("commit")).count(), commits);
    assert_eq!(sim.state(), S::Available);
    assert_eq!(sim.stored.as_ref().unwrap().provision_state, S::Available);
    assert!(sim.events.is_empty());
    sim.assert_gauges();
}

#[test]
fn a_connection_that_fails_ends_the_task_and_lets_the_waiter_in() {
    let mut sim = sim_in(S::Available);
    sim.park_connects = true;
    sim.connect = Err(DriverError::Unavailable);
    let mut deploy = sim.run(Op::Verb(Verb::Deploy), true);
    let mut second = sim.run(Op::Noop, true);
    sim.connected();
    assert!(matches!(answered(&mut deploy), Err(KilnError::Driver { .. })));
    assert_eq!(sim.state(), S::Available, "the node keeps its state");
    assert!(answered(&mut second).is_ok());
    sim.assert_gauges();
}

fn unreachable() -> DriverError {
    DriverError::Unreachable { address: "127.0.0.1:9".into(), reason: "connection refused".into() }
}

#[test]
fn an_unreachable_bmc_is_marked_stored_and_backed_off_until_its_backoff_ends() {
    let mut sim = sim_in(S::Manageable);
    // A healthy read first: contact and power verified, nothing committed.
    assert_eq!(sim.sync(false, 10), SyncOutcome::InSync);
    assert!(sim.stored.as_ref().unwrap().bmc_last_contact.is_none(), "a healthy sync commits nothing");
    let verified = sim.core.view().power_verified_at;
    assert_eq!(verified, Some(start()));
    assert_eq!(sim.core.view().bmc_last_contact, Some(start()));

    sim.clock.advance(Duration::from_secs(100));
    sim.replies = VecDeque::from([Err(unreachable())]);
    let failed = sim.sync(false, 10);
    assert!(matches!(failed, SyncOutcome::Failed { attempts: 1, maintenance: false, .. }), "{failed:?}");
    // The mark is stored, with the last contact known before it.
    let stored = sim.stored.clone().unwrap();
    let marked_at = start() + chrono::Duration::seconds(100);
    assert_eq!(stored.bmc_unreachable_since, Some(marked_at));
    assert_eq!(stored.bmc_last_contact, Some(start()));
    assert_eq!(stored.power_verified_at, Some(start()));
    assert!(sim.core.view().reservation.is_none());

    // Within the backoff the BMC is not asked.
    let first = super::contact::backoff(1, seed_of(&sim));
    sim.clock.advance(first - Duration::from_secs(1));
    let calls = sim.trace.iter().filter(|t| t.starts_with("call")).count();
    assert!(matches!(sim.sync(false, 10), SyncOutcome::BackedOff { .. }));
    assert_eq!(sim.trace.iter().filter(|t| t.starts_with("call")).count(), calls, "no call while backing off");

    // After it, asked again; still dead: a longer backoff, the first mark kept.
    sim.clock.advance(Duration::from_secs(1));
    sim.replies = VecDeque::from([Err(unreachable())]);
    assert!(matches!(sim.sync(false, 10), SyncOutcome::Failed { attempts: 2, .. }));
    assert_eq!(sim.stored.as_ref().unwrap().bmc_unreachable_since, Some(marked_at));
    let second = super::contact::backoff(2, seed_of(&sim));
    assert!(second > first);
    sim.clock.advance(second - Duration::from_secs(1));
    assert!(matches!(sim.sync(false, 10), SyncOutcome::BackedOff { .. }));

    // One success clears it, and the clear is stored.
    sim.clock.advance(Duration::from_secs(1));
    assert_eq!(sim.sync(false, 10), SyncOutcome::InSync);
    let stored = sim.stored.clone().unwrap();
    assert_eq!(stored.bmc_unreachable_since, None);
    assert_eq!(stored.bmc_last_contact, Some(sim.clock.shared().now()));
    assert_eq!(sim.sync(false, 10), SyncOutcome::InSync, "no backoff left");
    sim.assert_gauges();
}

#[test]
fn recovery_waits_for_the_backoff_of_an_unreachable_bmc() {
    let mut sim = sim_in(S::Manageable);
    sim.replies = VecDeque::from([Err(unreachable())]);
    assert!(matches!(sim.sync(false, 1), SyncOutcome::Failed { maintenance: true, .. }));
    assert!(!sim.recover(), "backing off: the BMC is not asked");
    assert!(sim.core.record().maintenance);
    sim.clock.advance(super::contact::CAP * 2);
    assert!(sim.recover());
    let r = sim.core.record();
    assert!(!r.maintenance && r.bmc_unreachable_since.is_none());
}

#[test]
fn an_operator_call_that_succeeds_clears_the_mark_and_other_failures_do_not_set_it() {
    let mut sim = sim_in(S::Manageable);
    sim.replies = VecDeque::from([Err(injected("500"))]);
    assert!(matches!(sim.sync(false, 10), SyncOutcome::Failed { .. }));
    assert!(sim.core.view().bmc_unreachable_since.is_none(), "only Unreachable marks");

    sim.replies = VecDeque::from([Err(unreachable())]);
    let mut rx = sim.run(Op::Power(PowerAction::On), true);
    assert!(answered(&mut rx).is_err());
    assert!(sim.stored.as_ref().unwrap().bmc_unreachable_since.is_some(), "stored with the power action's end");
    assert!(matches!(sim.sync(false, 10), SyncOutcome::BackedOff { .. }));

    // Power on is the operator's: it is not held back, and its success clears.
    let mut rx = sim.run(Op::Power(PowerAction::On), true);
    answered(&mut rx).unwrap();
    let stored = sim.stored.clone().unwrap();
    assert!(stored.bmc_unreachable_since.is_none());
    assert_eq!(stored.power_verified_at, Some(start()));
    assert_eq!(sim.sync(false, 10), SyncOutcome::Updated { from: Some(PowerState::On), to: PowerState::Off });
}

#[test]
fn new_driver_info_lets_the_next_sync_try_at_once() {
    let mut sim = sim_in(S::Manageable);
    sim.replies = VecDeque::from([Err(unreachable())]);
    assert!(matches!(sim.sync(false, 10), SyncOutcome::Failed { .. }));
    assert!(matches!(sim.sync(false, 10), SyncOutcome::BackedOff { .. }));
    let update =
        NodeUpdate { driver_info: [("latency_ms".to_string(), Some("0".to_string()))].into(), ..Default::default() };
    let mut rx = sim.run(Op::Update(update), true);
    answered(&mut rx).unwrap();
    assert!(sim.core.view().bmc_unreachable_since.is_some(), "the mark stays until a call succeeds");
    assert_eq!(sim.sync(false, 10), SyncOutcome::InSync);
    assert!(sim.stored.as_ref().unwrap().bmc_unreachable_since.is_none());
}

fn seed_of(sim: &Sim) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sim.core.record().uuid.hash(&mut h);
    h.finish()
}

#[test]
fn a_learned_bmc_profile_is_stored_by_power_sync_once_and_forgotten_by_a_reset() {
    use kiln_drivers::{Profile, RedfishAuth};
    let mut sim = sim_in(S::Manageable);
    assert_eq!(sim.sync(false, 10), SyncOutcome::InSync);
    assert!(sim.stored.as_ref().unwrap().bmc_profile.is_none(), "nothing learned, nothing committed");

    sim.learned =
        Profile { redfish_auth: Some(RedfishAuth::Basic), redfish_sessions: Some(false), ..Profile::default() };
    sim.clock.advance(Duration::from_secs(5));
    let commits = sim.trace.iter().filter(|t| *t == "commit").count();
    assert_eq!(sim.sync(false, 10), SyncOutcome::InSync);
    let stored = sim.stored.clone().unwrap().bmc_profile.expect("stored by the sync that learned it");
    assert_eq!(stored.redfish_auth, Some(kiln_store::BmcAuth::Basic));
    assert_eq!(stored.redfish_sessions, Some(false));
    assert_eq!(stored.learned_at, start() + chrono::Duration::seconds(5));
    assert_eq!(sim.trace.iter().filter(|t| *t == "commit").count(), commits + 1);

    // The same facts again: nothing new, nothing committed.
    sim.clock.advance(Duration::from_secs(5));
    assert_eq!(sim.sync(false, 10), SyncOutcome::InSync);
    assert_eq!(sim.trace.iter().filter(|t| *t == "commit").count(), commits + 1);
    assert_eq!(sim.core.view().bmc_profile.as_ref().unwrap().learned_at, stored.learned_at);

    let update = NodeUpdate { reset_bmc_profile: true, ..Default::default() };
    let mut rx = sim.run(Op::Update(update), true);
    assert!(answered(&mut rx).unwrap().bmc_profile.is_none());
    assert!(sim.stored.as_ref().unwrap().bmc_profile.is_none(), "the reset is stored");
    assert!(sim.trace.iter().any(|t| t == "forget driver"), "{:?}", sim.trace);
}

// ----- rest ---------------------------------------------------------------------

#[test]
fn a_node_is_at_rest_only_with_nothing_running_waiting_held_or_backed_off() {
    let mut sim = sim_in(S::Manageable);
    assert!(sim.core.at_rest(), "a new node has nothing to do");
    sim.park = true;
    let mut task = sim.run(Op::Power(PowerAction::On), true);
    assert!(!sim.core.at_rest(), "a task runs");
    let mut waiter = sim.run(Op::Noop, true);
    sim.resume();
    answered(&mut task).unwrap();
    answered(&mut waiter).unwrap();
    assert!(sim.core.at_rest(), "both ran");
    sim.park = false;
    answered(&mut sim.hold("job")).unwrap();
    assert!(!sim.core.at_rest(), "a hold keeps the actor");
    assert!(sim.release_hold("job"));
    assert!(sim.core.at_rest());

    // A BMC being backed off: the backoff lives in memory only.
    sim.replies = VecDeque::from([Err(unreachable())]);
    sim.sync(false, 10);
    assert!(!sim.core.at_rest(), "an unreachable BMC keeps its backoff");
    sim.clock.advance(Duration::from_secs(24 * 3600));
    assert!(matches!(sim.sync(false, 10), SyncOutcome::Updated { .. }), "read after the backoff");
    assert!(sim.core.at_rest(), "one success clears it");

    // A node waiting for a callback or in a wait state keeps its actor.
    let sim = sim_in(S::WaitCallBack);
    assert!(!sim.core.at_rest(), "a wait state is timed out by its actor");
}

#[test]
fn a_node_put_to_rest_keeps_its_counts_and_what_it_knew_of_the_bmc() {
    let mut sim = sim_in(S::Manageable);
    assert_eq!(sim.sync(false, 10), SyncOutcome::InSync);
    assert!(sim.stored.as_ref().unwrap().bmc_last_contact.is_none(), "a healthy sync commits nothing");
    let rested = sim.core.rest();
    assert_eq!(rested.record().bmc_last_contact, Some(start()), "the contact known in memory is kept");
    assert_eq!(rested.record().power_verified_at, Some(start()));
    // The actor's core counts nothing any more; the rested node counts once.
    drop(std::mem::replace(&mut sim.core, NodeCore::woken(rested, sim.clock.shared())));
    sim.assert_gauges();
    assert_eq!(sim.core.view().bmc_last_contact, Some(start()), "woken, it knows what it knew");
}
