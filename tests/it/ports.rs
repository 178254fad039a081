//! Nodes as Ironic operators expect them: `node show` with the node's ports
//! and port groups, port groups (bonds) of one node's ports, and `node
//! validate` per driver interface, also while a task holds the node. All
//! through the real CLI against the real daemon.

use serde_json::{Value, json};

use crate::harness::{Daemon, Events};

const M1: &str = "52:54:00:00:01:01";
const M2: &str = "52:54:00:00:01:02";
const M3: &str = "52:54:00:00:02:01";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A refusal through the CLI: its exit code, kind and message.
fn refused(d: &Daemon, args: &[&str], code: i32, kind: &str, says: &str) {
    let out = d.json_code(args, code);
    assert_eq!(out["error"]["kind"], kind, "kiln {args:?}: {out}");
    let message = out["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "kiln {args:?}: '{message}' does not say '{says}'");
}

/// Ports and port groups as the CLI lists them.
fn inventory(d: &Daemon) -> (Value, Value) {
    (d.json(&["port", "list"]), d.json(&["port", "group", "list"]))
}

#[test]
fn node_show_lists_the_nodes_ports_and_groups_beside_every_node_field() {
    let d = Daemon::start(2, &["--no-periodic"]);
    // Without ports: the node object as before, with two empty lists.
    let before = d.json(&["node", "list", "demo1"])[0].clone();
    let bare = d.node("demo1");
    for (key, value) in before.as_object().unwrap() {
        assert_eq!(&bare[key], value, "node show changed the field {key}");
    }
    assert_eq!(bare["ports"], json!([]));
    assert_eq!(bare["portgroups"], json!([]));
    let keys: Vec<&String> = bare.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), before.as_object().unwrap().len() + 2, "{keys:?}");

    for (mac, node) in [(M2, "demo1"), (M1, "demo1"), (M3, "demo2")] {
        d.json(&["port", "create", mac, "--node", node]);
    }
    d.json(&["port", "group", "create", "bond0", "--node", "demo1", "--mode", "802.3ad", "--port", M1]);
    let shown = d.node("demo1");
    let ports = shown["ports"].as_array().unwrap();
    let addresses: Vec<&str> = ports.iter().map(|p| p["address"].as_str().unwrap()).collect();
    assert_eq!(addresses, [M1, M2], "only demo1's ports, by address");
    assert_eq!(ports[0]["node"], "demo1");
    assert_eq!(ports[0]["node_uuid"], shown["uuid"]);
    assert_eq!(ports[0]["portgroup"], "bond0");
    assert_eq!(ports[1]["portgroup"], Value::Null);
    let groups = shown["portgroups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["name"], "bond0");
    assert_eq!(groups[0]["mode"], "802.3ad");
    assert_eq!(groups[0]["ports"], json!([M1]));
    assert_eq!(ports[0]["portgroup_uuid"], groups[0]["uuid"]);
    assert_eq!(d.node("demo2")["portgroups"], json!([]));

    // The table: the node's fields, then a line per port and per group.
    let table = stdout(&d.cli(&["node", "show", "demo1"]));
    assert!(table.lines().any(|l| l.starts_with("provision_state") && l.ends_with("enroll")), "{table}");
    assert!(
        table.contains(&format!("ports                   {M1} (in bond0)\n                        {M2}\n")),
        "{table}"
    );
    assert!(table.contains(&format!("portgroups              bond0 (802.3ad): {M1}\n")), "{table}");
    let none = stdout(&d.cli(&["node", "show", "demo2"]));
    assert!(none.contains("portgroups              -"), "{none}");
}

#[test]
fn port_groups_bond_ports_of_one_node_and_refusals_change_nothing() {
    let d = Daemon::start(2, &["--no-periodic"]);
    for (mac, node) in [(M1, "demo1"), (M2, "demo1"), (M3, "demo2")] {
        d.json(&["port", "create", mac, "--node", node]);
    }
    let created = d.json(&[
        "port",
        "group",
        "create",
        "bond0",
        "--node",
        "demo1",
        "--address",
        "52-54-00-00-01-01",
        "--port",
        M1,
        "--port",
        "52:54:00:00:01:02",
    ]);
    assert_eq!(created["name"], "bond0");
    assert_eq!(created["node"], "demo1");
    assert_eq!(created["mode"], "active-backup", "the default mode, as Ironic's");
    assert_eq!(created["address"], M1, "normalised");
    assert_eq!(created["ports"], json!([M1, M2]));
    assert_eq!(d.json(&["port", "group", "show", "bond0"]), created);
    assert_eq!(d.json(&["port", "group", "show", created["uuid"].as_str().unwrap()]), created);
    let table = stdout(&d.cli(&["port", "group", "list"]));
    assert!(table.starts_with("NAME   NODE   MODE           ADDRESS            PORTS"), "{table}");
    assert!(table.contains(&format!("bond0  demo1  active-backup  {M1}  {M1},{M2}")), "{table}");

    // Refused, each with its reason, and nothing changes.
    let before = inventory(&d);
    let refusals: &[(&[&str], i32, &str, &str)] = &[
        (&["port", "group", "create", "bond1", "--node", "demo1", "--port", M3], 2, "invalid_input", "node demo2's"),
        (
            &["port", "group", "create", "bond0", "--node", "demo2", "--port", M3],
            1,
            "conflict",
            "'bond0' is already in use",
        ),
        (
            &["port", "group", "create", "bond1", "--node", "demo2", "--mode", "lacp"],
            2,
            "invalid_input",
            "unknown bond mode 'lacp'",
        ),
        (
            &["port", "group", "create", "bond1", "--node", "demo1", "--port", M1],
            1,
            "conflict",
            "already in port group bond0",
        ),
        (
            &["port", "group", "create", "bond1", "--node", "demo2", "--port", "52:54:00:00:09:09"],
            2,
            "not_found",
            "52:54:00:00:09:09",
        ),
        (
            &["port", "group", "create", "bond1", "--node", "demo2", "--port", M3, "--port", M3],
            2,
            "invalid_input",
            "named twice",
        ),
        (&["port", "group", "create", "bond1", "--node", "nope"], 2, "not_found", "no such node: nope"),
        (&["port", "group", "create", "bond 1", "--node", "demo2"], 2, "invalid_input", "port group name 'bond 1'"),
        (&["port", "group", "create", "bond1", "--node", "demo2", "--address", "zz"], 2, "invalid_input", "not a MAC"),
        (
            &["port", "group", "create", "bond1", "--node", "demo2", "--address", M1],
            1,
            "conflict",
            "address '52:54:00:00:01:01'",
        ),
        (&["port", "set", M3, "--group", "bond0"], 2, "invalid_input", "a port group bonds ports of one node"),
        (&["port", "set", M3, "--group", "bond9"], 2, "not_found", "no such port group: bond9"),
        (&["port", "set", "52:54:00:00:09:09", "--group", "bond0"], 2, "not_found", "52:54:00:00:09:09"),
        (&["port", "group", "show", "bond9"], 2, "not_found", "bond9"),
        (&["port", "group", "delete", "bond9"], 2, "not_found", "bond9"),
        (&["port", "group", "list", "--node", "nope"], 2, "not_found", "nope"),
    ];
    for (args, code, kind, says) in refusals {
        refused(&d, args, *code, kind, says);
    }
    assert_eq!(inventory(&d), before);
    // The command line wants one of --group and --no-group.
    assert_eq!(d.cli(&["port", "set", M2]).status.code(), Some(2));
    assert_eq!(d.cli(&["port", "set", M2, "--group", "bond0", "--no-group"]).status.code(), Some(2));

    // A port leaves its group and joins another of its node's.
    let left = d.json(&["port", "set", M2, "--no-group"]);
    assert_eq!((left["address"].as_str(), &left["portgroup"]), (Some(M2), &Value::Null));
    assert_eq!(d.json(&["port", "group", "show", "bond0"])["ports"], json!([M1]));
    d.json(&["port", "group", "create", "bond1", "--node", "demo1", "--mode", "balance-alb"]);
    let moved = d.json(&["port", "set", M1, "--group", "bond1"]);
    assert_eq!(moved["portgroup"], "bond1");
    assert_eq!(d.json(&["port", "group", "show", "bond0"])["ports"], json!([]));
    let listed = d.json(&["port", "group", "list", "--node", "demo1"]);
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bond0", "bond1"]);
    assert_eq!(d.json(&["port", "group", "list", "--node", "demo2"]), json!([]));

    // Deleting a group leaves its ports, in no group.
    let gone = d.json(&["port", "group", "delete", "bond1"]);
    assert_eq!(gone["ports"], json!([M1]));
    let ports = d.json(&["port", "list", "--node", "demo1"]);
    assert_eq!(ports.as_array().unwrap().len(), 2);
    assert!(ports.as_array().unwrap().iter().all(|p| p["portgroup"].is_null()), "{ports}");

    // Deleting a node deletes its groups with its ports; others stay.
    d.json(&["port", "group", "create", "bond2", "--node", "demo2", "--port", M3]);
    d.json(&["node", "delete", "demo2"]);
    let groups = d.json(&["port", "group", "list"]);
    let names: Vec<&str> = groups.as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bond0"]);
    assert_eq!(d.json(&["port", "list"]).as_array().unwrap().len(), 2);
    // The name is free again, and survives a restart with its member.
    d.json(&["port", "create", M3, "--node", "demo1"]);
    d.json(&["port", "group", "create", "bond2", "--node", "demo1", "--port", M3]);
    let mut d = d;
    d.restart();
    assert_eq!(d.json(&["port", "group", "show", "bond2"])["ports"], json!([M3]));
}

/// `node validate --json` as {node: {interface: result}}.
fn results(v: &Value) -> std::collections::BTreeMap<String, Vec<(String, bool)>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let interfaces = n["interfaces"].as_object().unwrap();
            let results = interfaces.iter().map(|(k, c)| (k.clone(), c["result"].as_bool().unwrap())).collect();
            (n["node"].as_str().unwrap().to_string(), results)
        })
        .collect()
}

fn all(passed: bool) -> Vec<(String, bool)> {
    ["boot", "deploy", "inspect", "management", "power"].iter().map(|i| (i.to_string(), passed)).collect()
}

#[test]
fn validate_checks_every_interface_of_every_node() {
    let d = Daemon::start(2, &["--no-periodic"]);
    // No port: network boot, and so deploy, cannot work.
    let out = d.json_code(&["node", "validate", "demo[1-2]"], 1);
    let demo1 = &out[0];
    assert_eq!(demo1["node"], "demo1");
    assert_eq!(demo1["error"], Value::Null);
    assert_eq!(demo1["interfaces"]["power"], json!({"result": true, "reason": null}));
    assert_eq!(demo1["interfaces"]["boot"]["result"], false);
    let reason = demo1["interfaces"]["boot"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("node demo1 has no port") && reason.contains("kiln port create MAC --node demo1"),
        "{reason}"
    );
    let table = stdout(&d.cli(&["node", "validate", "demo1"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NODE   INTERFACE   RESULT  REASON"), "{table}");
    assert!(lines[1].starts_with("demo1  boot        False   node demo1 has no port"), "{table}");
    assert_eq!(lines[5], "demo1  power       True    -", "{table}");
    assert_eq!(lines.len(), 6, "{table}");

    // With a port, every interface passes; maintenance and the provision
    // state change nothing (as in Ironic); exit 0 only now.
    d.json(&["port", "create", M1, "--node", "demo1"]);
    d.json(&["node", "maintenance", "on", "demo1", "--reason", "cabling"]);
    d.json(&["node", "manage", "demo1", "--wait"]);
    let out = d.json(&["node", "validate", "demo1"]);
    assert_eq!(results(&out)["demo1"], all(true));
    assert!(d.cli(&["node", "validate", "demo1"]).status.success());
    let out = d.json_code(&["node", "validate", "demo[1-2]"], 1);
    assert_eq!(results(&out)["demo1"], all(true));
    assert_eq!(results(&out)["demo2"][0], ("boot".to_string(), false));

    // A Redfish node whose CA file cannot be read: power and management
    // fail, as the driver would when it built its client.
    let ca = d.dir.path().join("missing-ca.pem");
    d.json(&[
        "node",
        "create",
        "rf1",
        "--driver",
        "redfish",
        "--address",
        "https://127.0.0.1:9",
        "--mac",
        M2,
        "--driver-info",
        &format!("ca_file={}", ca.display()),
    ]);
    let out = d.json_code(&["node", "validate", "rf1"], 1);
    assert_eq!(results(&out)["rf1"], all(false));
    let power = out[0]["interfaces"]["power"]["reason"].as_str().unwrap();
    assert!(power.contains("driver_info.ca_file") && power.contains("cannot read it"), "{power}");
    // A file that is not a certificate bundle is no better; without a
    // ca_file (the system's roots) it passes.
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let out = d.json_code(&["node", "validate", "rf1"], 1);
    let power = out[0]["interfaces"]["power"]["reason"].as_str().unwrap();
    assert!(power.contains("driver_info.ca_file") && power.contains("no certificate"), "{power}");
    d.json(&["node", "set", "rf1", "--unset-driver-info", "ca_file"]);
    assert_eq!(results(&d.json(&["node", "validate", "rf1"]))["rf1"], all(true));

    // Unknown nodes and bad sets are bad input, as everywhere.
    refused(&d, &["node", "validate", "nope"], 2, "not_found", "nope");
    refused(&d, &["node", "validate", "demo["], 2, "invalid_input", "demo[");
}

#[test]
fn validate_answers_while_a_task_holds_the_node_and_takes_no_lock() {
    let d = Daemon::start(1, &["--no-periodic"]);
    d.json(&["port", "create", M1, "--node", "demo1"]);
    d.json(&["node", "set", "demo1", "--driver-info", "latency_ms=60000"]);
    let mut events = Events::follow(&d);
    d.json(&["node", "power", "on", "demo1"]);
    events.started("demo1");

    // Shared: answered while the power task holds the node (lock_wait is
    // 0, so anything that wanted the lock would be refused at once).
    let out = d.json(&["node", "validate", "demo1"]);
    assert_eq!(results(&out)["demo1"], all(true));
    let n = d.node("demo1");
    assert_eq!(n["reservation"]["purpose"], "power on", "validate left the holder in place");
    // The node is still held by its task, not by the validation.
    let locked = d.json_code(&["node", "manage", "demo1", "--wait"], 1);
    assert_eq!(locked[0]["error"]["kind"], "node_locked");
    assert!(locked[0]["error"]["message"].as_str().unwrap().contains("locked by 'power on'"), "{locked}");
    // And again, many at once, all answered mid-task.
    let socket = d.socket.clone();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || crate::harness::cli_at(&socket, &["node", "validate", "demo1"]))
        })
        .collect();
    for r in runs {
        assert!(r.join().unwrap().status.success());
    }
    assert_eq!(d.node("demo1")["reservation"]["purpose"], "power on");
}
