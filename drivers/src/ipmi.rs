//! The `ipmi` driver: a node's BMC spoken to over IPMI-over-LAN (RMCP+,
//! `lanplus`) by running `ipmitool`, as OpenStack Ironic's ipmitool driver
//! does.
//!
//! Why it is shaped so:
//! - `ipmitool` is the client every BMC vendor tests against; reimplementing
//!   RMCP+ would trade its quirks database for ours. Each call is one short
//!   `ipmitool` run (`tokio::process`), so a wedged run is killed
//!   (`kill_on_drop` under a per-run `timeout`, default 20 s) without harm to
//!   anything else.
//! - The password reaches ipmitool through its environment (`-E` reads
//!   `IPMI_PASSWORD`), never the command line that `ps` shows. `-E` is passed
//!   even without a password so ipmitool never stops to prompt for one; its
//!   standard input is closed as well. Whatever ipmitool prints is scrubbed of
//!   the password before it becomes an error.
//! - Many BMCs drop sessions when commands come too fast: commands to one BMC
//!   are spaced by `min_command_interval` (default 5 s, Ironic's), measured
//!   from the end of the previous command. The time of the last command is
//!   state of this BMC client, kept under a tokio `Mutex` that also keeps two
//!   runs against one BMC from overlapping.
//! - Before each run a probe (one unauthenticated UDP exchange, see
//!   [`probe`]) checks that the BMC answers at all, within `connect_timeout`
//!   (default 3 s): a dead BMC fails in that time as `Unreachable`, without
//!   starting ipmitool and paying its retransmissions.
//! - ipmitool's own retransmission is bounded (`-R 1 -N n`, n = timeout/3
//!   clamped to 1..5 s, as Ironic passes `-R 1`) so that an unreachable BMC
//!   ends in ipmitool's own message (seconds) well before kiln's kill.
//!   Replies that Ironic treats as transient ("insufficient resources for
//!   session", "Node busy", ...) are retried twice.
//! - ipmitool runs with `-v` because only then does it say *why* a session
//!   could not be set up: "RAKP 2 HMAC is invalid" (wrong password) or "no
//!   response from RAKP 1" (unknown user on the pyghmi simulator and some
//!   BMCs) become `Auth`; "Get Auth Capabilities error" (nothing answers)
//!   becomes `Unreachable`. Without `-v` both end in the same "Unable to
//!   establish IPMI v2 / RMCP+ session", the wrong password at once and the
//!   silent host after the retries. The chatter `-v` adds is dropped from
//!   error text.
//! - A power action returns once `power status` reports the target, polled
//!   at once and then every second (at least `min_command_interval`) up to
//!   `power_timeout` (default 60 s). Reboot is `power cycle` when the node is
//!   on and `power on` when it is off (ipmitool's cycle fails on a node that
//!   is off).
//! - The cipher suite: `driver_info.cipher_suite` when set; else the one
//!   learned before (the client's [`crate::Profile`], handed back by
//!   [`IpmiBmc::knowing`] after a restart); else 17, then 3 when the BMC
//!   refuses 17 (it answers the session's open request with algorithms
//!   other than those asked for, or an error naming them), as bmclib does.
//!   The suite that worked is kept, so only the first contact pays the one
//!   refused attempt; a kept suite the BMC refuses later is forgotten and
//!   found again at the next call. Passing `-C` also spares ipmitool its
//!   own query of the BMC's suites before every session.
//! - The boot device is read from `chassis bootparam get 5`'s raw data bytes
//!   (valid bit, device selector), with its text as a fallback: the bytes are
//!   the IPMI specification's, the text is ipmitool's and varies by version.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::Mutex;
use tokio::time::Instant;

mod probe;

pub use probe::GET_CHANNEL_AUTH_CAPABILITIES;

use crate::info::seconds;
use crate::profile::IPMI_CIPHER_SUITES;
use crate::secret::Secret;
use crate::{Bmc, BmcFuture, Boot, DriverError, Facts, Inspection, Power, PowerAction, Profile};

const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_POWER_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MIN_COMMAND_INTERVAL: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Pauses (at least) before the second and third try of a transient failure.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(1)];
const DEFAULT_PORT: u16 = 623;

/// Failures Ironic retries (`IPMITOOL_RETRYABLE_FAILURES`), lower case.
const TRANSIENT: &[&str] =
    &["insufficient resources for session", "node busy", "timeout", "out of space", "bmc initialization in progress"];
/// ipmitool's words for a session refused over the credentials, lower case.
const AUTH_FAILURES: &[&str] = &[
    "rakp 2 hmac is invalid",
    "rakp 2 message indicates an error",
    "rakp 4 message",
    "unauthorized name",
    "no response from rakp 1",
    "invalid user name",
    "unable to read password",
];
/// ipmitool's words for a BMC that does not answer at all, lower case.
const UNREACHABLE: &[&str] = &[
    "get auth capabilities error",
    "error issuing get channel authentication capabilities",
    "address lookup for",
    "no response from remote controller",
    "unable to establish",
];
/// ipmitool's words for a session refused over its cipher suite, lower case.
const SUITE_REFUSED: &[&str] = &[
    "is not what we requested",
    "invalid authentication algorithm",
    "invalid integrity algorithm",
    "invalid confidentiality algorithm",
    "no cipher suite match",
    "unsupported cipher suite",
];
/// Lines `-v` adds that say nothing about a failure.
const CHATTER: &[&str] = &[
    "loading iana pen registry",
    "using best available cipher suite",
    "running get vso capabilities",
    "discovered ipmb address",
    "invalid completion code received: invalid command",
];

/// An IPMI BMC, driven by `ipmitool -I lanplus`.
pub struct IpmiBmc {
    tool: OsString,
    address: String,
    port: u16,
    username: Option<String>,
    password: Secret,
    cipher_suite: Option<String>,
    /// The suite learned when `cipher_suite` is not set (0: not yet).
    learned_suite: AtomicU8,
    min_command_interval: Duration,
    command_timeout: Duration,
    connect_timeout: Duration,
    power_timeout: Duration,
    poll_interval: Duration,
    /// When the previous command to this BMC endpoint ended; held while a
    /// command runs. Shared by every client of the endpoint
    /// ([`crate::EndpointState`]), so the spacing holds per BMC even for
    /// nodes whose other settings differ.
    last_command: Pacer,
}

/// The spacing state of one IPMI endpoint: when its last command ended.
pub type Pacer = std::sync::Arc<Mutex<Option<Instant>>>;

impl fmt::Debug for IpmiBmc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpmiBmc")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("cipher_suite", &self.cipher_suite)
            .field("min_command_interval", &self.min_command_interval)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// How an ipmitool run failed, before it is told to the caller.
enum RunError {
    /// A failure worth another try (see [`TRANSIENT`]).
    Transient(DriverError),
    /// The BMC refused the cipher suite (see [`SUITE_REFUSED`]).
    Suite(DriverError),
    Final(DriverError),
}

impl IpmiBmc {
    /// Builds the client from validated `driver_info`: `address`, `port`,
    /// `username`, `password`, `cipher_suite`, `min_command_interval`,
    /// `timeout`, `connect_timeout` and `power_timeout`. Nothing runs until
    /// the first call.
    pub fn from_info(info: &BTreeMap<String, String>) -> Result<Self, DriverError> {
        let command_timeout = seconds(info, "timeout", DEFAULT_COMMAND_TIMEOUT, true);
        Ok(IpmiBmc {
            tool: "ipmitool".into(),
            address: info.get("address").cloned().unwrap_or_default(),
            port: info.get("port").and_then(|p| p.parse().ok()).unwrap_or(DEFAULT_PORT),
            username: info.get("username").cloned(),
            password: Secret::new(info.get("password").cloned().unwrap_or_default()),
            cipher_suite: info.get("cipher_suite").cloned(),
            learned_suite: AtomicU8::new(0),
            min_command_interval: seconds(info, "min_command_interval", DEFAULT_MIN_COMMAND_INTERVAL, false),
            command_timeout,
            connect_timeout: seconds(info, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, true).min(command_timeout),
            power_timeout: seconds(info, "power_timeout", DEFAULT_POWER_TIMEOUT, true),
            poll_interval: POLL_INTERVAL,
            last_command: Pacer::default(),
        })
    }

    /// Spaces this client's commands with every other client of `pacer`
    /// (the other nodes of the same endpoint).
    pub fn with_pacer(mut self, pacer: Pacer) -> Self {
        self.last_command = pacer;
        self
    }

    /// Starts from what an earlier client learned about this BMC: its
    /// cipher suite, unless `driver_info.cipher_suite` names one.
    pub fn knowing(self, known: &Profile) -> Self {
        if self.cipher_suite.is_none()
            && let Some(suite) = known.ipmi_cipher_suite
        {
            self.learned_suite.store(suite, Ordering::Relaxed);
        }
        self
    }

    /// Runs `tool` instead of the `ipmitool` found on `PATH` (a site with
    /// its own build, or a test that needs it missing). Deliberately not a
    /// `driver_info` key: node data must not choose what kiln executes.
    pub fn with_tool(mut self, tool: impl Into<OsString>) -> Self {
        self.tool = tool.into();
        self
    }

    /// How the BMC is named in errors: `host:port`.
    fn label(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    /// ipmitool's per-message timeout in whole seconds: a third of kiln's
    /// timeout for the run, 1 to 5 s, so that with `-R 1` it gives up first.
    fn message_timeout(&self) -> u64 {
        ((self.command_timeout.as_secs_f64() / 3.0).floor() as u64).clamp(1, 5)
    }

    /// Runs one ipmitool command against this BMC, spaced from the previous
    /// one, retrying transient failures; returns its standard output.
    async fn run(&self, args: &[&str]) -> Result<String, DriverError> {
        let mut last = self.last_command.lock().await;
        let mut attempt = 0;
        loop {
            if let Some(ended) = *last {
                tokio::time::sleep_until(ended + self.min_command_interval).await;
            }
            probe::probe(&self.address, self.port, self.connect_timeout)
                .await
                .map_err(|e| DriverError::Unreachable { address: self.label(), reason: e.to_string() })?;
            let result = self.run_suited(args).await;
            *last = Some(Instant::now());
            match result {
                Ok(out) => return Ok(out),
                Err(RunError::Transient(e)) if attempt < RETRY_DELAYS.len() => {
                    tracing::debug!(address = %self.label(), command = args.join(" "), error = %e, "IPMI command failed, retrying");
                    tokio::time::sleep(RETRY_DELAYS[attempt]).await;
                    attempt += 1;
                }
                Err(RunError::Transient(e) | RunError::Suite(e) | RunError::Final(e)) => return Err(e),
            }
        }
    }

    /// One run with the cipher suite set, learned, or found now (see the
    /// module docs): on first contact a refused 17 costs one more run, with 3.
    async fn run_suited(&self, args: &[&str]) -> Result<String, RunError> {
        if let Some(suite) = &self.cipher_suite {
            return self.run_once(args, Some(suite)).await;
        }
        let known = self.learned_suite.load(Ordering::Relaxed);
        if known != 0 {
            let result = self.run_once(args, Some(&known.to_string())).await;
            if matches!(result, Err(RunError::Suite(_))) {
                // The BMC changed its mind (firmware): find it again next time.
                tracing::info!(address = %self.label(), suite = known, "the BMC refused its learned cipher suite");
                let _ = self.learned_suite.compare_exchange(known, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
            return result;
        }
        let mut refused = None;
        for suite in IPMI_CIPHER_SUITES {
            match self.run_once(args, Some(&suite.to_string())).await {
                Ok(out) => {
                    self.learned_suite.store(suite, Ordering::Relaxed);
                    tracing::info!(address = %self.label(), suite, "the BMC accepts IPMI cipher suite {suite}");
                    return Ok(out);
                }
                Err(RunError::Suite(e)) => {
                    tracing::debug!(address = %self.label(), suite, error = %e, "the BMC refused this cipher suite");
                    refused = Some(e);
                }
                Err(other) => return Err(other),
            }
        }
        Err(RunError::Final(refused.expect("at least one suite tried")))
    }

    async fn run_once(&self, args: &[&str], suite: Option<&str>) -> Result<String, RunError> {
        let mut cmd = Command::new(&self.tool);
        cmd.args(["-I", "lanplus", "-H", &self.address, "-p", &self.port.to_string()]);
        cmd.args(["-R", "1", "-N", &self.message_timeout().to_string()]);
        if let Some(user) = &self.username {
            cmd.args(["-U", user]);
        }
        if let Some(suite) = suite {
            cmd.args(["-C", suite]);
        }
        cmd.arg("-E").env("IPMI_PASSWORD", self.password.expose());
        cmd.arg("-v").args(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);

        let child = cmd.spawn().map_err(|e| {
            let reason = if e.kind() == std::io::ErrorKind::NotFound {
                format!("{e}; install the ipmitool package on the kiln host")
            } else {
                e.to_string()
            };
            RunError::Final(DriverError::Tool {
                tool: self.tool.to_string_lossy().into_owned(),
                address: self.label(),
                reason,
            })
        })?;
        // Dropping the future on timeout drops the child, which kills it.
        let output = match tokio::time::timeout(self.command_timeout, child.wait_with_output()).await {
            Err(_) => {
                return Err(RunError::Final(DriverError::Timeout {
                    address: self.label(),
                    seconds: self.command_timeout.as_secs_f64().ceil() as u64,
                }));
            }
            Ok(Err(e)) => {
                return Err(RunError::Final(DriverError::Tool {
                    tool: self.tool.to_string_lossy().into_owned(),
                    address: self.label(),
                    reason: e.to_string(),
                }));
            }
            Ok(Ok(output)) => output,
        };
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = self.password.scrub(&String::from_utf8_lossy(&output.stderr));
        let stdout = self.password.scrub(&String::from_utf8_lossy(&output.stdout));
        Err(self.classify(&stderr, &stdout, output.status.code(), suite))
    }

    /// Turns a failed run's output into the error an operator can act on.
    fn classify(&self, stderr: &str, stdout: &str, code: Option<i32>, suite: Option<&str>) -> RunError {
        let said = meaningful(stderr);
        let said = if said.is_empty() { meaningful(stdout) } else { said };
        let lower = said.to_lowercase();
        let address = self.label();
        if SUITE_REFUSED.iter().any(|w| lower.contains(w)) {
            let suite = suite.unwrap_or("chosen by ipmitool");
            let detail = format!("the BMC refused IPMI cipher suite {suite} ({said})");
            return RunError::Suite(DriverError::Bmc { address, detail });
        }
        if AUTH_FAILURES.iter().any(|w| lower.contains(w)) {
            return RunError::Final(DriverError::Auth { address });
        }
        if UNREACHABLE.iter().any(|w| lower.contains(w)) {
            return RunError::Final(DriverError::Unreachable { address, reason: said });
        }
        let detail = if said.is_empty() {
            format!("ipmitool exited with status {}", code.map_or("unknown".into(), |c| c.to_string()))
        } else {
            said
        };
        let error = DriverError::Bmc { address, detail };
        if TRANSIENT.iter().any(|w| lower.contains(w)) { RunError::Transient(error) } else { RunError::Final(error) }
    }

    // ----- the calls ----------------------------------------------------------

    async fn read_power(&self) -> Result<Power, DriverError> {
        let out = self.run(&["power", "status"]).await?;
        power_of(&out).ok_or_else(|| DriverError::BadReply {
            address: self.label(),
            detail: format!("'power status' said: {}", out.trim()),
        })
    }

    async fn set_power(&self, action: PowerAction) -> Result<(), DriverError> {
        let verb = match action {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::SoftOff => "soft",
            PowerAction::Reboot if self.read_power().await? == Power::On => "cycle",
            PowerAction::Reboot => "on",
        };
        self.run(&["power", verb]).await?;
        self.wait_for(action.target()).await
    }

    /// Polls `power status` until it is `target`: at once, then every
    /// `poll_interval` (`run` adds the command spacing), for at most
    /// `power_timeout`.
    async fn wait_for(&self, target: Power) -> Result<(), DriverError> {
        let deadline = Instant::now() + self.power_timeout;
        loop {
            if self.read_power().await? == target {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DriverError::PowerTimeout {
                    address: self.label(),
                    target: if target == Power::On { "on" } else { "off" }.into(),
                    seconds: self.power_timeout.as_secs_f64().ceil() as u64,
                });
            }
            tokio::time::sleep(self.poll_interval.min(deadline - now)).await;
        }
    }

    async fn set_boot(&self, device: Boot, persistent: bool) -> Result<(), DriverError> {
        let name = match device {
            Boot::Pxe => "pxe",
            Boot::Disk => "disk",
            Boot::Cdrom => "cdrom",
            Boot::Bios => "bios",
        };
        let mut args = vec!["chassis", "bootdev", name];
        if persistent {
            args.push("options=persistent");
        }
        self.run(&args).await.map(drop)
    }

    async fn get_boot(&self) -> Result<Option<Boot>, DriverError> {
        let out = self.run(&["chassis", "bootparam", "get", "5"]).await?;
        boot_of(&out).ok_or_else(|| DriverError::BadReply {
            address: self.label(),
            detail: format!("'chassis bootparam get 5' said: {}", one_line(&out)),
        })
    }

    /// What the BMC says about itself (`mc info`): cheap, one command.
    /// Hardware facts proper (CPUs, memory) are not in IPMI's standard set.
    async fn facts(&self) -> Result<Facts, DriverError> {
        let out = self.run(&["mc", "info"]).await?;
        let mut facts = Facts::new();
        for line in out.lines() {
            let Some((key, value)) = line.split_once(':') else { continue };
            let name = match key.trim() {
                "Firmware Revision" => "bmc_firmware",
                "IPMI Version" => "ipmi_version",
                "Manufacturer Name" => "bmc_manufacturer",
                "Product Name" => "bmc_product",
                _ => continue,
            };
            let value = value.trim();
            if !value.is_empty() {
                facts.insert(name.into(), value.to_string());
            }
        }
        Ok(facts)
    }
}

impl Bmc for IpmiBmc {
    fn kind(&self) -> crate::Kind {
        crate::Kind::Ipmi
    }

    fn get_power_state(&self) -> BmcFuture<'_, Power> {
        Box::pin(self.read_power())
    }

    fn set_power_state(&self, action: PowerAction) -> BmcFuture<'_, ()> {
        Box::pin(self.set_power(action))
    }

    fn set_boot_device(&self, device: Boot, persistent: bool) -> BmcFuture<'_, ()> {
        Box::pin(self.set_boot(device, persistent))
    }

    fn get_boot_device(&self) -> BmcFuture<'_, Option<Boot>> {
        Box::pin(self.get_boot())
    }

    /// What `mc info` says, and no NICs: IPMI has no standard command
    /// that lists a system's network interfaces.
    fn inspect(&self) -> BmcFuture<'_, Inspection> {
        Box::pin(async move { Ok(Inspection { facts: self.facts().await?, nics: Vec::new() }) })
    }

    fn profile(&self) -> Profile {
        let suite = self.learned_suite.load(Ordering::Relaxed);
        Profile { ipmi_cipher_suite: (suite != 0).then_some(suite), ..Profile::default() }
    }
}

/// "Chassis Power is on" / "Chassis Power is off".
fn power_of(out: &str) -> Option<Power> {
    let line = out.lines().find(|l| l.contains("Chassis Power is"))?;
    match line.rsplit(' ').next()?.trim() {
        "on" => Some(Power::On),
        "off" => Some(Power::Off),
        _ => None,
    }
}

/// The boot device in `chassis bootparam get 5` output: `Some(None)` when the
/// override is not valid or names no device kiln sets, `None` when the
/// output cannot be read.
fn boot_of(out: &str) -> Option<Option<Boot>> {
    // IPMI 2.0 table 28-14: data byte 1 bit 7 = valid, data byte 2 bits 5:2 =
    // device selector.
    if let Some(hex) = out.lines().find_map(|l| l.trim().strip_prefix("Boot parameter data:")) {
        let hex = hex.trim();
        if let (Some(b1), Some(b2)) = (hex.get(0..2), hex.get(2..4))
            && let (Ok(b1), Ok(b2)) = (u8::from_str_radix(b1, 16), u8::from_str_radix(b2, 16))
        {
            if b1 & 0x80 == 0 {
                return Some(None);
            }
            return Some(match (b2 >> 2) & 0x0f {
                0x1 => Some(Boot::Pxe),
                0x2 | 0x3 => Some(Boot::Disk),
                0x5 => Some(Boot::Cdrom),
                0x6 => Some(Boot::Bios),
                _ => None,
            });
        }
    }
    // ipmitool's words, as Ironic reads them.
    let selector = out.lines().find_map(|l| l.split_once("Boot Device Selector :").map(|(_, s)| s.trim()))?;
    Some(if selector.contains("PXE") {
        Some(Boot::Pxe)
    } else if selector.contains("Hard-Drive") {
        Some(Boot::Disk)
    } else if selector.contains("CD/DVD") {
        Some(Boot::Cdrom)
    } else if selector.contains("BIOS") {
        Some(Boot::Bios)
    } else {
        None
    })
}

/// The lines of ipmitool's output that say something, joined on one line.
fn meaningful(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .map(|l| l.trim_start_matches('>').trim())
        .filter(|l| !l.is_empty() && !CHATTER.iter().any(|c| l.to_lowercase().starts_with(c)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    joined.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bmc() -> IpmiBmc {
        let info = [("address", "10.0.0.9"), ("password", "hunter22")];
        IpmiBmc::from_info(&info.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap()
    }

    #[test]
    fn power_status_is_read() {
        assert_eq!(power_of("Chassis Power is on\n"), Some(Power::On));
        assert_eq!(power_of("Chassis Power is off\n"), Some(Power::Off));
        assert_eq!(power_of("garbage"), None);
    }

    #[test]
    fn bootparam_5_is_read_from_its_bytes() {
        let out = "Boot parameter version: 1\nBoot parameter 5 is valid/unlocked\nBoot parameter data: 8004000000\n";
        assert_eq!(boot_of(out), Some(Some(Boot::Pxe)));
        assert_eq!(boot_of("Boot parameter data: c008000000"), Some(Some(Boot::Disk)));
        assert_eq!(boot_of("Boot parameter data: 8014000000"), Some(Some(Boot::Cdrom)));
        assert_eq!(boot_of("Boot parameter data: 8018000000"), Some(Some(Boot::Bios)));
        assert_eq!(boot_of("Boot parameter data: 0004000000"), Some(None), "not valid: no override");
        assert_eq!(boot_of("Boot parameter data: 8000000000"), Some(None), "no device");
        assert_eq!(boot_of("   - Boot Device Selector : Force PXE\n"), Some(Some(Boot::Pxe)));
        assert_eq!(boot_of("nothing useful"), None);
    }

    #[test]
    fn failures_are_classified() {
        let b = bmc();
        let wrong_password = "Loading IANA PEN Registry...\nUsing best available cipher suite 3\n\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n";
        assert!(matches!(b.classify(wrong_password, "", Some(1), None), RunError::Final(DriverError::Auth { .. })));
        let silent = "Loading IANA PEN Registry...\nGet Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\nError: Unable to establish IPMI v2 / RMCP+ session\n";
        match b.classify(silent, "", Some(1), None) {
            RunError::Final(DriverError::Unreachable { reason, .. }) => {
                assert!(!reason.contains("IANA"), "{reason}");
                assert!(reason.contains("Get Auth Capabilities error"), "{reason}");
            }
            _ => panic!("not unreachable"),
        }
        assert!(matches!(b.classify("Error: Node busy\n", "", Some(1), None), RunError::Transient(_)));
        match b.classify("", "", Some(1), None) {
            RunError::Final(DriverError::Bmc { detail, .. }) => assert_eq!(detail, "ipmitool exited with status 1"),
            _ => panic!("not a BMC error"),
        }
    }

    #[test]
    fn a_refused_cipher_suite_is_told_apart_from_a_silent_bmc() {
        let b = bmc();
        // What ipmitool 1.8.19 says when the pyghmi simulator answers `-C 17`.
        let refused = "Authentication algorithm 0x01 is not what we requested 0x03\n\nError: Unable to establish IPMI v2 / RMCP+ session\n";
        match b.classify(refused, "", Some(1), Some("17")) {
            RunError::Suite(DriverError::Bmc { detail, .. }) => assert!(detail.contains("cipher suite 17"), "{detail}"),
            _ => panic!("not a refused suite"),
        }
    }

    #[test]
    fn message_timeout_leaves_room_for_the_kill() {
        let mut b = bmc();
        assert_eq!(b.message_timeout(), 5);
        b.command_timeout = Duration::from_secs(3);
        assert_eq!(b.message_timeout(), 1);
        b.command_timeout = Duration::from_millis(500);
        assert_eq!(b.message_timeout(), 1);
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", bmc());
        assert!(!shown.contains("hunter22") && shown.contains("******"), "{shown}");
    }
}
