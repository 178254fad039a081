//! The daemon's logs: tracing to stderr, text (coloured on a terminal) or
//! one JSON object a line for a log pipeline, with a filter (`log` key,
//! `KILN_LOG`) that a SIGHUP reload can change while the daemon runs.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::cli::LogFormat;

/// Changes the log filter of the running daemon.
#[derive(Clone)]
pub struct LogFilter(Option<reload::Handle<EnvFilter, Registry>>);

impl LogFilter {
    /// Replaces the filter with `directives` (checked at config load).
    pub fn set(&self, directives: &str) -> anyhow::Result<()> {
        let filter = EnvFilter::try_new(directives)?;
        if let Some(handle) = &self.0 {
            handle.reload(filter)?;
        }
        Ok(())
    }
}

/// Installs the global subscriber (once per process; later calls keep the
/// first and return a handle that changes nothing).
pub fn init(format: LogFormat, directives: &str) -> LogFilter {
    let filter = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Json => registry.with(fmt.json()).try_init(),
        LogFormat::Text => registry.with(fmt.with_ansi(std::io::stderr().is_terminal())).try_init(),
    };
    LogFilter(installed.ok().map(|_| handle))
}
