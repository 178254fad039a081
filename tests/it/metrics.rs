//! Observability: the Prometheus endpoint's content after real work, and
//! JSON log lines that carry the job's and the node's ids.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::harness::Daemon;

/// The address the daemon logged for its metrics endpoint (it binds port 0).
pub(crate) fn metrics_addr(d: &mut Daemon) -> String {
    let line = d.wait_for_log("serving metrics");
    let addr =
        line.split_whitespace().find_map(|w| w.strip_prefix("addr=")).unwrap_or_else(|| panic!("no addr= in {line}"));
    addr.to_string()
}

/// A plain HTTP/1.1 GET: (status line, headers, body).
pub(crate) fn get(addr: &str, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// Every sample of an exposition, by `name{labels}`; checks the format on
/// the way (each sample is `NAME[{LABELS}] VALUE` under a declared family).
pub(crate) fn parse(body: &str) -> BTreeMap<String, f64> {
    let mut families = Vec::new();
    let mut samples = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE NAME KIND");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            families.push(name.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let name = key.split('{').next().unwrap();
        assert!(name.starts_with("kiln_"), "{line}");
        assert!(families.iter().any(|f| name.starts_with(f.as_str())), "{line} has no # TYPE");
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line}"));
        assert!(samples.insert(key.to_string(), v).is_none(), "{key} twice");
    }
    samples
}

fn sum_where(samples: &BTreeMap<String, f64>, prefix: &str, needle: &str) -> f64 {
    samples.iter().filter(|(k, _)| k.starts_with(prefix) && k.contains(needle)).map(|(_, v)| v).sum()
}

pub(crate) fn at(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples.get(key).unwrap_or_else(|| panic!("no sample {key}"))
}

#[test]
fn metrics_endpoint_counts_nodes_jobs_bmc_calls_and_requests() {
    let mut d = Daemon::start(3, &["--no-periodic", "--metrics-addr", "127.0.0.1:0"]);
    let addr = metrics_addr(&mut d);

    // Work: managing the nodes and a bulk power on (jobs), a managed node
    // whose BMC then always fails and a verb on it (a failed job), a
    // duplicate create (a refused request), and one power sync cycle
    // (which reads managed nodes, not nodes in enroll).
    d.json(&["node", "manage", "demo[1-3]", "--wait"]);
    d.json(&["node", "power", "on", "demo[1-2]", "--wait"]);
    d.json(&["node", "create", "bad", "--driver", "fake"]);
    d.json(&["node", "manage", "bad", "--wait"]);
    d.json(&["node", "set", "bad", "--driver-info", "failure_rate=1"]);
    d.json_code(&["node", "inspect", "bad", "--wait"], 1);
    d.json_code(&["node", "create", "bad", "--driver", "fake"], 1);
    d.json(&["periodic", "run", "power_sync"]);
    d.json(&["node", "create", "gone", "--driver", "fake"]);
    d.json(&["node", "delete", "gone"]);

    let (status, headers, body) = get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{headers}");
    let m = parse(&body);

    // Nodes by state: the same counts as `node list` shows.
    let list = d.json(&["node", "list"]);
    let nodes = list.as_array().unwrap();
    let mut by_state: BTreeMap<String, f64> = BTreeMap::new();
    for n in nodes {
        *by_state.entry(n["provision_state"].as_str().unwrap().to_string()).or_default() += 1.0;
    }
    for (state, count) in &by_state {
        assert_eq!(at(&m, &format!("kiln_nodes{{provision_state=\"{state}\"}}")), *count, "{state}");
    }
    assert_eq!(sum_where(&m, "kiln_nodes{", ""), nodes.len() as f64);
    let in_maintenance = nodes.iter().filter(|n| n["maintenance"] == true).count();
    assert_eq!(at(&m, "kiln_nodes_maintenance"), in_maintenance as f64);

    // Jobs: four submitted and ended (three success, one error), none left.
    assert_eq!(at(&m, "kiln_jobs_submitted_total"), 4.0);
    assert_eq!(at(&m, "kiln_jobs_ended_total{status=\"success\"}"), 3.0);
    assert_eq!(at(&m, "kiln_jobs_ended_total{status=\"error\"}"), 1.0);
    for s in ["queued", "waiting", "running"] {
        assert_eq!(at(&m, &format!("kiln_jobs{{status=\"{s}\"}}")), 0.0, "{s}");
    }
    assert_eq!(at(&m, "kiln_job_queue_wait_seconds_count"), 4.0);
    assert_eq!(at(&m, "kiln_job_run_seconds_count"), 4.0);

    // The store: every write went through a group, and every group through
    // a sync of the WAL (the SQLite store syncs on its own thread).
    let commits = at(&m, "kiln_store_commits_total");
    let groups = at(&m, "kiln_store_groups_total");
    let syncs = at(&m, "kiln_store_syncs_total");
    assert!(commits >= 7.0 && groups >= 1.0 && groups <= commits, "{commits} commits in {groups} groups");
    assert!(syncs >= 1.0 && syncs <= groups, "{syncs} syncs for {groups} groups");
    assert!(at(&m, "kiln_store_sync_seconds_total") > 0.0, "the fsyncs took no time");
    for stage in ["applying", "syncing"] {
        assert!(at(&m, &format!("kiln_store_commit_wait_seconds_total{{stage=\"{stage}\"}}")) > 0.0, "{stage}");
    }

    // BMC calls of the fake driver: four power reads to manage, two
    // power-ons, the failed verb's call, one power read per node in the
    // sync; the failing node's calls are errors, and nothing went through
    // another driver.
    let calls = sum_where(&m, "kiln_bmc_call_duration_seconds_count{", "driver=\"fake\"");
    assert!(calls >= 4.0 + 2.0 + 1.0 + 4.0, "{calls} fake BMC calls");
    assert_eq!(at(&m, "kiln_bmc_call_duration_seconds_count{driver=\"fake\",call=\"set_power\"}"), 2.0);
    let errors = sum_where(&m, "kiln_bmc_call_errors_total{", "driver=\"fake\"");
    assert_eq!(errors, 2.0, "the failed verb's call and the sync's read of bad");
    assert_eq!(sum_where(&m, "kiln_bmc_call_duration_seconds_count{", "driver=\"redfish\""), 0.0);
    let infinite = at(&m, "kiln_bmc_call_duration_seconds_bucket{driver=\"fake\",call=\"set_power\",le=\"+Inf\"}");
    assert_eq!(infinite, 2.0);

    // Power sync: one cycle; bad's read failed, the demo nodes were read.
    assert_eq!(at(&m, "kiln_power_sync_duration_seconds_count"), 1.0);
    assert_eq!(at(&m, "kiln_power_sync_nodes_total{result=\"failed\"}"), 1.0);
    assert_eq!(sum_where(&m, "kiln_power_sync_nodes_total{", ""), nodes.len() as f64);
    assert_eq!(at(&m, "kiln_periodic_runs_total{task=\"power_sync\"}"), 1.0);

    // Admin requests, by kind, and the refused create.
    assert_eq!(at(&m, "kiln_admin_requests_total{request=\"node_op\"}"), 4.0);
    assert_eq!(at(&m, "kiln_admin_requests_total{request=\"node_create\"}"), 3.0);
    assert_eq!(at(&m, "kiln_admin_request_errors_total{request=\"node_create\"}"), 1.0);
    // Every answered request was timed, the refused one too.
    assert_eq!(at(&m, "kiln_admin_request_duration_seconds_count{request=\"node_create\"}"), 3.0);
    assert_eq!(at(&m, "kiln_admin_request_duration_seconds_count{request=\"node_op\"}"), 4.0);
    let waited = at(&m, "kiln_admin_request_duration_seconds_sum{request=\"node_op\"}");
    assert!(waited > 0.0, "four --wait verbs took {waited} s");
    assert_eq!(at(&m, "kiln_admin_requests_total{request=\"node_list\"}"), 0.0);
    assert_eq!(at(&m, "kiln_build_info{version=\"0.1.0\"}"), 1.0);

    // Anything but /metrics is a 404; the daemon keeps serving.
    assert_eq!(get(&addr, "/").0, "HTTP/1.1 404 Not Found");
    let (status, _, body) = get(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(at(&parse(&body), "kiln_admin_requests_total{request=\"node_list\"}"), 1.0, "the list made above");
}

#[test]
fn a_bad_metrics_address_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::harness::KILN)
        .args(["serve", "--check-config", "--data-dir"])
        .arg(dir.path())
        .args(["--metrics-addr", "not an address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics-addr") && err.contains("'not an address'") && err.contains("HOST:PORT"), "{err}");

    // The config file's key, checked the same way.
    let config = dir.path().join("kiln.toml");
    for (value, code) in [("127.0.0.1:0", 0), ("[::1]:9184", 0), ("127.0.0.1", 2)] {
        std::fs::write(&config, format!("metrics_addr = \"{value}\"\n")).unwrap();
        let out = std::process::Command::new(crate::harness::KILN)
            .args(["serve", "--check-config", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("KILN_METRICS_ADDR")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{value}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The first JSON log line whose message is `message`.
fn wait_json(d: &mut Daemon, message: &str) -> Value {
    let line = d.wait_for_log(&format!("\"message\":\"{message}\""));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn json_log_lines_carry_the_job_and_node_ids() {
    let mut d = Daemon::start(0, &["--no-periodic", "--log-format", "json"]);
    let node = d.json(&["node", "create", "flaky", "--driver", "fake", "--driver-info", "failure_rate=1"]);
    let uuid = node[0]["uuid"].as_str().expect("a uuid").to_string();
    // A job file's node opcode waits for the node to settle (here: fail),
    // as `--wait` does; a verb without it ends once the manage started.
    let file = d.dir.path().join("job.yaml");
    std::fs::write(&file, "ops: [{op: manage, nodes: flaky}]").unwrap();
    let job = d.json(&["job", "submit", file.to_str().unwrap()])["job"].as_u64().expect("a job id").to_string();

    let started = wait_json(&mut d, "job started");
    assert_eq!(started["span"]["job"], job.as_str(), "{started}");

    // The node actor's line: inside the node's span (id, name, action),
    // itself inside the job's.
    let failed = wait_json(&mut d, "operation failed");
    let spans: Vec<&str> = failed["spans"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(spans, ["job", "node"], "{failed}");
    assert_eq!(failed["spans"][0]["job"], job.as_str(), "{failed}");
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["span"]["node"], uuid.as_str(), "{failed}");
    assert_eq!(failed["span"]["node_name"], "flaky", "{failed}");
    assert_eq!(failed["span"]["action"], "manage", "{failed}");
    assert!(failed["fields"]["error"].as_str().unwrap().contains("simulated BMC failure"), "{failed}");

    // The job's line about that node: the job's span and the node's name.
    let in_job = wait_json(&mut d, "node failed");
    assert_eq!(in_job["span"]["job"], job.as_str(), "{in_job}");
    assert_eq!(in_job["fields"]["node_name"], "flaky", "{in_job}");
    let ended = wait_json(&mut d, "job ended");
    assert_eq!(ended["span"]["job"], job.as_str(), "{ended}");
    assert_eq!(ended["fields"]["status"], "error", "{ended}");
    assert_eq!(ended["spans"].as_array().map(Vec::len), Some(1), "one job span, not nested: {ended}");
}
