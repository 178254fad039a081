//! The event bus on a store several members share: one stream for the
//! site, numbered by the store.
//!
//! Why it is shaped so:
//!
//! - **Delivered from the store, local and remote alike.** The store gives
//!   each event its serial when it commits it, in commit order across
//!   members (`kiln_store::postgres::events`). A bus cannot deliver its own
//!   events from memory, in the order it published them, without
//!   interleaving them wrongly with the others' (nor with their serials):
//!   it reads back everything after the last serial it delivered, and
//!   delivers that in serial order. Every member's subscribers so see the
//!   same events in the same order, under the serials a replay
//!   (`--since`) finds in the store.
//! - **Read right after its own commit, and when woken.** After each
//!   commit of its own events the bus reads the store, so they are
//!   delivered one read after they are durable. Another member's commit
//!   wakes it through the listener ([`Wake::Events`]); it reads every
//!   [`SWEEP`] anyway, so a lost wake-up costs a delay, never an event.
//! - **Reads may overlap; deliveries never repeat.** What a read returns
//!   is every event after its start, with no hole (a serial is visible only
//!   once every lower one is), so an event at or below the last delivered
//!   serial is skipped, whatever order reads end in.
//! - **A subscription still gets nothing published before it.** Its
//!   answer waits, as on a store of one, until the read that follows the
//!   commit of the events published before it has been delivered; the
//!   next local events are committed only after that, so none of them
//!   reaches the subscriber early or late.
//! - **Events that cannot be stored are not delivered**: without the store
//!   there is no serial to give them. The node's record and history are
//!   committed apart; a member that lost its store stops itself soon.

use actix::prelude::*;
use kiln_store::postgres::listener::Wake;
use kiln_store::{EventRecord, StoreError, StoreHandle, Write};
use tokio::sync::broadcast;

use super::{EventBus, KEPT, event_of, record_of};
use crate::remote::{SWEEP, wait_for};

/// Events read from the store at a time.
const PAGE: usize = 1000;

/// The most pages one read takes (the store keeps about `KEPT`): the rest,
/// if any, comes with the next read.
const MAX_PAGES: usize = KEPT as usize / PAGE + 2;

/// What a bus on a shared store keeps of the site's stream.
pub(super) struct Stream {
    /// How many of this bus's events have been committed and then read
    /// back and delivered ([`EventBus::reached`]).
    pub(super) synced: u64,
    /// The serial delivered when this bus last asked the store to forget
    /// old events.
    trimmed: u64,
    /// The listener's wake-ups; `None`: the sweep alone.
    wakes: Option<broadcast::Sender<Wake>>,
    /// A read woken by a wake-up or the sweep is under way.
    reading: bool,
    /// Woken again meanwhile: read again when it ends.
    again: bool,
}

/// Read again now: another member committed events, or the sweep is due.
#[derive(Message)]
#[rtype(result = "()")]
struct CatchUp;

impl EventBus {
    /// A bus on a store that gives serials itself
    /// ([`kiln_store::Backend::assigns_event_serials`]), going on from
    /// `last_serial` (the highest serial in the store), woken by `wakes`
    /// when another member commits events.
    pub fn on_shared_store(store: StoreHandle, last_serial: u64, wakes: Option<broadcast::Sender<Wake>>) -> Self {
        EventBus {
            delivered: last_serial,
            store: Some(store),
            shared: Some(Stream { synced: 0, trimmed: last_serial, wakes, reading: false, again: false }),
            ..Default::default()
        }
    }

    /// On a shared store: reads when woken, and every [`SWEEP`].
    pub(super) fn watch_shared(&mut self, ctx: &mut Context<Self>) {
        let Some(stream) = &self.shared else { return };
        let wakes = stream.wakes.as_ref().map(broadcast::Sender::subscribe);
        let ticks = futures::stream::unfold(wakes, |mut wakes| async move {
            match &mut wakes {
                Some(rx) => wait_for(rx, |w| matches!(w, Wake::Events)).await,
                None => tokio::time::sleep(SWEEP).await,
            }
            Some((CatchUp, wakes))
        });
        ctx.add_message_stream(ticks);
    }

    /// Commits the pending events (the store numbers them), then reads
    /// back and delivers everything after the last serial delivered.
    pub(super) fn flush_shared(&mut self, ctx: &mut Context<Self>) {
        let (Some(store), Some(stream)) = (&self.store, &mut self.shared) else { return };
        let batch = std::mem::take(&mut self.pending);
        if batch.is_empty() {
            return;
        }
        let mut writes: Vec<Write> = batch.iter().map(|e| Write::AppendEvent(record_of(e))).collect();
        // Forget the oldest once per thousand serials delivered, so the
        // store keeps at most KEPT and a few, whoever wrote them.
        let delivered = self.delivered;
        if let Some(through) = trim_through(stream.trimmed, delivered) {
            stream.trimmed = delivered;
            writes.push(Write::ForgetEventsThrough(through));
        }
        // Every event published so far is in this commit or an earlier one.
        let published = self.published;
        let count = batch.len();
        self.committing = true;
        let commit = store.send(writes);
        let store = store.clone();
        let done = async move {
            let stored = commit.await;
            (stored, read_after(&store, delivered).await)
        };
        ctx.spawn(done.into_actor(self).map(move |(stored, read), act, ctx| {
            if let Err(e) = stored {
                tracing::warn!(error = %e, events = count, "events could not be stored; they are not on the stream");
            }
            match read {
                Ok(records) => act.deliver_records(records),
                Err(e) => tracing::warn!(error = %e, "could not read the site's events; the sweep will"),
            }
            if let Some(stream) = &mut act.shared {
                stream.synced = published;
            }
            act.admit_waiting();
            act.committing = false;
            if !act.pending.is_empty() {
                act.flush(ctx);
            }
        }));
    }

    /// Reads and delivers what the store has after the last serial
    /// delivered; one such read at a time.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        let (Some(store), Some(stream)) = (&self.store, &mut self.shared) else { return };
        if stream.reading {
            stream.again = true;
            return;
        }
        stream.reading = true;
        let store = store.clone();
        let after = self.delivered;
        let read = async move { read_after(&store, after).await };
        ctx.spawn(read.into_actor(self).map(|read, act, ctx| {
            match read {
                Ok(records) => act.deliver_records(records),
                Err(StoreError::Closed) => {}
                Err(e) => tracing::debug!(error = %e, "could not read the site's events; trying again"),
            }
            let again = act.shared.as_mut().is_some_and(|s| {
                s.reading = false;
                std::mem::take(&mut s.again)
            });
            if again {
                act.catch_up(ctx);
            }
        }));
    }

    /// Delivers, in serial order, the records not delivered yet.
    fn deliver_records(&mut self, records: Vec<EventRecord>) {
        for record in records {
            if record.serial <= self.delivered {
                continue;
            }
            match event_of(&record) {
                Some(event) => self.deliver(event),
                None => {
                    tracing::warn!(serial = record.serial, "a stored event does not decode; skipped");
                    self.delivered = record.serial;
                }
            }
        }
    }
}

impl Handler<CatchUp> for EventBus {
    type Result = ();
    fn handle(&mut self, _: CatchUp, ctx: &mut Context<Self>) {
        self.catch_up(ctx);
    }
}

/// Up to which serial the store may forget, when the bus last asked at
/// `trimmed` and has delivered up to `delivered`: once per thousand
/// serials, keeping the newest [`KEPT`] of the site.
fn trim_through(trimmed: u64, delivered: u64) -> Option<u64> {
    (delivered > KEPT && trimmed / 1000 != delivered / 1000).then(|| delivered - KEPT)
}

/// Every stored event after `after`, page by page, at most [`MAX_PAGES`].
async fn read_after(store: &StoreHandle, after: u64) -> Result<Vec<EventRecord>, StoreError> {
    let mut all = Vec::new();
    let mut cursor = after;
    for _ in 0..MAX_PAGES {
        let page = store.read(move |b| b.load_events(cursor, PAGE)).await?;
        let full = page.len() == PAGE;
        if let Some(last) = page.last() {
            cursor = last.serial;
        }
        all.extend(page);
        if !full {
            break;
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_forgets_once_per_thousand_serials_and_keeps_the_newest() {
        assert_eq!(trim_through(0, KEPT), None, "nothing to forget yet");
        assert_eq!(trim_through(KEPT, KEPT + 999), None, "once per thousand");
        assert_eq!(trim_through(KEPT + 999, KEPT + 1000), Some(1000));
        // Serials other members took count too: a bus that delivered a
        // jump of them asks once, keeping KEPT.
        assert_eq!(trim_through(KEPT + 1000, KEPT + 5500), Some(5500));
    }
}
