//! Node actors: one per node, the single writer of that node's record.
//!
//! The actor owns the record, the reservation (who holds the node
//! exclusively) and the node's place in the FSM. Shared requests
//! ([`ShowNode`], [`ReadPower`], [`ValidateNode`]) are answered at once,
//! even mid-task; exclusive ones ([`RunOp`]) run one at a time, later ones
//! waiting in FIFO order for at most `lock_wait`. The mailbox is the lock: no mutex guards a
//! node anywhere.
//!
//! The logic is a plain [`core::NodeCore`] (inputs in, [`effects::Effect`]s
//! out, no actix, no I/O, time from the site clock); [`NodeActor`] is the
//! shell that carries the effects out and feeds their results back.

mod actor;
pub mod connect;
pub mod core;
pub mod effects;
pub(crate) mod gauged;
pub mod plan;
pub mod rest;
mod shutdown;
pub mod upkeep;
pub mod validate;

use std::collections::BTreeMap;

use actix::prelude::*;
use kiln_drivers::PowerAction;
use kiln_store::{BootDevice, PowerState};
use serde::{Deserialize, Serialize};

#[cfg(test)]
pub use actor::CrashForTest;
pub use actor::{NodeActor, NodeEnv};
pub use shutdown::{Abandon, HandOver};
pub use validate::{DriverInterface, InterfaceCheck, InterfaceChecks, NodeValidation, ValidateNode};

use crate::KilnError;
use crate::fsm::Verb;
use crate::view::NodeView;

/// An exclusive operation on a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// An FSM verb (`deploy`, `manage`, ...).
    Verb(Verb),
    /// A power action.
    Power(PowerAction),
    /// Set the boot device.
    BootDevice { device: BootDevice, persistent: bool },
    /// Maintenance on (with a reason) or off.
    Maintenance { on: bool, reason: Option<String> },
    /// Change `driver_info`, `properties`, `extra` and `instance_info`.
    Update(NodeUpdate),
    /// Remove the node (and its ports and history).
    Delete,
    /// Take the node exclusively and release it, changing nothing: measures
    /// the lock itself (`kiln bench lock`) and waits out a running task.
    Noop,
    /// The booted system's callback to a node in a wait state
    /// (`kiln node callback`): with the right one-time token, the node goes
    /// on (`failure: None`) or fails with the message it reported.
    Callback { token: CallbackToken, failure: Option<String> },
}

/// A callback token as a booted system presents it: `Debug` masks it, so
/// a request or an operation printed for a log cannot carry it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallbackToken(pub String);

impl std::fmt::Debug for CallbackToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(kiln_store::MASK)
    }
}

impl Op {
    /// The reservation purpose shown while the operation runs.
    pub fn purpose(&self) -> String {
        match self {
            Op::Verb(v) => v.as_str().to_string(),
            Op::Power(a) => format!("power {}", power_action_name(*a)),
            Op::BootDevice { .. } => "boot device".into(),
            Op::Maintenance { on: true, .. } => "maintenance on".into(),
            Op::Maintenance { on: false, .. } => "maintenance off".into(),
            Op::Update(_) => "update".into(),
            Op::Delete => "delete".into(),
            Op::Noop => "no-op".into(),
            Op::Callback { .. } => "callback".into(),
        }
    }
}

/// The CLI's name for a power action.
pub fn power_action_name(a: PowerAction) -> &'static str {
    match a {
        PowerAction::On => "on",
        PowerAction::Off => "off",
        PowerAction::SoftOff => "soft-off",
        PowerAction::Reboot => "reboot",
    }
}

/// A word that names no power action.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown power action '{0}' (expected on, off, soft-off, reboot)")]
pub struct UnknownPowerAction(pub String);

/// Parses the CLI's name for a power action.
pub fn parse_power_action(s: &str) -> Result<PowerAction, UnknownPowerAction> {
    match s {
        "on" => Ok(PowerAction::On),
        "off" => Ok(PowerAction::Off),
        "soft-off" => Ok(PowerAction::SoftOff),
        "reboot" => Ok(PowerAction::Reboot),
        _ => Err(UnknownPowerAction(s.to_string())),
    }
}

/// Changes to a node's settings: `Some` sets a key, `None` removes it.
/// `extra` and `instance_info` hold any JSON value under a key. `name`
/// renames the node (unique across the site); `driver` changes its driver
/// (only where nothing runs on it: see [`DRIVER_CHANGE_STATES`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub driver: Option<kiln_store::DriverKind>,
    pub driver_info: BTreeMap<String, Option<String>>,
    pub properties: BTreeMap<String, Option<String>>,
    /// Forget what was learned about the BMC (`--reset-bmc-profile`): the
    /// next call finds it out again.
    pub reset_bmc_profile: bool,
    #[serde(default, with = "kiln_store::json_in_binary")]
    pub extra: BTreeMap<String, Option<serde_json::Value>>,
    #[serde(default, with = "kiln_store::json_in_binary")]
    pub instance_info: BTreeMap<String, Option<serde_json::Value>>,
}

impl NodeUpdate {
    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.driver.is_none()
            && self.driver_info.is_empty()
            && self.properties.is_empty()
            && self.extra.is_empty()
            && self.instance_info.is_empty()
            && !self.reset_bmc_profile
    }
}

/// The states a node's driver may be changed in (or any state but a
/// working one in maintenance), as Ironic allows its interfaces to change:
/// no task of the old driver is under way or left to undo.
pub const DRIVER_CHANGE_STATES: &[kiln_store::ProvisionState] = &[
    kiln_store::ProvisionState::Enroll,
    kiln_store::ProvisionState::Inspecting,
    kiln_store::ProvisionState::InspectWait,
    kiln_store::ProvisionState::Manageable,
    kiln_store::ProvisionState::Available,
];

/// Asks a node actor to run an exclusive operation. With `wait` the answer
/// comes when the operation has ended (a task: when the node has settled);
/// without, as soon as its first change is committed.
#[derive(Debug, Message)]
#[rtype(result = "Result<NodeView, KilnError>")]
pub struct RunOp {
    pub op: Op,
    pub wait: bool,
}

/// [`RunOp`] on behalf of the caller's span (a job's): the node's task span
/// is its child, so the task's log lines carry the job's id too. A message
/// between actors carries no span by itself. `holder`: who the operation
/// runs for, so that it may run on a node that holder holds ([`HoldNode`]).
#[derive(Debug, Message)]
#[rtype(result = "Result<NodeView, KilnError>")]
pub struct RunOpIn {
    pub run: RunOp,
    pub parent: tracing::Span,
    pub holder: Option<String>,
}

/// Holds the node for `holder` across several operations, as an Ironic
/// conductor keeps one task's lock over several calls: once it is held
/// (answered with the node), exclusive operations run only when they carry
/// the same holder ([`RunOpIn::holder`]); anyone else's wait `lock_wait` or
/// fail with `NodeLocked` ("held by ..."), and periodic upkeep skips the
/// node, until [`ReleaseNode`]. Taking a hold waits for the node like any
/// exclusive request. A hold lives in memory: a restart ends it.
#[derive(Debug, Message)]
#[rtype(result = "Result<NodeView, KilnError>")]
pub struct HoldNode {
    pub holder: String,
}

/// Ends `holder`'s hold of the node; answers whether it held it.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct ReleaseNode {
    pub holder: String,
}

/// Asks a node actor for its node as committed (shared: answered at once).
#[derive(Debug, Message)]
#[rtype(result = "NodeView")]
pub struct ShowNode;

/// Asks a node actor to read the power state from the BMC now (shared: no
/// reservation is taken and nothing is written).
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<PowerState>, KilnError>")]
pub struct ReadPower;
