//! The member's ears: one session that `LISTEN`s for node requests and
//! their answers ([`super::requests`]) and for committed events
//! ([`super::events`]), and passes each wake-up on.
//!
//! A thread and session of its own, always connected (its runtime runs all
//! the time, unlike the store's, which runs only inside a store call). A
//! lost session is opened again after a pause; [`Wake::Resync`] then tells
//! every waiter to look again, since notifications sent meanwhile are
//! gone.

use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};

use super::events::EVENTS;
use super::requests::{ANSWERS, REQUESTS};
use super::{PgOptions, connect_hearing};
use crate::StoreError;

/// What woke the listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A request was written for a node of this member.
    Requests(String),
    /// The request with this id was answered.
    Answer(i64),
    /// A node was created or renamed (`Some(name)`), or deleted (`None`),
    /// by whichever member ([`DIRECTORY`]).
    Directory { node: String, name: Option<String> },
    /// Some member committed events.
    Events,
    /// The session was opened (again): wake-ups may have been missed.
    Resync,
}

/// The channel a node's creation, rename or deletion is told on, by a
/// trigger (PostgreSQL migration 11): `UUID NAME`, or `UUID` when deleted.
pub const DIRECTORY: &str = "kiln_directory";

/// How long a lost listening session waits before it is opened again.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// The listening session and its thread; dropped, both stop.
pub struct Listener {
    wakes: broadcast::Sender<Wake>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Starts listening as member `options.member`.
    pub fn start(options: PgOptions) -> Result<Listener, StoreError> {
        let (wakes, _) = broadcast::channel(4096);
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io { what: "cannot start the listener's runtime".into(), source })?;
        let sender = wakes.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-listener".into())
            .spawn(move || runtime.block_on(listen(options, sender, stopped)))
            .map_err(|source| StoreError::Io { what: "cannot start the listener thread".into(), source })?;
        Ok(Listener { wakes, stop: Some(stop), thread: Some(thread) })
    }

    /// Where the wake-ups go; each receiver gets every one from now on.
    pub fn wakes(&self) -> broadcast::Sender<Wake> {
        self.wakes.clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn listen(options: PgOptions, wakes: broadcast::Sender<Wake>, mut stop: oneshot::Receiver<()>) {
    loop {
        let (notes, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let opened = async {
            let client = connect_hearing(&options, false, Some(notes)).await?;
            client
                .batch_execute(&format!("LISTEN {REQUESTS}; LISTEN {ANSWERS}; LISTEN {DIRECTORY}; LISTEN {EVENTS}"))
                .await
                .map_err(|e| super::db_error(&options.target, e))?;
            Ok::<_, StoreError>(client)
        };
        let client = tokio::select! {
            _ = &mut stop => return,
            opened = opened => opened,
        };
        match client {
            Ok(_client) => {
                let _ = wakes.send(Wake::Resync);
                loop {
                    tokio::select! {
                        _ = &mut stop => return,
                        note = heard.recv() => match note {
                            Some(note) => {
                                if let Some(wake) = wake_of(note.channel(), note.payload()) {
                                    let _ = wakes.send(wake);
                                }
                            }
                            // The session ended: open it again.
                            None => break,
                        },
                    }
                }
            }
            Err(e) => tracing::warn!(message = "Cannot listen for node requests; trying again.", error = %e),
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(REOPEN_AFTER) => {}
        }
    }
}

fn wake_of(channel: &str, payload: &str) -> Option<Wake> {
    match channel {
        REQUESTS => Some(Wake::Requests(payload.to_string())),
        ANSWERS => payload.parse().ok().map(Wake::Answer),
        DIRECTORY => Some(match payload.split_once(' ') {
            Some((node, name)) => Wake::Directory { node: node.to_string(), name: Some(name.to_string()) },
            None => Wake::Directory { node: payload.to_string(), name: None },
        }),
        EVENTS => Some(Wake::Events),
        _ => None,
    }
}
