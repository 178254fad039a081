//! The node actor: the reservation, the FIFO of waiting exclusive requests,
//! and the task runner that walks a task's steps.
//!
//! Everything that changes the node goes through [`NodeActor::commit`]: the
//! new record is sent to the store and only once it is durable does the actor
//! adopt it, publish the event and answer. While a commit or a BMC call is in
//! flight the actor keeps serving shared requests; exclusive ones queue.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use dashmap::DashMap;
use kiln_drivers::{Boot, DriverError, Power, PowerAction};
use kiln_store::{
    BootDevice, DriverKind, HistoryEntry, NodeRecord, PowerState, ProvisionState, Reservation, StoreHandle, Write,
};
use tokio::sync::oneshot;

use super::plan::{self, Step, VerbPlan};
use super::{NodeUpdate, Op, ReadPower, RunOp, RunOpIn, ShowNode};
use crate::KilnError;
use crate::driver::{DriverActor, DriverCall, DriverReply, NodeCall};
use crate::events::{EventBus, EventKind, NodeEvent, Publish};
use crate::fsm::{self, Event, StateClass};
use crate::view::NodeView;

/// What every node actor shares: the store, the event bus, the pool of
/// driver actors for shared BMC endpoints, and the settings.
#[derive(Clone)]
pub struct NodeEnv {
    pub store: StoreHandle,
    pub events: Addr<EventBus>,
    /// Driver actors of BMC endpoints shared by several nodes, by endpoint.
    pub drivers: Arc<DashMap<String, Addr<DriverActor>>>,
    /// `lock_wait` and the other settings a reload can change.
    pub live: Arc<crate::LiveSettings>,
    pub driver_call_timeout: Duration,
    /// The site's metrics (node gauges, BMC calls).
    pub metrics: Arc<crate::metrics::Metrics>,
}

type Reply = oneshot::Sender<Result<NodeView, KilnError>>;

/// An exclusive request waiting for the node.
pub(super) struct Waiter {
    id: u64,
    op: Op,
    wait: bool,
    pub(super) reply: Reply,
    parent: tracing::Span,
    /// Who the request runs for (it may run on a node they hold).
    holder: Option<String>,
    /// The request takes a hold for `holder` ([`super::HoldNode`]).
    takes_hold: bool,
}

/// The exclusive task that holds the node.
pub(super) struct Task {
    /// Where the answer goes: sent at the first commit, or at the end with
    /// `wait`.
    pub(super) reply: Option<Reply>,
    pub(super) wait: bool,
    pub(super) action: String,
    /// The record as the task's steps have changed it, not yet committed.
    pub(super) draft: NodeRecord,
    /// Steps left to run.
    pub(super) steps: VecDeque<Step>,
    /// The task's span (node id, name, action): every log line of the task,
    /// in the handler and in each continuation, is written inside it.
    pub(super) span: tracing::Span,
}

/// The actor of one node.
pub struct NodeActor {
    /// The record as last committed.
    pub(super) record: NodeRecord,
    /// Private: changed only through [`NodeActor::reserve`] and
    /// [`NodeActor::unreserve`], so the reserved gauge follows it.
    reservation: Option<Reservation>,
    pub(super) task: Option<Task>,
    pub(super) waiters: VecDeque<Waiter>,
    pub(super) next_waiter: u64,
    /// The node's own driver actor (for BMCs no other node shares).
    pub(super) driver: Option<Addr<DriverActor>>,
    pub(super) env: NodeEnv,
    /// Power reads that failed in a row (power sync); in memory, as Ironic.
    pub(super) power_failures: u32,
    /// This node's count in the node gauges, following `record`.
    gauge: crate::metrics::NodeGauge,
    /// Set when the site shuts down ([`super::Abandon`]): no task starts any
    /// more, and this says why.
    pub(super) closing: Option<String>,
    /// Who holds the node across operations ([`super::HoldNode`]).
    pub(super) held_by: Option<String>,
}

impl Actor for NodeActor {
    type Context = Context<Self>;
}

impl NodeActor {
    pub fn new(record: NodeRecord, env: NodeEnv) -> Self {
        let gauge = crate::metrics::NodeGauge::new(env.metrics.clone(), &record);
        NodeActor {
            gauge,
            record,
            reservation: None,
            task: None,
            waiters: VecDeque::new(),
            next_waiter: 0,
            driver: None,
            env,
            power_failures: 0,
            closing: None,
            held_by: None,
        }
    }

    pub(super) fn view(&self) -> NodeView {
        NodeView::of(&self.record, self.reservation.as_ref())
    }

    pub(super) fn name(&self) -> String {
        self.record.name.clone()
    }

    /// A span for a task of this node doing `action`, inside `parent` (the
    /// job that asked for it; `Span::none()` for none).
    pub(super) fn task_span(&self, action: &str, parent: &tracing::Span) -> tracing::Span {
        tracing::info_span!(
            parent: parent,
            "node",
            node = %self.record.uuid,
            node_name = %self.record.name,
            action = %action
        )
    }

    /// Holds the node for `purpose` from now on.
    pub(super) fn reserve(&mut self, purpose: String) {
        self.reservation = Some(Reservation { purpose, since: Utc::now() });
        self.gauge.reserve(true);
    }

    /// Lets the node go.
    pub(super) fn unreserve(&mut self) {
        self.reservation = None;
        self.gauge.reserve(false);
    }

    /// The running task's span (none between tasks).
    fn current_span(&self) -> tracing::Span {
        self.task.as_ref().map_or_else(tracing::Span::none, |t| t.span.clone())
    }

    /// The span a driver call of the running task runs in: the task's, or
    /// (no call is made between tasks) one naming the node.
    fn call_span(&self) -> tracing::Span {
        match &self.task {
            Some(task) => task.span.clone(),
            None => self.task_span("driver call", &tracing::Span::none()),
        }
    }

    pub(super) fn locked_error(&self) -> KilnError {
        if let (Some(holder), None) = (&self.held_by, &self.task) {
            let since = self.reservation.as_ref().map_or_else(Utc::now, |r| r.since);
            let since = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            return KilnError::NodeLocked { node: self.name(), holder_purpose: format!("held by {holder}"), since };
        }
        // The time as the CLI's tables print times: UTC, to the millisecond.
        let shown = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (purpose, since) = match &self.reservation {
            Some(r) => (r.purpose.clone(), shown(r.since)),
            None => ("a queued request".into(), shown(Utc::now())),
        };
        KilnError::NodeLocked { node: self.name(), holder_purpose: purpose, since }
    }

    /// The driver actor for this node's BMC, started on first use.
    pub(super) fn driver(&mut self) -> Result<Addr<DriverActor>, DriverError> {
        if let Some(d) = &self.driver
            && d.connected()
        {
            return Ok(d.clone());
        }
        let kind = self.record.driver.as_str();
        let mut info = self.record.driver_info.clone();
        if self.record.driver == DriverKind::Fake && self.record.power_state == Some(PowerState::On) {
            // A fake BMC lives in memory: start it where the record says it was.
            info.entry("power".into()).or_insert_with(|| "on".into());
        }
        // Nodes share a driver actor only when they name the same BMC with
        // the same settings: a changed password or timeout gets a fresh one
        // (the key holds a hash of the settings, never the password itself).
        let endpoint = kiln_drivers::endpoint(kind, &info).map(|ep| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            info.hash(&mut h);
            format!("{ep}#{:016x}", h.finish())
        });
        if let Some(ep) = &endpoint
            && let Some(d) = self.env.drivers.get(ep)
            && d.connected()
        {
            self.driver = Some(d.clone());
            return Ok(d.clone());
        }
        let bmc = kiln_drivers::connect(kind, &info)?;
        let label = info.get("address").cloned().unwrap_or_else(|| format!("fake BMC of {}", self.record.name));
        let addr = DriverActor::new(bmc, label, self.env.driver_call_timeout)
            .observed(self.env.metrics.clone(), self.record.driver)
            .start();
        if let Some(ep) = endpoint {
            self.env.drivers.insert(ep, addr.clone());
        }
        self.driver = Some(addr.clone());
        Ok(addr)
    }

    // ----- the lock ---------------------------------------------------------

    /// Whether a request for `holder` may start now: no task runs, and the
    /// node is free (nobody waits before it) or held by that holder.
    fn may_start(&self, holder: Option<&str>) -> bool {
        self.task.is_none()
            && match &self.held_by {
                None => self.waiters.is_empty(),
                Some(h) => holder == Some(h.as_str()),
            }
    }

    /// Runs `op` for `holder` now if the node is free (or held by that
    /// holder), queues it for at most `lock_wait` otherwise, or refuses it
    /// with `NodeLocked`. With `takes_hold`, the request takes the hold for
    /// `holder` when it starts.
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &mut self,
        op: Op,
        wait: bool,
        reply: Reply,
        parent: tracing::Span,
        holder: Option<String>,
        takes_hold: bool,
        ctx: &mut Context<Self>,
    ) {
        if let Some(why) = &self.closing {
            let _ = reply.send(Err(KilnError::Unavailable(format!("node {}: {why}", self.name()))));
            return;
        }
        if takes_hold && self.held_by.is_some() && self.held_by == holder {
            // Held already by the same holder: nothing to wait for.
            let _ = reply.send(Ok(self.view()));
            return;
        }
        if self.may_start(holder.as_deref()) {
            if takes_hold {
                self.held_by = holder;
            }
            self.begin(op, wait, reply, parent, ctx);
            return;
        }
        let lock_wait = self.env.live.lock_wait();
        if lock_wait.is_zero() {
            let _ = reply.send(Err(self.locked_error()));
            return;
        }
        self.next_waiter += 1;
        let id = self.next_waiter;
        self.waiters.push_back(Waiter { id, op, wait, reply, parent, holder, takes_hold });
        ctx.run_later(lock_wait, move |act, _| {
            if let Some(pos) = act.waiters.iter().position(|w| w.id == id) {
                let w = act.waiters.remove(pos).expect("position is in range");
                let _ = w.reply.send(Err(act.locked_error()));
            }
        });
    }

    /// Releases the node (to its holder, if it is held) and starts the
    /// first waiter that may run and whose caller still waits.
    pub(super) fn release(&mut self, ctx: &mut Context<Self>) {
        self.task = None;
        match self.held_by.clone() {
            Some(holder) => self.reserve(format!("held by {holder}")),
            None => self.unreserve(),
        }
        self.waiters.retain(|w| !w.reply.is_closed());
        let held_by = self.held_by.clone();
        let next = self.waiters.iter().position(|w| held_by.is_none() || w.holder == held_by);
        if let Some(w) = next.and_then(|i| self.waiters.remove(i)) {
            if w.takes_hold {
                self.held_by = w.holder;
            }
            self.begin(w.op, w.wait, w.reply, w.parent, ctx);
        }
    }

    /// Ends the task: answers its caller (if not answered yet) and releases.
    fn end_task(&mut self, result: Result<NodeView, KilnError>, ctx: &mut Context<Self>) {
        if let Some(task) = self.task.as_mut()
            && let Some(reply) = task.reply.take()
        {
            let _ = reply.send(result);
        }
        self.release(ctx);
    }

    /// Answers the caller now unless it asked to wait for the end.
    fn acknowledge_start(&mut self) {
        let view = self.view();
        if let Some(task) = self.task.as_mut()
            && !task.wait
            && let Some(reply) = task.reply.take()
        {
            let _ = reply.send(Ok(view));
        }
    }

    // ----- starting operations ----------------------------------------------

    fn begin(&mut self, op: Op, wait: bool, reply: Reply, parent: tracing::Span, ctx: &mut Context<Self>) {
        let action = op.purpose();
        let span = self.task_span(&action, &parent);
        let _entered = span.enter();
        self.reserve(action.clone());
        self.task = Some(Task {
            reply: Some(reply),
            wait,
            action,
            draft: self.record.clone(),
            steps: VecDeque::new(),
            span: span.clone(),
        });
        match op {
            Op::Verb(verb) => self.begin_verb(verb, ctx),
            Op::Power(action) => self.begin_power(action, ctx),
            Op::BootDevice { device, persistent } => self.begin_boot_device(device, persistent, ctx),
            Op::Maintenance { on, reason } => {
                let mut next = self.record.clone();
                next.maintenance = on;
                next.maintenance_reason = if on { reason } else { None };
                if !on {
                    next.fault = None;
                }
                self.commit_and_end(next, None, ctx);
            }
            Op::Update(update) => self.begin_update(update, ctx),
            Op::Delete => self.begin_delete(ctx),
            Op::Noop => {
                let view = self.view_released();
                self.end_task(Ok(view), ctx);
            }
        }
    }

    fn begin_verb(&mut self, verb: fsm::Verb, ctx: &mut Context<Self>) {
        let plan = match plan::plan_verb(&self.record, verb) {
            Ok(p) => p,
            Err(invalid) => {
                let err = KilnError::InvalidState {
                    node: self.name(),
                    state: invalid.state.to_string(),
                    event: verb.to_string(),
                    allowed: allowed_verbs(invalid.state),
                };
                return self.end_task(Err(err), ctx);
            }
        };
        let from = self.record.provision_state;
        match plan {
            VerbPlan::Immediate { to } => {
                let mut next = self.record.clone();
                next.provision_state = to;
                next.target_provision_state = None;
                let entry = self.history(verb.event().as_str(), from, to, None);
                self.commit_and_end(next, Some(entry), ctx);
            }
            VerbPlan::Work { working, target, steps } => {
                // The working state is entered only once its work can start:
                // without a driver, nothing changes and the caller is told.
                if let Err(e) = self.driver() {
                    let err = KilnError::Driver { node: self.name(), message: e.to_string() };
                    return self.end_task(Err(err), ctx);
                }
                let mut next = self.record.clone();
                next.provision_state = working;
                next.target_provision_state = Some(target);
                next.last_error = None;
                next.reservation = self.reservation.clone();
                let entry = self.history(verb.event().as_str(), from, working, None);
                if let Some(task) = self.task.as_mut() {
                    task.steps = steps.into();
                }
                self.commit(next, vec![entry], ctx, |act, ctx, res| match res {
                    Ok(()) => {
                        act.publish(EventKind::Start, None);
                        act.acknowledge_start();
                        act.run_next_step(ctx);
                    }
                    Err(e) => act.end_task(Err(e), ctx),
                });
            }
        }
    }

    fn begin_power(&mut self, action: PowerAction, ctx: &mut Context<Self>) {
        let driver = match self.driver() {
            Ok(d) => d,
            Err(e) => {
                let err = KilnError::Driver { node: self.name(), message: e.to_string() };
                return self.end_task(Err(err), ctx);
            }
        };
        let target = power_state_of(action.target());
        let mut next = self.record.clone();
        next.target_power_state = Some(target);
        next.last_error = None;
        self.commit(next, vec![], ctx, move |act, ctx, res| {
            if let Err(e) = res {
                return act.end_task(Err(e), ctx);
            }
            act.publish(EventKind::Start, None);
            act.acknowledge_start();
            act.call(driver, DriverCall::SetPower(action), ctx, move |act, ctx, res| {
                let mut next = act.record.clone();
                next.target_power_state = None;
                let failure = match res {
                    Ok(_) => {
                        next.power_state = Some(target);
                        None
                    }
                    Err(e) => Some(e.to_string()),
                };
                next.last_error = failure.clone();
                let state = next.provision_state;
                let entry = act.history(&act.current_action(), state, state, failure);
                act.commit_and_end(next, Some(entry), ctx);
            });
        });
    }

    fn begin_boot_device(&mut self, device: BootDevice, persistent: bool, ctx: &mut Context<Self>) {
        let driver = match self.driver() {
            Ok(d) => d,
            Err(e) => {
                let err = KilnError::Driver { node: self.name(), message: e.to_string() };
                return self.end_task(Err(err), ctx);
            }
        };
        self.call(driver, DriverCall::SetBoot(boot_of(device), persistent), ctx, move |act, ctx, res| {
            let mut next = act.record.clone();
            let failure = match res {
                Ok(_) => {
                    next.boot_device = Some(device);
                    None
                }
                Err(e) => Some(e.to_string()),
            };
            next.last_error = failure.clone();
            let state = next.provision_state;
            let entry = act.history("boot device", state, state, failure);
            act.commit_and_end(next, Some(entry), ctx);
        });
    }

    fn begin_update(&mut self, update: NodeUpdate, ctx: &mut Context<Self>) {
        let mut next = self.record.clone();
        apply_changes(&mut next.driver_info, &update.driver_info);
        apply_changes(&mut next.properties, &update.properties);
        if let Err(e) = kiln_drivers::validate(next.driver.as_str(), &next.driver_info) {
            let err = KilnError::InvalidInput(format!("node {}: {e}", self.name()));
            return self.end_task(Err(err), ctx);
        }
        if !update.driver_info.is_empty() {
            // The BMC may be another one now: reconnect on next use.
            self.driver = None;
        }
        self.commit_and_end(next, None, ctx);
    }

    fn begin_delete(&mut self, ctx: &mut Context<Self>) {
        let state = self.record.provision_state;
        let allowed = matches!(
            state,
            ProvisionState::Enroll
                | ProvisionState::Manageable
                | ProvisionState::Available
                | ProvisionState::AdoptFailed
                | ProvisionState::Error
        ) || (self.record.maintenance && fsm::class(state) != StateClass::Working);
        if !allowed {
            let err = KilnError::InvalidInput(format!(
                "node {} is {state}; delete it from enroll, manageable, available, adopt failed or error \
                 (or put it in maintenance first)",
                self.name()
            ));
            return self.end_task(Err(err), ctx);
        }
        let id = self.record.uuid;
        let store = self.env.store.clone();
        ctx.spawn(async move { store.commit(vec![Write::DeleteNode(id)]).await }.into_actor(self).map(
            |res, act, ctx| match res {
                Ok(()) => {
                    act.gauge.remove();
                    let view = act.view();
                    act.end_task(Ok(view), ctx);
                    ctx.stop();
                }
                Err(e) => act.end_task(Err(e.into()), ctx),
            },
        ));
    }

    // ----- running a task's steps -------------------------------------------

    fn run_next_step(&mut self, ctx: &mut Context<Self>) {
        let Some(step) = self.task.as_mut().and_then(|t| t.steps.pop_front()) else {
            return self.finish_work(ctx);
        };
        let call = match step {
            Step::Validate => {
                let draft = &self.task.as_ref().expect("a task runs").draft;
                return match kiln_drivers::validate(draft.driver.as_str(), &draft.driver_info) {
                    Ok(()) => self.run_next_step(ctx),
                    Err(e) => self.fail_work(e.to_string(), ctx),
                };
            }
            Step::Fire(event) => return self.fire_mid_task(event, ctx),
            Step::ReadPower => DriverCall::GetPower,
            Step::Power(a) => DriverCall::SetPower(a),
            Step::SetBoot(d, p) => DriverCall::SetBoot(d, p),
            Step::Inspect => DriverCall::Inspect,
        };
        let driver = match self.driver() {
            Ok(d) => d,
            Err(e) => return self.fail_work(e.to_string(), ctx),
        };
        self.call(driver, call, ctx, move |act, ctx, res| {
            let reply = match res {
                Ok(r) => r,
                Err(e) => return act.fail_work(e.to_string(), ctx),
            };
            let Some(task) = act.task.as_mut() else { return };
            let draft = &mut task.draft;
            match (step, reply) {
                (_, DriverReply::Power(p)) => draft.power_state = Some(power_state_of(p)),
                (Step::Power(a), _) => draft.power_state = Some(power_state_of(a.target())),
                (Step::SetBoot(d, _), _) => draft.boot_device = Some(boot_device_of(d)),
                (_, DriverReply::Facts(facts)) => draft.properties.extend(facts),
                _ => {}
            }
            act.run_next_step(ctx);
        });
    }

    /// A mid-task event (deleting → cleaning): committed, then the steps go on.
    fn fire_mid_task(&mut self, event: Event, ctx: &mut Context<Self>) {
        let Some(task) = self.task.as_ref() else { return };
        let mut next = task.draft.clone();
        let from = next.provision_state;
        let to = match fsm::step(from, event) {
            Ok(to) => to,
            Err(e) => return self.fail_work(e.to_string(), ctx),
        };
        next.provision_state = to;
        let entry = self.history(event.as_str(), from, to, None);
        self.commit(next, vec![entry], ctx, |act, ctx, res| match res {
            Ok(()) => {
                if let Some(task) = act.task.as_mut() {
                    task.draft = act.record.clone();
                }
                act.run_next_step(ctx);
            }
            Err(e) => act.end_task(Err(e), ctx),
        });
    }

    /// Every step succeeded: fire the finishing event and release.
    fn finish_work(&mut self, ctx: &mut Context<Self>) {
        let Some(task) = self.task.as_ref() else { return };
        let mut next = task.draft.clone();
        let from = next.provision_state;
        let event = plan::finishing_event(from, next.target_provision_state);
        let to = match fsm::step(from, event) {
            Ok(to) => to,
            Err(e) => return self.fail_work(e.to_string(), ctx),
        };
        next.provision_state = to;
        next.target_provision_state = None;
        next.reservation = None;
        let entry = self.history(event.as_str(), from, to, None);
        self.commit_and_end(next, Some(entry), ctx);
    }

    /// A step failed: the working state falls to its failed state with the
    /// error in `last_error` and the node's history.
    fn fail_work(&mut self, message: String, ctx: &mut Context<Self>) {
        let Some(task) = self.task.as_ref() else { return };
        let mut next = task.draft.clone();
        let from = next.provision_state;
        next.provision_state = fsm::failed_state(from).unwrap_or(from);
        next.target_provision_state = None;
        next.reservation = None;
        next.last_error = Some(message.clone());
        let entry = self.history("fail", from, next.provision_state, Some(message));
        self.commit_and_end(next, Some(entry), ctx);
    }

    // ----- effects ------------------------------------------------------------

    /// Commits `next` (and `history`), then adopts it, and calls `then`.
    pub(super) fn commit<F>(
        &mut self,
        mut next: NodeRecord,
        history: Vec<HistoryEntry>,
        ctx: &mut Context<Self>,
        then: F,
    ) where
        F: FnOnce(&mut Self, &mut Context<Self>, Result<(), KilnError>) + 'static,
    {
        if let Some(why) = &self.closing {
            // Abandoned at shutdown: only the restart rule's change is written.
            let err = KilnError::Unavailable(format!("node {}: {why}", self.name()));
            return then(self, ctx, Err(err));
        }
        next.updated_at = Utc::now();
        let mut batch = Vec::with_capacity(1 + history.len());
        batch.push(Write::UpdateNode(next.clone()));
        batch.extend(history.into_iter().map(Write::AppendHistory));
        let store = self.env.store.clone();
        let span = self.current_span();
        ctx.spawn(async move { store.commit(batch).await }.into_actor(self).map(move |res, act, ctx| {
            let _entered = span.enter();
            let res = res.map_err(KilnError::from);
            if res.is_ok() {
                act.gauge.track(&next);
                act.record = next;
                if let Some(task) = act.task.as_mut() {
                    task.draft = act.record.clone();
                }
            } else if let Err(e) = &res {
                tracing::error!(node = %act.record.uuid, name = %act.record.name, error = %e, "commit failed");
            }
            then(act, ctx, res)
        }));
    }

    /// Commits the operation's last change, publishes `end` or `error`, and
    /// answers: a failed operation answers with the error.
    fn commit_and_end(&mut self, next: NodeRecord, entry: Option<HistoryEntry>, ctx: &mut Context<Self>) {
        let started = self.record.target_provision_state.is_some() || self.record.target_power_state.is_some();
        let failure = entry.as_ref().and_then(|e| e.error.clone());
        self.commit(next, entry.into_iter().collect(), ctx, move |act, ctx, res| {
            if let Err(e) = res {
                return act.end_task(Err(e), ctx);
            }
            if !started {
                act.publish(EventKind::Start, None);
            }
            match failure {
                None => {
                    tracing::debug!(state = %act.record.provision_state, "operation done");
                    act.publish(EventKind::End, None);
                    let view = act.view_released();
                    act.end_task(Ok(view), ctx);
                }
                Some(message) => {
                    tracing::warn!(state = %act.record.provision_state, error = %message, "operation failed");
                    act.publish(EventKind::Error, Some(message.clone()));
                    let err = KilnError::Driver { node: act.name(), message };
                    act.end_task(Err(err), ctx);
                }
            }
        });
    }

    /// The view as it will be once the running task has released the node.
    pub(super) fn view_released(&self) -> NodeView {
        NodeView::of(&self.record, None)
    }

    /// Sends a call to the driver actor and continues with `then`.
    pub(super) fn call<F>(&mut self, driver: Addr<DriverActor>, call: DriverCall, ctx: &mut Context<Self>, then: F)
    where
        F: FnOnce(&mut Self, &mut Context<Self>, Result<DriverReply, DriverError>) + 'static,
    {
        let span = self.current_span();
        let call = NodeCall { call, span: self.call_span() };
        ctx.spawn(async move { driver.send(call).await }.into_actor(self).map(move |res, act, ctx| {
            let _entered = span.enter();
            let res = match res {
                Ok(r) => r,
                Err(_) => Err(DriverError::Unavailable),
            };
            then(act, ctx, res)
        }));
    }

    fn current_action(&self) -> String {
        self.task.as_ref().map(|t| t.action.clone()).unwrap_or_default()
    }

    pub(super) fn history(
        &self,
        event: &str,
        from: ProvisionState,
        to: ProvisionState,
        error: Option<String>,
    ) -> HistoryEntry {
        HistoryEntry {
            node: self.record.uuid,
            at: Utc::now(),
            event: event.to_string(),
            from_state: from,
            to_state: to,
            error,
        }
    }

    pub(super) fn publish(&self, kind: EventKind, error: Option<String>) {
        self.publish_as(kind, self.current_action(), error);
    }

    /// [`publish`](Self::publish) naming the action, for an event about a
    /// task that has already gone (released at shutdown).
    pub(super) fn publish_as(&self, kind: EventKind, action: String, error: Option<String>) {
        let r = &self.record;
        self.env.events.do_send(Publish(NodeEvent {
            serial: 0,
            at: r.updated_at,
            node: r.uuid,
            node_name: r.name.clone(),
            kind,
            action,
            provision_state: r.provision_state,
            target_provision_state: r.target_provision_state,
            power_state: r.power_state,
            error,
        }));
    }
}

impl Handler<ShowNode> for NodeActor {
    type Result = MessageResult<ShowNode>;
    fn handle(&mut self, _: ShowNode, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.view())
    }
}

impl NodeActor {
    fn run_op(
        &mut self,
        msg: RunOp,
        parent: tracing::Span,
        holder: Option<String>,
        takes_hold: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<NodeView, KilnError>> {
        let (tx, rx) = oneshot::channel();
        self.submit(msg.op, msg.wait, tx, parent, holder, takes_hold, ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(KilnError::Unavailable("the node's worker stopped before answering".into())))
        })
    }
}

impl Handler<super::HoldNode> for NodeActor {
    type Result = ResponseFuture<Result<NodeView, KilnError>>;
    fn handle(&mut self, msg: super::HoldNode, ctx: &mut Context<Self>) -> Self::Result {
        // A no-op task that, when it starts, takes the hold.
        let run = RunOp { op: Op::Noop, wait: true };
        self.run_op(run, tracing::Span::none(), Some(msg.holder), true, ctx)
    }
}

impl Handler<super::ReleaseNode> for NodeActor {
    type Result = bool;
    fn handle(&mut self, msg: super::ReleaseNode, ctx: &mut Context<Self>) -> bool {
        if self.held_by.as_deref() != Some(msg.holder.as_str()) {
            return false;
        }
        self.held_by = None;
        if self.task.is_none() {
            // Idle and held: free it, and let the first waiter in.
            self.release(ctx);
        }
        true
    }
}

impl Handler<RunOp> for NodeActor {
    type Result = ResponseFuture<Result<NodeView, KilnError>>;
    fn handle(&mut self, msg: RunOp, ctx: &mut Context<Self>) -> Self::Result {
        self.run_op(msg, tracing::Span::none(), None, false, ctx)
    }
}

impl Handler<RunOpIn> for NodeActor {
    type Result = ResponseFuture<Result<NodeView, KilnError>>;
    fn handle(&mut self, msg: RunOpIn, ctx: &mut Context<Self>) -> Self::Result {
        self.run_op(msg.run, msg.parent, msg.holder, false, ctx)
    }
}

impl Handler<ReadPower> for NodeActor {
    type Result = ResponseFuture<Result<Option<PowerState>, KilnError>>;
    fn handle(&mut self, _: ReadPower, _: &mut Context<Self>) -> Self::Result {
        let name = self.name();
        let driver = self.driver();
        // Answered mid-task too, and no part of that task.
        let call =
            NodeCall { call: DriverCall::GetPower, span: self.task_span("power status", &tracing::Span::none()) };
        Box::pin(async move {
            let driver = driver.map_err(|e| KilnError::Driver { node: name.clone(), message: e.to_string() })?;
            match driver.send(call).await {
                Ok(Ok(DriverReply::Power(p))) => Ok(Some(power_state_of(p))),
                Ok(Ok(_)) => Ok(None),
                Ok(Err(e)) => Err(KilnError::Driver { node: name, message: e.to_string() }),
                Err(_) => Err(KilnError::Driver { node: name, message: DriverError::Unavailable.to_string() }),
            }
        })
    }
}

/// The verbs whose events a state allows, for `InvalidState` messages.
fn allowed_verbs(state: ProvisionState) -> String {
    let verbs: Vec<&str> =
        fsm::Verb::ALL.iter().filter(|v| fsm::step(state, v.event()).is_ok()).map(|v| v.as_str()).collect();
    if verbs.is_empty() { "none".into() } else { verbs.join(", ") }
}

fn apply_changes(map: &mut BTreeMap<String, String>, changes: &BTreeMap<String, Option<String>>) {
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

pub(super) fn power_state_of(p: Power) -> PowerState {
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

/// Makes a node actor panic inside a handler, so tests can check that the
/// supervisor re-creates it from the store. Exists only in test builds.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashForTest;

#[cfg(test)]
impl Handler<CrashForTest> for NodeActor {
    type Result = ();
    fn handle(&mut self, _: CrashForTest, _: &mut Context<Self>) {
        panic!("crash requested by a test");
    }
}
