//! What one admin client may hold, so that no client (a buggy script, a
//! flood of connections, a slow-loris that starts frames and never ends
//! them) can starve the others:
//!
//! - at most `max_connections` connections are served at once; the next one
//!   gets an `unavailable` error ("too many connections") and is closed, so
//!   a script fails fast and can retry instead of hanging. Refusing takes a
//!   task of its own for at most [`REFUSE_TIMEOUT`]; beyond [`MAX_REFUSING`]
//!   such tasks at once, further connections are closed without a word;
//! - a frame (the hello included) must be complete within `frame_timeout`
//!   of its first byte (the hello: of the connection);
//! - a connection idle between requests for `idle_timeout` is closed;
//! - an answer (or a followed event) the client leaves unread for
//!   `frame_timeout` ends the connection, so a client that asks and never
//!   reads cannot hold its slot;
//! - frames above `max_frame` are refused (see [`crate::connection`]), and a
//!   frame's buffer grows only with the bytes that actually arrive.

use std::sync::Arc;
use std::time::Duration;

use kiln_actors::KilnError;
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::connection::Connection;

/// The most connections being refused at once.
pub const MAX_REFUSING: usize = 64;

/// How long a refused connection may take to send its hello.
pub const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The per-connection limits (config keys of the same names).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub frame_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: 256, frame_timeout: Duration::from_secs(30), idle_timeout: Duration::from_secs(600) }
    }
}

/// What to do with a new connection.
pub enum Admit {
    /// Serve it; the permit is its slot, freed when it drops.
    Serve(OwnedSemaphorePermit),
    /// Tell it there is no room, then close it.
    Refuse(OwnedSemaphorePermit),
    /// Close it at once: too many are being refused already.
    Drop,
}

/// Counts the connections served and refused.
#[derive(Clone)]
pub struct Gate {
    max: usize,
    slots: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
}

impl Gate {
    pub fn new(limits: &Limits) -> Gate {
        Gate {
            max: limits.max_connections,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
        }
    }

    pub fn admit(&self) -> Admit {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Admit::Serve(p);
        }
        match self.refusing.clone().try_acquire_owned() {
            Ok(p) => Admit::Refuse(p),
            Err(_) => Admit::Drop,
        }
    }

    /// Refuses a connection: takes its hello (so the client reads the
    /// refusal, not a broken pipe), answers the error, closes.
    pub async fn refuse(&self, stream: UnixStream, max_frame: usize, _permit: OwnedSemaphorePermit) {
        let text = format!("too many connections: this daemon serves at most {} at once; try again", self.max);
        let mut conn = Connection::accepted(stream, max_frame, REFUSE_TIMEOUT);
        conn.refuse(KilnError::Unavailable(text), REFUSE_TIMEOUT).await;
    }
}
