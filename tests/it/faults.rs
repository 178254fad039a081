//! BMC faults (docs/reliability.md): Redfish nodes on the real emulator, some
//! of them behind a [`FaultProxy`] whose fault is switched while the daemon
//! runs. A BMC that hangs, resets, answers 5xx, garbage or the wrong thing
//! fails its own node with a clear error and never holds up another node;
//! repeated power-read failures put the node in maintenance, and the
//! recovery task takes it out once the BMC answers again.
//!
//! The emulator here is this file's own (port 8141), so the power states it
//! reports are only ever changed by these tests. Each test prints how many
//! fault cases it tried (`--nocapture`).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::faultproxy::{Fault, FaultProxy};
use crate::harness::Daemon;
use crate::peers::{self, PASSWORD, Peer, USER};

/// How long a test polls for a condition before it fails.
const DEADLINE: Duration = Duration::from_secs(90);

/// The emulator's socket address.
fn upstream(peer: &Peer) -> std::net::SocketAddr {
    ([127, 0, 0, 1], peer.port).into()
}

/// Enrols a Redfish node for the emulator's system `node-<system>` at
/// `address` (the emulator itself, or a proxy in front of it), with basic
/// auth so that every call is one request to the system.
fn redfish_node(d: &Daemon, name: &str, address: &str, peer: &Peer, system: usize, timeout: u64) {
    let pw = d.dir.path().join(format!("{name}.pw"));
    std::fs::write(&pw, PASSWORD).unwrap();
    let system_id = format!("system_id={}", peer.system_id(system));
    let timeout = format!("timeout={timeout}");
    d.json(&[
        "node",
        "create",
        name,
        "--driver",
        "redfish",
        "--address",
        address,
        "--username",
        USER,
        "--password-file",
        pw.to_str().unwrap(),
        "--driver-info",
        &system_id,
        "--driver-info",
        "auth_method=basic",
        "--driver-info",
        &timeout,
    ]);
}

/// The emulator's own word on a system's power (read with curl, not kiln).
fn emulator_power(peer: &Peer, system: usize) -> &'static str {
    match peer.system(system)["PowerState"].as_str() {
        Some("On") => "power on",
        Some("Off") => "power off",
        other => panic!("the emulator says PowerState {other:?}"),
    }
}

/// `kiln --json node power status NODES`, started and not waited for.
fn spawn_power_status(d: &Daemon, nodes: &str) -> Child {
    crate::harness::spawn_at(&d.socket, &["--json", "node", "power", "status", nodes], Stdio::piped())
}

/// Polls `what` until it holds, at most [`DEADLINE`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "waited {DEADLINE:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Results of `power status` by node name.
fn by_node(out: &Value) -> std::collections::BTreeMap<String, Value> {
    out.as_array()
        .unwrap_or_else(|| panic!("not a list of results: {out}"))
        .iter()
        .map(|r| (r["node"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// No line of the daemon's log says it panicked.
fn assert_no_panic(d: &Daemon) {
    let log = d.log_lines();
    assert!(!log.iter().any(|l| l.contains("panicked")), "the daemon panicked: {log:#?}");
}

#[test]
fn a_hung_bmc_holds_up_no_other_node() {
    let peer = peers::redfish_for_faults();
    let proxy = FaultProxy::start(upstream(peer));
    let d = Daemon::start(2, &["--no-periodic"]);
    // The hung BMC's own timeout is long: the test releases it itself.
    redfish_node(&d, "rf-hung", &proxy.url(), peer, 1, 120);
    redfish_node(&d, "rf-good1", &peer.url(), peer, 2, 20);
    redfish_node(&d, "rf-good2", &peer.url(), peer, 3, 20);

    proxy.set(Fault::Hang);
    let hung = spawn_power_status(&d, "rf-hung");
    wait_until("the BMC to hold the request", || proxy.held() == 1);

    // While rf-hung's BMC holds its request, every other node is served:
    // reads from the real emulator, fake nodes' operations, and rf-hung's
    // own record (a shared request).
    for _ in 0..3 {
        let out = d.json(&["node", "power", "status", "rf-good1,rf-good2"]);
        let results = by_node(&out);
        for (name, system) in [("rf-good1", 2), ("rf-good2", 3)] {
            let r = &results[name];
            assert_eq!(r["ok"], true, "{r}");
            assert_eq!(r["power_state"], emulator_power(peer, system), "{r}");
        }
    }
    d.json(&["node", "manage", "demo1", "--wait"]);
    d.json(&["node", "power", "on", "demo2", "--wait"]);
    assert_eq!(d.node("rf-hung")["provision_state"], "enroll");
    // All that happened while the hung request was still held and its CLI
    // still waiting: the order is the proof, not a time limit.
    assert_eq!(proxy.held(), 1, "the hung request was still held");
    let mut hung = hung;
    assert!(hung.try_wait().unwrap().is_none(), "rf-hung's power status was still waiting");

    // Released (closed without an answer), rf-hung gets an error of its own.
    proxy.set(Fault::Pass);
    let out = hung.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results = by_node(&serde_json::from_str(&stdout).unwrap());
    let r = &results["rf-hung"];
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["kind"], "driver", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("rf-hung") && message.contains("cannot reach the BMC"), "{message}");
    println!("[faults] hang: rf-hung released with {r}");
    let seen = proxy.seen();
    assert!(seen.iter().filter(|(f, _)| *f == Fault::Hang).count() >= 1, "{seen:?}");
    assert_no_panic(&d);
    println!("[faults] hang: 1 fault case tried, {} requests through the proxy", seen.len());
}

#[test]
fn each_bmc_fault_fails_only_its_own_node_with_a_clear_error() {
    let peer = peers::redfish_for_faults();
    let proxy = FaultProxy::start(upstream(peer));
    let d = Daemon::start(0, &["--no-periodic"]);
    redfish_node(&d, "rf-bad", &proxy.url(), peer, 1, 3);
    redfish_node(&d, "rf-good", &peer.url(), peer, 4, 20);

    // Each fault, what the bad node's error must say.
    let cases: &[(Fault, Option<&str>)] = &[
        (Fault::Pass, None),
        (Fault::Latency(Duration::from_millis(300)), None),
        (Fault::Hang, Some("did not answer within 3 s")),
        (Fault::Reset, Some("cannot reach the BMC at")),
        (Fault::Status(500), Some("HTTP 500")),
        (Fault::Status(503), Some("HTTP 503")),
        (Fault::Status(404), Some("HTTP 404")),
        (Fault::Garbage, Some("sent a reply kiln cannot read: GET /redfish/v1/Systems/")),
        (Fault::MalformedJson, Some("not JSON")),
        (Fault::WrongPowerState, Some("unknown PowerState 'Sideways'")),
        (Fault::Pass, None),
    ];
    let mut tried = 0;
    for (fault, needle) in cases {
        proxy.set(*fault);
        let code = if needle.is_some() { 1 } else { 0 };
        let out = d.json_code(&["node", "power", "status", "rf-bad,rf-good"], code);
        let results = by_node(&out);
        let good = &results["rf-good"];
        assert_eq!(good["ok"], true, "{fault:?}: {good}");
        assert_eq!(good["power_state"], emulator_power(peer, 4), "{fault:?}: {good}");
        let bad = &results["rf-bad"];
        match needle {
            None => {
                assert_eq!(bad["ok"], true, "{fault:?}: {bad}");
                assert_eq!(bad["power_state"], emulator_power(peer, 1), "{fault:?}: {bad}");
            }
            Some(needle) => {
                assert_eq!(bad["ok"], false, "{fault:?}: {bad}");
                assert_eq!(bad["error"]["kind"], "driver", "{fault:?}: {bad}");
                let message = bad["error"]["message"].as_str().unwrap();
                println!("[faults] {fault:?}: {message}");
                assert!(
                    message.contains("rf-bad") && message.contains(needle),
                    "{fault:?}: '{needle}' not in {message}"
                );
                assert!(!message.contains(PASSWORD) || message.contains("username and password"), "{message}");
                // The node itself stays as it was, only its error recorded.
                let n = d.node("rf-bad");
                assert_eq!(n["provision_state"], "enroll", "{n}");
                assert_eq!(n["reservation"], Value::Null, "{n}");
                assert_eq!(n["maintenance"], false, "{n}");
            }
        }
        tried += 1;
    }
    // Every request the proxy saw met the fault that was in force.
    let seen = proxy.seen();
    for (fault, _) in cases {
        assert!(seen.iter().any(|(f, _)| f == fault), "{fault:?} was never applied: {seen:?}");
    }
    assert_no_panic(&d);
    println!("[faults] {tried} fault cases tried, {} requests through the proxy, 0 lost", seen.len());
}

#[test]
fn repeated_power_read_failures_go_to_maintenance_and_recovery_takes_the_node_out() {
    let peer = peers::redfish_for_faults();
    let proxy = FaultProxy::start(upstream(peer));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    // Power sync and recovery run by themselves, often.
    std::fs::write(&config, "power_sync_interval = 0.3\npower_failure_recovery_interval = 0.3\n").unwrap();
    let d = Daemon::start(0, &["--config", config.to_str().unwrap()]);
    redfish_node(&d, "rf-flaky", &proxy.url(), peer, 2, 3);
    redfish_node(&d, "rf-steady", &peer.url(), peer, 3, 20);
    // Power sync reads managed nodes, not nodes in enroll.
    d.json(&["node", "manage", "rf-flaky,rf-steady", "--wait"]);

    let mut tried = 0;
    // Not a BMC that cannot be reached (Reset): power sync backs off from
    // that one instead of reading it again at once (tests/it/unreachable.rs).
    for fault in [Fault::Status(503), Fault::Garbage, Fault::WrongPowerState] {
        proxy.set(fault);
        wait_until(&format!("rf-flaky in maintenance under {fault:?}"), || d.node("rf-flaky")["maintenance"] == true);
        let n = d.node("rf-flaky");
        assert_eq!(n["fault"], "power failure", "{n}");
        let err = n["last_error"].as_str().unwrap_or_default();
        println!("[faults] {fault:?}: rf-flaky in maintenance: {err}");
        assert!(!err.is_empty(), "{n}");
        let steady = d.node("rf-steady");
        assert_eq!(steady["maintenance"], false, "{steady}");
        assert_eq!(steady["fault"], Value::Null, "{steady}");

        // The BMC answers again: recovery takes the node out.
        proxy.set(Fault::Pass);
        wait_until(&format!("rf-flaky out of maintenance after {fault:?}"), || {
            d.node("rf-flaky")["maintenance"] == false
        });
        let n = d.node("rf-flaky");
        assert_eq!(n["fault"], Value::Null, "{n}");
        assert_eq!(n["power_state"], emulator_power(peer, 2), "{n}");
        tried += 1;
    }
    let history = d.json(&["node", "history", "rf-flaky"]);
    println!("[faults] rf-flaky's history: {history}");
    assert_no_panic(&d);
    println!("[faults] maintenance: {tried} fault cases tried, {} requests through the proxy", proxy.seen().len());
}
