//! `kiln bench list`: `kiln node list` of N fake nodes through the real
//! socket and the real CLI (this binary, as a child process, its stdout a
//! pipe read here), while another client asks `node show` over and over on
//! a connection of its own. Measured: when the first row is on the pipe,
//! when the last is, and the latency of the other client's answers during
//! the listing (issue #26: at 1,000,000 nodes, first row < 1 s, all rows
//! <= 10 s, `node show` p99 <= 10 ms). The same again with `--json`,
//! reported without targets.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_actors::codec;
use kiln_actors::protocol::{PROTOCOL_VERSION, Request, Response};

use super::report::{Figure, percentile};
use super::scenarios::{Daemon, Scratch};
use crate::cli::BenchArgs;

/// One listing by the CLI: seconds to its first row and to its end, and
/// how many rows it printed.
struct Listed {
    first_row: f64,
    all_rows: f64,
    rows: usize,
}

pub(super) fn list(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let scratch = Scratch::new("list");
    let nodes = args.nodes.unwrap_or(100_000).max(1);
    let daemon = Daemon::start(&scratch, "ls", nodes)?;
    let idle = idle_shows(&daemon.socket, nodes);
    let table = listing_while_shown(&daemon.socket, nodes, false);
    let json = table.as_ref().ok().map(|_| listing_while_shown(&daemon.socket, nodes, true));
    daemon.stop()?;
    let mut idle = idle?;
    let (table, mut shows) = table?;
    let (json, mut json_shows) = json.context("not run")??;
    if table.rows != nodes || json.rows != nodes {
        bail!("listed {} rows (table) and {} (JSON) of {nodes} nodes", table.rows, json.rows);
    }
    for latencies in [&mut idle, &mut shows, &mut json_shows] {
        latencies.sort_by(f64::total_cmp);
    }
    Ok(vec![
        Figure::new("list.nodes", nodes as f64, "nodes"),
        Figure::new("list.first_row", table.first_row, "s").at_most(1.0),
        Figure::new("list.all_rows", table.all_rows, "s").at_most(10.0),
        Figure::new("list.rows_per_s", nodes as f64 / table.all_rows, "rows/s"),
        Figure::new("list.shows_during", shows.len() as f64, "requests"),
        Figure::new("list.show_p99", percentile(&shows, 99.0), "ms").at_most(10.0),
        Figure::new("list.show_max", shows.last().copied().unwrap_or(0.0), "ms"),
        Figure::new("list.show_p99_idle", percentile(&idle, 99.0), "ms"),
        Figure::new("list.json_first_row", json.first_row, "s"),
        Figure::new("list.json_all_rows", json.all_rows, "s"),
        Figure::new("list.json_show_p99", percentile(&json_shows, 99.0), "ms"),
    ])
}

/// How many `node show` answers the baseline takes.
const IDLE_SHOWS: usize = 500;

/// The same client's `node show` latencies (ms) with no list running: the
/// baseline the latencies during a listing compare with.
fn idle_shows(socket: &std::path::Path, nodes: usize) -> anyhow::Result<Vec<f64>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let asking = AtomicBool::new(true);
    rt.block_on(show_while(socket, nodes, &asking, IDLE_SHOWS))
}

/// One listing by the CLI (`--json` or not), and the other client's
/// `node show` latencies (ms) meanwhile.
fn listing_while_shown(socket: &std::path::Path, nodes: usize, json: bool) -> anyhow::Result<(Listed, Vec<f64>)> {
    let listing = Arc::new(AtomicBool::new(true));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let shows = {
        let (socket, listing) = (socket.to_path_buf(), listing.clone());
        std::thread::spawn(move || rt.block_on(show_while(&socket, nodes, &listing, usize::MAX)))
    };
    let listed = cli_list(socket, json);
    listing.store(false, Ordering::Relaxed);
    let shows = shows.join().map_err(|_| anyhow::anyhow!("the show client panicked"))??;
    Ok((listed?, shows))
}

/// Runs `kiln [--json] node list` and reads its output as it comes: a
/// row is a line of the table past the header, or a JSON element's
/// opening line (`  {`).
fn cli_list(socket: &std::path::Path, json: bool) -> anyhow::Result<Listed> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--socket").arg(socket);
    if json {
        cmd.arg("--json");
    }
    let t = Instant::now();
    let mut child =
        cmd.args(["node", "list"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let out = BufReader::with_capacity(1 << 20, child.stdout.take().context("no stdout")?);
    let (mut first_row, mut rows) = (None, 0usize);
    for (i, line) in out.lines().enumerate() {
        let line = line?;
        let row = if json { line == "  {" } else { i > 0 };
        if row {
            rows += 1;
            first_row.get_or_insert_with(|| t.elapsed().as_secs_f64());
        }
    }
    let all_rows = t.elapsed().as_secs_f64();
    let status = child.wait()?;
    if !status.success() {
        bail!("kiln node list exited with {status}");
    }
    Ok(Listed { first_row: first_row.unwrap_or(all_rows), all_rows, rows })
}

/// Asks `node show` of one node after another, one at a time, until
/// `listing` turns false or `most` have been answered; each answer's
/// latency in ms.
async fn show_while(
    socket: &std::path::Path,
    nodes: usize,
    listing: &AtomicBool,
    most: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut s = tokio::net::UnixStream::connect(socket).await?;
    codec::write_message(&mut s, &Request::Hello { version: PROTOCOL_VERSION, client: "bench".into() }).await?;
    let _: Option<Response> = codec::read_message(&mut s, codec::DEFAULT_MAX_FRAME).await?;
    let mut latencies = Vec::new();
    let mut i = 0usize;
    while listing.load(Ordering::Relaxed) && latencies.len() < most {
        let req = Request::NodeShow { node: format!("ls{}", i.wrapping_mul(7919) % nodes + 1) };
        let t = Instant::now();
        codec::write_message(&mut s, &req).await?;
        match codec::read_message::<_, Response>(&mut s, codec::DEFAULT_MAX_FRAME).await? {
            Some(Response::NodeDetail(_)) => {}
            other => bail!("unexpected answer {other:?}"),
        }
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        i += 1;
        // A client that asks now and then, not one that floods: a request
        // every millisecond at most.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(latencies)
}
