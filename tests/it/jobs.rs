//! The job queue over the socket: submission (one job or several at
//! once), priorities and their changes, dependencies, the log, watch,
//! listing by field and id, cancel, archive, the queue limit, drain, and
//! the restart rule after SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Daemon, Events, spawn_at};

fn write(d: &Daemon, name: &str, text: &str) -> String {
    let path = d.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn submit(d: &Daemon, yaml: &str) -> u64 {
    let f = write(d, "job.yaml", yaml);
    d.json(&["job", "submit", &f])["job"].as_u64().expect("a job id")
}

fn job(d: &Daemon, id: u64) -> Value {
    d.json(&["job", "show", &id.to_string()])
}

/// Follows a job to its end with `kiln job watch`; returns the job (the
/// last of the JSON lines it prints).
fn watch(d: &Daemon, id: u64) -> Value {
    let out = d.cli(&["--json", "job", "watch", &id.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let last = text.lines().last().unwrap_or_else(|| panic!("job watch printed nothing: {out:?}"));
    serde_json::from_str(last).expect("job JSON")
}

/// Submits a file of several jobs; returns their ids.
fn submit_many(d: &Daemon, yaml: &str) -> Vec<u64> {
    let f = write(d, "jobs.yaml", yaml);
    let out = d.json(&["job", "submit", &f]);
    out["jobs"].as_array().unwrap_or_else(|| panic!("{out}")).iter().map(|id| id.as_u64().unwrap()).collect()
}

/// The refusal `kiln --json ARGS` prints, checking its exit code and kind.
fn refused(d: &Daemon, args: &[&str], code: i32, kind: &str) -> String {
    let err = d.json_code(args, code);
    assert_eq!(err["error"]["kind"], kind, "{args:?}: {err}");
    err["error"]["message"].as_str().unwrap().to_string()
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array().unwrap().iter().map(|j| j["id"].as_u64().unwrap()).collect()
}

#[test]
fn a_job_of_several_opcodes_runs_them_in_order_with_a_log() {
    let d = Daemon::start(4, &[]);
    let f = write(
        &d,
        "job.yaml",
        "ops:\n  - {op: manage, nodes: 'demo[1-4]'}\n  - {op: sleep, seconds: 0}\n  - {op: provide, nodes: 'demo[1-4]', fanout: 2}\n",
    );
    let done = d.json(&["job", "submit", &f, "--wait"]);
    assert_eq!(done["status"], "success");
    let ops = done["ops"].as_array().unwrap();
    assert_eq!(ops.len(), 3);
    assert!(ops.iter().all(|o| o["status"] == "success"));
    assert_eq!(ops[2]["results"].as_array().unwrap().len(), 4);
    assert!(ops[2]["results"].as_array().unwrap().iter().all(|r| r["provision_state"] == "available"));

    // The log, via the long poll, in serial order.
    let id = done["id"].as_u64().unwrap();
    let out = d.cli(&["job", "watch", &id.to_string()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let started = text.find("opcode 1/3 started").unwrap();
    let ended = text.find("job ended: success").unwrap();
    assert!(started < ended, "{text}");
    assert_eq!(ids(&d.json(&["job", "list", "--status", "success"])), [id]);
}

#[test]
fn higher_priority_jobs_run_first_and_cancel_stops_a_sleeping_job() {
    let d = Daemon::start(0, &["--max-running-jobs", "1"]);
    let blocker = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    let low = submit(&d, "priority: 10\nops: [{op: sleep, seconds: 0}]");
    let high = submit(&d, "priority: -10\nops: [{op: sleep, seconds: 0}]");
    assert_eq!(job(&d, low)["status"], "queued");
    let canceled = d.json(&["job", "cancel", &blocker.to_string()]);
    assert!(canceled["status"] == "canceling" || canceled["status"] == "canceled", "{canceled}");
    assert_eq!(watch(&d, blocker)["status"], "canceled");
    let (l, h) = (watch(&d, low), watch(&d, high));
    assert_eq!(l["status"], "success");
    assert_eq!(h["status"], "success");
    assert!(h["started_at"].as_str().unwrap() < l["started_at"].as_str().unwrap(), "high ran first");
    // Canceling a job that ended is refused.
    let err = d.json_code(&["job", "cancel", &blocker.to_string()], 2);
    assert!(err["error"]["message"].as_str().unwrap().contains("already ended"));
}

#[test]
fn dependencies_hold_a_job_and_fail_it_when_they_cannot_be_met() {
    let d = Daemon::start(0, &["--max-running-jobs", "4"]);
    let first = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    let after_ok =
        submit(&d, &format!("depends: [{{job: {first}, statuses: [success]}}]\nops: [{{op: sleep, seconds: 0}}]"));
    let after_cancel =
        submit(&d, &format!("depends: [{{job: {first}, statuses: [canceled]}}]\nops: [{{op: sleep, seconds: 0}}]"));
    assert_eq!(job(&d, after_ok)["status"], "waiting");
    d.json(&["job", "cancel", &first.to_string()]);
    let failed = watch(&d, after_ok);
    assert_eq!(failed["status"], "error");
    assert!(failed["error"].as_str().unwrap().contains("cannot be met"), "{failed}");
    assert_eq!(watch(&d, after_cancel)["status"], "success");

    // A dependency on a job that never existed is refused; nothing is queued.
    let before = ids(&d.json(&["job", "list"]));
    let f = write(&d, "bad.yaml", "depends: [{job: 9999}]\nops: [{op: sleep, seconds: 0}]");
    let err = d.json_code(&["job", "submit", &f], 2);
    assert_eq!(err["error"]["kind"], "not_found");
    assert!(err["error"]["message"].as_str().unwrap().contains("9999"));
    assert_eq!(ids(&d.json(&["job", "list"])), before);
}

#[test]
fn a_job_waits_for_each_of_its_dependencies_and_keeps_waiting_across_a_restart() {
    let mut d = Daemon::start(0, &["--max-running-jobs", "2"]);
    let a = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    let b = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    let both = submit(&d, &format!("depends: [{{job: {a}}}, {{job: {b}}}]\nops: [{{op: sleep, seconds: 0}}]"));
    assert_eq!(job(&d, both)["status"], "waiting");
    d.json(&["job", "cancel", &a.to_string()]);
    assert_eq!(watch(&d, a)["status"], "canceled");
    assert_eq!(job(&d, both)["status"], "waiting", "b has not ended");
    d.json(&["job", "cancel", &b.to_string()]);
    assert_eq!(watch(&d, both)["status"], "success");

    // Killed with two jobs running, one queued behind them and one waiting
    // for the queued one. The sleeps run again after the restart (a sleep
    // changes nothing outside its job, so it is not held as started); once
    // they are canceled the queued one runs, and its end moves the waiting
    // one on.
    let running = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    let filler = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    let queued = submit(&d, "ops: [{op: sleep, seconds: 0}]");
    let waiting =
        submit(&d, &format!("depends: [{{job: {queued}, statuses: [success]}}]\nops: [{{op: sleep, seconds: 0}}]"));
    assert_eq!(job(&d, queued)["status"], "queued");
    assert_eq!(job(&d, waiting)["status"], "waiting");
    d.kill9();
    d.restart();
    assert_eq!(job(&d, waiting)["status"], "waiting");
    for id in [running, filler] {
        d.json(&["job", "cancel", &id.to_string()]);
    }
    assert_eq!(watch(&d, queued)["status"], "success");
    assert_eq!(watch(&d, waiting)["status"], "success");
}

#[test]
fn bad_job_files_and_unknown_nodes_queue_nothing() {
    let d = Daemon::start(2, &[]);
    for (text, code, needle) in [
        ("ops: [{op: explode, nodes: demo1}]", 2, "unknown verb 'explode'"),
        ("ops: []", 2, "at least one opcode"),
        ("ops: [{op: sleep}]", 2, "sleep needs `seconds`"),
        ("{not yaml: [", 2, "not a valid"),
        ("ops: [{op: deploy, nodes: 'demo[1-3]'}]", 2, "demo3"),
        ("priority: 99\nops: [{op: sleep, seconds: 0}]", 2, "priority 99"),
    ] {
        let f = write(&d, "bad.yaml", text);
        let err = d.json_code(&["job", "submit", &f], code);
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{text}: {msg}");
    }
    assert!(d.json(&["job", "list"]).as_array().unwrap().is_empty());
    assert_eq!(d.json(&["queue", "status"])["last_job_id"], 0);
}

#[test]
fn drain_refuses_new_jobs_across_restarts_until_turned_off() {
    let mut d = Daemon::start(1, &[]);
    assert_eq!(d.json(&["queue", "drain", "on"])["drained"], true);
    let err = d.json_code(&["node", "manage", "demo1"], 1);
    assert_eq!(err["error"]["kind"], "drained");
    d.restart();
    assert_eq!(d.json(&["queue", "status"])["drained"], true);
    d.json(&["queue", "drain", "off"]);
    d.json(&["node", "manage", "demo1", "--wait"]);
    assert_eq!(d.state("demo1"), "manageable");
}

#[test]
fn ended_jobs_can_be_archived_and_still_shown() {
    let d = Daemon::start(0, &[]);
    let id = submit(&d, "ops: [{op: sleep, seconds: 0}]");
    assert_eq!(watch(&d, id)["status"], "success");
    let running = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    let err = d.json_code(&["job", "archive", &running.to_string()], 2);
    assert!(err["error"]["message"].as_str().unwrap().contains("only ended jobs"));
    let out = d.cli(&["job", "archive", &id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("job {id} archived\n"));
    assert_eq!(ids(&d.json(&["job", "list"])), [running]);
    let shown = job(&d, id);
    assert_eq!(shown["archived"], true);
    assert_eq!(shown["status"], "success");
    // The queue no longer holds it, and still knows what it was.
    let err = d.json_code(&["job", "cancel", &id.to_string()], 2);
    assert!(err["error"]["message"].as_str().unwrap().contains("already ended"), "{err}");
    let after = submit(&d, &format!("depends: [{{job: {id}, statuses: [success]}}]\nops: [{{op: sleep, seconds: 0}}]"));
    assert_eq!(watch(&d, after)["status"], "success");

    // A job archived while another still waits for it counts as ended.
    let quick = submit(&d, "ops: [{op: sleep, seconds: 0}]");
    assert_eq!(watch(&d, quick)["status"], "success");
    let both =
        submit(&d, &format!("depends: [{{job: {quick}}}, {{job: {running}}}]\nops: [{{op: sleep, seconds: 0}}]"));
    assert_eq!(job(&d, both)["status"], "waiting");
    assert!(d.cli(&["job", "archive", &quick.to_string()]).status.success());
    d.json(&["job", "cancel", &running.to_string()]);
    assert_eq!(watch(&d, both)["status"], "success");
}

#[test]
fn job_list_shows_the_newest_up_to_its_limit_and_says_when_there_are_more() {
    let d = Daemon::start(0, &["--max-running-jobs", "1"]);
    let ended: Vec<u64> = (0..4)
        .map(|_| {
            let id = submit(&d, "ops: [{op: sleep, seconds: 0}]");
            assert_eq!(watch(&d, id)["status"], "success");
            id
        })
        .collect();
    let running = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    let queued = submit(&d, "ops: [{op: sleep, seconds: 0}]");
    let all: Vec<u64> = ended.iter().copied().chain([running, queued]).collect();

    let list = |args: &[&str]| {
        let mut full = vec!["--json", "job", "list"];
        full.extend_from_slice(args);
        let out = d.cli(&full);
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (ids(&serde_json::from_slice(&out.stdout).expect("JSON")), stderr)
    };
    let (listed, note) = list(&[]);
    assert_eq!((listed, note.as_str()), (all.clone(), ""), "six jobs are under the default limit");
    let (listed, note) = list(&["--limit", "3"]);
    assert_eq!(listed, all[3..], "the newest three, oldest first");
    assert!(note.contains("the newest 3 live jobs are listed, and there are more"), "{note}");
    let (listed, note) = list(&["--limit", "6"]);
    assert_eq!((listed, note.as_str()), (all.clone(), ""), "exactly the limit: nothing more to say");
    assert_eq!(list(&["--limit", "0"]).0, all);
    // A running job as it is now: its stored row still says queued, since
    // a sleep's start is stored with its end.
    let listed = d.json(&["job", "list"]);
    let shown = listed.as_array().expect("a list").iter().find(|j| j["id"] == running).expect("listed");
    assert_eq!(shown["status"], "running", "{shown}");

    // By status: unfinished ones as they are now, ended ones newest first.
    assert_eq!(list(&["--status", "running"]).0, [running]);
    assert_eq!(list(&["--status", "queued"]).0, [queued]);
    assert_eq!(list(&["--status", "success", "--limit", "2"]).0, ended[2..]);
    assert_eq!(list(&["--status", "error"]).0, Vec::<u64>::new());
    d.json(&["job", "cancel", &running.to_string()]);
    assert_eq!(watch(&d, queued)["status"], "success");
}

#[test]
fn after_sigkill_queued_jobs_run_and_the_running_one_is_in_error() {
    let mut d = Daemon::start(3, &["--max-running-jobs", "1"]);
    d.json(&["node", "manage", "demo[1-3]", "--wait"]);
    d.json(&["node", "provide", "demo[1-3]", "--wait"]);
    d.json(&["node", "set", "demo1", "--driver-info", "latency_ms=60000"]);
    let mut events = Events::follow(&d);
    // Job files: their node opcodes wait for the nodes to settle, so the
    // first job is still running when the daemon dies (a verb without
    // `--wait` would have ended once demo1's deploy started).
    let running = submit(&d, "ops: [{op: deploy, nodes: demo1}]");
    events.started("demo1");
    let queued_a = submit(&d, "ops: [{op: deploy, nodes: demo2}]");
    let queued_b = submit(&d, "ops: [{op: sleep, seconds: 0}]");
    assert_eq!(job(&d, queued_a)["status"], "queued");

    d.kill9();
    d.restart();

    let crashed = job(&d, running);
    assert_eq!(crashed["status"], "error");
    assert_eq!(crashed["error"], "daemon restarted while running");
    assert_eq!(watch(&d, queued_a)["status"], "success");
    assert_eq!(watch(&d, queued_b)["status"], "success");
    assert_eq!(d.state("demo2"), "active");
    let n = d.node("demo1");
    assert_eq!(n["provision_state"], "deploy failed");
    assert_eq!(n["reservation"], Value::Null);
    // Every acknowledged job is there, and ids are never reused.
    let all = ids(&d.json(&["job", "list"]));
    for id in [running, queued_a, queued_b] {
        assert!(all.contains(&id), "{id} missing from {all:?}");
    }
    let next = submit(&d, "ops: [{op: sleep, seconds: 0}]");
    assert!(next > queued_b);
}

#[test]
fn after_sigkill_a_job_in_a_sleep_runs_again() {
    // A sleep changes nothing outside the job, so its start is not made
    // durable: a crash during it leaves the job queued, and it runs again.
    let mut d = Daemon::start(0, &[]);
    let sleeping = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    assert_eq!(job(&d, sleeping)["status"], "running");

    d.kill9();
    d.restart();

    let again = job(&d, sleeping);
    assert_eq!(again["status"], "running", "{again}");
    assert_eq!(again["error"], Value::Null);
    d.json(&["job", "cancel", &sleeping.to_string()]);
    assert_eq!(watch(&d, sleeping)["status"], "canceled");
}

#[test]
fn canceling_a_node_set_job_stops_starting_new_nodes() {
    let d = Daemon::start(6, &[]);
    for i in 1..=6 {
        d.json(&["node", "set", &format!("demo{i}"), "--driver-info", "latency_ms=200"]);
    }
    let mut events = Events::follow(&d);
    let f =
        write(&d, "job.yaml", "ops:\n  - {op: manage, nodes: 'demo[1-6]', fanout: 1}\n  - {op: sleep, seconds: 0}\n");
    let id = d.json(&["job", "submit", &f])["job"].as_u64().unwrap();
    events.started("demo1");
    d.json(&["job", "cancel", &id.to_string()]);
    let j = watch(&d, id);
    assert_eq!(j["status"], "canceled");
    let results = j["ops"][0]["results"].as_array().unwrap();
    let not_started = results.iter().filter(|r| r["error"]["kind"] == "canceled").count();
    assert!(not_started >= 1, "{j}");
    assert_eq!(j["ops"][1]["status"], "canceled");
    assert_eq!(d.state("demo6"), "enroll");
    // The log counts nodes not started apart from failed ones, names them
    // once, folded, and says "canceled" once.
    let log: Vec<String> = j["log"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().into()).collect();
    let text = log.join("\n");
    assert!(!text.contains("failed"), "{text}");
    assert!(log.contains(&format!("opcode 1 canceled: {not_started} of 6 nodes not started")), "{text}");
    assert!(log.iter().any(|l| l.starts_with("nodes not started (the job was canceled): demo")), "{text}");
    assert_eq!(log.last().unwrap(), "job ended: canceled", "{text}");
    let once = results.iter().find(|r| r["error"]["kind"] == "canceled").unwrap();
    assert_eq!(once["error"]["message"], "not started: the job was canceled", "{once}");
}

#[test]
fn a_sleeps_start_is_logged_when_it_starts() {
    let d = Daemon::start(0, &[]);
    let id = submit(&d, "ops: [{op: sleep, seconds: 1}]");
    let j = watch(&d, id);
    let at = |prefix: &str| {
        let e = j["log"].as_array().unwrap().iter().find(|e| e["message"].as_str().unwrap().starts_with(prefix));
        chrono::DateTime::parse_from_rfc3339(
            e.unwrap_or_else(|| panic!("no '{prefix}' in {j}"))["at"].as_str().unwrap(),
        )
        .unwrap()
    };
    let slept = at("opcode 1 succeeded") - at("opcode 1/1 started: sleep");
    assert!(slept >= chrono::Duration::milliseconds(1000), "started {slept} before its end: {j}");
}

#[test]
fn a_queued_job_whose_stored_body_is_damaged_ends_error_and_acts_on_no_node() {
    let mut d = Daemon::start(1, &["--max-running-jobs", "1"]);
    let blocker = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    let damaged = d.json(&["node", "manage", "demo1"])["job"].as_u64().unwrap();
    let healthy = submit(&d, "ops: [{op: sleep, seconds: 0}]");
    assert_eq!(job(&d, damaged)["status"], "queued");
    d.kill9();

    // Damage the queued job's body in the store file, as a bad disk or a
    // hand edit would.
    let db = rusqlite::Connection::open(d.dir.path().join("kiln.sqlite")).unwrap();
    let changed =
        db.execute("UPDATE jobs SET body = '{\"ops\": [{\"opcode\": tru' WHERE id = ?1", [damaged as i64]).unwrap();
    assert_eq!(changed, 1);
    drop(db);
    d.restart();

    let j = job(&d, damaged);
    assert_eq!(j["status"], "error", "{j}");
    let why = j["error"].as_str().unwrap();
    assert!(why.contains("stored job body cannot be read") && why.contains("not run"), "{why}");
    assert!(j["ended_at"].is_string(), "{j}");
    d.json(&["job", "cancel", &blocker.to_string()]);
    assert_eq!(watch(&d, healthy)["status"], "success");
    // Nothing acted on the node the damaged job named, and the failure
    // stays failed across another restart.
    assert_eq!(d.state("demo1"), "enroll");
    d.restart();
    assert_eq!(job(&d, damaged)["status"], "error");
    assert_eq!(d.state("demo1"), "enroll");
}

#[test]
fn several_jobs_in_one_file_are_submitted_together_all_or_nothing_with_relative_dependencies() {
    let d = Daemon::start(2, &["--max-running-jobs", "1"]);
    let holder = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    // A list of jobs; the second waits for the first (-1), the third for
    // both (-1 and -2) and runs first among them by priority once free.
    let batch = submit_many(
        &d,
        "- ops: [{op: sleep, seconds: 0}]\n\
         - depends: [{job: -1, statuses: [success]}]\n  ops: [{op: manage, nodes: demo1}]\n\
         - priority: -5\n  depends: [{job: -2}, {job: -1}]\n  ops: [{op: sleep, seconds: 0}]\n",
    );
    assert_eq!(batch, [holder + 1, holder + 2, holder + 3], "one id each, in order");
    let (first, second, third) = (batch[0], batch[1], batch[2]);
    assert_eq!(job(&d, first)["status"], "queued");
    let waiting = job(&d, second);
    assert_eq!(waiting["status"], "waiting");
    assert_eq!(waiting["depends"], serde_json::json!([{"job": first, "statuses": ["success"]}]), "{waiting}");
    assert_eq!(job(&d, third)["depends"][1]["job"], second);
    d.json(&["job", "cancel", &holder.to_string()]);
    assert_eq!(watch(&d, third)["status"], "success");
    assert_eq!(job(&d, second)["status"], "success");
    assert_eq!(d.state("demo1"), "manageable");

    // One bad job refuses the whole submission: nothing is stored, no id
    // is used.
    let last = d.json(&["queue", "status"])["last_job_id"].as_u64().unwrap();
    let listed = ids(&d.json(&["job", "list"]));
    for (yaml, needle) in [
        (
            "- ops: [{op: sleep, seconds: 0}]\n- ops: [{op: sleep, seconds: 0}]\n- ops: [{op: deploy, nodes: nope1}]\n",
            "job 3 of 3",
        ),
        (
            "- ops: [{op: sleep, seconds: 0}]\n- priority: 40\n  ops: [{op: sleep, seconds: 0}]\n",
            "job 2 of 2: priority 40",
        ),
        (
            "- ops: [{op: sleep, seconds: 0}]\n- depends: [{job: -2}]\n  ops: [{op: sleep, seconds: 0}]\n",
            "only 1 job comes before it",
        ),
        ("- ops: [{op: sleep, seconds: 0}]\n- depends: [{job: 9999}]\n  ops: [{op: sleep, seconds: 0}]\n", "9999"),
        ("- ops: [{op: sleep, seconds: 0}]\n- ops: [{op: explode, nodes: demo1}]\n", "unknown verb 'explode'"),
    ] {
        let f = write(&d, "bad.yaml", yaml);
        let err = d.json_code(&["job", "submit", &f], 2);
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{yaml}: {message}");
    }
    assert_eq!(d.json(&["queue", "status"])["last_job_id"], last, "no id was given out");
    assert_eq!(ids(&d.json(&["job", "list"])), listed);

    // `jobs: [...]` in JSON, followed to the end: every job printed.
    let f = write(
        &d,
        "jobs.json",
        r#"{"jobs": [{"ops": [{"op": "sleep", "seconds": 0}]}, {"ops": [{"op": "sleep", "seconds": 0}], "depends": [{"job": -1}]}]}"#,
    );
    let done = d.json(&["job", "submit", &f, "--wait"]);
    let statuses: Vec<&str> = done.as_array().unwrap().iter().map(|j| j["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["success", "success"]);
    let out = d.cli(&["job", "submit", &f]);
    assert!(out.status.success());
    let (a, b) = (last + 3, last + 4);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("jobs {a}, {b} submitted; follow one with `kiln job watch ID`\n")
    );
    assert_eq!(watch(&d, b)["status"], "success");
}

#[test]
fn a_queued_jobs_priority_changes_durably_and_a_running_or_ended_one_is_refused() {
    let mut d = Daemon::start(2, &["--max-running-jobs", "1"]);
    let holder = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    let early = submit(&d, "ops: [{op: sleep, seconds: 0}]");
    let late = submit(&d, "priority: 10\nops: [{op: sleep, seconds: 0}]");
    let changed = d.json(&["job", "priority", &late.to_string(), "-10"]);
    assert_eq!(changed["priority"], -10, "{changed}");
    assert_eq!(changed["status"], "queued");
    let out = d.cli(&["job", "priority", &late.to_string(), "-12"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("job {late} queued: priority -12\n"));
    // Committed before it was acknowledged: it survives a kill.
    d.kill9();
    d.restart();
    let shown = job(&d, late);
    assert_eq!(shown["priority"], -12, "{shown}");
    let line = shown["log"].as_array().unwrap().iter().find(|l| l["message"] == "priority changed from -10 to -12");
    assert!(line.is_some(), "{shown}");

    // A running job's priority orders nothing any more; an unknown or
    // out-of-range one is bad input. Nothing changes.
    let message = refused(&d, &["job", "priority", &holder.to_string(), "5"], 2, "invalid_input");
    assert!(message.contains("is running") && message.contains("only a queued or waiting job"), "{message}");
    assert!(refused(&d, &["job", "priority", "9999", "5"], 2, "not_found").contains("no such job: 9999"));
    let out = d.cli(&["job", "priority", &late.to_string(), "25"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("priority 25 is out of range"), "{out:?}");
    assert_eq!(job(&d, late)["priority"], -12);

    // The raised job runs before the one submitted ahead of it.
    d.json(&["job", "cancel", &holder.to_string()]);
    let (e, l) = (watch(&d, early), watch(&d, late));
    assert!(l["started_at"].as_str().unwrap() < e["started_at"].as_str().unwrap(), "late ran first: {l} {e}");
    let message = refused(&d, &["job", "priority", &late.to_string(), "0"], 2, "invalid_input");
    assert!(message.contains("already ended"), "{message}");

    // Bulk node verbs take a priority too.
    let id = d.json(&["node", "manage", "demo[1-2]", "--priority", "-5"])["job"].as_u64().unwrap();
    assert_eq!(watch(&d, id)["priority"], -5);
    let out = d.cli(&["node", "provide", "demo1", "--priority", "20"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(d.state("demo1"), "manageable");
    d.json(&["node", "maintenance", "on", "demo2", "--priority", "4"]);
    let list = d.json(&["job", "list", "-o", "id,priority,summary"]);
    assert_eq!(list.as_array().unwrap().last().unwrap()["priority"], 4, "{list}");
}

#[test]
fn job_show_prints_the_log_with_serials_and_levels_and_watch_streams_it_as_json_lines() {
    let d = Daemon::start(1, &[]);
    // Deploying an enrolled node fails: a node warning, then errors.
    let f = write(&d, "fail.yaml", "ops: [{op: deploy, nodes: demo1}]");
    let failed = d.json_code(&["job", "submit", &f, "--wait"], 1);
    let id = failed["id"].as_u64().unwrap();
    let shown = job(&d, id);
    let log = shown["log"].as_array().unwrap_or_else(|| panic!("no log: {shown}"));
    let serials: Vec<u64> = log.iter().map(|l| l["serial"].as_u64().unwrap()).collect();
    assert_eq!(serials, (1..=log.len() as u64).collect::<Vec<_>>());
    assert!(log.iter().all(|l| l["at"].is_string() && l["message"].is_string()), "{shown}");
    let level = |needle: &str| {
        let line = log.iter().find(|l| l["message"].as_str().unwrap().contains(needle));
        line.unwrap_or_else(|| panic!("no '{needle}' in {shown}"))["level"].as_str().unwrap().to_string()
    };
    assert_eq!(level("submitted"), "info");
    assert_eq!(level("node demo1: cannot deploy"), "warning");
    assert_eq!(level("opcode 1 failed"), "error");
    assert_eq!(level("job ended: error"), "error");
    // For people: a `log` section, one line a serial.
    let out = d.cli(&["job", "show", &id.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let section = &text[text.find("\nlog\n").unwrap_or_else(|| panic!("no log section: {text}"))..];
    assert_eq!(section.lines().count() - 2, log.len(), "{text}");
    assert!(section.contains("  1 ") && section.contains(" info    submitted: 1 opcode(s)"), "{text}");
    assert!(section.contains(" error   job ended: error"), "{text}");
    // `job watch` for people marks what is not info.
    let out = d.cli(&["job", "watch", &id.to_string()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(" error: job ended: error"), "{out:?}");

    // `--json job watch` on a running job: each line as it comes, then
    // the job as it ended.
    let sleeping = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    let mut watcher = spawn_at(&d.socket, &["--json", "job", "watch", &sleeping.to_string()], Stdio::null());
    let (tx, lines) = mpsc::channel();
    let stdout = watcher.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || lines.recv_timeout(Duration::from_secs(60)).expect("a line from job watch");
    let first: Value = serde_json::from_str(&next()).unwrap();
    assert_eq!((first["job"].as_u64(), first["serial"].as_u64()), (Some(sleeping), Some(1)), "{first}");
    assert_eq!(first["level"], "info");
    // Still running: the line came before the end.
    assert_eq!(job(&d, sleeping)["status"], "running");
    d.json(&["job", "cancel", &sleeping.to_string()]);
    let mut rest: Vec<Value> = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(60)) {
        rest.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
    }
    let status = watcher.wait().unwrap();
    reader.join().unwrap();
    let (end, entries) = rest.split_last().expect("the job at the end");
    assert!(!status.success(), "a canceled job is not a success");
    assert_eq!(end["id"], sleeping);
    assert_eq!(end["status"], "canceled");
    assert!(entries.iter().any(|e| e["level"] == "warning" && e["message"].as_str().unwrap().contains("cancel")));
    assert!(entries.windows(2).all(|w| w[0]["serial"].as_u64() < w[1]["serial"].as_u64()));
}

#[test]
fn job_list_selects_fields_and_ids_and_a_shown_job_resubmits_its_own_opcodes() {
    let d = Daemon::start(2, &[]);
    d.json(&["node", "manage", "demo[1-2]", "--wait"]);
    // Opcodes that can run again, one of each kind.
    let f = write(
        &d,
        "job.yaml",
        "priority: 3\nops:\n  - {op: inspect, nodes: 'demo[1-2]', fanout: 2}\n  - {op: power, action: on, nodes: demo1}\n  \
         - {op: boot-device, device: pxe, persistent: true, nodes: demo1}\n  \
         - {op: maintenance, on: true, reason: fan swap, nodes: demo2}\n  - {op: maintenance, on: false, nodes: demo2}\n  \
         - {op: sleep, seconds: 0.5}\n  - {op: exec, nodes: demo1, worker: exec, command: 'true', timeout: 30, fanout: 4}\n",
    );
    let first = d.json(&["job", "submit", &f, "--wait"]);
    assert_eq!(first["status"], "success", "{first}");
    let a = first["id"].as_u64().unwrap();
    let b = submit(&d, "ops: [{op: sleep, seconds: 0}]");
    let c = submit(&d, "ops: [{op: sleep, seconds: 0}]");
    assert_eq!(watch(&d, c)["status"], "success");

    // Fields, as gnt-job list -o; ids, in the order given.
    let picked = d.json(&["job", "list", "-o", "id,status,summary,ops,opstatus", &c.to_string(), &a.to_string()]);
    let sleep = serde_json::json!({"id": c, "status": "success", "summary": ["sleep 0"],
        "ops": [{"op": "sleep", "seconds": 0.0}], "opstatus": ["success"]});
    assert_eq!(picked[0], sleep);
    assert_eq!(picked[1]["id"], a);
    assert_eq!(picked[1]["summary"].as_array().unwrap().len(), 7);
    assert_eq!(picked[1]["ops"], serde_json::json!(opcodes(&job(&d, a))));
    let out = d.cli(&["job", "list", "-o", "id,priority,status", &a.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text, format!("ID  PRIORITY  STATUS\n{a:<2}  3         success\n"), "{text}");
    let out = d.cli(&["job", "list", "-o", "id,opstatus,ops", &c.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text, format!("ID  OPSTATUS  OPS\n{c:<2}  success   {{\"op\":\"sleep\",\"seconds\":0.0}}\n"), "{text}");
    let plus = d.json(&["job", "list", "-o", "+ended,error"]);
    let keys: Vec<&String> = plus[0].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 7, "the default five and two more: {plus}");
    assert_eq!(ids(&d.json(&["job", "list", &b.to_string()])), [b]);
    assert!(refused(&d, &["job", "list", &b.to_string(), "9998", "9999"], 2, "not_found").contains("9998, 9999"));
    let out = d.cli(&["job", "list", "-o", "id,colour"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown job field 'colour'"), "{out:?}");

    // What `--json job show` prints is a job file: submitted again, it
    // runs the same opcodes with the same priority.
    let shown = d.cli(&["--json", "job", "show", &a.to_string()]);
    let again = write(&d, "again.json", &String::from_utf8_lossy(&shown.stdout));
    let copy = d.json(&["job", "submit", &again, "--wait"]);
    assert_eq!(copy["status"], "success", "{copy}");
    assert_ne!(copy["id"], a);
    assert_eq!(copy["priority"], 3);
    assert_eq!(opcodes(&copy), opcodes(&job(&d, a)));
    assert_eq!(
        opcodes(&copy)[3],
        serde_json::json!({"op": "maintenance", "nodes": "demo2", "on": true, "reason": "fan swap"})
    );
    // Only the opcodes: a file of them alone does the same.
    let ops_only = write(&d, "ops.json", &serde_json::json!({ "ops": opcodes(&copy) }).to_string());
    let third = d.json(&["job", "submit", &ops_only, "--wait"]);
    assert_eq!(opcodes(&third), opcodes(&copy));
}

/// A job's opcodes, as `--json` prints them (in the words of a job file).
fn opcodes(j: &Value) -> Vec<Value> {
    j["ops"].as_array().unwrap().iter().map(|o| o["opcode"].clone()).collect()
}

#[test]
fn archive_says_no_such_job_and_autoarchive_archives_by_age_on_demand() {
    let d = Daemon::start(0, &[]);
    assert!(refused(&d, &["job", "archive", "9999"], 2, "not_found").contains("no such job: 9999"));
    let ended: Vec<u64> = (0..3).map(|_| submit(&d, "ops: [{op: sleep, seconds: 0}]")).collect();
    for id in &ended {
        assert_eq!(watch(&d, *id)["status"], "success");
    }
    let running = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    assert!(d.cli(&["job", "archive", &ended[0].to_string()]).status.success());
    let message = refused(&d, &["job", "archive", &ended[0].to_string()], 2, "invalid_input");
    assert!(message.contains("already archived"), "{message}");

    // By age: none is an hour old; `all` takes every ended one, not the running one.
    let out = d.cli(&["job", "autoarchive", "1h"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0 jobs archived\n", "{out:?}");
    assert_eq!(d.json(&["job", "autoarchive", "all"]), serde_json::json!({"archived": 2}));
    assert_eq!(ids(&d.json(&["job", "list"])), [running]);
    assert_eq!(job(&d, ended[2])["archived"], true);
    let out = d.cli(&["job", "autoarchive", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid duration"), "{out:?}");
    d.json(&["job", "cancel", &running.to_string()]);
}

#[test]
fn a_submission_past_max_queued_jobs_is_refused_whole_and_stores_nothing() {
    let d = Daemon::start_env(0, &["--max-running-jobs", "1"], &[("KILN_MAX_QUEUED_JOBS", "3")]);
    let held: Vec<u64> = (0..2).map(|_| submit(&d, "ops: [{op: sleep, seconds: 600}]")).collect();
    let status = d.json(&["queue", "status"]);
    assert_eq!((status["unfinished"].as_u64(), status["max_queued"].as_u64()), (Some(2), Some(3)), "{status}");
    // Two more would make four: the pair is refused whole.
    let f = write(&d, "two.yaml", "- ops: [{op: sleep, seconds: 0}]\n- ops: [{op: sleep, seconds: 0}]\n");
    let message = refused(&d, &["job", "submit", &f], 1, "queue_full");
    assert!(message.contains("max_queued_jobs = 3") && message.contains("2 jobs have not ended"), "{message}");
    let third = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    refused(&d, &["job", "submit", &write(&d, "one.yaml", "ops: [{op: sleep, seconds: 0}]")], 1, "queue_full");
    assert_eq!(d.json(&["queue", "status"])["last_job_id"], third, "no id given out");
    assert_eq!(ids(&d.json(&["job", "list"])), [held[0], held[1], third]);
    // Room again once a job has ended.
    d.json(&["job", "cancel", &held[0].to_string()]);
    assert_eq!(watch(&d, held[0])["status"], "canceled");
    assert_eq!(submit_many(&d, "- ops: [{op: sleep, seconds: 0}]\n").len(), 1);
    for id in [held[1], third] {
        d.json(&["job", "cancel", &id.to_string()]);
    }
    // The flag wins over the variable, as for every key.
    let check = d.cli(&["serve", "--check-config", "--max-queued-jobs", "0"]);
    assert_eq!(check.status.code(), Some(2), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stderr).contains("--max-queued-jobs: 0: expected at least 1"), "{check:?}");
}

#[test]
fn drain_refuses_every_change_whichever_way_it_comes_and_lets_reads_and_queue_management_through() {
    let d = Daemon::start(3, &["--max-running-jobs", "1"]);
    d.json(&["port", "create", "52:54:00:00:00:01", "--node", "demo3"]);
    let done = submit(&d, "ops: [{op: sleep, seconds: 0}]");
    assert_eq!(watch(&d, done)["status"], "success");
    let holder = submit(&d, "ops: [{op: sleep, seconds: 600}]");
    let queued = submit(&d, "ops: [{op: sleep, seconds: 0}]");
    assert_eq!(d.json(&["queue", "drain", "on"])["drained"], true);
    let nodes = d.json(&["node", "list"]);
    let ports = d.json(&["port", "list"]);
    let jobs = ids(&d.json(&["job", "list"]));
    let last = d.json(&["queue", "status"])["last_job_id"].clone();

    // Every change, whether it would be a job or not, is refused the same.
    let job_file = write(&d, "job.yaml", "ops: [{op: sleep, seconds: 0}]");
    let jobs_file = write(&d, "jobs.yaml", "- ops: [{op: sleep, seconds: 0}]\n- ops: [{op: sleep, seconds: 0}]\n");
    let import = write(&d, "nodes.yaml", "- {name: new1, driver: fake}\n");
    for args in [
        &["node", "manage", "demo1"][..],
        &["node", "power", "on", "demo1"],
        &["node", "maintenance", "on", "demo1", "--reason", "x"],
        &["node", "boot-device", "set", "demo1", "pxe"],
        &["node", "set", "demo1", "--property", "rack=r1"],
        &["node", "delete", "demo2"],
        &["node", "create", "new1", "--driver", "fake"],
        &["node", "import", &import],
        &["port", "create", "52:54:00:00:00:02", "--node", "demo1"],
        &["port", "delete", "52:54:00:00:00:01"],
        &["job", "submit", &job_file],
        &["job", "submit", &jobs_file],
        &["exec", "-w", "demo1", "--worker", "exec", "--", "true"],
        &["copy", "-w", "demo1", "--worker", "exec", &job_file, "/tmp/kiln-drain-copy"],
    ] {
        let message = refused(&d, args, 1, "drained");
        assert!(message.contains("kiln queue drain off"), "{args:?}: {message}");
    }
    assert_eq!(d.json(&["node", "list"]), nodes);
    assert_eq!(d.json(&["port", "list"]), ports);
    assert_eq!(ids(&d.json(&["job", "list"])), jobs);
    assert_eq!(d.json(&["queue", "status"])["last_job_id"], last);

    // Reads and queue management go on.
    for args in [
        &["status"][..],
        &["node", "show", "demo1"],
        &["node", "history", "demo1"],
        &["node", "power", "status", "demo1"],
        &["job", "show", &queued.to_string()],
        &["job", "priority", &queued.to_string(), "-3"],
        &["job", "archive", &done.to_string()],
        &["job", "autoarchive", "7d"],
        &["periodic", "list"],
        &["queue", "status"],
    ] {
        let out = d.cli(args);
        assert!(out.status.success(), "{args:?} refused while drained: {out:?}");
    }
    // Running jobs finish, and a queued one still starts.
    d.json(&["job", "cancel", &holder.to_string()]);
    assert_eq!(watch(&d, queued)["status"], "success");
    d.json(&["queue", "drain", "off"]);
    d.json(&["node", "set", "demo1", "--property", "rack=r1"]);
    assert_eq!(d.node("demo1")["properties"]["rack"], "r1");
}

#[test]
fn an_opcode_without_a_fanout_takes_default_fanout_whichever_way_it_comes() {
    let d = Daemon::start(3, &["--no-periodic", "--set", "default_fanout=1"]);
    for i in 1..=3 {
        d.json(&["node", "set", &format!("demo{i}"), "--driver-info", "latency_ms=50"]);
    }
    // One node at a time: each node's operation ends before the next
    // starts, for a job file's opcode and a bulk verb alike.
    let f = write(&d, "job.yaml", "ops: [{op: manage, nodes: 'demo[1-3]'}]");
    assert_eq!(d.json(&["job", "submit", &f, "--wait"])["status"], "success");
    d.json(&["node", "provide", "demo[1-3]", "--wait"]);
    d.wait_for_stored_event("demo3 provided", |e| {
        e["node_name"] == "demo3" && e["action"] == "provide" && e["kind"] == "end"
    });
    let out = d.cli(&["--json", "events", "--kind", "start,end"]);
    let events: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for action in ["manage", "provide"] {
        let seen: Vec<(String, String)> = events
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| (e["node_name"].as_str().unwrap().to_string(), e["kind"].as_str().unwrap().to_string()))
            .collect();
        let one_at_a_time: Vec<(String, String)> = ["demo1", "demo2", "demo3"]
            .iter()
            .flat_map(|n| ["start", "end"].map(|k| (n.to_string(), k.to_string())))
            .collect();
        assert_eq!(seen, one_at_a_time, "{action}");
    }
}

#[test]
fn a_job_holds_its_nodes_between_opcodes_and_lets_them_go_when_it_ends() {
    let d = Daemon::start(2, &["--no-periodic"]);
    d.json(&["node", "manage", "demo2", "--wait"]);
    let mut events = Events::follow(&d);
    let id = submit(
        &d,
        "ops:\n  - {op: hold, nodes: demo1}\n  - {op: manage, nodes: demo1}\n  - {op: sleep, seconds: 600}\n  - {op: provide, nodes: demo1}\n",
    );
    events.wait_for("demo1 managed", |e| e["node_name"] == "demo1" && e["action"] == "manage" && e["kind"] == "end");
    // Between the job's opcodes the node stays the job's.
    let n = d.node("demo1");
    assert_eq!(n["reservation"]["purpose"], format!("held by job {id}"), "{n}");
    let out = d.json_code(&["node", "power", "on", "demo1", "--wait"], 1);
    assert_eq!(out[0]["error"]["kind"], "node_locked", "{out}");
    assert!(out[0]["error"]["message"].as_str().unwrap().contains(&format!("held by job {id}")), "{out}");
    // Power sync leaves a held node alone; other nodes are not held.
    let sync = d.json(&["periodic", "run", "power_sync"]);
    let said = sync[0]["last_result"].as_str().unwrap();
    assert!(said.contains("1 in sync") && said.contains("1 skipped"), "{sync}");
    d.json(&["node", "power", "on", "demo2", "--wait"]);

    // However the job ends (here: canceled), the node is let go.
    d.json(&["job", "cancel", &id.to_string()]);
    assert_eq!(watch(&d, id)["status"], "canceled");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !d.node("demo1")["reservation"].is_null() {
        assert!(std::time::Instant::now() < deadline, "demo1 was never released: {}", d.node("demo1"));
        std::thread::yield_now();
    }
    d.json(&["node", "power", "on", "demo1", "--wait"]);
    assert_eq!(d.node("demo1")["power_state"], "power on");
    assert_eq!(d.state("demo1"), "manageable", "the canceled job's last opcode never ran");

    // A hold of a node that another job's task holds fails the job, and
    // nothing of it runs.
    d.json(&["node", "set", "demo2", "--driver-info", "latency_ms=60000"]);
    d.json(&["node", "provide", "demo2"]);
    let blocked = submit(&d, "ops:\n  - {op: hold, nodes: 'demo[1-2]'}\n  - {op: provide, nodes: demo1}\n");
    let j = watch(&d, blocked);
    assert_eq!(j["status"], "error", "{j}");
    assert_eq!(d.state("demo1"), "manageable");
    assert!(d.node("demo1")["reservation"].is_null(), "the part of the hold it got is let go");
}
