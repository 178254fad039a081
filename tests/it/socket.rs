//! The admin socket: its mode, the peer uid check, the hello, and hostile
//! frames. After every abuse the daemon still serves.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use kiln_actors::codec;
use kiln_actors::protocol::{PROTOCOL_VERSION, Request, Response};

use crate::harness::Daemon;

fn connect(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    s
}

fn send(s: &mut UnixStream, req: &Request) {
    s.write_all(&codec::encode_frame(req).unwrap()).unwrap();
}

/// Reads one response frame; `None` when the daemon closed the connection.
fn recv(s: &mut UnixStream) -> Option<Response> {
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        return None;
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(codec::decode(&body).expect("the daemon's frames decode"))
}

fn hello(s: &mut UnixStream) {
    send(s, &Request::Hello { version: PROTOCOL_VERSION, client: "test".into() });
    assert!(matches!(recv(s), Some(Response::Hello { .. })));
}

fn protocol_error(r: Option<Response>) -> String {
    match r {
        Some(Response::Error(kiln_actors::KilnError::Protocol(m))) => m,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

fn still_serves(d: &Daemon) {
    assert_eq!(d.json(&["node", "list"]).as_array().unwrap().len(), 2);
}

#[test]
fn the_socket_is_private_to_its_owner() {
    let d = Daemon::start(0, &[]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_wrong_version_or_a_missing_hello_is_refused_clearly() {
    let d = Daemon::start(2, &[]);
    let mut s = connect(&d);
    send(&mut s, &Request::Hello { version: 999, client: "old".into() });
    let msg = protocol_error(recv(&mut s));
    assert!(msg.contains("999") && msg.contains(&PROTOCOL_VERSION.to_string()), "{msg}");
    assert!(recv(&mut s).is_none(), "closed after a refused hello");

    let mut s = connect(&d);
    send(&mut s, &Request::Status);
    assert!(protocol_error(recv(&mut s)).contains("hello"));
    still_serves(&d);
}

#[test]
fn garbage_frames_get_an_error_and_the_connection_goes_on() {
    let d = Daemon::start(2, &[]);
    let mut s = connect(&d);
    hello(&mut s);
    for garbage in [&[0xffu8, 0xff, 0xff][..], &[42u8; 100][..], &[][..]] {
        let mut frame = (garbage.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(garbage);
        s.write_all(&frame).unwrap();
        assert!(protocol_error(recv(&mut s)).contains("malformed"));
    }
    // The same connection still answers a good request.
    send(&mut s, &Request::NodeShow { node: "demo1".into() });
    assert!(matches!(recv(&mut s), Some(Response::NodeDetail(_))));
    still_serves(&d);
}

#[test]
fn an_oversized_frame_is_refused_and_the_connection_closed() {
    let d = Daemon::start(2, &[]);
    let mut s = connect(&d);
    hello(&mut s);
    s.write_all(&(64u32 * 1024 * 1024).to_be_bytes()).unwrap();
    let msg = protocol_error(recv(&mut s));
    assert!(msg.contains("larger than the limit"), "{msg}");
    assert!(recv(&mut s).is_none());
    still_serves(&d);
}

#[test]
fn raw_garbage_instead_of_a_hello_never_hurts_the_daemon() {
    let d = Daemon::start(2, &[]);
    let mut s = connect(&d);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // "GET " read as a length is over the limit: refused and closed.
    assert!(protocol_error(recv(&mut s)).contains("larger than the limit"));
    let mut s = connect(&d);
    s.write_all(&[0, 0, 0, 3, 1, 2, 3]).unwrap();
    assert!(protocol_error(recv(&mut s)).contains("malformed"));
    still_serves(&d);
}

#[test]
fn a_peer_with_another_uid_is_refused() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    let d = Daemon::start(2, &[]);
    // Open the file mode so that only the uid check stands in the way.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::os::unix::process::CommandExt::uid(
        std::process::Command::new(crate::harness::KILN).args([
            "--json",
            "--socket",
            d.socket.to_str().unwrap(),
            "status",
        ]),
        65534,
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("uid 65534 may not use this socket"), "{stdout}");
    still_serves(&d);
}
