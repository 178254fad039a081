//! Following a job to its end (`--wait`, `kiln job watch`), as its
//! progress is committed: no fixed-interval polling.
//!
//! The job's log lines and its end come by the long poll
//! ([`Request::JobWait`]): the daemon answers as soon as a line is
//! committed, and only then. A node-set opcode commits a line when it
//! starts and when it ends, not per node, so a progress bar fed by the long
//! poll alone would stand still between them; on a terminal the bar also
//! follows the event stream ([`Request::Events`], on a second connection),
//! where each node's committed end or failure moves it on. Each long-poll
//! answer sets the bar to the daemon's own count.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kiln_actors::EventKind;
use kiln_actors::jobs::JobView;
use kiln_actors::protocol::{Request, Response};
use kiln_store::JobId;

use super::{Failure, call, unexpected};
use crate::connection::Connection;
use crate::output;

/// How long the daemon may hold one long poll. It answers as soon as
/// something is committed; this only bounds how long one request waits
/// when nothing is (a job queued behind others, a long sleep).
const LONG_POLL: Duration = Duration::from_secs(60);

/// Where [`follow_job`] prints the job's log lines as they come.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum LogOut {
    None,
    /// `TIME [LEVEL: ]MESSAGE`, for people.
    Text,
    /// One JSON object per line, for scripts.
    JsonLines,
}

/// A progress bar for a followed job, shown on a terminal only.
pub(super) struct Bar {
    /// The node set whose committed node ends move the bar on; `None`:
    /// only the long poll's answers do.
    pub nodes: Option<String>,
}

/// Follows a job with the long poll until it ends; prints its log lines
/// (`log`) or a progress bar on a terminal (`bar`). Returns the job as it
/// ended.
pub(super) async fn follow_job(
    conn: &mut Connection,
    socket: &Path,
    id: JobId,
    log: LogOut,
    bar: Option<Bar>,
) -> Result<JobView, Failure> {
    let progress = match bar {
        Some(bar) if std::io::stderr().is_terminal() => Some(Progress::start(socket, id, bar.nodes)),
        _ => None,
    };
    let mut after = 0;
    loop {
        let wait = Request::JobWait { id, after_serial: after, timeout_ms: LONG_POLL.as_millis() as u64 };
        let change = match call(conn, wait).await? {
            Response::JobChange(c) => c,
            other => return Err(unexpected(other)),
        };
        for entry in &change.log {
            after = after.max(entry.serial);
            match log {
                LogOut::None => {}
                LogOut::Text => println!("{}", output::log_line(entry)),
                LogOut::JsonLines => output::json_line(entry),
            }
        }
        if let (Some(progress), Some((done, total))) = (&progress, change.progress) {
            progress.set(done, total);
        }
        if change.status.is_finished() {
            drop(progress);
            return match call(conn, Request::JobShow { id }).await? {
                Response::Job(job) => Ok(job),
                other => Err(unexpected(other)),
            };
        }
    }
}

/// A job's progress bar, and the task that moves it on at each committed
/// node end; both go when it drops.
struct Progress {
    bar: ProgressBar,
    events: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(socket: &Path, id: JobId, nodes: Option<String>) -> Progress {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("job {msg} [{bar:40}] {pos}/{len} nodes ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(id.to_string());
        let events = tokio::spawn(follow_node_ends(socket.to_path_buf(), nodes, bar.clone()));
        Progress { bar, events }
    }

    /// The daemon's count: `done` of `total` nodes of the running opcode.
    /// Node ends may have moved the bar past a count taken just before
    /// them; a new opcode (another total) starts over.
    fn set(&self, done: u64, total: u64) {
        if self.bar.length() != Some(total) {
            self.bar.set_length(total);
            self.bar.set_position(done);
        } else {
            self.bar.set_position(done.max(self.bar.position()));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.events.abort();
        self.bar.finish_and_clear();
    }
}

/// Moves `bar` on at each committed end or failure of a node of `nodes`.
/// The bar is a comfort: when the events cannot be followed, the long
/// poll's answers still move it.
async fn follow_node_ends(socket: std::path::PathBuf, nodes: Option<String>, bar: ProgressBar) {
    let Some(nodes) = nodes else { return };
    let Ok(mut conn) = Connection::connect(&socket).await else { return };
    let request = Request::Events {
        follow: true,
        nodes: Some(nodes),
        kinds: vec![EventKind::End, EventKind::Error],
        since: None,
    };
    if conn.send_request(&request).await.is_err() {
        return;
    }
    loop {
        match conn.next_response().await {
            Ok(Response::Event(_)) => {
                if bar.length().is_some_and(|len| bar.position() < len) {
                    bar.inc(1);
                }
            }
            Ok(Response::EventsCaughtUp) => {}
            _ => return,
        }
    }
}
