//! The daemon's configuration: a TOML file, overridden by `KILN_*`
//! environment variables and flags (clap reads both), validated before
//! anything starts, with errors that name the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use kiln_actors::SiteConfig;
use serde::Deserialize;

use crate::cli::{LogFormat, ServeArgs};

/// The default data dir: `./kiln-data`.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("kiln-data")
}

/// The config file's keys. Unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub demo: Option<usize>,
    pub lock_wait: Option<f64>,
    pub log_format: Option<String>,
    /// Octal mode of the socket: "0600" (default) or "0660".
    pub socket_mode: Option<String>,
    /// Uids allowed on the socket besides the daemon's own and root.
    pub allowed_uids: Option<Vec<u32>>,
    /// Largest admin frame in bytes.
    pub max_frame: Option<usize>,
    pub default_fanout: Option<usize>,
    /// At most this many jobs run at once.
    pub max_running_jobs: Option<usize>,
    /// Node groups: `rack1 = "r1-n[01-40]"`, used as `@rack1`.
    pub groups: Option<std::collections::BTreeMap<String, String>>,
    /// Periodic tasks (spec section 5); seconds unless said otherwise.
    pub periodic_enabled: Option<bool>,
    pub power_sync_interval: Option<f64>,
    pub power_sync_concurrency: Option<usize>,
    pub power_state_sync_max_retries: Option<u32>,
    pub force_power_state_during_sync: Option<bool>,
    pub power_failure_recovery_interval: Option<f64>,
    pub wait_timeouts_interval: Option<f64>,
    pub wait_timeout: Option<f64>,
    pub job_autoarchive_interval: Option<f64>,
    pub job_archive_age: Option<f64>,
    pub store_maintenance_interval: Option<f64>,
    pub driver_call_timeout: Option<f64>,
    /// Seconds SIGTERM lets running opcodes finish before failing them.
    pub shutdown_grace: Option<f64>,
    /// Admin connections served at once; more are refused.
    pub max_connections: Option<usize>,
    /// Seconds a client has to finish a frame it began (and its hello).
    pub frame_timeout: Option<f64>,
    /// Seconds an admin connection may sit idle between requests.
    pub idle_timeout: Option<f64>,
}

/// Everything `kiln serve` runs with.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub site: SiteConfig,
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub allowed_uids: Vec<u32>,
    pub max_frame: usize,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    pub limits: crate::limits::Limits,
}

fn seconds(key: &str, value: f64) -> anyhow::Result<Duration> {
    if !value.is_finite() || !(0.0..=31_536_000.0).contains(&value) {
        bail!("{key} = {value}: expected seconds between 0 and 31536000 (a year)");
    }
    Ok(Duration::from_secs_f64(value))
}

/// Reads the file (if any) and applies the flags and environment over it.
pub fn load(args: &ServeArgs) -> anyhow::Result<DaemonConfig> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let data_dir = args.data_dir.clone().or(file.data_dir).unwrap_or_else(default_data_dir);
    let socket = args.socket.clone().or(file.socket).unwrap_or_else(|| data_dir.join("kiln.sock"));
    let lock_wait = seconds("lock_wait", args.lock_wait.or(file.lock_wait).unwrap_or(0.0))?;
    let driver_call_timeout = seconds("driver_call_timeout", file.driver_call_timeout.unwrap_or(120.0))?;
    let shutdown_grace = seconds("shutdown_grace", args.shutdown_grace.or(file.shutdown_grace).unwrap_or(30.0))?;
    let log_format = match (args.log_format, file.log_format.as_deref()) {
        (Some(f), _) => f,
        (None, None | Some("text")) => LogFormat::Text,
        (None, Some("json")) => LogFormat::Json,
        (None, Some(other)) => bail!("log_format = '{other}': expected text or json"),
    };
    let socket_mode = match file.socket_mode.as_deref() {
        None | Some("0600") | Some("600") => 0o600,
        Some("0660") | Some("660") => 0o660,
        Some(other) => bail!("socket_mode = '{other}': expected \"0600\" or \"0660\""),
    };
    let max_frame = file.max_frame.unwrap_or(kiln_actors::codec::DEFAULT_MAX_FRAME);
    if !(1024..=1 << 30).contains(&max_frame) {
        bail!("max_frame = {max_frame}: expected between 1024 and 1073741824 bytes");
    }
    let dl = crate::limits::Limits::default();
    let max_connections = file.max_connections.unwrap_or(dl.max_connections);
    if !(1..=65_536).contains(&max_connections) {
        bail!("max_connections = {max_connections}: expected between 1 and 65536");
    }
    let positive = |key: &str, v: Option<f64>, default: Duration| -> anyhow::Result<Duration> {
        let d = v.map(|v| seconds(key, v)).transpose()?.unwrap_or(default);
        if d.is_zero() {
            bail!("{key} = 0: expected more than 0 seconds");
        }
        Ok(d)
    };
    let limits = crate::limits::Limits {
        max_connections,
        frame_timeout: positive("frame_timeout", file.frame_timeout, dl.frame_timeout)?,
        idle_timeout: positive("idle_timeout", file.idle_timeout, dl.idle_timeout)?,
    };
    let default_fanout = file.default_fanout.unwrap_or(64);
    if default_fanout == 0 {
        bail!("default_fanout = 0: expected at least 1");
    }
    let d = kiln_actors::periodic::PeriodicConfig::default();
    let secs = |key: &str, v: Option<f64>, default: Duration| -> anyhow::Result<Duration> {
        v.map(|v| seconds(key, v)).transpose().map(|v| v.unwrap_or(default))
    };
    let periodic = kiln_actors::periodic::PeriodicConfig {
        enabled: !args.no_periodic && file.periodic_enabled.unwrap_or(true),
        power_sync_interval: secs(
            "power_sync_interval",
            args.power_sync_interval.or(file.power_sync_interval),
            d.power_sync_interval,
        )?,
        power_sync_concurrency: file.power_sync_concurrency.unwrap_or(d.power_sync_concurrency).max(1),
        power_state_sync_max_retries: file.power_state_sync_max_retries.unwrap_or(d.power_state_sync_max_retries),
        force_power_state_during_sync: file.force_power_state_during_sync.unwrap_or(false),
        power_failure_recovery_interval: secs(
            "power_failure_recovery_interval",
            file.power_failure_recovery_interval,
            d.power_failure_recovery_interval,
        )?,
        wait_timeouts_interval: secs("wait_timeouts_interval", file.wait_timeouts_interval, d.wait_timeouts_interval)?,
        wait_timeout: secs("wait_timeout", file.wait_timeout, d.wait_timeout)?,
        job_autoarchive_interval: secs(
            "job_autoarchive_interval",
            file.job_autoarchive_interval,
            d.job_autoarchive_interval,
        )?,
        job_archive_age: secs("job_archive_age", file.job_archive_age, d.job_archive_age)?,
        store_maintenance_interval: secs(
            "store_maintenance_interval",
            file.store_maintenance_interval,
            d.store_maintenance_interval,
        )?,
    };
    let me = own_uid();
    let mut allowed_uids = vec![me, 0];
    allowed_uids.extend(file.allowed_uids.unwrap_or_default());
    Ok(DaemonConfig {
        site: SiteConfig {
            data_dir,
            lock_wait,
            driver_call_timeout,
            default_fanout,
            periodic,
            groups: file.groups.clone().unwrap_or_default(),
            max_running_jobs: args.max_running_jobs.or(file.max_running_jobs).unwrap_or(64).max(1),
            demo_nodes: args.demo.or(file.demo).unwrap_or(0),
        },
        socket,
        socket_mode,
        allowed_uids,
        max_frame,
        log_format,
        shutdown_grace,
        limits,
    })
}

/// The node groups of a config file (for `kiln nodeset`).
pub fn groups_of(path: &Path) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    Ok(read_file(path)?.groups.unwrap_or_default())
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
}

/// The daemon's own uid.
pub fn own_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}
