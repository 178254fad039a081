//! The job queue's statements: live and archived jobs with their logs, settings.
//!
//! Why they are shaped so:
//!
//! - **`PutJob` is a plain single-row `UPDATE`** for a job already live, and
//!   for a new one an archive probe and a plain `INSERT`. The queue writes
//!   every job at least twice (submitted, ended) at up to 100,000 jobs a
//!   second; these simple statements need no statement journal, which the
//!   earlier single upsert (`INSERT ... SELECT ... ON CONFLICT`) opened on
//!   every write: 7% fewer instructions per job (callgrind). An archived id
//!   is never written again.
//! - **A job's log is a JSON column of its row** (`[{serial, at, message}]`),
//!   written whole with every put: one row write per job change instead of a
//!   row plus a b-tree insert per line (migration 3). The put checks that the
//!   serials increase and belong to the job.
//! - **Archiving is a move inside the batch's savepoint**: check, copy,
//!   delete. A failure at any step leaves the job live and unchanged, because
//!   the savepoint rolls back the whole batch.
//! - **Ids and serials are `u64` in Rust and signed 64-bit in SQLite.** A
//!   value past `i64::MAX` is refused on the way in (no kiln site gets there:
//!   ids are serial), and a negative value read back is
//!   [`StoreError::Corrupt`]. A read for an id beyond the range finds nothing,
//!   since nothing can be stored there.

use rusqlite::{Connection, Row, params};
use serde::{Deserialize, Serialize};

use super::{Fields, Held, timestamp_text, unique_violation};
use crate::{JobId, JobLogEntry, JobRecord, JobStatus, StoreError, Timestamp};

/// The job columns of `$table` in the order [`job_from_row`] reads them.
macro_rules! job_select {
    ($table:literal) => {
        concat!("SELECT id, priority, status, submitted_at, started_at, ended_at, body, log FROM ", $table)
    };
}

// ---------------------------------------------------------------- writes --

pub(super) fn put_job(held: &mut Held<'_>, job: &JobRecord) -> Result<(), StoreError> {
    let id = integer("job id", job.id.0)?;
    let submitted_at = timestamp_text(job.submitted_at);
    let started_at = job.started_at.map(timestamp_text);
    let ended_at = job.ended_at.map(timestamp_text);
    let log = log_text(job)?;
    // A job already in the live table: a plain single-row update.
    let changed = held
        .get(
            "UPDATE jobs SET priority = ?2, status = ?3, submitted_at = ?4, started_at = ?5, ended_at = ?6,
                             body = ?7, log = ?8
             WHERE id = ?1",
        )?
        .execute(params![id, job.priority, job.status.as_str(), submitted_at, started_at, ended_at, job.body, log])?;
    if changed == 1 {
        return Ok(());
    }
    // A new job, unless its id was archived: an archived id is never written again.
    if held.get("SELECT 1 FROM jobs_archive WHERE id = ?1")?.exists([id])? {
        return Err(StoreError::Conflict(format!("job {} is archived", job.id)));
    }
    held.get(
        "INSERT INTO jobs (id, priority, status, submitted_at, started_at, ended_at, body, log)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![id, job.priority, job.status.as_str(), submitted_at, started_at, ended_at, job.body, log])?;
    Ok(())
}

/// One line of the `log` column.
#[derive(Serialize, Deserialize)]
struct LogLine<'a> {
    serial: u64,
    #[serde(with = "crate::timestamp::rfc3339")]
    at: Timestamp,
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
}

/// The job's log as the `log` column holds it, after checking that every
/// line is the job's own and the serials increase.
fn log_text(job: &JobRecord) -> Result<String, StoreError> {
    let mut last = 0;
    let mut lines = Vec::with_capacity(job.log.len());
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
        last = entry.serial;
        lines.push(LogLine { serial: entry.serial, at: entry.at, message: entry.message.as_str().into() });
    }
    // Plain data: encoding cannot fail.
    serde_json::to_string(&lines).map_err(|e| StoreError::Corrupt(format!("cannot encode job {}'s log: {e}", job.id)))
}

/// Reads the `log` column of job `id` from `table`.
fn log_from_text(text: &str, id: JobId, table: &str) -> Result<Vec<JobLogEntry>, StoreError> {
    let lines: Vec<LogLine<'_>> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("{table}.log of job {id} is not a readable log: {e}")))?;
    Ok(lines
        .into_iter()
        .map(|l| JobLogEntry { job: id, serial: l.serial, at: l.at, message: l.message.into_owned() })
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
    held.get(
        "INSERT INTO jobs_archive (id, priority, status, submitted_at, started_at, ended_at, body, log)
         SELECT id, priority, status, submitted_at, started_at, ended_at, body, log FROM jobs WHERE id = ?1",
    )?
    .execute([key])
    .map_err(|e| match unique_violation(&e) {
        // PutJob refuses archived ids, so only a hand-edited file gets here.
        Some("jobs_archive.id") => StoreError::Corrupt(format!("job {id} is both in the live queue and the archive")),
        _ => StoreError::Sqlite(e),
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
fn integer(what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(
            format!("{what} {value} is beyond the store's range (at most {})", i64::MAX).into(),
        ))
    })
}

// ----------------------------------------------------------------- reads --

pub(super) fn load_live_jobs(conn: &Connection) -> Result<Vec<JobRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(concat!(job_select!("jobs"), " ORDER BY id"))?;
    let mut rows = stmt.query([])?;
    let mut jobs = Vec::new();
    while let Some(row) = rows.next()? {
        jobs.push(job_from_row(row, "jobs")?);
    }
    Ok(jobs)
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
    use super::*;

    #[test]
    fn ids_past_sqlites_range_are_refused_not_wrapped() {
        assert_eq!(integer("job id", i64::MAX as u64).unwrap(), i64::MAX);
        let err = integer("job id", u64::MAX).unwrap_err();
        let StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(cause)) = err else {
            panic!("expected a conversion failure, got {err:?}");
        };
        assert!(cause.to_string().starts_with("job id 18446744073709551615 is beyond"), "{cause}");
    }
}
