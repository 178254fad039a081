//! Nodes on real BMCs, through the whole daemon: the real `kiln serve`, the
//! real CLI, and real peers on loopback (the sushy-tools Redfish emulator,
//! the pyghmi IPMI simulator driven by `ipmitool`), plus loopback servers
//! that fail on purpose (refuse, never answer, answer HTTP 500).
//!
//! Each test checks what the node records (states, power, boot device,
//! `last_error`, history), what the BMC itself ended up with (read without
//! kiln: `curl`, `ipmitool`), that a failing BMC never stops the daemon from
//! serving other nodes, and that a password never shows in any CLI output or
//! in the daemon's log (run at `debug`).
//!
//! The emulator applies a power change 1 to 11 s after it accepted it, so
//! the Redfish tests keep to few power changes per node and run beside the
//! IPMI tests. `--nocapture` shows what each operation took through kiln.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Daemon, Events};
use crate::peers::{self, Answer, PASSWORD, Responder, USER};
use kiln_drivers::ipmi::GET_CHANNEL_AUTH_CAPABILITIES;

/// A daemon and everything its CLI printed, so that a test can check at the
/// end that no password ever showed.
pub(crate) struct Site {
    pub(crate) d: Daemon,
    /// Everything the CLI printed (stdout and stderr), for `finish`.
    pub(crate) said: RefCell<Vec<String>>,
}

impl Site {
    /// A daemon with `demo` fake nodes, logging at `debug`.
    fn start(demo: usize) -> Site {
        // No periodic task runs on its own: tests run them with `periodic run`.
        Site::start_with(demo, &["--no-periodic"])
    }

    /// A daemon with `demo` fake nodes and `extra` arguments, logging at `debug`.
    pub(crate) fn start_with(demo: usize, extra: &[&str]) -> Site {
        Site { d: Daemon::start_logging(demo, extra, "debug"), said: RefCell::new(Vec::new()) }
    }

    /// Runs the CLI with `--json`; panics unless it exits with `code`.
    pub(crate) fn run(&self, args: &[&str], code: i32) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.d.cli(&all);
        self.check(out, args, code)
    }

    /// Starts the CLI with `--json` and does not wait for it; see `collect`.
    pub(crate) fn spawn(&self, args: &[&str]) -> Child {
        let args: Vec<&str> = ["--json"].iter().chain(args).copied().collect();
        crate::harness::spawn_at(&self.d.socket, &args, Stdio::piped())
    }

    /// Waits for a CLI started by `spawn`, as `run`.
    pub(crate) fn collect(&self, child: Child, args: &[&str], code: i32) -> Value {
        let out = child.wait_with_output().expect("wait for kiln");
        self.check(out, args, code)
    }

    pub(crate) fn check(&self, out: Output, args: &[&str], code: i32) -> Value {
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        self.said.borrow_mut().extend([stdout.to_string(), stderr.to_string()]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "kiln {args:?} exited {:?}\nstdout: {stdout}\nstderr: {stderr}",
            out.status.code()
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("kiln {args:?} printed no JSON ({e}): {stdout}"))
    }

    pub(crate) fn ok(&self, args: &[&str]) -> Value {
        self.run(args, 0)
    }

    /// Runs a verb over one node and returns that node's result; prints
    /// what it took (the latency through kiln).
    fn timed(&self, label: &str, args: &[&str], code: i32) -> Value {
        let started = Instant::now();
        let out = self.run(args, code);
        println!("[bmc] {label}: kiln {} took {:.2} s", args.join(" "), started.elapsed().as_secs_f64());
        let results = out.as_array().unwrap_or_else(|| panic!("kiln {args:?}: not a list of results: {out}"));
        assert_eq!(results.len(), 1, "{out}");
        results[0].clone()
    }

    /// Runs the CLI without `--json` (tables), which must succeed.
    pub(crate) fn table(&self, args: &[&str]) -> String {
        let out = self.d.cli(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        self.said.borrow_mut().extend([stdout.clone(), String::from_utf8_lossy(&out.stderr).to_string()]);
        assert!(out.status.success(), "kiln {args:?}: {stdout}");
        stdout
    }

    pub(crate) fn node(&self, name: &str) -> Value {
        self.ok(&["node", "show", name])
    }

    fn state_of(&self, name: &str) -> String {
        self.node(name)["provision_state"].as_str().unwrap().to_string()
    }

    /// Enrols a node whose password is read from a file, as an operator
    /// would; checks that the answer masks it.
    pub(crate) fn create(&self, name: &str, driver: &str, address: &str, password: &str, info: &[&str]) {
        let file = self.d.dir.path().join(format!("{name}.pw"));
        std::fs::write(&file, format!("{password}\n")).unwrap();
        let mut args = vec!["node", "create", name, "--driver", driver, "--address", address, "--username", USER];
        args.extend(["--password-file", file.to_str().unwrap()]);
        for kv in info {
            args.extend(["--driver-info", kv]);
        }
        let created = self.ok(&args);
        assert_eq!(created[0]["driver_info"]["password"], "******", "{created}");
        assert_eq!(created[0]["provision_state"], "enroll");
    }

    /// A Redfish node on `address` for the system at `system`.
    pub(crate) fn redfish(&self, name: &str, address: &str, system: &str, password: &str, info: &[&str]) {
        let system = format!("system_id={system}");
        let mut all = vec![system.as_str()];
        all.extend_from_slice(info);
        self.create(name, "redfish", address, password, &all);
    }

    /// An IPMI node on the loopback port `port`.
    pub(crate) fn ipmi(&self, name: &str, port: u16, password: &str, info: &[&str]) {
        let port = format!("port={port}");
        let mut all = vec![port.as_str(), "min_command_interval=0.05"];
        all.extend_from_slice(info);
        self.create(name, "ipmi", "127.0.0.1", password, &all);
    }

    /// The node's history as (event, from, to, error) lines.
    pub(crate) fn history(&self, name: &str) -> Vec<(String, String, String, Option<String>)> {
        let h = self.ok(&["node", "history", name]);
        h.as_array()
            .expect("a list")
            .iter()
            .map(|e| {
                (
                    e["event"].as_str().unwrap().to_string(),
                    e["from_state"].as_str().unwrap().to_string(),
                    e["to_state"].as_str().unwrap().to_string(),
                    e["error"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    /// Shows every node as a table too (another output path), stops the
    /// daemon, and checks that none of `secrets` ever appeared in anything
    /// the CLI printed or the daemon logged.
    pub(crate) fn finish(mut self, secrets: &[&str]) -> Vec<String> {
        for n in self.ok(&["node", "list"]).as_array().unwrap().clone() {
            let name = n["name"].as_str().unwrap();
            if n["driver"] != "fake" {
                assert_eq!(n["driver_info"]["password"], "******", "{n}");
            }
            self.table(&["node", "show", name]);
            self.table(&["node", "history", name]);
        }
        self.table(&["node", "list"]);
        assert!(self.d.terminate().success(), "kiln serve did not stop cleanly");
        let log = self.d.log_lines();
        assert!(log.iter().any(|l| l.contains("SIGTERM")), "the daemon's log, to its end: {log:?}");
        let said = self.said.borrow();
        for secret in secrets {
            for text in said.iter() {
                assert!(!text.contains(secret), "the CLI showed '{secret}':\n{text}");
            }
            for line in &log {
                assert!(!line.contains(secret), "the daemon logged '{secret}':\n{line}");
            }
        }
        log
    }
}

/// What shows the peers' own password if it leaks: "password" itself is a
/// word of many messages ("check username and password"), so these are the
/// forms a leak would take (basic auth, its base64, a printed map).
const PEER_PASSWORD_LEAKS: &[&str] = &[
    "admin:password",
    "YWRtaW46cGFzc3dvcmQ",
    "\"password\":\"password\"",
    "\"password\": \"password\"",
    "password=password",
    "IPMI_PASSWORD=password",
];

/// The daemon's log lines from inside a driver (`kiln_drivers::…`), after
/// checking that there is one and that each names `node`, the only node of
/// the test (docs/metrics.md, "Logs": lines carry the node where it applies).
fn driver_lines_of(log: &[String], node: &str) -> Vec<String> {
    let lines: Vec<String> = log.iter().filter(|l| l.contains(" kiln_drivers::")).cloned().collect();
    assert!(!lines.is_empty(), "no driver log line at debug level: {log:?}");
    for line in &lines {
        assert!(line.contains(&format!("node_name={node}")), "a driver line without its node: {line}");
    }
    lines
}

fn assert_ok(result: &Value) {
    assert_eq!(result["ok"], true, "{result}");
}

/// A failed node result: kind `driver`, naming the node, saying `needle`.
fn assert_driver_error(result: &Value, node: &str, needle: &str) -> String {
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["error"]["kind"], "driver", "{result}");
    let message = result["error"]["message"].as_str().unwrap().to_string();
    println!("[bmc] {node} failed: {message}");
    assert!(message.contains(node) && message.contains(needle), "{node}: '{needle}' not in: {message}");
    message
}

fn events_of(history: &[(String, String, String, Option<String>)]) -> Vec<(&str, &str)> {
    history.iter().map(|(e, _, to, _)| (e.as_str(), to.as_str())).collect()
}

/// Waits until every one of `nodes` has started its operation (entered its
/// working state), whatever the order of their events.
fn wait_for_starts(events: &mut Events, nodes: &[&str]) {
    let mut waiting: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
    while !waiting.is_empty() {
        let e = events.wait_for(&format!("{waiting:?} to start"), |e| {
            e["kind"] == "start" && e["node_name"].as_str().is_some_and(|n| waiting.contains(n))
        });
        waiting.remove(e["node_name"].as_str().unwrap());
    }
}

/// The manage → provide → deploy → undeploy life cycle of one node, with
/// what kiln records at each stable state; `bmc_says(powered)` checks the
/// BMC itself (its power, and that it boots from the network).
fn life_cycle(site: &Site, name: &str, peer: &str, bmc_says: &dyn Fn(bool)) {
    let r = site.timed(&format!("{peer} manage"), &["node", "manage", name, "--wait"], 0);
    assert_ok(&r);
    let n = site.node(name);
    assert_eq!(n["provision_state"], "manageable");
    assert_eq!(n["power_state"], "power off", "verifying read the BMC's power state");
    assert_eq!(n["last_error"], Value::Null);

    let r = site.timed(&format!("{peer} provide"), &["node", "provide", name, "--wait"], 0);
    assert_ok(&r);
    assert_eq!(r["provision_state"], "available");

    let r = site.timed(&format!("{peer} deploy"), &["node", "deploy", name, "--wait"], 0);
    assert_ok(&r);
    let n = site.node(name);
    assert_eq!(n["provision_state"], "active");
    assert_eq!(n["power_state"], "power on");
    assert_eq!(n["boot_device"], "pxe");
    assert_eq!(n["target_provision_state"], Value::Null);
    assert_eq!(n["target_power_state"], Value::Null);
    assert_eq!(n["reservation"], Value::Null);
    bmc_says(true);

    let r = site.timed(&format!("{peer} undeploy"), &["node", "undeploy", name, "--wait"], 0);
    assert_ok(&r);
    let n = site.node(name);
    assert_eq!(n["provision_state"], "available");
    assert_eq!(n["power_state"], "power off");
    assert_eq!(n["last_error"], Value::Null);
    bmc_says(false);

    let history = site.history(name);
    assert_eq!(
        events_of(&history),
        [
            ("manage", "verifying"),
            ("done", "manageable"),
            ("provide", "cleaning"),
            ("done", "available"),
            ("deploy", "deploying"),
            ("done", "active"),
            ("delete", "deleting"),
            ("clean", "cleaning"),
            ("done", "available"),
        ]
    );
    assert!(history.iter().all(|h| h.3.is_none()), "{history:?}");
}

// ----- Redfish -----------------------------------------------------------------

#[test]
fn a_redfish_node_runs_its_whole_life_cycle_on_the_emulator() {
    let peer = peers::redfish();
    let site = Site::start(0);
    // The emulator applies a power change 1 to 11 s after it accepted it.
    site.redfish("rf1", &peer.url(), &peer.system_id(1), PASSWORD, &["power_timeout=40", "timeout=20"]);
    life_cycle(&site, "rf1", "redfish", &|on| {
        let system = peer.system(1);
        assert_eq!(system["PowerState"], if on { "On" } else { "Off" }, "{system}");
        assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Pxe", "{system}");
    });
    let log = site.finish(PEER_PASSWORD_LEAKS);
    let driver_lines = driver_lines_of(&log, "rf1");
    assert!(driver_lines.iter().any(|l| l.contains("job{job=")), "a task's call carries its job: {driver_lines:?}");
}

#[test]
fn redfish_power_actions_and_boot_devices_reach_the_emulator() {
    let peer = peers::redfish();
    let site = Site::start(0);
    site.redfish("rf2", &peer.url(), &peer.system_id(2), PASSWORD, &["power_timeout=40", "timeout=20"]);

    let status = site.ok(&["node", "power", "status", "rf2"]);
    assert_eq!(status[0]["power_state"], "power off", "{status}");

    for (action, state, bmc) in [("on", "power on", "On"), ("reboot", "power on", "On"), ("off", "power off", "Off")] {
        let r = site.timed(&format!("redfish power {action}"), &["node", "power", action, "rf2", "--wait"], 0);
        assert_ok(&r);
        assert_eq!(r["power_state"], state, "{r}");
        let n = site.node("rf2");
        assert_eq!(n["power_state"], state);
        assert_eq!(n["target_power_state"], Value::Null);
        assert_eq!(n["last_error"], Value::Null);
        assert_eq!(peer.system(2)["PowerState"], bmc, "after power {action}");
    }
    let status = site.ok(&["node", "power", "status", "rf2"]);
    assert_eq!(status[0]["power_state"], "power off", "{status}");

    // The emulator keeps the target (not the once/continuous flag: see the
    // recording BMC below for that).
    for (device, persistent, target) in [("disk", true, "Hdd"), ("pxe", false, "Pxe"), ("cdrom", false, "Cd")] {
        let mut args = vec!["node", "boot-device", "set", "rf2", device];
        if persistent {
            args.push("--persistent");
        }
        let r = site.timed(&format!("redfish boot-device {device}"), &args, 0);
        assert_ok(&r);
        assert_eq!(site.node("rf2")["boot_device"], device);
        assert_eq!(peer.system(2)["Boot"]["BootSourceOverrideTarget"], target);
    }

    let history = site.history("rf2");
    let events: Vec<&str> = history.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(events, ["power on", "power reboot", "power off", "boot device", "boot device", "boot device"]);
    assert!(history.iter().all(|h| h.3.is_none() && h.2 == "enroll"), "{history:?}");
    site.finish(PEER_PASSWORD_LEAKS);
}

/// A small Redfish BMC with two systems: `1` works (and keeps nothing),
/// `2` answers every request with HTTP 500; a reset of `1` fails with 500.
fn scripted_bmc(method: &str, path: &str) -> Answer {
    const SYSTEM_1: &str = r##"{"@odata.id": "/redfish/v1/Systems/1", "Id": "1", "PowerState": "Off",
        "Boot": {"BootSourceOverrideEnabled": "Once", "BootSourceOverrideTarget": "Pxe"},
        "Actions": {"#ComputerSystem.Reset": {"target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"}}}"##;
    let error = r#"{"error": {"code": "Base.1.0.InternalError", "message": "The BMC is out of resources (0x42)",
        "@Message.ExtendedInfo": [{"MessageId": "Base.1.0.InternalError", "Message": "Retry later"}]}}"#;
    match (method, path) {
        ("GET", "/redfish/v1/Systems/1") => Answer::Reply("200 OK", SYSTEM_1.into()),
        ("PATCH", "/redfish/v1/Systems/1") => Answer::Reply("204 No Content", String::new()),
        _ if path.starts_with("/redfish/v1/Systems/") => Answer::Reply("500 Internal Server Error", error.into()),
        _ => Answer::Reply("404 Not Found", "{}".into()),
    }
}

#[test]
fn a_redfish_boot_device_is_set_once_or_persistently() {
    let bmc = Responder::start(scripted_bmc);
    let site = Site::start(0);
    site.redfish("rf-boot", &bmc.url(), "/redfish/v1/Systems/1", "S3cret-boot-Redfish-1", &["timeout=5"]);
    for (device, persistent) in [("disk", true), ("pxe", false), ("bios", true)] {
        let mut args = vec!["node", "boot-device", "set", "rf-boot", device];
        if persistent {
            args.push("--persistent");
        }
        assert_ok(&site.ok(&args)[0]);
        assert_eq!(site.node("rf-boot")["boot_device"], device);
    }
    let patches: Vec<Value> = bmc
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| serde_json::from_str(&r.body).expect("a JSON body"))
        .collect();
    let sent: Vec<(&str, &str)> = patches
        .iter()
        .map(|p| {
            (
                p["Boot"]["BootSourceOverrideTarget"].as_str().unwrap(),
                p["Boot"]["BootSourceOverrideEnabled"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(sent, [("Hdd", "Continuous"), ("Pxe", "Once"), ("BiosSetup", "Continuous")]);
    site.finish(&["S3cret-boot-Redfish-1"]);
}

#[test]
fn redfish_faults_are_named_and_the_daemon_keeps_serving_other_nodes() {
    let peer = peers::redfish();
    let bmc = Responder::start(scripted_bmc);
    let hung = Responder::start(|_, _| Answer::Never);
    let closed = peers::closed_tcp_port();
    let refused = format!("http://127.0.0.1:{}", closed.port());
    let site = Site::start(2);
    let secrets =
        ["wr0ng-Secret-rf-4711", "S3cret-refused-rf", "S3cret-500-get-rf", "S3cret-500-post-rf", "S3cret-hung-rf"];
    site.redfish("rf-badpw", &peer.url(), &peer.system_id(3), secrets[0], &[]);
    site.redfish("rf-refused", &refused, "/redfish/v1/Systems/1", secrets[1], &["timeout=5"]);
    site.redfish("rf-500get", &bmc.url(), "/redfish/v1/Systems/2", secrets[2], &["timeout=5"]);
    site.redfish("rf-500post", &bmc.url(), "/redfish/v1/Systems/1", secrets[3], &["timeout=5", "power_timeout=5"]);
    site.redfish("rf-hung", &hung.url(), "/redfish/v1/Systems/1", secrets[4], &["timeout=6"]);
    site.redfish("rf-good", &peer.url(), &peer.system_id(4), PASSWORD, &["timeout=20"]);

    // Five BMCs, four failing in four ways, managed at once.
    let bad = ["rf-badpw", "rf-refused", "rf-500get", "rf-500post", "rf-hung"];
    let mut events = Events::follow(&site.d);
    let started = Instant::now();
    let nodes = bad.join(",");
    let args = ["node", "manage", nodes.as_str(), "--wait"];
    let bulk = site.spawn(&args);
    wait_for_starts(&mut events, &bad);

    // While they fail, and while one waits out its 6 s timeout on a BMC
    // that accepted the connection and never answers, every other node is
    // served at once: fake ones, and one on the real emulator.
    let served = Instant::now();
    assert_ok(&site.timed("fake manage while BMCs fail", &["node", "manage", "demo1", "--wait"], 0));
    assert_ok(&site.timed("fake power on while BMCs fail", &["node", "power", "on", "demo2", "--wait"], 0));
    assert_ok(&site.timed("fake boot-device while BMCs fail", &["node", "boot-device", "set", "demo2", "disk"], 0));
    let read = site.ok(&["node", "power", "status", "rf-good"]);
    assert_eq!(read[0]["power_state"], "power off", "{read}");
    // The hung node itself answers: it is busy, and says so at once.
    let locked = site.run(&["node", "power", "off", "rf-hung", "--wait"], 1);
    assert_eq!(locked[0]["error"]["kind"], "node_locked", "{locked}");
    let n = site.node("rf-hung");
    println!("[bmc] while Redfish BMCs failed, 3 fake operations and a real power read took {:.2?}", served.elapsed());
    assert_eq!(n["provision_state"], "verifying", "the other nodes were served before the hung BMC's timeout");
    assert_ne!(n["reservation"], Value::Null);
    assert_eq!(site.state_of("demo1"), "manageable");
    assert_eq!(site.node("demo2")["power_state"], "power on");

    let out = site.collect(bulk, &args, 1);
    println!("[bmc] redfish faults: manage of 5 BMCs (one hung) took {:.2} s", started.elapsed().as_secs_f64());
    assert!(started.elapsed() >= Duration::from_secs(5), "the hung BMC's timeout is 6 s");
    let by_node = |name: &str| out.as_array().unwrap().iter().find(|r| r["node"] == name).cloned().unwrap();
    let badpw = assert_driver_error(&by_node("rf-badpw"), "rf-badpw", "refused the credentials");
    let refused_msg =
        assert_driver_error(&by_node("rf-refused"), "rf-refused", &format!("cannot reach the BMC at {refused}: "));
    assert!(refused_msg.to_lowercase().contains("connection refused"), "{refused_msg}");
    let get500 = assert_driver_error(
        &by_node("rf-500get"),
        "rf-500get",
        "answered with an error: HTTP 500 Internal Server Error from GET /redfish/v1/Systems/2: \
         The BMC is out of resources (0x42); Retry later",
    );
    let timeout = assert_driver_error(
        &by_node("rf-hung"),
        "rf-hung",
        &format!("the BMC at {} did not answer within 6 s", hung.url()),
    );
    assert_ok(&by_node("rf-500post"));
    for (name, message) in
        [("rf-badpw", &badpw), ("rf-refused", &refused_msg), ("rf-500get", &get500), ("rf-hung", &timeout)]
    {
        let n = site.node(name);
        assert_eq!(n["provision_state"], "enroll", "{n}");
        assert_eq!(n["target_provision_state"], Value::Null);
        assert_eq!(n["reservation"], Value::Null);
        // `last_error` is the driver's message; the CLI's adds the node name.
        let last = n["last_error"].as_str().unwrap();
        assert_eq!(message, &format!("node {name}: {last}"));
        let history = site.history(name);
        assert_eq!(events_of(&history), [("manage", "verifying"), ("fail", "enroll")], "{name}");
        assert_eq!(history[1].3.as_deref(), Some(last));
    }
    // A 5xx to a GET is retried, boundedly; a timeout is not retried (a BMC
    // that hung once will likely hang again).
    let gets = bmc.requests().iter().filter(|r| r.path == "/redfish/v1/Systems/2").count();
    assert!((2..=3).contains(&gets), "{gets} GETs of the failing system");
    assert_eq!(hung.requests().len(), 1);

    // A reset answered with 500: the node keeps its state and power, the
    // target is cleared, the error is recorded; the POST is not repeated.
    let n = site.node("rf-500post");
    assert_eq!((n["provision_state"].as_str(), n["power_state"].as_str()), (Some("manageable"), Some("power off")));
    let r = site.timed("redfish power on against HTTP 500", &["node", "power", "on", "rf-500post", "--wait"], 1);
    let post500 = assert_driver_error(
        &r,
        "rf-500post",
        "HTTP 500 Internal Server Error from POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset: \
         The BMC is out of resources (0x42)",
    );
    let n = site.node("rf-500post");
    assert_eq!(n["provision_state"], "manageable");
    assert_eq!(n["power_state"], "power off");
    assert_eq!(n["target_power_state"], Value::Null);
    assert_eq!(post500, format!("node rf-500post: {}", n["last_error"].as_str().unwrap()));
    let posts = bmc.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 1, "a reset the BMC may have acted on is never repeated");
    let history = site.history("rf-500post");
    let last = history.last().unwrap();
    assert_eq!((last.0.as_str(), last.2.as_str()), ("power on", "manageable"));
    assert!(last.3.as_deref().is_some_and(|e| e.contains("HTTP 500")), "{history:?}");

    let mut all = secrets.to_vec();
    all.extend_from_slice(PEER_PASSWORD_LEAKS);
    site.finish(&all);
}

// ----- IPMI -------------------------------------------------------------------

/// The port of simulated IPMI BMC `i` (0-based).
fn ipmi_port(i: u16) -> u16 {
    assert!(i < peers::IPMI_BMCS);
    peers::ipmi().port + i
}

/// The boot device the simulator reports, in ipmitool's words.
fn ipmi_boot_device(port: u16) -> String {
    let out = peers::ipmitool(port, &["chassis", "bootparam", "get", "5"]);
    out.lines()
        .find_map(|l| l.split_once("Boot Device Selector :").map(|(_, d)| d.trim().to_string()))
        .unwrap_or_else(|| panic!("no boot device in: {out}"))
}

fn ipmi_power(port: u16) -> String {
    peers::ipmitool(port, &["power", "status"]).trim().to_string()
}

#[test]
fn an_ipmi_node_runs_its_whole_life_cycle_on_the_simulator() {
    let port = ipmi_port(0);
    let site = Site::start(0);
    site.ipmi("ip1", port, PASSWORD, &["timeout=15", "power_timeout=20"]);
    life_cycle(&site, "ip1", "ipmi", &|on| {
        assert_eq!(ipmi_power(port), if on { "Chassis Power is on" } else { "Chassis Power is off" });
        assert_eq!(ipmi_boot_device(port), "Force PXE");
    });
    site.finish(PEER_PASSWORD_LEAKS);
}

#[test]
fn ipmi_power_actions_and_boot_devices_reach_the_simulator() {
    let port = ipmi_port(1);
    let site = Site::start(0);
    site.ipmi("ip2", port, PASSWORD, &["timeout=15", "power_timeout=20"]);

    let status = site.ok(&["node", "power", "status", "ip2"]);
    assert_eq!(status[0]["power_state"], "power off", "{status}");
    // Reboot of a node that is off switches it on; of one that is on, cycles it.
    for (action, state) in [
        ("reboot", "power on"),
        ("reboot", "power on"),
        ("soft-off", "power off"),
        ("on", "power on"),
        ("off", "power off"),
    ] {
        let r = site.timed(&format!("ipmi power {action}"), &["node", "power", action, "ip2", "--wait"], 0);
        assert_ok(&r);
        assert_eq!(r["power_state"], state, "{r}");
        let n = site.node("ip2");
        assert_eq!(n["power_state"], state);
        assert_eq!(n["target_power_state"], Value::Null);
        let bmc = if state == "power on" { "Chassis Power is on" } else { "Chassis Power is off" };
        assert_eq!(ipmi_power(port), bmc, "after power {action}");
    }

    // The simulator keeps the device, not the persistent flag.
    for (device, persistent, shown) in [
        ("disk", true, "Force Boot from default Hard-Drive"),
        ("pxe", false, "Force PXE"),
        ("bios", true, "Force Boot into BIOS Setup"),
        ("cdrom", false, "Force Boot from CD/DVD"),
    ] {
        let mut args = vec!["node", "boot-device", "set", "ip2", device];
        if persistent {
            args.push("--persistent");
        }
        assert_ok(&site.timed(&format!("ipmi boot-device {device}"), &args, 0));
        assert_eq!(site.node("ip2")["boot_device"], device);
        assert_eq!(ipmi_boot_device(port), shown);
    }

    let history = site.history("ip2");
    let events: Vec<&str> = history.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(
        events,
        ["power reboot", "power reboot", "power soft-off", "power on", "power off"]
            .into_iter()
            .chain(["boot device"; 4])
            .collect::<Vec<_>>()
    );
    assert!(history.iter().all(|h| h.3.is_none()), "{history:?}");
    site.finish(PEER_PASSWORD_LEAKS);
}

#[test]
fn ipmi_faults_are_named_and_the_daemon_keeps_serving_other_nodes() {
    let port = ipmi_port(2);
    let silent = peers::silent_udp();
    let silent_port = silent.local_addr().unwrap().port();
    let nothing = peers::closed_udp_port();
    let site = Site::start(2);
    // IPMI 2.0 passwords are at most 20 bytes.
    let secrets = ["wr0ngSecret-ip-4711", "S3cret-hung-ipmi", "S3cret-nothing-ipmi"];
    site.ipmi("ip-badpw", port, secrets[0], &["timeout=5"]);
    // A silent BMC fails its reachability probe after connect_timeout,
    // long enough here for the other nodes to be served meanwhile.
    site.ipmi("ip-hung", silent_port, secrets[1], &["timeout=10", "connect_timeout=8"]);
    // Nothing listening: the probe is refused at once (ICMP port unreachable).
    site.ipmi("ip-nothing", nothing, secrets[2], &["timeout=6"]);
    site.ipmi("ip-good", ipmi_port(3), PASSWORD, &["timeout=15"]);

    let bad = ["ip-badpw", "ip-hung", "ip-nothing"];
    let mut events = Events::follow(&site.d);
    let started = Instant::now();
    let nodes = bad.join(",");
    let args = ["node", "manage", nodes.as_str(), "--wait"];
    let bulk = site.spawn(&args);
    wait_for_starts(&mut events, &bad);

    // While the silent BMC is still probed, other nodes, fake and IPMI, are
    // served at once.
    let served = Instant::now();
    assert_ok(&site.timed("fake manage while IPMI BMCs fail", &["node", "manage", "demo1", "--wait"], 0));
    assert_ok(&site.timed("fake power on while IPMI BMCs fail", &["node", "power", "on", "demo2", "--wait"], 0));
    assert_ok(&site.timed("ipmi power on while IPMI BMCs fail", &["node", "power", "on", "ip-good", "--wait"], 0));
    let n = site.node("ip-hung");
    println!("[bmc] while IPMI BMCs failed, 3 operations took {:.2?}", served.elapsed());
    assert_eq!(n["provision_state"], "verifying", "the other nodes were served while the silent BMC was probed");
    assert_eq!(ipmi_power(ipmi_port(3)), "Chassis Power is on");

    let out = site.collect(bulk, &args, 1);
    println!("[bmc] ipmi faults: manage of 3 failing BMCs took {:.2} s", started.elapsed().as_secs_f64());
    let by_node = |name: &str| out.as_array().unwrap().iter().find(|r| r["node"] == name).cloned().unwrap();
    let badpw = assert_driver_error(
        &by_node("ip-badpw"),
        "ip-badpw",
        &format!("the BMC at 127.0.0.1:{port} refused the credentials"),
    );
    let hung = assert_driver_error(
        &by_node("ip-hung"),
        "ip-hung",
        &format!(
            "cannot reach the BMC at 127.0.0.1:{silent_port}: no answer to an IPMI probe within 8 s (connect_timeout)"
        ),
    );
    let unreachable = assert_driver_error(
        &by_node("ip-nothing"),
        "ip-nothing",
        &format!("cannot reach the BMC at 127.0.0.1:{nothing}: nothing listens on its UDP port"),
    );
    for (name, message) in [("ip-badpw", &badpw), ("ip-hung", &hung), ("ip-nothing", &unreachable)] {
        let n = site.node(name);
        assert_eq!(n["provision_state"], "enroll", "{n}");
        assert_eq!(n["reservation"], Value::Null);
        let last = n["last_error"].as_str().unwrap();
        assert_eq!(message, &format!("node {name}: {last}"));
        let history = site.history(name);
        assert_eq!(events_of(&history), [("manage", "verifying"), ("fail", "enroll")], "{name}");
        assert_eq!(history[1].3.as_deref(), Some(last));
    }

    drop(silent);
    let mut all = secrets.to_vec();
    all.extend_from_slice(PEER_PASSWORD_LEAKS);
    site.finish(&all);
}

/// pyghmi's server keeps each client's session, keyed by its UDP port, for
/// ever. A new client that got an old client's port and sent twice before
/// its first packet was handled (a retransmission, on a busy machine) once
/// ended the simulator's loop, and every IPMI test of the run failed with
/// it. `scripts/peers/ipmi-bmc.sh` mends that; this floods a simulator of
/// its own with such clients (bounded) and asks it afterwards.
#[test]
fn the_ipmi_simulator_outlives_clients_that_reuse_old_clients_ports() {
    let port = peers::ipmi_for_port_reuse().port;
    let clients: Vec<UdpSocket> = (0..20)
        .map(|_| {
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client.set_nonblocking(true).unwrap();
            client
        })
        .collect();
    let mut reply = [0u8; 512];
    for round in 0..2000u32 {
        for client in &clients {
            // A full receive buffer drops datagrams; that is part of a flood.
            let _ = client.send_to(&rmcp_plus_open_session_request(round), ("127.0.0.1", port));
            // Then what every IPMI client (and kiln's probe) starts with.
            for _ in 0..3 {
                let _ = client.send_to(&GET_CHANNEL_AUTH_CAPABILITIES, ("127.0.0.1", port));
            }
        }
        for client in &clients {
            while client.recv(&mut reply).is_ok() {}
        }
    }
    assert_eq!(ipmi_power(port), "Chassis Power is off", "the simulator answers after the flood");
}

/// An RMCP+ Open Session Request (payload type 0x10) for cipher suite 3,
/// which makes the simulator keep a session for the sender's port.
fn rmcp_plus_open_session_request(tag: u32) -> Vec<u8> {
    let mut body = vec![tag as u8, 4, 0, 0];
    body.extend_from_slice(&tag.to_le_bytes());
    body.extend_from_slice(&[0, 0, 0, 8, 1, 0, 0, 0, 1, 0, 0, 8, 1, 0, 0, 0, 2, 0, 0, 8, 1, 0, 0, 0]);
    let mut packet = vec![0x06, 0x00, 0xff, 0x07, 0x06, 0x10, 0, 0, 0, 0, 0, 0, 0, 0];
    packet.extend_from_slice(&(body.len() as u16).to_le_bytes());
    packet.extend_from_slice(&body);
    packet
}

// ----- both -------------------------------------------------------------------

/// A node's driver actor is shared only by nodes naming the same BMC with
/// the same settings, so a corrected password takes effect at once.
#[test]
fn a_corrected_password_is_used_from_the_next_operation_on() {
    let redfish = peers::redfish();
    let port = ipmi_port(4);
    let site = Site::start(0);
    let wrong = "wr0ng-fixed-0815";
    site.redfish("rf-fix", &redfish.url(), &redfish.system_id(5), wrong, &["timeout=20"]);
    site.ipmi("ip-fix", port, wrong, &["timeout=15"]);
    let out = site.run(&["node", "manage", "rf-fix,ip-fix", "--wait"], 1);
    for r in out.as_array().unwrap() {
        assert_driver_error(r, r["node"].as_str().unwrap(), "refused the credentials");
    }
    // The operator fixes the password; the next operation uses it.
    let pw = site.d.dir.path().join("right.pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    for name in ["rf-fix", "ip-fix"] {
        site.ok(&["node", "set", name, "--password-file", pw.to_str().unwrap()]);
        assert_eq!(site.node(name)["driver_info"]["password"], "******");
    }
    let out = site.run(&["node", "manage", "rf-fix,ip-fix", "--wait"], 0);
    for r in out.as_array().unwrap() {
        assert_ok(r);
        assert_eq!(r["provision_state"], "manageable", "{r}");
    }
    for name in ["rf-fix", "ip-fix"] {
        assert_eq!(site.node(name)["last_error"], Value::Null);
    }
    let mut all = vec![wrong];
    all.extend_from_slice(PEER_PASSWORD_LEAKS);
    site.finish(&all);
}

/// Switches the emulator's system `node-<i>` off behind kiln's back (with
/// `curl`), and waits (bounded) until the emulator reports it off.
fn force_off_behind_kilns_back(peer: &peers::Peer, i: usize) {
    let url = format!("{}{}/Actions/ComputerSystem.Reset", peer.url(), peer.system_id(i));
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-u", &format!("{}:{}", peers::USER, PASSWORD)])
        .args(["-H", "Content-Type: application/json", "-d", r#"{"ResetType": "ForceOff"}"#, &url])
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {url}");
    // The emulator applies a reset 1 to 11 s after accepting it; no event
    // says when, so its state is read until it says Off (at most ~60 s).
    for _ in 0..120 {
        if peer.system(i)["PowerState"] == "Off" {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("the emulator never switched node-{i} off");
}

#[test]
fn power_sync_follows_the_emulator_and_a_dead_bmc_goes_to_maintenance_and_back() {
    let peer = peers::redfish();
    // One failed read is enough: an unreachable BMC is backed off after its
    // first failure (tests/it/unreachable.rs), so no second read comes soon.
    let site = Site::start_with(0, &["--no-periodic", "--set", "power_state_sync_max_retries=1"]);
    site.redfish("rf6", &peer.url(), &peer.system_id(6), PASSWORD, &["power_timeout=40", "timeout=5"]);
    // Power sync reads managed nodes, not nodes in enroll.
    site.ok(&["node", "manage", "rf6", "--wait"]);
    assert_ok(&site.timed("redfish power on", &["node", "power", "on", "rf6", "--wait"], 0));
    assert_eq!(site.node("rf6")["power_state"], "power on");

    force_off_behind_kilns_back(peer, 6);
    let run = site.ok(&["periodic", "run", "power_sync"]);
    assert!(run[0]["last_result"].as_str().unwrap().contains("1 updated"), "{run}");
    assert_eq!(site.node("rf6")["power_state"], "power off");

    // The BMC goes away: a failed read puts the node in maintenance.
    let closed = peers::closed_tcp_port();
    let dead = format!("http://127.0.0.1:{}", closed.port());
    site.ok(&["node", "set", "rf6", "--driver-info", &format!("address={dead}")]);
    let status = site.run(&["node", "power", "status", "rf6"], 1);
    assert_driver_error(&status[0], "rf6", "cannot reach");
    for _ in 0..3 {
        site.ok(&["periodic", "run", "power_sync"]);
    }
    let n = site.node("rf6");
    assert_eq!(n["maintenance"], true, "{n}");
    assert_eq!(n["fault"], "power failure");
    assert!(n["last_error"].as_str().unwrap().contains("cannot reach"), "{n}");

    // It comes back: recovery takes the node out of maintenance.
    site.ok(&["node", "set", "rf6", "--driver-info", &format!("address={}", peer.url())]);
    let run = site.ok(&["periodic", "run", "power_failure_recovery"]);
    assert!(run[0]["last_result"].as_str().unwrap().starts_with("1 nodes"), "{run}");
    let n = site.node("rf6");
    assert_eq!(n["maintenance"], false, "{n}");
    assert_eq!(n["fault"], Value::Null);
    assert_eq!(n["power_state"], "power off");
    let log = site.finish(PEER_PASSWORD_LEAKS);
    // The power status read ran outside any task: its driver lines name
    // the node all the same.
    let driver_lines = driver_lines_of(&log, "rf6");
    assert!(driver_lines.iter().any(|l| l.contains("action=power status")), "{driver_lines:?}");
}
