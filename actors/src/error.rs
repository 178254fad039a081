//! The errors a caller of the site sees, over the admin socket or as an
//! embedding application.
//!
//! They travel over the socket, so they are plain serialisable data rather
//! than wrappers of source errors; each variant is something an operator can
//! act on, and its message names the node and what to do next.

use serde::{Deserialize, Serialize};

/// A request to the site failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KilnError {
    /// No node, port or other object by that name.
    #[error("{0}")]
    NotFound(String),
    /// The node's state does not allow the event.
    #[error("node {node}: cannot {event} in state '{state}' (allowed here: {allowed})")]
    InvalidState { node: String, state: String, event: String, allowed: String },
    /// Another exclusive task holds the node.
    #[error("node {node} is locked by '{holder_purpose}' since {since}; retry when it ends")]
    NodeLocked { node: String, holder_purpose: String, since: String },
    /// A uniqueness rule (name, MAC) was broken.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is malformed or names invalid values.
    #[error("{0}")]
    InvalidInput(String),
    /// The node's BMC failed; the node's `last_error` says the same.
    #[error("node {node}: {message}")]
    Driver { node: String, message: String },
    /// The store could not commit the change; nothing was acknowledged.
    #[error("the store failed: {0}")]
    Store(String),
    /// A part of the site is not running (shutting down, restarting).
    #[error("{0}")]
    Unavailable(String),
    /// The work was canceled before it ran.
    #[error("{0}")]
    Canceled(String),
    /// The job queue is drained: it refuses new jobs, and the admin socket
    /// refuses every other change of nodes and ports and every command on
    /// nodes (the rule is in `Request::drain_refuses`).
    #[error("the job queue is drained: new jobs and changes to nodes are refused until `kiln queue drain off`")]
    Drained,
    /// The job queue holds `max_queued_jobs` jobs that have not ended; a
    /// submission of `adding` more is refused whole.
    #[error(
        "the job queue is full: {unfinished} jobs have not ended and {adding} more would pass max_queued_jobs = \
         {limit}; retry when some have ended, or raise max_queued_jobs"
    )]
    QueueFull { unfinished: usize, adding: usize, limit: usize },
    /// The admin protocol was not followed (version, framing).
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl KilnError {
    /// A stable short name for scripts (`--json` output).
    pub fn kind(&self) -> &'static str {
        match self {
            KilnError::NotFound(_) => "not_found",
            KilnError::InvalidState { .. } => "invalid_state",
            KilnError::NodeLocked { .. } => "node_locked",
            KilnError::Conflict(_) => "conflict",
            KilnError::InvalidInput(_) => "invalid_input",
            KilnError::Driver { .. } => "driver",
            KilnError::Store(_) => "store",
            KilnError::Unavailable(_) => "unavailable",
            KilnError::Canceled(_) => "canceled",
            KilnError::Drained => "drained",
            KilnError::QueueFull { .. } => "queue_full",
            KilnError::Protocol(_) => "protocol",
        }
    }
}

impl From<kiln_store::StoreError> for KilnError {
    fn from(e: kiln_store::StoreError) -> Self {
        use kiln_store::StoreError as E;
        match e {
            E::Conflict(m) => KilnError::Conflict(m),
            E::NotFound(m) => KilnError::NotFound(m),
            E::Closed => KilnError::Unavailable("the store is closed (the site is shutting down)".into()),
            other => KilnError::Store(error_chain(&other)),
        }
    }
}

pub use kiln_store::error::error_chain;
