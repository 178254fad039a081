//! `kiln events`: the recent events, a replay from a serial, or every new
//! one as it is committed (`--follow`).

use std::path::Path;

use kiln_actors::protocol::{Request, Response};

use super::{Failure, connect, unexpected};
use crate::output;

pub(super) async fn run(request: Request, socket: &Path, json: bool) -> Result<(), Failure> {
    let follow = matches!(request, Request::Events { follow: true, .. });
    let mut conn = connect(socket).await?;
    conn.send_request(&request).await?;
    loop {
        match conn.next_response().await? {
            Response::Event(e) => {
                if json {
                    match serde_json::to_string(&e) {
                        Ok(line) => println!("{line}"),
                        Err(err) => return Err(Failure::Other(err.into())),
                    }
                } else {
                    println!("{}", output::event_line(&e));
                }
            }
            Response::EventsCaughtUp => {
                if !follow {
                    return Ok(());
                }
                if json {
                    // Tells scripts that everything after is live.
                    println!("{}", serde_json::json!({ "caught_up": true }));
                } else {
                    eprintln!("following events (Ctrl-C to stop)");
                }
            }
            Response::Error(e) => return Err(Failure::Refused(e)),
            other => return Err(unexpected(other)),
        }
    }
}
