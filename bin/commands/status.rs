//! `kiln status`: the daemon, its site and the configuration in force.

use std::path::Path;

use kiln_actors::protocol::{Request, Response};

use super::{Failure, call_once, print, unexpected};
use crate::output;

pub(super) async fn run(socket: &Path, json: bool) -> Result<(), Failure> {
    match call_once(socket, Request::Status).await? {
        Response::Status(s) => print(json, &s, output::status),
        other => return Err(unexpected(other)),
    }
    Ok(())
}
