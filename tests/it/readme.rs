//! The README's five-minute tour, run as printed: every `$ command` of its
//! console blocks runs in a shell against a daemon started as the README
//! says (`kiln serve --demo 64` in a fresh directory), and its output must
//! be the one printed, with timestamps, uuids and byte counts masked. A
//! README that drifts from the binary fails here, not on a new user.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::KILN;

/// One `$ command` and the output printed under it.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The console blocks between the tour's heading and the next section.
fn tour_steps(readme: &str) -> Vec<Step> {
    let start = readme.find("## A five-minute tour").expect("the README has a tour");
    let rest = &readme[start + 3..];
    let tour = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    let mut heredoc: Option<String> = None;
    for line in tour.lines() {
        if line.starts_with("```") {
            in_block = line == "```console";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(end) = &heredoc {
            let done = line == end;
            let step = steps.last_mut().expect("a heredoc follows its command");
            step.command.push('\n');
            step.command.push_str(line);
            if done {
                heredoc = None;
            }
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            if let Some((_, tag)) = cmd.split_once("<<'") {
                heredoc = Some(tag.trim_end_matches('\'').to_string());
            }
            steps.push(Step { command: cmd.to_string(), expected: Vec::new() });
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_string());
        }
    }
    steps
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

fn is_timestamp(s: &str) -> bool {
    s.len() > 20 && s.as_bytes()[..4].iter().all(u8::is_ascii_digit) && s.as_bytes()[4] == b'-' && s.contains('T')
}

/// A line with what changes from run to run masked and spacing collapsed.
fn normalize(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let core = w.trim_matches(|c| c == '"' || c == ',');
        let masked = if is_uuid(core) {
            w.replace(core, "UUID")
        } else if is_timestamp(core) {
            w.replace(core, "TIME")
        } else if core.chars().all(|c| c.is_ascii_digit()) && words.get(i + 1).is_some_and(|n| n.starts_with("bytes")) {
            "N".to_string()
        } else {
            w.to_string()
        };
        out.push(masked);
    }
    out.join(" ")
}

/// The README's daemon, in its own directory; killed by PID on drop.
struct TourDaemon {
    child: Child,
}

impl Drop for TourDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(dir: &Path) -> TourDaemon {
    let mut child = Command::new(KILN)
        .args(["serve", "--demo", "64"])
        .current_dir(dir)
        .env_remove("KILN_SOCKET")
        .env_remove("KILN_CONFIG")
        .env("KILN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let daemon = TourDaemon { child };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("kiln is serving") => break,
            Ok(_) => continue,
            Err(_) => panic!("the tour's daemon did not start"),
        }
    }
    // Keep draining its stderr so it never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    daemon
}

#[test]
fn the_readme_tour_runs_as_printed() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let steps = tour_steps(&readme);
    assert!(steps.len() >= 15, "the tour has its commands: {steps:?}");
    let dir = tempfile::tempdir().unwrap();
    let _daemon = start_daemon(dir.path());
    let mut ran = 0;
    for step in &steps {
        // The alias is replaced by a function; a live follow never ends.
        let follows = step.command.contains("--follow")
            || (step.command.contains("kiln events") && step.command.split_whitespace().any(|w| w == "-f"));
        if step.command.starts_with("alias ") || follows {
            continue;
        }
        // The backup goes into the test's directory, not the shared /tmp.
        let command = step.command.replace("/tmp/", "");
        // Bounded: a command that never ends fails the test instead of hanging it.
        let script = format!("kiln() {{ timeout 60 '{KILN}' \"$@\"; }}\n{command}\n");
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(&script).current_dir(dir.path()).stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("KILN_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd.output().expect("run bash");
        let got: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(normalize).collect();
        let want: Vec<String> = step.expected.iter().map(|l| normalize(&l.replace("/tmp/", ""))).collect();
        assert_eq!(
            got,
            want,
            "`$ {}` printed something else (stderr: {})",
            step.command,
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 15, "only {ran} commands ran");
}

#[test]
fn masking_keeps_what_matters() {
    assert_eq!(
        normalize("demo1  c1e8cc4d-3d63-4e0c-b480-25ac9b9b34de  enroll   -"),
        normalize("demo1 fb090c8b-b8ae-478d-b5f9-81ca47c00788 enroll -")
    );
    assert_eq!(normalize("  \"uuid\": \"c1e8cc4d-3d63-4e0c-b480-25ac9b9b34de\","), "\"uuid\": \"UUID\",");
    assert_eq!(normalize("2026-11-23T19:39:58.089494981+00:00 submitted"), "TIME submitted");
    assert_ne!(normalize("demo1 ok active"), normalize("demo1 failed active"));
}
