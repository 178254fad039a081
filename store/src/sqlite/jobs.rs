//! The job queue's statements: live and archived jobs with their logs, settings.
//!
//! Why they are shaped so:
//!
//! - **`PutJob` is a plain single-row `UPDATE`** for a job already live, and
//!   for a new one an archive probe and a plain `INSERT`. `UpdateJob`, what
//!   the queue sends once a job is inserted, is the `UPDATE` alone. The queue writes
//!   every job at least twice (submitted, ended) at up to 100,000 jobs a
//!   second; these simple statements need no statement journal, which the
//!   earlier single upsert (`INSERT ... SELECT ... ON CONFLICT`) opened on
//!   every write: 7% fewer instructions per job (callgrind). A submission
//!   is an `InsertJob`, which skips the update. An archived id is never
//!   written again; the probe for one runs only for an id no higher than
//!   the highest archived (`Held::archive_ceiling`), so never for a
//!   submission.
//! - **A job's log is a JSON column of its row** (`[{serial, at, message}]`),
//!   written whole with every put: one row write per job change instead of a
//!   row plus a b-tree insert per line (migration 3). The put checks that the
//!   serials increase and belong to the job. A line's `level` is written only
//!   when it is not `info` (most lines are, and every byte is rewritten at
//!   every put); a line without one, among them every line stored before
//!   levels existed, reads back as `info`. No migration was needed.
//! - **Archiving is a move inside the batch's savepoint**: check, copy,
//!   delete. A failure at any step leaves the job live and unchanged, because
//!   the savepoint rolls back the whole batch.
//! - **Ids and serials are `u64` in Rust and signed 64-bit in SQLite.** A
//!   value past `i64::MAX` is refused on the way in (no kiln site gets there:
//!   ids are serial), and a negative value read back is
//!   [`StoreError::Corrupt`]. A read for an id beyond the range finds nothing,
//!   since nothing can be stored there.

use rusqlite::{Connection, Row, ToSql};
use serde::Deserialize;

use super::{Fields, Held, timestamp_text, unique_violation};
use crate::error::Constraint;
use crate::{JobEnd, JobId, JobLogEntry, JobRecord, JobStatus, LiveQueue, LogLevel, StoreError, Timestamp};

/// The job columns of `$table` in the order [`job_from_row`] reads them.
macro_rules! job_select {
    ($table:literal) => {
        concat!("SELECT id, priority, status, submitted_at, started_at, ended_at, body, log FROM ", $table)
    };
}

// ---------------------------------------------------------------- writes --

/// A job's columns as SQLite gets them, bound in the order `?1`-`?8` of
/// both the update and the insert.
struct JobColumns<'j> {
    job: &'j JobRecord,
    id: i64,
    status: &'static str,
    submitted_at: String,
    started_at: Option<String>,
    ended_at: Option<String>,
    log: String,
}

impl<'j> JobColumns<'j> {
    fn of(job: &'j JobRecord) -> Result<JobColumns<'j>, StoreError> {
        Ok(JobColumns {
            job,
            id: integer("job id", job.id.0)?,
            status: job.status.as_str(),
            submitted_at: timestamp_text(job.submitted_at),
            started_at: job.started_at.map(timestamp_text),
            ended_at: job.ended_at.map(timestamp_text),
            log: log_text(job)?,
        })
    }

    /// id, priority, status, submitted_at, started_at, ended_at, body, log.
    fn params(&self) -> [&dyn ToSql; 8] {
        [
            &self.id,
            &self.job.priority,
            &self.status,
            &self.submitted_at,
            &self.started_at,
            &self.ended_at,
            &self.job.body,
            &self.log,
        ]
    }
}

pub(super) fn put_job(held: &mut Held<'_>, job: &JobRecord) -> Result<(), StoreError> {
    let c = JobColumns::of(job)?;
    if update(held, &c)? {
        return Ok(());
    }
    insert_new(held, &c)
}

/// `Write::UpdateJob`: the update alone; a job that is not live is an error.
pub(super) fn update_job(held: &mut Held<'_>, job: &JobRecord) -> Result<(), StoreError> {
    if update(held, &JobColumns::of(job)?)? {
        return Ok(());
    }
    Err(StoreError::NotFound(format!("job {} is not in the live queue", job.id)))
}

/// Replaces the row of a job already in the live table (a plain single-row
/// update); false when there is none.
fn update(held: &mut Held<'_>, c: &JobColumns<'_>) -> Result<bool, StoreError> {
    let changed = held
        .get(
            "UPDATE jobs SET priority = ?2, status = ?3, submitted_at = ?4, started_at = ?5, ended_at = ?6,
                             body = ?7, log = ?8
             WHERE id = ?1",
        )?
        .execute(&c.params()[..])?;
    Ok(changed == 1)
}

/// `Write::InsertJob`: a submission skips the update `put_job` tries first.
pub(super) fn insert_job(held: &mut Held<'_>, job: &JobRecord) -> Result<(), StoreError> {
    insert_new(held, &JobColumns::of(job)?).map_err(|e| match &e {
        StoreError::Database { constraint: Some(Constraint::Unique), .. } => {
            StoreError::Conflict(format!("job {} exists already", job.id))
        }
        _ => e,
    })
}

/// Inserts a job that is not live, unless its id was archived: an archived
/// id is never written again.
fn insert_new(held: &mut Held<'_>, c: &JobColumns<'_>) -> Result<(), StoreError> {
    if c.id <= *held.archive_ceiling && held.get("SELECT 1 FROM jobs_archive WHERE id = ?1")?.exists([c.id])? {
        return Err(StoreError::Conflict(format!("job {} is archived", c.job.id)));
    }
    held.get(
        "INSERT INTO jobs (id, priority, status, submitted_at, started_at, ended_at, body, log)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(&c.params()[..])?;
    Ok(())
}

/// One line of the `log` column, as read back.
#[derive(Deserialize)]
struct LogLine<'a> {
    serial: u64,
    at: Timestamp,
    #[serde(default = "info")]
    level: LogLevel,
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
}

/// The level of a line stored without one.
fn info() -> LogLevel {
    LogLevel::Info
}

/// The job's log as the `log` column holds it,
/// `[{"serial":1,"at":"2026-...Z","message":"..."}]` (with `"level"` before
/// the message when it is not info), after checking that
/// every line is the job's own and the serials increase.
///
/// Written by hand rather than through serde: the whole log is encoded at
/// every put, and serde's map path was a quarter of the store thread's
/// instructions per job (callgrind, `kiln bench jobs`). The text is what
/// `serde_json` writes for the same lines, byte for byte (tested).
pub(crate) fn log_text(job: &JobRecord) -> Result<String, StoreError> {
    let mut last = 0;
    let size: usize = job.log.iter().map(|e| e.message.len() + 72).sum();
    let mut out = String::with_capacity(size + 2);
    out.push('[');
    for entry in &job.log {
        if entry.job != job.id {
            return Err(StoreError::Conflict(format!("job {}: its log holds a line of job {}", job.id, entry.job)));
        }
        if entry.serial <= last {
            return Err(StoreError::Conflict(format!(
                "job {}: log serial {} follows {last}; serials must increase",
                job.id, entry.serial
            )));
        }
        if last != 0 {
            out.push(',');
        }
        last = entry.serial;
        out.push_str("{\"serial\":");
        crate::json::push_u64(&mut out, entry.serial);
        out.push_str(",\"at\":\"");
        crate::timestamp::push_timestamp(&mut out, entry.at);
        if entry.level != LogLevel::Info {
            out.push_str("\",\"level\":\"");
            out.push_str(entry.level.as_str());
        }
        out.push_str("\",\"message\":");
        crate::json::push_json_string(&mut out, &entry.message);
        out.push('}');
    }
    out.push(']');
    Ok(out)
}

/// Reads the `log` column of job `id` from `table`.
pub(crate) fn log_from_text(text: &str, id: JobId, table: &str) -> Result<Vec<JobLogEntry>, StoreError> {
    let lines: Vec<LogLine<'_>> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("{table}.log of job {id} is not a readable log: {e}")))?;
    Ok(lines
        .into_iter()
        .map(|l| JobLogEntry { job: id, serial: l.serial, at: l.at, level: l.level, message: l.message.into_owned() })
        .collect())
}

pub(super) fn archive_job(held: &mut Held<'_>, id: JobId) -> Result<(), StoreError> {
    let not_live = || StoreError::NotFound(format!("job {id} is not in the live queue"));
    let Ok(key) = i64::try_from(id.0) else {
        return Err(not_live());
    };
    let status = {
        let stmt = held.get("SELECT status FROM jobs WHERE id = ?1")?;
        let mut rows = stmt.query([key])?;
        let Some(row) = rows.next()? else {
            return Err(not_live());
        };
        let f = Fields { row, table: "jobs", key: format!(" of job {id}") };
        f.parsed::<JobStatus>(0, "status")?
    };
    if !status.is_finished() {
        return Err(StoreError::Conflict(format!("job {id} is still {status}; only finished jobs can be archived")));
    }
    *held.archive_ceiling = (*held.archive_ceiling).max(key);
    held.get(
        "INSERT INTO jobs_archive (id, priority, status, submitted_at, started_at, ended_at, body, log)
         SELECT id, priority, status, submitted_at, started_at, ended_at, body, log FROM jobs WHERE id = ?1",
    )?
    .execute([key])
    .map_err(|e| match unique_violation(&e) {
        // PutJob refuses archived ids, so only a hand-edited file gets here.
        Some("jobs_archive.id") => StoreError::Corrupt(format!("job {id} is both in the live queue and the archive")),
        _ => StoreError::from(e),
    })?;
    held.get("DELETE FROM jobs WHERE id = ?1")?.execute([key])?;
    Ok(())
}

pub(super) fn set_meta(held: &mut Held<'_>, key: &str, value: &str) -> Result<(), StoreError> {
    held.get(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

/// `value` as SQLite's signed integer, refusing what does not fit (rusqlite
/// itself would, were its `fallible_uint` feature on).
pub(crate) fn integer(what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Database {
        message: format!("{what} {value} is beyond the store's range (at most {})", i64::MAX),
        constraint: None,
    })
}

// ----------------------------------------------------------------- reads --

/// The highest id in the archive, 0 when it is empty: where
/// [`Held::archive_ceiling`] starts.
pub(super) fn archive_ceiling(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM jobs_archive", [], |r| r.get(0))?)
}

pub(super) fn load_live_jobs(conn: &Connection) -> Result<Vec<JobRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(concat!(job_select!("jobs"), " ORDER BY id"))?;
    let mut rows = stmt.query([])?;
    let mut jobs = Vec::new();
    while let Some(row) = rows.next()? {
        jobs.push(job_from_row(row, "jobs")?);
    }
    Ok(jobs)
}

pub(super) fn load_live_queue(conn: &Connection) -> Result<LiveQueue, StoreError> {
    let mut stmt = conn.prepare_cached(concat!(job_select!("jobs"), " ORDER BY id"))?;
    let mut rows = stmt.query([])?;
    let mut queue = LiveQueue::default();
    while let Some(row) = rows.next()? {
        let mut f = Fields { row, table: "jobs", key: String::new() };
        let id = JobId(f.unsigned(0, "id")?);
        f.key = format!(" of job {id}");
        let status: JobStatus = f.parsed(2, "status")?;
        if status.is_finished() {
            // Its body and log stay unread: nothing at start needs them.
            queue.ended.push(JobEnd { id, status, ended_at: f.timestamp_opt(5, "ended_at")? });
        } else {
            queue.unfinished.push(job_from_row(row, "jobs")?);
        }
    }
    Ok(queue)
}

pub(super) fn load_job(conn: &Connection, id: JobId) -> Result<Option<(JobRecord, bool)>, StoreError> {
    let Ok(key) = i64::try_from(id.0) else {
        return Ok(None);
    };
    // Live first: that is where the jobs people look at are.
    for (table, sql, archived) in [
        ("jobs", concat!(job_select!("jobs"), " WHERE id = ?1"), false),
        ("jobs_archive", concat!(job_select!("jobs_archive"), " WHERE id = ?1"), true),
    ] {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query([key])?;
        if let Some(row) = rows.next()? {
            return Ok(Some((job_from_row(row, table)?, archived)));
        }
    }
    Ok(None)
}

pub(super) fn load_job_log(
    conn: &Connection,
    id: JobId,
    after_serial: u64,
    limit: usize,
) -> Result<Vec<JobLogEntry>, StoreError> {
    let Ok(key) = i64::try_from(id.0) else {
        return Ok(Vec::new());
    };
    for (table, sql) in
        [("jobs", "SELECT log FROM jobs WHERE id = ?1"), ("jobs_archive", "SELECT log FROM jobs_archive WHERE id = ?1")]
    {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query([key])?;
        if let Some(row) = rows.next()? {
            let f = Fields { row, table, key: format!(" of job {id}") };
            let text: String = f.raw(0, "log")?;
            let log = log_from_text(&text, id, table)?;
            return Ok(log.into_iter().filter(|e| e.serial > after_serial).take(limit).collect());
        }
    }
    Ok(Vec::new())
}

pub(super) fn max_job_id(conn: &Connection) -> Result<u64, StoreError> {
    // Two primary-key lookups (each max() reads one end of a b-tree).
    let max: i64 = conn
        .prepare_cached(
            "SELECT max(coalesce((SELECT max(id) FROM jobs), 0),
                        coalesce((SELECT max(id) FROM jobs_archive), 0))",
        )?
        .query_row([], |r| r.get(0))?;
    u64::try_from(max).map_err(|_| StoreError::Corrupt(format!("the largest job id is {max}")))
}

pub(super) fn load_meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
    let mut rows = stmt.query([key])?;
    match rows.next()? {
        Some(row) => {
            let f = Fields { row, table: "meta", key: format!(" of key '{key}'") };
            Ok(Some(f.raw(0, "value")?))
        }
        None => Ok(None),
    }
}

pub(super) fn list_archived_jobs(conn: &Connection, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(concat!(job_select!("jobs_archive"), " ORDER BY id DESC LIMIT ?1"))?;
    let mut rows = stmt.query([limit])?;
    let mut jobs = Vec::new();
    while let Some(row) = rows.next()? {
        jobs.push(job_from_row(row, "jobs_archive")?);
    }
    Ok(jobs)
}

pub(super) fn list_live_jobs(
    conn: &Connection,
    status: Option<JobStatus>,
    before: Option<JobId>,
    limit: usize,
) -> Result<Vec<JobRecord>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let before = before.map_or(i64::MAX, |id| i64::try_from(id.0).unwrap_or(i64::MAX));
    // Walks the table from its newest row and stops after `limit` matches:
    // the live table may hold millions of ended jobs, and nothing here
    // reads (or parses) the rows past the ones listed.
    let mut stmt = conn.prepare_cached(concat!(
        job_select!("jobs"),
        " WHERE id < ?3 AND (?1 IS NULL OR status = ?1) ORDER BY id DESC LIMIT ?2"
    ))?;
    let mut rows = stmt.query(rusqlite::params![status.map(|s| s.as_str()), limit, before])?;
    let mut jobs = Vec::new();
    while let Some(row) = rows.next()? {
        jobs.push(job_from_row(row, "jobs")?);
    }
    Ok(jobs)
}

fn job_from_row(row: &Row<'_>, table: &'static str) -> Result<JobRecord, StoreError> {
    let mut f = Fields { row, table, key: String::new() };
    let id = JobId(f.unsigned(0, "id")?);
    f.key = format!(" of job {id}");
    Ok(JobRecord {
        id,
        priority: f.raw(1, "priority")?,
        status: f.parsed(2, "status")?,
        submitted_at: f.timestamp(3, "submitted_at")?,
        started_at: f.timestamp_opt(4, "started_at")?,
        ended_at: f.timestamp_opt(5, "ended_at")?,
        body: f.raw(6, "body")?,
        log: log_from_text(&f.raw::<String>(7, "log")?, id, table)?,
    })
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;

    #[test]
    fn ids_past_sqlites_range_are_refused_not_wrapped() {
        assert_eq!(integer("job id", i64::MAX as u64).unwrap(), i64::MAX);
        let err = integer("job id", u64::MAX).unwrap_err();
        let StoreError::Database { message, constraint: None } = err else {
            panic!("expected a database error, got {err:?}");
        };
        assert!(message.starts_with("job id 18446744073709551615 is beyond"), "{message}");
    }

    /// A log line as serde writes it: the reference for [`log_text`].
    #[derive(Serialize)]
    struct SerdeLine<'a> {
        serial: u64,
        #[serde(with = "crate::timestamp::rfc3339")]
        at: Timestamp,
        #[serde(skip_serializing_if = "is_info")]
        level: LogLevel,
        message: &'a str,
    }

    fn is_info(level: &LogLevel) -> bool {
        *level == LogLevel::Info
    }

    #[test]
    fn the_log_column_is_what_serde_json_writes_and_reads_back() {
        let messages = [
            "submitted: 1 opcode(s)",
            "",
            "a \"quoted\" name and a back\\slash",
            "newline\n tab\t return\r",
            "\u{0}\u{1}\u{8}\u{b}\u{c}\u{1b}\u{1f} and DEL \u{7f}",
            "naïve ünïcødé ✓ 🚀 at the end: é",
            "</script> / slash",
        ];
        let at: Timestamp = "2026-11-23T21:07:52.123456789Z".parse().unwrap();
        let id = JobId(42);
        let log: Vec<JobLogEntry> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| JobLogEntry {
                job: id,
                serial: i as u64 * 3 + 1,
                at,
                level: LogLevel::ALL[i % LogLevel::ALL.len()],
                message: m.to_string(),
            })
            .collect();
        let job = JobRecord {
            id,
            priority: 0,
            status: JobStatus::Running,
            submitted_at: at,
            started_at: None,
            ended_at: None,
            body: "{}".into(),
            log: log.clone(),
        };
        let reference: Vec<SerdeLine<'_>> =
            log.iter().map(|e| SerdeLine { serial: e.serial, at: e.at, level: e.level, message: &e.message }).collect();
        let text = log_text(&job).unwrap();
        assert_eq!(text, serde_json::to_string(&reference).unwrap());
        assert_eq!(log_from_text(&text, id, "jobs").unwrap(), log);
        let empty = JobRecord { log: Vec::new(), ..job };
        assert_eq!(log_text(&empty).unwrap(), "[]");
    }

    #[test]
    fn a_line_stored_before_levels_existed_reads_as_info() {
        let text = r#"[{"serial":1,"at":"2026-11-23T21:07:52Z","message":"old"},{"serial":2,"at":"2026-11-23T21:07:53Z","level":"error","message":"new"}]"#;
        let log = log_from_text(text, JobId(3), "jobs").unwrap();
        assert_eq!(log.iter().map(|e| e.level).collect::<Vec<_>>(), [LogLevel::Info, LogLevel::Error]);
        let bad = r#"[{"serial":1,"at":"2026-11-23T21:07:52Z","level":"loud","message":"x"}]"#;
        assert!(matches!(log_from_text(bad, JobId(3), "jobs"), Err(StoreError::Corrupt(_))));
    }
}
