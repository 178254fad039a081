//! The booted system's callback over HTTP: `POST
//! /v1/kiln/nodes/{node}/callback` with `{"token": "...", "error": "..."}`,
//! what `kiln node callback NODE --token T [--fail MESSAGE]` sends over the
//! admin socket.
//!
//! Why it is open (no `http_basic` credential): the caller is a ramdisk or an
//! installer's last step, which holds the node's one-time token and nothing
//! else, as Ironic's agent heartbeat holds its agent token. The token is the
//! credential; a wrong one is refused and counted like one given on the
//! socket. The answer says only where the node went: an unauthenticated
//! caller reads nothing else of it.

use actix_web::{HttpResponse, web};
use kiln_actors::CallbackToken;
use kiln_actors::protocol::{Request, Response};
use serde::Deserialize;
use serde_json::json;

use super::call::{self, body};
use super::errors::ApiError;
use super::server::State;

/// The path pattern, open to callers without a credential.
pub const PATH: &str = "/v1/kiln/nodes/*/callback";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/kiln/nodes/{node}/callback", web::post().to(callback));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackBody {
    token: String,
    /// Set when the booted system failed: the node goes to its failed
    /// state with this message.
    #[serde(default)]
    error: Option<String>,
}

async fn callback(state: State, path: web::Path<String>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let value = body(payload, state.settings.max_body).await?;
    let CallbackBody { token, error } = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("A callback is {{\"token\": \"...\", \"error\": \"...\"}}: {e}")))?;
    let request = Request::NodeCallback { node: path.into_inner(), token: CallbackToken(token), failure: error };
    match call::call(&state.site, request).await? {
        Response::Node(n) => Ok(HttpResponse::Ok().json(json!({
            "uuid": n.uuid,
            "name": n.name,
            "provision_state": n.provision_state,
        }))),
        other => Err(call::unexpected(&other)),
    }
}
