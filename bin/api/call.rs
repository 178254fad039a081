//! The one way the API reaches the site: requests go through
//! [`crate::dispatch::handle`], the admin socket's own translation, and the
//! few node operations Ironic answers before they end (202: provision and
//! power targets, maintenance) go to the site's router, as dispatch sends
//! `node set`, after the drain rule dispatch applies. Also reading bodies
//! and queries, so that bad input is refused in Ironic's shape.

use std::collections::HashMap;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::web;
use futures::StreamExt;
use kiln_actors::jobs::CheckNotDrained;
use kiln_actors::protocol::{Request, Response};
use kiln_actors::{GetNode, KilnError, NodeAction, NodeView, Op, Site};
use serde_json::Value;

use super::errors::ApiError;

fn gone() -> ApiError {
    KilnError::Unavailable("the site is shutting down".into()).into()
}

/// Sends a request as the admin socket would; its error as Ironic's.
pub async fn call(site: &Site, request: Request) -> Result<Response, ApiError> {
    match crate::dispatch::handle(site, request).await {
        Response::Error(e) => Err(e.into()),
        r => Ok(r),
    }
}

/// One node by uuid or name, from its actor through the router (as
/// `NodeShow` gets it, without the ports Ironic's node does not carry, so
/// a poll costs no store read).
pub async fn node(site: &Site, ident: &str) -> Result<NodeView, ApiError> {
    Ok(site.router().get_node(GetNode(ident.to_string())).await?)
}

/// Runs an exclusive operation on one node; without `wait`, answered once
/// its first change is committed (a task then runs on), as Ironic answers
/// 202 once the conductor has taken the node. A node another task holds
/// is refused at once (`NodeLocked`, 409) unless `lock_wait` says wait.
pub async fn act(site: &Site, node: &str, op: Op, wait: bool) -> Result<NodeView, ApiError> {
    site.jobs.send(CheckNotDrained).await.map_err(|_| gone())??;
    Ok(site.router().node_action(NodeAction { node: node.to_string(), op, wait }).await?)
}

/// An answer of a kind the request never gets.
pub fn unexpected(r: &Response) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected answer from the site: {r:?}"))
}

/// A request's body as JSON, at most `limit` bytes.
pub async fn body(payload: web::Payload, limit: usize) -> Result<Value, ApiError> {
    let bytes = raw_body(payload, limit).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid JSON: {e}")))
}

/// A request's body as it came, at most `limit` bytes.
pub async fn raw_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {limit} bytes (max_frame)"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The query's parameters (the last of a repeated one wins).
pub fn query(req: &HttpRequest) -> Result<HashMap<String, String>, ApiError> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| q.into_inner().into_iter().collect())
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
}

/// A boolean query parameter as Ironic reads them (`true`, `True`, `1`, ...).
pub fn boolean(name: &str, v: &str) -> Result<bool, ApiError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "y" | "t" => Ok(true),
        "false" | "0" | "no" | "off" | "n" | "f" => Ok(false),
        _ => Err(ApiError::bad_request(format!("Invalid value for {name}: '{v}': expected a boolean"))),
    }
}
