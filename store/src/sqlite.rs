//! The embedded backend: one SQLite file in WAL mode.
//!
//! Why it is shaped so:
//!
//! - **Durability first.** `journal_mode=WAL` with `synchronous=FULL` makes
//!   every COMMIT an fsync of the WAL, so a commit that returned survives
//!   `kill -9` and power loss (docs/reliability.md). The store thread takes the
//!   fsync on itself instead ([`Backend::log_sync`]): the file drops to
//!   `synchronous=NORMAL` and the WAL is synced explicitly, on another
//!   thread, before any commit is acknowledged. One fsync is amortised over
//!   many batches by [`Backend::commit`] taking several batches at once: the
//!   writer thread groups whatever is queued into one transaction, and each
//!   batch gets its own savepoint so that one bad batch (a duplicate name)
//!   fails alone while its neighbours commit.
//! - **Errors say what happened, not what SQLite said.** Unique and
//!   foreign-key violations are recognised by SQLite's extended result codes
//!   and the column named in its message, and become [`StoreError::Conflict`]
//!   or [`StoreError::NotFound`] naming the node, name or MAC; a missing row
//!   for an update or delete is found from the changed-rows count.
//! - **Nothing read back is trusted blindly.** Enum columns are stored as the
//!   same strings the CLI and JSON use (`as_str`) and parsed back with
//!   `FromStr`; a value that does not parse (a hand-edited file) is a
//!   [`StoreError::Corrupt`] naming the column and the value, never a panic.
//! - **Timestamps are RFC 3339 text with nine fractional digits** (`...Z`):
//!   readable in the `sqlite3` shell, sortable as text, and an exact round
//!   trip of `chrono`'s nanosecond precision.
//! - **The schema is versioned.** `PRAGMA user_version` holds how many entries
//!   of [`MIGRATIONS`] have been applied; opening applies the rest in one
//!   transaction, and refuses a file written by a newer kiln
//!   ([`StoreError::TooNew`]) rather than guess at its meaning.
//! - **Each connection keeps its own page cache.** SQLite built with
//!   `SQLITE_ENABLE_MEMORY_MANAGEMENT` (rusqlite's bundled build sets it)
//!   puts the pages of every connection in the process in one shared cache,
//!   and a connection that has filled it makes another's pages be dropped
//!   as soon as they are let go: that connection then reads its B-trees'
//!   root pages again on every insert. Two stores in one process (`kiln
//!   bench jobs`, an application embedding two sites) showed it as 1.7-2.6
//!   µs more of the store thread's CPU per commit for one of them. The
//!   workspace's `.cargo/config.toml` builds SQLite without that option;
//!   [`page_cache_per_connection`] tells, and a store opened without it
//!   says so once in the log.
//! - Every statement goes through `prepare_cached`, so the hot path (update a
//!   node, append history, put a job) never re-parses SQL, and a group commit
//!   holds the statements it uses for the whole group (`sqlite/held.rs`).
//!
//! The job queue's statements are in `sqlite/jobs.rs`; its tables are migrations 2 and 3.
//! Port groups' are in `sqlite/portgroups.rs` (migration 4).

use std::fmt::Display;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::FromSql;
use rusqlite::{Connection, Row, TransactionBehavior, ffi, params};

use crate::{
    Backend, Batch, EventRecord, HistoryEntry, JobId, JobLogEntry, JobRecord, JobStatus, LiveQueue, NodeId, NodeRecord,
    PortGroupRecord, PortId, PortRecord, Reservation, StoreError, Timestamp, Write,
};

mod checkpointer;
mod coalesce;
mod held;
pub(crate) mod jobs;
mod portgroups;

use crate::timestamp::timestamp_text;
use checkpointer::Checkpointer;
use coalesce::Step;
use held::Held;

/// The schema, one entry per version: entry `i` takes a database from
/// version `i` to `i + 1`. Entries are only ever appended; an applied entry is
/// never edited, because files in the field already ran it.
pub const MIGRATIONS: &[&str] = &[
    // 1: nodes, ports, node history.
    "
    CREATE TABLE nodes (
        uuid                   TEXT PRIMARY KEY NOT NULL,
        name                   TEXT NOT NULL UNIQUE,
        driver                 TEXT NOT NULL,
        driver_info            TEXT NOT NULL,  -- JSON object of strings
        properties             TEXT NOT NULL,  -- JSON object of strings
        provision_state        TEXT NOT NULL,
        target_provision_state TEXT,
        power_state            TEXT,
        target_power_state     TEXT,
        boot_device            TEXT,
        maintenance            INTEGER NOT NULL,
        maintenance_reason     TEXT,
        fault                  TEXT,
        last_error             TEXT,
        reservation_purpose    TEXT,
        reservation_since      TEXT,
        created_at             TEXT NOT NULL,
        updated_at             TEXT NOT NULL
    ) STRICT;

    CREATE TABLE ports (
        uuid       TEXT PRIMARY KEY NOT NULL,
        address    TEXT NOT NULL UNIQUE,
        node       TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
        created_at TEXT NOT NULL
    ) STRICT;
    -- Serves load_ports(Some(node)) and the cascade when a node is deleted.
    CREATE INDEX ports_node ON ports(node);

    CREATE TABLE node_history (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        node       TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
        at         TEXT NOT NULL,
        event      TEXT NOT NULL,
        from_state TEXT NOT NULL,
        to_state   TEXT NOT NULL,
        error      TEXT
    ) STRICT;
    -- Serves 'the last N entries of a node' and the cascade.
    CREATE INDEX node_history_node_id ON node_history(node, id);
    ",
    // 2: the job queue: live jobs, archived jobs, job logs, settings.
    "
    -- The live queue: what the job queue reloads after a restart.
    CREATE TABLE jobs (
        id           INTEGER PRIMARY KEY,  -- the JobId, as the rowid itself
        priority     INTEGER NOT NULL,
        status       TEXT NOT NULL,
        submitted_at TEXT NOT NULL,
        started_at   TEXT,
        ended_at     TEXT,
        body         TEXT NOT NULL         -- the queue's JSON; opaque here
    ) STRICT;

    -- Finished jobs moved out of the live queue, with the same columns.
    -- A job is in one table or the other, never both, and an archived id is
    -- never written again.
    CREATE TABLE jobs_archive (
        id           INTEGER PRIMARY KEY,
        priority     INTEGER NOT NULL,
        status       TEXT NOT NULL,
        submitted_at TEXT NOT NULL,
        started_at   TEXT,
        ended_at     TEXT,
        body         TEXT NOT NULL
    ) STRICT;

    -- No reference to either job table: a job's log stays put when the job
    -- moves to the archive. The key serves 'entries after serial N'.
    CREATE TABLE job_log (
        job     INTEGER NOT NULL,
        serial  INTEGER NOT NULL,
        at      TEXT NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (job, serial)
    ) STRICT, WITHOUT ROWID;

    -- The job queue's site-wide settings (the drain flag).
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) STRICT;

    -- Deliberately no index on jobs(status) or jobs_archive(ended_at): no
    -- query selects by them (the live queue is loaded whole, the archive is
    -- listed by id), and an index on status would cost a second b-tree write
    -- on every job status change. A later migration adds one together with
    -- the query that needs it.
    ",
    // 3: a job's log moves into the job's row. The queue writes a job's row
    // at every change anyway; a log row per line cost more than the row
    // itself (four b-tree inserts per `sleep 0` job, over half the store's
    // instructions per job, callgrind).
    "
    ALTER TABLE jobs ADD COLUMN log TEXT NOT NULL DEFAULT '[]';  -- JSON: [{serial, at, message}]
    ALTER TABLE jobs_archive ADD COLUMN log TEXT NOT NULL DEFAULT '[]';
    UPDATE jobs SET log = (
        SELECT json_group_array(json_object('serial', serial, 'at', at, 'message', message) ORDER BY serial)
        FROM job_log WHERE job = jobs.id
    ) WHERE EXISTS (SELECT 1 FROM job_log WHERE job = jobs.id);
    UPDATE jobs_archive SET log = (
        SELECT json_group_array(json_object('serial', serial, 'at', at, 'message', message) ORDER BY serial)
        FROM job_log WHERE job = jobs_archive.id
    ) WHERE EXISTS (SELECT 1 FROM job_log WHERE job = jobs_archive.id);
    DROP TABLE job_log;
    ",
    // 4: the event stream, so that its serials survive a restart and a
    // consumer that reconnects can replay what it missed. No foreign key:
    // the events of a deleted node stay in the stream's history.
    "
    CREATE TABLE events (
        serial INTEGER PRIMARY KEY NOT NULL,
        body   BLOB NOT NULL             -- the actors' encoding of the event
    ) STRICT;
    ",
    // 5: port groups (bonds): ports of one node bonded together, as Ironic's
    // portgroups. A port names its group; deleting a group leaves its ports
    // in none, deleting a node takes its groups with its ports.
    "
    CREATE TABLE portgroups (
        uuid       TEXT PRIMARY KEY NOT NULL,
        name       TEXT NOT NULL UNIQUE,
        node       TEXT NOT NULL REFERENCES nodes(uuid) ON DELETE CASCADE,
        address    TEXT UNIQUE,            -- the bond's MAC, when it has a fixed one
        mode       TEXT NOT NULL,          -- a Linux bonding mode name
        created_at TEXT NOT NULL
    ) STRICT;
    -- Serves load_port_groups(Some(node)) and the cascade when a node is deleted.
    CREATE INDEX portgroups_node ON portgroups(node);

    ALTER TABLE ports ADD COLUMN portgroup TEXT REFERENCES portgroups(uuid) ON DELETE SET NULL;
    -- Serves 'the members of a group' and the SET NULL when a group is deleted.
    CREATE INDEX ports_portgroup ON ports(portgroup);

    -- A port and its group are one node's. Kept by the schema, so that no
    -- write, now or later, can bond ports of two machines.
    CREATE TRIGGER ports_portgroup_same_node_insert BEFORE INSERT ON ports
    WHEN NEW.portgroup IS NOT NULL
         AND EXISTS (SELECT 1 FROM portgroups WHERE uuid = NEW.portgroup AND node <> NEW.node)
    BEGIN
        SELECT RAISE(ABORT, 'port group of another node');
    END;
    CREATE TRIGGER ports_portgroup_same_node_update BEFORE UPDATE OF portgroup, node ON ports
    WHEN NEW.portgroup IS NOT NULL
         AND EXISTS (SELECT 1 FROM portgroups WHERE uuid = NEW.portgroup AND node <> NEW.node)
    BEGIN
        SELECT RAISE(ABORT, 'port group of another node');
    END;
    ",
    // 6: what kiln knows of a node's BMC: its last answer, since when it
    // cannot be reached, and when it last confirmed the power state.
    "
    ALTER TABLE nodes ADD COLUMN bmc_last_contact TEXT;
    ALTER TABLE nodes ADD COLUMN bmc_unreachable_since TEXT;
    ALTER TABLE nodes ADD COLUMN power_verified_at TEXT;
    -- Serves 'node list --bmc unreachable' without reading every node.
    CREATE INDEX nodes_bmc_unreachable ON nodes(bmc_unreachable_since) WHERE bmc_unreachable_since IS NOT NULL;
    ",
    // 7: what kiln learned about a node's BMC (its `BmcProfile`, as JSON).
    "
    ALTER TABLE nodes ADD COLUMN bmc_profile TEXT;
    ",
    // 8: a node's free-form `extra` and its `instance_info` (what to deploy:
    // `image_url`), JSON objects as Ironic keeps them.
    "
    ALTER TABLE nodes ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE nodes ADD COLUMN instance_info TEXT NOT NULL DEFAULT '{}';
    ",
    // 9: the callback a node waits for from its booted system (JSON: the
    // one-time token and since when), NULL when it waits for none.
    "
    ALTER TABLE nodes ADD COLUMN callback TEXT;
    ",
];

/// The schema version this build writes: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The page size of a new store, in bytes (SQLite's default is 4096).
///
/// Why larger: every group commit writes each page it changed to the WAL,
/// one `pwrite` for the frame header and one for the page, and the kernel's
/// cost is mostly per call. A group of job submissions and ends, or of node
/// transitions, changes a few neighbouring pages of one table: with 16 KiB
/// pages that is a quarter of the calls for a little more bytes. `kiln bench`
/// against 4096, three runs each: the store thread's CPU per job 12.8 → 10.1
/// µs, `lifecycle` 36-40k → 50k transitions/s, `lock` 206k → 242-252k
/// tasks/s, `scale` restart 1.01 → 0.90 s. 32 and 64 KiB were no better.
pub const PAGE_SIZE: i64 = 16_384;

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A kiln store in one SQLite file.
pub struct SqliteBackend {
    /// Declared first, so its thread stops before the writer's connection
    /// closes.
    checkpointer: Option<Checkpointer>,
    conn: Connection,
    /// No archived job has an id above this ([`Held::archive_ceiling`]).
    archive_ceiling: i64,
}

/// Whether the SQLite this was built with gives each connection a page
/// cache of its own (see the module docs); false when it was built with
/// `SQLITE_ENABLE_MEMORY_MANAGEMENT`, or cannot say.
pub fn page_cache_per_connection() -> bool {
    let used = Connection::open_in_memory().and_then(|conn| {
        conn.query_row("SELECT sqlite_compileoption_used('ENABLE_MEMORY_MANAGEMENT')", [], |r| r.get::<_, i64>(0))
    });
    matches!(used, Ok(0))
}

/// Says once per process, at the first store opened, that the page cache
/// is shared by every connection.
fn warn_if_page_cache_is_shared() {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        if !page_cache_per_connection() {
            tracing::warn!(
                message = "This SQLite shares one page cache among all connections; with several stores in a \
                           process each can slow the others. Build it with \
                           LIBSQLITE3_FLAGS=-USQLITE_ENABLE_MEMORY_MANAGEMENT (kiln's .cargo/config.toml does).",
            );
        }
    });
}

impl SqliteBackend {
    /// Opens (creating it and its directory if needed, privately: see
    /// [`crate::private`]) the database at `path`, sets the durability
    /// pragmas and brings the schema up to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<SqliteBackend, StoreError> {
        crate::private::prepare_database(path)?;
        warn_if_page_cache_is_shared();
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Takes effect only while the file is still empty (before WAL mode
        // and the first table); an existing store keeps its page size.
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                message = "SQLite refused WAL mode; commits stay durable but slower.",
                path = %path.display(),
                journal_mode = %mode,
            );
        }
        // FULL until a caller takes the WAL's sync on itself (`log_sync`).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn)?;
        let checkpointer = if mode.eq_ignore_ascii_case("wal") { Checkpointer::start(path) } else { None };
        let archive_ceiling = jobs::archive_ceiling(&conn)?;
        Ok(SqliteBackend { checkpointer, conn, archive_ceiling })
    }

    /// Every node `sql` (a [`node_select!`] query) selects.
    fn select_nodes(&mut self, sql: &str) -> Result<Vec<NodeRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query([])?;
        let mut nodes = Vec::new();
        while let Some(row) = rows.next()? {
            nodes.push(node_from_row(row)?);
        }
        Ok(nodes)
    }

    /// After every group commit: the background checkpointer keeps count.
    fn committed(&mut self) {
        if let Some(checkpointer) = &mut self.checkpointer {
            checkpointer.committed();
        }
    }
}

/// Applies the migrations the file has not seen, all in one transaction.
/// The version is read inside that (IMMEDIATE) transaction so that two
/// processes opening one file cannot both migrate it.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew { found, supported: SCHEMA_VERSION });
    }
    let applied = usize::try_from(found)
        .map_err(|_| StoreError::Corrupt(format!("the schema version (user_version) is {found}")))?;
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version as i64 + 1)?;
        tracing::info!(message = "Migrated the store schema.", version = version + 1);
    }
    tx.commit()?;
    Ok(())
}

/// The node columns in the order [`node_from_row`] reads them.
macro_rules! node_select {
    () => {
        "SELECT uuid, name, driver, driver_info, properties,
                provision_state, target_provision_state, power_state, target_power_state,
                boot_device, maintenance, maintenance_reason, fault, last_error,
                reservation_purpose, reservation_since, created_at, updated_at,
                bmc_last_contact, bmc_unreachable_since, power_verified_at, bmc_profile,
                extra, instance_info, callback
         FROM nodes"
    };
}

impl Backend for SqliteBackend {
    /// Hands out the WAL file and drops to `synchronous=NORMAL`: a commit
    /// then writes the WAL without an fsync, and syncing the WAL file makes
    /// every commit written before it durable. (Checkpoints still sync on
    /// their own: NORMAL syncs the WAL before one and the database after.)
    /// The handle stays valid: SQLite truncates and rewrites the WAL in
    /// place, and deletes it only when the last connection closes, which
    /// this backend's connection outlives the store thread to prevent.
    /// `None`, leaving FULL, when the file is not in WAL mode or its WAL
    /// cannot be opened.
    fn log_sync(&mut self) -> Option<Box<dyn crate::LogSync>> {
        let mode: String = self.conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).ok()?;
        let path = format!("{}-wal", self.conn.path().filter(|p| !p.is_empty())?);
        if !mode.eq_ignore_ascii_case("wal") {
            return None;
        }
        let wal = match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
            Ok(wal) => wal,
            Err(error) => {
                tracing::warn!(
                    message = "Cannot open the WAL to sync it; every commit syncs on its own (slower).",
                    path = %path,
                    %error,
                );
                return None;
            }
        };
        match self.conn.pragma_update(None, "synchronous", "NORMAL") {
            Ok(()) => Some(Box::new(wal)),
            Err(error) => {
                tracing::warn!(message = "Cannot set synchronous=NORMAL; every commit syncs on its own.", %error);
                None
            }
        }
    }

    fn commit(&mut self, batches: &[Batch]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        // Fast path: in nearly every group no write fails, and a savepoint
        // per batch costs about a sixth of the commit's CPU. Apply the group
        // without savepoints; only if some write fails, roll back and redo
        // it batch by batch below, so the failure stays with its batch.
        {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let clean = {
                let mut held = Held::new(&tx, &mut self.archive_ceiling);
                let steps = coalesce::plan(batches);
                batches.iter().enumerate().all(|(n, batch)| match steps.as_ref().map_or(Step::Apply, |s| s[n]) {
                    Step::Apply => batch.iter().all(|write| apply(&mut held, write).is_ok()),
                    Step::InsertAs(last) => match batches[last].as_slice() {
                        [Write::PutJob(job) | Write::UpdateJob(job)] => jobs::insert_job(&mut held, job).is_ok(),
                        _ => false,
                    },
                    Step::Taken => true,
                })
            };
            if clean {
                tx.commit()?;
                self.committed();
                return Ok(batches.iter().map(|_| Ok(())).collect());
            }
            if !tx.is_autocommit() {
                tx.rollback()?;
            }
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batches.len());
        let mut held = Held::new(&tx, &mut self.archive_ceiling);
        for batch in batches {
            tx.prepare_cached("SAVEPOINT b")?.execute([])?;
            match batch.iter().try_for_each(|write| apply(&mut held, write)) {
                Ok(()) => {
                    tx.prepare_cached("RELEASE b")?.execute([])?;
                    results.push(Ok(()));
                }
                Err(error) => {
                    // Some failures (I/O, disk full) make SQLite roll back
                    // the whole transaction; then no batch of this commit
                    // survives, and saying so is the only honest answer.
                    if tx.is_autocommit() {
                        return Err(error);
                    }
                    tx.prepare_cached("ROLLBACK TO b")?.execute([])?;
                    tx.prepare_cached("RELEASE b")?.execute([])?;
                    results.push(Err(error));
                }
            }
        }
        drop(held);
        tx.commit()?;
        self.committed();
        Ok(results)
    }

    fn load_nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
        self.select_nodes(concat!(node_select!(), " ORDER BY name"))
    }

    /// Every node, in the table's own order: a start-up adopts them all and
    /// needs no order, and a scan reads the table once front to back where
    /// `ORDER BY name` walks the name index and looks up each row apart.
    fn load_owned_nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
        self.select_nodes(node_select!())
    }

    /// In the table's own order, as [`Self::load_owned_nodes`].
    fn stream_owned_nodes(&mut self, batch: usize, each: &mut dyn FnMut(Vec<NodeRecord>)) -> Result<usize, StoreError> {
        let batch = batch.max(1);
        let mut stmt = self.conn.prepare_cached(node_select!())?;
        let mut rows = stmt.query([])?;
        let mut next = Vec::with_capacity(batch);
        let mut count = 0;
        while let Some(row) = rows.next()? {
            next.push(node_from_row(row)?);
            count += 1;
            if next.len() == batch {
                each(std::mem::replace(&mut next, Vec::with_capacity(batch)));
            }
        }
        if !next.is_empty() {
            each(next);
        }
        Ok(count)
    }

    fn count_owned_nodes(&mut self) -> Result<usize, StoreError> {
        let count: i64 = self.conn.query_row("SELECT count(*) FROM nodes", [], |r| r.get(0))?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    fn load_node(&mut self, id: NodeId) -> Result<Option<NodeRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(concat!(node_select!(), " WHERE uuid = ?1"))?;
        let mut rows = stmt.query([id.to_string()])?;
        match rows.next()? {
            Some(row) => Ok(Some(node_from_row(row)?)),
            None => Ok(None),
        }
    }

    fn load_ports(&mut self, node: Option<NodeId>) -> Result<Vec<PortRecord>, StoreError> {
        // Two statements rather than `?1 IS NULL OR node = ?1`, which would
        // keep SQLite from using the ports_node index.
        let mut stmt;
        let mut rows = match node {
            Some(node) => {
                stmt = self.conn.prepare_cached(
                    "SELECT uuid, address, node, portgroup, created_at FROM ports
                     WHERE node = ?1 ORDER BY address",
                )?;
                stmt.query([node.to_string()])?
            }
            None => {
                stmt = self
                    .conn
                    .prepare_cached("SELECT uuid, address, node, portgroup, created_at FROM ports ORDER BY address")?;
                stmt.query([])?
            }
        };
        let mut ports = Vec::new();
        while let Some(row) = rows.next()? {
            ports.push(port_from_row(row)?);
        }
        Ok(ports)
    }

    fn load_port_groups(&mut self, node: Option<NodeId>) -> Result<Vec<PortGroupRecord>, StoreError> {
        portgroups::load_port_groups(&self.conn, node)
    }

    fn load_port_group(&mut self, name_or_uuid: &str) -> Result<Option<PortGroupRecord>, StoreError> {
        portgroups::load_port_group(&self.conn, name_or_uuid)
    }

    fn load_history(&mut self, node: NodeId, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, node, at, event, from_state, to_state, error FROM (
                 SELECT * FROM node_history WHERE node = ?1 ORDER BY id DESC LIMIT ?2
             ) ORDER BY id",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![node.to_string(), limit])?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next()? {
            entries.push(history_from_row(row)?);
        }
        Ok(entries)
    }

    fn load_live_jobs(&mut self) -> Result<Vec<JobRecord>, StoreError> {
        jobs::load_live_jobs(&self.conn)
    }

    fn load_live_queue(&mut self) -> Result<LiveQueue, StoreError> {
        jobs::load_live_queue(&self.conn)
    }

    fn load_job(&mut self, id: JobId) -> Result<Option<(JobRecord, bool)>, StoreError> {
        jobs::load_job(&self.conn, id)
    }

    fn load_job_log(&mut self, id: JobId, after_serial: u64, limit: usize) -> Result<Vec<JobLogEntry>, StoreError> {
        jobs::load_job_log(&self.conn, id, after_serial, limit)
    }

    fn max_job_id(&mut self) -> Result<u64, StoreError> {
        jobs::max_job_id(&self.conn)
    }

    fn load_meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        jobs::load_meta(&self.conn, key)
    }

    fn list_archived_jobs(&mut self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        jobs::list_archived_jobs(&self.conn, limit)
    }

    fn list_live_jobs(
        &mut self,
        status: Option<JobStatus>,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        jobs::list_live_jobs(&self.conn, status, before, limit)
    }

    fn load_events(&mut self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT serial, body FROM events WHERE serial > ?1 ORDER BY serial LIMIT ?2")?;
        let (after, limit) = (i64::try_from(after).unwrap_or(i64::MAX), i64::try_from(limit).unwrap_or(i64::MAX));
        let mut rows = stmt.query(params![after, limit])?;
        let mut events = Vec::new();
        while let Some(row) = rows.next()? {
            events.push(event_from_row(row)?);
        }
        Ok(events)
    }

    fn event_span(&mut self) -> Result<(u64, u64), StoreError> {
        let (max, count): (Option<i64>, i64) =
            self.conn.query_row("SELECT max(serial), count(*) FROM events", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((max.unwrap_or(0).max(0) as u64, count.max(0) as u64))
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        // Returns (busy, wal frames, frames checkpointed); busy means a reader
        // kept part of the WAL alive, which the next checkpoint will retry.
        let (busy, log, done): (i64, i64, i64) =
            self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        if busy != 0 {
            tracing::warn!(
                message = "WAL checkpoint could not finish; a reader holds the WAL.",
                wal_frames = log,
                checkpointed = done,
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- writes --

fn apply(held: &mut Held<'_>, write: &Write) -> Result<(), StoreError> {
    match write {
        Write::InsertNode(node) => insert_node(held, node),
        Write::UpdateNode(node) => update_node(held, node),
        Write::DeleteNode(id) => delete_node(held, *id),
        Write::InsertPort(port) => insert_port(held, port, PORT_INSERT),
        Write::InsertPortIfFree(port) => insert_port(held, port, PORT_INSERT_IF_FREE),
        Write::DeletePort(address) => delete_port(held, address),
        Write::InsertPortGroup(group) => portgroups::insert_port_group(held, group),
        Write::DeletePortGroup(id) => portgroups::delete_port_group(held, *id),
        Write::SetPortGroup { address, group } => portgroups::set_port_group(held, address, *group),
        Write::AppendHistory(entry) => append_history(held, entry),
        Write::PutJob(job) => jobs::put_job(held, job),
        Write::UpdateJob(job) => jobs::update_job(held, job),
        Write::InsertJob(job) => jobs::insert_job(held, job),
        Write::ArchiveJob(id) => jobs::archive_job(held, *id),
        Write::SetMeta { key, value } => jobs::set_meta(held, key, value),
        Write::AppendEvent(event) => append_event(held, event),
        Write::ForgetEventsThrough(serial) => {
            let serial = i64::try_from(*serial).unwrap_or(i64::MAX);
            held.get("DELETE FROM events WHERE serial <= ?1")?.execute([serial])?;
            Ok(())
        }
    }
}

fn append_event(held: &mut Held<'_>, event: &EventRecord) -> Result<(), StoreError> {
    let serial = i64::try_from(event.serial).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    held.get("INSERT INTO events (serial, body) VALUES (?1, ?2)")?.execute(params![serial, event.body]).map_err(
        |e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == ffi::ErrorCode::ConstraintViolation => {
                StoreError::Conflict(format!("event serial {} is taken", event.serial))
            }
            other => StoreError::from(other),
        },
    )?;
    Ok(())
}

fn insert_node(held: &mut Held<'_>, node: &NodeRecord) -> Result<(), StoreError> {
    let stmt = held.get(
        "INSERT INTO nodes (
             uuid, name, driver, driver_info, properties,
             provision_state, target_provision_state, power_state, target_power_state,
             boot_device, maintenance, maintenance_reason, fault, last_error,
             reservation_purpose, reservation_since, created_at, updated_at,
             bmc_last_contact, bmc_unreachable_since, power_verified_at, bmc_profile,
             extra, instance_info, callback
         ) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
                   ?22, ?23, ?24, ?25)",
    )?;
    execute_node(stmt, node)?;
    Ok(())
}

/// Updates a node's row. Most updates keep the node's name, and the
/// statement that leaves `name` out of its `SET` touches no entry of the
/// name's unique index: SQLite maintains an index for every column a
/// `SET` names, value changed or not, which cost three searches of that
/// index (the uniqueness check, the old entry's delete, the new one's
/// insert) and one more page written per group. Only when that statement
/// finds no row with this uuid *and* this name (a rename, or no such node)
/// does the full statement run.
fn update_node(held: &mut Held<'_>, node: &NodeRecord) -> Result<(), StoreError> {
    if execute_node(held.get(NODE_UPDATE_SAME_NAME)?, node)? == 1 {
        return Ok(());
    }
    if execute_node(held.get(NODE_UPDATE)?, node)? == 0 {
        return Err(node_missing(node.uuid));
    }
    Ok(())
}

/// The `SET` list of a node's row for every column but its uuid and name,
/// numbered as [`execute_node`] binds them.
macro_rules! node_set_but_name {
    () => {
        "driver = ?3, driver_info = ?4, properties = ?5,
         provision_state = ?6, target_provision_state = ?7,
         power_state = ?8, target_power_state = ?9, boot_device = ?10,
         maintenance = ?11, maintenance_reason = ?12, fault = ?13, last_error = ?14,
         reservation_purpose = ?15, reservation_since = ?16,
         created_at = ?17, updated_at = ?18,
         bmc_last_contact = ?19, bmc_unreachable_since = ?20, power_verified_at = ?21,
         bmc_profile = ?22, extra = ?23, instance_info = ?24, callback = ?25"
    };
}

/// [`NODE_UPDATE`] for a node whose name stays: `?2` is only compared.
static NODE_UPDATE_SAME_NAME: &str =
    concat!("UPDATE nodes SET ", node_set_but_name!(), " WHERE uuid = ?1 AND name = ?2");

/// Every column of a node's row but its uuid, the name included.
static NODE_UPDATE: &str = concat!("UPDATE nodes SET name = ?2, ", node_set_but_name!(), " WHERE uuid = ?1");

fn delete_node(held: &mut Held<'_>, id: NodeId) -> Result<(), StoreError> {
    // Ports and history go with it (ON DELETE CASCADE).
    let changed = held.get("DELETE FROM nodes WHERE uuid = ?1")?.execute([id.to_string()])?;
    if changed == 0 {
        return Err(node_missing(id));
    }
    Ok(())
}

// Statics, not consts: `Held` knows a statement by its text's address.
static PORT_INSERT: &str = "INSERT INTO ports (uuid, address, node, portgroup, created_at) VALUES (?1, ?2, ?3, ?4, ?5)";
/// Only the address's uniqueness is let go: a taken uuid, a missing node
/// and another node's group still fail as in [`PORT_INSERT`].
static PORT_INSERT_IF_FREE: &str = "INSERT INTO ports (uuid, address, node, portgroup, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (address) DO NOTHING";

/// Inserts `port` with `sql` ([`PORT_INSERT`] or [`PORT_INSERT_IF_FREE`]).
fn insert_port(held: &mut Held<'_>, port: &PortRecord, sql: &'static str) -> Result<(), StoreError> {
    held.get(sql)?
        .execute(params![
            port.uuid.to_string(),
            port.address,
            port.node.to_string(),
            port.portgroup.map(|g| g.to_string()),
            timestamp_text(port.created_at),
        ])
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                return match port.portgroup {
                    Some(group) => StoreError::NotFound(format!(
                        "node {} or port group {group} of port '{}' does not exist",
                        port.node, port.address
                    )),
                    None => node_missing(port.node),
                };
            }
            if portgroups::is_other_nodes_group(&e) {
                return portgroups::other_nodes_group(&port.address);
            }
            match unique_violation(&e) {
                Some("ports.address") => {
                    StoreError::Conflict(format!("port address '{}' is already in use", port.address))
                }
                Some("ports.uuid") => StoreError::Conflict(format!("port uuid {} already exists", port.uuid)),
                _ => StoreError::from(e),
            }
        })?;
    Ok(())
}

fn delete_port(held: &mut Held<'_>, address: &str) -> Result<(), StoreError> {
    let changed = held.get("DELETE FROM ports WHERE address = ?1")?.execute([address])?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("no port has address '{address}'")));
    }
    Ok(())
}

fn append_history(held: &mut Held<'_>, entry: &HistoryEntry) -> Result<(), StoreError> {
    held.get(
        "INSERT INTO node_history (node, at, event, from_state, to_state, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        entry.node.to_string(),
        timestamp_text(entry.at),
        entry.event,
        entry.from_state.as_str(),
        entry.to_state.as_str(),
        entry.error,
    ])
    .map_err(|e| if is_foreign_key_violation(&e) { node_missing(entry.node) } else { StoreError::from(e) })?;
    Ok(())
}

/// Runs the INSERT or UPDATE of `nodes`, whose parameters are numbered
/// alike: ?1 is the uuid, ?2..?25 the other columns.
fn execute_node(stmt: &mut rusqlite::Statement<'_>, n: &NodeRecord) -> Result<usize, StoreError> {
    let changed = stmt
        .execute(params![
            n.uuid.to_string(),
            n.name,
            n.driver.as_str(),
            crate::json_text(&n.driver_info)?,
            crate::json_text(&n.properties)?,
            n.provision_state.as_str(),
            n.target_provision_state.map(|s| s.as_str()),
            n.power_state.map(|s| s.as_str()),
            n.target_power_state.map(|s| s.as_str()),
            n.boot_device.map(|d| d.as_str()),
            n.maintenance,
            n.maintenance_reason,
            n.fault,
            n.last_error,
            n.reservation.as_ref().map(|r| r.purpose.as_str()),
            n.reservation.as_ref().map(|r| timestamp_text(r.since)),
            timestamp_text(n.created_at),
            timestamp_text(n.updated_at),
            n.bmc_last_contact.map(timestamp_text),
            n.bmc_unreachable_since.map(timestamp_text),
            n.power_verified_at.map(timestamp_text),
            crate::json_opt(n.bmc_profile.as_ref())?,
            crate::json_text(&n.extra)?,
            crate::json_text(&n.instance_info)?,
            crate::json_opt(n.callback.as_deref())?,
        ])
        .map_err(|e| node_error(e, n))?;
    Ok(changed)
}

/// Turns an INSERT or UPDATE failure on `nodes` into what the operator did
/// wrong, when it was a uniqueness rule.
fn node_error(e: rusqlite::Error, node: &NodeRecord) -> StoreError {
    match unique_violation(&e) {
        Some("nodes.name") => StoreError::Conflict(format!("node name '{}' is already in use", node.name)),
        Some("nodes.uuid") => StoreError::Conflict(format!("node uuid {} already exists", node.uuid)),
        _ => StoreError::from(e),
    }
}

fn node_missing(id: NodeId) -> StoreError {
    StoreError::NotFound(format!("node {id} does not exist"))
}

/// The `table.column` of a UNIQUE or PRIMARY KEY violation, from SQLite's
/// message "UNIQUE constraint failed: nodes.name".
fn unique_violation(e: &rusqlite::Error) -> Option<&str> {
    match e {
        rusqlite::Error::SqliteFailure(err, Some(message))
            if err.code == ffi::ErrorCode::ConstraintViolation
                && matches!(err.extended_code, ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) =>
        {
            message.strip_prefix("UNIQUE constraint failed: ")
        }
        _ => None,
    }
}

fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error(),
        Some(err) if err.extended_code == ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}

// ----------------------------------------------------------------- reads --

/// Reads one row's columns by index, turning anything unreadable into
/// [`StoreError::Corrupt`] that names `table.column`, the value and the row.
struct Fields<'r, 's> {
    row: &'r Row<'s>,
    table: &'static str,
    /// Which row, for messages: its uuid or id once read.
    key: String,
}

impl Fields<'_, '_> {
    fn raw<T: FromSql>(&self, index: usize, column: &str) -> Result<T, StoreError> {
        self.row.get(index).map_err(|e| match e {
            rusqlite::Error::InvalidColumnType(_, _, kind) => {
                StoreError::Corrupt(format!("{}.{column}{} holds a value of type {kind}", self.table, self.key))
            }
            rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::IntegralValueOutOfRange(..) => {
                StoreError::Corrupt(format!("{}.{column}{} holds an unreadable value: {e}", self.table, self.key))
            }
            other => StoreError::from(other),
        })
    }

    fn parsed<T>(&self, index: usize, column: &str) -> Result<T, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let text: String = self.raw(index, column)?;
        self.parse(column, text)
    }

    fn parsed_opt<T>(&self, index: usize, column: &str) -> Result<Option<T>, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let text: Option<String> = self.raw(index, column)?;
        text.map(|t| self.parse(column, t)).transpose()
    }

    fn parse<T>(&self, column: &str, text: String) -> Result<T, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        text.parse().map_err(|e| self.corrupt(column, &text, e))
    }

    /// An INTEGER column that holds a `u64` (ids, serials); a negative value
    /// was never written by kiln.
    fn unsigned(&self, index: usize, column: &str) -> Result<u64, StoreError> {
        let value: i64 = self.raw(index, column)?;
        u64::try_from(value).map_err(|e| self.corrupt(column, &value.to_string(), e))
    }

    fn timestamp(&self, index: usize, column: &str) -> Result<Timestamp, StoreError> {
        let text: String = self.raw(index, column)?;
        self.timestamp_from(column, text)
    }

    fn timestamp_opt(&self, index: usize, column: &str) -> Result<Option<Timestamp>, StoreError> {
        let text: Option<String> = self.raw(index, column)?;
        text.map(|t| self.timestamp_from(column, t)).transpose()
    }

    fn timestamp_from(&self, column: &str, text: String) -> Result<Timestamp, StoreError> {
        DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc)).map_err(|e| self.corrupt(column, &text, e))
    }

    /// A column of JSON text (a map of strings, an object), parsed. Most
    /// nodes' maps are empty: `{}` is answered without the parser (a start-up
    /// reads four such columns per node).
    fn json<T: serde::de::DeserializeOwned + Default>(&self, index: usize, column: &str) -> Result<T, StoreError> {
        let text: String = self.raw(index, column)?;
        if text == "{}" {
            return Ok(T::default());
        }
        serde_json::from_str(&text).map_err(|e| self.corrupt(column, &text, e))
    }

    /// A nullable column of JSON text, parsed.
    fn json_opt<T: serde::de::DeserializeOwned>(&self, index: usize, column: &str) -> Result<Option<T>, StoreError> {
        let text: Option<String> = self.raw(index, column)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| self.corrupt(column, &t, e))).transpose()
    }

    fn corrupt(&self, column: &str, value: &str, error: impl Display) -> StoreError {
        StoreError::Corrupt(format!("{}.{column}{} holds '{value}': {error}", self.table, self.key))
    }
}

fn node_from_row(row: &Row<'_>) -> Result<NodeRecord, StoreError> {
    let mut f = Fields { row, table: "nodes", key: String::new() };
    let uuid: NodeId = f.parsed(0, "uuid")?;
    f.key = format!(" of node {uuid}");
    let purpose: Option<String> = f.raw(14, "reservation_purpose")?;
    let since: Option<String> = f.raw(15, "reservation_since")?;
    let reservation = match (purpose, since) {
        (Some(purpose), Some(since)) => {
            Some(Reservation { purpose, since: f.timestamp_from("reservation_since", since)? })
        }
        (None, None) => None,
        (purpose, since) => {
            return Err(StoreError::Corrupt(format!(
                "node {uuid} has half a reservation (purpose {purpose:?}, since {since:?})"
            )));
        }
    };
    Ok(NodeRecord {
        uuid,
        name: f.raw(1, "name")?,
        driver: f.parsed(2, "driver")?,
        driver_info: f.json(3, "driver_info")?,
        properties: f.json(4, "properties")?,
        provision_state: f.parsed(5, "provision_state")?,
        target_provision_state: f.parsed_opt(6, "target_provision_state")?,
        power_state: f.parsed_opt(7, "power_state")?,
        target_power_state: f.parsed_opt(8, "target_power_state")?,
        boot_device: f.parsed_opt(9, "boot_device")?,
        maintenance: f.raw(10, "maintenance")?,
        maintenance_reason: f.raw(11, "maintenance_reason")?,
        fault: f.raw(12, "fault")?,
        last_error: f.raw(13, "last_error")?,
        reservation,
        created_at: f.timestamp(16, "created_at")?,
        updated_at: f.timestamp(17, "updated_at")?,
        bmc_last_contact: f.timestamp_opt(18, "bmc_last_contact")?,
        bmc_unreachable_since: f.timestamp_opt(19, "bmc_unreachable_since")?,
        power_verified_at: f.timestamp_opt(20, "power_verified_at")?,
        bmc_profile: f.json_opt(21, "bmc_profile")?,
        extra: f.json(22, "extra")?,
        instance_info: f.json(23, "instance_info")?,
        callback: f.json_opt(24, "callback")?,
    })
}

fn port_from_row(row: &Row<'_>) -> Result<PortRecord, StoreError> {
    let mut f = Fields { row, table: "ports", key: String::new() };
    let uuid: PortId = f.parsed(0, "uuid")?;
    f.key = format!(" of port {uuid}");
    Ok(PortRecord {
        uuid,
        address: f.raw(1, "address")?,
        node: f.parsed(2, "node")?,
        portgroup: f.parsed_opt(3, "portgroup")?,
        created_at: f.timestamp(4, "created_at")?,
    })
}

fn event_from_row(row: &Row<'_>) -> Result<EventRecord, StoreError> {
    let mut f = Fields { row, table: "events", key: String::new() };
    let serial: i64 = f.raw(0, "serial")?;
    f.key = format!(" of event {serial}");
    Ok(EventRecord {
        serial: u64::try_from(serial)
            .map_err(|_| StoreError::Corrupt(format!("events: serial {serial} is negative")))?,
        body: f.raw(1, "body")?,
    })
}

fn history_from_row(row: &Row<'_>) -> Result<HistoryEntry, StoreError> {
    let mut f = Fields { row, table: "node_history", key: String::new() };
    let id: i64 = f.raw(0, "id")?;
    f.key = format!(" of entry {id}");
    Ok(HistoryEntry {
        node: f.parsed(1, "node")?,
        at: f.timestamp(2, "at")?,
        event: f.raw(3, "event")?,
        from_state: f.parsed(4, "from_state")?,
        to_state: f.parsed(5, "to_state")?,
        error: f.raw(6, "error")?,
    })
}
