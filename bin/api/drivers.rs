//! `/v1/drivers`: kiln's drivers under Ironic's hardware type names.

use actix_web::{HttpRequest, HttpResponse, web};
use kiln_store::DriverKind;
use serde_json::{Value, json};

use super::errors::ApiError;
use super::fields::driver_name;
use super::server::{State, base};

fn driver(name: &str, req: &HttpRequest, state: &State) -> Value {
    let b = base(req);
    json!({
        "name": name,
        "hosts": [state.host],
        "type": "dynamic",
        "links": [
            {"href": format!("{b}/v1/drivers/{name}"), "rel": "self"},
            {"href": format!("{b}/drivers/{name}"), "rel": "bookmark"},
        ],
        "properties": [
            {"href": format!("{b}/v1/drivers/{name}/properties"), "rel": "self"},
        ],
    })
}

pub async fn list(req: HttpRequest, state: State) -> HttpResponse {
    let all: Vec<Value> = DriverKind::ALL.iter().map(|k| driver(driver_name(*k), &req, &state)).collect();
    HttpResponse::Ok().json(json!({"drivers": all}))
}

pub async fn show(req: HttpRequest, state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = DriverKind::ALL
        .iter()
        .map(|k| driver_name(*k))
        .find(|n| *n == path.as_str())
        .ok_or_else(|| ApiError::not_found(format!("Driver {path} could not be found.")))?;
    Ok(HttpResponse::Ok().json(driver(name, &req, &state)))
}
