//! `kiln store backup` while the daemon runs, and a restore from it: the
//! operator guide's procedure, end to end.

use crate::harness::{Daemon, KILN};

fn kiln(args: &[&str]) -> std::process::Output {
    std::process::Command::new(KILN).args(args).env_remove("KILN_DATA_DIR").output().expect("run kiln")
}

#[test]
fn a_backup_taken_while_serving_restores_every_node_and_job() {
    let d = Daemon::start(3, &["--no-periodic"]);
    d.json(&["node", "manage", "demo[1-2]", "--wait"]);
    let data_dir = d.dir.path().to_str().unwrap().to_string();
    let out_dir = tempfile::tempdir().unwrap();
    let copy = out_dir.path().join("kiln-backup.sqlite");
    let copy_s = copy.to_str().unwrap();

    let out = kiln(&["--json", "store", "backup", "--data-dir", &data_dir, copy_s]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["nodes"], 3);
    assert_eq!(info["jobs"], 1, "the manage job");

    // Never over an existing file; never from a data dir with no store.
    let again = kiln(&["store", "backup", "--data-dir", &data_dir, copy_s]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    let empty = tempfile::tempdir().unwrap();
    let never = empty.path().join("never.sqlite");
    let none = kiln(&["store", "backup", "--data-dir", empty.path().to_str().unwrap(), never.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("no store at"), "{none:?}");
    assert!(!never.exists() && !empty.path().join("kiln.sqlite").exists());

    // The daemon keeps working after the backup; what it does later is not in the copy.
    d.json(&["node", "delete", "demo3"]);

    // Restore: a daemon on a fresh data dir holding the copy as kiln.sqlite.
    let mut restored = Daemon::start(0, &["--no-periodic"]);
    restored.kill9();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(restored.dir.path().join(format!("kiln.sqlite{suffix}")));
    }
    std::fs::copy(&copy, restored.dir.path().join("kiln.sqlite")).unwrap();
    restored.restart();
    let states = crate::harness::states(&restored);
    assert_eq!(states.len(), 3, "{states:?}");
    assert_eq!(states["demo1"], "manageable");
    assert_eq!(states["demo3"], "enroll");
    assert_eq!(restored.json(&["job", "list"]).as_array().unwrap().len(), 1);
}
