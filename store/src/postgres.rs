//! The shared backend: a PostgreSQL database, for sites whose control plane
//! must outlive one host (spec section 13).
//!
//! Why it is shaped so:
//!
//! - **Synchronous outside, async inside.** [`Backend`] is called from the
//!   store thread only (`writer`). This backend owns a current-thread tokio
//!   runtime and drives tokio-postgres on it with `block_on`, so no SQL ever
//!   runs on an actix arbiter and the actors see the same interface as with
//!   SQLite. The connection task runs only inside those calls; nothing else
//!   needs it.
//! - **A group commit is one round trip.** `BEGIN`, every write of every
//!   batch and `COMMIT` are sent as one pipeline (tokio-postgres sends the
//!   requests it is given before reading any answer), and the node
//!   updates and history entries of consecutive writes go as arrays, one
//!   statement each for the whole run ([`runs`]). Checks that need a
//!   row count (the node is gone, the owner changed) are made inside the
//!   statements (`kiln_*` functions, see [`migrations`]), so a failed check
//!   aborts the transaction and the `COMMIT` becomes a rollback on the
//!   server. Only then is the group redone batch by batch, each under a
//!   savepoint, so that one bad batch fails alone, as on SQLite.
//! - **Fencing in the data.** A node row names its `owner` (this member)
//!   and `owner_epoch`. Every node and history write carries the owner and
//!   epoch this backend holds for the node and is refused with
//!   [`StoreError::Fenced`] when the row says otherwise, never a silent
//!   success. Until membership exists (issue #23's next slice), a backend
//!   claims every node when it opens, raising each node's epoch: a second
//!   process opened on the same database fences the first. Job rows name
//!   their `runner` the same way (no epoch: a job changes runner only from
//!   a member that is not alive, and member ids are not reused), so a
//!   member whose jobs another adopted cannot write them again.
//! - **The WAL flush runs beside the next group.** Once the store thread
//!   has taken a [`LogSync`](crate::LogSync) ([`sync`]), a group commits
//!   with `synchronous_commit` off and its callers are answered only after
//!   a session of its own has flushed the WAL past it: one flush covers
//!   every group applied meanwhile, as with SQLite's WAL.
//! - **A lost COMMIT is never guessed at.** When the connection fails while
//!   a group's answers are outstanding, whether the server committed is
//!   unknown: every batch of the group gets [`StoreError::OutcomeUnknown`],
//!   and the group is not retried. The next group reconnects.
//! - **Errors read as on SQLite.** Unique and foreign-key violations are
//!   recognised by SQLSTATE and constraint name and become the same
//!   [`StoreError::Conflict`] and [`StoreError::NotFound`] texts; anything
//!   else is [`StoreError::Database`] with its constraint kind.
//! - **Sessions are named and bounded**: `application_name` names kiln and
//!   the member, `idle_in_transaction_session_timeout` ends a transaction
//!   left open by a stalled member, `lock_timeout` bounds a wait on a row
//!   another session holds.
//! - The password of the URL never reaches a message ([`PgTarget`]).

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, Row, Statement};

use crate::error::Constraint;
use crate::sqlite::jobs::{integer, log_from_text, log_text};
use crate::timestamp::timestamp_text;
use crate::{
    Backend, Batch, EventRecord, HistoryEntry, JobEnd, JobId, JobLogEntry, JobRecord, JobStatus, LiveQueue, NodeId,
    NodeRecord, PortGroupRecord, PortRecord, Reservation, StoreError, Timestamp, Write,
};

pub mod events;
pub mod listener;
pub mod members;
pub mod migrations;
pub mod requests;
mod runs;
mod sync;
pub mod target;

pub use migrations::{MIGRATIONS, SCHEMA_VERSION};
pub use target::{PgTarget, StoreTarget, TargetError, Tls, mask_url};

/// The `meta` key of the next job id no member has been given
/// ([`Backend::job_id_block`]).
const JOB_ID_COUNTER: &str = "jobs.next_id";

/// The final job statuses, as stored.
fn finished_statuses() -> Vec<String> {
    JobStatus::ALL.iter().filter(|s| s.is_finished()).map(|s| s.as_str().to_string()).collect()
}

/// The node columns in the order [`node_from_row`] reads them.
macro_rules! node_select {
    () => {
        concat!("SELECT ", node_columns!(), " FROM nodes")
    };
}

/// The node columns [`node_from_row`] reads, in its order.
macro_rules! node_columns {
    () => {
        "uuid, name, driver, driver_info, properties,
         provision_state, target_provision_state, power_state, target_power_state,
         boot_device, maintenance, maintenance_reason, fault, last_error,
         reservation_purpose, reservation_since, created_at, updated_at,
         bmc_last_contact, bmc_unreachable_since, power_verified_at, bmc_profile,
         extra, instance_info, callback"
    };
}

/// How many columns [`node_columns!`] names: the index of a column a query
/// adds after them.
const NODE_COLUMNS: usize = 25;

/// How long a statement waits for a row lock another session holds.
const LOCK_TIMEOUT: &str = "10s";
/// How long a session may sit in an open transaction before the server
/// ends it (a member that stalled mid-commit holds no lock for longer).
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";

/// How to open a PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PgOptions {
    pub target: PgTarget,
    /// This member's name: the owner written into node rows, and part of
    /// the sessions' `application_name`.
    pub member: String,
    /// How long to keep trying while the server cannot be reached at start
    /// (refused, unreachable); a refusal by the server itself (password,
    /// database) is not retried.
    pub connect_for: Duration,
    /// The key a node is placed on the members' ring by ([`crate::ring`]):
    /// its BMC endpoint, so nodes behind one BMC stay on one member. The
    /// store cannot read driver settings itself; without a key, the uuid.
    pub ring_key: Option<fn(&NodeRecord) -> String>,
    /// This member's name, stable across its restarts (`member_name`): the
    /// `source` its events are stored with (the site has one stream, see
    /// [`events`]). `None`: the member id.
    pub name: Option<String>,
}

/// A kiln store in a PostgreSQL database.
pub struct PgBackend {
    /// Declared before the runtime: dropped (closing the session) first.
    client: Client,
    runtime: tokio::runtime::Runtime,
    options: PgOptions,
    statements: HashMap<&'static str, Statement>,
    /// The epoch this member holds for each node it owns.
    epochs: HashMap<NodeId, i64>,
    /// Told when a commit's outcome is unknown ([`PgBackend::on_lost_commit`]).
    on_lost: Option<LostCommit>,
    /// Whether groups commit without waiting for their WAL flush: a
    /// [`sync::PgSync`] was handed out ([`Backend::log_sync`]), which
    /// flushes it before any caller is answered.
    flush_beside: bool,
    /// A request found the session ended: open a new one before the next,
    /// even if the client has not noticed yet (its connection task runs
    /// only while this backend waits on its runtime).
    ended: bool,
}

/// What a backend tells when a commit's outcome is unknown.
pub type LostCommit = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

type Pipelined<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + 'a>>;

/// One statement of a write, with its parameters owned.
struct Op {
    sql: &'static str,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl PgBackend {
    /// Connects (retrying for `options.connect_for` while the server cannot
    /// be reached), brings the schema up to [`SCHEMA_VERSION`] and claims
    /// for this member the nodes no live member owns and the ring gives it
    /// ([`Backend::claim_orphans`]), and the jobs no live member runs
    /// ([`Backend::claim_orphan_jobs`]): a restarted member has its jobs
    /// back before its queue loads them.
    pub fn open(options: PgOptions) -> Result<PgBackend, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io { what: "cannot start the PostgreSQL runtime".into(), source })?;
        let client = runtime.block_on(connect(&options, true))?;
        let mut backend = PgBackend {
            client,
            runtime,
            options,
            statements: HashMap::new(),
            epochs: HashMap::new(),
            on_lost: None,
            flush_beside: false,
            ended: false,
        };
        backend.migrate()?;
        Backend::claim_orphans(&mut backend)?;
        backend.claim_orphan_jobs()?;
        Ok(backend)
    }

    /// Calls `f` with the cause when a commit's outcome is unknown (the
    /// connection was lost during COMMIT): a member fences itself then,
    /// rather than go on from a state it does not know.
    pub fn on_lost_commit(&mut self, f: LostCommit) {
        self.on_lost = Some(f);
    }

    /// The member name this backend writes as owner.
    pub fn member(&self) -> &str {
        &self.options.member
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        self.runtime.block_on(migrate(&mut self.client, &self.options.target))
    }

    fn reconnect_if_closed(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() || std::mem::take(&mut self.ended) {
            tracing::warn!(message = "The PostgreSQL session was lost; reconnecting.", target = %self.options.target);
            self.client = self.runtime.block_on(connect(&self.options, false))?;
            self.statements.clear();
        }
        Ok(())
    }

    /// Prepares (once per session) every statement of `ops`.
    fn prepare(&mut self, sqls: impl Iterator<Item = &'static str>) -> Result<(), StoreError> {
        for sql in sqls {
            if !self.statements.contains_key(sql) {
                let statement =
                    self.runtime.block_on(self.client.prepare(sql)).map_err(|e| db_error(&self.options.target, e))?;
                self.statements.insert(sql, statement);
            }
        }
        Ok(())
    }

    /// A read: prepares `sql` once and runs it.
    fn query(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        self.reconnect_if_closed()?;
        self.prepare(std::iter::once(sql))?;
        let statement = &self.statements[sql];
        self.runtime.block_on(self.client.query(statement, params)).map_err(|e| db_error(&self.options.target, e))
    }

    /// The statements of one write, or the error that refuses it before
    /// anything is sent (a log whose serials go back, an id out of range).
    fn ops(&mut self, write: &Write) -> Result<Vec<Op>, StoreError> {
        let me = self.options.member.clone();
        let op = |sql: &'static str, params: Vec<Box<dyn ToSql + Sync + Send>>| vec![Op { sql, params }];
        Ok(match write {
            Write::InsertNode(node) => {
                self.epochs.insert(node.uuid, 1);
                let mut params = node_params(node)?;
                params.push(Box::new(me));
                op(sql::INSERT_NODE, params)
            }
            Write::UpdateNode(node) => {
                let mut params = node_params(node)?;
                params.push(Box::new(me));
                params.push(Box::new(self.epoch(node.uuid)));
                op(sql::UPDATE_NODE, params)
            }
            Write::DeleteNode(id) => {
                op(sql::DELETE_NODE, vec![Box::new(id.to_string()), Box::new(me), Box::new(self.epoch(*id))])
            }
            Write::InsertPort(port) => op(sql::INSERT_PORT, port_params(port)),
            // Not fenced itself, as no port write is: the node actor sends
            // it in the batch of the node's own fenced UpdateNode, and a
            // fenced batch is rolled back whole.
            Write::InsertPortIfFree(port) => op(sql::INSERT_PORT_IF_FREE, port_params(port)),
            Write::DeletePort(address) => op(sql::DELETE_PORT, vec![Box::new(address.clone())]),
            Write::InsertPortGroup(g) => op(
                sql::INSERT_PORT_GROUP,
                vec![
                    Box::new(g.uuid.to_string()),
                    Box::new(g.name.clone()),
                    Box::new(g.node.to_string()),
                    Box::new(g.address.clone()),
                    Box::new(g.mode.as_str().to_string()),
                    Box::new(timestamp_text(g.created_at)),
                ],
            ),
            Write::DeletePortGroup(id) => op(sql::DELETE_PORT_GROUP, vec![Box::new(id.to_string())]),
            Write::SetPortGroup { address, group } => {
                op(sql::SET_PORT_GROUP, vec![Box::new(address.clone()), Box::new(group.map(|g| g.to_string()))])
            }
            Write::AppendHistory(e) => op(
                sql::APPEND_HISTORY,
                vec![
                    Box::new(e.node.to_string()),
                    Box::new(timestamp_text(e.at)),
                    Box::new(e.event.clone()),
                    Box::new(e.from_state.as_str().to_string()),
                    Box::new(e.to_state.as_str().to_string()),
                    Box::new(e.error.clone()),
                    Box::new(me),
                    Box::new(self.epoch(e.node)),
                ],
            ),
            Write::PutJob(job) => op(sql::PUT_JOB, job_params(job, me)?),
            Write::InsertJob(job) => op(sql::INSERT_JOB, job_params(job, me)?),
            Write::UpdateJob(job) => op(sql::UPDATE_JOB, job_params(job, me)?),
            Write::ArchiveJob(id) => {
                let finished = finished_statuses();
                match i64::try_from(id.0) {
                    Ok(key) => op(sql::ARCHIVE_JOB, vec![Box::new(key), Box::new(finished), Box::new(me)]),
                    Err(_) => return Err(StoreError::NotFound(format!("job {id} is not in the live queue"))),
                }
            }
            Write::SetMeta { key, value } => op(sql::SET_META, vec![Box::new(key.clone()), Box::new(value.clone())]),
            // The database gives the serial (`events`): the record's is not
            // sent.
            Write::AppendEvent(event) => {
                op(sql::APPEND_EVENT, vec![Box::new(event.body.clone()), Box::new(self.source())])
            }
            Write::ForgetEventsThrough(serial) => {
                op(sql::FORGET_EVENTS, vec![Box::new(i64::try_from(*serial).unwrap_or(i64::MAX))])
            }
        })
    }

    /// What begins a group's transaction: with a sync session beside it,
    /// one whose `COMMIT` does not wait for the WAL flush ([`sync`]).
    fn begin(&self) -> &'static str {
        if self.flush_beside { "BEGIN; SET LOCAL synchronous_commit = off" } else { "BEGIN" }
    }

    /// The member its events are stored as written by (`events.source`):
    /// its name.
    fn source(&self) -> String {
        self.options.name.clone().unwrap_or_else(|| self.options.member.clone())
    }

    /// The epoch this member holds for `node`; -1 (matching no row) for a
    /// node it does not own, so a write of it is fenced.
    fn epoch(&self, node: NodeId) -> i64 {
        self.epochs.get(&node).copied().unwrap_or(-1)
    }

    /// Sends `steps` as one pipeline and returns each one's answer, in order.
    fn pipeline(&self, steps: &[Step<'_>]) -> Vec<Result<u64, tokio_postgres::Error>> {
        let client = &self.client;
        let futures: Vec<Pipelined<'_>> = steps
            .iter()
            .map(|step| -> Pipelined<'_> {
                match step {
                    Step::Simple(sql) => Box::pin(async move { client.batch_execute(sql).await.map(|()| 0) }),
                    Step::Write(op) => {
                        let statement = &self.statements[op.sql];
                        let params: Vec<&(dyn ToSql + Sync)> =
                            op.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
                        Box::pin(async move { client.execute(statement, &params).await })
                    }
                }
            })
            .collect();
        // Polled in order, so that the requests go out in order (a
        // request is sent when its future is first polled), all before the
        // connection task writes them in one go.
        let mut futures = futures;
        let mut answers: Vec<Option<Result<u64, tokio_postgres::Error>>> = futures.iter().map(|_| None).collect();
        self.runtime.block_on(std::future::poll_fn(|cx| {
            let mut pending = false;
            for (future, answer) in futures.iter_mut().zip(answers.iter_mut()) {
                if answer.is_none() {
                    match future.as_mut().poll(cx) {
                        std::task::Poll::Ready(result) => *answer = Some(result),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
        }));
        answers.into_iter().map(|a| a.expect("every future finished")).collect()
    }
}

/// One statement of the fast path: a write's own, or a run of node writes
/// ([`runs`]).
enum Fast<'o> {
    Own(&'o Op),
    Run(Op),
}

impl Fast<'_> {
    fn op(&self) -> &Op {
        match self {
            Fast::Own(op) => op,
            Fast::Run(op) => op,
        }
    }
}

impl PgBackend {
    /// The fast path's statements for `batches` (every one planned): each
    /// write's own, but consecutive node updates and history entries as
    /// one run.
    fn fast_ops<'o>(
        &self,
        batches: &'o [Batch],
        planned: &'o [Result<Vec<Op>, StoreError>],
    ) -> Result<Vec<Fast<'o>>, StoreError> {
        let me = self.options.member.as_str();
        let mut fast = Vec::new();
        let mut run = runs::Run::default();
        // A run of events: one call of `kiln_append_events` for all of them.
        let mut events: Vec<Vec<u8>> = Vec::new();
        let flush_events = |events: &mut Vec<Vec<u8>>, fast: &mut Vec<Fast<'o>>| {
            if !events.is_empty() {
                let bodies = std::mem::take(events);
                fast.push(Fast::Run(Op {
                    sql: sql::APPEND_EVENTS,
                    params: vec![Box::new(bodies), Box::new(self.source())],
                }));
            }
        };
        for (batch, ops) in batches.iter().zip(planned.iter().flatten()) {
            // One op per write.
            for (write, op) in batch.iter().zip(ops) {
                match write {
                    Write::UpdateNode(node) => {
                        flush_events(&mut events, &mut fast);
                        run.update(node)
                    }
                    Write::AppendHistory(entry) => {
                        flush_events(&mut events, &mut fast);
                        run.append(entry)
                    }
                    Write::AppendEvent(event) => {
                        fast.extend(run.flush(me, |n| self.epoch(n))?.into_iter().map(Fast::Run));
                        events.push(event.body.clone());
                    }
                    _ => {
                        flush_events(&mut events, &mut fast);
                        fast.extend(run.flush(me, |n| self.epoch(n))?.into_iter().map(Fast::Run));
                        fast.push(Fast::Own(op));
                    }
                }
            }
        }
        flush_events(&mut events, &mut fast);
        fast.extend(run.flush(me, |n| self.epoch(n))?.into_iter().map(Fast::Run));
        Ok(fast)
    }
}

/// One request of a pipeline.
enum Step<'o> {
    Simple(&'static str),
    Write(&'o Op),
}

/// Opens a session: TLS as the URL's `sslmode` asks, named, with its
/// timeouts. At start (`retry`), a server that cannot be reached is tried
/// again until `connect_for` has passed.
async fn connect(options: &PgOptions, retry: bool) -> Result<Client, StoreError> {
    connect_hearing(options, retry, None).await
}

/// [`connect`], passing the session's notifications (`LISTEN`) to `notes`.
async fn connect_hearing(options: &PgOptions, retry: bool, notes: Option<Notes>) -> Result<Client, StoreError> {
    let target = &options.target;
    let mut config = target.config();
    // Always this member's: the janitor ends a dead member's sessions by it.
    config.application_name(application_name(&options.member));
    config.options(format!(
        "-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT} -c lock_timeout={LOCK_TIMEOUT}"
    ));
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let deadline = Instant::now() + options.connect_for;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let attempt = match target.tls() {
            Tls::Disable => match config.connect(tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(drive(connection, notes.clone()));
                    Ok(client)
                }
                Err(e) => Err(e),
            },
            Tls::Prefer | Tls::Require | Tls::VerifyFull => match config.connect(tls_connector(target)?).await {
                Ok((client, connection)) => {
                    tokio::spawn(drive(connection, notes.clone()));
                    Ok(client)
                }
                Err(e) => Err(e),
            },
        };
        match attempt {
            Ok(client) => return Ok(client),
            // The server answered and refused (password, database, role):
            // trying again will not help.
            Err(e) if e.as_db_error().is_some() => {
                return Err(StoreError::Connect(format!("{target}: {}", target.scrub(&error_text(&e)))));
            }
            Err(e) if retry && Instant::now() < deadline => {
                if attempts == 1 {
                    tracing::warn!(
                        message = "Cannot reach PostgreSQL; retrying.",
                        target = %target,
                        error = %target.scrub(&error_text(&e)),
                        for_s = options.connect_for.as_secs_f64(),
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                let waited = if retry {
                    format!(" (tried for {} s, {attempts} attempts)", options.connect_for.as_secs())
                } else {
                    String::new()
                };
                return Err(StoreError::Connect(format!("{target}: {}{waited}", target.scrub(&error_text(&e)))));
            }
        }
    }
}

/// Brings the schema up to [`SCHEMA_VERSION`], in one transaction under an
/// advisory lock, so that members starting together migrate once.
async fn migrate(client: &mut Client, target: &PgTarget) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(|e| db_error(target, e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&migrations::MIGRATION_LOCK])
        .await
        .map_err(|e| db_error(target, e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS kiln_schema (version bigint NOT NULL)")
        .await
        .map_err(|e| db_error(target, e))?;
    let row = tx.query_opt("SELECT version FROM kiln_schema", &[]).await.map_err(|e| db_error(target, e))?;
    let found: i64 = match row {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO kiln_schema (version) VALUES (0)", &[]).await.map_err(|e| db_error(target, e))?;
            0
        }
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew { found, supported: SCHEMA_VERSION });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.batch_execute(sql).await.map_err(|e| db_error(target, e))?;
        let next = version as i64 + 1;
        tx.execute("UPDATE kiln_schema SET version = $1", &[&next]).await.map_err(|e| db_error(target, e))?;
        tracing::info!(message = "Migrated the PostgreSQL store schema.", version = next);
    }
    tx.commit().await.map_err(|e| db_error(target, e))
}

/// The `application_name` of every session of a member: how the janitor
/// finds a dead member's sessions to end them.
fn application_name(member: &str) -> String {
    format!("kiln member {member}")
}

/// Where a session's notifications go.
type Notes = tokio::sync::mpsc::UnboundedSender<tokio_postgres::Notification>;

/// Runs a session's connection until it ends, passing its notifications
/// on when someone listens.
async fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>, notes: Option<Notes>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(note))) => {
                if let Some(notes) = &notes {
                    let _ = notes.send(note);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::warn!(message = "The PostgreSQL session ended.", error = %error_text(&error));
                return;
            }
            None => return,
        }
    }
}

/// TLS without certificate verification, as libpq's `sslmode=require`:
/// the session is encrypted; the server is not authenticated.
fn tls_connector(target: &PgTarget) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Connect(format!("cannot set up TLS: {e}")))?;
    let config = match (target.tls(), target.root_cert()) {
        (Tls::VerifyFull, Some(path)) => builder.with_root_certificates(root_store(path)?).with_no_client_auth(),
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The CA certificates of `sslrootcert` (PEM), for `verify-full`.
fn root_store(path: &std::path::Path) -> Result<rustls::RootCertStore, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let unreadable = |e: &dyn Display| StoreError::Connect(format!("sslrootcert {}: {e}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        roots.add(cert.map_err(|e| unreadable(&e))?).map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"holds no certificate"));
    }
    Ok(roots)
}

/// Accepts any server certificate (`sslmode=require`), still checking that
/// the handshake is signed by the key of the certificate shown.
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The driver's error with its cause (tokio-postgres puts the server's
/// message in the source).
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => crate::error::error_chain(e),
    }
}

/// A driver error as a [`StoreError`]: a lost or ended session is
/// [`StoreError::Connect`], anything the server said is
/// [`StoreError::Database`] with its constraint kind.
fn db_error(target: &PgTarget, e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(_) if ends_session(&e) => {
            StoreError::Connect(format!("{target}: the server ended the session ({})", target.scrub(&error_text(&e))))
        }
        Some(db) => {
            let code = db.code().code();
            let constraint = match code {
                "23505" => Some(Constraint::Unique),
                "23503" => Some(Constraint::ForeignKey),
                c if c.starts_with("23") || c == "KLPG0" => Some(Constraint::Other),
                _ => None,
            };
            StoreError::Database { message: target.scrub(db.message()), constraint }
        }
        None => StoreError::Connect(format!("{target}: {}", target.scrub(&error_text(&e)))),
    }
}

/// Whether `e` ended the session: the connection broke, or the server
/// ended it (SQLSTATE class 57: the janitor or an administrator terminated
/// it, or the server is shutting down). A write answered so may or may not
/// have run.
fn ends_session(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none_or(|db| db.code().code().starts_with("57"))
}

/// Whether `e` is the echo of an earlier failure in the same transaction
/// ("current transaction is aborted"), not a failure of its own.
fn is_echo(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| db.code().code() == "25P02")
}

/// What a failed write means to its caller, in the words SQLite's backend
/// uses for the same failure.
fn write_error(target: &PgTarget, write: &Write, e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        return db_error(target, e);
    };
    let code = db.code().code();
    let constraint = db.constraint().unwrap_or_default();
    let node_missing = |id: NodeId| StoreError::NotFound(format!("node {id} does not exist"));
    let fenced = |id: NodeId| {
        StoreError::Fenced(format!("node {id} is owned by another member or a later epoch; this write was refused"))
    };
    let job_fenced =
        |id: JobId| StoreError::Fenced(format!("job {id} is run by another member; this write was refused"));
    match (write, code) {
        (Write::InsertNode(n) | Write::UpdateNode(n), "23505") if constraint == "nodes_name_key" => {
            StoreError::Conflict(format!("node name '{}' is already in use", n.name))
        }
        (Write::InsertNode(n), "23505") if constraint == "nodes_pkey" => {
            StoreError::Conflict(format!("node uuid {} already exists", n.uuid))
        }
        (Write::UpdateNode(n), "KLNF0") => node_missing(n.uuid),
        (Write::UpdateNode(n), "KLFN0") => fenced(n.uuid),
        (Write::DeleteNode(id), "KLNF0") => node_missing(*id),
        (Write::DeleteNode(id), "KLFN0") => fenced(*id),
        (Write::AppendHistory(e), "KLNF0" | "23503") => node_missing(e.node),
        (Write::AppendHistory(e), "KLFN0") => fenced(e.node),
        (Write::InsertPort(port) | Write::InsertPortIfFree(port), "23503") => match port.portgroup {
            Some(group) => StoreError::NotFound(format!(
                "node {} or port group {group} of port '{}' does not exist",
                port.node, port.address
            )),
            None => node_missing(port.node),
        },
        (Write::InsertPort(port) | Write::InsertPortIfFree(port), "KLPG0") => other_nodes_group(&port.address),
        (Write::SetPortGroup { address, .. }, "KLPG0") => other_nodes_group(address),
        (Write::InsertPort(port), "23505") if constraint == "ports_address_key" => {
            StoreError::Conflict(format!("port address '{}' is already in use", port.address))
        }
        (Write::InsertPort(port) | Write::InsertPortIfFree(port), "23505") if constraint == "ports_pkey" => {
            StoreError::Conflict(format!("port uuid {} already exists", port.uuid))
        }
        (Write::DeletePort(address), "KLNF0") | (Write::SetPortGroup { address, .. }, "KLNF0") => {
            StoreError::NotFound(format!("no port has address '{address}'"))
        }
        (Write::InsertPortGroup(g), "23503") => node_missing(g.node),
        (Write::InsertPortGroup(g), "23505") => match constraint {
            "portgroups_name_key" => StoreError::Conflict(format!("port group name '{}' is already in use", g.name)),
            "portgroups_address_key" => StoreError::Conflict(format!(
                "port group address '{}' is already in use",
                g.address.as_deref().unwrap_or_default()
            )),
            _ => StoreError::Conflict(format!("port group uuid {} already exists", g.uuid)),
        },
        (Write::DeletePortGroup(id), "KLNF0") => StoreError::NotFound(format!("port group {id} does not exist")),
        (Write::SetPortGroup { group: Some(group), .. }, "23503") => {
            StoreError::NotFound(format!("port group {group} does not exist"))
        }
        (Write::PutJob(job) | Write::InsertJob(job), "KLAR0") => {
            StoreError::Conflict(format!("job {} is archived", job.id))
        }
        (Write::InsertJob(job), "23505") => StoreError::Conflict(format!("job {} exists already", job.id)),
        (Write::UpdateJob(job), "KLNF0") => StoreError::NotFound(format!("job {} is not in the live queue", job.id)),
        (Write::PutJob(job) | Write::UpdateJob(job), "KLFN0") => job_fenced(job.id),
        (Write::ArchiveJob(id), "KLFN0") => job_fenced(*id),
        (Write::ArchiveJob(id), "KLNF0") => StoreError::NotFound(format!("job {id} is not in the live queue")),
        (Write::ArchiveJob(id), "KLUF0") => {
            StoreError::Conflict(format!("job {id} is still {}; only finished jobs can be archived", db.message()))
        }
        (Write::ArchiveJob(id), "23505") => {
            StoreError::Corrupt(format!("job {id} is both in the live queue and the archive"))
        }
        (Write::AppendEvent(event), "23505") => StoreError::Conflict(format!("event serial {} is taken", event.serial)),
        _ => db_error(target, e),
    }
}

fn other_nodes_group(address: &str) -> StoreError {
    StoreError::Conflict(format!("port '{address}' cannot join a port group of another node"))
}

/// The parameters of both port inserts, in their column order.
fn port_params(port: &PortRecord) -> Vec<Box<dyn ToSql + Sync + Send>> {
    vec![
        Box::new(port.uuid.to_string()),
        Box::new(port.address.clone()),
        Box::new(port.node.to_string()),
        Box::new(port.portgroup.map(|g| g.to_string())),
        Box::new(timestamp_text(port.created_at)),
    ]
}

/// The index of `maintenance` in [`node_texts`] (the one column that is
/// not text).
const NODE_MAINTENANCE: usize = 10;

/// A node's columns in [`node_columns!`]'s order, as text (`maintenance`,
/// at [`NODE_MAINTENANCE`], as `true` or `false`): what both the single
/// statements ([`node_params`]) and the arrays of a run ([`runs`]) bind.
fn node_texts(n: &NodeRecord) -> Result<Vec<Option<String>>, StoreError> {
    Ok(vec![
        Some(n.uuid.to_string()),
        Some(n.name.clone()),
        Some(n.driver.as_str().to_string()),
        Some(crate::json_text(&n.driver_info)?),
        Some(crate::json_text(&n.properties)?),
        Some(n.provision_state.as_str().to_string()),
        n.target_provision_state.map(|s| s.as_str().to_string()),
        n.power_state.map(|s| s.as_str().to_string()),
        n.target_power_state.map(|s| s.as_str().to_string()),
        n.boot_device.map(|d| d.as_str().to_string()),
        Some(n.maintenance.to_string()),
        n.maintenance_reason.clone(),
        n.fault.clone(),
        n.last_error.clone(),
        n.reservation.as_ref().map(|r| r.purpose.clone()),
        n.reservation.as_ref().map(|r| timestamp_text(r.since)),
        Some(timestamp_text(n.created_at)),
        Some(timestamp_text(n.updated_at)),
        n.bmc_last_contact.map(timestamp_text),
        n.bmc_unreachable_since.map(timestamp_text),
        n.power_verified_at.map(timestamp_text),
        crate::json_opt(n.bmc_profile.as_ref())?,
        Some(crate::json_text(&n.extra)?),
        Some(crate::json_text(&n.instance_info)?),
        crate::json_opt(n.callback.as_deref())?,
    ])
}

/// A node's columns as bound in `$1`-`$25` of both its insert and update
/// (the owner and epoch follow).
fn node_params(n: &NodeRecord) -> Result<Vec<Box<dyn ToSql + Sync + Send>>, StoreError> {
    Ok(node_texts(n)?
        .into_iter()
        .enumerate()
        .map(|(i, value)| -> Box<dyn ToSql + Sync + Send> {
            if i == NODE_MAINTENANCE { Box::new(value.as_deref() == Some("true")) } else { Box::new(value) }
        })
        .collect())
}

/// A job's columns as bound in `$1`-`$8` of its insert, put and update,
/// and its runner (this member) in `$9`.
fn job_params(job: &JobRecord, runner: String) -> Result<Vec<Box<dyn ToSql + Sync + Send>>, StoreError> {
    let log = log_text(job)?;
    Ok(vec![
        Box::new(integer("job id", job.id.0)?),
        Box::new(job.priority),
        Box::new(job.status.as_str().to_string()),
        Box::new(timestamp_text(job.submitted_at)),
        Box::new(job.started_at.map(timestamp_text)),
        Box::new(job.ended_at.map(timestamp_text)),
        Box::new(job.body.clone()),
        Box::new(log),
        Box::new(runner),
    ])
}

/// The statements, numbered as [`node_params`] and [`job_params`] bind them.
mod sql {
    pub const INSERT_NODE: &str = "INSERT INTO nodes (
             uuid, name, driver, driver_info, properties,
             provision_state, target_provision_state, power_state, target_power_state,
             boot_device, maintenance, maintenance_reason, fault, last_error,
             reservation_purpose, reservation_since, created_at, updated_at,
             bmc_last_contact, bmc_unreachable_since, power_verified_at, bmc_profile, extra, instance_info,
             callback, owner, owner_epoch
         ) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
                   $22, $23, $24, $25, $26, 1)";
    pub const UPDATE_NODE: &str = "WITH u AS (
             UPDATE nodes SET
                 name = $2, driver = $3, driver_info = $4, properties = $5,
                 provision_state = $6, target_provision_state = $7,
                 power_state = $8, target_power_state = $9, boot_device = $10,
                 maintenance = $11, maintenance_reason = $12, fault = $13, last_error = $14,
                 reservation_purpose = $15, reservation_since = $16,
                 created_at = $17, updated_at = $18,
                 bmc_last_contact = $19, bmc_unreachable_since = $20, power_verified_at = $21,
                 bmc_profile = $22, extra = $23, instance_info = $24, callback = $25
             WHERE uuid = $1 AND owner = $26 AND owner_epoch = $27
             RETURNING 1)
         SELECT kiln_node_written((SELECT count(*) FROM u), $1)";
    pub const DELETE_NODE: &str = "WITH d AS (
             DELETE FROM nodes WHERE uuid = $1 AND owner = $2 AND owner_epoch = $3 RETURNING 1)
         SELECT kiln_node_written((SELECT count(*) FROM d), $1)";
    pub const INSERT_PORT: &str =
        "INSERT INTO ports (uuid, address, node, portgroup, created_at) VALUES ($1, $2, $3, $4, $5)";
    /// Only the address's uniqueness is let go (`ports_address_key`): a
    /// taken uuid, a missing node and another node's group still fail.
    pub const INSERT_PORT_IF_FREE: &str = "INSERT INTO ports (uuid, address, node, portgroup, created_at) \
        VALUES ($1, $2, $3, $4, $5) ON CONFLICT (address) DO NOTHING";
    pub const DELETE_PORT: &str =
        "WITH d AS (DELETE FROM ports WHERE address = $1 RETURNING 1) SELECT kiln_expect((SELECT count(*) FROM d))";
    pub const INSERT_PORT_GROUP: &str =
        "INSERT INTO portgroups (uuid, name, node, address, mode, created_at) VALUES ($1, $2, $3, $4, $5, $6)";
    pub const DELETE_PORT_GROUP: &str =
        "WITH d AS (DELETE FROM portgroups WHERE uuid = $1 RETURNING 1) SELECT kiln_expect((SELECT count(*) FROM d))";
    pub const SET_PORT_GROUP: &str = "WITH u AS (UPDATE ports SET portgroup = $2 WHERE address = $1 RETURNING 1)
         SELECT kiln_expect((SELECT count(*) FROM u))";
    pub const APPEND_HISTORY: &str = "WITH i AS (
             INSERT INTO node_history (node, at, event, from_state, to_state, error)
             SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text
             WHERE EXISTS (SELECT 1 FROM nodes WHERE uuid = $1::text AND owner = $7 AND owner_epoch = $8)
             RETURNING 1)
         SELECT kiln_node_written((SELECT count(*) FROM i), $1::text)";
    // A job write names its runner in `$9`: an insert writes it, a change
    // of a live row is refused (`kiln_job_written`) when the row names
    // another.
    pub const PUT_JOB: &str = "WITH p AS (
             INSERT INTO jobs (id, priority, status, submitted_at, started_at, ended_at, body, log, runner)
             SELECT $1::bigint, $2::integer, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::text
             WHERE kiln_not_archived($1::bigint)
             ON CONFLICT (id) DO UPDATE SET priority = excluded.priority, status = excluded.status,
                 submitted_at = excluded.submitted_at, started_at = excluded.started_at,
                 ended_at = excluded.ended_at, body = excluded.body, log = excluded.log
             WHERE jobs.runner = excluded.runner
             RETURNING 1)
         SELECT kiln_job_written((SELECT count(*) FROM p), $1::bigint)";
    pub const INSERT_JOB: &str =
        "INSERT INTO jobs (id, priority, status, submitted_at, started_at, ended_at, body, log, runner)
         SELECT $1::bigint, $2::integer, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::text
         WHERE kiln_not_archived($1::bigint)";
    pub const UPDATE_JOB: &str = "WITH u AS (
             UPDATE jobs SET priority = $2, status = $3, submitted_at = $4, started_at = $5, ended_at = $6,
                             body = $7, log = $8
             WHERE id = $1 AND runner = $9 RETURNING 1)
         SELECT kiln_job_written((SELECT count(*) FROM u), $1)";
    pub const ARCHIVE_JOB: &str = "WITH moved AS (
             DELETE FROM jobs WHERE id = $1 AND status = ANY($2) AND runner = $3 RETURNING *),
         kept AS (
             INSERT INTO jobs_archive (id, priority, status, submitted_at, started_at, ended_at, body, log, runner)
             SELECT id, priority, status, submitted_at, started_at, ended_at, body, log, runner FROM moved
             RETURNING 1)
         SELECT kiln_job_archived((SELECT count(*) FROM kept), $1, $3)";
    /// Hands out a block of `$2` job ids (its first is returned): a counter
    /// in `meta` (`$1`), never below every stored id, advanced under the
    /// row's lock, so two members never get the same id.
    pub const JOB_ID_BLOCK: &str = "INSERT INTO meta AS m (key, value)
         VALUES ($1, ((SELECT greatest(coalesce((SELECT max(id) FROM jobs), 0),
                                       coalesce((SELECT max(id) FROM jobs_archive), 0))) + 1 + $2)::text)
         ON CONFLICT (key) DO UPDATE SET value = (greatest(m.value::bigint, excluded.value::bigint - $2) + $2)::text
         RETURNING m.value::bigint - $2";
    /// Takes the live jobs whose runner is not a live member (nor this
    /// one), the finished ones too (this member archives them), and
    /// returns the unfinished ones (`$2`: the final statuses) whole.
    pub const CLAIM_JOBS: &str = "WITH taken AS (
             UPDATE jobs SET runner = $1
             WHERE runner <> $1 AND runner NOT IN (SELECT id FROM members WHERE state = 'alive')
             RETURNING id, priority, status, submitted_at, started_at, ended_at, body, log)
         SELECT * FROM taken WHERE NOT status = ANY($2) ORDER BY id";
    pub const SET_META: &str =
        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value";
    /// Appends an event after every committed one, under the events lock
    /// (`postgres::events`), and wakes every member's bus.
    pub const APPEND_EVENT: &str = "SELECT kiln_append_event($1, $2)";
    /// A run of events in one call (the fast path).
    pub const APPEND_EVENTS: &str = "SELECT kiln_append_events($1, $2)";
    /// Every member's events up to a serial: the site has one stream.
    pub const FORGET_EVENTS: &str = "DELETE FROM events WHERE serial <= $1";
}

/// The job columns of `$table` in the order [`job_from_row`] reads them.
macro_rules! job_select {
    ($table:literal) => {
        concat!("SELECT id, priority, status, submitted_at, started_at, ended_at, body, log FROM ", $table)
    };
}

impl Backend for PgBackend {
    fn commit(&mut self, batches: &[Batch]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.reconnect_if_closed()?;
        // Each batch's statements, or the error that refuses it unsent.
        let mut planned: Vec<Result<Vec<Op>, StoreError>> = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut ops = Vec::new();
            let built = batch.iter().try_for_each(|write| {
                ops.extend(self.ops(write)?);
                Ok::<(), StoreError>(())
            });
            planned.push(built.map(|()| ops));
        }
        self.prepare(planned.iter().flatten().flatten().map(|op| op.sql))?;

        // Fast path: the whole group in one pipeline, its node updates and
        // history entries as arrays (`runs`).
        if planned.iter().all(Result::is_ok) {
            let fast = self.fast_ops(batches, &planned)?;
            self.prepare(fast.iter().filter_map(|f| match f {
                Fast::Run(op) => Some(op.sql),
                Fast::Own(_) => None,
            }))?;
            let mut steps = vec![Step::Simple(self.begin())];
            steps.extend(fast.iter().map(|f| Step::Write(f.op())));
            steps.push(Step::Simple("COMMIT"));
            let mut writes = self.pipeline(&steps);
            let commit = writes.pop().unwrap_or(Ok(0));
            if let Some(Err(e)) = writes.first().filter(|begun| begun.as_ref().is_err_and(ends_session)) {
                // Ended before BEGIN was answered: nothing of the group ran.
                self.ended = true;
                return Err(StoreError::Connect(format!(
                    "{}: the session ended before the group began ({}); nothing of it was written",
                    self.options.target,
                    self.options.target.scrub(&error_text(e))
                )));
            }
            let writes_ok = writes.iter().all(Result::is_ok);
            match commit {
                Err(e) if ends_session(&e) => return Err(self.lost(&e)),
                Err(e) if writes_ok => return Err(db_error(&self.options.target, e)),
                Ok(_) if writes_ok => return Ok(batches.iter().map(|_| Ok(())).collect()),
                // A write failed: the server rolled the group back.
                _ => {
                    if let Some(lost) = writes.iter().filter_map(|a| a.as_ref().err()).find(|e| ends_session(e)) {
                        return Err(self.lost(lost));
                    }
                }
            }
        }

        // Batch by batch, each under a savepoint.
        let answers = self.pipeline(&[Step::Simple(self.begin())]);
        if let Some(Err(e)) = answers.into_iter().next() {
            return Err(db_error(&self.options.target, e));
        }
        let mut results = Vec::with_capacity(batches.len());
        for (batch, ops) in batches.iter().zip(planned) {
            let ops = match ops {
                Ok(ops) => ops,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let mut steps = vec![Step::Simple("SAVEPOINT b")];
            steps.extend(ops.iter().map(Step::Write));
            let mut answers = self.pipeline(&steps).into_iter();
            if let Some(Err(e)) = answers.next() {
                return Err(db_error(&self.options.target, e));
            }
            // Which write each op belongs to: one op per write.
            let failed = batch.iter().zip(answers).find_map(|(write, a)| match a {
                Err(e) if !is_echo(&e) => Some((write, e)),
                _ => None,
            });
            match failed {
                None => {
                    self.simple("RELEASE b")?;
                    results.push(Ok(()));
                }
                Some((_, e)) if ends_session(&e) => return Err(self.lost(&e)),
                Some((write, e)) => {
                    self.simple("ROLLBACK TO b")?;
                    self.simple("RELEASE b")?;
                    results.push(Err(write_error(&self.options.target, write, e)));
                }
            }
        }
        let answers = self.pipeline(&[Step::Simple("COMMIT")]);
        match answers.into_iter().next() {
            Some(Err(e)) if ends_session(&e) => Err(self.lost(&e)),
            Some(Err(e)) => Err(db_error(&self.options.target, e)),
            _ => Ok(results),
        }
    }

    /// A session of its own that flushes the WAL beside the next group
    /// ([`sync`]); from then on groups commit without waiting for it.
    fn log_sync(&mut self) -> Option<Box<dyn crate::LogSync>> {
        let sync = sync::PgSync::open(&self.options, self.on_lost.clone())?;
        self.flush_beside = true;
        Some(Box::new(sync))
    }

    fn load_nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
        self.query(concat!(node_select!(), " ORDER BY name"), &[])?.iter().map(node_from_row).collect()
    }

    /// The nodes whose rows name this member as owner.
    fn load_owned_nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
        let me = self.options.member.clone();
        self.query(concat!(node_select!(), " WHERE owner = $1 ORDER BY name"), &[&me])?
            .iter()
            .map(node_from_row)
            .collect()
    }

    fn count_owned_nodes(&mut self) -> Result<usize, StoreError> {
        let me = self.options.member.clone();
        let rows = self.query("SELECT count(*) FROM nodes WHERE owner = $1", &[&me])?;
        let count: i64 = rows.first().map(|r| r.get(0)).unwrap_or(0);
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Takes for this member, each at a new epoch, the nodes whose owner is
    /// not a live member and that the ring over the live members (this one
    /// included) places here. A member still writing under an older epoch
    /// is refused from then on. The claim is conditional on the row, so two
    /// members that disagree on the ring for a moment never both take a
    /// node. Returns the nodes taken, as stored.
    fn claim_orphans(&mut self) -> Result<Vec<crate::Claimed>, StoreError> {
        let me = self.options.member.clone();
        // The owners that are not live members, found by a walk of the
        // owner index from one distinct owner to the next (a loose index
        // scan: a few probes per owner the site has ever had, not a scan of
        // every other member's nodes), so a site with no orphan pays a few
        // index probes per heartbeat.
        let gone: Vec<String> = self
            .query(
                "WITH RECURSIVE o(owner) AS ( \
                   (SELECT owner FROM nodes ORDER BY owner LIMIT 1) \
                   UNION ALL \
                   SELECT (SELECT n.owner FROM nodes n WHERE n.owner > o.owner ORDER BY n.owner LIMIT 1) \
                   FROM o WHERE o.owner IS NOT NULL) \
                 SELECT owner FROM o WHERE owner IS NOT NULL AND owner <> $1 \
                   AND owner NOT IN (SELECT id FROM members WHERE state = 'alive')",
                &[&me],
            )?
            .iter()
            .map(|row| Fields { row, table: "nodes", key: String::new() }.raw(0, "owner"))
            .collect::<Result<_, _>>()?;
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let live = crate::Shared::live_members(self)?;
        let ring = crate::ring::Ring::new(live, crate::ring::POINTS_PER_MEMBER);
        // With each orphan, whether its last owner stopped acting on it
        // for sure: it released it, or left the site cleanly.
        let orphans = self.query(
            concat!(
                "SELECT ",
                node_columns!(),
                ", owner = '' OR owner IN (SELECT id FROM members WHERE state = 'left') FROM nodes",
                " WHERE owner = ANY($2) AND owner <> $1 AND owner NOT IN (SELECT id FROM members WHERE state = 'alive')"
            ),
            &[&me, &gone],
        )?;
        let key = self.options.ring_key.unwrap_or(|node| node.uuid.to_string());
        let mut mine = Vec::new();
        let mut quiet = std::collections::HashSet::new();
        for row in &orphans {
            let node = node_from_row(row)?;
            if ring.owner(&key(&node)) == Some(me.as_str()) {
                let released: bool = Fields { row, table: "nodes", key: String::new() }.raw(NODE_COLUMNS, "owner")?;
                if released {
                    quiet.insert(node.uuid);
                }
                mine.push(node.uuid.to_string());
            }
        }
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.query(
            concat!(
                "UPDATE nodes SET owner = $1, owner_epoch = owner_epoch + 1 ",
                "WHERE uuid = ANY($2) AND owner <> $1 ",
                "AND owner NOT IN (SELECT id FROM members WHERE state = 'alive') RETURNING ",
                node_columns!(),
                ", owner_epoch"
            ),
            &[&me, &mine],
        )?;
        let mut taken = Vec::with_capacity(rows.len());
        for row in &rows {
            let epoch: i64 = Fields { row, table: "nodes", key: String::new() }.raw(NODE_COLUMNS, "owner_epoch")?;
            let node = node_from_row(row)?;
            self.epochs.insert(node.uuid, epoch);
            taken.push(crate::Claimed { from_dead_owner: !quiet.contains(&node.uuid), node });
        }
        if !taken.is_empty() {
            tracing::info!(message = "Claimed nodes no live member owned.", nodes = taken.len(), member = %me);
        }
        Ok(taken)
    }

    /// Every member the site remembers, alive first.
    fn members(&mut self) -> Result<Vec<members::MemberRow>, StoreError> {
        self.reconnect_if_closed()?;
        self.runtime.block_on(members::list(&self.client)).map_err(|e| db_error(&self.options.target, e))
    }

    fn shared(&mut self) -> Option<&mut dyn crate::Shared> {
        Some(self)
    }

    fn load_node(&mut self, id: NodeId) -> Result<Option<NodeRecord>, StoreError> {
        self.query(concat!(node_select!(), " WHERE uuid = $1"), &[&id.to_string()])?
            .first()
            .map(node_from_row)
            .transpose()
    }

    fn load_ports(&mut self, node: Option<NodeId>) -> Result<Vec<PortRecord>, StoreError> {
        let rows = match node {
            Some(node) => self.query(
                "SELECT uuid, address, node, portgroup, created_at FROM ports WHERE node = $1 ORDER BY address",
                &[&node.to_string()],
            )?,
            None => self.query("SELECT uuid, address, node, portgroup, created_at FROM ports ORDER BY address", &[])?,
        };
        rows.iter().map(port_from_row).collect()
    }

    fn load_port_groups(&mut self, node: Option<NodeId>) -> Result<Vec<PortGroupRecord>, StoreError> {
        let rows = match node {
            Some(node) => self.query(
                "SELECT uuid, name, node, address, mode, created_at FROM portgroups WHERE node = $1 ORDER BY name",
                &[&node.to_string()],
            )?,
            None => {
                self.query("SELECT uuid, name, node, address, mode, created_at FROM portgroups ORDER BY name", &[])?
            }
        };
        rows.iter().map(group_from_row).collect()
    }

    fn load_port_group(&mut self, name_or_uuid: &str) -> Result<Option<PortGroupRecord>, StoreError> {
        self.query(
            "SELECT uuid, name, node, address, mode, created_at FROM portgroups WHERE uuid = $1 OR name = $1",
            &[&name_or_uuid],
        )?
        .first()
        .map(group_from_row)
        .transpose()
    }

    fn load_history(&mut self, node: NodeId, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(
            "SELECT id, node, at, event, from_state, to_state, error FROM (
                 SELECT * FROM node_history WHERE node = $1 ORDER BY id DESC LIMIT $2
             ) last ORDER BY id",
            &[&node.to_string(), &limit],
        )?
        .iter()
        .map(history_from_row)
        .collect()
    }

    fn load_live_jobs(&mut self) -> Result<Vec<JobRecord>, StoreError> {
        self.query(concat!(job_select!("jobs"), " ORDER BY id"), &[])?.iter().map(|r| job_from_row(r, "jobs")).collect()
    }

    /// The unfinished jobs this member runs, whole, and every member's
    /// ended jobs as ends (a dependency may name any of them). Another
    /// member's unfinished jobs are its own business.
    fn load_live_queue(&mut self) -> Result<LiveQueue, StoreError> {
        let me = self.options.member.clone();
        let finished = finished_statuses();
        let mut queue = LiveQueue::default();
        for row in
            self.query("SELECT id, status, ended_at FROM jobs WHERE status = ANY($1) ORDER BY id", &[&finished])?
        {
            let mut f = Fields { row: &row, table: "jobs", key: String::new() };
            let id = JobId(f.unsigned(0, "id")?);
            f.key = format!(" of job {id}");
            let status: JobStatus = f.parsed(1, "status")?;
            queue.ended.push(JobEnd { id, status, ended_at: f.timestamp_opt(2, "ended_at")? });
        }
        let unfinished = self.query(
            concat!(job_select!("jobs"), " WHERE runner = $1 AND NOT status = ANY($2) ORDER BY id"),
            &[&me, &finished],
        )?;
        for row in &unfinished {
            queue.unfinished.push(job_from_row(row, "jobs")?);
        }
        Ok(queue)
    }

    fn claim_orphan_jobs(&mut self) -> Result<Vec<JobRecord>, StoreError> {
        let me = self.options.member.clone();
        let taken = self.query(sql::CLAIM_JOBS, &[&me, &finished_statuses()])?;
        let taken = taken.iter().map(|row| job_from_row(row, "jobs")).collect::<Result<Vec<_>, _>>()?;
        if !taken.is_empty() {
            tracing::info!(message = "Took over unfinished jobs no live member ran.", jobs = taken.len(), member = %me);
        }
        Ok(taken)
    }

    fn job_id_block(&mut self, size: u64) -> Result<Option<u64>, StoreError> {
        let size = i64::try_from(size)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| StoreError::Database { message: format!("a block of {size} job ids"), constraint: None })?;
        let rows = self.query(sql::JOB_ID_BLOCK, &[&JOB_ID_COUNTER, &size])?;
        let first: i64 = match rows.first() {
            Some(row) => Fields { row, table: "meta", key: format!(" of key '{JOB_ID_COUNTER}'") }.raw(0, "value")?,
            None => return Err(StoreError::Corrupt("the job id counter was not written".into())),
        };
        let first = u64::try_from(first)
            .ok()
            .filter(|f| *f > 0)
            .ok_or_else(|| StoreError::Corrupt(format!("meta.value of key '{JOB_ID_COUNTER}' gave {first}")))?;
        Ok(Some(first))
    }

    fn list_live_jobs(
        &mut self,
        status: Option<JobStatus>,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let before = before.map_or(i64::MAX, |id| i64::try_from(id.0).unwrap_or(i64::MAX));
        let status = status.map(|s| s.as_str().to_string());
        self.query(
            concat!(
                job_select!("jobs"),
                " WHERE id < $3 AND ($1::text IS NULL OR status = $1) ORDER BY id DESC LIMIT $2"
            ),
            &[&status, &limit, &before],
        )?
        .iter()
        .map(|r| job_from_row(r, "jobs"))
        .collect()
    }

    fn load_job(&mut self, id: JobId) -> Result<Option<(JobRecord, bool)>, StoreError> {
        let Ok(key) = i64::try_from(id.0) else {
            return Ok(None);
        };
        if let Some(row) = self.query(concat!(job_select!("jobs"), " WHERE id = $1"), &[&key])?.first() {
            return Ok(Some((job_from_row(row, "jobs")?, false)));
        }
        if let Some(row) = self.query(concat!(job_select!("jobs_archive"), " WHERE id = $1"), &[&key])?.first() {
            return Ok(Some((job_from_row(row, "jobs_archive")?, true)));
        }
        Ok(None)
    }

    fn load_job_log(&mut self, id: JobId, after_serial: u64, limit: usize) -> Result<Vec<JobLogEntry>, StoreError> {
        let Ok(key) = i64::try_from(id.0) else {
            return Ok(Vec::new());
        };
        for (table, sql) in [
            ("jobs", "SELECT log FROM jobs WHERE id = $1"),
            ("jobs_archive", "SELECT log FROM jobs_archive WHERE id = $1"),
        ] {
            if let Some(row) = self.query(sql, &[&key])?.first() {
                let f = Fields { row, table, key: format!(" of job {id}") };
                let text: String = f.raw(0, "log")?;
                let log = log_from_text(&text, id, table)?;
                return Ok(log.into_iter().filter(|e| e.serial > after_serial).take(limit).collect());
            }
        }
        Ok(Vec::new())
    }

    fn max_job_id(&mut self) -> Result<u64, StoreError> {
        let rows = self.query(
            "SELECT greatest(coalesce((SELECT max(id) FROM jobs), 0), coalesce((SELECT max(id) FROM jobs_archive), 0))",
            &[],
        )?;
        let max: i64 =
            rows.first().map_or(Ok(0), |r| Fields { row: r, table: "jobs", key: String::new() }.raw(0, "id"))?;
        u64::try_from(max).map_err(|_| StoreError::Corrupt(format!("the largest job id is {max}")))
    }

    fn load_meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        self.query("SELECT value FROM meta WHERE key = $1", &[&key])?
            .first()
            .map(|row| Fields { row, table: "meta", key: format!(" of key '{key}'") }.raw(0, "value"))
            .transpose()
    }

    fn list_archived_jobs(&mut self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(concat!(job_select!("jobs_archive"), " ORDER BY id DESC LIMIT $1"), &[&limit])?
            .iter()
            .map(|r| job_from_row(r, "jobs_archive"))
            .collect()
    }

    /// Nothing to do: PostgreSQL's own checkpointer and autovacuum keep the
    /// database.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Serials are site-wide, in commit order ([`events`]).
    fn assigns_event_serials(&mut self) -> bool {
        true
    }

    /// Every member's events: the site has one stream ([`events`]).
    fn load_events(&mut self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let (after, limit) = (i64::try_from(after).unwrap_or(i64::MAX), i64::try_from(limit).unwrap_or(i64::MAX));
        self.query("SELECT serial, body FROM events WHERE serial > $1 ORDER BY serial LIMIT $2", &[&after, &limit])?
            .iter()
            .map(|row| {
                let f = Fields { row, table: "events", key: String::new() };
                Ok(EventRecord { serial: f.unsigned(0, "serial")?, body: f.raw(1, "body")? })
            })
            .collect()
    }

    fn event_span(&mut self) -> Result<(u64, u64), StoreError> {
        let rows = self.query("SELECT max(serial), count(*) FROM events", &[])?;
        let Some(row) = rows.first() else {
            return Ok((0, 0));
        };
        let f = Fields { row, table: "events", key: String::new() };
        let (max, count): (Option<i64>, i64) = (f.raw(0, "serial")?, f.raw(1, "count")?);
        Ok((max.unwrap_or(0).max(0) as u64, count.max(0) as u64))
    }
}

impl PgBackend {
    fn simple(&self, sql: &'static str) -> Result<(), StoreError> {
        match self.pipeline(&[Step::Simple(sql)]).into_iter().next() {
            Some(Err(e)) if e.as_db_error().is_none() => Err(self.lost(&e)),
            Some(Err(e)) => Err(db_error(&self.options.target, e)),
            _ => Ok(()),
        }
    }

    /// The session was lost with a group's answers outstanding.
    fn lost(&self, e: &tokio_postgres::Error) -> StoreError {
        tracing::error!(
            message = "The PostgreSQL session was lost during a commit; its outcome is unknown and it is not retried.",
            target = %self.options.target,
            error = %self.options.target.scrub(&error_text(e)),
        );
        let cause = self.options.target.scrub(&error_text(e));
        if let Some(f) = &self.on_lost {
            f(&format!("the outcome of a commit is unknown (the connection was lost during COMMIT: {cause})"));
        }
        StoreError::OutcomeUnknown(cause)
    }
}

impl crate::Shared for PgBackend {
    fn find_nodes(&mut self, names: &[String]) -> Result<Vec<(NodeId, String)>, StoreError> {
        let names: Vec<String> = names.to_vec();
        let rows =
            self.query("SELECT uuid, name FROM nodes WHERE name = ANY($1) OR uuid = ANY($1) ORDER BY name", &[&names])?;
        rows.iter()
            .map(|row| {
                let f = Fields { row, table: "nodes", key: String::new() };
                Ok((f.parsed(0, "uuid")?, f.raw(1, "name")?))
            })
            .collect()
    }

    fn node_names(&mut self) -> Result<Vec<(NodeId, String)>, StoreError> {
        let rows = self.query("SELECT uuid, name FROM nodes", &[])?;
        rows.iter()
            .map(|row| {
                let f = Fields { row, table: "nodes", key: String::new() };
                Ok((f.parsed(0, "uuid")?, f.raw(1, "name")?))
            })
            .collect()
    }

    fn load_nodes_by_id(&mut self, ids: &[NodeId]) -> Result<Vec<NodeRecord>, StoreError> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        self.query(concat!(node_select!(), " WHERE uuid = ANY($1)"), &[&ids])?.iter().map(node_from_row).collect()
    }

    fn submit_node_requests(&mut self, asked: &[(NodeId, String)]) -> Result<Vec<(NodeId, i64)>, StoreError> {
        if asked.is_empty() {
            return Ok(Vec::new());
        }
        self.reconnect_if_closed()?;
        let me = self.options.member.clone();
        self.runtime.block_on(requests::submit(&self.client, asked, &me)).map_err(|e| db_error(&self.options.target, e))
    }

    fn take_node_requests(&mut self, limit: i64) -> Result<Vec<requests::NodeRequest>, StoreError> {
        self.reconnect_if_closed()?;
        let me = self.options.member.clone();
        self.runtime.block_on(requests::take(&self.client, &me, limit)).map_err(|e| db_error(&self.options.target, e))
    }

    fn answer_node_requests(&mut self, answers: &[(i64, String)]) -> Result<(), StoreError> {
        if answers.is_empty() {
            return Ok(());
        }
        self.reconnect_if_closed()?;
        self.runtime.block_on(requests::answer(&self.client, answers)).map_err(|e| db_error(&self.options.target, e))
    }

    fn collect_node_answers(&mut self, ids: &[i64]) -> Result<Vec<(i64, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.reconnect_if_closed()?;
        self.runtime.block_on(requests::collect(&self.client, ids)).map_err(|e| db_error(&self.options.target, e))
    }

    fn cancel_node_request(&mut self, id: i64) -> Result<bool, StoreError> {
        self.reconnect_if_closed()?;
        self.runtime.block_on(requests::cancel(&self.client, id)).map_err(|e| db_error(&self.options.target, e))
    }

    fn requeue_node_request(&mut self, id: i64) -> Result<(), StoreError> {
        self.reconnect_if_closed()?;
        self.runtime.block_on(requests::requeue(&self.client, id)).map_err(|e| db_error(&self.options.target, e))
    }

    fn release_nodes(&mut self, nodes: &[NodeId]) -> Result<Vec<NodeId>, StoreError> {
        let me = self.options.member.clone();
        let uuids: Vec<String> = nodes.iter().map(NodeId::to_string).collect();
        let epochs: Vec<i64> = nodes.iter().map(|n| self.epoch(*n)).collect();
        let rows = self.query(
            "UPDATE nodes n SET owner = '' FROM unnest($2::text[], $3::bigint[]) AS h(uuid, epoch)
             WHERE n.uuid = h.uuid AND n.owner = $1 AND n.owner_epoch = h.epoch RETURNING n.uuid",
            &[&me, &uuids, &epochs],
        )?;
        let mut released = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: NodeId = Fields { row, table: "nodes", key: String::new() }.parsed(0, "uuid")?;
            self.epochs.remove(&id);
            released.push(id);
        }
        Ok(released)
    }

    fn fail_running_requests(&mut self, nodes: &[NodeId], answer: &str) -> Result<u64, StoreError> {
        self.reconnect_if_closed()?;
        let nodes: Vec<String> = nodes.iter().map(NodeId::to_string).collect();
        self.runtime
            .block_on(requests::fail_running(&self.client, &nodes, answer))
            .map_err(|e| db_error(&self.options.target, e))
    }

    fn live_members(&mut self) -> Result<Vec<String>, StoreError> {
        let me = self.options.member.clone();
        let mut ids: Vec<String> =
            self.query("SELECT id FROM members WHERE state = 'alive'", &[])?.iter().map(|row| row.get(0)).collect();
        if !ids.contains(&me) {
            ids.push(me);
        }
        Ok(ids)
    }
}

// ----------------------------------------------------------------- reads --

/// Reads one row's columns by index, turning anything unreadable into
/// [`StoreError::Corrupt`] that names `table.column`, the value and the row
/// (as SQLite's backend does).
struct Fields<'r> {
    row: &'r Row,
    table: &'static str,
    key: String,
}

impl Fields<'_> {
    fn raw<'a, T: FromSql<'a>>(&'a self, index: usize, column: &str) -> Result<T, StoreError> {
        self.row.try_get(index).map_err(|e| {
            StoreError::Corrupt(format!("{}.{column}{} holds an unreadable value: {e}", self.table, self.key))
        })
    }

    fn parsed<T>(&self, index: usize, column: &str) -> Result<T, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let text: String = self.raw(index, column)?;
        text.parse().map_err(|e| self.corrupt(column, &text, e))
    }

    fn parsed_opt<T>(&self, index: usize, column: &str) -> Result<Option<T>, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let text: Option<String> = self.raw(index, column)?;
        text.map(|t| t.parse().map_err(|e| self.corrupt(column, &t, e))).transpose()
    }

    fn unsigned(&self, index: usize, column: &str) -> Result<u64, StoreError> {
        let value: i64 = self.raw(index, column)?;
        u64::try_from(value).map_err(|e| self.corrupt(column, &value.to_string(), e))
    }

    fn timestamp(&self, index: usize, column: &str) -> Result<Timestamp, StoreError> {
        let text: String = self.raw(index, column)?;
        self.timestamp_from(column, &text)
    }

    fn timestamp_opt(&self, index: usize, column: &str) -> Result<Option<Timestamp>, StoreError> {
        let text: Option<String> = self.raw(index, column)?;
        text.map(|t| self.timestamp_from(column, &t)).transpose()
    }

    fn timestamp_from(&self, column: &str, text: &str) -> Result<Timestamp, StoreError> {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| self.corrupt(column, text, e))
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

fn node_from_row(row: &Row) -> Result<NodeRecord, StoreError> {
    let mut f = Fields { row, table: "nodes", key: String::new() };
    let uuid: NodeId = f.parsed(0, "uuid")?;
    f.key = format!(" of node {uuid}");
    let purpose: Option<String> = f.raw(14, "reservation_purpose")?;
    let since: Option<String> = f.raw(15, "reservation_since")?;
    let reservation = match (purpose, since) {
        (Some(purpose), Some(since)) => {
            Some(Reservation { purpose, since: f.timestamp_from("reservation_since", &since)? })
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

fn port_from_row(row: &Row) -> Result<PortRecord, StoreError> {
    let mut f = Fields { row, table: "ports", key: String::new() };
    let uuid = f.parsed(0, "uuid")?;
    f.key = format!(" of port {uuid}");
    Ok(PortRecord {
        uuid,
        address: f.raw(1, "address")?,
        node: f.parsed(2, "node")?,
        portgroup: f.parsed_opt(3, "portgroup")?,
        created_at: f.timestamp(4, "created_at")?,
    })
}

fn group_from_row(row: &Row) -> Result<PortGroupRecord, StoreError> {
    let mut f = Fields { row, table: "portgroups", key: String::new() };
    let uuid = f.parsed(0, "uuid")?;
    f.key = format!(" of port group {uuid}");
    Ok(PortGroupRecord {
        uuid,
        name: f.raw(1, "name")?,
        node: f.parsed(2, "node")?,
        address: f.raw(3, "address")?,
        mode: f.parsed(4, "mode")?,
        created_at: f.timestamp(5, "created_at")?,
    })
}

fn history_from_row(row: &Row) -> Result<HistoryEntry, StoreError> {
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

fn job_from_row(row: &Row, table: &'static str) -> Result<JobRecord, StoreError> {
    let mut f = Fields { row, table, key: String::new() };
    let id = JobId(f.unsigned(0, "id")?);
    f.key = format!(" of job {id}");
    let log: String = f.raw(7, "log")?;
    Ok(JobRecord {
        id,
        priority: f.raw(1, "priority")?,
        status: f.parsed(2, "status")?,
        submitted_at: f.timestamp(3, "submitted_at")?,
        started_at: f.timestamp_opt(4, "started_at")?,
        ended_at: f.timestamp_opt(5, "ended_at")?,
        body: f.raw(6, "body")?,
        log: log_from_text(&log, id, table)?,
    })
}
