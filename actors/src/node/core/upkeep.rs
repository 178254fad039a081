//! Periodic upkeep of one node, decided in the core: power sync, recovery
//! from a power failure, failing a wait state that timed out. Each is a
//! short exclusive task that never waits for the lock: a busy node (a task,
//! waiters, a hold, shutdown) is skipped and done on a later run, as
//! Ironic's periodic tasks skip reserved nodes.

use kiln_drivers::{DriverError, PowerAction};
use kiln_store::{NodeRecord, PowerState};
use tokio::sync::oneshot;

use super::super::upkeep::{POWER_FAILURE, SyncOutcome, WaitTimeouts};
use super::ops::power_state_of;
use super::{AfterCall as Call, AfterCommit as Commit, NodeCore};
use crate::KilnError;
use crate::driver::{DriverCall, DriverReply};
use crate::events::EventKind;
use crate::fsm::{self, Event, StateClass};
use crate::node::effects::Answer;

/// What follows an upkeep driver call.
pub(super) enum AfterCall {
    /// The power read of a sync.
    SyncRead { reply: oneshot::Sender<SyncOutcome>, force: bool, max_retries: u32 },
    /// Setting the BMC back to the recorded state.
    SyncForced { reply: oneshot::Sender<SyncOutcome>, want: PowerState },
    /// The power read of a recovery.
    RecoverRead { reply: oneshot::Sender<bool> },
}

/// What follows an upkeep commit.
pub(super) enum AfterCommit {
    SyncUpdated {
        reply: oneshot::Sender<SyncOutcome>,
        from: Option<PowerState>,
        to: PowerState,
    },
    PowerFailed {
        reply: oneshot::Sender<SyncOutcome>,
        attempts: u32,
        error: String,
    },
    Recovered {
        reply: oneshot::Sender<bool>,
    },
    /// The BMC's reachability is stored: answer the sync with `outcome`.
    Marked {
        reply: oneshot::Sender<SyncOutcome>,
        outcome: SyncOutcome,
    },
    Expired {
        reply: oneshot::Sender<bool>,
        error: String,
    },
}

impl NodeCore {
    pub(super) fn sync_power(&mut self, force: bool, max_retries: u32, reply: oneshot::Sender<SyncOutcome>) {
        let skip = sync_skip(self.node.record(), self.busy());
        if let Some(why) = skip {
            return self.answer(Answer::Sync(reply, SyncOutcome::Skipped(why.into())));
        }
        // A BMC found unreachable is left alone until its backoff ends,
        // rather than costing a connect timeout every cycle.
        if let Some(until) = self.contact.backing_off(self.clock.now()) {
            let until = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            return self.answer(Answer::Sync(
                reply,
                SyncOutcome::BackedOff { until, verified_at: self.contact.power_verified_at() },
            ));
        }
        self.hold_for_upkeep("power sync");
        self.call(DriverCall::GetPower, Call::Upkeep(AfterCall::SyncRead { reply, force, max_retries }));
    }

    /// Counts a failed power read; at `max_retries` in a row the node goes to
    /// maintenance with fault `power failure` (committed, with history).
    fn power_read_failed(&mut self, error: String, max_retries: u32, reply: oneshot::Sender<SyncOutcome>) {
        self.power_failures += 1;
        let attempts = self.power_failures;
        if attempts < max_retries.max(1) {
            let verified_at = self.contact.power_verified_at();
            let outcome = SyncOutcome::Failed { attempts, maintenance: false, error, verified_at };
            return self.answer_sync_marked(reply, outcome);
        }
        let mut next = self.node.record().clone();
        next.maintenance = true;
        next.fault = Some(POWER_FAILURE.into());
        next.maintenance_reason = Some(format!("power state could not be read {attempts} times in a row"));
        next.last_error = Some(error.clone());
        let state = next.provision_state;
        let entry = self.history("power failure", state, state, Some(error.clone()));
        self.commit(next, vec![entry], Commit::Upkeep(AfterCommit::PowerFailed { reply, attempts, error }));
    }

    /// Answers a sync with `outcome`; first, when the BMC's reachability
    /// is not the one stored, commits the node with it (so the mark, and
    /// the last contact, survive a restart).
    fn answer_sync_marked(&mut self, reply: oneshot::Sender<SyncOutcome>, outcome: SyncOutcome) {
        if !self.contact_changed() {
            self.answer(Answer::Sync(reply, outcome));
            return self.release();
        }
        let next = self.node.record().clone();
        self.commit(next, vec![], Commit::Upkeep(AfterCommit::Marked { reply, outcome }));
    }

    pub(super) fn recover_power_failure(&mut self, reply: oneshot::Sender<bool>) {
        let record = self.node.record();
        let failed = power_failed(record);
        // An unreachable BMC is tried again when its backoff ends, by
        // recovery as by power sync.
        let backing_off = self.contact.backing_off(self.clock.now()).is_some();
        if !failed || self.busy() || backing_off {
            return self.answer(Answer::Done(reply, false));
        }
        self.hold_for_upkeep("power failure recovery");
        self.call(DriverCall::GetPower, Call::Upkeep(AfterCall::RecoverRead { reply }));
    }

    pub(super) fn expire_wait(&mut self, timeouts: WaitTimeouts, reply: oneshot::Sender<bool>) {
        let record = self.node.record();
        let state = record.provision_state;
        let (timeout, setting) = timeouts.of(state);
        // From when the wait began: a node that asked for a callback keeps
        // that time, so an operation while it waits (a power action) does
        // not restart the clock.
        let since = record.callback.as_ref().map_or(record.updated_at, |c| c.since);
        let waited = (self.clock.now() - since).to_std().unwrap_or_default();
        // A node in maintenance is left as it is, as by every periodic task
        // (Ironic's deploy timeout check filters maintenance out too).
        if fsm::class(state) != StateClass::Wait || waited < timeout || self.busy() || record.maintenance {
            return self.answer(Answer::Done(reply, false));
        }
        let Ok(to) = fsm::step(state, Event::Fail) else { return self.answer(Answer::Done(reply, false)) };
        let error = format!("timed out in '{state}' after {} s ({setting})", timeout.as_secs());
        let mut next = record.clone();
        next.provision_state = to;
        next.target_provision_state = None;
        next.last_error = Some(error.clone());
        self.hold_for_upkeep("wait timeout");
        let entry = self.history("fail", state, to, Some(error.clone()));
        self.commit(next, vec![entry], Commit::Upkeep(AfterCommit::Expired { reply, error }));
    }

    pub(super) fn upkeep_replied(&mut self, then: AfterCall, result: Result<DriverReply, DriverError>) {
        match then {
            AfterCall::SyncRead { reply, force, max_retries } => {
                let read = match result {
                    Ok(DriverReply::Power(p)) => power_state_of(p),
                    Ok(other) => {
                        return self.power_read_failed(format!("unexpected reply {other:?}"), max_retries, reply);
                    }
                    Err(e) => return self.power_read_failed(e.to_string(), max_retries, reply),
                };
                self.power_failures = 0;
                let recorded = self.node.record().power_state;
                if recorded == Some(read) {
                    return self.answer_sync_marked(reply, SyncOutcome::InSync);
                }
                if force && let Some(want) = recorded {
                    let action = match want {
                        PowerState::On => PowerAction::On,
                        PowerState::Off => PowerAction::Off,
                    };
                    let then = Call::Upkeep(AfterCall::SyncForced { reply, want });
                    return self.call(DriverCall::SetPower(action), then);
                }
                let mut next = self.node.record().clone();
                next.power_state = Some(read);
                let state = next.provision_state;
                let entry = self.history("power sync", state, state, None);
                let then = AfterCommit::SyncUpdated { reply, from: recorded, to: read };
                self.commit(next, vec![entry], Commit::Upkeep(then));
            }
            AfterCall::SyncForced { reply, want } => {
                let outcome = match result {
                    Ok(_) => SyncOutcome::Forced { to: want },
                    Err(e) => SyncOutcome::Failed {
                        attempts: 1,
                        maintenance: false,
                        error: e.to_string(),
                        verified_at: self.contact.power_verified_at(),
                    },
                };
                self.answer(Answer::Sync(reply, outcome));
                self.release();
            }
            AfterCall::RecoverRead { reply } => {
                let Ok(DriverReply::Power(p)) = result else {
                    self.answer(Answer::Done(reply, false));
                    return self.release();
                };
                self.power_failures = 0;
                let mut next = self.node.record().clone();
                next.maintenance = false;
                next.maintenance_reason = None;
                next.fault = None;
                next.power_state = Some(power_state_of(p));
                let state = next.provision_state;
                let entry = self.history("power recovered", state, state, None);
                self.commit(next, vec![entry], Commit::Upkeep(AfterCommit::Recovered { reply }));
            }
        }
    }

    pub(super) fn upkeep_committed(&mut self, then: AfterCommit, result: Result<(), KilnError>) {
        let ok = result.is_ok();
        match then {
            AfterCommit::SyncUpdated { reply, from, to } => {
                if ok {
                    self.publish(EventKind::End, None);
                }
                self.answer(Answer::Sync(reply, SyncOutcome::Updated { from, to }));
            }
            AfterCommit::PowerFailed { reply, attempts, error } => {
                if ok {
                    tracing::warn!(attempts, error = %error, "power state unreadable; node put in maintenance");
                    self.publish(EventKind::Error, Some(error.clone()));
                }
                let verified_at = self.contact.power_verified_at();
                let outcome = SyncOutcome::Failed { attempts, maintenance: ok, error, verified_at };
                self.answer(Answer::Sync(reply, outcome));
            }
            AfterCommit::Marked { reply, outcome } => self.answer(Answer::Sync(reply, outcome)),
            AfterCommit::Recovered { reply } => {
                if ok {
                    self.publish(EventKind::End, None);
                }
                self.answer(Answer::Done(reply, ok));
            }
            AfterCommit::Expired { reply, error } => {
                if ok {
                    tracing::warn!(error = %error, "wait timed out; node failed");
                    self.publish(EventKind::Error, Some(error));
                }
                self.answer(Answer::Done(reply, ok));
            }
        }
        self.release();
    }
}

/// Why power sync leaves a node alone (`busy`: a task runs, waits or
/// holds it), if it does: the record alone answers for a node at rest.
pub(crate) fn sync_skip(record: &NodeRecord, busy: bool) -> Option<&'static str> {
    if record.maintenance {
        Some("maintenance")
    } else if record.provision_state == kiln_store::ProvisionState::Enroll {
        // As Ironic: a node in enroll is not managed yet, and its BMC may
        // not be set up; reading it would only put it in maintenance.
        Some("enroll")
    } else if busy {
        Some("reserved")
    } else if record.target_power_state.is_some() {
        Some("power target set")
    } else {
        None
    }
}

/// Whether power failure recovery has anything to try on `record`.
pub(crate) fn power_failed(record: &NodeRecord) -> bool {
    record.maintenance && record.fault.as_deref() == Some(POWER_FAILURE)
}
