//! `kiln bench api`: the Ironic-compatible HTTP API driven as Ironic's
//! users drive Ironic: one node per request, several clients at once, each
//! step waited for by polling the nodes, as `--wait` and
//! `wait_for_nodes_provision_state` do. A small HTTP/1.1 client with
//! keep-alive (one connection per client), so the figures are the server's.
//!
//! The targets are a hundredth of Ironic 39.0.0's times on this kind of
//! machine for 1,000 fake nodes with one client (enrol 47.3 s, manage
//! 101.5 s, provide 197.5 s, deploy 355.8 s, power on 199.3 s), and 20,000
//! `GET /v1/nodes/{node}` a second.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::report::{Figure, percentile};
use super::scenarios::Scratch;
use crate::api::{ApiAuth, ApiSettings};
use crate::cli::BenchArgs;

/// How long one step may take before the scenario fails.
const STEP_LIMIT: Duration = Duration::from_secs(600);

/// A step's request for one node: its path and body.
type Act<'a> = &'a (dyn Fn(&str) -> (String, String) + Sync);

/// What a step waits for: a field of the node and its value.
type Wait<'a> = Option<(&'a str, &'a str)>;

/// One keep-alive connection.
struct Client {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).await.context("connect to the API")?;
        stream.set_nodelay(true)?;
        Ok(Client { stream: BufReader::new(stream), host: addr.to_string() })
    }

    /// One request; its status and body.
    async fn call(&mut self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<(u16, Vec<u8>)> {
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             X-OpenStack-Ironic-API-Version: 1.109\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let w = self.stream.get_mut();
        w.write_all(head.as_bytes()).await?;
        w.write_all(body.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status line")?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("the connection closed");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }

    async fn expect(&mut self, method: &str, path: &str, body: Option<&str>, want: u16) -> anyhow::Result<Vec<u8>> {
        let (status, body) = self.call(method, path, body).await?;
        if status != want {
            bail!("{method} {path}: {status} (expected {want}): {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }

    /// Polls `node` until `field` is `value`.
    async fn wait(&mut self, node: &str, field: &str, value: &str) -> anyhow::Result<()> {
        let path = format!("/v1/nodes/{node}?fields={field},last_error");
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            let body = self.expect("GET", &path, None, 200).await?;
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            if v[field] == value {
                return Ok(());
            }
            if v[field].as_str().is_some_and(|s| s.ends_with("failed") || s == "error") {
                bail!("{node} reached {} ({})", v[field], v["last_error"]);
            }
            if Instant::now() > deadline {
                bail!("{node} did not reach {field} {value} within {STEP_LIMIT:?}");
            }
            tokio::task::yield_now().await;
        }
    }
}

/// A step: each client acts on its nodes, then waits for each of them.
async fn step(clients: &mut [Client], nodes: &[String], act: Act<'_>, wait: Wait<'_>) -> anyhow::Result<f64> {
    let t = Instant::now();
    let count = clients.len();
    let mut tasks = Vec::new();
    for (c, client) in clients.iter_mut().enumerate() {
        let mine: Vec<&String> = nodes.iter().skip(c).step_by(count).collect();
        tasks.push(async move {
            for n in &mine {
                let (path, body) = act(n);
                let want = if path.ends_with("/v1/nodes") { 201 } else { 202 };
                let method = if want == 201 { "POST" } else { "PUT" };
                client.expect(method, &path, Some(&body), want).await?;
            }
            if let Some((field, value)) = wait {
                for n in &mine {
                    client.wait(n, field, value).await?;
                }
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    for r in futures::future::join_all(tasks).await {
        r?;
    }
    Ok(t.elapsed().as_secs_f64())
}

pub fn api(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let scratch = Scratch::new("api");
    let nodes = args.nodes.unwrap_or(1_000);
    let clients = args.clients.unwrap_or(8).max(1);
    let requests = args.requests.unwrap_or(200_000);
    let config = scratch.config();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let settings = ApiSettings {
        addr,
        auth: ApiAuth::None,
        max_body: kiln_actors::codec::DEFAULT_MAX_FRAME,
        request_timeout: Duration::from_secs(600),
        max_connections: 1024,
        tls: None,
    };
    // The daemon: its own thread and actix system, as in `kiln serve`.
    let daemon = std::thread::spawn(move || {
        actix::System::new().block_on(async move {
            let site = kiln_actors::start(config).await?;
            let server = crate::api::serve(listener, settings, site, "bench".into())?;
            let _ = ready_tx.send(());
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
            server.stop(true).await;
            Ok::<(), anyhow::Error>(())
        })
    });
    ready_rx.recv_timeout(Duration::from_secs(120)).context("the API did not start")?;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let result = rt.block_on(async {
        let mut conns = Vec::with_capacity(clients);
        for _ in 0..clients {
            conns.push(Client::connect(addr).await?);
        }
        let names: Vec<String> = (1..=nodes).map(|i| format!("api{i}")).collect();
        let mut figures = vec![
            Figure::new("api.nodes", nodes as f64, "nodes"),
            Figure::new("api.clients", clients as f64, "clients"),
        ];
        let provision = |target: &'static str| {
            move |n: &str| (format!("/v1/nodes/{n}/states/provision"), format!("{{\"target\": \"{target}\"}}"))
        };
        let create =
            |n: &str| ("/v1/nodes".to_string(), format!("{{\"driver\": \"fake-hardware\", \"name\": \"{n}\"}}"));
        let power = |n: &str| (format!("/v1/nodes/{n}/states/power"), "{\"target\": \"power on\"}".to_string());
        let steps: [(&str, Act<'_>, Wait<'_>, f64); 5] = [
            ("create", &create, None, 47.3),
            ("manage", &provision("manage"), Some(("provision_state", "manageable")), 101.5),
            ("provide", &provision("provide"), Some(("provision_state", "available")), 197.5),
            ("deploy", &provision("active"), Some(("provision_state", "active")), 355.8),
            ("power_on", &power, Some(("power_state", "power on")), 199.3),
        ];
        for (name, act, wait, ironic) in steps {
            let secs = step(&mut conns, &names, act, wait).await.with_context(|| format!("step {name}"))?;
            figures.push(Figure::new(&format!("api.{name}_s"), secs, "s").at_most(ironic / 100.0));
        }

        // Reads: GET /v1/nodes/{node}, spread over the nodes.
        let t = Instant::now();
        let per = requests / clients;
        let tasks = conns.iter_mut().enumerate().map(|(c, client)| {
            let names = &names;
            async move {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let path = format!("/v1/nodes/{}", names[(c * 31 + i) % names.len()]);
                    let t = Instant::now();
                    client.expect("GET", &path, None, 200).await?;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                Ok::<_, anyhow::Error>(lat)
            }
        });
        let mut latencies = Vec::new();
        for r in futures::future::join_all(tasks).await {
            latencies.extend(r?);
        }
        let secs = t.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        figures.push(Figure::new("api.requests", latencies.len() as f64, "requests"));
        figures.push(Figure::new("api.requests_per_s", latencies.len() as f64 / secs, "requests/s").at_least(20_000.0));
        figures.push(Figure::new("api.p99_ms", percentile(&latencies, 99.0), "ms"));
        Ok::<_, anyhow::Error>(figures)
    });
    let _ = stop_tx.send(());
    daemon.join().map_err(|_| anyhow::anyhow!("the daemon thread panicked"))??;
    result
}
