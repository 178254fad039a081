//! Embedding a kiln site in your own actix application.
//!
//! Starts a site on a temporary data dir, subscribes an actor of its own to
//! the event stream, enrols eight fake nodes and drives them to `active` by
//! sending the same typed messages the `kiln` CLI sends over the socket.
//!
//! Run: `cargo run --example embed`

use actix::prelude::*;
use kiln_actors::{BulkAction, CreateNodes, NewNode, NodeEvent, Op, SiteConfig, Subscribe, Verb};

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
        let config = SiteConfig { data_dir: dir.clone(), ..Default::default() };
        let site = kiln_actors::start(config).await?;
        let watcher = Watcher { seen: 0 }.start();
        site.events.send(Subscribe(watcher.recipient())).await?;

        let nodes = (1..=8)
            .map(|i| NewNode { name: format!("rack1-n{i}"), driver: "fake".into(), ..Default::default() })
            .collect();
        site.supervisor.send(CreateNodes(nodes)).await??;

        for verb in [Verb::Manage, Verb::Provide, Verb::Deploy] {
            let outcomes = site
                .supervisor
                .send(BulkAction { nodes: "rack1-n[1-8]".into(), op: Op::Verb(verb), wait: true, fanout: 4 })
                .await??;
            let ok = outcomes.iter().filter(|o| o.result.is_ok()).count();
            println!("{verb}: {ok}/{} nodes ok", outcomes.len());
        }
        // The site's metrics are plain atomics an application can read or
        // render for its own Prometheus endpoint.
        let active = site.metrics.nodes_in(kiln_store::ProvisionState::Active);
        let (calls, failed) = site.metrics.bmc_totals(kiln_store::DriverKind::Fake);
        println!("metrics: {active} nodes active; {calls} BMC calls, {failed} failed");
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
