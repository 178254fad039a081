//! A fault-injecting HTTP proxy to put in front of a real BMC (the Redfish
//! emulator), switchable at run time: pass through, add latency, hang,
//! reset the connection, answer 5xx, send garbage, or pass the BMC's answer
//! on mangled (malformed JSON, an unknown `PowerState`).
//!
//! It works one request per connection: it reads the client's request,
//! decides by the fault in force *at that moment*, and, when it forwards,
//! asks the BMC to close after its answer (`Connection: close`) and relays
//! the answer until the BMC closes. So a switch applies to the very next
//! request, even from a client that pools connections (reqwest does), and
//! no HTTP parsing beyond a request's head and `Content-Length` is needed.
//!
//! A quirk can be switched on beside the faults: [`FaultProxy::refuse_sessions`]
//! makes the BMC advertise Redfish sessions in its service root (which the
//! emulator does not) and refuse every login with 405, as BMCs do whose
//! SessionService is listed but broken.
//!
//! It runs on a tokio runtime on its own thread; dropping the proxy stops
//! it and closes every connection it holds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward to the BMC and relay its answer.
    Pass,
    /// Wait this long, then forward.
    Latency(Duration),
    /// Read the request and never answer; the connection is held open until
    /// the fault changes or the proxy stops, then closed without a word.
    Hang,
    /// Read the request, then reset the connection (RST).
    Reset,
    /// Answer with this HTTP status and a Redfish error body.
    Status(u16),
    /// Answer with bytes that are not HTTP.
    Garbage,
    /// Forward, then cut the BMC's JSON body in half.
    MalformedJson,
    /// Forward, then replace the system's `PowerState` by `Sideways`.
    WrongPowerState,
}

/// The running proxy.
pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    stop: watch::Sender<bool>,
    /// Connections hanging right now.
    held: Arc<AtomicUsize>,
    /// Every request received, with the fault it met.
    seen: Arc<Mutex<Vec<(Fault, String)>>>,
    /// Requests being served now, and the most ever served at once.
    in_flight: Arc<(AtomicUsize, AtomicUsize)>,
    /// Sessions advertised and refused ([`FaultProxy::refuse_sessions`]).
    refusing_sessions: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        std_listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("its address");
        let (fault, fault_rx) = watch::channel(Fault::Pass);
        let (stop, stop_rx) = watch::channel(false);
        let held = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let refusing_sessions = Arc::new(AtomicBool::new(false));
        let shared = Shared {
            refusing_sessions: refusing_sessions.clone(),
            upstream,
            fault: fault_rx,
            stop: stop_rx,
            held: held.clone(),
            seen: seen.clone(),
            in_flight: in_flight.clone(),
        };
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("a tokio listener");
                let mut stop = shared.stop.clone();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((client, _)) = accepted else { continue };
                            let shared = shared.clone();
                            tokio::spawn(async move { shared.serve(client).await });
                        }
                        _ = stop.changed() => break,
                    }
                }
            });
            // Dropping the runtime drops every connection task.
        });
        FaultProxy { addr, fault, stop, held, seen, in_flight, refusing_sessions, thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the fault for every request from now on; leaving `Hang`
    /// closes the connections held so far.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// From now on (while the fault is `Pass`), the service root the BMC
    /// serves advertises sessions (`SessionService`, `Links.Sessions`), and
    /// a POST to the session collection is answered 405: sessions listed,
    /// not served.
    pub fn refuse_sessions(&self, on: bool) {
        self.refusing_sessions.store(on, Ordering::SeqCst);
    }

    /// How many requests received so far have a request line containing
    /// every one of `words` (`["POST", "/Sessions"]`).
    pub fn count(&self, words: &[&str]) -> usize {
        self.seen().iter().filter(|(_, line)| words.iter().all(|w| line.contains(w))).count()
    }

    /// How many connections are hanging now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// The most requests the proxy was serving at one moment (from the
    /// whole request read to the answer relayed).
    pub fn most_in_flight(&self) -> usize {
        self.in_flight.1.load(Ordering::SeqCst)
    }

    /// The requests received so far: the fault each met, and its request line.
    pub fn seen(&self) -> Vec<(Fault, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Shared {
    refusing_sessions: Arc<AtomicBool>,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    stop: watch::Receiver<bool>,
    held: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(Fault, String)>>>,
    in_flight: Arc<(AtomicUsize, AtomicUsize)>,
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Arc<(AtomicUsize, AtomicUsize)>);

impl InFlight {
    fn start(counts: &Arc<(AtomicUsize, AtomicUsize)>) -> InFlight {
        let now = counts.0.fetch_add(1, Ordering::SeqCst) + 1;
        counts.1.fetch_max(now, Ordering::SeqCst);
        InFlight(counts.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bounds every wait of the proxy, so that no test can hang on it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request or answer relayed.
const MAX_MESSAGE: usize = 4 << 20;

impl Shared {
    async fn serve(&self, mut client: TcpStream) {
        let Some(request) = read_request(&mut client).await else { return };
        let fault = *self.fault.borrow();
        let line = String::from_utf8_lossy(request.split(|b| *b == b'\r').next().unwrap_or_default()).into_owned();
        self.seen.lock().unwrap().push((fault, line.clone()));
        let _counted = InFlight::start(&self.in_flight);
        if fault == Fault::Pass && self.refusing_sessions.load(Ordering::SeqCst) {
            if line.starts_with("POST ") && line.contains("/SessionService/Sessions") {
                return answer(client, 405, "sessions are listed, not served").await;
            }
            if line.starts_with("GET /redfish/v1/ ") || line.starts_with("GET /redfish/v1 ") {
                return self.forward(client, &request, |r| rewrite_body(r, advertise_sessions)).await;
            }
        }
        match fault {
            Fault::Pass => self.forward(client, &request, |r| r).await,
            Fault::Latency(d) => {
                tokio::time::sleep(d).await;
                self.forward(client, &request, |r| r).await
            }
            Fault::MalformedJson => {
                self.forward(client, &request, |r| rewrite_body(r, |b| b[..b.len() / 2].to_vec())).await
            }
            Fault::WrongPowerState => self.forward(client, &request, |r| rewrite_body(r, sideways)).await,
            Fault::Hang => {
                self.held.fetch_add(1, Ordering::SeqCst);
                let (mut fault, mut stop) = (self.fault.clone(), self.stop.clone());
                tokio::select! {
                    _ = fault.wait_for(|f| *f != Fault::Hang) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                self.held.fetch_sub(1, Ordering::SeqCst);
            }
            Fault::Reset => {
                let _ = client.set_zero_linger();
            }
            Fault::Status(code) => answer(client, code, &format!("injected HTTP {code}")).await,
            Fault::Garbage => {
                let _ = client.write_all(b"\x00\xff\xfe garbage \x1b[31m\r\n\r\n\x7f{{{{").await;
                let _ = client.shutdown().await;
            }
        }
    }

    /// Sends the request to the BMC with `Connection: close`, reads its
    /// answer to the end, and relays it as `mangle` changes it.
    async fn forward(&self, mut client: TcpStream, request: &[u8], mangle: impl FnOnce(Vec<u8>) -> Vec<u8>) {
        let relay = async {
            let mut bmc = TcpStream::connect(self.upstream).await.ok()?;
            bmc.write_all(&close_after(request)).await.ok()?;
            let mut answer = Vec::new();
            (&mut bmc).take(MAX_MESSAGE as u64).read_to_end(&mut answer).await.ok()?;
            Some(answer)
        };
        // When the BMC itself fails, the client sees a closed connection.
        if let Ok(Some(answer)) = tokio::time::timeout(IO_TIMEOUT, relay).await {
            let _ = client.write_all(&mangle(answer)).await;
            let _ = client.shutdown().await;
        }
    }
}

/// Answers with HTTP `code` and a Redfish error body saying `message`.
async fn answer(mut client: TcpStream, code: u16, message: &str) {
    let body = format!(
        r#"{{"error": {{"code": "Base.1.0.GeneralError", "message": "{message}", "@Message.ExtendedInfo": []}}}}"#
    );
    let reply = format!(
        "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(reply.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// A service root that also advertises sessions, as Redfish lists them.
fn advertise_sessions(body: &[u8]) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut root)) = serde_json::from_slice(body) else { return body.to_vec() };
    root.insert("SessionService".into(), serde_json::json!({"@odata.id": "/redfish/v1/SessionService"}));
    root.insert("Links".into(), serde_json::json!({"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}));
    serde_json::to_vec(&serde_json::Value::Object(root)).unwrap_or_else(|_| body.to_vec())
}

/// Reads one request: its head, then `Content-Length` bytes of body.
async fn read_request(client: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            let n = client.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_MESSAGE {
                return None;
            }
        };
        let length = header(&buf[..head_end], "content-length").and_then(|v| v.parse().ok()).unwrap_or(0usize);
        while buf.len() < head_end + length.min(MAX_MESSAGE) {
            let n = client.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(buf)
    };
    tokio::time::timeout(IO_TIMEOUT, read).await.ok().flatten()
}

/// The value of header `name` (lower case) in an HTTP head.
fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
    })
}

/// The request with its `Connection` header replaced by `Connection: close`.
fn close_after(request: &[u8]) -> Vec<u8> {
    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else { return request.to_vec() };
    let head = String::from_utf8_lossy(&request[..end]);
    let mut out: Vec<u8> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .flat_map(|l| [l.as_bytes(), b"\r\n"].concat())
        .collect();
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&request[end + 4..]);
    out
}

/// An answer with its body changed by `change` and `Content-Length` fixed.
fn rewrite_body(answer: Vec<u8>, change: impl FnOnce(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else { return answer };
    let body = change(&answer[end + 4..]);
    let head = String::from_utf8_lossy(&answer[..end]);
    let mut out: Vec<u8> = head
        .split("\r\n")
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}", body.len())
            } else {
                l.to_string()
            }
        })
        .flat_map(|l| [l.into_bytes(), b"\r\n".to_vec()].concat())
        .collect();
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

/// A JSON body whose `"PowerState"` value is replaced by `Sideways`.
fn sideways(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let Some(key) = text.find("\"PowerState\"") else { return body.to_vec() };
    let after = key + "\"PowerState\"".len();
    let Some(open) = text[after..].find('"').map(|i| after + i) else { return body.to_vec() };
    let Some(close) = text[open + 1..].find('"').map(|i| open + 1 + i) else { return body.to_vec() };
    format!("{}\"Sideways\"{}", &text[..open], &text[close + 1..]).into_bytes()
}
