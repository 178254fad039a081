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
    pub driver_call_timeout: Option<f64>,
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
}

fn seconds(key: &str, value: f64) -> anyhow::Result<Duration> {
    if !value.is_finite() || !(0.0..=86_400.0).contains(&value) {
        bail!("{key} = {value}: expected seconds between 0 and 86400");
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
    let default_fanout = file.default_fanout.unwrap_or(64);
    if default_fanout == 0 {
        bail!("default_fanout = 0: expected at least 1");
    }
    let me = own_uid();
    let mut allowed_uids = vec![me, 0];
    allowed_uids.extend(file.allowed_uids.unwrap_or_default());
    Ok(DaemonConfig {
        site: SiteConfig {
            data_dir,
            lock_wait,
            driver_call_timeout,
            default_fanout,
            max_running_jobs: args.max_running_jobs.or(file.max_running_jobs).unwrap_or(64).max(1),
            demo_nodes: args.demo.or(file.demo).unwrap_or(0),
        },
        socket,
        socket_mode,
        allowed_uids,
        max_frame,
        log_format,
    })
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
