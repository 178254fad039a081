//! Jobs on a shared PostgreSQL store: each job row names the member that
//! runs it, a dead member's jobs are taken over and its later writes of
//! them are fenced, each member reloads only its own unfinished jobs, and
//! job ids come in blocks no two members share. SQLite keeps its one
//! process's serial ids.

use std::time::Duration;

use chrono::Utc;
use kiln_store::postgres::members::MemberState;
use kiln_store::*;

mod support;
use support::members::{commit_one, join, open, until};
use support::{Kind, Place};

/// A fresh database with the schema in place (members join after it).
fn fresh() -> Place {
    let place = Place::new(Kind::Postgres);
    drop(place.open_pg("schema").unwrap());
    place
}

/// A write by a member whose sessions the janitor ended: the first try
/// finds its session gone (nothing written), the next reconnects.
fn commit_again(store: &mut dyn Backend, batch: Batch) -> Result<(), StoreError> {
    match commit_one(store, batch.clone()) {
        Err(StoreError::Connect(_)) => commit_one(store, batch),
        other => other,
    }
}

fn job(id: u64, status: JobStatus) -> JobRecord {
    let at = Utc::now();
    JobRecord {
        id: JobId(id),
        priority: 0,
        status,
        submitted_at: at,
        started_at: (status != JobStatus::Queued).then_some(at),
        ended_at: status.is_finished().then_some(at),
        body: r#"{"ops":[{"op":"sleep","seconds":1}]}"#.into(),
        log: vec![JobLogEntry::info(JobId(id), 1, at, "submitted".into())],
    }
}

fn ids(jobs: &[JobRecord]) -> Vec<u64> {
    jobs.iter().map(|j| j.id.0).collect()
}

fn ended_ids(queue: &LiveQueue) -> Vec<u64> {
    queue.ended.iter().map(|e| e.id.0).collect()
}

#[test]
fn a_dead_members_jobs_are_taken_over_and_its_later_writes_are_fenced() {
    let place = fresh();
    let mut a = join(&place, "jobs-a", "a");
    let mut store_a = open(&place, "jobs-a");
    let jobs = [job(1, JobStatus::Queued), job(2, JobStatus::Running), job(3, JobStatus::Success)];
    commit_one(&mut store_a, jobs.iter().cloned().map(Write::InsertJob).collect()).unwrap();

    let _b = join(&place, "jobs-b", "b");
    let mut store_b = open(&place, "jobs-b");
    assert!(store_b.claim_orphan_jobs().unwrap().is_empty(), "nothing is taken from a live member");
    let mut not_yet = jobs[0].clone();
    not_yet.priority = 5;
    let err = commit_one(&mut store_b, vec![Write::UpdateJob(not_yet.clone())]).unwrap_err();
    assert!(matches!(&err, StoreError::Fenced(m) if m.contains("job 1 is run by another member")), "{err:?}");
    let err = commit_one(&mut store_b, vec![Write::ArchiveJob(JobId(3))]).unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");

    a.halt();
    let dead = until(Duration::from_secs(15), || {
        store_b.members().unwrap().iter().any(|m| m.id == "jobs-a" && m.state == MemberState::Dead)
    });
    assert!(dead, "the janitor did not declare a dead");
    let taken = store_b.claim_orphan_jobs().unwrap();
    assert_eq!(taken, jobs[..2], "the unfinished jobs are returned whole");
    assert!(store_b.claim_orphan_jobs().unwrap().is_empty(), "taken once");

    // Every write of a's is refused now, and changes nothing.
    let mut stale = jobs[1].clone();
    stale.status = JobStatus::Success;
    let err = commit_again(&mut store_a, vec![Write::UpdateJob(stale.clone())]).unwrap_err();
    assert!(matches!(&err, StoreError::Fenced(m) if m.contains("job 2 is run by another member")), "{err:?}");
    let err = commit_one(&mut store_a, vec![Write::PutJob(stale)]).unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
    let err = commit_one(&mut store_a, vec![Write::ArchiveJob(JobId(3))]).unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
    // A refused write in a group fails alone; the other batches commit.
    let results = store_a
        .commit(&[vec![Write::UpdateJob(jobs[0].clone())], vec![Write::InsertJob(job(4, JobStatus::Queued))]])
        .unwrap();
    assert!(matches!(results[0], Err(StoreError::Fenced(_))), "{results:?}");
    assert!(results[1].is_ok(), "{results:?}");
    assert_eq!(store_b.load_job(JobId(2)).unwrap().unwrap().0, jobs[1], "a's writes changed nothing");

    // Other failures keep their words.
    let err = commit_one(&mut store_a, vec![Write::UpdateJob(job(9, JobStatus::Queued))]).unwrap_err();
    assert!(matches!(&err, StoreError::NotFound(m) if m.contains("not in the live queue")), "{err:?}");
    let err = commit_one(&mut store_b, vec![Write::ArchiveJob(JobId(1))]).unwrap_err();
    assert!(matches!(&err, StoreError::Conflict(m) if m.contains("still queued")), "{err:?}");

    // b's writes go through: it runs them now.
    let mut ended = jobs[1].clone();
    ended.status = JobStatus::Error;
    ended.ended_at = Some(Utc::now());
    commit_one(&mut store_b, vec![Write::UpdateJob(ended.clone())]).unwrap();
    commit_one(&mut store_b, vec![Write::PutJob(not_yet.clone())]).unwrap();
    commit_one(&mut store_b, vec![Write::ArchiveJob(JobId(3))]).unwrap();
    assert_eq!(store_b.load_job(JobId(2)).unwrap(), Some((ended, false)));
    assert_eq!(store_b.load_job(JobId(1)).unwrap(), Some((not_yet, false)));
    assert!(store_b.load_job(JobId(3)).unwrap().unwrap().1, "archived");
}

#[test]
fn each_member_reloads_only_its_own_unfinished_jobs_and_every_ended_one() {
    let place = fresh();
    let _a = join(&place, "load-a", "a");
    let _b = join(&place, "load-b", "b");
    let mut store_a = open(&place, "load-a");
    let mut store_b = open(&place, "load-b");
    let a_jobs = [job(1, JobStatus::Queued), job(2, JobStatus::Success), job(5, JobStatus::Waiting)];
    let b_jobs = [job(3, JobStatus::Running), job(4, JobStatus::Error)];
    commit_one(&mut store_a, a_jobs.iter().cloned().map(Write::InsertJob).collect()).unwrap();
    commit_one(&mut store_b, b_jobs.iter().cloned().map(Write::InsertJob).collect()).unwrap();

    let queue_a = store_a.load_live_queue().unwrap();
    assert_eq!(ids(&queue_a.unfinished), [1, 5]);
    assert_eq!(ended_ids(&queue_a), [2, 4]);
    let queue_b = store_b.load_live_queue().unwrap();
    assert_eq!(queue_b.unfinished, b_jobs[..1]);
    assert_eq!(ended_ids(&queue_b), [2, 4]);
    // Reads of one job, a list or a log see every member's.
    assert_eq!(store_b.load_live_jobs().unwrap().len(), 5);
    assert_eq!(store_b.load_job(JobId(1)).unwrap().unwrap().0, a_jobs[0]);
}

#[test]
fn a_restarted_member_gets_its_jobs_back_when_it_opens() {
    let place = fresh();
    let mut first = join(&place, "run-1", "site-host:/var/lib/kiln");
    let mut store = open(&place, "run-1");
    commit_one(
        &mut store,
        vec![Write::InsertJob(job(1, JobStatus::Running)), Write::InsertJob(job(2, JobStatus::Queued))],
    )
    .unwrap();
    first.halt();
    drop(store);
    // The same name and host joins again: the earlier run is dead at once,
    // and opening the store takes its jobs.
    let _second = join(&place, "run-2", "site-host:/var/lib/kiln");
    let mut store = open(&place, "run-2");
    assert_eq!(ids(&store.load_live_queue().unwrap().unfinished), [1, 2]);
    let mut moved = job(2, JobStatus::Running);
    moved.priority = 3;
    commit_one(&mut store, vec![Write::UpdateJob(moved)]).unwrap();
}

#[test]
fn job_id_blocks_never_overlap_across_members_and_start_above_every_stored_id() {
    let place = fresh();
    let mut a = open(&place, "ids-a");
    commit_one(&mut a, vec![Write::PutJob(job(500, JobStatus::Success))]).unwrap();
    commit_one(&mut a, vec![Write::PutJob(job(700, JobStatus::Success)), Write::ArchiveJob(JobId(700))]).unwrap();
    let first = a.job_id_block(100).unwrap().unwrap();
    assert_eq!(first, 701, "above the archive too");
    assert_eq!(a.job_id_block(100).unwrap(), Some(801), "increasing for one member");

    // Two members asking at once, many times: no id is given twice.
    let asks: Vec<std::thread::JoinHandle<Vec<u64>>> = ["ids-b", "ids-c"]
        .into_iter()
        .map(|id| {
            let mut store = place.open_pg(id).unwrap();
            std::thread::spawn(move || (0..25).map(|_| store.job_id_block(1_000).unwrap().unwrap()).collect())
        })
        .collect();
    let mut blocks: Vec<(u64, u64)> = vec![(701, 100), (801, 100)];
    for ask in asks {
        let firsts = ask.join().unwrap();
        assert!(firsts.windows(2).all(|w| w[0] < w[1]), "increasing per member: {firsts:?}");
        blocks.extend(firsts.into_iter().map(|f| (f, 1_000)));
    }
    blocks.sort();
    for w in blocks.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "blocks overlap: {:?} and {:?}", w[0], w[1]);
    }

    // An id stored past the counter (written outside the blocks) is skipped.
    let top = blocks.last().map(|(f, n)| f + n).unwrap();
    commit_one(&mut a, vec![Write::PutJob(job(top + 5_000, JobStatus::Success))]).unwrap();
    assert_eq!(a.job_id_block(10).unwrap(), Some(top + 5_001));
    assert!(a.job_id_block(0).is_err(), "an empty block is refused");
}

#[test]
fn sqlite_is_owned_by_one_process_no_blocks_and_nobody_to_take_from() {
    let place = Place::new(Kind::Sqlite);
    let mut store = place.open();
    commit_one(&mut store, vec![Write::InsertJob(job(7, JobStatus::Running))]).unwrap();
    assert_eq!(store.job_id_block(100).unwrap(), None);
    assert!(store.claim_orphan_jobs().unwrap().is_empty());
    assert_eq!(store.max_job_id().unwrap(), 7);
    assert_eq!(ids(&store.load_live_queue().unwrap().unfinished), [7]);
}
