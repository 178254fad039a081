//! `/v1/ports`: Ironic's port resource on kiln's ports. kiln identifies a
//! port by its MAC address; Ironic by its uuid, which is looked up in the
//! port list first.

use actix_web::{HttpRequest, HttpResponse, web};
use kiln_actors::PortView;
use kiln_actors::protocol::{Request, Response};
use serde_json::{Map, Value};

use super::call::{self, body, query};
use super::errors::ApiError;
use super::fields::{self, PORT_FIELDS, PORT_LIST_FIELDS};
use super::list::ListParams;
use super::server::{State, base};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/ports", web::get().to(list))
        .route("/v1/ports", web::post().to(create))
        .route("/v1/ports/detail", web::get().to(list_detail))
        .route("/v1/ports/{port}", web::get().to(show))
        .route("/v1/ports/{port}", web::patch().to(update))
        .route("/v1/ports/{port}", web::delete().to(delete));
}

async fn ports(state: &State, node: Option<String>) -> Result<Vec<PortView>, ApiError> {
    match call::call(&state.site, Request::PortList { node }).await? {
        Response::Ports(p) => Ok(p),
        other => Err(call::unexpected(&other)),
    }
}

/// One port by uuid (or, as kiln names them, by MAC address).
async fn find(state: &State, ident: &str) -> Result<PortView, ApiError> {
    ports(state, None)
        .await?
        .into_iter()
        .find(|p| p.uuid == ident || p.address.eq_ignore_ascii_case(ident))
        .ok_or_else(|| ApiError::not_found(format!("Port {ident} could not be found.")))
}

async fn listing(req: HttpRequest, state: State, node: Option<String>, detail: bool) -> Result<HttpResponse, ApiError> {
    let q = query(&req)?;
    let params = ListParams::of(&q, detail, PORT_FIELDS, PORT_LIST_FIELDS)?;
    let node = match node.or_else(|| q.get("node").or(q.get("node_uuid")).cloned()) {
        Some(n) => Some(call::node(&state.site, &n).await?.uuid.to_string()),
        None => None,
    };
    let address = q.get("address").map(|a| a.to_ascii_lowercase());
    let b = base(&req);
    let objects: Vec<Map<String, Value>> = ports(&state, node)
        .await?
        .iter()
        .filter(|p| address.as_deref().is_none_or(|a| p.address.eq_ignore_ascii_case(a)))
        .map(|p| fields::port(p, &b))
        .collect();
    Ok(HttpResponse::Ok().json(params.page(objects, "ports", &b, req.path())?))
}

async fn list(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    listing(req, state, None, false).await
}

async fn list_detail(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    listing(req, state, None, true).await
}

/// `GET /v1/nodes/{node}/ports`.
pub async fn of_node(req: HttpRequest, state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    listing(req, state, Some(path.into_inner()), false).await
}

/// `GET /v1/nodes/{node}/ports/detail`.
pub async fn of_node_detail(req: HttpRequest, state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    listing(req, state, Some(path.into_inner()), true).await
}

async fn show(req: HttpRequest, state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let q = query(&req)?;
    let asked = fields::requested(q.get("fields").map(String::as_str), PORT_FIELDS)?;
    let p = fields::port(&find(&state, &path).await?, &base(&req));
    Ok(HttpResponse::Ok().json(match asked {
        Some(f) => fields::only(p, &f),
        None => Value::Object(p),
    }))
}

async fn create(req: HttpRequest, state: State, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let v = body(payload, state.settings.max_body).await?;
    let Value::Object(m) = v else { return Err(ApiError::bad_request("The port must be a JSON object")) };
    for (k, v) in &m {
        match k.as_str() {
            "address" | "node_uuid" => {}
            "pxe_enabled" if v.as_bool() != Some(false) => {}
            k if !PORT_FIELDS.contains(&k) => {
                return Err(ApiError::bad_request(format!("Unknown attribute for argument port: {k}")));
            }
            k if !matches!(v, Value::Null) && !v.as_object().is_some_and(Map::is_empty) => {
                return Err(ApiError::bad_request(format!("kiln does not keep a port's {k}; leave it out")));
            }
            _ => {}
        }
    }
    let (Some(Value::String(address)), Some(Value::String(node))) = (m.get("address"), m.get("node_uuid")) else {
        return Err(ApiError::bad_request("Mandatory fields missing: address and node_uuid"));
    };
    let port =
        match call::call(&state.site, Request::PortCreate { address: address.clone(), node: node.clone() }).await? {
            Response::Port(p) => p,
            other => return Err(call::unexpected(&other)),
        };
    let b = base(&req);
    let location = format!("{b}/v1/ports/{}", port.uuid);
    Ok(HttpResponse::Created().insert_header(("Location", location)).json(fields::port(&port, &b)))
}

/// A patch of a port: kiln changes only its port group (`/portgroup_uuid`).
async fn update(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let v = body(payload, state.settings.max_body).await?;
    let Value::Array(ops) = v else { return Err(ApiError::bad_request("A JSON patch must be a list of operations")) };
    if ops.is_empty() {
        return Err(ApiError::bad_request("The patch is empty: it must hold at least one operation"));
    }
    let port = find(&state, &path).await?;
    let mut group = port.portgroup_uuid.clone();
    for op in &ops {
        let kind = op.get("op").and_then(Value::as_str);
        let path = op.get("path").and_then(Value::as_str);
        match (kind, path, op.get("value")) {
            (Some("remove"), Some("/portgroup_uuid"), _) => group = None,
            (Some("add" | "replace"), Some("/portgroup_uuid"), Some(Value::String(g))) => group = Some(g.clone()),
            (Some("add" | "replace" | "remove"), Some(p), _) if p.starts_with('/') => {
                return Err(ApiError::bad_request(format!(
                    "kiln changes only a port's /portgroup_uuid through the API, not {p}"
                )));
            }
            _ => return Err(ApiError::bad_request(format!("Invalid patch operation: {op}"))),
        }
    }
    let updated = if group == port.portgroup_uuid {
        port
    } else {
        match call::call(&state.site, Request::PortSet { address: port.address.clone(), group }).await? {
            Response::Port(p) => p,
            other => return Err(call::unexpected(&other)),
        }
    };
    Ok(HttpResponse::Ok().json(fields::port(&updated, &base(&req))))
}

async fn delete(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let port = find(&state, &path).await?;
    call::call(&state.site, Request::PortDelete { address: port.address }).await?;
    Ok(HttpResponse::NoContent().finish())
}
