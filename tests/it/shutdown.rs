//! SIGTERM (docs/reliability.md): the daemon stops accepting, lets running
//! opcodes finish within `--shutdown-grace`, fails what still runs then as
//! the restart rule would (committed before it exits), and exits 0.

use serde_json::Value;

use crate::harness::{Daemon, Events};

fn submit(d: &Daemon, yaml: &str) -> u64 {
    let path = d.dir.path().join("job.yaml");
    std::fs::write(&path, yaml).unwrap();
    d.json(&["job", "submit", path.to_str().unwrap()])["job"].as_u64().expect("a job id")
}

fn job(d: &Daemon, id: u64) -> Value {
    d.json(&["job", "show", &id.to_string()])
}

/// The node's state and `last_error` as the store holds them, read with
/// SQLite itself.
fn stored_state(d: &Daemon, name: &str) -> (String, Option<String>) {
    let db = rusqlite::Connection::open(d.dir.path().join("kiln.sqlite")).expect("open the store");
    db.query_row("SELECT provision_state, last_error FROM nodes WHERE name = ?1", [name], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .unwrap_or_else(|e| panic!("no row for {name}: {e}"))
}

#[test]
fn sigterm_fails_an_opcode_that_outlives_the_grace_period_and_exits_0() {
    let mut d = Daemon::start(2, &["--shutdown-grace", "1", "--no-periodic"]);
    d.json(&["node", "manage", "demo[1-2]", "--wait"]);
    d.json(&["node", "provide", "demo[1-2]", "--wait"]);
    // demo1's BMC takes a minute per call: its deploy outlives the grace.
    d.json(&["node", "set", "demo1", "--driver-info", "latency_ms=60000"]);
    let mut events = Events::follow(&d);
    let id = submit(&d, "ops:\n  - {op: deploy, nodes: demo1}\n  - {op: sleep, seconds: 0}\n");
    assert_eq!(events.started("demo1")["provision_state"], "deploying");
    drop(events);

    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!d.socket.exists(), "the socket is removed");
    let log = d.log_lines().join("\n");
    assert!(log.contains("grace period ran out"), "{log}");
    // Failed before the daemon exited, not by the next start's restart rule.
    let (state, error) = stored_state(&d, "demo1");
    assert_eq!(state, "deploy failed");
    assert!(error.as_deref().unwrap_or("").contains("daemon stopped"), "{error:?}");

    d.restart();
    let n = d.node("demo1");
    assert_eq!(n["provision_state"], "deploy failed");
    assert_eq!(n["reservation"], Value::Null);
    assert_eq!(n["target_provision_state"], Value::Null);
    let err = n["last_error"].as_str().unwrap();
    assert!(err.contains("grace period") && err.contains("deploying"), "{err}");
    assert_eq!(d.state("demo2"), "available");
    let j = job(&d, id);
    assert_eq!(j["status"], "error", "{j}");
    assert!(j["error"].as_str().unwrap().contains("grace period"), "{j}");
    assert_eq!(j["ops"][0]["status"], "error");
    assert_eq!(j["ops"][1]["status"], "error");
    // The operator can act on it.
    d.json(&["node", "set", "demo1", "--unset-driver-info", "latency_ms"]);
    d.json(&["node", "rebuild", "demo1", "--wait"]);
    assert_eq!(d.state("demo1"), "active");
}

#[test]
fn sigterm_lets_a_short_opcode_finish_starts_nothing_new_and_exits_0() {
    let mut d = Daemon::start(2, &["--shutdown-grace", "60", "--no-periodic", "--max-running-jobs", "1"]);
    d.json(&["node", "manage", "demo[1-2]", "--wait"]);
    d.json(&["node", "provide", "demo[1-2]", "--wait"]);
    // Each BMC call takes a second: the deploy is in flight at SIGTERM and
    // ends well inside the grace period.
    d.json(&["node", "set", "demo1", "--driver-info", "latency_ms=1000"]);
    let mut events = Events::follow(&d);
    let two_ops = submit(&d, "ops:\n  - {op: deploy, nodes: demo1}\n  - {op: sleep, seconds: 0}\n");
    // Waits behind it (one job at a time): must not start during the shutdown.
    let queued = submit(&d, "ops: [{op: deploy, nodes: demo2}]");
    assert_eq!(events.started("demo1")["provision_state"], "deploying");
    drop(events);

    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!d.socket.exists());
    let log = d.log_lines().join("\n");
    assert!(log.contains("finished_in_grace=true"), "{log}");
    assert_eq!(stored_state(&d, "demo1").0, "active");
    assert_eq!(stored_state(&d, "demo2").0, "available", "the queued job did not start");

    d.restart();
    let n = d.node("demo1");
    assert_eq!(n["provision_state"], "active");
    assert_eq!(n["last_error"], Value::Null);
    let j = job(&d, two_ops);
    assert_eq!(j["ops"][0]["status"], "success", "{j}");
    // The opcode after it did not start: the job ended with a clear reason.
    assert_eq!(j["status"], "error", "{j}");
    assert!(j["error"].as_str().unwrap().contains("opcode 2/2 was not started"), "{j}");
    // The queued job survived the shutdown and runs after the restart.
    let out = d.cli(&["--json", "job", "watch", &queued.to_string()]);
    // One JSON object a line: the log as it comes, then the job.
    let last = String::from_utf8_lossy(&out.stdout).lines().last().map(String::from).unwrap_or_default();
    let done: Value = serde_json::from_str(&last).expect("job JSON");
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(d.state("demo2"), "active");
}

#[test]
fn sigterm_does_not_wait_out_a_sleep() {
    // A grace period far longer than the test may take: only a shutdown
    // that ends the sleep at once lets the daemon exit in time.
    let mut d = Daemon::start(0, &["--shutdown-grace", "120", "--no-periodic"]);
    let id = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    assert_eq!(job(&d, id)["status"], "running");
    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let log = d.log_lines().join("\n");
    assert!(!log.contains("grace period ran out"), "{log}");
    d.restart();
    let j = job(&d, id);
    assert_eq!(j["status"], "error", "{j}");
    assert!(j["error"].as_str().unwrap().contains("shutting down during a sleep"), "{j}");
}
