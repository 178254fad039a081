//! The admin protocol: the typed requests and responses that the `kiln` CLI
//! and the daemon exchange over the admin socket (framed by [`crate::codec`]).
//!
//! A connection starts with [`Request::Hello`] carrying
//! [`PROTOCOL_VERSION`]; the daemon answers [`Response::Hello`] or, on a
//! mismatch, an error naming both versions. Then each request gets one
//! response, except [`Request::Events`] with `follow`, which streams
//! [`Response::Event`]s until the client goes away, and a fanout request
//! ([`Request::Exec`], [`Request::Copy`]) asked to report [`Live`], which
//! streams its progress and ends with [`Response::Done`], and
//! [`Request::NodeListPages`], answered by [`Response::NodePage`]s, the
//! last one marked (or an error). A response longer
//! than a frame arrives as [`Response::Part`]s ([`crate::parts`]).

use kiln_store::{HistoryEntry, JobId, JobStatus, ProvisionState};
use serde::{Deserialize, Serialize};

use crate::KilnError;
use crate::events::NodeEvent;
use crate::jobs::{Dependency, JobChange, JobView, NewJob, Opcode, QueueInfo};
use crate::node::{NodeUpdate, NodeValidation, Op};
use crate::supervisor::{NewNode, NewPortGroup};
use crate::view::{NodeDetail, NodeResult, NodeView, PortGroupView, PortView, SiteStatus};

/// Bumped whenever a request or response changes shape.
///
/// 5: several jobs in one submission, job priority changes, job lists by
/// id, auto-archive on demand, job log levels, the queue limit; live
/// fanout output (`Live`, `ExecLines`, `ExecNode`); node detail (ports and
/// port groups in `node show`), port groups, `NodeValidate`.
/// 6: event replays (`Events { since }`); 7: 5's parts together.
/// 8: the `hold` opcode (`Opcode::Hold`).
/// 9: `wait` in node opcodes (`Opcode::Node`, honoured by the job queue) and
/// `fanout` in exec opcodes (`Opcode::Exec`: `None` takes `default_fanout`).
/// 10: one per-node result (`NodeResult`, its error a kind and a message)
/// in `Outcomes` and in job views, instead of `NodeOutcome`.
/// 11: members of a site on a shared store (`MemberList`, `Members`, and
/// `members` in `SiteStatus`); a node's BMC contact (`bmc_last_contact`,
/// `bmc_unreachable_since`, `power_verified_at` in `NodeRecord`); `bmc` and
/// `stale` in `NodeList`.
/// 12: the node list in pages (`NodeListPages`, `NodePage`).
/// 13: a node's BMC profile (`bmc_profile` in `NodeRecord`) and
/// `reset_bmc_profile` in `NodeUpdate`.
/// 14: a node's `extra` and `instance_info` (in `NodeRecord` and
/// `NodeUpdate`, each as JSON text); `name` and `driver` in `NodeUpdate`.
/// 15: a booted system's callback (`NodeCallback`, `Op::Callback`) and the
/// callback a node waits for (`callback` in `NodeRecord`).
pub const PROTOCOL_VERSION: u32 = 15;

/// A request to the daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Hello {
        version: u32,
        client: String,
    },
    Status,
    NodeCreate(NewNode),
    /// All or nothing.
    NodeImport(Vec<NewNode>),
    NodeList {
        nodes: Option<String>,
        state: Option<ProvisionState>,
        maintenance: Option<bool>,
        bmc: Option<crate::supervisor::BmcReach>,
        stale: Option<std::time::Duration>,
    },
    /// [`Request::NodeList`] answered page by page as the daemon produces
    /// the rows, in the same order: [`Response::NodePage`]s, the last one
    /// marked `last`, or an error (which ends the list).
    NodeListPages {
        nodes: Option<String>,
        state: Option<ProvisionState>,
        maintenance: Option<bool>,
        bmc: Option<crate::supervisor::BmcReach>,
        stale: Option<std::time::Duration>,
    },
    NodeShow {
        node: String,
    },
    NodeHistory {
        node: String,
        limit: u32,
    },
    NodeSet {
        node: String,
        update: NodeUpdate,
    },
    NodeDelete {
        nodes: String,
    },
    /// An exclusive operation over a node, a uuid or a node set, submitted
    /// as a job of one opcode: answered with the job's id.
    NodeOp {
        nodes: String,
        op: Op,
        wait: bool,
        fanout: Option<u32>,
        /// The job's priority (-20..19, lower first).
        priority: i32,
    },
    PowerStatus {
        nodes: String,
    },
    PortCreate {
        address: String,
        node: String,
    },
    PortList {
        node: Option<String>,
    },
    PortDelete {
        address: String,
    },
    /// The recent events (or, with `since`, the stored events after that
    /// serial); with `follow`, then every new one. Only the events of the
    /// nodes of `nodes` (a node set; `None`: every node) and of the `kinds`
    /// given (empty: every kind).
    Events {
        follow: bool,
        nodes: Option<String>,
        kinds: Vec<crate::events::EventKind>,
        since: Option<u64>,
    },
    JobSubmit {
        ops: Vec<Opcode>,
        priority: i32,
        depends: Vec<Dependency>,
    },
    /// Several jobs, all or nothing, in one commit; answered with their
    /// ids in order. A job may depend on one before it
    /// ([`crate::jobs::JobRef::Earlier`]).
    JobSubmitMany {
        jobs: Vec<NewJob>,
    },
    /// The newest `limit` live jobs (all when `None`), oldest first; or,
    /// when `ids` are given, those jobs (live or archived) in that order.
    JobList {
        status: Option<JobStatus>,
        limit: Option<u32>,
        ids: Vec<JobId>,
    },
    JobShow {
        id: JobId,
    },
    /// The long poll: changes after `after_serial`, waiting at most `timeout_ms`.
    JobWait {
        id: JobId,
        after_serial: u64,
        timeout_ms: u64,
    },
    JobCancel {
        id: JobId,
    },
    JobArchive {
        id: JobId,
    },
    /// Archives every live job that ended more than `older_than` ago;
    /// answered with how many.
    JobAutoArchive {
        older_than: std::time::Duration,
    },
    /// A queued or waiting job's new priority.
    JobPriority {
        id: JobId,
        priority: i32,
    },
    QueueDrain {
        on: bool,
    },
    QueueStatus,
    PeriodicList,
    /// A fanout command; answered with every node's outcome, or streamed
    /// as `live` asks. The commands are killed if the client goes away first.
    Exec {
        nodes: String,
        spec: crate::exec::ExecSpec,
        options: crate::exec::RunOptions,
        live: Live,
    },
    /// A file or tree copied to every node, or gathered from each.
    Copy {
        nodes: String,
        spec: crate::exec::CopySpec,
        options: crate::exec::RunOptions,
        live: Live,
    },
    /// Runs a periodic task now; answered when the run has ended.
    PeriodicRun {
        name: String,
    },
    /// Every driver interface of every node of a set checked (shared: also
    /// while tasks hold the nodes); answered with [`Response::Validation`].
    NodeValidate {
        nodes: String,
    },
    /// A port put in a port group (by name or uuid), or in none.
    PortSet {
        address: String,
        group: Option<String>,
    },
    PortGroupCreate(NewPortGroup),
    PortGroupList {
        node: Option<String>,
    },
    PortGroupShow {
        group: String,
    },
    /// Its ports stay, in no group.
    PortGroupDelete {
        group: String,
    },
    /// The members of a site whose store is shared.
    MemberList,
    /// A booted system's callback to a node in a wait state: with the
    /// token the node was issued, it goes on, or fails with `failure`.
    /// Answered with the node once it has settled.
    NodeCallback {
        node: String,
        token: crate::node::CallbackToken,
        failure: Option<String>,
    },
}

impl Request {
    /// Every request's name, as metrics label it, in [`Request::kind_index`] order.
    pub const KINDS: &'static [&'static str] = &[
        "hello",
        "status",
        "node_create",
        "node_import",
        "node_list",
        "node_show",
        "node_history",
        "node_set",
        "node_delete",
        "node_op",
        "power_status",
        "port_create",
        "port_list",
        "port_delete",
        "events",
        "job_submit",
        "job_list",
        "job_show",
        "job_wait",
        "job_cancel",
        "job_archive",
        "queue_drain",
        "queue_status",
        "periodic_list",
        "exec",
        "copy",
        "periodic_run",
        "job_submit_many",
        "job_autoarchive",
        "job_priority",
        "node_validate",
        "port_set",
        "port_group_create",
        "port_group_list",
        "port_group_show",
        "port_group_delete",
        "member_list",
        "node_callback",
    ];

    /// The request's place in [`Request::KINDS`].
    pub fn kind_index(&self) -> usize {
        match self {
            Request::Hello { .. } => 0,
            Request::Status => 1,
            Request::NodeCreate(_) => 2,
            Request::NodeImport(_) => 3,
            // One kind, whichever way the list is answered: `kiln node list`
            // counts as `node_list` as it did before it streamed.
            Request::NodeList { .. } | Request::NodeListPages { .. } => 4,
            Request::NodeShow { .. } => 5,
            Request::NodeHistory { .. } => 6,
            Request::NodeSet { .. } => 7,
            Request::NodeDelete { .. } => 8,
            Request::NodeOp { .. } => 9,
            Request::PowerStatus { .. } => 10,
            Request::PortCreate { .. } => 11,
            Request::PortList { .. } => 12,
            Request::PortDelete { .. } => 13,
            Request::Events { .. } => 14,
            Request::JobSubmit { .. } => 15,
            Request::JobList { .. } => 16,
            Request::JobShow { .. } => 17,
            Request::JobWait { .. } => 18,
            Request::JobCancel { .. } => 19,
            Request::JobArchive { .. } => 20,
            Request::QueueDrain { .. } => 21,
            Request::QueueStatus => 22,
            Request::PeriodicList => 23,
            Request::Exec { .. } => 24,
            Request::Copy { .. } => 25,
            Request::PeriodicRun { .. } => 26,
            Request::JobSubmitMany { .. } => 27,
            Request::JobAutoArchive { .. } => 28,
            Request::JobPriority { .. } => 29,
            Request::NodeValidate { .. } => 30,
            Request::PortSet { .. } => 31,
            Request::PortGroupCreate(_) => 32,
            Request::PortGroupList { .. } => 33,
            Request::PortGroupShow { .. } => 34,
            Request::PortGroupDelete { .. } => 35,
            Request::MemberList => 36,
            Request::NodeCallback { .. } => 37,
        }
    }

    /// Whether a drained queue refuses the request. Drain stops new work
    /// on nodes, whichever way it comes: every job (a submission, a bulk
    /// verb), every other change of nodes and ports, and every command run
    /// on nodes. Reads, following, queue management (cancel, archive,
    /// priority, the drain flag) and the site's own periodic tasks go on,
    /// and running jobs finish (as Ganeti's drain flag stops submissions
    /// only). Exhaustive, so a new request must be placed.
    pub fn drain_refuses(&self) -> bool {
        match self {
            Request::NodeCreate(_)
            | Request::NodeImport(_)
            | Request::NodeSet { .. }
            | Request::NodeDelete { .. }
            | Request::NodeOp { .. }
            | Request::PortCreate { .. }
            | Request::PortDelete { .. }
            | Request::PortSet { .. }
            | Request::PortGroupCreate(_)
            | Request::PortGroupDelete { .. }
            | Request::JobSubmit { .. }
            | Request::JobSubmitMany { .. }
            | Request::Exec { .. }
            | Request::Copy { .. } => true,
            Request::Hello { .. }
            | Request::Status
            | Request::NodeList { .. }
            | Request::NodeListPages { .. }
            | Request::NodeShow { .. }
            | Request::NodeHistory { .. }
            | Request::NodeValidate { .. }
            | Request::PortGroupList { .. }
            | Request::PortGroupShow { .. }
            | Request::PowerStatus { .. }
            | Request::PortList { .. }
            | Request::Events { .. }
            | Request::JobList { .. }
            | Request::JobShow { .. }
            | Request::JobWait { .. }
            | Request::JobCancel { .. }
            | Request::JobArchive { .. }
            | Request::JobAutoArchive { .. }
            | Request::JobPriority { .. }
            | Request::QueueDrain { .. }
            | Request::QueueStatus
            | Request::PeriodicList
            | Request::PeriodicRun { .. }
            | Request::MemberList => false,
            // Not new work: it lets a node finish a task that had started
            // (a drained site still completes its waits, as its timeouts).
            Request::NodeCallback { .. } => false,
        }
    }

    /// The request's name, as metrics label it.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }
}

/// How a fanout request is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Live {
    /// One [`Response::Exec`] with every node's outcome, at the end.
    #[default]
    AtEnd,
    /// A [`Response::ExecNode`] as each node ends, then [`Response::Done`].
    Outcomes,
    /// [`Response::ExecLines`] as the commands print, a
    /// [`Response::ExecNode`] as each node ends, then [`Response::Done`].
    Lines,
}

/// A response from the daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Hello {
        version: u32,
        server: String,
    },
    Error(KilnError),
    Status(SiteStatus),
    Node(NodeView),
    /// A node with its ports and port groups (`NodeShow`).
    NodeDetail(NodeDetail),
    Nodes(Vec<NodeView>),
    /// A page of [`Request::NodeListPages`]: the rows in order; `last`
    /// ends the list. `name_width` is the longest name among the nodes the
    /// list may still hold, so a table can be laid out before every row has
    /// come. Only the last page may be empty.
    NodePage {
        nodes: Vec<NodeView>,
        name_width: u32,
        last: bool,
    },
    Outcomes(Vec<NodeResult>),
    Port(PortView),
    Ports(Vec<PortView>),
    History(Vec<HistoryEntry>),
    Event(NodeEvent),
    /// The end of the recent events, before following starts.
    EventsCaughtUp,
    JobSubmitted(JobId),
    /// The ids of a submission of several jobs, in order.
    JobsSubmitted(Vec<JobId>),
    /// How many jobs an auto-archive moved out of the live queue.
    JobsArchived(u64),
    Jobs(Vec<JobView>),
    Job(JobView),
    JobChange(JobChange),
    JobCanceled(JobStatus),
    Queue(QueueInfo),
    Periodic(Vec<crate::scheduler::PeriodicInfo>),
    Exec(Vec<crate::exec::ExecOutcome>),
    /// Lines the commands of a live fanout printed, in the order printed.
    ExecLines(Vec<crate::exec::OutputLine>),
    /// A node of a live fanout ended; `index` is its place in the node set.
    ExecNode {
        index: usize,
        outcome: crate::exec::ExecOutcome,
    },
    Done,
    /// Each node's driver interfaces checked (`NodeValidate`).
    Validation(Vec<NodeValidation>),
    PortGroup(PortGroupView),
    PortGroups(Vec<PortGroupView>),
    Members(Vec<crate::view::MemberView>),
    /// A piece of an answer longer than a frame: bytes of the whole
    /// answer's encoding, in order; the last piece says so. See
    /// [`crate::parts`].
    Part {
        bytes: Vec<u8>,
        last: bool,
    },
}

impl Response {
    /// How many entries the answer carries (nodes, jobs, per-node results,
    /// log lines): what its encoding costs grows with this. The admin
    /// server encodes an answer with many of them off the actors' thread.
    pub fn entries(&self) -> usize {
        let results = |job: &JobView| job.ops.iter().map(|op| op.results.len()).sum::<usize>();
        match self {
            Response::Nodes(list) => list.len(),
            Response::NodePage { nodes, .. } => nodes.len(),
            Response::Outcomes(list) => list.len(),
            Response::Ports(list) => list.len(),
            Response::History(list) => list.len(),
            Response::Jobs(list) => list.iter().map(|job| 1 + results(job)).sum(),
            Response::Job(job) => 1 + results(job) + job.log.as_ref().map_or(0, Vec::len),
            Response::JobsSubmitted(ids) => ids.len(),
            Response::JobChange(change) => 1 + change.log.len(),
            Response::Periodic(list) => list.len(),
            Response::Exec(list) => list.len(),
            Response::ExecLines(list) => list.len(),
            Response::Validation(list) => list.len(),
            Response::PortGroups(list) => list.len(),
            Response::Members(list) => list.len(),
            Response::NodeDetail(detail) => 1 + detail.ports.len() + detail.portgroups.len(),
            Response::Hello { .. }
            | Response::Error(_)
            | Response::Status(_)
            | Response::Node(_)
            | Response::Port(_)
            | Response::PortGroup(_)
            | Response::Event(_)
            | Response::EventsCaughtUp
            | Response::JobSubmitted(_)
            | Response::JobsArchived(_)
            | Response::JobCanceled(_)
            | Response::Queue(_)
            | Response::ExecNode { .. }
            | Response::Done
            | Response::Part { .. } => 1,
        }
    }
}
