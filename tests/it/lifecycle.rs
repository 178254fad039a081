//! Fake nodes through the whole provisioning life cycle from the CLI.

use crate::harness::{Daemon, states};

#[test]
fn sixty_four_demo_nodes_go_from_enroll_to_active_and_back() {
    let d = Daemon::start(64, &[]);
    let all = "demo[1-64]";
    assert!(states(&d).values().all(|s| s == "enroll"));
    assert_eq!(states(&d).len(), 64);
    // The whole list comes in node-set order, as the same nodes named by a set.
    let names = |args: &[&str]| -> Vec<String> {
        d.json(args).as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect()
    };
    let expected: Vec<String> = (1..=64).map(|i| format!("demo{i}")).collect();
    assert_eq!(names(&["node", "list"]), expected);
    assert_eq!(names(&["node", "list", all]), expected);

    for verb in ["manage", "provide"] {
        let out = d.json(&["node", verb, all, "--wait"]);
        assert_eq!(out.as_array().unwrap().len(), 64);
        assert!(out.as_array().unwrap().iter().all(|o| o["ok"] == true), "{verb}: {out}");
    }
    assert!(states(&d).values().all(|s| s == "available"));

    d.json(&["node", "deploy", "demo[1-32]", "--wait"]);
    let s = states(&d);
    assert!((1..=32).all(|i| s[&format!("demo{i}")] == "active"));
    assert!((33..=64).all(|i| s[&format!("demo{i}")] == "available"));
    let n = d.node("demo7");
    assert_eq!(n["power_state"], "power on");
    assert_eq!(n["boot_device"], "pxe");
    assert_eq!(n["target_provision_state"], serde_json::Value::Null);
    assert_eq!(n["reservation"], serde_json::Value::Null);

    d.json(&["node", "undeploy", "demo[1-16]", "--wait"]);
    let s = states(&d);
    assert!((1..=16).all(|i| s[&format!("demo{i}")] == "available"));
    assert_eq!(d.node("demo3")["power_state"], "power off");

    // The history tells the whole story, in order.
    let history = d.json(&["node", "history", "demo3"]);
    let steps: Vec<(String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["event"].as_str().unwrap().into(), h["to_state"].as_str().unwrap().into()))
        .collect();
    let expected = [
        ("manage", "verifying"),
        ("done", "manageable"),
        ("provide", "cleaning"),
        ("done", "available"),
        ("deploy", "deploying"),
        ("done", "active"),
        ("delete", "deleting"),
        ("clean", "cleaning"),
        ("done", "available"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(steps, expected);
}

#[test]
fn power_boot_device_and_maintenance_act_on_node_sets() {
    let d = Daemon::start(4, &[]);
    d.json(&["node", "power", "on", "demo[1-3]", "--wait"]);
    let s = d.json(&["node", "power", "status", "demo[1-4]"]);
    let powers: Vec<&str> = s.as_array().unwrap().iter().map(|o| o["power_state"].as_str().unwrap()).collect();
    assert_eq!(powers, ["power on", "power on", "power on", "power off"]);
    assert_eq!(d.node("demo1")["target_power_state"], serde_json::Value::Null);

    d.json(&["node", "power", "soft-off", "demo1", "--wait"]);
    assert_eq!(d.node("demo1")["power_state"], "power off");
    d.json(&["node", "power", "reboot", "demo1", "--wait"]);
    assert_eq!(d.node("demo1")["power_state"], "power on");

    d.json(&["node", "boot-device", "set", "demo[2,4]", "disk", "--persistent"]);
    assert_eq!(d.node("demo2")["boot_device"], "disk");
    assert_eq!(d.node("demo3")["boot_device"], serde_json::Value::Null);

    d.json(&["node", "maintenance", "on", "demo[1-2]", "--reason", "disk swap"]);
    let n = d.node("demo2");
    assert_eq!(n["maintenance"], true);
    assert_eq!(n["maintenance_reason"], "disk swap");
    let listed = d.json(&["node", "list", "--maintenance"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    // Operator actions are allowed in maintenance, as in Ironic.
    d.json(&["node", "manage", "demo1", "--wait"]);
    d.json(&["node", "maintenance", "off", "demo[1-2]"]);
    assert_eq!(d.node("demo2")["maintenance"], false);
    assert_eq!(d.node("demo2")["maintenance_reason"], serde_json::Value::Null);
}

#[test]
fn nodes_and_ports_are_created_listed_and_deleted_with_passwords_masked() {
    let d = Daemon::start(0, &[]);
    let pw = d.dir.path().join("pw");
    std::fs::write(&pw, "s3cret-Pa55\n").unwrap();
    let created = d.json(&[
        "node",
        "create",
        "rack1-n01",
        "--driver",
        "fake",
        "--username",
        "admin",
        "--password-file",
        pw.to_str().unwrap(),
        "--property",
        "cpus=64",
        "--mac",
        "52:54:00:AA:BB:01",
    ]);
    assert_eq!(created[0]["driver_info"]["password"], "******");
    let shown = d.node("rack1-n01");
    assert_eq!(shown["driver_info"]["password"], "******");
    assert_eq!(shown["driver_info"]["username"], "admin");
    assert_eq!(shown["properties"]["cpus"], "64");
    let table = d.cli(&["node", "show", "rack1-n01"]);
    let list = d.cli(&["--json", "node", "list"]);
    for out in [&table, &list] {
        assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
    }
    // By uuid as well as by name.
    let uuid = shown["uuid"].as_str().unwrap().to_string();
    assert_eq!(d.node(&uuid)["name"], "rack1-n01");

    let ports = d.json(&["port", "list", "--node", "rack1-n01"]);
    assert_eq!(ports[0]["address"], "52:54:00:aa:bb:01");
    d.json(&["port", "create", "52:54:00:aa:bb:02", "--node", "rack1-n01"]);
    assert_eq!(d.json(&["port", "list"]).as_array().unwrap().len(), 2);
    d.json(&["port", "delete", "52:54:00:AA:BB:02"]);
    assert_eq!(d.json(&["port", "list"]).as_array().unwrap().len(), 1);

    d.json(&["node", "set", "rack1-n01", "--property", "memory_mb=1024", "--unset-property", "cpus"]);
    let n = d.node("rack1-n01");
    assert_eq!(n["properties"]["memory_mb"], "1024");
    assert!(n["properties"].get("cpus").is_none());

    d.json(&["node", "delete", "rack1-n01"]);
    assert_eq!(d.json(&["node", "list"]).as_array().unwrap().len(), 0);
    assert_eq!(d.json(&["port", "list"]).as_array().unwrap().len(), 0);
}

#[test]
fn import_enrols_every_node_of_a_yaml_file() {
    let d = Daemon::start(0, &[]);
    let file = d.dir.path().join("nodes.yaml");
    std::fs::write(
        &file,
        "- name: n1\n  driver: fake\n  properties: {cpus: '8'}\n  ports: ['52:54:00:00:00:01']\n\
         - name: n2\n  driver: fake\n",
    )
    .unwrap();
    let out = d.json(&["node", "import", file.to_str().unwrap()]);
    assert_eq!(out.as_array().unwrap().len(), 2);
    assert_eq!(d.node("n1")["properties"]["cpus"], "8");
    assert_eq!(d.json(&["port", "list", "--node", "n1"]).as_array().unwrap().len(), 1);
}

#[test]
fn events_follow_shows_start_then_end_in_order() {
    let d = Daemon::start(2, &[]);
    let mut follower = std::process::Command::new(crate::harness::KILN)
        .args(["--socket", d.socket.to_str().unwrap(), "--json", "events", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follower.stdout.take().unwrap()));
    // Everything after the marker is live.
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("caught_up"), "{first}");
    d.json(&["node", "manage", "demo1", "--wait"]);
    let mut seen = Vec::new();
    for line in lines.by_ref().take(2) {
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        seen.push((e["kind"].as_str().unwrap().to_string(), e["provision_state"].as_str().unwrap().to_string()));
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(seen, [("start".to_string(), "verifying".to_string()), ("end".to_string(), "manageable".to_string())]);
}

#[test]
fn json_and_socket_may_come_before_or_after_the_subcommand() {
    let d = Daemon::start(2, &[]);
    let after = |args: &[&str]| {
        let out = d.cli(args);
        assert!(out.status.success(), "kiln {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("kiln {args:?} printed no JSON ({e})"))
    };
    assert_eq!(after(&["node", "show", "demo1", "--json"]), d.node("demo1"));
    assert_eq!(after(&["node", "list", "--json"]), d.json(&["node", "list"]));
    assert_eq!(after(&["status", "--json"])["nodes"], 2);
    let socket = d.socket.to_str().unwrap();
    let out = std::process::Command::new(crate::harness::KILN)
        .args(["node", "show", "demo2", "--socket", socket, "--json"])
        .env_remove("KILN_SOCKET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), d.node("demo2"));
    // After `--`, it belongs to the command run on the nodes.
    let out = after(&["exec", "-w", "demo1", "--json", "--worker", "exec", "--", "echo", "--json"]);
    assert_eq!(out[0]["stdout"], "--json\n", "{out}");
}

#[test]
fn extra_and_instance_info_are_set_and_unset_kept_across_a_restart_and_bad_input_changes_nothing() {
    let mut d = Daemon::start(1, &[]);
    let set = d.json(&[
        "node",
        "set",
        "demo1",
        "--extra",
        "rack=r7",
        "--extra",
        "slot=4",
        "--extra",
        r#"owner={"team": "infra", "tags": ["a", "b"]}"#,
        "--instance-info",
        "image_url=http://10.0.0.2/a.iso",
        "--instance-info",
        "root_gb=10",
    ]);
    assert_eq!(
        set["extra"],
        serde_json::json!({"rack": "r7", "slot": 4, "owner": {"team": "infra", "tags": ["a", "b"]}})
    );
    assert_eq!(set["instance_info"], serde_json::json!({"image_url": "http://10.0.0.2/a.iso", "root_gb": 10}));

    d.json(&[
        "node",
        "set",
        "demo1",
        "--unset-extra",
        "slot",
        "--unset-instance-info",
        "root_gb",
        "--extra",
        "rack=\"5\"",
    ]);
    let n = d.node("demo1");
    assert_eq!(n["extra"], serde_json::json!({"rack": "5", "owner": {"team": "infra", "tags": ["a", "b"]}}));
    assert_eq!(n["instance_info"], serde_json::json!({"image_url": "http://10.0.0.2/a.iso"}));
    let table = String::from_utf8_lossy(&d.cli(&["node", "show", "demo1"]).stdout).to_string();
    assert!(table.contains("image_url=http://10.0.0.2/a.iso"), "{table}");
    assert!(table.contains(r#"owner={"tags":["a","b"],"team":"infra"}"#), "{table}");

    // Bad input: refused, nothing changed.
    for bad in [&["--extra", "novalue"][..], &["--instance-info", "=1"], &[]] {
        let mut args = vec!["node", "set", "demo1"];
        args.extend_from_slice(bad);
        let out = d.cli(&args);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    }
    assert_eq!(d.node("demo1")["extra"], n["extra"]);

    d.restart();
    let after = d.node("demo1");
    assert_eq!(after["extra"], n["extra"]);
    assert_eq!(after["instance_info"], n["instance_info"]);
}

#[test]
fn node_set_renames_and_changes_the_driver_only_where_ironic_allows() {
    let d = Daemon::start(2, &[]);
    let uuid = d.node("demo1")["uuid"].clone();
    d.json(&["node", "set", "demo1", "--name", "web1"]);
    assert_eq!(d.node("web1")["uuid"], uuid);
    assert_eq!(d.cli(&["node", "show", "demo1"]).status.code(), Some(2));
    // The old name is free again; a taken one is refused.
    d.json(&["node", "set", "demo2", "--name", "demo1"]);
    let taken = d.cli(&["node", "set", "web1", "--name", "demo1"]);
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already in use"), "{taken:?}");
    assert_eq!(d.node("web1")["uuid"], uuid);
    // Node sets see the new names.
    let listed = d.json(&["node", "list", "web[1]"]);
    assert_eq!(listed[0]["uuid"], uuid);

    d.json(&["node", "set", "web1", "--driver", "ipmi", "--driver-info", "address=127.0.0.1"]);
    assert_eq!(d.node("web1")["driver"], "ipmi");
    d.json(&["node", "manage", "demo1", "--wait"]);
    d.json(&["node", "provide", "demo1", "--wait"]);
    d.json(&["node", "deploy", "demo1", "--wait"]);
    let refused =
        d.cli(&["node", "set", "demo1", "--driver", "redfish", "--driver-info", "address=http://127.0.0.1:1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot change the driver"), "{refused:?}");
    assert_eq!(d.node("demo1")["driver"], "fake");
}
