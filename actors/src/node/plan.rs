//! What an operator verb does to a node, decided without actix or I/O.
//!
//! [`plan_verb`] turns (record, verb) into either an immediate move to a
//! non-working state or a task: the working state to enter, its target, and
//! the driver [`Step`]s to run, as data, so a step list can grow (a deploy
//! agent, firmware updates) without touching the actor. [`recover`] is the
//! restart rule: a node found mid-task with no task running falls to its
//! failed state.

use kiln_drivers::{Boot, PowerAction};
use kiln_store::{HistoryEntry, NodeRecord, ProvisionState as S, Timestamp};

use crate::fsm::{self, Event, InvalidState, StateClass, Verb};

/// One piece of work inside a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Check `driver_info` for the node's driver.
    Validate,
    /// Read the power state into the record.
    ReadPower,
    /// Perform a power action and record the resulting state.
    Power(PowerAction),
    /// Set the boot device (persistent or not) and record it.
    SetBoot(Boot, bool),
    /// Read hardware facts into `properties`.
    Inspect,
    /// Fire an FSM event mid-task (deleting → cleaning), committed like any
    /// other transition.
    Fire(Event),
}

/// What a verb does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerbPlan {
    /// No work: the node moves straight to `to` (a stable, wait, hold or
    /// failed state).
    Immediate { to: S },
    /// A task: enter `working` aiming at `target`, then run `steps`; when they
    /// are done, fire [`finishing_event`].
    Work { working: S, target: S, steps: Vec<Step> },
}

/// The steps each working state runs (docs/state-machine.md, "The work of
/// each working state").
pub fn steps_of(working: S) -> Vec<Step> {
    use Step::*;
    match working {
        S::Verifying => vec![Validate, ReadPower],
        S::Deploying => vec![SetBoot(Boot::Pxe, false), Power(PowerAction::On)],
        S::Cleaning => vec![Power(PowerAction::Off)],
        S::Deleting => vec![Power(PowerAction::Off), Fire(Event::Clean)],
        S::Inspecting => vec![ReadPower, Inspect],
        S::Adopting => vec![Validate, ReadPower],
        S::Rescuing => vec![Power(PowerAction::Reboot)],
        S::Unrescuing => vec![Power(PowerAction::Reboot)],
        S::Servicing => vec![ReadPower],
        _ => Vec::new(),
    }
}

/// Decides what `verb` does to a node in its current state.
pub fn plan_verb(record: &NodeRecord, verb: Verb) -> Result<VerbPlan, InvalidState> {
    let from = record.provision_state;
    let to = fsm::step(from, verb.event())?;
    if fsm::class(to) != StateClass::Working {
        return Ok(VerbPlan::Immediate { to });
    }
    // A manual clean from manageable returns there; every other working
    // state aims at its default target.
    let target = match (from, verb) {
        (S::Manageable, Verb::Clean) => S::Manageable,
        _ => fsm::default_target(to).unwrap_or(to),
    };
    Ok(VerbPlan::Work { working: to, target, steps: steps_of(to) })
}

/// The event that ends a task's working state successfully: `done`, or for a
/// clean aimed back at manageable, `manage` (the table's cleaning→manageable).
pub fn finishing_event(working: S, target: Option<S>) -> Event {
    match (working, target) {
        (S::Cleaning, Some(S::Manageable)) => Event::Manage,
        _ => Event::Done,
    }
}

/// The restart rule (docs/state-machine.md, "Rules"): a record left mid-task by a crash or a
/// restart is released, a working state falls to its failed state with
/// `last_error` saying why, and an unfinished power target is cleared.
/// Returns the changed record and its history line, or `None` when the
/// record needs nothing.
pub fn recover(record: &NodeRecord, why: &str, now: Timestamp) -> Option<(NodeRecord, HistoryEntry)> {
    let working = fsm::class(record.provision_state) == StateClass::Working;
    if !working && record.reservation.is_none() && record.target_power_state.is_none() {
        return None;
    }
    let mut fixed = record.clone();
    fixed.reservation = None;
    fixed.target_power_state = None;
    fixed.updated_at = now;
    if let Some(failed) = fsm::failed_state(record.provision_state) {
        fixed.provision_state = failed;
        fixed.target_provision_state = None;
    }
    let message = format!("{why} while the node was {}", record.provision_state);
    fixed.last_error = Some(message.clone());
    let entry = HistoryEntry {
        node: record.uuid,
        at: now,
        event: "recover".into(),
        from_state: record.provision_state,
        to_state: fixed.provision_state,
        error: Some(message),
    };
    Some((fixed, entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use kiln_store::{DriverKind, Reservation};

    fn node(state: S) -> NodeRecord {
        let mut n = NodeRecord::enroll("n1".into(), DriverKind::Fake, Utc::now());
        n.provision_state = state;
        n
    }

    #[test]
    fn deploy_is_a_task_aimed_at_active() {
        let plan = plan_verb(&node(S::Available), Verb::Deploy).unwrap();
        assert_eq!(
            plan,
            VerbPlan::Work {
                working: S::Deploying,
                target: S::Active,
                steps: vec![Step::SetBoot(Boot::Pxe, false), Step::Power(PowerAction::On)],
            }
        );
    }

    #[test]
    fn manual_clean_returns_to_manageable() {
        let VerbPlan::Work { target, working, .. } = plan_verb(&node(S::Manageable), Verb::Clean).unwrap() else {
            panic!("clean is a task");
        };
        assert_eq!(target, S::Manageable);
        assert_eq!(finishing_event(working, Some(target)), Event::Manage);
        assert_eq!(fsm::step(working, Event::Manage), Ok(S::Manageable));
    }

    #[test]
    fn moves_without_work_are_immediate() {
        assert_eq!(plan_verb(&node(S::Available), Verb::Manage).unwrap(), VerbPlan::Immediate { to: S::Manageable });
        assert_eq!(plan_verb(&node(S::CleanHold), Verb::Abort).unwrap(), VerbPlan::Immediate { to: S::CleanFailed });
        assert!(plan_verb(&node(S::Enroll), Verb::Deploy).is_err());
    }

    #[test]
    fn recovery_fails_working_states_and_releases() {
        let mut n = node(S::Deploying);
        n.target_provision_state = Some(S::Active);
        n.reservation = Some(Reservation { purpose: "deploy".into(), since: Utc::now() });
        let (fixed, entry) = recover(&n, "daemon restarted", Utc::now()).unwrap();
        assert_eq!(fixed.provision_state, S::DeployFailed);
        assert_eq!(fixed.target_provision_state, None);
        assert_eq!(fixed.reservation, None);
        assert_eq!(fixed.last_error.as_deref(), Some("daemon restarted while the node was deploying"));
        assert_eq!(entry.to_state, S::DeployFailed);
        assert!(recover(&node(S::Active), "x", Utc::now()).is_none());
    }
}
