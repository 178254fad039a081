//! The event stream: every committed transition, power change and failure,
//! in commit order per node.
//!
//! Node actors publish to one [`EventBus`] actor with `do_send` after the
//! store has committed the change, so a subscriber never sees an event for a
//! change that is not durable, and sees one node's events in order (actix
//! delivers one sender's messages in order).
//!
//! The bus of a site ([`EventBus::durable`]) also stores every event, with
//! its serial, before it delivers it: serials go on increasing across
//! restarts, and a consumer that reconnects asks for the events after the
//! last serial it saw (`kiln events --since N`) and loses nothing. Events
//! published while a commit of events is in flight wait for it and go in
//! the next one, so the store sees a few commits a second, not one per
//! event. The store keeps the newest [`KEPT`] events.
//!
//! On a store several members share ([`EventBus::on_shared_store`]) the
//! site has one stream: the store gives each event its serial, in commit
//! order across members, and every member's bus delivers what it reads
//! back from the store, its own events and the others' alike, in serial
//! order ([`shared`]). So `kiln events` on any member shows every node's
//! events, and `--since N` on any member replays the same stream.

mod shared;

use std::collections::VecDeque;

use actix::prelude::*;
use kiln_store::{EventRecord, NodeId, PowerState, ProvisionState, StoreHandle, Timestamp, Write};
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
    /// Site-wide serial, in publication order (on a shared store, in
    /// commit order across members).
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
/// through from now on: every event published after the subscription, and
/// none published before it, even one whose storing is still in flight (a
/// client that ran a command and then follows the stream does not get that
/// command's events). A subscriber that falls behind by the channel's
/// capacity is dropped, and its channel closes, rather than slowing the
/// site down. With `backlog`, the recent events (at most [`RECENT`]) are
/// sent first, with no gap before the live ones: give the channel room for
/// them. Answers the serial of the last event published before the
/// subscription, once that event is stored (a durable bus) and delivered:
/// every event after it comes on the channel and every event up to it is
/// in the store, so a replay from the store up to it followed by the
/// channel misses none.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct SubscribeChannel {
    pub tx: mpsc::Sender<NodeEvent>,
    pub backlog: bool,
    pub filter: EventFilter,
}

/// The recent events `0` lets through, oldest first.
#[derive(Default, Message)]
#[rtype(result = "Vec<NodeEvent>")]
pub struct RecentEvents(pub EventFilter);

/// How many recent events the bus keeps in memory for `kiln events`.
pub const RECENT: usize = 1000;

/// How many events a durable bus keeps in the store for replays.
pub const KEPT: u64 = 100_000;

/// The actor that fans events out to subscribers.
#[derive(Default)]
pub struct EventBus {
    /// The last event published: its serial, which this bus gave it; on a
    /// shared store (where the store gives serials), how many were.
    published: u64,
    /// The last serial delivered (all before it are delivered too).
    delivered: u64,
    recent: VecDeque<NodeEvent>,
    recipients: Vec<Recipient<NodeEvent>>,
    channels: Vec<(mpsc::Sender<NodeEvent>, EventFilter)>,
    /// Where events are stored before they are delivered; `None`: a bus
    /// that only delivers (one built alone, in tests).
    store: Option<StoreHandle>,
    /// Events published while a commit of events was in flight.
    pending: Vec<NodeEvent>,
    committing: bool,
    /// Subscriptions that wait for the events published before them to be
    /// stored and delivered, each with the `published` it waits for.
    waiting: Vec<(u64, SubscribeChannel, tokio::sync::oneshot::Sender<u64>)>,
    /// On a shared store: what the bus knows of the site's stream.
    shared: Option<shared::Stream>,
}

impl EventBus {
    /// A bus that stores every event before delivering it, going on from
    /// `last_serial` (the highest serial in the store).
    pub fn durable(store: StoreHandle, last_serial: u64) -> Self {
        EventBus { published: last_serial, delivered: last_serial, store: Some(store), ..Default::default() }
    }

    /// Stores the pending events in one commit, then delivers them.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.shared.is_some() {
            return self.flush_shared(ctx);
        }
        let Some(store) = &self.store else { return };
        let batch = std::mem::take(&mut self.pending);
        let Some(last) = batch.last().map(|e| e.serial) else { return };
        let mut writes: Vec<Write> = batch.iter().map(|e| Write::AppendEvent(record_of(e))).collect();
        // Forget the oldest once per thousand events, so the store keeps
        // at most KEPT and a few.
        if last > KEPT && (last - batch.len() as u64) / 1000 != last / 1000 {
            writes.push(Write::ForgetEventsThrough(last - KEPT));
        }
        self.committing = true;
        let commit = store.send(writes);
        ctx.spawn(commit.into_actor(self).map(move |stored, act, ctx| {
            if let Err(e) = stored {
                // Delivered all the same: a live consumer loses nothing;
                // only a replay after a restart would miss these.
                tracing::warn!(error = %e, events = batch.len(), "events could not be stored; delivered anyway");
            }
            for event in batch {
                act.deliver(event);
            }
            act.committing = false;
            if !act.pending.is_empty() {
                act.flush(ctx);
            }
        }));
    }

    fn deliver(&mut self, event: NodeEvent) {
        self.delivered = event.serial;
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
        self.admit_waiting();
    }
}

impl EventBus {
    /// How far the events published are delivered, in `published`'s
    /// terms: the last serial delivered on a bus that gives serials; on a
    /// shared store, how many of this bus's events have been committed and
    /// then read back and delivered.
    fn reached(&self) -> u64 {
        self.shared.as_ref().map_or(self.delivered, |s| s.synced)
    }

    /// Subscribes `msg`'s channel from now on: it is sent what is delivered
    /// from here (after the backlog, if asked for). Answers the serial of
    /// the last event delivered.
    fn admit(&mut self, msg: SubscribeChannel) -> u64 {
        if msg.backlog {
            for e in self.recent.iter().filter(|e| msg.filter.matches(e)) {
                if msg.tx.try_send(e.clone()).is_err() {
                    return self.delivered;
                }
            }
        }
        self.channels.push((msg.tx, msg.filter));
        self.delivered
    }

    /// Admits the waiting subscriptions whose last earlier event has just
    /// been delivered, before any later event is.
    fn admit_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let reached = self.reached();
        let (ready, still): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiting).into_iter().partition(|w| w.0 <= reached);
        self.waiting = still;
        for (_, msg, answer) in ready {
            let upto = self.admit(msg);
            let _ = answer.send(upto);
        }
    }
}

/// The stored form of an event: its serial, for the replay's range reads,
/// and the event in the admin protocol's compact encoding (about a third
/// of its JSON).
pub fn record_of(event: &NodeEvent) -> EventRecord {
    // Encoding plain data cannot fail.
    EventRecord { serial: event.serial, body: crate::codec::encode_body(event).unwrap_or_default() }
}

/// An event read back from the store, with the serial the store keeps it
/// under (a shared store gives serials itself: the body's is not it);
/// `None` for a body that does not decode (a damaged row is skipped, not
/// fatal to the replay).
pub fn event_of(record: &EventRecord) -> Option<NodeEvent> {
    let mut event: NodeEvent = crate::codec::decode(&record.body).ok()?;
    event.serial = record.serial;
    Some(event)
}

impl Actor for EventBus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.watch_shared(ctx);
    }
}

impl Handler<Publish> for EventBus {
    type Result = ();
    fn handle(&mut self, Publish(mut event): Publish, ctx: &mut Context<Self>) {
        self.published += 1;
        // On a shared store the store gives the serial.
        event.serial = if self.shared.is_some() { 0 } else { self.published };
        if self.store.is_none() {
            return self.deliver(event);
        }
        self.pending.push(event);
        if !self.committing {
            self.flush(ctx);
        }
    }
}

impl Handler<Subscribe> for EventBus {
    type Result = ();
    fn handle(&mut self, Subscribe(r): Subscribe, _: &mut Context<Self>) {
        self.recipients.push(r);
    }
}

impl Handler<SubscribeChannel> for EventBus {
    type Result = ResponseFuture<u64>;
    fn handle(&mut self, msg: SubscribeChannel, _: &mut Context<Self>) -> Self::Result {
        if self.reached() == self.published {
            let upto = self.admit(msg);
            return Box::pin(std::future::ready(upto));
        }
        // Events published before this subscription are still being
        // stored: it starts right after the last of them is delivered.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let published = self.published;
        self.waiting.push((published, msg, tx));
        let delivered = self.delivered;
        Box::pin(async move { rx.await.unwrap_or(delivered) })
    }
}

impl Handler<RecentEvents> for EventBus {
    type Result = MessageResult<RecentEvents>;
    fn handle(&mut self, RecentEvents(filter): RecentEvents, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.recent.iter().filter(|e| filter.matches(e)).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> NodeEvent {
        NodeEvent {
            serial: 0,
            at: chrono::Utc::now(),
            node: NodeId::new(),
            node_name: name.into(),
            kind: EventKind::Start,
            action: "deploy".into(),
            provision_state: ProvisionState::Deploying,
            target_provision_state: Some(ProvisionState::Active),
            power_state: None,
            error: None,
        }
    }

    /// A client that ran a command and then follows the stream must not
    /// be sent that command's events, even while they are being stored.
    #[test]
    fn a_subscription_gets_what_is_published_after_it_and_nothing_before() {
        let dir = tempfile::tempdir().unwrap();
        actix::System::new().block_on(async {
            let store = StoreHandle::open_sqlite(&dir.path().join("kiln.sqlite")).unwrap();
            let bus = EventBus::durable(store.clone(), 0).start();
            // Queued before the subscription, so published before it; its
            // commit is still in flight when the subscription is handled.
            bus.do_send(Publish(event("before")));
            let (tx, mut rx) = mpsc::channel(16);
            let upto = bus.send(SubscribeChannel { tx, backlog: false, filter: EventFilter::default() }).await.unwrap();
            assert_eq!(upto, 1, "the subscription answers the serial of the event published before it");
            let stored = store.read(|b| b.load_events(0, 10)).await.unwrap();
            assert_eq!(stored.iter().map(|r| r.serial).collect::<Vec<_>>(), vec![1], "and that event is stored");

            bus.do_send(Publish(event("after")));
            let first = rx.recv().await.expect("the bus is running");
            assert_eq!((first.serial, first.node_name.as_str()), (2, "after"));
        });
    }

    /// A bus that does not store answers at once and delivers what follows.
    #[test]
    fn a_bus_without_a_store_subscribes_at_once() {
        actix::System::new().block_on(async {
            let bus = EventBus::default().start();
            bus.do_send(Publish(event("before")));
            let (tx, mut rx) = mpsc::channel(16);
            let upto = bus.send(SubscribeChannel { tx, backlog: false, filter: EventFilter::default() }).await.unwrap();
            assert_eq!(upto, 1);
            bus.do_send(Publish(event("after")));
            assert_eq!(rx.recv().await.unwrap().node_name, "after");
        });
    }
}
