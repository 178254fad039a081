//! Inspection records NICs as ports, through the whole daemon: a Redfish
//! node inspected against the sushy-tools emulator gets a port for each of
//! the system's EthernetInterfaces, with the MAC the emulator itself shows
//! (read with `curl`, not through kiln). Inspecting again adds nothing, a
//! MAC another node has already keeps its port there, and a fake node gets
//! no port at all (demo sites stay as they are).

use serde_json::Value;

use crate::bmc::Site;
use crate::peers::{self, PASSWORD, Peer};

/// The MAC addresses of system `node-<i>`'s NICs, as the emulator lists
/// them, lower-case.
fn emulator_macs(peer: &Peer, i: usize) -> Vec<String> {
    let listed = peer.resource(&format!("{}/EthernetInterfaces", peer.system_id(i)));
    let members = listed["Members"].as_array().unwrap_or_else(|| panic!("no Members: {listed}"));
    members
        .iter()
        .map(|m| {
            let nic = peer.resource(m["@odata.id"].as_str().expect("a member link"));
            nic["MACAddress"].as_str().unwrap_or_else(|| panic!("no MACAddress: {nic}")).to_ascii_lowercase()
        })
        .collect()
}

/// The node's ports as (address, uuid), by address.
fn ports_of(site: &Site, node: &str) -> Vec<(String, String)> {
    let ports = site.ok(&["port", "list", "--node", node]);
    let mut found: Vec<(String, String)> = ports
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {ports}"))
        .iter()
        .map(|p| {
            assert_eq!(p["node"], node, "{p}");
            (p["address"].as_str().unwrap().to_string(), p["uuid"].as_str().unwrap().to_string())
        })
        .collect();
    found.sort();
    found
}

fn inspect(site: &Site, node: &str) {
    let results = site.ok(&["node", "inspect", node, "--wait"]);
    assert_eq!(results[0]["ok"], true, "{results}");
    assert_eq!(site.node(node)["provision_state"], "manageable");
}

#[test]
fn inspecting_a_redfish_node_records_its_nics_as_ports_once() {
    // Inspection reads the systems and changes nothing on them: the
    // emulator the other BMC tests share will do.
    let peer = peers::redfish();
    let site = Site::start_with(1, &["--no-periodic"]);
    let timeouts = ["power_timeout=40", "timeout=20"];
    site.redfish("in1", &peer.url(), &peer.system_id(5), PASSWORD, &timeouts);
    site.ok(&["node", "manage", "in1", "--wait"]);
    assert_eq!(ports_of(&site, "in1"), [], "no port before inspection");

    inspect(&site, "in1");
    let macs = emulator_macs(peer, 5);
    assert!(!macs.is_empty(), "the emulator lists no NIC for node-5");
    let ports = ports_of(&site, "in1");
    assert_eq!(ports.iter().map(|(mac, _)| mac.clone()).collect::<Vec<_>>(), macs, "one port per NIC");
    let n = site.node("in1");
    assert_eq!(n["properties"]["manufacturer"], "Sushy Emulator", "the facts too: {n}");

    // Again: the same ports, the same uuids, nothing added.
    inspect(&site, "in1");
    assert_eq!(ports_of(&site, "in1"), ports, "a second inspection keeps the ports there are");

    // A MAC an operator gave another node first stays that node's; the
    // inspection still succeeds.
    let taken = emulator_macs(peer, 6);
    site.ok(&["port", "create", &taken[0], "--node", "demo1"]);
    site.redfish("in2", &peer.url(), &peer.system_id(6), PASSWORD, &timeouts);
    site.ok(&["node", "manage", "in2", "--wait"]);
    inspect(&site, "in2");
    let all = site.ok(&["port", "list"]);
    let owners: Vec<(&str, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["address"] == taken[0].as_str())
        .map(|p| (p["address"].as_str().unwrap(), p["node"].as_str().unwrap()))
        .collect();
    assert_eq!(owners, [(taken[0].as_str(), "demo1")], "{all}");
    let in2: Vec<String> = ports_of(&site, "in2").into_iter().map(|(mac, _)| mac).collect();
    assert_eq!(in2, taken[1..].to_vec(), "only the free MACs are in2's");

    // A fake node reports no NICs: its ports are what the operator made.
    site.ok(&["node", "manage", "demo1", "--wait"]);
    let before = ports_of(&site, "demo1");
    inspect(&site, "demo1");
    assert_eq!(ports_of(&site, "demo1"), before);
    let history: Vec<Value> = site.ok(&["node", "history", "in1"]).as_array().unwrap().clone();
    assert!(history.iter().all(|h| h["error"].is_null()), "{history:?}");
    site.finish(&[]);
}
