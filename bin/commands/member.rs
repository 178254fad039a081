//! `kiln member`: the processes that run one site on a shared store.

use std::path::Path;

use kiln_actors::protocol::{Request, Response};

use super::{Failure, call_once, print, unexpected};
use crate::cli::MemberCommand;
use crate::output;

pub(super) async fn run(command: MemberCommand, socket: &Path, json: bool) -> Result<(), Failure> {
    let request = match command {
        MemberCommand::List => Request::MemberList,
    };
    match call_once(socket, request).await? {
        Response::Members(list) => print(json, &list, |l: &Vec<_>| output::members(l)),
        other => return Err(unexpected(other)),
    }
    Ok(())
}
