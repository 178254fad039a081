//! Running opcodes: the queue actor's side of a running job.
//!
//! The core ([`super::core`]) says which opcode starts and what its results
//! make of the job; this module does the work between: it commits a start
//! that must be durable, then sleeps, fans a node operation or a command
//! out over a node set, or holds nodes, and hands the results back to the
//! core. The fanout of an opcode that names none is the site's
//! `default_fanout` as it is when the opcode starts, whichever way the
//! opcode came (a CLI verb or a job file).

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use kiln_store::JobId;
use tracing::Instrument;

use super::actor::JobQueue;
use super::core::{OpStart, job_span};
use super::model::*;
use crate::KilnError;
use crate::node::Op;

/// Who a job is when it holds nodes: what `NodeLocked` shows others
/// ("held by job 12").
pub(super) fn holder_name(id: JobId) -> String {
    format!("job {id}")
}

impl JobQueue {
    /// Runs opcode `idx` of a running job, then the next.
    pub(super) fn execute_opcode(&mut self, id: JobId, idx: usize, ctx: &mut Context<Self>) {
        let mut effects = Vec::new();
        let start = self.core.start_op(id, idx, self.now(), &mut effects);
        self.apply(effects, ctx);
        let Some(OpStart { opcode, durable_start }) = start else { return };
        match durable_start {
            // Durable before it acts: after a crash the job is `error`, never
            // run twice. A start that could not be stored does not act at all.
            Some(line) => self.commit_job(id, line, ctx, move |act, ctx, failure| match failure {
                None => act.execute(id, idx, opcode, ctx),
                Some(why) => {
                    let total = act.core.active.get(&id).map_or(0, |j| j.view.ops.len());
                    let error = format!("opcode {}/{total} did not run: its start could not be stored: {why}", idx + 1);
                    act.finish(id, kiln_store::JobStatus::Error, Some(error), ctx)
                }
            }),
            None => self.execute(id, idx, opcode, ctx),
        }
    }

    fn execute(&mut self, id: JobId, idx: usize, opcode: Opcode, ctx: &mut Context<Self>) {
        // A zero sleep ends in this turn: no timer, no task, nothing to
        // cancel or report progress on, and the job's end goes to the store
        // with its insert when this is the turn that admitted it.
        if let Opcode::Sleep { seconds } = opcode
            && seconds <= 0.0
        {
            return self.op_done(id, idx, Vec::new(), None, ctx);
        }
        let Some(job) = self.core.active.get_mut(&id) else { return };
        let control = job.shell.control.clone();
        control.done.store(0, Ordering::Relaxed);
        let router = self.router.clone();
        let span = job_span(id);
        let default_fanout = router.registry.live.default_fanout();
        let fanout_of = |fanout: Option<u32>| fanout.map_or(default_fanout, |f| f as usize).max(1);
        match opcode {
            Opcode::Sleep { seconds } => {
                let clock = self.clock.clone();
                let wait = async move { control.sleep_unless_canceled(Duration::from_secs_f64(seconds), &clock).await }
                    .instrument(span);
                ctx.spawn(wait.into_actor(self).map(move |canceled, act, ctx| {
                    let error = canceled.then(|| "canceled during the sleep".to_string());
                    act.op_done(id, idx, Vec::new(), error, ctx)
                }));
            }
            Opcode::Exec { nodes, mut spec, fanout } => {
                spec.fanout = fanout_of(fanout);
                let fut = async move {
                    let targets = crate::exec::targets(&router, &nodes).await?;
                    Ok::<_, KilnError>(crate::exec::run(&spec, targets).await)
                }
                .instrument(span);
                ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
                    Ok(outcomes) => {
                        let results = outcomes.iter().map(NodeResult::of_exec).collect();
                        act.op_done(id, idx, results, None, ctx)
                    }
                    Err(e) => act.op_done(id, idx, Vec::new(), Some(e.to_string()), ctx),
                }));
            }
            Opcode::Hold { nodes: expr } => {
                // Nodes other members run are looked up in the store, once
                // the opcode has started, and held by their owners.
                let local = match router.registry.resolve(&expr) {
                    Ok(n) => Some(n),
                    Err(KilnError::NotFound(_)) if router.registry.shared.is_some() => None,
                    Err(e) => return self.op_done(id, idx, Vec::new(), Some(e.to_string()), ctx),
                };
                job.shell.progress_total = local.as_ref().map_or(0, |n| n.len() as u64);
                let fut = async move {
                    let nodes = match local {
                        Some(nodes) => nodes,
                        None => router.resolve(&expr).await?,
                    };
                    let ids: Vec<_> = nodes.iter().map(|(node, _)| *node).collect();
                    let holder = holder_name(id);
                    let results = router
                        .fan_out_with(nodes, default_fanout, &control, |r, node| {
                            let holder = holder.clone();
                            async move { r.hold(node, &holder).await }
                        })
                        .await;
                    Ok::<_, KilnError>((ids, results))
                }
                .instrument(span);
                ctx.spawn(fut.into_actor(self).map(move |held, act, ctx| match held {
                    // Every node held is remembered, even when others failed:
                    // the job's end releases them all. The results are in
                    // the nodes' order.
                    Ok((ids, results)) => {
                        let held = ids.iter().zip(&results).filter(|(_, r)| r.ok).map(|(node, _)| *node);
                        act.core.held(id, held);
                        act.op_done(id, idx, results, None, ctx)
                    }
                    Err(e) => act.op_done(id, idx, Vec::new(), Some(e.to_string()), ctx),
                }));
            }
            Opcode::Node { nodes: expr, op, fanout, wait } => {
                // Nodes other members run are looked up in the store, once
                // the opcode has started.
                let local = match router.registry.resolve(&expr) {
                    Ok(n) => Some(n),
                    Err(KilnError::NotFound(_)) if router.registry.shared.is_some() => None,
                    Err(e) => return self.op_done(id, idx, Vec::new(), Some(e.to_string()), ctx),
                };
                job.shell.progress_total = local.as_ref().map_or(0, |n| n.len() as u64);
                let fanout = fanout_of(fanout);
                let fut = async move {
                    let nodes = match local {
                        Some(nodes) => nodes,
                        None => router.resolve(&expr).await?,
                    };
                    // As the job: a node the job holds lets it in.
                    let holder = holder_name(id);
                    let mut results = router
                        .fan_out_with(nodes, fanout, &control, |r, node| {
                            let (op, holder): (Op, &str) = (op.clone(), &holder);
                            // With `wait`, a node's result is its settled
                            // state; without, the state its task started in.
                            async move { r.run_for(node, op, wait, Some(holder)).await }
                        })
                        .await;
                    for result in &mut results {
                        // A node that failed shows the state it is in now
                        // (its failed state, or where a lock kept it), not
                        // `-`: a shared read, answered at once.
                        if !result.ok
                            && result.provision_state.is_none()
                            && result.error_kind() != Some("canceled")
                            && let Some((node, _)) = router.registry.find(&result.node)
                            && let Ok(now) = router.show(node).await
                        {
                            result.provision_state = Some(now.provision_state.to_string());
                            result.power_state = now.power_state.map(|p| p.to_string());
                        }
                    }
                    Ok::<_, KilnError>(results)
                }
                .instrument(span);
                ctx.spawn(fut.into_actor(self).map(move |results, act, ctx| match results {
                    Ok(results) => act.op_done(id, idx, results, None, ctx),
                    Err(e) => act.op_done(id, idx, Vec::new(), Some(e.to_string()), ctx),
                }));
            }
        }
    }

    /// An opcode ended: the core records its results; the job goes on to
    /// its next opcode or ends.
    fn op_done(
        &mut self,
        id: JobId,
        idx: usize,
        results: Vec<NodeResult>,
        error: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(job) = self.core.active.get_mut(&id) {
            job.shell.progress_total = 0;
        }
        let mut effects = Vec::new();
        let next = self.core.op_done(id, idx, results, error, self.now(), &mut effects);
        self.apply(effects, ctx);
        if let Some(next) = next {
            self.execute_opcode(id, next, ctx);
        }
    }
}
