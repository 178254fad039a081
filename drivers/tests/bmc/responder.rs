//! Hand-written HTTP servers that misbehave on purpose: a real emulator
//! will not answer 500, send garbage or hang on demand. And [`SessionBmc`], a
//! small Redfish service with a SessionService, which the emulator lacks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server on loopback answering every request with
/// `answer(method, path, head)` = (status line, body); counts the requests
/// it got.
pub struct Responder {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

/// A request a [`Responder`] received.
pub struct Request {
    pub method: String,
    pub path: String,
    /// The request line and headers.
    pub head: String,
    pub body: String,
}

impl Request {
    /// The value of header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

impl Responder {
    pub async fn start(answer: fn(&str, &str, &str) -> (&'static str, String)) -> Responder {
        Responder::serve(move |r: &Request| {
            let (status, body) = answer(&r.method, &r.path, &r.head);
            (status.to_string(), body)
        })
        .await
    }

    /// Like [`Responder::start`], with a closure that sees the whole
    /// request (and may keep state).
    pub async fn serve(answer: impl Fn(&Request) -> (String, String) + Send + Sync + 'static) -> Responder {
        let answer = Arc::new(answer);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let counted = counted.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut sock).await else { return };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = answer(&request);
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Responder { addr, hits }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Reads a request's head and its body (by Content-Length).
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    let mut first = head.lines().next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    Some(Request { method, path, head, body })
}

/// A server that accepts connections and never answers, holding them open.
pub async fn hung() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    addr
}

/// A listener that never accepts, its queue of pending connections full, so
/// the kernel drops new connection attempts without an answer: a BMC that
/// is switched off or cut off, as a client sees it. Held open while the
/// returned value lives.
pub struct NeverAccepts {
    pub addr: SocketAddr,
    _listener: std::net::TcpListener,
    _queued: Vec<std::net::TcpStream>,
}

pub fn never_accepts() -> NeverAccepts {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    // The queue holds at most somaxconn (4096) connections.
    for _ in 0..5000 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => queued.push(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return NeverAccepts { addr, _listener: listener, _queued: queued };
            }
            Err(e) => panic!("filling the listen queue: {e}"),
        }
    }
    panic!("the listen queue of {addr} never filled");
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// What a [`SessionBmc`] offers.
#[derive(Clone, Copy)]
pub struct Offer {
    /// The service root names a SessionService and `Links.Sessions`.
    pub advertised: bool,
    /// POST to the sessions collection opens a session (else 405 when
    /// advertised, 404 when not).
    pub served: bool,
    /// HTTP basic auth is accepted too.
    pub basic: bool,
}

/// A request a [`SessionBmc`] answered, and how.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// It carried an `Authorization` header.
    pub authorization: bool,
    pub token: Option<String>,
    pub status: u16,
}

/// A Redfish service on loopback with a SessionService, as a BMC has one:
/// the service root is served to anyone; `POST SESSIONS` with
/// `{"UserName": "admin", "Password": "password"}` answers 201 with an
/// `X-Auth-Token` and the session's `Location`; every other request needs a
/// live token (or, if allowed, basic auth) and is answered 401 otherwise.
/// One system, `/redfish/v1/Systems/1`, whose power can be read and reset.
pub struct SessionBmc {
    responder: Responder,
    state: Arc<Mutex<SessionState>>,
}

struct SessionState {
    offer: Offer,
    next_id: usize,
    /// Live sessions: (token, id).
    live: Vec<(String, usize)>,
    /// Tokens die as soon as they are issued.
    reject_tokens: bool,
    deleted: Vec<String>,
    seen: Vec<Seen>,
    power_on: bool,
}

/// Where a [`SessionBmc`] serves sessions: not the usual path, so a driver
/// that finds it must have read `Links.Sessions`.
pub const SESSIONS: &str = "/redfish/v1/SessionService/MySessions";
/// `admin:password`, base64.
const BASIC: &str = "Basic YWRtaW46cGFzc3dvcmQ=";

impl SessionBmc {
    pub async fn start(offer: Offer) -> SessionBmc {
        let state = Arc::new(Mutex::new(SessionState {
            offer,
            next_id: 1,
            live: Vec::new(),
            reject_tokens: false,
            deleted: Vec::new(),
            seen: Vec::new(),
            power_on: true,
        }));
        let shared = state.clone();
        let responder = Responder::serve(move |r: &Request| {
            let mut state = shared.lock().unwrap();
            let (status, body) = state.answer(r);
            let code = status[..3].parse().unwrap();
            state.seen.push(Seen {
                method: r.method.clone(),
                path: r.path.clone(),
                authorization: r.header("authorization").is_some(),
                token: r.header("x-auth-token").map(str::to_string),
                status: code,
            });
            (status, body)
        })
        .await;
        SessionBmc { responder, state }
    }

    pub fn url(&self) -> String {
        self.responder.url()
    }

    /// Ends every session, as a BMC ends idle ones.
    pub fn expire_sessions(&self) {
        self.state.lock().unwrap().live.clear();
    }

    /// From now on every token is dead as soon as it is issued.
    pub fn reject_tokens(&self) {
        self.state.lock().unwrap().reject_tokens = true;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Login attempts: POSTs to a session collection, whatever the answer.
    pub fn logins(&self) -> usize {
        self.seen().iter().filter(|s| s.method == "POST" && s.path.contains("Sessions")).count()
    }

    /// Paths of the sessions deleted by their owners.
    pub fn deleted(&self) -> Vec<String> {
        self.state.lock().unwrap().deleted.clone()
    }
}

impl SessionState {
    fn answer(&mut self, r: &Request) -> (String, String) {
        let error =
            |message: &str| format!(r#"{{"error": {{"code": "Base.1.0.GeneralError", "message": "{message}"}}}}"#);
        let path = r.path.trim_end_matches('/');
        if r.method == "GET" && path == "/redfish/v1" {
            let sessions = if self.offer.advertised {
                format!(
                    r#""SessionService": {{"@odata.id": "/redfish/v1/SessionService"}},
                       "Links": {{"Sessions": {{"@odata.id": "{SESSIONS}"}}}},"#
                )
            } else {
                String::new()
            };
            let root = format!(
                r#"{{"@odata.id": "/redfish/v1/", "Id": "RootService", {sessions}
                    "Systems": {{"@odata.id": "/redfish/v1/Systems"}}}}"#
            );
            return ("200 OK".into(), root);
        }
        if r.method == "POST" && path.ends_with("Sessions") {
            if !self.offer.served {
                return if self.offer.advertised {
                    ("405 Method Not Allowed".into(), error("Sessions are not supported"))
                } else {
                    ("404 Not Found".into(), error("No such resource"))
                };
            }
            let creds: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            if path != SESSIONS || creds["UserName"] != "admin" || creds["Password"] != "password" {
                return ("401 Unauthorized".into(), error("Invalid username or password"));
            }
            let id = self.next_id;
            self.next_id += 1;
            let token = format!("tok-{id}-5ecret");
            if !self.reject_tokens {
                self.live.push((token.clone(), id));
            }
            let location = format!("{SESSIONS}/{id}");
            let status = format!("201 Created\r\nX-Auth-Token: {token}\r\nLocation: {location}");
            return (status, format!(r#"{{"@odata.id": "{location}", "Id": "{id}", "UserName": "admin"}}"#));
        }
        let token = r.header("x-auth-token");
        let session = token.and_then(|t| self.live.iter().find(|(live, _)| live == t).map(|(_, id)| *id));
        let basic_ok = self.offer.basic && r.header("authorization") == Some(BASIC);
        if session.is_none() && !basic_ok {
            return ("401 Unauthorized".into(), error("Authentication required"));
        }
        match (r.method.as_str(), path) {
            ("DELETE", p) if p.starts_with(SESSIONS) => {
                let id: usize = p.rsplit('/').next().unwrap().parse().unwrap_or(0);
                self.live.retain(|(_, live)| *live != id);
                self.deleted.push(p.to_string());
                ("204 No Content".into(), String::new())
            }
            ("GET", "/redfish/v1/Systems") => (
                "200 OK".into(),
                r#"{"Members": [{"@odata.id": "/redfish/v1/Systems/1"}], "Members@odata.count": 1}"#.into(),
            ),
            ("GET", "/redfish/v1/Systems/1") => {
                let power = if self.power_on { "On" } else { "Off" };
                ("200 OK".into(), format!(r#"{{"@odata.id": "/redfish/v1/Systems/1", "PowerState": "{power}"}}"#))
            }
            ("POST", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset") => {
                let body: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                self.power_on = !matches!(body["ResetType"].as_str(), Some("ForceOff" | "GracefulShutdown"));
                ("204 No Content".into(), String::new())
            }
            _ => ("404 Not Found".into(), error("No such resource")),
        }
    }
}
