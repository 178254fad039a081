//! The Ironic-compatible HTTP API driven by Ironic's own clients: the
//! `baremetal` command of python-ironicclient 6.3.0 and openstacksdk 4.22,
//! installed by `scripts/ironic-clients.sh` in a venv under `target/`
//! (network needed once; a failed install fails the tests, it never skips
//! them). Every change made through the API is checked with `kiln node
//! show` on the same site; bad requests are sent as raw HTTP and the store
//! is checked unchanged.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::harness::Daemon;

/// The longest one client command may take (a `--wait` included).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The clients' venv, installed once per test run.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let out = run(Command::new("bash").arg(repo().join("scripts/ironic-clients.sh")), "ironic-clients.sh");
        assert!(
            out.status.success(),
            "installing the Ironic clients failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Runs a command to its end, killing it past [`CLIENT_TIMEOUT`].
fn run(cmd: &mut Command, what: &str) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect(what);
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    let (done, watched) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let late = watched.recv_timeout(CLIENT_TIMEOUT) == Err(std::sync::mpsc::RecvTimeoutError::Timeout);
        if late {
            // SAFETY: kill takes no pointer; the pid is our child's, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        late
    });
    let out = child.wait_with_output().expect(what);
    let _ = done.send(());
    assert!(!watchdog.join().unwrap(), "{what} did not finish within {CLIENT_TIMEOUT:?}; killed");
    out
}

/// A daemon serving the API on a free loopback port, and its URL.
pub(crate) fn start(demo: usize, envs: &[(&str, &str)]) -> (Daemon, String) {
    let mut d = Daemon::start_env(demo, &["--api-addr", "127.0.0.1:0"], envs);
    let line = d.wait_for_log("serving the Ironic API");
    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("addr=")).expect("addr= in the log line");
    (d, format!("http://{addr}"))
}

/// `baremetal ARGS` against `url`; `auth` are the auth options.
fn baremetal_with(url: &str, auth: &[&str], args: &[&str]) -> Output {
    let mut cmd = Command::new(venv().join("bin/baremetal"));
    cmd.args(["--os-endpoint", url]).args(auth).args(args).env("HOME", std::env::temp_dir());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OS_")) {
        cmd.env_remove(k);
    }
    run(&mut cmd, &format!("baremetal {args:?}"))
}

/// `baremetal ARGS` without auth; panics unless it succeeds.
fn baremetal(url: &str, args: &[&str]) -> String {
    let out = baremetal_with(url, &["--os-auth-type", "none"], args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "baremetal {args:?} failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn baremetal_json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-f", "json"]);
    let text = baremetal(url, &all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("baremetal {args:?} printed no JSON ({e}): {text}"))
}

/// `ironic_sdk.py URL SCENARIO ARGS`: its JSON lines.
fn sdk(url: &str, scenario: &str, args: &[&str]) -> Vec<Value> {
    let script = repo().join("tests/it/ironic_sdk.py");
    let out = run(Command::new(venv().join("bin/python")).arg(script).arg(url).arg(scenario).args(args), scenario);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sdk {scenario} failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// One raw HTTP/1.1 request: (status, headers lowercased, body).
pub(crate) fn http(
    url: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // A server may answer (and close) before a refused body is all sent.
    let _ = s.write_all(body);
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header block in {text:?}"));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// The faultstring of Ironic's error body.
/// `PATCH /v1/nodes/{node}` with the JSON patch `ops`: the status and body.
fn patch(url: &str, node: &str, ops: &str) -> (u16, String) {
    let (status, _, body) =
        http(url, "PATCH", &format!("/v1/nodes/{node}"), &[("Content-Type", "application/json")], ops.as_bytes());
    (status, body)
}

fn fault(body: &str) -> String {
    let outer: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let inner: Value = serde_json::from_str(outer["error_message"].as_str().expect("error_message")).unwrap();
    assert_eq!(inner["debuginfo"], Value::Null);
    inner["faultstring"].as_str().expect("faultstring").to_string()
}

#[test]
fn the_baremetal_command_drives_a_node_through_its_life() {
    let (d, url) = start(0, &[]);
    let created = baremetal_json(&url, &["node", "create", "--driver", "fake-hardware", "--name", "bm1"]);
    assert_eq!(created["provision_state"], "enroll");
    assert_eq!(created["driver"], "fake-hardware");
    let uuid = created["uuid"].as_str().unwrap().to_string();
    let n = d.node("bm1");
    assert_eq!((n["uuid"].as_str(), n["driver"].as_str()), (Some(uuid.as_str()), Some("fake")));

    let list = baremetal_json(&url, &["node", "list"]);
    assert_eq!(list[0]["uuid"], uuid.as_str(), "{list}");
    assert_eq!(list[0]["provision_state"], "enroll", "{list}");

    baremetal(&url, &["node", "set", "bm1", "--property", "cpus=4", "--property", "memory_mb=8192"]);
    let shown = baremetal_json(&url, &["node", "show", "bm1"]);
    assert_eq!(shown["properties"], serde_json::json!({"cpus": "4", "memory_mb": "8192"}));
    assert_eq!(d.node("bm1")["properties"], shown["properties"]);

    for (verb, state) in [("manage", "manageable"), ("provide", "available"), ("deploy", "active")] {
        baremetal(&url, &["node", verb, "bm1", "--wait", "120"]);
        assert_eq!(d.state("bm1"), state, "after {verb}");
        assert_eq!(baremetal_json(&url, &["node", "show", "bm1"])["provision_state"], state);
    }
    for (verb, state) in [("off", "power off"), ("on", "power on")] {
        baremetal(&url, &["node", "power", verb, "bm1", "--power-timeout", "120"]);
        assert_eq!(d.node("bm1")["power_state"], state);
    }
    baremetal(&url, &["node", "maintenance", "set", "bm1", "--reason", "fan noise"]);
    let n = d.node("bm1");
    assert_eq!((n["maintenance"].as_bool(), n["maintenance_reason"].as_str()), (Some(true), Some("fan noise")));
    baremetal(&url, &["node", "maintenance", "unset", "bm1"]);
    assert_eq!(d.node("bm1")["maintenance"], false);

    baremetal(&url, &["port", "create", "52:54:00:aa:bb:01", "--node", &uuid]);
    let ports = baremetal_json(&url, &["port", "list"]);
    assert_eq!(ports[0]["address"], "52:54:00:aa:bb:01", "{ports}");
    let kiln_ports = d.json(&["port", "list"]);
    assert_eq!(kiln_ports[0]["address"], "52:54:00:aa:bb:01");
    assert_eq!(kiln_ports[0]["node"], "bm1");

    baremetal(&url, &["node", "undeploy", "bm1", "--wait", "120"]);
    assert_eq!(d.state("bm1"), "available");
    baremetal(&url, &["port", "delete", "52:54:00:aa:bb:01"]);
    assert_eq!(d.json(&["port", "list"]), serde_json::json!([]));
    baremetal(&url, &["node", "delete", "bm1"]);
    let out = d.cli(&["node", "show", "bm1"]);
    assert_eq!(out.status.code(), Some(2), "bm1 is gone: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(baremetal_json(&url, &["node", "list"]), serde_json::json!([]));
    let drivers = baremetal(&url, &["driver", "list"]);
    assert!(drivers.contains("fake-hardware") && drivers.contains("redfish"), "{drivers}");
}

#[test]
fn openstacksdk_provisions_and_waits_as_with_ironic() {
    let (d, url) = start(0, &[]);
    let steps = sdk(&url, "lifecycle", &["sdk1"]);
    let uuid = steps[0]["uuid"].as_str().unwrap();
    assert_eq!(d.node("sdk1")["uuid"], uuid);
    let states: Vec<&str> = steps[1..5].iter().map(|s| s["provision_state"].as_str().unwrap()).collect();
    assert_eq!(states, ["manageable", "available", "active", "available"]);
    assert_eq!(steps[5]["power_state"], "power on");
    assert_eq!(steps[6]["power_state"], "power off");
    let n = d.node("sdk1");
    assert_eq!((n["provision_state"].as_str(), n["power_state"].as_str()), (Some("available"), Some("power off")));
    assert_eq!(n["properties"]["cpus"], "8");

    // 100 nodes waited for together; pages of 7 followed to the end.
    let steps = sdk(&url, "many", &["w", "100"]);
    assert_eq!(steps[0], serde_json::json!({"step": "manage", "states": ["manageable"], "count": 100}));
    assert_eq!(steps[1], serde_json::json!({"step": "provide", "states": ["available"], "count": 100}));
    assert_eq!(steps[2], serde_json::json!({"step": "list", "count": 100, "uuids": 100}));
    let states = crate::harness::states(&d);
    assert_eq!(states.values().filter(|s| *s == "available").count(), 101, "{states:?}");
}

#[test]
fn a_node_a_running_task_holds_answers_409_naming_the_task() {
    let (d, url) = start(1, &[]);
    d.json(&["node", "set", "demo1", "--driver-info", "latency_ms=60000"]);
    let mut events = crate::harness::Events::follow(&d);
    d.json(&["node", "power", "on", "demo1"]);
    events.started("demo1");
    let steps = sdk(&url, "locked", &["demo1"]);
    assert_eq!(steps[0]["status"], 409, "{steps:?}");
    assert!(steps[0]["message"].as_str().unwrap().contains("locked by 'power on'"), "{steps:?}");
    assert_eq!(d.node("demo1")["properties"], serde_json::json!({}), "nothing changed");
    // A provision target too, over raw HTTP.
    let (status, _, body) = http(
        &url,
        "PUT",
        "/v1/nodes/demo1/states/provision",
        &[("Content-Type", "application/json")],
        br#"{"target": "manage"}"#,
    );
    assert_eq!(status, 409);
    assert!(fault(&body).contains("locked by 'power on'"), "{body}");
    assert_eq!(d.state("demo1"), "enroll");
}

#[test]
fn openstacksdk_retries_a_409_until_the_task_holding_the_node_ends() {
    let (mut d, url) = start(1, &[("KILN_METRICS_ADDR", "127.0.0.1:0")]);
    // A task of ten seconds: longer than the client takes to start, shorter
    // than openstacksdk's retries of a 409 (5, backing off from half a
    // second: 15.5 s in all).
    d.json(&["node", "set", "demo1", "--driver-info", "latency_ms=10000"]);
    let mut events = crate::harness::Events::follow(&d);
    d.json(&["node", "power", "on", "demo1"]);
    events.started("demo1");
    let steps = sdk(&url, "retried", &["demo1"]);
    assert_eq!(steps[0]["provision_state"], "manageable", "{steps:?}");
    assert_eq!(d.state("demo1"), "manageable");
    let line = d.wait_for_log("serving metrics");
    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("addr=")).unwrap();
    let (_, _, metrics) = http(&format!("http://{addr}"), "GET", "/metrics", &[], b"");
    let conflicts = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("kiln_api_requests_total{route=\"/v1/nodes/{node}/states/provision\",status=\"409\"} ")
        })
        .unwrap_or_else(|| panic!("no 409 was answered:\n{metrics}"));
    assert!(conflicts.parse::<u64>().unwrap() >= 1, "{conflicts}");
}

#[test]
fn bad_requests_get_ironics_errors_and_change_nothing() {
    let (d, url) = start(1, &[("KILN_MAX_FRAME", "65536")]);
    let before = d.json(&["node", "list"]);
    let json = [("Content-Type", "application/json")];
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/v1/nodes", b"{not json".to_vec(), 400, "not valid JSON"),
        ("POST", "/v1/nodes", br#"{"driver": "fake-hardware", "bogus": 1}"#.to_vec(), 400, "Unknown attribute"),
        ("POST", "/v1/nodes", br#"{"driver": "ilo"}"#.to_vec(), 400, "ilo"),
        ("POST", "/v1/nodes", br#"{"name": "x"}"#.to_vec(), 400, "driver"),
        ("PATCH", "/v1/nodes/demo1", br#"{"op": "add"}"#.to_vec(), 400, "list of operations"),
        ("PATCH", "/v1/nodes/demo1", br#"[{"op": "add", "path": "/bogus", "value": 1}]"#.to_vec(), 400, "bogus"),
        (
            "PATCH",
            "/v1/nodes/demo1",
            br#"[{"op": "add", "path": "/properties/a", "value": "1"}, {"op": "move", "path": "/x"}]"#.to_vec(),
            400,
            "move",
        ),
        (
            "PATCH",
            "/v1/nodes/demo1",
            br#"[{"op": "remove", "path": "/properties/none"}]"#.to_vec(),
            400,
            "non-existent",
        ),
        ("PUT", "/v1/nodes/demo1/states/provision", br#"{"target": "active"}"#.to_vec(), 400, "allowed here: "),
        ("PUT", "/v1/nodes/demo1/states/provision", br#"{"target": "explode"}"#.to_vec(), 400, "explode"),
        ("PUT", "/v1/nodes/demo1/states/power", br#"{"target": "power sideways"}"#.to_vec(), 400, "sideways"),
        ("GET", "/v1/nodes/nope", Vec::new(), 404, "nope"),
        ("GET", "/v1/nodes?fields=uuid,secret", Vec::new(), 400, "secret"),
        ("GET", "/v1/nodes?limit=-3", Vec::new(), 400, "Limit"),
        ("GET", "/v1/nodes?rack=r1", Vec::new(), 400, "Unknown argument: \"rack\""),
        ("GET", "/v1/nodes?retired=maybe", Vec::new(), 400, "retired"),
        (
            "PUT",
            "/v1/nodes/demo1/states/provision",
            br#"{"target": "manage", "clean_steps": [{"interface": "deploy", "step": "erase_devices"}]}"#.to_vec(),
            400,
            "does not take clean_steps",
        ),
        ("GET", "/v1/chassis", Vec::new(), 404, "kiln keeps no chassis"),
        ("GET", "/v1/portgroups", Vec::new(), 404, "kiln port group"),
        ("POST", "/v1/nodes", vec![b' '; 100_000], 413, "larger than"),
    ];
    for (method, path, body, status, needle) in cases {
        let (got, _, text) = http(&url, method, path, &json, &body);
        assert_eq!(got, status, "{method} {path}: {text}");
        let f = fault(&text);
        assert!(f.contains(needle), "{method} {path}: {f}");
    }
    for (version, status) in [("1.1", 200), ("latest", 200), ("1.109", 200), ("1.110", 406), ("2.0", 406), ("one", 406)]
    {
        let (got, head, body) = http(&url, "GET", "/v1/nodes", &[("X-OpenStack-Ironic-API-Version", version)], b"");
        assert_eq!(got, status, "{version}: {body}");
        assert!(head.contains("x-openstack-ironic-api-minimum-version: 1.1"), "{head}");
        assert!(head.contains("x-openstack-ironic-api-maximum-version: 1.109"), "{head}");
        if status == 406 {
            assert!(fault(&body).contains("1.109"), "{body}");
        } else {
            let served = if version == "latest" { "1.109" } else { version };
            assert!(head.contains(&format!("x-openstack-ironic-api-version: {served}")), "{head}");
        }
    }
    // Every body that changes something, with JSON of every wrong shape:
    // refused as the client's fault, never a server error or a panic.
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let garbage: Vec<&[u8]> =
        vec![b"null", b"[]", b"{}", b"123", b"\"text\"", b"{\"target\": 5}", b"\xff\xfe", nested.as_bytes()];
    let changes = [
        ("POST", "/v1/nodes"),
        ("PATCH", "/v1/nodes/demo1"),
        ("PUT", "/v1/nodes/demo1/states/provision"),
        ("PUT", "/v1/nodes/demo1/states/power"),
        ("PUT", "/v1/nodes/demo1/management/boot_device"),
        ("POST", "/v1/ports"),
        ("POST", "/v1/kiln/jobs"),
    ];
    for (method, path) in changes {
        for body in &garbage {
            let (got, _, text) = http(&url, method, path, &json, body);
            assert_eq!(got, 400, "{method} {path} {}: {text}", String::from_utf8_lossy(body));
        }
    }
    assert_eq!(d.json(&["node", "list"]), before, "the store is unchanged");
}

#[test]
fn http_basic_admits_the_right_password_only_and_counts_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("operator:{}\n", bcrypt::hash("s3cret-pw", 4).unwrap())).unwrap();
    let file = htpasswd.to_str().unwrap();
    let (mut d, url) =
        start(1, &[("KILN_API_AUTH", "http_basic"), ("KILN_API_HTPASSWD", file), ("KILN_METRICS_ADDR", "127.0.0.1:0")]);
    let basic = |user: &str, pw: &str| {
        ["--os-auth-type", "http_basic", "--os-username", user, "--os-password", pw].map(String::from)
    };
    let good = basic("operator", "s3cret-pw");
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let out = baremetal_with(&url, &good, &["node", "show", "demo1", "-f", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["name"], "demo1");
    let steps = sdk(&url, "list", &["--user=operator:s3cret-pw"]);
    assert_eq!(steps[0]["names"], serde_json::json!(["demo1"]));

    let bad = basic("operator", "wrong-pw");
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let out = baremetal_with(&url, &bad, &["node", "manage", "demo1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, head, _) = http(&url, "GET", "/v1/nodes", &[], b"");
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: basic"), "{head}");
    // Discovery stays open, as Ironic keeps it.
    assert_eq!(http(&url, "GET", "/", &[], b"").0, 200);
    assert_eq!(d.state("demo1"), "enroll");

    let line = d.wait_for_log("serving metrics");
    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("addr=")).unwrap();
    let (_, _, metrics) = http(&format!("http://{addr}"), "GET", "/metrics", &[], b"");
    let refused = metrics.lines().find_map(|l| l.strip_prefix("kiln_api_auth_failures_total ")).expect("the counter");
    assert!(refused.parse::<u64>().unwrap() >= 2, "{refused}");
    assert!(metrics.contains("kiln_api_requests_total{route=\"/v1/nodes/{node}\",status=\"200\"}"), "{metrics}");
    let logs = d.log_lines().join("\n");
    assert!(!logs.contains("s3cret-pw") && !logs.contains("wrong-pw"), "a password was logged");
}

#[test]
fn api_auth_none_is_refused_off_loopback() {
    let out = Command::new(crate::harness::KILN)
        .args(["serve", "--check-config", "--api-addr", "0.0.0.0:6385"])
        .env_remove("KILN_API_AUTH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("api_auth") && e.contains("loopback"), "{e}");
    let out = Command::new(crate::harness::KILN)
        .args(["serve", "--check-config", "--api-addr", "0.0.0.0:6385", "--set", "api_auth=http_basic"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("api_htpasswd"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn kiln_jobs_run_a_node_set_verb_in_one_request() {
    let (d, url) = start(3, &[]);
    let job = "ops:\n  - {op: manage, nodes: \"demo[1-3]\"}\n";
    let (status, head, body) =
        http(&url, "POST", "/v1/kiln/jobs", &[("Content-Type", "application/yaml")], job.as_bytes());
    assert_eq!(status, 202, "{body}");
    let submitted: Value = serde_json::from_str(&body).unwrap();
    let id = submitted["id"].as_u64().expect("a job id").to_string();
    assert!(head.contains(&format!("location: {url}/v1/kiln/jobs/{id}")), "{head}");
    let out = d.cli(&["job", "watch", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (status, _, body) = http(&url, "GET", &format!("/v1/kiln/jobs/{id}"), &[], b"");
    assert_eq!(status, 200, "{body}");
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["status"], "success", "{shown}");
    assert!(shown["log"].as_array().is_some_and(|l| !l.is_empty()), "{shown}");
    let states = crate::harness::states(&d);
    assert!(states.values().all(|s| s == "manageable"), "{states:?}");

    // Its node history, in Ironic's shape.
    let (_, _, body) = http(&url, "GET", "/v1/nodes/demo1/history", &[], b"");
    let history: Value = serde_json::from_str(&body).unwrap();
    let events: Vec<&str> =
        history["history"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert!(events.contains(&"manage: enroll -> verifying"), "{events:?}");

    // A bad job, a job that is not there, a method a path does not take.
    let (status, _, body) = http(&url, "POST", "/v1/kiln/jobs", &[], b"ops: [{op: explode, nodes: demo1}]");
    assert_eq!(status, 400, "{body}");
    assert!(fault(&body).contains("explode"), "{body}");
    assert_eq!(http(&url, "GET", "/v1/kiln/jobs/999", &[], b"").0, 404);
    let (status, _, body) = http(&url, "DELETE", "/v1/nodes", &[], b"");
    assert_eq!(status, 405, "{body}");
    assert_eq!(crate::harness::states(&d).len(), 3);
}

/// A self-signed certificate for 127.0.0.1 and its key, made by `openssl`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = run(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl req (the openssl package makes the test's certificate)",
    );
    assert!(out.status.success(), "openssl failed: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

#[test]
fn tls_serves_the_clients_and_bad_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let mut d =
        Daemon::start_env(0, &["--api-addr", "127.0.0.1:0"], &[("KILN_API_TLS_CERT", cert), ("KILN_API_TLS_KEY", key)]);
    let line = d.wait_for_log("serving the Ironic API");
    let url = line.split_whitespace().find_map(|w| w.strip_prefix("url=")).expect("url=").trim_end_matches("/v1");
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");
    let tls = ["--os-auth-type", "none", "--os-cacert", cert];
    let out = baremetal_with(url, &tls, &["node", "create", "--driver", "fake-hardware", "--name", "tls1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d.state("tls1"), "enroll");
    let out = baremetal_with(url, &tls, &["node", "list", "-f", "value", "-c", "name"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tls1");

    // Plain HTTP gets no answer of the API.
    let addr = url.trim_start_matches("https://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /v1/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("tls1"), "plain HTTP was answered");

    let check = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(crate::harness::KILN);
        cmd.args(["serve", "--check-config", "--api-addr", "127.0.0.1:6385"]).envs(envs.iter().copied());
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{envs:?} was accepted");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(check(&[("KILN_API_TLS_CERT", cert)]).contains("api_tls_key"));
    let e = check(&[("KILN_API_TLS_CERT", key), ("KILN_API_TLS_KEY", key)]);
    assert!(e.contains("KILN_API_TLS_CERT") && e.contains("no certificate"), "{e}");
}

#[test]
fn a_redfish_node_on_the_emulator_is_deployed_through_the_api() {
    use crate::peers::{self, PASSWORD, USER};
    let peer = peers::redfish();
    let (d, url) = start(0, &[]);
    let (address, system) =
        (format!("redfish_address={}", peer.url()), format!("redfish_system_id={}", peer.system_id(7)));
    let (user, password) = (format!("redfish_username={USER}"), format!("redfish_password={PASSWORD}"));
    let mut args = vec!["node", "create", "--driver", "redfish", "--name", "rf-api"];
    // Ironic's driver_info names, and two of kiln's own (the emulator
    // applies a power change 1 to 11 s after it accepted it).
    for kv in [address.as_str(), &system, &user, &password, "power_timeout=40", "timeout=20"] {
        args.extend(["--driver-info", kv]);
    }
    let created = baremetal_json(&url, &args);
    assert_eq!(created["driver"], "redfish");
    assert_eq!(created["driver_info"]["password"], "******", "{created}");
    let n = d.node("rf-api");
    assert_eq!(
        (n["driver_info"]["address"].as_str(), n["driver_info"]["password"].as_str()),
        (Some(peer.url().as_str()), Some("******"))
    );

    // The image to boot from virtual media, set as Ironic's users set it.
    let images = crate::vmedia::ImageServer::start();
    let image = format!("image_url={}", images.url());
    baremetal(&url, &["node", "set", "rf-api", "--instance-info", &image]);
    for (verb, state) in [("manage", "manageable"), ("provide", "available"), ("deploy", "active")] {
        baremetal(&url, &["node", verb, "rf-api", "--wait", "280"]);
        assert_eq!(d.state("rf-api"), state, "after {verb}");
    }
    let n = d.node("rf-api");
    assert_eq!((n["power_state"].as_str(), n["boot_device"].as_str()), (Some("power on"), Some("cdrom")), "{n}");
    assert_eq!(peer.system(7)["PowerState"], "On");
    let cd = crate::vmedia::virtual_cd(peer, 7);
    assert_eq!((cd["Inserted"].as_bool(), cd["Image"].as_str()), (Some(true), Some(images.url().as_str())), "{cd}");
    baremetal(&url, &["node", "undeploy", "rf-api", "--wait", "280"]);
    let n = d.node("rf-api");
    assert_eq!((n["provision_state"].as_str(), n["power_state"].as_str()), (Some("available"), Some("power off")));
    assert_eq!(peer.system(7)["PowerState"], "Off");
    assert_eq!(crate::vmedia::virtual_cd(peer, 7)["Inserted"], false);
}

#[test]
fn the_baremetal_command_lists_with_filters_fields_and_limits() {
    let (d, url) = start(3, &[]);
    d.json(&["node", "manage", "demo1", "--wait"]);
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["node", "list", "-f", "value", "-c", "name"];
        all.extend_from_slice(args);
        let mut n: Vec<String> = baremetal(&url, &all).lines().map(str::to_string).collect();
        n.sort();
        n
    };
    assert_eq!(names(&["--provision-state", "manageable"]), ["demo1"]);
    assert_eq!(names(&["--provision-state", "enroll"]), ["demo2", "demo3"]);
    assert!(names(&["--maintenance"]).is_empty());
    assert!(names(&["--associated"]).is_empty());
    assert_eq!(names(&["--unassociated", "--driver", "fake-hardware"]), ["demo1", "demo2", "demo3"]);
    assert_eq!(names(&["--limit", "2"]).len(), 2);
    // Ironic's filters on fields kiln keeps empty match no node when they
    // ask for a value; the fault filter compares the node's fault.
    assert!(names(&["--resource-class", "gpu"]).is_empty());
    assert!(names(&["--owner", "team-a"]).is_empty());
    assert!(names(&["--fault", "power failure"]).is_empty());
    assert_eq!(names(&["--no-retired"]).len(), 3);
    assert!(names(&["--retired"]).is_empty());
    let listed = baremetal_json(&url, &["node", "list", "--fields", "uuid", "name"]);
    let keys: Vec<Vec<&String>> =
        listed.as_array().unwrap().iter().map(|n| n.as_object().unwrap().keys().collect()).collect();
    assert!(keys.iter().all(|k| k.len() == 2), "{listed}");
    let shown = baremetal_json(&url, &["node", "show", "demo1", "--fields", "name", "provision_state"]);
    assert_eq!(shown, serde_json::json!({"name": "demo1", "provision_state": "manageable"}));
    let kiln = d.node("demo1");
    assert_eq!(kiln["provision_state"], "manageable");
}

#[test]
fn the_clients_change_name_driver_extra_and_instance_info_as_ironic_does() {
    let (d, url) = start(1, &[]);
    baremetal(&url, &["node", "create", "--driver", "fake-hardware", "--name", "bm1", "--extra", "rack=r0"]);
    assert_eq!(d.node("bm1")["extra"], serde_json::json!({"rack": "r0"}));
    baremetal(
        &url,
        &[
            "node",
            "set",
            "bm1",
            "--extra",
            "rack=r7",
            "--extra",
            "slot=4",
            "--instance-info",
            "image_url=http://127.0.0.1:1/a.iso",
            "--instance-info",
            "root_gb=10",
        ],
    );
    let shown = baremetal_json(&url, &["node", "show", "bm1"]);
    let n = d.node("bm1");
    assert_eq!(n["extra"], shown["extra"]);
    assert_eq!(n["instance_info"], shown["instance_info"]);
    assert_eq!(n["extra"]["rack"], "r7", "{n}");
    assert_eq!(n["instance_info"]["image_url"], "http://127.0.0.1:1/a.iso", "{n}");
    baremetal(&url, &["node", "unset", "bm1", "--extra", "slot", "--instance-info", "root_gb"]);
    let n = d.node("bm1");
    assert_eq!(n["extra"], serde_json::json!({"rack": "r7"}));
    assert_eq!(n["instance_info"], serde_json::json!({"image_url": "http://127.0.0.1:1/a.iso"}));
    let listed = baremetal_json(&url, &["node", "list", "--fields", "name", "extra", "instance_info"]);
    let bm1 = listed.as_array().unwrap().iter().find(|l| l["name"] == "bm1").expect("bm1 listed");
    assert_eq!((&bm1["extra"], &bm1["instance_info"]), (&n["extra"], &n["instance_info"]), "{listed}");

    // A rename: the new name finds the node, in kiln and through the API;
    // the old one no longer does; a taken name is a 409, a bad one a 400.
    let uuid = n["uuid"].as_str().unwrap().to_string();
    baremetal(&url, &["node", "set", "bm1", "--name", "bm2"]);
    assert_eq!(d.node("bm2")["uuid"], uuid.as_str());
    assert_eq!(baremetal_json(&url, &["node", "show", "bm2"])["uuid"], uuid.as_str());
    assert_eq!(d.cli(&["node", "show", "bm1"]).status.code(), Some(2));
    let taken = baremetal_with(&url, &["--os-auth-type", "none"], &["node", "set", "bm2", "--name", "demo1"]);
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already in use"), "{taken:?}");
    let (status, body) = patch(&url, "bm2", r#"[{"op": "replace", "path": "/name", "value": "demo1"}]"#);
    assert_eq!(status, 409, "{body}");
    for (ops, needle) in [
        (r#"[{"op": "replace", "path": "/name", "value": "bad name!"}]"#, "not valid"),
        (r#"[{"op": "remove", "path": "/name"}]"#, "names every node"),
        (r#"[{"op": "replace", "path": "/driver", "value": "ilo"}]"#, "ilo"),
        (r#"[{"op": "replace", "path": "/extra", "value": [1]}]"#, "must be an object"),
        (r#"[{"op": "replace", "path": "/instance_info/none", "value": 1}]"#, "does not exist"),
        (
            r#"[{"op": "add", "path": "/extra/a", "value": 1}, {"op": "remove", "path": "/extra/b/c"}]"#,
            "does not exist",
        ),
    ] {
        let (status, body) = patch(&url, "bm2", ops);
        assert_eq!(status, 400, "{ops}: {body}");
        assert!(fault(&body).contains(needle), "{ops}: {body}");
    }
    assert_eq!(d.node("bm2")["extra"], serde_json::json!({"rack": "r7"}), "nothing changed");
    assert_eq!(d.node("demo1")["uuid"].as_str().map(|u| u != uuid), Some(true));

    // A driver change, with the new driver's driver_info in the same patch.
    baremetal(
        &url,
        &[
            "node",
            "set",
            "bm2",
            "--driver",
            "ipmi",
            "--driver-info",
            "ipmi_address=127.0.0.1",
            "--driver-info",
            "ipmi_port=1623",
        ],
    );
    let n = d.node("bm2");
    assert_eq!((n["driver"].as_str(), n["driver_info"]["address"].as_str()), (Some("ipmi"), Some("127.0.0.1")));
    assert_eq!(n["driver_info"]["port"], "1623");
    // Not on an active node (unless in maintenance): 409, as Ironic.
    d.json(&["node", "manage", "demo1", "--wait"]);
    d.json(&["node", "provide", "demo1", "--wait"]);
    d.json(&["node", "deploy", "demo1", "--wait"]);
    let (status, body) = patch(&url, "demo1", r#"[{"op": "replace", "path": "/driver", "value": "redfish"}]"#);
    assert_eq!(status, 409, "{body}");
    assert!(fault(&body).contains("maintenance mode"), "{body}");
    assert_eq!(d.node("demo1")["driver"], "fake");

    // openstacksdk's patches: nested paths, whole objects, a rename.
    let steps = sdk(&url, "patch", &["demo1"]);
    assert_eq!(steps[0]["extra"], serde_json::json!({"rack": {"row": 3, "slot": "a"}, "tags": ["x"]}), "{steps:?}");
    assert_eq!(steps[1]["name"], "demo1-renamed");
    assert_eq!(steps[1]["extra"], serde_json::json!({"rack": {"row": 3, "slot": "b"}, "tags": ["x", "y"]}));
    assert_eq!(steps[1]["instance_info"], serde_json::json!({"image_url": "http://127.0.0.1:1/a.iso"}));
    assert_eq!(steps[2]["extra"], serde_json::json!({"only": true}));
    assert_eq!(steps[3]["status"], 400, "{steps:?}");
    let n = d.node("demo1-renamed");
    assert_eq!(n["extra"], steps[4]["extra"]);
    assert_eq!(n["instance_info"], steps[4]["instance_info"]);
    assert_eq!(n["provision_state"], "active");
}
