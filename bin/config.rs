//! The daemon's configuration: a TOML file, `KILN_<KEY>` environment
//! variables and flags over built-in defaults (see [`crate::layered`] for
//! how the layers combine and how errors name the key and its source),
//! validated as a whole before anything starts. `docs/config.md` is the
//! reference of every key.
//!
//! To add a key: add a field to [`FileConfig`] (its environment variable,
//! `--set`, `--check-config` output and unknown-key hints come with it), its
//! default to [`FileConfig::defaults`], read it in `build`, list it in
//! [`LIVE_KEYS`] if a SIGHUP can change it in a running daemon, and add a
//! row to `docs/config.md` (a test checks that every key has one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_actors::SiteConfig;
use kiln_actors::nodeset::NodeSet;
use kiln_actors::periodic::{PeriodicConfig, TaskSettings};
use kiln_store::postgres::members::MemberSettings;
use serde::{Deserialize, Serialize};

use crate::cli::{LogFormat, ServeArgs};
use crate::layered::{self, Layers, Resolved, Seconds, Source};

/// The default data dir: `./kiln-data`.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("kiln-data")
}

/// The config file's keys. Unknown keys are refused. Durations are
/// [`Seconds`]: `30`, `1.5`, `500ms`, `30s`, `5m`, `2h`, `1d`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub demo: Option<usize>,
    pub lock_wait: Option<Seconds>,
    /// The log filter (tracing's `EnvFilter` directives: `info`,
    /// `kiln_actors=debug,info`).
    pub log: Option<String>,
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
    /// At most this many jobs not ended (held whole in memory); a
    /// submission past it is refused.
    pub max_queued_jobs: Option<usize>,
    /// Node groups: `rack1 = "r1-n[01-40]"`, used as `@rack1`.
    pub groups: Option<BTreeMap<String, String>>,
    /// More groups: a file of `name: nodeset` lines ([`crate::groups`]).
    pub group_file: Option<PathBuf>,
    /// More groups: a command printing the group names.
    pub group_list: Option<String>,
    /// ...and one printing the node set of the group `$GROUP`.
    pub group_map: Option<String>,
    /// Periodic tasks (docs/jobs.md).
    pub periodic_enabled: Option<bool>,
    pub power_sync_interval: Option<Seconds>,
    pub power_sync_concurrency: Option<usize>,
    pub power_state_sync_max_retries: Option<u32>,
    pub force_power_state_during_sync: Option<bool>,
    pub power_failure_recovery_interval: Option<Seconds>,
    pub wait_timeouts_interval: Option<Seconds>,
    pub wait_timeout: Option<Seconds>,
    pub deploy_callback_timeout: Option<Seconds>,
    pub clean_callback_timeout: Option<Seconds>,
    pub inspect_wait_timeout: Option<Seconds>,
    pub job_autoarchive_interval: Option<Seconds>,
    pub job_archive_age: Option<Seconds>,
    pub store_maintenance_interval: Option<Seconds>,
    /// Each built-in task's own settings: `[periodic.power_sync]` with
    /// `enabled`, `interval`, `run_immediately`.
    pub periodic: Option<BTreeMap<String, TaskFile>>,
    pub driver_call_timeout: Option<Seconds>,
    /// How long a BMC may take to accept a connection or answer the IPMI
    /// probe; a node's `driver_info.connect_timeout` overrides it.
    pub bmc_connect_timeout: Option<Seconds>,
    /// At most this many calls in flight to one BMC endpoint (host:port).
    pub bmc_max_concurrent: Option<usize>,
    /// A node with nothing to do gives up its actor after this long (0:
    /// never).
    pub node_rest_after: Option<Seconds>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (off when absent).
    pub metrics_addr: Option<String>,
    /// Serve the Ironic-compatible HTTP API here (off when absent).
    pub api_addr: Option<String>,
    /// How API callers authenticate: `none` (loopback only) or `http_basic`.
    pub api_auth: Option<String>,
    /// The htpasswd file (bcrypt hashes) of `api_auth = "http_basic"`.
    pub api_htpasswd: Option<PathBuf>,
    /// The API's TLS certificate chain and private key (PEM); both or neither.
    pub api_tls_cert: Option<PathBuf>,
    pub api_tls_key: Option<PathBuf>,
    /// How long SIGTERM lets running opcodes finish before failing them.
    pub shutdown_grace: Option<Seconds>,
    /// Admin connections served at once; the next one is refused.
    pub max_connections: Option<usize>,
    /// The longest one admin frame may take from its first byte (and an
    /// answer may wait unread).
    pub frame_timeout: Option<Seconds>,
    /// An admin connection idle this long between requests is closed.
    pub idle_timeout: Option<Seconds>,
    /// The store: "sqlite" (the file in the data dir) or a `postgres://`
    /// URL. Shown and logged with its password masked.
    pub store: Option<String>,
    /// How long `kiln serve` keeps trying to reach PostgreSQL at start.
    pub store_connect_timeout: Option<Seconds>,
    /// This member's name on a shared store, stable across restarts
    /// (default: host and data dir).
    pub member_name: Option<String>,
    /// How often a member renews its heartbeat on a shared store.
    pub member_heartbeat: Option<Seconds>,
    /// A member silent this long is dead and its nodes are taken over.
    pub member_timeout: Option<Seconds>,
    /// How long a member waits before acting on nodes it took from a dead
    /// member.
    pub bmc_fence_delay: Option<Seconds>,
}

/// One periodic task's own settings (`[periodic.NAME]`); what it leaves
/// out comes from the site-wide keys (`periodic_enabled`, `NAME_interval`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_immediately: Option<bool>,
}

/// A periodic task's interval, with Nova's meaning of its spacing: a
/// duration (`0`: every tick of the scheduler, about a second), or a
/// negative number: the task is disabled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Interval {
    Every(Seconds),
    Disabled,
}

impl Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Interval::Every(d) => d.serialize(s),
            Interval::Disabled => s.serialize_i64(-1),
        }
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::Integer(n) if n < 0 => Ok(Interval::Disabled),
            toml::Value::Float(n) if n < 0.0 => Ok(Interval::Disabled),
            other => Seconds::deserialize(other).map(Interval::Every).map_err(serde::de::Error::custom),
        }
    }
}

/// The keys a SIGHUP applies to a running daemon; any other key changed in
/// the file is reported as needing a restart.
pub const LIVE_KEYS: &[&str] = &[
    "lock_wait",
    "log",
    "default_fanout",
    "max_running_jobs",
    "groups",
    "group_file",
    "group_list",
    "group_map",
    "periodic_enabled",
    "power_sync_interval",
    "power_sync_concurrency",
    "power_state_sync_max_retries",
    "force_power_state_during_sync",
    "power_failure_recovery_interval",
    "wait_timeouts_interval",
    "wait_timeout",
    "deploy_callback_timeout",
    "clean_callback_timeout",
    "inspect_wait_timeout",
    "job_autoarchive_interval",
    "job_archive_age",
    "store_maintenance_interval",
    "periodic",
];

impl FileConfig {
    /// Every key's default (`socket` has none of its own: it follows
    /// `data_dir`).
    pub fn defaults() -> FileConfig {
        let p = PeriodicConfig::default();
        let site = SiteConfig::default();
        let limits = crate::limits::Limits::default();
        FileConfig {
            data_dir: Some(default_data_dir()),
            socket: None,
            demo: Some(0),
            lock_wait: Some(Seconds(site.lock_wait)),
            log: Some("info".into()),
            log_format: Some("text".into()),
            socket_mode: Some("0600".into()),
            allowed_uids: Some(Vec::new()),
            max_frame: Some(kiln_actors::codec::DEFAULT_MAX_FRAME),
            default_fanout: Some(site.default_fanout),
            max_running_jobs: Some(site.max_running_jobs),
            max_queued_jobs: Some(site.max_queued_jobs),
            groups: Some(BTreeMap::new()),
            group_file: None,
            group_list: None,
            group_map: None,
            periodic_enabled: Some(p.enabled),
            power_sync_interval: Some(Seconds(p.power_sync_interval)),
            power_sync_concurrency: Some(p.power_sync_concurrency),
            power_state_sync_max_retries: Some(p.power_state_sync_max_retries),
            force_power_state_during_sync: Some(p.force_power_state_during_sync),
            power_failure_recovery_interval: Some(Seconds(p.power_failure_recovery_interval)),
            wait_timeouts_interval: Some(Seconds(p.wait_timeouts_interval)),
            wait_timeout: Some(Seconds(p.wait_timeout)),
            deploy_callback_timeout: Some(Seconds(p.deploy_callback_timeout)),
            clean_callback_timeout: Some(Seconds(p.clean_callback_timeout)),
            inspect_wait_timeout: Some(Seconds(p.inspect_wait_timeout)),
            job_autoarchive_interval: Some(Seconds(p.job_autoarchive_interval)),
            job_archive_age: Some(Seconds(p.job_archive_age)),
            store_maintenance_interval: Some(Seconds(p.store_maintenance_interval)),
            periodic: Some(BTreeMap::new()),
            driver_call_timeout: Some(Seconds(site.driver_call_timeout)),
            bmc_connect_timeout: Some(Seconds(site.bmc_connect_timeout)),
            bmc_max_concurrent: Some(site.bmc_max_concurrent),
            node_rest_after: Some(Seconds(site.node_rest_after.unwrap_or_default())),
            metrics_addr: None,
            api_addr: None,
            api_auth: Some("none".into()),
            api_htpasswd: None,
            api_tls_cert: None,
            api_tls_key: None,
            shutdown_grace: Some(Seconds(Duration::from_secs(30))),
            max_connections: Some(limits.max_connections),
            frame_timeout: Some(Seconds(limits.frame_timeout)),
            idle_timeout: Some(Seconds(limits.idle_timeout)),
            store: Some("sqlite".into()),
            store_connect_timeout: Some(Seconds(Duration::from_secs(30))),
            member_name: None,
            member_heartbeat: Some(Seconds(MemberSettings::default().heartbeat)),
            member_timeout: Some(Seconds(MemberSettings::default().timeout)),
            bmc_fence_delay: Some(Seconds(Duration::from_secs(2))),
        }
    }
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
    /// Where `/metrics` is served; `None`: nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The Ironic-compatible HTTP API (`api_addr`); `None`: not served.
    pub api: Option<crate::api::ApiSettings>,
    /// What SIGTERM gives running opcodes before failing them.
    pub shutdown_grace: Duration,
    /// Where the site's records are kept (`store`).
    pub store: kiln_store::postgres::StoreTarget,
    /// How long to keep trying to reach a PostgreSQL store at start.
    pub store_connect_timeout: Duration,
    /// This member's name on a shared store (`member_name`, or host and
    /// data dir).
    pub member_name: String,
    /// Heartbeat and timeout of membership on a shared store.
    pub membership: MemberSettings,
    /// What nodes taken from a dead member wait before this member acts.
    pub bmc_fence_delay: Duration,
    /// Per-connection limits of the admin socket.
    pub limits: crate::limits::Limits,
    /// The log filter directives.
    pub log: String,
    /// Every key's effective value (what `--check-config` shows and a
    /// reload compares).
    pub effective: FileConfig,
    /// Where each key's value came from.
    pub sources: BTreeMap<String, Source>,
    /// Things that are not errors but probably mistakes (an unknown
    /// `KILN_*` variable).
    pub warnings: Vec<String>,
}

impl DaemonConfig {
    /// The effective config as a TOML table, key by key.
    pub fn table(&self) -> toml::Table {
        match toml::Value::try_from(&self.effective) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        }
    }

    pub fn source(&self, key: &str) -> Source {
        self.sources.get(key).cloned().unwrap_or(Source::Default)
    }
}

/// Reads the file (if any), the environment and the flags.
pub fn load(args: &ServeArgs) -> anyhow::Result<DaemonConfig> {
    load_with(args, &|var| std::env::var(var).ok().filter(|v| !v.is_empty()), std::env::vars().map(|(k, _)| k))
}

/// [`load`] with the environment given (tests).
pub fn load_with(
    args: &ServeArgs,
    env: &dyn Fn(&str) -> Option<String>,
    env_names: impl Iterator<Item = String>,
) -> anyhow::Result<DaemonConfig> {
    let mut layers = Layers::new(&FileConfig::defaults());
    if let Some(path) = &args.config {
        layers.file(path);
    }
    layers.env(env);
    flags(args, &mut layers);
    let resolved = layers.resolve()?;
    let mut cfg = build(&resolved)?;
    let known: Vec<String> = layered::keys::<FileConfig>().iter().map(|k| layered::env_var(k)).collect();
    for name in env_names {
        // KILN_CONFIG names the file; KILN_SOCKET is also the CLI's.
        if name.starts_with("KILN_") && name != "KILN_CONFIG" && !known.contains(&name) {
            cfg.warnings.push(format!("{name} is set but is not a kiln setting (the keys are in docs/config.md)"));
        }
    }
    Ok(cfg)
}

/// The dedicated flags of `kiln serve`, then `--set KEY=VALUE`.
fn flags(args: &ServeArgs, layers: &mut Layers<FileConfig>) {
    let path = |p: &Path| toml::Value::String(p.display().to_string());
    if let Some(p) = &args.data_dir {
        layers.flag("data_dir", path(p), "--data-dir");
    }
    if let Some(p) = &args.socket {
        layers.flag("socket", path(p), "--socket");
    }
    if let Some(n) = args.demo {
        layers.flag("demo", toml::Value::Integer(n as i64), "--demo");
    }
    if let Some(t) = &args.lock_wait {
        layers.text("lock_wait", t, Source::Flag("--lock-wait"));
    }
    if let Some(n) = args.max_running_jobs {
        layers.flag("max_running_jobs", toml::Value::Integer(n as i64), "--max-running-jobs");
    }
    if let Some(n) = args.max_queued_jobs {
        layers.flag("max_queued_jobs", toml::Value::Integer(n as i64), "--max-queued-jobs");
    }
    if let Some(t) = &args.power_sync_interval {
        layers.text("power_sync_interval", t, Source::Flag("--power-sync-interval"));
    }
    if let Some(t) = &args.shutdown_grace {
        layers.text("shutdown_grace", t, Source::Flag("--shutdown-grace"));
    }
    if let Some(s) = &args.store {
        layers.flag("store", toml::Value::String(s.clone()), "--store");
    }
    if let Some(a) = &args.metrics_addr {
        layers.flag("metrics_addr", toml::Value::String(a.clone()), "--metrics-addr");
    }
    if let Some(a) = &args.api_addr {
        layers.flag("api_addr", toml::Value::String(a.clone()), "--api-addr");
    }
    if args.no_periodic {
        layers.flag("periodic_enabled", toml::Value::Boolean(false), "--no-periodic");
    }
    if let Some(f) = args.log_format {
        let name = match f {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        layers.flag("log_format", toml::Value::String(name.into()), "--log-format");
    }
    layers.sets(&args.set);
}

/// Turns the layered keys into the daemon's settings, checking what a
/// key's type alone cannot; every problem is reported, each naming its key
/// and where its value came from.
fn build(r: &Resolved<FileConfig>) -> anyhow::Result<DaemonConfig> {
    let f = &r.value;
    let d = FileConfig::defaults();
    let mut c = Check { r, errors: Vec::new() };

    let data_dir = f.data_dir.clone().unwrap_or_else(default_data_dir);
    let socket = f.socket.clone().unwrap_or_else(|| data_dir.join("kiln.sock"));
    let (log_format, log) = c.logging(f);
    let socket_mode = c.socket_mode(f);
    let max_frame = f.max_frame.unwrap_or(kiln_actors::codec::DEFAULT_MAX_FRAME);
    if !(1024..=1 << 30).contains(&max_frame) {
        c.fail("max_frame", format!("{max_frame}: expected between 1024 and 1073741824 bytes"));
    }
    let default_fanout = c.at_least_one("default_fanout", f.default_fanout.or(d.default_fanout));
    let max_running_jobs = c.at_least_one("max_running_jobs", f.max_running_jobs.or(d.max_running_jobs));
    let max_queued_jobs = c.at_least_one("max_queued_jobs", f.max_queued_jobs.or(d.max_queued_jobs));
    let power_sync_concurrency =
        c.at_least_one("power_sync_concurrency", f.power_sync_concurrency.or(d.power_sync_concurrency));
    let bmc_connect_timeout = c.positive("bmc_connect_timeout", f.bmc_connect_timeout, d.bmc_connect_timeout);
    if bmc_connect_timeout > Duration::from_secs(3600) {
        c.fail("bmc_connect_timeout", format!("{} s: expected at most 1h", bmc_connect_timeout.as_secs()));
    }
    let bmc_max_concurrent = c.at_least_one("bmc_max_concurrent", f.bmc_max_concurrent.or(d.bmc_max_concurrent));
    let limits = c.limits(f, &d);
    let metrics_addr = match f.metrics_addr.as_deref().map(metrics_addr) {
        Some(Err(e)) => {
            c.fail("metrics_addr", e);
            None
        }
        Some(Ok(a)) => Some(a),
        None => None,
    };
    let api = c.api(f, &limits, max_frame);
    let store = c.store(f);
    let membership = c.membership(f, &d);
    let member_name = c.member_name(f, &data_dir);
    let groups = c.groups(f);
    let periodic = c.periodic(f, &d, power_sync_concurrency);
    if !c.errors.is_empty() {
        return Err(layered::problems(c.errors.iter().map(|e| e.to_string()).collect()));
    }
    let me = own_uid();
    let mut allowed_uids = vec![me, 0];
    allowed_uids.extend(f.allowed_uids.clone().unwrap_or_default());
    let mut effective = f.clone();
    effective.socket = Some(socket.clone());
    // What --check-config and the start-up log show: never the password.
    effective.store = Some(store.to_string());
    let mut sources: BTreeMap<String, Source> = r.entries.iter().map(|(k, e)| (k.clone(), e.source.clone())).collect();
    sources.entry("socket".into()).or_insert(Source::Default);
    Ok(DaemonConfig {
        site: SiteConfig {
            data_dir,
            lock_wait: secs(f.lock_wait, d.lock_wait),
            driver_call_timeout: secs(f.driver_call_timeout, d.driver_call_timeout),
            bmc_connect_timeout,
            bmc_max_concurrent,
            default_fanout,
            periodic,
            groups,
            max_running_jobs,
            max_queued_jobs,
            demo_nodes: f.demo.unwrap_or(0),
            clock: kiln_actors::clock::system(),
            // Driver actors and the admin socket off the node actors'
            // thread when there are cores to spare (four or more).
            threads: kiln_actors::threads::Threads::Auto,
            shared: None,
            node_rest_after: Some(secs(f.node_rest_after, d.node_rest_after)).filter(|d| !d.is_zero()),
        },
        socket,
        socket_mode,
        allowed_uids,
        max_frame,
        log_format,
        metrics_addr,
        api,
        shutdown_grace: secs(f.shutdown_grace, d.shutdown_grace),
        store,
        store_connect_timeout: secs(f.store_connect_timeout, d.store_connect_timeout),
        member_name,
        membership,
        bmc_fence_delay: secs(f.bmc_fence_delay, d.bmc_fence_delay),
        limits,
        log,
        effective,
        sources,
        warnings: Vec::new(),
    })
}

/// A duration key's value, or its default.
fn secs(v: Option<Seconds>, d: Option<Seconds>) -> std::time::Duration {
    v.or(d).unwrap_or_default().0
}

/// The checks [`build`] makes of the keys, gathering every problem.
struct Check<'a> {
    r: &'a Resolved<FileConfig>,
    errors: Vec<anyhow::Error>,
}

impl Check<'_> {
    /// Records a problem with `key`'s value.
    fn fail(&mut self, key: &str, why: impl std::fmt::Display) {
        self.errors.push(self.r.invalid(key, why));
    }

    /// The API's settings (`api_addr`, `api_auth`, `api_htpasswd`): the
    /// address parsed, `none` refused off loopback, the htpasswd file read.
    fn api(
        &mut self,
        f: &FileConfig,
        limits: &crate::limits::Limits,
        max_frame: usize,
    ) -> Option<crate::api::ApiSettings> {
        use crate::api::{ApiAuth, ApiSettings, Htpasswd};
        let addr = match f.api_addr.as_deref().map(metrics_addr) {
            None => return None,
            Some(Err(e)) => {
                self.fail("api_addr", e);
                return None;
            }
            Some(Ok(a)) => a,
        };
        let auth = match f.api_auth.as_deref().unwrap_or("none") {
            "none" if addr.ip().is_loopback() => ApiAuth::None,
            "none" => {
                self.fail(
                    "api_auth",
                    format!("\"none\" is only allowed on a loopback api_addr, not {addr}; use \"http_basic\""),
                );
                return None;
            }
            "http_basic" => match &f.api_htpasswd {
                None => {
                    self.fail("api_htpasswd", "api_auth = \"http_basic\" needs an htpasswd file");
                    return None;
                }
                Some(path) => match Htpasswd::load(path) {
                    Ok(h) => ApiAuth::HttpBasic(std::sync::Arc::new(h)),
                    Err(e) => {
                        self.fail("api_htpasswd", e);
                        return None;
                    }
                },
            },
            other => {
                self.fail("api_auth", format!("'{other}': expected \"none\" or \"http_basic\""));
                return None;
            }
        };
        let tls = match (&f.api_tls_cert, &f.api_tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => match crate::api::tls::load(cert, key) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    self.fail("api_tls_cert", e);
                    return None;
                }
            },
            (Some(_), None) => {
                self.fail("api_tls_key", "api_tls_cert is set: its private key is needed too");
                return None;
            }
            (None, Some(_)) => {
                self.fail("api_tls_cert", "api_tls_key is set: its certificate chain is needed too");
                return None;
            }
        };
        Some(ApiSettings {
            tls,
            addr,
            auth,
            max_body: max_frame,
            request_timeout: limits.frame_timeout,
            max_connections: limits.max_connections,
        })
    }

    /// A count that must be at least 1.
    fn at_least_one(&mut self, key: &str, v: Option<usize>) -> usize {
        let v = v.unwrap_or(1);
        if v == 0 {
            self.fail(key, "0: expected at least 1");
        }
        v.max(1)
    }

    /// A duration that must be more than 0.
    fn positive(&mut self, key: &str, v: Option<Seconds>, d: Option<Seconds>) -> std::time::Duration {
        let v = secs(v, d);
        if v.is_zero() {
            self.fail(key, "0: expected more than 0 seconds");
        }
        v
    }

    /// `log_format` and `log` (a tracing filter).
    fn logging(&mut self, f: &FileConfig) -> (LogFormat, String) {
        let format = match f.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                self.fail("log_format", format!("'{other}': expected text or json"));
                LogFormat::Text
            }
        };
        let log = f.log.clone().unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
            self.fail("log", format!("'{log}' is not a log filter ({e}); e.g. info or kiln_actors=debug,info"));
        }
        (format, log)
    }

    fn socket_mode(&mut self, f: &FileConfig) -> u32 {
        match f.socket_mode.as_deref().unwrap_or("0600") {
            "0600" | "600" => 0o600,
            "0660" | "660" => 0o660,
            other => {
                self.fail("socket_mode", format!("'{other}': expected \"0600\" or \"0660\""));
                0o600
            }
        }
    }

    /// The admin socket's limits.
    fn limits(&mut self, f: &FileConfig, d: &FileConfig) -> crate::limits::Limits {
        let max_connections = f.max_connections.or(d.max_connections).unwrap_or(256);
        if !(1..=65_536).contains(&max_connections) {
            self.fail("max_connections", format!("{max_connections}: expected between 1 and 65536"));
        }
        crate::limits::Limits {
            max_connections,
            frame_timeout: self.positive("frame_timeout", f.frame_timeout, d.frame_timeout),
            idle_timeout: self.positive("idle_timeout", f.idle_timeout, d.idle_timeout),
        }
    }

    /// Membership timing: a member must be able to miss two heartbeats and
    /// still stop writing before it is declared dead.
    fn membership(&mut self, f: &FileConfig, d: &FileConfig) -> MemberSettings {
        let heartbeat = self.positive("member_heartbeat", f.member_heartbeat, d.member_heartbeat);
        let timeout = self.positive("member_timeout", f.member_timeout, d.member_timeout);
        let settings = MemberSettings { heartbeat, timeout };
        if settings.self_fence_after() <= heartbeat {
            self.fail(
                "member_timeout",
                format!(
                    "{} s: must be more than three member_heartbeat ({} s)",
                    timeout.as_secs_f64(),
                    heartbeat.as_secs_f64()
                ),
            );
        }
        settings
    }

    /// `member_name`, or this host and the data dir: one member per host
    /// and data dir, which the data dir lock keeps to one process.
    fn member_name(&mut self, f: &FileConfig, data_dir: &Path) -> String {
        match f.member_name.as_deref() {
            Some(name) if name.trim().is_empty() || name.len() > 200 => {
                self.fail("member_name", format!("'{name}': expected 1 to 200 characters"));
                String::new()
            }
            Some(name) => name.to_string(),
            None => format!("{}:{}", crate::member::host_name(), data_dir.display()),
        }
    }

    fn store(&mut self, f: &FileConfig) -> kiln_store::postgres::StoreTarget {
        match kiln_store::postgres::StoreTarget::parse(f.store.as_deref().unwrap_or("sqlite")) {
            Ok(store) => store,
            Err(e) => {
                self.fail("store", format!("{e}; expected \"sqlite\" or postgres://USER:PASSWORD@HOST:PORT/DATABASE"));
                kiln_store::postgres::StoreTarget::Sqlite
            }
        }
    }

    /// The node groups, each a node set that parses.
    fn groups(&mut self, f: &FileConfig) -> BTreeMap<String, String> {
        let groups = match all_groups(f) {
            Ok(all) => all,
            Err(e) => {
                self.fail(e.key, e.why);
                f.groups.clone().unwrap_or_default()
            }
        };
        for (name, expr) in &groups {
            if let Err(e) = NodeSet::parse_with(expr, &|g| groups.get(g).cloned()) {
                self.fail("groups", format!("group '{name}' = '{expr}': {e}"));
            }
        }
        groups
    }

    /// The periodic tasks' settings; a task that does not exist is refused.
    fn periodic(&mut self, f: &FileConfig, d: &FileConfig, power_sync_concurrency: usize) -> PeriodicConfig {
        let mut tasks = BTreeMap::new();
        for (name, t) in f.periodic.clone().unwrap_or_default() {
            if !kiln_actors::periodic::BUILTIN_TASKS.contains(&name.as_str()) {
                let known = kiln_actors::periodic::BUILTIN_TASKS.join(", ");
                self.fail("periodic", format!("no periodic task '{name}' (tasks: {known})"));
                continue;
            }
            let interval = t.interval.map(|i| match i {
                Interval::Every(d) => Some(d.0),
                Interval::Disabled => None,
            });
            tasks.insert(name, TaskSettings { enabled: t.enabled, interval, run_immediately: t.run_immediately });
        }
        PeriodicConfig {
            enabled: f.periodic_enabled.unwrap_or(true),
            power_sync_interval: secs(f.power_sync_interval, d.power_sync_interval),
            power_sync_concurrency,
            power_state_sync_max_retries: f
                .power_state_sync_max_retries
                .or(d.power_state_sync_max_retries)
                .unwrap_or(3),
            force_power_state_during_sync: f.force_power_state_during_sync.unwrap_or(false),
            power_failure_recovery_interval: secs(f.power_failure_recovery_interval, d.power_failure_recovery_interval),
            wait_timeouts_interval: secs(f.wait_timeouts_interval, d.wait_timeouts_interval),
            wait_timeout: secs(f.wait_timeout, d.wait_timeout),
            deploy_callback_timeout: secs(f.deploy_callback_timeout, d.deploy_callback_timeout),
            clean_callback_timeout: secs(f.clean_callback_timeout, d.clean_callback_timeout),
            inspect_wait_timeout: secs(f.inspect_wait_timeout, d.inspect_wait_timeout),
            job_autoarchive_interval: secs(f.job_autoarchive_interval, d.job_autoarchive_interval),
            job_archive_age: secs(f.job_archive_age, d.job_archive_age),
            store_maintenance_interval: secs(f.store_maintenance_interval, d.store_maintenance_interval),
            tasks,
        }
    }
}

/// Parses `metrics_addr`: `HOST:PORT` (`127.0.0.1:9184`, `[::1]:9184`,
/// `localhost:9184`; port 0 picks a free port, logged at start).
fn metrics_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let bad = || format!("'{text}': expected HOST:PORT, such as 127.0.0.1:9184");
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    text.to_socket_addrs().map_err(|_| bad())?.next().ok_or_else(bad)
}

/// The keys not at their default, with their sources, for the start-up log:
/// `lock_wait=5s (KILN_LOCK_WAIT), data_dir="/var/lib/kiln" (config /etc/kiln/kiln.toml)`.
pub fn describe(cfg: &DaemonConfig) -> String {
    let set: Vec<String> = cfg
        .table()
        .iter()
        .filter(|(k, _)| cfg.source(k) != Source::Default)
        .map(|(k, v)| format!("{k}={v} ({})", cfg.source(k)))
        .collect();
    if set.is_empty() { "all defaults".into() } else { set.join(", ") }
}

/// The configuration a running daemon uses, for `kiln status`: every key's
/// value as text and the keys not at their default. Set at start and again
/// by each reload that applied something; readers take a whole copy.
#[derive(Debug, Default)]
pub struct InForce(std::sync::RwLock<Described>);

#[derive(Debug, Default)]
struct Described {
    /// Each key's value as text.
    values: BTreeMap<String, String>,
    /// The keys not at their default.
    changed: Vec<String>,
}

impl InForce {
    /// `table`: each key's value in force ([`DaemonConfig::table`]).
    pub fn new(table: &toml::Table) -> InForce {
        let in_force = InForce::default();
        in_force.set(table);
        in_force
    }

    pub fn set(&self, table: &toml::Table) {
        let defaults = match toml::Value::try_from(FileConfig::defaults()) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        let text = |v: &toml::Value| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let values: BTreeMap<String, String> = table.iter().map(|(k, v)| (k.clone(), text(v))).collect();
        // A key without a default of its own (`socket` follows `data_dir`)
        // is not called changed.
        let changed = table.iter().filter(|(k, v)| defaults.get(*k).is_some_and(|d| d != *v)).map(|(k, _)| k.clone());
        let changed = changed.collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Described { values, changed };
    }

    /// `status` with the configuration in force.
    pub fn fill(&self, mut status: kiln_actors::SiteStatus) -> kiln_actors::SiteStatus {
        let now = self.0.read().unwrap_or_else(|e| e.into_inner());
        (status.config, status.config_changed) = (now.values.clone(), now.changed.clone());
        status
    }
}

/// `kiln serve --check-config`: validates, prints every key's effective
/// value and where it came from, and exits (2 when the config is invalid).
pub fn check(args: &ServeArgs, json: bool) -> std::process::ExitCode {
    let cfg = match load(args) {
        Ok(c) => c,
        Err(e) => {
            if json {
                crate::output::json(&serde_json::json!({ "valid": false, "error": format!("{e:#}") }));
            } else {
                eprintln!("error: {e:#}");
            }
            return std::process::ExitCode::from(crate::exit::USAGE);
        }
    };
    let table = cfg.table();
    if json {
        let keys: serde_json::Map<String, serde_json::Value> = table
            .iter()
            .map(|(k, v)| {
                let row = serde_json::json!({
                    "value": v,
                    "source": cfg.source(k).to_string(),
                    "env": layered::env_var(k),
                    "live": LIVE_KEYS.contains(&k.as_str()),
                });
                (k.clone(), row)
            })
            .collect();
        crate::output::json(&serde_json::json!({ "valid": true, "keys": keys, "warnings": cfg.warnings }));
    } else {
        for w in &cfg.warnings {
            eprintln!("warning: {w}");
        }
        println!("configuration is valid");
        let rows: Vec<(String, String, String, &str)> = table
            .iter()
            .map(|(k, v)| {
                let live = if LIVE_KEYS.contains(&k.as_str()) { "live" } else { "restart" };
                (k.clone(), v.to_string(), cfg.source(k).to_string(), live)
            })
            .collect();
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(3).max(3);
        let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(6).max(6);
        println!("{:w0$}  {:7}  {:w2$}  VALUE", "KEY", "SIGHUP", "SOURCE");
        for (k, v, s, live) in rows {
            println!("{k:w0$}  {live:7}  {s:w2$}  {v}");
        }
    }
    std::process::ExitCode::SUCCESS
}

/// The node groups of a config file (for `kiln nodeset`): its `[groups]`
/// and its group sources.
pub fn groups_of(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut layers = Layers::new(&FileConfig::default());
    layers.file(path);
    let resolved = layers.resolve()?;
    all_groups(&resolved.value).map_err(|e| anyhow::anyhow!("{}: {}: {e}", path.display(), e.key))
}

/// `[groups]` and what the group sources add.
fn all_groups(f: &FileConfig) -> Result<BTreeMap<String, String>, crate::groups::SourceError> {
    let sources = crate::groups::Sources {
        file: f.group_file.as_deref(),
        list: f.group_list.as_deref(),
        map: f.group_map.as_deref(),
    };
    crate::groups::resolve(&f.groups.clone().unwrap_or_default(), &sources)
}

/// The daemon's own uid.
pub fn own_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The socket path the CLI uses: `--socket`, then `KILN_SOCKET`, then the
/// default data dir's socket.
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("KILN_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    default_data_dir().join("kiln.sock")
}
