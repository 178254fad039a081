//! How many job batches one group commit sustains: each batch is a
//! `PutJob` plus an `AppendJobLog`, 4096 batches (the writer's
//! `MAX_GROUP`) to one `Backend::commit`, on a real file with
//! `synchronous=FULL`. A measurement, not a test: it asserts nothing about
//! speed.
//!
//! `cargo run --release -p kiln-store --example job_commit_rate [commits]`

use std::time::Instant;

use chrono::Utc;
use kiln_store::sqlite::SqliteBackend;
use kiln_store::writer::MAX_GROUP;
use kiln_store::*;

fn main() -> Result<(), StoreError> {
    let commits: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = SqliteBackend::open(&dir.path().join("kiln.db"))?;
    let body = r#"{"ops":[{"op":"sleep","args":{"seconds":0},"status":"queued","result":null}],"depends":[]}"#;
    let group = MAX_GROUP as u64;

    let batch = |id: u64, status: JobStatus, serial: u64| {
        vec![
            Write::PutJob(JobRecord {
                id: JobId(id),
                priority: 0,
                status,
                submitted_at: Utc::now(),
                started_at: None,
                ended_at: None,
                body: body.to_string(),
            }),
            Write::AppendJobLog(JobLogEntry { job: JobId(id), serial, at: Utc::now(), message: format!("{status}") }),
        ]
    };
    let mut run = |name: &str, make: &dyn Fn(u64) -> Batch| -> Result<(), StoreError> {
        let mut spent = std::time::Duration::ZERO;
        for c in 0..commits {
            let batches: Vec<Batch> = (0..group).map(|i| make(c * group + i + 1)).collect();
            let start = Instant::now();
            let results = store.commit(&batches)?;
            spent += start.elapsed();
            if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                return Err(e);
            }
        }
        let n = commits * group;
        println!(
            "{name} {:.0} batches/s ({n} batches, {commits} commits of {group}, {:.1} ms per commit)",
            n as f64 / spent.as_secs_f64(),
            spent.as_secs_f64() * 1000.0 / commits as f64
        );
        Ok(())
    };
    // New jobs (the insert path), then every one of them again (the update path).
    run("submit", &|id| batch(id, JobStatus::Queued, 1))?;
    run("update", &|id| batch(id, JobStatus::Running, 2))?;
    Ok(())
}
