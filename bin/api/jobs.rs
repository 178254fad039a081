//! kiln's one extension of Ironic's API: a node-set verb as a job.
//! Ironic has no bulk operation, so its users loop over nodes, one request
//! each; `POST /v1/kiln/jobs` takes a job file's text (JSON or YAML, as
//! `kiln job submit FILE` reads it, one job or several) and queues it, and
//! `GET /v1/kiln/jobs/{id}` shows the job with its log, as
//! `kiln --json job show ID` prints it.

use actix_web::{HttpRequest, HttpResponse, web};
use kiln_actors::protocol::{Request, Response};
use kiln_store::JobId;
use serde_json::json;

use super::call::{self, raw_body};
use super::errors::ApiError;
use super::server::{State, base};
use crate::jobfile::{self, Submission};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/kiln/jobs", web::post().to(submit)).route("/v1/kiln/jobs/{id}", web::get().to(show));
}

async fn submit(req: HttpRequest, state: State, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let bytes = raw_body(payload, state.settings.max_body).await?;
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::bad_request("The job is not UTF-8 text"))?;
    let submission = jobfile::parse(text).map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    let b = base(&req);
    let ids = match submission {
        Submission::One { ops, priority, depends } => {
            match call::call(&state.site, Request::JobSubmit { ops, priority, depends }).await? {
                Response::JobSubmitted(id) => vec![id],
                other => return Err(call::unexpected(&other)),
            }
        }
        Submission::Many(jobs) => match call::call(&state.site, Request::JobSubmitMany { jobs }).await? {
            Response::JobsSubmitted(ids) => ids,
            other => return Err(call::unexpected(&other)),
        },
    };
    let links: Vec<String> = ids.iter().map(|id| format!("{b}/v1/kiln/jobs/{id}")).collect();
    let ids: Vec<u64> = ids.iter().map(|id| id.0).collect();
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", links[0].clone()))
        .json(json!({"id": ids[0], "ids": ids, "links": links})))
}

async fn show(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id: JobId = path.parse().map_err(|_| ApiError::not_found(format!("Job {path} could not be found.")))?;
    match call::call(&state.site, Request::JobShow { id }).await? {
        Response::Job(job) => Ok(HttpResponse::Ok().json(crate::output::job_value(&job))),
        other => Err(call::unexpected(&other)),
    }
}
