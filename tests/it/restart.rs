//! SIGKILL and restart: every acknowledged transition survives, and nodes
//! cut off mid-task are released into a state the operator can act on.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Daemon, KILN, states};

#[test]
fn every_acknowledged_transition_survives_sigkill() {
    let mut d = Daemon::start(16, &[]);
    d.json(&["node", "manage", "demo[1-16]", "--wait"]);
    d.json(&["node", "provide", "demo[1-12]", "--wait"]);
    d.json(&["node", "deploy", "demo[1-6]", "--wait"]);
    d.json(&["node", "maintenance", "on", "demo16", "--reason", "fan"]);
    d.json(&["port", "create", "52:54:00:00:00:10", "--node", "demo10"]);
    let before = d.json(&["node", "list"]);

    d.kill9();
    d.restart();

    let after = d.json(&["node", "list"]);
    // The same nodes, states, power and maintenance (uuids included).
    let key = |v: &serde_json::Value| -> Vec<(String, String, String, String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["uuid"].to_string(),
                    n["name"].to_string(),
                    n["provision_state"].to_string(),
                    n["power_state"].to_string(),
                    n["maintenance_reason"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(key(&before), key(&after));
    assert_eq!(d.json(&["port", "list"])[0]["node"], "demo10");
    let s = states(&d);
    assert_eq!(s["demo1"], "active");
    assert_eq!(s["demo12"], "available");
    assert_eq!(s["demo16"], "manageable");
}

#[test]
fn a_node_killed_mid_task_is_failed_and_released_after_restart() {
    let mut d = Daemon::start(2, &[]);
    d.json(&["node", "manage", "demo[1-2]", "--wait"]);
    d.json(&["node", "provide", "demo[1-2]", "--wait"]);
    // demo1's BMC now takes a minute per call: its deploy will be in flight.
    d.json(&["node", "set", "demo1", "--driver-info", "latency_ms=60000"]);
    let mut events = crate::harness::Events::follow(&d);
    let submitted = d.json(&["node", "deploy", "demo1"]);
    assert!(submitted["job"].as_u64().is_some(), "{submitted}");
    assert_eq!(events.started("demo1")["provision_state"], "deploying");
    assert_eq!(d.node("demo1")["reservation"]["purpose"], "deploy");

    d.kill9();
    d.restart();

    let n = d.node("demo1");
    assert_eq!(n["provision_state"], "deploy failed");
    assert_eq!(n["reservation"], serde_json::Value::Null);
    assert_eq!(n["target_provision_state"], serde_json::Value::Null);
    let err = n["last_error"].as_str().unwrap();
    assert!(err.contains("daemon restarted") && err.contains("deploying"), "{err}");
    assert_eq!(d.state("demo2"), "available");
    // The operator can act on it: rebuild from deploy failed works.
    d.json(&["node", "set", "demo1", "--unset-driver-info", "latency_ms"]);
    d.json(&["node", "rebuild", "demo1", "--wait"]);
    assert_eq!(d.state("demo1"), "active");
}

#[test]
fn sigterm_stops_the_daemon_cleanly_and_removes_the_socket() {
    let mut d = Daemon::start(1, &[]);
    d.json(&["node", "manage", "demo1", "--wait"]);
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!d.socket.exists());
    d.restart();
    assert_eq!(d.state("demo1"), "manageable");
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused_and_changes_nothing() {
    let d = Daemon::start(2, &[]);
    let before = d.json(&["node", "list"]);
    let other = d.dir.path().join("other.sock");
    let second = Command::new(KILN)
        .arg("serve")
        .arg("--data-dir")
        .arg(d.dir.path())
        .arg("--socket")
        .arg(&other)
        .arg("--demo")
        .arg("5")
        .env_remove("KILN_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a second kiln serve");
    let pid = second.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(second.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(Duration::from_secs(60)) else {
        // SAFETY: stopping the child this test started, by its pid.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        panic!("a second daemon on the same data dir kept running");
    };
    let out = out.expect("wait for the second kiln serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is in use by another kiln serve"), "{stderr}");
    assert!(stderr.contains(&format!("(pid {})", d.pid())), "{stderr}");
    // It bound nothing and added no demo nodes; the first one still serves.
    assert!(!other.exists(), "the refused daemon created its socket");
    assert_eq!(d.json(&["node", "list"]), before);
}

#[test]
fn demo_on_a_store_that_holds_nodes_enrols_none_and_says_how_many() {
    let mut d = Daemon::start(3, &["--no-periodic"]);
    d.json(&["node", "manage", "demo1", "--wait"]);
    let said = d.restart_with_demo(64);
    let warning =
        said.iter().find(|l| l.contains("--demo 64")).unwrap_or_else(|| panic!("no word of --demo: {said:?}"));
    assert!(warning.contains("already holds 3 nodes") && warning.contains("remove the data dir"), "{warning}");
    let names: Vec<String> =
        d.json(&["node", "list"]).as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().into()).collect();
    assert_eq!(names, ["demo1", "demo2", "demo3"]);
    assert_eq!(d.state("demo1"), "manageable");
}
