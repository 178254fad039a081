//! What can go wrong in the store, as an operator would act on it.

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (a node name, a uuid, a MAC address).
    #[error("{0}")]
    Conflict(String),
    /// The record to change does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The database refused or failed a statement (opened, migrated,
    /// written), in the same words on every backend: the engine's message,
    /// and which kind of rule it broke when it was one, so that a caller can
    /// tell a duplicate from a missing reference without knowing the engine.
    #[error("database error: {message}")]
    Database { message: String, constraint: Option<Constraint> },
    /// The database server could not be reached or refused the session
    /// (PostgreSQL: address, authentication, TLS). The text never holds a
    /// password.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    /// A node or job row is owned by another member, or by a later epoch
    /// of this one: the write was refused, nothing of its batch was
    /// written. Never a silent success (spec section 13, fencing).
    #[error("{0}")]
    Fenced(String),
    /// The connection was lost while a COMMIT was under way: the group may
    /// or may not be committed. It is never retried blindly; the member
    /// stops writing and the operator (or a restart) reads what was kept.
    #[error("the outcome of a commit is unknown (the database connection was lost during COMMIT): {0}")]
    OutcomeUnknown(String),
    /// A stored value could not be read back (a hand-edited or damaged file).
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// The database was written by a newer kiln.
    #[error("the database schema version {found} is newer than this kiln supports ({supported}); upgrade kiln")]
    TooNew { found: i64, supported: i64 },
    /// The shared transaction this batch was grouped into failed as a whole
    /// (disk full, I/O error); nothing of it was committed. The text is the
    /// failure's whole chain, copied to every batch of the group.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// The commit was applied but the log that makes it durable could not be
    /// synced (fsync failed). Whether it survives a crash is unknown, and so
    /// is every later commit's: the store refuses writes from then on, and
    /// the operator must restart kiln once the disk is sound.
    #[error("the store could not make its commits durable ({0}); it refuses writes until kiln is restarted")]
    NotDurable(String),
    /// A file or directory of the store could not be created or read.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A file of the store can be read by users other than its owner; it
    /// holds BMC passwords, so the store refuses to open until it is fixed.
    #[error(
        "{} has mode {mode:04o}: the store holds BMC passwords and must be readable by its owner only; \
         run `chmod 600 {}*` and start again",
        path.display(),
        database.display()
    )]
    Exposed { path: std::path::PathBuf, mode: u32, database: std::path::PathBuf },
    /// The store's thread is gone (the site is shutting down).
    #[error("the store is closed")]
    Closed,
}

/// Which kind of schema rule a failed write broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// UNIQUE or PRIMARY KEY.
    Unique,
    /// A reference to a row that does not exist.
    ForeignKey,
    /// NOT NULL, CHECK or a trigger's refusal.
    Other,
}

impl StoreError {
    /// The kind of rule a [`StoreError::Database`] broke, if any.
    pub fn constraint(&self) -> Option<Constraint> {
        match self {
            StoreError::Database { constraint, .. } => *constraint,
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        let constraint = error.sqlite_error().and_then(|e| match e.extended_code {
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                Some(Constraint::Unique)
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Some(Constraint::ForeignKey),
            _ if e.code == rusqlite::ffi::ErrorCode::ConstraintViolation => Some(Constraint::Other),
            _ => None,
        });
        StoreError::Database { message: error_chain(&error), constraint }
    }
}

/// An error and its sources, as one line ("database error: disk I/O
/// error"), for messages that cross a thread or the admin socket, where the
/// chain cannot travel as types. The one such function of the workspace.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
