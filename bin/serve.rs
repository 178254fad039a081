//! `kiln serve`: load the config, start the site's actors, open the admin
//! socket, and run until SIGTERM or SIGINT; SIGHUP reloads the config
//! ([`crate::reload`]). Under systemd it tells the manager when it is ready,
//! reloading and stopping, and pings its watchdog ([`crate::notify`]).
//!
//! Shutdown order (SIGTERM or SIGINT): stop accepting (the socket is
//! removed), then [`kiln_actors::shutdown::shutdown`]: nothing new starts,
//! running opcodes get `shutdown_grace` to finish, what still runs then is
//! failed as the restart rule would fail it (a second signal cuts the grace
//! short), and the store is checkpointed; then the actix system stops and the
//! process exits 0.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::admin::{self, AdminConfig};
use crate::cli::ServeArgs;
use crate::config::{self, DaemonConfig};
use crate::datadir_lock::DataDirLock;
use crate::logging::{self, LogFilter};
use crate::member;
use crate::notify::Notifier;
use crate::reload::Reloader;

/// Runs the daemon; returns its exit code.
pub fn run(args: ServeArgs) -> ExitCode {
    let cfg = match config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(crate::exit::USAGE);
        }
    };
    let log = logging::init(cfg.log_format, &cfg.log);
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(config = %config::describe(&cfg), "configuration");
    match actix::System::new().block_on(daemon(cfg, args, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kiln serve failed");
            eprintln!("error: {e:#}");
            ExitCode::from(crate::exit::FAILED)
        }
    }
}

/// Opens the store the config names and starts the site on it. A
/// PostgreSQL store that cannot be reached is retried for
/// `store_connect_timeout`, then kiln stops: it never falls back to SQLite.
/// On PostgreSQL this process joins the site as a new member first
/// ([`crate::member`]) and runs only the nodes it owns.
async fn start_site(cfg: &DaemonConfig) -> anyhow::Result<(kiln_actors::Site, Option<member::Joined>)> {
    use kiln_store::postgres::{PgBackend, StoreTarget};
    let target = match &cfg.store {
        StoreTarget::Sqlite => {
            let site = kiln_actors::start(cfg.site.clone()).await.context("cannot start the site")?;
            return Ok((site, None));
        }
        StoreTarget::Postgres(target) => target.clone(),
    };
    let (joined, options) = member::join(cfg, target.clone()).await?;
    tracing::info!(store = %target, member = %options.member, name = %cfg.member_name, "opening the PostgreSQL store");
    let mut backend = tokio::task::spawn_blocking(move || PgBackend::open(options))
        .await
        .context("the store's start-up panicked")?
        .with_context(|| format!("cannot open the PostgreSQL store {target}"))?;
    backend.on_lost_commit(joined.expeller());
    let store = kiln_store::StoreHandle::start(Box::new(backend));
    let site_cfg = kiln_actors::SiteConfig { shared: Some(joined.shared(cfg.bmc_fence_delay)), ..cfg.site.clone() };
    let site = kiln_actors::start_with_store(site_cfg, store).await.context("cannot start the site")?;
    Ok((site, Some(joined)))
}

async fn daemon(cfg: DaemonConfig, args: ServeArgs, log: LogFilter) -> anyhow::Result<()> {
    // Signal handlers first: a SIGHUP during start-up must not kill the daemon.
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let notifier = Notifier::from_env();
    let admin_cfg = AdminConfig {
        socket: cfg.socket.clone(),
        mode: cfg.socket_mode,
        allowed_uids: cfg.allowed_uids.clone(),
        max_frame: cfg.max_frame,
        limits: cfg.limits.clone(),
        in_force: std::sync::Arc::new(crate::config::InForce::new(&cfg.table())),
    };
    // Held until the daemon has shut down: one daemon per data dir.
    let _data_dir = DataDirLock::acquire(&cfg.site.data_dir)?;
    let (site, membership) = start_site(&cfg).await?;
    let listener = admin::bind(&admin_cfg)?;
    let metrics = match cfg.metrics_addr {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => None,
    };
    let api_listener = match &cfg.api {
        Some(api) => Some(crate::api::bind(api.addr)?),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let nodes = site.registry.by_id.len();
    tracing::info!(
        socket = %cfg.socket.display(),
        data_dir = %cfg.site.data_dir.display(),
        store = %cfg.store,
        nodes,
        "kiln is serving"
    );
    let api = match (api_listener, &cfg.api) {
        (Some(listener), Some(settings)) => {
            let addr = listener.local_addr().context("cannot read the API address")?;
            let handle = crate::api::serve(listener, settings.clone(), site.clone(), member::host_name())?;
            let scheme = if settings.tls.is_some() { "https" } else { "http" };
            tracing::info!(addr = %addr, url = %format!("{scheme}://{addr}/v1"), "serving the Ironic API");
            Some(handle)
        }
        _ => None,
    };
    if let Some(m) = metrics {
        let addr = m.local_addr().context("cannot read the metrics address")?;
        tracing::info!(addr = %addr, url = %format!("http://{addr}/metrics"), "serving metrics");
        actix::spawn(crate::metrics::serve(m, site.clone(), stop_rx.clone()));
    }
    let membership = membership.map(std::sync::Arc::new);
    let keeper = membership.clone().map(|m| actix::spawn(member::keep(site.clone(), m, stop_rx.clone())));
    let in_force = admin_cfg.in_force.clone();
    let mut server = admin::start(listener, admin_cfg, site.clone(), stop_rx);
    let serving = format!("serving {nodes} nodes on {}", cfg.socket.display());
    notifier.ready(&serving);
    let watchdog = notifier.watchdog_interval().map(|every| actix::spawn(watchdog(site.clone(), every)));
    let mut reloader = Reloader::new(args, &cfg, log, in_force);
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break }
            _ = hup.recv() => {
                notifier.reloading();
                match reloader.reload(&site).await {
                    Ok(r) => tracing::info!(
                        applied = %r.applied.join(", "),
                        need_restart = %r.need_restart.join(", "),
                        "configuration reloaded"
                    ),
                    Err(e) => tracing::error!(
                        error = format!("{e:#}"),
                        "configuration reload failed; running on with the configuration in force"
                    ),
                }
                notifier.ready(&serving);
            }
        }
    }
    notifier.stopping();
    if let Some(w) = watchdog {
        w.abort();
    }
    let _ = stop_tx.send(true);
    if let Some(api) = &api {
        // Stop taking API requests with the socket; those being answered
        // finish (within the request timeout).
        api.stop(true).await;
    }
    server.stopped().await;
    // A second SIGTERM or SIGINT ends the grace period at once.
    let again = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let report = kiln_actors::shutdown::shutdown(&site, cfg.shutdown_grace, again).await;
    tracing::info!(
        finished_in_grace = report.finished_in_grace,
        jobs_failed = report.jobs_abandoned,
        nodes_released = report.nodes_released,
        "kiln stopped"
    );
    // Leaving last: the nodes stay this member's until the row says so.
    if let Some(keeper) = keeper {
        let _ = keeper.await;
    }
    if let Some(joined) = membership.and_then(|m| std::sync::Arc::try_unwrap(m).ok()) {
        let _ = tokio::task::spawn_blocking(move || joined.leave()).await;
    }
    // The admin arbiter stops here, after the connections that were
    // answering during the grace period got their answers.
    drop(server);
    actix::System::current().stop();
    Ok(())
}

/// Pings systemd's watchdog every `every` while the site answers a health
/// check in time; a wedged site misses pings and systemd restarts it.
async fn watchdog(site: kiln_actors::Site, every: Duration) {
    let notifier = Notifier::from_env();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match site.check_alive(every).await {
            Ok(()) => notifier.notify("WATCHDOG=1"),
            Err(e) => tracing::error!(error = %e, "health check failed; not pinging the watchdog"),
        }
    }
}
