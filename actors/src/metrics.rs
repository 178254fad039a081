//! The site's metrics: counters, gauges and fixed-bucket histograms kept in
//! plain atomics, rendered in the Prometheus text format (0.0.4) on demand.
//!
//! Every update is a relaxed atomic add or store at the point where the
//! thing happens (a BMC call ends, a job starts, a node adopts a record), so
//! the hot paths take no lock and send no message, and a scrape reads the
//! atomics without asking any actor: at 100,000 nodes a scrape costs the
//! same as at ten. Node counts by state are kept incrementally by each node
//! actor ([`NodeGauge`]) rather than counted at scrape time. The values are
//! per site (a [`crate::Site`] holds its [`Metrics`]), so two sites in one
//! process (tests, an embedding application) never mix their figures.
//!
//! The names, types and labels are documented in `docs/metrics.md`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_store::{DriverKind, JobStatus, NodeRecord, ProvisionState, StoreStats};

use crate::scheduler::PeriodicInfo;

/// The histograms' upper bounds in seconds: from half a millisecond (a fake
/// BMC, a queued job picked at once) to an hour (a long job, a slow sync).
pub const BUCKETS: [f64; 21] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1800.0, 3600.0,
];

/// Bucket bounds in nanoseconds, for a comparison without floating point.
const BUCKET_NANOS: [u64; 21] = {
    let mut out = [0u64; 21];
    let mut i = 0;
    while i < BUCKETS.len() {
        out[i] = (BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// A histogram of durations with the fixed [`BUCKETS`].
#[derive(Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let slot = BUCKET_NANOS.iter().position(|&b| nanos <= b).unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            let le = BUCKETS.get(i).map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

kiln_store::string_enum!(
    /// A call to a BMC, as metrics label it.
    BmcCall, "BMC call" {
        GetPower => "get_power",
        SetPower => "set_power",
        SetBoot => "set_boot",
        GetBoot => "get_boot",
        Inspect => "inspect",
        EjectMedia => "eject_media",
        InsertMedia => "insert_media",
    }
);

/// One BMC call kind of one driver.
#[derive(Default)]
struct BmcStats {
    latency: Histogram,
    errors: AtomicU64,
}

/// One admin request kind.
#[derive(Default)]
struct AdminStats {
    requests: AtomicU64,
    errors: AtomicU64,
    /// From the decoded request to its answer, ready to send.
    latency: Histogram,
}

kiln_store::string_enum!(
    /// What a power sync cycle found for one node.
    SyncResult, "power sync result" {
        InSync => "in_sync",
        Updated => "updated",
        Forced => "forced",
        Failed => "failed",
        Skipped => "skipped",
    }
);

/// The admin label of frames that did not decode as any request.
pub const INVALID_REQUEST: &str = "invalid";

const STATES: usize = ProvisionState::ALL.len();
const DRIVERS: usize = DriverKind::ALL.len();
const JOB_STATUSES: usize = JobStatus::ALL.len();

/// Every metric of one site.
pub struct Metrics {
    started: SystemTime,
    nodes: [AtomicI64; STATES],
    nodes_maintenance: AtomicI64,
    nodes_reserved: AtomicI64,
    /// Node actors running (the other nodes are at rest).
    node_actors: AtomicI64,
    power_sync_cycle: Histogram,
    power_sync_nodes: [AtomicU64; SyncResult::ALL.len()],
    /// The oldest power state confirmation among the nodes the last power
    /// sync cycle synced, in milliseconds since the Unix epoch; `i64::MIN`
    /// before the first cycle or when it synced none.
    power_sync_oldest_verified_ms: AtomicI64,
    jobs_queued: AtomicI64,
    jobs_waiting: AtomicI64,
    jobs_running: AtomicI64,
    jobs_submitted: AtomicU64,
    jobs_ended: [AtomicU64; JOB_STATUSES],
    job_queue_wait: Histogram,
    job_run: Histogram,
    bmc: [[BmcStats; BmcCall::ALL.len()]; DRIVERS],
    /// The admin request kinds, in slot order (the admin protocol's list;
    /// metrics only count by slot, so they need not know the protocol).
    request_kinds: &'static [&'static str],
    /// One per entry of `request_kinds`, then one for undecodable frames.
    admin: Vec<AdminStats>,
    /// HTTP API requests answered, by route pattern and status code (the
    /// routes are the API's fixed list, so the set stays small).
    api: std::sync::Mutex<std::collections::BTreeMap<(String, u16), u64>>,
    /// HTTP API requests refused for a wrong or missing credential.
    api_auth_failures: AtomicU64,
    /// Callbacks of booted systems taken, and refused for a wrong token.
    callbacks_taken: AtomicU64,
    callbacks_refused: AtomicU64,
}

impl Default for Metrics {
    /// Metrics that count admin requests in one slot (undecodable or not):
    /// for sites and tests that do not serve the admin protocol.
    fn default() -> Self {
        Metrics::with_request_kinds(&[])
    }
}

impl Metrics {
    /// Metrics counting admin requests by kind, one slot per entry of
    /// `kinds` (in the order the protocol numbers them) plus one for frames
    /// that did not decode.
    pub fn with_request_kinds(kinds: &'static [&'static str]) -> Self {
        Metrics {
            started: SystemTime::now(),
            nodes: Default::default(),
            nodes_maintenance: AtomicI64::new(0),
            nodes_reserved: AtomicI64::new(0),
            node_actors: AtomicI64::new(0),
            power_sync_cycle: Histogram::default(),
            power_sync_nodes: Default::default(),
            power_sync_oldest_verified_ms: AtomicI64::new(i64::MIN),
            jobs_queued: AtomicI64::new(0),
            jobs_waiting: AtomicI64::new(0),
            jobs_running: AtomicI64::new(0),
            jobs_submitted: AtomicU64::new(0),
            jobs_ended: Default::default(),
            job_queue_wait: Histogram::default(),
            job_run: Histogram::default(),
            bmc: Default::default(),
            request_kinds: kinds,
            admin: (0..=kinds.len()).map(|_| AdminStats::default()).collect(),
            api: Default::default(),
            api_auth_failures: AtomicU64::new(0),
            callbacks_taken: AtomicU64::new(0),
            callbacks_refused: AtomicU64::new(0),
        }
    }

    // ----- updates --------------------------------------------------------

    /// A BMC call of `driver` ended after `took`, failed or not.
    pub fn bmc_call(&self, driver: DriverKind, call: BmcCall, took: Duration, failed: bool) {
        let s = &self.bmc[driver as usize][call as usize];
        s.latency.observe(took);
        if failed {
            s.errors.fetch_add(1, Relaxed);
        }
    }

    /// An admin request of the kind in slot `kind` arrived; `None` for a
    /// frame that did not decode. Returns the slot to pass to
    /// [`Metrics::admin_error`].
    pub fn admin_request(&self, kind: Option<usize>) -> usize {
        let undecoded = self.request_kinds.len();
        let slot = kind.filter(|&k| k < undecoded).unwrap_or(undecoded);
        self.admin[slot].requests.fetch_add(1, Relaxed);
        slot
    }

    /// The request in `slot` was answered with an error.
    pub fn admin_error(&self, slot: usize) {
        if let Some(s) = self.admin.get(slot) {
            s.errors.fetch_add(1, Relaxed);
        }
    }

    /// The request in `slot` was answered `took` after it was decoded.
    pub fn admin_answered(&self, slot: usize, took: Duration) {
        if let Some(s) = self.admin.get(slot) {
            s.latency.observe(took);
        }
    }

    /// An HTTP API request on `route` (its pattern) was answered `status`.
    pub fn api_answered(&self, route: &str, status: u16) {
        if let Ok(mut api) = self.api.lock() {
            // The key is built only the first time a pair is seen.
            match api.iter_mut().find(|((r, s), _)| *s == status && r == route) {
                Some((_, n)) => *n += 1,
                None => {
                    api.insert((route.to_string(), status), 1);
                }
            }
        }
    }

    /// An HTTP API request was refused for its credential (or its lack).
    pub fn api_auth_failed(&self) {
        self.api_auth_failures.fetch_add(1, Relaxed);
    }

    /// A booted system's callback was taken (`refused`: its token was not
    /// the one issued).
    pub fn callback(&self, refused: bool) {
        let counter = if refused { &self.callbacks_refused } else { &self.callbacks_taken };
        counter.fetch_add(1, Relaxed);
    }

    /// The callbacks counted so far: refused ones, or taken ones.
    pub fn callbacks_counted(&self, refused: bool) -> u64 {
        let counter = if refused { &self.callbacks_refused } else { &self.callbacks_taken };
        counter.load(Relaxed)
    }

    /// A power sync cycle ended after `took`.
    pub fn power_sync_cycle(&self, took: Duration) {
        self.power_sync_cycle.observe(took);
    }

    /// The oldest power state confirmation among the nodes a power sync
    /// cycle synced (`None`: it synced none).
    pub fn power_sync_oldest_verified(&self, at: Option<chrono::DateTime<chrono::Utc>>) {
        let ms = at.map_or(i64::MIN, |t| t.timestamp_millis());
        self.power_sync_oldest_verified_ms.store(ms, Relaxed);
    }

    /// A power sync cycle's finding for `n` nodes.
    pub fn power_sync_nodes(&self, result: SyncResult, n: u64) {
        self.power_sync_nodes[result as usize].fetch_add(n, Relaxed);
    }

    /// The job queue's depth now.
    pub fn job_queue(&self, queued: usize, waiting: usize, running: usize) {
        self.jobs_queued.store(queued as i64, Relaxed);
        self.jobs_waiting.store(waiting as i64, Relaxed);
        self.jobs_running.store(running as i64, Relaxed);
    }

    /// A job was accepted.
    pub fn job_submitted(&self) {
        self.jobs_submitted.fetch_add(1, Relaxed);
    }

    /// A job started, `waited` after its submission.
    pub fn job_started(&self, waited: Duration) {
        self.job_queue_wait.observe(waited);
    }

    /// A job ended; `ran` is how long it ran (`None`: it never started).
    pub fn job_ended(&self, status: JobStatus, ran: Option<Duration>) {
        self.jobs_ended[status as usize].fetch_add(1, Relaxed);
        if let Some(d) = ran {
            self.job_run.observe(d);
        }
    }

    // ----- reading ----------------------------------------------------------

    /// Nodes in `state` now.
    pub fn nodes_in(&self, state: ProvisionState) -> i64 {
        self.nodes[state as usize].load(Relaxed)
    }

    /// Nodes in maintenance now.
    pub fn nodes_in_maintenance(&self) -> i64 {
        self.nodes_maintenance.load(Relaxed)
    }

    /// Nodes reserved now: held by a task, their own or an upkeep's.
    pub fn nodes_reserved(&self) -> i64 {
        self.nodes_reserved.load(Relaxed)
    }

    /// How many node actors run now.
    pub fn node_actors(&self) -> i64 {
        self.node_actors.load(Relaxed)
    }

    /// A node actor started (`1`) or stopped (`-1`).
    pub fn node_actor(&self, delta: i64) {
        self.node_actors.fetch_add(delta, Relaxed);
    }

    /// BMC calls of `driver` so far (all kinds) and how many failed.
    pub fn bmc_totals(&self, driver: DriverKind) -> (u64, u64) {
        self.bmc[driver as usize].iter().fold((0, 0), |(n, e), s| (n + s.latency.count(), e + s.errors.load(Relaxed)))
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric, with
    /// the scheduler's periodic task figures (`periodic`).
    pub fn render(&self, periodic: &[PeriodicInfo], store: &StoreStats) -> String {
        let mut out = String::with_capacity(32 * 1024);
        let o = &mut out;

        header(o, "kiln_build_info", "gauge", "Always 1; the version label says which kiln runs.");
        let _ = writeln!(o, "kiln_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        header(o, "kiln_start_time_seconds", "gauge", "When the site started, in seconds since the Unix epoch.");
        let start = self.started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let _ = writeln!(o, "kiln_start_time_seconds {start}");

        header(o, "kiln_nodes", "gauge", "Nodes by provision state.");
        for s in ProvisionState::ALL {
            let _ = writeln!(o, "kiln_nodes{{provision_state=\"{s}\"}} {}", self.nodes_in(*s));
        }
        header(o, "kiln_nodes_maintenance", "gauge", "Nodes in maintenance.");
        let _ = writeln!(o, "kiln_nodes_maintenance {}", self.nodes_maintenance.load(Relaxed));
        header(o, "kiln_nodes_reserved", "gauge", "Nodes reserved by a running task.");
        let _ = writeln!(o, "kiln_nodes_reserved {}", self.nodes_reserved());
        header(o, "kiln_node_actors", "gauge", "Node actors running; the other nodes are at rest.");
        let _ = writeln!(o, "kiln_node_actors {}", self.node_actors());

        header(o, "kiln_power_sync_duration_seconds", "histogram", "How long each power sync cycle took.");
        self.power_sync_cycle.render(o, "kiln_power_sync_duration_seconds", "");
        header(
            o,
            "kiln_power_sync_lag_seconds",
            "gauge",
            "Age of the oldest power state a BMC confirmed, among the nodes the last power sync cycle synced.",
        );
        let oldest = self.power_sync_oldest_verified_ms.load(Relaxed);
        if oldest != i64::MIN {
            let now = std::time::SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
            let _ = writeln!(o, "kiln_power_sync_lag_seconds {}", (now - oldest).max(0) as f64 / 1000.0);
        }
        header(o, "kiln_power_sync_nodes_total", "counter", "Nodes looked at by power sync cycles, by result.");
        for &r in SyncResult::ALL {
            let n = self.power_sync_nodes[r as usize].load(Relaxed);
            let _ = writeln!(o, "kiln_power_sync_nodes_total{{result=\"{}\"}} {n}", r.as_str());
        }

        header(o, "kiln_periodic_runs_total", "counter", "Runs of each periodic task.");
        for p in periodic {
            let _ = writeln!(o, "kiln_periodic_runs_total{{task=\"{}\"}} {}", escape(&p.name), p.runs);
        }
        header(o, "kiln_periodic_failures_total", "counter", "Failed runs of each periodic task.");
        for p in periodic {
            let _ = writeln!(o, "kiln_periodic_failures_total{{task=\"{}\"}} {}", escape(&p.name), p.failures);
        }
        header(o, "kiln_periodic_last_duration_seconds", "gauge", "How long each periodic task's last run took.");
        for p in periodic.iter().filter(|p| p.last_duration_ms.is_some()) {
            let secs = p.last_duration_ms.unwrap_or(0) as f64 / 1e3;
            let _ = writeln!(o, "kiln_periodic_last_duration_seconds{{task=\"{}\"}} {secs}", escape(&p.name));
        }

        header(o, "kiln_jobs", "gauge", "Jobs that have not ended, by status.");
        let _ = writeln!(o, "kiln_jobs{{status=\"queued\"}} {}", self.jobs_queued.load(Relaxed));
        let _ = writeln!(o, "kiln_jobs{{status=\"waiting\"}} {}", self.jobs_waiting.load(Relaxed));
        let _ = writeln!(o, "kiln_jobs{{status=\"running\"}} {}", self.jobs_running.load(Relaxed));
        header(o, "kiln_jobs_submitted_total", "counter", "Jobs accepted by the queue.");
        let _ = writeln!(o, "kiln_jobs_submitted_total {}", self.jobs_submitted.load(Relaxed));
        header(o, "kiln_jobs_ended_total", "counter", "Jobs that ended, by final status.");
        for s in JobStatus::ALL.iter().filter(|s| s.is_finished()) {
            let _ =
                writeln!(o, "kiln_jobs_ended_total{{status=\"{s}\"}} {}", self.jobs_ended[*s as usize].load(Relaxed));
        }
        header(o, "kiln_job_queue_wait_seconds", "histogram", "Time from a job's submission to its start.");
        self.job_queue_wait.render(o, "kiln_job_queue_wait_seconds", "");
        header(o, "kiln_job_run_seconds", "histogram", "Time from a job's start to its end.");
        self.job_run.render(o, "kiln_job_run_seconds", "");

        header(o, "kiln_store_commits_total", "counter", "Batches committed by the store (one per write request).");
        let _ = writeln!(o, "kiln_store_commits_total {}", store.commits);
        header(o, "kiln_store_groups_total", "counter", "Transactions the store grouped those commits into.");
        let _ = writeln!(o, "kiln_store_groups_total {}", store.groups);
        header(o, "kiln_store_syncs_total", "counter", "Log syncs (fsyncs) that made committed groups durable.");
        let _ = writeln!(o, "kiln_store_syncs_total {}", store.syncs);
        header(o, "kiln_store_sync_seconds_total", "counter", "Time spent in those log syncs, summed.");
        let _ = writeln!(o, "kiln_store_sync_seconds_total {}", store.sync_time.as_secs_f64());
        header(
            o,
            "kiln_store_commit_wait_seconds_total",
            "counter",
            "Time commits waited, summed over commits, by stage: queued, applying, syncing.",
        );
        for (stage, d) in [("queued", store.queued), ("applying", store.applying), ("syncing", store.syncing)] {
            let _ = writeln!(o, "kiln_store_commit_wait_seconds_total{{stage=\"{stage}\"}} {}", d.as_secs_f64());
        }

        header(o, "kiln_bmc_call_duration_seconds", "histogram", "BMC calls by driver and call, failed or not.");
        for d in DriverKind::ALL {
            for &c in BmcCall::ALL {
                let labels = format!("driver=\"{d}\",call=\"{}\"", c.as_str());
                self.bmc[*d as usize][c as usize].latency.render(o, "kiln_bmc_call_duration_seconds", &labels);
            }
        }
        header(o, "kiln_bmc_call_errors_total", "counter", "BMC calls that failed (error, timeout, panic).");
        for d in DriverKind::ALL {
            for &c in BmcCall::ALL {
                let n = self.bmc[*d as usize][c as usize].errors.load(Relaxed);
                let _ = writeln!(o, "kiln_bmc_call_errors_total{{driver=\"{d}\",call=\"{}\"}} {n}", c.as_str());
            }
        }

        let kinds = self.request_kinds.iter().copied().chain([INVALID_REQUEST]);
        header(o, "kiln_admin_requests_total", "counter", "Admin socket requests, by request.");
        for (k, s) in kinds.clone().zip(&self.admin) {
            let _ = writeln!(o, "kiln_admin_requests_total{{request=\"{k}\"}} {}", s.requests.load(Relaxed));
        }
        header(o, "kiln_admin_request_errors_total", "counter", "Admin socket requests answered with an error.");
        for (k, s) in kinds.clone().zip(&self.admin) {
            let _ = writeln!(o, "kiln_admin_request_errors_total{{request=\"{k}\"}} {}", s.errors.load(Relaxed));
        }
        header(
            o,
            "kiln_admin_request_duration_seconds",
            "histogram",
            "Admin socket requests, from decoding to the answer ready to send (kinds seen so far).",
        );
        for (k, s) in kinds.zip(&self.admin).filter(|(_, s)| s.latency.count() > 0) {
            s.latency.render(o, "kiln_admin_request_duration_seconds", &format!("request=\"{k}\""));
        }
        header(o, "kiln_api_requests_total", "counter", "HTTP API requests answered, by route and status.");
        if let Ok(api) = self.api.lock() {
            for ((route, status), n) in api.iter() {
                let _ = writeln!(o, "kiln_api_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", escape(route));
            }
        }
        header(
            o,
            "kiln_api_auth_failures_total",
            "counter",
            "HTTP API requests refused for a wrong or missing credential.",
        );
        let _ = writeln!(o, "kiln_api_auth_failures_total {}", self.api_auth_failures.load(Relaxed));
        header(
            o,
            "kiln_node_callbacks_total",
            "counter",
            "Callbacks of booted systems to nodes in a wait state, taken or refused for a wrong token.",
        );
        let _ = writeln!(o, "kiln_node_callbacks_total{{result=\"taken\"}} {}", self.callbacks_taken.load(Relaxed));
        let _ = writeln!(o, "kiln_node_callbacks_total{{result=\"refused\"}} {}", self.callbacks_refused.load(Relaxed));
        out
    }
}

pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A node actor's share of the node gauges: counts its node in its state
/// (and in maintenance, and as reserved) from creation to drop, so the
/// gauges follow every adopted record, every reservation, a deleted node
/// and a crashed actor without a scan.
pub struct NodeGauge {
    metrics: Arc<Metrics>,
    state: ProvisionState,
    maintenance: bool,
    reserved: bool,
    /// Already taken out of the counts (the node was deleted).
    removed: bool,
}

impl NodeGauge {
    pub fn new(metrics: Arc<Metrics>, record: &NodeRecord) -> Self {
        metrics.nodes[record.provision_state as usize].fetch_add(1, Relaxed);
        if record.maintenance {
            metrics.nodes_maintenance.fetch_add(1, Relaxed);
        }
        NodeGauge {
            metrics,
            state: record.provision_state,
            maintenance: record.maintenance,
            reserved: false,
            removed: false,
        }
    }

    /// The site's metrics, for what a node counts besides its gauges.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The node is gone (deleted): it leaves the counts now, before anyone
    /// is told, rather than when its actor is dropped a moment later.
    pub fn remove(&mut self) {
        if !self.removed {
            self.reserve(false);
            self.removed = true;
            self.metrics.nodes[self.state as usize].fetch_sub(1, Relaxed);
            if self.maintenance {
                self.metrics.nodes_maintenance.fetch_sub(1, Relaxed);
            }
        }
    }

    /// Moves this node's counts into a new gauge, leaving this one counting
    /// nothing: a node put to rest hands its counts to the registry's entry
    /// (and back when it wakes), so the gauges never dip in between.
    pub fn hand_off(&mut self) -> NodeGauge {
        let moved = NodeGauge {
            metrics: self.metrics.clone(),
            state: self.state,
            maintenance: self.maintenance,
            reserved: self.reserved,
            removed: self.removed,
        };
        self.removed = true;
        moved
    }

    /// The node now looks like `record`.
    pub fn track(&mut self, record: &NodeRecord) {
        if self.removed {
            return;
        }
        if record.provision_state != self.state {
            self.metrics.nodes[self.state as usize].fetch_sub(1, Relaxed);
            self.metrics.nodes[record.provision_state as usize].fetch_add(1, Relaxed);
            self.state = record.provision_state;
        }
        if record.maintenance != self.maintenance {
            let delta = if record.maintenance { 1 } else { -1 };
            self.metrics.nodes_maintenance.fetch_add(delta, Relaxed);
            self.maintenance = record.maintenance;
        }
    }

    /// The node is now reserved, or no longer.
    pub fn reserve(&mut self, reserved: bool) {
        if self.removed || reserved == self.reserved {
            return;
        }
        self.metrics.nodes_reserved.fetch_add(if reserved { 1 } else { -1 }, Relaxed);
        self.reserved = reserved;
    }
}

impl Drop for NodeGauge {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The samples of a rendering: (name with labels, value).
    fn samples(text: &str) -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').expect("a sample is NAME VALUE");
                (k.to_string(), v.parse().unwrap_or_else(|_| panic!("value of {l}")))
            })
            .collect()
    }

    fn value(text: &str, key: &str) -> f64 {
        samples(text).into_iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no {key}")).1
    }

    #[test]
    fn enum_indexes_match_their_lists() {
        for (i, s) in ProvisionState::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        for (i, d) in DriverKind::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
        }
        for (i, s) in JobStatus::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        for (i, c) in BmcCall::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        for (i, r) in SyncResult::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn text_format_has_help_type_and_well_formed_samples() {
        let m = Metrics::with_request_kinds(&["status", "node_list"]);
        m.bmc_call(DriverKind::Fake, BmcCall::GetPower, Duration::from_micros(300), false);
        m.bmc_call(DriverKind::Fake, BmcCall::GetPower, Duration::from_millis(7), true);
        m.bmc_call(DriverKind::Fake, BmcCall::GetPower, Duration::from_secs(7200), false);
        let slot = m.admin_request(Some(0));
        m.admin_error(slot);
        m.admin_answered(slot, Duration::from_millis(3));
        m.admin_request(None);
        m.job_submitted();
        m.job_queue(2, 1, 3);
        m.job_ended(JobStatus::Error, Some(Duration::from_secs(2)));
        let periodic = [PeriodicInfo {
            name: "power_sync".into(),
            runs: 4,
            failures: 1,
            last_duration_ms: Some(1500),
            ..Default::default()
        }];
        let store = StoreStats {
            commits: 4,
            groups: 2,
            syncs: 1,
            sync_time: Duration::from_millis(250),
            queued: Duration::from_millis(3),
            applying: Duration::from_millis(5),
            syncing: Duration::from_millis(1500),
        };
        let text = m.render(&periodic, &store);

        // Every family has HELP then TYPE, and every sample belongs to the
        // family declared last.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(name.starts_with("kiln_"), "{line}");
                family = name.to_string();
            } else if !line.starts_with("# HELP ") {
                assert!(line.starts_with(&family), "{line} outside its family {family}");
            }
        }
        assert!(text.ends_with('\n'));

        let bmc = "kiln_bmc_call_duration_seconds";
        let l = "driver=\"fake\",call=\"get_power\"";
        assert_eq!(value(&text, &format!("{bmc}_bucket{{{l},le=\"0.0005\"}}")), 1.0);
        assert_eq!(value(&text, &format!("{bmc}_bucket{{{l},le=\"0.01\"}}")), 2.0);
        assert_eq!(value(&text, &format!("{bmc}_bucket{{{l},le=\"3600\"}}")), 2.0);
        assert_eq!(value(&text, &format!("{bmc}_bucket{{{l},le=\"+Inf\"}}")), 3.0);
        assert_eq!(value(&text, &format!("{bmc}_count{{{l}}}")), 3.0);
        assert!((value(&text, &format!("{bmc}_sum{{{l}}}")) - 7200.0073).abs() < 1e-6);
        assert_eq!(value(&text, &format!("kiln_bmc_call_errors_total{{{l}}}")), 1.0);
        assert_eq!(value(&text, "kiln_bmc_call_errors_total{driver=\"ipmi\",call=\"get_power\"}"), 0.0);
        assert_eq!(m.bmc_totals(DriverKind::Fake), (3, 1));

        assert_eq!(value(&text, "kiln_admin_requests_total{request=\"status\"}"), 1.0);
        assert_eq!(value(&text, "kiln_admin_request_errors_total{request=\"status\"}"), 1.0);
        let took = "kiln_admin_request_duration_seconds";
        assert_eq!(value(&text, &format!("{took}_bucket{{request=\"status\",le=\"0.0025\"}}")), 0.0);
        assert_eq!(value(&text, &format!("{took}_bucket{{request=\"status\",le=\"0.005\"}}")), 1.0);
        assert_eq!(value(&text, &format!("{took}_count{{request=\"status\"}}")), 1.0);
        // Kinds never answered have no series.
        assert!(!text.contains(&format!("{took}_count{{request=\"node_list\"}}")), "{text}");
        assert_eq!(value(&text, "kiln_admin_requests_total{request=\"invalid\"}"), 1.0);
        assert_eq!(value(&text, "kiln_jobs{status=\"queued\"}"), 2.0);
        assert_eq!(value(&text, "kiln_jobs{status=\"running\"}"), 3.0);
        assert_eq!(value(&text, "kiln_jobs_ended_total{status=\"error\"}"), 1.0);
        assert_eq!(value(&text, "kiln_job_run_seconds_count"), 1.0);
        assert_eq!(value(&text, "kiln_periodic_runs_total{task=\"power_sync\"}"), 4.0);
        assert_eq!(value(&text, "kiln_periodic_last_duration_seconds{task=\"power_sync\"}"), 1.5);
        assert_eq!(value(&text, "kiln_store_commits_total"), 4.0);
        assert_eq!(value(&text, "kiln_store_groups_total"), 2.0);
        assert_eq!(value(&text, "kiln_store_syncs_total"), 1.0);
        assert_eq!(value(&text, "kiln_store_sync_seconds_total"), 0.25);
        assert_eq!(value(&text, "kiln_store_commit_wait_seconds_total{stage=\"applying\"}"), 0.005);
        assert_eq!(value(&text, "kiln_store_commit_wait_seconds_total{stage=\"syncing\"}"), 1.5);
        assert_eq!(value(&text, &format!("kiln_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0);
    }

    #[test]
    fn power_sync_lag_is_the_age_of_the_oldest_confirmation_at_the_scrape() {
        let m = Metrics::default();
        let none = m.render(&[], &StoreStats::default());
        assert!(!none.contains("\nkiln_power_sync_lag_seconds "), "no figure before a cycle");
        let outcomes = [
            crate::node::upkeep::SyncOutcome::InSync,
            crate::node::upkeep::SyncOutcome::BackedOff {
                until: String::new(),
                verified_at: Some(chrono::Utc::now() - chrono::Duration::seconds(600)),
            },
            crate::node::upkeep::SyncOutcome::Skipped("maintenance".into()),
        ];
        m.power_sync_oldest_verified(crate::periodic::oldest_verified(&outcomes, chrono::Utc::now()));
        let lag = value(&m.render(&[], &StoreStats::default()), "kiln_power_sync_lag_seconds");
        assert!((600.0..700.0).contains(&lag), "{lag}");
        let synced = [crate::node::upkeep::SyncOutcome::InSync];
        m.power_sync_oldest_verified(crate::periodic::oldest_verified(&synced, chrono::Utc::now()));
        assert!(value(&m.render(&[], &StoreStats::default()), "kiln_power_sync_lag_seconds") < 60.0);
    }

    #[test]
    fn node_gauges_follow_records_and_drops() {
        let m = Arc::new(Metrics::default());
        let mut r = NodeRecord::enroll("n1".into(), DriverKind::Fake, chrono::Utc::now());
        let mut g = NodeGauge::new(m.clone(), &r);
        let _other = NodeGauge::new(m.clone(), &r);
        assert_eq!(m.nodes_in(ProvisionState::Enroll), 2);
        r.provision_state = ProvisionState::Manageable;
        r.maintenance = true;
        g.track(&r);
        assert_eq!(m.nodes_in(ProvisionState::Enroll), 1);
        assert_eq!(m.nodes_in(ProvisionState::Manageable), 1);
        assert_eq!(m.nodes_maintenance.load(Relaxed), 1);
        g.remove();
        assert_eq!(m.nodes_in(ProvisionState::Manageable), 0);
        assert_eq!(m.nodes_maintenance.load(Relaxed), 0);
        drop(g);
        assert_eq!(m.nodes_in(ProvisionState::Manageable), 0);
        assert_eq!(m.nodes_in(ProvisionState::Enroll), 1);
        assert!(m.render(&[], &StoreStats::default()).contains("kiln_nodes{provision_state=\"enroll\"} 1\n"));
    }

    #[test]
    fn the_reserved_gauge_follows_reservations_deletes_and_drops() {
        let m = Arc::new(Metrics::default());
        let r = NodeRecord::enroll("n1".into(), DriverKind::Fake, chrono::Utc::now());
        let (mut a, mut b, mut c) =
            (NodeGauge::new(m.clone(), &r), NodeGauge::new(m.clone(), &r), NodeGauge::new(m.clone(), &r));
        a.reserve(true);
        a.reserve(true); // already reserved: counted once
        b.reserve(true);
        c.reserve(false); // never reserved: nothing to take back
        assert_eq!(m.nodes_reserved(), 2);
        b.reserve(false);
        assert_eq!(m.nodes_reserved(), 1);
        assert!(m.render(&[], &StoreStats::default()).contains("kiln_nodes_reserved 1\n"));
        // A deleted node leaves the count, and nothing after brings it back.
        b.reserve(true);
        b.remove();
        b.reserve(true);
        assert_eq!(m.nodes_reserved(), 1);
        // A dropped actor (a crash) takes its reservation with it.
        drop(a);
        assert_eq!(m.nodes_reserved(), 0);
        drop((b, c));
        assert_eq!(m.nodes_reserved(), 0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
