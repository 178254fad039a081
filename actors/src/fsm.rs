//! The provisioning state machine, as data (Ironic's, checked against ironic
//! 39.0.0; described for operators in docs/state-machine.md).
//!
//! Pure: no actix, no I/O, no clock. [`step`] answers "what does this event do
//! in this state", from the table [`TRANSITIONS`]; the node actor is the only
//! caller that acts on the answer. States come from `kiln-store` (they are what
//! is stored); events and the state classes live here.

use std::fmt;
use std::str::FromStr;

use kiln_store::ProvisionState as S;
use serde::{Deserialize, Serialize};

/// An FSM event: an operator verb or an outcome of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Manage,
    Provide,
    Inspect,
    Clean,
    Deploy,
    Delete,
    Rebuild,
    Abort,
    Rescue,
    Unrescue,
    Adopt,
    Unhold,
    Service,
    Done,
    Fail,
    Wait,
    Resume,
    Hold,
}

impl Event {
    pub const ALL: &'static [Event] = &[
        Event::Manage,
        Event::Provide,
        Event::Inspect,
        Event::Clean,
        Event::Deploy,
        Event::Delete,
        Event::Rebuild,
        Event::Abort,
        Event::Rescue,
        Event::Unrescue,
        Event::Adopt,
        Event::Unhold,
        Event::Service,
        Event::Done,
        Event::Fail,
        Event::Wait,
        Event::Resume,
        Event::Hold,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Manage => "manage",
            Event::Provide => "provide",
            Event::Inspect => "inspect",
            Event::Clean => "clean",
            Event::Deploy => "deploy",
            Event::Delete => "delete",
            Event::Rebuild => "rebuild",
            Event::Abort => "abort",
            Event::Rescue => "rescue",
            Event::Unrescue => "unrescue",
            Event::Adopt => "adopt",
            Event::Unhold => "unhold",
            Event::Service => "service",
            Event::Done => "done",
            Event::Fail => "fail",
            Event::Wait => "wait",
            Event::Resume => "resume",
            Event::Hold => "hold",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operator verbs (docs/state-machine.md): each is an event, `undeploy` being
/// Ironic's name for `delete`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Manage,
    Provide,
    Inspect,
    Clean,
    Deploy,
    Undeploy,
    Rebuild,
    Abort,
    Rescue,
    Unrescue,
    Adopt,
    Unhold,
    Service,
}

impl Verb {
    pub const ALL: &'static [Verb] = &[
        Verb::Manage,
        Verb::Provide,
        Verb::Inspect,
        Verb::Clean,
        Verb::Deploy,
        Verb::Undeploy,
        Verb::Rebuild,
        Verb::Abort,
        Verb::Rescue,
        Verb::Unrescue,
        Verb::Adopt,
        Verb::Unhold,
        Verb::Service,
    ];

    pub fn event(self) -> Event {
        match self {
            Verb::Manage => Event::Manage,
            Verb::Provide => Event::Provide,
            Verb::Inspect => Event::Inspect,
            Verb::Clean => Event::Clean,
            Verb::Deploy => Event::Deploy,
            Verb::Undeploy => Event::Delete,
            Verb::Rebuild => Event::Rebuild,
            Verb::Abort => Event::Abort,
            Verb::Rescue => Event::Rescue,
            Verb::Unrescue => Event::Unrescue,
            Verb::Adopt => Event::Adopt,
            Verb::Unhold => Event::Unhold,
            Verb::Service => Event::Service,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Undeploy => "undeploy",
            other => other.event().as_str(),
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no operator verb.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown verb '{0}' (expected one of: {list})", list = Verb::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "))]
pub struct UnknownVerb(pub String);

impl FromStr for Verb {
    type Err = UnknownVerb;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verb::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| UnknownVerb(s.to_string()))
    }
}

/// What kind of state a state is (docs/state-machine.md, "States").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateClass {
    /// Nothing runs; the node stays until an operator acts.
    Stable,
    /// A task runs on the node.
    Working,
    /// No task; an external callback or a timeout ends it.
    Wait,
    /// Paused by a step until an operator unholds it.
    Hold,
    /// A task failed; the operator decides what next.
    Failed,
}

/// The class of a state.
pub fn class(state: S) -> StateClass {
    use StateClass::*;
    match state {
        S::Enroll | S::Manageable | S::Available | S::Active | S::Error | S::Rescue => Stable,
        S::Verifying
        | S::Deploying
        | S::Cleaning
        | S::Inspecting
        | S::Adopting
        | S::Rescuing
        | S::Unrescuing
        | S::Deleting
        | S::Servicing => Working,
        S::WaitCallBack | S::CleanWait | S::InspectWait | S::RescueWait | S::ServiceWait => Wait,
        S::DeployHold | S::CleanHold | S::ServiceHold => Hold,
        S::DeployFailed
        | S::CleanFailed
        | S::InspectFailed
        | S::RescueFailed
        | S::UnrescueFailed
        | S::AdoptFailed
        | S::ServiceFailed => Failed,
    }
}

/// True for states in which no task runs and none is awaited: the states
/// `--wait` waits for.
pub fn is_settled(state: S) -> bool {
    !matches!(class(state), StateClass::Working)
}

/// The state a working state aims at unless told otherwise (docs/state-machine.md).
pub fn default_target(working: S) -> Option<S> {
    match working {
        S::Deploying | S::Adopting | S::Unrescuing | S::Servicing => Some(S::Active),
        S::Cleaning | S::Deleting => Some(S::Available),
        S::Inspecting | S::Verifying => Some(S::Manageable),
        S::Rescuing => Some(S::Rescue),
        _ => None,
    }
}

/// The transition table: for each state, the events it allows and where each
/// leads. Kept in the order of docs/state-machine.md's table so the two can
/// be read side by side.
pub const TRANSITIONS: &[(S, &[(Event, S)])] = {
    use Event::*;
    &[
        (S::Enroll, &[(Manage, S::Verifying)]),
        (S::Verifying, &[(Done, S::Manageable), (Fail, S::Enroll)]),
        (
            S::Manageable,
            &[(Provide, S::Cleaning), (Clean, S::Cleaning), (Inspect, S::Inspecting), (Adopt, S::Adopting)],
        ),
        (S::Available, &[(Deploy, S::Deploying), (Manage, S::Manageable)]),
        (S::Deploying, &[(Done, S::Active), (Wait, S::WaitCallBack), (Hold, S::DeployHold), (Fail, S::DeployFailed)]),
        (
            S::WaitCallBack,
            &[
                (Resume, S::Deploying),
                (Hold, S::DeployHold),
                (Fail, S::DeployFailed),
                (Abort, S::DeployFailed),
                (Delete, S::Deleting),
            ],
        ),
        (S::DeployHold, &[(Unhold, S::WaitCallBack), (Abort, S::DeployFailed)]),
        (S::DeployFailed, &[(Deploy, S::Deploying), (Rebuild, S::Deploying), (Delete, S::Deleting)]),
        (S::Error, &[(Rebuild, S::Deploying), (Delete, S::Deleting)]),
        (S::Active, &[(Rebuild, S::Deploying), (Delete, S::Deleting), (Rescue, S::Rescuing), (Service, S::Servicing)]),
        (S::Deleting, &[(Clean, S::Cleaning), (Fail, S::Error)]),
        (
            S::Cleaning,
            &[
                (Done, S::Available),
                (Wait, S::CleanWait),
                (Hold, S::CleanHold),
                (Fail, S::CleanFailed),
                (Manage, S::Manageable),
            ],
        ),
        (S::CleanWait, &[(Resume, S::Cleaning), (Hold, S::CleanHold), (Fail, S::CleanFailed), (Abort, S::CleanFailed)]),
        (S::CleanHold, &[(Unhold, S::CleanWait), (Abort, S::CleanFailed)]),
        (S::CleanFailed, &[(Manage, S::Manageable)]),
        (S::Inspecting, &[(Done, S::Manageable), (Wait, S::InspectWait), (Fail, S::InspectFailed)]),
        (
            S::InspectWait,
            &[(Resume, S::Inspecting), (Done, S::Manageable), (Fail, S::InspectFailed), (Abort, S::InspectFailed)],
        ),
        (S::InspectFailed, &[(Manage, S::Manageable), (Inspect, S::Inspecting)]),
        (S::Adopting, &[(Done, S::Active), (Fail, S::AdoptFailed)]),
        (S::AdoptFailed, &[(Adopt, S::Adopting), (Manage, S::Manageable)]),
        (S::Rescuing, &[(Done, S::Rescue), (Wait, S::RescueWait), (Fail, S::RescueFailed)]),
        (
            S::RescueWait,
            &[(Resume, S::Rescuing), (Fail, S::RescueFailed), (Abort, S::RescueFailed), (Delete, S::Deleting)],
        ),
        (S::Rescue, &[(Rescue, S::Rescuing), (Unrescue, S::Unrescuing), (Delete, S::Deleting)]),
        (S::RescueFailed, &[(Rescue, S::Rescuing), (Unrescue, S::Unrescuing), (Delete, S::Deleting)]),
        (S::UnrescueFailed, &[(Rescue, S::Rescuing), (Unrescue, S::Unrescuing), (Delete, S::Deleting)]),
        (S::Unrescuing, &[(Done, S::Active), (Fail, S::UnrescueFailed)]),
        (S::Servicing, &[(Done, S::Active), (Wait, S::ServiceWait), (Hold, S::ServiceHold), (Fail, S::ServiceFailed)]),
        (
            S::ServiceWait,
            &[
                (Resume, S::Servicing),
                (Hold, S::ServiceHold),
                (Fail, S::ServiceFailed),
                (Abort, S::ServiceFailed),
                (Delete, S::Deleting),
            ],
        ),
        (
            S::ServiceHold,
            &[(Unhold, S::ServiceWait), (Service, S::Servicing), (Fail, S::ServiceFailed), (Abort, S::ServiceFailed)],
        ),
        (
            S::ServiceFailed,
            &[
                (Service, S::Servicing),
                (Rescue, S::Rescuing),
                (Wait, S::ServiceWait),
                (Hold, S::ServiceHold),
                (Delete, S::Deleting),
                (Abort, S::Active),
            ],
        ),
    ]
};

/// The events a state allows, in table order.
pub fn allowed_events(state: S) -> &'static [(Event, S)] {
    TRANSITIONS.iter().find(|(s, _)| *s == state).map(|(_, evs)| *evs).unwrap_or(&[])
}

/// An event the current state does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event '{event}' is not allowed in state '{state}' (allowed: {})", allowed_list(.allowed))]
pub struct InvalidState {
    pub state: S,
    pub event: Event,
    pub allowed: Vec<Event>,
}

fn allowed_list(allowed: &[Event]) -> String {
    if allowed.is_empty() {
        return "none".into();
    }
    allowed.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")
}

/// Where `event` leads from `state`, or why it cannot.
pub fn step(state: S, event: Event) -> Result<S, InvalidState> {
    let allowed = allowed_events(state);
    allowed.iter().find(|(e, _)| *e == event).map(|(_, to)| *to).ok_or_else(|| InvalidState {
        state,
        event,
        allowed: allowed.iter().map(|(e, _)| *e).collect(),
    })
}

/// The state a working state falls to when its task fails or is cut short
/// (a crash, a restart): the target of its `fail` event.
pub fn failed_state(working: S) -> Option<S> {
    match class(working) {
        StateClass::Working => step(working, Event::Fail).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of docs/state-machine.md's transition table, transcribed
    /// independently of `TRANSITIONS` (as strings, the page's own words), so
    /// a typo in either is caught; `the_documented_table_is_this_one` checks
    /// that the page still has these rows.
    const TABLE_AS_DOCUMENTED: &[(&str, &str)] = &[
        ("enroll", "manage→verifying"),
        ("verifying", "done→manageable; fail→enroll"),
        ("manageable", "provide→cleaning; clean→cleaning; inspect→inspecting; adopt→adopting"),
        ("available", "deploy→deploying; manage→manageable"),
        ("deploying", "done→active; wait→wait call-back; hold→deploy hold; fail→deploy failed"),
        (
            "wait call-back",
            "resume→deploying; hold→deploy hold; fail→deploy failed; abort→deploy failed; delete→deleting",
        ),
        ("deploy hold", "unhold→wait call-back; abort→deploy failed"),
        ("deploy failed", "deploy→deploying; rebuild→deploying; delete→deleting"),
        ("error", "rebuild→deploying; delete→deleting"),
        ("active", "rebuild→deploying; delete→deleting; rescue→rescuing; service→servicing"),
        ("deleting", "clean→cleaning; fail→error"),
        ("cleaning", "done→available; wait→clean wait; hold→clean hold; fail→clean failed; manage→manageable"),
        ("clean wait", "resume→cleaning; hold→clean hold; fail→clean failed; abort→clean failed"),
        ("clean hold", "unhold→clean wait; abort→clean failed"),
        ("clean failed", "manage→manageable"),
        ("inspecting", "done→manageable; wait→inspect wait; fail→inspect failed"),
        ("inspect wait", "resume→inspecting; done→manageable; fail→inspect failed; abort→inspect failed"),
        ("inspect failed", "manage→manageable; inspect→inspecting"),
        ("adopting", "done→active; fail→adopt failed"),
        ("adopt failed", "adopt→adopting; manage→manageable"),
        ("rescuing", "done→rescue; wait→rescue wait; fail→rescue failed"),
        ("rescue wait", "resume→rescuing; fail→rescue failed; abort→rescue failed; delete→deleting"),
        ("rescue", "rescue→rescuing; unrescue→unrescuing; delete→deleting"),
        ("rescue failed", "rescue→rescuing; unrescue→unrescuing; delete→deleting"),
        ("unrescue failed", "rescue→rescuing; unrescue→unrescuing; delete→deleting"),
        ("unrescuing", "done→active; fail→unrescue failed"),
        ("servicing", "done→active; wait→service wait; hold→service hold; fail→service failed"),
        (
            "service wait",
            "resume→servicing; hold→service hold; fail→service failed; abort→service failed; delete→deleting",
        ),
        ("service hold", "unhold→service wait; service→servicing; fail→service failed; abort→service failed"),
        (
            "service failed",
            "service→servicing; rescue→rescuing; wait→service wait; hold→service hold; delete→deleting; abort→active",
        ),
    ];

    fn event_named(name: &str) -> Event {
        *Event::ALL.iter().find(|e| e.as_str() == name).unwrap_or_else(|| panic!("no event {name}"))
    }

    #[test]
    fn every_documented_row_is_allowed_and_every_other_pair_refused() {
        let mut seen_states = 0;
        for (state_name, row) in TABLE_AS_DOCUMENTED {
            let state: S = state_name.parse().unwrap();
            seen_states += 1;
            let mut allowed = Vec::new();
            for cell in row.split("; ") {
                let (ev, to) = cell.split_once('→').unwrap();
                let (ev, to) = (event_named(ev), to.parse::<S>().unwrap());
                assert_eq!(step(state, ev), Ok(to), "{state} --{ev}-->");
                allowed.push(ev);
            }
            for ev in Event::ALL.iter().filter(|e| !allowed.contains(e)) {
                let err = step(state, *ev).unwrap_err();
                assert_eq!(err.state, state);
                assert_eq!(err.allowed, allowed, "allowed events of {state}");
                let msg = err.to_string();
                for a in &allowed {
                    assert!(msg.contains(a.as_str()), "{msg}");
                }
            }
        }
        assert_eq!(seen_states, ProvisionState::ALL.len(), "the documented table names every state");
    }

    /// docs/state-machine.md shows the table to operators: each row there
    /// must be a row here, in the same words, and the page no other row.
    #[test]
    fn the_documented_table_is_this_one() {
        let page = include_str!("../../docs/state-machine.md");
        let table = page.split("## Transitions").nth(1).expect("the page has a Transitions section");
        let documented: Vec<&str> = table
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter(|l| l.starts_with('|') && l.contains('→'))
            .collect();
        let expected: Vec<String> =
            TABLE_AS_DOCUMENTED.iter().map(|(state, row)| format!("| {state} | {row} |")).collect();
        assert_eq!(documented, expected, "docs/state-machine.md's transition table");
    }

    use kiln_store::ProvisionState;

    #[test]
    fn every_working_state_has_a_failed_state_and_a_target() {
        for s in ProvisionState::ALL {
            if class(*s) == StateClass::Working {
                assert!(failed_state(*s).is_some(), "{s}");
                assert!(default_target(*s).is_some(), "{s}");
            } else {
                assert_eq!(failed_state(*s), None);
            }
        }
        assert_eq!(failed_state(S::Deleting), Some(S::Error));
        assert_eq!(failed_state(S::Verifying), Some(S::Enroll));
    }

    #[test]
    fn verbs_parse_and_map_to_events() {
        assert_eq!("undeploy".parse::<Verb>().unwrap().event(), Event::Delete);
        assert!("explode".parse::<Verb>().unwrap_err().to_string().contains("expected one of"));
        for v in Verb::ALL {
            assert_eq!(v.as_str().parse::<Verb>().unwrap(), *v);
        }
    }
}
