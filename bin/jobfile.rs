//! The job file `kiln job submit FILE` reads: JSON or YAML, opcodes named by
//! an `op` field, in the words of the CLI.
//!
//! ```yaml
//! priority: 0
//! depends: [{job: 12, statuses: [success]}]
//! ops:
//!   - {op: deploy, nodes: "rack1-n[01-40]", fanout: 16}
//!   - {op: power, action: reboot, nodes: rack1-n01}
//!   - {op: boot-device, device: pxe, persistent: true, nodes: rack1-n01}
//!   - {op: maintenance, on: true, reason: "fan swap", nodes: rack1-n02}
//!   - {op: sleep, seconds: 1}
//!   - {op: exec, nodes: "rack1-n[01-40]", command: "uptime", timeout: 10}
//! ```

use std::path::Path;

use anyhow::{Context, bail};
use kiln_actors::jobs::{Dependency, Opcode};
use kiln_actors::node::parse_power_action;
use kiln_actors::{Op, Verb};
use kiln_store::{BootDevice, JobId, JobStatus};
use serde::Deserialize;

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
    pub job: u64,
    #[serde(default)]
    pub statuses: Vec<String>,
}

/// One opcode as written: `op` names it; the other fields are its arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpFile {
    pub op: String,
    pub nodes: Option<String>,
    pub fanout: Option<u32>,
    pub action: Option<String>,
    pub device: Option<String>,
    #[serde(default)]
    pub persistent: bool,
    pub on: Option<bool>,
    pub reason: Option<String>,
    pub seconds: Option<f64>,
    /// exec: the command, `ssh` (default) or `exec`, ssh options, timeouts.
    pub command: Option<String>,
    pub worker: Option<String>,
    pub options: Option<String>,
    pub timeout: Option<f64>,
    pub connect_timeout: Option<f64>,
}

/// Reads and checks a job file.
pub fn read(path: &Path) -> anyhow::Result<(Vec<Opcode>, i32, Vec<Dependency>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: JobFile = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid JSON job", path.display()))?
    } else {
        serde_yaml::from_str(&text).with_context(|| format!("{} is not a valid YAML job", path.display()))?
    };
    if file.ops.is_empty() {
        bail!("{}: a job needs at least one opcode in `ops`", path.display());
    }
    let ops = file
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| opcode(op).with_context(|| format!("{}: opcode {}", path.display(), i + 1)))
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
                .with_context(|| format!("{}: dependency on job {}", path.display(), d.job))?;
            Ok(Dependency { job: JobId(d.job), statuses })
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
            fanout: f.fanout.unwrap_or(64).max(1) as usize,
            connect_timeout: secs("connect_timeout", f.connect_timeout.unwrap_or(10.0))?,
            command_timeout: f.timeout.map(|t| secs("timeout", t)).transpose()?,
        };
        return Ok(Opcode::Exec { nodes, spec });
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
    Ok(Opcode::Node { nodes, op, fanout: f.fanout })
}
