//! The PostgreSQL store's [`LogSync`]: group commits return before their
//! WAL is flushed, and a session of its own flushes it beside the next
//! group (the store's sync thread, `syncer`), as SQLite's WAL is synced.
//!
//! Why it is shaped so:
//!
//! - **The flush, not the commit, was the wait.** With `synchronous_commit`
//!   on, the store thread waited out the server's WAL flush inside every
//!   group's `COMMIT`, and applied nothing meanwhile. A group now commits
//!   with `SET LOCAL synchronous_commit = off` (the server writes its
//!   commit record and answers), and no caller is answered before the
//!   sync that follows it succeeded.
//! - **One synchronous commit flushes everything before it.** The WAL is
//!   one sequence: committing a transaction that has an id, synchronously,
//!   flushes the WAL up to its commit record, which lies after the commit
//!   record of every group whose `COMMIT` had returned when the sync
//!   began. `SELECT pg_current_xact_id()` is such a transaction, and
//!   writes nothing else.
//! - **A restarted server is a failed sync.** A lost sync session is
//!   opened again and the sync retried, which proves the earlier groups
//!   durable only if the server did not restart meanwhile (a crash drops
//!   the WAL it had not flushed): the server's start time is read at open
//!   and at each reopen, and a change fails the sync. A failed sync is
//!   final (`syncer`), and the member is told ([`super::LostCommit`]), as
//!   when a `COMMIT` is lost: it fences itself rather than go on from a
//!   state it does not know.
//! - Other sessions may read a group before it is flushed. Whatever they
//!   then commit synchronously flushes it with their own; only a server
//!   crash in between takes it back, and then no caller of that group was
//!   answered.

use tokio_postgres::Client;

use super::{LostCommit, PgOptions, connect, error_text};
use crate::LogSync;

/// The statement that flushes the WAL: a synchronous commit of a
/// transaction with an id.
const FLUSH: &str = "SELECT pg_current_xact_id()";
/// When the server started (changed, it restarted); the session's own
/// commits flush, whatever the server's default.
const STARTED: &str = "SET synchronous_commit = on; SELECT pg_postmaster_start_time()::text";

/// The session that flushes the store's WAL.
pub(super) struct PgSync {
    client: Option<Client>,
    runtime: tokio::runtime::Runtime,
    options: PgOptions,
    /// The server's start time when the sync session was first opened.
    started: String,
    on_lost: Option<LostCommit>,
}

impl PgSync {
    /// Opens the sync session; `None` (every commit then flushes on its
    /// own, as before) when it cannot.
    pub(super) fn open(options: &PgOptions, on_lost: Option<LostCommit>) -> Option<PgSync> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        let opened = runtime.block_on(async {
            let client = connect(options, false).await.map_err(|e| e.to_string())?;
            let started = started_at(&client).await?;
            Ok::<_, String>((client, started))
        });
        match opened {
            Ok((client, started)) => {
                Some(PgSync { client: Some(client), runtime, options: options.clone(), started, on_lost })
            }
            Err(error) => {
                tracing::warn!(
                    message = "Cannot open the session that flushes the store's WAL; every commit flushes on its own.",
                    error = %options.target.scrub(&error),
                );
                None
            }
        }
    }

    /// One flush on the session, reopened (once) if it was lost.
    fn flush(&mut self) -> Result<(), String> {
        let options = &self.options;
        let started = &self.started;
        let client = &mut self.client;
        self.runtime.block_on(async {
            if let Some(c) = client.as_ref().filter(|c| !c.is_closed()) {
                match c.simple_query(FLUSH).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.as_db_error().is_some() && !super::ends_session(&e) => return Err(error_text(&e)),
                    Err(_) => {}
                }
            }
            *client = None;
            let fresh = connect(options, false).await.map_err(|e| e.to_string())?;
            let now = started_at(&fresh).await?;
            if &now != started {
                return Err(format!(
                    "the server restarted (at {now}, was {started}): groups committed before may be lost"
                ));
            }
            fresh.simple_query(FLUSH).await.map_err(|e| error_text(&e))?;
            *client = Some(fresh);
            Ok(())
        })
    }
}

/// The server's start time, read on `client` (after [`STARTED`]'s `SET`).
async fn started_at(client: &Client) -> Result<String, String> {
    let messages = client.simple_query(STARTED).await.map_err(|e| error_text(&e))?;
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| "the server did not say when it started".to_string())
}

impl LogSync for PgSync {
    fn sync(&mut self) -> std::io::Result<()> {
        self.flush().map_err(|error| {
            let error = self.options.target.scrub(&error);
            if let Some(f) = &self.on_lost {
                f(&format!("the store's WAL could not be flushed, so recent commits may not be durable: {error}"));
            }
            std::io::Error::other(error)
        })
    }
}
