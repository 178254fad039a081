//! Membership: the processes that run one site on a shared database, each
//! alive only while it keeps renewing its row.
//!
//! Why it is shaped so:
//!
//! - **A heartbeat of its own.** Each member renews `members.heartbeat_at`
//!   every [`MemberSettings::heartbeat`] from a thread and a session of its
//!   own, so a long group commit on the store thread never delays it. The
//!   time written is the database's (`now()`): members' clocks never
//!   compare.
//! - **Dead is decided in one place.** A janitor (whichever member holds
//!   the advisory lock [`JANITOR_LOCK`] for one transaction) marks a member
//!   dead when its heartbeat is older than [`MemberSettings::timeout`] by
//!   the database's clock, and terminates that member's sessions, so a
//!   paused member that wakes up finds its connection gone. The marks are
//!   conditional and idempotent, because an advisory lock is not a fence.
//! - **A member fences itself first.** [`Membership::fenced`] says so once
//!   the heartbeat has not been renewed for `timeout - 2 x heartbeat` by the
//!   member's own monotonic clock, or once the row says it is no longer
//!   alive: before any other member can see it as dead, it stops writing.
//!   The node rows' owner and epoch (`postgres.rs`) are the fence that holds
//!   even when it does not.
//! - **A restart replaces its previous incarnation at once.** A member's
//!   name is stable across restarts (one per host and data directory, which
//!   the data-directory lock keeps to one process); joining marks an older
//!   live row of the same name and host dead, so a restarted member takes
//!   its nodes back without waiting out the timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::{PgOptions, connect, db_error, migrate};
use crate::StoreError;
use crate::ring::POINTS_PER_MEMBER;

/// The advisory lock key the janitor runs under ("kjan" in ASCII).
pub const JANITOR_LOCK: i64 = 0x6b6a_616e;

/// The meta key holding the ring's points per member, written by the first
/// member to join.
const RING_POINTS_KEY: &str = "ring.points_per_member";

/// The meta key holding the site's `member_timeout`, in milliseconds.
const TIMEOUT_KEY: &str = "members.timeout_ms";

/// How long a dead or departed member's row is kept (for `member list`)
/// once it owns no node.
const FORGET_AFTER: &str = "1 day";

/// Timing of membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberSettings {
    /// How often a member renews its heartbeat.
    pub heartbeat: Duration,
    /// A member silent this long (database time) is dead.
    pub timeout: Duration,
}

impl Default for MemberSettings {
    fn default() -> Self {
        MemberSettings { heartbeat: Duration::from_secs(2), timeout: Duration::from_secs(10) }
    }
}

impl MemberSettings {
    /// How long a member may go without renewing before it stops writing:
    /// two heartbeats short of the timeout, so it has stopped before the
    /// others may take its nodes.
    pub fn self_fence_after(&self) -> Duration {
        self.timeout.saturating_sub(self.heartbeat * 2)
    }
}

/// Who a member is, beyond its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Stable across restarts: one per host and data directory.
    pub name: String,
    pub host: String,
    pub pid: u32,
}

/// A member's state as its row says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Alive,
    /// Declared dead by the janitor or replaced by its next incarnation.
    Dead,
    /// Stopped cleanly.
    Left,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }

    fn parse(s: &str) -> Result<MemberState, StoreError> {
        match s {
            "alive" => Ok(MemberState::Alive),
            "dead" => Ok(MemberState::Dead),
            "left" => Ok(MemberState::Left),
            other => Err(StoreError::Corrupt(format!("members.state holds '{other}'"))),
        }
    }
}

/// One row of `members`, as `kiln member list` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberRow {
    pub id: String,
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub state: MemberState,
    /// Seconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_s: f64,
    /// Nodes whose rows name it as owner.
    pub nodes: u64,
}

/// This process's membership: its row, and the thread that keeps it alive.
pub struct Membership {
    id: String,
    settings: MemberSettings,
    shared: Arc<Shared>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the heartbeat thread tells the rest of the process.
struct Shared {
    /// When the last heartbeat that the database accepted was sent.
    renewed: Mutex<Instant>,
    /// Set once the row says this member is no longer alive.
    expelled: AtomicBool,
    /// Set by [`Membership::halt`]: the thread stops without leaving.
    halted: AtomicBool,
    /// Why this member stopped itself ([`Membership::expeller`]), if it did.
    expelled_why: Mutex<Option<String>>,
}

impl Membership {
    /// Joins the site as a new member: brings the schema up to date, checks
    /// the ring settings, marks an
    /// earlier incarnation of the same name and host dead, writes the row
    /// and starts heartbeating. `options.member` is the new member's id.
    pub fn join(options: PgOptions, identity: Identity, settings: MemberSettings) -> Result<Membership, StoreError> {
        if settings.heartbeat.is_zero() || settings.self_fence_after() <= settings.heartbeat {
            return Err(StoreError::Database {
                message: format!(
                    "member_timeout ({} s) must be more than three heartbeats ({} s each)",
                    settings.timeout.as_secs_f64(),
                    settings.heartbeat.as_secs_f64()
                ),
                constraint: None,
            });
        }
        let runtime = runtime()?;
        let mut client = runtime.block_on(connect(&options, true))?;
        runtime.block_on(migrate(&mut client, &options.target))?;
        let sent = Instant::now();
        runtime.block_on(enter(&mut client, &options, &identity, settings))?;
        let shared = Arc::new(Shared {
            renewed: Mutex::new(sent),
            expelled: AtomicBool::new(false),
            halted: AtomicBool::new(false),
            expelled_why: Mutex::new(None),
        });
        let (stop, stopped) = channel();
        let beat = Heartbeat { options: options.clone(), settings, shared: shared.clone(), client: Some(client) };
        let thread = std::thread::Builder::new()
            .name("kiln-heartbeat".into())
            .spawn(move || beat.run(runtime, stopped))
            .map_err(|source| StoreError::Io { what: "cannot start the heartbeat thread".into(), source })?;
        tracing::info!(message = "Joined the site.", member = %options.member, name = %identity.name);
        Ok(Membership { id: options.member, settings, shared, stop: Some(stop), thread: Some(thread) })
    }

    /// This member's id (new at every start).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn settings(&self) -> MemberSettings {
        self.settings
    }

    /// Why this member must stop writing, if it must: its heartbeat is
    /// overdue by its own clock, or the site has declared it dead.
    pub fn fenced(&self) -> Option<String> {
        fenced(&self.id, &self.shared, self.settings)
    }

    /// A way to fence this member from elsewhere, saying why: the store
    /// calls it when a commit's outcome is unknown (the connection was lost
    /// during COMMIT), since a member must not go on from a state it does
    /// not know.
    pub fn expeller(&self) -> Arc<dyn Fn(&str) + Send + Sync> {
        let shared = self.shared.clone();
        Arc::new(move |why: &str| {
            *shared.expelled_why.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.to_string());
            shared.expelled.store(true, Ordering::SeqCst);
        })
    }

    /// [`Membership::fenced`] as a check to make right before an action
    /// nothing else can fence (a BMC call): cheap, and current.
    pub fn fence(&self) -> Arc<dyn Fn() -> Option<String> + Send + Sync> {
        let (id, shared, settings) = (self.id.clone(), self.shared.clone(), self.settings);
        Arc::new(move || fenced(&id, &shared, settings))
    }

    /// Leaves the site cleanly: the row says `left`, and the thread stops.
    pub fn leave(mut self) {
        self.stop_thread();
    }

    /// Stops heartbeating without leaving, as a paused or killed process
    /// does: the site declares this member dead once its timeout has
    /// passed, and [`Membership::fenced`] says so here before that. For
    /// takeover drills and tests.
    pub fn halt(&mut self) {
        self.shared.halted.store(true, Ordering::SeqCst);
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn fenced(id: &str, shared: &Shared, settings: MemberSettings) -> Option<String> {
    if shared.expelled.load(Ordering::SeqCst) {
        let why = shared.expelled_why.lock().unwrap_or_else(|e| e.into_inner()).clone();
        return Some(why.unwrap_or_else(|| format!("member {id} was declared dead by the site")));
    }
    let since = shared.renewed.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
    let limit = settings.self_fence_after();
    (since > limit).then(|| {
        format!(
            "member {id} has not renewed its heartbeat for {:.1} s (it stops writing after {:.1} s)",
            since.as_secs_f64(),
            limit.as_secs_f64()
        )
    })
}

/// The heartbeat thread's state.
struct Heartbeat {
    options: PgOptions,
    settings: MemberSettings,
    shared: Arc<Shared>,
    client: Option<Client>,
}

impl Heartbeat {
    fn run(mut self, runtime: tokio::runtime::Runtime, stop: Receiver<()>) {
        // A stop (or the Membership dropped) ends the loop; a timeout is a tick.
        while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(self.settings.heartbeat) {
            if self.shared.expelled.load(Ordering::SeqCst) {
                continue;
            }
            if let Err(e) = runtime.block_on(self.tick()) {
                tracing::warn!(message = "A heartbeat failed.", member = %self.options.member, error = %e);
                self.client = None;
            }
        }
        if self.shared.halted.load(Ordering::SeqCst) {
            return;
        }
        if let Some(client) = self.client.as_ref() {
            let left = runtime.block_on(client.execute(
                "UPDATE members SET state = 'left' WHERE id = $1 AND state = 'alive'",
                &[&self.options.member],
            ));
            if let Err(e) = left {
                tracing::warn!(message = "Could not mark this member as left.", error = %db_error(&self.options.target, e));
            }
        }
    }

    /// One heartbeat, then the janitor's round if no other member holds it.
    async fn tick(&mut self) -> Result<(), StoreError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect(&self.options, false).await?);
        }
        let client = self.client.as_mut().expect("connected above");
        let target = &self.options.target;
        let sent = Instant::now();
        let renewed = client
            .execute(
                "UPDATE members SET heartbeat_at = now() WHERE id = $1 AND state = 'alive'",
                &[&self.options.member],
            )
            .await
            .map_err(|e| db_error(target, e))?;
        if renewed == 0 {
            self.shared.expelled.store(true, Ordering::SeqCst);
            tracing::error!(message = "This member was declared dead by the site; it stops writing.", member = %self.options.member);
            return Ok(());
        }
        *self.shared.renewed.lock().unwrap_or_else(|e| e.into_inner()) = sent;
        let dead = janitor(client, self.settings.timeout).await.map_err(|e| db_error(target, e))?;
        for id in dead {
            tracing::warn!(message = "A member stopped renewing its heartbeat: declared dead.", dead = %id, by = %self.options.member);
        }
        Ok(())
    }
}

/// Marks an earlier incarnation dead, checks the ring settings and writes
/// this member's row, in one transaction.
async fn enter(
    client: &mut Client,
    options: &PgOptions,
    identity: &Identity,
    settings: MemberSettings,
) -> Result<(), StoreError> {
    let target = &options.target;
    let tx = client.transaction().await.map_err(|e| db_error(target, e))?;
    let points = POINTS_PER_MEMBER.to_string();
    let stored = site_setting(&tx, target, RING_POINTS_KEY, &points, false).await?;
    if stored != points {
        return Err(StoreError::Database {
            message: format!(
                "the site's members place nodes with {stored} ring points each and this kiln with {points}: \
                 every member of a site must run the same ring settings"
            ),
            constraint: None,
        });
    }
    let taken = tx
        .query_opt(
            "SELECT host FROM members WHERE name = $1 AND host <> $2 AND state = 'alive' LIMIT 1",
            &[&identity.name, &identity.host],
        )
        .await
        .map_err(|e| db_error(target, e))?;
    if let Some(row) = taken {
        let host: String = row.get(0);
        return Err(StoreError::Conflict(format!(
            "a live member on host {host} already has the name '{}': every member of a site needs its own \
             (member_name)",
            identity.name
        )));
    }
    let earlier: Vec<String> = tx
        .query(
            "UPDATE members SET state = 'dead' WHERE name = $1 AND host = $2 AND state = 'alive' RETURNING id",
            &[&identity.name, &identity.host],
        )
        .await
        .map_err(|e| db_error(target, e))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    terminate(&tx, &earlier).await.map_err(|e| db_error(target, e))?;
    for id in &earlier {
        tracing::info!(message = "Replaced this member's earlier incarnation.", earlier = %id);
    }
    agree_on_timeout(&tx, target, settings.timeout).await?;
    tx.execute(
        "INSERT INTO members (id, name, host, pid, state) VALUES ($1, $2, $3, $4, 'alive')",
        &[&options.member, &identity.name, &identity.host, &i64::from(identity.pid)],
    )
    .await
    .map_err(|e| db_error(target, e))?;
    tx.commit().await.map_err(|e| db_error(target, e))
}

/// Every member of a site must use one `member_timeout`: the janitor
/// declares others dead by its own, and each member fences itself by its
/// own, so a member with a longer one could still act after the others
/// took its nodes. The first member to join (or the first after every
/// member has stopped) sets it; a member with another is refused.
async fn agree_on_timeout(
    tx: &tokio_postgres::Transaction<'_>,
    target: &super::PgTarget,
    timeout: Duration,
) -> Result<(), StoreError> {
    let mine = timeout.as_millis().to_string();
    let stored = site_setting(tx, target, TIMEOUT_KEY, &mine, true).await?;
    if stored != mine {
        let ms: f64 = stored.parse().unwrap_or(f64::NAN);
        return Err(StoreError::Database {
            message: format!(
                "the site's live members use member_timeout = {} s and this one {} s: every member of a site \
                 must use the same (to change it, stop every member, then start them with the new value)",
                ms / 1000.0,
                timeout.as_secs_f64()
            ),
            constraint: None,
        });
    }
    Ok(())
}

/// A setting every member of the site must share: `value` is stored under
/// `key` if the site has none yet (or, when `replaceable`, also while no
/// member is alive); returns the site's value, for the caller to compare.
async fn site_setting(
    tx: &tokio_postgres::Transaction<'_>,
    target: &super::PgTarget,
    key: &str,
    value: &str,
    replaceable: bool,
) -> Result<String, StoreError> {
    let write = if replaceable {
        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value
         WHERE NOT EXISTS (SELECT 1 FROM members WHERE state = 'alive')"
    } else {
        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
    };
    tx.execute(write, &[&key, &value]).await.map_err(|e| db_error(target, e))?;
    let row = tx.query_one("SELECT value FROM meta WHERE key = $1", &[&key]).await.map_err(|e| db_error(target, e))?;
    Ok(row.get(0))
}

/// One round of the janitor, if this member gets its lock: marks members
/// silent longer than `timeout` dead, ends their sessions, removes the
/// answers of requests whose caller is gone, and forgets old member rows
/// that own nothing. Returns the ids it marked.
async fn janitor(client: &mut Client, timeout: Duration) -> Result<Vec<String>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // A member cut off in the middle of this transaction would hold the lock
    // for as long as the server keeps its session open in the transaction:
    // 60 s by the session's setting, during which no janitor could declare
    // it dead. Here that is one member timeout, so the lock is free again
    // by the time the next janitor finds its heartbeat stale.
    let idle_limit = format!("{}ms", timeout.as_millis().max(1));
    let locked: bool = tx
        .query_one(
            "SELECT set_config('idle_in_transaction_session_timeout', $2, true), pg_try_advisory_xact_lock($1)",
            &[&JANITOR_LOCK, &idle_limit],
        )
        .await?
        .get(1);
    if !locked {
        return Ok(Vec::new());
    }
    let dead: Vec<String> = tx
        .query(
            "UPDATE members SET state = 'dead' \
             WHERE state = 'alive' AND heartbeat_at < now() - make_interval(secs => $1) RETURNING id",
            &[&timeout.as_secs_f64()],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    terminate(&tx, &dead).await?;
    // Answers no live member will collect: their caller died or left (a
    // restart is a new member), so nothing else would ever remove them.
    tx.execute(
        "DELETE FROM node_requests WHERE state = 'answered' \
         AND caller NOT IN (SELECT id FROM members WHERE state = 'alive')",
        &[],
    )
    .await?;
    tx.execute(
        &format!(
            "DELETE FROM members m WHERE state <> 'alive' AND heartbeat_at < now() - interval '{FORGET_AFTER}' \
             AND NOT EXISTS (SELECT 1 FROM nodes WHERE owner = m.id)"
        ),
        &[],
    )
    .await?;
    tx.commit().await?;
    Ok(dead)
}

/// Ends every database session of these members (their store, heartbeat
/// and listener sessions), so that a paused one cannot commit on waking.
async fn terminate(tx: &tokio_postgres::Transaction<'_>, ids: &[String]) -> Result<(), tokio_postgres::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = ids.iter().map(|id| super::application_name(id)).collect();
    tx.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ANY($1) AND pid <> pg_backend_pid()",
        &[&names],
    )
    .await?;
    Ok(())
}

/// Every member the site remembers, alive first, then by name.
pub(super) async fn list(client: &Client) -> Result<Vec<MemberRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT m.id, m.name, m.host, m.pid, m.state, \
                    extract(epoch FROM now() - m.heartbeat_at)::float8, \
                    (SELECT count(*) FROM nodes WHERE owner = m.id) \
             FROM members m ORDER BY m.state = 'alive' DESC, m.name, m.started_at",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let state: String = row.get(4);
            let pid: i64 = row.get(3);
            let nodes: i64 = row.get(6);
            Ok(MemberRow {
                id: row.get(0),
                name: row.get(1),
                host: row.get(2),
                pid: u32::try_from(pid).unwrap_or(0),
                state: MemberState::parse(&state).unwrap_or(MemberState::Dead),
                heartbeat_age_s: row.get(5),
                nodes: u64::try_from(nodes).unwrap_or(0),
            })
        })
        .collect()
}

fn runtime() -> Result<tokio::runtime::Runtime, StoreError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| StoreError::Io { what: "cannot start the membership runtime".into(), source })
}
