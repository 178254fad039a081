//! The BMCs the `bmc` tests talk to through kiln: the real peers (the
//! sushy-tools Redfish emulator and the pyghmi IPMI simulator, started once
//! per test binary from `scripts/peers/`), a way to read their state without
//! kiln (`curl`, `ipmitool`), and small loopback servers that misbehave on
//! purpose (never answer, answer HTTP 500), which no real emulator does on
//! demand.
//!
//! Each is started once per test binary by `tests/common/peer_start.rs`
//! (shared with the driver tests), on a free port found at start, so that
//! this binary, the driver tests and a second checkout's tests can run at
//! the same time on one machine.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

#[path = "../common/peer_start.rs"]
mod peer_start;

pub use peer_start::Peer;

/// The user and password both peers accept (set by their scripts).
pub const USER: &str = "admin";
pub const PASSWORD: &str = "password";

pub const IPMI_BMCS: u16 = 5;

/// Runs `ipmitool` against simulated BMC `port` (not through kiln) and
/// returns its output; panics if it fails.
///
/// As patient as the nodes the tests create (`timeout=15`: 5 s a message,
/// and a retry): the simulator is one Python process on two busy cores. A
/// CI run once lost all three IPMI tests at once to "Unable to establish
/// IPMI v2 / RMCP+ session", and this check, then giving up after 2 s
/// tries, was the least patient client of the three. A simulator that
/// answers costs no wait.
pub fn ipmitool(port: u16, args: &[&str]) -> String {
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port.to_string(), "-U", USER, "-E", "-R", "3", "-N", "5"])
        .args(args)
        .env("IPMI_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .output()
        .expect("run ipmitool");
    assert!(out.status.success(), "ipmitool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Redfish emulator with seven systems, node-1..node-7: each test that
/// changes a system has one of its own (node-7: `ironic.rs`).
pub fn redfish() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::redfish(&PEER, 7, false)
}

/// A Redfish emulator of its own for the virtual media tests (`vmedia.rs`),
/// two systems: a deploy powers and boots them, and virtual media is state
/// no other test should see.
pub fn redfish_vmedia() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::redfish(&PEER, 2, false)
}

/// `IPMI_BMCS` simulated IPMI BMCs on consecutive free ports (`port` is
/// the first): each test that changes a BMC has one of its own.
pub fn ipmi() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::ipmi(&PEER, IPMI_BMCS)
}

// ----- misbehaving peers -----------------------------------------------------

/// What a [`Responder`] does with a request: answer `(status line, JSON
/// body)`, or hold the connection open and never answer.
pub enum Answer {
    Reply(&'static str, String),
    Never,
}

/// A request a [`Responder`] received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: String,
}

/// An HTTP server on loopback, in a thread of the test, that answers each
/// request as `answer(method, path)` says and keeps the requests it got.
/// Stopped (and its held connections closed) when dropped.
pub struct Responder {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    pub fn start(answer: fn(&str, &str) -> Answer) -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("its address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Connections held open without an answer, until the stop.
            let mut held = Vec::new();
            for sock in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut sock) = sock else { continue };
                let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
                let Some(req) = read_request(&mut sock) else { continue };
                let reply = answer(&req.method, &req.path);
                seen.lock().unwrap().push(req);
                match reply {
                    Answer::Never => held.push(sock),
                    Answer::Reply(status, body) => {
                        let text = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                             Connection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(text.as_bytes());
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                    }
                }
            }
        });
        Responder { addr, requests, stop, thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the stop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request's head and body (by Content-Length).
fn read_request(sock: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(1 << 20);
    while buf.len() < head_end + length {
        let n = sock.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut first = head.lines().next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    Some(Request { method, path, body })
}

/// A loopback TCP port with nothing listening on it (connection refused).
pub fn closed_tcp_port() -> ClosedTcpPort {
    ClosedTcpPort::hold()
}

/// A loopback TCP port that refuses connections for as long as this is
/// held: a socket bound to it that does not listen, so the kernel answers
/// a connection with a reset and no other program can take the port (a
/// port merely assumed closed, such as 9, may be open on another machine).
pub struct ClosedTcpPort {
    fd: libc::c_int,
    port: u16,
}

impl ClosedTcpPort {
    pub fn hold() -> ClosedTcpPort {
        // SAFETY: plain socket calls on a socket this function owns; the
        // address structs are initialised before use.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let bound = libc::bind(fd, &addr as *const libc::sockaddr_in as *const libc::sockaddr, len);
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            let mut got: libc::sockaddr_in = std::mem::zeroed();
            let mut got_len = len;
            let named = libc::getsockname(fd, &mut got as *mut libc::sockaddr_in as *mut libc::sockaddr, &mut got_len);
            assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
            ClosedTcpPort { fd, port: u16::from_be(got.sin_port) }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for ClosedTcpPort {
    fn drop(&mut self) {
        // SAFETY: closing the socket this value owns, once.
        unsafe { libc::close(self.fd) };
    }
}

/// A loopback TCP port whose listener never accepts: its accept queue (of
/// one, `listen(fd, 0)`) is held full by connections of its own, so the
/// kernel drops every new SYN and a client's connect times out, as with a
/// BMC that is powered off behind a switch. No other program can take the
/// port while this is held.
pub struct SilentTcpPort {
    bound: ClosedTcpPort,
    _fillers: Vec<std::net::TcpStream>,
}

impl SilentTcpPort {
    pub fn hold() -> SilentTcpPort {
        let bound = ClosedTcpPort::hold();
        // SAFETY: listen on the socket `bound` owns.
        let listening = unsafe { libc::listen(bound.fd, 0) };
        assert_eq!(listening, 0, "listen: {}", std::io::Error::last_os_error());
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], bound.port));
        // Connect until one does not get through: the queue is full then.
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(_) => return SilentTcpPort { bound, _fillers: fillers },
            }
        }
        panic!("the accept queue of 127.0.0.1:{} did not fill", bound.port);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.bound.port)
    }
}

/// A loopback UDP socket that receives and never answers: an IPMI BMC that
/// has hung. Closed when dropped.
pub fn silent_udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP port")
}

/// A loopback UDP port with nothing bound to it.
pub fn closed_udp_port() -> u16 {
    let s = silent_udp();
    s.local_addr().expect("its address").port()
}

/// A private OpenSSH server on loopback, its nodes at 127.0.0.2..127.0.0.5
/// (key-based login as the current user; the client key is `dir/client_key`).
pub fn sshd() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    if let Some(Ok(peer)) = PEER.get() {
        return peer;
    }
    let free = peer_start::free_tcp_port();
    let port = free.to_string();
    let how = peer_start::Start {
        script: "sshd.sh",
        args: &["4", &port],
        env: &[],
        pid_file: "sshd/sshd.pid",
        port: free,
        dir: "sshd",
    };
    peer_start::once(&PEER, how)
}

impl Peer {
    /// The ssh options that reach this sshd (for `kiln exec -o`).
    pub fn ssh_options(&self) -> String {
        format!(
            "-p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.port,
            self.dir.join("client_key").display()
        )
    }
}

/// A Redfish emulator with four systems, node-1..node-4, for the tests of
/// one endpoint's limit (`shared_bmc.rs`): its own, so that their bursts of
/// calls slow no other test's BMC.
pub fn redfish_for_limits() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::redfish(&PEER, 4, false)
}

/// A Redfish emulator with two systems, node-1..node-2, for the BMC profile
/// tests (`profiles.rs`): its own, so that its request counts are theirs.
pub fn redfish_for_profiles() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::redfish(&PEER, 2, false)
}

/// A Redfish emulator with four systems for the blackholed-BMC test
/// (`unreachable.rs`): its own, so that its bursts slow no other test.
pub fn redfish_for_blackholes() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::redfish(&PEER, 4, false)
}

/// One simulated IPMI BMC for the BMC profile tests (`profiles.rs`).
pub fn ipmi_for_profiles() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::ipmi(&PEER, 1)
}

/// One simulated IPMI BMC for the test that floods it with clients reusing
/// old clients' ports (`bmc.rs`): its own, since the flood slows it.
pub fn ipmi_for_port_reuse() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::ipmi(&PEER, 1)
}

/// A Redfish emulator with four systems, node-1..node-4, for the fault tests
/// (its own, so that no other test's power changes meet theirs).
pub fn redfish_for_faults() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    peer_start::redfish(&PEER, 4, false)
}
