//! The admin protocol: the typed requests and responses that the `kiln` CLI
//! and the daemon exchange over the admin socket (framed by [`crate::codec`]).
//!
//! A connection starts with [`Request::Hello`] carrying
//! [`PROTOCOL_VERSION`]; the daemon answers [`Response::Hello`] or, on a
//! mismatch, an error naming both versions. Then each request gets one
//! response, except [`Request::Events`] with `follow`, which streams
//! [`Response::Event`]s until the client goes away. A response longer than
//! a frame arrives as [`Response::Part`]s ([`crate::parts`]).

use kiln_store::{HistoryEntry, JobId, JobStatus, ProvisionState};
use serde::{Deserialize, Serialize};

use crate::KilnError;
use crate::events::NodeEvent;
use crate::jobs::{Dependency, JobChange, JobView, Opcode, QueueInfo};
use crate::node::{NodeUpdate, NodeValidation, Op};
use crate::supervisor::{NewNode, NewPortGroup};
use crate::view::{NodeDetail, NodeOutcome, NodeView, PortGroupView, PortView, SiteStatus};

/// Bumped whenever a request or response changes shape.
pub const PROTOCOL_VERSION: u32 = 5;

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
    /// The recent events; with `follow`, then every new one. Only the
    /// events of the nodes of `nodes` (a node set; `None`: every node) and
    /// of the `kinds` given (empty: every kind).
    Events {
        follow: bool,
        nodes: Option<String>,
        kinds: Vec<crate::events::EventKind>,
    },
    JobSubmit {
        ops: Vec<Opcode>,
        priority: i32,
        depends: Vec<Dependency>,
    },
    /// The newest `limit` live jobs (all when `None`), oldest first.
    JobList {
        status: Option<JobStatus>,
        limit: Option<u32>,
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
    QueueDrain {
        on: bool,
    },
    QueueStatus,
    PeriodicList,
    /// A fanout command; answered with every node's outcome. The commands
    /// are killed if the client goes away first.
    Exec {
        nodes: String,
        spec: crate::exec::ExecSpec,
    },
    /// A file copied to every node.
    Copy {
        nodes: String,
        spec: crate::exec::CopySpec,
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
        "node_validate",
        "port_set",
        "port_group_create",
        "port_group_list",
        "port_group_show",
        "port_group_delete",
    ];

    /// The request's place in [`Request::KINDS`].
    pub fn kind_index(&self) -> usize {
        match self {
            Request::Hello { .. } => 0,
            Request::Status => 1,
            Request::NodeCreate(_) => 2,
            Request::NodeImport(_) => 3,
            Request::NodeList { .. } => 4,
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
            Request::NodeValidate { .. } => 27,
            Request::PortSet { .. } => 28,
            Request::PortGroupCreate(_) => 29,
            Request::PortGroupList { .. } => 30,
            Request::PortGroupShow { .. } => 31,
            Request::PortGroupDelete { .. } => 32,
        }
    }

    /// The request's name, as metrics label it.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }
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
    Outcomes(Vec<NodeOutcome>),
    Port(PortView),
    Ports(Vec<PortView>),
    History(Vec<HistoryEntry>),
    Event(NodeEvent),
    /// The end of the recent events, before following starts.
    EventsCaughtUp,
    JobSubmitted(JobId),
    Jobs(Vec<JobView>),
    Job(JobView),
    JobChange(JobChange),
    JobCanceled(JobStatus),
    Queue(QueueInfo),
    Periodic(Vec<crate::scheduler::PeriodicInfo>),
    Exec(Vec<crate::exec::ExecOutcome>),
    Done,
    /// Each node's driver interfaces checked (`NodeValidate`).
    Validation(Vec<NodeValidation>),
    PortGroup(PortGroupView),
    PortGroups(Vec<PortGroupView>),
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
            Response::Outcomes(list) => list.len(),
            Response::Ports(list) => list.len(),
            Response::History(list) => list.len(),
            Response::Jobs(list) => list.iter().map(|job| 1 + results(job)).sum(),
            Response::Job(job) => 1 + results(job),
            Response::JobChange(change) => 1 + change.log.len(),
            Response::Periodic(list) => list.len(),
            Response::Exec(list) => list.len(),
            Response::Validation(list) => list.len(),
            Response::PortGroups(list) => list.len(),
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
            | Response::JobCanceled(_)
            | Response::Queue(_)
            | Response::Done
            | Response::Part { .. } => 1,
        }
    }
}
