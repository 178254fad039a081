//! A node's part in a graceful shutdown: the [`Abandon`] message. What it
//! does (close the node, answer its waiters, release the task and commit the
//! restart rule's change) is the core's, in `core/abandon.rs`.

use actix::prelude::*;

use super::actor::NodeActor;
use super::core::Input;

/// Closes the node to new work (exclusive requests get `Unavailable` with
/// `why`, and the actor commits nothing more), answers the requests waiting
/// for it, and abandons the running task: its caller gets an error, the node
/// is released and, if the store shows it mid-task, falls to its failed
/// state with `last_error` saying `why`. Answers whether the store needed
/// that change, once it is durable.
#[derive(Clone, Debug, Message)]
#[rtype(result = "bool")]
pub struct Abandon {
    pub why: String,
}

impl Handler<Abandon> for NodeActor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: Abandon, ctx: &mut Context<Self>) -> Self::Result {
        self.ask(|reply| Input::Abandon { why: msg.why, reply }, false, ctx)
    }
}

/// Gives the node up to another member of a shared store, if it is idle
/// (nothing runs, waits or holds it): the actor stops, and the caller
/// releases the row. Answers whether it did.
#[derive(Clone, Debug, Message)]
#[rtype(result = "bool")]
pub struct HandOver;

impl Handler<HandOver> for NodeActor {
    type Result = bool;

    fn handle(&mut self, _: HandOver, ctx: &mut Context<Self>) -> bool {
        let handed = self.core.hand_over();
        if handed {
            ctx.stop();
        }
        handed
    }
}
