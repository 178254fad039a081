//! What the node core asks the world to do: the only way its decisions leave
//! it. The actor carries each [`Effect`] out and, for those that have a
//! result, feeds that result back as an input carrying the same [`Ticket`].
//! Keeping them as data is what lets the tests check the order of a path
//! (commit, then adopt, publish, answer) without an actor or a store.

use std::time::Duration;

use kiln_store::Write;
use tokio::sync::oneshot;

use super::upkeep::SyncOutcome;
use crate::KilnError;
use crate::driver::DriverCall;
use crate::events::NodeEvent;
use crate::view::NodeView;

/// Where the answer of an exclusive request goes.
pub type Reply = oneshot::Sender<Result<NodeView, KilnError>>;

/// Names a result the core waits for.
pub type Ticket = u64;

/// One thing for the actor to do.
#[derive(Debug)]
pub enum Effect {
    /// Write `writes` to the store in one batch; answer with
    /// [`super::core::Input::Committed`].
    Commit { ticket: Ticket, writes: Vec<Write> },
    /// Make sure the node's driver actor can be had (connecting to the BMC
    /// if need be); answer with [`super::core::Input::Connected`] before
    /// anything else.
    Connect { ticket: Ticket },
    /// Call the node's BMC inside `span`; answer with
    /// [`super::core::Input::DriverReplied`].
    CallDriver { ticket: Ticket, call: DriverCall, span: tracing::Span },
    /// The BMC settings changed: connect afresh on next use. With `evict`
    /// (its BMC profile was reset), the pool's client for the settings is
    /// dropped too, so that nothing learned survives in memory either.
    ForgetDriver { evict: bool },
    /// Read the node's record back from the store; answer with
    /// [`super::core::Input::Loaded`].
    LoadStored { ticket: Ticket },
    /// Publish an event on the bus.
    Publish(NodeEvent),
    /// Answer a caller.
    Answer(Answer),
    /// Feed [`super::core::Input::LockWaitOver`] for `waiter` after `after`.
    StartTimer { waiter: u64, after: Duration },
    /// The node is gone: stop the actor.
    Stop,
}

/// An answer to one caller, through the channel it waits on.
#[derive(Debug)]
pub enum Answer {
    /// An exclusive request's result (boxed: a view is large, the other
    /// answers small).
    Node(Reply, Box<Result<NodeView, KilnError>>),
    /// A power sync's outcome.
    Sync(oneshot::Sender<SyncOutcome>, SyncOutcome),
    /// A yes or no ([`super::ReleaseNode`], upkeep, [`super::Abandon`]).
    Done(oneshot::Sender<bool>, bool),
}

impl Answer {
    /// Sends the answer; a caller that stopped waiting is no error.
    pub fn send(self) {
        match self {
            Answer::Node(tx, v) => {
                let _ = tx.send(*v);
            }
            Answer::Sync(tx, v) => {
                let _ = tx.send(v);
            }
            Answer::Done(tx, v) => {
                let _ = tx.send(v);
            }
        }
    }
}
