//! Fanout commands over node sets (the README's "Fanout commands"): ClusterShell's `Task`
//! with its `exec` and `ssh` workers.
//!
//! A run keeps at most `fanout` commands going at once, as a sliding
//! window: a slow node holds only its own slot, and the next node starts as
//! soon as any command ends (ClusterShell's fanout). Each command has its
//! own connect and command timeouts, and the run may have a total one. Every
//! node's stdout, stderr and exit code are gathered; the output a command
//! printed before its timeout is kept, as ClusterShell keeps it.
//!
//! Each command runs in a process group of its own, and the whole group is
//! killed (SIGKILL) when the command times out, and when the run is dropped
//! before the command ended (the client pressed Ctrl-C and went away, the
//! job was canceled): killing only the shell would leave what it started
//! running, re-parented to init. Nothing here holds node state: a command on
//! a node is not an exclusive task, as in ClusterShell.
//!
//! A run may report as it goes ([`Sink`]): each line a command prints, and
//! each node's outcome when it ends; the admin socket streams them to the
//! CLI, which prints them as clush does. The exec opcode of a job gathers
//! the outcomes only.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::KilnError;

/// At most this much of a node's stdout and of its stderr is kept.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// The most standard input a run takes (sent whole to every command): it
/// travels in the request, one frame of at most 16 MiB with the rest.
pub const MAX_STDIN: usize = 15 * 1024 * 1024;

/// A line longer than this is reported live in pieces of this size.
const MAX_LINE: usize = 64 * 1024;

/// After a timeout's kill, how long the output still in the pipes is read.
const DRAIN_AFTER_KILL: Duration = Duration::from_millis(500);

/// After a timeout's kill, how long the killed command is waited for.
const REAP_AFTER_KILL: Duration = Duration::from_secs(5);

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

/// A copy between this machine and every node (`kiln copy`, `kiln rcopy`):
/// scp for ssh, cp for exec. `%h` in the paths is the node's name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CopySpec {
    pub worker: Worker,
    /// Push: the local file (or directory, with `recursive`). Pull: the
    /// path on each node.
    pub source: String,
    /// Push: where to put it on each node. Pull: the local directory that
    /// receives `NAME.node` from each node (clush `--rcopy`).
    pub dest: String,
    /// Directories too (`scp -r`, `cp -r`).
    pub recursive: bool,
    /// From the nodes to here (`kiln rcopy`).
    pub pull: bool,
    pub fanout: usize,
    pub connect_timeout: Duration,
    pub command_timeout: Option<Duration>,
}

impl CopySpec {
    /// Refuses a copy whose paths cannot work, before anything runs.
    pub fn validate(&self) -> Result<(), KilnError> {
        if self.source.is_empty() || self.dest.is_empty() {
            return Err(KilnError::InvalidInput("a copy needs a source and a destination".into()));
        }
        if self.pull && Path::new(&self.source).file_name().is_none() {
            return Err(KilnError::InvalidInput(format!(
                "cannot gather '{}': the source must end with a file or directory name (each node's copy is NAME.node)",
                self.source
            )));
        }
        Ok(())
    }

    /// Where a pulled copy from `node` lands: `DEST/NAME.node`.
    pub fn pulled_path(&self, node: &str) -> String {
        let source = self.source.replace("%h", node);
        let name = Path::new(&source).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        format!("{}/{name}.{node}", self.dest.trim_end_matches('/'))
    }
}

/// What a run takes besides its spec: the CLI's standard input and the
/// whole run's time limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Written to every command's standard input, which is then closed
    /// (clush sends its stdin to every node). `None`: `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// The whole run's limit: commands still running then are killed and
    /// reported timed out, and nodes not started yet are not started.
    pub total_timeout: Option<Duration>,
}

impl RunOptions {
    /// Refuses options no run should take.
    pub fn validate(&self) -> Result<(), KilnError> {
        match &self.stdin {
            Some(data) if data.len() > MAX_STDIN => Err(KilnError::InvalidInput(format!(
                "standard input of {} bytes is larger than the {} MiB a run sends to every node",
                data.len(),
                MAX_STDIN >> 20
            ))),
            _ => Ok(()),
        }
    }
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
    /// What the command printed (all of it, or what it printed before its
    /// timeout), up to [`MAX_OUTPUT`].
    pub stdout: String,
    pub stderr: String,
    /// The exit code; 255 when the command timed out or could not start.
    pub exit_code: i32,
    pub timed_out: bool,
    /// Why the command could not run, or did not end by itself.
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One line a command printed, reported as it comes (without its newline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    pub node: String,
    /// Printed on stderr.
    pub stderr: bool,
    pub line: String,
}

/// What a run reports while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    Line(OutputLine),
    /// A node's command ended; `index` is its place in the targets.
    Done {
        index: usize,
        outcome: ExecOutcome,
    },
}

/// Where a run reports its progress. A full channel holds the run back, as
/// a full terminal holds clush back.
#[derive(Clone, Debug)]
pub struct Sink {
    tx: mpsc::Sender<Progress>,
    /// Report lines too, not only the nodes' ends.
    lines: bool,
}

impl Sink {
    pub fn new(tx: mpsc::Sender<Progress>, lines: bool) -> Sink {
        Sink { tx, lines }
    }
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

/// One program to run for one node.
struct Invocation {
    node: String,
    program: String,
    args: Vec<String>,
}

/// The program and arguments that run `spec` on `target`.
fn command_line(spec: &ExecSpec, target: &Target) -> Invocation {
    let (program, args) = match &spec.worker {
        Worker::Exec => ("sh".into(), vec!["-c".into(), spec.command.replace("%h", &target.node)]),
        Worker::Ssh { options } => {
            let mut args = ssh_base(options, spec.connect_timeout);
            args.push(target.address.clone());
            args.push("--".into());
            args.push(spec.command.replace("%h", &target.node));
            ("ssh".into(), args)
        }
    };
    Invocation { node: target.node.clone(), program, args }
}

fn copy_line(spec: &CopySpec, target: &Target) -> Invocation {
    let on_node = |path: &str| path.replace("%h", &target.node);
    let (from, to) = match (&spec.worker, spec.pull) {
        (Worker::Exec, false) => (spec.source.clone(), on_node(&spec.dest)),
        (Worker::Exec, true) => (on_node(&spec.source), spec.pulled_path(&target.node)),
        (Worker::Ssh { .. }, false) => (spec.source.clone(), format!("{}:{}", target.address, on_node(&spec.dest))),
        (Worker::Ssh { .. }, true) => {
            (format!("{}:{}", target.address, on_node(&spec.source)), spec.pulled_path(&target.node))
        }
    };
    let (program, mut args) = match &spec.worker {
        Worker::Exec => ("cp".to_string(), Vec::new()),
        Worker::Ssh { options } => {
            // scp spells the port -P; translate ssh's -p.
            let opts: Vec<String> =
                options.iter().map(|o| if o == "-p" { "-P".to_string() } else { o.clone() }).collect();
            ("scp".to_string(), ssh_base(&opts, spec.connect_timeout))
        }
    };
    if spec.recursive {
        args.push("-r".into());
    }
    args.push("--".into());
    args.push(from);
    args.push(to);
    Invocation { node: target.node.clone(), program, args }
}

/// A started command and its process group. Dropped before the command
/// ended, it kills the whole group: `kill_on_drop` alone kills only the
/// shell, and what the shell started would run on.
struct Running {
    child: Child,
    /// The group's id (the child's pid) until the child is reaped: a reaped
    /// child's pid may name another process's group.
    group: Option<libc::pid_t>,
}

impl Running {
    /// SIGKILL to every process of the group.
    fn kill_group(&self) {
        if let Some(group) = self.group {
            // SAFETY: killpg takes no pointer; the group is the one the child
            // leads, and the child is not reaped yet, so its id is not reused.
            unsafe { libc::killpg(group, libc::SIGKILL) };
        }
    }

    /// The child was reaped: its group must no longer be signalled.
    fn reaped(&mut self) {
        self.group = None;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// One stream's output: what is kept for the outcome, and the line being
/// read for the live report.
struct Capture {
    kept: Vec<u8>,
    partial: Vec<u8>,
    stderr: bool,
}

impl Capture {
    fn new(stderr: bool) -> Capture {
        Capture { kept: Vec::new(), partial: Vec::new(), stderr }
    }

    async fn take(&mut self, bytes: &[u8], node: &str, sink: Option<&Sink>) {
        let room = MAX_OUTPUT.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let Some(sink) = sink.filter(|s| s.lines) else { return };
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.report(&line[..line.len() - 1], node, sink).await;
        }
        while self.partial.len() >= MAX_LINE {
            let piece: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
            self.report(&piece, node, sink).await;
        }
    }

    /// Reports the last line, which had no newline.
    async fn finish(&mut self, node: &str, sink: Option<&Sink>) {
        if let Some(sink) = sink.filter(|s| s.lines && !self.partial.is_empty()) {
            let rest = std::mem::take(&mut self.partial);
            self.report(&rest, node, sink).await;
        }
    }

    async fn report(&self, line: &[u8], node: &str, sink: &Sink) {
        let line = OutputLine {
            node: node.to_string(),
            stderr: self.stderr,
            line: String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned(),
        };
        // A reader gone away ends the run by dropping it; nothing to do here.
        let _ = sink.tx.send(Progress::Line(line)).await;
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

/// The run's total limit: when, and the duration it was given as.
#[derive(Clone, Copy)]
struct TotalLimit {
    at: Instant,
    after: Duration,
}

/// Resolves at `at`, never without one.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads a chunk, or nothing forever once the stream has ended: a
/// `select!` branch over an ended stream that stays quiet.
async fn read_chunk<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> usize {
    r.read(buf).await.unwrap_or(0)
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Runs one program for one node: within its command timeout and the
/// run's total limit, its standard input written and closed, its output
/// kept and (with a sink) reported line by line.
async fn run_one(
    inv: Invocation,
    limit: Option<Duration>,
    total: Option<TotalLimit>,
    stdin: Option<Arc<[u8]>>,
    sink: Option<&Sink>,
) -> ExecOutcome {
    let started = Instant::now();
    let node = inv.node;
    let ended = |stdout: String, stderr: String, exit_code: i32, timed_out: bool, error: Option<String>| ExecOutcome {
        node: node.clone(),
        stdout,
        stderr,
        exit_code,
        timed_out,
        error,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    if let Some(total) = total.filter(|t| t.at <= started) {
        let error = format!("not started: the run's total timeout of {} passed first", secs(total.after));
        return ended(String::new(), String::new(), 255, true, Some(error));
    }
    let (deadline, timeout_text) = nearer_limit(started, limit, total).unzip();
    let (mut running, mut pipes, input) = match spawn(&inv.program, &inv.args, stdin) {
        Ok(spawned) => spawned,
        Err(error) => return ended(String::new(), String::new(), 255, false, Some(error)),
    };
    let feed = async move {
        if let Some((mut pipe, data)) = input {
            // A command that does not read its input breaks the pipe; fine.
            let _ = pipe.write_all(&data).await;
        }
    };
    tokio::pin!(feed);
    let expired = until(deadline);
    tokio::pin!(expired);

    let mut feeding = true;
    let mut timed_out = false;
    while pipes.open() && !timed_out {
        tokio::select! {
            chunk = pipes.read() => pipes.keep(chunk, &node, sink).await,
            _ = &mut feed, if feeding => feeding = false,
            _ = &mut expired => timed_out = true,
        }
    }
    let mut status = None;
    while status.is_none() && !timed_out {
        tokio::select! {
            s = running.child.wait() => status = Some(s),
            _ = &mut feed, if feeding => feeding = false,
            _ = &mut expired => timed_out = true,
        }
    }
    if timed_out {
        running.kill_group();
        // What the group wrote before it died is still in the pipes.
        let drain = async {
            while pipes.open() {
                let chunk = pipes.read().await;
                pipes.keep(chunk, &node, sink).await;
            }
        };
        let _ = tokio::time::timeout(DRAIN_AFTER_KILL, drain).await;
        if tokio::time::timeout(REAP_AFTER_KILL, running.child.wait()).await.is_ok() {
            running.reaped();
        }
    } else {
        running.reaped();
    }
    let (stdout, stderr) = pipes.finish(&node, sink).await;
    match status {
        _ if timed_out => ended(stdout, stderr, 255, true, timeout_text),
        Some(Ok(s)) => ended(stdout, stderr, s.code().unwrap_or(255), false, None),
        Some(Err(e)) => ended(stdout, stderr, 255, false, Some(format!("cannot wait for {}: {e}", inv.program))),
        None => ended(stdout, stderr, 255, false, Some("the command was not waited for".into())),
    }
}

/// The nearer of a command's own limit and the run's total one, with what
/// to say when it passes.
fn nearer_limit(started: Instant, limit: Option<Duration>, total: Option<TotalLimit>) -> Option<(Instant, String)> {
    let own = limit.map(|l| (started + l, format!("command timed out after {}", secs(l))));
    let whole = total.map(|t| (t.at, format!("the run's total timeout of {} passed", secs(t.after))));
    match (own, whole) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Starts `program` in a process group of its own, its output piped; with
/// its input pipe and what to write to it when `stdin` is given.
#[allow(clippy::type_complexity)]
fn spawn(
    program: &str,
    args: &[String],
    stdin: Option<Arc<[u8]>>,
) -> Result<(Running, Pipes, Option<(tokio::process::ChildStdin, Arc<[u8]>)>), String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
    let group = child.id().and_then(|id| libc::pid_t::try_from(id).ok());
    let mut running = Running { child, group };
    let (Some(out), Some(err)) = (running.child.stdout.take(), running.child.stderr.take()) else {
        return Err("no pipes to the command".into());
    };
    let input = running.child.stdin.take().zip(stdin);
    Ok((running, Pipes::new(out, err), input))
}

/// How much was read, and from which pipe (0: its end).
enum Chunk {
    Out(usize),
    Err(usize),
}

/// Reads a chunk from `pipe`; never ends once the pipe is closed.
async fn read_open<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> usize {
    match pipe {
        Some(r) => read_chunk(r, buf).await,
        None => std::future::pending().await,
    }
}

/// A command's output pipes and what has been captured of each.
struct Pipes {
    out: Option<tokio::process::ChildStdout>,
    err: Option<tokio::process::ChildStderr>,
    out_buf: Vec<u8>,
    err_buf: Vec<u8>,
    cap_out: Capture,
    cap_err: Capture,
}

impl Pipes {
    fn new(out: tokio::process::ChildStdout, err: tokio::process::ChildStderr) -> Self {
        Pipes {
            out: Some(out),
            err: Some(err),
            out_buf: vec![0u8; 8192],
            err_buf: vec![0u8; 8192],
            cap_out: Capture::new(false),
            cap_err: Capture::new(true),
        }
    }

    /// Whether either pipe may still carry output.
    fn open(&self) -> bool {
        self.out.is_some() || self.err.is_some()
    }

    /// Waits for a chunk on either open pipe (cancel-safe: nothing is read
    /// until it is returned); [`Pipes::keep`] takes it.
    async fn read(&mut self) -> Chunk {
        let Pipes { out, err, out_buf, err_buf, .. } = self;
        tokio::select! {
            n = read_open(out, out_buf) => Chunk::Out(n),
            n = read_open(err, err_buf) => Chunk::Err(n),
        }
    }

    /// Captures a chunk [`Pipes::read`] returned; an empty one closes its pipe.
    async fn keep(&mut self, chunk: Chunk, node: &str, sink: Option<&Sink>) {
        match chunk {
            Chunk::Out(0) => self.out = None,
            Chunk::Err(0) => self.err = None,
            Chunk::Out(n) => self.cap_out.take(&self.out_buf[..n], node, sink).await,
            Chunk::Err(n) => self.cap_err.take(&self.err_buf[..n], node, sink).await,
        }
    }

    /// Ends both captures; the output and the error text.
    async fn finish(mut self, node: &str, sink: Option<&Sink>) -> (String, String) {
        self.cap_out.finish(node, sink).await;
        self.cap_err.finish(node, sink).await;
        (self.cap_out.text(), self.cap_err.text())
    }
}

/// Runs the invocations, at most `fanout` at once as a sliding window;
/// outcomes in the invocations' order.
async fn fan_out(
    invocations: Vec<Invocation>,
    fanout: usize,
    limit: Option<Duration>,
    options: &RunOptions,
    sink: Option<&Sink>,
) -> Vec<ExecOutcome> {
    let total = options.total_timeout.map(|after| TotalLimit { at: Instant::now() + after, after });
    let stdin: Option<Arc<[u8]>> = options.stdin.as_deref().map(Arc::from);
    let count = invocations.len();
    let mut ended = stream::iter(invocations.into_iter().enumerate().map(|(index, inv)| {
        let stdin = stdin.clone();
        async move { (index, run_one(inv, limit, total, stdin, sink).await) }
    }))
    .buffer_unordered(fanout.max(1));
    let mut slots: Vec<Option<ExecOutcome>> = vec![None; count];
    while let Some((index, outcome)) = ended.next().await {
        if let Some(sink) = sink {
            let _ = sink.tx.send(Progress::Done { index, outcome: outcome.clone() }).await;
        }
        slots[index] = Some(outcome);
    }
    slots.into_iter().flatten().collect()
}

/// Runs a command on every target, at most `fanout` at once; outcomes in
/// the targets' order.
pub async fn run(spec: &ExecSpec, targets: Vec<Target>) -> Vec<ExecOutcome> {
    run_with(spec, targets, &RunOptions::default(), None).await
}

/// [`run`] with standard input, a total limit, and progress reported to `sink`.
pub async fn run_with(
    spec: &ExecSpec,
    targets: Vec<Target>,
    options: &RunOptions,
    sink: Option<&Sink>,
) -> Vec<ExecOutcome> {
    let invocations = targets.iter().map(|t| command_line(spec, t)).collect();
    fan_out(invocations, spec.fanout, spec.command_timeout, options, sink).await
}

/// Copies to (or, `pull`, from) every target, at most `fanout` at once.
pub async fn copy(spec: &CopySpec, targets: Vec<Target>) -> Vec<ExecOutcome> {
    copy_with(spec, targets, &RunOptions::default(), None).await
}

/// [`copy`] with a total limit and progress reported to `sink` (standard
/// input is not used).
pub async fn copy_with(
    spec: &CopySpec,
    targets: Vec<Target>,
    options: &RunOptions,
    sink: Option<&Sink>,
) -> Vec<ExecOutcome> {
    let invocations = targets.iter().map(|t| copy_line(spec, t)).collect();
    let options = RunOptions { stdin: None, ..options.clone() };
    fan_out(invocations, spec.fanout, spec.command_timeout, &options, sink).await
}

/// The targets of a node set: every name in it; a name that is a node of
/// the site is reached at its `address` property (if set), any other name
/// at itself (a host name, as ClusterShell does). On a shared store a node
/// another member runs is a node of the site too: its address is read from
/// the store, in one query for all such names.
pub async fn targets(router: &crate::supervisor::Router, expr: &str) -> Result<Vec<Target>, KilnError> {
    let set = router.registry.parse(expr)?;
    if set.is_empty() {
        return Err(KilnError::InvalidInput(format!("node set '{expr}' is empty")));
    }
    let mut out = Vec::with_capacity(set.len());
    let mut elsewhere = Vec::new();
    for name in set.iter() {
        let address = match router.registry.find(&name) {
            Some((id, _)) => router.show(id).await.ok().and_then(|v| v.properties.get("address").cloned()),
            None => {
                elsewhere.push(out.len());
                None
            }
        };
        out.push(Target { address: address.unwrap_or_else(|| name.clone()), node: name });
    }
    if router.registry.shared.is_some() && !elsewhere.is_empty() {
        let names: Vec<String> = elsewhere.iter().map(|&i| out[i].node.clone()).collect();
        let addresses = router.store.read(move |b| addresses_elsewhere(b, &names)).await?;
        for i in elsewhere {
            if let Some(address) = addresses.get(&out[i].node) {
                out[i].address = address.clone();
            }
        }
    }
    Ok(out)
}

/// The `address` property of each of `names` that is a node of the site
/// (run by another member), by name.
fn addresses_elsewhere(
    b: &mut dyn kiln_store::Backend,
    names: &[String],
) -> Result<std::collections::HashMap<String, String>, kiln_store::StoreError> {
    let Some(shared) = b.shared() else { return Ok(Default::default()) };
    let ids: Vec<_> = shared.find_nodes(names)?.into_iter().map(|(id, _)| id).collect();
    let records = shared.load_nodes_by_id(&ids)?;
    Ok(records.into_iter().filter_map(|r| Some((r.name.clone(), r.properties.get("address")?.clone()))).collect())
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

    /// A `sleep` no other process runs: its argument is unique to the call.
    fn unique_sleep() -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        format!("40.{:09}{}", nanos, std::process::id())
    }

    /// The processes whose command line is `sleep ARG`.
    fn sleeping(arg: &str) -> usize {
        let wanted = format!("sleep\0{arg}\0");
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|cmdline| cmdline == wanted.as_bytes())
            .count()
    }

    /// Polls (at most 10 s) until `sleeping(arg)` is `n`.
    async fn until_sleeping(arg: &str, n: usize) -> usize {
        let mut seen = sleeping(arg);
        for _ in 0..200 {
            if seen == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen = sleeping(arg);
        }
        seen
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
    async fn a_command_past_its_timeout_is_killed_with_all_it_started_and_keeps_its_output() {
        let arg = unique_sleep();
        let command = format!("echo before; echo err >&2; printf partial; sleep {arg}; echo after");
        let out = run(&spec(&command, Some(1)), targets(&["slow"])).await;
        assert!(out[0].timed_out);
        assert_eq!(out[0].exit_code, 255);
        assert_eq!(out[0].stdout, "before\npartial");
        assert_eq!(out[0].stderr, "err\n");
        assert!(out[0].duration_ms < 10_000);
        assert_eq!(until_sleeping(&arg, 0).await, 0, "the shell's sleep survived the timeout");
    }

    #[tokio::test]
    async fn a_dropped_run_kills_every_process_it_started() {
        let arg = unique_sleep();
        let command = format!("sleep {arg}; true");
        let s = spec(&command, None);
        let run = tokio::spawn(async move { run(&s, targets(&["a", "b"])).await });
        assert_eq!(until_sleeping(&arg, 2).await, 2, "the commands never started");
        run.abort();
        let _ = run.await;
        assert_eq!(until_sleeping(&arg, 0).await, 0, "a dropped run left its commands running");
    }

    #[tokio::test]
    async fn a_slow_node_holds_only_its_own_slot() {
        // n1 waits (bounded) until every other node has ended: with a window
        // of 2 the others must start and end while n1 still runs.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let others: Vec<String> = (2..=6).map(|i| format!("-e {d}/n{i}")).collect();
        let command = format!(
            "if [ %h = n1 ]; then i=0; until [ {all} ] || [ $i -ge 300 ]; do sleep 0.1; i=$((i+1)); done; [ {all} ]; \
             else touch {d}/%h; fi",
            all = others.join(" -a ")
        );
        let names = ["n1", "n2", "n3", "n4", "n5", "n6"];
        let out = run(&ExecSpec { fanout: 2, ..spec(&command, None) }, targets(&names)).await;
        let order: Vec<&str> = out.iter().map(|o| o.node.as_str()).collect();
        assert_eq!(order, names, "outcomes come in the targets' order");
        assert!(out.iter().all(|o| o.exit_code == 0), "{out:?}");
    }

    #[tokio::test]
    async fn lines_are_reported_as_printed_and_outcomes_as_nodes_end() {
        let (tx, mut rx) = mpsc::channel(64);
        let sink = Sink::new(tx, true);
        let s = spec("echo one %h; echo two >&2; printf three", None);
        let out = run_with(&s, targets(&["n1"]), &RunOptions::default(), Some(&sink)).await;
        drop(sink);
        let mut seen = Vec::new();
        while let Some(p) = rx.recv().await {
            seen.push(p);
        }
        let line = |stderr, text: &str| Progress::Line(OutputLine { node: "n1".into(), stderr, line: text.into() });
        assert!(seen.contains(&line(false, "one n1")), "{seen:?}");
        assert!(seen.contains(&line(true, "two")), "{seen:?}");
        assert!(seen.contains(&line(false, "three")), "{seen:?}");
        assert_eq!(seen.last(), Some(&Progress::Done { index: 0, outcome: out[0].clone() }));
    }

    #[tokio::test]
    async fn stdin_reaches_every_command_and_the_total_timeout_ends_the_run() {
        let options = RunOptions { stdin: Some(b"fed\n".to_vec()), total_timeout: None };
        let out = run_with(&spec("cat; echo %h", None), targets(&["a", "b"]), &options, None).await;
        assert_eq!(out[0].stdout, "fed\na\n");
        assert_eq!(out[1].stdout, "fed\nb\n");

        let arg = unique_sleep();
        let options = RunOptions { stdin: None, total_timeout: Some(Duration::from_millis(500)) };
        let s = ExecSpec { fanout: 1, ..spec(&format!("echo started; sleep {arg}"), Some(60)) };
        let out = run_with(&s, targets(&["a", "b"]), &options, None).await;
        assert!(out.iter().all(|o| o.timed_out && o.exit_code == 255), "{out:?}");
        assert_eq!(out[0].stdout, "started\n");
        assert!(out[0].error.as_deref().unwrap().contains("total timeout"), "{out:?}");
        assert!(out[1].error.as_deref().unwrap().starts_with("not started"), "{out:?}");
        assert_eq!(until_sleeping(&arg, 0).await, 0);
        let big = RunOptions { stdin: Some(vec![0; MAX_STDIN + 1]), total_timeout: None };
        assert!(big.validate().is_err());
    }

    #[test]
    fn ssh_runs_in_batch_mode_with_the_options_given() {
        let s =
            ExecSpec { worker: Worker::Ssh { options: vec!["-p".into(), "2222".into()] }, ..spec("uname -n", None) };
        let inv = command_line(&s, &Target { node: "n1".into(), address: "127.0.0.2".into() });
        assert_eq!(inv.program, "ssh");
        assert_eq!(
            inv.args,
            ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-p", "2222", "127.0.0.2", "--", "uname -n"]
        );
        let mut c = CopySpec {
            worker: s.worker.clone(),
            source: "/etc/hostname".into(),
            dest: "/tmp/h".into(),
            recursive: false,
            pull: false,
            fanout: 1,
            connect_timeout: Duration::from_secs(5),
            command_timeout: None,
        };
        let target = Target { node: "n1".into(), address: "127.0.0.2".into() };
        let inv = copy_line(&c, &target);
        assert_eq!(inv.program, "scp");
        assert!(inv.args.windows(2).any(|w| w == ["-P", "2222"]), "{:?}", inv.args);
        assert_eq!(inv.args.last().unwrap(), "127.0.0.2:/tmp/h");
        // rcopy -r: from the node's address into DEST/NAME.node.
        c.pull = true;
        c.recursive = true;
        c.source = "/var/log/".into();
        c.dest = "/srv/logs/".into();
        let inv = copy_line(&c, &target);
        assert!(inv.args.contains(&"-r".to_string()), "{:?}", inv.args);
        assert_eq!(inv.args[inv.args.len() - 2..], ["127.0.0.2:/var/log/", "/srv/logs/log.n1"]);
        c.source = "/".into();
        assert!(c.validate().is_err());
    }
}
