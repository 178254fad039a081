//! What the node knows of its BMC: when it last answered, since when it
//! cannot be reached, when it last confirmed the power state, and how long
//! power sync leaves it alone.
//!
//! Why: in a real hall hundreds of BMCs are dead at any time. Without a
//! memory of that, every power sync cycle pays a connect timeout per dead
//! BMC (xCAT's `rpower` took 48 minutes on 500 dead BMCs). So a call that
//! finds the BMC unreachable (the typed `DriverError::Unreachable`: no
//! connection within the connect timeout, refused, no answer to the IPMI
//! probe; not a request timeout, which a BMC that accepted the connection
//! earns) marks the node, and power sync skips it until a backoff ends:
//! exponential from [`BASE`], capped at [`CAP`], and jittered by ±20% so
//! that BMCs that died together are not retried together. The jitter is a
//! hash of the node and the attempt, not a random draw, so the core stays a
//! function of its inputs and its tests are exact. Any successful call (an
//! operator's `power on` too) clears the mark at once.
//!
//! The mark and the last contact are stored with the node (they survive a
//! restart); a call that succeeds only moves the in-memory times, written
//! with the node's next commit, so a healthy power sync commits nothing.
//! The backoff itself is memory: after a restart a marked node is tried at
//! the first cycle.
//!
//! The BMC's profile (its quirks as the driver learned them: Redfish auth,
//! sessions, IPMI cipher suite) is kept here too: each driver reply brings
//! the client's [`Profile`]; when its facts differ from the known ones they
//! are taken with the time, and stored like the mark: with the next
//! commit, and by power sync at once (so a restart finds them). The
//! profile goes back into the client at the next connection
//! (`node/connect.rs`). It is forgotten when the BMC settings change or an
//! operator resets it.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use kiln_drivers::{Profile, RedfishAuth};
use kiln_store::{BmcAuth, BmcProfile, NodeRecord, Timestamp};

/// The first backoff after a BMC was found unreachable.
pub const BASE: Duration = Duration::from_secs(30);
/// The longest backoff.
pub const CAP: Duration = Duration::from_secs(30 * 60);

/// A node's BMC contact, as the core keeps it between commits.
#[derive(Clone, Debug, Default)]
pub(in crate::node) struct Contact {
    last_contact: Option<Timestamp>,
    unreachable_since: Option<Timestamp>,
    power_verified_at: Option<Timestamp>,
    /// Unreachable findings in a row.
    failures: u32,
    /// Power sync leaves the BMC alone until then.
    retry_at: Option<Timestamp>,
    /// Seeds the jitter (the node's uuid).
    seed: u64,
    /// What was learned about the BMC's quirks.
    profile: Option<BmcProfile>,
}

impl Contact {
    /// What `record` says (a restart starts the backoff afresh).
    pub(in crate::node) fn of(record: &NodeRecord) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        record.uuid.hash(&mut h);
        Contact {
            last_contact: record.bmc_last_contact,
            unreachable_since: record.bmc_unreachable_since,
            power_verified_at: record.power_verified_at,
            failures: u32::from(record.bmc_unreachable_since.is_some()),
            retry_at: None,
            seed: h.finish(),
            profile: record.bmc_profile.clone(),
        }
    }

    /// A driver reply brought the client's `learned` profile at `now`: taken
    /// when it says something new.
    pub(in crate::node) fn learned(&mut self, now: Timestamp, learned: &Profile) {
        if learned.is_empty() {
            return;
        }
        let next = store_profile(learned, now);
        if self.profile.as_ref().is_none_or(|known| !known.same_facts(&next)) {
            self.profile = Some(next);
        }
    }

    /// Forgets the profile (settings changed, or an operator's reset).
    pub(in crate::node) fn forget_profile(&mut self) {
        self.profile = None;
    }

    /// The BMC answered at `now`; `power` when the answer confirmed the
    /// node's power state.
    pub(in crate::node) fn answered(&mut self, now: Timestamp, power: bool) {
        self.last_contact = Some(now);
        self.unreachable_since = None;
        self.failures = 0;
        self.retry_at = None;
        if power {
            self.power_verified_at = Some(now);
        }
    }

    /// A call found the BMC unreachable at `now`: marks it, and backs off.
    pub(in crate::node) fn unreachable(&mut self, now: Timestamp) {
        self.unreachable_since.get_or_insert(now);
        self.failures = self.failures.saturating_add(1);
        let wait = backoff(self.failures, self.seed);
        self.retry_at = Some(now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX));
    }

    /// The BMC may be another one now (its settings changed): the next
    /// sync tries it at once. The mark stays until a call succeeds.
    pub(in crate::node) fn reset_backoff(&mut self) {
        self.retry_at = None;
    }

    /// Whether nothing is known beyond what a record carries: no
    /// unreachable findings in a row, no backoff under way.
    pub(in crate::node) fn settled(&self) -> bool {
        self.failures == 0 && self.retry_at.is_none()
    }

    /// When the BMC last confirmed the node's power state.
    pub(in crate::node) fn power_verified_at(&self) -> Option<Timestamp> {
        self.power_verified_at
    }

    /// Until when power sync leaves the BMC alone, if it is backing off now.
    pub(in crate::node) fn backing_off(&self, now: Timestamp) -> Option<Timestamp> {
        self.retry_at.filter(|at| now < *at)
    }

    /// Writes what is known into `record` (before it is committed or shown).
    pub(in crate::node) fn stamp(&self, record: &mut NodeRecord) {
        record.bmc_last_contact = self.last_contact;
        record.bmc_unreachable_since = self.unreachable_since;
        record.power_verified_at = self.power_verified_at;
        record.bmc_profile = self.profile.clone();
    }

    /// Whether the stored mark is not the one known now (a commit is due).
    pub(in crate::node) fn mark_differs(&self, record: &NodeRecord) -> bool {
        record.bmc_unreachable_since.is_some() != self.unreachable_since.is_some() || record.bmc_profile != self.profile
    }
}

/// A driver's profile as the store keeps it, learned at `at`.
pub fn store_profile(p: &Profile, at: Timestamp) -> BmcProfile {
    BmcProfile {
        redfish_auth: p.redfish_auth.map(|a| match a {
            RedfishAuth::Basic => BmcAuth::Basic,
            RedfishAuth::Session => BmcAuth::Session,
        }),
        redfish_sessions: p.redfish_sessions,
        ipmi_cipher_suite: p.ipmi_cipher_suite,
        learned_at: at,
    }
}

/// A stored profile as a driver takes it back.
pub fn driver_profile(p: &BmcProfile) -> Profile {
    Profile {
        redfish_auth: p.redfish_auth.map(|a| match a {
            BmcAuth::Basic => RedfishAuth::Basic,
            BmcAuth::Session => RedfishAuth::Session,
        }),
        redfish_sessions: p.redfish_sessions,
        ipmi_cipher_suite: p.ipmi_cipher_suite,
    }
}

/// The wait after the `failures`-th unreachable finding in a row:
/// [`BASE`] doubled per finding, at most [`CAP`], times a jitter between
/// 0.8 and 1.2 drawn from `seed` and `failures`.
pub fn backoff(failures: u32, seed: u64) -> Duration {
    let doubled = BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let plain = doubled.min(CAP);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (seed, failures).hash(&mut h);
    let unit = (h.finish() % 10_000) as f64 / 10_000.0;
    plain.mul_f64(0.8 + 0.4 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_the_cap_within_its_jitter() {
        for seed in [0, 1, 42, u64::MAX] {
            let mut last = Duration::ZERO;
            for failures in 1..=20 {
                let plain = BASE.saturating_mul(1 << (failures - 1).min(16)).min(CAP);
                let got = backoff(failures, seed);
                assert!(got >= plain.mul_f64(0.8) && got <= plain.mul_f64(1.2), "{failures}: {got:?}");
                if plain < CAP / 2 {
                    // Doubling outgrows the jitter: each wait is longer.
                    assert!(got > last, "{failures}: {got:?} after {last:?}");
                }
                last = got;
            }
            assert!(backoff(20, seed) <= CAP.mul_f64(1.2));
        }
        // Nodes that failed together are spread.
        let waits: std::collections::BTreeSet<Duration> = (0..50).map(|seed| backoff(1, seed)).collect();
        assert!(waits.len() > 40, "{waits:?}");
    }
}
