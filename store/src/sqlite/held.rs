//! The statements one group commit uses, held for the whole group.
//!
//! `prepare_cached` hashes the SQL text to find the statement and hashes it
//! again to put it back when the handle drops. For a job write of a few
//! microseconds that was a fifth of the instructions (callgrind, 10,000
//! job lifecycles). A group looks each statement up once and keeps the
//! handle until the group ends; rusqlite resets a statement after every
//! `execute`, so a held statement starts each write clean.
//!
//! The group also carries the one fact about the file that spares a
//! statement per job: the highest id ever archived (see
//! [`Held::archive_ceiling`]).

use rusqlite::{CachedStatement, Connection};

use crate::StoreError;

/// Prepared statements held for one group commit, found by the address of
/// their SQL literal (one call site, one address).
pub(super) struct Held<'c> {
    conn: &'c Connection,
    statements: Vec<(&'static str, CachedStatement<'c>)>,
    /// No archived job has an id above this. A new job's id is above it
    /// (ids are serial), so inserting one needs no probe of the archive
    /// for an id archived before: that probe was a statement per
    /// submission. Archiving raises it before it writes, so a rolled-back
    /// archive leaves it too high, which costs a probe and is never wrong.
    pub(super) archive_ceiling: &'c mut i64,
}

impl<'c> Held<'c> {
    pub(super) fn new(conn: &'c Connection, archive_ceiling: &'c mut i64) -> Held<'c> {
        Held { conn, statements: Vec::new(), archive_ceiling }
    }

    /// The statement for `sql`, prepared (or taken from the cache) at its
    /// first use in the group.
    pub(super) fn get(&mut self, sql: &'static str) -> Result<&mut CachedStatement<'c>, StoreError> {
        let index = match self.statements.iter().position(|(held, _)| std::ptr::eq(*held, sql)) {
            Some(index) => index,
            None => {
                self.statements.push((sql, self.conn.prepare_cached(sql)?));
                self.statements.len() - 1
            }
        };
        Ok(&mut self.statements[index].1)
    }
}
