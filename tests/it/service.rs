//! Running as a service: the systemd notify protocol (ready, watchdog,
//! reloading, stopping) spoken to a real datagram socket, the config
//! reloaded on SIGHUP, and the unit file in `examples/` checked by
//! `systemd-analyze verify` where systemd is installed.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::Daemon;

/// The service manager's end: a datagram socket the daemon notifies.
struct Manager {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Manager { socket, path: path.to_str().unwrap().to_string(), _dir: dir }
    }

    /// Reads notifications until one has the line `want`; returns the
    /// lines read before it (at most a minute).
    fn wait_for(&self, want: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {want} within a minute; got {seen:?}");
            self.socket.set_read_timeout(Some(left)).unwrap();
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => panic!("no {want}: {e}; got {seen:?}"),
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.lines().any(|l| l == want) {
                return seen;
            }
            seen.push(text);
        }
    }
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_alive_reloading_and_stopping() {
    let manager = Manager::new();
    let mut d = Daemon::start_env(2, &[], &[("NOTIFY_SOCKET", &manager.path), ("WATCHDOG_USEC", "400000")]);
    manager.wait_for("READY=1");
    // Ready means the admin socket answers.
    assert_eq!(d.json(&["status"])["nodes"], 2);
    manager.wait_for("WATCHDOG=1");
    manager.wait_for("WATCHDOG=1");

    d.signal(libc::SIGHUP);
    let before = manager.wait_for("RELOADING=1");
    assert!(before.iter().all(|m| !m.contains("READY=1")), "{before:?}");
    manager.wait_for("READY=1");
    assert_eq!(d.json(&["status"])["nodes"], 2, "still serving after the reload");

    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    manager.wait_for("STOPPING=1");
}

#[test]
fn an_abstract_notify_socket_works_too() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("kiln-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let manager = Manager { socket, _dir: tempfile::tempdir().unwrap(), path: format!("@{name}") };
    let mut d = Daemon::start_env(0, &[], &[("NOTIFY_SOCKET", &manager.path)]);
    manager.wait_for("READY=1");
    d.terminate();
    manager.wait_for("STOPPING=1");
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn sighup_applies_the_live_keys_and_an_invalid_file_changes_nothing() {
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("kiln.toml");
    write(
        &conf,
        "max_running_jobs = 4\npower_sync_interval = \"60s\"\nperiodic_enabled = false\n\
         groups = { pair = \"demo[1-2]\" }\nlog = \"info\"\n",
    );
    // An empty KILN_LOG is unset: the file's `log` is in force.
    let mut d = Daemon::start_env(3, &["--config", conf.to_str().unwrap()], &[("KILN_LOG", "")]);
    let power_sync = |d: &Daemon| d.json(&["periodic", "list"])[0].clone();
    assert_eq!(d.json(&["queue", "status"])["max_running"], 4);
    assert_eq!(power_sync(&d)["spacing_s"], 60);
    assert_eq!(power_sync(&d)["enabled"], false);
    assert_eq!(d.json(&["node", "list", "@pair"]).as_array().unwrap().len(), 2);
    // `kiln status` shows the configuration in force.
    let config = |d: &Daemon| d.json(&["status"]);
    let s = config(&d);
    assert_eq!(s["config"]["max_running_jobs"], "4");
    assert_eq!(s["config"]["power_sync_interval"], "1m", "60 s, as the config reference writes it");
    assert_eq!(s["config"]["max_frame"], "16777216");
    // Changed: keys away from their default (60 s is power_sync_interval's).
    let changed = s["config_changed"].as_array().unwrap();
    for (key, is) in [("max_running_jobs", true), ("periodic_enabled", true), ("power_sync_interval", false)] {
        assert_eq!(changed.contains(&key.into()), is, "{key}: {s}");
    }
    let text = String::from_utf8(d.cli(&["status"]).stdout).unwrap();
    assert!(text.contains("max_running_jobs=4") && text.contains("periodic_enabled=false"), "{text}");

    write(
        &conf,
        "max_running_jobs = 9\npower_sync_interval = \"2m\"\nperiodic_enabled = true\n\
         groups = { pair = \"demo[2-3]\", all = \"demo[1-3]\" }\nmax_frame = 4096\n\
         log = \"info,kiln_actors::scheduler=debug\"\n",
    );
    d.signal(libc::SIGHUP);
    let line = d.wait_for_log("configuration reloaded");
    assert!(line.contains("max_running_jobs") && line.contains("groups"), "{line}");
    assert!(line.contains("need_restart=max_frame"), "{line}");
    assert_eq!(d.json(&["queue", "status"])["max_running"], 9);
    assert_eq!(power_sync(&d)["spacing_s"], 120);
    assert_eq!(power_sync(&d)["enabled"], true);
    let names: Vec<String> =
        d.json(&["node", "list", "@pair"]).as_array().unwrap().iter().map(|n| n["name"].to_string()).collect();
    assert_eq!(names, ["\"demo2\"", "\"demo3\""]);
    assert_eq!(d.json(&["node", "list", "@all"]).as_array().unwrap().len(), 3);
    // Status follows the reload; a restart-only key keeps its running value.
    let s = config(&d);
    assert_eq!(s["config"]["max_running_jobs"], "9");
    assert_eq!(s["config"]["power_sync_interval"], "2m");
    assert_eq!(s["config"]["max_frame"], "16777216", "max_frame waits for a restart");
    // The new log filter is in force: the scheduler's debug lines show.
    d.json(&["periodic", "run", "store_maintenance"]);
    d.wait_for_log("periodic task done");

    // An invalid file: the error names the key, and nothing changes.
    write(&conf, "max_running_jobs = 1\npower_sync_interval = \"soon\"\n");
    d.signal(libc::SIGHUP);
    let line = d.wait_for_log("configuration reload failed");
    assert!(line.contains("power_sync_interval: invalid duration"), "{line}");
    assert_eq!(d.json(&["queue", "status"])["max_running"], 9);
    assert_eq!(power_sync(&d)["spacing_s"], 120);
    assert_eq!(d.json(&["node", "list", "@all"]).as_array().unwrap().len(), 3);
    assert_eq!(config(&d)["config"]["max_running_jobs"], "9");
}

#[test]
fn the_example_unit_passes_systemd_analyze_verify() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kiln.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in ["Type=notify", "NotifyAccess=main", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID"] {
        assert!(text.contains(line), "the unit lacks {line}");
    }
    let Ok(out) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("note: systemd-analyze is not installed; the unit file was not verified");
        return;
    };
    assert!(out.status.success());
    // verify wants ExecStart's binary to exist: point it at the one under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("kiln.service");
    write(&copy, &text.replace("/usr/local/bin/kiln", crate::harness::KILN));
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let said = String::from_utf8_lossy(&out.stderr);
    // Lines about the unit itself are findings; lines about other units of
    // the host (a container's half-installed systemd) are not ours.
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("kiln.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify: {said}");
}
