//! `kiln serve --store postgres://...` on a real PostgreSQL, started once
//! for this test binary by `scripts/pg.sh` (stopped by it when the binary
//! exits): a lifecycle that survives a restart, a URL that does not parse,
//! a server that is down, and a password that never shows.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Daemon, KILN, states};

const PASSWORD: &str = "pg-it-s3cret";

struct Server {
    port: u16,
    databases: AtomicUsize,
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-pg-it-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
            .args(["start", dir.to_str().unwrap(), "0"])
            .env("KILN_PG_WATCH", std::process::id().to_string())
            .env("KILN_PG_FAST", "1")
            .env("KILN_PG_CLEAN", "1")
            .env("KILN_PG_PASSWORD", PASSWORD)
            .output()
            .expect("cannot run scripts/pg.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "scripts/pg.sh could not start PostgreSQL:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = stdout.lines().find_map(|l| l.strip_prefix("port=")).and_then(|p| p.parse().ok()).unwrap();
        Server { port, databases: AtomicUsize::new(0) }
    })
}

/// A new database on the server, and its URL (password included).
pub fn database() -> String {
    let s = server();
    let name = format!("it{}_{}", std::process::id(), s.databases.fetch_add(1, Ordering::SeqCst));
    let url = format!("postgres://kiln:{PASSWORD}@127.0.0.1:{}/{name}?sslmode=disable", s.port);
    psql(&url.replace(&format!("/{name}?"), "/postgres?"), &format!("CREATE DATABASE {name}"));
    url
}

/// Runs one statement with psql on the database `url` names; its rows,
/// unaligned, one a line.
pub fn psql(url: &str, sql: &str) -> String {
    let psql = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin/psql")).find(|p| p.exists()))
        .expect("psql from the postgresql package");
    let out = Command::new(psql).args(["-tA", "-c", sql, url]).output().unwrap();
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_site_on_postgres_runs_a_lifecycle_and_keeps_its_nodes_and_jobs_across_a_restart() {
    let url = database();
    let mut d = Daemon::start(4, &["--store", &url]);
    d.json(&["node", "manage", "demo[1-4]", "--wait"]);
    d.json(&["node", "provide", "demo[1-4]", "--wait"]);
    d.json(&["node", "deploy", "demo[1-2]", "--wait"]);
    d.json(&["port", "create", "52:54:00:00:00:10", "--node", "demo3"]);
    d.json(&["node", "set", "demo4", "--extra", "rack={\"row\": 9}", "--instance-info", "image_url=http://h/a.iso"]);
    let nodes = d.json(&["node", "list"]);
    let jobs = d.json(&["job", "list"]);
    assert!(!jobs.as_array().unwrap().is_empty(), "{jobs}");

    d.kill9();
    let logged = d.restart_with_demo(4);
    assert!(!d.dir.path().join("kiln.sqlite").exists(), "no SQLite store beside a PostgreSQL one");
    let key = |v: &serde_json::Value| -> Vec<(String, String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| (n["uuid"].to_string(), n["name"].to_string(), n["provision_state"].to_string()))
            .collect()
    };
    assert_eq!(key(&nodes), key(&d.json(&["node", "list"])));
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|j| format!("{} {}", j["id"], j["status"])).collect()
    };
    assert_eq!(ids(&jobs), ids(&d.json(&["job", "list"])));
    let s = states(&d);
    assert_eq!(s["demo1"], "active");
    assert_eq!(s["demo4"], "available");
    assert_eq!(d.json(&["port", "list"])[0]["node"], "demo3");
    let n = d.node("demo4");
    assert_eq!(
        (&n["extra"], &n["instance_info"]),
        (&serde_json::json!({"rack": {"row": 9}}), &serde_json::json!({"image_url": "http://h/a.iso"}))
    );
    // And it goes on working after the restart (the restart claimed the nodes).
    d.json(&["node", "undeploy", "demo1", "--wait"]);
    assert_eq!(d.state("demo1"), "available");
    // A rename, and a taken name refused by the database's own rule.
    d.json(&["node", "set", "demo4", "--name", "spare4"]);
    assert_eq!(d.node("spare4")["uuid"], n["uuid"]);
    let taken = d.cli(&["node", "set", "spare4", "--name", "demo3"]);
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already in use"), "{taken:?}");
    let mut lines = logged;
    lines.extend(d.log_lines());
    assert!(lines.iter().any(|l| l.contains("postgres://kiln:***@127.0.0.1")), "{}", lines.join("\n"));
    assert!(!lines.iter().any(|l| l.contains(PASSWORD)), "{}", lines.join("\n"));
}

#[test]
fn a_bad_store_url_exits_2_naming_the_key_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env, source) in [
        (vec!["--store", "postgres://kiln:hunter2@db:notaport/kiln"], None, "--store"),
        (vec![], Some("mysql://kiln:hunter2@db/kiln"), "KILN_STORE"),
    ] {
        let mut cmd = Command::new(KILN);
        cmd.arg("serve").arg("--data-dir").arg(dir.path()).args(&args).env_remove("KILN_STORE");
        if let Some(value) = env {
            cmd.env("KILN_STORE", value);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.to_lowercase().contains("store") && stderr.contains(source), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[test]
fn postgres_down_at_start_is_retried_then_exits_1_with_the_cause_and_no_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://kiln:{PASSWORD}@127.0.0.1:{port}/kiln?sslmode=disable");
    let started = Instant::now();
    let out = Command::new(KILN)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--store", &url, "--set", "store_connect_timeout=2s"])
        .env_remove("KILN_STORE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let waited = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(20), "{waited:?}");
    assert!(stderr.contains("cannot connect") && stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert!(!dir.path().join("kiln.sqlite").exists(), "never a silent fallback to SQLite");
}

#[test]
fn check_config_shows_the_store_with_its_password_masked() {
    let url = format!("postgres://kiln:{PASSWORD}@127.0.0.1:5/kiln");
    let out = Command::new(KILN)
        .args(["serve", "--check-config", "--store", &url])
        .env_remove("KILN_STORE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("postgres://kiln:***@127.0.0.1:5/kiln"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}
