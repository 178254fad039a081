//! The site's event stream on a shared store: one serial space for every
//! member, in commit order.
//!
//! Why it is shaped so:
//!
//! - **The database numbers events, not the member.** Each member's bus
//!   commits its events ([`crate::Write::AppendEvent`], the record's own
//!   serial ignored) through `kiln_append_event` (migration 10), which takes
//!   the transaction-scoped advisory lock [`EVENTS_LOCK`] and gives the
//!   event the serial after the highest committed one. The lock is held to
//!   the commit, so a serial is visible only once every lower one is: a
//!   reader of `serial > N` never finds a hole that fills in later, and a
//!   consumer that reconnects to any member with `--since N` loses nothing
//!   and sees nothing twice. The bus commits a few times a second per
//!   member, each commit one pipeline, so the lock is held briefly; a
//!   group's run of events is one call of `kiln_append_events` (one lock,
//!   one `max(serial)`, one insert), as a call per event cost a third of
//!   one member's transitions per second.
//! - **Woken, with a sweep behind it.** The function notifies [`EVENTS`]
//!   (delivered at the commit, once per transaction); every member's bus
//!   reads what it has not delivered when woken, and every second anyway
//!   (a wake-up lost with a reconnecting listener costs a delay, never an
//!   event).
//! - **Trimmed site-wide.** [`crate::Write::ForgetEventsThrough`] forgets
//!   every member's events up to a serial; a bus asks for it from the
//!   serials it has delivered, so the newest `KEPT` stay.

/// The channel every bus is woken on when events are committed.
pub const EVENTS: &str = "kiln_events";

/// The advisory lock key event serials are given under ("kevt" in
/// ASCII; written out in migration 10's `kiln_append_event`).
pub const EVENTS_LOCK: i64 = 0x6b65_7674;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migration_takes_the_lock_and_notifies_the_channel_named_here() {
        let sql = super::super::MIGRATIONS[9];
        assert!(sql.contains(&format!("pg_advisory_xact_lock({EVENTS_LOCK})")), "{sql}");
        assert!(sql.contains(&format!("pg_notify('{EVENTS}'")), "{sql}");
    }
}
