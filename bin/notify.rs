//! The systemd notify protocol (`sd_notify(3)`), without libsystemd: one
//! datagram of `KEY=VALUE` lines to the Unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//!
//! The daemon says `READY=1` once its admin socket accepts, `RELOADING=1`
//! and `READY=1` around a SIGHUP reload, `STOPPING=1` when it begins to
//! shut down, and `WATCHDOG=1` every half `$WATCHDOG_USEC` while the site
//! answers a health check, so a wedged daemon is restarted by systemd
//! (`WatchdogSec=`). Without `$NOTIFY_SOCKET` every call does nothing, so
//! the same binary runs under systemd, under another supervisor or by hand.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go, if anywhere.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = match path.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
                None => SocketAddr::from_pathname(&path),
            };
            let socket = UnixDatagram::unbound();
            match (addr, socket) {
                (Ok(a), Ok(s)) => Some((s, a)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(notify_socket = %path, error = %e, "cannot use NOTIFY_SOCKET; not notifying");
                    None
                }
            }
        });
        // The watchdog is ours only if WATCHDOG_PID is unset or names us.
        let ours = std::env::var("WATCHDOG_PID").map_or(true, |pid| pid.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|us| us.trim().parse::<u64>().ok())
            .filter(|&us| us > 0 && ours)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half the manager's timeout.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref().and(self.watchdog).map(|t| t / 2)
    }

    /// Sends one notification (`"READY=1\nSTATUS=serving"`). A failure is
    /// logged, never fatal: the daemon's work does not depend on it.
    pub fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.target
            && let Err(e) = socket.send_to_addr(state.as_bytes(), addr)
        {
            tracing::warn!(error = %e, state, "cannot notify the service manager");
        }
    }

    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    /// `RELOADING=1` with the monotonic time systemd asks of `Type=notify-reload`.
    pub fn reloading(&self) {
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration", monotonic_usec()));
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=shutting down");
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into memory we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}
