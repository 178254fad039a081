//! The `redfish` driver: a node's BMC spoken to over Redfish (DMTF's HTTP/JSON
//! API), with the calls OpenStack Ironic's redfish driver makes.
//!
//! Why it is shaped so:
//! - One [`RedfishBmc`] is one *system* of one Redfish service: a service may
//!   serve several systems (a chassis manager, the sushy-tools emulator), so
//!   the system is named by `system_id`, or found as the service's only member
//!   of `/redfish/v1/Systems` (looked up once and kept).
//! - Every HTTP request has its own timeout (`timeout`, default 30 s), so a
//!   hung BMC costs one bounded wait, never a stuck driver actor. Opening
//!   the connection has a shorter one of its own (`connect_timeout`, default
//!   3 s): a BMC that is down or unplugged fails in seconds, so a hall with
//!   hundreds of dead BMCs does not cost the request timeout on each. Requests
//!   that never reached the BMC (connection refused, TLS handshake failed) are
//!   retried twice with backoff (0.5 s, 1 s); so are GETs answered with a 5xx.
//!   A POST or PATCH the BMC may have acted on is never repeated, and a
//!   timeout is not retried: a BMC that hung once will likely hang again, and
//!   the caller's wait must stay bounded.
//! - BMCs share their HTTPS client ([`https`]): one per TLS setting and
//!   connect timeout, not one per BMC. Building one loads the system's trust
//!   anchors (about 1.8 ms and 106 KB), which a site of many BMCs paid once per
//!   BMC. So the request timeout goes on each request, not on the client.
//! - A power action returns only when the BMC reports the target state,
//!   polled every second (the first read at once) up to `power_timeout`
//!   (default 60 s): real BMCs, and the emulator, apply a reset seconds later.
//! - Inspection reads the system resource (facts) and each member of its
//!   `EthernetInterfaces` collection (NICs, which become ports), one GET
//!   each, as Ironic's redfish inspection does. A member without a valid MAC,
//!   or one the BMC answers with an error, is left out with a warning: one
//!   odd NIC does not fail the node's inspection.
//! - Failures are typed for the operator: refused or unroutable → `Unreachable`,
//!   no answer in time → `Timeout`, 401/403 → `Auth`, other HTTP errors → `Bmc`
//!   with the status and the Redfish error message, JSON that does not parse
//!   or lacks a field, or an answer that is not HTTP at all → `BadReply`.
//! - Authentication is chosen by `auth_method`, as Ironic's sushy does it:
//!   - `basic`: the user and password in the `Authorization` header of every
//!     request (HTTP basic auth).
//!   - `session`: one login, a POST of `{"UserName", "Password"}` to the
//!     service's session collection (`Links.Sessions` of the service root,
//!     else `/redfish/v1/SessionService/Sessions`), then the `X-Auth-Token`
//!     it answered on every request, so the BMC checks the password once,
//!     not per request. The first call logs in; logins happen under a lock,
//!     so two calls never log in at once. A request answered 401 although it
//!     carried the token means the session ended (BMCs end idle sessions):
//!     the driver logs in once more and sends that request once more. A
//!     refused login (401/403) is `Auth`; any other failed login is `Bmc`,
//!     naming `auth_method` as the way out.
//!   - `auto` (the default): session auth when the service root (which
//!     Redfish serves without credentials) advertises `Links.Sessions` or a
//!     `SessionService`; basic auth when it does not, when it cannot be read
//!     (an HTTP error), or when the login fails with anything but 401/403
//!     (a service that advertises sessions it does not serve: 404, 405, 5xx).
//!     The choice is made once per driver and kept; a root or login that got
//!     no answer at all (refused, timed out) is an error and decides nothing.
//!     What `auto` found is the client's [`crate::Profile`] (auth mode, and
//!     whether sessions are served); a client built [`knowing`](RedfishBmc::knowing)
//!     a profile skips the choice: basic auth from the first request, or a
//!     login at once at `/redfish/v1/SessionService/Sessions` (the URI the
//!     Redfish specification fixes for the session collection; a service
//!     that opens no session there has its root read after all), so
//!     a known BMC costs no probe at all.
//!
//!   Without a `username` nothing is looked up and no credentials are sent.
//! - The password travels only in the `Authorization` header or the login's
//!   body, the session token only in the `X-Auth-Token` header. Both are held
//!   as [`Secret`]s whose `Debug` is `******`, and no error text is built
//!   from a request, so they cannot leak into `last_error` or logs.
//! - A dropped driver (its driver actor stopped: the node's settings
//!   changed, or kiln shuts down) deletes its session with a DELETE of the
//!   session's `Location`, best effort: `Drop` cannot wait, so the DELETE is
//!   a task spawned on the current tokio runtime, and without a runtime, or
//!   when the runtime ends first, the session is left to expire on the BMC.
//!   It is worth the try because BMCs allow only a few sessions at once
//!   (often 4 to 16) and a leaked one holds its slot until it times out
//!   (often 30 minutes).
//! - TLS is verified by default (`verify_tls=false` turns it off per node);
//!   `ca_file` names a PEM bundle that then is the only trust anchor, which is
//!   how a site trusts its BMCs' private CA.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, IF_MATCH, LOCATION};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Mutex, OnceCell};
use tokio::time::Instant;

use crate::error::InvalidDriverInfo;
use crate::info::{parse_bool, seconds};
use crate::secret::Secret;
use crate::{Bmc, BmcFuture, Boot, DriverError, Facts, Inspection, Nic, Power, PowerAction, Profile, RedfishAuth};

mod https;

const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_POWER_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Pauses before the second and the third try of a request worth retrying.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(1)];
const SYSTEMS: &str = "/redfish/v1/Systems";
const SERVICE_ROOT: &str = "/redfish/v1/";
/// Where sessions are opened when the service root does not say.
const DEFAULT_SESSIONS: &str = "/redfish/v1/SessionService/Sessions";
const AUTH_TOKEN: &str = "X-Auth-Token";
/// How long a dropped driver's DELETE of its session may take.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a driver authenticates: `driver_info.auth_method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// HTTP basic auth on every request.
    Basic,
    /// A Redfish session: one login, then its token.
    Session,
    /// A session when the service offers one, basic auth otherwise.
    Auto,
}

impl AuthMethod {
    /// The method a validated `auth_method` names (`None`: the default, auto).
    pub fn parse(value: Option<&str>) -> Option<AuthMethod> {
        match value {
            None | Some("auto") => Some(AuthMethod::Auto),
            Some("basic") => Some(AuthMethod::Basic),
            Some("session") => Some(AuthMethod::Session),
            Some(_) => None,
        }
    }
}

/// What a driver has found out about authenticating, behind one lock.
#[derive(Default)]
struct AuthState {
    /// `None` until the first call with a user decides it.
    mode: Option<Mode>,
    /// The open session, if logged in.
    session: Option<Session>,
}

enum Mode {
    Basic,
    /// Sessions are opened by a POST to this path; `learned`: the path
    /// is the standard one, assumed from a profile, not read from the root.
    Session {
        login: String,
        learned: bool,
    },
}

struct Session {
    token: Secret,
    /// The session's own path (from `Location`), deleted on drop.
    path: Option<String>,
}

/// The credentials one request carries.
#[derive(Clone)]
enum Credentials {
    None,
    Basic,
    Token(Secret),
}

/// Why a login did not open a session.
enum LoginFailure {
    /// 401 or 403: the user or password is wrong.
    Refused,
    /// The service answered, but opened no session: the detail says how.
    NoSession(String),
    /// No answer (refused, timed out, unreadable).
    Failed(DriverError),
}

/// An HTTP answer of any status.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A Redfish system, reached through its service's HTTP API.
pub struct RedfishBmc {
    client: Client,
    /// `scheme://host[:port]`: Redfish links (`@odata.id`) are absolute
    /// paths, resolved against this.
    root: String,
    /// The address as configured, naming the BMC in errors.
    address: String,
    username: Option<String>,
    password: Secret,
    auth_method: AuthMethod,
    /// Basic or session auth, decided on first use, and the open session.
    /// A tokio lock: it is held across a login, so logins never overlap.
    auth: Mutex<AuthState>,
    /// What `auto` found out (or was told by [`RedfishBmc::knowing`]).
    learned: std::sync::Mutex<Profile>,
    /// The system's path, from `system_id` or found once on first use.
    system: OnceCell<String>,
    request_timeout: Duration,
    connect_timeout: Duration,
    power_timeout: Duration,
    poll_interval: Duration,
}

impl fmt::Debug for RedfishBmc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedfishBmc")
            .field("address", &self.address)
            .field("system", &self.system.get())
            .field("username", &self.username)
            .field("password", &self.password)
            .field("auth_method", &self.auth_method)
            .field(
                "auth",
                &match self.auth_method {
                    AuthMethod::Basic => "basic",
                    _ => self.auth.try_lock().map_or("busy", |a| a.describe()),
                },
            )
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("power_timeout", &self.power_timeout)
            .finish_non_exhaustive()
    }
}

impl AuthState {
    /// How requests authenticate now, for `Debug` (never the token).
    fn describe(&self) -> &'static str {
        match (&self.mode, &self.session) {
            (None, _) => "not decided",
            (Some(Mode::Basic), _) => "basic",
            (Some(Mode::Session { .. }), Some(_)) => "session (logged in)",
            (Some(Mode::Session { .. }), None) => "session (not logged in)",
        }
    }
}

/// A power state as Redfish reports it, transitions included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RedfishPower {
    On,
    Off,
    PoweringOn,
    PoweringOff,
}

impl RedfishPower {
    /// As Ironic reads it: a transition counts as the state it heads to.
    fn settled(self) -> Power {
        match self {
            RedfishPower::On | RedfishPower::PoweringOn => Power::On,
            RedfishPower::Off | RedfishPower::PoweringOff => Power::Off,
        }
    }

    fn is(self, target: Power) -> bool {
        matches!((self, target), (RedfishPower::On, Power::On) | (RedfishPower::Off, Power::Off))
    }
}

/// A successful HTTP answer.
struct Reply {
    etag: Option<HeaderValue>,
    body: Vec<u8>,
}

impl RedfishBmc {
    /// Builds the client from validated `driver_info`: `address`, optional
    /// `system_id`, `username`, `password`, `auth_method`, `verify_tls`,
    /// `ca_file`, `timeout`, `connect_timeout` and `power_timeout`. No request is made until the
    /// first call.
    pub fn from_info(info: &BTreeMap<String, String>) -> Result<Self, DriverError> {
        let address = info.get("address").cloned().unwrap_or_default();
        let root = root_of(&address).ok_or_else(|| InvalidDriverInfo::Malformed {
            field: "address".into(),
            // It may hold credentials (user:password@host).
            value: "******".into(),
            why: "expected http://host[:port] or https://host[:port], without user or password".into(),
        })?;
        let auth_method = AuthMethod::parse(info.get("auth_method").map(String::as_str)).ok_or_else(|| {
            InvalidDriverInfo::Malformed {
                field: "auth_method".into(),
                value: info.get("auth_method").cloned().unwrap_or_default(),
                why: format!("expected one of: {}", crate::info::REDFISH_AUTH_METHODS.join(", ")),
            }
        })?;
        let request_timeout = seconds(info, "timeout", DEFAULT_REQUEST_TIMEOUT, true);
        // Never longer than the request it is part of.
        let connect_timeout = seconds(info, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, true).min(request_timeout);
        let power_timeout = seconds(info, "power_timeout", DEFAULT_POWER_TIMEOUT, true);
        let verify_tls = info.get("verify_tls").is_none_or(|v| parse_bool(v));

        let ca_file = info.get("ca_file");
        let malformed_ca = |why: String| InvalidDriverInfo::Malformed {
            field: "ca_file".into(),
            value: ca_file.cloned().unwrap_or_default(),
            why,
        };
        let ca_bundle = match ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| malformed_ca(format!("cannot read it: {e}")))?),
            None => None,
        };
        let settings = https::Settings { verify_tls, ca_bundle, connect_timeout };
        let client = https::client(settings, |settings| {
            let mut builder = Client::builder()
                .connect_timeout(settings.connect_timeout)
                .no_proxy()
                .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
                .tls_danger_accept_invalid_certs(!settings.verify_tls);
            if let Some(pem) = &settings.ca_bundle {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| malformed_ca(format!("not a PEM certificate bundle: {e}")))?;
                if certs.is_empty() {
                    return Err(malformed_ca("holds no certificate".into()).into());
                }
                builder = builder.tls_certs_only(certs);
            }
            builder.build().map_err(|e| DriverError::Tool {
                tool: "the HTTPS client".into(),
                address: address.clone(),
                reason: causes(&e),
            })
        })?;

        let system = match info.get("system_id") {
            Some(id) => OnceCell::new_with(Some(id.trim_end_matches('/').to_string())),
            None => OnceCell::new(),
        };
        Ok(RedfishBmc {
            client,
            root,
            address,
            username: info.get("username").cloned(),
            password: Secret::new(info.get("password").cloned().unwrap_or_default()),
            auth_method,
            auth: Mutex::new(AuthState::default()),
            learned: std::sync::Mutex::new(Profile::default()),
            system,
            request_timeout,
            connect_timeout,
            power_timeout,
            poll_interval: POLL_INTERVAL,
        })
    }

    /// Starts from what an earlier client learned about this BMC: with
    /// `auto` and a user, the auth mode is taken as decided (no read of the
    /// service root, no login tried in vain). Other settings learn nothing
    /// and take nothing.
    pub fn knowing(self, known: &Profile) -> Self {
        if self.auth_method != AuthMethod::Auto || self.username.is_none() {
            return self;
        }
        let mode = match known.redfish_auth {
            Some(RedfishAuth::Basic) => Mode::Basic,
            Some(RedfishAuth::Session) => Mode::Session { login: DEFAULT_SESSIONS.to_string(), learned: true },
            None => return self,
        };
        *self.learned.lock().unwrap_or_else(|p| p.into_inner()) = Profile {
            redfish_auth: known.redfish_auth,
            redfish_sessions: known.redfish_sessions,
            ..Profile::default()
        };
        let mut this = self;
        this.auth.get_mut().mode = Some(mode);
        this
    }

    /// Records what `auto` found: `auth`, and whether sessions are served.
    fn learn(&self, auth: RedfishAuth, sessions: Option<bool>) {
        if self.auth_method != AuthMethod::Auto {
            return;
        }
        let mut learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        learned.redfish_auth = Some(auth);
        learned.redfish_sessions = sessions;
    }

    /// The system's path: `system_id`, or the only member of the service's
    /// system collection.
    pub async fn system_path(&self) -> Result<&str, DriverError> {
        let path = self
            .system
            .get_or_try_init(|| async {
                let collection = self.get_json(SYSTEMS).await?;
                let members = collection
                    .get("Members")
                    .and_then(Value::as_array)
                    .ok_or_else(|| self.bad_reply(format!("{SYSTEMS} has no Members list")))?;
                let ids: Vec<&str> =
                    members.iter().filter_map(|m| m.get("@odata.id").and_then(Value::as_str)).collect();
                match ids.as_slice() {
                    [one] => Ok(one.trim_end_matches('/').to_string()),
                    [] => Err(self.bad_reply(format!("{SYSTEMS} lists no system"))),
                    many => {
                        Err(DriverError::AmbiguousSystem { address: self.address.clone(), systems: many.join(", ") })
                    }
                }
            })
            .await?;
        Ok(path)
    }

    // ----- HTTP -------------------------------------------------------------

    /// Sends one request with the driver's credentials, retrying as the
    /// module docs say, and returns the body of a 2xx answer or the typed
    /// failure. A session token refused with 401 is replaced by a new login
    /// once, and the request sent once more (the BMC did not act on it).
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&HeaderValue>,
    ) -> Result<Reply, DriverError> {
        let credentials = self.credentials().await?;
        let mut answer = self.exchange(&method, path, body, if_match, &credentials).await?;
        if answer.status == StatusCode::UNAUTHORIZED
            && let Credentials::Token(refused) = &credentials
        {
            tracing::info!(address = %self.address, %method, path, "Redfish session token refused, logging in again");
            let renewed = self.relogin(refused).await?;
            answer = self.exchange(&method, path, body, if_match, &renewed).await?;
        }
        self.judge(&method, path, answer)
    }

    /// Sends one request with the given credentials, retrying what never
    /// reached the BMC and GETs answered with a 5xx; returns the last
    /// answer whatever its status, or the transport failure.
    async fn exchange(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&HeaderValue>,
        credentials: &Credentials,
    ) -> Result<Answer, DriverError> {
        let url = format!("{}{path}", self.root);
        let token = match credentials {
            Credentials::Token(token) => Some(
                token_header(token)
                    .ok_or_else(|| self.bad_reply("the session token is not a valid HTTP header value".into()))?,
            ),
            _ => None,
        };
        let mut attempt = 0;
        loop {
            let mut req = self
                .client
                .request(method.clone(), &url)
                .timeout(self.request_timeout)
                .header("Accept", "application/json");
            match (credentials, &self.username) {
                (Credentials::Basic, Some(user)) => req = req.basic_auth(user, Some(self.password.expose())),
                (Credentials::Token(_), _) => req = req.header(AUTH_TOKEN, token.clone().expect("built above")),
                _ => {}
            }
            if let Some(body) = body {
                req = req.header(CONTENT_TYPE, "application/json").body(body.to_string());
            }
            if let Some(tag) = if_match {
                req = req.header(IF_MATCH, tag.clone());
            }
            let sent = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(bytes) => Ok(Answer { status, headers, body: bytes.to_vec() }),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            let retry = match &sent {
                // Refused or no TLS handshake: the BMC never saw the request.
                Err(e) => e.is_connect() && !e.is_timeout(),
                Ok(answer) => answer.status.is_server_error() && method == Method::GET,
            };
            if retry && attempt < RETRY_DELAYS.len() {
                tracing::debug!(
                    address = %self.address, %method, path,
                    attempt = attempt + 1, "Redfish request failed, retrying"
                );
                tokio::time::sleep(RETRY_DELAYS[attempt]).await;
                attempt += 1;
                continue;
            }
            return sent.map_err(|e| self.transport_error(method, path, &e));
        }
    }

    /// A 2xx answer's body, or the error the answer is.
    fn judge(&self, method: &Method, path: &str, answer: Answer) -> Result<Reply, DriverError> {
        match answer.status {
            status if status.is_success() => Ok(Reply { etag: answer.headers.get(ETAG).cloned(), body: answer.body }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(DriverError::Auth { address: self.address.clone() })
            }
            status => Err(DriverError::Bmc {
                address: self.address.clone(),
                detail: http_error_detail(method, path, status, &answer.body),
            }),
        }
    }

    // ----- authentication -----------------------------------------------------

    /// The credentials the next request carries: deciding between basic and
    /// session auth on first use, and logging in when there is no session.
    async fn credentials(&self) -> Result<Credentials, DriverError> {
        if self.username.is_none() {
            return Ok(Credentials::None);
        }
        if self.auth_method == AuthMethod::Basic {
            return Ok(Credentials::Basic);
        }
        let mut state = self.auth.lock().await;
        if state.mode.is_none() {
            state.mode = Some(self.choose_mode().await?);
        }
        match (&state.mode, &state.session) {
            (Some(Mode::Session { .. }), Some(session)) => Ok(Credentials::Token(session.token.clone())),
            (Some(Mode::Session { .. }), None) => self.login_locked(&mut state).await,
            _ => Ok(Credentials::Basic),
        }
    }

    /// A new session in place of the one whose token was refused, unless
    /// another call already replaced it.
    async fn relogin(&self, refused: &Secret) -> Result<Credentials, DriverError> {
        let mut state = self.auth.lock().await;
        match &state.session {
            Some(session) if session.token != *refused => return Ok(Credentials::Token(session.token.clone())),
            // The refused session is over on the BMC: nothing to delete.
            _ => state.session = None,
        }
        self.login_locked(&mut state).await
    }

    /// Basic or session auth, from the service root (read without
    /// credentials) and `auth_method`.
    async fn choose_mode(&self) -> Result<Mode, DriverError> {
        let root = match self.exchange(&Method::GET, SERVICE_ROOT, None, None, &Credentials::None).await? {
            answer if answer.status.is_success() => serde_json::from_slice::<Value>(&answer.body).ok(),
            answer => {
                tracing::debug!(address = %self.address, status = %answer.status, "Redfish service root unreadable");
                None
            }
        };
        let link = root
            .as_ref()
            .and_then(|r| r.pointer("/Links/Sessions/@odata.id"))
            .and_then(Value::as_str)
            .filter(|p| p.starts_with('/'));
        let offered = link.is_some() || root.as_ref().is_some_and(|r| r.get("SessionService").is_some());
        let login = link.map_or(DEFAULT_SESSIONS, |p| p).to_string();
        let mode = if self.auth_method == AuthMethod::Session || offered {
            Mode::Session { login, learned: false }
        } else {
            Mode::Basic
        };
        if matches!(mode, Mode::Basic) {
            tracing::debug!(address = %self.address, "the Redfish service offers no sessions: basic auth");
            // An unreadable root says nothing of sessions.
            self.learn(RedfishAuth::Basic, root.is_some().then_some(false));
        }
        Ok(mode)
    }

    /// Opens a session and keeps it; with `auto`, a service that answers
    /// the login with anything but 401/403 is switched to basic auth.
    async fn login_locked(&self, state: &mut AuthState) -> Result<Credentials, DriverError> {
        let Some(Mode::Session { login, learned }) = &state.mode else {
            return Ok(Credentials::Basic);
        };
        let learned = *learned;
        match self.login(login).await {
            Ok(session) => {
                tracing::info!(address = %self.address, path = ?session.path, "Redfish session opened");
                self.learn(RedfishAuth::Session, Some(true));
                let token = session.token.clone();
                state.session = Some(session);
                Ok(Credentials::Token(token))
            }
            Err(LoginFailure::Refused | LoginFailure::NoSession(_)) if learned => {
                // The service keeps its sessions elsewhere than the standard
                // path (some answer an unknown path 401): ask its root, as on
                // first contact (once: the mode chosen from the root is not
                // `learned`, so a wrong password ends in `Auth` there).
                tracing::info!(
                    address = %self.address,
                    "Redfish login at the standard path failed; reading the service root"
                );
                state.mode = Some(self.choose_mode().await?);
                Box::pin(self.login_locked(state)).await
            }
            Err(LoginFailure::Refused) => Err(DriverError::Auth { address: self.address.clone() }),
            Err(LoginFailure::Failed(e)) => Err(e),
            Err(LoginFailure::NoSession(detail)) if self.auth_method == AuthMethod::Auto => {
                tracing::warn!(
                    address = %self.address, %detail,
                    "Redfish session login failed; using basic auth for this BMC from now on"
                );
                state.mode = Some(Mode::Basic);
                self.learn(RedfishAuth::Basic, Some(false));
                Ok(Credentials::Basic)
            }
            Err(LoginFailure::NoSession(detail)) => Err(DriverError::Bmc {
                address: self.address.clone(),
                detail: format!(
                    "Redfish session login failed ({detail}); if this BMC has no working SessionService, \
                     set driver_info.auth_method to basic or auto"
                ),
            }),
        }
    }

    /// One login: POST of the user and password to `path`.
    async fn login(&self, path: &str) -> Result<Session, LoginFailure> {
        let body = json!({
            "UserName": self.username.as_deref().unwrap_or_default(),
            "Password": self.password.expose(),
        });
        let method = Method::POST;
        let answer =
            self.exchange(&method, path, Some(&body), None, &Credentials::None).await.map_err(LoginFailure::Failed)?;
        match answer.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(LoginFailure::Refused),
            status if !status.is_success() => {
                return Err(LoginFailure::NoSession(http_error_detail(&method, path, status, &answer.body)));
            }
            _ => {}
        }
        let token = answer
            .headers
            .get(AUTH_TOKEN)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .filter(|t| token_header(t).is_some())
            .ok_or_else(|| {
                LoginFailure::NoSession(format!("HTTP {} from {method} {path} without an {AUTH_TOKEN}", answer.status))
            })?;
        let location = answer.headers.get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string).or_else(|| {
            let body: Value = serde_json::from_slice(&answer.body).ok()?;
            body.get("@odata.id").and_then(Value::as_str).map(str::to_string)
        });
        Ok(Session { token, path: location.and_then(|l| same_origin_path(&self.root, &l)) })
    }

    async fn get_json(&self, path: &str) -> Result<Value, DriverError> {
        let reply = self.request(Method::GET, path, None, None).await?;
        serde_json::from_slice(&reply.body).map_err(|e| self.bad_reply(format!("GET {path}: not JSON ({e})")))
    }

    async fn get_system(&self) -> Result<(String, Value), DriverError> {
        let path = self.system_path().await?.to_string();
        let system = self.get_json(&path).await?;
        if !system.is_object() {
            return Err(self.bad_reply(format!("GET {path}: not a JSON object")));
        }
        Ok((path, system))
    }

    fn transport_error(&self, method: &Method, path: &str, e: &reqwest::Error) -> DriverError {
        if e.is_connect() && e.is_timeout() {
            DriverError::Unreachable {
                address: self.address.clone(),
                reason: format!("no connection within {} s (connect_timeout)", whole_seconds(self.connect_timeout)),
            }
        } else if e.is_timeout() {
            DriverError::Timeout { address: self.address.clone(), seconds: whole_seconds(self.request_timeout) }
        } else if e.is_decode() || e.is_body() {
            self.bad_reply(format!("{method} {path}: {}", causes(e)))
        } else if not_http(e) {
            self.bad_reply(format!("{method} {path}: not an HTTP answer ({})", causes(e)))
        } else {
            DriverError::Unreachable { address: self.address.clone(), reason: causes(e) }
        }
    }

    fn bad_reply(&self, detail: String) -> DriverError {
        DriverError::BadReply { address: self.address.clone(), detail }
    }

    // ----- the calls ----------------------------------------------------------

    fn power_of(&self, path: &str, system: &Value) -> Result<RedfishPower, DriverError> {
        match system.get("PowerState").and_then(Value::as_str) {
            Some("On") => Ok(RedfishPower::On),
            Some("Off") => Ok(RedfishPower::Off),
            Some("PoweringOn") => Ok(RedfishPower::PoweringOn),
            Some("PoweringOff") => Ok(RedfishPower::PoweringOff),
            Some(other) => Err(self.bad_reply(format!("{path}: unknown PowerState '{other}'"))),
            None => Err(self.bad_reply(format!("{path}: no PowerState"))),
        }
    }

    async fn read_power(&self) -> Result<RedfishPower, DriverError> {
        let (path, system) = self.get_system().await?;
        self.power_of(&path, &system)
    }

    async fn set_power(&self, action: PowerAction) -> Result<(), DriverError> {
        let (path, system) = self.get_system().await?;
        let now = self.power_of(&path, &system)?;
        let target = action.target();
        // A reboot of a node that is on is a hard off, then on, each waited
        // for: after a ForceRestart the BMC may still report "On" before the
        // restart has begun, so waiting for "On" would prove nothing.
        let cycle = action == PowerAction::Reboot && now.settled() == Power::On;
        let reset = match action {
            PowerAction::Reboot if cycle => "ForceOff",
            // A node that is off is rebooted by switching it on (as Ironic does;
            // many BMCs refuse ForceRestart on a system that is off).
            PowerAction::Reboot | PowerAction::On => "On",
            PowerAction::Off => "ForceOff",
            PowerAction::SoftOff => "GracefulShutdown",
        };
        if action != PowerAction::Reboot && now.is(target) {
            return Ok(());
        }
        let action_path = system
            .pointer("/Actions/#ComputerSystem.Reset/target")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
        self.request(Method::POST, &action_path, Some(&json!({ "ResetType": reset })), None).await?;
        if cycle {
            self.wait_for(Power::Off).await?;
            self.request(Method::POST, &action_path, Some(&json!({ "ResetType": "On" })), None).await?;
        }
        self.wait_for(target).await
    }

    /// Polls the power state until it is `target`: at once, then every
    /// `poll_interval`, for at most `power_timeout`.
    async fn wait_for(&self, target: Power) -> Result<(), DriverError> {
        let deadline = Instant::now() + self.power_timeout;
        loop {
            if self.read_power().await?.is(target) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DriverError::PowerTimeout {
                    address: self.address.clone(),
                    target: power_word(target).into(),
                    seconds: whole_seconds(self.power_timeout),
                });
            }
            tokio::time::sleep(self.poll_interval.min(deadline - now)).await;
        }
    }

    async fn set_boot(&self, device: Boot, persistent: bool) -> Result<(), DriverError> {
        let path = self.system_path().await?.to_string();
        let body = json!({
            "Boot": {
                "BootSourceOverrideTarget": boot_target(device),
                "BootSourceOverrideEnabled": if persistent { "Continuous" } else { "Once" },
            }
        });
        match self.request(Method::PATCH, &path, Some(&body), None).await {
            // Some BMCs only accept a PATCH that names the version it changes.
            Err(DriverError::Bmc { detail, .. })
                if detail.starts_with("HTTP 412") || detail.starts_with("HTTP 428") =>
            {
                let reply = self.request(Method::GET, &path, None, None).await?;
                let Some(tag) = reply.etag else {
                    return Err(DriverError::Bmc { address: self.address.clone(), detail });
                };
                self.request(Method::PATCH, &path, Some(&body), Some(&tag)).await.map(drop)
            }
            other => other.map(drop),
        }
    }

    async fn get_boot(&self) -> Result<Option<Boot>, DriverError> {
        let (path, system) = self.get_system().await?;
        let boot = system.get("Boot").ok_or_else(|| self.bad_reply(format!("{path}: no Boot")))?;
        if boot.get("BootSourceOverrideEnabled").and_then(Value::as_str) == Some("Disabled") {
            return Ok(None);
        }
        let target = boot
            .get("BootSourceOverrideTarget")
            .and_then(Value::as_str)
            .ok_or_else(|| self.bad_reply(format!("{path}: no Boot.BootSourceOverrideTarget")))?;
        Ok(boot_of(target))
    }

    /// Facts from the system resource, and NICs from the members of its
    /// `EthernetInterfaces` collection: none when the system has no such
    /// link (many BMCs of older firmware), which is no error.
    async fn inspection(&self) -> Result<Inspection, DriverError> {
        let (_, system) = self.get_system().await?;
        let nics = match system.pointer("/EthernetInterfaces/@odata.id").and_then(Value::as_str) {
            Some(collection) => self.nics(collection).await?,
            None => Vec::new(),
        };
        Ok(Inspection { facts: facts_of(&system), nics })
    }

    /// The NICs of an `EthernetInterfaces` collection, each member read in
    /// turn (or taken as listed, from a service that expands its members).
    /// A member that cannot be read (an HTTP error, not JSON) or has no
    /// valid MAC is left out with a warning rather than failing the whole
    /// inspection: one odd NIC (a BMC's own USB NIC, a disabled port) must
    /// not cost the node its facts and its other ports. A BMC that stops
    /// answering still fails it.
    async fn nics(&self, collection: &str) -> Result<Vec<Nic>, DriverError> {
        let listed = self.get_json(collection).await?;
        let members = listed.get("Members").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut nics = Vec::with_capacity(members.len());
        for member in members {
            let path = member.get("@odata.id").and_then(Value::as_str).unwrap_or(collection).to_string();
            let resource = if member.get("MACAddress").is_some() || member.get("@odata.id").is_none() {
                member
            } else {
                match self.get_json(&path).await {
                    Ok(resource) => resource,
                    Err(e @ (DriverError::Bmc { .. } | DriverError::BadReply { .. })) => {
                        tracing::warn!(address = %self.address, nic = %path, error = %e, "NIC left out: unreadable");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            match nic_of(&resource) {
                Some(nic) => nics.push(nic),
                None => tracing::warn!(address = %self.address, nic = %path, "NIC left out: no valid MAC address"),
            }
        }
        Ok(nics)
    }

    // ----- virtual media ------------------------------------------------------

    /// The system's virtual CD: the member of its `VirtualMedia` collection
    /// (the system's own, else that of the manager that manages it, as
    /// older services put it) whose `MediaTypes` name a CD or DVD. Returns
    /// its path and resource.
    async fn virtual_cd(&self) -> Result<(String, Value), DriverError> {
        let (path, system) = self.get_system().await?;
        let collection = match system.pointer("/VirtualMedia/@odata.id").and_then(Value::as_str) {
            Some(c) => c.to_string(),
            None => {
                let manager = system
                    .pointer("/Links/ManagedBy/0/@odata.id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| self.no_cd(&path, "it has no VirtualMedia and no manager"))?
                    .to_string();
                let manager = self.get_json(&manager).await?;
                manager
                    .pointer("/VirtualMedia/@odata.id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| self.no_cd(&path, "neither it nor its manager has VirtualMedia"))?
                    .to_string()
            }
        };
        let members = self.get_json(&collection).await?;
        let ids: Vec<String> = members
            .get("Members")
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(|m| m.get("@odata.id").and_then(Value::as_str).map(str::to_string)).collect())
            .unwrap_or_default();
        for id in ids {
            let media = self.get_json(&id).await?;
            let types = media.get("MediaTypes").and_then(Value::as_array).cloned().unwrap_or_default();
            if types.iter().any(|t| matches!(t.as_str(), Some("CD" | "DVD"))) {
                return Ok((id, media));
            }
        }
        Err(self.no_cd(&path, &format!("{collection} has no CD or DVD device")))
    }

    fn no_cd(&self, system: &str, why: &str) -> DriverError {
        DriverError::Bmc { address: self.address.clone(), detail: format!("no virtual CD for {system}: {why}") }
    }

    /// The target of a virtual media action, as the resource names it.
    fn media_action(path: &str, media: &Value, action: &str) -> String {
        media
            .pointer(&format!("/Actions/#VirtualMedia.{action}/target"))
            .and_then(Value::as_str)
            .map_or_else(|| format!("{path}/Actions/VirtualMedia.{action}"), str::to_string)
    }

    async fn eject_cd(&self) -> Result<(), DriverError> {
        let (path, media) = self.virtual_cd().await?;
        let inserted = media.get("Inserted").and_then(Value::as_bool).unwrap_or(false);
        let image = media.get("Image").and_then(Value::as_str).is_some_and(|i| !i.is_empty());
        if !inserted && !image {
            return Ok(());
        }
        let target = Self::media_action(&path, &media, "EjectMedia");
        self.request(Method::POST, &target, Some(&json!({})), None).await.map(drop)
    }

    async fn insert_cd(&self, image_url: &str) -> Result<(), DriverError> {
        let (path, media) = self.virtual_cd().await?;
        let target = Self::media_action(&path, &media, "InsertMedia");
        let body = json!({ "Image": image_url, "Inserted": true, "WriteProtected": true });
        self.request(Method::POST, &target, Some(&body), None).await.map(drop)
    }
}

impl Bmc for RedfishBmc {
    fn get_power_state(&self) -> BmcFuture<'_, Power> {
        Box::pin(async move { Ok(self.read_power().await?.settled()) })
    }

    fn set_power_state(&self, action: PowerAction) -> BmcFuture<'_, ()> {
        Box::pin(self.set_power(action))
    }

    fn set_boot_device(&self, device: Boot, persistent: bool) -> BmcFuture<'_, ()> {
        Box::pin(self.set_boot(device, persistent))
    }

    fn get_boot_device(&self) -> BmcFuture<'_, Option<Boot>> {
        Box::pin(self.get_boot())
    }

    fn inspect(&self) -> BmcFuture<'_, Inspection> {
        Box::pin(self.inspection())
    }

    fn profile(&self) -> Profile {
        *self.learned.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn eject_media(&self) -> BmcFuture<'_, ()> {
        Box::pin(self.eject_cd())
    }

    fn insert_media(&self, image_url: &str) -> BmcFuture<'_, ()> {
        let image_url = image_url.to_string();
        Box::pin(async move { self.insert_cd(&image_url).await })
    }

    fn kind(&self) -> crate::Kind {
        crate::Kind::Redfish
    }
}

impl Drop for RedfishBmc {
    /// Deletes the open session, best effort (see the module docs): a task
    /// on the current tokio runtime, if there is one.
    fn drop(&mut self) {
        let Some(Session { token, path: Some(path) }) = self.auth.get_mut().session.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(header) = token_header(&token) else {
            return;
        };
        let request = self
            .client
            .delete(format!("{}{path}", self.root))
            .header(AUTH_TOKEN, header)
            .timeout(LOGOUT_TIMEOUT.min(self.request_timeout));
        let address = self.address.clone();
        runtime.spawn(async move {
            match request.send().await {
                Ok(resp) => tracing::debug!(%address, path, status = %resp.status(), "Redfish session deleted"),
                Err(e) => tracing::debug!(%address, path, reason = %causes(&e), "Redfish session not deleted"),
            }
        });
    }
}

/// The `X-Auth-Token` header holding `token`, marked sensitive (kept out of
/// reqwest's own `Debug`); `None` if the token cannot be a header value.
fn token_header(token: &Secret) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(token.expose()).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The path of a session's `Location` (absolute path, or absolute URL on the
/// service's own origin); `None` for anything else, so that the token is
/// never sent to another host.
fn same_origin_path(root: &str, location: &str) -> Option<String> {
    let path = match location.strip_prefix(root) {
        Some(rest) => rest,
        None => location,
    };
    path.starts_with('/').then(|| path.to_string())
}

/// `scheme://authority` of a validated address (any path is dropped: every
/// Redfish link is an absolute path).
fn root_of(address: &str) -> Option<String> {
    let (scheme, rest) = address.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    // Credentials belong in `username` and `password`, where they are kept
    // out of errors; an address with them is refused.
    let authority = rest.split('/').next().filter(|a| !a.is_empty() && !a.contains('@'))?;
    Some(format!("{scheme}://{authority}"))
}

fn boot_target(device: Boot) -> &'static str {
    match device {
        Boot::Pxe => "Pxe",
        Boot::Disk => "Hdd",
        Boot::Cdrom => "Cd",
        Boot::Bios => "BiosSetup",
    }
}

/// The device a `BootSourceOverrideTarget` names; `None` for `"None"` and for
/// targets kiln does not set (`Usb`, `UefiHttp`, ...).
fn boot_of(target: &str) -> Option<Boot> {
    match target {
        "Pxe" => Some(Boot::Pxe),
        "Hdd" => Some(Boot::Disk),
        "Cd" => Some(Boot::Cdrom),
        "BiosSetup" => Some(Boot::Bios),
        _ => None,
    }
}

fn power_word(p: Power) -> &'static str {
    match p {
        Power::On => "on",
        Power::Off => "off",
    }
}

/// Hardware facts from a ComputerSystem resource, as node properties (the
/// names Ironic uses where it has one). Absent fields are left out.
fn facts_of(system: &Value) -> Facts {
    let mut facts = Facts::new();
    let text = |ptr: &str| system.pointer(ptr).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    if let Some(n) = system.pointer("/ProcessorSummary/Count").and_then(Value::as_u64) {
        facts.insert("cpus".into(), n.to_string());
    }
    if let Some(n) = system.pointer("/ProcessorSummary/LogicalProcessorCount").and_then(Value::as_u64) {
        facts.insert("cpu_threads".into(), n.to_string());
    }
    if let Some(gib) = system.pointer("/MemorySummary/TotalSystemMemoryGiB").and_then(Value::as_f64)
        && gib.is_finite()
        && gib >= 0.0
    {
        facts.insert("memory_mb".into(), ((gib * 1024.0).round() as u64).to_string());
    }
    for (name, ptr) in [
        ("cpu_model", "/ProcessorSummary/Model"),
        ("manufacturer", "/Manufacturer"),
        ("model", "/Model"),
        ("serial_number", "/SerialNumber"),
        ("system_uuid", "/UUID"),
        ("bios_version", "/BiosVersion"),
        ("boot_mode", "/Boot/BootSourceOverrideMode"),
    ] {
        if let Some(v) = text(ptr) {
            facts.insert(name.into(), v.to_string());
        }
    }
    facts
}

/// The NIC an EthernetInterface resource describes: its `MACAddress`, else
/// its `PermanentMACAddress` (the factory one), named by its `Id`, else its
/// `Name`. `None` without a valid MAC.
fn nic_of(interface: &Value) -> Option<Nic> {
    let name = ["/Id", "/Name"]
        .iter()
        .find_map(|ptr| interface.pointer(ptr).and_then(Value::as_str).filter(|s| !s.trim().is_empty()))
        .unwrap_or_default()
        .trim();
    ["/MACAddress", "/PermanentMACAddress"]
        .iter()
        .filter_map(|ptr| interface.pointer(ptr).and_then(Value::as_str))
        .find_map(|mac| Nic::new(name, mac))
}

/// `HTTP 500 Internal Server Error from GET /path: <Redfish message>`.
fn http_error_detail(method: &Method, path: &str, status: StatusCode, body: &[u8]) -> String {
    let mut detail = format!("HTTP {status} from {method} {path}");
    if let Some(message) = redfish_message(body) {
        detail.push_str(": ");
        detail.push_str(&message);
    }
    detail
}

/// The message of a Redfish error body (`error.message` and the extended
/// info messages), if the body is one.
fn redfish_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let error = v.get("error")?;
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = error.get("message").and_then(Value::as_str) {
        parts.push(m.to_string());
    }
    if let Some(infos) = error.get("@Message.ExtendedInfo").and_then(Value::as_array) {
        for m in infos.iter().filter_map(|i| i.get("Message").and_then(Value::as_str)) {
            if !parts.iter().any(|p| p == m) {
                parts.push(m.to_string());
            }
        }
    }
    let joined = parts.join("; ");
    // A BMC's error text is shown to operators; keep it to one short line.
    let one_line: String = joined.split_whitespace().collect::<Vec<_>>().join(" ");
    (!one_line.is_empty()).then(|| one_line.chars().take(500).collect())
}

/// The causes of a transport error, innermost last, without the URL that
/// reqwest puts in its own message.
/// Whether the BMC answered with bytes that are not HTTP (hyper could not
/// parse them): the BMC was reached, so this is a bad reply, not a network
/// failure.
fn not_http(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = e.source();
    while let Some(cause) = next {
        if cause.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse) {
            return true;
        }
        next = cause.source();
    }
    false
}

fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        next = cause.source();
    }
    if parts.is_empty() { "the request failed".into() } else { parts.join(": ") }
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_drops_any_path() {
        assert_eq!(root_of("https://10.0.0.1:8443/redfish/v1/").unwrap(), "https://10.0.0.1:8443");
        assert_eq!(root_of("http://bmc").unwrap(), "http://bmc");
        assert_eq!(root_of("ftp://bmc"), None);
        assert_eq!(root_of("http:///x"), None);
        assert_eq!(root_of("http://admin:pw@bmc"), None);
    }

    #[test]
    fn facts_come_from_the_summaries() {
        let system = json!({
            "UUID": "u-1", "Manufacturer": "Acme", "Model": " ",
            "ProcessorSummary": {"Count": 2, "Model": "Xeon Gold 6338"},
            "MemorySummary": {"TotalSystemMemoryGiB": 15.5},
            "Boot": {"BootSourceOverrideMode": "UEFI"}
        });
        let facts = facts_of(&system);
        assert_eq!(facts["cpus"], "2");
        assert_eq!(facts["cpu_model"], "Xeon Gold 6338");
        assert_eq!(facts["memory_mb"], "15872");
        assert_eq!(facts["system_uuid"], "u-1");
        assert_eq!(facts["boot_mode"], "UEFI");
        assert!(!facts.contains_key("model"), "blank values are left out");
        assert!(facts_of(&json!({})).is_empty());
    }

    #[test]
    fn a_nic_is_its_mac_address_named_by_its_id() {
        let nic = nic_of(&json!({"Id": "NIC.1", "Name": "Port 1", "MACAddress": "B8-CE-F6-00-00-01"})).unwrap();
        assert_eq!((nic.name.as_str(), nic.mac.as_str()), ("NIC.1", "b8:ce:f6:00:00:01"));
        let nic = nic_of(&json!({"Name": "Port 2", "MACAddress": null, "PermanentMACAddress": "b8:ce:f6:00:00:02"}));
        assert_eq!(nic.unwrap(), Nic { name: "Port 2".into(), mac: "b8:ce:f6:00:00:02".into() });
        assert_eq!(nic_of(&json!({"Id": "1", "MACAddress": "not a mac"})), None);
        assert_eq!(nic_of(&json!({"Id": "1", "MACAddress": "00:00:00:00:00:00"})), None);
        assert_eq!(nic_of(&json!({"Id": "1"})), None);
    }

    #[test]
    fn boot_targets_round_trip() {
        for d in [Boot::Pxe, Boot::Disk, Boot::Cdrom, Boot::Bios] {
            assert_eq!(boot_of(boot_target(d)), Some(d));
        }
        assert_eq!(boot_of("None"), None);
        assert_eq!(boot_of("UefiHttp"), None);
    }

    #[test]
    fn redfish_error_messages_are_read() {
        let body = br#"{"error":{"code":"Base.1.0.GeneralError","message":"Power state Bogus is not supported",
            "@Message.ExtendedInfo":[{"MessageId":"x","Message":"try On"}]}}"#;
        let d = http_error_detail(&Method::POST, "/a", StatusCode::NOT_IMPLEMENTED, body);
        assert_eq!(d, "HTTP 501 Not Implemented from POST /a: Power state Bogus is not supported; try On");
        let d = http_error_detail(&Method::GET, "/a", StatusCode::INTERNAL_SERVER_ERROR, b"<html>oops");
        assert_eq!(d, "HTTP 500 Internal Server Error from GET /a");
    }

    #[test]
    fn debug_hides_the_password() {
        let info: BTreeMap<String, String> =
            [("address", "https://bmc"), ("username", "admin"), ("password", "hunter22")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let bmc = RedfishBmc::from_info(&info).unwrap();
        let shown = format!("{bmc:?}");
        assert!(!shown.contains("hunter22") && shown.contains("******"), "{shown}");
    }

    #[test]
    fn a_session_location_is_kept_only_on_the_same_origin() {
        let root = "https://10.0.0.1:8443";
        let same = same_origin_path(root, "https://10.0.0.1:8443/redfish/v1/SessionService/Sessions/7");
        assert_eq!(same.as_deref(), Some("/redfish/v1/SessionService/Sessions/7"));
        assert_eq!(same_origin_path(root, "/redfish/v1/Sessions/1").as_deref(), Some("/redfish/v1/Sessions/1"));
        assert_eq!(same_origin_path(root, "https://elsewhere/redfish/v1/Sessions/1"), None);
        assert_eq!(same_origin_path(root, "https://10.0.0.1:84430/x"), None);
        assert_eq!(same_origin_path(root, "Sessions/1"), None);
    }

    #[test]
    fn auth_methods_parse() {
        assert_eq!(AuthMethod::parse(None), Some(AuthMethod::Auto));
        assert_eq!(AuthMethod::parse(Some("basic")), Some(AuthMethod::Basic));
        assert_eq!(AuthMethod::parse(Some("session")), Some(AuthMethod::Session));
        assert_eq!(AuthMethod::parse(Some("kerberos")), None);
        let info: BTreeMap<String, String> = [("address", "https://bmc"), ("auth_method", "kerberos")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let err = RedfishBmc::from_info(&info).unwrap_err();
        assert!(err.to_string().contains("driver_info.auth_method = 'kerberos'"), "{err}");
    }

    #[test]
    fn a_bad_ca_file_is_a_driver_info_error() {
        let info: BTreeMap<String, String> = [("address", "https://bmc"), ("ca_file", "/nonexistent/ca.pem")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let err = RedfishBmc::from_info(&info).unwrap_err();
        assert!(err.to_string().contains("driver_info.ca_file = '/nonexistent/ca.pem'"), "{err}");
    }
}
