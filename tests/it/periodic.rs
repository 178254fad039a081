//! Periodic tasks through the CLI: power sync records the BMC's state,
//! repeated read failures put a node in maintenance, and recovery takes it
//! out again. The daemon runs with `--no-periodic`, so only `periodic run`
//! starts a task and nothing races the test.

use serde_json::Value;

use crate::harness::Daemon;

fn run(d: &Daemon, task: &str) -> Value {
    let out = d.json(&["periodic", "run", task]);
    out[0].clone()
}

#[test]
fn the_builtin_tasks_are_listed_and_an_unknown_one_is_refused() {
    let d = Daemon::start(1, &["--no-periodic"]);
    let list = d.json(&["periodic", "list"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["power_sync", "power_failure_recovery", "wait_timeouts", "job_autoarchive", "store_maintenance"]
    );
    assert!(list.as_array().unwrap().iter().all(|t| t["enabled"] == false && t["runs"] == 0));
    let err = d.json_code(&["periodic", "run", "reticulate"], 2);
    assert_eq!(err["error"]["kind"], "not_found");
    for task in ["wait_timeouts", "job_autoarchive", "store_maintenance"] {
        let r = run(&d, task);
        assert_eq!(r["runs"], 1, "{r}");
        assert_eq!(r["last_error"], Value::Null, "{r}");
    }
}

#[test]
fn power_sync_records_the_bmc_state_and_failures_lead_to_maintenance_and_back() {
    let d = Daemon::start(3, &["--no-periodic"]);
    d.json(&["node", "manage", "demo[1-3]", "--wait"]);
    assert_eq!(d.node("demo1")["power_state"], "power off");

    // The BMC says on (a fake BMC restarted powered on); the record follows.
    d.json(&["node", "set", "demo1", "--driver-info", "power=on"]);
    let r = run(&d, "power_sync");
    assert!(r["last_result"].as_str().unwrap().contains("1 updated"), "{r}");
    assert_eq!(d.node("demo1")["power_state"], "power on");
    let history = d.json(&["node", "history", "demo1"]);
    assert_eq!(history.as_array().unwrap().last().unwrap()["event"], "power sync");

    // demo2's BMC fails every read: after three syncs it is in maintenance.
    d.json(&["node", "set", "demo2", "--driver-info", "failure_rate=1"]);
    for attempt in 1..=3 {
        run(&d, "power_sync");
        let n = d.node("demo2");
        assert_eq!(n["maintenance"], attempt == 3, "after {attempt} failed reads: {n}");
    }
    let n = d.node("demo2");
    assert_eq!(n["fault"], "power failure");
    assert!(n["last_error"].as_str().unwrap().contains("simulated BMC failure"));
    // In maintenance it is skipped by power sync.
    assert!(run(&d, "power_sync")["last_result"].as_str().unwrap().contains("1 skipped"));

    // Recovery waits until a read succeeds.
    assert!(run(&d, "power_failure_recovery")["last_result"].as_str().unwrap().starts_with("0 nodes"));
    assert_eq!(d.node("demo2")["maintenance"], true);
    d.json(&["node", "set", "demo2", "--unset-driver-info", "failure_rate"]);
    assert!(run(&d, "power_failure_recovery")["last_result"].as_str().unwrap().starts_with("1 nodes"));
    let n = d.node("demo2");
    assert_eq!(n["maintenance"], false);
    assert_eq!(n["fault"], Value::Null);
    assert_eq!(d.node("demo3")["maintenance"], false, "other nodes untouched");
}

#[test]
fn nodes_in_enroll_are_not_power_synced_and_never_put_in_maintenance() {
    let d = Daemon::start(2, &["--no-periodic"]);
    // demo1 is enrolled with a BMC that is not set up yet: every read fails.
    d.json(&["node", "set", "demo1", "--driver-info", "failure_rate=1"]);
    d.json(&["node", "manage", "demo2", "--wait"]);
    for _ in 0..4 {
        let r = run(&d, "power_sync");
        let said = r["last_result"].as_str().unwrap();
        assert!(said.contains("1 in sync") && said.contains("0 failed") && said.contains("1 skipped"), "{r}");
    }
    let n = d.node("demo1");
    assert_eq!(n["provision_state"], "enroll");
    assert_eq!(n["maintenance"], false, "{n}");
    assert_eq!(n["fault"], Value::Null);
    assert_eq!(n["power_state"], Value::Null);
    // Once managed it is synced like any other node.
    d.json(&["node", "set", "demo1", "--unset-driver-info", "failure_rate"]);
    d.json(&["node", "manage", "demo1", "--wait"]);
    assert!(run(&d, "power_sync")["last_result"].as_str().unwrap().contains("2 in sync"));
}

fn task(list: &Value, name: &str) -> Value {
    list.as_array().unwrap().iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no {name}: {list}")).clone()
}

#[test]
fn each_task_has_its_own_settings_shown_with_its_next_run_and_changed_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("kiln.toml");
    std::fs::write(
        &conf,
        "[periodic.power_sync]\ninterval = -1\n\
         [periodic.wait_timeouts]\nenabled = false\n\
         [periodic.store_maintenance]\ninterval = \"45s\"\n\
         [periodic.job_autoarchive]\nrun_immediately = true\n",
    )
    .unwrap();
    let mut d = Daemon::start(0, &["--config", conf.to_str().unwrap()]);
    let list = d.json(&["periodic", "list"]);
    let sync = task(&list, "power_sync");
    assert_eq!((sync["enabled"].clone(), sync["next_run"].clone()), (false.into(), Value::Null), "{sync}");
    assert_eq!(task(&list, "wait_timeouts")["enabled"], false);
    let store = task(&list, "store_maintenance");
    assert_eq!((store["enabled"].clone(), store["spacing_s"].clone()), (true.into(), 45.into()), "{store}");
    assert!(store["next_run"].as_str().unwrap() > store["last_run"].as_str().unwrap_or(""), "{store}");
    assert_eq!(task(&list, "power_failure_recovery")["spacing_s"], 300, "site-wide default kept");
    // run_immediately: the archive pass ran at start (bounded wait for its end).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while task(&d.json(&["periodic", "list"]), "job_autoarchive")["runs"] != 1 {
        assert!(std::time::Instant::now() < deadline, "job_autoarchive never ran at start");
        std::thread::yield_now();
    }
    let table = String::from_utf8(d.cli(&["periodic", "list"]).stdout).unwrap();
    assert!(table.lines().next().unwrap().contains("NEXT RUN"), "{table}");

    // A reload turns power sync on with its own interval.
    std::fs::write(&conf, "[periodic.power_sync]\ninterval = \"30s\"\n").unwrap();
    d.signal(libc::SIGHUP);
    let line = d.wait_for_log("configuration reloaded");
    assert!(line.contains("periodic"), "{line}");
    let list = d.json(&["periodic", "list"]);
    let sync = task(&list, "power_sync");
    assert_eq!((sync["enabled"].clone(), sync["spacing_s"].clone()), (true.into(), 30.into()), "{sync}");
    assert!(sync["next_run"].is_string(), "{sync}");
    assert_eq!(task(&list, "wait_timeouts")["enabled"], true, "its own setting is gone: site-wide again");

    // A task that does not exist is refused, naming the key and the tasks.
    std::fs::write(&conf, "[periodic.reticulate]\ninterval = 5\n").unwrap();
    let out = std::process::Command::new(crate::harness::KILN)
        .args(["serve", "--check-config", "--config", conf.to_str().unwrap(), "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("periodic") && err.contains("no periodic task 'reticulate'") && err.contains("power_sync"),
        "{err}"
    );
}
