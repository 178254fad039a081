//! The HTTP API that OpenStack Ironic's own clients (python-ironicclient's
//! `baremetal`, openstacksdk) drive unchanged (docs/ironic-api.md).
//!
//! Why a second front door: operators' automation already speaks Ironic's
//! REST API v1; kiln answers the part of it those clients use. Every request
//! becomes the same call on the site that the admin socket makes (through
//! [`crate::dispatch`] and the site's router), so there is no second path to
//! the nodes, and every rule the socket keeps (drain, locks, validation)
//! holds here too. This module only translates: Ironic's names, status
//! codes and error bodies in, kiln's requests out.
//!
//! - [`server`]: the actix-web server on kiln's actix system, its limits and
//!   the middleware every request passes (auth, microversion, timeout, metrics);
//! - [`auth`]: `http_basic` against an htpasswd file of bcrypt hashes;
//! - [`version`]: the microversion range and version discovery;
//! - [`tls`]: the certificate and key of `api_tls_cert`, `api_tls_key`;
//! - [`errors`]: kiln's errors as Ironic's status codes and error body;
//! - [`fields`]: nodes and ports as Ironic's JSON objects;
//! - [`nodes`], [`ports`], [`drivers`]: the handlers;
//! - [`jobs`], [`callback`]: kiln's own extensions under `/v1/kiln`.

pub mod auth;
pub mod call;
pub mod callback;
pub mod drivers;
pub mod errors;
pub mod fields;
pub mod jobs;
pub mod list;
pub mod nodes;
pub mod ports;
pub mod server;
pub mod tls;
pub mod version;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use auth::Htpasswd;
pub use server::{bind, serve};

/// How API callers authenticate.
#[derive(Clone, Debug)]
pub enum ApiAuth {
    /// Nobody is asked (allowed on a loopback address only).
    None,
    /// HTTP basic authentication against an htpasswd file.
    HttpBasic(Arc<Htpasswd>),
}

/// The API's settings, from the config (`api_addr`, `api_auth`,
/// `api_htpasswd`) and the admin socket's limits (`max_frame` for bodies,
/// `frame_timeout` for a request, `max_connections`).
#[derive(Clone, Debug)]
pub struct ApiSettings {
    pub addr: SocketAddr,
    pub auth: ApiAuth,
    /// The largest request body accepted.
    pub max_body: usize,
    /// The longest one request may take, from its head to its answer.
    pub request_timeout: Duration,
    pub max_connections: usize,
    /// TLS (`api_tls_cert`, `api_tls_key`); `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}
