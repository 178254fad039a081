//! Bad requests get a clear error and change nothing.

use crate::harness::Daemon;

fn error_of(v: &serde_json::Value) -> (String, String) {
    let e = &v["error"];
    (e["kind"].as_str().unwrap().to_string(), e["message"].as_str().unwrap().to_string())
}

#[test]
fn unknown_nodes_invalid_transitions_and_duplicates_are_refused() {
    let d = Daemon::start(3, &[]);
    let before = d.json(&["node", "list"]);

    let (kind, msg) = error_of(&d.json_code(&["node", "show", "nope"], 2));
    assert_eq!(kind, "not_found");
    assert!(msg.contains("nope"), "{msg}");

    // A set naming a missing node acts on none of them.
    let (kind, msg) = error_of(&d.json_code(&["node", "manage", "demo[1-5]"], 2));
    assert_eq!(kind, "not_found");
    assert!(msg.contains("demo[4-5]"), "{msg}");

    let out = d.json_code(&["node", "deploy", "demo1", "--wait"], 1);
    let (kind, msg) = error_of(&out[0]);
    assert_eq!(kind, "invalid_state");
    assert!(msg.contains("'enroll'") && msg.contains("allowed here: manage"), "{msg}");
    assert_eq!(out[0]["provision_state"], "enroll", "the state it was refused in: {out}");

    let (kind, msg) = error_of(&d.json_code(&["node", "create", "demo1", "--driver", "fake"], 1));
    assert_eq!(kind, "conflict");
    assert!(msg.contains("demo1"), "{msg}");

    let (kind, msg) = error_of(&d.json_code(&["node", "create", "x1", "--driver", "magic"], 2));
    assert_eq!(kind, "invalid_input");
    assert!(msg.contains("unknown driver 'magic'"), "{msg}");

    let (kind, msg) = error_of(&d.json_code(&["node", "create", "bad name", "--driver", "fake"], 2));
    assert_eq!(kind, "invalid_input");
    assert!(msg.contains("not valid"), "{msg}");

    let (kind, _) = error_of(&d.json_code(&["node", "create", "r1", "--driver", "redfish"], 2));
    assert_eq!(kind, "invalid_input");

    d.json(&["port", "create", "52:54:00:00:00:01", "--node", "demo1"]);
    let (kind, msg) = error_of(&d.json_code(&["port", "create", "52-54-00-00-00-01", "--node", "demo2"], 1));
    assert_eq!(kind, "conflict");
    assert!(msg.contains("52:54:00:00:00:01"), "{msg}");
    let (kind, _) = error_of(&d.json_code(&["port", "create", "zz:zz", "--node", "demo2"], 2));
    assert_eq!(kind, "invalid_input");

    // A node with a duplicate MAC is not created either.
    let (kind, _) =
        error_of(&d.json_code(&["node", "create", "x2", "--driver", "fake", "--mac", "52:54:00:00:00:01"], 1));
    assert_eq!(kind, "conflict");

    // A set that names no node at all is bad input, not an empty success:
    // nothing is queued.
    let jobs_before = d.json(&["queue", "status"])["last_job_id"].clone();
    for verb in [&["node", "manage", "demo1&demo2", "--wait"][..], &["node", "power", "on", "demo[1-3]!demo[1-3]"]] {
        let (kind, msg) = error_of(&d.json_code(verb, 2));
        assert_eq!(kind, "invalid_input");
        assert!(msg.starts_with("node set '") && msg.ends_with("' matches no node"), "{msg}");
        assert!(!msg.contains("opcode"), "a single verb speaks of no opcode: {msg}");
    }
    let out = d.cli(&["node", "manage", "demo1&demo2"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "error: node set 'demo1&demo2' matches no node\n");
    assert_eq!(d.json(&["queue", "status"])["last_job_id"], jobs_before, "no job was stored");

    let after = d.json(&["node", "list"]);
    assert_eq!(before, after);
    assert_eq!(d.json(&["port", "list"]).as_array().unwrap().len(), 1);
}

#[test]
fn an_import_with_one_bad_node_enrols_none() {
    let d = Daemon::start(1, &[]);
    let file = d.dir.path().join("nodes.json");
    std::fs::write(
        &file,
        r#"[{"name": "a1", "driver": "fake"}, {"name": "demo1", "driver": "fake"}, {"name": "a3", "driver": "fake"}]"#,
    )
    .unwrap();
    let (kind, msg) = error_of(&d.json_code(&["node", "import", file.to_str().unwrap()], 1));
    assert_eq!(kind, "conflict");
    assert!(msg.contains("demo1"), "{msg}");
    assert_eq!(d.json(&["node", "list"]).as_array().unwrap().len(), 1);

    std::fs::write(&file, r#"[{"name": "a1", "driver": "fake", "colour": "red"}]"#).unwrap();
    let (kind, msg) = error_of(&d.json_code(&["node", "import", file.to_str().unwrap()], 2));
    assert_eq!(kind, "usage");
    assert!(msg.contains("colour"), "{msg}");
    assert_eq!(d.json(&["node", "list"]).as_array().unwrap().len(), 1);
}

#[test]
fn a_failing_driver_panics_on_one_node_while_the_others_go_on() {
    let d = Daemon::start(3, &[]);
    d.json(&["node", "manage", "demo[1-3]", "--wait"]);
    d.json(&["node", "set", "demo2", "--driver-info", "panic_on=set_power"]);
    let out = d.json_code(&["node", "provide", "demo[1-3]", "--wait"], 1);
    let ok: Vec<bool> = out.as_array().unwrap().iter().map(|o| o["ok"].as_bool().unwrap()).collect();
    assert_eq!(ok, [true, false, true]);

    let n = d.node("demo2");
    assert_eq!(n["provision_state"], "clean failed");
    assert_eq!(n["reservation"], serde_json::Value::Null);
    let err = n["last_error"].as_str().unwrap();
    assert!(err.contains("driver crashed") && err.contains("told to panic"), "{err}");

    // The others keep working, and demo2 itself still answers and recovers.
    d.json(&["node", "deploy", "demo[1,3]", "--wait"]);
    assert_eq!(d.state("demo1"), "active");
    d.json(&["node", "set", "demo2", "--unset-driver-info", "panic_on"]);
    d.json(&["node", "manage", "demo2", "--wait"]);
    d.json(&["node", "provide", "demo2", "--wait"]);
    assert_eq!(d.state("demo2"), "available");
}

#[test]
fn a_failing_bmc_fails_the_task_with_last_error_and_history() {
    let d = Daemon::start(1, &[]);
    d.json(&["node", "manage", "demo1", "--wait"]);
    d.json(&["node", "provide", "demo1", "--wait"]);
    d.json(&["node", "set", "demo1", "--driver-info", "failure_rate=1"]);
    let out = d.json_code(&["node", "deploy", "demo1", "--wait"], 1);
    assert_eq!(out[0]["ok"], false);
    assert_eq!(out[0]["provision_state"], "deploy failed", "the state it is in now: {out}");
    let n = d.node("demo1");
    assert_eq!(n["provision_state"], "deploy failed");
    assert!(n["last_error"].as_str().unwrap().contains("simulated BMC failure"));
    let history = d.json(&["node", "history", "demo1"]);
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["to_state"], "deploy failed");
    assert!(last["error"].as_str().unwrap().contains("simulated"));
    // A new operation clears last_error.
    d.json(&["node", "set", "demo1", "--unset-driver-info", "failure_rate"]);
    d.json(&["node", "rebuild", "demo1", "--wait"]);
    assert_eq!(d.node("demo1")["last_error"], serde_json::Value::Null);
}
