//! Online backup of a SQLite store, safe while the daemon runs.
//!
//! `VACUUM INTO` on a second connection copies one read transaction's
//! snapshot into a new file: every commit acknowledged before the backup
//! began is in it, nothing half-written is, and the daemon's single writer
//! goes on committing meanwhile (WAL lets one writer and readers work at
//! once). The copy is compact and has no WAL of its own, so restoring it is
//! copying one file. The copy is then opened and checked before it is
//! reported good.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupInfo {
    /// `PRAGMA user_version`: the migrations the copy has.
    pub schema_version: i64,
    pub nodes: u64,
    /// Live and archived jobs.
    pub jobs: u64,
    pub bytes: u64,
}

/// Copies the store at `src` into the new file `dest` (which must not
/// exist) and checks the copy.
pub fn backup_sqlite(src: &Path, dest: &Path) -> Result<BackupInfo, StoreError> {
    if !src.is_file() {
        return Err(StoreError::NotFound(format!("no store at {}", src.display())));
    }
    // Read-write without CREATE: never makes an empty store where none was,
    // and can use the WAL index the daemon keeps.
    let conn = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let dest_text = dest.to_str().ok_or_else(|| StoreError::Corrupt(format!("{} is not UTF-8", dest.display())))?;
    // The copy holds the BMC passwords too: it is created empty and private
    // first (never over an existing file), and VACUUM INTO fills it.
    crate::private::create_private_file(dest)?;
    if let Err(e) = conn.execute("VACUUM INTO ?1", [dest_text]) {
        let _ = std::fs::remove_file(dest);
        return Err(e.into());
    }
    drop(conn);
    check(dest)
}

/// Opens a backup read-only and checks it whole.
fn check(path: &Path) -> Result<BackupInfo, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    let verdict: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(StoreError::Corrupt(format!("the backup {} fails its integrity check: {verdict}", path.display())));
    }
    let schema_version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let count = |table: &str| -> Result<u64, StoreError> {
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        Ok(n as u64)
    };
    let nodes = count("nodes")?;
    let jobs = count("jobs")? + count("jobs_archive")?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(BackupInfo { schema_version, nodes, jobs, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteBackend;

    #[test]
    fn a_backup_is_a_checked_copy_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("kiln.sqlite");
        let live = SqliteBackend::open(&src).unwrap();
        let dest = dir.path().join("copy.sqlite");
        let info = backup_sqlite(&src, &dest).unwrap();
        assert_eq!(info.schema_version, crate::sqlite::SCHEMA_VERSION);
        assert_eq!((info.nodes, info.jobs), (0, 0));
        assert!(info.bytes > 0);
        drop(live);
        let again = backup_sqlite(&src, &dest).unwrap_err();
        assert!(matches!(again, StoreError::Conflict(_)), "{again}");
        let none = backup_sqlite(&dir.path().join("nope.sqlite"), &dir.path().join("x.sqlite")).unwrap_err();
        assert!(matches!(none, StoreError::NotFound(_)), "{none}");
        assert!(!dir.path().join("nope.sqlite").exists(), "no empty store was made");
    }
}
