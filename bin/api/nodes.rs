//! `/v1/nodes`: Ironic's node resource on kiln's nodes. Reads and changes
//! go through the admin socket's requests ([`super::call`]); provision and
//! power targets are answered 202 once the node has taken them, and the
//! clients poll the node until it settles, as they do with Ironic.

use std::collections::{BTreeMap, HashMap};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use kiln_actors::protocol::{Request, Response};
use kiln_actors::supervisor::NewNode;
use kiln_actors::{NodeUpdate, NodeView, Op, Verb};
use kiln_drivers::PowerAction;
use kiln_store::{BootDevice, DriverKind, ProvisionState};
use serde_json::{Map, Value, json};

use super::call::{self, act, body, boolean, query};
use super::errors::ApiError;
use super::fields::{self, NODE_FIELDS, NODE_LIST_FIELDS};
use super::list::ListParams;
use super::server::{State, base};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/nodes", web::get().to(list))
        .route("/v1/nodes", web::post().to(create))
        .route("/v1/nodes/detail", web::get().to(list_detail))
        .route("/v1/nodes/{node}", web::get().to(show))
        .route("/v1/nodes/{node}", web::patch().to(update))
        .route("/v1/nodes/{node}", web::delete().to(delete))
        .route("/v1/nodes/{node}/states", web::get().to(states))
        .route("/v1/nodes/{node}/states/provision", web::put().to(provision))
        .route("/v1/nodes/{node}/states/power", web::put().to(power))
        .route("/v1/nodes/{node}/maintenance", web::put().to(maintenance_on))
        .route("/v1/nodes/{node}/maintenance", web::delete().to(maintenance_off))
        .route("/v1/nodes/{node}/management/boot_device", web::get().to(boot_device))
        .route("/v1/nodes/{node}/management/boot_device", web::put().to(set_boot_device))
        .route("/v1/nodes/{node}/management/boot_device/supported", web::get().to(supported_boot_devices))
        .route("/v1/nodes/{node}/validate", web::get().to(validate))
        .route("/v1/nodes/{node}/history", web::get().to(history))
        .route("/v1/nodes/{node}/ports", web::get().to(super::ports::of_node))
        .route("/v1/nodes/{node}/ports/detail", web::get().to(super::ports::of_node_detail));
}

/// Ironic's JSON of a node.
fn shown(n: &NodeView, req: &HttpRequest, state: &State) -> Map<String, Value> {
    fields::node(n, &base(req), &state.host)
}

async fn list(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    listing(req, state, false).await
}

async fn list_detail(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    listing(req, state, true).await
}

async fn listing(req: HttpRequest, state: State, detail: bool) -> Result<HttpResponse, ApiError> {
    let q = query(&req)?;
    let params = ListParams::of(&q, detail, NODE_FIELDS, NODE_LIST_FIELDS)?;
    let matches_none = unkept_filters(&q)?;
    let fault = q.get("fault").cloned();
    let provision: Option<ProvisionState> = q
        .get("provision_state")
        .map(|s| s.parse().map_err(|e: kiln_store::UnknownValue| ApiError::bad_request(e.to_string())))
        .transpose()?;
    let maintenance = q.get("maintenance").map(|v| boolean("maintenance", v)).transpose()?;
    let driver: Option<DriverKind> = q.get("driver").map(|d| fields::driver_of(d)).transpose()?;
    // kiln keeps no instances: no node is associated with one.
    let associated = q.get("associated").map(|v| boolean("associated", v)).transpose()?;
    let nodes = match call::call(
        &state.site,
        Request::NodeList { nodes: None, state: provision, maintenance, bmc: None, stale: None },
    )
    .await?
    {
        Response::Nodes(n) => n,
        other => return Err(call::unexpected(&other)),
    };
    let objects = nodes
        .iter()
        .filter(|n| driver.is_none_or(|d| n.driver == d))
        .filter(|_| associated != Some(true) && !matches_none)
        .filter(|n| fault.is_none() || n.fault == fault)
        .map(|n| shown(n, &req, &state))
        .collect();
    let path = if detail { "/v1/nodes/detail" } else { "/v1/nodes" };
    Ok(HttpResponse::Ok().json(params.page(objects, "nodes", &base(&req), path)?))
}

/// A node list's query arguments: paging and fields, and the filters kiln
/// applies.
const NODE_LIST_ARGS: &[&str] = &[
    "fields",
    "detail",
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "provision_state",
    "maintenance",
    "driver",
    "associated",
    "fault",
    // kiln has no child nodes: with or without them, the same list.
    "include_children",
];

/// Ironic's node list filters on fields kiln keeps none of: every kiln node
/// has them empty (no owner, no resource class, no instance, one conductor
/// group, never retired), so a filter for a value matches no node.
const UNKEPT_FILTERS: &[&str] = &[
    "instance_uuid",
    "resource_class",
    "owner",
    "lessee",
    "project",
    "chassis_uuid",
    "conductor",
    "conductor_group",
    "shard",
    "parent_node",
    "description_contains",
    "retired",
    "sharded",
];

/// Checks a node list's query: an argument kiln does not know is refused,
/// as Ironic refuses one (a filter ignored would answer every node to a
/// script that asked for a few). Answers whether a filter on a field kiln
/// keeps empty asks for a value, so that no node matches.
fn unkept_filters(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    let mut matches_none = false;
    for (name, value) in q {
        if NODE_LIST_ARGS.contains(&name.as_str()) {
            continue;
        }
        if !UNKEPT_FILTERS.contains(&name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Unknown argument: \"{name}\" (kiln filters nodes by {} only; docs/ironic-api.md)",
                NODE_LIST_ARGS[6..11].join(", ")
            )));
        }
        let asks_a_value = match name.as_str() {
            "retired" | "sharded" => boolean(name, value)?,
            _ => !value.is_empty(),
        };
        matches_none |= asks_a_value;
    }
    Ok(matches_none)
}

async fn show(req: HttpRequest, state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let q = query(&req)?;
    let asked = fields::requested(q.get("fields").map(String::as_str), NODE_FIELDS)?;
    let n = call::node(&state.site, &path).await?;
    let m = shown(&n, &req, &state);
    Ok(HttpResponse::Ok().json(match asked {
        Some(f) => fields::only(m, &f),
        None => Value::Object(m),
    }))
}

/// The fields of a node Ironic's clients may send on create that kiln
/// keeps nothing of: accepted when empty.
fn empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// A JSON value as kiln keeps map values: text as it is, anything else as
/// its JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A `driver_info` key as kiln names it: Ironic's `ipmi_address`,
/// `redfish_password`, ... lose their driver's prefix.
fn info_key(driver: DriverKind, key: &str) -> String {
    let prefix = match driver {
        DriverKind::Ipmi => "ipmi_",
        DriverKind::Redfish => "redfish_",
        DriverKind::Fake => return key.to_string(),
    };
    match key {
        "redfish_verify_ca" if driver == DriverKind::Redfish => "verify_tls".into(),
        _ => key.strip_prefix(prefix).unwrap_or(key).to_string(),
    }
}

fn string_map(
    what: &str,
    v: Option<&Value>,
    key: impl Fn(&str) -> String,
) -> Result<BTreeMap<String, String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => Ok(m.iter().map(|(k, v)| (key(k), text(v))).collect()),
        Some(_) => Err(ApiError::bad_request(format!("{what} must be an object"))),
    }
}

fn object(what: &str, v: Option<&Value>) -> Result<kiln_store::JsonObject, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(ApiError::bad_request(format!("{what} must be an object"))),
    }
}

async fn create(req: HttpRequest, state: State, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let v = body(payload, state.settings.max_body).await?;
    let Value::Object(m) = v else { return Err(ApiError::bad_request("The node must be a JSON object")) };
    for (k, v) in &m {
        match k.as_str() {
            "name" | "driver" | "driver_info" | "properties" | "extra" | "instance_info" => {}
            k if !NODE_FIELDS.contains(&k) => {
                return Err(ApiError::bad_request(format!("Unknown attribute for argument node: {k}")));
            }
            k if !(empty(v) || k.ends_with("_interface") && v == "fake") => {
                return Err(ApiError::bad_request(format!("kiln does not keep a node's {k}; leave it out")));
            }
            _ => {}
        }
    }
    let driver = match m.get("driver") {
        Some(Value::String(d)) => fields::driver_of(d)?,
        _ => return Err(ApiError::bad_request("Mandatory field missing: driver")),
    };
    let name = match m.get("name") {
        Some(Value::String(n)) => n.clone(),
        // kiln names every node; one created without a name gets one.
        None | Some(Value::Null) => format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        Some(_) => return Err(ApiError::bad_request("name must be a string")),
    };
    let new = NewNode {
        name,
        driver: driver.as_str().to_string(),
        driver_info: string_map("driver_info", m.get("driver_info"), |k| info_key(driver, k))?,
        properties: string_map("properties", m.get("properties"), str::to_string)?,
        extra: object("extra", m.get("extra"))?,
        instance_info: object("instance_info", m.get("instance_info"))?,
        ports: Vec::new(),
    };
    let node = match call::call(&state.site, Request::NodeCreate(new)).await? {
        Response::Nodes(mut n) if n.len() == 1 => n.remove(0),
        other => return Err(call::unexpected(&other)),
    };
    let location = format!("{}/v1/nodes/{}", base(&req), node.uuid);
    Ok(HttpResponse::Created().insert_header(("Location", location)).json(shown(&node, &req, &state)))
}

/// One operation of a JSON patch (RFC 6902), as Ironic takes them.
struct PatchOp {
    op: String,
    path: String,
    value: Option<Value>,
}

fn patch_ops(v: Value) -> Result<Vec<PatchOp>, ApiError> {
    let Value::Array(items) = v else { return Err(ApiError::bad_request("A JSON patch must be a list of operations")) };
    if items.is_empty() {
        return Err(ApiError::bad_request("The patch is empty: it must hold at least one operation"));
    }
    items
        .into_iter()
        .map(|item| {
            let Value::Object(mut m) = item else {
                return Err(ApiError::bad_request("Each patch operation must be an object"));
            };
            let op = match m.remove("op") {
                Some(Value::String(op)) if matches!(op.as_str(), "add" | "replace" | "remove") => op,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid patch operation {other}: expected add, replace or remove"
                    )));
                }
                None => return Err(ApiError::bad_request("A patch operation has no 'op'")),
            };
            let path = match m.remove("path") {
                Some(Value::String(p)) if p.starts_with('/') => p,
                _ => return Err(ApiError::bad_request("A patch operation needs a 'path' starting with '/'")),
            };
            let value = m.remove("value");
            if op != "remove" && value.is_none() {
                return Err(ApiError::bad_request(format!("'{op}' of {path} needs a 'value'")));
            }
            if let Some(k) = m.keys().next() {
                return Err(ApiError::bad_request(format!("Unknown key '{k}' in a patch operation")));
            }
            Ok(PatchOp { op, path, value })
        })
        .collect()
}

/// A JSON patch of a node as kiln's update: `name` and `driver` replaced;
/// keys of `driver_info` and `properties` set or removed, or either
/// replaced whole; `extra` and `instance_info` patched as JSON documents
/// (a key, a nested path, or the whole object). Anything else is refused,
/// and with it the whole patch: nothing is changed.
fn node_update(node: &NodeView, ops: Vec<PatchOp>) -> Result<NodeUpdate, ApiError> {
    let mut update = NodeUpdate::default();
    // The driver first: `driver_info` keys in the same patch are named after
    // the driver the node will have (`ipmi_address` when it becomes ipmi).
    let mut driver = node.driver;
    let mut extra = Value::Object(node.extra.clone());
    let mut instance_info = Value::Object(node.instance_info.clone());
    let (top, rest): (Vec<PatchOp>, Vec<PatchOp>) =
        ops.into_iter().partition(|o| matches!(o.path.as_str(), "/name" | "/driver"));
    for PatchOp { op, path, value } in top {
        let field = &path[1..];
        let value = match (op.as_str(), value) {
            ("remove", _) if field == "name" => {
                return Err(ApiError::bad_request("kiln names every node: replace /name instead of removing it"));
            }
            ("remove", _) => {
                return Err(ApiError::bad_request("Mandatory field missing: driver; it cannot be removed"));
            }
            (_, Some(Value::String(v))) => v,
            (_, _) => return Err(ApiError::bad_request(format!("{path} must be a string"))),
        };
        if field == "name" {
            update.name = Some(value);
        } else {
            driver = fields::driver_of(&value)?;
            update.driver = Some(driver);
        }
    }
    if driver != node.driver {
        check_driver_change(node)?;
    }
    for PatchOp { op, path, value } in rest {
        let parts: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
        let (target, current) = match parts[0] {
            "driver_info" => (&mut update.driver_info, &node.driver_info),
            "properties" => (&mut update.properties, &node.properties),
            "extra" => {
                patch_document(&mut extra, &path, parts.get(1).copied(), &op, value)?;
                continue;
            }
            "instance_info" => {
                patch_document(&mut instance_info, &path, parts.get(1).copied(), &op, value)?;
                continue;
            }
            "instance_uuid" => {
                return Err(ApiError::bad_request(
                    "kiln does not change a node's instance_uuid through the API; it keeps no instances",
                ));
            }
            f if NODE_FIELDS.contains(&f) => {
                return Err(ApiError::bad_request(format!("'/{f}' cannot be changed by a patch")));
            }
            f => return Err(ApiError::bad_request(format!("Invalid patch path '/{f}': no such field"))),
        };
        let key = |k: &str| if parts[0] == "driver_info" { info_key(driver, k) } else { k.to_string() };
        match (parts.get(1), op.as_str(), value) {
            (Some(k), "remove", _) => {
                let k = key(k);
                if !current.contains_key(&k) && target.get(&k).is_none_or(Option::is_none) {
                    return Err(ApiError::bad_request(format!("Can't remove non-existent object '{k}' of {path}")));
                }
                target.insert(k, None);
            }
            (Some(k), _, Some(v)) => {
                target.insert(key(k), Some(text(&v)));
            }
            (None, "remove", _) => {
                for k in current.keys() {
                    target.insert(k.clone(), None);
                }
            }
            (None, _, Some(Value::Object(m))) => {
                for k in current.keys() {
                    target.insert(k.clone(), None);
                }
                for (k, v) in m {
                    target.insert(key(&k), Some(text(&v)));
                }
            }
            (None, _, _) => return Err(ApiError::bad_request(format!("{path} must be an object"))),
            (Some(_), _, None) => unreachable!("checked in patch_ops"),
        }
    }
    update.extra = object_changes(&node.extra, extra);
    update.instance_info = object_changes(&node.instance_info, instance_info);
    Ok(update)
}

/// Ironic's rule for a new driver: only in a state where no task of the
/// old one is under way, or in maintenance; else 409, as Ironic answers.
/// (The node actor checks the same when it commits.)
fn check_driver_change(node: &NodeView) -> Result<(), ApiError> {
    let state = node.provision_state;
    let working = kiln_actors::fsm::class(state) == kiln_actors::fsm::StateClass::Working;
    if kiln_actors::DRIVER_CHANGE_STATES.contains(&state) || (node.maintenance && !working) {
        return Ok(());
    }
    let allowed: Vec<&str> = kiln_actors::DRIVER_CHANGE_STATES.iter().map(|s| s.as_str()).collect();
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "Node {} can not have driver updated unless it is in one of allowed ({}) states or in maintenance mode.",
            node.uuid,
            allowed.join(", ")
        ),
    ))
}

/// Applies one patch operation to `doc` (a node's `extra` or
/// `instance_info`) at `pointer`, the path under it (`None`: the whole
/// object), with RFC 6901's escapes (`~1` for `/`, `~0` for `~`).
fn patch_document(
    doc: &mut Value,
    path: &str,
    pointer: Option<&str>,
    op: &str,
    value: Option<Value>,
) -> Result<(), ApiError> {
    let Some(pointer) = pointer else {
        *doc = match (op, value) {
            ("remove", _) => Value::Object(Map::new()),
            (_, Some(v @ Value::Object(_))) => v,
            _ => return Err(ApiError::bad_request(format!("{path} must be an object"))),
        };
        return Ok(());
    };
    let tokens: Vec<String> = pointer.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect();
    let (last, parents) = tokens.split_last().expect("split yields at least one token");
    let missing = || ApiError::bad_request(format!("Can't {op} '{path}': the path does not exist"));
    let mut parent = &mut *doc;
    for token in parents {
        parent = match parent {
            Value::Object(m) => m.get_mut(token.as_str()).ok_or_else(missing)?,
            Value::Array(a) => token.parse::<usize>().ok().and_then(|i| a.get_mut(i)).ok_or_else(missing)?,
            _ => return Err(missing()),
        };
    }
    match (parent, op, value) {
        (Value::Object(m), "remove", _) => {
            m.remove(last.as_str())
                .ok_or_else(|| ApiError::bad_request(format!("Can't remove non-existent object '{last}' of {path}")))?;
        }
        (Value::Object(m), "replace", Some(v)) => {
            let slot = m.get_mut(last.as_str()).ok_or_else(missing)?;
            *slot = v;
        }
        (Value::Object(m), _, Some(v)) => {
            m.insert(last.clone(), v);
        }
        (Value::Array(a), op, value) => {
            let index = if last == "-" && op == "add" { Some(a.len()) } else { last.parse::<usize>().ok() };
            match (index, op, value) {
                (Some(i), "remove", _) if i < a.len() => {
                    a.remove(i);
                }
                (Some(i), "replace", Some(v)) if i < a.len() => a[i] = v,
                (Some(i), "add", Some(v)) if i <= a.len() => a.insert(i, v),
                _ => return Err(missing()),
            }
        }
        _ => return Err(missing()),
    }
    Ok(())
}

/// The key changes that turn `old` into `new` (an object, as
/// [`patch_document`] leaves it).
fn object_changes(old: &kiln_store::JsonObject, new: Value) -> BTreeMap<String, Option<Value>> {
    let Value::Object(new) = new else { return BTreeMap::new() };
    let mut changes: BTreeMap<String, Option<Value>> =
        old.keys().filter(|k| !new.contains_key(*k)).map(|k| (k.clone(), None)).collect();
    for (k, v) in new {
        if old.get(&k) != Some(&v) {
            changes.insert(k, Some(v));
        }
    }
    changes
}

async fn update(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ops = patch_ops(body(payload, state.settings.max_body).await?)?;
    let node = call::node(&state.site, &path).await?;
    let update = node_update(&node, ops)?;
    let updated = match call::call(&state.site, Request::NodeSet { node: node.uuid.to_string(), update }).await? {
        Response::Node(n) => n,
        other => return Err(call::unexpected(&other)),
    };
    Ok(HttpResponse::Ok().json(shown(&updated, &req, &state)))
}

async fn delete(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let node = call::node(&state.site, &path).await?;
    match call::call(&state.site, Request::NodeDelete { nodes: node.uuid.to_string() }).await? {
        Response::Outcomes(results) => match results.into_iter().find_map(|r| r.error) {
            None => Ok(HttpResponse::NoContent().finish()),
            Some(e) => {
                let status = match e.kind.as_str() {
                    "node_locked" | "conflict" => StatusCode::CONFLICT,
                    "not_found" => StatusCode::NOT_FOUND,
                    "invalid_state" | "invalid_input" => StatusCode::BAD_REQUEST,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                Err(ApiError::new(status, e.message))
            }
        },
        other => Err(call::unexpected(&other)),
    }
}

async fn states(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let n = call::node(&state.site, &path).await?;
    Ok(HttpResponse::Ok().json(fields::states(&n)))
}

/// Ironic's provision targets and the kiln verbs they are.
pub fn verb_of(target: &str) -> Option<Verb> {
    Some(match target {
        "manage" => Verb::Manage,
        "provide" => Verb::Provide,
        "inspect" => Verb::Inspect,
        "clean" => Verb::Clean,
        "active" | "deploy" => Verb::Deploy,
        "deleted" | "undeploy" => Verb::Undeploy,
        "rebuild" => Verb::Rebuild,
        "abort" => Verb::Abort,
        "rescue" => Verb::Rescue,
        "unrescue" => Verb::Unrescue,
        "adopt" => Verb::Adopt,
        "unhold" => Verb::Unhold,
        "service" => Verb::Service,
        _ => return None,
    })
}

fn target_of(v: &Value) -> Result<String, ApiError> {
    match v.get("target") {
        Some(Value::String(t)) => Ok(t.clone()),
        _ => Err(ApiError::bad_request("Mandatory field missing: target")),
    }
}

/// What a handler answers.
type Reply = Result<HttpResponse, ApiError>;

fn accepted(req: &HttpRequest, uuid: &str) -> HttpResponse {
    HttpResponse::Accepted().insert_header(("Location", format!("{}/v1/nodes/{uuid}/states", base(req)))).finish()
}

async fn provision(req: HttpRequest, state: State, path: web::Path<String>, payload: web::Payload) -> Reply {
    change_state(req, state, path, payload, provision_op).await
}

async fn power(req: HttpRequest, state: State, path: web::Path<String>, payload: web::Payload) -> Reply {
    change_state(req, state, path, payload, power_op).await
}

/// `PUT …/states/provision` and `…/states/power`: the body's `target`,
/// read by `op_of`, started on the node; answered 202 as Ironic does.
async fn change_state(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    payload: web::Payload,
    op_of: fn(&str) -> Result<Op, ApiError>,
) -> Reply {
    let v = body(payload, state.settings.max_body).await?;
    let op = op_of(&target_of(&v)?)?;
    refuse_steps(&v)?;
    let node = call::node(&state.site, &path).await?;
    act(&state.site, &node.uuid.to_string(), op, false).await?;
    Ok(accepted(&req, &node.uuid.to_string()))
}

/// kiln runs each verb's own steps (docs/state-machine.md) and takes none
/// from a request: steps given would be silently skipped, so a request
/// that gives some is refused. An empty list asks for nothing and passes.
fn refuse_steps(v: &Value) -> Result<(), ApiError> {
    for key in ["clean_steps", "deploy_steps", "service_steps"] {
        match v.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(steps)) if steps.is_empty() => {}
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "kiln does not take {key}: each provision target runs kiln's own steps (docs/ironic-api.md)"
                )));
            }
        }
    }
    Ok(())
}

/// A provision target as a kiln verb.
fn provision_op(target: &str) -> Result<Op, ApiError> {
    verb_of(target).map(Op::Verb).ok_or_else(|| {
        ApiError::bad_request(format!(
            "The requested action \"{target}\" is not supported (expected one of: manage, provide, inspect, clean, \
             active, deleted, rebuild, abort, rescue, unrescue, adopt, unhold, service)"
        ))
    })
}

/// A power target as a kiln power action.
fn power_op(target: &str) -> Result<Op, ApiError> {
    let action = match target {
        "power on" => PowerAction::On,
        "power off" => PowerAction::Off,
        "rebooting" => PowerAction::Reboot,
        "soft power off" => PowerAction::SoftOff,
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid power target \"{other}\" (expected power on, power off, rebooting, soft power off)"
            )));
        }
    };
    Ok(Op::Power(action))
}

async fn maintenance_on(
    req: HttpRequest,
    state: State,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // The body is optional: `{"reason": "..."}`.
    let bytes = call::raw_body(payload, state.settings.max_body).await?;
    let reason = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("The request body is not valid JSON: {e}")))?;
        match v.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) => Some(r.clone()),
            Some(_) => return Err(ApiError::bad_request("reason must be a string")),
        }
    };
    let node = call::node(&state.site, &path).await?;
    act(&state.site, &node.uuid.to_string(), Op::Maintenance { on: true, reason }, true).await?;
    Ok(accepted(&req, &node.uuid.to_string()))
}

async fn maintenance_off(req: HttpRequest, state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let node = call::node(&state.site, &path).await?;
    act(&state.site, &node.uuid.to_string(), Op::Maintenance { on: false, reason: None }, true).await?;
    Ok(accepted(&req, &node.uuid.to_string()))
}

async fn boot_device(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let n = call::node(&state.site, &path).await?;
    Ok(HttpResponse::Ok().json(json!({"boot_device": n.boot_device.map(|d| d.as_str()), "persistent": null})))
}

async fn set_boot_device(
    state: State,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let v = body(payload, state.settings.max_body).await?;
    let device: BootDevice = match v.get("boot_device") {
        Some(Value::String(d)) => {
            d.parse().map_err(|e: kiln_store::UnknownValue| ApiError::bad_request(e.to_string()))?
        }
        _ => return Err(ApiError::bad_request("Mandatory field missing: boot_device")),
    };
    let persistent = match v.get("persistent") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => boolean("persistent", s)?,
        Some(_) => return Err(ApiError::bad_request("persistent must be a boolean")),
    };
    let node = call::node(&state.site, &path).await?;
    act(&state.site, &node.uuid.to_string(), Op::BootDevice { device, persistent }, true).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn supported_boot_devices(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    call::node(&state.site, &path).await?;
    let all: Vec<&str> = BootDevice::ALL.iter().map(|d| d.as_str()).collect();
    Ok(HttpResponse::Ok().json(json!({"supported_boot_devices": all})))
}

async fn validate(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let node = call::node(&state.site, &path).await?;
    let checks = match call::call(&state.site, Request::NodeValidate { nodes: node.uuid.to_string() }).await? {
        Response::Validation(mut v) if v.len() == 1 => v.remove(0),
        other => return Err(call::unexpected(&other)),
    };
    if let Some(e) = checks.error {
        return Err(e.into());
    }
    let mut out = Map::new();
    for (interface, check) in &checks.interfaces {
        out.insert(interface.to_string(), json!({"result": check.result, "reason": check.reason}));
    }
    Ok(HttpResponse::Ok().json(out))
}

async fn history(req: HttpRequest, state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let node = call::node(&state.site, &path).await?;
    let q = query(&req)?;
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(1000);
    let entries = match call::call(&state.site, Request::NodeHistory { node: node.uuid.to_string(), limit }).await? {
        Response::History(h) => h,
        other => return Err(call::unexpected(&other)),
    };
    let b = base(&req);
    let (high, _) = node.uuid.0.as_u64_pair();
    let shown: Vec<Value> = entries
        .iter()
        .map(|e| {
            // Entries have no id of their own: one made of the node's and
            // the time, the same at every read.
            let at = e.at.timestamp_nanos_opt().unwrap_or_default() as u64;
            let uuid = uuid::Uuid::from_u64_pair(high, at).to_string();
            let mut event = format!("{}: {} -> {}", e.event, e.from_state, e.to_state);
            if let Some(err) = &e.error {
                event.push_str(&format!(": {err}"));
            }
            json!({
                "uuid": uuid,
                "created_at": e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
                "severity": if e.error.is_some() { "ERROR" } else { "INFO" },
                "event": event,
                "event_type": "provisioning",
                "conductor": state.host,
                "user": null,
                "links": [{"href": format!("{b}/v1/nodes/{}/history/{uuid}", node.uuid), "rel": "self"}],
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"history": shown})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ironic_target_names_a_verb() {
        for t in ["manage", "provide", "inspect", "clean", "active", "deleted", "rebuild", "abort", "rescue"] {
            assert!(verb_of(t).is_some(), "{t}");
        }
        for t in ["unrescue", "adopt", "unhold", "service"] {
            assert!(verb_of(t).is_some(), "{t}");
        }
        assert_eq!(verb_of("active"), Some(Verb::Deploy));
        assert_eq!(verb_of("deleted"), Some(Verb::Undeploy));
        assert_eq!(verb_of("explode"), None);
    }

    #[test]
    fn malformed_patches_are_refused() {
        for bad in [
            json!({"op": "add"}),
            json!([{"op": "move", "path": "/name", "from": "/x"}]),
            json!([{"op": "add", "path": "properties/x", "value": 1}]),
            json!([{"op": "add", "path": "/properties/x"}]),
            json!([{"op": "add", "path": "/properties/x", "value": 1, "extra": 2}]),
            json!(["add"]),
        ] {
            assert!(patch_ops(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn ironics_driver_info_names_are_kilns() {
        assert_eq!(info_key(DriverKind::Ipmi, "ipmi_address"), "address");
        assert_eq!(info_key(DriverKind::Redfish, "redfish_system_id"), "system_id");
        assert_eq!(info_key(DriverKind::Redfish, "redfish_verify_ca"), "verify_tls");
        assert_eq!(info_key(DriverKind::Fake, "latency_ms"), "latency_ms");
    }
}
