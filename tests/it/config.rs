//! The configuration: errors name the key and where its value came from,
//! `KILN_<KEY>` variables and flags override the file in that order,
//! `--check-config` shows what is in force, the example file in `examples/`
//! is valid and every key has its row in `docs/config.md`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::harness::KILN;

/// `kiln [--json] serve --check-config ARGS` with exactly these `KILN_*`
/// variables (the test's own environment's are removed).
fn check(json: bool, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(KILN);
    if json {
        cmd.arg("--json");
    }
    cmd.args(["serve", "--check-config"]).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("KILN_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(envs.iter().copied()).stdin(Stdio::null()).output().expect("run kiln")
}

/// The error of a refused config: exit code 2 and stderr.
fn refused(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = check(false, args, envs);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "accepted: {}{stderr}", String::from_utf8_lossy(&out.stdout));
    stderr
}

/// The keys of an accepted config: `{key: {value, source, env, live}}`.
fn keys(args: &[&str], envs: &[(&str, &str)]) -> Value {
    let out = check(true, args, envs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "refused: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["valid"], true);
    v["keys"].clone()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn errors_name_the_key_and_the_file_variable_or_flag_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(dir.path(), "kiln.toml", "lock_wiat = 5\n");
    let e = refused(&["--config", &conf], &[]);
    assert!(e.contains(&format!("config {conf}: unknown key 'lock_wiat' (did you mean 'lock_wait'?)")), "{e}");

    let conf = write(dir.path(), "type.toml", "lock_wait = \"abc\"\n");
    let e = refused(&["--config", &conf], &[]);
    assert!(e.contains(&format!("config {conf}: lock_wait: invalid duration \"abc\"")), "{e}");
    let conf = write(dir.path(), "bad.toml", "max_running_jobs = 0\nsocket_mode = \"0777\"\n");
    let e = refused(&["--config", &conf], &[]);
    assert!(e.contains("2 configuration problems"), "{e}");
    assert!(e.contains(&format!("config {conf}: max_running_jobs: 0: expected at least 1")), "{e}");
    assert!(e.contains(&format!("config {conf}: socket_mode: '0777'")), "{e}");

    let conf = write(dir.path(), "syntax.toml", "lock_wait = [\n");
    let e = refused(&["--config", &conf], &[]);
    assert!(e.contains(&format!("config {conf}: not valid TOML")) && e.contains("line 1"), "{e}");

    let e = refused(&[], &[("KILN_LOCK_WAIT", "abc")]);
    assert!(e.contains("KILN_LOCK_WAIT: invalid duration \"abc\""), "{e}");
    let e = refused(&[], &[("KILN_DEFAULT_FANOUT", "-3")]);
    assert!(e.contains("KILN_DEFAULT_FANOUT: ") && e.contains("whole number"), "{e}");
    let e = refused(&[], &[("KILN_LOG", "kiln=loud")]);
    assert!(e.contains("KILN_LOG: 'kiln=loud' is not a log filter"), "{e}");
    let e = refused(&[], &[("KILN_GROUPS", "{rack1 = \"n[1-\"}")]);
    assert!(e.contains("KILN_GROUPS: group 'rack1'"), "{e}");

    let e = refused(&["--lock-wait", "soon"], &[]);
    assert!(e.contains("--lock-wait: invalid duration \"soon\""), "{e}");
    let e = refused(&["--set", "max_frame=12"], &[]);
    assert!(e.contains("--set max_frame: 12: expected between 1024"), "{e}");
    let e = refused(&["--set", "colour=red"], &[]);
    assert!(e.contains("--set: unknown key 'colour'"), "{e}");
    let out = check(true, &["--set", "colour=red"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["valid"], false);
    assert!(v["error"].as_str().unwrap().contains("colour"), "{v}");

    let missing = dir.path().join("missing.toml");
    let e = refused(&["--config", missing.to_str().unwrap()], &[]);
    assert!(e.contains(&format!("config {}: cannot read it", missing.display())), "{e}");
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(dir.path(), "kiln.toml", "lock_wait = 1\nmax_running_jobs = 10\ndefault_fanout = 8\n");
    let file = format!("config {conf}");
    let k = keys(&["--config", &conf], &[("KILN_MAX_RUNNING_JOBS", "20"), ("KILN_DEFAULT_FANOUT", "16")]);
    assert_eq!(k["lock_wait"]["value"], "1s");
    assert_eq!(k["lock_wait"]["source"], file.as_str());
    assert_eq!(k["max_running_jobs"]["value"], 20);
    assert_eq!(k["max_running_jobs"]["source"], "KILN_MAX_RUNNING_JOBS");
    assert_eq!(k["default_fanout"]["value"], 16);
    assert_eq!(k["wait_timeout"]["value"], "30m");
    assert_eq!(k["wait_timeout"]["source"], "default");

    let k = keys(
        &["--config", &conf, "--max-running-jobs", "30", "--set", "default_fanout=32", "--lock-wait", "1500ms"],
        &[("KILN_MAX_RUNNING_JOBS", "20"), ("KILN_DEFAULT_FANOUT", "16")],
    );
    assert_eq!(k["max_running_jobs"]["value"], 30);
    assert_eq!(k["max_running_jobs"]["source"], "--max-running-jobs");
    assert_eq!(k["default_fanout"]["value"], 32);
    assert_eq!(k["default_fanout"]["source"], "--set");
    assert_eq!(k["lock_wait"]["value"], "1500ms");

    // Every key has its variable, strings and tables included; the socket
    // follows the data dir unless set.
    let k = keys(
        &[],
        &[
            ("KILN_DATA_DIR", "/srv/kiln"),
            ("KILN_SOCKET_MODE", "0660"),
            ("KILN_ALLOWED_UIDS", "[1000, 1001]"),
            ("KILN_GROUPS", "{rack1 = \"r1-n[01-40]\"}"),
            ("KILN_PERIODIC_ENABLED", "false"),
            ("KILN_LOG", "kiln_actors=debug,info"),
        ],
    );
    assert_eq!(k["socket"]["value"], "/srv/kiln/kiln.sock");
    assert_eq!(k["socket_mode"]["value"], "0660");
    assert_eq!(k["allowed_uids"]["value"], serde_json::json!([1000, 1001]));
    assert_eq!(k["groups"]["value"]["rack1"], "r1-n[01-40]");
    assert_eq!(k["periodic_enabled"]["value"], false);
    assert_eq!(k["log"]["source"], "KILN_LOG");
    assert_eq!(k["log"]["live"], true);
    assert_eq!(k["data_dir"]["live"], false);
}

#[test]
fn serve_listens_on_the_socket_named_before_or_after_it() {
    let run = |args: &[&str]| {
        let mut cmd = Command::new(KILN);
        cmd.args(args).env_remove("KILN_SOCKET").stdin(Stdio::null()).output().expect("run kiln")
    };
    let out = run(&["--json", "--socket", "/tmp/kiln-before.sock", "serve", "--check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["keys"]["socket"]["value"], "/tmp/kiln-before.sock", "{v}");
    assert_eq!(v["keys"]["socket"]["source"], "--socket");

    let out = run(&["--json", "serve", "--check-config", "--socket", "/tmp/kiln-after.sock"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["keys"]["socket"]["value"], "/tmp/kiln-after.sock", "{v}");

    // Given twice, the last one counts, as for every other flag.
    let out = run(&["--json", "--socket", "/tmp/a.sock", "serve", "--socket", "/tmp/b.sock", "--check-config"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["keys"]["socket"]["value"], "/tmp/b.sock", "{v}");
}

#[test]
fn the_running_daemon_uses_the_environment() {
    let d = crate::harness::Daemon::start_env(
        2,
        &[],
        &[
            ("KILN_MAX_RUNNING_JOBS", "3"),
            ("KILN_GROUPS", "{pair = \"demo[1-2]\"}"),
            ("KILN_PERIODIC_ENABLED", "false"),
        ],
    );
    assert_eq!(d.json(&["queue", "status"])["max_running"], 3);
    assert_eq!(d.json(&["node", "list", "@pair"]).as_array().unwrap().len(), 2);
    assert!(d.json(&["periodic", "list"]).as_array().unwrap().iter().all(|t| t["enabled"] == false));
}

#[test]
fn an_unknown_kiln_variable_is_a_warning() {
    let out = check(false, &[], &[("KILN_LOCKWAIT", "5")]);
    assert_eq!(out.status.code(), Some(0));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("warning: KILN_LOCKWAIT is set but is not a kiln setting"), "{e}");
}

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_example_config_is_valid_and_sets_what_it_says() {
    let example = repo("examples/kiln.toml");
    let k = keys(&["--config", example.to_str().unwrap()], &[]);
    let from_file = k.as_object().unwrap().values().filter(|v| v["source"].as_str().unwrap().starts_with("config"));
    assert!(from_file.count() >= 10, "the example sets most keys: {k}");
    assert_eq!(k["data_dir"]["value"], "/var/lib/kiln");
}

#[test]
fn every_key_has_a_row_in_the_config_reference() {
    let doc = std::fs::read_to_string(repo("docs/config.md")).unwrap();
    let k = keys(&[], &[]);
    let example = std::fs::read_to_string(repo("examples/kiln.toml")).unwrap();
    for (key, v) in k.as_object().unwrap() {
        let env = v["env"].as_str().unwrap();
        assert!(doc.contains(&format!("| `{key}` |")), "docs/config.md has no row for {key}");
        assert!(doc.contains(&format!("`{env}`")), "docs/config.md does not name {env}");
        let shown = example.contains(&format!("{key} =")) || example.contains(&format!("[{key}]"));
        assert!(shown, "examples/kiln.toml does not show {key}");
    }
}
