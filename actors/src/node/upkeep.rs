//! What periodic tasks ask of one node: sync its power state with the BMC,
//! recover it from a power failure, fail it out of a wait state that timed
//! out. Each is a short exclusive task that never waits for the lock: a node
//! that is busy is skipped, and done on a later run (as Ironic's periodic
//! tasks skip reserved nodes).

use std::collections::VecDeque;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use kiln_store::{PowerState, ProvisionState};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::actor::{NodeActor, Task, power_state_of};
use crate::driver::{DriverCall, DriverReply};
use crate::events::EventKind;
use crate::fsm::{self, Event, StateClass};

/// The fault a node gets when its power state cannot be read.
pub const POWER_FAILURE: &str = "power failure";

/// What a power sync did to one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncOutcome {
    /// Not looked at: in maintenance, in enroll, reserved, or with a power
    /// target.
    Skipped(String),
    InSync,
    /// The record took the BMC's state.
    Updated {
        from: Option<PowerState>,
        to: PowerState,
    },
    /// The BMC was set back to the recorded state.
    Forced {
        to: PowerState,
    },
    /// The read failed; `maintenance` when this failure put the node there.
    Failed {
        attempts: u32,
        maintenance: bool,
        error: String,
    },
}

/// Reads the node's power state and reconciles it with the record.
#[derive(Debug, Message)]
#[rtype(result = "SyncOutcome")]
pub struct SyncPower {
    /// Set the BMC to the recorded state instead of recording the BMC's.
    pub force: bool,
    /// Failed reads in a row that put the node in maintenance.
    pub max_retries: u32,
}

/// Takes a node with fault `power failure` out of maintenance once its
/// power state can be read again. Answers whether it did.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct RecoverPowerFailure;

/// Fails a node out of a wait state it has been in longer than `timeout`.
/// Answers whether it did.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct ExpireWait {
    pub timeout: Duration,
}

impl NodeActor {
    fn busy(&self) -> bool {
        self.task.is_some() || !self.waiters.is_empty() || self.closing.is_some() || self.held_by.is_some()
    }

    /// Holds the node for an upkeep task (no caller waits on it).
    fn hold(&mut self, purpose: &str) {
        self.reserve(purpose.into());
        self.task = Some(Task {
            reply: None,
            wait: false,
            action: purpose.into(),
            draft: self.record.clone(),
            steps: VecDeque::new(),
            span: self.task_span(purpose, &tracing::Span::none()),
        });
    }
}

fn answer<T: Send + 'static>(rx: oneshot::Receiver<T>, fallback: T) -> ResponseFuture<T> {
    Box::pin(async move { rx.await.unwrap_or(fallback) })
}

impl Handler<SyncPower> for NodeActor {
    type Result = ResponseFuture<SyncOutcome>;

    fn handle(&mut self, msg: SyncPower, ctx: &mut Context<Self>) -> Self::Result {
        let skip = |why: &str| -> Self::Result {
            let why = why.to_string();
            Box::pin(async move { SyncOutcome::Skipped(why) })
        };
        if self.record.maintenance {
            return skip("maintenance");
        }
        // As Ironic: a node in enroll is not managed yet, and its BMC may
        // not be set up; reading it would only put it in maintenance.
        if self.record.provision_state == ProvisionState::Enroll {
            return skip("enroll");
        }
        if self.busy() {
            return skip("reserved");
        }
        if self.record.target_power_state.is_some() {
            return skip("power target set");
        }
        let (tx, rx) = oneshot::channel();
        self.hold("power sync");
        let driver = match self.driver() {
            Ok(d) => d,
            Err(e) => {
                self.power_read_failed(e.to_string(), msg.max_retries, tx, ctx);
                return answer(rx, SyncOutcome::Skipped("stopped".into()));
            }
        };
        self.call(driver.clone(), DriverCall::GetPower, ctx, move |act, ctx, res| {
            let read = match res {
                Ok(DriverReply::Power(p)) => power_state_of(p),
                Ok(other) => {
                    return act.power_read_failed(format!("unexpected reply {other:?}"), msg.max_retries, tx, ctx);
                }
                Err(e) => return act.power_read_failed(e.to_string(), msg.max_retries, tx, ctx),
            };
            act.power_failures = 0;
            let recorded = act.record.power_state;
            if recorded == Some(read) {
                let _ = tx.send(SyncOutcome::InSync);
                return act.release(ctx);
            }
            if msg.force
                && let Some(want) = recorded
            {
                let action = match want {
                    PowerState::On => kiln_drivers::PowerAction::On,
                    PowerState::Off => kiln_drivers::PowerAction::Off,
                };
                return act.call(driver, DriverCall::SetPower(action), ctx, move |act, ctx, res| {
                    let _ = tx.send(match res {
                        Ok(_) => SyncOutcome::Forced { to: want },
                        Err(e) => SyncOutcome::Failed { attempts: 1, maintenance: false, error: e.to_string() },
                    });
                    act.release(ctx);
                });
            }
            let mut next = act.record.clone();
            next.power_state = Some(read);
            let state = next.provision_state;
            let entry = act.history("power sync", state, state, None);
            act.commit(next, vec![entry], ctx, move |act, ctx, res| {
                if res.is_ok() {
                    act.publish(EventKind::End, None);
                }
                let _ = tx.send(SyncOutcome::Updated { from: recorded, to: read });
                act.release(ctx);
            });
        });
        answer(rx, SyncOutcome::Skipped("stopped".into()))
    }
}

impl NodeActor {
    /// Counts a failed power read; at `max_retries` in a row the node goes to
    /// maintenance with fault `power failure` (committed, with history).
    fn power_read_failed(
        &mut self,
        error: String,
        max_retries: u32,
        tx: oneshot::Sender<SyncOutcome>,
        ctx: &mut Context<Self>,
    ) {
        self.power_failures += 1;
        let attempts = self.power_failures;
        if attempts < max_retries.max(1) {
            let _ = tx.send(SyncOutcome::Failed { attempts, maintenance: false, error });
            return self.release(ctx);
        }
        let mut next = self.record.clone();
        next.maintenance = true;
        next.fault = Some(POWER_FAILURE.into());
        next.maintenance_reason = Some(format!("power state could not be read {attempts} times in a row"));
        next.last_error = Some(error.clone());
        let state = next.provision_state;
        let entry = self.history("power failure", state, state, Some(error.clone()));
        self.commit(next, vec![entry], ctx, move |act, ctx, res| {
            if res.is_ok() {
                tracing::warn!(attempts, error = %error, "power state unreadable; node put in maintenance");
                act.publish(EventKind::Error, Some(error.clone()));
            }
            let _ = tx.send(SyncOutcome::Failed { attempts, maintenance: res.is_ok(), error });
            act.release(ctx);
        });
    }
}

impl Handler<RecoverPowerFailure> for NodeActor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, _: RecoverPowerFailure, ctx: &mut Context<Self>) -> Self::Result {
        let failed = self.record.maintenance && self.record.fault.as_deref() == Some(POWER_FAILURE);
        if !failed || self.busy() {
            return Box::pin(async { false });
        }
        let Ok(driver) = self.driver() else { return Box::pin(async { false }) };
        let (tx, rx) = oneshot::channel();
        self.hold("power failure recovery");
        self.call(driver, DriverCall::GetPower, ctx, move |act, ctx, res| {
            let Ok(DriverReply::Power(p)) = res else {
                let _ = tx.send(false);
                return act.release(ctx);
            };
            act.power_failures = 0;
            let mut next = act.record.clone();
            next.maintenance = false;
            next.maintenance_reason = None;
            next.fault = None;
            next.power_state = Some(power_state_of(p));
            let state = next.provision_state;
            let entry = act.history("power recovered", state, state, None);
            act.commit(next, vec![entry], ctx, move |act, ctx, res| {
                if res.is_ok() {
                    act.publish(EventKind::End, None);
                }
                let _ = tx.send(res.is_ok());
                act.release(ctx);
            });
        });
        answer(rx, false)
    }
}

impl Handler<ExpireWait> for NodeActor {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, msg: ExpireWait, ctx: &mut Context<Self>) -> Self::Result {
        let state = self.record.provision_state;
        let waited = (Utc::now() - self.record.updated_at).to_std().unwrap_or_default();
        // A node in maintenance is left as it is, as by every periodic task
        // (Ironic's deploy timeout check filters maintenance out too).
        if fsm::class(state) != StateClass::Wait || waited < msg.timeout || self.busy() || self.record.maintenance {
            return Box::pin(async { false });
        }
        let Ok(to) = fsm::step(state, Event::Fail) else { return Box::pin(async { false }) };
        let (tx, rx) = oneshot::channel();
        self.hold("wait timeout");
        let error = format!("timed out in '{state}' after {} s", msg.timeout.as_secs());
        let mut next = self.record.clone();
        next.provision_state = to;
        next.target_provision_state = None;
        next.last_error = Some(error.clone());
        let entry = self.history("fail", state, to, Some(error.clone()));
        self.commit(next, vec![entry], ctx, move |act, ctx, res| {
            if res.is_ok() {
                tracing::warn!(error = %error, "wait timed out; node failed");
                act.publish(EventKind::Error, Some(error));
            }
            let _ = tx.send(res.is_ok());
            act.release(ctx);
        });
        answer(rx, false)
    }
}
