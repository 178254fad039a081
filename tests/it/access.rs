//! Who may use the admin socket (docs/operator-guide.md, "Who may use the socket"): the file mode (0600, or
//! 0660 with `socket_mode`) and, behind it, the peer-uid check against the
//! daemon's own uid, root and `allowed_uids`. A client runs as another uid
//! (65534) in the socket's group, so only the layer under test stands in
//! its way. Needs root to switch uids; skipped otherwise.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use crate::harness::{Daemon, KILN};

const OTHER_UID: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// A daemon with `config` as its config file; its data dir lets the
/// socket's group (root's, gid 0) in, so the socket's own mode decides.
fn start(config: &str) -> (Daemon, tempfile::TempDir) {
    let conf_dir = tempfile::tempdir().expect("temp dir");
    let conf = conf_dir.path().join("kiln.toml");
    std::fs::write(&conf, config).unwrap();
    let d = Daemon::start(1, &["--no-periodic", "--config", conf.to_str().unwrap()]);
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    (d, conf_dir)
}

/// `kiln --json status` as uid 65534 in group 0 (the socket's group).
fn status_as_other(d: &Daemon) -> (Output, String) {
    let out = Command::new(KILN)
        .args(["--json", "--socket", d.socket.to_str().unwrap(), "status"])
        .env_remove("KILN_SOCKET")
        .uid(OTHER_UID)
        .gid(0)
        .output()
        .expect("run kiln as another uid");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out, text)
}

#[test]
fn the_file_mode_keeps_the_group_out_unless_socket_mode_lets_it_in() {
    if !is_root() {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    let (d, _c) = start("");
    assert_eq!(std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777, 0o600);
    let (out, text) = status_as_other(&d);
    assert!(!out.status.success(), "{text}");
    assert!(text.to_lowercase().contains("permission denied"), "{text}");

    let (d, _c) = start("socket_mode = \"0660\"\n");
    assert_eq!(std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777, 0o660);
    // In through the file mode; stopped by the uid check.
    let (out, text) = status_as_other(&d);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("uid {OTHER_UID} may not use this socket")), "{text}");
    assert!(d.cli(&["status"]).status.success(), "the owner is still served");
}

#[test]
fn allowed_uids_lets_another_uid_in() {
    if !is_root() {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    let (d, _c) = start(&format!("socket_mode = \"0660\"\nallowed_uids = [{OTHER_UID}]\n"));
    let (out, text) = status_as_other(&d);
    assert!(out.status.success(), "{text}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["nodes"], 1);
}
