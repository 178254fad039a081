//! The store's files are private to the user kiln runs as.
//!
//! The database holds BMC passwords in plain text (kiln must send them to
//! the BMCs), so the file system is what keeps them secret. Whatever the
//! umask of whoever starts kiln, a new data dir is created `0700` and a new
//! database and every backup `0600`; SQLite gives the WAL and shared-memory
//! files it creates the mode of their database, so they follow. An existing
//! store that others can read is refused at open with the `chmod` that fixes
//! it, rather than opened and left exposed.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::StoreError;

/// The permission bits a private file may not have: any for group or others.
const SHARED_BITS: u32 = 0o077;

/// Creates `dir` and its missing parents with mode `0700` (an existing
/// directory is left as it is).
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::Io { what: format!("cannot create the directory {}", dir.display()), source })
}

/// Creates the empty file `path` with mode `0600`; fails if it exists.
pub fn create_private_file(path: &Path) -> Result<(), StoreError> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map(drop).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            StoreError::Conflict(format!("{} exists; back up into a new file", path.display()))
        } else {
            StoreError::Io { what: format!("cannot create {}", path.display()), source }
        }
    })
}

/// Makes the database at `path` ready to open privately: a new one is
/// created `0600`; an existing one, and its WAL and shared-memory files,
/// must not be readable by group or others.
pub fn prepare_database(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Another opener may create it between the two calls; then it
            // is checked like any existing file.
            match create_private_file(path) {
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(source) => return Err(StoreError::Io { what: format!("cannot read {}", path.display()), source }),
        Ok(_) => {}
    }
    for file in database_files(path) {
        let mode = match std::fs::metadata(&file) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(StoreError::Io { what: format!("cannot read {}", file.display()), source }),
        };
        if mode & SHARED_BITS != 0 {
            return Err(StoreError::Exposed { path: file, mode, database: path.to_path_buf() });
        }
    }
    Ok(())
}

/// The database file and the WAL and shared-memory files SQLite keeps
/// beside it.
fn database_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_database_and_its_directory_are_private_and_an_exposed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data/kiln.sqlite");
        prepare_database(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&dir.path().join("data")), 0o700);
        // Opening again is fine while nobody else can read it.
        prepare_database(&db).unwrap();

        let wal = dir.path().join("data/kiln.sqlite-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = prepare_database(&db).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::Exposed { mode: 0o640, .. }), "{e:?}");
        assert!(text.contains("kiln.sqlite-wal") && text.contains("0640") && text.contains("chmod 600"), "{text}");
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o600)).unwrap();
        prepare_database(&db).unwrap();
    }

    #[test]
    fn a_private_file_is_never_created_over_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("copy.sqlite");
        create_private_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        assert!(matches!(create_private_file(&f), Err(StoreError::Conflict(_))));
    }
}
