//! What a client learned about its BMC's quirks, handed in and out as a
//! plain value.
//!
//! Why: a BMC's quirks are found out by trying, and trying costs round
//! trips. A Redfish service may advertise sessions and refuse them (the
//! driver then reads the service root and fails a login before it settles
//! on basic auth); an IPMI BMC may refuse cipher suite 17 (the driver tries
//! it, then 3). Found once, they are worth keeping: a client reports what it
//! learned ([`crate::Bmc::profile`]), the caller stores it with the node, and
//! hands it back when it builds the next client ([`crate::connect_known`]),
//! which then goes straight to what works, after a restart too. The profile
//! holds only what was *learned*: a setting in `driver_info` that decides a
//! question (`auth_method = basic`, `cipher_suite`) is not learned, and a
//! client given such a setting reports nothing for it.

use serde::{Deserialize, Serialize};

/// How requests to a Redfish service authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedfishAuth {
    /// HTTP basic auth on every request.
    Basic,
    /// One login, then the session's token.
    Session,
}

/// The quirks of one BMC as a client learned them; `None`: not learned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Profile {
    /// The Redfish authentication that works.
    pub redfish_auth: Option<RedfishAuth>,
    /// Whether the Redfish service opens sessions (false: it advertises
    /// none, or refused a login it did not refuse for the credentials).
    pub redfish_sessions: Option<bool>,
    /// The IPMI cipher suite the BMC accepted.
    pub ipmi_cipher_suite: Option<u8>,
}

impl Profile {
    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == Profile::default()
    }
}

/// The cipher suites the IPMI driver tries, in order, when neither
/// `driver_info.cipher_suite` nor a profile names one: 17 (HMAC-SHA256,
/// AES-CBC-128), what current BMCs prefer, then 3 (HMAC-SHA1, AES-CBC-128),
/// what older ones and the pyghmi simulator serve — as bmclib does.
pub const IPMI_CIPHER_SUITES: [u8; 2] = [17, 3];
