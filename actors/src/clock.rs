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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// What time it is, for the site's decisions.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall time: stamps that are stored and shown.
    fn now(&self) -> DateTime<Utc>;
    /// Monotonic time: durations and deadlines within this process.
    fn instant(&self) -> Instant;
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
}

/// The clock a site gets unless told otherwise.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that stands still until [`ManualClock::advance`] moves it; both
/// readings move together.
#[derive(Debug, Clone)]
pub struct ManualClock {
    at: Arc<Mutex<(DateTime<Utc>, Instant)>>,
}

impl ManualClock {
    /// A clock stopped at `wall` (its monotonic reading starts at the real
    /// `Instant::now()`, the only way to make an `Instant`).
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        ManualClock { at: Arc::new(Mutex::new((wall, Instant::now()))) }
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        at.0 += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        at.1 += by;
    }

    /// This clock as the actors hold it (the same clock: advancing one
    /// advances the other).
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.at.lock().unwrap_or_else(|e| e.into_inner()).0
    }
    fn instant(&self) -> Instant {
        self.at.lock().unwrap_or_else(|e| e.into_inner()).1
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
    fn the_system_clock_does_not_go_back() {
        let c = system();
        let a = c.instant();
        assert!(c.instant() >= a);
    }
}
