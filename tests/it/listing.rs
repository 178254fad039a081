//! `kiln node list` in pages: over the real socket, every node comes once,
//! in node-set order, in pages the daemon sends as it produces them, with
//! the filters applied; another client is answered while a list is in
//! progress; a client that goes away mid-list leaves the daemon serving.
//! The CLI prints the same JSON and table a one-answer list printed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use kiln_actors::codec;
use kiln_actors::parts::Joiner;
use kiln_actors::protocol::{PROTOCOL_VERSION, Request, Response};
use kiln_store::ProvisionState;

use crate::harness::Daemon;

const NODES: usize = 5_000;

/// The pages' sizes, as the daemon cuts them (`bin/admin.rs`).
const FIRST_PAGE: usize = 1_000;
const PAGE: usize = 4_096;

fn connect(d: &Daemon) -> UnixStream {
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    send(&mut s, &Request::Hello { version: PROTOCOL_VERSION, client: "listing test".into() });
    assert!(matches!(recv(&mut s), Response::Hello { .. }));
    s
}

fn send(s: &mut UnixStream, req: &Request) {
    s.write_all(&codec::encode_frame(req).unwrap()).unwrap();
}

/// The next answer, its parts joined.
fn recv(s: &mut UnixStream) -> Response {
    let mut joiner = Joiner::default();
    // An answer of a few megabytes is at most a few hundred parts.
    for _ in 0..10_000 {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).expect("a frame");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).expect("a frame's body");
        if let Some(answer) = joiner.take(&body).expect("the daemon's frames decode") {
            return answer;
        }
    }
    panic!("an answer in more than 10,000 parts");
}

fn list(nodes: Option<&str>, state: Option<ProvisionState>, maintenance: Option<bool>) -> Request {
    Request::NodeListPages { nodes: nodes.map(str::to_string), state, maintenance, bmc: None, stale: None }
}

/// One page: its node names and whether it is the last.
fn page(s: &mut UnixStream) -> (Vec<String>, bool) {
    match recv(s) {
        Response::NodePage { nodes, last, name_width } => {
            assert!(nodes.iter().all(|n| n.name.len() <= name_width as usize), "a name wider than announced");
            (nodes.into_iter().map(|n| n.name.clone()).collect(), last)
        }
        other => panic!("expected a page, got {other:?}"),
    }
}

/// Every page of a list: the names of each.
fn pages(s: &mut UnixStream) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for _ in 0..=NODES {
        let (names, last) = page(s);
        all.push(names);
        if last {
            return all;
        }
    }
    panic!("more pages than nodes");
}

fn demo(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("demo{i}")).collect()
}

#[test]
fn a_long_node_list_comes_in_pages_in_order_while_other_clients_are_answered() {
    let d = Daemon::start(NODES, &["--no-periodic"]);
    d.json(&["node", "manage", "demo[4001-4100]", "--wait"]);
    d.json(&["node", "maintenance", "on", "demo[10-19],demo[4095-4105]"]);

    // Every node once, in node-set order; the first page short, none
    // longer than a page, only the last marked and only it possibly empty.
    let mut s = connect(&d);
    send(&mut s, &list(None, None, None));
    let all = pages(&mut s);
    assert!(all.len() >= 2, "{} pages", all.len());
    assert!(all[0].len() <= FIRST_PAGE && !all[0].is_empty());
    assert!(all.iter().all(|p| p.len() <= PAGE));
    assert!(all[..all.len() - 1].iter().all(|p| !p.is_empty()));
    assert_eq!(all.concat(), demo(1..=NODES));

    // The filters, on the same connection: a state, maintenance, a node set.
    send(&mut s, &list(None, Some(ProvisionState::Manageable), None));
    assert_eq!(pages(&mut s).concat(), demo(4001..=4100));
    send(&mut s, &list(None, None, Some(true)));
    let mut expected = demo(10..=19);
    expected.extend(demo(4095..=4105));
    assert_eq!(pages(&mut s).concat(), expected);
    send(&mut s, &list(Some("demo[4090-4110]"), Some(ProvisionState::Manageable), Some(true)));
    assert_eq!(pages(&mut s).concat(), demo(4095..=4100));
    send(&mut s, &list(None, Some(ProvisionState::Active), None));
    assert_eq!(pages(&mut s), [Vec::<String>::new()], "nothing matches: one empty last page");
    // A node set naming a node that does not exist is refused, and the
    // connection goes on.
    send(&mut s, &list(Some("demo[1-3],nosuch1"), None, None));
    match recv(&mut s) {
        Response::Error(e) => assert!(e.to_string().contains("nosuch1"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }

    // A list in progress (its first page read, the rest not): another
    // connection's `node show` is answered meanwhile.
    send(&mut s, &list(None, None, None));
    let (first, last) = page(&mut s);
    assert!(!last);
    let mut other = connect(&d);
    send(&mut other, &Request::NodeShow { node: "demo4242".into() });
    match recv(&mut other) {
        Response::NodeDetail(detail) => assert_eq!(detail.node.name, "demo4242"),
        other => panic!("expected the node, got {other:?}"),
    }
    let mut rest = pages(&mut s).concat();
    rest.splice(0..0, first);
    assert_eq!(rest, demo(1..=NODES), "the list goes on where it was");

    // A client that goes away after its first page: the daemon goes on
    // serving the others.
    let mut gone = connect(&d);
    send(&mut gone, &list(None, None, None));
    let _ = page(&mut gone);
    drop(gone);
    send(&mut other, &Request::Status);
    assert!(matches!(recv(&mut other), Response::Status(_)));
}

#[test]
fn the_cli_prints_a_long_list_as_it_printed_the_whole_answer() {
    let d = Daemon::start(NODES, &["--no-periodic"]);
    d.json(&["node", "maintenance", "on", "demo7"]);

    // --json: one pretty array, as a whole list printed it.
    let out = d.cli(&["--json", "node", "list"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, demo(1..=NODES));
    // Pretty, as a whole array prints: each element indented once.
    assert!(text.starts_with("[\n  {\n    \"") && text.ends_with("\n  }\n]\n"), "not a pretty array");
    assert_eq!(text.matches("\n  },\n  {\n").count(), NODES - 1, "elements not laid out as a pretty array");
    assert_eq!(list[6]["maintenance"], true);

    // The table: a header and a row per node, every column where the
    // header puts it.
    let out = d.cli(&["node", "list"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), NODES + 1);
    let column = |name: &str| lines[0].find(name).unwrap();
    let (uuid, state, maintenance) = (column("UUID"), column("PROVISION STATE"), column("MAINTENANCE"));
    for (i, line) in lines[1..].iter().enumerate() {
        assert!(line.starts_with(&format!("demo{} ", i + 1)), "{line}");
        assert_eq!(&line[state..state + 6], "enroll", "{line}");
        assert_eq!(line.as_bytes()[uuid - 1], b' ', "{line}");
        let flag = if i + 1 == 7 { "yes" } else { "no " };
        assert_eq!(&line[maintenance..maintenance + 3], flag, "{line}");
    }

    // Filters through the CLI; a short list is one page.
    let listed = d.json(&["node", "list", "--maintenance"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "demo7");
    assert_eq!(d.json(&["node", "list", "--state", "active"]), serde_json::json!([]));
}

#[test]
fn a_member_of_a_shared_store_lists_every_member_s_nodes_in_pages() {
    const STORED: usize = 1_500;
    let url = crate::postgres::database();
    let a = Daemon::start(STORED, &["--store", &url, "--set", "member_name=a", "--no-periodic"]);
    let b = Daemon::start(0, &["--store", &url, "--set", "member_name=b", "--no-periodic"]);
    a.json(&["node", "manage", "demo[700-710]", "--wait"]);

    // From the store, through either member: every node once, in order,
    // in more than one page.
    for d in [&a, &b] {
        let mut s = connect(d);
        send(&mut s, &list(None, None, None));
        let all = pages(&mut s);
        assert!(all.len() >= 2, "{} pages", all.len());
        assert_eq!(all.concat(), demo(1..=STORED));
        send(&mut s, &list(Some("demo[690-720]"), Some(ProvisionState::Manageable), None));
        assert_eq!(pages(&mut s).concat(), demo(700..=710));
        send(&mut s, &list(Some("demo[1-2],nosuch1"), None, None));
        assert!(matches!(recv(&mut s), Response::Error(_)));
    }
    let listed = b.json(&["node", "list", "--state", "manageable"]);
    assert_eq!(listed.as_array().unwrap().len(), 11);
}

#[test]
fn an_output_that_does_not_keep_up_holds_the_printing_not_the_connection() {
    // A daemon that drops a client leaving a frame unread for a second.
    let mut d = Daemon::start(NODES, &["--no-periodic", "--set", "frame_timeout=1", "--metrics-addr", "127.0.0.1:0"]);
    let addr = crate::metrics::metrics_addr(&mut d);
    // Its output a pipe nobody reads yet, as a pager waiting for a key.
    let mut cli = std::process::Command::new(crate::harness::KILN)
        .arg("--socket")
        .arg(&d.socket)
        .args(["node", "list"])
        .env_remove("KILN_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The daemon sends the whole list (the CLI reads it while its output
    // waits) and counts it answered, rather than timing the client out.
    let answered = "kiln_admin_request_duration_seconds_count{request=\"node_list\"} 1";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !crate::metrics::get(&addr, "/metrics").2.lines().any(|l| l == answered) {
        if std::time::Instant::now() > deadline {
            let _ = cli.kill();
            let _ = cli.wait();
            panic!("the list was never answered whole");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), NODES + 1);
}
