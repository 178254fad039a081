//! kiln-actors: a kiln site as actix actors.
//!
//! [`start`] opens the store, applies the restart rule to whatever a previous
//! run left mid-task, starts the [`events::EventBus`], the
//! [`supervisor::Supervisor`] and one [`node::NodeActor`] per node, and
//! returns a [`Site`]: the addresses an embedding application (or kiln's own
//! admin socket) sends its typed messages to.
//!
//! Where to start reading: [`fsm`] (the state machine as data), then
//! [`node`] (the actor that runs it for one node), then [`supervisor`].

pub mod adaptive;
pub mod clock;
pub mod codec;
pub mod config;
pub mod directory;
pub mod driver;
pub mod error;
pub mod events;
pub mod exec;
pub mod fsm;
pub mod health;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod node;
pub mod nodeset;
pub mod panics;
pub mod parts;
pub mod periodic;
pub mod protocol;
pub mod remote;
pub mod scheduler;
pub mod shutdown;
pub mod supervisor;
pub mod takeover;
pub mod threads;
pub mod view;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use actix::prelude::*;
use kiln_store::{StoreError, StoreHandle};

pub use config::SiteConfig;
pub use error::KilnError;
pub use events::{EventBus, EventKind, NodeEvent, Subscribe};
pub use fsm::Verb;
pub use live::LiveSettings;
pub use node::{CallbackToken, DRIVER_CHANGE_STATES, DriverInterface, InterfaceCheck, NodeUpdate, NodeValidation, Op};
pub use supervisor::{
    BulkAction, CreateNodes, CreatePort, CreatePortGroup, DeleteNodes, DeletePort, DeletePortGroup, GetNode,
    GetNodeDetail, GetPortGroup, GetStatus, ListNodes, ListPortGroups, ListPorts, Listing, NewNode, NewPortGroup,
    NodeAction, PowerStatus, Registry, SetPortGroup, Supervisor, ValidateNodes,
};
pub use view::{ErrorView, MemberView, NodeDetail, NodeResult, NodeView, PortGroupView, PortView, SiteStatus};

/// A running site: what callers talk to.
#[derive(Clone)]
pub struct Site {
    /// Routes every node message (create, act, show, list, ports, status).
    pub supervisor: Addr<Supervisor>,
    /// Publishes every committed change; subscribe with [`events::Subscribe`].
    pub events: Addr<EventBus>,
    /// Fires the periodic tasks; list them, run one now, register more.
    pub scheduler: Addr<scheduler::Scheduler>,
    /// Runs jobs: submit, watch, cancel, archive, drain.
    pub jobs: Addr<jobs::JobQueue>,
    /// The registry the supervisor keeps (read-only use: resolve names).
    pub registry: Registry,
    pub store: StoreHandle,
    /// The config the site started with; see `live` for the values in force.
    pub config: SiteConfig,
    /// The site's counters, gauges and histograms (`metrics.render` for a scrape).
    pub metrics: Arc<metrics::Metrics>,
    /// The settings a running site can change ([`Site::reconfigure`]).
    pub live: Arc<LiveSettings>,
    /// The driver actors' arbiter, when the site runs on threads of its own
    /// ([`threads::Threads`]).
    pub driver_arbiter: Option<threads::OwnArbiter>,
}

impl Site {
    /// Whether the site runs work off the arbiter that started it: then
    /// the daemon gives its admin socket an arbiter of its own too.
    pub fn own_threads(&self) -> bool {
        self.driver_arbiter.is_some()
    }

    /// The supervisor's router: what runs node messages and fan-outs.
    pub fn router(&self) -> supervisor::Router {
        supervisor::Router {
            supervisor: self.supervisor.clone(),
            registry: self.registry.clone(),
            store: self.store.clone(),
            clock: self.config.clock.clone(),
        }
    }
}

/// Why a site could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the store at {path}")]
    Store {
        path: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot load the job queue: {0}")]
    Jobs(KilnError),
    #[error("the supervisor stopped while the site started")]
    Supervisor,
    #[error("cannot enrol the demo nodes: {0}")]
    Demo(KilnError),
}

/// Starts a site inside the current actix system.
pub async fn start(config: SiteConfig) -> Result<Site, StartError> {
    use std::os::unix::fs::DirBuilderExt;
    panics::install_hook();
    // Private (0700) when created: the store inside holds BMC passwords.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .map_err(|source| StartError::DataDir { path: config.data_dir.display().to_string(), source })?;
    let db = config.database_path();
    let store_error = |source| StartError::Store { path: db.display().to_string(), source };
    let opened = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || StoreHandle::open_sqlite(&db))
            .await
            .map_err(|e| store_error(StoreError::Corrupt(e.to_string())))?
    };
    let store = opened.map_err(store_error)?;
    start_with_store(config, store).await
}

/// [`start`] on a store already open: another [`kiln_store::Backend`]
/// behind a [`StoreHandle`] (the store's narrow interface: ARCHITECTURE.md, "API boundaries"), or a test's.
pub async fn start_with_store(config: SiteConfig, store: StoreHandle) -> Result<Site, StartError> {
    panics::install_hook();
    let store_error = |source| StartError::Store { path: config.database_path().display().to_string(), source };
    let owned = store.read(|b| b.count_owned_nodes()).await.map_err(store_error)?;
    let now = config.clock.now();
    let metrics = Arc::new(metrics::Metrics::with_request_kinds(protocol::Request::KINDS));
    // Serials go on from the last stored event: they survive restarts. A
    // store several members share numbers events itself: one stream for
    // the site, read back by every member's bus.
    let (last_event, numbered_by_store) =
        store.read(|b| Ok((b.event_span()?.0, b.assigns_event_serials()))).await.map_err(store_error)?;
    let events = if numbered_by_store {
        let wakes = config.shared.as_ref().map(|s| s.wakes.clone());
        EventBus::on_shared_store(store.clone(), last_event, wakes).start()
    } else {
        EventBus::durable(store.clone(), last_event).start()
    };
    let live = Arc::new(LiveSettings::new(&config));
    let driver_arbiter = config.threads.split().then(threads::OwnArbiter::start);
    let registry = Registry::with_capacity(owned).with_settings(live.clone(), config.shared.clone());
    let env = node::NodeEnv {
        store: store.clone(),
        events: events.clone(),
        drivers: node::connect::DriverPool::new(
            driver_arbiter.clone(),
            config.driver_call_timeout,
            node::connect::BmcLimits {
                connect_timeout: config.bmc_connect_timeout,
                max_concurrent: config.bmc_max_concurrent,
            },
            metrics.clone(),
        ),
        live: live.clone(),
        metrics: metrics.clone(),
        clock: config.clock.clone(),
        fence: config.shared.as_ref().map(|s| s.fence.clone()),
        nodes: registry.by_id.clone(),
        rest_after: config.node_rest_after,
        closing: Default::default(),
    };
    let facts = supervisor::SiteFacts { started_at: now.to_rfc3339(), data_dir: config.data_dir.display().to_string() };
    let supervisor = Supervisor::new(registry.clone(), env, facts).start();
    // Every node this process runs, at rest; the restart rule first for
    // those the store shows mid-task: nothing can be running yet, so they
    // were cut short by the previous run's end.
    let (held, repaired) =
        takeover::load_at_start(&store, &registry, "daemon restarted", now).await.map_err(store_error)?;
    if repaired > 0 {
        tracing::warn!(nodes = repaired, "released nodes left mid-task by the previous run");
    }
    // On a shared store this member may own nothing while the site has
    // nodes: the demo is for an empty site, not an empty member.
    let empty = match &config.shared {
        Some(_) if config.demo_nodes > 0 => {
            store.read(|b| Ok(b.load_nodes()?.is_empty())).await.map_err(store_error)?
        }
        _ => held == 0,
    };

    if empty && config.demo_nodes > 0 {
        let demo = (1..=config.demo_nodes)
            .map(|i| NewNode { name: format!("demo{i}"), driver: "fake".into(), ..Default::default() })
            .collect();
        supervisor.send(CreateNodes(demo)).await.map_err(|_| StartError::Supervisor)?.map_err(StartError::Demo)?;
    } else if config.demo_nodes > 0 && config.shared.is_some() {
        tracing::warn!(
            "--demo {}: the site's store already holds nodes, so no demo nodes were enrolled",
            config.demo_nodes
        );
    } else if config.demo_nodes > 0 {
        tracing::warn!(
            nodes = held,
            data_dir = %config.data_dir.display(),
            "--demo {}: the store already holds {held} nodes, so no demo nodes were enrolled; \
             to start the tour over, stop kiln and remove the data dir (or serve another --data-dir)",
            config.demo_nodes
        );
    }
    let router = supervisor::Router {
        supervisor: supervisor.clone(),
        registry: registry.clone(),
        store: store.clone(),
        clock: config.clock.clone(),
    };
    if let Some(shared) = config.shared.clone() {
        actix::spawn(directory::keep(store.clone(), shared.directory.clone(), shared.wakes.clone()));
        actix::spawn(remote::serve(router.clone(), shared));
    }
    let queue = jobs::JobQueue::load(store.clone(), router.clone(), &config)
        .await
        .map_err(StartError::Jobs)?
        .with_metrics(metrics.clone());
    let jobs = queue.start();
    let tasks = periodic::builtin(router, jobs.clone(), store.clone(), config.periodic.clone(), metrics.clone());
    let scheduler = scheduler::Scheduler::new(tasks).start();
    Ok(Site { supervisor, jobs, scheduler, events, registry, store, config, metrics, live, driver_arbiter })
}
