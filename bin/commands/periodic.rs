//! `kiln periodic`: the site's background tasks, their last runs, and a
//! run on demand.

use std::path::Path;

use kiln_actors::protocol::{Request, Response};

use super::{Failure, call_once, print, unexpected};
use crate::cli::PeriodicCommand;
use crate::output;

pub(super) async fn run(command: PeriodicCommand, socket: &Path, json: bool) -> Result<(), Failure> {
    let request = match command {
        PeriodicCommand::List => Request::PeriodicList,
        PeriodicCommand::Run { name } => Request::PeriodicRun { name },
    };
    let tasks = match call_once(socket, request).await? {
        Response::Periodic(tasks) => tasks,
        other => return Err(unexpected(other)),
    };
    print(json, &tasks, |t| output::periodic(t));
    // A run on demand that failed fails the command.
    if tasks.len() == 1 && tasks[0].last_error.is_some() {
        return Err(Failure::Partial);
    }
    Ok(())
}
