//! The background checkpointer: copies the WAL into the database file on a
//! thread of its own, so that the store thread seldom has to.
//!
//! Why: SQLite's automatic checkpoint runs inside the commit that takes the
//! WAL past 1,000 pages. It copies those pages into the database file and
//! fsyncs it, several milliseconds in which no group is applied and no
//! submission acknowledged: that was the tail of `kiln bench jobs`'
//! acknowledgement latency. This thread runs a `PASSIVE` checkpoint, which
//! never blocks the writer, on its own connection every [`NUDGE_EVERY`]
//! group commits. The writer's automatic checkpoint stays on as the
//! backstop that lets the WAL start over (only the writer can do that, at a
//! moment when every frame is copied); when it runs, most frames are
//! already copied and synced, so it is short.
//!
//! Nothing here is needed for correctness: a checkpoint that fails or finds
//! the database busy is logged at debug level and tried again at the next
//! nudge. The connection's default `synchronous=FULL` makes a checkpoint
//! sync the WAL before copying and the database after.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;

/// Group commits between two background checkpoints. Under load a group
/// writes a few dozen WAL pages, so this runs one a few times between two
/// of the writer's automatic checkpoints (every 1,000 pages).
const NUDGE_EVERY: u32 = 32;

/// The checkpointer thread, owned by the backend; dropping it stops the
/// thread after the checkpoint in progress.
pub(super) struct Checkpointer {
    nudge: Option<mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    since_nudge: u32,
}

impl Checkpointer {
    /// Opens a second connection to `path` and starts the thread; `None`
    /// (the writer checkpoints alone, as SQLite does by default) when
    /// either fails.
    pub(super) fn start(path: &Path) -> Option<Checkpointer> {
        let conn = match Connection::open(path) {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(message = "No background checkpointer: cannot open a second connection.", %error);
                return None;
            }
        };
        let (nudge, nudges) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new().name("kiln-checkpoint".into()).spawn(move || run(&conn, &nudges));
        match spawned {
            Ok(thread) => Some(Checkpointer { nudge: Some(nudge), thread: Some(thread), since_nudge: 0 }),
            Err(error) => {
                tracing::warn!(message = "No background checkpointer: cannot start its thread.", %error);
                None
            }
        }
    }

    /// Called after every group commit; every [`NUDGE_EVERY`]th wakes the
    /// thread. A nudge while the thread is busy is dropped: one pass covers
    /// every frame written before it starts.
    pub(super) fn committed(&mut self) {
        self.since_nudge += 1;
        if self.since_nudge >= NUDGE_EVERY {
            self.since_nudge = 0;
            if let Some(nudge) = &self.nudge {
                let _ = nudge.try_send(());
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.nudge.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, nudges: &mpsc::Receiver<()>) {
    while nudges.recv().is_ok() {
        let pass = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
        if let Err(error) = pass {
            tracing::debug!(message = "A background checkpoint failed; the next nudge retries.", %error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL database whose writer never checkpoints by itself, with `rows`
    /// rows written since it was created.
    fn database(dir: &Path, rows: usize) -> (std::path::PathBuf, Connection) {
        let path = dir.join("db.sqlite");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute("CREATE TABLE t (x INTEGER)", []).unwrap();
        for x in 0..rows {
            writer.execute("INSERT INTO t VALUES (?1)", [x as i64]).unwrap();
        }
        (path, writer)
    }

    /// The rows the database file holds on its own, without its WAL: what
    /// a checkpoint has copied into it.
    fn rows_in_the_file(path: &Path, dir: &Path) -> i64 {
        let copy = dir.join("copy.sqlite");
        std::fs::copy(path, &copy).unwrap();
        let conn = Connection::open(&copy).unwrap();
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap_or(-1)
    }

    /// The rows the database file holds after `commits` group commits were
    /// reported to a checkpointer over a WAL of ten rows, and it stopped.
    fn rows_copied_after(commits: u32) -> i64 {
        let dir = tempfile::tempdir().unwrap();
        let (path, _writer) = database(dir.path(), 10);
        let mut checkpointer = Checkpointer::start(&path).expect("a checkpointer");
        for _ in 0..commits {
            checkpointer.committed();
        }
        // Dropping it lets the thread take a queued nudge, checkpoint, and end.
        drop(checkpointer);
        rows_in_the_file(&path, dir.path())
    }

    #[test]
    fn a_nudge_after_nudge_every_commits_checkpoints_the_wal_into_the_database() {
        assert_eq!(rows_copied_after(NUDGE_EVERY), 10);
    }

    #[test]
    fn fewer_commits_leave_the_wal_uncopied() {
        // The table itself was never copied: the file alone has no table t.
        assert_eq!(rows_copied_after(NUDGE_EVERY - 1), -1);
    }
}
