//! The records the store keeps: nodes, their ports and port groups (bonds),
//! and per-node history.
//!
//! These are plain data. They carry the vocabulary of the domain (provision
//! and power states, driver kinds) because that is what is stored, but no
//! behaviour: which transitions are allowed lives in `kiln-actors`' FSM, and
//! how a BMC is spoken to lives in `kiln-drivers`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// When something happened, in UTC.
pub type Timestamp = DateTime<Utc>;

/// The identity of a node: a UUID that can never be mistaken for a port's or
/// a job's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub Uuid);

impl NodeId {
    /// A new time-ordered (version 7) UUID: nodes created together sit
    /// together in the store's indexes (the uuid key and every table keyed by
    /// node), so a million inserts append at the right edge of each B-tree
    /// instead of touching a random page each. Random (version 4) ids made
    /// creating a million nodes cost 15 times what 100,000 cost once the
    /// indexes outgrew the page cache.
    pub fn new() -> Self {
        NodeId(Uuid::now_v7())
    }
}

impl Default for NodeId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for NodeId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(NodeId)
    }
}

/// The identity of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PortId(pub Uuid);

impl PortId {
    pub fn new() -> Self {
        PortId(Uuid::new_v4())
    }
}

impl Default for PortId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for PortId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(PortId)
    }
}

/// The identity of a port group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PortGroupId(pub Uuid);

impl PortGroupId {
    pub fn new() -> Self {
        PortGroupId(Uuid::new_v4())
    }
}

impl Default for PortGroupId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for PortGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for PortGroupId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(PortGroupId)
    }
}

/// Declares a string-valued enum: `as_str`, `Display`, `FromStr`, `ALL`, and
/// serde as the same strings, so the database, the JSON output and the CLI
/// all spell a value one way.
///
/// Every path in the expansion is absolute, so any module or crate can
/// declare such an enum without importing what the macro happens to use
/// (the caller needs `serde` among its dependencies). Other crates call it
/// as `kiln_store::string_enum!` (the actors' metrics labels do).
#[macro_export]
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::records::UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::records::UnknownValue {
                        what: $what,
                        value: s.to_string(),
                        allowed: vec![$($text),+],
                    }),
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

/// A string that names none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{value}' (expected one of: {})", allowed.join(", "))]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub allowed: Vec<&'static str>,
}

string_enum!(
    /// Ironic's provision states (docs/state-machine.md).
    ProvisionState, "provision state" {
        Enroll => "enroll",
        Manageable => "manageable",
        Available => "available",
        Active => "active",
        Error => "error",
        Rescue => "rescue",
        Verifying => "verifying",
        Deploying => "deploying",
        Cleaning => "cleaning",
        Inspecting => "inspecting",
        Adopting => "adopting",
        Rescuing => "rescuing",
        Unrescuing => "unrescuing",
        Deleting => "deleting",
        Servicing => "servicing",
        WaitCallBack => "wait call-back",
        CleanWait => "clean wait",
        InspectWait => "inspect wait",
        RescueWait => "rescue wait",
        ServiceWait => "service wait",
        DeployHold => "deploy hold",
        CleanHold => "clean hold",
        ServiceHold => "service hold",
        DeployFailed => "deploy failed",
        CleanFailed => "clean failed",
        InspectFailed => "inspect failed",
        RescueFailed => "rescue failed",
        UnrescueFailed => "unrescue failed",
        AdoptFailed => "adopt failed",
        ServiceFailed => "service failed",
    }
);

string_enum!(
    /// A node's power state as recorded (`power on` / `power off`, as Ironic).
    PowerState, "power state" {
        On => "power on",
        Off => "power off",
    }
);

string_enum!(
    /// The device a node boots from.
    BootDevice, "boot device" {
        Pxe => "pxe",
        Disk => "disk",
        Cdrom => "cdrom",
        Bios => "bios",
    }
);

string_enum!(
    /// Which driver talks to the node's BMC. The names are those of
    /// `kiln_drivers::Kind`, the one list of drivers; this crate cannot
    /// depend on that one, so a test in `bin/cli.rs` checks the two agree.
    DriverKind, "driver" {
        Fake => "fake",
        Redfish => "redfish",
        Ipmi => "ipmi",
    }
);

string_enum!(
    /// How a node's Redfish BMC was found to take credentials: a session's
    /// token, or HTTP basic auth on every request ([`BmcProfile`]).
    BmcAuth, "BMC auth mode" {
        Basic => "basic",
        Session => "session",
    }
);

/// What kiln learned about a node's BMC by talking to it, so that it never
/// has to find out again: which Redfish authentication works and whether
/// the service serves sessions at all, which IPMI cipher suite it accepts.
/// A field is `None` when nothing was learned of it (another driver, or a
/// setting in `driver_info` that decides it). Learned on first contact,
/// stored with the node, cleared when the node's BMC settings change or by
/// `kiln node set --reset-bmc-profile`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcProfile {
    pub redfish_auth: Option<BmcAuth>,
    /// Whether the Redfish service opened a session when asked (false: it
    /// advertised none, or refused the login although the password is right).
    pub redfish_sessions: Option<bool>,
    pub ipmi_cipher_suite: Option<u8>,
    /// When it was learned.
    pub learned_at: Timestamp,
}

/// A callback kiln awaits from a node's booted system (a ramdisk, an
/// installer's last step): the one-time token it must present, and since
/// when the node waits. Set when a task that asked for a callback starts,
/// restamped when the node enters its wait state, and gone once the node
/// leaves it (`kiln node callback`, a wait timeout, an abort).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackWait {
    pub token: String,
    pub since: Timestamp,
}

impl fmt::Debug for CallbackWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a credential: a log line never carries it.
        f.debug_struct("CallbackWait").field("token", &MASK).field("since", &self.since).finish()
    }
}

impl BmcProfile {
    /// The same facts, whenever learned.
    pub fn same_facts(&self, other: &BmcProfile) -> bool {
        self.redfish_auth == other.redfish_auth
            && self.redfish_sessions == other.redfish_sessions
            && self.ipmi_cipher_suite == other.ipmi_cipher_suite
    }
}

string_enum!(
    /// How a port group bonds its ports: the Linux bonding driver's mode
    /// names (`mode=` of `bonding.ko`), which Ironic's port groups use too.
    BondMode, "bond mode" {
        BalanceRr => "balance-rr",
        ActiveBackup => "active-backup",
        BalanceXor => "balance-xor",
        Broadcast => "broadcast",
        Ieee8023ad => "802.3ad",
        BalanceTlb => "balance-tlb",
        BalanceAlb => "balance-alb",
    }
);

impl BondMode {
    /// The mode of a group created without one (Ironic's
    /// `default_portgroup_mode`).
    pub const DEFAULT: BondMode = BondMode::ActiveBackup;
}

/// Who holds a node exclusively: the purpose of the running task and when it
/// started. Persisted so that a restart can see which nodes were mid-task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub purpose: String,
    pub since: Timestamp,
}

/// A JSON object, as a node's `extra` and `instance_info` hold (Ironic's
/// free-form fields: any JSON value under each key).
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Serde for a field holding JSON values (`serde_json::Value` inside): as
/// itself to a self-describing format (JSON: `--json`, the HTTP API), as
/// one string of JSON text to a binary one. bincode (the admin protocol)
/// cannot decode a `Value`, whose shape is only known by looking at it.
/// Use with `#[serde(with = "kiln_store::json_in_binary")]`.
pub mod json_in_binary {
    use serde::de::{DeserializeOwned, Error as _};
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            value.serialize(s)
        } else {
            serde_json::to_string(value).map_err(S::Error::custom)?.serialize(s)
        }
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        if d.is_human_readable() {
            T::deserialize(d)
        } else {
            let text = String::deserialize(d)?;
            serde_json::from_str(&text).map_err(D::Error::custom)
        }
    }
}

/// A node as stored (docs/state-machine.md's field list).
///
/// `driver_info` holds the BMC password in clear: it must be stored to be
/// used. Everything that shows a node to a person or a log goes through a
/// masking view in `kiln-actors`, never through this struct's `Debug`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub uuid: NodeId,
    pub name: String,
    pub driver: DriverKind,
    pub driver_info: BTreeMap<String, String>,
    pub properties: BTreeMap<String, String>,
    pub provision_state: ProvisionState,
    pub target_provision_state: Option<ProvisionState>,
    pub power_state: Option<PowerState>,
    pub target_power_state: Option<PowerState>,
    pub boot_device: Option<BootDevice>,
    pub maintenance: bool,
    pub maintenance_reason: Option<String>,
    pub fault: Option<String>,
    pub last_error: Option<String>,
    pub reservation: Option<Reservation>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The BMC: when it last answered kiln, as of the node's last commit
    /// (a call that succeeds updates it in memory; it is stored with the
    /// next change of the node, and always when the BMC is found
    /// unreachable, so the mark says how long it has been silent).
    pub bmc_last_contact: Option<Timestamp>,
    /// Set when a call found the BMC unreachable (no connection, refused,
    /// no answer to the IPMI probe): since when. Cleared by one success.
    pub bmc_unreachable_since: Option<Timestamp>,
    /// The last time the BMC confirmed the node's power state (a read, or
    /// a power action reported done), as of the node's last commit.
    pub power_verified_at: Option<Timestamp>,
    /// What was learned about the BMC ([`BmcProfile`]); `None` until then.
    pub bmc_profile: Option<BmcProfile>,
    /// Free-form data the operator keeps with the node (Ironic's `extra`).
    #[serde(default, with = "json_in_binary")]
    pub extra: JsonObject,
    /// What the node is deployed with (Ironic's `instance_info`); kiln reads
    /// `image_url`: set, a Redfish deploy boots that image from virtual media.
    #[serde(default, with = "json_in_binary")]
    pub instance_info: JsonObject,
    /// The callback the node waits for, if any. Boxed: few nodes wait.
    pub callback: Option<Box<CallbackWait>>,
}

/// Keys of `driver_info` whose values are secrets and are never shown.
pub const SECRET_KEYS: &[&str] = &["password"];

/// The masked form of a secret, as every output shows it.
pub const MASK: &str = "******";

/// `driver_info` with every secret replaced by [`MASK`].
pub fn masked_driver_info(info: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut shown = info.clone();
    mask_driver_info(&mut shown);
    shown
}

/// Replaces every secret of `info` by [`MASK`], in place: for a copy that
/// is being made anyway (a node's view), so the map is not built twice.
pub fn mask_driver_info(info: &mut BTreeMap<String, String>) {
    for (_, secret) in info.iter_mut().filter(|(k, _)| SECRET_KEYS.contains(&k.as_str())) {
        *secret = MASK.to_string();
    }
}

impl fmt::Debug for NodeRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRecord")
            .field("uuid", &self.uuid)
            .field("name", &self.name)
            .field("driver", &self.driver)
            .field("driver_info", &masked_driver_info(&self.driver_info))
            .field("provision_state", &self.provision_state)
            .field("target_provision_state", &self.target_provision_state)
            .field("power_state", &self.power_state)
            .field("maintenance", &self.maintenance)
            .field("reservation", &self.reservation)
            .field("last_error", &self.last_error)
            .field("bmc_unreachable_since", &self.bmc_unreachable_since)
            .finish_non_exhaustive()
    }
}

impl NodeRecord {
    /// A new node in `enroll`, as `node create` makes it.
    pub fn enroll(name: String, driver: DriverKind, now: Timestamp) -> Self {
        NodeRecord {
            uuid: NodeId::new(),
            name,
            driver,
            driver_info: BTreeMap::new(),
            properties: BTreeMap::new(),
            provision_state: ProvisionState::Enroll,
            target_provision_state: None,
            power_state: None,
            target_power_state: None,
            boot_device: None,
            maintenance: false,
            maintenance_reason: None,
            fault: None,
            last_error: None,
            reservation: None,
            created_at: now,
            updated_at: now,
            bmc_last_contact: None,
            bmc_unreachable_since: None,
            power_verified_at: None,
            bmc_profile: None,
            extra: JsonObject::new(),
            instance_info: JsonObject::new(),
            callback: None,
        }
    }
}

/// A network port of a node; its MAC address is unique across the site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRecord {
    pub uuid: PortId,
    /// Lower-case, colon-separated MAC address.
    pub address: String,
    pub node: NodeId,
    /// The port group (bond) the port is a member of, always one of the
    /// same node's.
    pub portgroup: Option<PortGroupId>,
    pub created_at: Timestamp,
}

/// A port group: ports of one node bonded together (Ironic's portgroup).
/// Its members are the ports whose `portgroup` names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortGroupRecord {
    pub uuid: PortGroupId,
    /// Unique across the site, like a node's.
    pub name: String,
    pub node: NodeId,
    /// The bond's own MAC address, when it has a fixed one; unique among
    /// port groups. Lower-case, colon-separated.
    pub address: Option<String>,
    pub mode: BondMode,
    pub created_at: Timestamp,
}

/// One line of a node's history: a transition, a power or boot change, or an
/// error, in the order they were committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub node: NodeId,
    pub at: Timestamp,
    /// What happened: an FSM event (`deploy`, `done`, `fail`), or an action
    /// (`power on`, `boot device`, `maintenance`, `recover`).
    pub event: String,
    pub from_state: ProvisionState,
    pub to_state: ProvisionState,
    /// The error, for entries that record a failure.
    pub error: Option<String>,
}

/// One event of the site's event stream, as the store keeps it so that its
/// serial survives a restart and a consumer can replay what it missed. The
/// store does not know the event's shape: `body` is its encoding, written
/// and read by the actors (compact: a busy site writes an event for every
/// start and end of every operation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// Site-wide, increasing, never reused.
    pub serial: u64,
    pub body: Vec<u8>,
}

/// Parses and normalises a MAC address (`AA-bb:cc...` forms) to lower-case,
/// colon-separated form.
pub fn normalize_mac(text: &str) -> Result<String, InvalidMac> {
    let hex: String = text.chars().filter(|c| !matches!(c, ':' | '-' | '.')).collect();
    let well_formed = hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) && text.len() <= 17;
    if !well_formed {
        return Err(InvalidMac(text.to_string()));
    }
    let lower = hex.to_ascii_lowercase();
    let pairs: Vec<&str> = (0..6).map(|i| &lower[2 * i..2 * i + 2]).collect();
    Ok(pairs.join(":"))
}

/// A string that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a MAC address (expected six hex pairs, e.g. 52:54:00:12:34:56)")]
pub struct InvalidMac(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in ProvisionState::ALL {
            assert_eq!(s.as_str().parse::<ProvisionState>().unwrap(), *s);
        }
        let err = "deployed".parse::<ProvisionState>().unwrap_err();
        assert!(err.to_string().contains("unknown provision state 'deployed'"));
    }

    #[test]
    fn macs_are_normalised_and_garbage_refused() {
        assert_eq!(normalize_mac("52-54-00-AB-cd-01").unwrap(), "52:54:00:ab:cd:01");
        assert!(normalize_mac("52:54:00:ab:cd").is_err());
        assert!(normalize_mac("zz:54:00:ab:cd:01").is_err());
    }

    #[test]
    fn masking_replaces_the_secrets_and_keeps_the_rest() {
        let info: BTreeMap<String, String> = [("address", "10.0.0.9"), ("password", "hunter2"), ("username", "admin")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut in_place = info.clone();
        mask_driver_info(&mut in_place);
        assert_eq!(in_place, masked_driver_info(&info));
        assert_eq!(in_place["password"], MASK);
        assert_eq!(in_place["address"], "10.0.0.9");
        assert_eq!(in_place["username"], "admin");
        assert_eq!(info["password"], "hunter2", "the original is left as it was");
    }

    #[test]
    fn debug_masks_the_password() {
        let mut n = NodeRecord::enroll("n1".into(), DriverKind::Fake, Utc::now());
        n.driver_info.insert("password".into(), "hunter2".into());
        let shown = format!("{n:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains(MASK));
    }
}
