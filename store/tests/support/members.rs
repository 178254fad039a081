//! Members of one site in a store test: quick membership timing, and a
//! member's options, join and store, as `members.rs` and `member_jobs.rs`
//! use them.

use std::time::{Duration, Instant};

use kiln_store::postgres::members::{Identity, MemberSettings, Membership};
use kiln_store::postgres::{PgBackend, PgOptions};
use kiln_store::{Backend, Batch, StoreError};

use super::Place;

/// Quick timing: a member is dead after 4 s, fences itself after 2 s.
pub const FAST: MemberSettings =
    MemberSettings { heartbeat: Duration::from_millis(500), timeout: Duration::from_secs(4) };

/// Member `id`'s options on `place`'s database.
pub fn options(place: &Place, id: &str) -> PgOptions {
    PgOptions {
        target: place.target(),
        member: id.into(),
        connect_for: Duration::from_secs(5),
        ring_key: None,
        name: None,
    }
}

/// Member `id` (named `name`) joins the site on `place`.
pub fn join(place: &Place, id: &str, name: &str) -> Membership {
    let identity = Identity { name: name.into(), host: "test-host".into(), pid: std::process::id() };
    Membership::join(options(place, id), identity, FAST).unwrap()
}

/// Member `id`'s store on `place`.
pub fn open(place: &Place, id: &str) -> PgBackend {
    PgBackend::open(options(place, id)).unwrap()
}

/// Commits one batch: its own result, or the group's failure.
pub fn commit_one(store: &mut dyn Backend, batch: Batch) -> Result<(), StoreError> {
    store.commit(&[batch])?.pop().unwrap()
}

/// Waits (at most `limit`) until `done` holds; the membership thread and
/// the janitor act on their own schedule, so their effect is awaited.
pub fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}
