//! The scenarios themselves. Each starts its own site (and, for `admin`, the
//! admin socket) in an actix system on a temporary data dir, which is removed
//! afterwards.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kiln_actors::jobs::{NewJob, Opcode, SubmitJob, SubmitJobs, WaitJobChange};
use kiln_actors::node::RunOp;
use kiln_actors::{CreateNodes, ListNodes, NewNode, Op, Site, SiteConfig, Verb};
use kiln_drivers::PowerAction;
use kiln_store::{JobId, JobStatus};

use super::cpu;
use super::report::{Figure, percentile};
use crate::cli::BenchArgs;

/// A data dir removed when dropped.
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kiln-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }

    pub(super) fn config(&self) -> SiteConfig {
        SiteConfig { data_dir: self.0.clone(), ..Scratch::defaults() }
    }

    /// The settings every scenario's site has, but for its data dir.
    fn defaults() -> SiteConfig {
        SiteConfig {
            lock_wait: Duration::from_secs(600),
            // The jobs scenario holds its whole probe queued at once.
            max_queued_jobs: usize::MAX,
            ..Default::default()
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one scenario by name.
pub fn run(name: &str, args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    match name {
        "nodeset" => nodeset(args),
        "lock" => in_system(lock(args.clone())),
        "jobs" => in_system(jobs(args.clone())),
        "lifecycle" => in_system(lifecycle(args.clone())),
        "admin" => admin(args),
        "scale" => scale(args),
        "power-sync" => in_system(power_sync(args.clone())),
        "exec" => exec(args),
        "scale-out" => super::scaleout::run(args),
        "api" => super::api::api(args),
        "list" => super::listing::list(args),
        other => bail!("no scenario {other}"),
    }
}

fn in_system<F>(fut: F) -> anyhow::Result<Vec<Figure>>
where
    F: std::future::Future<Output = anyhow::Result<Vec<Figure>>>,
{
    actix::System::new().block_on(fut)
}

fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// RSS once the allocator has handed back the pages freed so far, as it
/// does by itself within seconds (jemalloc's decay): what the process holds,
/// not the garbage of a burst just over.
fn settled_rss_mb() -> f64 {
    // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena's unused dirty pages.
    let name = b"arena.4096.purge\0";
    // SAFETY: a NUL-terminated mallctl name that takes and returns nothing.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    rss_mb()
}

/// The highest RSS this process has had.
fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn new_nodes(prefix: &str, from: usize, to: usize) -> Vec<NewNode> {
    (from..=to).map(|i| NewNode { name: format!("{prefix}{i}"), driver: "fake".into(), ..Default::default() }).collect()
}

pub(super) async fn create_nodes(site: &Site, prefix: &str, count: usize) -> anyhow::Result<()> {
    let mut from = 1;
    while from <= count {
        let to = (from + 9_999).min(count);
        site.supervisor.send(CreateNodes(new_nodes(prefix, from, to))).await??;
        from = to + 1;
    }
    Ok(())
}

/// Submits a job and follows it to its end with the long poll.
async fn run_job(site: &Site, ops: Vec<Opcode>) -> anyhow::Result<JobStatus> {
    let id: JobId = site.jobs.send(SubmitJob { ops, priority: 0, depends: Vec::new() }).await??;
    follow(site, id).await
}

/// Follows a job to its end with the long poll.
async fn follow(site: &Site, id: JobId) -> anyhow::Result<JobStatus> {
    let mut after = 0;
    loop {
        let change =
            site.jobs.send(WaitJobChange { job: id, after_serial: after, timeout: Duration::from_secs(5) }).await??;
        after = change.log.last().map_or(after, |e| e.serial);
        if change.status.is_finished() {
            return Ok(change.status);
        }
    }
}

// ----- nodeset ----------------------------------------------------------------------

fn nodeset(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    use kiln_actors::nodeset::NodeSet;
    let n = args.names.unwrap_or(100_000);
    let one_d: Vec<String> = (1..=n).map(|i| format!("node{i}")).collect();
    let side = (n as f64).sqrt().ceil() as usize;
    let two_d: Vec<String> = (1..=side).flat_map(|r| (1..=side).map(move |c| format!("r{r}-n{c}"))).take(n).collect();
    // Names that fold badly: random pairs, deterministic (an LCG) so runs compare.
    let mut seed: u64 = 42;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % 10_000
    };
    let random: Vec<String> = (0..(n / 10).max(1)).map(|_| format!("a-{}-b-{}-c", next(), next())).collect();
    let mut figures = Vec::new();
    for (label, names) in [("fold_1d", &one_d), ("fold_2d", &two_d), ("fold_random_2d", &random)] {
        let t = Instant::now();
        let set = NodeSet::from_names(names.iter().map(String::as_str));
        let folded = set.fold();
        let secs = t.elapsed().as_secs_f64();
        let back = NodeSet::parse(&folded).map_err(|e| anyhow::anyhow!("{label}: fold does not parse: {e}"))?;
        if back.len() != set.len() {
            bail!("{label}: folding lost names ({} != {})", back.len(), set.len());
        }
        figures.push(Figure::new(&format!("nodeset.{label}.names"), names.len() as f64, "names"));
        figures.push(Figure::new(&format!("nodeset.{label}"), secs, "s").at_most(1.0));
    }
    Ok(figures)
}

// ----- lock ---------------------------------------------------------------------------

async fn lock(args: BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let scratch = Scratch::new("lock");
    let site = kiln_actors::start(scratch.config()).await?;
    let contenders = args.requests.unwrap_or(1_000);
    create_nodes(&site, "hot", 1).await?;

    // Watch the hot node's events: holders must never overlap.
    let (tx, mut rx) = tokio::sync::mpsc::channel(contenders * 4 + 16);
    site.events.send(kiln_actors::events::SubscribeChannel { tx, backlog: false, filter: Default::default() }).await?;
    let holders = Arc::new(AtomicI64::new(0));
    let max_holders = Arc::new(AtomicI64::new(0));
    let (h, m) = (holders.clone(), max_holders.clone());
    let watcher = actix::spawn(async move {
        while let Some(e) = rx.recv().await {
            match e.kind {
                kiln_actors::EventKind::Start => {
                    let now = h.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                }
                _ => {
                    h.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    });
    let (hot_id, _) = site.registry.find("hot1").context("hot1 exists")?;
    let hot = site.registry.addr(hot_id).context("hot1 exists")?;
    let t = Instant::now();
    let requests: Vec<_> = (0..contenders)
        .map(|i| {
            let action = if i % 2 == 0 { PowerAction::On } else { PowerAction::Off };
            hot.send(RunOp { op: Op::Power(action), wait: true })
        })
        .collect();
    let results = futures::future::join_all(requests).await;
    let contention_secs = t.elapsed().as_secs_f64();
    let ok = results.into_iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let id = hot.send(kiln_actors::node::ShowNode).await?.uuid;
    let history = site.store.read(move |b| b.load_history(id, usize::MAX)).await?.len();
    drop(site.events.clone());
    watcher.abort();
    let lost = contenders.saturating_sub(history);

    let nodes = args.nodes.unwrap_or(10_000);
    let tasks = args.tasks.unwrap_or(100_000);
    create_nodes(&site, "lk", nodes).await?;
    let addrs: Vec<_> =
        (1..=nodes).filter_map(|i| site.registry.addr(site.registry.find(&format!("lk{i}"))?.0)).collect();
    let done = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let per_node = tasks / nodes.max(1);
    let mut all = Vec::with_capacity(tasks);
    for _ in 0..per_node {
        for a in &addrs {
            all.push(a.send(RunOp { op: Op::Noop, wait: true }));
        }
    }
    for r in futures::future::join_all(all).await {
        if matches!(r, Ok(Ok(_))) {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    Ok(vec![
        Figure::new("lock.contenders", contenders as f64, "requests"),
        Figure::new("lock.contenders_ok", ok as f64, "requests"),
        Figure::new("lock.contention_time", contention_secs, "s"),
        Figure::new("lock.max_holders", max_holders.load(Ordering::SeqCst) as f64, "holders").at_most(1.0),
        Figure::new("lock.lost_updates", lost as f64, "updates").at_most(0.0),
        Figure::new("lock.noop_tasks", done as f64, "tasks"),
        Figure::new("lock.exclusive_tasks_per_s", done as f64 / secs, "tasks/s").at_least(100_000.0),
    ])
}

// ----- jobs ---------------------------------------------------------------------------

async fn jobs(args: BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let scratch = Scratch::new("jobs");
    let site = kiln_actors::start(scratch.config()).await?;
    let total = args.jobs.unwrap_or(1_000_000);
    let clients = args.clients.unwrap_or(64).max(1);
    // The queue and the store alone (the ceiling) take turns on the same
    // disk, a slice each, so that the disk's drift from second to second
    // falls on both alike; each side's figures add up its own slices only.
    let mut ceiling = StoreCeiling::open()?;
    let (mut spent, mut secs) = (cpu::Tally::default(), 0.0);
    let store_before = site.store.stats();
    let mut latencies = Vec::with_capacity(total);
    for slice in 0..SLICES {
        let count = total / SLICES + usize::from(slice < total % SLICES);
        let mark = cpu::mark();
        let t = Instant::now();
        latencies.extend(submit_sleeps(&site, clients, count).await?);
        secs += t.elapsed().as_secs_f64();
        spent.add_since(&mark);
        if ceiling.template.is_none() {
            // The row the queue commits for each submission: job 1's, a
            // `sleep 0` job as the queue stored it.
            let first = site.store.read(|b| b.load_job(JobId(1))).await?.context("job 1 is not stored")?.0;
            ceiling.template = Some(first);
        }
        ceiling.run(clients, count).await?;
    }
    let store = site.store.stats().since(&store_before);
    let ack_mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    latencies.sort_by(f64::total_cmp);
    // The last job must also run to its end.
    let last = site.jobs.send(kiln_actors::jobs::GetQueueInfo).await?.last_job_id;
    let t_drain = Instant::now();
    let status = follow(&site, JobId(last)).await?;
    if status != JobStatus::Success {
        bail!("the last job ended {status}");
    }
    let drain = t_drain.elapsed().as_secs_f64();
    let submitted = latencies.len() as f64;
    let rate = submitted / secs;
    let (cpu, threads) = (spent.seconds, &spent.threads);
    let store_cpu = threads.get("kiln-store").copied().unwrap_or(0.0) * 1e6 / submitted;
    let cpu_per_submission = cpu * 1e6 / submitted;
    let cores = super::num_cpus();
    // The ceiling's store closes here, before the probes below.
    let (template, ceiling, alone) = ceiling.finish()?;
    // The other limits under the queue, measured now on the same disk.
    let probe_jobs = (total / 5).max(clients);
    let queue_only = queue_ceiling(&site, clients, probe_jobs).await?;
    let batched = batch_rate(&site, clients, probe_jobs).await?;
    let writer = writer_ceiling(&template, probe_jobs)?;
    let fsync = fsync_ms(&scratch.0)?;
    let mut figures = vec![
        Figure::new("jobs.submitted", submitted, "jobs"),
        Figure::new("jobs.submitters", clients as f64, "clients"),
        Figure::new("jobs.submissions_per_s", rate, "jobs/s").at_least(100_000.0),
        Figure::new("jobs.ack_p50", percentile(&latencies, 50.0), "ms"),
        Figure::new("jobs.ack_p99", percentile(&latencies, 99.0), "ms").at_most(10.0),
        Figure::new("jobs.ack_mean", ack_mean, "ms"),
    ];
    // Where a store commit's wait went, on average over every commit
    // meanwhile (submissions and the jobs' own changes); the rest of an
    // acknowledgement's mean is spent in the actors.
    figures.extend(commit_figures("jobs.", &store));
    figures.extend([
        Figure::new(
            "jobs.fsync_under_load_bound_per_s",
            clients as f64 / store.mean_sync().as_secs_f64().max(1e-9),
            "jobs/s",
        ),
        Figure::new("jobs.drain_after_submit", drain, "s"),
        // The same submitters while the queue starts none of their jobs:
        // what running and ending the jobs costs the submissions.
        Figure::new("jobs.queue_only_per_s", queue_only, "jobs/s"),
        // The same submitters, each submitting BATCH jobs a request
        // (SubmitManyJobs): jobs acknowledged per second.
        Figure::new("jobs.batch_size", BATCH as f64, "jobs"),
        Figure::new("jobs.batch_submissions_per_s", batched, "jobs/s"),
        Figure::new("jobs.store_ceiling_per_s", ceiling, "jobs/s"),
        Figure::new("jobs.ratio_to_store_ceiling", rate / ceiling, "ratio"),
        Figure::new("jobs.writer_ceiling_per_s", writer, "jobs/s"),
        Figure::new("jobs.fsync_p50", fsync, "ms"),
        // Every acknowledgement waits for at least one fsync begun after its
        // write: with `clients` submitters that alone allows this many.
        Figure::new("jobs.fsync_bound_per_s", clients as f64 * 1000.0 / fsync.max(1e-6), "jobs/s"),
        // CPU of the whole process per submission while they came in (the
        // jobs running meanwhile included), and the rate at which that
        // would keep every core busy.
        Figure::new("jobs.cpu_per_submission", cpu_per_submission, "us"),
        // The rate at which the store thread would be busy all the time: it
        // is SQLite's one writer and cannot spread over cores.
        Figure::new("jobs.store_thread_bound_per_s", 1e6 / store_cpu.max(1e-9), "jobs/s"),
        Figure::new("jobs.cores_busy", cpu / secs, "cores"),
        Figure::new("jobs.cpu_bound_per_s", cores as f64 * submitted / cpu.max(1e-9), "jobs/s"),
    ]);
    // The same CPU by thread: the sync and checkpoint threads mostly wait
    // for the disk; the rest is the actors (actix) and the kernel work they
    // cause.
    figures.extend(cpu::by_thread("jobs", threads, cpu, submitted));
    figures.extend(alone.figures());
    Ok(figures)
}

/// `total` `sleep 0` jobs submitted by `clients` tasks, each waiting for
/// its acknowledgement before the next; every acknowledgement's time in ms.
async fn submit_sleeps(site: &Site, clients: usize, total: usize) -> anyhow::Result<Vec<f64>> {
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let jobs = site.jobs.clone();
            let count = total / clients + usize::from(c < total % clients);
            actix::spawn(async move {
                let mut latencies = Vec::with_capacity(count);
                for _ in 0..count {
                    let t = Instant::now();
                    let msg = SubmitJob { ops: vec![Opcode::Sleep { seconds: 0.0 }], priority: 0, depends: Vec::new() };
                    jobs.send(msg).await??;
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                Ok::<_, anyhow::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for h in handles {
        latencies.extend(h.await??);
    }
    Ok(latencies)
}

/// Jobs a submission of several holds in [`batch_rate`].
const BATCH: usize = 64;

/// Jobs acknowledged per second when `clients` tasks submit `total` `sleep
/// 0` jobs [`BATCH`] to a request (one commit each), each waiting for its
/// acknowledgement before the next; then every job runs to its end.
async fn batch_rate(site: &Site, clients: usize, total: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let jobs = site.jobs.clone();
            let mut count = total / clients + usize::from(c < total % clients);
            actix::spawn(async move {
                let mut acknowledged = 0;
                while count > 0 {
                    let n = count.min(BATCH);
                    count -= n;
                    let batch = (0..n)
                        .map(|_| NewJob { ops: vec![Opcode::Sleep { seconds: 0.0 }], priority: 0, depends: Vec::new() })
                        .collect();
                    acknowledged += jobs.send(SubmitJobs(batch)).await??.len();
                }
                Ok::<_, anyhow::Error>(acknowledged)
            })
        })
        .collect();
    let mut acknowledged = 0;
    for h in handles {
        acknowledged += h.await??;
    }
    let rate = acknowledged as f64 / t.elapsed().as_secs_f64();
    let last = site.jobs.send(kiln_actors::jobs::GetQueueInfo).await?.last_job_id;
    let status = follow(site, JobId(last)).await?;
    if status != JobStatus::Success {
        bail!("the last batched job ended {status}");
    }
    Ok(rate)
}

/// Submissions per second through the queue while it starts none of the
/// jobs: one long sleep holds the only running slot (`max_running` 1), the
/// submitters submit `total` jobs, then the sleep is canceled, the limit put
/// back, and every job runs to its end before this returns.
async fn queue_ceiling(site: &Site, clients: usize, total: usize) -> anyhow::Result<f64> {
    use kiln_actors::jobs::{CancelJob, GetQueueInfo, SetMaxRunning};
    let max_running = site.jobs.send(GetQueueInfo).await?.max_running;
    site.jobs.send(SetMaxRunning(1)).await?;
    let hold = SubmitJob { ops: vec![Opcode::Sleep { seconds: 86_400.0 }], priority: -20, depends: Vec::new() };
    let holder = site.jobs.send(hold).await??;
    let t = Instant::now();
    let submitted = submit_sleeps(site, clients, total).await?;
    let rate = submitted.len() as f64 / t.elapsed().as_secs_f64();
    site.jobs.send(CancelJob(holder)).await??;
    site.jobs.send(SetMaxRunning(max_running)).await?;
    let last = site.jobs.send(GetQueueInfo).await?.last_job_id;
    let status = follow(site, JobId(last)).await?;
    if status != JobStatus::Success {
        bail!("the last held job ended {status}");
    }
    Ok(rate)
}

/// Slices [`jobs`] alternates between the queue and the store alone.
const SLICES: usize = 5;

/// What the store alone acknowledges (the queue's ceiling): `clients`
/// tasks each committing `template`'s row, one at a time, with no queue
/// and no job running, on a store of its own. `template` is a `sleep 0`
/// job as the queue stored it: its insert carries its end (the queue's
/// turn that admits it also ends it), so one commit of that whole row, log
/// and all, is what the queue's store does for each submission. The
/// queue's rate can approach this, never pass it.
struct StoreCeiling {
    store: kiln_store::StoreHandle,
    template: Option<kiln_store::JobRecord>,
    next: Arc<AtomicU64>,
    committed: usize,
    secs: f64,
    /// CPU of the whole process during its slices, and by thread.
    spent: cpu::Tally,
    _scratch: Scratch,
}

/// Where a commit of `store` waited on average (queued, applying,
/// syncing), how many commits shared a group and a sync, and one sync's
/// time under the load, as `{prefix}commit_queued` ...
/// `{prefix}fsync_under_load`.
fn commit_figures(prefix: &str, store: &kiln_store::StoreStats) -> Vec<Figure> {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let (queued, applying, syncing) = store.mean_stages();
    let commits = store.commits as f64;
    vec![
        Figure::new(&format!("{prefix}commit_queued"), ms(queued), "ms"),
        Figure::new(&format!("{prefix}commit_applying"), ms(applying), "ms"),
        Figure::new(&format!("{prefix}commit_syncing"), ms(syncing), "ms"),
        Figure::new(&format!("{prefix}commits_per_group"), commits / store.groups.max(1) as f64, "commits"),
        Figure::new(&format!("{prefix}commits_per_sync"), commits / store.syncs.max(1) as f64, "commits"),
        // One fsync of the WAL under this load, as the sync thread timed it:
        // a submitter waits for at least one, begun after its write.
        Figure::new(&format!("{prefix}fsync_under_load"), ms(store.mean_sync()), "ms"),
    ]
}

/// How the store alone spent its slices: where a commit waited, and CPU
/// per commit by thread; set beside the queue's figures, it shows what
/// bounds each.
struct CeilingSpent {
    store: kiln_store::StoreStats,
    cpu: cpu::Tally,
}

impl CeilingSpent {
    fn figures(&self) -> Vec<Figure> {
        let commits = self.store.commits as f64;
        let mut figures = commit_figures("jobs.ceiling_", &self.store);
        figures.push(Figure::new("jobs.ceiling_cpu_per_commit", self.cpu.seconds * 1e6 / commits.max(1.0), "us"));
        figures.extend(cpu::by_thread("jobs.ceiling", &self.cpu.threads, self.cpu.seconds, commits));
        figures
    }
}

impl StoreCeiling {
    fn open() -> anyhow::Result<StoreCeiling> {
        let scratch = Scratch::new("jobs-store");
        let store = kiln_store::StoreHandle::open_sqlite(&scratch.0.join("kiln.sqlite"))?;
        let next = Arc::new(AtomicU64::new(1));
        Ok(StoreCeiling {
            store,
            template: None,
            next,
            committed: 0,
            secs: 0.0,
            spent: cpu::Tally::default(),
            _scratch: scratch,
        })
    }

    /// One slice: `total` commits by `clients` tasks.
    async fn run(&mut self, clients: usize, total: usize) -> anyhow::Result<()> {
        let template = self.template.clone().context("the ceiling has no row to commit")?;
        let mark = cpu::mark();
        let t = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (store, next, template) = (self.store.clone(), self.next.clone(), template.clone());
                let count = total / clients + usize::from(c < total % clients);
                actix::spawn(async move {
                    for _ in 0..count {
                        let record = renumbered(&template, next.fetch_add(1, Ordering::Relaxed));
                        store.commit(vec![kiln_store::Write::InsertJob(record)]).await?;
                    }
                    Ok::<_, anyhow::Error>(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        self.secs += t.elapsed().as_secs_f64();
        self.spent.add_since(&mark);
        self.committed += total;
        Ok(())
    }

    /// The row it committed, its commits per second over every slice,
    /// and how it spent them; its store closes.
    fn finish(self) -> anyhow::Result<(kiln_store::JobRecord, f64, CeilingSpent)> {
        let template = self.template.context("no slice ran")?;
        let spent = CeilingSpent { store: self.store.stats(), cpu: self.spent };
        Ok((template, self.committed as f64 / self.secs.max(1e-9), spent))
    }
}

/// Jobs per second the store's one SQLite writer takes when nothing waits:
/// each `sleep 0` job inserted once, whole (`ended`: the queue's insert
/// carries the end made in the turn that admitted it), [`GROUP`] jobs to a
/// transaction as the store thread groups them under load, and no sync at
/// all. Every submission goes through this one writer (SQLite has one at a
/// time), on one core, so this is the most the queue could reach if nothing
/// else took any time.
fn writer_ceiling(ended: &kiln_store::JobRecord, total: usize) -> anyhow::Result<f64> {
    use kiln_store::sqlite::SqliteBackend;
    use kiln_store::{Backend, Write};
    const GROUP: usize = 64;
    let scratch = Scratch::new("jobs-writer");
    let mut backend = SqliteBackend::open(&scratch.0.join("kiln.sqlite"))?;
    // The caller syncs from now on, and this caller never does.
    let _log = backend.log_sync();
    let groups = total.div_ceil(GROUP) as u64;
    let group = GROUP as u64;
    let t = Instant::now();
    for g in 0..groups {
        let batches: Vec<_> = (1..=group).map(|i| vec![Write::InsertJob(renumbered(ended, g * group + i))]).collect();
        for result in backend.commit(&batches)? {
            result?;
        }
    }
    Ok((groups * group) as f64 / t.elapsed().as_secs_f64())
}

/// `template` as job `id`, its log lines with it.
fn renumbered(template: &kiln_store::JobRecord, id: u64) -> kiln_store::JobRecord {
    let id = JobId(id);
    let log = template.log.iter().map(|l| kiln_store::JobLogEntry { job: id, ..l.clone() }).collect();
    kiln_store::JobRecord { id, log, ..template.clone() }
}

/// The median time of a 4 KiB write and fdatasync in `dir`: the floor of
/// one durable commit on this disk.
fn fsync_ms(dir: &std::path::Path) -> anyhow::Result<f64> {
    use std::io::Write as _;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let page = [0u8; 4096];
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        file.write_all(&page)?;
        file.sync_data()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    std::fs::remove_file(&path)?;
    times.sort_by(f64::total_cmp);
    Ok(percentile(&times, 50.0))
}

// ----- lifecycle ------------------------------------------------------------------------

async fn lifecycle(args: BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let scratch = Scratch::new("lifecycle");
    let site = kiln_actors::start(scratch.config()).await?;
    let nodes = args.nodes.unwrap_or(10_000);
    create_nodes(&site, "lc", nodes).await?;
    let set = format!("lc[1-{nodes}]");
    let threads = cpu::thread_seconds();
    let store_before = site.store.stats();
    let t = Instant::now();
    for verb in [Verb::Manage, Verb::Provide, Verb::Deploy] {
        let op = Opcode::Node {
            nodes: set.clone(),
            op: Op::Verb(verb),
            fanout: Some(args.fanout.unwrap_or(1024)),
            wait: true,
        };
        let status = run_job(&site, vec![op]).await?;
        if status != JobStatus::Success {
            bail!("the {verb} job ended {status}");
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let threads = cpu::thread_seconds_since(&threads);
    let store = site.store.stats().since(&store_before);
    let active = site
        .supervisor
        .send(ListNodes { state: Some(kiln_store::ProvisionState::Active), ..Default::default() })
        .await??
        .len();
    if active != nodes {
        bail!("{active} of {nodes} nodes are active");
    }
    // manage, provide and deploy each commit two transitions per node.
    let transitions = nodes * 6;
    let mut figures = vec![
        Figure::new("lifecycle.nodes", nodes as f64, "nodes"),
        Figure::new("lifecycle.time", secs, "s"),
        Figure::new("lifecycle.transitions_per_s", transitions as f64 / secs, "transitions/s").at_least(20_000.0),
        // What a transition costs, to compare sizes by: how many commits
        // shared a transaction, and CPU per transition by thread.
        Figure::new("lifecycle.commits_per_group", store.commits as f64 / store.groups.max(1) as f64, "commits"),
    ];
    figures.extend(cpu::by_thread("lifecycle", &threads, threads.values().sum(), transitions as f64));
    Ok(figures)
}

// ----- admin ------------------------------------------------------------------------------

/// A site serving its admin socket from a thread and actix system of its
/// own, as `kiln serve` does, with `nodes` fake nodes named `prefix1`...
pub(super) struct Daemon {
    pub(super) socket: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    pub(super) fn start(scratch: &Scratch, prefix: &str, nodes: usize) -> anyhow::Result<Daemon> {
        let socket = scratch.0.join("kiln.sock");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let config = scratch.config();
        let admin_cfg = crate::admin::AdminConfig {
            socket: socket.clone(),
            mode: 0o600,
            allowed_uids: vec![crate::config::own_uid(), 0],
            max_frame: kiln_actors::codec::DEFAULT_MAX_FRAME,
            limits: crate::limits::Limits::default(),
            in_force: Default::default(),
        };
        let prefix = prefix.to_string();
        let thread = std::thread::spawn(move || {
            actix::System::new().block_on(async move {
                let site = kiln_actors::start(config).await?;
                create_nodes(&site, &prefix, nodes).await?;
                let listener = crate::admin::bind(&admin_cfg)?;
                let _ = ready_tx.send(());
                crate::admin::start(listener, admin_cfg, site, stop_rx).stopped().await;
                Ok::<(), anyhow::Error>(())
            })
        });
        // A million nodes take a minute or so to create in a debug build.
        if ready_rx.recv_timeout(Duration::from_secs(600)).is_err() {
            let _ = stop.send(true);
            return match thread.join() {
                Ok(Err(e)) => Err(e.context("the daemon did not start")),
                _ => bail!("the daemon did not start"),
            };
        }
        Ok(Daemon { socket, stop, thread })
    }

    pub(super) fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.thread.join().map_err(|_| anyhow::anyhow!("the daemon thread panicked"))?
    }
}

fn admin(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    use kiln_actors::codec;
    use kiln_actors::protocol::{PROTOCOL_VERSION, Request, Response};

    let scratch = Scratch::new("admin");
    let clients = args.clients.unwrap_or(32).max(1);
    let requests = args.requests.unwrap_or(200_000);
    let nodes = 1_000;
    let daemon = Daemon::start(&scratch, "adm", nodes)?;
    let socket = daemon.socket.clone();

    // The clients: another thread, another runtime, the real socket.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let t = Instant::now();
    let latencies: Vec<f64> = rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let socket = socket.clone();
                let count = requests / clients;
                tokio::spawn(async move {
                    let mut s = tokio::net::UnixStream::connect(&socket).await?;
                    codec::write_message(&mut s, &Request::Hello { version: PROTOCOL_VERSION, client: "bench".into() })
                        .await?;
                    let _: Option<Response> = codec::read_message(&mut s, codec::DEFAULT_MAX_FRAME).await?;
                    let mut lat = Vec::with_capacity(count);
                    for i in 0..count {
                        let req = Request::NodeShow { node: format!("adm{}", (c * 31 + i) % nodes + 1) };
                        let t = Instant::now();
                        codec::write_message(&mut s, &req).await?;
                        match codec::read_message::<_, Response>(&mut s, codec::DEFAULT_MAX_FRAME).await? {
                            Some(Response::NodeDetail(_)) => {}
                            other => anyhow::bail!("unexpected answer {other:?}"),
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok::<_, anyhow::Error>(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let secs = t.elapsed().as_secs_f64();
    daemon.stop()?;
    let mut latencies = latencies;
    latencies.sort_by(f64::total_cmp);
    Ok(vec![
        Figure::new("admin.clients", clients as f64, "clients"),
        Figure::new("admin.requests", latencies.len() as f64, "requests"),
        Figure::new("admin.requests_per_s", latencies.len() as f64 / secs, "requests/s").at_least(20_000.0),
        Figure::new("admin.p99", percentile(&latencies, 99.0), "ms").at_most(5.0),
    ])
}

// ----- scale --------------------------------------------------------------------------------

/// Set in the child that measures `scale`'s restart: the data dir to open.
const SCALE_RESTART_DIR: &str = "KILN_BENCH_SCALE_RESTART";

/// `scale`: create `--nodes` nodes, then restart the site on the same store
/// in a process of its own, as an operator's restart is: a new process's
/// RSS holds only what the restarted site needs, not what creating left
/// behind in the allocator.
fn scale(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let nodes = args.nodes.unwrap_or(100_000);
    if let Some(dir) = std::env::var_os(SCALE_RESTART_DIR) {
        return scale_restart(PathBuf::from(dir), nodes);
    }
    let scratch = Scratch::new("scale");
    let config = scratch.config();
    let t = Instant::now();
    // RSS while the site is up with every node: what the daemon holds.
    let rss_created = actix::System::new().block_on(async move {
        let site = kiln_actors::start(config).await?;
        create_nodes(&site, "sc", nodes).await?;
        Ok::<f64, anyhow::Error>(settled_rss_mb())
    })?;
    let create_secs = t.elapsed().as_secs_f64();

    let restarted =
        super::run_child_with("scale", args, &[(SCALE_RESTART_DIR, scratch.0.as_os_str())]).context("the restart")?;
    let figure = |name: &str| {
        restarted
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value)
            .with_context(|| format!("the restart reported no {name}"))
    };
    // The targets of the default size, and of a million (docs/performance.md).
    let (create_max, restart_max, rss_max) =
        if nodes >= 1_000_000 { (Some(8.0), 5.0, 1024.0) } else { (None, 3.0, 400.0) };
    let create = Figure::new("scale.create_time", create_secs, "s");
    let create = match create_max {
        Some(max) => create.at_most(max),
        None => create,
    };
    Ok(vec![
        Figure::new("scale.nodes", nodes as f64, "nodes"),
        create,
        Figure::new("scale.rss_after_create", rss_created, "MB").at_most(rss_max),
        Figure::new("scale.restart_to_ready", figure("scale.restart_to_ready")?, "s").at_most(restart_max),
        Figure::new("scale.rss_after_restart", figure("scale.rss_after_restart")?, "MB").at_most(rss_max),
        Figure::new("scale.rss_peak_restart", figure("scale.rss_peak_restart")?, "MB"),
    ])
}

/// The restart half of `scale`, in a process of its own: a new system on
/// the store at `dir`, until every node actor answers.
fn scale_restart(dir: PathBuf, nodes: usize) -> anyhow::Result<Vec<Figure>> {
    let config = SiteConfig { data_dir: dir, ..Scratch::defaults() };
    let t = Instant::now();
    let (listed, rss) = actix::System::new().block_on(async move {
        let site = kiln_actors::start(config).await?;
        let listed = site.supervisor.send(ListNodes::default()).await??.len();
        Ok::<(usize, f64), anyhow::Error>((listed, settled_rss_mb()))
    })?;
    let restart_secs = t.elapsed().as_secs_f64();
    if listed != nodes {
        bail!("after the restart {listed} of {nodes} nodes answered");
    }
    Ok(vec![
        Figure::new("scale.restart_to_ready", restart_secs, "s"),
        Figure::new("scale.rss_after_restart", rss, "MB"),
        Figure::new("scale.rss_peak_restart", peak_rss_mb(), "MB"),
    ])
}

// ----- power-sync ---------------------------------------------------------------------

async fn power_sync(args: BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let scratch = Scratch::new("power-sync");
    let mut config = scratch.config();
    config.periodic.enabled = false;
    let concurrency = args.fanout.map(|f| f as usize).unwrap_or(kiln_actors::periodic::DEFAULT_POWER_SYNC_CONCURRENCY);
    config.periodic.power_sync_concurrency = concurrency;
    let nodes = args.nodes.unwrap_or(100_000);
    let latency = args.latency_ms.unwrap_or(100);
    // Power sync reads managed nodes only (a node in enroll is skipped, as
    // in Ironic), so the inventory is written to the store as manageable
    // before the site starts, as a restarted site would find it.
    let store = kiln_store::StoreHandle::open_sqlite(&config.database_path())?;
    let now = chrono::Utc::now();
    let mut from = 1;
    while from <= nodes {
        let to = (from + 9_999).min(nodes);
        let batch = (from..=to)
            .map(|i| {
                let mut r = kiln_store::NodeRecord::enroll(format!("ps{i}"), kiln_store::DriverKind::Fake, now);
                r.provision_state = kiln_store::ProvisionState::Manageable;
                r.driver_info = [("latency_ms".to_string(), latency.to_string())].into();
                kiln_store::Write::InsertNode(r.into())
            })
            .collect();
        store.commit(batch).await?;
        from = to + 1;
    }
    let site = kiln_actors::start_with_store(config.clone(), store).await?;
    let router = site.router();
    let cpu = cpu::process_seconds();
    let t = Instant::now();
    let summary =
        kiln_actors::periodic::power_sync(router, config.periodic.clone()).await.map_err(anyhow::Error::msg)?;
    let secs = t.elapsed().as_secs_f64();
    let cores = (cpu::process_seconds() - cpu) / secs;
    if !summary.contains(&format!("{nodes} updated")) {
        bail!("the cycle did not read every node: {summary}");
    }
    Ok(vec![
        Figure::new("power_sync.nodes", nodes as f64, "nodes"),
        Figure::new("power_sync.bmc_latency", latency as f64, "ms"),
        Figure::new("power_sync.concurrency", concurrency as f64, "reads"),
        Figure::new("power_sync.floor", nodes as f64 * latency as f64 / 1000.0 / concurrency as f64, "s"),
        // 30 s at the default 100,000 nodes; 120 s at a million (#26's target).
        Figure::new("power_sync.cycle", secs, "s").at_most(if nodes >= 1_000_000 { 120.0 } else { 30.0 }),
        Figure::new("power_sync.cpu", cores, "cores").at_most(1.0),
    ])
}

// ----- exec ------------------------------------------------------------------------------

/// 1,000 nodes, exec worker, `true`, fanout 64: docs/performance.md compares the wall
/// time with `clush -R exec -w n[1-1000] -f 64 true` (scripts/bench-vs-clush.sh
/// runs both).
fn exec(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    use kiln_actors::exec::{ExecSpec, Target, Worker};
    let nodes = args.nodes.unwrap_or(1_000);
    let fanout = args.fanout.map(|f| f as usize).unwrap_or(64);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let spec = ExecSpec {
        worker: Worker::Exec,
        command: "true".into(),
        fanout,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Some(Duration::from_secs(60)),
    };
    let targets: Vec<Target> =
        (1..=nodes).map(|i| Target { node: format!("n{i}"), address: format!("n{i}") }).collect();
    let t = Instant::now();
    let outcomes = rt.block_on(kiln_actors::exec::run(&spec, targets));
    let secs = t.elapsed().as_secs_f64();
    let failed = outcomes.iter().filter(|o| o.exit_code != 0).count();
    if failed > 0 {
        bail!("{failed} of {nodes} commands failed");
    }
    Ok(vec![
        Figure::new("exec.nodes", nodes as f64, "nodes"),
        Figure::new("exec.fanout", fanout as f64, "commands"),
        Figure::new("exec.time", secs, "s"),
        Figure::new("exec.commands_per_s", nodes as f64 / secs, "commands/s"),
        Figure::new("exec.peak_rss", peak_rss_mb(), "MB"),
    ])
}
