//! Every rejected request leaves the store unchanged (docs/reliability.md): a
//! long series of bad requests, through the CLI and as raw frames on the
//! socket, against a daemon with nodes, ports and jobs in it; then every
//! table of its SQLite file, read directly, and what `node list`,
//! `port list`, `port group list` and `job list` print must be exactly as
//! before.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use kiln_actors::codec;
use kiln_actors::jobs::{JobRef, NewDependency, NewJob, Opcode};
use kiln_actors::protocol::{PROTOCOL_VERSION, Request, Response};
use kiln_actors::{KilnError, NewNode, NewPortGroup, NodeUpdate, Op, Verb};
use serde_json::Value;

use crate::harness::Daemon;

fn sleep_job(depends: Vec<NewDependency>) -> NewJob {
    NewJob { ops: vec![Opcode::Sleep { seconds: 0.0 }], priority: 0, depends }
}

/// Where the daemon under test keeps its records.
#[derive(Clone)]
enum Store {
    Sqlite,
    /// A PostgreSQL database (its URL).
    Postgres(String),
}

/// Every row of every table of the daemon's store, read directly.
fn tables(d: &Daemon, store: &Store) -> BTreeMap<String, Vec<String>> {
    match store {
        Store::Sqlite => sqlite_tables(d),
        Store::Postgres(url) => postgres_tables(url),
    }
}

/// Every row of every table of a PostgreSQL store but `members` (whose
/// heartbeats move on their own), through psql.
fn postgres_tables(url: &str) -> BTreeMap<String, Vec<String>> {
    let names = crate::postgres::psql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1");
    names
        .lines()
        .filter(|t| *t != "members")
        .map(|table| {
            let mut rows: Vec<String> =
                crate::postgres::psql(url, &format!("SELECT * FROM \"{table}\"")).lines().map(str::to_string).collect();
            rows.sort();
            (table.to_string(), rows)
        })
        .collect()
}

/// Every row of every table of the daemon's SQLite file, read-only.
fn sqlite_tables(d: &Daemon) -> BTreeMap<String, Vec<String>> {
    use rusqlite::{Connection, OpenFlags};
    let db = Connection::open_with_flags(d.dir.path().join("kiln.sqlite"), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the store read-only");
    let names: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|table| {
            let mut stmt = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
            let columns = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |r| {
                    Ok((0..columns).map(|i| show(r.get_ref(i).unwrap())).collect::<Vec<_>>().join(" | "))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            rows.sort();
            (table, rows)
        })
        .collect()
}

fn show(v: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
        other => format!("{other:?}"),
    }
}

/// What the store holds, as SQLite and as the CLI shows it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    tables: BTreeMap<String, Vec<String>>,
    nodes: Value,
    ports: Value,
    portgroups: Value,
    jobs: Value,
}

fn snapshot(d: &Daemon, store: &Store) -> Snapshot {
    Snapshot {
        tables: tables(d, store),
        nodes: d.json(&["node", "list"]),
        ports: d.json(&["port", "list"]),
        portgroups: d.json(&["port", "group", "list"]),
        jobs: d.json(&["job", "list"]),
    }
}

/// One raw connection that has said hello.
struct Raw(UnixStream);

impl Raw {
    fn connect(d: &Daemon) -> Raw {
        let s = UnixStream::connect(&d.socket).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let mut raw = Raw(s);
        assert!(matches!(
            raw.call(&Request::Hello { version: PROTOCOL_VERSION, client: "test".into() }),
            Some(Response::Hello { .. })
        ));
        raw
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }

    fn recv(&mut self) -> Option<Response> {
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).ok()?;
        Some(codec::decode(&body).expect("the daemon's frames decode"))
    }

    fn call(&mut self, req: &Request) -> Option<Response> {
        self.send_bytes(&codec::encode_frame(req).unwrap());
        self.recv()
    }

    /// A request that must be refused with an error response.
    fn refused(&mut self, req: &Request) -> KilnError {
        match self.call(req) {
            Some(Response::Error(e)) => e,
            other => panic!("{req:?} was not refused: {other:?}"),
        }
    }
}

fn node(name: &str, driver: &str) -> NewNode {
    NewNode { name: name.into(), driver: driver.into(), ..Default::default() }
}

#[test]
fn no_rejected_request_changes_the_store() {
    rejected_requests_change_nothing(Store::Sqlite);
}

#[test]
fn no_rejected_request_changes_a_postgres_store() {
    rejected_requests_change_nothing(Store::Postgres(crate::postgres::database()));
}

fn rejected_requests_change_nothing(store: Store) {
    let d = match &store {
        Store::Sqlite => Daemon::start(3, &["--no-periodic"]),
        Store::Postgres(url) => Daemon::start(3, &["--no-periodic", "--store", url]),
    };
    // Something in every table: nodes in several states, ports, jobs,
    // history, a Redfish node with driver_info.
    d.json(&["node", "manage", "demo[1-2]", "--wait"]);
    d.json(&["node", "provide", "demo2", "--wait"]);
    d.json(&["node", "deploy", "demo2", "--wait"]);
    d.json(&["port", "create", "52:54:00:00:00:01", "--node", "demo1"]);
    d.json(&["port", "create", "52:54:00:00:00:05", "--node", "demo2"]);
    d.json(&["port", "group", "create", "bond0", "--node", "demo1", "--port", "52:54:00:00:00:01"]);
    let pw = d.dir.path().join("pw");
    std::fs::write(&pw, "S3cret-rejected").unwrap();
    let pw = pw.to_str().unwrap();
    d.json(&["node", "create", "rf1", "--driver", "redfish", "--address", "http://127.0.0.1:9"]);
    d.json(&["node", "set", "rf1", "--driver-info", "username=admin", "--password-file", pw]);
    // Events are stored by the event bus just after the changes they
    // report: the snapshot waits for the last one.
    d.wait_for_stored_event("rf1's update", |e| e["node_name"] == "rf1" && e["kind"] == "end");
    let before = snapshot(&d, &store);
    let file = d.dir.path().join("nodes.json");
    // The exit code says the kind of refusal: bad input (2) or a refusal
    // the request could not help (1).
    let code_of = |kind: &str| if ["usage", "not_found", "invalid_input"].contains(&kind) { 2 } else { 1 };
    let import = |text: &str| {
        std::fs::write(&file, text).unwrap();
        let out = d.cli(&["--json", "node", "import", file.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(out.status.code(), Some(code_of(v["error"]["kind"].as_str().unwrap())), "{text}: {v}");
        v
    };

    let refused = std::cell::Cell::new(0);
    let count = || refused.set(refused.get() + 1);
    // A refused request (exit 2 or 1 by its kind), or a request whose
    // node refused it (a per-node result: exit 1).
    let refused_as = |args: &[&str], kind: &str, per_node: bool| {
        let out = d.json_code(args, if per_node { 1 } else { code_of(kind) });
        let got = if per_node { &out[0]["error"]["kind"] } else { &out["error"]["kind"] };
        assert_eq!(got, kind, "kiln {args:?}: {out}");
        count();
    };
    let cli = |args: &[&str], kind: &str| refused_as(args, kind, false);
    // Node import files: all or nothing.
    let partly_valid = [
        r#"[{"name": "a1", "driver": "fake"}, {"name": "demo1", "driver": "fake"}]"#,
        r#"[{"name": "a1", "driver": "fake"}, {"name": "a1", "driver": "fake"}]"#,
        r#"[{"name": "a1", "driver": "fake"}, {"name": "a2", "driver": "magic"}]"#,
        r#"[{"name": "a1", "driver": "fake", "ports": ["52:54:00:00:00:09"]}, {"name": "a2", "driver": "fake", "ports": ["zz:zz"]}]"#,
        r#"[{"name": "a1", "driver": "fake", "ports": ["52:54:00:00:00:09"]}, {"name": "a2", "driver": "fake", "ports": ["52-54-00-00-00-09"]}]"#,
        r#"[{"name": "a1", "driver": "fake", "ports": ["52:54:00:00:00:01"]}]"#,
        r#"[{"name": "a1", "driver": "fake"}, {"name": "a b", "driver": "fake"}]"#,
        r#"[{"name": "a1", "driver": "fake"}, {"name": "a2", "driver": "redfish", "driver_info": {"address": "ftp://x"}}]"#,
        r#"[{"name": "a1", "driver": "fake"}, {"name": "a2", "driver": "ipmi"}]"#,
        "- {name: a1, driver: fake}\n- {name: 7d3f0a9e-1b2c-4d5e-8f90-123456789abc, driver: fake}\n",
    ];
    for text in partly_valid {
        let out = import(text);
        assert!(["conflict", "invalid_input"].contains(&out["error"]["kind"].as_str().unwrap()), "{text}: {out}");
        count();
    }
    for text in [r#"[{"name": "a1", "driver": "fake", "colour": "red"}]"#, "[]", "{", "- 1\n- [2]\n", "\u{0}\u{ff}"] {
        let out = import(text);
        assert_eq!(out["error"]["kind"], "usage", "{text}: {out}");
        count();
    }
    // Bad node sets, unknown nodes, invalid transitions.
    cli(&["node", "list", "demo[1-"], "invalid_input");
    cli(&["node", "manage", "demo[3-1]"], "invalid_input");
    cli(&["node", "delete", "demo[1-5]"], "not_found");
    cli(&["node", "manage", "demo[1-5]"], "not_found");
    cli(&["node", "manage", "demo1&demo2"], "invalid_input");
    cli(&["node", "show", "nope"], "not_found");
    cli(&["node", "set", "nope", "--property", "a=b"], "not_found");
    cli(&["node", "power", "status", "nope"], "not_found");
    refused_as(&["node", "delete", "demo2"], "invalid_input", true);
    // Bad driver info, ports, jobs, periodic tasks.
    cli(&["node", "create", "x1", "--driver", "magic"], "invalid_input");
    cli(&["node", "create", "x1", "--driver", "redfish"], "invalid_input");
    cli(&["node", "create", "x1", "--driver", "redfish", "--address", "ftp://nowhere"], "invalid_input");
    cli(&["node", "create", "demo1", "--driver", "fake"], "conflict");
    cli(&["node", "set", "rf1", "--driver-info", "address=ftp://nowhere"], "invalid_input");
    cli(&["node", "set", "rf1", "--unset-driver-info", "address"], "invalid_input");
    cli(&["port", "create", "52:54:00:00:00:01", "--node", "demo2"], "conflict");
    cli(&["port", "create", "zz:zz", "--node", "demo2"], "invalid_input");
    cli(&["port", "create", "52:54:00:00:00:02", "--node", "nope"], "not_found");
    cli(&["port", "delete", "52:54:00:00:00:03"], "not_found");
    // Port groups: another node's port, a taken name, an unknown mode, a
    // port already grouped, unknown groups; validate of unknown nodes.
    cli(&["port", "group", "create", "bond1", "--node", "demo1", "--port", "52:54:00:00:00:05"], "invalid_input");
    cli(&["port", "group", "create", "bond0", "--node", "demo2"], "conflict");
    cli(&["port", "group", "create", "bond1", "--node", "demo2", "--mode", "lacp"], "invalid_input");
    cli(&["port", "group", "create", "bond1", "--node", "demo1", "--port", "52:54:00:00:00:01"], "conflict");
    cli(&["port", "group", "create", "bond1", "--node", "demo2", "--port", "52:54:00:00:00:09"], "not_found");
    cli(&["port", "set", "52:54:00:00:00:05", "--group", "bond0"], "invalid_input");
    cli(&["port", "set", "52:54:00:00:00:05", "--group", "nope"], "not_found");
    cli(&["port", "group", "delete", "nope"], "not_found");
    cli(&["node", "validate", "nope"], "not_found");
    cli(&["job", "cancel", "9999"], "not_found");
    cli(&["job", "archive", "9999"], "not_found");
    cli(&["periodic", "run", "reticulate"], "not_found");

    // Raw frames: requests the CLI would never send, and garbage.
    let mut raw = Raw::connect(&d);
    let raw_refusals = [
        Request::NodeImport(vec![]),
        Request::NodeImport(vec![node("b1", "fake"), node("", "fake")]),
        Request::NodeImport(vec![node("b1", "fake"), node("b2", "fake"), node("b1", "ipmi")]),
        Request::NodeCreate(NewNode {
            ports: vec!["52:54:00:00:00:0a".into(), "52:54:00:00:00:0A".into()],
            ..node("b3", "fake")
        }),
        Request::NodeCreate(node(&"x".repeat(256), "fake")),
        Request::NodeSet {
            node: "rf1".into(),
            update: NodeUpdate {
                driver_info: [("verify_tls".into(), Some("maybe".into()))].into(),
                ..Default::default()
            },
        },
        Request::NodeOp {
            nodes: "demo[1-2],nope[1-3]".into(),
            op: Op::Verb(Verb::Deploy),
            wait: true,
            fanout: Some(0),
            priority: 0,
        },
        Request::NodeOp { nodes: "demo[1-99999999999]".into(), op: Op::Delete, wait: false, fanout: None, priority: 0 },
        Request::NodeOp { nodes: "demo1".into(), op: Op::Verb(Verb::Manage), wait: false, fanout: None, priority: 99 },
        Request::NodeDelete { nodes: "@nogroup".into() },
        Request::PowerStatus { nodes: "demo[".into() },
        Request::PortCreate { address: String::new(), node: "demo1".into() },
        Request::PortGroupCreate(NewPortGroup { name: String::new(), node: "demo2".into(), ..Default::default() }),
        Request::PortGroupCreate(NewPortGroup {
            name: "7d3f0a9e-1b2c-4d5e-8f90-123456789abc".into(),
            node: "demo2".into(),
            ..Default::default()
        }),
        Request::PortGroupCreate(NewPortGroup {
            name: "bond1".into(),
            node: "demo2".into(),
            ports: vec!["52:54:00:00:00:05".into(), "52-54-00-00-00-05".into()],
            ..Default::default()
        }),
        Request::PortSet { address: String::new(), group: None },
        Request::NodeValidate { nodes: "demo[".into() },
        Request::JobSubmit { ops: vec![], priority: 0, depends: vec![] },
        // Several jobs: none, or one bad among good ones (nothing is stored),
        // or one naming a job before the first.
        Request::JobSubmitMany { jobs: vec![] },
        Request::JobSubmitMany {
            jobs: vec![sleep_job(vec![]), sleep_job(vec![]), NewJob { ops: vec![], ..sleep_job(vec![]) }],
        },
        Request::JobSubmitMany {
            jobs: vec![sleep_job(vec![NewDependency { job: JobRef::Earlier(1), statuses: vec![] }])],
        },
        Request::JobPriority { id: kiln_store::JobId(9999), priority: 0 },
        Request::Hello { version: PROTOCOL_VERSION, client: "again".into() },
    ];
    for req in &raw_refusals {
        let e = raw.refused(req);
        println!("[rejected] {}: {e}", format!("{req:?}").chars().take(60).collect::<String>());
        count();
    }
    // Frames that do not decode: each answered with an error, the
    // connection goes on.
    for body in [&b""[..], b"\xff\xff\xff\xff", b"\x02\xff\xff\xff\xff\xff\xff\xff\xff\x0f", b"\x03garbage"] {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        raw.send_bytes(&frame);
        assert!(matches!(raw.recv(), Some(Response::Error(KilnError::Protocol(_)))), "{body:?}");
        count();
    }
    // A truncated valid request followed by more bytes: decoded as one
    // frame of the length given, which does not parse.
    let mut frame = codec::encode_frame(&Request::NodeCreate(node("c1", "fake"))).unwrap();
    frame.truncate(frame.len() - 2);
    frame[3] -= 2;
    raw.send_bytes(&frame);
    assert!(matches!(raw.recv(), Some(Response::Error(_))));
    count();
    // An oversized frame ends the connection.
    raw.send_bytes(&u32::MAX.to_be_bytes());
    assert!(matches!(raw.recv(), Some(Response::Error(KilnError::Protocol(_)))));
    assert!(raw.recv().is_none(), "the connection is closed after an oversized frame");
    count();

    let after = snapshot(&d, &store);
    if before != after {
        for (table, rows) in &before.tables {
            assert_eq!(rows, &after.tables[table], "table {table} changed");
        }
        assert_eq!(before, after);
    }

    // An invalid transition is accepted as a job, which fails: the job (its
    // log in its row) is recorded, and nothing else changes.
    refused_as(&["node", "deploy", "demo1", "--wait"], "invalid_state", true);
    refused_as(&["node", "provide", "demo2", "--wait"], "invalid_state", true);
    refused_as(&["node", "undeploy", "demo3", "--wait"], "invalid_state", true);
    let mut later = tables(&d, &store);
    let mut earlier = before.tables.clone();
    later.remove("jobs");
    earlier.remove("jobs");
    assert_eq!(earlier, later);
    assert_eq!(before.nodes, d.json(&["node", "list"]));
    let jobs = d.json(&["job", "list"]);
    let new_jobs = &jobs.as_array().unwrap()[before.jobs.as_array().unwrap().len()..];
    assert_eq!(new_jobs.len(), 3, "{jobs}");
    assert!(new_jobs.iter().all(|j| j["status"] == "error"), "{jobs}");

    assert!(d.log_lines().iter().all(|l| !l.contains("panicked") && !l.contains("S3cret")));
    println!(
        "[rejected] {} rejected requests, store unchanged ({} tables compared)",
        refused.get(),
        before.tables.len()
    );
}
