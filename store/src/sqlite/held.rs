//! The statements one group commit uses, held for the whole group.
//!
//! `prepare_cached` hashes the SQL text to find the statement and hashes it
//! again to put it back when the handle drops. For a job write of a few
//! microseconds that was a fifth of the instructions (callgrind, 10,000
//! job lifecycles). A group looks each statement up once and keeps the
//! handle until the group ends; rusqlite resets a statement after every
//! `execute`, so a held statement starts each write clean.

use rusqlite::{CachedStatement, Connection};

use crate::StoreError;

/// Prepared statements held for one group commit, found by the address of
/// their SQL literal (one call site, one address).
pub(super) struct Held<'c> {
    conn: &'c Connection,
    statements: Vec<(&'static str, CachedStatement<'c>)>,
}

impl<'c> Held<'c> {
    pub(super) fn new(conn: &'c Connection) -> Held<'c> {
        Held { conn, statements: Vec::new() }
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
