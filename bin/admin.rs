//! The admin socket server: accepts connections on the Unix socket, checks
//! each peer's uid, speaks the framed protocol, and hands each request to
//! [`crate::dispatch`].
//!
//! One task per connection. A connection that breaks the protocol (wrong
//! hello, oversized frame, a frame that never finishes, idle too long) gets
//! an error frame and is closed; a malformed but complete frame gets an
//! error response and the connection goes on. Nothing a client sends can
//! stop the daemon, and [`crate::limits`] keeps one client from starving
//! the others.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use kiln_actors::codec::{self, CodecError};
use kiln_actors::protocol::{Live, PROTOCOL_VERSION, Request, Response};
use kiln_actors::{KilnError, Site};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use crate::config::InForce;
use crate::limits::{Admit, Gate, Limits, secs};

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
/// removes a stale one, and creates it with the configured mode.
pub fn bind(cfg: &AdminConfig) -> anyhow::Result<UnixListener> {
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
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(listener)
}

/// Accepts connections until `shutdown` turns true, then removes the socket.
pub async fn serve(listener: UnixListener, cfg: AdminConfig, site: Site, mut shutdown: watch::Receiver<bool>) {
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

/// Writes one response, in parts when it is longer than a frame
/// ([`kiln_actors::parts`]); a client that does not read it within the
/// frame timeout (its socket buffer stays full) gets nothing more and is
/// dropped.
async fn send(stream: &mut UnixStream, resp: Response, cfg: &AdminConfig) -> Result<(), CodecError> {
    let frames = frames_of(resp, cfg.max_frame).await?;
    let write = async {
        for frame in &frames {
            stream.write_all(frame).await?;
        }
        stream.flush().await
    };
    match tokio::time::timeout(cfg.limits.frame_timeout, write).await {
        Ok(written) => Ok(written?),
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
    }
}

/// Answers with more entries than this are encoded on a blocking thread.
/// Encoding runs at roughly 100-200 MB/s, a few hundred bytes an entry:
/// below this it takes about a millisecond, and a thread hand-off would
/// cost the short answers more than it saves.
const INLINE_ENTRIES: usize = 1_000;

/// The frames of `resp`. A long answer is encoded on a blocking thread:
/// this task shares its thread with the actors, and encoding `kiln job list
/// --limit 0` over a million jobs (196 MB) there held every job submission
/// for one to three seconds.
async fn frames_of(resp: Response, max_frame: usize) -> Result<Vec<Vec<u8>>, CodecError> {
    if resp.entries() <= INLINE_ENTRIES {
        return kiln_actors::parts::answer_frames(&resp, max_frame);
    }
    tokio::task::spawn_blocking(move || kiln_actors::parts::answer_frames(&resp, max_frame))
        .await
        .map_err(|e| CodecError::Encode(format!("the encoding thread failed: {e}")))?
}

fn protocol_error(text: impl Into<String>) -> Response {
    Response::Error(KilnError::Protocol(text.into()))
}

/// Serves one client.
async fn connection(mut stream: UnixStream, cfg: &AdminConfig, site: Site, mut stop: watch::Receiver<bool>) {
    let frame_timeout = cfg.limits.frame_timeout;
    match stream.peer_cred() {
        Ok(cred) if cfg.allowed_uids.contains(&cred.uid()) => {}
        Ok(cred) => {
            tracing::warn!(uid = cred.uid(), "refused an admin connection from a uid that is not allowed");
            // Take the client's hello first, so it reads the refusal instead
            // of a broken pipe.
            let _ = tokio::time::timeout(
                cfg.limits.frame_timeout,
                codec::read_message::<_, Request>(&mut stream, cfg.max_frame),
            )
            .await;
            let _ = send(&mut stream, protocol_error(format!("uid {} may not use this socket", cred.uid())), cfg).await;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the peer's credentials; closing");
            return;
        }
    }
    // The hello, within the frame timeout.
    let hello =
        tokio::time::timeout(frame_timeout, codec::read_message::<_, Request>(&mut stream, cfg.max_frame)).await;
    match hello {
        Ok(Ok(Some(Request::Hello { version, .. }))) if version == PROTOCOL_VERSION => {
            let ok =
                Response::Hello { version: PROTOCOL_VERSION, server: format!("kiln {}", env!("CARGO_PKG_VERSION")) };
            if send(&mut stream, ok, cfg).await.is_err() {
                return;
            }
        }
        Ok(Ok(Some(Request::Hello { version, .. }))) => {
            let text = format!(
                "protocol version {version} is not supported: this daemon speaks version {PROTOCOL_VERSION}; use the kiln CLI of the same release"
            );
            let _ = send(&mut stream, protocol_error(text), cfg).await;
            return;
        }
        Ok(Ok(Some(_))) => {
            let _ = send(&mut stream, protocol_error("the first message must be a hello"), cfg).await;
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            let _ = send(&mut stream, protocol_error(e.to_string()), cfg).await;
            return;
        }
        Err(_) => {
            let _ = send(&mut stream, protocol_error(format!("no hello within {}", secs(frame_timeout))), cfg).await;
            return;
        }
    }
    loop {
        // Between requests: the next frame's first byte, within the idle timeout.
        let first = tokio::select! {
            first = tokio::time::timeout(cfg.limits.idle_timeout, stream.read_u8()) => first,
            _ = stop.changed() => return,
        };
        let first = match first {
            Ok(Ok(byte)) => byte,
            Ok(Err(_)) => return,
            Err(_) => {
                let text = format!("idle for {}; closing the connection", secs(cfg.limits.idle_timeout));
                let _ = send(&mut stream, protocol_error(text), cfg).await;
                return;
            }
        };
        // The rest of the frame, within the frame timeout of its first byte.
        let frame = tokio::time::timeout(frame_timeout, async {
            let head = [first];
            let mut rest = (&head[..]).chain(&mut stream);
            match codec::read_len(&mut rest, cfg.max_frame).await? {
                Some(len) => codec::read_body(&mut rest, len).await.map(Some),
                None => Ok(None),
            }
        })
        .await;
        let body = match frame {
            Ok(Ok(Some(body))) => body,
            Ok(Ok(None)) => return,
            Ok(Err(e @ CodecError::TooLarge { .. })) => {
                let _ = send(&mut stream, protocol_error(e.to_string()), cfg).await;
                let _ = stream.shutdown().await;
                return;
            }
            Ok(Err(_)) => return,
            Err(_) => {
                let text = format!("frame not completed within {}", secs(frame_timeout));
                let _ = send(&mut stream, protocol_error(text), cfg).await;
                return;
            }
        };
        let request: Request = match codec::decode(&body) {
            Ok(r) => r,
            Err(e) => {
                let slot = site.metrics.admin_request(None);
                site.metrics.admin_error(slot);
                if send(&mut stream, protocol_error(e.to_string()), cfg).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let slot = site.metrics.admin_request(Some(request.kind_index()));
        let decoded = std::time::Instant::now();
        if let Request::Events { follow, nodes, kinds, since } = request {
            let filter = match crate::dispatch::event_filter(&site, nodes.as_deref(), kinds) {
                Ok(f) => f,
                Err(e) => {
                    site.metrics.admin_error(slot);
                    if send(&mut stream, Response::Error(e), cfg).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            crate::dispatch::stream_events(&mut stream, &site, follow, since, filter, frame_timeout).await;
            if follow {
                return;
            }
            continue;
        }
        if let Request::Exec { live, .. } | Request::Copy { live, .. } = &request
            && *live != Live::AtEnd
        {
            let Some(failed) = stream_fanout(&mut stream, cfg, &site, request).await else { return };
            site.metrics.admin_answered(slot, decoded.elapsed());
            if failed {
                site.metrics.admin_error(slot);
            }
            continue;
        }
        let response = if matches!(request, Request::Exec { .. } | Request::Copy { .. }) {
            // A fanout command runs until its client goes away (Ctrl-C):
            // dropping the run kills the commands still running.
            tokio::select! {
                r = crate::dispatch::handle(&site, request) => r,
                _ = closed(&stream) => return,
            }
        } else {
            crate::dispatch::handle(&site, request).await
        };
        let response = match response {
            Response::Status(status) => Response::Status(cfg.in_force.fill(status)),
            other => other,
        };
        site.metrics.admin_answered(slot, decoded.elapsed());
        if matches!(response, Response::Error(_)) {
            site.metrics.admin_error(slot);
        }
        if send(&mut stream, response, cfg).await.is_err() {
            return;
        }
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
async fn stream_fanout(stream: &mut UnixStream, cfg: &AdminConfig, site: &Site, request: Request) -> Option<bool> {
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
                    if send(stream, frame, cfg).await.is_err() {
                        return None;
                    }
                }
            }
            ended = &mut run, if result.is_none() => result = Some(ended),
            _ = closed(stream) => return None,
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
    send(stream, last, cfg).await.ok()?;
    Some(failed)
}

/// Resolves when the client has closed its end (without consuming any byte
/// it may have sent).
async fn closed(stream: &UnixStream) {
    use std::os::fd::AsRawFd;
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            let mut byte = [0u8; 1];
            // SAFETY: peeks at most one byte into a local buffer of one byte.
            let n = unsafe {
                libc::recv(stream.as_raw_fd(), byte.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
            };
            if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n) }
        });
        match peeked {
            Ok(0) => return,
            // The client sent more while waiting: it is still there.
            Ok(_) => std::future::pending::<()>().await,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
}
