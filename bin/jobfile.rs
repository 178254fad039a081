//! The job file `kiln job submit FILE` reads: JSON or YAML, opcodes named by
//! an `op` field, in the words of the CLI.
//!
//! ```yaml
//! priority: 0
//! depends: [{job: 12, statuses: [success]}]
//! ops:
//!   - {op: hold, nodes: "rack1-n[01-40]"}   # held for the rest of the job
//!   - {op: deploy, nodes: "rack1-n[01-40]", fanout: 16}
//!   - {op: power, action: reboot, nodes: rack1-n01}
//!   - {op: boot-device, device: pxe, persistent: true, nodes: rack1-n01}
//!   - {op: maintenance, on: true, reason: "fan swap", nodes: rack1-n02}
//!   - {op: sleep, seconds: 1}
//!   - {op: exec, nodes: "rack1-n[01-40]", command: "uptime", timeout: 10}
//! ```
//!
//! A file may also hold several jobs, submitted together, all or nothing
//! (Ganeti's SubmitManyJobs): a list of such jobs, or `jobs: [...]`. A
//! dependency of one of them may then name a job before it by a negative
//! number, counted back from itself (`job: -1`: the job just before), as
//! Ganeti's relative job ids.
//!
//! The words go both ways: [`file_opcode`] writes an opcode as a file holds
//! it, which is how `kiln --json job show` prints opcodes. So a job shown
//! with `--json` is itself a job file (its other fields, the ones a job
//! gets when it runs, are ignored), and resubmitting it runs the same
//! opcodes again.

use std::path::Path;

use anyhow::{Context, bail};
use kiln_actors::jobs::{Dependency, JobRef, NewDependency, NewJob, Opcode};
use kiln_actors::node::{parse_power_action, power_action_name};
use kiln_actors::{Op, Verb};
use kiln_store::{BootDevice, JobId, JobStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A job as written in a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub depends: Vec<DependencyFile>,
    pub ops: Vec<OpFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencyFile {
    /// A job id; negative, in a file of several jobs: a job before this one.
    pub job: i64,
    #[serde(default)]
    pub statuses: Vec<String>,
}

/// One opcode as written: `op` names it; the other fields are its arguments.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpFile {
    pub op: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persistent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// exec: the command, `ssh` (default) or `exec`, ssh options, timeouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<f64>,
}

/// What a job file holds.
#[derive(Debug, PartialEq)]
pub enum Submission {
    /// One job (a file with `ops`).
    One { ops: Vec<Opcode>, priority: i32, depends: Vec<Dependency> },
    /// Several jobs, submitted together (a list, or `jobs: [...]`).
    Many(Vec<NewJob>),
}

/// Reads and checks a job file.
pub fn read(path: &Path) -> anyhow::Result<Submission> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("{}", path.display()))
}

/// Parses a job file's text: JSON when it reads as JSON, else YAML (so a
/// YAML flow list, `[{ops: ...}]`, is YAML).
pub fn parse(text: &str) -> anyhow::Result<Submission> {
    let looks_json = matches!(text.trim_start().chars().next(), Some('{' | '['));
    let (doc, json): (Value, bool) = match serde_json::from_str(text) {
        Ok(doc) => (doc, true),
        Err(e) => match serde_yaml::from_str(text) {
            Ok(doc) => (doc, false),
            Err(_) if looks_json => return Err(anyhow::Error::new(e).context("not a valid JSON job")),
            Err(e) => return Err(anyhow::Error::new(e).context("not a valid YAML job")),
        },
    };
    match doc {
        Value::Array(jobs) => many(jobs),
        Value::Object(mut fields) if fields.contains_key("jobs") => {
            let jobs = fields.remove("jobs");
            if let Some(other) = fields.keys().next() {
                bail!("unknown field `{other}` beside `jobs` (a file of several jobs holds only `jobs`)");
            }
            match jobs {
                Some(Value::Array(jobs)) => many(jobs),
                _ => bail!("`jobs` must be a list of jobs"),
            }
        }
        Value::Object(fields) if is_shown(&fields) => one(job_file(Value::Object(fields))?),
        // Typed from the text, so that an error points at its line.
        _ if json => one(serde_json::from_str(text).context("not a valid JSON job")?),
        _ => one(serde_yaml::from_str(text).context("not a valid YAML job")?),
    }
}

/// A job as `kiln --json job show` prints it (it has an `id`).
fn is_shown(fields: &serde_json::Map<String, Value>) -> bool {
    fields.contains_key("id") && fields.contains_key("status")
}

/// A job object of a file, or a shown job reduced to what a file holds:
/// its priority, dependencies and opcodes.
fn job_file(doc: Value) -> anyhow::Result<JobFile> {
    let doc = match doc {
        Value::Object(mut fields) if is_shown(&fields) => {
            let mut job = serde_json::Map::new();
            for key in ["priority", "depends"] {
                if let Some(v) = fields.remove(key) {
                    job.insert(key.into(), v);
                }
            }
            let ops = match fields.remove("ops") {
                Some(Value::Array(ops)) => ops
                    .into_iter()
                    .map(|mut op| match op.get_mut("opcode").map(Value::take) {
                        Some(opcode) => opcode,
                        None => op,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            job.insert("ops".into(), Value::Array(ops));
            Value::Object(job)
        }
        other => other,
    };
    Ok(serde_json::from_value(doc)?)
}

fn one(file: JobFile) -> anyhow::Result<Submission> {
    let (ops, priority, depends) = checked(&file)?;
    let depends = depends
        .into_iter()
        .map(|d| match d.job {
            JobRef::Id(job) => Ok(Dependency { job, statuses: d.statuses }),
            JobRef::Earlier(n) => {
                bail!("dependency on job -{n}: a relative job id names a job of the same file; this file holds one job")
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Submission::One { ops, priority, depends })
}

fn many(jobs: Vec<Value>) -> anyhow::Result<Submission> {
    if jobs.is_empty() {
        bail!("the list of jobs is empty");
    }
    let total = jobs.len();
    let jobs = jobs
        .into_iter()
        .enumerate()
        .map(|(k, doc)| {
            let file = job_file(doc).with_context(|| format!("job {} of {total}", k + 1))?;
            let (ops, priority, depends) = checked(&file).with_context(|| format!("job {} of {total}", k + 1))?;
            Ok(NewJob { ops, priority, depends })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Submission::Many(jobs))
}

/// A job's opcodes, priority and dependencies, as the daemon takes them.
fn checked(file: &JobFile) -> anyhow::Result<(Vec<Opcode>, i32, Vec<NewDependency>)> {
    if file.ops.is_empty() {
        bail!("a job needs at least one opcode in `ops`");
    }
    let ops = file
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| opcode(op).with_context(|| format!("opcode {}", i + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let depends = file
        .depends
        .iter()
        .map(|d| {
            let statuses = d
                .statuses
                .iter()
                .map(|s| s.parse::<JobStatus>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("dependency on job {}", d.job))?;
            let job = match d.job {
                0 => bail!("dependency on job 0: job ids start at 1 (a negative id names a job before this one)"),
                n if n > 0 => JobRef::Id(JobId(n as u64)),
                n => JobRef::Earlier(u32::try_from(n.unsigned_abs()).unwrap_or(u32::MAX)),
            };
            Ok(NewDependency { job, statuses })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((ops, file.priority, depends))
}

fn opcode(f: &OpFile) -> anyhow::Result<Opcode> {
    if f.op == "sleep" {
        let seconds = f.seconds.context("sleep needs `seconds`")?;
        return Ok(Opcode::Sleep { seconds });
    }
    let nodes = f.nodes.clone().with_context(|| format!("{} needs `nodes`", f.op))?;
    if f.op == "hold" {
        return Ok(Opcode::Hold { nodes });
    }
    if f.op == "exec" {
        let command = f.command.clone().context("exec needs `command`")?;
        let worker = match f.worker.as_deref().unwrap_or("ssh") {
            "exec" => kiln_actors::exec::Worker::Exec,
            "ssh" => kiln_actors::exec::Worker::Ssh {
                options: f.options.as_deref().unwrap_or("").split_whitespace().map(String::from).collect(),
            },
            other => bail!("worker '{other}': expected ssh or exec"),
        };
        let secs = |what: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 86_400.0 {
                Ok(std::time::Duration::from_secs_f64(v))
            } else {
                Err(anyhow::anyhow!("{what} {v}: expected seconds between 0 and 86400"))
            }
        };
        let spec = kiln_actors::exec::ExecSpec {
            worker,
            command,
            // Replaced by the opcode's fanout when it starts (without one,
            // the daemon's `default_fanout`, as for a CLI verb).
            fanout: 0,
            connect_timeout: secs("connect_timeout", f.connect_timeout.unwrap_or(10.0))?,
            command_timeout: f.timeout.map(|t| secs("timeout", t)).transpose()?,
        };
        return Ok(Opcode::Exec { nodes, spec, fanout: f.fanout });
    }
    let op = match f.op.as_str() {
        "power" => {
            let action = f.action.as_deref().context("power needs `action` (on, off, reboot, soft-off)")?;
            Op::Power(parse_power_action(action)?)
        }
        "boot-device" => {
            let device = f.device.as_deref().context("boot-device needs `device`")?;
            Op::BootDevice { device: device.parse::<BootDevice>()?, persistent: f.persistent }
        }
        "maintenance" => {
            Op::Maintenance { on: f.on.context("maintenance needs `on: true|false`")?, reason: f.reason.clone() }
        }
        verb => Op::Verb(
            verb.parse::<Verb>().map_err(|e| anyhow::anyhow!("{e}; or power, boot-device, maintenance, sleep"))?,
        ),
    };
    // A job's opcodes run in order: each waits for its nodes to settle.
    Ok(Opcode::Node { nodes, op, fanout: f.fanout, wait: true })
}

/// An opcode as a job file writes it: what [`opcode`] reads back as the
/// same opcode. A node operation no file can ask for (a node update,
/// delete or no-op, which only the daemon's own requests make) is written
/// by its name and does not read back.
pub fn file_opcode(opcode: &Opcode) -> OpFile {
    match opcode {
        Opcode::Sleep { seconds } => OpFile { op: "sleep".into(), seconds: Some(*seconds), ..Default::default() },
        Opcode::Hold { nodes } => OpFile { op: "hold".into(), nodes: Some(nodes.clone()), ..Default::default() },
        Opcode::Exec { nodes, spec, fanout } => {
            let (worker, options) = match &spec.worker {
                kiln_actors::exec::Worker::Exec => ("exec", None),
                kiln_actors::exec::Worker::Ssh { options } => {
                    ("ssh", Some(options.join(" ")).filter(|o| !o.is_empty()))
                }
            };
            OpFile {
                op: "exec".into(),
                nodes: Some(nodes.clone()),
                fanout: *fanout,
                command: Some(spec.command.clone()),
                worker: Some(worker.into()),
                options,
                timeout: spec.command_timeout.map(|t| t.as_secs_f64()),
                connect_timeout: Some(spec.connect_timeout.as_secs_f64()),
                ..Default::default()
            }
        }
        Opcode::Node { nodes, op, fanout, .. } => {
            let node = |name: &str| OpFile {
                op: name.into(),
                nodes: Some(nodes.clone()),
                fanout: *fanout,
                ..Default::default()
            };
            match op {
                Op::Verb(v) => node(v.as_str()),
                Op::Power(a) => OpFile { action: Some(power_action_name(*a).into()), ..node("power") },
                Op::BootDevice { device, persistent } => {
                    OpFile { device: Some(device.to_string()), persistent: *persistent, ..node("boot-device") }
                }
                Op::Maintenance { on, reason } => {
                    OpFile { on: Some(*on), reason: reason.clone(), ..node("maintenance") }
                }
                Op::Update(_) | Op::Delete | Op::Noop | Op::Callback { .. } => node(&op.purpose()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_actors::exec::{ExecSpec, Worker};
    use kiln_drivers::PowerAction;

    use super::*;

    fn one_job(text: &str) -> (Vec<Opcode>, i32, Vec<Dependency>) {
        match parse(text).unwrap() {
            Submission::One { ops, priority, depends } => (ops, priority, depends),
            other => panic!("expected one job, got {other:?}"),
        }
    }

    #[test]
    fn every_opcode_written_as_a_file_reads_back_the_same() {
        let nodes = || "rack1-n[01-40]".to_string();
        let ops = vec![
            Opcode::Sleep { seconds: 0.25 },
            Opcode::Node { nodes: nodes(), op: Op::Verb(Verb::Deploy), fanout: Some(16), wait: true },
            Opcode::Node { nodes: nodes(), op: Op::Verb(Verb::Manage), fanout: None, wait: true },
            Opcode::Node { nodes: nodes(), op: Op::Power(PowerAction::SoftOff), fanout: None, wait: true },
            Opcode::Node {
                nodes: nodes(),
                op: Op::BootDevice { device: BootDevice::Pxe, persistent: true },
                fanout: Some(2),
                wait: true,
            },
            Opcode::Node {
                nodes: nodes(),
                op: Op::Maintenance { on: true, reason: Some("fan".into()) },
                fanout: None,
                wait: true,
            },
            Opcode::Node { nodes: nodes(), op: Op::Maintenance { on: false, reason: None }, fanout: None, wait: true },
            Opcode::Exec {
                nodes: nodes(),
                spec: ExecSpec {
                    worker: Worker::Ssh { options: vec!["-p".into(), "2222".into()] },
                    command: "uptime".into(),
                    fanout: 0,
                    connect_timeout: std::time::Duration::from_millis(1500),
                    command_timeout: Some(std::time::Duration::from_secs(30)),
                },
                fanout: Some(8),
            },
            Opcode::Exec {
                nodes: nodes(),
                spec: ExecSpec {
                    worker: Worker::Exec,
                    command: "true".into(),
                    fanout: 0,
                    connect_timeout: std::time::Duration::from_secs(10),
                    command_timeout: None,
                },
                fanout: None,
            },
        ];
        let files: Vec<OpFile> = ops.iter().map(file_opcode).collect();
        let text = serde_json::json!({ "priority": -3, "ops": files }).to_string();
        let (read, priority, _) = one_job(&text);
        assert_eq!(priority, -3);
        assert_eq!(read, ops);
    }

    #[test]
    fn a_shown_job_is_a_job_file_of_its_opcodes() {
        let shown = serde_json::json!({
            "id": 7, "status": "success", "priority": 4, "archived": false,
            "submitted_at": "2026-11-23T19:39:58Z", "started_at": null, "ended_at": null, "error": null,
            "depends": [{"job": 3, "statuses": ["success"]}],
            "ops": [{"opcode": {"op": "sleep", "seconds": 1.0}, "status": "success", "results": []}],
            "log": [{"serial": 1, "message": "submitted"}],
        });
        let (ops, priority, depends) = one_job(&shown.to_string());
        assert_eq!(ops, [Opcode::Sleep { seconds: 1.0 }]);
        assert_eq!(priority, 4);
        assert_eq!(depends, [Dependency { job: JobId(3), statuses: vec![JobStatus::Success] }]);
    }

    #[test]
    fn a_list_of_jobs_is_submitted_together_with_relative_dependencies() {
        let yaml = "- ops: [{op: sleep, seconds: 0}]\n- depends: [{job: -1, statuses: [success]}, {job: 12}]\n  ops: [{op: sleep, seconds: 1}]\n";
        let Submission::Many(jobs) = parse(yaml).unwrap() else { panic!("several jobs") };
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            jobs[1].depends,
            [
                NewDependency { job: JobRef::Earlier(1), statuses: vec![JobStatus::Success] },
                NewDependency { job: JobRef::Id(JobId(12)), statuses: vec![] },
            ]
        );
        let same = parse("jobs:\n  - ops: [{op: sleep, seconds: 0}]\n  - ops: [{op: sleep, seconds: 1}]\n").unwrap();
        assert!(matches!(same, Submission::Many(ref j) if j.len() == 2));
        let flow = parse("[{ops: [{op: sleep, seconds: 0}]}, {ops: [{op: sleep, seconds: 1}]}]").unwrap();
        assert!(matches!(flow, Submission::Many(ref j) if j.len() == 2), "a YAML flow list");
    }

    #[test]
    fn bad_lists_and_relative_ids_are_refused_naming_the_job() {
        for (text, needle) in [
            ("[]", "empty"),
            ("jobs: []", "empty"),
            ("jobs: [{ops: [{op: sleep, seconds: 0}]}]\npriority: 1", "beside `jobs`"),
            ("- ops: [{op: sleep, seconds: 0}]\n- ops: [{op: explode, nodes: n1}]", "job 2 of 2"),
            ("- ops: [{op: sleep, seconds: 0}]\n- {ops: [{op: sleep, seconds: 0}], typo: 1}", "job 2 of 2"),
            ("depends: [{job: -1}]\nops: [{op: sleep, seconds: 0}]", "relative job id"),
            ("depends: [{job: 0}]\nops: [{op: sleep, seconds: 0}]", "job ids start at 1"),
        ] {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
