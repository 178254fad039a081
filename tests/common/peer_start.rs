//! Starting a real peer (a BMC emulator, an sshd) once per test binary.
//! Shared by the driver tests (`drivers/tests/bmc`) and the daemon's
//! integration tests (`tests/it`), each of which includes this file with
//! `#[path]` and keeps its own list of peers, on ports of its own.
//!
//! Each peer is started by its script in `scripts/peers/` (which installs
//! what it needs: a Python venv under `$PEERS_DIR`, default
//! `${TMPDIR:-/tmp}/kiln-peers`, and Debian packages such as `ipmitool`)
//! the first time a test asks for it; tests that run at once wait for that
//! one start. If a peer cannot be started, every test that needs it fails
//! with the script's output: nothing is skipped silently.
//!
//! Rust's test harness has no "after all tests" hook, so each start also
//! leaves a small watchdog (`setsid sh`) that waits for this test process to
//! exit and then kills the peer by the pid the script recorded. Nothing has
//! to be run after `cargo test`; `scripts/peers/<script> stop <port>` stops a
//! peer by hand. A script's `start` first stops the peer that script started
//! earlier on the same port, so every run begins with fresh state.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A running peer.
pub struct Peer {
    pub port: u16,
    /// The peer's own folder under `$PEERS_DIR` (Redfish: `systems.json`,
    /// and with TLS `ca.pem`; sshd: `client_key`).
    pub dir: PathBuf,
}

impl Peer {
    /// `/redfish/v1/Systems/<uuid>` of the emulator's system `node-<i>`.
    pub fn system_id(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("systems.json")).expect("systems.json of the emulator");
        let systems: serde_json::Value = serde_json::from_str(&text).expect("systems.json is JSON");
        let uuid = systems
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == format!("node-{i}")))
            .and_then(|s| s["uuid"].as_str())
            .unwrap_or_else(|| panic!("no node-{i} in the emulator"));
        format!("/redfish/v1/Systems/{uuid}")
    }

    /// The emulator's `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The ComputerSystem resource `node-<i>` as the emulator shows it,
    /// read with `curl` (as `admin`/`password`, which the script sets), not
    /// with kiln.
    pub fn system(&self, i: usize) -> serde_json::Value {
        self.resource(&self.system_id(i))
    }

    /// The resource at `path` (below the emulator's URL) as the emulator
    /// shows it, read with `curl` as [`Self::system`].
    pub fn resource(&self, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.url());
        let out = Command::new("curl")
            .args(["-s", "--max-time", "20", "-u", "admin:password", &url])
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{url} is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }
}

/// How to start one peer: `scripts/peers/<script> start <args>` with `env`,
/// which records the peer's pid in `$PEERS_DIR/<pid_file>` and its files in
/// `$PEERS_DIR/<dir>`.
pub struct Start<'a> {
    pub script: &'a str,
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    pub pid_file: &'a str,
    pub port: u16,
    pub dir: &'a str,
}

fn peers_dir() -> PathBuf {
    match std::env::var_os("PEERS_DIR") {
        Some(d) => d.into(),
        None => std::env::temp_dir().join("kiln-peers"),
    }
}

/// `scripts/peers/`, found from this file's place in the workspace.
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("scripts/peers"))
        .find(|dir| dir.is_dir())
        .expect("scripts/peers in the workspace")
}

/// Runs the start script, then leaves the watchdog for the recorded pid.
fn start(s: &Start<'_>) -> Result<Peer, String> {
    let name = s.script;
    let mut cmd = Command::new("bash");
    cmd.arg(scripts().join(name)).arg("start").args(s.args).stdin(Stdio::null());
    for (k, v) in s.env {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| format!("cannot run {name}: {e}"))?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("{name} start {} failed ({}):\n{said}", s.args.join(" "), out.status));
    }
    let pid_path = peers_dir().join(s.pid_file);
    let pid = std::fs::read_to_string(&pid_path).map_err(|e| format!("{name}: no pid file {pid_path:?}: {e}"))?;
    let pid = pid.trim().to_string();
    let watchdog = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
kill "$2" 2>/dev/null
[ "$(cat "$3" 2>/dev/null)" = "$2" ] && rm -f "$3"
exit 0"#;
    Command::new("setsid")
        .args(["sh", "-c", watchdog, "kiln-peer-watchdog"])
        .arg(std::process::id().to_string())
        .arg(&pid)
        .arg(&pid_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot leave the watchdog for {name}: {e}"))?;
    eprintln!("{}", said.trim());
    Ok(Peer { port: s.port, dir: peers_dir().join(s.dir) })
}

/// The peer in `cell`, started as `how` says by the first caller; panics
/// with the script's output when it could not be started.
pub fn once(cell: &'static OnceLock<Result<Peer, String>>, how: Start<'_>) -> &'static Peer {
    match cell.get_or_init(|| start(&how)) {
        Ok(peer) => peer,
        Err(why) => panic!("the peer could not be started; this test needs it:\n{why}"),
    }
}

/// A free loopback TCP port, for a peer to bind: found by binding port 0,
/// so two test suites on one machine never ask for the same one.
pub fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("its address").port()
}

/// The first of `n` consecutive free loopback UDP ports (the IPMI
/// simulator serves a run of ports).
pub fn free_udp_ports(n: u16) -> u16 {
    for _ in 0..100 {
        let first = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP port");
        let start = first.local_addr().expect("its address").port();
        if u32::from(start) + u32::from(n) > 65_535 {
            continue;
        }
        let rest: Vec<_> = (1..n).map_while(|i| std::net::UdpSocket::bind(("127.0.0.1", start + i)).ok()).collect();
        if rest.len() + 1 == usize::from(n) {
            return start;
        }
    }
    panic!("no run of {n} free loopback UDP ports in 100 tries");
}

/// A Redfish emulator with `systems` systems (node-1..) on a free port.
pub fn redfish(cell: &'static OnceLock<Result<Peer, String>>, systems: u32, tls: bool) -> &'static Peer {
    cell.get().and_then(|p| p.as_ref().ok()).unwrap_or_else(|| redfish_on(cell, systems, free_tcp_port(), tls))
}

/// `bmcs` simulated IPMI BMCs on a run of free ports.
pub fn ipmi(cell: &'static OnceLock<Result<Peer, String>>, bmcs: u16) -> &'static Peer {
    cell.get().and_then(|p| p.as_ref().ok()).unwrap_or_else(|| ipmi_from(cell, bmcs, free_udp_ports(bmcs)))
}

/// A Redfish emulator with `systems` systems (node-1..) on `port`.
fn redfish_on(cell: &'static OnceLock<Result<Peer, String>>, systems: u32, port: u16, tls: bool) -> &'static Peer {
    let (count, text) = (systems.to_string(), port.to_string());
    let env: &[(&str, &str)] = if tls { &[("TLS", "1")] } else { &[] };
    let (pid_file, dir) = (format!("redfish-{port}.pid"), format!("redfish-{port}"));
    once(
        cell,
        Start { script: "redfish-emulator.sh", args: &[&count, &text], env, pid_file: &pid_file, port, dir: &dir },
    )
}

/// `bmcs` simulated IPMI BMCs on ports from `first`.
fn ipmi_from(cell: &'static OnceLock<Result<Peer, String>>, bmcs: u16, first: u16) -> &'static Peer {
    let (count, text) = (bmcs.to_string(), first.to_string());
    let pid_file = format!("ipmi-{first}.pid");
    once(
        cell,
        Start { script: "ipmi-bmc.sh", args: &[&count, &text], env: &[], pid_file: &pid_file, port: first, dir: "." },
    )
}
