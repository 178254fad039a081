//! The CLI's side of the admin socket: connect, say hello, send requests.

use std::path::{Path, PathBuf};

use kiln_actors::codec::{self, DEFAULT_MAX_FRAME};
use kiln_actors::parts::Joiner;
use kiln_actors::protocol::{PROTOCOL_VERSION, Request, Response};
use tokio::net::UnixStream;

/// Why the CLI could not talk to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the kiln daemon at {path} ({source}); is `kiln serve` running? (set --socket or KILN_SOCKET)"
    )]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the connection to the daemon")]
    Lost(#[from] codec::CodecError),
    #[error("the daemon closed the connection")]
    Closed,
    #[error("the daemon refused the session: {0}")]
    Refused(String),
}

/// The socket path the CLI uses: `--socket`, then `KILN_SOCKET`, then the
/// default data dir's socket.
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("KILN_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    crate::config::default_data_dir().join("kiln.sock")
}

/// An open admin session.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connects and completes the hello exchange.
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect { path: path.display().to_string(), source })?;
        let mut client = Client { stream };
        let hello =
            Request::Hello { version: PROTOCOL_VERSION, client: format!("kiln-cli {}", env!("CARGO_PKG_VERSION")) };
        match client.call(&hello).await? {
            Response::Hello { .. } => Ok(client),
            Response::Error(e) => Err(ClientError::Refused(e.to_string())),
            other => Err(ClientError::Refused(format!("unexpected answer to hello: {other:?}"))),
        }
    }

    /// Sends one request and reads one response.
    pub async fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        codec::write_message(&mut self.stream, req).await?;
        self.next().await
    }

    /// Reads the next response (for streams such as events), joining the
    /// parts of one longer than a frame.
    pub async fn next(&mut self) -> Result<Response, ClientError> {
        let mut joiner = Joiner::default();
        loop {
            let len = codec::read_len(&mut self.stream, DEFAULT_MAX_FRAME).await?.ok_or(ClientError::Closed)?;
            let body = codec::read_body(&mut self.stream, len).await?;
            if let Some(response) = joiner.take(&body)? {
                return Ok(response);
            }
        }
    }

    /// Sends a request without waiting for its answer (streams).
    pub async fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        codec::write_message(&mut self.stream, req).await?;
        Ok(())
    }
}
