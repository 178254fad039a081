//! The peers the driver tests talk to, started once per test binary (see
//! `tests/common/peer_start.rs` for how each is started and stopped).
//!
//! The ports (Redfish 8101-8103, IPMI 9701-9708) are chosen apart from the
//! scripts' defaults, so that a developer's own peers are left alone, and
//! apart from the integration tests' (`tests/it/peers.rs`), so that both
//! test binaries can run at once.

use std::sync::OnceLock;

#[path = "../../../tests/common/peer_start.rs"]
mod peer_start;

pub use peer_start::Peer;

pub const REDFISH_PORT: u16 = 8101;
pub const REDFISH_SINGLE_PORT: u16 = 8102;
pub const REDFISH_TLS_PORT: u16 = 8103;
pub const IPMI_FIRST_PORT: u16 = 9701;
pub const IPMI_BMCS: u16 = 8;

/// The Redfish emulator with six systems, node-1..node-6: each test that
/// changes a system has one of its own.
pub fn redfish() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::redfish_on(&PEER, 6, REDFISH_PORT, false)
}

/// A Redfish emulator with one system, to find it without `system_id`.
pub fn redfish_single() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::redfish_on(&PEER, 1, REDFISH_SINGLE_PORT, false)
}

/// A Redfish emulator serving HTTPS with a certificate from a private CA
/// (`dir/ca.pem`).
pub fn redfish_tls() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::redfish_on(&PEER, 1, REDFISH_TLS_PORT, true)
}

/// `IPMI_BMCS` simulated IPMI BMCs from `IPMI_FIRST_PORT`: each test that
/// changes a BMC has one of its own.
pub fn ipmi() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::ipmi_from(&PEER, IPMI_BMCS, IPMI_FIRST_PORT)
}
