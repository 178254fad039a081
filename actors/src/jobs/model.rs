//! What a job is made of: opcodes, dependencies, per-opcode status and
//! per-node results, as the job queue keeps them and as callers see them.
//!
//! The store keeps a job's indexed columns (id, priority, status, times) and
//! this module's [`JobBody`] as opaque JSON, so the store never needs to know
//! what an opcode is.

use std::collections::BTreeMap;

use kiln_store::{JobId, JobLogEntry, JobRecord, JobStatus, Timestamp};
use serde::{Deserialize, Serialize};

use crate::node::Op;

/// One step of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Opcode {
    /// An exclusive node operation over a node set (a name, a uuid or a set),
    /// at most `fanout` nodes at once (`None`: the site's `default_fanout`
    /// when the opcode starts). With `wait` each node's part ends when the
    /// operation has (a task: when the node has settled, at its target or
    /// failed); without, once the node has started it. A job file's opcode
    /// waits (the next opcode needs the nodes settled); a CLI verb waits when
    /// asked to (`--wait`).
    Node {
        nodes: String,
        op: Op,
        fanout: Option<u32>,
        #[serde(default = "waits")]
        wait: bool,
    },
    /// Waits, then succeeds: a test opcode (Ganeti's OpTestDelay).
    Sleep { seconds: f64 },
    /// A fanout command over a node set; a node fails on a non-zero exit.
    /// At most `fanout` nodes at once (`None`: the site's `default_fanout`
    /// when the opcode starts); it replaces the spec's own `fanout`.
    Exec {
        nodes: String,
        spec: crate::exec::ExecSpec,
        #[serde(default)]
        fanout: Option<u32>,
    },
    /// Holds every node of the set for the rest of the job (Ironic's lock
    /// kept over several calls): between the job's opcodes nobody else's
    /// exclusive operation or periodic upkeep gets in. Released when the
    /// job ends, however it ends.
    Hold { nodes: String },
}

/// A node opcode stored before it had `wait` waited: it still does.
fn waits() -> bool {
    true
}

impl Opcode {
    /// A short description for logs and tables.
    pub fn summary(&self) -> String {
        match self {
            Opcode::Node { nodes, op, .. } => format!("{} {nodes}", op.purpose()),
            Opcode::Sleep { seconds } => format!("sleep {seconds}"),
            Opcode::Exec { nodes, spec, .. } => format!("exec {nodes}: {}", spec.command),
            Opcode::Hold { nodes } => format!("hold {nodes}"),
        }
    }

    /// Whether running the opcode changes anything outside the job. Only
    /// such an opcode's start must be durable before it runs; a crash
    /// during one that changes nothing (a sleep) just runs it again.
    pub fn has_side_effects(&self) -> bool {
        !matches!(self, Opcode::Sleep { .. })
    }
}

/// "Run only once job `job` has ended in one of `statuses`."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub job: JobId,
    pub statuses: Vec<JobStatus>,
}

/// A job named by a dependency of a job submitted with others: by its id,
/// or as one of the same submission, counted back from the dependent job
/// (`Earlier(1)`: the job just before it), as Ganeti's relative job ids
/// (`-1`) in SubmitManyJobs. The ids are given out only when the
/// submission is admitted, so a batch can only name its own jobs so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobRef {
    Id(JobId),
    Earlier(u32),
}

/// A dependency of a job submitted with others ([`crate::jobs::SubmitJobs`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDependency {
    pub job: JobRef,
    pub statuses: Vec<JobStatus>,
}

/// One job of a submission of several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    pub ops: Vec<Opcode>,
    pub priority: i32,
    pub depends: Vec<NewDependency>,
}

pub use crate::view::{ErrorView, NodeResult};

impl NodeResult {
    /// A node's result of an exec opcode.
    pub fn of_exec(o: &crate::exec::ExecOutcome) -> Self {
        let mut output = format!("{}{}", o.stdout, o.stderr);
        if output.len() > 4096 {
            let mut cut = 4096;
            while !output.is_char_boundary(cut) {
                cut -= 1;
            }
            output.truncate(cut);
        }
        let failure = o.error.clone().or_else(|| (o.exit_code != 0).then(|| format!("exit code {}", o.exit_code)));
        NodeResult {
            node: o.node.clone(),
            ok: failure.is_none(),
            provision_state: None,
            power_state: None,
            error: failure
                .map(|message| ErrorView { kind: if o.timed_out { "timeout" } else { "exec" }.to_string(), message }),
            exit_code: Some(o.exit_code),
            output: Some(output),
        }
    }
}

/// One opcode of a job with its status and results. Timestamps go through
/// kiln's own RFC 3339 writer: this is serialised at every job change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpState {
    pub opcode: Opcode,
    pub status: JobStatus,
    #[serde(default, with = "kiln_store::timestamp::rfc3339::option")]
    pub started_at: Option<Timestamp>,
    #[serde(default, with = "kiln_store::timestamp::rfc3339::option")]
    pub ended_at: Option<Timestamp>,
    /// Per-node results of a node-set opcode, in node-name order.
    pub results: Vec<NodeResult>,
    pub error: Option<String>,
}

/// The part of a job the store keeps as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobBody {
    pub ops: Vec<OpState>,
    pub depends: Vec<Dependency>,
    pub error: Option<String>,
}

/// [`JobBody`] borrowed from a view: encodes to the same JSON without
/// copying the opcodes and their results first.
struct JobBodyRef<'a> {
    ops: &'a [OpState],
    depends: &'a [Dependency],
    error: &'a Option<String>,
}

impl JobBodyRef<'_> {
    /// The JSON `serde_json` writes for the owned [`JobBody`], byte for
    /// byte. A job is encoded at every change, and through serde a sleep
    /// job's two encodings were a fifth of its work on the queue's thread:
    /// the fixed keys, statuses and times are written here directly, and
    /// only the parts whose shape varies (opcodes, results, dependencies)
    /// still go through serde.
    fn to_json(&self) -> String {
        // A sleep opcode's state with both times is about 230 bytes.
        let mut out = String::with_capacity(256 * self.ops.len() + 48);
        out.push_str("{\"ops\":[");
        for (i, op) in self.ops.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"opcode\":");
            push_serde(&mut out, &op.opcode);
            out.push_str(",\"status\":\"");
            out.push_str(op.status.as_str());
            out.push_str("\",\"started_at\":");
            push_time(&mut out, op.started_at);
            out.push_str(",\"ended_at\":");
            push_time(&mut out, op.ended_at);
            out.push_str(",\"results\":");
            push_list(&mut out, &op.results);
            out.push_str(",\"error\":");
            push_text(&mut out, op.error.as_deref());
            out.push('}');
        }
        out.push_str("],\"depends\":");
        push_list(&mut out, self.depends);
        out.push_str(",\"error\":");
        push_text(&mut out, self.error.as_deref());
        out.push('}');
        out
    }
}

fn push_serde(out: &mut String, value: &impl Serialize) {
    // Serialising plain data to JSON cannot fail.
    out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".into()));
}

fn push_list<T: Serialize>(out: &mut String, items: &[T]) {
    if items.is_empty() { out.push_str("[]") } else { push_serde(out, &items) }
}

fn push_time(out: &mut String, at: Option<Timestamp>) {
    match at {
        Some(at) => {
            out.push('"');
            kiln_store::timestamp::push_timestamp(out, at);
            out.push('"');
        }
        None => out.push_str("null"),
    }
}

fn push_text(out: &mut String, text: Option<&str>) {
    match text {
        Some(text) => kiln_store::json::push_json_string(out, text),
        None => out.push_str("null"),
    }
}

/// A job as callers see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub priority: i32,
    pub status: JobStatus,
    #[serde(with = "kiln_store::timestamp::rfc3339")]
    pub submitted_at: Timestamp,
    #[serde(default, with = "kiln_store::timestamp::rfc3339::option")]
    pub started_at: Option<Timestamp>,
    #[serde(default, with = "kiln_store::timestamp::rfc3339::option")]
    pub ended_at: Option<Timestamp>,
    pub archived: bool,
    pub ops: Vec<OpState>,
    pub depends: Vec<Dependency>,
    pub error: Option<String>,
    /// The job's log, oldest first: in a job asked for by id
    /// ([`crate::jobs::GetJob`]), not in lists.
    pub log: Option<Vec<JobLogEntry>>,
}

impl JobView {
    /// Builds the view from a stored record; a body that does not decode is
    /// reported in `error` rather than hidden (see [`JobView::decode`]).
    pub fn from_record(r: &JobRecord, archived: bool) -> Self {
        Self::decode(r, archived).0
    }

    /// Builds the view from a stored record, and says why its body cannot
    /// be read if it cannot: then the view has no opcodes and `error` says
    /// why. The job queue fails such a job instead of running it (a job
    /// with no opcodes would otherwise "succeed"), as Ganeti loads a
    /// damaged job file safely and fails it.
    pub fn decode(r: &JobRecord, archived: bool) -> (Self, Option<String>) {
        let (body, unreadable) = match serde_json::from_str::<JobBody>(&r.body) {
            Ok(body) => (body, None),
            Err(e) => {
                let why = format!("the stored job body cannot be read ({e}); the job was not run");
                (JobBody { ops: Vec::new(), depends: Vec::new(), error: Some(why.clone()) }, Some(why))
            }
        };
        let view = JobView {
            id: r.id,
            priority: r.priority,
            status: r.status,
            submitted_at: r.submitted_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            archived,
            ops: body.ops,
            depends: body.depends,
            error: body.error,
            log: None,
        };
        (view, unreadable)
    }

    /// The record the store keeps for this job.
    pub fn to_record(&self, log: Vec<JobLogEntry>) -> JobRecord {
        let body = JobBodyRef { ops: &self.ops, depends: &self.depends, error: &self.error };
        JobRecord {
            id: self.id,
            priority: self.priority,
            status: self.status,
            submitted_at: self.submitted_at,
            started_at: self.started_at,
            ended_at: self.ended_at,
            body: body.to_json(),
            log,
        }
    }
}

/// What changed in a job since a log serial (the long poll's answer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobChange {
    pub id: JobId,
    pub status: JobStatus,
    /// Log entries after the serial asked for, oldest first.
    pub log: Vec<JobLogEntry>,
    /// Nodes finished and total in the running node-set opcode.
    pub progress: Option<(u64, u64)>,
}

/// The queue at a glance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub drained: bool,
    pub by_status: BTreeMap<String, usize>,
    pub running: usize,
    pub max_running: usize,
    /// Jobs that have not ended (queued, waiting, running, canceling), and
    /// how many may be (`max_queued_jobs`): a submission past it is refused.
    pub unfinished: usize,
    pub max_queued: usize,
    pub last_job_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KilnError;

    #[test]
    fn a_view_stored_and_read_back_is_the_same_view() {
        let at: Timestamp = "2026-11-23T10:00:00.123456789Z".parse().unwrap();
        let view = JobView {
            id: JobId(7),
            priority: -3,
            status: JobStatus::Error,
            submitted_at: at,
            started_at: Some(at),
            ended_at: Some(at),
            archived: false,
            ops: vec![
                OpState {
                    opcode: Opcode::Sleep { seconds: 0.5 },
                    status: JobStatus::Success,
                    started_at: Some(at),
                    ended_at: Some(at),
                    results: Vec::new(),
                    error: None,
                },
                OpState {
                    opcode: Opcode::Node {
                        nodes: "n[1-2]".into(),
                        op: crate::node::Op::Verb(crate::fsm::Verb::Manage),
                        fanout: Some(4),
                        wait: true,
                    },
                    status: JobStatus::Error,
                    started_at: Some(at),
                    ended_at: None,
                    results: vec![NodeResult::of("n1".into(), &Err(KilnError::NotFound("no \"n1\"\n".into())))],
                    error: Some("1 of 1 nodes failed".into()),
                },
            ],
            depends: vec![Dependency { job: JobId(3), statuses: vec![JobStatus::Success, JobStatus::Error] }],
            error: Some("1 of 1 nodes failed".into()),
            log: None,
        };
        stored_and_read_back(&view);
    }

    #[test]
    fn a_body_stored_by_an_earlier_version_still_loads() {
        let at: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let view = JobView {
            id: JobId(4),
            priority: 0,
            status: JobStatus::Error,
            submitted_at: at,
            started_at: Some(at),
            ended_at: Some(at),
            archived: false,
            ops: Vec::new(),
            depends: Vec::new(),
            error: Some("1 of 1 nodes failed".into()),
            log: None,
        };
        let mut record = view.to_record(Vec::new());
        // The flat `error_kind` beside an `error` string, as versions up to
        // protocol 9 stored a node's result.
        let opcode = serde_json::to_string(&Opcode::Hold { nodes: "n1".into() }).unwrap();
        record.body =
            format!("{{\"ops\":[{{\"opcode\":{opcode},{OLD_OP}}}],\"depends\":[],\"error\":\"1 of 1 nodes failed\"}}");
        const OLD_OP: &str = r#""status":"error","started_at":"2026-11-23T10:00:00Z","ended_at":"2026-11-23T10:00:00Z",
            "results":[{"node":"n1","ok":false,"provision_state":"verifying","power_state":null,
            "error_kind":"driver","error":"node n1: BMC unreachable","exit_code":null,"output":null}],
            "error":"1 of 1 nodes failed""#;
        let loaded = JobView::from_record(&record, false);
        let results = &loaded.ops[0].results;
        assert_eq!(results.len(), 1, "{loaded:?}");
        assert_eq!(
            results[0].error,
            Some(ErrorView { kind: "driver".into(), message: "node n1: BMC unreachable".into() })
        );
        assert_eq!(results[0].provision_state.as_deref(), Some("verifying"));
    }

    /// Stores `view`, checks the body is the owned [`JobBody`]'s serde
    /// encoding byte for byte, and reads it back.
    fn stored_and_read_back(view: &JobView) {
        let record = view.to_record(Vec::new());
        let owned = JobBody { ops: view.ops.clone(), depends: view.depends.clone(), error: view.error.clone() };
        assert_eq!(record.body, serde_json::to_string(&owned).unwrap());
        assert_eq!(&JobView::from_record(&record, false), view);
    }

    #[test]
    fn every_shape_of_body_is_written_as_serde_writes_it() {
        let at: Timestamp = "1999-01-02T03:04:05Z".parse().unwrap();
        let exec = crate::exec::ExecSpec {
            worker: crate::exec::Worker::Exec,
            command: "echo \"é\" \\ \u{1}".into(),
            fanout: 64,
            connect_timeout: std::time::Duration::from_millis(1500),
            command_timeout: None,
        };
        let output = crate::exec::ExecOutcome {
            node: "n2".into(),
            exit_code: 3,
            stdout: "out\n".into(),
            stderr: "</script>\u{7f}".into(),
            error: None,
            timed_out: false,
            duration_ms: 5,
        };
        let mut view = JobView {
            id: JobId(1),
            priority: 19,
            status: JobStatus::Queued,
            submitted_at: at,
            started_at: None,
            ended_at: None,
            archived: false,
            ops: Vec::new(),
            depends: Vec::new(),
            error: None,
            log: None,
        };
        stored_and_read_back(&view);
        for (i, status) in JobStatus::ALL.iter().enumerate() {
            view.ops.push(OpState {
                opcode: match i % 3 {
                    0 => Opcode::Sleep { seconds: [0.0, 0.000_001, 86_400.0, 1.5][i % 4] },
                    1 => Opcode::Exec { nodes: "n[1-2]".into(), spec: exec.clone(), fanout: (i % 2 == 0).then_some(8) },
                    _ => Opcode::Node {
                        nodes: "rack\t1".into(),
                        op: crate::node::Op::Maintenance { on: true, reason: Some("a \"why\"".into()) },
                        fanout: None,
                        wait: i % 2 == 0,
                    },
                },
                status: *status,
                started_at: (i % 2 == 0).then_some(at),
                ended_at: (i % 3 == 0).then_some(at),
                results: if i % 2 == 1 { vec![NodeResult::of_exec(&output)] } else { Vec::new() },
                error: (i % 4 == 1).then(|| format!("\u{0}{i}\r\u{1f} ü")),
            });
            view.error = (i % 2 == 0).then(|| "x\u{8}\u{c}".into());
            if i == 3 {
                view.depends.push(Dependency { job: JobId(u64::MAX), statuses: vec![*status] });
            }
            stored_and_read_back(&view);
        }
    }
}
