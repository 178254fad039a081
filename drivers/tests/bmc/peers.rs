//! Starting the real peers, once per test binary.
//!
//! Each peer is started by its script in `scripts/peers/` (which installs
//! what it needs: a Python venv under `$PEERS_DIR`, default
//! `${TMPDIR:-/tmp}/kiln-peers`, and the `ipmitool` Debian package) the first
//! time a test asks for it; tests that run at once wait for that one start.
//! If a peer cannot be started, every test that needs it fails with the
//! script's output: nothing is skipped silently.
//!
//! Rust's test harness has no "after all tests" hook, so each start also
//! leaves a small watchdog (`setsid sh`) that waits for this test process to
//! exit and then kills the peer by the pid the script recorded. Nothing has
//! to be run after `cargo test`; `scripts/peers/<script> stop <port>` stops a
//! peer by hand. The ports (Redfish 8101-8103, IPMI 9701-9708) are chosen
//! apart from the scripts' defaults so that a developer's own peers are left
//! alone; a script's `start` first stops the peer that script started
//! earlier on the same port, so every run begins with fresh BMC state.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A running peer.
pub struct Peer {
    pub port: u16,
    /// The peer's own folder under `$PEERS_DIR` (Redfish: `systems.json`,
    /// and with TLS `ca.pem`).
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
}

pub const REDFISH_PORT: u16 = 8101;
pub const REDFISH_SINGLE_PORT: u16 = 8102;
pub const REDFISH_TLS_PORT: u16 = 8103;
pub const IPMI_FIRST_PORT: u16 = 9701;
pub const IPMI_BMCS: u16 = 8;

fn peers_dir() -> PathBuf {
    match std::env::var_os("PEERS_DIR") {
        Some(d) => d.into(),
        None => std::env::temp_dir().join("kiln-peers"),
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers").join(name)
}

/// Runs `script start args...` with `env`, then leaves the watchdog for the
/// pid recorded in `pid_file`.
fn start(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    pid_file: &str,
    port: u16,
    dir: &str,
) -> Result<Peer, String> {
    let mut cmd = Command::new("bash");
    cmd.arg(script(name)).arg("start").args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| format!("cannot run {name}: {e}"))?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("{name} start {} failed ({}):\n{said}", args.join(" "), out.status));
    }
    let pid_path = peers_dir().join(pid_file);
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
    Ok(Peer { port, dir: peers_dir().join(dir) })
}

fn once(cell: &'static OnceLock<Result<Peer, String>>, init: impl FnOnce() -> Result<Peer, String>) -> &'static Peer {
    match cell.get_or_init(init) {
        Ok(peer) => peer,
        Err(why) => panic!("the peer could not be started; this test needs it:\n{why}"),
    }
}

/// The Redfish emulator with six systems, node-1..node-6: each test that
/// changes a system has one of its own.
pub fn redfish() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    once(&PEER, || {
        let port = REDFISH_PORT.to_string();
        start(
            "redfish-emulator.sh",
            &["6", &port],
            &[],
            &format!("redfish-{port}.pid"),
            REDFISH_PORT,
            &format!("redfish-{port}"),
        )
    })
}

/// A Redfish emulator with one system, to find it without `system_id`.
pub fn redfish_single() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    once(&PEER, || {
        let port = REDFISH_SINGLE_PORT.to_string();
        start(
            "redfish-emulator.sh",
            &["1", &port],
            &[],
            &format!("redfish-{port}.pid"),
            REDFISH_SINGLE_PORT,
            &format!("redfish-{port}"),
        )
    })
}

/// A Redfish emulator serving HTTPS with a certificate from a private CA
/// (`dir/ca.pem`).
pub fn redfish_tls() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    once(&PEER, || {
        let port = REDFISH_TLS_PORT.to_string();
        start(
            "redfish-emulator.sh",
            &["1", &port],
            &[("TLS", "1")],
            &format!("redfish-{port}.pid"),
            REDFISH_TLS_PORT,
            &format!("redfish-{port}"),
        )
    })
}

/// `IPMI_BMCS` simulated IPMI BMCs from `IPMI_FIRST_PORT`: each test that
/// changes a BMC has one of its own.
pub fn ipmi() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    once(&PEER, || {
        let first = IPMI_FIRST_PORT.to_string();
        start("ipmi-bmc.sh", &[&IPMI_BMCS.to_string(), &first], &[], &format!("ipmi-{first}.pid"), IPMI_FIRST_PORT, ".")
    })
}
