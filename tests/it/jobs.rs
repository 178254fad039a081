//! The job queue over the socket: submission, priorities, dependencies,
//! watch, cancel, archive, drain, and the restart rule after SIGKILL.

use serde_json::Value;

use crate::harness::{Daemon, Events};

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

/// Follows a job to its end with `kiln job watch`; returns the job.
fn watch(d: &Daemon, id: u64) -> Value {
    let out = d.cli(&["--json", "job", "watch", &id.to_string()]);
    serde_json::from_slice(&out.stdout).expect("job JSON")
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
    let running = d.json(&["node", "deploy", "demo1"])["job"].as_u64().unwrap();
    events.started("demo1");
    let queued_a = d.json(&["node", "deploy", "demo2"])["job"].as_u64().unwrap();
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
    let not_started = results.iter().filter(|r| r["error_kind"] == "canceled").count();
    assert!(not_started >= 1, "{j}");
    assert_eq!(j["ops"][1]["status"], "canceled");
    assert_eq!(d.state("demo6"), "enroll");
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
