//! kiln-drivers: how kiln talks to a node's BMC.
//!
//! A driver is a [`Bmc`]: a handful of async calls (read and set power, set
//! and read the boot device, inspect, and virtual media, which only Redfish
//! serves: the others keep the trait's refusing default). Each kind implements it — [`fake`] (in
//! memory), [`redfish`] (HTTP/JSON with reqwest) and [`ipmi`] (the `ipmitool`
//! program, as OpenStack Ironic drives it) — and [`connect`] builds the right
//! one from a node's `driver_info` after [`validate`] has checked that info.
//!
//! This crate knows BMCs, not the provisioning state machine and not actors:
//! serialising calls to one BMC is the job of the driver actor in
//! `kiln-actors`, which owns one `Bmc` per [`endpoint`]. What is a property of
//! the BMC itself stays here: per-request timeouts, bounded retries, the
//! spacing IPMI BMCs need between commands, waiting for a power change to be
//! reported, and turning every failure into a typed [`DriverError`] that
//! never carries a password.

pub mod error;
pub mod fake;
pub mod info;
pub mod ipmi;
pub mod profile;
pub mod redfish;
mod secret;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use error::{DriverError, InvalidDriverInfo};
pub use info::validate;
pub use profile::{Profile, RedfishAuth};

/// A boxed future, so that `Bmc` can be used as a trait object.
pub type BmcFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DriverError>> + Send + 'a>>;

/// A power state as a BMC reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Power {
    On,
    Off,
}

/// A power action (`kiln node power on|off|soft-off|reboot`).
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

/// What an inspection found: the facts that become node properties, and
/// the network interfaces that become the node's ports (as Ironic's
/// inspection creates them, so that an operator need not type MACs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspection {
    pub facts: Facts,
    /// Each with a valid MAC address, in the order the BMC listed them.
    pub nics: Vec<Nic>,
}

/// A network interface a BMC reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    /// The BMC's name for it (a Redfish `Id`), for logs: ports keep no name.
    pub name: String,
    /// Lower-case, colon-separated: the form the store keeps ports in.
    pub mac: String,
}

impl Nic {
    /// A NIC whose MAC `mac` is a MAC address in any usual form
    /// (`AA-BB-..`, `aa:bb:..`, `aabb.ccdd.eeff`); `None` otherwise, and for
    /// the all-zero address, which BMCs report for a NIC they know nothing
    /// of (no port may be made of it: every such NIC would claim the same).
    ///
    /// The store has the same rule in `kiln_store::normalize_mac`; this
    /// crate does not depend on the store, so it keeps its own.
    pub fn new(name: impl Into<String>, mac: &str) -> Option<Nic> {
        let hex: String = mac.trim().chars().filter(|c| !matches!(c, ':' | '-' | '.')).collect();
        let well_formed = hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) && mac.trim().len() <= 17;
        if !well_formed || hex.chars().all(|c| c == '0') {
            return None;
        }
        let lower = hex.to_ascii_lowercase();
        let pairs: Vec<&str> = (0..6).map(|i| &lower[2 * i..2 * i + 2]).collect();
        Some(Nic { name: name.into(), mac: pairs.join(":") })
    }
}

/// The calls kiln makes to a BMC. Implementations may be called from any
/// thread, and several calls at once: a driver actor runs up to the site's
/// `bmc_max_concurrent` calls to one endpoint together (each node's own
/// calls one at a time). What must not overlap on a BMC (an IPMI session's
/// commands) the implementation serialises itself.
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
    /// Hardware facts and network interfaces the BMC exposes (either may
    /// be empty: IPMI has no standard list of NICs).
    fn inspect(&self) -> BmcFuture<'_, Inspection>;
    /// What this client has learned about the BMC's quirks so far
    /// ([`profile`]); read after each call, it costs nothing.
    fn profile(&self) -> Profile {
        Profile::default()
    }
    /// Ejects whatever the system's virtual CD holds; nothing to do when it
    /// holds nothing. Virtual media is a Redfish service: the default
    /// refuses, naming the driver.
    fn eject_media(&self) -> BmcFuture<'_, ()> {
        Box::pin(async { Err(no_virtual_media(self.kind(), "eject virtual media")) })
    }
    /// Inserts the image at `image_url` into the system's virtual CD (the
    /// BMC fetches it from there); the CD must be empty (see
    /// [`Bmc::eject_media`]). Refused by default, as `eject_media`.
    fn insert_media(&self, image_url: &str) -> BmcFuture<'_, ()> {
        let _ = image_url;
        Box::pin(async { Err(no_virtual_media(self.kind(), "insert virtual media")) })
    }
    /// The driver's name, for errors.
    fn kind(&self) -> Kind;
}

fn no_virtual_media(kind: Kind, operation: &str) -> DriverError {
    DriverError::NotSupported {
        driver: kind.as_str().to_string(),
        operation: format!("{operation} (virtual media needs the redfish driver)"),
    }
}

/// The driver kinds this crate can build: the one list of driver names.
///
/// Everything else that names drivers is derived from it: [`connect`],
/// [`endpoint`], [`validate`] and its errors here, and the CLI's help. The
/// store spells the same names in its `DriverKind` (it cannot depend on this
/// crate); a test of the `kiln` package (`bin/cli.rs`) checks that the two
/// lists agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Fake,
    Redfish,
    Ipmi,
}

impl Kind {
    /// Every kind, in the order the CLI and error messages list them.
    pub const ALL: &'static [Kind] = &[Kind::Fake, Kind::Redfish, Kind::Ipmi];

    /// The driver's name, as `--driver`, the store and the JSON output spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Fake => "fake",
            Kind::Redfish => "redfish",
            Kind::Ipmi => "ipmi",
        }
    }

    /// The kind named `name`, if this crate builds one.
    pub fn named(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == name)
    }

    /// Every name, separated by `separator` (`"fake, redfish, ipmi"`).
    pub fn names(separator: &str) -> String {
        Kind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(separator)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds the BMC client for a node, after validating its `driver_info`.
pub fn connect(kind: &str, info: &BTreeMap<String, String>) -> Result<Arc<dyn Bmc>, DriverError> {
    connect_at(kind, info, &EndpointState::default())
}

/// What the clients of one BMC endpoint ([`host_port`]) share whatever
/// their other settings: IPMI's command spacing (`min_command_interval` is
/// a property of the BMC, not of one node's settings).
#[derive(Clone, Default)]
pub struct EndpointState {
    ipmi_pacer: ipmi::Pacer,
}

/// [`connect`], sharing `shared` with the other clients of the endpoint.
pub fn connect_at(
    kind: &str,
    info: &BTreeMap<String, String>,
    shared: &EndpointState,
) -> Result<Arc<dyn Bmc>, DriverError> {
    connect_known(kind, info, shared, &Profile::default())
}

/// [`connect_at`] for a BMC whose quirks were learned before (`known`, as
/// an earlier client's [`Bmc::profile`] told them): the client uses them
/// from its first call instead of finding them out again.
pub fn connect_known(
    kind: &str,
    info: &BTreeMap<String, String>,
    shared: &EndpointState,
    known: &Profile,
) -> Result<Arc<dyn Bmc>, DriverError> {
    validate(kind, info)?;
    match Kind::named(kind) {
        Some(Kind::Fake) => Ok(Arc::new(fake::FakeBmc::from_info(info)?)),
        Some(Kind::Redfish) => Ok(Arc::new(redfish::RedfishBmc::from_info(info)?.knowing(known))),
        Some(Kind::Ipmi) => {
            Ok(Arc::new(ipmi::IpmiBmc::from_info(info)?.with_pacer(shared.ipmi_pacer.clone()).knowing(known)))
        }
        None => Err(DriverError::Unsupported(kind.to_string())),
    }
}

/// The network endpoint of a node's BMC, `host:port`, as one limit of calls
/// in flight applies to it: every node naming it counts, whatever its other
/// settings (a Redfish service's systems, a password). Redfish without a
/// port is 80 or 443 by its scheme, IPMI 623. `None` for the fake driver.
pub fn host_port(kind: &str, info: &BTreeMap<String, String>) -> Option<String> {
    let address = info.get("address")?;
    match Kind::named(kind)? {
        Kind::Fake => None,
        Kind::Redfish => {
            let (scheme, rest) = address.split_once("://")?;
            let authority = rest.split('/').next()?.to_ascii_lowercase();
            let has_port =
                authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !authority.ends_with(']');
            if has_port {
                Some(authority)
            } else {
                Some(format!("{authority}:{}", if scheme == "https" { 443 } else { 80 }))
            }
        }
        Kind::Ipmi => {
            Some(format!("{}:{}", address.to_ascii_lowercase(), info.get("port").map_or("623", String::as_str)))
        }
    }
}

/// The endpoint that identifies a node's BMC: nodes with the same endpoint
/// share one driver actor (their commands to that BMC are serialised).
/// `None` means the node has a BMC of its own (the fake driver).
///
/// The driver actor holds the one [`Bmc`] built from the first node's
/// `driver_info`, so the endpoint must name everything that makes two BMC
/// clients different: for IPMI the host and port (623 when unset), for
/// Redfish the service address and the `system_id` (one Redfish service, a
/// chassis manager or the emulator, may serve many systems, each a node).
/// Credentials are not part of it and never appear in it.
pub fn endpoint(kind: &str, info: &BTreeMap<String, String>) -> Option<String> {
    let address = info.get("address")?;
    match Kind::named(kind) {
        Some(Kind::Fake) => None,
        Some(Kind::Redfish) => {
            let system = info.get("system_id").map(String::as_str).unwrap_or("");
            Some(format!("redfish:{}:{system}", address.trim_end_matches('/')))
        }
        Some(Kind::Ipmi) => {
            let port = info.get("port").map(String::as_str).unwrap_or("623");
            Some(format!("ipmi:{address}:{port}"))
        }
        None => {
            let port = info.get("port").map(String::as_str).unwrap_or("");
            Some(format!("{kind}:{address}:{port}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn endpoints_name_the_bmc_and_never_the_password() {
        let a = info(&[("address", "h"), ("password", "hunter22")]);
        assert_eq!(endpoint("ipmi", &a).unwrap(), "ipmi:h:623");
        assert_eq!(endpoint("ipmi", &info(&[("address", "h"), ("port", "623")])), endpoint("ipmi", &a));
        let r1 = info(&[("address", "https://bmc/"), ("system_id", "/redfish/v1/Systems/1")]);
        let r2 = info(&[("address", "https://bmc"), ("system_id", "/redfish/v1/Systems/2")]);
        assert_ne!(endpoint("redfish", &r1), endpoint("redfish", &r2));
        assert_eq!(endpoint("fake", &a), None);
        for kind in Kind::ALL {
            assert!(!endpoint(kind.as_str(), &a).unwrap_or_default().contains("hunter22"));
        }
    }

    #[test]
    fn host_port_names_the_network_endpoint_whatever_the_system() {
        let r1 = info(&[("address", "http://127.0.0.1:8000/"), ("system_id", "/redfish/v1/Systems/1")]);
        let r2 = info(&[("address", "http://127.0.0.1:8000"), ("system_id", "/redfish/v1/Systems/2")]);
        assert_eq!(host_port("redfish", &r1).unwrap(), "127.0.0.1:8000");
        assert_eq!(host_port("redfish", &r1), host_port("redfish", &r2));
        assert_eq!(host_port("redfish", &info(&[("address", "https://bmc")])).unwrap(), "bmc:443");
        assert_eq!(host_port("redfish", &info(&[("address", "http://[::1]")])).unwrap(), "[::1]:80");
        assert_eq!(host_port("ipmi", &info(&[("address", "h"), ("password", "x")])).unwrap(), "h:623");
        assert_eq!(host_port("ipmi", &info(&[("address", "h"), ("port", "6230")])).unwrap(), "h:6230");
        assert_eq!(host_port("fake", &info(&[("address", "h")])), None);
    }

    #[test]
    fn kinds_are_named_by_their_names_only() {
        for kind in Kind::ALL {
            assert_eq!(Kind::named(kind.as_str()), Some(*kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(Kind::named("Fake"), None);
        assert_eq!(Kind::names(", "), "fake, redfish, ipmi");
    }

    #[test]
    fn nic_macs_are_normalised_and_garbage_left_out() {
        let nic = Nic::new("NIC.1", " 52-54-00-AB-cd-01 ").unwrap();
        assert_eq!((nic.name.as_str(), nic.mac.as_str()), ("NIC.1", "52:54:00:ab:cd:01"));
        assert_eq!(Nic::new("a", "5254.00ab.cd01").unwrap().mac, "52:54:00:ab:cd:01");
        for bad in ["", "52:54:00:ab:cd", "zz:54:00:ab:cd:01", "52:54:00:ab:cd:01:02", "00:00:00:00:00:00"] {
            assert_eq!(Nic::new("a", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn connect_builds_every_kind() {
        connect("fake", &info(&[])).unwrap();
        connect("redfish", &info(&[("address", "http://127.0.0.1:1")])).unwrap();
        connect("ipmi", &info(&[("address", "127.0.0.1")])).unwrap();
        let err = connect("redfish", &info(&[])).err().unwrap();
        assert!(matches!(err, DriverError::Invalid(_)), "{err}");
    }
}
