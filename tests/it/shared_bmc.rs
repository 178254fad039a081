//! One BMC endpoint, many nodes (issue #25): calls to one `host:port` are
//! limited to `bmc_max_concurrent` in flight (default 4) across every node
//! naming it, whatever their other settings. Here 16 nodes on one Redfish
//! emulator, each with a timeout of its own (so each has a driver actor of
//! its own, as nodes with different passwords would), are read at once
//! through the fault proxy, which counts the requests it serves at once.

use std::time::Duration;

use crate::bmc::Site;
use crate::faultproxy::{Fault, FaultProxy};
use crate::peers::{self, PASSWORD};

fn read_all(site: &Site, nodes: &str) {
    let out = site.ok(&["node", "power", "status", nodes]);
    let results = out.as_array().unwrap();
    assert_eq!(results.len(), 16, "{out}");
    assert!(results.iter().all(|r| r["error"].is_null()), "{out}");
}

fn nodes_behind(site: &Site, proxy: &FaultProxy, peer: &peers::Peer, prefix: &str) -> String {
    for i in 1..=16 {
        let timeout = format!("timeout={}", 20 + i);
        site.redfish(&format!("{prefix}{i}"), &proxy.url(), &peer.system_id(1 + i % 4), PASSWORD, &[&timeout]);
    }
    format!("{prefix}[1-16]")
}

#[test]
fn calls_to_one_bmc_endpoint_are_limited_together_whatever_the_nodes_settings() {
    let peer = peers::redfish_for_limits();
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], peer.port));
    // Each request held a while, so that the calls overlap for sure.
    let proxy = FaultProxy::start(upstream);
    proxy.set(Fault::Latency(Duration::from_millis(150)));
    let site = Site::start_with(0, &["--no-periodic"]);
    let nodes = nodes_behind(&site, &proxy, peer, "shared");
    read_all(&site, &nodes);
    assert_eq!(proxy.most_in_flight(), 4, "bmc_max_concurrent's default: 4 at once, not 1 and not 16");
    site.finish(&["admin:password"]);

    // The limit is the site's: 2.
    let proxy = FaultProxy::start(upstream);
    proxy.set(Fault::Latency(Duration::from_millis(150)));
    let site = Site::start_with(0, &["--no-periodic", "--set", "bmc_max_concurrent=2"]);
    let nodes = nodes_behind(&site, &proxy, peer, "two");
    read_all(&site, &nodes);
    assert_eq!(proxy.most_in_flight(), 2);
    site.finish(&["admin:password"]);
}
