//! Crash tests (docs/reliability.md): the real daemon under a mixed workload
//! (bulk node verbs, jobs, power and maintenance actions, node settings,
//! periodic tasks every second, BMCs with latency) is SIGKILLed at a random
//! moment, many times, and restarted each time; every third round it gets
//! SIGTERM instead (grace 0.2 s, shorter than a slow node's task), which must
//! exit 0 and leave nothing for the restart rule. After every stop:
//!
//! - the store file passes `PRAGMA integrity_check` (checked on a copy, so
//!   the daemon recovers the original itself);
//! - every acknowledged job is in the store, with the opcodes it was
//!   submitted with (so no id was handed out twice);
//! - after the restart a new job gets an id above every earlier one;
//! - no node is in a working state without a task, and once the queue is
//!   idle no node is reserved and none is in a working state;
//! - every acknowledged `node set` value is there (or a later one whose
//!   answer the kill cut off);
//! - every transition the event stream announced (events are published only
//!   once committed) is in the node's history, in order.
//!
//! The run is bounded: `KILN_CRASH_ROUNDS` rounds (default 8) and a seeded
//! RNG (`KILN_CRASH_SEED`, printed), so a failure can be replayed. A long
//! run: `KILN_CRASH_ROUNDS=200 cargo test -p kiln --test it crash -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::Daemon;

const NODES: usize = 24;
const WORKERS: usize = 4;
const DEFAULT_ROUNDS: u64 = 8;
/// How long the queue may take to go idle after a restart.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const WORKING: [&str; 9] =
    ["verifying", "deploying", "cleaning", "inspecting", "adopting", "rescuing", "unrescuing", "deleting", "servicing"];
const VERBS: [&str; 12] = [
    "manage", "provide", "deploy", "undeploy", "inspect", "clean", "rebuild", "abort", "rescue", "unrescue", "adopt",
    "service",
];

/// SplitMix64: a small seeded generator, so a run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A node set `demo[a-b]` or a single node.
    fn nodes(&mut self) -> String {
        let a = 1 + self.below(NODES as u64);
        let b = (a + self.below(6)).min(NODES as u64);
        if a == b { format!("demo{a}") } else { format!("demo[{a}-{b}]") }
    }
}

/// What the daemon acknowledged, and what it may have done without saying.
#[derive(Default)]
struct Acked {
    /// Job id -> what its first opcode must be (nodes and op, or the sleep).
    jobs: BTreeMap<u64, String>,
    /// (node, key) -> (last acknowledged value, values sent after it whose
    /// answer never came).
    props: BTreeMap<(String, String), (Option<String>, Vec<String>)>,
}

/// One opcode's signature as stored: what `Acked::jobs` holds.
fn signature(opcode: &Value) -> String {
    if let Some(n) = opcode.get("Node") {
        return format!("{} {}", n["nodes"].as_str().unwrap_or("?"), n["op"]);
    }
    if let Some(s) = opcode.get("Sleep") {
        return format!("sleep {}", s["seconds"]);
    }
    opcode.to_string()
}

fn run_cli(socket: &Path, args: &[&str]) -> Option<Value> {
    let out = crate::harness::cli_at(socket, args);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// One worker: random requests until `stop`, recording every acknowledgement.
fn worker(id: usize, seed: u64, socket: &Path, dir: &Path, acked: &Mutex<Acked>, stop: &AtomicBool, marks: &AtomicU64) {
    let mut rng = Rng(seed);
    let jobfile = dir.join(format!("job-{id}.yaml"));
    let jobfile = jobfile.to_str().unwrap();
    while !stop.load(Ordering::Relaxed) {
        let nodes = rng.nodes();
        match rng.below(10) {
            0..=3 => {
                let verb = VERBS[rng.below(VERBS.len() as u64) as usize];
                let expect = format!("{nodes} {}", serde_json::json!({ "Verb": verb }));
                if let Some(v) = run_cli(socket, &["--json", "node", verb, &nodes])
                    && let Some(job) = v["job"].as_u64()
                {
                    acked.lock().unwrap().jobs.insert(job, expect);
                }
            }
            4 | 5 => {
                let (args, op): (Vec<&str>, Value) = if rng.below(2) == 0 {
                    let action = if rng.below(2) == 0 { "on" } else { "off" };
                    let op = serde_json::json!({ "Power": action });
                    (vec!["--json", "node", "power", action, &nodes], op)
                } else if rng.below(2) == 0 {
                    let op = serde_json::json!({ "Maintenance": { "on": true, "reason": "crash test" } });
                    (vec!["--json", "node", "maintenance", "on", &nodes, "--reason", "crash test"], op)
                } else {
                    let op = serde_json::json!({ "Maintenance": { "on": false, "reason": null } });
                    (vec!["--json", "node", "maintenance", "off", &nodes], op)
                };
                if let Some(v) = run_cli(socket, &args)
                    && let Some(job) = v["job"].as_u64()
                {
                    acked.lock().unwrap().jobs.insert(job, format!("{nodes} {op}"));
                }
            }
            6 | 7 => {
                // A job file: a sleep whose length marks this very job, then a verb.
                let mark = marks.fetch_add(1, Ordering::Relaxed) as f64 / 100_000.0;
                let verb = VERBS[rng.below(VERBS.len() as u64) as usize];
                let text = format!("ops:\n  - {{op: sleep, seconds: {mark}}}\n  - {{op: {verb}, nodes: '{nodes}'}}\n");
                std::fs::write(jobfile, text).unwrap();
                if let Some(v) = run_cli(socket, &["--json", "job", "submit", jobfile])
                    && let Some(job) = v["job"].as_u64()
                {
                    acked.lock().unwrap().jobs.insert(job, format!("sleep {}", serde_json::json!(mark)));
                }
            }
            8 => {
                let node = format!("demo{}", 1 + rng.below(NODES as u64));
                let key = format!("w{id}");
                let value = format!("v{}", marks.fetch_add(1, Ordering::Relaxed));
                let slot = (node.clone(), key.clone());
                acked.lock().unwrap().props.entry(slot.clone()).or_default().1.push(value.clone());
                let kv = format!("{key}={value}");
                if run_cli(socket, &["--json", "node", "set", &node, "--property", &kv]).is_some() {
                    let mut a = acked.lock().unwrap();
                    let entry = a.props.entry(slot).or_default();
                    *entry = (Some(value), Vec::new());
                }
            }
            _ => {
                let _ = crate::harness::cli_at(socket, &["--json", "status"]);
            }
        }
    }
}

/// Follows the event stream into a list until the daemon goes away.
struct Follower {
    child: Child,
    reader: Option<std::thread::JoinHandle<Vec<Value>>>,
}

impl Follower {
    fn start(socket: &Path) -> Follower {
        let mut child = crate::harness::spawn_at(socket, &["--json", "events", "--follow"], Stdio::null());
        let stdout = child.stdout.take().expect("piped");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut events = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                if v.get("caught_up").is_some() {
                    let _ = ready_tx.send(());
                } else {
                    events.push(v);
                }
            }
            events
        });
        ready_rx.recv_timeout(Duration::from_secs(30)).expect("the event subscription starts");
        Follower { child, reader: Some(reader) }
    }

    /// The events seen; call once the daemon is gone.
    fn finish(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reader.take().expect("once").join().expect("reader")
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the store showed after a kill.
struct Stored {
    max_job: u64,
    /// Nodes in a working state or with a reservation.
    mid_task: usize,
    /// Jobs `running` or `canceling`.
    running_jobs: usize,
}

/// Checks the store file as the kill left it: integrity, and every
/// acknowledged job with its first opcode.
fn check_store(dir: &Path, acked: &Acked, round: u64) -> Stored {
    // A copy, so the daemon later recovers the original WAL itself.
    let copy = tempfile::tempdir().expect("temp dir");
    for suffix in ["", "-wal", "-shm"] {
        let from = dir.join(format!("kiln.sqlite{suffix}"));
        if from.exists() {
            std::fs::copy(&from, copy.path().join(format!("kiln.sqlite{suffix}"))).expect("copy the store");
        }
    }
    let db = rusqlite::Connection::open(copy.path().join("kiln.sqlite")).expect("open the store copy");
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(integrity, "ok", "round {round}: the store is damaged");
    let mut stored: BTreeMap<u64, String> = BTreeMap::new();
    for table in ["jobs", "jobs_archive"] {
        let mut q = db.prepare(&format!("SELECT id, body FROM {table}")).unwrap();
        let rows = q.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).unwrap();
        for row in rows {
            let (id, body) = row.unwrap();
            let body: Value = serde_json::from_str(&body).expect("a job body");
            let first = signature(&body["ops"][0]["opcode"]);
            assert!(stored.insert(id as u64, first).is_none(), "round {round}: job {id} is stored twice");
        }
    }
    for (id, want) in &acked.jobs {
        let got = stored.get(id).unwrap_or_else(|| panic!("round {round}: acknowledged job {id} is missing"));
        assert_eq!(got, want, "round {round}: job {id} holds another job's opcodes");
    }
    let running_jobs: i64 =
        db.query_row("SELECT count(*) FROM jobs WHERE status IN ('running', 'canceling')", [], |r| r.get(0)).unwrap();
    let working: usize = db
        .query_row(
            &format!(
                "SELECT count(*) FROM nodes WHERE provision_state IN ({}) OR reservation_purpose IS NOT NULL",
                WORKING.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(",")
            ),
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as usize;
    Stored {
        max_job: stored.keys().next_back().copied().unwrap_or(0),
        mid_task: working,
        running_jobs: running_jobs as usize,
    }
}

/// The provision states a node went through, consecutive repeats folded.
fn fold(states: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in states {
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

fn is_subsequence(small: &[String], big: &[String]) -> bool {
    let mut it = big.iter();
    small.iter().all(|s| it.any(|b| b == s))
}

/// Waits until no job runs or waits to run and no node is held; panics with
/// what is still busy after [`IDLE_TIMEOUT`].
fn wait_idle(d: &Daemon, round: u64) {
    let deadline = Instant::now() + IDLE_TIMEOUT;
    loop {
        let q = d.json(&["queue", "status"]);
        let pending: u64 =
            ["queued", "waiting", "running", "canceling"].iter().map(|s| q["by_status"][s].as_u64().unwrap_or(0)).sum();
        let status = d.json(&["status"]);
        if pending == 0 && status["reserved"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "round {round}: never idle: queue {q}, status {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkill_at_random_points_loses_nothing_acknowledged() {
    let rounds: u64 = std::env::var("KILN_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_ROUNDS);
    let seed: u64 = std::env::var("KILN_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("crash test: seed {seed} (KILN_CRASH_SEED={seed} replays it), {rounds} rounds");
    let mut rng = Rng(seed);

    let conf_dir = tempfile::tempdir().expect("temp dir");
    let conf = conf_dir.path().join("kiln.toml");
    std::fs::write(
        &conf,
        "power_sync_interval = 1\npower_failure_recovery_interval = 1\nwait_timeouts_interval = 1\n\
         wait_timeout = 2\njob_autoarchive_interval = 1\njob_archive_age = 2\nstore_maintenance_interval = 1\n",
    )
    .unwrap();
    // A grace shorter than a slow node's deploy: SIGTERM rounds see work
    // both finish within it and outlive it.
    let mut d = Daemon::start(NODES, &["--config", conf.to_str().unwrap(), "--shutdown-grace", "0.2"]);
    // BMCs of three speeds, so kills find tasks in flight.
    for i in 1..=NODES {
        let ms = match i % 3 {
            0 => 0,
            1 => 30,
            _ => 150,
        };
        d.json(&["node", "set", &format!("demo{i}"), "--driver-info", &format!("latency_ms={ms}")]);
    }

    let acked = Arc::new(Mutex::new(Acked::default()));
    let marks = Arc::new(AtomicU64::new(1));
    let mut max_acked_job = 0;
    let (mut mid_task, mut transitions, mut props_checked, mut sigterms) = (0usize, 0usize, 0usize, 0usize);
    let (mut abandoned_stops, mut abandoned_jobs, mut abandoned_nodes) = (0usize, 0usize, 0usize);
    for round in 1..=rounds {
        let follower = Follower::start(&d.socket);
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (socket, dir) = (d.socket.clone(), d.dir.path().to_path_buf());
                let (acked, stop, marks) = (acked.clone(), stop.clone(), marks.clone());
                let seed = rng.next();
                std::thread::spawn(move || worker(w, seed, &socket, &dir, &acked, &stop, &marks))
            })
            .collect();
        // The kill point: somewhere in the next 0.3 to 2.3 s of work. Every
        // third round is a SIGTERM instead, under the same load.
        std::thread::sleep(Duration::from_millis(300 + rng.below(2000)));
        let graceful = round % 3 == 0;
        if graceful {
            let status = d.terminate();
            assert_eq!(status.code(), Some(0), "round {round}: SIGTERM under load: {status:?}");
            let log = d.log_lines();
            let line = log.iter().find(|l| l.contains("kiln stopped")).expect("the daemon logs how it stopped");
            if let Some(waiting) = log.iter().find(|l| l.contains("waiting for running work")) {
                println!("round {round}: {waiting}");
            }
            println!("round {round}: {line}");
            let count = |key: &str| -> usize {
                let at = line.find(&format!("{key}=")).map(|i| i + key.len() + 1).unwrap_or(line.len());
                line[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
            };
            let (jobs, nodes) = (count("jobs_failed"), count("nodes_released"));
            if jobs + nodes > 0 {
                abandoned_stops += 1;
            }
            (abandoned_jobs, abandoned_nodes) = (abandoned_jobs + jobs, abandoned_nodes + nodes);
        } else {
            d.kill9();
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().expect("a worker panicked");
        }
        let events = follower.finish();

        let a = acked.lock().unwrap();
        let stored = check_store(d.dir.path(), &a, round);
        let (max_stored, caught) = (stored.max_job, stored.mid_task);
        if graceful {
            // A graceful stop leaves nothing for the restart rule to do.
            assert_eq!((caught, stored.running_jobs), (0, 0), "round {round}: SIGTERM left work mid-way");
            sigterms += 1;
        } else {
            mid_task += caught;
        }
        max_acked_job = max_acked_job.max(a.jobs.keys().next_back().copied().unwrap_or(0));
        drop(a);

        d.restart();

        // Nothing mid-task without a task, right after the restart.
        for n in d.json(&["node", "list"]).as_array().unwrap() {
            let state = n["provision_state"].as_str().unwrap();
            assert!(
                !WORKING.contains(&state) || !n["reservation"].is_null(),
                "round {round}: {} is {state} with no task",
                n["name"]
            );
        }
        // Ids are never handed out again.
        let f = d.dir.path().join("fresh.yaml");
        std::fs::write(&f, "ops: [{op: sleep, seconds: 0}]").unwrap();
        let id = d.json(&["job", "submit", f.to_str().unwrap()])["job"].as_u64().unwrap();
        assert!(id > max_stored.max(max_acked_job), "round {round}: job id {id} was handed out before");
        acked.lock().unwrap().jobs.insert(id, "sleep 0.0".into());

        wait_idle(&d, round);
        let nodes = d.json(&["node", "list"]);
        let a = acked.lock().unwrap();
        for n in nodes.as_array().unwrap() {
            let name = n["name"].as_str().unwrap();
            let state = n["provision_state"].as_str().unwrap();
            assert!(!WORKING.contains(&state), "round {round}: {name} is {state} with the queue idle");
            assert!(n["reservation"].is_null(), "round {round}: {name} is still reserved");
            // Every acknowledged setting, or one sent later.
            for ((node, key), (last, maybe)) in a.props.range((name.to_string(), String::new())..) {
                if node != name {
                    break;
                }
                let got = n["properties"][key].as_str().map(String::from);
                let ok = got == *last || got.as_ref().is_some_and(|g| maybe.contains(g));
                assert!(ok, "round {round}: {name} {key} = {got:?}; acknowledged {last:?}, maybe {maybe:?}");
                props_checked += 1;
            }
        }
        drop(a);
        // Every announced transition is in the history, in order.
        let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in &events {
            if let (Some(n), Some(s)) = (e["node_name"].as_str(), e["provision_state"].as_str()) {
                by_node.entry(n.to_string()).or_default().push(s.to_string());
            }
        }
        for (name, seen) in by_node {
            let history = d.json(&["node", "history", &name, "--limit", "10000"]);
            let entries = history.as_array().unwrap();
            // Every node is enrolled in `enroll`; its history goes on from there.
            let first = entries.first().map(|e| e["from_state"].as_str().unwrap().to_string());
            let states = fold(
                std::iter::once("enroll".to_string())
                    .chain(first)
                    .chain(entries.iter().map(|e| e["to_state"].as_str().unwrap().into())),
            );
            let seen = fold(seen);
            assert!(is_subsequence(&seen, &states), "round {round}: {name}: announced {seen:?}, history {states:?}");
            transitions += seen.len();
        }
        // The acknowledged jobs are there over the socket too (a sample).
        let ids: Vec<u64> = acked.lock().unwrap().jobs.keys().copied().collect();
        for _ in 0..3 {
            let id = ids[rng.below(ids.len() as u64) as usize];
            assert_eq!(d.json(&["job", "show", &id.to_string()])["id"], id);
        }
        println!(
            "round {round}: {} with {caught} node(s) mid-task; {} jobs acknowledged so far",
            if graceful { "SIGTERM" } else { "SIGKILL" },
            acked.lock().unwrap().jobs.len()
        );
    }
    let a = acked.lock().unwrap();
    let distinct: BTreeSet<&u64> = a.jobs.keys().collect();
    println!(
        "crash test: {} SIGKILL points and {sigterms} SIGTERMs under load survived; {} acknowledged jobs all present; \
         {mid_task} node(s) caught mid-task and released; {transitions} announced transitions found in history; \
         {props_checked} acknowledged settings checked; {abandoned_stops} SIGTERMs failed work that outlived the grace \
         ({abandoned_jobs} jobs, {abandoned_nodes} nodes)",
        rounds as usize - sigterms,
        distinct.len()
    );
}
