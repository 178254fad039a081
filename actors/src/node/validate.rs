//! `kiln node validate`: whether each driver interface of a node could do
//! its work with the node as configured, as Ironic's
//! `validate_driver_interfaces` answers `openstack baremetal node validate`.
//!
//! Why it is shaped so:
//!
//! - **A shared request.** Ironic validates under a shared lock; here the
//!   node actor answers [`ValidateNode`] from its committed record at once,
//!   also while an exclusive task holds the node, and takes no reservation,
//!   so a validation never waits for a deploy nor makes one wait.
//! - **In the node actor, not on a view.** The checks need the node's
//!   `driver_info` unmasked (an IPMI password's length is a rule), which
//!   only the node's actor holds; a [`crate::NodeView`] shows `******`.
//! - **The driver's own checks.** `power` and `management` build the BMC
//!   client as a task would ([`kiln_drivers::connect`]: every required key
//!   present and well formed, and what only building the client finds, such
//!   as an unreadable `ca_file`, which Ironic's Redfish driver checks too).
//!   That may read a file, so it runs on a blocking thread, not on the
//!   actors' arbiter.
//! - **Interfaces depend on each other as the work does.** kiln boots a node
//!   from the network (deploy sets the boot device to `pxe`), which needs the
//!   MAC address of a port, as Ironic's PXE boot interface ("does not have
//!   any port associated with it"); `deploy` needs `boot` and `power`;
//!   `inspect` reads the BMC through the power connection. Every kiln
//!   driver can set the boot device, so none fails `management` for lack
//!   of it.
//! - **Neither the provision state nor maintenance changes the answer**, as
//!   in Ironic: validate says whether the configuration lets each interface
//!   work, not whether a verb is allowed now (the FSM says that).

use std::collections::BTreeMap;

use actix::prelude::*;
use kiln_store::{NodeRecord, PortRecord};
use serde::{Deserialize, Serialize};

use super::NodeActor;
use crate::KilnError;

kiln_store::string_enum!(
    /// The driver interfaces `kiln node validate` reports, by Ironic's names
    /// (in the order a table lists them).
    DriverInterface, "driver interface" {
        Boot => "boot",
        Deploy => "deploy",
        Inspect => "inspect",
        Management => "management",
        Power => "power",
    }
);

/// One interface's result, as Ironic gives it: whether it passed, and why
/// not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceCheck {
    pub result: bool,
    pub reason: Option<String>,
}

impl InterfaceCheck {
    fn passed() -> Self {
        InterfaceCheck { result: true, reason: None }
    }

    fn failed(reason: String) -> Self {
        InterfaceCheck { result: false, reason: Some(reason) }
    }
}

/// Every interface's result for one node.
pub type InterfaceChecks = BTreeMap<DriverInterface, InterfaceCheck>;

/// One node's validation in a `validate` over a node set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeValidation {
    pub node: String,
    /// Every interface's result; empty when `error` says why the node could
    /// not be validated (it was deleted meanwhile).
    pub interfaces: InterfaceChecks,
    pub error: Option<KilnError>,
}

impl NodeValidation {
    /// Whether every interface passed.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.interfaces.values().all(|c| c.result)
    }
}

/// Checks each interface of `node`, whose ports (as stored) are `ports`.
/// May read files (a Redfish `ca_file`): call it off the actors' thread.
pub fn check(node: &NodeRecord, ports: &[PortRecord]) -> InterfaceChecks {
    let bmc = kiln_drivers::connect(node.driver.as_str(), &node.driver_info).map(|_| ()).map_err(|e| e.to_string());
    let power = match &bmc {
        Ok(()) => InterfaceCheck::passed(),
        Err(reason) => InterfaceCheck::failed(reason.clone()),
    };
    // The boot device is set through the same BMC connection.
    let management = power.clone();
    let boot = if !management.result {
        InterfaceCheck::failed(format!("the boot device cannot be set: {}", reason(&management)))
    } else if ports.is_empty() {
        InterfaceCheck::failed(format!(
            "node {} has no port, and network boot needs a port's MAC address \
             (add one: kiln port create MAC --node {})",
            node.name, node.name
        ))
    } else {
        InterfaceCheck::passed()
    };
    let deploy = match (&boot, &power) {
        (b, _) if !b.result => InterfaceCheck::failed(format!("deploy boots from the network: {}", reason(b))),
        (_, p) if !p.result => InterfaceCheck::failed(format!("deploy powers the node on: {}", reason(p))),
        _ => InterfaceCheck::passed(),
    };
    let inspect = power.clone();
    BTreeMap::from([
        (DriverInterface::Boot, boot),
        (DriverInterface::Deploy, deploy),
        (DriverInterface::Inspect, inspect),
        (DriverInterface::Management, management),
        (DriverInterface::Power, power),
    ])
}

fn reason(check: &InterfaceCheck) -> &str {
    check.reason.as_deref().unwrap_or("failed")
}

/// Asks a node actor to validate its driver interfaces against `ports`, the
/// node's ports as stored (shared: answered at once, even mid-task, and no
/// reservation is taken).
#[derive(Debug, Message)]
#[rtype(result = "Result<InterfaceChecks, KilnError>")]
pub struct ValidateNode {
    pub ports: Vec<PortRecord>,
}

impl Handler<ValidateNode> for NodeActor {
    type Result = ResponseFuture<Result<InterfaceChecks, KilnError>>;

    fn handle(&mut self, msg: ValidateNode, _: &mut Context<Self>) -> Self::Result {
        // The committed record, as a task would start from it.
        let record = self.core.record().clone();
        Box::pin(async move {
            let name = record.name.clone();
            tokio::task::spawn_blocking(move || check(&record, &msg.ports))
                .await
                .map_err(|e| KilnError::Unavailable(format!("node {name}: the validation stopped: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;
    use kiln_store::{DriverKind, NodeRecord, PortId, PortRecord};

    use super::*;

    fn node(driver: DriverKind, info: &[(&str, &str)]) -> NodeRecord {
        let mut n = NodeRecord::enroll("n1".into(), driver, Utc::now());
        n.driver_info = info.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        n
    }

    fn port(n: &NodeRecord) -> PortRecord {
        PortRecord {
            uuid: PortId::new(),
            address: "52:54:00:00:00:01".into(),
            node: n.uuid,
            portgroup: None,
            created_at: Utc::now(),
        }
    }

    fn results(checks: &InterfaceChecks) -> Vec<(&'static str, bool)> {
        checks.iter().map(|(i, c)| (i.as_str(), c.result)).collect()
    }

    #[test]
    fn a_configured_node_with_a_port_passes_everything() {
        let n = node(DriverKind::Ipmi, &[("address", "10.0.0.1"), ("password", "secret")]);
        let checks = check(&n, &[port(&n)]);
        assert_eq!(
            results(&checks),
            [("boot", true), ("deploy", true), ("inspect", true), ("management", true), ("power", true)]
        );
        assert!(checks.values().all(|c| c.reason.is_none()));
    }

    #[test]
    fn no_port_fails_boot_and_deploy_and_says_how_to_fix_it() {
        let n = node(DriverKind::Fake, &[]);
        let checks = check(&n, &[]);
        assert_eq!(
            results(&checks),
            [("boot", false), ("deploy", false), ("inspect", true), ("management", true), ("power", true)]
        );
        let boot = checks[&DriverInterface::Boot].reason.as_deref().unwrap();
        assert!(boot.contains("node n1 has no port") && boot.contains("kiln port create MAC --node n1"), "{boot}");
        let deploy = checks[&DriverInterface::Deploy].reason.as_deref().unwrap();
        assert!(deploy.starts_with("deploy boots from the network: node n1 has no port"), "{deploy}");
    }

    #[test]
    fn bad_driver_info_fails_every_interface_naming_the_field_and_never_the_password() {
        // Stored before a rule existed, or by hand: what validate is for.
        let n = node(DriverKind::Ipmi, &[("address", "10.0.0.1"), ("password", "twenty-one-characters")]);
        let checks = check(&n, &[port(&n)]);
        assert!(checks.values().all(|c| !c.result), "{checks:?}");
        for c in checks.values() {
            let reason = c.reason.as_deref().unwrap();
            assert!(reason.contains("driver_info.password"), "{reason}");
            assert!(!reason.contains("twenty-one"), "{reason}");
        }
    }

    #[test]
    fn an_unreadable_ca_file_fails_power_as_building_the_client_would() {
        let n =
            node(DriverKind::Redfish, &[("address", "https://10.0.0.1"), ("ca_file", "/nonexistent/kiln-test-ca.pem")]);
        let checks = check(&n, &[port(&n)]);
        let power = checks[&DriverInterface::Power].reason.as_deref().unwrap();
        assert!(power.contains("driver_info.ca_file") && power.contains("cannot read it"), "{power}");
        assert!(!checks[&DriverInterface::Deploy].result);
    }
}
