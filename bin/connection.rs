//! One admin connection, framed: the only place in `bin/` that reads or
//! writes the admin socket's bytes.
//!
//! Why one type: the daemon's connection task, the CLI client and the event
//! stream all speak the same protocol ([`kiln_actors::protocol`], framed by
//! [`kiln_actors::codec`], long answers in [`kiln_actors::parts`]), and its
//! rules (the hello first, the frame limit, a frame finished within
//! `frame_timeout`, an answer read within `frame_timeout`, long answers in
//! parts) used to be spelled out in four files. As mini-redis's
//! `Connection`, [`Connection`] owns the socket and a read buffer and trades
//! typed messages: the daemon reads [`Request`]s and sends [`Response`]s,
//! the CLI the other way round. Everything above it (what a request means,
//! what the CLI prints) deals in messages, never in bytes.
//!
//! The read side is buffered, so a request or a short answer costs one
//! `read` rather than one for its length and one for its body; each frame
//! is written with one `write`.

use std::path::Path;
use std::time::Duration;

use kiln_actors::KilnError;
use kiln_actors::codec::{self, CodecError, DEFAULT_MAX_FRAME};
use kiln_actors::parts::Joiner;
use kiln_actors::protocol::{PROTOCOL_VERSION, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::watch;

/// Why the CLI could not talk to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(
        "cannot connect to the kiln daemon at {path} ({source}); is `kiln serve` running? (set --socket or KILN_SOCKET)"
    )]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the connection to the daemon")]
    Lost(#[from] CodecError),
    #[error("the daemon closed the connection")]
    Closed,
    #[error("the daemon refused the session: {0}")]
    Refused(String),
}

/// What the daemon reads between requests.
pub enum Incoming {
    /// The next request.
    Request(Request),
    /// A whole frame that is not a request: answered with an error, and the
    /// connection goes on.
    Malformed(CodecError),
    /// The connection is over: the client went away, the daemon is
    /// stopping, or the client broke the protocol (and was told why).
    End,
}

/// Answers with more entries than this are encoded on a blocking thread.
/// Encoding runs at roughly 100-200 MB/s, a few hundred bytes an entry:
/// below this it takes about a millisecond, and a thread hand-off would
/// cost the short answers more than it saves.
const INLINE_ENTRIES: usize = 1_000;

/// An open admin connection, either end.
pub struct Connection {
    stream: BufReader<UnixStream>,
    /// The largest frame read (the daemon's `max_frame`; a client takes
    /// [`DEFAULT_MAX_FRAME`]), and the largest part written.
    max_frame: usize,
    /// The daemon's side: how long a frame may take to arrive once begun,
    /// and an answer to be taken by the client. `None` on the client's side,
    /// which waits as long as the daemon takes.
    frame_timeout: Option<Duration>,
}

impl Connection {
    /// The daemon's end of an accepted connection.
    pub fn accepted(stream: UnixStream, max_frame: usize, frame_timeout: Duration) -> Connection {
        Connection { stream: BufReader::new(stream), max_frame, frame_timeout: Some(frame_timeout) }
    }

    /// The CLI's end: connects and completes the hello exchange.
    pub async fn connect(path: &Path) -> Result<Connection, ConnectionError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ConnectionError::Connect { path: path.display().to_string(), source })?;
        Connection::hello(stream).await
    }

    /// The CLI's end of a connected stream, after the hello exchange.
    async fn hello(stream: UnixStream) -> Result<Connection, ConnectionError> {
        let mut conn = Connection { stream: BufReader::new(stream), max_frame: DEFAULT_MAX_FRAME, frame_timeout: None };
        let hello =
            Request::Hello { version: PROTOCOL_VERSION, client: format!("kiln-cli {}", env!("CARGO_PKG_VERSION")) };
        match conn.call(&hello).await? {
            Response::Hello { .. } => Ok(conn),
            Response::Error(e) => Err(ConnectionError::Refused(e.to_string())),
            other => Err(ConnectionError::Refused(format!("unexpected answer to hello: {other:?}"))),
        }
    }

    // ----- the client's side ---------------------------------------------------------

    /// Sends one request and reads its answer.
    pub async fn call(&mut self, req: &Request) -> Result<Response, ConnectionError> {
        self.send_request(req).await?;
        self.next_response().await
    }

    /// Sends a request without waiting for its answer (streams).
    pub async fn send_request(&mut self, req: &Request) -> Result<(), ConnectionError> {
        codec::write_message(self.stream.get_mut(), req).await?;
        Ok(())
    }

    /// Reads the next answer (or streamed response), joining the parts of
    /// one longer than a frame.
    pub async fn next_response(&mut self) -> Result<Response, ConnectionError> {
        let mut joiner = Joiner::default();
        loop {
            let len = codec::read_len(&mut self.stream, self.max_frame).await?.ok_or(ConnectionError::Closed)?;
            let body = codec::read_body(&mut self.stream, len).await?;
            if let Some(response) = joiner.take(&body)? {
                return Ok(response);
            }
        }
    }

    // ----- the daemon's side ---------------------------------------------------------

    /// The connecting process's uid.
    pub fn peer_uid(&self) -> std::io::Result<u32> {
        self.stream.get_ref().peer_cred().map(|cred| cred.uid())
    }

    /// Takes the client's hello and answers it. Returns whether the session
    /// goes on; when it does not, the client was told why (a version
    /// mismatch, no hello in time, something else first).
    pub async fn accept_hello(&mut self) -> bool {
        let text = match self.read_within(self.timeout()).await {
            Ok(Some(Request::Hello { version, .. })) if version == PROTOCOL_VERSION => {
                let ok = Response::Hello {
                    version: PROTOCOL_VERSION,
                    server: format!("kiln {}", env!("CARGO_PKG_VERSION")),
                };
                return self.send(ok).await.is_ok();
            }
            Ok(Some(Request::Hello { version, .. })) => format!(
                "protocol version {version} is not supported: this daemon speaks version {PROTOCOL_VERSION}; use the kiln CLI of the same release"
            ),
            Ok(Some(_)) => "the first message must be a hello".into(),
            Ok(None) => return false,
            Err(Some(e)) => e.to_string(),
            Err(None) => format!("no hello within {}", secs(self.timeout())),
        };
        let _ = self.send(protocol_error(text)).await;
        false
    }

    /// Refuses the session with `error`: takes the client's hello first
    /// (within `wait`), so that it reads the refusal instead of a broken pipe.
    pub async fn refuse(&mut self, error: KilnError, wait: Duration) {
        let _ = self.read_within(wait).await;
        let _ = self.send(Response::Error(error)).await;
    }

    /// Reads the next request: its first byte within `idle` (or until
    /// `stop` changes), the rest within the frame timeout. A client that
    /// breaks these rules or sends a frame above the limit is told so, and
    /// the connection ends.
    pub async fn read_request(&mut self, idle: Duration, stop: &mut watch::Receiver<bool>) -> Incoming {
        let first = tokio::select! {
            first = tokio::time::timeout(idle, async { self.stream.fill_buf().await.map(|b| !b.is_empty()) }) => first,
            _ = stop.changed() => return Incoming::End,
        };
        match first {
            Ok(Ok(true)) => {}
            Ok(Ok(false) | Err(_)) => return Incoming::End,
            Err(_) => {
                let text = format!("idle for {}; closing the connection", secs(idle));
                let _ = self.send(protocol_error(text)).await;
                return Incoming::End;
            }
        }
        let max = self.max_frame;
        let frame = tokio::time::timeout(self.timeout(), async {
            match codec::read_len(&mut self.stream, max).await? {
                Some(len) => codec::read_body(&mut self.stream, len).await.map(Some),
                None => Ok(None),
            }
        })
        .await;
        match frame {
            Ok(Ok(Some(body))) => match codec::decode(&body) {
                Ok(request) => Incoming::Request(request),
                Err(e) => Incoming::Malformed(e),
            },
            Ok(Ok(None)) => Incoming::End,
            Ok(Err(e @ CodecError::TooLarge { .. })) => {
                let _ = self.send(protocol_error(e.to_string())).await;
                let _ = self.stream.get_mut().shutdown().await;
                Incoming::End
            }
            Ok(Err(_)) => Incoming::End,
            Err(_) => {
                let text = format!("frame not completed within {}", secs(self.timeout()));
                let _ = self.send(protocol_error(text)).await;
                Incoming::End
            }
        }
    }

    /// Writes one response, in parts when it is longer than a frame
    /// ([`kiln_actors::parts`]); on the daemon's side, a client that does not
    /// take it within the frame timeout (its socket buffer stays full) gets
    /// nothing more, and the caller drops the connection.
    pub async fn send(&mut self, resp: Response) -> Result<(), CodecError> {
        let frames = frames_of(resp, self.max_frame).await?;
        let stream = self.stream.get_mut();
        let write = async {
            for frame in &frames {
                stream.write_all(frame).await?;
            }
            stream.flush().await
        };
        match self.frame_timeout {
            None => Ok(write.await?),
            Some(timeout) => match tokio::time::timeout(timeout, write).await {
                Ok(written) => Ok(written?),
                Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
            },
        }
    }

    /// Resolves when the client has closed its end, without consuming any
    /// byte it may have sent.
    pub async fn closed(&self) {
        use std::os::fd::AsRawFd;
        if !self.stream.buffer().is_empty() {
            // The client sent more while waiting: it is still there.
            return std::future::pending().await;
        }
        let stream = self.stream.get_ref();
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
                Ok(_) => std::future::pending::<()>().await,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
    }

    /// The daemon's frame timeout (a client never reads requests).
    fn timeout(&self) -> Duration {
        self.frame_timeout.unwrap_or(Duration::MAX)
    }

    /// One whole request within `wait`: `Err(None)` when the time ran out.
    async fn read_within(&mut self, wait: Duration) -> Result<Option<Request>, Option<CodecError>> {
        match tokio::time::timeout(wait, codec::read_message(&mut self.stream, self.max_frame)).await {
            Ok(read) => read.map_err(Some),
            Err(_) => Err(None),
        }
    }
}

/// An error answer for a client that broke the protocol.
pub fn protocol_error(text: impl Into<String>) -> Response {
    Response::Error(KilnError::Protocol(text.into()))
}

/// The frames of `resp`. A long answer is encoded on a blocking thread:
/// the daemon's connection tasks share their thread with the actors, and
/// encoding `kiln job list --limit 0` over a million jobs (196 MB) there
/// held every job submission for one to three seconds.
async fn frames_of(resp: Response, max_frame: usize) -> Result<Vec<Vec<u8>>, CodecError> {
    if resp.entries() <= INLINE_ENTRIES {
        return kiln_actors::parts::answer_frames(&resp, max_frame);
    }
    tokio::task::spawn_blocking(move || kiln_actors::parts::answer_frames(&resp, max_frame))
        .await
        .map_err(|e| CodecError::Encode(format!("the encoding thread failed: {e}")))?
}

/// A duration as the refusals word it: `30 s`.
fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon's end with a small frame limit and short timeouts, and the
    /// raw stream of its client.
    fn pair(max_frame: usize) -> (Connection, UnixStream) {
        let (daemon, client) = UnixStream::pair().unwrap();
        (Connection::accepted(daemon, max_frame, Duration::from_millis(200)), client)
    }

    fn never_stops() -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        rx
    }

    #[tokio::test]
    async fn a_session_trades_requests_and_long_answers_in_parts() {
        let (mut daemon, client) = pair(1024);
        let serve = async move {
            assert!(daemon.accept_hello().await);
            let mut stop = never_stops();
            match daemon.read_request(Duration::from_secs(5), &mut stop).await {
                Incoming::Request(Request::Status) => {}
                _ => panic!("expected a status request"),
            }
            // Longer than a frame: goes in parts.
            daemon.send(Response::Error(KilnError::InvalidInput("x".repeat(10_000)))).await.unwrap();
        };
        let ask = async move {
            let mut conn = Connection::hello(client).await.unwrap();
            conn.call(&Request::Status).await.unwrap()
        };
        let ((), answer) = tokio::join!(serve, ask);
        assert_eq!(answer, Response::Error(KilnError::InvalidInput("x".repeat(10_000))));
    }

    #[tokio::test]
    async fn another_protocol_version_is_refused_naming_both() {
        let (mut daemon, mut client) = pair(DEFAULT_MAX_FRAME);
        let hello = Request::Hello { version: PROTOCOL_VERSION + 1, client: "test".into() };
        codec::write_message(&mut client, &hello).await.unwrap();
        assert!(!daemon.accept_hello().await);
        let answer: Response = codec::read_message(&mut client, DEFAULT_MAX_FRAME).await.unwrap().unwrap();
        let text = format!("{answer:?}");
        assert!(text.contains(&format!("protocol version {}", PROTOCOL_VERSION + 1)), "{text}");
        assert!(text.contains(&format!("speaks version {PROTOCOL_VERSION}")), "{text}");
    }

    #[tokio::test]
    async fn an_idle_client_is_told_and_the_connection_ends() {
        let (mut daemon, mut client) = pair(DEFAULT_MAX_FRAME);
        let mut stop = never_stops();
        assert!(matches!(daemon.read_request(Duration::from_millis(50), &mut stop).await, Incoming::End));
        let answer: Response = codec::read_message(&mut client, DEFAULT_MAX_FRAME).await.unwrap().unwrap();
        assert!(format!("{answer:?}").contains("idle for 0.05 s"), "{answer:?}");
    }

    #[tokio::test]
    async fn a_frame_above_the_limit_is_refused_and_a_malformed_one_answered() {
        let (mut daemon, mut client) = pair(64);
        let mut stop = never_stops();
        client.write_all(&codec::frame_of(&[0xff; 3]).unwrap()).await.unwrap();
        assert!(matches!(daemon.read_request(Duration::from_secs(5), &mut stop).await, Incoming::Malformed(_)));
        client.write_all(&codec::frame_of(&[0; 65]).unwrap()).await.unwrap();
        assert!(matches!(daemon.read_request(Duration::from_secs(5), &mut stop).await, Incoming::End));
        let answer: Response = codec::read_message(&mut client, DEFAULT_MAX_FRAME).await.unwrap().unwrap();
        assert!(format!("{answer:?}").contains("larger than the limit"), "{answer:?}");
    }
}
