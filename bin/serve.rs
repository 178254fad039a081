//! `kiln serve`: load the config, start the site's actors, open the admin
//! socket, and run until SIGTERM or SIGINT.
//!
//! Shutdown order (SIGTERM or SIGINT): stop accepting (the socket is
//! removed), then [`kiln_actors::shutdown::shutdown`]: nothing new starts,
//! running opcodes get `shutdown_grace` to finish, what still runs then is
//! failed as the restart rule would fail it (a second signal cuts the grace
//! short), and the store is checkpointed; then the actix system stops and the
//! process exits 0.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use crate::admin::{self, AdminConfig};
use crate::cli::{LogFormat, ServeArgs};
use crate::config::{self, DaemonConfig};

/// Runs the daemon; returns its exit code.
pub fn run(args: ServeArgs) -> ExitCode {
    let cfg = match config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(crate::exit::USAGE);
        }
    };
    if args.check_config {
        println!("configuration is valid: data dir {}, socket {}", cfg.site.data_dir.display(), cfg.socket.display());
        return ExitCode::SUCCESS;
    }
    init_logging(cfg.log_format);
    match actix::System::new().block_on(daemon(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kiln serve failed");
            eprintln!("error: {e:#}");
            ExitCode::from(crate::exit::FAILED)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

async fn daemon(cfg: DaemonConfig) -> anyhow::Result<()> {
    let admin_cfg = AdminConfig {
        socket: cfg.socket.clone(),
        mode: cfg.socket_mode,
        allowed_uids: cfg.allowed_uids.clone(),
        max_frame: cfg.max_frame,
        limits: cfg.limits.clone(),
    };
    let site = kiln_actors::start(cfg.site.clone()).await.context("cannot start the site")?;
    let listener = admin::bind(&admin_cfg)?;
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tracing::info!(
        socket = %cfg.socket.display(),
        data_dir = %cfg.site.data_dir.display(),
        nodes = site.registry.by_id.len(),
        "kiln is serving"
    );
    let server = actix::spawn(admin::serve(listener, admin_cfg, site.clone(), stop_rx));
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
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
    actix::System::current().stop();
    Ok(())
}
