//! Fanout commands over node sets (spec section 6): ClusterShell's `Task`
//! with its `exec` and `ssh` workers.
//!
//! A run starts at most `fanout` commands at once, each with its own
//! connect and command timeouts, and gathers every node's stdout, stderr and
//! exit code. Children are started with `kill_on_drop`, so dropping a run
//! (the client pressed Ctrl-C and went away, the job was canceled) kills
//! whatever still runs. Nothing here holds node state: a command on a node is
//! not an exclusive task, as in ClusterShell.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// At most this much of a node's stdout and of its stderr is kept.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// How a command reaches a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Worker {
    /// A local command; `%h` is replaced by the node's name (ClusterShell's
    /// exec worker).
    Exec,
    /// OpenSSH in batch mode to the node's address, with extra client
    /// options (`-p 2222 -i key`, like clush's `-o`).
    Ssh { options: Vec<String> },
}

/// A fanout command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub worker: Worker,
    /// The command line (run by the remote or local shell).
    pub command: String,
    pub fanout: usize,
    pub connect_timeout: Duration,
    /// `None`: no limit.
    pub command_timeout: Option<Duration>,
}

/// A file copy to every node (`kiln copy`): scp for ssh, cp for exec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CopySpec {
    pub worker: Worker,
    pub source: PathBuf,
    pub dest: String,
    pub fanout: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Option<Duration>,
}

/// Where a command runs: the node's name and the address to reach it at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub node: String,
    pub address: String,
}

/// One node's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutcome {
    pub node: String,
    pub stdout: String,
    pub stderr: String,
    /// The exit code; 255 when the command timed out or could not start.
    pub exit_code: i32,
    pub timed_out: bool,
    /// Why the command could not run at all.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// The exit code `kiln exec` ends with: the largest one (as `clush -S`).
pub fn overall_exit(outcomes: &[ExecOutcome]) -> i32 {
    outcomes.iter().map(|o| o.exit_code).max().unwrap_or(0)
}

fn ssh_base(options: &[String], connect_timeout: Duration) -> Vec<String> {
    let mut args = vec![
        "-o".to_string(),
        "BatchMode=yes".to_string(),
        "-o".to_string(),
        format!("ConnectTimeout={}", connect_timeout.as_secs().max(1)),
    ];
    args.extend(options.iter().cloned());
    args
}

/// The program and arguments that run `spec` on `target`.
fn command_line(spec: &ExecSpec, target: &Target) -> (String, Vec<String>) {
    match &spec.worker {
        Worker::Exec => ("sh".into(), vec!["-c".into(), spec.command.replace("%h", &target.node)]),
        Worker::Ssh { options } => {
            let mut args = ssh_base(options, spec.connect_timeout);
            args.push(target.address.clone());
            args.push("--".into());
            args.push(spec.command.replace("%h", &target.node));
            ("ssh".into(), args)
        }
    }
}

fn copy_line(spec: &CopySpec, target: &Target) -> (String, Vec<String>) {
    let source = spec.source.display().to_string();
    match &spec.worker {
        Worker::Exec => ("cp".into(), vec![source, spec.dest.replace("%h", &target.node)]),
        Worker::Ssh { options } => {
            // scp spells the port -P; translate ssh's -p.
            let opts: Vec<String> =
                options.iter().map(|o| if o == "-p" { "-P".to_string() } else { o.clone() }).collect();
            let mut args = ssh_base(&opts, spec.connect_timeout);
            args.push(source);
            args.push(format!("{}:{}", target.address, spec.dest));
            ("scp".into(), args)
        }
    }
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    let Some(mut r) = r else { return Vec::new() };
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    out
}

/// Runs one program for one node, with its timeout.
async fn run_one(node: String, program: String, args: Vec<String>, limit: Option<Duration>) -> ExecOutcome {
    let started = Instant::now();
    let failed = |node: String, error: String| ExecOutcome {
        node,
        stdout: String::new(),
        stderr: String::new(),
        exit_code: 255,
        timed_out: false,
        error: Some(error),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let mut child = match Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return failed(node, format!("cannot run {program}: {e}")),
    };
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let work = async {
        let (stdout, stderr) = tokio::join!(read_capped(out), read_capped(err));
        let status = child.wait().await;
        (stdout, stderr, status)
    };
    let finished = match limit {
        Some(l) => tokio::time::timeout(l, work).await.ok(),
        None => Some(work.await),
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    match finished {
        None => ExecOutcome {
            node,
            stdout: String::new(),
            stderr: String::new(),
            exit_code: 255,
            timed_out: true,
            error: Some(format!("command timed out after {} s", limit.unwrap_or_default().as_secs_f64())),
            duration_ms,
        },
        Some((stdout, stderr, status)) => {
            let code = match status {
                Ok(s) => s.code().unwrap_or(255),
                Err(e) => return failed(node, format!("cannot wait for {program}: {e}")),
            };
            ExecOutcome {
                node,
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
                exit_code: code,
                timed_out: false,
                error: None,
                duration_ms,
            }
        }
    }
}

/// Runs a command on every target, at most `fanout` at once; outcomes in
/// the targets' order.
pub async fn run(spec: &ExecSpec, targets: Vec<Target>) -> Vec<ExecOutcome> {
    stream::iter(targets.into_iter().map(|t| {
        let (program, args) = command_line(spec, &t);
        run_one(t.node, program, args, spec.command_timeout)
    }))
    .buffered(spec.fanout.max(1))
    .collect()
    .await
}

/// Copies a file to every target, at most `fanout` at once.
pub async fn copy(spec: &CopySpec, targets: Vec<Target>) -> Vec<ExecOutcome> {
    stream::iter(targets.into_iter().map(|t| {
        let (program, args) = copy_line(spec, &t);
        run_one(t.node, program, args, spec.command_timeout)
    }))
    .buffered(spec.fanout.max(1))
    .collect()
    .await
}

/// The targets of a node set: every name in it; a name that is a node of
/// the site is reached at its `address` property (if set), any other name
/// at itself (a host name, as ClusterShell does).
pub async fn targets(router: &crate::supervisor::Router, expr: &str) -> Result<Vec<Target>, crate::KilnError> {
    let set = router.registry.parse(expr)?;
    if set.is_empty() {
        return Err(crate::KilnError::InvalidInput(format!("node set '{expr}' is empty")));
    }
    let mut out = Vec::with_capacity(set.len());
    for name in set.iter() {
        let address = match router.registry.find(&name) {
            Some((id, _)) => router
                .show(id)
                .await
                .ok()
                .and_then(|v| v.properties.get("address").cloned())
                .unwrap_or_else(|| name.clone()),
            None => name.clone(),
        };
        out.push(Target { node: name, address });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str, timeout: Option<u64>) -> ExecSpec {
        ExecSpec {
            worker: Worker::Exec,
            command: command.into(),
            fanout: 4,
            connect_timeout: Duration::from_secs(5),
            command_timeout: timeout.map(Duration::from_secs),
        }
    }

    fn targets(names: &[&str]) -> Vec<Target> {
        names.iter().map(|n| Target { node: n.to_string(), address: n.to_string() }).collect()
    }

    #[tokio::test]
    async fn the_exec_worker_substitutes_the_node_name_and_gathers_output() {
        let out = run(&spec("echo hello %h; echo oops >&2; exit 3", None), targets(&["n1", "n2"])).await;
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].stdout, "hello n1\n");
        assert_eq!(out[1].stdout, "hello n2\n");
        assert_eq!(out[1].stderr, "oops\n");
        assert!(out.iter().all(|o| o.exit_code == 3 && !o.timed_out));
        assert_eq!(overall_exit(&out), 3);
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed_and_reported_255() {
        let out = run(&spec("exec sleep 30", Some(1)), targets(&["slow"])).await;
        assert!(out[0].timed_out);
        assert_eq!(out[0].exit_code, 255);
        assert!(out[0].duration_ms < 10_000);
    }

    #[test]
    fn ssh_runs_in_batch_mode_with_the_options_given() {
        let s =
            ExecSpec { worker: Worker::Ssh { options: vec!["-p".into(), "2222".into()] }, ..spec("uname -n", None) };
        let (program, args) = command_line(&s, &Target { node: "n1".into(), address: "127.0.0.2".into() });
        assert_eq!(program, "ssh");
        assert_eq!(
            args,
            ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-p", "2222", "127.0.0.2", "--", "uname -n"]
        );
        let c = CopySpec {
            worker: s.worker.clone(),
            source: "/etc/hostname".into(),
            dest: "/tmp/h".into(),
            fanout: 1,
            connect_timeout: Duration::from_secs(5),
            command_timeout: None,
        };
        let (program, args) = copy_line(&c, &Target { node: "n1".into(), address: "127.0.0.2".into() });
        assert_eq!(program, "scp");
        assert!(args.windows(2).any(|w| w == ["-P", "2222"]), "{args:?}");
        assert_eq!(args.last().unwrap(), "127.0.0.2:/tmp/h");
    }
}
