//! The built-in periodic tasks (docs/jobs.md, "Built-in tasks"), as [`PeriodicTask`]s
//! for the [`crate::scheduler::Scheduler`].
//!
//! Power sync reads every BMC in parallel: as many at once as the BMCs and
//! this process sustain ([`crate::adaptive`]), up to `power_sync_concurrency`.
//! At 100 ms per read a fixed 256 in flight took about 40 s over 100,000
//! nodes; the adaptive number grows past that while latency holds, so the
//! default settings finish such a cycle well inside its 60 s spacing, where
//! Ironic's 8 serial workers cannot finish.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures::stream::{self, FuturesUnordered, StreamExt};
use kiln_store::{NodeRecord, StoreHandle};

use crate::adaptive::AdaptiveLimit;
use crate::fsm::{self, StateClass};
use crate::jobs::{ArchiveOld, JobQueue};
use crate::metrics::{Metrics, SyncResult};
use crate::node::core::upkeep::{power_failed, sync_skip};
use crate::node::rest::Routed;
use crate::node::upkeep::{ExpireWait, RecoverPowerFailure, SyncOutcome, SyncPower, WaitTimeouts};
use crate::scheduler::{PeriodicTask, TaskResult};
use crate::supervisor::{Router, send_to_node_or};

/// The names of the built-in tasks, in the order they are registered.
pub const BUILTIN_TASKS: [&str; 5] =
    ["power_sync", "power_failure_recovery", "wait_timeouts", "job_autoarchive", "store_maintenance"];

/// The most BMC reads a power sync keeps in flight, by default.
pub const DEFAULT_POWER_SYNC_CONCURRENCY: usize = 2048;

/// Where a power sync's number in flight starts before it adapts.
const POWER_SYNC_INITIAL: usize = 64;

/// One task's own settings (`[periodic.power_sync]` in the config), over
/// the site-wide ones: each unset field keeps the site-wide value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskSettings {
    pub enabled: Option<bool>,
    /// `Some(None)`: disabled by its interval (a negative interval, as a
    /// negative spacing disables a task in Nova); `Some(Some(d))`: run every
    /// `d` (zero: every tick of the scheduler).
    pub interval: Option<Option<Duration>>,
    /// Run once as soon as the site starts, then every interval.
    pub run_immediately: Option<bool>,
}

/// The settings of the built-in tasks.
#[derive(Clone, Debug)]
pub struct PeriodicConfig {
    /// Run the built-in tasks at all (off: only `kiln periodic run`).
    pub enabled: bool,
    pub power_sync_interval: Duration,
    pub power_sync_concurrency: usize,
    pub power_state_sync_max_retries: u32,
    pub force_power_state_during_sync: bool,
    pub power_failure_recovery_interval: Duration,
    pub wait_timeouts_interval: Duration,
    /// A rescue or service wait's timeout.
    pub wait_timeout: Duration,
    /// How long a node waits in `wait call-back`, `clean wait` and
    /// `inspect wait` for its booted system's callback.
    pub deploy_callback_timeout: Duration,
    pub clean_callback_timeout: Duration,
    pub inspect_wait_timeout: Duration,
    pub job_autoarchive_interval: Duration,
    pub job_archive_age: Duration,
    pub store_maintenance_interval: Duration,
    /// Per-task settings by task name (a name of [`BUILTIN_TASKS`]).
    pub tasks: std::collections::BTreeMap<String, TaskSettings>,
}

impl PeriodicConfig {
    /// A built-in task with its interval, as this config sets it: the
    /// site-wide `enabled` flag and the task's own settings applied.
    fn task<F, Fut>(&self, name: &str, interval: Duration, f: F) -> PeriodicTask
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = TaskResult> + Send + 'static,
    {
        let own = self.tasks.get(name).cloned().unwrap_or_default();
        let (spacing, by_interval) = match own.interval {
            None => (interval, true),
            Some(Some(d)) => (d, true),
            // Disabled by its interval; the spacing shown is the default.
            Some(None) => (interval, false),
        };
        PeriodicTask {
            name: name.into(),
            spacing,
            run_immediately: own.run_immediately.unwrap_or(false),
            enabled: self.enabled && by_interval && own.enabled.unwrap_or(true),
            run: Arc::new(move || Box::pin(f())),
        }
    }
}

impl Default for PeriodicConfig {
    fn default() -> Self {
        PeriodicConfig {
            enabled: true,
            power_sync_interval: Duration::from_secs(60),
            power_sync_concurrency: DEFAULT_POWER_SYNC_CONCURRENCY,
            power_state_sync_max_retries: 3,
            force_power_state_during_sync: false,
            power_failure_recovery_interval: Duration::from_secs(300),
            wait_timeouts_interval: Duration::from_secs(60),
            wait_timeout: Duration::from_secs(1800),
            deploy_callback_timeout: Duration::from_secs(1800),
            clean_callback_timeout: Duration::from_secs(1800),
            inspect_wait_timeout: Duration::from_secs(1800),
            job_autoarchive_interval: Duration::from_secs(3600),
            job_archive_age: Duration::from_secs(7 * 24 * 3600),
            store_maintenance_interval: Duration::from_secs(600),
            tasks: Default::default(),
        }
    }
}

/// One power sync cycle over every node.
pub async fn power_sync(router: Router, cfg: PeriodicConfig) -> TaskResult {
    power_sync_counted(router, cfg, None).await
}

/// [`power_sync`], counting the cycle's duration and findings in `metrics`.
pub async fn power_sync_counted(router: Router, cfg: PeriodicConfig, metrics: Option<Arc<Metrics>>) -> TaskResult {
    let began = std::time::Instant::now();
    let cycle_began = router.clock.now();
    let nodes = router.registry.all();
    let total = nodes.len();
    let force = cfg.force_power_state_during_sync;
    let max_retries = cfg.power_state_sync_max_retries;
    let (outcomes, limit) = sweep(nodes.into_iter().map(|(id, _)| id), cfg.power_sync_concurrency, |id| {
        let r = router.clone();
        async move {
            // A node at rest that power sync skips is skipped without its actor.
            let skipped = |record: &NodeRecord| sync_skip(record, false).map(|why| SyncOutcome::Skipped(why.into()));
            send_to_node_or(&r.supervisor, &r.registry, id, || SyncPower { force, max_retries }, skipped)
                .await
                .unwrap_or_else(|e| SyncOutcome::Skipped(e.to_string()))
        }
    })
    .await;
    tracing::debug!(nodes = total, in_flight_at_end = limit, "power sync cycle");
    let count = |f: fn(&SyncOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    if let Some(m) = metrics {
        m.power_sync_cycle(began.elapsed());
        m.power_sync_oldest_verified(oldest_verified(&outcomes, cycle_began));
        for o in &outcomes {
            m.power_sync_nodes(
                match o {
                    SyncOutcome::InSync => SyncResult::InSync,
                    SyncOutcome::Updated { .. } => SyncResult::Updated,
                    SyncOutcome::Forced { .. } => SyncResult::Forced,
                    SyncOutcome::Failed { .. } => SyncResult::Failed,
                    SyncOutcome::Skipped(_) | SyncOutcome::BackedOff { .. } => SyncResult::Skipped,
                },
                1,
            );
        }
    }
    Ok(format!(
        "{total} nodes: {} in sync, {} updated, {} forced, {} failed, {} skipped, {} backed off (BMC unreachable)",
        count(|o| matches!(o, SyncOutcome::InSync)),
        count(|o| matches!(o, SyncOutcome::Updated { .. })),
        count(|o| matches!(o, SyncOutcome::Forced { .. })),
        count(|o| matches!(o, SyncOutcome::Failed { .. })),
        count(|o| matches!(o, SyncOutcome::Skipped(_))),
        count(|o| matches!(o, SyncOutcome::BackedOff { .. })),
    ))
}

/// Reads every node in `nodes` with `read`, keeping as many in flight as
/// the adaptive limit allows (at most `max`); answers every outcome and the
/// limit at the end.
async fn sweep<I, F, Fut>(mut nodes: I, max: usize, read: F) -> (Vec<SyncOutcome>, usize)
where
    I: Iterator<Item = kiln_store::NodeId>,
    F: Fn(kiln_store::NodeId) -> Fut,
    Fut: std::future::Future<Output = SyncOutcome>,
{
    let mut limit = AdaptiveLimit::new(POWER_SYNC_INITIAL, 1, max);
    let mut in_flight = FuturesUnordered::new();
    let mut outcomes = Vec::with_capacity(nodes.size_hint().0);
    loop {
        while in_flight.len() < limit.current() {
            let Some(id) = nodes.next() else { break };
            let read = read(id);
            in_flight.push(async move {
                let began = std::time::Instant::now();
                let outcome = read.await;
                (outcome, began.elapsed())
            });
        }
        let Some((outcome, latency)) = in_flight.next().await else { break };
        match &outcome {
            SyncOutcome::InSync | SyncOutcome::Updated { .. } | SyncOutcome::Forced { .. } => {
                limit.record(latency, false)
            }
            SyncOutcome::Failed { .. } => limit.record(latency, true),
            // No BMC was asked: nothing learned about the BMCs.
            SyncOutcome::Skipped(_) | SyncOutcome::BackedOff { .. } => {}
        }
        outcomes.push(outcome);
    }
    (outcomes, limit.current())
}

/// The oldest confirmation of a power state among the nodes a cycle synced
/// (read, or failed to read): a node read now was confirmed at the cycle's
/// start at the latest; one that failed or was backed off, when its BMC last
/// confirmed it (never: not counted; `node list --stale` shows it). `None`
/// when the cycle synced no node.
pub fn oldest_verified(outcomes: &[SyncOutcome], began: kiln_store::Timestamp) -> Option<kiln_store::Timestamp> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            SyncOutcome::InSync | SyncOutcome::Updated { .. } | SyncOutcome::Forced { .. } => Some(began),
            SyncOutcome::Failed { verified_at, .. } | SyncOutcome::BackedOff { verified_at, .. } => *verified_at,
            SyncOutcome::Skipped(_) => None,
        })
        .min()
}

/// Sends a yes/no upkeep message to every node; answers how many said yes.
async fn every_node<M, F>(
    router: &Router,
    concurrency: usize,
    make: F,
    at_rest: fn(&NodeRecord) -> Option<bool>,
) -> usize
where
    M: actix::Message<Result = bool> + Send + 'static,
    crate::node::NodeActor: actix::Handler<Routed<M>>,
    F: Fn() -> M + Clone,
{
    stream::iter(router.registry.all())
        .map(|(id, _)| {
            let (r, make) = (router.clone(), make.clone());
            async move { send_to_node_or(&r.supervisor, &r.registry, id, make, at_rest).await.unwrap_or(false) }
        })
        .buffer_unordered(concurrency.max(1))
        .filter(|yes| futures::future::ready(*yes))
        .count()
        .await
}

/// Fails every node that has waited longer than its timeout in a wait
/// state (the `wait_timeouts` task); returns how many. A node at rest is
/// woken only if it is in a wait state: one adopted at start-up may be.
pub async fn expire_waits(router: &Router, timeouts: WaitTimeouts) -> usize {
    let waits = |record: &NodeRecord| (fsm::class(record.provision_state) != StateClass::Wait).then_some(false);
    every_node(router, 1024, move || ExpireWait { timeouts }, waits).await
}

/// The built-in tasks.
pub fn builtin(
    router: Router,
    jobs: Addr<JobQueue>,
    store: StoreHandle,
    cfg: PeriodicConfig,
    metrics: Arc<Metrics>,
) -> Vec<PeriodicTask> {
    let (r1, c1) = (router.clone(), cfg.clone());
    let (r2, c2) = (router.clone(), cfg.clone());
    let (r3, c3) = (router, cfg.clone());
    let age = cfg.job_archive_age;
    vec![
        cfg.task("power_sync", cfg.power_sync_interval, move || {
            power_sync_counted(r1.clone(), c1.clone(), Some(metrics.clone()))
        }),
        cfg.task("power_failure_recovery", cfg.power_failure_recovery_interval, move || {
            let (r, c) = (r2.clone(), c2.clone());
            async move {
                let failed = |record: &NodeRecord| (!power_failed(record)).then_some(false);
                let n = every_node(&r, c.power_sync_concurrency, || RecoverPowerFailure, failed).await;
                Ok(format!("{n} nodes recovered"))
            }
        }),
        cfg.task("wait_timeouts", cfg.wait_timeouts_interval, move || {
            let r = r3.clone();
            let timeouts = WaitTimeouts {
                deploy_callback: c3.deploy_callback_timeout,
                clean_callback: c3.clean_callback_timeout,
                inspect_wait: c3.inspect_wait_timeout,
                other: c3.wait_timeout,
            };
            async move {
                let n = expire_waits(&r, timeouts).await;
                Ok(format!("{n} nodes timed out"))
            }
        }),
        cfg.task("job_autoarchive", cfg.job_autoarchive_interval, move || {
            let jobs = jobs.clone();
            async move {
                match jobs.send(ArchiveOld { age }).await {
                    Ok(Ok(n)) => Ok(format!("{n} jobs archived")),
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => Err("the job queue is not running".into()),
                }
            }
        }),
        cfg.task("store_maintenance", cfg.store_maintenance_interval, move || {
            let store = store.clone();
            async move {
                store.read(|b| b.checkpoint()).await.map_err(|e| crate::error::error_chain(&e))?;
                Ok("WAL checkpointed".into())
            }
        }),
    ]
}
