//! How many BMC calls a sweep over every node (power sync) keeps in flight:
//! a number that adapts to what the BMCs and this process sustain, within the
//! operator's maximum, so that the default settings meet the power-sync
//! target without anyone raising a knob.
//!
//! It works in windows of about one round trip: a window ends once as many
//! calls have finished as the limit allowed in flight when it began. At the
//! end of a window
//!
//! - trouble (more than a tenth of its calls failed, or their mean latency is
//!   more than twice the best window's) cuts the limit to three quarters;
//! - otherwise the limit doubles while it has never met trouble (slow start,
//!   as TCP's), and afterwards grows by a tenth.
//!
//! Judging a whole window, not each call, keeps a few dead BMCs (each fails
//! once per backoff period, after its connect timeout) from dragging a
//! healthy fleet's sweep down: only failures in numbers count as trouble.
//! Calls that never reached a BMC (a node backed off or skipped) say nothing
//! about the BMCs and are not counted.

use std::time::Duration;

/// Failed share of a window's calls above which the window is trouble.
const FAILED_SHARE: f64 = 0.1;
/// Mean latency, as a multiple of the best window's, above which a window is
/// trouble.
const SLOWER: f64 = 2.0;

/// The adaptive limit of one sweep.
#[derive(Debug)]
pub struct AdaptiveLimit {
    limit: usize,
    min: usize,
    max: usize,
    /// No trouble seen yet: the limit doubles per window.
    slow_start: bool,
    /// The lowest mean latency of a window so far.
    best: Option<Duration>,
    window: Window,
}

#[derive(Debug, Default)]
struct Window {
    /// Calls to count before the window ends (the limit when it began).
    size: usize,
    done: usize,
    failed: usize,
    latency_sum: Duration,
}

impl AdaptiveLimit {
    /// A limit that starts at `initial` and stays within `min..=max`
    /// (`initial` and `min` are brought within `1..=max`).
    pub fn new(initial: usize, min: usize, max: usize) -> AdaptiveLimit {
        let max = max.max(1);
        let min = min.clamp(1, max);
        let limit = initial.clamp(min, max);
        AdaptiveLimit {
            limit,
            min,
            max,
            slow_start: true,
            best: None,
            window: Window { size: limit, ..Default::default() },
        }
    }

    /// Calls to keep in flight now.
    pub fn current(&self) -> usize {
        self.limit
    }

    /// One call that reached a BMC finished after `latency`; `failed`: it
    /// failed (timeout, refusal, an error answer).
    pub fn record(&mut self, latency: Duration, failed: bool) {
        let w = &mut self.window;
        w.done += 1;
        if failed {
            w.failed += 1;
        } else {
            w.latency_sum += latency;
        }
        if w.done >= w.size {
            self.end_window();
        }
    }

    fn end_window(&mut self) {
        let w = std::mem::take(&mut self.window);
        let succeeded = w.done - w.failed;
        let mean = (succeeded > 0).then(|| w.latency_sum / succeeded as u32);
        if let Some(mean) = mean {
            self.best = Some(self.best.map_or(mean, |b| b.min(mean)));
        }
        let too_slow = match (mean, self.best) {
            (Some(mean), Some(best)) => mean.as_secs_f64() > best.as_secs_f64() * SLOWER,
            _ => false,
        };
        let too_many_failed = w.failed as f64 > w.done as f64 * FAILED_SHARE;
        self.limit = if too_slow || too_many_failed {
            self.slow_start = false;
            (self.limit * 3 / 4).max(self.min)
        } else if self.slow_start {
            self.limit.saturating_mul(2).min(self.max)
        } else {
            (self.limit + (self.limit / 10).max(1)).min(self.max)
        };
        self.window = Window { size: self.limit, ..Default::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `n` calls of `latency`, `failed` of them failures.
    fn feed(l: &mut AdaptiveLimit, n: usize, latency: Duration, failed: usize) {
        for i in 0..n {
            l.record(latency, i < failed);
        }
    }

    #[test]
    fn doubles_per_window_while_latency_holds_up_to_the_maximum() {
        let mut l = AdaptiveLimit::new(64, 1, 1000);
        let mut seen = vec![l.current()];
        for _ in 0..6 {
            let n = l.current();
            feed(&mut l, n, 100 * MS, 0);
            seen.push(l.current());
        }
        assert_eq!(seen, [64, 128, 256, 512, 1000, 1000, 1000]);
    }

    #[test]
    fn latency_rising_past_twice_the_best_cuts_by_a_quarter_then_grows_by_a_tenth() {
        let mut l = AdaptiveLimit::new(100, 1, 10_000);
        feed(&mut l, 100, 100 * MS, 0);
        assert_eq!(l.current(), 200);
        feed(&mut l, 200, 250 * MS, 0);
        assert_eq!(l.current(), 150);
        // Out of slow start: a good window adds a tenth, not double.
        feed(&mut l, 150, 100 * MS, 0);
        assert_eq!(l.current(), 165);
        // Slower, but within twice the best: still growing.
        feed(&mut l, 165, 190 * MS, 0);
        assert_eq!(l.current(), 181);
    }

    #[test]
    fn failures_in_numbers_cut_but_a_few_dead_bmcs_do_not() {
        let mut l = AdaptiveLimit::new(100, 10, 10_000);
        // 5 of 100 failed (a few dead BMCs): not trouble.
        feed(&mut l, 100, 100 * MS, 5);
        assert_eq!(l.current(), 200);
        // 40 of 200 failed: trouble.
        feed(&mut l, 200, 100 * MS, 40);
        assert_eq!(l.current(), 150);
        // A window where everything failed has no latency to judge; it is
        // still trouble, and the limit never goes below its minimum.
        for _ in 0..30 {
            let n = l.current();
            feed(&mut l, n, 3000 * MS, n);
        }
        assert_eq!(l.current(), 10);
    }

    #[test]
    fn settings_out_of_range_are_brought_in() {
        assert_eq!(AdaptiveLimit::new(5000, 1, 256).current(), 256);
        assert_eq!(AdaptiveLimit::new(0, 0, 0).current(), 1);
        assert_eq!(AdaptiveLimit::new(1, 64, 32).current(), 32);
    }
}
