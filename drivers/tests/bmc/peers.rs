//! The peers the driver tests talk to, started once per test binary (see
//! `tests/common/peer_start.rs` for how each is started and stopped).
//!
//! Every peer binds a free port found at start (`peer_start::free_tcp_port`),
//! so this binary, the integration tests and a second checkout's tests can
//! all run at once on one machine.

use std::sync::OnceLock;

#[path = "../../../tests/common/peer_start.rs"]
mod peer_start;

pub use peer_start::Peer;

pub const IPMI_BMCS: u16 = 8;

/// The Redfish emulator with six systems, node-1..node-6: each test that
/// changes a system has one of its own.
pub fn redfish() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::redfish(&PEER, 6, false)
}

/// A Redfish emulator with one system, to find it without `system_id`.
pub fn redfish_single() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::redfish(&PEER, 1, false)
}

/// A Redfish emulator serving HTTPS with a certificate from a private CA
/// (`dir/ca.pem`).
pub fn redfish_tls() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::redfish(&PEER, 1, true)
}

/// `IPMI_BMCS` simulated IPMI BMCs from `port`: each test that
/// changes a BMC has one of its own.
pub fn ipmi() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::ipmi(&PEER, IPMI_BMCS)
}

/// A loopback UDP port with nothing bound to it (bound to port 0, then let go).
pub fn closed_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP port");
    s.local_addr().expect("its address").port()
}
