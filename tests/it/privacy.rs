//! The store holds BMC passwords, so its files are private to the user kiln
//! runs as, whatever the umask of whoever starts it: the data dir `0700`,
//! the database, its WAL and shared-memory files and every backup `0600`;
//! and an existing store that others can read is refused at start with the
//! command that fixes it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::harness::{KILN, cli_at};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// `kiln` with the usual umask of an interactive shell, 0022.
fn kiln_umask_022(args: &[&str]) -> Command {
    let mut cmd = Command::new(KILN);
    cmd.args(args).env_remove("KILN_SOCKET").env_remove("KILN_DATA_DIR").stdin(Stdio::null());
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    cmd
}

/// Starts `kiln serve` on `data_dir` under umask 0022 and waits until it
/// serves; the child is killed by the caller.
fn serve(data_dir: &Path) -> Child {
    let mut child =
        kiln_umask_022(&["serve", "--no-periodic", "--demo", "2", "--data-dir", data_dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kiln serve");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("kiln is serving") => break,
            Some(Ok(line)) => seen.push(line),
            _ => panic!("kiln serve never served: {}", seen.join("\n")),
        }
    }
    // Keeps draining stderr so the daemon never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    child
}

#[test]
fn the_store_and_its_backups_are_private_whatever_the_umask_and_an_exposed_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("kiln-data");
    let mut daemon = serve(&data_dir);
    let socket = data_dir.join("kiln.sock");
    // A password goes in, and a commit makes sure the WAL exists.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "S3cret-private").unwrap();
    let out = cli_at(
        &socket,
        &["node", "create", "r1", "--driver", "redfish", "--address", "http://127.0.0.1:1", "--password-file"]
            .into_iter()
            .chain([pw.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert_eq!(mode(&data_dir), 0o700, "the data dir");
    for file in ["kiln.sqlite", "kiln.sqlite-wal", "kiln.sqlite-shm"] {
        assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
    }
    let copy = dir.path().join("backup.sqlite");
    let out = kiln_umask_022(&["store", "backup", "--data-dir", data_dir.to_str().unwrap(), copy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&copy), 0o600, "the backup");
    let _ = daemon.kill();
    let _ = daemon.wait();

    // Someone made the store readable by everyone: kiln refuses to start,
    // says how to fix it, and changes nothing.
    let db = data_dir.join("kiln.sqlite");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = kiln_umask_022(&["serve", "--no-periodic", "--data-dir", data_dir.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("kiln.sqlite has mode 0644") && err.contains(&format!("chmod 600 {}*", db.display())),
        "{err}"
    );
    assert!(!err.contains("S3cret-private"));
    assert_eq!(mode(&db), 0o644, "the refusal changed nothing");

    // Fixed as told, it starts again with its nodes.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut daemon = serve(&data_dir);
    let out = cli_at(&socket, &["--json", "node", "show", "r1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = daemon.kill();
    let _ = daemon.wait();
}
