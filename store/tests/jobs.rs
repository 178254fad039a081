//! Jobs in the SQLite backend on real files: round trips, upserts, the log,
//! archiving and its refusals, id high-water marks, settings, durability
//! across reopen, the upgrade from a version-1 file, and damaged values read
//! back as errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod support;
use support::Place;

use chrono::{Duration, SecondsFormat, TimeZone, Utc};
use kiln_store::sqlite::{MIGRATIONS, SCHEMA_VERSION, SqliteBackend};
use kiln_store::*;

fn db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kiln.db");
    (dir, path)
}

fn open(path: &Path) -> SqliteBackend {
    SqliteBackend::open(path).unwrap()
}

/// Makes a store file written by hand private, as an operator must (with
/// `chmod 600`) before kiln opens a store that others can read.
fn make_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A queued job with every optional field unset.
fn job(id: u64) -> JobRecord {
    JobRecord {
        id: JobId(id),
        priority: 0,
        status: JobStatus::Queued,
        submitted_at: Utc::now(),
        started_at: None,
        ended_at: None,
        body: format!(r#"{{"ops":[{{"op":"sleep","seconds":0}}],"n":{id}}}"#),
        log: Vec::new(),
    }
}

/// A finished job with every optional field set.
fn finished(id: u64, status: JobStatus) -> JobRecord {
    let submitted = Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 58).unwrap() + Duration::nanoseconds(123_456_789);
    JobRecord {
        id: JobId(id),
        priority: -20,
        status,
        submitted_at: submitted,
        started_at: Some(submitted + Duration::nanoseconds(1)),
        ended_at: Some(submitted + Duration::seconds(3600)),
        body: r#"{"ops":[{"op":"deploy","nodes":"n[1-4]"}],"result":"nœud ✓ 'quoted' \"twice\""}"#.into(),
        log: vec![
            JobLogEntry::info(JobId(id), 1, submitted, "submitted".into()),
            JobLogEntry {
                job: JobId(id),
                serial: 7,
                at: submitted + Duration::seconds(3600),
                level: kiln_store::LogLevel::Error,
                message: "line\n two: \"nœud\" ✓ \\ \u{0}".into(),
            },
        ],
    }
}

fn log(job: u64, serial: u64, message: &str) -> JobLogEntry {
    JobLogEntry::info(JobId(job), serial, Utc::now(), message.into())
}

/// Commits one batch and returns its own result.
fn commit_one(store: &mut dyn Backend, batch: Batch) -> Result<(), StoreError> {
    let mut results = store.commit(&[batch]).unwrap();
    assert_eq!(results.len(), 1);
    results.pop().unwrap()
}

fn user_version(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
}

fn jobs_round_trip_with_and_without_optional_fields(place: &Place) {
    let mut store = place.open();
    let bare = job(1);
    let full = finished(2, JobStatus::Error);
    let mut extreme = finished(3, JobStatus::Canceled);
    extreme.priority = i32::MAX;
    extreme.body = String::new();
    commit_one(
        &mut store,
        vec![Write::PutJob(full.clone()), Write::PutJob(bare.clone()), Write::PutJob(extreme.clone())],
    )
    .unwrap();

    assert_eq!(store.load_job(JobId(1)).unwrap(), Some((bare.clone(), false)));
    assert_eq!(store.load_job(JobId(2)).unwrap(), Some((full.clone(), false)));
    assert_eq!(store.load_live_jobs().unwrap(), vec![bare, full, extreme]);
    assert_eq!(store.load_job(JobId(4)).unwrap(), None);
    assert_eq!(store.load_job(JobId(u64::MAX)).unwrap(), None);
}

fn putting_a_job_again_replaces_every_field(place: &Place) {
    let mut store = place.open();
    let queued = job(7);
    commit_one(&mut store, vec![Write::PutJob(queued.clone())]).unwrap();

    let mut running = queued.clone();
    running.status = JobStatus::Running;
    running.started_at = Some(Utc::now());
    running.priority = 5;
    running.body = r#"{"ops":[],"progress":1}"#.into();
    commit_one(&mut store, vec![Write::PutJob(running.clone())]).unwrap();
    assert_eq!(store.load_live_jobs().unwrap(), vec![running]);

    // Back to all-None: nothing of the old values lingers.
    commit_one(&mut store, vec![Write::PutJob(queued.clone())]).unwrap();
    assert_eq!(store.load_job(JobId(7)).unwrap(), Some((queued, false)));
}

fn ids_past_sqlites_integer_range_are_refused(place: &Place) {
    let mut store = place.open();
    let err = commit_one(&mut store, vec![Write::PutJob(job(u64::MAX))]).unwrap_err();
    assert!(matches!(err, StoreError::Database { constraint: None, .. }), "{err:?}");
    assert!(store.load_live_jobs().unwrap().is_empty());
}

fn the_log_is_read_after_a_serial_and_limited(place: &Place) {
    let mut store = place.open();
    let mut one = job(1);
    one.log = (1..=5).map(|serial| log(1, serial, &format!("line {serial} ✓"))).collect();
    let mut two = job(2);
    two.log = vec![log(2, 1, "other")];
    commit_one(&mut store, vec![Write::PutJob(one.clone()), Write::PutJob(two)]).unwrap();
    let expected = one.log.clone();

    assert_eq!(store.load_job_log(JobId(1), 0, 100).unwrap(), expected);
    assert_eq!(store.load_job_log(JobId(1), 2, 100).unwrap(), expected[2..].to_vec());
    assert_eq!(store.load_job_log(JobId(1), 1, 2).unwrap(), expected[1..3].to_vec());
    assert_eq!(store.load_job_log(JobId(1), 0, usize::MAX).unwrap().len(), 5);
    assert!(store.load_job_log(JobId(1), 5, 100).unwrap().is_empty());
    assert!(store.load_job_log(JobId(1), u64::MAX, 100).unwrap().is_empty());
    assert!(store.load_job_log(JobId(1), 0, 0).unwrap().is_empty());
    assert!(store.load_job_log(JobId(3), 0, 100).unwrap().is_empty());
    assert!(store.load_job_log(JobId(u64::MAX), 0, 100).unwrap().is_empty());
    assert_eq!(store.load_job(JobId(1)).unwrap().unwrap().0.log, expected);

    // Serials that do not increase, or a line of another job, fail their
    // batch alone, and the whole batch.
    let mut repeated = one.clone();
    repeated.log.push(log(1, 3, "again"));
    let mut foreign = one.clone();
    foreign.log.push(log(2, 6, "not mine"));
    let mut fine = job(2);
    fine.log = vec![log(2, 1, "other"), log(2, 6, "fine")];
    let results = store
        .commit(&[
            vec![Write::PutJob(job(4)), Write::PutJob(repeated)],
            vec![Write::PutJob(foreign)],
            vec![Write::PutJob(fine)],
        ])
        .unwrap();
    match &results[0] {
        Err(StoreError::Conflict(m)) => assert_eq!(m, "job 1: log serial 3 follows 5; serials must increase"),
        r => panic!("expected a conflict, got {r:?}"),
    }
    match &results[1] {
        Err(StoreError::Conflict(m)) => assert_eq!(m, "job 1: its log holds a line of job 2"),
        r => panic!("expected a conflict, got {r:?}"),
    }
    assert!(results[2].is_ok());
    assert_eq!(store.load_job_log(JobId(1), 0, 100).unwrap(), expected);
    assert_eq!(store.load_job(JobId(4)).unwrap(), None);
    assert_eq!(store.load_job_log(JobId(2), 5, 100).unwrap().len(), 1);
}

fn archiving_moves_a_finished_job_and_keeps_its_log(place: &Place) {
    let mut store = place.open();
    let done = finished(1, JobStatus::Success);
    let live = job(2);
    commit_one(&mut store, vec![Write::PutJob(done.clone()), Write::PutJob(live.clone())]).unwrap();

    commit_one(&mut store, vec![Write::ArchiveJob(JobId(1))]).unwrap();
    assert_eq!(store.load_job(JobId(1)).unwrap(), Some((done.clone(), true)));
    assert_eq!(store.load_live_jobs().unwrap(), vec![live.clone()]);
    assert_eq!(store.list_archived_jobs(10).unwrap(), vec![done.clone()]);
    assert_eq!(store.load_job_log(JobId(1), 0, 10).unwrap(), done.log);
    assert_eq!(store.load_job_log(JobId(1), 1, 10).unwrap(), done.log[1..].to_vec());

    // Archiving it again: it is no longer live.
    let err = commit_one(&mut store, vec![Write::ArchiveJob(JobId(1))]).unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(m) if m == "job 1 is not in the live queue"), "{err:?}");
    let err = commit_one(&mut store, vec![Write::ArchiveJob(JobId(99))]).unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(m) if m == "job 99 is not in the live queue"), "{err:?}");

    // Put and archive in one batch: the move sees the put.
    let canceled = finished(3, JobStatus::Canceled);
    commit_one(&mut store, vec![Write::PutJob(canceled.clone()), Write::ArchiveJob(JobId(3))]).unwrap();
    assert_eq!(store.load_job(JobId(3)).unwrap(), Some((canceled, true)));
}

fn unfinished_jobs_are_not_archived_and_nothing_changes(place: &Place) {
    let mut store = place.open();
    for status in JobStatus::ALL.iter().filter(|s| !s.is_finished()) {
        let mut j = job(1);
        j.status = *status;
        commit_one(&mut store, vec![Write::PutJob(j.clone())]).unwrap();
        // The batch's earlier write goes too.
        let err = commit_one(&mut store, vec![Write::PutJob(job(2)), Write::ArchiveJob(JobId(1))]).unwrap_err();
        let expected = format!("job 1 is still {status}; only finished jobs can be archived");
        assert!(matches!(&err, StoreError::Conflict(m) if *m == expected), "{err:?}");
        assert_eq!(store.load_live_jobs().unwrap(), vec![j]);
        assert!(store.list_archived_jobs(10).unwrap().is_empty());
    }
}

fn an_archived_job_cannot_be_put_again(place: &Place) {
    let mut store = place.open();
    let done = finished(5, JobStatus::Error);
    commit_one(&mut store, vec![Write::PutJob(done.clone())]).unwrap();
    commit_one(&mut store, vec![Write::ArchiveJob(JobId(5))]).unwrap();

    let mut resurrected = job(5);
    resurrected.status = JobStatus::Running;
    let err = commit_one(&mut store, vec![Write::PutJob(resurrected)]).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m == "job 5 is archived"), "{err:?}");
    assert_eq!(store.load_job(JobId(5)).unwrap(), Some((done, true)));
    assert!(store.load_live_jobs().unwrap().is_empty());
}

fn the_archive_refuses_its_ids_after_a_reopen_and_a_rolled_back_archive_refuses_nothing(place: &Place) {
    {
        let mut store = place.open();
        commit_one(&mut store, vec![Write::PutJob(finished(5, JobStatus::Success))]).unwrap();
        commit_one(&mut store, vec![Write::ArchiveJob(JobId(5))]).unwrap();
    }
    let mut store = place.open();
    // The highest archived id is read back from the file: 5 stays refused.
    let err = commit_one(&mut store, vec![Write::InsertJob(job(5))]).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m == "job 5 is archived"), "{err:?}");
    // Below it, an id never stored is free; above it, too.
    commit_one(&mut store, vec![Write::InsertJob(job(3))]).unwrap();
    commit_one(&mut store, vec![Write::InsertJob(job(6))]).unwrap();

    // An archive whose batch fails is rolled back: job 7 was never stored,
    // so it may be inserted after all.
    let err = commit_one(
        &mut store,
        vec![Write::PutJob(finished(7, JobStatus::Success)), Write::ArchiveJob(JobId(7)), Write::ArchiveJob(JobId(6))],
    )
    .unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("job 6 is still queued")), "{err:?}");
    assert_eq!(store.load_job(JobId(7)).unwrap(), None);
    commit_one(&mut store, vec![Write::InsertJob(job(7))]).unwrap();
    let live: Vec<u64> = store.load_live_jobs().unwrap().into_iter().map(|j| j.id.0).collect();
    assert_eq!(live, [3, 6, 7]);
}

fn inserting_takes_only_ids_never_stored(place: &Place) {
    let mut store = place.open();
    let first = finished(1, JobStatus::Success);
    commit_one(&mut store, vec![Write::InsertJob(first.clone())]).unwrap();
    assert_eq!(store.load_job(JobId(1)).unwrap(), Some((first.clone(), false)));

    // Live already: refused, and the stored job is untouched.
    let err = commit_one(&mut store, vec![Write::InsertJob(job(1))]).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m == "job 1 exists already"), "{err:?}");
    assert_eq!(store.load_job(JobId(1)).unwrap(), Some((first, false)));

    // Archived: refused as a put is.
    commit_one(&mut store, vec![Write::ArchiveJob(JobId(1))]).unwrap();
    let err = commit_one(&mut store, vec![Write::InsertJob(job(1))]).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m == "job 1 is archived"), "{err:?}");

    // The log rules hold for inserts too.
    let mut foreign = job(2);
    foreign.log = vec![log(3, 1, "not mine")];
    let err = commit_one(&mut store, vec![Write::InsertJob(foreign)]).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("holds a line of job 3")), "{err:?}");
    assert!(store.load_live_jobs().unwrap().is_empty());
}

fn updating_changes_only_live_jobs_and_never_creates_one(place: &Place) {
    let mut store = place.open();
    // Never inserted: refused, nothing written.
    let err = commit_one(&mut store, vec![Write::UpdateJob(job(1))]).unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(m) if m == "job 1 is not in the live queue"), "{err:?}");
    assert!(store.load_live_jobs().unwrap().is_empty());

    commit_one(&mut store, vec![Write::InsertJob(job(1))]).unwrap();
    let done = finished(1, JobStatus::Success);
    commit_one(&mut store, vec![Write::UpdateJob(done.clone())]).unwrap();
    assert_eq!(store.load_job(JobId(1)).unwrap(), Some((done.clone(), false)));

    // The log rules hold for updates too, and a refused one changes nothing.
    let mut foreign = done.clone();
    foreign.log.push(log(2, 9, "not mine"));
    let err = commit_one(&mut store, vec![Write::UpdateJob(foreign)]).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("holds a line of job 2")), "{err:?}");

    // Archived: not live any more.
    commit_one(&mut store, vec![Write::ArchiveJob(JobId(1))]).unwrap();
    let err = commit_one(&mut store, vec![Write::UpdateJob(done.clone())]).unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(store.load_job(JobId(1)).unwrap(), Some((done, true)));
}

#[test]
fn a_job_inserted_and_changed_in_one_group_is_stored_as_it_ends() {
    let (_dir, path) = db();
    let mut store = open(&path);
    let at = Utc::now();
    let line = |job: u64, serial: u64, message: &str| JobLogEntry::info(JobId(job), serial, at, message.into());
    let submitted = |id: u64| JobRecord { log: vec![line(id, 1, "submitted")], submitted_at: at, ..job(id) };
    let ended = |id: u64| JobRecord {
        log: vec![line(id, 1, "submitted"), line(id, 2, "job ended: success")],
        ..finished(id, JobStatus::Success)
    };
    let running = JobRecord {
        status: JobStatus::Running,
        log: vec![line(2, 1, "submitted"), line(2, 2, "opcode 1/1 started")],
        ..submitted(2)
    };
    let two_ended = JobRecord {
        log: vec![line(2, 1, "submitted"), line(2, 2, "opcode 1/1 started"), line(2, 3, "job ended: success")],
        ..finished(2, JobStatus::Success)
    };
    // Job 1 inserted and ended; job 2 inserted, started and ended (a put
    // and then an update); job 3 only inserted; job 4 updated alone.
    commit_one(&mut store, vec![Write::InsertJob(submitted(4))]).unwrap();
    let group = vec![
        vec![Write::InsertJob(submitted(1))],
        vec![Write::InsertJob(submitted(2))],
        vec![Write::UpdateJob(ended(1))],
        vec![Write::PutJob(running)],
        vec![Write::InsertJob(submitted(3))],
        vec![Write::UpdateJob(ended(4))],
        vec![Write::UpdateJob(two_ended.clone())],
    ];
    let results = store.commit(&group).unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let stored = |store: &mut dyn Backend, id: u64| store.load_job(JobId(id)).unwrap().map(|(job, _)| job);
    assert_eq!(stored(&mut store, 1), Some(ended(1)));
    assert_eq!(stored(&mut store, 2), Some(two_ended));
    assert_eq!(stored(&mut store, 3), Some(submitted(3)));
    assert_eq!(stored(&mut store, 4), Some(ended(4)));

    // A change that fails in such a group fails alone: the insert before
    // it is stored as sent, and the group's other batches too.
    let mut broken = ended(5);
    broken.log[1].serial = 1;
    let group = vec![
        vec![Write::InsertJob(submitted(5))],
        vec![Write::UpdateJob(broken)],
        vec![Write::InsertJob(submitted(6))],
        vec![Write::UpdateJob(ended(6))],
    ];
    let results = store.commit(&group).unwrap();
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok(), "{results:?}");
    assert!(matches!(&results[1], Err(StoreError::Conflict(m)) if m.contains("serials must increase")), "{results:?}");
    assert_eq!(stored(&mut store, 5), Some(submitted(5)));
    assert_eq!(stored(&mut store, 6), Some(ended(6)));

    // An insert refused in such a group (the id is live) leaves the row as
    // it was, and the update then changes that row, as sent.
    let group = vec![vec![Write::InsertJob(submitted(6))], vec![Write::UpdateJob(ended(6))]];
    let results = store.commit(&group).unwrap();
    assert!(matches!(&results[0], Err(StoreError::Conflict(m)) if m == "job 6 exists already"), "{results:?}");
    assert!(results[1].is_ok(), "{results:?}");
}

fn the_largest_id_counts_the_archive_too(place: &Place) {
    let mut store = place.open();
    assert_eq!(store.max_job_id().unwrap(), 0);
    commit_one(&mut store, vec![Write::PutJob(job(3)), Write::PutJob(finished(10, JobStatus::Success))]).unwrap();
    assert_eq!(store.max_job_id().unwrap(), 10);
    commit_one(&mut store, vec![Write::ArchiveJob(JobId(10))]).unwrap();
    // Only in the archive now, and still not to be reused.
    assert_eq!(store.max_job_id().unwrap(), 10);
    commit_one(&mut store, vec![Write::PutJob(job(11))]).unwrap();
    assert_eq!(store.max_job_id().unwrap(), 11);
}

fn archived_jobs_are_listed_newest_first(place: &Place) {
    let mut store = place.open();
    for id in 1..=5 {
        commit_one(&mut store, vec![Write::PutJob(finished(id, JobStatus::Success)), Write::ArchiveJob(JobId(id))])
            .unwrap();
    }
    let ids = |jobs: Vec<JobRecord>| jobs.into_iter().map(|j| j.id.0).collect::<Vec<_>>();
    assert_eq!(ids(store.list_archived_jobs(3).unwrap()), [5, 4, 3]);
    assert_eq!(ids(store.list_archived_jobs(usize::MAX).unwrap()), [5, 4, 3, 2, 1]);
    assert!(store.list_archived_jobs(0).unwrap().is_empty());
}

fn live_jobs_are_listed_newest_first_by_stored_status(place: &Place) {
    let mut store = place.open();
    for id in 1..=6 {
        let job = if id % 2 == 0 { finished(id, JobStatus::Success) } else { job(id) };
        commit_one(&mut store, vec![Write::PutJob(job)]).unwrap();
    }
    commit_one(&mut store, vec![Write::ArchiveJob(JobId(6))]).unwrap();
    let ids = |jobs: Vec<JobRecord>| jobs.into_iter().map(|j| j.id.0).collect::<Vec<_>>();
    assert_eq!(ids(store.list_live_jobs(None, None, 3).unwrap()), [5, 4, 3], "the archived job 6 is not live");
    assert_eq!(ids(store.list_live_jobs(Some(JobStatus::Success), None, 10).unwrap()), [4, 2]);
    assert_eq!(ids(store.list_live_jobs(Some(JobStatus::Queued), None, 2).unwrap()), [5, 3]);
    assert!(store.list_live_jobs(Some(JobStatus::Error), None, 10).unwrap().is_empty());
    assert!(store.list_live_jobs(None, None, 0).unwrap().is_empty());
    // Pages: below an id, with and without a status.
    assert_eq!(ids(store.list_live_jobs(None, Some(JobId(4)), 2).unwrap()), [3, 2]);
    assert_eq!(ids(store.list_live_jobs(Some(JobStatus::Queued), Some(JobId(3)), 10).unwrap()), [1]);
    assert!(store.list_live_jobs(None, Some(JobId(1)), 10).unwrap().is_empty());
    let whole = store.list_live_jobs(None, None, usize::MAX).unwrap();
    assert_eq!(whole.iter().rev().cloned().collect::<Vec<_>>(), store.load_live_jobs().unwrap());
}

fn the_live_queue_is_reloaded_whole_for_unfinished_jobs_and_as_ends_for_the_rest(place: &Place) {
    let mut store = place.open();
    let mut running = job(2);
    running.status = JobStatus::Running;
    let jobs = [
        job(1),
        running,
        finished(3, JobStatus::Success),
        finished(4, JobStatus::Error),
        finished(5, JobStatus::Canceled),
        finished(6, JobStatus::Success),
    ];
    for j in &jobs {
        commit_one(&mut store, vec![Write::PutJob(j.clone())]).unwrap();
    }
    commit_one(&mut store, vec![Write::ArchiveJob(JobId(6))]).unwrap();

    let queue = store.load_live_queue().unwrap();
    assert_eq!(queue.unfinished, jobs[..2]);
    let ends: Vec<JobEnd> =
        jobs[2..5].iter().map(|j| JobEnd { id: j.id, status: j.status, ended_at: j.ended_at }).collect();
    assert_eq!(queue.ended, ends);
    // The same as splitting every live job read whole.
    let whole = store.load_live_jobs().unwrap();
    assert_eq!(whole.len(), queue.unfinished.len() + queue.ended.len());
}

fn settings_are_upserted(place: &Place) {
    let mut store = place.open();
    assert_eq!(store.load_meta("drain").unwrap(), None);
    commit_one(&mut store, vec![Write::SetMeta { key: "drain".into(), value: "true".into() }]).unwrap();
    assert_eq!(store.load_meta("drain").unwrap().as_deref(), Some("true"));
    commit_one(
        &mut store,
        vec![
            Write::SetMeta { key: "drain".into(), value: "false".into() },
            Write::SetMeta { key: "other".into(), value: String::new() },
        ],
    )
    .unwrap();
    assert_eq!(store.load_meta("drain").unwrap().as_deref(), Some("false"));
    assert_eq!(store.load_meta("other").unwrap().as_deref(), Some(""));
}

fn jobs_logs_and_settings_are_there_after_reopening(place: &Place) {
    let archived = finished(1, JobStatus::Success);
    let mut running = job(2);
    running.status = JobStatus::Running;
    running.started_at = Some(Utc::now());
    let line = log(2, 1, "opcode 1 of 1");
    running.log = vec![line.clone()];
    {
        let mut store = place.open();
        commit_one(
            &mut store,
            vec![Write::PutJob(archived.clone()), Write::ArchiveJob(JobId(1)), Write::PutJob(job(2))],
        )
        .unwrap();
        store.checkpoint().unwrap();
        // These stay in the WAL only: reopening must replay them.
        commit_one(
            &mut store,
            vec![Write::PutJob(running.clone()), Write::SetMeta { key: "drain".into(), value: "true".into() }],
        )
        .unwrap();
    }
    let mut store = place.open();
    assert_eq!(store.load_live_jobs().unwrap(), vec![running]);
    assert_eq!(store.load_job(JobId(1)).unwrap(), Some((archived, true)));
    assert_eq!(store.load_job_log(JobId(2), 0, 10).unwrap(), vec![line]);
    assert_eq!(store.load_meta("drain").unwrap().as_deref(), Some("true"));
    assert_eq!(store.max_job_id().unwrap(), 2);
}

#[test]
fn the_store_thread_serves_jobs_too() {
    let (_dir, path) = db();
    let store = StoreHandle::open_sqlite(&path).unwrap();
    let mut queued = job(1);
    queued.log = vec![log(1, 1, "queued")];
    store.commit_blocking(vec![Write::PutJob(queued.clone())]).unwrap();
    let (seen, archived) = store.read_blocking(|s| s.load_job(JobId(1))).unwrap().unwrap();
    assert_eq!((seen, archived), (queued, false));
    assert_eq!(store.read_blocking(|s| s.max_job_id()).unwrap(), 1);
}

#[test]
fn a_version_1_file_is_upgraded_with_its_nodes_intact() {
    let (_dir, path) = db();
    let created = Utc.with_ymd_and_hms(2023, 7, 1, 12, 0, 0).unwrap() + Duration::nanoseconds(5);
    let mut n = NodeRecord::enroll("old-node".into(), DriverKind::Ipmi, created);
    n.driver_info = BTreeMap::from([("address".into(), "10.0.0.9".into())]);
    {
        // What a kiln of schema version 1 wrote.
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        let at = created.to_rfc3339_opts(SecondsFormat::Nanos, true);
        tx.execute(
            "INSERT INTO nodes (uuid, name, driver, driver_info, properties, provision_state, maintenance,
                                created_at, updated_at)
             VALUES (?1, 'old-node', 'ipmi', '{\"address\":\"10.0.0.9\"}', '{}', 'enroll', 0, ?2, ?2)",
            rusqlite::params![n.uuid.to_string(), at],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    make_private(&path);
    assert_eq!(user_version(&path), 1);

    let mut store = open(&path);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(store.load_nodes().unwrap(), vec![n]);
    assert_eq!(store.max_job_id().unwrap(), 0);
    commit_one(&mut store, vec![Write::PutJob(job(1))]).unwrap();
    drop(store);
    // And opening the upgraded file again runs nothing twice.
    let mut store = open(&path);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    assert_eq!(store.load_live_jobs().unwrap().len(), 1);
}

#[test]
fn a_version_2_file_keeps_its_job_logs_in_the_rows() {
    let (_dir, path) = db();
    let at = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 7).unwrap();
    let text = |s: i64| at(s).to_rfc3339_opts(SecondsFormat::Nanos, true);
    {
        // What a kiln of schema version 2 wrote: a log row per line.
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.execute_batch(MIGRATIONS[1]).unwrap();
        tx.pragma_update(None, "user_version", 2).unwrap();
        for (table, id) in [("jobs", 1), ("jobs_archive", 2), ("jobs", 3)] {
            tx.execute(
                &format!(
                    "INSERT INTO {table} (id, priority, status, submitted_at, body) VALUES (?1, 0, 'success', ?2, '{{}}')"
                ),
                rusqlite::params![id, text(0)],
            )
            .unwrap();
        }
        // Inserted out of order: the rows come out by serial.
        for (job, serial, message) in [(1, 2, "second"), (1, 1, "first \"quoted\""), (2, 1, "archived line")] {
            tx.execute(
                "INSERT INTO job_log (job, serial, at, message) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![job, serial, text(serial), message],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    make_private(&path);

    let mut store = open(&path);
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let line =
        |job: u64, serial: u64, message: &str| JobLogEntry::info(JobId(job), serial, at(serial as i64), message.into());
    assert_eq!(store.load_job_log(JobId(1), 0, 10).unwrap(), [line(1, 1, "first \"quoted\""), line(1, 2, "second")]);
    assert_eq!(store.load_job_log(JobId(2), 0, 10).unwrap(), [line(2, 1, "archived line")]);
    assert!(store.load_job(JobId(3)).unwrap().unwrap().0.log.is_empty());
    let tables: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'job_log'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 0);
}

#[test]
fn damaged_job_values_are_corrupt_errors_not_panics() {
    let (_dir, path) = db();
    {
        let mut store = open(&path);
        commit_one(
            &mut store,
            vec![Write::PutJob(job(1)), Write::PutJob(finished(2, JobStatus::Success)), Write::ArchiveJob(JobId(2))],
        )
        .unwrap();
    }
    let damage = |sql: &str| {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(sql, []).unwrap();
    };
    let expect_corrupt = |result: Result<(), StoreError>, what: &[&str]| match result {
        Err(StoreError::Corrupt(m)) => {
            for w in what {
                assert!(m.contains(w), "{m:?} does not name {w:?}");
            }
        }
        other => panic!("expected Corrupt, got {other:?}"),
    };

    damage("UPDATE jobs SET status = 'finished-ish'");
    let mut store = open(&path);
    let what = ["jobs.status", "of job 1", "'finished-ish'"];
    expect_corrupt(store.load_live_jobs().map(|_| ()), &what);
    expect_corrupt(store.load_job(JobId(1)).map(|_| ()), &what);
    expect_corrupt(commit_one(&mut store, vec![Write::ArchiveJob(JobId(1))]), &what);

    damage("UPDATE jobs SET status = 'queued', started_at = 'yesterday'");
    expect_corrupt(store.load_job(JobId(1)).map(|_| ()), &["jobs.started_at", "'yesterday'"]);

    damage("UPDATE jobs SET started_at = NULL, priority = 4294967296");
    expect_corrupt(store.load_live_jobs().map(|_| ()), &["jobs.priority"]);
    damage("UPDATE jobs SET priority = 0");
    assert_eq!(store.load_live_jobs().unwrap().len(), 1);

    damage("UPDATE jobs_archive SET status = 'gone'");
    let what = ["jobs_archive.status", "'gone'"];
    expect_corrupt(store.list_archived_jobs(10).map(|_| ()), &what);
    expect_corrupt(store.load_job(JobId(2)).map(|_| ()), &what);

    damage("UPDATE jobs SET log = '[{\"serial\": 1, \"at\": \"noon\", \"message\": \"hello\"}]'");
    let what = ["jobs.log of job 1", "not a readable log"];
    expect_corrupt(store.load_job_log(JobId(1), 0, 10).map(|_| ()), &what);
    expect_corrupt(store.load_live_jobs().map(|_| ()), &what);
    damage("UPDATE jobs SET log = '[]'");

    damage("UPDATE jobs SET id = -3");
    expect_corrupt(store.load_live_jobs().map(|_| ()), &["jobs.id", "'-3'"]);
}

on_both!(
    jobs_round_trip_with_and_without_optional_fields,
    putting_a_job_again_replaces_every_field,
    ids_past_sqlites_integer_range_are_refused,
    the_log_is_read_after_a_serial_and_limited,
    archiving_moves_a_finished_job_and_keeps_its_log,
    unfinished_jobs_are_not_archived_and_nothing_changes,
    an_archived_job_cannot_be_put_again,
    the_archive_refuses_its_ids_after_a_reopen_and_a_rolled_back_archive_refuses_nothing,
    inserting_takes_only_ids_never_stored,
    updating_changes_only_live_jobs_and_never_creates_one,
    the_largest_id_counts_the_archive_too,
    archived_jobs_are_listed_newest_first,
    live_jobs_are_listed_newest_first_by_stored_status,
    the_live_queue_is_reloaded_whole_for_unfinished_jobs_and_as_ends_for_the_rest,
    settings_are_upserted,
    jobs_logs_and_settings_are_there_after_reopening,
);
