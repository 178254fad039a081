//! The properties kiln's input boundaries keep on any input (docs/reliability.md),
//! one function per boundary: the admin frame decoder, node import files and
//! node set expressions.
//!
//! Each function takes arbitrary bytes, runs them through exactly what the
//! daemon or the CLI runs, and panics only when a property breaks (a panic
//! inside kiln, a decoded request that does not re-encode the same, a folded
//! node set that does not parse back to the same set). Two drivers call
//! them: the cargo-fuzz targets in `fuzz/` (nightly instrumentation, long
//! runs, `scripts/fuzz.sh`), and the replay test below, which feeds the
//! committed seed corpus `fuzz/corpus/<target>/` plus deterministic
//! mutations of it on the stable toolchain, in seconds, in CI.

use kiln_actors::codec;
use kiln_actors::nodeset::{self, NodeSet};
use kiln_actors::protocol::Request;
use kiln_actors::supervisor::{Registry, prepare_nodes};

/// The largest frame the fuzzed stream reader accepts: small, so that a
/// hostile length is refused instead of waiting for a megabyte of input.
const FUZZ_MAX_FRAME: usize = 64 * 1024;

/// Node sets larger than this are parsed but not expanded and folded back
/// (the expansion alone would make one input take seconds).
const ROUND_TRIP_LIMIT: usize = 20_000;

/// Admin frames: `data` as one frame body, then as a stream of
/// length-prefixed frames read the way the server reads them.
///
/// Properties: nothing panics; a body that decodes re-encodes to bytes that
/// decode to the same encoding; the stream reader stops at the first error.
pub fn admin_frame(data: &[u8]) {
    if let Ok(req) = codec::decode::<Request>(data) {
        round_trips(&req);
    }
    let mut input = data;
    futures::executor::block_on(async {
        // Bounded: each frame consumes at least its 4-byte length.
        while let Ok(Some(req)) = codec::read_message::<_, Request>(&mut input, FUZZ_MAX_FRAME).await {
            round_trips(&req);
        }
    });
}

fn round_trips(req: &Request) {
    let frame = codec::encode_frame(req).expect("a decoded request encodes");
    let again: Request = codec::decode(&frame[4..]).expect("a re-encoded request decodes");
    let frame2 = codec::encode_frame(&again).expect("encodes");
    assert_eq!(frame, frame2, "a request does not survive encode/decode: {req:?}");
}

/// Node import files: `data` parsed as `kiln node import` parses a file,
/// then validated as the daemon validates an import (against an empty
/// registry).
///
/// Properties: nothing panics; an accepted import yields one record per node
/// and a batch holding at least those records.
pub fn import_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(nodes) = crate::import::parse_node_list(text) else { return };
    let count = nodes.len();
    if let Ok((records, batch)) = prepare_nodes(&Registry::default(), nodes, chrono::DateTime::UNIX_EPOCH) {
        assert_eq!(records.len(), count);
        assert!(batch.len() >= count);
    }
}

/// Groups the fuzzed node sets may use: nested, and one that includes itself.
fn group(name: &str) -> Option<String> {
    let def = match name {
        "rack1" => "r1-n[01-04]",
        "rack2" => "r2-n[01-04]",
        "racks" => "@rack1,@rack2!r2-n03",
        "loop" => "x1,@loop",
        _ => return None,
    };
    Some(def.to_string())
}

/// Node set expressions: parsed (with groups), then folded and expanded.
///
/// Properties: nothing panics; `parse(fold(s)) == s`; expanding gives
/// `len()` distinct names that build the same set.
pub fn nodeset(data: &[u8]) {
    let Ok(expr) = std::str::from_utf8(data) else { return };
    let Ok(set) = nodeset::parse_with(expr, &group) else { return };
    if set.len() > ROUND_TRIP_LIMIT {
        return;
    }
    let folded = set.fold();
    match nodeset::parse(&folded) {
        Ok(again) => assert!(again == set, "{expr:?} folds to {folded:?}, which parses to {:?}", again.fold()),
        Err(e) => panic!("{expr:?} folds to {folded:?}, which does not parse: {e}"),
    }
    let names = set.expand();
    assert_eq!(names.len(), set.len(), "{expr:?}");
    assert!(NodeSet::from_names(&names) == set, "{expr:?}: its expanded names build another set");
}

#[cfg(test)]
mod tests {
    //! The CI form of the fuzz targets: every seed of the committed corpus,
    //! then mutations of the seeds by a fixed-seed generator (bit flips,
    //! byte changes, inserted and removed bytes, splices of two seeds,
    //! interesting bytes), through the same functions.

    use std::path::PathBuf;

    /// Mutated inputs per target, on top of the seeds.
    const MUTATIONS: usize = 20_000;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the seed corpus {} is missing: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        assert!(seeds.len() >= 5, "{}: only {} seeds", dir.display(), seeds.len());
        seeds
    }

    /// Bytes that tend to matter to these parsers.
    const INTERESTING: &[u8] = b"[]{},-!&^@/:\"'\n 0123456789\xff\x00\x80\xfc\xfd";

    fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut data = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(data.len() + 1);
            let last = data.len().saturating_sub(1);
            match rng.below(6) {
                0 if !data.is_empty() => data[at.min(last)] ^= 1 << rng.below(8),
                1 if !data.is_empty() => data[at.min(last)] = rng.next() as u8,
                2 => data.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
                3 if at < data.len() => {
                    let end = (at + 1 + rng.below(8)).min(data.len());
                    data.drain(at..end);
                }
                4 => {
                    let other = &seeds[rng.below(seeds.len())];
                    let from = rng.below(other.len());
                    let end = (from + rng.below(32)).min(other.len());
                    data.splice(at..at, other[from..end].iter().copied());
                }
                _ => {
                    let end = (at + rng.below(4)).min(data.len());
                    data[at..end].fill(INTERESTING[rng.below(INTERESTING.len())]);
                }
            }
        }
        data
    }

    fn replay(target: &str, check: fn(&[u8])) {
        let seeds = seeds(target);
        for seed in &seeds {
            check(seed);
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
        for _ in 0..MUTATIONS {
            let input = mutate(&mut rng, &seeds);
            let shown = String::from_utf8_lossy(&input).into_owned();
            if std::panic::catch_unwind(|| check(&input)).is_err() {
                panic!("{target}: input {input:?} ({shown:?}) broke a property");
            }
        }
    }

    #[test]
    fn admin_frame_corpus_and_mutations() {
        replay("admin_frame", super::admin_frame);
    }

    #[test]
    fn import_file_corpus_and_mutations() {
        replay("import_file", super::import_file);
    }

    #[test]
    fn nodeset_corpus_and_mutations() {
        replay("nodeset", super::nodeset);
    }

    /// Every request variant the CLI sends, for the admin frame seeds.
    fn sample_requests() -> Vec<kiln_actors::protocol::Request> {
        use std::time::Duration;

        use kiln_actors::exec::{CopySpec, ExecSpec, RunOptions, Worker};
        use kiln_actors::jobs::{Dependency, JobRef, NewDependency, NewJob, Opcode};
        use kiln_actors::protocol::{Live, PROTOCOL_VERSION, Request};
        use kiln_actors::{NewNode, NodeUpdate, Op, Verb};
        use kiln_drivers::PowerAction;
        use kiln_store::{BootDevice, JobId, JobStatus, ProvisionState};

        let node = NewNode {
            name: "n1".into(),
            driver: "redfish".into(),
            driver_info: [("address".to_string(), "http://127.0.0.1:8000".to_string())].into(),
            properties: [("cpus".to_string(), "8".to_string())].into(),
            ports: vec!["52:54:00:00:00:01".into()],
            extra: serde_json::json!({"rack": "r1"}).as_object().cloned().unwrap_or_default(),
            ..NewNode::default()
        };
        let update = NodeUpdate {
            name: Some("n2".into()),
            driver: Some(kiln_store::DriverKind::Ipmi),
            driver_info: [("username".to_string(), Some("admin".to_string()))].into(),
            properties: [("cpus".to_string(), None)].into(),
            reset_bmc_profile: true,
            extra: [("rack".to_string(), Some(serde_json::json!({"row": 4}))), ("old".to_string(), None)].into(),
            instance_info: [("image_url".to_string(), Some("http://127.0.0.1:8080/a.iso".into()))].into(),
        };
        let exec = ExecSpec {
            worker: Worker::Ssh { options: vec!["-p".into(), "2222".into()] },
            command: "uptime".into(),
            fanout: 64,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Some(Duration::from_millis(1500)),
        };
        let ops = [
            Op::Verb(Verb::Deploy),
            Op::Power(PowerAction::Reboot),
            Op::BootDevice { device: BootDevice::Pxe, persistent: true },
            Op::Maintenance { on: true, reason: Some("fan swap".into()) },
            Op::Update(update.clone()),
            Op::Delete,
            Op::Noop,
            Op::Callback { token: kiln_actors::CallbackToken("0f".repeat(32)), failure: Some("disk not found".into()) },
        ];
        let mut all = vec![
            Request::Hello { version: PROTOCOL_VERSION, client: "kiln 0.1.0".into() },
            Request::Status,
            Request::NodeCreate(node.clone()),
            Request::NodeImport(vec![node.clone(), NewNode { name: "n2".into(), driver: "fake".into(), ..node }]),
            Request::NodeList {
                nodes: Some("n[1-10]".into()),
                state: Some(ProvisionState::Active),
                maintenance: Some(false),
                bmc: Some(kiln_actors::supervisor::BmcReach::Unreachable),
                stale: Some(std::time::Duration::from_secs(300)),
            },
            Request::NodeShow { node: "n1".into() },
            Request::NodeHistory { node: "n1".into(), limit: 20 },
            Request::NodeSet { node: "n1".into(), update },
            Request::NodeDelete { nodes: "n[1-3]".into() },
            Request::PowerStatus { nodes: "n[1-3],x1".into() },
            Request::PortCreate { address: "52:54:00:00:00:02".into(), node: "n1".into() },
            Request::PortList { node: Some("n1".into()) },
            Request::PortDelete { address: "52:54:00:00:00:02".into() },
            Request::Events {
                follow: true,
                nodes: Some("n[1-4]".into()),
                kinds: vec![kiln_actors::EventKind::Start, kiln_actors::EventKind::Error],
                since: Some(7),
            },
            Request::JobSubmit {
                ops: vec![
                    Opcode::Node { nodes: "n[1-4]".into(), op: Op::Verb(Verb::Manage), fanout: Some(2), wait: true },
                    Opcode::Sleep { seconds: 0.5 },
                    Opcode::Exec { nodes: "n1".into(), spec: exec.clone(), fanout: None },
                ],
                priority: -3,
                depends: vec![Dependency { job: JobId(7), statuses: vec![JobStatus::Success] }],
            },
            Request::JobSubmitMany {
                jobs: vec![
                    NewJob { ops: vec![Opcode::Sleep { seconds: 0.0 }], priority: 0, depends: Vec::new() },
                    NewJob {
                        ops: vec![Opcode::Node {
                            nodes: "n[1-4]".into(),
                            op: Op::Verb(Verb::Deploy),
                            fanout: None,
                            wait: false,
                        }],
                        priority: 5,
                        depends: vec![
                            NewDependency { job: JobRef::Earlier(1), statuses: vec![JobStatus::Success] },
                            NewDependency { job: JobRef::Id(JobId(7)), statuses: Vec::new() },
                        ],
                    },
                ],
            },
            Request::JobList { status: Some(JobStatus::Running), limit: Some(1000), ids: Vec::new() },
            Request::JobList { status: None, limit: None, ids: vec![JobId(3), JobId(5)] },
            Request::JobPriority { id: JobId(4), priority: -5 },
            Request::JobAutoArchive { older_than: Duration::from_secs(3600) },
            Request::JobShow { id: JobId(1) },
            Request::JobWait { id: JobId(1), after_serial: 3, timeout_ms: 1000 },
            Request::JobCancel { id: JobId(2) },
            Request::JobArchive { id: JobId(3) },
            Request::QueueDrain { on: true },
            Request::QueueStatus,
            Request::PeriodicList,
            Request::MemberList,
            Request::NodeCallback {
                node: "n1".into(),
                token: kiln_actors::CallbackToken("ab".repeat(32)),
                failure: Some("no disk".into()),
            },
            Request::Exec {
                nodes: "n[1-2]".into(),
                spec: ExecSpec { worker: Worker::Exec, ..exec.clone() },
                options: RunOptions { stdin: Some(b"input\n".to_vec()), total_timeout: Some(Duration::from_secs(9)) },
                live: Live::Lines,
            },
            Request::Copy {
                nodes: "n1".into(),
                spec: CopySpec {
                    worker: Worker::Exec,
                    source: "/etc/hostname".into(),
                    dest: "/tmp/x".into(),
                    recursive: true,
                    pull: true,
                    fanout: 4,
                    connect_timeout: Duration::from_secs(5),
                    command_timeout: None,
                },
                options: RunOptions::default(),
                live: Live::Outcomes,
            },
            Request::PeriodicRun { name: "power_sync".into() },
            Request::NodeValidate { nodes: "n[1-3]".into() },
            Request::PortSet { address: "52:54:00:00:00:02".into(), group: Some("bond0".into()) },
            Request::PortGroupCreate(kiln_actors::NewPortGroup {
                name: "bond0".into(),
                node: "n1".into(),
                mode: Some("802.3ad".into()),
                address: Some("52:54:00:00:00:01".into()),
                ports: vec!["52:54:00:00:00:01".into(), "52:54:00:00:00:02".into()],
            }),
            Request::PortGroupList { node: Some("n1".into()) },
            Request::PortGroupShow { group: "bond0".into() },
            Request::PortGroupDelete { group: "bond0".into() },
            Request::NodeListPages {
                nodes: Some("n[1-1000],@rack1".into()),
                state: Some(ProvisionState::Available),
                maintenance: Some(true),
                bmc: Some(kiln_actors::supervisor::BmcReach::Reachable),
                stale: Some(std::time::Duration::from_millis(1500)),
            },
        ];
        all.extend(ops.into_iter().map(|op| Request::NodeOp {
            nodes: "n1".into(),
            op,
            wait: true,
            fanout: Some(8),
            priority: -2,
        }));
        all
    }

    /// Every request variant is in the seeds, so the fuzzer starts from
    /// each shape the daemon accepts.
    #[test]
    fn sample_requests_round_trip() {
        for req in sample_requests() {
            super::round_trips(&req);
        }
    }

    /// Rewrites `fuzz/corpus/admin_frame/` from [`sample_requests`]: one
    /// file per request (hello plus the request, as a client sends them),
    /// after a protocol change. `cargo test -p kiln --lib write_admin_frame_seeds -- --ignored`
    #[test]
    #[ignore = "writes the seed corpus; run by hand after a protocol change"]
    fn write_admin_frame_seeds() {
        use kiln_actors::codec::encode_frame;
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/admin_frame");
        std::fs::create_dir_all(&dir).unwrap();
        let requests = sample_requests();
        let hello = encode_frame(&requests[0]).unwrap();
        for (i, req) in requests.iter().enumerate() {
            let mut frames = hello.clone();
            if i > 0 {
                frames.extend(encode_frame(req).unwrap());
            }
            std::fs::write(dir.join(format!("request-{i:02}")), frames).unwrap();
        }
    }
}
