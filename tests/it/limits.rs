//! Per-connection limits of the admin socket: idle connections, a client
//! that never says hello, and slow-loris frames cannot starve a normal
//! client; each is closed with a clear error once its (short, configured)
//! timeout passes; a connection over `max_connections` is refused clearly;
//! an answer longer than `max_frame` arrives in parts, each within it.
//! Nothing here asserts how fast anything is, only what happens.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use kiln_actors::KilnError;
use kiln_actors::codec;
use kiln_actors::protocol::{PROTOCOL_VERSION, Request, Response};

use crate::harness::Daemon;

const MAX: usize = 8;

fn start(idle_timeout: u32) -> (Daemon, tempfile::TempDir) {
    let conf_dir = tempfile::tempdir().expect("temp dir");
    let conf = conf_dir.path().join("kiln.toml");
    let text = format!("max_connections = {MAX}\nframe_timeout = 1\nidle_timeout = {idle_timeout}\n");
    std::fs::write(&conf, text).unwrap();
    let d = Daemon::start(2, &["--no-periodic", "--config", conf.to_str().unwrap()]);
    (d, conf_dir)
}

fn connect(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

fn send(s: &mut UnixStream, req: &Request) {
    s.write_all(&codec::encode_frame(req).unwrap()).unwrap();
}

fn recv(s: &mut UnixStream) -> Option<Response> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(codec::decode(&body).expect("the daemon's frames decode"))
}

fn hello() -> Request {
    Request::Hello { version: PROTOCOL_VERSION, client: "limits test".into() }
}

/// A connection that said hello and now sits idle.
fn idle(d: &Daemon) -> UnixStream {
    let mut s = connect(d);
    send(&mut s, &hello());
    assert!(matches!(recv(&mut s), Some(Response::Hello { .. })));
    s
}

/// The error the daemon sent before closing, and that it did close.
fn closing_error(s: &mut UnixStream) -> KilnError {
    let err = match recv(s) {
        Some(Response::Error(e)) => e,
        other => panic!("expected an error frame, got {other:?}"),
    };
    assert!(recv(s).is_none(), "closed after the error");
    err
}

fn status_answers(d: &Daemon) -> bool {
    d.cli(&["--json", "status"]).status.success()
}

#[test]
fn slow_and_idle_clients_do_not_starve_others_and_are_closed_after_their_timeouts() {
    let (d, _conf) = start(3);
    let mut idlers: Vec<UnixStream> = (0..3).map(|_| idle(&d)).collect();
    // Never says hello.
    let mut mute = connect(&d);
    // Starts a frame's length and stops.
    let mut loris_len = idle(&d);
    loris_len.write_all(&[0, 0]).unwrap();
    // Announces a 1 MiB frame (under max_frame) and sends 10 bytes of it.
    let mut loris_body = idle(&d);
    loris_body.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
    loris_body.write_all(&[7u8; 10]).unwrap();

    // Six of eight slots held: a normal client is served meanwhile.
    assert!(status_answers(&d), "a normal client is served beside slow ones");
    assert_eq!(d.json(&["node", "list"]).as_array().unwrap().len(), 2);

    // Each slow client is closed with an error that says why.
    match closing_error(&mut mute) {
        KilnError::Protocol(m) => assert!(m.contains("no hello within 1 s"), "{m}"),
        e => panic!("{e:?}"),
    }
    for loris in [&mut loris_len, &mut loris_body] {
        match closing_error(loris) {
            KilnError::Protocol(m) => assert!(m.contains("frame not completed within 1 s"), "{m}"),
            e => panic!("{e:?}"),
        }
    }
    for s in idlers.iter_mut() {
        match closing_error(s) {
            KilnError::Protocol(m) => assert!(m.contains("idle for 3 s"), "{m}"),
            e => panic!("{e:?}"),
        }
    }
    assert!(status_answers(&d));
}

#[test]
fn a_connection_over_the_limit_is_refused_clearly_and_served_once_a_slot_frees() {
    // Idle connections are not closed during this test.
    let (d, _conf) = start(600);
    let mut held: Vec<UnixStream> = (0..MAX).map(|_| idle(&d)).collect();

    let mut extra = connect(&d);
    send(&mut extra, &hello());
    match closing_error(&mut extra) {
        KilnError::Unavailable(m) => assert!(m.contains("too many connections") && m.contains("8"), "{m}"),
        e => panic!("{e:?}"),
    }
    // The CLI says the same, and fails (exit 1) rather than hanging.
    let out = d.cli(&["status"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("too many connections"), "{text}");

    // One client leaves: the next is served (the slot frees when the daemon
    // sees the close, so poll, bounded).
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status_answers(&d) {
        assert!(Instant::now() < deadline, "a freed slot is never reused");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The held connections were never disturbed: they still answer.
    for s in held.iter_mut().take(2) {
        send(s, &Request::Status);
        assert!(matches!(recv(s), Some(Response::Status(_))));
    }
}

#[test]
fn limits_in_the_config_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("max_connections = 0", "max_connections"),
        ("frame_timeout = 0", "frame_timeout"),
        ("idle_timeout = -1", "idle_timeout"),
    ] {
        let conf = dir.path().join("bad.toml");
        std::fs::write(&conf, text).unwrap();
        let out = std::process::Command::new(crate::harness::KILN)
            .args(["serve", "--check-config", "--config", conf.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(key), "{text}");
    }
}

#[test]
fn a_client_that_never_reads_its_answers_is_dropped_and_frees_its_slot() {
    let (d, _conf) = start(600);
    let _held: Vec<UnixStream> = (0..MAX - 1).map(|_| idle(&d)).collect();
    // The last slot: a client that asks and asks and never reads an answer,
    // until the daemon's answers fill both socket buffers.
    let mut greedy = idle(&d);
    greedy.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let ask =
        codec::encode_frame(&Request::NodeList { nodes: None, state: None, maintenance: None, bmc: None, stale: None })
            .unwrap();
    let mut sent = 0;
    while sent < 1_000_000 && greedy.write_all(&ask).is_ok() {
        sent += 1;
    }
    assert!(sent < 1_000_000, "the daemon kept reading without its answers being read");
    // Every slot is held; the daemon gives up on the greedy client after
    // `frame_timeout` without progress, which frees a slot for others.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !status_answers(&d) {
        assert!(Instant::now() < deadline, "a client that never reads holds its slot for ever");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The greedy client finds its connection closed once it drains it:
    // end of file, or a reset when the daemon closed with some of its
    // requests still unread (what a Unix socket reports then). A read that
    // times out would mean the connection was left hanging.
    greedy.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut sink = Vec::new();
    let drained = greedy.read_to_end(&mut sink);
    let closed = match &drained {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "closed, not left hanging: {drained:?}");
}

#[test]
fn an_answer_longer_than_a_frame_arrives_whole_in_parts_each_within_max_frame() {
    // More nodes than the daemon encodes on its actors' thread (1,000), so
    // that both ways of encoding an answer are on the wire below.
    const NODES: usize = 1_200;
    let d = Daemon::start(NODES, &["--no-periodic", "--set", "max_frame=4096"]);

    // The CLI joins the parts: every node, in the JSON and in the table.
    let nodes = d.json(&["node", "list"]);
    let names: Vec<&str> = nodes.as_array().expect("a list").iter().map(|n| n["name"].as_str().unwrap()).collect();
    let expected: Vec<String> = (1..=NODES).map(|i| format!("demo{i}")).collect();
    assert_eq!(names, expected);
    let table = d.cli(&["node", "list"]);
    assert!(table.status.success(), "{table:?}");
    assert_eq!(String::from_utf8_lossy(&table.stdout).lines().count(), NODES + 1, "a header and a row per node");

    // On the wire: parts, none longer than max_frame, the last one marked;
    // for the whole list (encoded on a blocking thread) and for 300 nodes
    // (encoded in place).
    let mut s = idle(&d);
    for (nodes, count) in [(None, NODES), (Some("demo[1-300]".to_string()), 300)] {
        send(&mut s, &Request::NodeList { nodes, state: None, maintenance: None, bmc: None, stale: None });
        let (parts, joined) = read_parts(&mut s, 4096);
        assert!(parts >= 5, "{parts} parts");
        match codec::decode_answer(&joined).unwrap() {
            Response::Nodes(list) => assert_eq!(list.len(), count),
            other => panic!("expected the node list, got {other:?}"),
        }
    }
    // The connection goes on: a short answer is one plain frame again.
    send(&mut s, &Request::Status);
    assert!(matches!(recv(&mut s), Some(Response::Status(_))));
}

/// Reads the parts of one answer, checking that no frame is longer than
/// `max_frame`: how many there were, and their bytes joined.
fn read_parts(s: &mut UnixStream, max_frame: usize) -> (usize, Vec<u8>) {
    let mut joined = Vec::new();
    // An answer of a few hundred kilobytes is at most a few hundred parts.
    for parts in 1..=10_000 {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let len = u32::from_be_bytes(len) as usize;
        assert!(len <= max_frame, "a frame of {len} bytes");
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        match codec::decode(&body).unwrap() {
            Response::Part { bytes, last } => {
                joined.extend_from_slice(&bytes);
                if last {
                    return (parts, joined);
                }
            }
            other => panic!("expected a part, got {other:?}"),
        }
    }
    panic!("no last part in 10,000 frames");
}
