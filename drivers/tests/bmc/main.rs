//! Integration tests of the real drivers against real, independent peers on
//! loopback: the sushy-tools Redfish emulator, the pyghmi IPMI simulator with
//! `ipmitool` as the client, and hand-written misbehaving HTTP servers for
//! the failures a real emulator will not produce on demand.
//!
//! One test binary (modules below) so the peers are started once for all
//! tests: see `peers` for how they are started and stopped.

mod ipmi;
mod peers;
mod redfish;
mod redfish_session;
mod responder;

use std::collections::BTreeMap;

/// `driver_info` from pairs.
pub fn info(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
