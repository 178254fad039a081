//! Exclusive operations: a request becomes effects (connect, commit, call
//! the driver), and each result goes on from where the operation left off,
//! named by a continuation enum rather than a closure so that it is data a
//! test can drive. Every change follows one order: commit, adopt (in
//! [`NodeCore::committed`]), publish, answer.

use std::collections::BTreeMap;

use kiln_drivers::{Boot, DriverError, Nic, Power, PowerAction};
use kiln_store::{
    BootDevice, CallbackWait, HistoryEntry, NodeId, NodeRecord, PortId, PortRecord, PowerState, ProvisionState,
    Timestamp, Write, normalize_mac,
};

use super::super::plan::{self, Step, VerbPlan};
use super::super::{DRIVER_CHANGE_STATES, NodeUpdate, Op};
use super::{AfterCall as Call, AfterCommit as Commit, NodeCore, Task};
use crate::KilnError;
use crate::driver::{DriverCall, DriverReply};
use crate::events::EventKind;
use crate::fsm::{self, Event, StateClass, Verb};
use crate::node::effects::{Effect, Reply};
use crate::view::NodeView;

/// What waits for the BMC to be reachable.
pub(super) enum AfterConnect {
    /// Enter `working` and run `steps`; with `callback`, end waiting for the
    /// booted system's callback.
    Verb { verb: Verb, working: ProvisionState, target: ProvisionState, steps: Vec<Step>, callback: bool },
    /// Record the power target, then act.
    Power(PowerAction),
    /// Set the boot device.
    Boot { device: BootDevice, persistent: bool },
}

/// What follows an operation's commit.
pub(super) enum AfterCommit {
    /// The working state is entered: answer, then run the steps.
    VerbStarted,
    /// The power target is recorded: answer, then act.
    PowerStarted(PowerAction),
    /// A mid-task event is committed: run the next step.
    MidTask,
    /// The operation's last change: publish `end` or `error` and answer.
    /// `started`: a `start` was published already.
    End { started: bool, failure: Option<String> },
    /// The node is deleted.
    Deleted,
    /// A callback moved the node: publish it and answer with the node (a
    /// reported failure is the booted system's, not the callback's).
    CalledBack { failure: Option<String> },
}

/// What follows an operation's driver call.
pub(super) enum AfterCall {
    /// A task's step.
    Step(Step),
    /// A power action aiming at `target`.
    Power(PowerState),
    /// Setting the boot device.
    Boot(BootDevice),
}

impl NodeCore {
    /// Starts `op` as the node's task.
    pub(super) fn begin(&mut self, op: Op, wait: bool, reply: Reply, parent: tracing::Span) {
        let action = op.purpose();
        let span = self.task_span(&action, &parent);
        let _entered = span.enter();
        self.reserve(action.clone());
        self.task = Some(Box::new(Task {
            reply: Some(reply),
            wait,
            action,
            draft: None,
            found_ports: Vec::new(),
            steps: Default::default(),
            span: span.clone(),
        }));
        match op {
            Op::Verb(verb) => self.begin_verb(verb),
            Op::Power(action) => self.connect(AfterConnect::Power(action)),
            Op::BootDevice { device, persistent } => self.connect(AfterConnect::Boot { device, persistent }),
            Op::Maintenance { on, reason } => {
                let mut next = self.node.record().clone();
                next.maintenance = on;
                next.maintenance_reason = if on { reason } else { None };
                if !on {
                    next.fault = None;
                }
                self.commit_and_end(next, None);
            }
            Op::Update(update) => self.begin_update(update),
            Op::Delete => self.begin_delete(),
            Op::Noop => {
                let view = self.view_released();
                self.end_task(Ok(view));
            }
            Op::Callback { token, failure } => self.begin_callback(&token.0, failure),
        }
    }

    /// The booted system calls back: a node in a wait state with the token
    /// it was issued goes on to its target (`resume`, then the working
    /// state's finishing event), or with `failure` falls to its failed
    /// state with that message. A wrong token changes nothing, is counted,
    /// and is logged without the token.
    fn begin_callback(&mut self, token: &str, failure: Option<String>) {
        let record = self.node.record();
        let state = record.provision_state;
        if fsm::class(state) != StateClass::Wait {
            let err = KilnError::InvalidState {
                node: self.name(),
                state: state.to_string(),
                event: "call back".into(),
                allowed: "a callback is taken in wait call-back, clean wait and inspect wait only".into(),
            };
            return self.end_task(Err(err));
        }
        let issued = record.callback.as_ref().map(|c| c.token.as_str());
        if !issued.is_some_and(|t| tokens_match(t, token)) {
            self.node.metrics().callback(true);
            tracing::warn!(node = %record.uuid, name = %record.name, %state, "callback refused: wrong token");
            let err =
                KilnError::InvalidInput(format!("node {}: the callback token is not the one issued", self.name()));
            return self.end_task(Err(err));
        }
        self.node.metrics().callback(false);
        let mut next = record.clone();
        next.callback = None;
        match failure {
            Some(message) => {
                let to = fsm::step(state, Event::Fail).unwrap_or(state);
                let message = format!("the booted system reported: {message}");
                next.provision_state = to;
                next.target_provision_state = None;
                next.last_error = Some(message.clone());
                let entry = self.history("fail", state, to, Some(message.clone()));
                self.commit(next, vec![entry], Commit::Op(AfterCommit::CalledBack { failure: Some(message) }));
            }
            None => {
                // Back to the working state the wait belongs to; its steps
                // are done, so the task ends with its finishing event.
                let Ok(working) = fsm::step(state, Event::Resume) else {
                    let err = KilnError::InvalidState {
                        node: self.name(),
                        state: state.to_string(),
                        event: "resume".into(),
                        allowed: allowed_verbs(state),
                    };
                    return self.end_task(Err(err));
                };
                next.provision_state = working;
                next.last_error = None;
                next.reservation = self.node.reservation().cloned();
                let entry = self.history(Event::Resume.as_str(), state, working, None);
                self.commit(next, vec![entry], Commit::Op(AfterCommit::VerbStarted));
            }
        }
    }

    fn begin_verb(&mut self, verb: Verb) {
        let record = self.node.record();
        let plan = match plan::plan_verb(record, verb) {
            Ok(p) => p,
            Err(plan::PlanError::Settings(why)) => return self.end_task(Err(KilnError::InvalidInput(why))),
            Err(plan::PlanError::State(invalid)) => {
                let err = KilnError::InvalidState {
                    node: self.name(),
                    state: invalid.state.to_string(),
                    event: verb.to_string(),
                    allowed: allowed_verbs(invalid.state),
                };
                return self.end_task(Err(err));
            }
        };
        match plan {
            VerbPlan::Immediate { to } => {
                let from = record.provision_state;
                let mut next = record.clone();
                next.provision_state = to;
                next.target_provision_state = None;
                let entry = self.history(verb.event().as_str(), from, to, None);
                self.commit_and_end(next, Some(entry));
            }
            // The working state is entered only once its work can start:
            // without a driver, nothing changes and the caller is told.
            VerbPlan::Work { working, target, steps, callback } => {
                self.connect(AfterConnect::Verb { verb, working, target, steps, callback })
            }
        }
    }

    /// The BMC can be reached (or not): the operation that waited for it
    /// goes on.
    pub(super) fn connected(&mut self, then: AfterConnect, result: Result<(), DriverError>) {
        if let Err(e) = result {
            let err = KilnError::Driver { node: self.name(), message: e.to_string() };
            return self.end_task(Err(err));
        }
        match then {
            AfterConnect::Verb { verb, working, target, steps, callback } => {
                let from = self.node.record().provision_state;
                let mut next = self.node.record().clone();
                next.provision_state = working;
                next.target_provision_state = Some(target);
                next.last_error = None;
                next.reservation = self.node.reservation().cloned();
                // The token is issued as the task starts, so the caller's
                // answer carries it before the system it boots can call.
                next.callback =
                    callback.then(|| Box::new(CallbackWait { token: new_token(), since: self.clock.now() }));
                let entry = self.history(verb.event().as_str(), from, working, None);
                if let Some(task) = self.task.as_mut() {
                    task.steps = steps.into();
                }
                self.commit(next, vec![entry], Commit::Op(AfterCommit::VerbStarted));
            }
            AfterConnect::Power(action) => {
                let mut next = self.node.record().clone();
                next.target_power_state = Some(power_state_of(action.target()));
                next.last_error = None;
                self.commit(next, vec![], Commit::Op(AfterCommit::PowerStarted(action)));
            }
            AfterConnect::Boot { device, persistent } => {
                self.call(DriverCall::SetBoot(boot_of(device), persistent), Call::Op(AfterCall::Boot(device)));
            }
        }
    }

    fn begin_update(&mut self, update: NodeUpdate) {
        let mut next = self.node.record().clone();
        if let Some(name) = update.name.as_ref().filter(|n| **n != next.name) {
            if let Err(e) = crate::supervisor::validate_name(name) {
                return self.end_task(Err(e));
            }
            next.name = name.clone();
        }
        let driver_changed = update.driver.is_some_and(|d| d != next.driver);
        if let Some(driver) = update.driver.filter(|_| driver_changed) {
            let state = next.provision_state;
            let idle =
                DRIVER_CHANGE_STATES.contains(&state) || (next.maintenance && fsm::class(state) != StateClass::Working);
            if !idle {
                let err = KilnError::InvalidState {
                    node: self.name().to_string(),
                    state: state.to_string(),
                    event: "change the driver".into(),
                    allowed: format!(
                        "{} (or in maintenance)",
                        DRIVER_CHANGE_STATES.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                };
                return self.end_task(Err(err));
            }
            next.driver = driver;
        }
        apply_changes(&mut next.driver_info, &update.driver_info);
        apply_changes(&mut next.properties, &update.properties);
        apply_changes(&mut next.extra, &update.extra);
        apply_changes(&mut next.instance_info, &update.instance_info);
        if let Err(e) = kiln_drivers::validate(next.driver.as_str(), &next.driver_info) {
            let err = KilnError::InvalidInput(format!("node {}: {e}", self.name()));
            return self.end_task(Err(err));
        }
        if !update.driver_info.is_empty() || update.reset_bmc_profile || driver_changed {
            // The BMC may be another one now (or its quirks are to be found
            // again): reconnect on next use, learn its profile afresh, and
            // let the next power sync try it.
            self.out.push(Effect::ForgetDriver { evict: update.reset_bmc_profile });
            self.contact.reset_backoff();
            self.contact.forget_profile();
        }
        self.commit_and_end(next, None);
    }

    fn begin_delete(&mut self) {
        let record = self.node.record();
        let state = record.provision_state;
        let allowed = matches!(
            state,
            ProvisionState::Enroll
                | ProvisionState::Manageable
                | ProvisionState::Available
                | ProvisionState::AdoptFailed
                | ProvisionState::Error
        ) || (record.maintenance && fsm::class(state) != StateClass::Working);
        if !allowed {
            let err = KilnError::InvalidInput(format!(
                "node {} is {state}; delete it from enroll, manageable, available, adopt failed or error \
                 (or put it in maintenance first)",
                self.name()
            ));
            return self.end_task(Err(err));
        }
        let id = record.uuid;
        self.commit_writes(vec![Write::DeleteNode(id)], None, Commit::Op(AfterCommit::Deleted));
    }

    // ----- running a task's steps -------------------------------------------

    fn run_next_step(&mut self) {
        let Some(step) = self.task.as_mut().and_then(|t| t.steps.pop_front()) else {
            return self.finish_work();
        };
        let call = match step {
            Step::Validate => {
                let draft = self.draft();
                return match kiln_drivers::validate(draft.driver.as_str(), &draft.driver_info) {
                    Ok(()) => self.run_next_step(),
                    Err(e) => self.fail_work(e.to_string()),
                };
            }
            Step::Fire(event) => return self.fire_mid_task(event),
            Step::ReadPower => DriverCall::GetPower,
            Step::Power(a) => DriverCall::SetPower(a),
            Step::SetBoot(d, p) => DriverCall::SetBoot(d, p),
            Step::Inspect => DriverCall::Inspect,
            Step::EjectMedia => DriverCall::EjectMedia,
            Step::InsertMedia => {
                match plan::image_url(self.draft()) {
                    Ok(Some(url)) => DriverCall::InsertMedia(url.to_string()),
                    // Checked when the task was planned; the task holds the node.
                    Ok(None) => return self.fail_work("instance_info.image_url is not set".into()),
                    Err(e) => return self.fail_work(e),
                }
            }
        };
        self.call(call, Call::Op(AfterCall::Step(step)));
    }

    /// A mid-task event (deleting → cleaning): committed, then the steps go on.
    fn fire_mid_task(&mut self, event: Event) {
        if self.task.is_none() {
            return;
        }
        let from = self.draft().provision_state;
        let to = match fsm::step(from, event) {
            Ok(to) => to,
            Err(e) => return self.fail_work(e.to_string()),
        };
        let mut next = self.take_draft();
        next.provision_state = to;
        let entry = self.history(event.as_str(), from, to, None);
        self.commit(next, vec![entry], Commit::Op(AfterCommit::MidTask));
    }

    /// Every step succeeded: fire the finishing event and release, or, for
    /// a task that was issued a callback token, enter the wait state (the
    /// target kept, as Ironic keeps it) until the booted system calls.
    fn finish_work(&mut self) {
        if self.task.is_none() {
            return;
        }
        let draft = self.draft();
        let (from, target, issued) = (draft.provision_state, draft.target_provision_state, draft.callback.is_some());
        if issued && let Ok(to) = fsm::step(from, Event::Wait) {
            let mut next = self.take_draft();
            if let Some(callback) = next.callback.as_mut() {
                callback.since = self.clock.now();
            }
            next.provision_state = to;
            next.reservation = None;
            let entry = self.history(Event::Wait.as_str(), from, to, None);
            return self.commit_and_end(next, Some(entry));
        }
        let event = plan::finishing_event(from, target);
        let to = match fsm::step(from, event) {
            Ok(to) => to,
            Err(e) => return self.fail_work(e.to_string()),
        };
        let mut next = self.take_draft();
        next.provision_state = to;
        next.target_provision_state = None;
        next.reservation = None;
        let entry = self.history(event.as_str(), from, to, None);
        self.commit_and_end(next, Some(entry));
    }

    /// A step failed: the working state falls to its failed state with the
    /// error in `last_error` and the node's history.
    fn fail_work(&mut self, message: String) {
        if self.task.is_none() {
            return;
        }
        let mut next = self.take_draft();
        let from = next.provision_state;
        next.provision_state = fsm::failed_state(from).unwrap_or(from);
        next.target_provision_state = None;
        next.reservation = None;
        next.last_error = Some(message.clone());
        let entry = self.history("fail", from, next.provision_state, Some(message));
        self.commit_and_end(next, Some(entry));
    }

    /// Commits the operation's last change; then publishes `end` or `error`
    /// and answers (a failed operation with the error).
    fn commit_and_end(&mut self, next: NodeRecord, entry: Option<HistoryEntry>) {
        let record = self.node.record();
        let started = record.target_provision_state.is_some() || record.target_power_state.is_some();
        let failure = entry.as_ref().and_then(|e| e.error.clone());
        self.commit(next, entry.into_iter().collect(), Commit::Op(AfterCommit::End { started, failure }));
    }

    /// The view as it will be once the running task has released the node.
    fn view_released(&self) -> NodeView {
        NodeView::of(self.node.record(), None)
    }

    pub(super) fn op_committed(&mut self, then: AfterCommit, result: Result<(), KilnError>) {
        if let Err(e) = result {
            return self.end_task(Err(e));
        }
        match then {
            AfterCommit::VerbStarted => {
                self.publish(EventKind::Start, None);
                self.acknowledge_start();
                self.run_next_step();
            }
            AfterCommit::PowerStarted(action) => {
                self.publish(EventKind::Start, None);
                self.acknowledge_start();
                let target = power_state_of(action.target());
                self.call(DriverCall::SetPower(action), Call::Op(AfterCall::Power(target)));
            }
            AfterCommit::MidTask => self.run_next_step(),
            AfterCommit::End { started, failure } => {
                if !started {
                    self.publish(EventKind::Start, None);
                }
                match failure {
                    None => {
                        tracing::debug!(state = %self.node.record().provision_state, "operation done");
                        self.publish(EventKind::End, None);
                        let view = self.view_released();
                        self.end_task(Ok(view));
                    }
                    Some(message) => {
                        tracing::warn!(state = %self.node.record().provision_state, error = %message,
                            "operation failed");
                        self.publish(EventKind::Error, Some(message.clone()));
                        let err = KilnError::Driver { node: self.name(), message };
                        self.end_task(Err(err));
                    }
                }
            }
            AfterCommit::CalledBack { failure } => {
                self.publish(EventKind::Start, None);
                match failure {
                    None => self.publish(EventKind::End, None),
                    Some(message) => self.publish(EventKind::Error, Some(message)),
                }
                let view = self.view_released();
                self.end_task(Ok(view));
            }
            AfterCommit::Deleted => {
                self.node.remove();
                let view = self.view();
                self.end_task(Ok(view));
                self.out.push(Effect::Stop);
            }
        }
    }

    pub(super) fn op_replied(&mut self, then: AfterCall, result: Result<DriverReply, DriverError>) {
        match then {
            AfterCall::Step(step) => {
                let reply = match result {
                    Ok(r) => r,
                    Err(e) => return self.fail_work(e.to_string()),
                };
                let now = self.clock.now();
                let Some(task) = self.task.as_mut() else { return };
                let record = self.node.record();
                // Copied from the record only by a step that changes it.
                match (step, reply) {
                    (_, DriverReply::Power(p)) => task.changed(record).power_state = Some(power_state_of(p)),
                    (Step::Power(a), _) => task.changed(record).power_state = Some(power_state_of(a.target())),
                    (Step::SetBoot(d, _), _) => task.changed(record).boot_device = Some(boot_device_of(d)),
                    (_, DriverReply::Inspected(found)) => {
                        let draft = task.changed(record);
                        draft.properties.extend(found.facts);
                        let node = draft.uuid;
                        task.found_ports.extend(found.nics.iter().filter_map(|nic| port_of(nic, node, now)));
                    }
                    _ => {}
                }
                self.run_next_step();
            }
            AfterCall::Power(target) => {
                let mut next = self.node.record().clone();
                next.target_power_state = None;
                let failure = match result {
                    Ok(_) => {
                        next.power_state = Some(target);
                        None
                    }
                    Err(e) => Some(e.to_string()),
                };
                next.last_error = failure.clone();
                let state = next.provision_state;
                let entry = self.history(&self.current_action(), state, state, failure);
                self.commit_and_end(next, Some(entry));
            }
            AfterCall::Boot(device) => {
                let mut next = self.node.record().clone();
                let failure = match result {
                    Ok(_) => {
                        next.boot_device = Some(device);
                        None
                    }
                    Err(e) => Some(e.to_string()),
                };
                next.last_error = failure.clone();
                let state = next.provision_state;
                let entry = self.history("boot device", state, state, failure);
                self.commit_and_end(next, Some(entry));
            }
        }
    }
}

/// The port a NIC found by inspection becomes: a new uuid, in no group.
/// `None` for a MAC the store would not take (the driver checked it
/// already; the store's own rule has the last word). Ports have no name, so
/// the NIC's is only logged.
fn port_of(nic: &Nic, node: NodeId, now: Timestamp) -> Option<PortRecord> {
    let Ok(address) = normalize_mac(&nic.mac) else {
        tracing::warn!(nic = %nic.name, mac = %nic.mac, "inspection: NIC left out, not a MAC address");
        return None;
    };
    tracing::debug!(nic = %nic.name, %address, "inspection found a NIC");
    Some(PortRecord { uuid: PortId::new(), address, node, portgroup: None, created_at: now })
}

/// A new one-time callback token: 256 random bits, in hex.
fn new_token() -> String {
    use std::fmt::Write as _;
    rand::random::<[u8; 32]>().iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Whether `given` is the `issued` token, compared in time that does not
/// depend on where they differ.
fn tokens_match(issued: &str, given: &str) -> bool {
    issued.len() == given.len() && issued.bytes().zip(given.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

/// The verbs whose events a state allows, for `InvalidState` messages.
fn allowed_verbs(state: ProvisionState) -> String {
    let verbs: Vec<&str> =
        fsm::Verb::ALL.iter().filter(|v| fsm::step(state, v.event()).is_ok()).map(|v| v.as_str()).collect();
    if verbs.is_empty() { "none".into() } else { verbs.join(", ") }
}

fn apply_changes<M, V>(map: &mut M, changes: &BTreeMap<String, Option<V>>)
where
    M: KeyedMap<V>,
    V: Clone,
{
    for (k, v) in changes {
        match v {
            Some(v) => {
                map.insert(k.clone(), v.clone());
            }
            None => {
                map.remove(k);
            }
        }
    }
}

/// A map of string keys `apply_changes` sets and removes keys of: the
/// string maps and the JSON objects of a node.
trait KeyedMap<V> {
    fn insert(&mut self, key: String, value: V);
    fn remove(&mut self, key: &str);
}

impl<V> KeyedMap<V> for BTreeMap<String, V> {
    fn insert(&mut self, key: String, value: V) {
        BTreeMap::insert(self, key, value);
    }
    fn remove(&mut self, key: &str) {
        BTreeMap::remove(self, key);
    }
}

impl KeyedMap<serde_json::Value> for kiln_store::JsonObject {
    fn insert(&mut self, key: String, value: serde_json::Value) {
        serde_json::Map::insert(self, key, value);
    }
    fn remove(&mut self, key: &str) {
        serde_json::Map::remove(self, key);
    }
}

/// The record's power state for the BMC's.
pub(in crate::node) fn power_state_of(p: Power) -> PowerState {
    match p {
        Power::On => PowerState::On,
        Power::Off => PowerState::Off,
    }
}

fn boot_of(d: BootDevice) -> Boot {
    match d {
        BootDevice::Pxe => Boot::Pxe,
        BootDevice::Disk => Boot::Disk,
        BootDevice::Cdrom => Boot::Cdrom,
        BootDevice::Bios => Boot::Bios,
    }
}

fn boot_device_of(b: Boot) -> BootDevice {
    match b {
        Boot::Pxe => BootDevice::Pxe,
        Boot::Disk => BootDevice::Disk,
        Boot::Cdrom => BootDevice::Cdrom,
        Boot::Bios => BootDevice::Bios,
    }
}
