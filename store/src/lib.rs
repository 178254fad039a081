//! kiln-store: the durable store of a kiln site.
//!
//! The interface is deliberately narrow (ARCHITECTURE.md, "API boundaries"):
//! records go in as [`Write`]s applied atomically in a [`Batch`], records
//! come out through a few load calls. [`Backend`] is that interface; [`sqlite::SqliteBackend`] is the
//! embedded implementation, and a PostgreSQL backend can sit beside it without
//! touching the actors.
//!
//! One thread owns the backend ([`writer::StoreHandle`]): every write and read
//! goes through it, so no rusqlite call ever runs on an async arbiter, and
//! many concurrent requests share one commit (group commit).
//!
//! Two families of records share the file: nodes with their ports, port
//! groups and history ([`records`]), and the job queue's jobs, job logs and settings
//! ([`jobs`]).

pub mod backup;
pub mod error;
pub mod jobs;
pub mod json;
pub mod postgres;
pub mod private;
pub mod records;
pub mod ring;
pub mod sqlite;
pub mod stats;
mod syncer;
pub mod timestamp;
pub mod writer;

use std::sync::Arc;

pub use backup::{BackupInfo, backup_sqlite};
pub use error::{Constraint, StoreError};
pub use jobs::*;
pub use records::*;
pub use stats::StoreStats;
pub use writer::StoreHandle;

/// A value as both backends store a JSON column: its text. Maps of strings,
/// objects and profiles always serialise; the error is for form's sake.
pub(crate) fn json_text<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode a JSON column: {e}")))
}

/// An optional JSON column (a node's BMC profile, its awaited callback) as
/// both backends store it: JSON text, or NULL.
pub(crate) fn json_opt<T: serde::Serialize>(value: Option<&T>) -> Result<Option<String>, StoreError> {
    value.map(json_text).transpose()
}

/// One change to the store.
#[derive(Clone, Debug)]
pub enum Write {
    /// Insert a new node; fails with [`StoreError::Conflict`] when its uuid or
    /// name is taken.
    InsertNode(Arc<NodeRecord>),
    /// Replace an existing node's record (every field); fails with
    /// [`StoreError::NotFound`] when it does not exist, and with
    /// [`StoreError::Conflict`] when a rename collides. Shared: the node's
    /// actor keeps the same record to adopt once it is durable, so a
    /// transition copies it once, not twice.
    UpdateNode(Arc<NodeRecord>),
    /// Delete a node with its ports and history; NotFound if absent.
    DeleteNode(NodeId),
    /// Insert a port; Conflict when the MAC is taken, NotFound when its node
    /// (or its port group) does not exist, Conflict when its port group is
    /// another node's.
    InsertPort(PortRecord),
    /// Insert a port unless a port (of any node) has its MAC already, in
    /// which case nothing changes and nothing fails: what inspection
    /// writes for each NIC it found, so that inspecting again, or a MAC an
    /// operator gave another node, keeps the port there is. NotFound when
    /// its node does not exist, as [`Write::InsertPort`]; a taken uuid is
    /// still a Conflict.
    InsertPortIfFree(PortRecord),
    /// Delete a port by MAC address; NotFound if absent.
    DeletePort(String),
    /// Insert a port group (no members: [`Write::SetPortGroup`] adds them);
    /// Conflict when its name, uuid or address is taken, NotFound when its
    /// node does not exist.
    InsertPortGroup(PortGroupRecord),
    /// Delete a port group; its members stay, in no group. NotFound if absent.
    DeletePortGroup(PortGroupId),
    /// Put the port with this MAC address in a group, or in none. NotFound
    /// when the port or the group does not exist; Conflict, with nothing
    /// changed, when the group is another node's.
    SetPortGroup { address: String, group: Option<PortGroupId> },
    /// Append one line to a node's history.
    AppendHistory(HistoryEntry),
    /// Insert or replace a job in the live queue (by id), its log included.
    /// Fails with [`StoreError::Conflict`] when that id was archived (an
    /// archived job is never written again) or when the log's serials do
    /// not increase or name another job.
    PutJob(JobRecord),
    /// Insert a job that was never stored: [`Write::PutJob`] without the
    /// update it tries first, for submissions. Conflict when the id is live
    /// or archived, and for the same log rules.
    InsertJob(JobRecord),
    /// Replace a live job's row (every column, its log included), for a
    /// job already inserted. NotFound when no live job has its id, never
    /// inserted or archived since: unlike [`Write::PutJob`] it never
    /// creates a row, so a change of a job whose insert was refused
    /// changes nothing. The same log rules as `PutJob`.
    UpdateJob(JobRecord),
    /// Move a finished job from the live queue to the archive. NotFound when
    /// it is not live (never submitted, or archived already); Conflict, with
    /// nothing changed, when it is not finished.
    ArchiveJob(JobId),
    /// Set one of the job queue's site-wide settings (the drain flag).
    SetMeta { key: String, value: String },
    /// Append an event of the event stream; Conflict when its serial is
    /// taken. A backend that gives serials itself
    /// ([`Backend::assigns_event_serials`]) ignores the record's serial and
    /// gives the next one of the site, in commit order.
    AppendEvent(EventRecord),
    /// Forget the events with a serial at or below this one (the stream
    /// keeps a bounded history); on a shared store, every member's.
    ForgetEventsThrough(u64),
}

/// A log that makes commits durable when synced: for SQLite, the WAL file.
pub trait LogSync: Send + 'static {
    /// Flushes to stable storage everything written to the log before the
    /// call began.
    fn sync(&mut self) -> std::io::Result<()>;
}

impl LogSync for std::fs::File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
}

/// Writes applied all together or not at all.
pub type Batch = Vec<Write>;

/// What a store can do. Implementations are used from one thread at a time.
pub trait Backend: Send + 'static {
    /// Applies every batch in one transaction, each batch all-or-nothing
    /// within it (how is the backend's business: SQLite applies a group
    /// straight and redoes it batch by batch, each under a savepoint, only
    /// when a write fails). Returns one result per batch, in order: a batch
    /// that failed changed nothing, the others are committed.
    ///
    /// The transaction is durable on return, unless the backend gave out a
    /// [`LogSync`] ([`Backend::log_sync`]): then it is durable once a sync
    /// of that log, begun after this call returned, has succeeded.
    fn commit(&mut self, batches: &[Batch]) -> Result<Vec<Result<(), StoreError>>, StoreError>;
    /// The log whose sync makes every returned commit durable, when the
    /// backend leaves that sync to its caller. The store thread asks once,
    /// at start, and syncs it on a thread of its own, so the next group is
    /// applied while the last one is being flushed (see `writer`). `None`
    /// (the default): every commit is durable when it returns.
    fn log_sync(&mut self) -> Option<Box<dyn LogSync>> {
        None
    }
    /// Every node.
    fn load_nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError>;
    /// The nodes this process runs: on a store shared by several members,
    /// only the ones whose rows name it as owner. The default: every node.
    fn load_owned_nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
        self.load_nodes()
    }
    /// [`Backend::load_owned_nodes`], handed to `each` at most `batch` at a
    /// time as they are read, so that a start-up adopts the first while the
    /// rest are read; returns how many. The default reads them all first.
    fn stream_owned_nodes(&mut self, batch: usize, each: &mut dyn FnMut(Vec<NodeRecord>)) -> Result<usize, StoreError> {
        let all = self.load_owned_nodes()?;
        let count = all.len();
        let mut rest = all.into_iter();
        loop {
            let next: Vec<NodeRecord> = rest.by_ref().take(batch.max(1)).collect();
            if next.is_empty() {
                return Ok(count);
            }
            each(next);
        }
    }
    /// How many nodes [`Backend::load_owned_nodes`] would read.
    fn count_owned_nodes(&mut self) -> Result<usize, StoreError> {
        Ok(self.load_owned_nodes()?.len())
    }
    /// Takes for this process the nodes no live member owns that the ring
    /// places on it, and returns them as stored (`postgres::PgBackend::claim_orphans`).
    /// The default, for a store one process owns: nothing to take.
    fn claim_orphans(&mut self) -> Result<Vec<Claimed>, StoreError> {
        Ok(Vec::new())
    }
    /// The members of the site sharing this store; none for a store one
    /// process owns.
    fn members(&mut self) -> Result<Vec<postgres::members::MemberRow>, StoreError> {
        Ok(Vec::new())
    }
    /// The store's shared side, when several members share it.
    fn shared(&mut self) -> Option<&mut dyn Shared> {
        None
    }
    /// One node, by uuid.
    fn load_node(&mut self, id: NodeId) -> Result<Option<NodeRecord>, StoreError>;
    /// Every port, optionally only one node's, ordered by address.
    fn load_ports(&mut self, node: Option<NodeId>) -> Result<Vec<PortRecord>, StoreError>;
    /// Every port group, optionally only one node's, ordered by name.
    fn load_port_groups(&mut self, node: Option<NodeId>) -> Result<Vec<PortGroupRecord>, StoreError>;
    /// One port group, by name or uuid.
    fn load_port_group(&mut self, name_or_uuid: &str) -> Result<Option<PortGroupRecord>, StoreError>;
    /// The last `limit` history entries of a node, oldest first.
    fn load_history(&mut self, node: NodeId, limit: usize) -> Result<Vec<HistoryEntry>, StoreError>;
    /// Every job of the live queue, by id.
    fn load_live_jobs(&mut self) -> Result<Vec<JobRecord>, StoreError>;
    /// The live queue as the job queue reloads it at start. The default
    /// reads every job whole; a backend with many ended jobs reads only
    /// their ends. A store shared by several processes returns as
    /// unfinished only the jobs this process runs, and every ended job.
    fn load_live_queue(&mut self) -> Result<LiveQueue, StoreError> {
        let mut queue = LiveQueue::default();
        for job in self.load_live_jobs()? {
            if job.status.is_finished() {
                queue.ended.push(JobEnd { id: job.id, status: job.status, ended_at: job.ended_at });
            } else {
                queue.unfinished.push(job);
            }
        }
        Ok(queue)
    }
    /// Takes for this process every live job whose runner is no live
    /// member (its member died or left), in one conditional write, and
    /// returns the unfinished ones taken, by id: the caller applies the
    /// restart rule to them. The default, for a store one process owns:
    /// there is nobody to take from.
    fn claim_orphan_jobs(&mut self) -> Result<Vec<JobRecord>, StoreError> {
        Ok(Vec::new())
    }
    /// The first id of a fresh block of `size` job ids that no other
    /// process sharing the store will ever be given, above every stored
    /// id; `None` (the default) when one process owns the store and goes
    /// on from [`Backend::max_job_id`].
    fn job_id_block(&mut self, size: u64) -> Result<Option<u64>, StoreError> {
        let _ = size;
        Ok(None)
    }
    /// The `limit` most recently submitted live jobs (highest id first)
    /// with an id below `before` when it is given (the next page), only
    /// those stored with `status` when it is given.
    fn list_live_jobs(
        &mut self,
        status: Option<JobStatus>,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError>;
    /// One job, live or archived; the flag is true when it is archived.
    fn load_job(&mut self, id: JobId) -> Result<Option<(JobRecord, bool)>, StoreError>;
    /// At most `limit` lines of a job's log whose serial is above
    /// `after_serial`, serial ascending.
    fn load_job_log(&mut self, id: JobId, after_serial: u64, limit: usize) -> Result<Vec<JobLogEntry>, StoreError>;
    /// The largest job id ever stored, live or archived; 0 when there is none.
    /// The next job takes a higher one, so no id is ever reused.
    fn max_job_id(&mut self) -> Result<u64, StoreError>;
    /// A setting written by [`Write::SetMeta`], if it ever was.
    fn load_meta(&mut self, key: &str) -> Result<Option<String>, StoreError>;
    /// The `limit` most recently submitted archived jobs (highest id first).
    fn list_archived_jobs(&mut self, limit: usize) -> Result<Vec<JobRecord>, StoreError>;
    /// Housekeeping: a WAL checkpoint.
    fn checkpoint(&mut self) -> Result<(), StoreError>;
    /// At most `limit` events with a serial above `after`, serial ascending.
    /// The default: a backend that keeps no events.
    fn load_events(&mut self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let _ = (after, limit);
        Ok(Vec::new())
    }
    /// The highest event serial stored, and how many events are kept;
    /// (0, 0) when there is none.
    fn event_span(&mut self) -> Result<(u64, u64), StoreError> {
        Ok((0, 0))
    }
    /// Whether the store gives each appended event its serial (the next of
    /// the site's one stream, in commit order: several members share it,
    /// `postgres::events`) rather than storing the serial it is given.
    /// The default: the caller numbers events.
    fn assigns_event_serials(&mut self) -> bool {
        false
    }
}

/// A node a member has just claimed.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// The node as stored.
    pub node: NodeRecord,
    /// Its last owner died (rather than released it or left cleanly): a
    /// call it sent to the BMC may still land, so the new owner waits
    /// before its own.
    pub from_dead_owner: bool,
}

/// What only a store shared by several members does (PostgreSQL): find
/// nodes other members run, and pass node requests to their owners
/// (`postgres::requests`). Reached through [`Backend::shared`].
pub trait Shared {
    /// The nodes with these names or uuids, whoever runs them.
    fn find_nodes(&mut self, names: &[String]) -> Result<Vec<(NodeId, String)>, StoreError>;
    /// Every node's uuid and name, whoever runs it (a node list's
    /// snapshot: a few dozen bytes a node, not its whole record).
    fn node_names(&mut self) -> Result<Vec<(NodeId, String)>, StoreError>;
    /// The nodes with these uuids, as stored, in no particular order; a
    /// uuid no node has is left out (a node list's page).
    fn load_nodes_by_id(&mut self, ids: &[NodeId]) -> Result<Vec<NodeRecord>, StoreError>;
    /// Writes a request for each `(node, body)`, in one statement, and
    /// wakes their owners; returns each written request's node and id, in
    /// the order asked. A node that does not exist gets no request.
    fn submit_node_requests(&mut self, requests: &[(NodeId, String)]) -> Result<Vec<(NodeId, i64)>, StoreError>;
    /// Claims up to `limit` queued requests for this member's nodes.
    fn take_node_requests(&mut self, limit: i64) -> Result<Vec<postgres::requests::NodeRequest>, StoreError>;
    /// Writes the answers of claimed requests (`(id, answer)`), in one
    /// statement, and wakes their callers.
    fn answer_node_requests(&mut self, answers: &[(i64, String)]) -> Result<(), StoreError>;
    /// The answers there are of the requests `ids`, as `(id, answer)`, in
    /// one statement; the rows answered go with them.
    fn collect_node_answers(&mut self, ids: &[i64]) -> Result<Vec<(i64, String)>, StoreError>;
    /// Withdraws a request nobody has claimed; false when it runs already.
    fn cancel_node_request(&mut self, id: i64) -> Result<bool, StoreError>;
    /// Puts a claimed request back in the queue (its node is not run here
    /// any more, or not yet), for whoever runs the node to take.
    fn requeue_node_request(&mut self, id: i64) -> Result<(), StoreError>;
    /// Gives up these nodes (their actors have stopped): each row whose
    /// owner and epoch are still this member's gets no owner, for the
    /// member the ring names to claim. Returns the nodes released.
    fn release_nodes(&mut self, nodes: &[NodeId]) -> Result<Vec<NodeId>, StoreError>;
    /// Answers with `answer` every request that was running on one of
    /// `nodes` (claimed from a member that died); returns how many.
    fn fail_running_requests(&mut self, nodes: &[NodeId], answer: &str) -> Result<u64, StoreError>;
    /// The ids of the live members, this one among them.
    fn live_members(&mut self) -> Result<Vec<String>, StoreError>;
}

/// A boxed backend is a backend (so code written for `&mut dyn Backend`
/// takes a `Box<dyn Backend>` as it is).
impl<B: Backend + ?Sized> Backend for Box<B> {
    fn commit(&mut self, batches: &[Batch]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        (**self).commit(batches)
    }
    fn log_sync(&mut self) -> Option<Box<dyn LogSync>> {
        (**self).log_sync()
    }
    fn load_nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
        (**self).load_nodes()
    }
    fn load_owned_nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError> {
        (**self).load_owned_nodes()
    }
    fn stream_owned_nodes(&mut self, batch: usize, each: &mut dyn FnMut(Vec<NodeRecord>)) -> Result<usize, StoreError> {
        (**self).stream_owned_nodes(batch, each)
    }
    fn count_owned_nodes(&mut self) -> Result<usize, StoreError> {
        (**self).count_owned_nodes()
    }
    fn claim_orphans(&mut self) -> Result<Vec<Claimed>, StoreError> {
        (**self).claim_orphans()
    }
    fn members(&mut self) -> Result<Vec<postgres::members::MemberRow>, StoreError> {
        (**self).members()
    }
    fn shared(&mut self) -> Option<&mut dyn Shared> {
        (**self).shared()
    }
    fn load_node(&mut self, id: NodeId) -> Result<Option<NodeRecord>, StoreError> {
        (**self).load_node(id)
    }
    fn load_ports(&mut self, node: Option<NodeId>) -> Result<Vec<PortRecord>, StoreError> {
        (**self).load_ports(node)
    }
    fn load_port_groups(&mut self, node: Option<NodeId>) -> Result<Vec<PortGroupRecord>, StoreError> {
        (**self).load_port_groups(node)
    }
    fn load_port_group(&mut self, name_or_uuid: &str) -> Result<Option<PortGroupRecord>, StoreError> {
        (**self).load_port_group(name_or_uuid)
    }
    fn load_history(&mut self, node: NodeId, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        (**self).load_history(node, limit)
    }
    fn load_live_jobs(&mut self) -> Result<Vec<JobRecord>, StoreError> {
        (**self).load_live_jobs()
    }
    fn load_live_queue(&mut self) -> Result<LiveQueue, StoreError> {
        (**self).load_live_queue()
    }
    fn claim_orphan_jobs(&mut self) -> Result<Vec<JobRecord>, StoreError> {
        (**self).claim_orphan_jobs()
    }
    fn job_id_block(&mut self, size: u64) -> Result<Option<u64>, StoreError> {
        (**self).job_id_block(size)
    }
    fn list_live_jobs(
        &mut self,
        status: Option<JobStatus>,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        (**self).list_live_jobs(status, before, limit)
    }
    fn load_job(&mut self, id: JobId) -> Result<Option<(JobRecord, bool)>, StoreError> {
        (**self).load_job(id)
    }
    fn load_job_log(&mut self, id: JobId, after_serial: u64, limit: usize) -> Result<Vec<JobLogEntry>, StoreError> {
        (**self).load_job_log(id, after_serial, limit)
    }
    fn max_job_id(&mut self) -> Result<u64, StoreError> {
        (**self).max_job_id()
    }
    fn load_meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        (**self).load_meta(key)
    }
    fn list_archived_jobs(&mut self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        (**self).list_archived_jobs(limit)
    }
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        (**self).checkpoint()
    }
    fn load_events(&mut self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        (**self).load_events(after, limit)
    }
    fn event_span(&mut self) -> Result<(u64, u64), StoreError> {
        (**self).event_span()
    }
    fn assigns_event_serials(&mut self) -> bool {
        (**self).assigns_event_serials()
    }
}
