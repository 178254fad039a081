//! The node's logic as a plain state machine: [`NodeCore`] takes an
//! [`Input`] (a request, a commit result, a driver reply, a timer firing)
//! and returns the [`Effect`]s to carry out. It never touches actix, the
//! store, a BMC or the wall clock directly: time comes from the clock it was
//! given, results come back as inputs. So every path of the lock, the task
//! runner and upkeep is tested with plain `#[test]`s (`core/tests.rs`).
//!
//! This file holds the state and the lock: the reservation, the FIFO of
//! waiting exclusive requests with their `lock_wait`, the hold, and the
//! bookkeeping that matches a result to what was waiting for it. What an
//! operation does lives in `ops.rs`, periodic upkeep in `upkeep.rs`, the
//! shutdown path in `abandon.rs`.
//!
//! Architecture Invariant: the record changes only in [`NodeCore::adopt`]
//! (through [`Gauged`]), after the store has said the change is durable, so
//! the state gauges can never disagree with the record.

mod abandon;
mod contact;
mod ops;
pub(crate) mod upkeep;

#[cfg(test)]
mod tests;

pub(in crate::node) use contact::driver_profile;
pub(in crate::node) use ops::power_state_of;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use kiln_drivers::{DriverError, Profile};
use kiln_store::{HistoryEntry, NodeRecord, PortRecord, ProvisionState, Reservation, StoreError, Write};
use tokio::sync::oneshot;

use super::Op;
use super::effects::{Answer, Effect, Reply, Ticket};
use super::gauged::Gauged;
use super::plan::Step;
use super::upkeep::SyncOutcome;
use crate::KilnError;
use crate::clock::SharedClock;
use crate::driver::{DriverCall, DriverReply};
use crate::events::{EventKind, NodeEvent};
use crate::fsm::{self, StateClass};
use crate::metrics::Metrics;
use crate::view::NodeView;

/// An exclusive request for the node ([`super::RunOp`], [`super::HoldNode`]).
#[derive(Debug)]
pub struct Request {
    pub op: Op,
    /// Answer at the end rather than at the first commit.
    pub wait: bool,
    pub reply: Reply,
    /// The caller's span: the task's span is its child.
    pub parent: tracing::Span,
    /// Who the request runs for (it may run on a node they hold).
    pub holder: Option<String>,
    /// The request takes a hold for `holder` when it starts.
    pub takes_hold: bool,
    /// How long it may wait for the node (`lock_wait` as set now).
    pub lock_wait: Duration,
}

/// What the core reacts to.
#[derive(Debug)]
pub enum Input {
    /// An exclusive request.
    Run(Request),
    /// [`super::ReleaseNode`]: answers whether `holder` held the node.
    ReleaseHold { holder: String, reply: oneshot::Sender<bool> },
    /// [`super::upkeep::SyncPower`].
    SyncPower { force: bool, max_retries: u32, reply: oneshot::Sender<SyncOutcome> },
    /// [`super::upkeep::RecoverPowerFailure`].
    RecoverPowerFailure { reply: oneshot::Sender<bool> },
    /// [`super::upkeep::ExpireWait`].
    ExpireWait { timeouts: super::upkeep::WaitTimeouts, reply: oneshot::Sender<bool> },
    /// [`super::Abandon`].
    Abandon { why: String, reply: oneshot::Sender<bool> },
    /// The `lock_wait` timer of a waiting request ran out.
    LockWaitOver { waiter: u64 },
    /// The store answered an [`Effect::Commit`].
    Committed { ticket: Ticket, result: Result<(), StoreError> },
    /// The BMC answered an [`Effect::CallDriver`]; `learned`: the
    /// client's profile of the BMC then.
    DriverReplied { ticket: Ticket, result: Result<DriverReply, DriverError>, learned: Profile },
    /// The answer to an [`Effect::Connect`].
    Connected { ticket: Ticket, result: Result<(), DriverError> },
    /// The store answered an [`Effect::LoadStored`].
    Loaded { ticket: Ticket, result: Result<Option<NodeRecord>, StoreError> },
}

/// An exclusive request waiting for the node.
struct Waiter {
    id: u64,
    op: Op,
    wait: bool,
    reply: Reply,
    parent: tracing::Span,
    holder: Option<String>,
    takes_hold: bool,
}

/// The exclusive task that holds the node.
struct Task {
    /// Where the answer goes: sent at the first commit, or at the end with
    /// `wait`. `None` for upkeep (no caller waits on the node's view).
    reply: Option<Reply>,
    wait: bool,
    action: String,
    /// The record as the task's steps have changed it, not yet committed;
    /// `None` while they have changed nothing since the last commit (the
    /// draft is then the record: [`NodeCore::draft`]). A task copies the
    /// record only once a step changes it, and commits the draft by moving
    /// it ([`NodeCore::take_draft`]), not by copying it.
    draft: Option<NodeRecord>,
    /// Ports for the NICs an inspection step found, written (each only if
    /// its MAC is free) with the next commit, the one that stores the
    /// facts found with them in `draft`.
    found_ports: Vec<PortRecord>,
    /// Steps left to run.
    steps: VecDeque<Step>,
    /// The task's span (node id, name, action): every log line of the task
    /// is written inside it.
    span: tracing::Span,
}

impl Task {
    /// The draft to change: `record` copied on the first change since the
    /// last commit.
    fn changed(&mut self, record: &NodeRecord) -> &mut NodeRecord {
        self.draft.get_or_insert_with(|| record.clone())
    }
}

/// What a pending [`Ticket`] continues with.
enum Awaiting {
    /// A commit: on success `adopt` becomes the record, then `then` runs.
    Commit {
        adopt: Option<Arc<NodeRecord>>,
        then: AfterCommit,
    },
    Call(AfterCall),
    Connect(ops::AfterConnect),
    Load(abandon::Abandoning),
}

/// The results a node waits for, by ticket: rarely more than two at once
/// (an operation's commit or call, and a power sync's). A list, not a
/// `BTreeMap`: a map keeps its 11-entry leaf (about 0.8 KB) once it has
/// held one entry, and a lifecycle touches every busy node's leaf twice a
/// transition; with 100,000 busy nodes that showed in the profile.
#[derive(Default)]
struct Pending(Vec<(Ticket, Awaiting)>);

impl Pending {
    fn push(&mut self, ticket: Ticket, awaiting: Awaiting) {
        self.0.push((ticket, awaiting));
    }

    /// What `ticket` was for, taken out; `None` when nothing waits for it.
    fn take(&mut self, ticket: Ticket) -> Option<Awaiting> {
        let at = self.0.iter().position(|(t, _)| *t == ticket)?;
        Some(self.0.swap_remove(at).1)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What follows a commit.
enum AfterCommit {
    Op(ops::AfterCommit),
    Upkeep(upkeep::AfterCommit),
    Abandon(Box<abandon::Fixing>),
}

/// What follows a driver call.
enum AfterCall {
    Op(ops::AfterCall),
    Upkeep(upkeep::AfterCall),
}

/// Whether a successful call confirmed the node's power state: a read,
/// or a power action the driver saw reach its target.
fn confirms_power(then: &AfterCall, reply: &DriverReply) -> bool {
    matches!(reply, DriverReply::Power(_))
        || matches!(
            then,
            AfterCall::Op(ops::AfterCall::Power(_) | ops::AfterCall::Step(Step::Power(_)))
                | AfterCall::Upkeep(upkeep::AfterCall::SyncForced { .. })
        )
}

/// One node's state and logic, without actix.
pub struct NodeCore {
    node: Gauged,
    clock: SharedClock,
    /// Boxed: most nodes are idle most of the time, and an idle node's
    /// actor stays small (a million of them live in one process).
    task: Option<Box<Task>>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
    /// Results the core waits for, by ticket.
    awaiting: Pending,
    next_ticket: Ticket,
    /// Power reads that failed in a row (power sync); in memory, as Ironic.
    power_failures: u32,
    /// The BMC's reachability and backoff (`contact.rs`).
    contact: contact::Contact,
    /// Set when the site shuts down: no task starts any more, and this
    /// says why.
    closing: Option<Box<str>>,
    /// Who holds the node across operations ([`super::HoldNode`]).
    held_by: Option<String>,
    /// Effects produced by the input being handled.
    out: Vec<Effect>,
}

impl NodeCore {
    pub fn new(record: NodeRecord, metrics: std::sync::Arc<Metrics>, clock: SharedClock) -> Self {
        Self::woken(Gauged::new(record, metrics), clock)
    }

    /// The core of a node that was at rest ([`NodeCore::rest`]): its record
    /// and counts as it left them.
    pub fn woken(node: Gauged, clock: SharedClock) -> Self {
        NodeCore {
            contact: contact::Contact::of(node.record()),
            node,
            clock,
            task: None,
            waiters: VecDeque::new(),
            next_waiter: 0,
            awaiting: Pending::default(),
            next_ticket: 0,
            power_failures: 0,
            closing: None,
            held_by: None,
            out: Vec::new(),
        }
    }

    /// The record as last committed.
    pub fn record(&self) -> &NodeRecord {
        self.node.record()
    }

    /// The node as a client sees it (shared requests read it at once),
    /// with the BMC contact as known now, committed or not.
    pub fn view(&self) -> NodeView {
        NodeView::of(self.node.record(), self.node.reservation()).with_contact(|r| self.contact.stamp(r))
    }

    /// Reacts to `input`; returns what to do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Effect> {
        match input {
            Input::Run(r) => self.submit(r),
            Input::ReleaseHold { holder, reply } => {
                let held = self.release_hold(&holder);
                self.answer(Answer::Done(reply, held));
            }
            Input::SyncPower { force, max_retries, reply } => self.sync_power(force, max_retries, reply),
            Input::RecoverPowerFailure { reply } => self.recover_power_failure(reply),
            Input::ExpireWait { timeouts, reply } => self.expire_wait(timeouts, reply),
            Input::Abandon { why, reply } => self.abandon(why, reply),
            Input::LockWaitOver { waiter } => self.lock_wait_over(waiter),
            Input::Committed { ticket, result } => self.committed(ticket, result),
            Input::DriverReplied { ticket, result, learned } => self.replied(ticket, result, &learned),
            Input::Connected { ticket, result } => {
                // A connection ends after the task that asked for it was
                // abandoned (shutdown): nothing is left to go on with.
                if let Some(Awaiting::Connect(then)) = self.awaiting.take(ticket)
                    && self.task.is_some()
                {
                    self.connected(then, result);
                }
            }
            Input::Loaded { ticket, result } => {
                if let Some(Awaiting::Load(then)) = self.awaiting.take(ticket) {
                    self.loaded(then, result);
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// The running task's span (none between tasks): the actor enters it
    /// while it feeds a result back.
    pub fn current_span(&self) -> tracing::Span {
        self.task.as_ref().map_or_else(tracing::Span::none, |t| t.span.clone())
    }

    /// A span for a task of this node doing `action`, inside `parent`.
    pub fn task_span(&self, action: &str, parent: &tracing::Span) -> tracing::Span {
        let r = self.node.record();
        tracing::info_span!(parent: parent, "node", node = %r.uuid, node_name = %r.name, action = %action)
    }

    /// Gives the node up to another member, if nothing holds or waits for
    /// it: from then on no task starts here. True when given up.
    /// Closes the node to new work from the start (the site is shutting
    /// down: `why`).
    pub fn close(&mut self, why: &str) {
        self.closing = Some(why.into());
    }

    /// Whether the node may do without its actor for now: nothing runs,
    /// waits, holds it or is awaited, it waits for no callback, and nothing
    /// is known about it that its record cannot carry (a BMC being backed
    /// off, power reads failing in a row).
    pub fn at_rest(&self) -> bool {
        let record = self.node.record();
        !self.busy()
            && self.awaiting.is_empty()
            && self.power_failures == 0
            && self.contact.settled()
            && record.callback.is_none()
            && fsm::class(record.provision_state) != StateClass::Wait
    }

    /// The node to keep without its actor (once [`NodeCore::at_rest`]):
    /// the record with what is known of the BMC, and the node's counts.
    pub fn rest(&mut self) -> Gauged {
        let contact = &self.contact;
        self.node.hand_off(|r| contact.stamp(r))
    }

    pub fn hand_over(&mut self) -> bool {
        if self.busy() {
            return false;
        }
        self.closing = Some("the node was handed over to another member".into());
        true
    }

    // ----- the lock ---------------------------------------------------------

    fn name(&self) -> String {
        self.node.record().name.clone()
    }

    fn busy(&self) -> bool {
        self.task.is_some() || !self.waiters.is_empty() || self.closing.is_some() || self.held_by.is_some()
    }

    /// Holds the node for `purpose` from now on.
    fn reserve(&mut self, purpose: String) {
        let since = self.clock.now();
        self.node.reserve(Reservation { purpose, since });
    }

    /// Whether a request for `holder` may start now: no task runs, and the
    /// node is free (nobody waits before it) or held by that holder.
    fn may_start(&self, holder: Option<&str>) -> bool {
        self.task.is_none()
            && match &self.held_by {
                None => self.waiters.is_empty(),
                Some(h) => holder == Some(h.as_str()),
            }
    }

    /// Runs the request now if the node is free (or held by its holder),
    /// queues it for at most `lock_wait` otherwise, or refuses it with
    /// `NodeLocked`.
    fn submit(&mut self, r: Request) {
        if let Some(why) = &self.closing {
            let err = KilnError::Unavailable(format!("node {}: {why}", self.name()));
            return self.answer(Answer::Node(r.reply, Box::new(Err(err))));
        }
        if r.takes_hold && self.held_by.is_some() && self.held_by == r.holder {
            // Held already by the same holder: nothing to wait for.
            let view = self.view();
            return self.answer(Answer::Node(r.reply, Box::new(Ok(view))));
        }
        if self.may_start(r.holder.as_deref()) {
            if r.takes_hold {
                self.held_by = r.holder;
            }
            return self.begin(r.op, r.wait, r.reply, r.parent);
        }
        if r.lock_wait.is_zero() {
            let err = self.locked_error();
            return self.answer(Answer::Node(r.reply, Box::new(Err(err))));
        }
        self.next_waiter += 1;
        let id = self.next_waiter;
        let Request { op, wait, reply, parent, holder, takes_hold, lock_wait } = r;
        self.waiters.push_back(Waiter { id, op, wait, reply, parent, holder, takes_hold });
        self.out.push(Effect::StartTimer { waiter: id, after: lock_wait });
    }

    fn lock_wait_over(&mut self, waiter: u64) {
        if let Some(pos) = self.waiters.iter().position(|w| w.id == waiter) {
            let w = self.waiters.remove(pos).expect("position is in range");
            let err = self.locked_error();
            self.answer(Answer::Node(w.reply, Box::new(Err(err))));
        }
    }

    fn locked_error(&self) -> KilnError {
        // The time as the CLI's tables print times: UTC, to the millisecond.
        let shown = |t: kiln_store::Timestamp| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let reservation = self.node.reservation();
        if let (Some(holder), None) = (&self.held_by, &self.task) {
            let since = reservation.map_or_else(|| self.clock.now(), |r| r.since);
            return KilnError::NodeLocked {
                node: self.name(),
                holder_purpose: format!("held by {holder}"),
                since: shown(since),
            };
        }
        let (purpose, since) = match reservation {
            Some(r) => (r.purpose.clone(), shown(r.since)),
            None => ("a queued request".into(), shown(self.clock.now())),
        };
        KilnError::NodeLocked { node: self.name(), holder_purpose: purpose, since }
    }

    /// Ends `holder`'s hold; answers whether it held the node.
    fn release_hold(&mut self, holder: &str) -> bool {
        if self.held_by.as_deref() != Some(holder) {
            return false;
        }
        self.held_by = None;
        if self.task.is_none() {
            // Idle and held: free it, and let the first waiter in.
            self.release();
        }
        true
    }

    /// Releases the node (to its holder, if it is held) and starts the
    /// first waiter that may run and whose caller still waits.
    fn release(&mut self) {
        self.task = None;
        match self.held_by.clone() {
            Some(holder) => self.reserve(format!("held by {holder}")),
            None => self.node.unreserve(),
        }
        self.waiters.retain(|w| !w.reply.is_closed());
        let held_by = self.held_by.clone();
        let next = self.waiters.iter().position(|w| held_by.is_none() || w.holder == held_by);
        if let Some(w) = next.and_then(|i| self.waiters.remove(i)) {
            if w.takes_hold {
                self.held_by = w.holder;
            }
            self.begin(w.op, w.wait, w.reply, w.parent);
        }
    }

    /// Ends the task: answers its caller (if not answered yet) and releases.
    fn end_task(&mut self, result: Result<NodeView, KilnError>) {
        if let Some(reply) = self.task.as_mut().and_then(|t| t.reply.take()) {
            self.answer(Answer::Node(reply, Box::new(result)));
        }
        self.release();
    }

    /// Answers the caller now unless it asked to wait for the end.
    fn acknowledge_start(&mut self) {
        let view = self.view();
        if let Some(task) = self.task.as_mut()
            && !task.wait
            && let Some(reply) = task.reply.take()
        {
            self.out.push(Effect::Answer(Answer::Node(reply, Box::new(Ok(view)))));
        }
    }

    /// Holds the node for an upkeep task (no caller waits on it).
    fn hold_for_upkeep(&mut self, purpose: &str) {
        self.reserve(purpose.into());
        self.task = Some(Box::new(Task {
            reply: None,
            wait: false,
            action: purpose.into(),
            draft: None,
            found_ports: Vec::new(),
            steps: VecDeque::new(),
            span: self.task_span(purpose, &tracing::Span::none()),
        }));
    }

    // ----- effects and their results -------------------------------------------

    fn answer(&mut self, answer: Answer) {
        self.out.push(Effect::Answer(answer));
    }

    fn ticket(&mut self, awaiting: Awaiting) -> Ticket {
        self.next_ticket += 1;
        self.awaiting.push(self.next_ticket, awaiting);
        self.next_ticket
    }

    /// Takes `next` as the record: the one place it changes. A running
    /// task's draft is the record again.
    fn adopt(&mut self, next: NodeRecord) {
        self.node.adopt(next);
        if let Some(task) = self.task.as_mut() {
            task.draft = None;
        }
    }

    /// The record as the running task's steps have changed it (the record
    /// itself when they have changed nothing since the last commit).
    fn draft(&self) -> &NodeRecord {
        self.task.as_ref().and_then(|t| t.draft.as_ref()).unwrap_or_else(|| self.node.record())
    }

    /// The running task's draft, to commit: taken out of the task, whose
    /// draft is the record again once the commit is adopted, and which
    /// ends if it fails.
    fn take_draft(&mut self) -> NodeRecord {
        self.task.as_mut().and_then(|t| t.draft.take()).unwrap_or_else(|| self.node.record().clone())
    }

    /// Commits `next` (stamped now) and `history`; once durable, adopts it
    /// and goes on with `then`. A closing node commits nothing: `then` gets
    /// `Unavailable` at once.
    fn commit(&mut self, mut next: NodeRecord, history: Vec<HistoryEntry>, then: AfterCommit) {
        if let Some(why) = &self.closing {
            // Abandoned at shutdown: only the restart rule's change is written.
            let err = KilnError::Unavailable(format!("node {}: {why}", self.name()));
            return self.after_commit(then, Err(err));
        }
        next.updated_at = self.clock.now();
        super::plan::drop_spent_callback(&mut next);
        self.contact.stamp(&mut next);
        let found_ports = self.task.as_mut().map(|t| std::mem::take(&mut t.found_ports)).unwrap_or_default();
        // One record for the store to write and this core to adopt: the
        // store hands its write back with the answer, and drops it before
        // the answer reaches the node, so adopting it copies nothing.
        let next = Arc::new(next);
        let mut writes = Vec::with_capacity(1 + history.len() + found_ports.len());
        writes.push(Write::UpdateNode(next.clone()));
        writes.extend(history.into_iter().map(Write::AppendHistory));
        writes.extend(found_ports.into_iter().map(Write::InsertPortIfFree));
        self.commit_writes(writes, Some(next), then);
    }

    /// Sends `writes` to the store as they are.
    fn commit_writes(&mut self, writes: Vec<Write>, adopt: Option<Arc<NodeRecord>>, then: AfterCommit) {
        let ticket = self.ticket(Awaiting::Commit { adopt, then });
        self.out.push(Effect::Commit { ticket, writes });
    }

    fn committed(&mut self, ticket: Ticket, result: Result<(), StoreError>) {
        let Some(Awaiting::Commit { adopt, then }) = self.awaiting.take(ticket) else { return };
        let result = result.map_err(KilnError::from);
        match &result {
            Ok(()) => {
                if let Some(next) = adopt {
                    self.adopt(Arc::unwrap_or_clone(next));
                }
            }
            Err(e) if adopt.is_some() => {
                let r = self.node.record();
                tracing::error!(node = %r.uuid, name = %r.name, error = %e, "commit failed");
            }
            Err(_) => {}
        }
        self.after_commit(then, result);
    }

    fn after_commit(&mut self, then: AfterCommit, result: Result<(), KilnError>) {
        match then {
            AfterCommit::Op(then) => self.op_committed(then, result),
            AfterCommit::Upkeep(then) => self.upkeep_committed(then, result),
            AfterCommit::Abandon(then) => self.abandon_committed(*then, result),
        }
    }

    /// Calls the node's BMC; the reply goes on with `then`.
    fn call(&mut self, call: DriverCall, then: AfterCall) {
        let span = match &self.task {
            Some(task) => task.span.clone(),
            None => self.task_span("driver call", &tracing::Span::none()),
        };
        let ticket = self.ticket(Awaiting::Call(then));
        self.out.push(Effect::CallDriver { ticket, call, span });
    }

    fn replied(&mut self, ticket: Ticket, result: Result<DriverReply, DriverError>, learned: &Profile) {
        let awaiting = self.awaiting.take(ticket);
        if let Some(Awaiting::Call(then)) = &awaiting {
            let now = self.clock.now();
            self.contact.learned(now, learned);
            match &result {
                Ok(reply) => self.contact.answered(now, confirms_power(then, reply)),
                Err(DriverError::Unreachable { .. }) => self.contact.unreachable(now),
                Err(_) => {}
            }
        }
        match awaiting {
            Some(Awaiting::Call(AfterCall::Op(then))) => self.op_replied(then, result),
            Some(Awaiting::Call(AfterCall::Upkeep(then))) => self.upkeep_replied(then, result),
            _ => {}
        }
    }

    /// Whether the node was marked unreachable by a call and the record
    /// does not say so yet, or the other way round.
    fn contact_changed(&self) -> bool {
        self.contact.mark_differs(self.node.record())
    }

    /// Makes sure the node's BMC can be reached before a change that needs it.
    fn connect(&mut self, then: ops::AfterConnect) {
        let ticket = self.ticket(Awaiting::Connect(then));
        self.out.push(Effect::Connect { ticket });
    }

    fn current_action(&self) -> String {
        self.task.as_ref().map(|t| t.action.clone()).unwrap_or_default()
    }

    fn history(&self, event: &str, from: ProvisionState, to: ProvisionState, error: Option<String>) -> HistoryEntry {
        HistoryEntry {
            node: self.node.record().uuid,
            at: self.clock.now(),
            event: event.to_string(),
            from_state: from,
            to_state: to,
            error,
        }
    }

    fn publish(&mut self, kind: EventKind, error: Option<String>) {
        let action = self.current_action();
        self.publish_as(kind, action, error);
    }

    /// [`publish`](Self::publish) naming the action, for an event about a
    /// task that has already gone (released at shutdown).
    fn publish_as(&mut self, kind: EventKind, action: String, error: Option<String>) {
        let r = self.node.record();
        self.out.push(Effect::Publish(NodeEvent {
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
