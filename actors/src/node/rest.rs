//! Nodes at rest: a node with nothing to do gives up its actor.
//!
//! An actor costs about 1.5 KB whatever its node does (the actix context
//! and its future, the mailbox's channel, the task), and a site of a
//! million nodes is mostly nodes doing nothing. So a node whose core is
//! [at rest](super::core::NodeCore::at_rest) for
//! [`SiteConfig::node_rest_after`](crate::SiteConfig) hands its record and
//! gauges back to the registry and its actor stops; the next message the
//! registry routes to it starts a new actor from that record first. A site
//! starts, and creates nodes, with every node at rest.
//!
//! What keeps a node's messages in order and one actor per node: every
//! message to a node goes through the registry ([`Routed`]), which counts
//! what it sent to the actor under the entry's lock, and the actor counts
//! what it handled. It may go to rest only under that same lock, and only
//! when both counts agree: no message is on its way to it, and none can be
//! sent to it afterwards (the entry no longer names it). A message sent a
//! moment later starts the new actor, which is the only one.

use std::time::Duration;

use actix::prelude::*;

use super::actor::NodeActor;

/// A message the registry routes to a node's actor (counted, see the
/// module docs). Build it with the registry's `send`, not by hand.
pub struct Routed<M>(pub(crate) M);

impl<M: Message> Message for Routed<M> {
    type Result = M::Result;
}

/// Each message the registry routes: counted, handled as itself, and the
/// rest timer set if the node is at rest afterwards.
macro_rules! routed {
    ($($message:ty),* $(,)?) => {$(
        impl Handler<Routed<$message>> for NodeActor {
            type Result = <NodeActor as Handler<$message>>::Result;

            fn handle(&mut self, Routed(msg): Routed<$message>, ctx: &mut Context<Self>) -> Self::Result {
                self.rest.routed += 1;
                let result = <Self as Handler<$message>>::handle(self, msg, ctx);
                self.settle(ctx);
                result
            }
        }
    )*};
}

routed!(
    super::ShowNode,
    super::HoldNode,
    super::ReleaseNode,
    super::RunOp,
    super::RunOpIn,
    super::ReadPower,
    super::ValidateNode,
    super::Abandon,
    super::HandOver,
    super::upkeep::SyncPower,
    super::upkeep::RecoverPowerFailure,
    super::upkeep::ExpireWait,
);

/// What the actor knows of its way to rest.
#[derive(Default)]
pub(super) struct Resting {
    /// Messages routed to this actor and handled.
    pub(super) routed: u64,
    /// `routed` when the timer was set, while it is set.
    timer_at: Option<u64>,
}

impl NodeActor {
    /// Sets the rest timer if the node is at rest and none is set: it fires
    /// after `node_rest_after`, and the node goes to rest then if no
    /// message came meanwhile (else it is set again).
    pub(super) fn settle(&mut self, ctx: &mut Context<Self>) {
        let Some(after) = self.env.rest_after else { return };
        if self.rest.timer_at.is_some() || !self.core.at_rest() {
            return;
        }
        self.rest.timer_at = Some(self.rest.routed);
        ctx.run_later(after, |act, ctx| act.rest_timer(ctx));
    }

    fn rest_timer(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.rest.timer_at.take() else { return };
        if !self.core.at_rest() {
            return;
        }
        if at != self.rest.routed {
            return self.settle(ctx);
        }
        let id = self.core.record().uuid;
        let core = &mut self.core;
        if crate::supervisor::put_to_rest(&self.env.nodes, id, &ctx.address(), self.rest.routed, || core.rest()) {
            ctx.stop();
        }
        // Refused: a message is on its way; handling it sets the timer.
    }
}

/// The default of `node_rest_after`: long enough that a node in use (a
/// bulk verb, a job over a set) keeps its actor, its BMC connection and
/// its warm state between steps; short enough that one power sync cycle's
/// actors are gone well before the next (every minute by default).
pub const DEFAULT_REST_AFTER: Duration = Duration::from_secs(30);
