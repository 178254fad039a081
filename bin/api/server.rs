//! The API's HTTP server: actix-web on the actix system kiln already runs,
//! its limits, and the gate every request passes.
//!
//! The gate, in order: the microversion (406 outside the range, before
//! anything else, as Ironic), the credential (401, counted; `/` and `/v1`
//! are open, as Ironic keeps them for discovery), then the handler under
//! the request timeout (503 when it passes; what was asked of the site
//! goes on, as an answer lost on the admin socket would). Every answer,
//! errors included, carries the version headers and is counted by route
//! and status.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::{Next, NormalizePath, from_fn};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use anyhow::Context;
use kiln_actors::Site;
use tracing::Instrument;

use super::errors::ApiError;
use super::version::{self, Version};
use super::{ApiAuth, ApiSettings, callback, drivers, jobs, nodes, ports};

/// What every handler shares.
pub struct ApiState {
    pub site: Site,
    pub settings: ApiSettings,
    /// This host's name: Ironic's `conductor` and `reservation` values.
    pub host: String,
}

pub type State = web::Data<ApiState>;

/// The scheme and authority clients reached the API at: the base of the
/// links in answers (`http://127.0.0.1:6385`).
pub fn base(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

/// Binds the API's listener (`api_addr`; port 0 picks a free port).
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("cannot listen for the API on {addr} (api_addr)"))
}

/// Starts serving on `listener`; the server runs until its handle stops it.
pub fn serve(listener: TcpListener, settings: ApiSettings, site: Site, host: String) -> anyhow::Result<ServerHandle> {
    let state = web::Data::new(ApiState { site, settings: settings.clone(), host });
    // One worker a core past the site's own (the node actors' arbiter),
    // at most four: on two cores a second worker only contends with it.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let workers = cores.saturating_sub(1).clamp(1, 4);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(state.settings.max_body))
            .wrap(from_fn(gate))
            // `/v1/nodes/` is `/v1/nodes` (python-ironicclient asks both);
            // outermost, so the gate sees the route it will take.
            .wrap(NormalizePath::trim())
            .configure(routes)
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .max_connections(settings.max_connections.div_ceil(workers).max(1))
    .client_request_timeout(settings.request_timeout)
    .disable_signals();
    let server = match &settings.tls {
        Some(tls) => server.listen_rustls_0_23(listener, (**tls).clone()),
        None => server.listen(listener),
    }
    .context("cannot serve the API")?
    .run();
    let handle = server.handle();
    actix::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the API server failed");
        }
    });
    Ok(handle)
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/v1", web::get().to(v1))
        .route("/v1/", web::get().to(v1))
        .route("/v1/drivers", web::get().to(drivers::list))
        .route("/v1/drivers/{driver}", web::get().to(drivers::show));
    nodes::routes(cfg);
    ports::routes(cfg);
    jobs::routes(cfg);
    callback::routes(cfg);
}

async fn root(req: HttpRequest) -> HttpResponse {
    HttpResponse::Ok().json(version::root(&base(&req)))
}

async fn v1(req: HttpRequest) -> HttpResponse {
    HttpResponse::Ok().json(version::v1(&base(&req)))
}

/// Every path served, as patterns: a request on one with a method it
/// does not take gets 405, not 404.
const PATHS: &[&str] = &[
    "/",
    "/v1",
    "/v1/drivers",
    "/v1/drivers/*",
    "/v1/nodes",
    "/v1/nodes/detail",
    "/v1/nodes/*",
    "/v1/nodes/*/states",
    "/v1/nodes/*/states/provision",
    "/v1/nodes/*/states/power",
    "/v1/nodes/*/maintenance",
    "/v1/nodes/*/management/boot_device",
    "/v1/nodes/*/management/boot_device/supported",
    "/v1/nodes/*/validate",
    "/v1/nodes/*/history",
    "/v1/nodes/*/ports",
    "/v1/nodes/*/ports/detail",
    "/v1/ports",
    "/v1/ports/detail",
    "/v1/ports/*",
    "/v1/kiln/jobs",
    "/v1/kiln/jobs/*",
    callback::PATH,
];

fn served(path: &str) -> bool {
    PATHS.iter().any(|p| matches_pattern(p, path))
}

/// Whether `path` is `pattern`, a `*` standing for any one segment.
fn matches_pattern(pattern: &str, path: &str) -> bool {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let pattern: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
    pattern.len() == parts.len() && pattern.iter().zip(&parts).all(|(a, b)| *a == "*" || a == b)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if served(req.path()) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on {} (docs/ironic-api.md lists what is served)", req.method(), req.path()),
        ));
    }
    Err(ApiError::not_found(format!(
        "The resource could not be found: {} {}: {}",
        req.method(),
        req.path(),
        instead(req.path())
    )))
}

/// What to use instead of a part of Ironic's API that kiln does not serve.
fn instead(path: &str) -> &'static str {
    const HINTS: &[(&str, &str)] = &[
        ("/v1/portgroups", "kiln keeps port groups: use `kiln port group create|list|show|delete`"),
        ("/v1/conductors", "kiln is its own conductor: `kiln status` shows the site"),
        ("/v1/chassis", "kiln keeps no chassis; group nodes with node sets and `[groups]`"),
        ("/v1/allocations", "kiln keeps no allocations; pick nodes with `kiln node list --state available`"),
        ("/v1/events", "`kiln events --follow` streams every change"),
    ];
    const NODE_HINTS: &[(&str, &str)] = &[
        ("/vifs", "kiln attaches no VIFs"),
        ("/traits", "kiln keeps no traits; use properties"),
        ("/states/console", "kiln serves no console"),
        ("/states/raid", "kiln configures no RAID"),
        ("/bios", "kiln configures no BIOS settings"),
        ("/vendor_passthru", "kiln has no vendor passthru; `kiln exec` runs commands on nodes"),
    ];
    if let Some((_, hint)) = HINTS.iter().find(|(prefix, _)| path.starts_with(prefix)) {
        return hint;
    }
    if path.starts_with("/v1/nodes/")
        && let Some((_, hint)) = NODE_HINTS.iter().find(|(part, _)| path.contains(part))
    {
        return hint;
    }
    "kiln serves the part of Ironic's API that docs/ironic-api.md lists; the `kiln` command does the rest"
}

/// The paths open without a credential: version discovery.
fn open(path: &str) -> bool {
    matches!(path, "/" | "/v1" | "/v1/") || matches_pattern(callback::PATH, path)
}

fn set(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// The version headers on an answer: the range always, the version the
/// request was served at when it had one; and on a 401 the scheme asked
/// for (RFC 7235).
fn stamp(status: StatusCode, headers: &mut HeaderMap, served: Option<Version>) {
    set(headers, "x-openstack-ironic-api-minimum-version", version::MIN.to_string());
    set(headers, "x-openstack-ironic-api-maximum-version", version::MAX.to_string());
    if let Some(v) = served {
        set(headers, "x-openstack-ironic-api-version", v.to_string());
        set(headers, "openstack-api-version", format!("baremetal {v}"));
    }
    if status == StatusCode::UNAUTHORIZED {
        set(headers, "www-authenticate", "Basic realm=\"Baremetal API\"".to_string());
    }
}

async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse, actix_web::Error> {
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_string());
    // One span per request: the log lines of its handling carry the route
    // (never the query or the body, which may hold a password), and its
    // end is logged with the status at debug level.
    let span = tracing::info_span!("api", method = %req.method(), route = %route);
    let started = std::time::Instant::now();
    let result = gate_in(req, next, &route).instrument(span.clone()).await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            took_ms = started.elapsed().as_millis() as u64,
            "API request answered"
        )
    });
    result
}

async fn gate_in(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    route: &str,
) -> Result<ServiceResponse, actix_web::Error> {
    let state = req.app_data::<State>().cloned().expect("the API state is set");
    let served = match admit(&req, &state).await {
        Ok(v) => v,
        Err(e) => {
            let mut res = e.error_response();
            stamp(res.status(), res.headers_mut(), None);
            state.site.metrics.api_answered(route, res.status().as_u16());
            return Ok(req.into_response(res));
        }
    };
    match tokio::time::timeout(state.settings.request_timeout, next.call(req)).await {
        Ok(Ok(res)) => {
            let mut res = res.map_into_boxed_body();
            let status = res.status();
            stamp(status, res.headers_mut(), Some(served));
            state.site.metrics.api_answered(route, status.as_u16());
            Ok(res)
        }
        Ok(Err(e)) => {
            state.site.metrics.api_answered(route, e.as_response_error().status_code().as_u16());
            Err(e)
        }
        Err(_) => {
            // The request is gone with the handler: the answer is made from
            // the error alone (the site's work goes on, as an answer lost on
            // the admin socket would).
            state.site.metrics.api_answered(route, StatusCode::SERVICE_UNAVAILABLE.as_u16());
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the request took longer than {:?} (frame_timeout); retry", state.settings.request_timeout),
            )
            .into())
        }
    }
}

/// The microversion, then the credential.
async fn admit(req: &ServiceRequest, state: &State) -> Result<Version, ApiError> {
    let v = version::requested(req.headers())?;
    if let ApiAuth::HttpBasic(users) = &state.settings.auth
        && !open(req.path())
    {
        let given = req.headers().get("authorization").and_then(|h| h.to_str().ok()).map(str::to_string);
        let users = Arc::clone(users);
        let ok = match given {
            None => false,
            Some(given) => web::block(move || users.check(&given)).await.unwrap_or(false),
        };
        if !ok {
            state.site.metrics.api_auth_failed();
            tracing::info!(path = %req.path(), peer = ?req.peer_addr(), "API request refused: wrong or missing credential");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Authentication required: wrong or missing credential",
            ));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_paths_match_their_patterns_only() {
        assert!(served("/v1/nodes"));
        assert!(served("/v1/nodes/n1/states/power"));
        assert!(served("/v1/"));
        assert!(!served("/v1/chassis"));
        assert!(!served("/v1/nodes/n1/vifs"));
    }

    #[test]
    fn what_is_not_served_names_what_to_use() {
        assert!(instead("/v1/portgroups/x").contains("kiln port group"));
        assert!(instead("/v1/nodes/n1/vifs").contains("VIF"));
        assert!(instead("/v1/volume/targets").contains("docs/ironic-api.md"));
    }
}
