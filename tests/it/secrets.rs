//! BMC passwords never leave the store (docs/reliability.md): after a full run
//! with one known password on IPMI, Redfish and fake nodes whose BMCs fail
//! in every way (nothing listening, HTTP 401), failing power actions and
//! verbs, jobs, periodic tasks, bad requests, the password is nowhere in the
//! daemon's JSON log (at `debug`), the CLI's output (tables and JSON, stdout
//! and stderr), the event stream, the job logs or any error; and it is in
//! the store, so the test did use it.

use crate::bmc::Site;
use crate::peers::{self, Answer, Responder};

/// Unique enough to never appear by chance; at most 20 bytes (IPMI).
const SECRET: &str = "Kiln-S3cret-7f3a9c";

/// `admin:SECRET` in base64, as an HTTP basic auth header would carry it.
const SECRET_BASIC: &str = "YWRtaW46S2lsbi1TM2NyZXQtN2YzYTlj";

fn unauthorized(_method: &str, _path: &str) -> Answer {
    Answer::Reply("401 Unauthorized", r#"{"error": {"message": "bad credentials"}}"#.into())
}

/// Runs the CLI (no `--json` added) and keeps what it printed.
fn raw(site: &Site, args: &[&str]) -> std::process::Output {
    let out = site.d.cli(args);
    site.said
        .borrow_mut()
        .extend([String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string()]);
    out
}

#[test]
fn a_bmc_password_never_shows_in_logs_output_events_job_logs_or_errors() {
    // One failed read puts a node in maintenance: an unreachable BMC is
    // backed off after its first failure, so no second read comes soon.
    let mut site = Site::start_with(
        1,
        &[
            "--log-format",
            "json",
            "--no-periodic",
            "--max-running-jobs",
            "4",
            "--set",
            "power_state_sync_max_retries=1",
        ],
    );
    let rf401 = Responder::start(unauthorized);
    let closed_tcp = peers::closed_tcp_port();
    let closed_tcp_port = closed_tcp.port();
    let closed_udp = peers::closed_udp_port();

    site.ipmi("sec-ipmi", closed_udp, SECRET, &["timeout=2"]);
    site.redfish(
        "sec-rf",
        &format!("http://127.0.0.1:{closed_tcp_port}"),
        "/redfish/v1/Systems/1",
        SECRET,
        &["timeout=2"],
    );
    site.redfish("sec-rf401", &rf401.url(), "/redfish/v1/Systems/1", SECRET, &["timeout=2", "auth_method=basic"]);
    site.create("sec-fake", "fake", "10.0.0.9", SECRET, &[]);
    let bad = "sec-ipmi,sec-rf,sec-rf401";

    // Verbs and power actions that fail on every BMC, through jobs.
    let out = site.run(&["node", "manage", bad, "--wait"], 1);
    assert!(out.as_array().unwrap().iter().all(|r| r["ok"] == false), "{out}");
    site.run(&["node", "power", "on", bad, "--wait"], 1);
    site.run(&["node", "power", "status", bad], 1);
    site.ok(&["node", "manage", "sec-fake", "--wait"]);
    site.ok(&["node", "power", "on", "sec-fake", "--wait"]);
    let job = site.d.dir.path().join("job.yaml");
    std::fs::write(
        &job,
        format!("ops:\n  - {{op: power, action: reboot, nodes: '{bad}'}}\n  - {{op: sleep, seconds: 0}}\n"),
    )
    .unwrap();
    let submitted = site.run(&["job", "submit", job.to_str().unwrap(), "--wait"], 1);
    let id = submitted["id"].as_u64().unwrap_or_else(|| panic!("{submitted}")).to_string();
    site.ok(&["job", "show", &id]);
    site.ok(&["job", "list"]);
    site.table(&["job", "list"]);
    raw(&site, &["job", "watch", &id]);
    raw(&site, &["--json", "job", "watch", &id]);

    // Power sync reads managed nodes only (not nodes in enroll): the
    // failing nodes are made manageable in the store, as nodes managed
    // while their BMCs still answered would be. The first run's log is
    // checked here, since a restart starts a new one.
    site.d.kill9();
    let first_run = site.d.log_lines();
    assert!(first_run.iter().any(|l| l.contains("kiln_drivers")), "no driver line in the first run's log");
    for line in &first_run {
        assert!(!line.contains(SECRET) && !line.contains(SECRET_BASIC), "the daemon logged the password:\n{line}");
    }
    let db = rusqlite::Connection::open(site.d.dir.path().join("kiln.sqlite")).unwrap();
    let managed = db
        .execute(
            "UPDATE nodes SET provision_state = 'manageable' WHERE name IN ('sec-ipmi', 'sec-rf', 'sec-rf401')",
            [],
        )
        .unwrap();
    assert_eq!(managed, 3);
    drop(db);
    site.d.restart();

    // Power sync against the failing BMCs: a failed read puts each in
    // maintenance (the later runs skip them).
    for _ in 0..3 {
        site.ok(&["periodic", "run", "power_sync"]);
    }
    for name in ["sec-ipmi", "sec-rf", "sec-rf401"] {
        let n = site.node(name);
        assert_eq!(n["fault"], "power failure", "{name} is not in maintenance: {n}");
    }
    site.ok(&["periodic", "list"]);
    site.table(&["periodic", "list"]);

    // Bad requests that carry the password or name its node: each refused,
    // with an error that says why.
    let long = site.d.dir.path().join("long.pw");
    std::fs::write(&long, format!("{SECRET}-far-too-long-for-ipmi\n")).unwrap();
    let pw = site.d.dir.path().join("sec-ipmi.pw");
    let (long, pw) = (long.to_str().unwrap(), pw.to_str().unwrap());
    let refusals: [(&[&str], &str); 4] = [
        (
            &["node", "create", "sec-long", "--driver", "ipmi", "--address", "127.0.0.1", "--password-file", long],
            "20 bytes",
        ),
        (
            &[
                "node",
                "create",
                "sec-rf",
                "--driver",
                "redfish",
                "--address",
                "http://127.0.0.1:1",
                "--password-file",
                pw,
            ],
            "sec-rf",
        ),
        (&["node", "create", "sec-noaddr", "--driver", "redfish", "--password-file", pw], "address"),
        (&["node", "set", "sec-rf", "--driver-info", "timeout=soon"], "timeout"),
    ];
    for (args, needle) in refusals {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = raw(&site, &all);
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && text.contains(needle), "kiln {args:?}: {text}");
    }
    site.ok(&["node", "set", "sec-rf", "--password-file", pw]);
    site.run(&["node", "deploy", "sec-rf", "--wait"], 1);

    // Every way a node is shown, and the event stream.
    for name in ["sec-ipmi", "sec-rf", "sec-rf401", "sec-fake"] {
        let n = site.node(name);
        assert_eq!(n["driver_info"]["password"], "******", "{n}");
        site.ok(&["node", "history", name]);
    }
    site.ok(&["node", "list"]);
    site.ok(&["status"]);
    site.ok(&["queue", "status"]);
    let events = raw(&site, &["--json", "events"]);
    let events = String::from_utf8_lossy(&events.stdout).to_string();
    assert!(events.contains("sec-rf401"), "the failures were announced: {events}");
    raw(&site, &["events"]);

    // The store does hold it (the test used it) ...
    let db = rusqlite::Connection::open(site.d.dir.path().join("kiln.sqlite")).unwrap();
    let info: String =
        db.query_row("SELECT driver_info FROM nodes WHERE name = 'sec-rf401'", [], |r| r.get(0)).unwrap();
    assert!(info.contains(SECRET), "the store keeps the password");
    // ... and it never reached a job log or a history line.
    let mut stored_text: Vec<String> = Vec::new();
    for sql in [
        "SELECT log FROM jobs UNION ALL SELECT log FROM jobs_archive",
        "SELECT coalesce(error, '') FROM node_history",
        "SELECT body FROM jobs UNION ALL SELECT body FROM jobs_archive",
        "SELECT coalesce(last_error, '') FROM nodes",
    ] {
        let mut q = db.prepare(sql).unwrap();
        stored_text.extend(q.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap));
    }
    assert!(stored_text.iter().any(|t| t.contains("401")), "the BMC's refusal was recorded");
    for t in &stored_text {
        assert!(
            !t.contains(SECRET) && !t.contains(SECRET_BASIC),
            "the password is in a job log, job or history line: {t}"
        );
    }
    // The BMC got it, so the driver did send it (as basic auth).
    assert!(!rf401.requests().is_empty());

    let log = site.finish(&[SECRET, SECRET_BASIC]);
    // The log did speak of the failing BMCs, in JSON lines at debug.
    assert!(log.iter().all(|l| l.starts_with('{')), "not JSON lines");
    assert!(log.iter().any(|l| l.contains("kiln_drivers")), "no driver line in {} lines", log.len());
}
