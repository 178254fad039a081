//! Node groups from sources beside the config's `[groups]` table, as
//! ClusterShell's group sources: a file of `name: nodeset` lines
//! (`group_file`, the format of ClusterShell's flat `groups` file), and
//! external commands (`group_list` prints the group names, `group_map` the
//! node set of the group named by `$GROUP`: ClusterShell's `list` and `map`
//! upcalls).
//!
//! Why they are read when the configuration is (at start, at each SIGHUP,
//! at each `kiln nodeset`) instead of at each parse: node sets are parsed on
//! the actors' thread, where a command that hangs would hold every request.
//! Read once, a slow command costs the load only, each command is bounded
//! by [`COMMAND_TIMEOUT`], and a failing one refuses the configuration with
//! its own words, as any bad key is refused (a running daemon keeps the
//! groups it had). `systemctl reload kiln` reads them again.
//!
//! Precedence, name by name: `[groups]`, then the file, then the commands.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The longest one group command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a group command may print, and a group file may hold.
const MAX_OUTPUT: u64 = 16 * 1024 * 1024;

/// Where groups come from besides the `[groups]` table.
#[derive(Clone, Debug, Default)]
pub struct Sources<'a> {
    pub file: Option<&'a Path>,
    pub list: Option<&'a str>,
    pub map: Option<&'a str>,
}

/// A source that could not be read: the config key to blame and why.
#[derive(Debug, thiserror::Error)]
#[error("{why}")]
pub struct SourceError {
    pub key: &'static str,
    pub why: String,
}

fn fail(key: &'static str, why: String) -> SourceError {
    SourceError { key, why }
}

/// Every group: the table's, then the file's and the commands' that the
/// table does not name.
pub fn resolve(
    table: &BTreeMap<String, String>,
    sources: &Sources<'_>,
) -> Result<BTreeMap<String, String>, SourceError> {
    let mut all = table.clone();
    if let Some(path) = sources.file {
        for (name, nodes) in read_file(path)? {
            all.entry(name).or_insert(nodes);
        }
    }
    match (sources.list, sources.map) {
        (None, None) => {}
        (Some(_), None) => return Err(fail("group_list", "group_list needs group_map to read each group".into())),
        (None, Some(_)) => {
            return Err(fail("group_map", "group_map needs group_list to know the group names".into()));
        }
        (Some(list), Some(map)) => {
            let names = run(list, None).map_err(|e| fail("group_list", format!("'{list}': {e}")))?;
            for name in names.split_whitespace() {
                if all.contains_key(name) {
                    continue;
                }
                check_name(name).map_err(|e| fail("group_list", format!("'{list}' printed {e}")))?;
                let nodes = run(map, Some(name)).map_err(|e| fail("group_map", format!("'{map}' for {name}: {e}")))?;
                all.insert(name.to_string(), nodes.split_whitespace().collect::<Vec<_>>().join(","));
            }
        }
    }
    Ok(all)
}

/// A group name as a node set can name it (`@name`).
fn check_name(name: &str) -> Result<(), String> {
    if name == kiln_actors::supervisor::LOCAL_GROUP {
        return Err(format!("the group name '{name}', which kiln keeps for the nodes this member runs"));
    }
    let ok =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'));
    if ok { Ok(()) } else { Err(format!("the group name '{name}', which a node set cannot name")) }
}

/// `name: nodeset` lines; `#` starts a comment; blank lines are skipped.
fn read_file(path: &Path) -> Result<Vec<(String, String)>, SourceError> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_OUTPUT).read_to_string(&mut text))
        .map_err(|e| fail("group_file", format!("cannot read {}: {e}", path.display())))?;
    let mut groups = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let (name, nodes) =
            line.split_once(':').ok_or_else(|| fail("group_file", format!("{}: expected 'name: nodeset'", at())))?;
        let name = name.trim();
        check_name(name).map_err(|e| fail("group_file", format!("{}: {e}", at())))?;
        groups.push((name.to_string(), nodes.split_whitespace().collect::<Vec<_>>().join(",")));
    }
    Ok(groups)
}

/// Runs `sh -c command` (with `GROUP` set for a map), in a process group of
/// its own that is killed whole past [`COMMAND_TIMEOUT`]; its stdout.
fn run(command: &str, group: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    if let Some(g) = group {
        cmd.env("GROUP", g);
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot run sh: {e}"))?;
    let pid = libc::pid_t::try_from(child.id()).map_err(|e| e.to_string())?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let read = |r: Option<Box<dyn Read + Send>>| {
            let mut out = Vec::new();
            if let Some(r) = r {
                let _ = r.take(MAX_OUTPUT).read_to_end(&mut out);
            }
            out
        };
        let err_reader = std::thread::spawn(move || read(stderr.map(|e| Box::new(e) as Box<dyn Read + Send>)));
        let out = read(stdout.map(|o| Box::new(o) as Box<dyn Read + Send>));
        let err = err_reader.join().unwrap_or_default();
        let _ = tx.send((child.wait(), out, err));
    });
    let (status, out, err) = match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(done) => done,
        Err(_) => {
            // SAFETY: killpg takes no pointer; the group is the child's, not
            // reaped yet (its waiting thread has not returned).
            unsafe { libc::killpg(pid, libc::SIGKILL) };
            let _ = rx.recv_timeout(Duration::from_secs(5));
            return Err(format!("did not finish within {} s", COMMAND_TIMEOUT.as_secs()));
        }
    };
    let status = status.map_err(|e| format!("cannot wait for it: {e}"))?;
    if !status.success() {
        let said = String::from_utf8_lossy(&err);
        let said = said.lines().next().unwrap_or("").trim();
        return Err(format!("{status}{}", if said.is_empty() { String::new() } else { format!(": {said}") }));
    }
    String::from_utf8(out).map_err(|_| "its output is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_beats_the_file_which_beats_the_commands() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("groups");
        std::fs::write(&file, "# racks\nrack1: n[1-4]\nrack2: n[5-8] n9  # two parts\n\n").unwrap();
        let table: BTreeMap<String, String> = [("rack2".to_string(), "x1".to_string())].into();
        let sources = Sources {
            file: Some(&file),
            list: Some("echo rack1 gpu; echo login"),
            map: Some(r#"case $GROUP in gpu) echo 'g[1-2]';; login) echo l1; echo l2;; *) exit 3;; esac"#),
        };
        let all = resolve(&table, &sources).unwrap();
        assert_eq!(all["rack1"], "n[1-4]");
        assert_eq!(all["rack2"], "x1");
        assert_eq!(all["gpu"], "g[1-2]");
        assert_eq!(all["login"], "l1,l2");
    }

    #[test]
    fn a_failing_slow_or_half_configured_source_is_refused_naming_its_key() {
        let none = BTreeMap::new();
        let err =
            resolve(&none, &Sources { list: Some("echo a"), map: Some("echo oops >&2; exit 4"), ..Default::default() })
                .unwrap_err();
        assert_eq!(err.key, "group_map");
        assert!(err.why.contains("for a") && err.why.contains("oops"), "{err}");
        let err = resolve(&none, &Sources { list: Some("echo a"), ..Default::default() }).unwrap_err();
        assert_eq!(err.key, "group_list");
        let err =
            resolve(&none, &Sources { list: Some("echo 'a@b'"), map: Some("true"), ..Default::default() }).unwrap_err();
        assert!(err.why.contains("cannot name"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("groups");
        std::fs::write(&file, "rack1 n[1-4]\n").unwrap();
        let err = resolve(&none, &Sources { file: Some(&file), ..Default::default() }).unwrap_err();
        assert!(err.why.contains("line 1: expected 'name: nodeset'"), "{err}");
        let started = std::time::Instant::now();
        let err = run("sleep 60 & sleep 60", None).unwrap_err();
        assert!(err.contains("did not finish within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
