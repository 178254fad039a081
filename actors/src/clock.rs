//! The site's clock: the one place an actor asks what time it is.
//!
//! Every decision that depends on time (a node's wait deadline, `lock_wait`,
//! power-sync backoff, the archive age, a job's timestamps) takes its `now`
//! from a [`Clock`], never from `Utc::now()` or `Instant::now()` directly.
//! The plain cores under the actors go one step further: they read no clock
//! at all and take `now` as an argument, so a test passes made-up instants.
//! The actors read a [`Clock`] and hand the reading on; in production it is
//! [`SystemClock`], in tests a [`ManualClock`] that moves only when told.
//!
//! Two readings, because they answer two questions: [`Clock::now`] is wall
//! time (what is stored and shown, comparable across restarts), and
//! [`Clock::instant`] is monotonic time (how long something has taken,
//! immune to the wall clock being set back).
//!
//! Waits go through the clock too ([`Clock::sleep`]: a node's `lock_wait`,
//! the job long poll's timeout, the `sleep` opcode), so a test on a
//! [`ManualClock`] sees a timeout happen when it advances the clock, with no
//! real waiting and no race against a timer. (The scheduler keeps its own
//! design, tokio's paused clock, see `scheduler.rs`.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

/// What time it is, for the site's decisions.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall time: stamps that are stored and shown.
    fn now(&self) -> DateTime<Utc>;
    /// Monotonic time: durations and deadlines within this process.
    fn instant(&self) -> Instant;
    /// Completes once `duration` has passed on this clock. It needs a tokio
    /// runtime only on the system clock.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// The shared handle the actors hold.
pub type SharedClock = Arc<dyn Clock>;

/// The real clocks of the machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        tokio::time::sleep(duration).boxed()
    }
}

/// The clock a site gets unless told otherwise.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that stands still until [`ManualClock::advance`] moves it; both
/// readings move together, and the sleeps whose time has come end.
#[derive(Debug, Clone)]
pub struct ManualClock {
    at: Arc<Mutex<Manual>>,
}

#[derive(Debug)]
struct Manual {
    wall: DateTime<Utc>,
    instant: Instant,
    /// Each sleep under way: when it ends, and whom to wake then.
    sleepers: Vec<(Instant, oneshot::Sender<()>)>,
}

impl ManualClock {
    /// A clock stopped at `wall` (its monotonic reading starts at the real
    /// `Instant::now()`, the only way to make an `Instant`).
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        let manual = Manual { wall, instant: Instant::now(), sleepers: Vec::new() };
        ManualClock { at: Arc::new(Mutex::new(manual)) }
    }

    /// Moves both readings forward by `by` and ends the sleeps due by then.
    pub fn advance(&self, by: Duration) {
        let due = {
            let mut at = self.lock();
            at.wall += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
            at.instant += by;
            let now = at.instant;
            let (due, later) = std::mem::take(&mut at.sleepers).into_iter().partition(|(end, _)| *end <= now);
            at.sleepers = later;
            due
        };
        // Woken outside the lock: a woken task may read the clock.
        for (_, wake) in due {
            let _ = wake.send(());
        }
    }

    /// How many sleeps are under way (a test waits for a timer to be set
    /// before it advances the clock past it).
    pub fn sleepers(&self) -> usize {
        let mut at = self.lock();
        at.sleepers.retain(|(_, wake)| !wake.is_closed());
        at.sleepers.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Manual> {
        self.at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This clock as the actors hold it (the same clock: advancing one
    /// advances the other).
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.lock().wall
    }
    fn instant(&self) -> Instant {
        self.lock().instant
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        if duration.is_zero() {
            return futures::future::ready(()).boxed();
        }
        let mut at = self.lock();
        // A wait too long to have an end never ends.
        let Some(end) = at.instant.checked_add(duration) else { return futures::future::pending().boxed() };
        let (wake, woken) = oneshot::channel();
        at.sleepers.push((end, wake));
        async move {
            // A clock dropped with the sleep under way ends it too.
            let _ = woken.await;
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_both_readings_together() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        let clock = ManualClock::starting_at(start);
        let shared = clock.shared();
        let (w0, i0) = (shared.now(), shared.instant());
        assert_eq!(w0, start);
        assert_eq!(shared.now(), w0, "a manual clock stands still");
        clock.advance(Duration::from_secs(90));
        assert_eq!(shared.now() - w0, chrono::Duration::seconds(90));
        assert_eq!(shared.instant() - i0, Duration::from_secs(90));
    }

    #[test]
    fn a_manual_sleep_ends_when_the_clock_passes_its_end_and_not_before() {
        let clock = ManualClock::starting_at(Utc::now());
        let mut short = clock.sleep(Duration::from_secs(5));
        let mut long = clock.sleep(Duration::from_secs(60));
        let mut never = clock.sleep(Duration::MAX);
        let poll = |f: &mut BoxFuture<'static, ()>| f.as_mut().now_or_never().is_some();
        assert!(!poll(&mut short));
        assert_eq!(clock.sleepers(), 2);
        clock.advance(Duration::from_secs(4));
        assert!(!poll(&mut short), "a second early");
        clock.advance(Duration::from_secs(1));
        assert!(poll(&mut short));
        assert!(!poll(&mut long));
        clock.advance(Duration::from_secs(3600));
        assert!(poll(&mut long));
        assert!(!poll(&mut never));
        assert!(poll(&mut clock.sleep(Duration::ZERO)), "a zero sleep ends at once");
    }

    #[test]
    fn the_system_clock_does_not_go_back() {
        let c = system();
        let a = c.instant();
        assert!(c.instant() >= a);
    }
}
