//! Embedding a kiln site in your own actix application.
//!
//! Starts a site on a temporary data dir, subscribes an actor of its own to
//! the event stream, enrols eight fake nodes and drives them to `active` by
//! sending the same typed messages the `kiln` CLI sends over the socket;
//! then runs a durable job through the queue and follows its log, adds a
//! periodic task of its own, and changes a setting of the running site.
//! docs/embedding.md walks through it.
//!
//! Run: `cargo run --example embed`

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use kiln_actors::jobs::{GetJob, Opcode, SubmitJob, WaitJobChange};
use kiln_actors::scheduler::{PeriodicTask, RegisterPeriodic, RunPeriodic};
use kiln_actors::{BulkAction, CreateNodes, ListNodes, NewNode, NodeEvent, Op, SiteConfig, Subscribe, Verb};

/// An actor of the embedding application that watches the site's events.
struct Watcher {
    seen: usize,
}

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Handler<NodeEvent> for Watcher {
    type Result = ();
    fn handle(&mut self, e: NodeEvent, _: &mut Context<Self>) {
        self.seen += 1;
        if e.node_name == "rack1-n1" {
            println!("event #{}: {} {:?} {} -> {}", e.serial, e.node_name, e.kind, e.action, e.provision_state);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("kiln-embed-{}", std::process::id()));
    let result = actix::System::new().block_on(async {
        // 1. Start a site: the store, the supervisor, the job queue, the
        //    scheduler and the event bus, inside this actix system.
        let config = SiteConfig { data_dir: dir.clone(), ..Default::default() };
        let site = kiln_actors::start(config.clone()).await?;

        // 2. Watch every committed change with an actor of our own.
        let watcher = Watcher { seen: 0 }.start();
        site.events.send(Subscribe(watcher.recipient())).await?;

        // 3. Enrol nodes and drive them, as `kiln node create` and
        //    `kiln node manage|provide|deploy NODESET --wait` do.
        let nodes = (1..=8)
            .map(|i| NewNode { name: format!("rack1-n{i}"), driver: "fake".into(), ..Default::default() })
            .collect();
        site.supervisor.send(CreateNodes(nodes)).await??;

        for verb in [Verb::Manage, Verb::Provide, Verb::Deploy] {
            let results = site
                .supervisor
                .send(BulkAction { nodes: "rack1-n[1-8]".into(), op: Op::Verb(verb), wait: true, fanout: 4 })
                .await??;
            let ok = results.iter().filter(|r| r.ok).count();
            println!("{verb}: {ok}/{} nodes ok", results.len());
        }
        // The site's metrics are plain atomics an application can read or
        // render for its own Prometheus endpoint.
        let active = site.metrics.nodes_in(kiln_store::ProvisionState::Active);
        let (calls, failed) = site.metrics.bmc_totals(kiln_store::DriverKind::Fake);
        println!("metrics: {active} nodes active; {calls} BMC calls, {failed} failed");

        // 4. A durable job, as `kiln job submit`: acknowledged once it is
        //    committed, then followed through its log with the long poll.
        let job = SubmitJob {
            ops: vec![Opcode::Node {
                nodes: "rack1-n[1-4]".into(),
                op: Op::Power(kiln_drivers::PowerAction::Off),
                fanout: None,
                wait: true,
            }],
            priority: 0,
            depends: vec![],
        };
        let id = site.jobs.send(job).await??;
        let mut serial = 0;
        loop {
            let change = site
                .jobs
                .send(WaitJobChange { job: id, after_serial: serial, timeout: Duration::from_secs(10) })
                .await??;
            for line in &change.log {
                println!("job {id}: {}", line.message);
                serial = line.serial;
            }
            if change.status.is_finished() {
                break;
            }
        }
        println!("job {id}: {}", site.jobs.send(GetJob(id)).await??.status);

        // 5. A periodic task of the application, run by kiln's scheduler
        //    beside the built-in ones (and listed by `kiln periodic list`).
        let supervisor = site.supervisor.clone();
        let count_active = PeriodicTask {
            name: "count_active".into(),
            spacing: Duration::from_secs(300),
            run_immediately: false,
            enabled: true,
            run: Arc::new(move || {
                let supervisor = supervisor.clone();
                Box::pin(async move {
                    let list = ListNodes { state: Some(kiln_store::ProvisionState::Active), ..Default::default() };
                    match supervisor.send(list).await {
                        Ok(Ok(nodes)) => Ok(format!("{} nodes active", nodes.len())),
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err("the supervisor stopped".into()),
                    }
                })
            }),
        };
        site.scheduler.send(RegisterPeriodic(count_active)).await??;
        let run = site.scheduler.send(RunPeriodic("count_active".into())).await??;
        println!("periodic {}: {}", run.name, run.last_result.unwrap_or_default());

        // 6. Change a live setting of the running site (what `kiln serve`
        //    does on SIGHUP): exclusive requests now wait for busy nodes.
        site.reconfigure(&SiteConfig { lock_wait: Duration::from_secs(5), ..config }).await?;
        println!("lock_wait is now {:?}", site.live.lock_wait());
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
