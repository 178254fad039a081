//! The admin socket server: accepts connections on the Unix socket, checks
//! each peer's uid, and hands each request read from its
//! [`Connection`] to [`crate::dispatch`].
//!
//! One task per connection; the framing, the hello and the per-frame
//! limits are the [`Connection`]'s, so a connection's task here only says
//! what each request is answered with. A connection that breaks the protocol (wrong
//! hello, oversized frame, a frame that never finishes, idle too long) gets
//! an error frame and is closed; a malformed but complete frame gets an
//! error response and the connection goes on. Nothing a client sends can
//! stop the daemon, and [`crate::limits`] keeps one client from starving
//! the others.
//!
//! When the site runs on threads of its own ([`Site::own_threads`]),
//! [`start`] runs the accept loop and every connection task on an arbiter
//! of their own: encoding, decoding and socket I/O for many clients then
//! leave the node actors' thread. A connection reaches the site only by
//! messages, which cross threads as they are. The listener is bound by
//! [`bind`] as a std socket and taken into tokio where it is served, so it
//! is registered with the event loop that polls it.

use std::ops::ControlFlow;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use kiln_actors::codec::CodecError;
use kiln_actors::protocol::{Live, Request, Response};
use kiln_actors::threads::OwnArbiter;
use kiln_actors::{KilnError, Site};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::InForce;
use crate::connection::{Connection, Incoming, protocol_error};
use crate::limits::{Admit, Gate, Limits};

/// The server's settings.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub socket: PathBuf,
    pub mode: u32,
    pub allowed_uids: Vec<u32>,
    pub max_frame: usize,
    /// Connections, frame and idle timeouts (see [`crate::limits`]).
    pub limits: Limits,
    /// The configuration in force, for `kiln status`.
    pub in_force: Arc<InForce>,
}

/// Binds the socket: refuses to take over one a live daemon answers on,
/// removes a stale one, and creates it with the configured mode. The
/// listener is a std one, set non-blocking, for [`serve`] to take into the
/// event loop that serves it.
pub fn bind(cfg: &AdminConfig) -> anyhow::Result<std::os::unix::net::UnixListener> {
    let path = &cfg.socket;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another kiln daemon is listening on {}; stop it or pick another --socket", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    // Create the socket with no access for anyone but the owner, then widen
    // it to the configured mode: no window in which others can connect.
    // SAFETY: umask only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    listener.set_nonblocking(true).with_context(|| format!("cannot make {} non-blocking", path.display()))?;
    Ok(listener)
}

/// The admin server, running.
pub struct Server {
    /// Its arbiter, when it has one: kept until the server is dropped, so
    /// the connections still answering after the accept loop ended (during
    /// a shutdown's grace period) keep their thread.
    _arbiter: Option<OwnArbiter>,
    done: Option<oneshot::Receiver<()>>,
}

impl Server {
    /// Waits until the accept loop has ended (and the socket is removed).
    pub async fn stopped(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

/// Starts [`serve`]: on an arbiter of its own when the site has threads
/// of its own, else on the current one.
pub fn start(
    listener: std::os::unix::net::UnixListener,
    cfg: AdminConfig,
    site: Site,
    shutdown: watch::Receiver<bool>,
) -> Server {
    let (done_tx, done) = oneshot::channel();
    let arbiter = site.own_threads().then(OwnArbiter::start);
    let serving = async move {
        serve(listener, cfg, site, shutdown).await;
        let _ = done_tx.send(());
    };
    match &arbiter {
        Some(arbiter) => {
            arbiter.handle().spawn(serving);
        }
        None => {
            actix::spawn(serving);
        }
    }
    Server { _arbiter: arbiter, done: Some(done) }
}

/// Accepts connections until `shutdown` turns true, then removes the socket.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    cfg: AdminConfig,
    site: Site,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(socket = %cfg.socket.display(), error = %e, "cannot serve the admin socket");
            return remove_socket(&cfg.socket);
        }
    };
    let gate = Gate::new(&cfg.limits);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match gate.admit() {
                    Admit::Serve(slot) => {
                        let site = site.clone();
                        let cfg = cfg.clone();
                        let stop = shutdown.clone();
                        actix::spawn(async move {
                            connection(stream, &cfg, site, stop).await;
                            drop(slot);
                        });
                    }
                    Admit::Refuse(permit) => {
                        tracing::warn!(max = cfg.limits.max_connections, "refused an admin connection: too many");
                        let (gate, max_frame) = (gate.clone(), cfg.max_frame);
                        actix::spawn(async move { gate.refuse(stream, max_frame, permit).await });
                    }
                    Admit::Drop => drop(stream),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    remove_socket(&cfg.socket);
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(socket = %path.display(), error = %e, "cannot remove the socket");
    }
}

/// Serves one client: checks its uid, takes its hello, then answers its
/// requests until it goes away, breaks the protocol or the daemon stops.
async fn connection(stream: UnixStream, cfg: &AdminConfig, site: Site, mut stop: watch::Receiver<bool>) {
    let mut conn = Connection::accepted(stream, cfg.max_frame, cfg.limits.frame_timeout);
    match conn.peer_uid() {
        Ok(uid) if cfg.allowed_uids.contains(&uid) => {}
        Ok(uid) => {
            tracing::warn!(uid, "refused an admin connection from a uid that is not allowed");
            let error = KilnError::Protocol(format!("uid {uid} may not use this socket"));
            conn.refuse(error, cfg.limits.frame_timeout).await;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the peer's credentials; closing");
            return;
        }
    }
    if !conn.accept_hello().await {
        return;
    }
    loop {
        let request = match conn.read_request(cfg.limits.idle_timeout, &mut stop).await {
            Incoming::Request(request) => request,
            Incoming::Malformed(e) => {
                let slot = site.metrics.admin_request(None);
                site.metrics.admin_error(slot);
                if conn.send(protocol_error(e.to_string())).await.is_err() {
                    return;
                }
                continue;
            }
            Incoming::End => return,
        };
        if answer(&mut conn, cfg, &site, request).await.is_break() {
            return;
        }
    }
}

/// Answers one request: streams events or a live fanout's progress, or
/// sends the one answer. Breaks when the connection is over.
async fn answer(conn: &mut Connection, cfg: &AdminConfig, site: &Site, request: Request) -> ControlFlow<()> {
    let slot = site.metrics.admin_request(Some(request.kind_index()));
    let decoded = std::time::Instant::now();
    if let Request::Events { follow, nodes, kinds, since } = request {
        let filter = match crate::dispatch::event_filter(site, nodes.as_deref(), kinds).await {
            Ok(f) => f,
            Err(e) => {
                site.metrics.admin_error(slot);
                return sent(conn.send(Response::Error(e)).await);
            }
        };
        crate::dispatch::stream_events(conn, site, follow, since, filter).await;
        return if follow { ControlFlow::Break(()) } else { ControlFlow::Continue(()) };
    }
    if let Request::NodeListPages { nodes, state, maintenance, bmc, stale } = request {
        let list = kiln_actors::ListNodes { nodes, state, maintenance, bmc, stale };
        let failed = stream_nodes(conn, site, list).await?;
        site.metrics.admin_answered(slot, decoded.elapsed());
        if failed {
            site.metrics.admin_error(slot);
        }
        return ControlFlow::Continue(());
    }
    if let Request::Exec { live, .. } | Request::Copy { live, .. } = &request
        && *live != Live::AtEnd
    {
        let Some(failed) = stream_fanout(conn, site, request).await else { return ControlFlow::Break(()) };
        site.metrics.admin_answered(slot, decoded.elapsed());
        if failed {
            site.metrics.admin_error(slot);
        }
        return ControlFlow::Continue(());
    }
    let response = if matches!(request, Request::Exec { .. } | Request::Copy { .. }) {
        // A fanout command runs until its client goes away (Ctrl-C):
        // dropping the run kills the commands still running.
        tokio::select! {
            r = crate::dispatch::handle(site, request) => r,
            _ = conn.closed() => return ControlFlow::Break(()),
        }
    } else {
        crate::dispatch::handle(site, request).await
    };
    let response = match response {
        Response::Status(status) => Response::Status(cfg.in_force.fill(status)),
        other => other,
    };
    site.metrics.admin_answered(slot, decoded.elapsed());
    if matches!(response, Response::Error(_)) {
        site.metrics.admin_error(slot);
    }
    sent(conn.send(response).await)
}

/// Goes on after a response was sent; a connection that could not take it
/// is over.
fn sent(result: Result<(), CodecError>) -> ControlFlow<()> {
    match result {
        Ok(()) => ControlFlow::Continue(()),
        Err(_) => ControlFlow::Break(()),
    }
}

/// The rows of the first page of a node list: small enough to be on the
/// screen at once, large enough that a list of up to this many nodes is one
/// page, laid out as a whole.
const FIRST_PAGE: usize = 1_000;

/// The rows of every later page: a frame of a few hundred kilobytes,
/// encoded on a blocking thread, so that other clients' answers come
/// between two pages.
const PAGE: usize = 4_096;

/// Streams a node list page by page ([`kiln_actors::Listing`]): the next
/// page is produced while the one before is written, so the daemon holds
/// at most two pages of the list, and a client that goes away (a write
/// fails) or stops reading (the frame timeout) ends it. Returns whether it
/// failed; breaks when the connection is over.
async fn stream_nodes(conn: &mut Connection, site: &Site, list: kiln_actors::ListNodes) -> ControlFlow<(), bool> {
    let mut listing = match kiln_actors::Listing::start(site.router(), list).await {
        Ok(listing) => listing,
        Err(e) => {
            sent(conn.send(Response::Error(e)).await)?;
            return ControlFlow::Continue(true);
        }
    };
    let name_width = u32::try_from(listing.name_width()).unwrap_or(u32::MAX);
    let mut next = listing.next_page(FIRST_PAGE).await;
    loop {
        let page = match next {
            Ok(page) => page,
            // A page the store could not read ends the list with its error.
            Err(e) => {
                sent(conn.send(Response::Error(e)).await)?;
                return ControlFlow::Continue(true);
            }
        };
        let last = listing.is_done();
        if page.is_empty() && !last {
            // Every node of this page was filtered out: nothing to send.
            next = listing.next_page(PAGE).await;
            continue;
        }
        let frame = Response::NodePage { nodes: page, name_width, last };
        if last {
            sent(conn.send(frame).await)?;
            return ControlFlow::Continue(false);
        }
        let (written, following) = futures::join!(conn.send(frame), listing.next_page(PAGE));
        sent(written)?;
        next = following;
    }
}

/// How many progress reports of a live fanout may wait for the client;
/// past this the commands wait (their pipes fill), as clush's do on a
/// terminal that does not keep up.
const LIVE_BACKLOG: usize = 1024;

/// The most reports sent in one frame: lines come in batches, so a
/// thousand chatty nodes cost a frame per batch, not per line.
const LIVE_BATCH: usize = 4096;

/// Streams a live fanout to its client: the lines its commands print and
/// each node's end as they come, then [`Response::Done`], or the error that
/// kept it from running. Returns whether it failed, or `None` when the
/// client went away: the run is dropped then, which kills its commands.
async fn stream_fanout(conn: &mut Connection, site: &Site, request: Request) -> Option<bool> {
    use kiln_actors::exec::{Progress, Sink};
    let lines = matches!(request, Request::Exec { live: Live::Lines, .. } | Request::Copy { live: Live::Lines, .. });
    let (tx, mut rx) = mpsc::channel(LIVE_BACKLOG);
    let run = async move {
        let sink = Sink::new(tx, lines);
        crate::dispatch::fanout_run(site, request, Some(&sink)).await
    };
    tokio::pin!(run);
    let mut result = None;
    loop {
        tokio::select! {
            biased;
            progress = rx.recv() => {
                let Some(first) = progress else { break };
                // What is waiting too, lines of a node before its end.
                let mut frames: Vec<Response> = Vec::new();
                let mut next = Some(first);
                let mut taken = 0;
                while let Some(p) = next.take() {
                    match (p, frames.last_mut()) {
                        (Progress::Line(line), Some(Response::ExecLines(batch))) => batch.push(line),
                        (Progress::Line(line), _) => frames.push(Response::ExecLines(vec![line])),
                        (Progress::Done { index, outcome }, _) => frames.push(Response::ExecNode { index, outcome }),
                    }
                    taken += 1;
                    if taken < LIVE_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                for frame in frames {
                    if conn.send(frame).await.is_err() {
                        return None;
                    }
                }
            }
            ended = &mut run, if result.is_none() => result = Some(ended),
            _ = conn.closed() => return None,
        }
    }
    let result = match result {
        Some(r) => r,
        None => run.await,
    };
    let (last, failed) = match result {
        Ok(_) => (Response::Done, false),
        Err(e) => (Response::Error(e), true),
    };
    conn.send(last).await.ok()?;
    Some(failed)
}
