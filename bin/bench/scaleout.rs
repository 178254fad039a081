//! `kiln bench scale-out`: several `kiln serve` on one PostgreSQL, as real
//! processes talking over their real sockets.
//!
//! Starts a PostgreSQL of its own (`scripts/pg.sh`, fsync on), then, each
//! on a fresh database: one member, two, three, running the same life
//! cycle (manage, provide, deploy) on N fake nodes, each member on the
//! nodes it runs (`@local`), all at once; SQLite runs it too, for the
//! ratio. On the two-member site, a bulk verb asked of one member for the
//! nodes the other runs (`routed_per_s`: every node a request row). Then
//! the failure drills on the three-member site: SIGKILL one
//! (how long until the site notices, claims its nodes, and answers for
//! them), and on the two-member site SIGSTOP one past its timeout and wake
//! it (what it still tried to send). Every node's history must hold
//! exactly the transitions asked for: any other count is a lost or a
//! duplicated transition. Not part of `all`: it needs PostgreSQL and takes
//! a minute or more.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::report::Figure;
use crate::cli::BenchArgs;

const PASSWORD: &str = "kiln-bench";

/// How long a member may take to start serving.
const START_WITHIN: Duration = Duration::from_secs(120);

pub fn run(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let nodes = args.nodes.unwrap_or(30_000);
    let root = Root::new()?;
    let pg = Postgres::start(&root.path().join("pg"))?;
    let mut figures = vec![Figure::new("scaleout.nodes", nodes as f64, "nodes")];

    // SQLite, for the ratio.
    let sqlite = Member::start(&root.path().join("sqlite"), None, "sqlite", nodes)?;
    let rate = lifecycle(&[&sqlite], nodes)?;
    figures.push(Figure::new("scaleout.sqlite.transitions_per_s", rate, "transitions/s"));
    drop(sqlite);

    let mut by_members = Vec::new();
    for k in 1..=3usize {
        let url = pg.database(&format!("m{k}"))?;
        let dir = root.path().join(format!("m{k}"));
        let mut members = vec![Member::start(&dir.join("a"), Some(&url), "a", nodes)?];
        let joined = Instant::now();
        for name in ["b", "c"].iter().take(k - 1) {
            members.push(Member::start(&dir.join(name), Some(&url), name, 0)?);
        }
        if k > 1 {
            settle(&members[0], k, nodes)?;
            figures.push(Figure::new(&format!("scaleout.handoff_s.m{k}"), joined.elapsed().as_secs_f64(), "s"));
        }
        let refs: Vec<&Member> = members.iter().collect();
        let rate = lifecycle(&refs, nodes)?;
        by_members.push(rate);
        let (lost, duplicated) = pg.history_counts(&format!("m{k}"), 6)?;
        figures.push(Figure::new(&format!("scaleout.transitions_per_s.m{k}"), rate, "transitions/s"));
        figures.push(Figure::new(&format!("scaleout.lost_transitions.m{k}"), lost as f64, "nodes"));
        figures.push(Figure::new(&format!("scaleout.duplicated_transitions.m{k}"), duplicated as f64, "nodes"));
        match k {
            2 => {
                figures.push(routed(&members)?);
                figures.extend(pause_drill(&mut members, nodes)?);
            }
            3 => figures.extend(kill_drill(&mut members, nodes)?),
            _ => {}
        }
    }
    if let (Some(one), Some(three)) = (by_members.first(), by_members.get(2)) {
        figures.push(Figure::new("scaleout.m3_to_m1", three / one, "ratio").at_least(0.9));
    }
    Ok(figures
        .into_iter()
        .map(|f| if f.name == "scaleout.transitions_per_s.m1" { f.at_least(10_000.0) } else { f })
        .collect())
}

/// A bulk verb asked of the first member for every node the second one
/// runs (each a request row the owner claims and answers): power off,
/// then on, with `--wait`; requests per second.
fn routed(members: &[Member]) -> anyhow::Result<Figure> {
    let (asker, owner) = (&members[0], &members[1]);
    let names: Vec<String> = owner
        .ok(&["node", "list", "@local"])?
        .as_array()
        .map_or(Vec::new(), |list| list.iter().filter_map(|n| n["name"].as_str().map(str::to_string)).collect());
    if names.is_empty() {
        bail!("member {} runs no node", owner.name);
    }
    // Folded (`demo[1-2,5]`): one argument may not exceed 128 KiB, and
    // the names of 15,000 nodes listed would.
    let set = kiln_actors::nodeset::NodeSet::from_names(names.iter().map(String::as_str)).fold();
    let started = Instant::now();
    for verb in ["off", "on"] {
        asker.ok(&["node", "power", verb, &set, "--wait"])?;
    }
    let rate = (2 * names.len()) as f64 / started.elapsed().as_secs_f64();
    Ok(Figure::new("scaleout.routed_per_s", rate, "requests/s"))
}

/// SIGKILL the last member; how long until a survivor sees it dead, the
/// survivors own all its nodes, and they answer for them (each acts on the
/// nodes it runs, the dead member's among them).
fn kill_drill(members: &mut [Member], nodes: usize) -> anyhow::Result<Vec<Figure>> {
    let victim = &members[members.len() - 1];
    let theirs = victim.local_count()?;
    let killed = Instant::now();
    let victim_name = victim.name.clone();
    members.last_mut().expect("three members").kill();
    let survivor = &members[0];
    wait_until(Duration::from_secs(120), || {
        Ok(survivor.members()?.iter().any(|m| m["name"] == victim_name.as_str() && m["state"] == "dead"))
    })?;
    let detect_s = killed.elapsed().as_secs_f64();
    wait_until(Duration::from_secs(120), || {
        let list = survivor.members()?;
        let owned: u64 = list.iter().filter(|m| m["state"] == "alive").filter_map(|m| m["nodes"].as_u64()).sum();
        Ok(owned == nodes as u64)
    })?;
    let claim_s = killed.elapsed().as_secs_f64() - detect_s;
    // Answering: each survivor powers on the nodes it now runs (the dead
    // member's among them, once the bmc_fence_delay has passed), all at once.
    let mut answering = Vec::new();
    for m in &members[..members.len() - 1] {
        answering.push((m.name.clone(), m.spawn(&["node", "power", "on", "@local", "--wait"])?));
    }
    for (name, child) in answering {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("power on at member {name}: {}", String::from_utf8_lossy(&out.stdout));
        }
    }
    let takeover_s = killed.elapsed().as_secs_f64();
    if theirs == 0 {
        bail!("the killed member ran no node");
    }
    Ok(vec![
        Figure::new("scaleout.detect_s", detect_s, "s"),
        Figure::new("scaleout.claim_s", claim_s, "s"),
        Figure::new("scaleout.takeover_s", takeover_s, "s").at_most(15.0),
    ])
}

/// SIGSTOP the second member past its timeout, wake it: it must stop
/// without writing. Counts what it refused itself (BMC calls not sent,
/// writes fenced by the rows).
fn pause_drill(members: &mut [Member], nodes: usize) -> anyhow::Result<Vec<Figure>> {
    let (survivor, paused) = (&members[0], &members[1]);
    // Work in flight on the paused member when it stops.
    let mut work = paused.spawn(&["node", "power", "off", "@local", "--wait"])?;
    paused.signal(libc::SIGSTOP);
    let (name, survivor_name) = (paused.name.clone(), survivor.name.clone());
    wait_until(Duration::from_secs(120), || {
        let list = survivor.members()?;
        let dead = list.iter().any(|m| m["name"] == name.as_str() && m["state"] == "dead");
        let all = list.iter().any(|m| m["name"] == survivor_name.as_str() && m["nodes"].as_u64() == Some(nodes as u64));
        Ok(dead && all)
    })?;
    paused.signal(libc::SIGCONT);
    let status = members[1].wait_exit(Duration::from_secs(60))?;
    let _ = work.wait();
    if status != Some(75) {
        bail!("the paused member exited {status:?}, not 75 (fenced)");
    }
    let log = members[1].log();
    let refused = log.iter().filter(|l| l.contains("not sent:") || l.contains("owned by another member")).count();
    Ok(vec![Figure::new("scaleout.fenced_writes", refused as f64, "refused")])
}

/// Waits until every one of `k` members runs some of the nodes, all of
/// them are run, and that holds for two looks in a row.
fn settle(member: &Member, k: usize, nodes: usize) -> anyhow::Result<()> {
    let mut last = Vec::new();
    wait_until(Duration::from_secs(300), || {
        let list = member.members()?;
        let owned: Vec<u64> =
            list.iter().filter(|m| m["state"] == "alive").filter_map(|m| m["nodes"].as_u64()).collect();
        let settled = owned.len() == k && owned.iter().all(|n| *n > 0) && owned.iter().sum::<u64>() == nodes as u64;
        let same = owned == last;
        last = owned;
        Ok(settled && same)
    })
}

/// Manage, provide and deploy every node, each member on its own nodes at
/// once; transitions per second over the whole site.
fn lifecycle(members: &[&Member], nodes: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    for verb in ["manage", "provide", "deploy"] {
        let mut running = Vec::new();
        for m in members {
            running.push((m.name.clone(), m.spawn(&["node", verb, "@local", "--wait"])?));
        }
        for (name, child) in running {
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!("{verb} on member {name}: {}", String::from_utf8_lossy(&out.stdout));
            }
        }
    }
    Ok((nodes * 6) as f64 / started.elapsed().as_secs_f64())
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done()? {
        if Instant::now() > deadline {
            bail!("not reached within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The bench's scratch directory, removed at the end (after the members
/// and the server in it have stopped: it is declared first).
struct Root(PathBuf);

impl Root {
    fn new() -> anyhow::Result<Root> {
        let dir = std::env::temp_dir().join(format!("kiln-bench-scale-out-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Root(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `kiln serve` of this bench.
struct Member {
    name: String,
    socket: PathBuf,
    child: Option<Child>,
    log: mpsc::Receiver<String>,
}

impl Member {
    /// Starts a member (`store`: a PostgreSQL URL, or SQLite) with `demo`
    /// nodes, and waits until it serves.
    fn start(dir: &Path, store: Option<&str>, name: &str, demo: usize) -> anyhow::Result<Member> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("kiln.sock");
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--socket")
            .arg(&socket)
            .args(["--demo", &demo.to_string(), "--set", &format!("member_name={name}")])
            .env_remove("KILN_SOCKET")
            .env("KILN_LOG", "warn,kiln::serve=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = store {
            cmd.args(["--store", url]);
        }
        let mut child = cmd.spawn().context("start kiln serve")?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.recv_timeout(left) {
                Ok(line) if line.contains("kiln is serving") => break,
                Ok(_) => {}
                Err(_) => bail!("member {name} did not start serving"),
            }
        }
        Ok(Member { name: name.into(), socket, child: Some(child), log })
    }

    fn command(&self, args: &[&str]) -> anyhow::Result<Command> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--socket").arg(&self.socket).arg("--json").args(args).env_remove("KILN_SOCKET");
        Ok(cmd)
    }

    fn spawn(&self, args: &[&str]) -> anyhow::Result<Child> {
        Ok(self.command(args)?.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?)
    }

    fn ok(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = self.command(args)?.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!("kiln {args:?} on member {}: {}", self.name, String::from_utf8_lossy(&out.stdout));
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null))
    }

    fn members(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(self.ok(&["member", "list"])?.as_array().cloned().unwrap_or_default())
    }

    /// How many nodes this member runs.
    fn local_count(&self) -> anyhow::Result<usize> {
        Ok(self.ok(&["node", "list", "@local"])?.as_array().map_or(0, Vec::len))
    }

    fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: a signal to our own child process.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = Instant::now() + limit;
        let Some(c) = self.child.as_mut() else { return Ok(None) };
        loop {
            if let Some(status) = c.try_wait()? {
                self.child = None;
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                let said: Vec<String> = self.log.try_iter().collect();
                bail!("member {} did not exit within {limit:?}; it said:\n{}", self.name, said.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // SAFETY: a signal to our own child process; SIGCONT first, in
            // case a drill left it stopped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// This bench's own PostgreSQL server.
struct Postgres {
    dir: PathBuf,
    port: u16,
    psql: PathBuf,
}

impl Postgres {
    fn start(dir: &Path) -> anyhow::Result<Postgres> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", dir.to_str().context("a UTF-8 path")?, "0"])
            .env("KILN_PG_PASSWORD", PASSWORD)
            .env("KILN_PG_WATCH", std::process::id().to_string())
            .output()
            .with_context(|| format!("run {}", script.display()))?;
        if !out.status.success() {
            bail!("{} could not start PostgreSQL: {}", script.display(), String::from_utf8_lossy(&out.stderr));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let port = stdout.lines().find_map(|l| l.strip_prefix("port=")).and_then(|p| p.parse().ok()).context("port")?;
        let psql = std::fs::read_dir("/usr/lib/postgresql")?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin/psql"))
            .find(|p| p.exists())
            .context("psql from the postgresql package")?;
        Ok(Postgres { dir: dir.to_path_buf(), port, psql })
    }

    fn sql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(&self.psql)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "kiln", "-d", db, "-tAc", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A fresh database and its URL.
    fn database(&self, name: &str) -> anyhow::Result<String> {
        self.sql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(format!("postgres://kiln:{PASSWORD}@127.0.0.1:{}/{name}?sslmode=disable", self.port))
    }

    /// Nodes with fewer and with more history rows than `expected`.
    fn history_counts(&self, db: &str, expected: usize) -> anyhow::Result<(u64, u64)> {
        let counts = self.sql(
            db,
            &format!(
                "SELECT count(*) FILTER (WHERE c < {expected}), count(*) FILTER (WHERE c > {expected}) FROM \
                 (SELECT n.uuid, count(h.node) c FROM nodes n LEFT JOIN node_history h ON h.node = n.uuid \
                  GROUP BY n.uuid) per_node"
            ),
        )?;
        let mut parts = counts.split('|').map(|p| p.trim().parse::<u64>().unwrap_or(u64::MAX));
        Ok((parts.next().unwrap_or(u64::MAX), parts.next().unwrap_or(u64::MAX)))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg.sh");
        let _ = Command::new("bash")
            .arg(script)
            .args(["stop", &self.dir.to_string_lossy(), &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
