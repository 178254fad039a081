//! Fanout commands: the exec worker locally, the ssh worker against a real
//! OpenSSH server on loopback (nodes at 127.0.0.2..), a node that times out,
//! a host that refuses, `-b` gathering, `kiln copy`, and the exec opcode.

use std::process::Output;

use serde_json::Value;

use crate::harness::Daemon;
use crate::peers;

fn exec(d: &Daemon, args: &[&str]) -> (Output, Value) {
    let mut all = vec!["--json", "exec"];
    all.extend_from_slice(args);
    let out = d.cli(&all);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("kiln exec {args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr))
    });
    (out, v)
}

fn by_node(v: &Value) -> std::collections::BTreeMap<String, Value> {
    v.as_array().unwrap().iter().map(|o| (o["node"].as_str().unwrap().to_string(), o.clone())).collect()
}

#[test]
fn the_exec_worker_runs_everywhere_gathers_and_exits_with_the_largest_code() {
    let d = Daemon::start(0, &[]);
    let (out, v) = exec(&d, &["-w", "n[1-5]", "--worker", "exec", "--", "echo hello %h; [ %h = n3 ] && exit 7; true"]);
    assert_eq!(out.status.code(), Some(7));
    let r = by_node(&v);
    assert_eq!(r.len(), 5);
    assert_eq!(r["n2"]["stdout"], "hello n2\n");
    assert_eq!(r["n3"]["exit_code"], 7);
    assert_eq!(r["n4"]["exit_code"], 0);

    // -b: identical outputs under one folded node set.
    let out = d.cli(&["exec", "-w", "n[1-5]", "--worker", "exec", "-b", "--", "echo same"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("n[1-5] (5)\n---------------\nsame\n"), "{text}");

    // A timeout is reported per node, and the code is 255.
    let (out, v) = exec(&d, &["-w", "n[1-2]", "--worker", "exec", "-t", "1", "--", "[ %h = n2 ] && sleep 30; true"]);
    assert_eq!(out.status.code(), Some(255));
    let r = by_node(&v);
    assert_eq!(r["n1"]["timed_out"], false);
    assert_eq!(r["n2"]["timed_out"], true);
}

#[test]
fn the_ssh_worker_reaches_each_node_at_its_address() {
    let sshd = peers::sshd();
    let d = Daemon::start(0, &[]);
    for (name, addr) in [("s1", "127.0.0.2"), ("s2", "127.0.0.3"), ("refuses", "127.0.0.1")] {
        d.json(&["node", "create", name, "--driver", "fake", "--property", &format!("address={addr}")]);
    }
    let opts = sshd.ssh_options();
    let (out, v) = exec(&d, &["-w", "s[1-2]", "-o", &opts, "--", "echo $SSH_CONNECTION | cut -d' ' -f3"]);
    assert!(out.status.success(), "{v}");
    let r = by_node(&v);
    assert_eq!(r["s1"]["stdout"], "127.0.0.2\n");
    assert_eq!(r["s2"]["stdout"], "127.0.0.3\n");

    // A host that refuses the connection, and a node that times out.
    let (out, v) = exec(&d, &["-w", "s1,refuses", "-o", &opts, "-t", "5", "--", "[ $(hostname) ] && sleep 30"]);
    assert_eq!(out.status.code(), Some(255));
    let r = by_node(&v);
    assert_eq!(r["s1"]["timed_out"], true, "{v}");
    assert_eq!(r["refuses"]["exit_code"], 255);
    assert!(r["refuses"]["stderr"].as_str().unwrap().contains("refused"), "{v}");

    // kiln copy: the file reaches the node (here, the same machine).
    let src = d.dir.path().join("payload");
    std::fs::write(&src, "copied by kiln\n").unwrap();
    let dest = d.dir.path().join("received");
    let out = d.cli(&["copy", "-w", "s2", "-o", &opts, src.to_str().unwrap(), dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "copied by kiln\n");
}

#[test]
fn an_exec_opcode_keeps_each_nodes_result_in_the_job() {
    let d = Daemon::start(0, &[]);
    let job = d.dir.path().join("job.yaml");
    std::fs::write(&job, "ops:\n  - {op: exec, nodes: 'h[1-3]', worker: exec, command: 'echo on %h; [ %h != h2 ]'}\n")
        .unwrap();
    let done = d.json_code(&["job", "submit", job.to_str().unwrap(), "--wait"], 1);
    assert_eq!(done["status"], "error");
    let results = done["ops"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["output"], "on h1\n");
    assert_eq!(results[1]["ok"], false);
    assert_eq!(results[1]["exit_code"], 1);
    assert_eq!(results[2]["ok"], true);
}

#[test]
fn groups_from_the_config_name_nodes_for_the_daemon_and_for_kiln_nodeset() {
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("kiln.toml");
    std::fs::write(&conf, "[groups]\nodd = \"demo[1-5/2]\"\nsome = \"@odd,demo4\"\n").unwrap();
    let conf = conf.to_str().unwrap();
    let d = Daemon::start(6, &["--config", conf]);
    let listed = d.json(&["node", "list", "@some"]);
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["demo1", "demo3", "demo4", "demo5"]);
    let out = crate::harness::cli_at(&d.socket, &["nodeset", "--config", conf, "-f", "@some!demo3"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "demo[1,4-5]\n");
    // Several sets are taken together, as ClusterShell's nodeset takes them.
    let out = crate::harness::cli_at(&d.socket, &["nodeset", "--config", conf, "-f", "@odd", "demo2", "x[1-2]!x1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "demo[1-3,5],x2\n");
    let out = crate::harness::cli_at(&d.socket, &["nodeset", "-c", "n[1-10]", "n[5-20]"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "20\n");
    let out = crate::harness::cli_at(&d.socket, &["nodeset", "-e", "@nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown group @nope"));
}

#[test]
fn interrupting_kiln_exec_kills_the_commands_it_started() {
    let d = Daemon::start(0, &[]);
    let marker = d.dir.path().join("ran-to-the-end");
    let command = format!("sleep 30 && touch {}-%h", marker.display());
    let mut child = std::process::Command::new(crate::harness::KILN)
        .args(["--socket", d.socket.to_str().unwrap(), "exec", "-w", "x[1-3]", "--worker", "exec", "--", &command])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The commands run as the daemon's children: wait (bounded) until they do.
    let running = || {
        let out = std::process::Command::new("pgrep").args(["-f", &command.replace("%h", "x")]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let mut seen = 0;
    for _ in 0..200 {
        seen = running();
        if seen >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(seen >= 3, "the commands never started");
    // Ctrl-C: the CLI goes away; the daemon must kill what it started.
    let _ = child.kill();
    let _ = child.wait();
    let mut left = seen;
    for _ in 0..200 {
        left = running();
        if left == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(left, 0, "commands still running after the client left");
    d.json(&["node", "list"]);
}
