//! Fanout commands: the exec worker locally, the ssh worker against a real
//! OpenSSH server on loopback (nodes at 127.0.0.2..), a node that times out,
//! a host that refuses, `-b` gathering, `kiln copy` and `kiln rcopy`, the
//! exec opcode; live output, standard input, the sliding fanout window, and
//! that nothing a command started outlives its timeout or its client.
//!
//! Commands that must not end by themselves run `sleep` with an argument no
//! other process has ([`unique_sleep`]), so a scan of `/proc` finds exactly
//! the processes a test started, children of the shell included. Ordering
//! between a test and a command is by files the command waits for (a
//! bounded loop in the command), never by sleeping in the test.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

/// A `sleep` argument no other process has: `sleep 40.<nanos><pid>`.
fn unique_sleep() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("40.{nanos:09}{}", std::process::id())
}

/// How many processes run `sleep ARG`.
fn sleeping(arg: &str) -> usize {
    let wanted = format!("sleep\0{arg}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| cmdline == wanted.as_bytes())
        .count()
}

/// Polls (at most 10 s) until `sleeping(arg)` is `n`; returns the last count.
fn until_sleeping(arg: &str, n: usize) -> usize {
    let mut seen = sleeping(arg);
    for _ in 0..200 {
        if seen == n {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        seen = sleeping(arg);
    }
    seen
}

/// A shell test that waits (at most 30 s) until `file` exists, and fails
/// if it never does: the command's half of a hand-over with the test.
fn wait_for_file(file: &std::path::Path) -> String {
    let f = file.display();
    format!("i=0; until [ -e {f} ] || [ $i -ge 300 ]; do sleep 0.1; i=$((i+1)); done; [ -e {f} ]")
}

/// Starts the CLI (stdin null, stdout and stderr piped) without waiting.
fn spawn_cli(d: &Daemon, args: &[&str]) -> Child {
    Command::new(crate::harness::KILN)
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .env_remove("KILN_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The lines of a child's stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most a minute) for a line; panics naming what was awaited.
fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no line for {what}"))
}

/// Waits for a child to exit (killed after a minute) and returns its output.
fn finish(child: Child) -> Output {
    let pid = child.id() as libc::pid_t;
    let (done, watched) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watched.recv_timeout(Duration::from_secs(60)).is_err() {
            // SAFETY: our own child, not yet waited for.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    out
}

#[test]
fn a_timeout_kills_all_the_command_started_and_keeps_what_it_printed() {
    let d = Daemon::start(0, &[]);
    let arg = unique_sleep();
    let command = format!("echo before %h; echo oops >&2; sleep {arg}; echo after");
    let (out, v) = exec(&d, &["-w", "n[1-2]", "--worker", "exec", "-t", "1", "--", &command]);
    assert_eq!(out.status.code(), Some(255));
    let r = by_node(&v);
    assert_eq!(r["n1"]["timed_out"], true, "{v}");
    assert_eq!(r["n1"]["stdout"], "before n1\n", "{v}");
    assert_eq!(r["n2"]["stderr"], "oops\n", "{v}");
    assert_eq!(until_sleeping(&arg, 0), 0, "the shell's sleep outlived the timeout");

    // As text: the lines printed, then why the node ended.
    let out = d.cli(&["exec", "-w", "n1", "--worker", "exec", "-t", "1", "--", &command]);
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n1: before n1\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("n1: oops\n") && err.contains("kiln: n1: command timed out after 1 s"), "{err}");
    assert_eq!(until_sleeping(&arg, 0), 0);
}

#[test]
fn interrupting_kiln_exec_kills_every_process_the_commands_started() {
    let d = Daemon::start(0, &[]);
    // Ctrl-C (SIGINT) and SIGTERM, streaming live and waiting for one answer.
    for (signal, extra) in [(libc::SIGINT, None), (libc::SIGTERM, Some("-b")), (libc::SIGKILL, Some("--json-lines"))] {
        let arg = unique_sleep();
        let marker = d.dir.path().join(format!("ran-to-the-end-{signal}"));
        let command = format!("sleep {arg}; touch {}-%h", marker.display());
        let mut args = vec!["exec", "-w", "x[1-3]", "--worker", "exec"];
        args.extend(extra);
        args.extend(["--", &command]);
        let child = spawn_cli(&d, &args);
        assert_eq!(until_sleeping(&arg, 3), 3, "the commands never started");
        // SAFETY: our own child, not yet waited for.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let out = finish(child);
        assert!(!out.status.success());
        assert_eq!(until_sleeping(&arg, 0), 0, "commands still running after the client left ({signal})");
    }
    d.json(&["node", "list"]);
}

#[test]
fn a_slow_node_holds_only_its_own_slot_of_the_fanout() {
    let d = Daemon::start(0, &[]);
    // With -f 2, n1 waits until every other node has ended: they must
    // start while it runs (with a window that waits for its head they
    // would start after it, and n1 would give up and fail).
    let dir = d.dir.path().display().to_string();
    let others: Vec<String> = (2..=6).map(|i| format!("-e {dir}/n{i}")).collect();
    let all = others.join(" -a ");
    let command = format!(
        "if [ %h = n1 ]; then i=0; until [ {all} ] || [ $i -ge 300 ]; do sleep 0.1; i=$((i+1)); done; [ {all} ]; \
         else touch {dir}/%h; fi"
    );
    let (out, v) = exec(&d, &["-w", "n[1-6]", "-f", "2", "--worker", "exec", "--", &command]);
    assert!(out.status.success(), "{v}");
    let order: Vec<&str> = v.as_array().unwrap().iter().map(|o| o["node"].as_str().unwrap()).collect();
    assert_eq!(order, ["n1", "n2", "n3", "n4", "n5", "n6"], "outcomes in node-set order");
}

#[test]
fn lines_are_printed_as_the_nodes_print_them() {
    let d = Daemon::start(0, &[]);
    let gate = d.dir.path().join("gate");
    // n1 prints its second line only once the test has seen its first.
    let command =
        format!("echo first %h; echo warn %h >&2; if [ %h = n1 ]; then {}; fi; echo second %h", wait_for_file(&gate));
    let mut child = spawn_cli(&d, &["exec", "-w", "n[1-2]", "--worker", "exec", "--", &command]);
    let lines = lines_of(&mut child);
    let mut seen = Vec::new();
    while !seen.contains(&"n1: first n1".to_string()) {
        seen.push(next_line(&lines, "n1's first line"));
    }
    std::fs::write(&gate, "").unwrap();
    let out = finish(child);
    seen.extend(lines.iter());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in ["n1: first n1", "n1: second n1", "n2: first n2", "n2: second n2"] {
        assert!(seen.contains(&line.to_string()), "{line} not in {seen:?}");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("n1: warn n1\n") && err.contains("n2: warn n2\n"), "stderr lines go to stderr: {err}");

    // --json-lines: one object per node as it ends; n2's comes while n1 waits.
    let gate = d.dir.path().join("gate2");
    let command = format!("if [ %h = n1 ]; then {}; fi; echo %h", wait_for_file(&gate));
    let mut child = spawn_cli(&d, &["exec", "-w", "n[1-2]", "--worker", "exec", "--json-lines", "--", &command]);
    let lines = lines_of(&mut child);
    let first: Value = serde_json::from_str(&next_line(&lines, "n2's end")).unwrap();
    assert_eq!(first["node"], "n2");
    assert_eq!(first["stdout"], "n2\n");
    std::fs::write(&gate, "").unwrap();
    let second: Value = serde_json::from_str(&next_line(&lines, "n1's end")).unwrap();
    assert_eq!(second["node"], "n1");
    assert_eq!(second["exit_code"], 0);
    assert!(finish(child).status.success());
    assert!(lines.recv().is_err(), "one line per node");

    // A bad node set is one JSON line too, and nothing runs.
    let out = d.cli(&["exec", "-w", "n[", "--worker", "exec", "--json-lines", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["kind"], "invalid_input");
    let out = d.cli(&["--json", "exec", "-w", "n1", "--worker", "exec", "--json-lines", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Runs the CLI with `input` on its standard input.
fn cli_with_stdin(d: &Daemon, args: &[&str], input: Vec<u8>) -> Output {
    let mut child = Command::new(crate::harness::KILN)
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .env_remove("KILN_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The CLI may stop reading (input too large): a broken pipe is fine.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = finish(child);
    writer.join().unwrap();
    out
}

#[test]
fn standard_input_goes_to_every_node_unless_told_not_to() {
    let d = Daemon::start(0, &[]);
    let args = ["--json", "exec", "-w", "n[1-3]", "--worker", "exec", "--", "cat; echo end %h"];
    let out = cli_with_stdin(&d, &args, b"line one\nline two\n".to_vec());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(by_node(&v)["n3"]["stdout"], "line one\nline two\nend n3\n");

    let args = ["--json", "exec", "-w", "n1", "--worker", "exec", "--no-stdin", "--", "cat; echo end"];
    let out = cli_with_stdin(&d, &args, b"not read\n".to_vec());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(by_node(&v)["n1"]["stdout"], "end\n");

    // Above the limit: a clear error, and nothing runs.
    let ran = d.dir.path().join("ran");
    let command = format!("touch {}", ran.display());
    let big = vec![b'x'; kiln_actors::exec::MAX_STDIN + 1];
    let out = cli_with_stdin(&d, &["exec", "-w", "n1", "--worker", "exec", "--", &command], big);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("standard input is larger than 15 MiB"));
    assert!(!ran.exists());
}

#[test]
fn the_total_timeout_ends_the_whole_run() {
    let d = Daemon::start(0, &[]);
    let arg = unique_sleep();
    let command = format!("echo started %h; sleep {arg}");
    let (out, v) =
        exec(&d, &["-w", "n[1-3]", "-f", "1", "-t", "60", "--timeout-total", "1", "--worker", "exec", "--", &command]);
    assert_eq!(out.status.code(), Some(255));
    let r = by_node(&v);
    assert_eq!(r["n1"]["timed_out"], true);
    assert_eq!(r["n1"]["stdout"], "started n1\n");
    assert!(r["n1"]["error"].as_str().unwrap().contains("total timeout of 1 s"), "{v}");
    for n in ["n2", "n3"] {
        assert_eq!(r[n]["timed_out"], true);
        assert!(r[n]["error"].as_str().unwrap().starts_with("not started"), "{v}");
    }
    assert_eq!(until_sleeping(&arg, 0), 0);
    let out = d.cli(&["exec", "-w", "n1", "--timeout-total", "0", "--worker", "exec", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn copy_takes_directories_with_r_and_rcopy_gathers_from_every_node() {
    let d = Daemon::start(0, &[]);
    let root = d.dir.path();
    let tree = root.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("top"), "top\n").unwrap();
    std::fs::write(tree.join("sub/deep"), "deep\n").unwrap();
    let tree = tree.to_str().unwrap();

    // A directory without -r is refused before anything runs.
    let dest = format!("{}/on-%h", root.display());
    let out = d.cli(&["copy", "-w", "n[1-2]", "--worker", "exec", tree, &dest]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory; add -r"));
    assert!(!root.join("on-n1").exists());
    let out = d.cli(&["copy", "-r", "-w", "n[1-2]", "--worker", "exec", tree, &dest]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "a copy that worked prints nothing");
    assert_eq!(std::fs::read_to_string(root.join("on-n2/sub/deep")).unwrap(), "deep\n");

    // rcopy: each node's copy as DEST/NAME.node (%h picks each node's source).
    let gathered = root.join("gathered");
    std::fs::create_dir(&gathered).unwrap();
    let source = format!("{}/on-%h/top", root.display());
    let v = d.json(&["rcopy", "-w", "n[1-2]", "--worker", "exec", &source, gathered.to_str().unwrap()]);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(std::fs::read_to_string(gathered.join("top.n1")).unwrap(), "top\n");
    assert_eq!(std::fs::read_to_string(gathered.join("top.n2")).unwrap(), "top\n");
    let source = format!("{}/on-%h/sub", root.display());
    let out = d.cli(&["rcopy", "-r", "-w", "n1", "--worker", "exec", &source, gathered.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(std::fs::read_to_string(gathered.join("sub.n1/deep")).unwrap(), "deep\n");

    // The destination must be a local directory; a node's missing file is its failure.
    let out = d.cli(&["rcopy", "-w", "n1", "--worker", "exec", &source, root.join("nope").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a local directory"));
    let missing = format!("{}/missing-%h", root.display());
    let v = d.json_code(&["rcopy", "-w", "n1", "--worker", "exec", &missing, gathered.to_str().unwrap()], 1);
    assert_eq!(v[0]["exit_code"], 1);
}

#[test]
fn copy_and_rcopy_over_ssh_take_trees() {
    let sshd = peers::sshd();
    let d = Daemon::start(0, &[]);
    for (name, addr) in [("s1", "127.0.0.2"), ("s2", "127.0.0.3")] {
        d.json(&["node", "create", name, "--driver", "fake", "--property", &format!("address={addr}")]);
    }
    let opts = sshd.ssh_options();
    let root = d.dir.path();
    let tree = root.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/deep"), "deep\n").unwrap();
    let dest = format!("{}/on-%h", root.display());
    let out = d.cli(&["copy", "-r", "-w", "s[1-2]", "-o", &opts, tree.to_str().unwrap(), &dest]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(std::fs::read_to_string(root.join("on-s1/sub/deep")).unwrap(), "deep\n");

    let gathered = root.join("gathered");
    std::fs::create_dir(&gathered).unwrap();
    let source = format!("{}/on-%h/sub", root.display());
    let out = d.cli(&["rcopy", "-r", "-w", "s[1-2]", "-o", &opts, &source, gathered.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(std::fs::read_to_string(gathered.join("sub.s2/deep")).unwrap(), "deep\n");
}

#[test]
fn group_sources_name_nodes_for_the_daemon_and_kiln_nodeset_and_sighup_reads_them_again() {
    let conf_dir = tempfile::tempdir().unwrap();
    let file = conf_dir.path().join("groups");
    std::fs::write(&file, "# racks\nrack2: demo[5-6]\n").unwrap();
    let conf = conf_dir.path().join("kiln.toml");
    std::fs::write(
        &conf,
        format!(
            "group_file = \"{}\"\ngroup_list = \"echo login\"\n\
             group_map = \"[ $GROUP = login ] && echo 'l[1-2]'\"\n[groups]\nrack1 = \"demo[1-2]\"\n",
            file.display()
        ),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let mut d = Daemon::start(6, &["--config", conf]);
    let (out, v) = exec(&d, &["-w", "@login", "--worker", "exec", "--", "echo %h"]);
    assert!(out.status.success(), "{v}");
    assert_eq!(by_node(&v)["l2"]["stdout"], "l2\n");
    let names = |v: Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(d.json(&["node", "list", "@rack2"])), ["demo5", "demo6"]);

    // kiln nodeset: -l, -ll, -lll, -r, -x, -i, -S with the same groups.
    let nodeset = |args: &[&str]| {
        let mut all = vec!["nodeset", "--config", conf];
        all.extend_from_slice(args);
        let out = crate::harness::cli_at(&d.socket, &all);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(nodeset(&["-l"]), "@login\n@rack1\n@rack2\n");
    assert_eq!(nodeset(&["-ll"]), "@login l[1-2]\n@rack1 demo[1-2]\n@rack2 demo[5-6]\n");
    assert_eq!(nodeset(&["-lll", "demo[2-5]"]), "@rack1 demo2 1\n@rack2 demo5 1\n");
    assert_eq!(nodeset(&["-r", "demo[1-6]", "l1", "l2"]), "@login,@rack1,@rack2,demo[3-4]\n");
    assert_eq!(nodeset(&["-f", "demo[1-10]", "-x", "@rack1", "-i", "demo[2-8]", "-x", "demo7"]), "demo[3-6,8]\n");
    assert_eq!(nodeset(&["-e", "-S", "\\n", "@rack2"]), "demo5\ndemo6\n");

    // SIGHUP reads the sources again: a changed file is in force, no key changed.
    std::fs::write(&file, "rack2: demo[3-4]\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for_log("configuration reloaded");
    assert_eq!(names(d.json(&["node", "list", "@rack2"])), ["demo3", "demo4"]);

    // A source that fails is refused, naming its key.
    let bad = conf_dir.path().join("bad.toml");
    std::fs::write(&bad, "group_list = \"echo x\"\ngroup_map = \"echo no >&2; exit 3\"\n").unwrap();
    let out = crate::harness::cli_at(&d.socket, &["nodeset", "--config", bad.to_str().unwrap(), "-l"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("group_map") && err.contains("for x") && err.contains("no"), "{err}");
}
