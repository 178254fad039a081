//! kiln-drivers: how kiln talks to a node's BMC.
//!
//! A driver is a [`Bmc`]: a handful of async calls (read and set power, set
//! and read the boot device, inspect). Each kind (`fake`, later `redfish` and
//! `ipmi`) implements it; [`connect`] builds the right one from a node's
//! `driver_info` after [`validate`] has checked that info.
//!
//! This crate knows BMCs, not the provisioning state machine and not actors:
//! serialising and spacing the calls to one BMC is the job of the driver
//! actor in `kiln-actors`, which owns one `Bmc` per endpoint.

pub mod error;
pub mod fake;
pub mod info;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use error::{DriverError, InvalidDriverInfo};
pub use info::validate;

/// A boxed future, so that `Bmc` can be used as a trait object.
pub type BmcFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DriverError>> + Send + 'a>>;

/// A power state as a BMC reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Power {
    On,
    Off,
}

/// A power action (spec section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    On,
    Off,
    SoftOff,
    Reboot,
}

impl PowerAction {
    /// The state the node is in once the action has completed.
    pub fn target(self) -> Power {
        match self {
            PowerAction::On | PowerAction::Reboot => Power::On,
            PowerAction::Off | PowerAction::SoftOff => Power::Off,
        }
    }
}

/// A boot device a BMC can be told to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boot {
    Pxe,
    Disk,
    Cdrom,
    Bios,
}

/// Hardware facts found by inspection, as node properties.
pub type Facts = BTreeMap<String, String>;

/// The calls kiln makes to a BMC. Implementations may be called from any
/// thread, but a driver actor never runs two calls on one BMC at once.
pub trait Bmc: Send + Sync + 'static {
    /// The node's power state as the BMC reports it.
    fn get_power_state(&self) -> BmcFuture<'_, Power>;
    /// Performs a power action and returns once the BMC reports the target
    /// state (or fails with a timeout).
    fn set_power_state(&self, action: PowerAction) -> BmcFuture<'_, ()>;
    /// Sets the boot device, once or persistently.
    fn set_boot_device(&self, device: Boot, persistent: bool) -> BmcFuture<'_, ()>;
    /// The boot device the BMC will use, if it says.
    fn get_boot_device(&self) -> BmcFuture<'_, Option<Boot>>;
    /// Hardware facts the BMC exposes (may be empty).
    fn inspect(&self) -> BmcFuture<'_, Facts>;
}

/// The driver kinds this crate can build.
pub const KINDS: &[&str] = &["fake", "redfish", "ipmi"];

/// Builds the BMC client for a node, after validating its `driver_info`.
pub fn connect(kind: &str, info: &BTreeMap<String, String>) -> Result<Arc<dyn Bmc>, DriverError> {
    validate(kind, info)?;
    match kind {
        "fake" => Ok(Arc::new(fake::FakeBmc::from_info(info)?)),
        other => Err(DriverError::Unsupported(other.to_string())),
    }
}

/// The endpoint that identifies a node's BMC: nodes with the same endpoint
/// share one driver actor (their commands to that BMC are serialised).
/// `None` means the node has a BMC of its own (the fake driver).
pub fn endpoint(kind: &str, info: &BTreeMap<String, String>) -> Option<String> {
    match kind {
        "fake" => None,
        _ => info.get("address").map(|a| {
            let port = info.get("port").map(String::as_str).unwrap_or("");
            format!("{kind}:{a}:{port}")
        }),
    }
}
