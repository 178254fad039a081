//! `kiln bench` runs every scenario, small, so none can rot. Times are not
//! asserted (they are measurements, not tests); the invariants the lock
//! scenario checks are.

use std::collections::BTreeMap;

/// A successful `kiln --json bench` run's figures, by name.
fn figures(out: &std::process::Output) -> BTreeMap<String, f64> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_string(), f["value"].as_f64().unwrap()))
        .collect()
}

#[test]
fn every_bench_scenario_runs_small_and_the_lock_holds() {
    let out = std::process::Command::new(crate::harness::KILN)
        .args(["--json", "bench", "all", "--nodes", "300", "--jobs", "2000", "--clients", "8"])
        .args(["--requests", "400", "--tasks", "3000", "--names", "3000"])
        .output()
        .unwrap();
    let figures = figures(&out);
    for scenario in ["nodeset", "lock", "jobs", "lifecycle", "admin", "scale", "power-sync", "exec", "api", "list"] {
        assert!(figures.contains_key(&format!("{scenario}.wall")), "{scenario} did not run: {figures:?}");
    }
    assert_eq!(figures["lock.max_holders"], 1.0, "two holders of one node at once");
    assert_eq!(figures["lock.lost_updates"], 0.0);
    assert_eq!(figures["lock.contenders_ok"], 400.0);
    assert_eq!(figures["jobs.submitted"], 2000.0);
    // The limits under the queue are measured in the same run.
    for limit in [
        "jobs.writer_ceiling_per_s",
        "jobs.store_ceiling_per_s",
        "jobs.queue_only_per_s",
        "jobs.fsync_bound_per_s",
        "jobs.batch_submissions_per_s",
    ] {
        assert!(figures[limit].is_finite() && figures[limit] > 0.0, "{limit}: {}", figures[limit]);
    }
    assert!(figures["lifecycle.commits_per_group"] >= 1.0, "{figures:?}");
    for scenario in ["jobs", "lifecycle"] {
        for thread in ["store_thread", "sync_thread", "checkpoint_thread", "other_threads"] {
            let figure = format!("{scenario}.cpu_{thread}");
            assert!(figures.get(&figure).is_some_and(|v| *v >= 0.0), "no {figure}");
        }
        // The store's one writer carries every commit.
        assert!(figures[&format!("{scenario}.cpu_store_thread")] > 0.0, "{figures:?}");
    }
    assert_eq!(figures["scale.nodes"], 300.0);
    assert_eq!(figures["admin.requests"], 400.0);
    assert_eq!(figures["api.nodes"], 300.0);
    assert_eq!(figures["api.requests"], 400.0);
    assert_eq!(figures["list.nodes"], 300.0);
}

#[test]
fn the_list_bench_lists_every_node_while_another_client_is_answered() {
    let out = std::process::Command::new(crate::harness::KILN)
        .args(["--json", "bench", "list", "--nodes", "3000"])
        .output()
        .unwrap();
    let figures = figures(&out);
    assert_eq!(figures["list.nodes"], 3000.0);
    for figure in ["list.first_row", "list.all_rows", "list.json_all_rows", "list.show_p99", "list.show_max"] {
        assert!(figures[figure].is_finite() && figures[figure] > 0.0, "{figure}: {figures:?}");
    }
    assert!(figures["list.first_row"] <= figures["list.all_rows"], "{figures:?}");
    assert!(figures["list.shows_during"] >= 1.0, "no node show during the listing: {figures:?}");
}

#[test]
fn a_repeated_scenario_reports_each_figures_median_and_every_run() {
    let out = std::process::Command::new(crate::harness::KILN)
        .args(["--json", "bench", "nodeset", "--names", "300", "--repeat", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let figures = report["figures"].as_array().unwrap();
    let repeat = figures.iter().find(|f| f["name"] == "repeat").expect("a repeat figure");
    assert_eq!(repeat["value"], 3.0);
    let fold = figures.iter().find(|f| f["name"] == "nodeset.fold_1d.names").expect("the scenario's figures");
    assert_eq!(fold["value"], 300.0);
    assert_eq!(fold["runs"], serde_json::json!([300.0, 300.0, 300.0]));
    let wall = figures.iter().find(|f| f["name"] == "nodeset.wall").unwrap();
    let mut runs: Vec<f64> = wall["runs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    runs.sort_by(f64::total_cmp);
    assert_eq!(wall["value"].as_f64().unwrap(), runs[1], "the median of three runs");

    // A repeat count out of range changes nothing and says why.
    let bad =
        std::process::Command::new(crate::harness::KILN).args(["bench", "nodeset", "--repeat", "0"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--repeat"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[test]
fn the_scale_out_bench_runs_small_and_loses_nothing() {
    let out = std::process::Command::new(crate::harness::KILN)
        .args(["--json", "bench", "scale-out", "--nodes", "60"])
        // Small timeouts: the drills wait for a member to be declared dead.
        .env("KILN_MEMBER_TIMEOUT", "3s")
        .env("KILN_MEMBER_HEARTBEAT", "500ms")
        .env_remove("KILN_STORE")
        .output()
        .unwrap();
    let figures = figures(&out);
    for k in 1..=3 {
        assert!(figures[&format!("scaleout.transitions_per_s.m{k}")] > 0.0, "{figures:?}");
        assert_eq!(figures[&format!("scaleout.lost_transitions.m{k}")], 0.0, "{figures:?}");
        assert_eq!(figures[&format!("scaleout.duplicated_transitions.m{k}")], 0.0, "{figures:?}");
    }
    for drill in ["scaleout.detect_s", "scaleout.claim_s", "scaleout.takeover_s", "scaleout.fenced_writes"] {
        assert!(figures.contains_key(drill), "{drill} missing: {figures:?}");
    }
}
