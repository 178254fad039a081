//! What an operator verb does to a node, decided without actix or I/O.
//!
//! [`plan_verb`] turns (record, verb) into either an immediate move to a
//! non-working state or a task: the working state to enter, its target, and
//! the driver [`Step`]s to run, as data, so a step list can grow (a deploy
//! agent, firmware updates) without touching the actor. A deploy's steps
//! depend on the node too ([`steps_for`]): a Redfish node with
//! `instance_info.image_url` boots that image from virtual media, any other
//! PXE boots. [`recover`] is the
//! restart rule: a node found mid-task with no task running falls to its
//! failed state.

use kiln_drivers::{Boot, PowerAction};
use kiln_store::{BootDevice, DriverKind, HistoryEntry, NodeRecord, ProvisionState as S, Timestamp};

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
    /// Empty the system's virtual CD (nothing to do when it is empty).
    EjectMedia,
    /// Insert the node's `instance_info.image_url` into its virtual CD.
    InsertMedia,
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
    /// are done, fire [`finishing_event`], or with `callback`, wait for the
    /// booted system to call back ([`callback_wanted`]).
    Work { working: S, target: S, steps: Vec<Step>, callback: bool },
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

/// Why a verb cannot start on a node; either way nothing changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// The node's state does not allow the verb.
    State(InvalidState),
    /// The node's settings ask for what its driver cannot do, or are
    /// malformed (an `image_url` that is not a URL).
    Settings(String),
}

impl From<InvalidState> for PlanError {
    fn from(e: InvalidState) -> Self {
        PlanError::State(e)
    }
}

/// The image a deploy boots from virtual media: `instance_info.image_url`,
/// an `http://` or `https://` URL the BMC fetches. `None` when unset.
pub fn image_url(record: &NodeRecord) -> Result<Option<&str>, String> {
    match record.instance_info.get("image_url") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(url)) if url.starts_with("http://") || url.starts_with("https://") => {
            Ok(Some(url))
        }
        Some(other) => {
            Err(format!("instance_info.image_url must be an http:// or https:// URL the BMC can fetch, not {other}"))
        }
    }
}

/// The steps of `working` for this node: [`steps_of`], but a deploy of a
/// Redfish node with an `image_url` boots it from virtual media (eject
/// what is there, insert the image, boot from CD once, power on or
/// reboot), and an undeploy of such a node ejects it once it is off. An
/// IPMI node with an `image_url` is refused: kiln drives virtual media over
/// Redfish only, and booting PXE instead would call active a node that does
/// not run the image asked for. The fake driver ignores it and PXE boots.
pub fn steps_for(record: &NodeRecord, working: S) -> Result<Vec<Step>, String> {
    use Step::*;
    Ok(match (working, record.driver) {
        (S::Deploying, DriverKind::Redfish) if image_url(record)?.is_some() => {
            vec![EjectMedia, InsertMedia, SetBoot(Boot::Cdrom, false), Power(PowerAction::Reboot)]
        }
        (S::Deploying, DriverKind::Ipmi) if image_url(record)?.is_some() => {
            return Err(format!(
                "node {}: instance_info.image_url asks for a virtual media deploy, which kiln drives over the redfish \
                 driver only; unset it (kiln node set {} --unset-instance-info image_url) to deploy over PXE",
                record.name, record.name
            ));
        }
        (S::Deleting, DriverKind::Redfish)
            if record.instance_info.contains_key("image_url") || record.boot_device == Some(BootDevice::Cdrom) =>
        {
            vec![Power(PowerAction::Off), EjectMedia, Fire(Event::Clean)]
        }
        _ => steps_of(working),
    })
}

/// The `instance_info` key that asks a task entering `working` to end in
/// its wait state, for the booted system to call back: `deploy_callback`
/// (deploying, rebuilding), `clean_callback` (cleaning, and an undeploy's
/// clean), `inspect_callback` (inspecting). Other working states never wait.
pub fn callback_key(working: S) -> Option<&'static str> {
    match working {
        S::Deploying => Some("deploy_callback"),
        S::Cleaning | S::Deleting => Some("clean_callback"),
        S::Inspecting => Some("inspect_callback"),
        _ => None,
    }
}

/// Whether a task entering `working` waits for a callback: its key
/// ([`callback_key`]) is `true` in the node's `instance_info`. Anything but
/// `true`, `false` or unset is refused, so a typo cannot silently skip the
/// wait.
pub fn callback_wanted(record: &NodeRecord, working: S) -> Result<bool, String> {
    let Some(key) = callback_key(working) else { return Ok(false) };
    match record.instance_info.get(key) {
        None | Some(serde_json::Value::Null) => Ok(false),
        Some(serde_json::Value::Bool(wanted)) => Ok(*wanted),
        Some(other) => Err(format!("instance_info.{key} must be true or false, not {other}")),
    }
}

/// The callback a node keeps only while it works, waits or is held: a
/// record that reaches a stable or failed state has none, so a token never
/// outlives the wait it was issued for (one place, whatever moved the node:
/// a callback, a timeout, an abort, the restart rule).
pub fn drop_spent_callback(record: &mut NodeRecord) {
    if record.callback.is_some()
        && matches!(fsm::class(record.provision_state), StateClass::Stable | StateClass::Failed)
    {
        record.callback = None;
    }
}

/// Decides what `verb` does to a node in its current state.
pub fn plan_verb(record: &NodeRecord, verb: Verb) -> Result<VerbPlan, PlanError> {
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
    let steps = steps_for(record, to).map_err(PlanError::Settings)?;
    let callback = callback_wanted(record, to).map_err(PlanError::Settings)?;
    Ok(VerbPlan::Work { working: to, target, steps, callback })
}

/// The event that ends a task's working state successfully: `done`, or for a
/// clean aimed back at manageable, `manage` (the table's cleaning→manageable).
pub fn finishing_event(working: S, target: Option<S>) -> Event {
    match (working, target) {
        (S::Cleaning, Some(S::Manageable)) => Event::Manage,
        _ => Event::Done,
    }
}

/// Whether `record` was left mid-task ([`recover`] has something to do).
pub fn cut_short(record: &NodeRecord) -> bool {
    fsm::class(record.provision_state) == StateClass::Working
        || record.reservation.is_some()
        || record.target_power_state.is_some()
}

/// The restart rule (docs/state-machine.md, "Rules"): a record left mid-task by a crash or a
/// restart is released, a working state falls to its failed state with
/// `last_error` saying why, and an unfinished power target is cleared.
/// Returns the changed record and its history line, or `None` when the
/// record needs nothing.
pub fn recover(record: &NodeRecord, why: &str, now: Timestamp) -> Option<(NodeRecord, HistoryEntry)> {
    if !cut_short(record) {
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
    drop_spent_callback(&mut fixed);
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
                callback: false,
            }
        );
    }

    #[test]
    fn a_redfish_deploy_with_an_image_url_boots_it_from_virtual_media() {
        let mut n = node(S::Available);
        n.driver = DriverKind::Redfish;
        n.instance_info.insert("image_url".into(), "http://10.0.0.2/a.iso".into());
        let VerbPlan::Work { steps, .. } = plan_verb(&n, Verb::Deploy).unwrap() else { panic!("a task") };
        assert_eq!(
            steps,
            [Step::EjectMedia, Step::InsertMedia, Step::SetBoot(Boot::Cdrom, false), Step::Power(PowerAction::Reboot)]
        );
        n.provision_state = S::Active;
        let VerbPlan::Work { steps, .. } = plan_verb(&n, Verb::Undeploy).unwrap() else { panic!("a task") };
        assert_eq!(steps, [Step::Power(PowerAction::Off), Step::EjectMedia, Step::Fire(Event::Clean)]);

        // Without an image: PXE, and an undeploy ejects nothing.
        n.instance_info.clear();
        let VerbPlan::Work { steps, .. } = plan_verb(&n, Verb::Undeploy).unwrap() else { panic!("a task") };
        assert_eq!(steps, steps_of(S::Deleting));
        n.provision_state = S::Available;
        let VerbPlan::Work { steps, .. } = plan_verb(&n, Verb::Deploy).unwrap() else { panic!("a task") };
        assert_eq!(steps, steps_of(S::Deploying));

        // Not a URL the BMC can fetch: refused before anything changes.
        n.instance_info.insert("image_url".into(), serde_json::json!(["x"]));
        assert!(matches!(plan_verb(&n, Verb::Deploy), Err(PlanError::Settings(e)) if e.contains("http://")));
    }

    #[test]
    fn ipmi_refuses_an_image_url_and_fake_deploys_over_pxe() {
        let mut n = node(S::Available);
        n.instance_info.insert("image_url".into(), "http://10.0.0.2/a.iso".into());
        let VerbPlan::Work { steps, .. } = plan_verb(&n, Verb::Deploy).unwrap() else { panic!("a task") };
        assert_eq!(steps, steps_of(S::Deploying));
        n.driver = DriverKind::Ipmi;
        let Err(PlanError::Settings(why)) = plan_verb(&n, Verb::Deploy) else { panic!("refused") };
        assert!(why.contains("redfish") && why.contains("--unset-instance-info image_url"), "{why}");
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
