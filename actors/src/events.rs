//! The event stream: every committed transition, power change and failure,
//! in commit order per node.
//!
//! Node actors publish to one [`EventBus`] actor with `do_send` after the
//! store has committed the change, so a subscriber never sees an event for a
//! change that is not durable, and sees one node's events in order (actix
//! delivers one sender's messages in order).

use std::collections::VecDeque;

use actix::prelude::*;
use kiln_store::{NodeId, PowerState, ProvisionState, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::nodeset::NodeSet;

/// Where in an operation an event falls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The operation's first change is committed (a working state entered,
    /// a power target recorded).
    Start,
    /// The operation reached its end.
    End,
    /// The operation failed; `error` says why.
    Error,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Start, EventKind::End, EventKind::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::End => "end",
            EventKind::Error => "error",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            format!("unknown event kind '{s}' (expected {})", EventKind::ALL.map(EventKind::as_str).join(", "))
        })
    }
}

/// Which events a subscriber wants. The bus applies it before sending, so
/// a follower of three nodes of a large site is sent three nodes' events.
#[derive(Clone, Default)]
pub struct EventFilter {
    /// Only the events of these nodes (by name); `None`: every node.
    pub nodes: Option<NodeSet>,
    /// Only these kinds; empty: every kind.
    pub kinds: Vec<EventKind>,
}

impl EventFilter {
    pub fn matches(&self, e: &NodeEvent) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && self.nodes.as_ref().is_none_or(|set| set.contains(&e.node_name))
    }
}

/// One event on the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[rtype(result = "()")]
pub struct NodeEvent {
    /// Site-wide serial, in publication order.
    pub serial: u64,
    pub at: Timestamp,
    pub node: NodeId,
    pub node_name: String,
    pub kind: EventKind,
    /// The operation: a verb (`deploy`), `power on`, `maintenance`, ...
    pub action: String,
    pub provision_state: ProvisionState,
    pub target_provision_state: Option<ProvisionState>,
    pub power_state: Option<PowerState>,
    pub error: Option<String>,
}

/// Publishes an event (the bus stamps its serial).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish(pub NodeEvent);

/// Subscribes an actor to every event from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<NodeEvent>);

/// Subscribes a channel (an admin connection) to the events `filter` lets
/// through from now on. A subscriber that falls `capacity` events behind is dropped, and its channel
/// closes, rather than slowing the site down. With `backlog`, the recent
/// events (at most [`RECENT`]) are sent first, with no gap before the live
/// ones: give the channel room for them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeChannel {
    pub tx: mpsc::Sender<NodeEvent>,
    pub backlog: bool,
    pub filter: EventFilter,
}

/// The recent events `0` lets through, oldest first.
#[derive(Default, Message)]
#[rtype(result = "Vec<NodeEvent>")]
pub struct RecentEvents(pub EventFilter);

/// How many recent events the bus keeps for `kiln events`.
pub const RECENT: usize = 1000;

/// The actor that fans events out to subscribers.
#[derive(Default)]
pub struct EventBus {
    serial: u64,
    recent: VecDeque<NodeEvent>,
    recipients: Vec<Recipient<NodeEvent>>,
    channels: Vec<(mpsc::Sender<NodeEvent>, EventFilter)>,
}

impl Actor for EventBus {
    type Context = Context<Self>;
}

impl Handler<Publish> for EventBus {
    type Result = ();
    fn handle(&mut self, Publish(mut event): Publish, _: &mut Context<Self>) {
        self.serial += 1;
        event.serial = self.serial;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(event.clone());
        self.recipients.retain(|r| r.connected());
        for r in &self.recipients {
            r.do_send(event.clone());
        }
        self.channels.retain(|(tx, filter)| match filter.matches(&event).then(|| tx.try_send(event.clone())) {
            None => !tx.is_closed(),
            Some(sent) => match sent {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(message = "event subscriber fell behind; dropping it");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        });
    }
}

impl Handler<Subscribe> for EventBus {
    type Result = ();
    fn handle(&mut self, Subscribe(r): Subscribe, _: &mut Context<Self>) {
        self.recipients.push(r);
    }
}

impl Handler<SubscribeChannel> for EventBus {
    type Result = ();
    fn handle(&mut self, msg: SubscribeChannel, _: &mut Context<Self>) {
        if msg.backlog {
            for e in self.recent.iter().filter(|e| msg.filter.matches(e)) {
                if msg.tx.try_send(e.clone()).is_err() {
                    return;
                }
            }
        }
        self.channels.push((msg.tx, msg.filter));
    }
}

impl Handler<RecentEvents> for EventBus {
    type Result = MessageResult<RecentEvents>;
    fn handle(&mut self, RecentEvents(filter): RecentEvents, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.recent.iter().filter(|e| filter.matches(e)).cloned().collect())
    }
}
