//! One `kiln serve` per data dir.
//!
//! Two daemons on one data dir would both run the queued jobs and both
//! drive every node's BMC, and SQLite lets both open the database, so
//! nothing else stops the second one. `kiln serve` therefore takes an
//! exclusive lock on `DATA_DIR/kiln.lock` before it opens the store, and
//! holds it until it exits. The lock is the kernel's (`flock`), so it goes
//! with the process however the process ends: a daemon killed with SIGKILL
//! leaves nothing stale to clean up. The file holds the holder's pid, for
//! the error the second daemon prints.
//!
//! `kiln store backup` reads the database under SQLite's own locks and does
//! not take this one: a backup runs beside the daemon.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};

/// The lock's file name inside the data dir.
pub const LOCK_FILE: &str = "kiln.lock";

/// Held for as long as the daemon runs; dropping it releases the data dir.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the data dir `dir` (creating it if needed), or says which
    /// process holds it.
    pub fn acquire(dir: &Path) -> anyhow::Result<DataDirLock> {
        // 0700 when created: the store inside holds BMC passwords.
        kiln_store::private::create_private_dir(dir)
            .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "a process that has not written its pid yet".to_string(),
                    pid => format!("pid {pid}"),
                };
                bail!(
                    "the data dir {} is in use by another kiln serve ({holder}); one daemon per data dir",
                    dir.display()
                );
            }
            Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write the pid to {}", path.display()))?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDirLock::acquire(&data).unwrap();
        let pid = std::fs::read_to_string(data.join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());

        let refused = DataDirLock::acquire(&data).unwrap_err().to_string();
        assert!(refused.contains("in use by another kiln serve"), "{refused}");
        assert!(refused.contains(&format!("pid {}", std::process::id())), "{refused}");

        drop(first);
        let again = DataDirLock::acquire(&data);
        assert!(again.is_ok(), "{again:?}");
    }
}
