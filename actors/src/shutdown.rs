//! A graceful shutdown of a site (docs/reliability.md, "SIGTERM and the
//! grace period": stop accepting, let running opcodes finish up to a grace
//! period, then fail them as on restart).
//!
//! [`shutdown`] stops the scheduler and the job queue from starting anything,
//! waits for the running opcodes and node tasks to end (at most the grace
//! period), then abandons what still runs exactly as the restart rule would
//! after a crash (a running job ends `error`, a node mid-task is released
//! into its failed state with `last_error` saying why), and ends with a WAL
//! checkpoint, so everything is committed when it returns. Stopping the
//! admin socket first is the caller's part; an embedding application calls
//! this before it stops its actix system.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use crate::Site;
use crate::jobs::{AbandonRunning, GetQueueInfo, StopStarting};
use crate::node::Abandon;
use crate::scheduler::StopScheduler;
use crate::supervisor::{GetStatus, send_to_node_or};

/// How often the work still running is counted while waiting.
const POLL: Duration = Duration::from_millis(100);

/// How long abandoned jobs may take to commit their end.
const ABANDON_COMMIT: Duration = Duration::from_secs(30);

/// What a shutdown did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Jobs and node tasks running when the shutdown began.
    pub running_jobs: usize,
    pub busy_nodes: usize,
    /// Everything running ended within the grace period.
    pub finished_in_grace: bool,
    /// Jobs ended `error` because the grace period ran out.
    pub jobs_abandoned: usize,
    /// Nodes released into their failed state because it ran out.
    pub nodes_released: usize,
}

/// Jobs running and nodes held, now.
async fn busy(site: &Site) -> (usize, usize) {
    let jobs = site.jobs.send(GetQueueInfo).await.map(|q| q.running).unwrap_or(0);
    let nodes = site.supervisor.send(GetStatus).await.map(|s| s.reserved).unwrap_or(0);
    (jobs, nodes)
}

/// Shuts the site's work down within `grace`; `cut_short` resolving (a second
/// signal) ends the grace period at once.
pub async fn shutdown(site: &Site, grace: Duration, cut_short: impl Future<Output = ()>) -> ShutdownReport {
    let mut report = ShutdownReport::default();
    let _ = site.scheduler.send(StopScheduler).await;
    let _ = site.jobs.send(StopStarting { why: "the daemon is shutting down".into() }).await;
    (report.running_jobs, report.busy_nodes) = busy(site).await;
    tracing::info!(
        jobs = report.running_jobs,
        nodes = report.busy_nodes,
        grace_s = grace.as_secs_f64(),
        "waiting for running work to end"
    );
    let deadline = Instant::now() + grace;
    tokio::pin!(cut_short);
    let mut cut = false;
    loop {
        let (jobs, nodes) = busy(site).await;
        if jobs == 0 && nodes == 0 {
            report.finished_in_grace = true;
            break;
        }
        if cut || Instant::now() >= deadline {
            break;
        }
        let next = (Instant::now() + POLL).min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = &mut cut_short, if !cut => {
                tracing::warn!("second signal: ending the grace period now");
                cut = true;
            }
        }
    }
    if !report.finished_in_grace {
        let grace_text = format!("{} s", grace.as_secs_f64());
        let job_why = format!("daemon stopped while running (the shutdown grace period of {grace_text} ran out)");
        let node_why = format!("daemon stopped (the shutdown grace period of {grace_text} ran out)");
        report.jobs_abandoned = site.jobs.send(AbandonRunning { why: job_why }).await.unwrap_or(0);
        let router = site.router();
        // A node started from now on is closed from the start; one at rest
        // has nothing to abandon.
        site.registry.close(&node_why);
        let nodes = site.registry.all();
        report.nodes_released = futures::stream::iter(nodes.into_iter().map(|(id, _)| {
            let why = node_why.clone();
            let router = router.clone();
            async move {
                send_to_node_or(
                    &router.supervisor,
                    &router.registry,
                    id,
                    || Abandon { why: why.clone() },
                    |_| Some(false),
                )
                .await
                .unwrap_or(false)
            }
        }))
        .buffer_unordered(1024)
        .filter(|released| futures::future::ready(*released))
        .count()
        .await;
        let until = Instant::now() + ABANDON_COMMIT;
        while site.jobs.send(GetQueueInfo).await.map(|q| q.running).unwrap_or(0) > 0 && Instant::now() < until {
            tokio::time::sleep(POLL).await;
        }
        tracing::warn!(
            jobs = report.jobs_abandoned,
            nodes = report.nodes_released,
            "grace period ran out: running work failed as on restart"
        );
    }
    if let Err(e) = site.store.read(|b| b.checkpoint()).await {
        tracing::warn!(error = %e, "final WAL checkpoint failed; the next start replays the WAL");
    }
    report
}
