//! `kiln queue`: the job queue at a glance, and its drain flag.

use std::path::Path;

use kiln_actors::protocol::{Request, Response};

use super::{Failure, call_once, print, unexpected};
use crate::cli::QueueCommand;
use crate::output;

pub(super) async fn run(command: QueueCommand, socket: &Path, json: bool) -> Result<(), Failure> {
    let request = match command {
        QueueCommand::Drain { state } => Request::QueueDrain { on: state == "on" },
        QueueCommand::Status => Request::QueueStatus,
    };
    match call_once(socket, request).await? {
        Response::Queue(q) => print(json, &q, output::queue),
        other => return Err(unexpected(other)),
    }
    Ok(())
}
