//! Starts the real `kiln` binary on a temporary data dir and talks to it
//! through the real CLI and the real socket. Every daemon is stopped by PID
//! when its handle drops, and its data dir removed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Calls `look` every `every` until it gives a value, for at most `limit`;
/// panics naming `what` and the last thing `look` saw (its `Err`).
pub fn poll<T, E: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut look: impl FnMut() -> Result<T, E>,
) -> T {
    let started = std::time::Instant::now();
    loop {
        match look() {
            Ok(found) => return found,
            Err(seen) => assert!(started.elapsed() < limit, "{what} not within {limit:?}; last seen: {seen:?}"),
        }
        std::thread::sleep(every);
    }
}

/// How long a daemon may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running daemon on its own data dir.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    extra: Vec<String>,
    /// The daemon's stderr lines, as they come.
    log: Option<mpsc::Receiver<String>>,
    /// `KILN_LOG` for the daemon.
    log_filter: String,
    /// More environment variables for the daemon.
    envs: Vec<(String, String)>,
}

impl Daemon {
    /// Starts `kiln serve --data-dir D --socket D/kiln.sock --demo N` plus
    /// `extra` arguments, and waits until it logs that it serves.
    pub fn start(demo: usize, extra: &[&str]) -> Daemon {
        Daemon::start_logging(demo, extra, "info")
    }

    /// Like [`Daemon::start`], with `KILN_LOG=filter` (e.g. `debug`).
    pub fn start_logging(demo: usize, extra: &[&str], filter: &str) -> Daemon {
        Daemon::start_env(demo, extra, &[("KILN_LOG", filter)])
    }

    /// Like [`Daemon::start`], with environment variables for the daemon
    /// (`KILN_LOG` among them overrides the default `info`).
    pub fn start_env(demo: usize, extra: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("kiln.sock");
        let mut d = Daemon {
            child: None,
            dir,
            socket,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: None,
            log_filter: "info".to_string(),
            envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        d.spawn(demo);
        d
    }

    /// Starts the daemon; returns the lines it logged before it served.
    fn spawn(&mut self, demo: usize) -> Vec<String> {
        let mut cmd = Command::new(KILN);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--socket")
            .arg(&self.socket)
            .arg("--demo")
            .arg(demo.to_string())
            .args(&self.extra)
            .env("KILN_LOG", &self.log_filter)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .env_remove("KILN_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start kiln serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel();
        // Drains stderr for the daemon's whole life so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        self.log = Some(rx);
        self.wait_for_log_after("kiln is serving").1
    }

    /// Waits for a stderr line containing `needle`; panics (with the lines
    /// seen) if the daemon exits or the timeout passes first.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        self.wait_for_log_after(needle).0
    }

    /// [`Daemon::wait_for_log`], also returning the lines logged before it.
    fn wait_for_log_after(&mut self, needle: &str) -> (String, Vec<String>) {
        let rx = self.log.as_ref().expect("daemon started");
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return (line, seen),
                Ok(line) => seen.push(line),
                Err(_) => panic!("daemon never logged '{needle}'; it said:\n{}", seen.join("\n")),
            }
        }
    }

    /// The daemon's stderr lines not read yet (by `wait_for_log` or an
    /// earlier call). While the daemon runs, the lines it has written so far;
    /// once it has exited (`terminate`, `kill9`), every line up to its end.
    pub fn log_lines(&self) -> Vec<String> {
        let Some(rx) = self.log.as_ref() else { return Vec::new() };
        let mut lines = Vec::new();
        if self.child.is_some() {
            while let Ok(line) = rx.try_recv() {
                lines.push(line);
            }
            return lines;
        }
        // The pipe is closed: the reader thread ends at its end of file.
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            lines.push(line);
        }
        lines
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal to the running daemon.
    pub fn signal(&self, signal: i32) {
        let c = self.child.as_ref().expect("running");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(c.id() as i32, signal) };
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (at most `limit`) for the daemon to exit by itself, and reaps
    /// it; `None` if it still runs.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        let c = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = c.try_wait().expect("wait for kiln") {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().expect("wait for kiln")
    }

    /// Starts the daemon again on the same data dir (no demo nodes are
    /// added to a non-empty store).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn(0);
    }

    /// Starts the daemon again on the same data dir with `--demo N`;
    /// returns the lines it logged before it served.
    pub fn restart_with_demo(&mut self, demo: usize) -> Vec<String> {
        self.kill9();
        self.spawn(demo)
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli_at(&self.socket, args)
    }

    /// Runs the CLI with `--json` and parses its output; panics unless the
    /// exit code is `code`.
    pub fn json(&self, args: &[&str]) -> Value {
        self.json_code(args, 0)
    }

    pub fn json_code(&self, args: &[&str], code: i32) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(code),
            "kiln {args:?} exited {:?}\nstdout: {stdout}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("kiln {args:?} printed no JSON ({e}): {stdout}"))
    }

    /// Waits (at most a minute) until `kiln events` shows an event matching
    /// `pred`. An event is shown once it is delivered, and delivered once it
    /// is stored: after this, the store holds it and every event before it.
    pub fn wait_for_stored_event(&self, what: &str, pred: impl Fn(&Value) -> bool) {
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            let out = self.cli(&["--json", "events"]);
            let text = String::from_utf8_lossy(&out.stdout);
            if text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|e| pred(&e)) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no event for {what} within {START_TIMEOUT:?}");
            std::thread::yield_now();
        }
    }

    /// The node's JSON object.
    pub fn node(&self, name: &str) -> Value {
        self.json(&["node", "show", name])
    }

    pub fn state(&self, name: &str) -> String {
        self.node(name)["provision_state"].as_str().expect("a state").to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The CLI against a socket, ignoring any `KILN_SOCKET` of the caller's.
fn kiln_at(socket: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(KILN);
    cmd.arg("--socket").arg(socket).args(args).env_remove("KILN_SOCKET").stdin(Stdio::null());
    cmd
}

/// The longest any one CLI call in a test may take. `kiln job watch` and
/// `--wait` run as long as a job does, so a job that hangs would hang its
/// test with no word of why; past this the call is killed and the test
/// fails naming it.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the CLI against a socket, killing it after [`CLI_TIMEOUT`].
pub fn cli_at(socket: &Path, args: &[&str]) -> Output {
    let child = kiln_at(socket, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run kiln");
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    let (finished, watched) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let late = watched.recv_timeout(CLI_TIMEOUT) == Err(mpsc::RecvTimeoutError::Timeout);
        if late {
            // SAFETY: kill takes no pointer; the pid is our child's, not yet
            // waited for, since the waiting thread is still waiting.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        late
    });
    let out = child.wait_with_output().expect("run kiln");
    let _ = finished.send(());
    let late = watchdog.join().expect("the watchdog");
    assert!(!late, "kiln {args:?} did not finish within {CLI_TIMEOUT:?}; killed");
    out
}

/// Starts the CLI against a socket without waiting for it: stdout piped,
/// stderr as given (piped, or null for a follower nobody reads it from).
pub fn spawn_at(socket: &Path, args: &[&str], stderr: Stdio) -> Child {
    kiln_at(socket, args).stdout(Stdio::piped()).stderr(stderr).spawn().expect("run kiln")
}

/// The states of every node, by name, from `node list --json`.
pub fn states(d: &Daemon) -> std::collections::BTreeMap<String, String> {
    let list = d.json(&["node", "list"]);
    list.as_array()
        .expect("a list")
        .iter()
        .map(|n| (n["name"].as_str().unwrap().to_string(), n["provision_state"].as_str().unwrap().to_string()))
        .collect()
}

/// Follows the daemon's event stream (`kiln --json events --follow`) so a
/// test can wait for a node's event instead of sleeping.
pub struct Events {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Events {
    /// Subscribes; returns once the subscription is live.
    pub fn follow(d: &Daemon) -> Events {
        Events::follow_with(d, &[])
    }

    /// Subscribes with extra `kiln events` arguments (`-w`, `--kind`).
    pub fn follow_with(d: &Daemon, extra: &[&str]) -> Events {
        let args: Vec<&str> = ["--json", "events", "--follow"].iter().chain(extra).copied().collect();
        let mut child = spawn_at(&d.socket, &args, Stdio::null());
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let mut events = Events { child, lines };
        events.wait_for("the subscription", |e| e.get("caught_up").is_some());
        events
    }

    /// Waits (at most a minute) for an event matching `pred`; returns it.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if pred(&v) => return v,
                Ok(_) => continue,
                Err(_) => panic!("no event for {what} within {START_TIMEOUT:?}"),
            }
        }
    }

    /// Waits for `node`'s `start` event.
    pub fn started(&mut self, node: &str) -> Value {
        self.wait_for(&format!("{node} to start"), |e| e["node_name"] == node && e["kind"] == "start")
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
