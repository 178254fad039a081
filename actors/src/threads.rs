//! Which threads a site's work runs on.
//!
//! Everything in a site once ran on the one arbiter of the caller's actix
//! system: node actors, the job queue, the supervisor, the driver actors
//! (their HTTP and IPMI I/O) and, in the daemon, every admin connection. On
//! a machine with cores to spare, BMC traffic and clients then take turns
//! with the node actors for one thread. So by default, from
//! [`SPLIT_FROM_CORES`] cores, a site starts its driver actors on an arbiter
//! of their own, and the daemon its admin socket on another
//! ([`Threads::Auto`]); on fewer, the hop between threads costs more than it
//! frees (measured, see the constant). A `fake` BMC's actor always stays
//! beside its node's.
//!
//! What keeps this safe: a driver actor shares nothing with a node actor
//! but messages (`NodeCall` in, a reply out), and a node actor still does
//! all its own work on its own thread, so the mailbox stays the node's
//! lock; the order in which a node publishes and answers is the node
//! actor's, whatever thread the answer is read on. [`Threads::One`] keeps
//! everything on the caller's arbiter, for an embedding application that
//! wants its site on its own thread only.

use std::sync::Arc;

use actix::{Arbiter, ArbiterHandle};

/// The fewest cores on which [`Threads::Auto`] gives the driver actors and
/// the admin socket threads of their own. The store already keeps two
/// threads busy (its writer and the WAL's syncer): on two cores, two more
/// busy threads only take turns with them, and every request and BMC call
/// pays a hop between threads. Measured on two cores with `kiln bench`
/// (five runs each, alternating): splitting took `lifecycle` from 67-75k
/// to 55k transitions/s and `admin` from 84-93k to 69-78k requests/s.
pub const SPLIT_FROM_CORES: usize = 4;

/// Which threads a site runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threads {
    /// Everything on the arbiter that starts the site.
    One,
    /// Driver actors on an arbiter of their own (and, in the daemon, the
    /// admin socket on another).
    Split,
    /// [`Threads::Split`] when the machine has at least [`SPLIT_FROM_CORES`]
    /// cores, else [`Threads::One`].
    #[default]
    Auto,
}

impl Threads {
    /// Whether to start arbiters of its own.
    pub fn split(self) -> bool {
        match self {
            Threads::One => false,
            Threads::Split => true,
            Threads::Auto => std::thread::available_parallelism().is_ok_and(|n| n.get() >= SPLIT_FROM_CORES),
        }
    }
}

/// An arbiter (a thread with its own event loop) that stops once the last
/// clone of it is dropped, so a site stopped or dropped leaves no thread
/// behind.
#[derive(Clone, Debug)]
pub struct OwnArbiter(Arc<Stopping>);

#[derive(Debug)]
struct Stopping(ArbiterHandle);

impl Drop for Stopping {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl OwnArbiter {
    /// Starts one in the current actix system.
    pub fn start() -> Self {
        OwnArbiter(Arc::new(Stopping(Arbiter::new().handle())))
    }

    /// Where to start actors (`Actor::start_in_arbiter`) or spawn futures.
    pub fn handle(&self) -> ArbiterHandle {
        self.0.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_own_arbiter_runs_on_another_thread_and_stops_with_its_last_clone() {
        actix::System::new().block_on(async {
            let arbiter = OwnArbiter::start();
            let (tx, rx) = tokio::sync::oneshot::channel();
            assert!(arbiter.handle().spawn(async move {
                let _ = tx.send(std::thread::current().id());
            }));
            assert_ne!(rx.await.unwrap(), std::thread::current().id());
            // A task that never ends holds `held` until its arbiter stops.
            let (held, dropped) = tokio::sync::oneshot::channel::<()>();
            let handle = arbiter.handle();
            assert!(handle.spawn(async move {
                let _held = held;
                std::future::pending::<()>().await;
            }));
            let clone = arbiter.clone();
            drop(arbiter);
            assert!(handle.spawn(async {}), "a clone keeps it running");
            drop(clone);
            assert!(dropped.await.is_err(), "stopped with the last clone, dropping its tasks");
        });
    }

    #[test]
    fn one_never_splits() {
        assert!(!Threads::One.split());
        assert!(Threads::Split.split());
    }
}
