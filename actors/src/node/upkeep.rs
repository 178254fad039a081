//! What periodic tasks ask of one node: sync its power state with the BMC,
//! recover it from a power failure, fail it out of a wait state that timed
//! out. Each is a short exclusive task that never waits for the lock: a node
//! that is busy is skipped, and done on a later run (as Ironic's periodic
//! tasks skip reserved nodes).
//!
//! Here are the messages and their handlers, which only hand the request to
//! the core (`core/upkeep.rs` decides).

use std::time::Duration;

use actix::prelude::*;
use kiln_store::PowerState;
use serde::{Deserialize, Serialize};

use super::actor::NodeActor;
use super::core::Input;

/// The fault a node gets when its power state cannot be read.
pub const POWER_FAILURE: &str = "power failure";

/// What a power sync did to one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncOutcome {
    /// Not looked at: in maintenance, in enroll, reserved, or with a power
    /// target.
    Skipped(String),
    InSync,
    /// The record took the BMC's state.
    Updated {
        from: Option<PowerState>,
        to: PowerState,
    },
    /// The BMC was set back to the recorded state.
    Forced {
        to: PowerState,
    },
    /// Not looked at: the BMC was found unreachable and its backoff runs
    /// until `until` (RFC 3339).
    BackedOff {
        until: String,
        /// When the BMC last confirmed the node's power state.
        verified_at: Option<kiln_store::Timestamp>,
    },
    /// The read failed; `maintenance` when this failure put the node there.
    Failed {
        attempts: u32,
        maintenance: bool,
        error: String,
        /// When the BMC last confirmed the node's power state.
        verified_at: Option<kiln_store::Timestamp>,
    },
}

/// Reads the node's power state and reconciles it with the record.
#[derive(Debug, Message)]
#[rtype(result = "SyncOutcome")]
pub struct SyncPower {
    /// Set the BMC to the recorded state instead of recording the BMC's.
    pub force: bool,
    /// Failed reads in a row that put the node in maintenance.
    pub max_retries: u32,
}

/// Takes a node with fault `power failure` out of maintenance once its
/// power state can be read again. Answers whether it did.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct RecoverPowerFailure;

/// Fails a node out of a wait state it has been in longer than that
/// state's timeout (counted from the wait's start when a callback was
/// asked for, else from the node's last change). Answers whether it did.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct ExpireWait {
    pub timeouts: WaitTimeouts,
}

/// How long a node may wait in each wait state before it fails, as
/// Ironic's `deploy_callback_timeout`, `clean_callback_timeout` and
/// `inspect_wait_timeout`; `other` for rescue and service waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeouts {
    pub deploy_callback: Duration,
    pub clean_callback: Duration,
    pub inspect_wait: Duration,
    pub other: Duration,
}

impl WaitTimeouts {
    /// Every wait state with the same timeout.
    pub fn all(timeout: Duration) -> Self {
        WaitTimeouts { deploy_callback: timeout, clean_callback: timeout, inspect_wait: timeout, other: timeout }
    }

    /// The timeout of `state` and the setting that gives it.
    pub fn of(&self, state: kiln_store::ProvisionState) -> (Duration, &'static str) {
        use kiln_store::ProvisionState as S;
        match state {
            S::WaitCallBack => (self.deploy_callback, "deploy_callback_timeout"),
            S::CleanWait => (self.clean_callback, "clean_callback_timeout"),
            S::InspectWait => (self.inspect_wait, "inspect_wait_timeout"),
            _ => (self.other, "wait_timeout"),
        }
    }
}

impl Handler<SyncPower> for NodeActor {
    type Result = ResponseFuture<SyncOutcome>;
    fn handle(&mut self, msg: SyncPower, ctx: &mut Context<Self>) -> Self::Result {
        let SyncPower { force, max_retries } = msg;
        self.ask(|reply| Input::SyncPower { force, max_retries, reply }, SyncOutcome::Skipped("stopped".into()), ctx)
    }
}

impl Handler<RecoverPowerFailure> for NodeActor {
    type Result = ResponseFuture<bool>;
    fn handle(&mut self, _: RecoverPowerFailure, ctx: &mut Context<Self>) -> Self::Result {
        self.ask(|reply| Input::RecoverPowerFailure { reply }, false, ctx)
    }
}

impl Handler<ExpireWait> for NodeActor {
    type Result = ResponseFuture<bool>;
    fn handle(&mut self, msg: ExpireWait, ctx: &mut Context<Self>) -> Self::Result {
        self.ask(|reply| Input::ExpireWait { timeouts: msg.timeouts, reply }, false, ctx)
    }
}
