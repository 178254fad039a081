//! Nodes, ports and drivers as Ironic's JSON objects.
//!
//! kiln's provision and power states already carry Ironic's names and values
//! (docs/state-machine.md): `enroll`, `available`, `deploy failed`,
//! `power on`, so they pass through as they are. What differs: the driver
//! names (Ironic's hardware types `fake-hardware`, `ipmi`, `redfish` for
//! kiln's `fake`, `ipmi`, `redfish`), the reservation (Ironic shows the
//! holder's host; kiln shows this host while a task holds the node), and
//! the fields kiln does not keep (the instance, the interfaces), shown
//! empty so the clients' column lists work.

use kiln_actors::{NodeView, PortView};
use kiln_store::DriverKind;
use serde_json::{Map, Value, json};

use super::errors::ApiError;

/// Every field of a node, in the order Ironic lists them.
pub const NODE_FIELDS: &[&str] = &[
    "uuid",
    "name",
    "driver",
    "driver_info",
    "driver_internal_info",
    "properties",
    "extra",
    "instance_info",
    "instance_uuid",
    "chassis_uuid",
    "provision_state",
    "target_provision_state",
    "provision_updated_at",
    "power_state",
    "target_power_state",
    "maintenance",
    "maintenance_reason",
    "fault",
    "last_error",
    "reservation",
    "console_enabled",
    "inspection_started_at",
    "inspection_finished_at",
    "clean_step",
    "deploy_step",
    "resource_class",
    "conductor_group",
    "conductor",
    "owner",
    "lessee",
    "description",
    "protected",
    "protected_reason",
    "retired",
    "retired_reason",
    "automated_clean",
    "allocation_uuid",
    "traits",
    "boot_mode",
    "secure_boot",
    "network_interface",
    "boot_interface",
    "deploy_interface",
    "management_interface",
    "power_interface",
    "console_interface",
    "inspect_interface",
    "raid_interface",
    "rescue_interface",
    "storage_interface",
    "vendor_interface",
    "bios_interface",
    "created_at",
    "updated_at",
    "links",
    "ports",
    "states",
];

/// The fields of a node in a list without `detail` (Ironic's default).
pub const NODE_LIST_FIELDS: &[&str] =
    &["uuid", "name", "instance_uuid", "power_state", "provision_state", "maintenance", "links"];

/// Every field of a port.
pub const PORT_FIELDS: &[&str] = &[
    "uuid",
    "address",
    "node_uuid",
    "portgroup_uuid",
    "extra",
    "internal_info",
    "local_link_connection",
    "pxe_enabled",
    "physical_network",
    "is_smartnic",
    "name",
    "description",
    "created_at",
    "updated_at",
    "links",
];

/// The fields of a port in a list without `detail`.
pub const PORT_LIST_FIELDS: &[&str] = &["uuid", "address", "links"];

/// Ironic's hardware type for a kiln driver.
pub fn driver_name(kind: DriverKind) -> &'static str {
    match kind {
        DriverKind::Fake => "fake-hardware",
        DriverKind::Ipmi => "ipmi",
        DriverKind::Redfish => "redfish",
    }
}

/// kiln's driver for an Ironic hardware type (kiln's own names pass too).
pub fn driver_of(name: &str) -> Result<DriverKind, ApiError> {
    match name {
        "fake-hardware" | "fake" => Ok(DriverKind::Fake),
        "ipmi" => Ok(DriverKind::Ipmi),
        "redfish" => Ok(DriverKind::Redfish),
        other => Err(ApiError::bad_request(format!(
            "Driver '{other}' is not supported; kiln has fake-hardware, ipmi and redfish"
        ))),
    }
}

fn links(base: &str, kind: &str, uuid: &str) -> Value {
    json!([
        {"href": format!("{base}/v1/{kind}/{uuid}"), "rel": "self"},
        {"href": format!("{base}/{kind}/{uuid}"), "rel": "bookmark"},
    ])
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false))
}

/// Map values as Ironic gives them: numbers and booleans that kiln keeps as
/// text come back as text (as `baremetal node set --property` sends them).
fn map_of(m: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

/// A node as Ironic shows it, every field.
pub fn node(n: &NodeView, base: &str, host: &str) -> Map<String, Value> {
    let uuid = n.uuid.to_string();
    let interface = |name: &str| if name == "network" { json!("noop") } else { json!("fake") };
    let mut m = Map::new();
    for &f in NODE_FIELDS {
        let v = match f {
            "uuid" => json!(uuid),
            "name" => json!(n.name),
            "driver" => json!(driver_name(n.driver)),
            "driver_info" => map_of(&n.driver_info),
            "properties" => map_of(&n.properties),
            "extra" => Value::Object(n.extra.clone()),
            "instance_info" => Value::Object(n.instance_info.clone()),
            "driver_internal_info" => json!({}),
            "provision_state" => json!(n.provision_state.as_str()),
            "target_provision_state" => json!(n.target_provision_state.map(|s| s.as_str())),
            "provision_updated_at" | "updated_at" => time(&n.updated_at),
            "created_at" => time(&n.created_at),
            "power_state" => json!(n.power_state.map(|p| p.as_str())),
            "target_power_state" => json!(n.target_power_state.map(|p| p.as_str())),
            "maintenance" => json!(n.maintenance),
            "maintenance_reason" => json!(n.maintenance_reason),
            "fault" => json!(n.fault),
            "last_error" => json!(n.last_error),
            "reservation" => json!(n.reservation.as_ref().map(|_| host)),
            "console_enabled" | "protected" | "retired" => json!(false),
            "clean_step" | "deploy_step" => json!({}),
            "conductor_group" => json!(""),
            "conductor" => json!(host),
            "traits" => json!([]),
            "links" => links(base, "nodes", &uuid),
            "ports" => json!([{"href": format!("{base}/v1/nodes/{uuid}/ports"), "rel": "self"}]),
            "states" => json!([{"href": format!("{base}/v1/nodes/{uuid}/states"), "rel": "self"}]),
            f if f.ends_with("_interface") => interface(f.trim_end_matches("_interface")),
            _ => Value::Null,
        };
        m.insert(f.to_string(), v);
    }
    m
}

/// `GET /v1/nodes/{node}/states`.
pub fn states(n: &NodeView) -> Value {
    json!({
        "console_enabled": false,
        "last_error": n.last_error,
        "power_state": n.power_state.map(|p| p.as_str()),
        "provision_state": n.provision_state.as_str(),
        "provision_updated_at": time(&n.updated_at),
        "raid_config": {},
        "target_power_state": n.target_power_state.map(|p| p.as_str()),
        "target_provision_state": n.target_provision_state.map(|s| s.as_str()),
        "target_raid_config": {},
        "boot_mode": null,
        "secure_boot": null,
        "fault": n.fault,
    })
}

/// A port as Ironic shows it, every field.
pub fn port(p: &PortView, base: &str) -> Map<String, Value> {
    let mut m = Map::new();
    for &f in PORT_FIELDS {
        let v = match f {
            "uuid" => json!(p.uuid),
            "address" => json!(p.address),
            "node_uuid" => json!(p.node_uuid),
            "portgroup_uuid" => json!(p.portgroup_uuid),
            "extra" | "internal_info" | "local_link_connection" => json!({}),
            "pxe_enabled" => json!(true),
            "is_smartnic" => json!(false),
            "created_at" => json!(p.created_at),
            "links" => links(base, "ports", &p.uuid),
            _ => Value::Null,
        };
        m.insert(f.to_string(), v);
    }
    m
}

/// The `fields` a request asks for: each must be one of `all`.
pub fn requested(fields: Option<&str>, all: &[&str]) -> Result<Option<Vec<String>>, ApiError> {
    let Some(text) = fields else { return Ok(None) };
    let asked: Vec<String> = text.split(',').map(|f| f.trim().to_string()).filter(|f| !f.is_empty()).collect();
    let unknown: Vec<&str> = asked.iter().map(String::as_str).filter(|f| !all.contains(f)).collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!("Field(s) \"{}\" are not valid", unknown.join(", "))));
    }
    Ok(Some(asked))
}

/// The object with only `fields` kept.
pub fn only(mut m: Map<String, Value>, fields: &[impl AsRef<str>]) -> Value {
    Value::Object(fields.iter().filter_map(|f| m.remove_entry(f.as_ref())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked_and_kept_in_order_asked() {
        assert_eq!(requested(None, NODE_FIELDS).unwrap(), None);
        let f = requested(Some("provision_state,uuid"), NODE_FIELDS).unwrap().unwrap();
        assert_eq!(f, ["provision_state", "uuid"]);
        let e = requested(Some("uuid,bogus"), NODE_FIELDS).unwrap_err();
        assert!(e.message.contains("bogus"), "{e}");
        let mut m = Map::new();
        m.insert("a".into(), json!(1));
        m.insert("b".into(), json!(2));
        assert_eq!(only(m, &["b"]), json!({"b": 2}));
    }

    #[test]
    fn ironics_hardware_types_name_kilns_drivers() {
        for k in DriverKind::ALL {
            assert_eq!(driver_of(driver_name(*k)).unwrap(), *k);
            assert_eq!(driver_of(k.as_str()).unwrap(), *k);
        }
        assert!(driver_of("ilo").is_err());
    }
}
