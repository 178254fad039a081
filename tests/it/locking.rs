//! The node's lock is its mailbox: one exclusive task at a time, shared
//! reads answered meanwhile, later requests refused or queued in order.

use crate::harness::Daemon;

#[test]
fn a_busy_node_refuses_exclusive_requests_but_answers_reads() {
    let d = Daemon::start(2, &[]);
    d.json(&["node", "set", "demo1", "--driver-info", "latency_ms=60000"]);
    let mut events = crate::harness::Events::follow(&d);
    d.json(&["node", "power", "on", "demo1"]);
    events.started("demo1");

    // Shared: answered at once, showing who holds the node.
    let n = d.node("demo1");
    assert_eq!(n["reservation"]["purpose"], "power on");
    assert_eq!(n["target_power_state"], "power on");

    // Exclusive: refused at once (lock_wait 0), nothing changes.
    let out = d.json_code(&["node", "manage", "demo1", "--wait"], 1);
    assert_eq!(out[0]["error"]["kind"], "node_locked");
    let msg = out[0]["error"]["message"].as_str().unwrap();
    assert!(msg.contains("locked by 'power on'"), "{msg}");
    // The time as the tables print it: UTC to the millisecond, the same
    // instant `node show` gives.
    let since = msg.split(" since ").nth(1).and_then(|r| r.split(';').next()).unwrap();
    assert!(since.len() == 24 && since.ends_with('Z') && since.as_bytes()[19] == b'.', "{msg}");
    let held_since = n["reservation"]["since"].as_str().unwrap();
    assert_eq!(since[..23], held_since[..23], "{msg} / {held_since}");
    assert_eq!(d.state("demo1"), "enroll");

    // Other nodes are not held up.
    d.json(&["node", "manage", "demo2", "--wait"]);
    assert_eq!(d.state("demo2"), "manageable");

    // The site at a glance counts the held node, and only it: demo2 was
    // reserved for its manage and released again.
    let status = d.json(&["status"]);
    assert_eq!(status["reserved"], 1, "{status}");
    assert_eq!(status["nodes"], 2, "{status}");
    assert_eq!(status["by_provision_state"], serde_json::json!({"enroll": 1, "manageable": 1}), "{status}");
}

#[test]
fn with_lock_wait_exclusive_requests_queue_instead_of_failing() {
    let d = Daemon::start(1, &["--lock-wait", "60"]);
    d.json(&["node", "set", "demo1", "--driver-info", "latency_ms=300"]);
    // Three exclusive requests at once: each waits its turn (FIFO order
    // itself is checked in kiln-actors' unit tests, where arrival order is
    // under the test's control).
    let socket = d.socket.clone();
    let run = move |args: &'static [&'static str]| {
        let socket = socket.clone();
        std::thread::spawn(move || crate::harness::cli_at(&socket, args))
    };
    let first = run(&["node", "power", "on", "demo1", "--wait"]);
    let second = run(&["node", "manage", "demo1", "--wait"]);
    let third = run(&["node", "power", "off", "demo1", "--wait"]);
    for h in [first, second, third] {
        let out = h.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let n = d.node("demo1");
    assert_eq!(n["provision_state"], "manageable");
    assert_eq!(n["reservation"], serde_json::Value::Null);
}
