//! The node actor: a thin shell around [`NodeCore`]. A message becomes an
//! [`Input`]; the core answers with [`Effect`]s, which the actor carries out
//! (a store commit, a BMC call, a timer, an event, an answer) and whose
//! results it feeds back as inputs. No decision is made here: the lock, the
//! task runner and upkeep are the core's, tested without actix.
//!
//! While a commit, a connection to the BMC or a BMC call is in flight the
//! actor keeps serving shared requests; exclusive ones queue in the core.
//! Connecting builds the BMC client on a blocking thread
//! ([`super::connect`]), and the `lock_wait` timer runs on the site clock,
//! so neither holds this thread nor reads real time.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::prelude::*;
use kiln_drivers::{DriverError, Profile};
use kiln_store::{NodeRecord, PowerState, StoreHandle};
use tokio::sync::oneshot;

use super::connect::{Connecting, DriverPool, DriverSpec, usable};
use super::core::{Input, NodeCore, Request};
use super::effects::{Effect, Ticket};
use super::gauged::Gauged;
use super::rest::Resting;
use super::{ReadPower, RunOp, RunOpIn, ShowNode};
use crate::KilnError;
use crate::driver::{Called, DriverCall, DriverReply, NodeCall};
use crate::events::{EventBus, Publish};
use crate::view::NodeView;

/// What every node actor shares: the store, the event bus, the pool of
/// driver actors for shared BMC endpoints, and the settings.
#[derive(Clone)]
pub struct NodeEnv {
    pub store: StoreHandle,
    pub events: Addr<EventBus>,
    /// Driver actors of BMC endpoints shared by several nodes, by endpoint,
    /// built off the actors' thread.
    pub drivers: DriverPool,
    /// `lock_wait` and the other settings a reload can change.
    pub live: Arc<crate::LiveSettings>,
    /// The site's metrics (node gauges, BMC calls).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where node decisions read the time (wait deadlines, reservation and
    /// history stamps): the site's clock.
    pub clock: crate::clock::SharedClock,
    /// On a store shared by several members: checked right before every
    /// BMC call, which no row can fence.
    pub fence: Option<crate::remote::Fence>,
    /// The registry's entries, where a node goes to rest
    /// ([`super::rest`]).
    pub nodes: Arc<crate::supervisor::NodeMap<kiln_store::NodeId, crate::supervisor::NodeEntry>>,
    /// How long a node stays at rest with its actor before it gives it up;
    /// `None`: never.
    pub rest_after: Option<std::time::Duration>,
    /// Set when the site shuts down: why. A node started afterwards is
    /// closed to new work from the start, as the running ones were.
    pub closing: std::sync::OnceLock<String>,
}

/// The actor of one node.
pub struct NodeActor {
    pub(super) core: NodeCore,
    /// The node's driver actor, or its connection under way (kept here too
    /// for BMCs no other node shares, which the pool does not hold).
    driver: Option<Connecting>,
    pub(super) env: Arc<NodeEnv>,
    /// Its way to rest ([`super::rest`]).
    pub(super) rest: Resting,
}

impl Actor for NodeActor {
    type Context = Context<Self>;
}

/// Counted from construction to drop, so an actor whose handler panicked
/// leaves the count too.
impl Drop for NodeActor {
    fn drop(&mut self) {
        self.env.metrics.node_actor(-1);
    }
}

impl NodeActor {
    pub fn new(record: NodeRecord, env: Arc<NodeEnv>) -> Self {
        let node = Gauged::new(record, env.metrics.clone());
        Self::woken(node, env)
    }

    /// The actor of a node that was at rest (or is new).
    pub(crate) fn woken(node: Gauged, env: Arc<NodeEnv>) -> Self {
        let mut core = NodeCore::woken(node, env.clock.clone());
        if let Some(why) = env.closing.get() {
            core.close(why);
        }
        env.metrics.node_actor(1);
        NodeActor { core, driver: None, env, rest: Resting::default() }
    }

    /// Hands `input` to the core and carries out what it asks, feeding
    /// back the results that are at hand at once (a connection check, a
    /// driver that cannot be had) before anything else happens.
    pub(super) fn feed(&mut self, input: Input, ctx: &mut Context<Self>) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            for effect in self.core.handle(input) {
                if let Some(now) = self.execute(effect, ctx) {
                    inputs.push_back(now);
                }
            }
        }
        self.settle(ctx);
    }

    /// Carries out one effect; returns the input its result makes when the
    /// result is known at once.
    fn execute(&mut self, effect: Effect, ctx: &mut Context<Self>) -> Option<Input> {
        match effect {
            Effect::Answer(answer) => answer.send(),
            Effect::Publish(event) => self.env.events.do_send(Publish(event)),
            Effect::Commit { ticket, writes } => {
                let store = self.env.store.clone();
                let span = self.core.current_span();
                ctx.spawn(async move { store.commit(writes).await }.into_actor(self).map(move |result, act, ctx| {
                    let _entered = span.enter();
                    act.feed(Input::Committed { ticket, result }, ctx);
                }));
            }
            Effect::Connect { ticket } => return self.connect(ticket, ctx),
            Effect::CallDriver { ticket, call, span } => self.call(ticket, call, span, ctx),
            Effect::ForgetDriver { evict } => {
                if evict {
                    self.env.drivers.evict(DriverSpec::of(self.core.record()));
                }
                self.driver = None;
            }
            Effect::LoadStored { ticket } => {
                let store = self.env.store.clone();
                let id = self.core.record().uuid;
                ctx.spawn(
                    async move { store.read(move |b| b.load_node(id)).await }
                        .into_actor(self)
                        .map(move |result, act, ctx| act.feed(Input::Loaded { ticket, result }, ctx)),
                );
            }
            Effect::StartTimer { waiter, after } => {
                let over = self.env.clock.sleep(after).into_actor(self);
                ctx.spawn(over.map(move |(), act, ctx| act.feed(Input::LockWaitOver { waiter }, ctx)));
            }
            Effect::Stop => ctx.stop(),
        }
        None
    }

    /// Connects to the BMC, off this thread; the result comes back as an
    /// input (at once when the driver is there already).
    fn connect(&mut self, ticket: Ticket, ctx: &mut Context<Self>) -> Option<Input> {
        let connecting = self.driver();
        if let Some(result) = connecting.peek() {
            return Some(Input::Connected { ticket, result: result.clone().map(|_| ()) });
        }
        let span = self.core.current_span();
        ctx.spawn(connecting.into_actor(self).map(move |result, act, ctx| {
            let _entered = span.enter();
            act.feed(Input::Connected { ticket, result: result.map(|_| ()) }, ctx);
        }));
        None
    }

    /// Sends a call to the driver actor (once connected); its reply comes
    /// back as an input.
    fn call(&mut self, ticket: Ticket, call: DriverCall, span: tracing::Span, ctx: &mut Context<Self>) {
        let connecting = self.driver();
        let task_span = self.core.current_span();
        let call = NodeCall { call, span };
        let fence = self.env.fence.clone();
        let reply = async move {
            let failed = |e| Called { result: Err(e), learned: Profile::default() };
            let driver = match connecting.await {
                Ok(driver) => driver,
                Err(e) => return failed(e),
            };
            if let Err(e) = unfenced(fence.as_ref()) {
                return failed(e);
            }
            driver.send(call).await.unwrap_or_else(|_| failed(DriverError::Unavailable))
        };
        ctx.spawn(reply.into_actor(self).map(move |called, act, ctx| {
            let _entered = task_span.enter();
            act.feed(Input::DriverReplied { ticket, result: called.result, learned: called.learned }, ctx);
        }));
    }

    /// The driver actor for this node's BMC, connected on first use (and
    /// again once its connection failed or its actor stopped).
    fn driver(&mut self) -> Connecting {
        if let Some(connecting) = &self.driver
            && usable(connecting)
        {
            return connecting.clone();
        }
        let connecting = self.env.drivers.obtain(DriverSpec::of(self.core.record()));
        self.driver = Some(connecting.clone());
        connecting
    }

    /// Feeds an input carrying a reply channel and answers when the core does.
    pub(super) fn ask<T: Send + 'static>(
        &mut self,
        input: impl FnOnce(oneshot::Sender<T>) -> Input,
        fallback: T,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<T> {
        let (tx, rx) = oneshot::channel();
        self.feed(input(tx), ctx);
        Box::pin(async move { rx.await.unwrap_or(fallback) })
    }

    fn run_op(
        &mut self,
        run: RunOp,
        parent: tracing::Span,
        holder: Option<String>,
        takes_hold: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<NodeView, KilnError>> {
        let lock_wait = self.env.live.lock_wait();
        let (tx, rx) = oneshot::channel();
        let request = Request { op: run.op, wait: run.wait, reply: tx, parent, holder, takes_hold, lock_wait };
        self.feed(Input::Run(request), ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(KilnError::Unavailable("the node's worker stopped before answering".into())))
        })
    }
}

/// Refuses a BMC call from a member that is fenced: the last check before
/// a call goes out, made as late as it can be.
fn unfenced(fence: Option<&crate::remote::Fence>) -> Result<(), DriverError> {
    match fence.and_then(crate::remote::Fence::check) {
        Some(why) => Err(DriverError::Fenced(why)),
        None => Ok(()),
    }
}

impl Handler<ShowNode> for NodeActor {
    type Result = Response<NodeView>;
    fn handle(&mut self, _: ShowNode, _: &mut Context<Self>) -> Self::Result {
        Response::reply(self.core.view())
    }
}

impl Handler<super::HoldNode> for NodeActor {
    type Result = ResponseFuture<Result<NodeView, KilnError>>;
    fn handle(&mut self, msg: super::HoldNode, ctx: &mut Context<Self>) -> Self::Result {
        // A no-op task that, when it starts, takes the hold.
        let run = RunOp { op: super::Op::Noop, wait: true };
        self.run_op(run, tracing::Span::none(), Some(msg.holder), true, ctx)
    }
}

impl Handler<super::ReleaseNode> for NodeActor {
    type Result = ResponseFuture<bool>;
    fn handle(&mut self, msg: super::ReleaseNode, ctx: &mut Context<Self>) -> Self::Result {
        self.ask(|reply| Input::ReleaseHold { holder: msg.holder, reply }, false, ctx)
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
        let name = self.core.record().name.clone();
        let connecting = self.driver();
        // Answered mid-task too, and no part of that task: nothing to decide,
        // so the core is not asked.
        let call =
            NodeCall { call: DriverCall::GetPower, span: self.core.task_span("power status", &tracing::Span::none()) };
        let fence = self.env.fence.clone();
        Box::pin(async move {
            let driver =
                connecting.await.map_err(|e| KilnError::Driver { node: name.clone(), message: e.to_string() })?;
            unfenced(fence.as_ref()).map_err(|e| KilnError::Driver { node: name.clone(), message: e.to_string() })?;
            match driver.send(call).await.map(|called| called.result) {
                Ok(Ok(DriverReply::Power(p))) => Ok(Some(super::core::power_state_of(p))),
                Ok(Ok(_)) => Ok(None),
                Ok(Err(e)) => Err(KilnError::Driver { node: name, message: e.to_string() }),
                Err(_) => Err(KilnError::Driver { node: name, message: DriverError::Unavailable.to_string() }),
            }
        })
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
