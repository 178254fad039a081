//! The node's record and reservation together with the gauges that count
//! them, so that neither can change without the gauges following.
//!
//! Before this wrapper the actor set `record` in several places and each had
//! to remember the gauge update; the shutdown path forgot, and the state
//! gauges went stale. Now the fields are private: [`Gauged::adopt`] is the one
//! way a new record comes in, [`Gauged::reserve`]/[`Gauged::unreserve`] the one
//! way the reservation changes, and [`Gauged::remove`] takes a deleted node out
//! of the counts.

use std::sync::Arc;

use kiln_store::{NodeRecord, Reservation};

use crate::metrics::{Metrics, NodeGauge};

/// A node's committed record and reservation, counted in the site's gauges.
pub struct Gauged {
    record: NodeRecord,
    /// Boxed: held only while a task runs, and an idle node stays small.
    reservation: Option<Box<Reservation>>,
    gauge: NodeGauge,
}

impl Gauged {
    /// Counts `record` in `metrics` from now on.
    pub fn new(record: NodeRecord, metrics: Arc<Metrics>) -> Self {
        let gauge = NodeGauge::new(metrics, &record);
        Gauged { record, reservation: None, gauge }
    }

    /// The node as it is now, to be kept without its actor: the record
    /// (with `stamp` applied: what the actor knew but had not committed)
    /// and its counts. This one counts nothing afterwards; the actor that
    /// held it is about to stop.
    pub fn hand_off(&mut self, stamp: impl FnOnce(&mut NodeRecord)) -> Gauged {
        let mut record = self.record.clone();
        stamp(&mut record);
        Gauged { record, reservation: None, gauge: self.gauge.hand_off() }
    }

    /// The record as last committed.
    pub fn record(&self) -> &NodeRecord {
        &self.record
    }

    /// Who holds the node now, for what.
    pub fn reservation(&self) -> Option<&Reservation> {
        self.reservation.as_deref()
    }

    /// Takes `next` as the node's record (it is durable now): the only way
    /// the record changes.
    pub fn adopt(&mut self, next: NodeRecord) {
        self.gauge.track(&next);
        self.record = next;
    }

    /// Holds the node under `reservation` from now on.
    pub fn reserve(&mut self, reservation: Reservation) {
        self.reservation = Some(Box::new(reservation));
        self.gauge.reserve(true);
    }

    /// Lets the node go.
    pub fn unreserve(&mut self) {
        self.reservation = None;
        self.gauge.reserve(false);
    }

    /// The site's metrics.
    pub fn metrics(&self) -> &Metrics {
        self.gauge.metrics()
    }

    /// The node was deleted: it leaves the counts now.
    pub fn remove(&mut self) {
        self.gauge.remove();
    }
}
