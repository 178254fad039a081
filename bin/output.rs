//! Printing: tables for people, one JSON document for scripts. Node objects
//! in JSON use the field names of docs/state-machine.md; passwords are already
//! masked in every view the daemon sends. `node show` adds the node's
//! `ports` and `portgroups` to its object.

use chrono::SecondsFormat;
use kiln_actors::events::NodeEvent;
use kiln_actors::jobs::{JobView, NodeResult, QueueInfo};
use kiln_actors::{MemberView, NodeDetail, NodeValidation, NodeView, PortGroupView, PortView, SiteStatus};
use kiln_store::{HistoryEntry, JobLogEntry, LogLevel, Timestamp};
use serde::Serialize;
use serde_json::Value;

/// Prints a value as pretty JSON.
pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// Prints a value as JSON on one line (a stream of them, as `kiln --json
/// job watch` prints), flushed at once so a reader sees each as it comes.
pub fn json_line<T: Serialize + ?Sized>(value: &T) {
    use std::io::Write;
    match serde_json::to_string(value) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// A time as people read it in tables: UTC to the millisecond
/// (`2026-11-24T19:51:24.162Z`). `--json` keeps the full nanoseconds.
pub fn when(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// [`when`], or `-` for a time that has not come.
fn when_or_dash(t: &Option<Timestamp>) -> String {
    t.as_ref().map(when).unwrap_or_else(|| "-".into())
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// Prints rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| print!("{}", aligned(&widths, cells));
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// The columns of `node list`.
const NODE_HEADER: [&str; 7] = ["NAME", "UUID", "PROVISION STATE", "TARGET", "POWER", "MAINTENANCE", "RESERVATION"];

/// One node's row of `node list`.
fn node_row(v: &NodeView) -> Vec<String> {
    vec![
        v.name.clone(),
        v.uuid.to_string(),
        v.provision_state.to_string(),
        opt(&v.target_provision_state),
        opt(&v.power_state),
        if v.maintenance { "yes".into() } else { "no".into() },
        v.reservation.as_ref().map(|r| r.purpose.clone()).unwrap_or_else(|| "-".into()),
    ]
}

pub fn nodes(views: &[NodeView]) {
    let rows: Vec<Vec<String>> = views.iter().map(node_row).collect();
    table(&NODE_HEADER, &rows);
}

/// `node list` printed as its pages come, rows on the screen before the
/// last node is listed: the table's columns are laid out from the first
/// page, widened to what any later row can hold (the longest name the
/// daemon announced, the longest state names), so no row is printed
/// before the widths are known and none breaks them. `--json` prints the
/// same pretty JSON array [`json`] prints of the whole list, element by
/// element. Each page is written and flushed at once; an error writing
/// (the reader went away) is returned so the caller stops reading.
pub struct NodeRows<W: std::io::Write> {
    out: W,
    /// `None` for `--json`; the columns' widths for a table.
    widths: Option<Vec<usize>>,
    /// JSON elements written so far.
    written: usize,
}

impl<W: std::io::Write> NodeRows<W> {
    /// Starts printing to `out` a list whose first page is `first` (not
    /// printed yet); `name_width`: the daemon's longest name of the list.
    pub fn new(out: W, json: bool, first: &[NodeView], name_width: usize) -> NodeRows<W> {
        let widths = (!json).then(|| {
            let states = kiln_store::ProvisionState::ALL.iter().map(|s| s.as_str().len()).max().unwrap_or(0);
            let powers = kiln_store::PowerState::ALL.iter().map(|s| s.as_str().len()).max().unwrap_or(0);
            let mut widths: Vec<usize> = NODE_HEADER.iter().map(|h| h.len()).collect();
            for row in first.iter().map(node_row) {
                for (i, cell) in row.iter().enumerate() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
            for (i, at_least) in [(0, name_width), (2, states), (3, states), (4, powers), (5, 3)] {
                widths[i] = widths[i].max(at_least);
            }
            widths
        });
        let mut rows = NodeRows { out, widths, written: 0 };
        if let Some(widths) = &rows.widths {
            let header = NODE_HEADER.iter().map(|h| h.to_string()).collect();
            let _ = rows.out.write_all(aligned(widths, header).as_bytes());
        }
        rows
    }

    /// Prints one page and flushes it.
    pub fn page(&mut self, views: &[NodeView]) -> std::io::Result<()> {
        match &self.widths {
            Some(widths) => {
                for v in views {
                    self.out.write_all(aligned(widths, node_row(v)).as_bytes())?;
                }
            }
            None => {
                for v in views {
                    let text = serde_json::to_string_pretty(v).map_err(std::io::Error::other)?;
                    self.out.write_all(if self.written == 0 { b"[\n" } else { b",\n" })?;
                    // An element of a pretty array: each line indented once.
                    for (i, line) in text.lines().enumerate() {
                        if i > 0 {
                            self.out.write_all(b"\n")?;
                        }
                        self.out.write_all(b"  ")?;
                        self.out.write_all(line.as_bytes())?;
                    }
                    self.written += 1;
                }
            }
        }
        self.out.flush()
    }

    /// Ends the list (closes the JSON array); the output, for a test.
    pub fn end(mut self) -> std::io::Result<W> {
        if self.widths.is_none() {
            self.out.write_all(if self.written == 0 { b"[]\n" } else { b"\n]\n" })?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One line of a table whose columns are `widths` wide, as [`table`] lays it out.
fn aligned(widths: &[usize], cells: Vec<String>) -> String {
    let last = cells.len() - 1;
    let text: Vec<String> = cells
        .into_iter()
        .enumerate()
        .map(|(i, c)| if i == last { c } else { format!("{c:<w$}", w = widths[i]) })
        .collect();
    let mut line = text.join("  ").trim_end().to_string();
    line.push('\n');
    line
}

/// `node show`'s line for a JSON object: `k=v` pairs, each value as JSON
/// but a string's, which shows bare as a property's does.
fn object(o: &kiln_store::JsonObject) -> String {
    if o.is_empty() {
        return "-".into();
    }
    o.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `node show`'s `bmc` line: whether the BMC answered its last call, and
/// when it last did.
fn bmc_reach(v: &NodeView) -> String {
    let last = v.bmc_last_contact.as_ref().map_or_else(|| "never".into(), when);
    match &v.bmc_unreachable_since {
        Some(since) => format!("unreachable since {} (last contact {last})", when(since)),
        None if v.bmc_last_contact.is_none() => "not contacted yet".into(),
        None => format!("reachable (last contact {last})"),
    }
}

/// What was learned about the BMC, in one line.
fn bmc_profile(v: &NodeView) -> String {
    let Some(p) = &v.bmc_profile else { return "not learned yet".into() };
    let mut facts = Vec::new();
    if let Some(auth) = p.redfish_auth {
        facts.push(format!("redfish auth {auth}"));
    }
    match p.redfish_sessions {
        Some(true) => facts.push("sessions served".into()),
        Some(false) => facts.push("sessions not served".into()),
        None => {}
    }
    if let Some(suite) = p.ipmi_cipher_suite {
        facts.push(format!("ipmi cipher suite {suite}"));
    }
    format!("{} (learned {})", facts.join(", "), when(&p.learned_at))
}

pub fn node(v: &NodeView) {
    let map = |m: &std::collections::BTreeMap<String, String>| {
        if m.is_empty() {
            "-".to_string()
        } else {
            m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
        }
    };
    let rows = [
        ("name", v.name.clone()),
        ("uuid", v.uuid.to_string()),
        ("driver", v.driver.to_string()),
        ("driver_info", map(&v.driver_info)),
        ("properties", map(&v.properties)),
        ("extra", object(&v.extra)),
        ("instance_info", object(&v.instance_info)),
        ("provision_state", v.provision_state.to_string()),
        ("target_provision_state", opt(&v.target_provision_state)),
        ("power_state", opt(&v.power_state)),
        ("target_power_state", opt(&v.target_power_state)),
        ("boot_device", opt(&v.boot_device)),
        ("maintenance", v.maintenance.to_string()),
        ("maintenance_reason", opt(&v.maintenance_reason)),
        ("fault", opt(&v.fault)),
        ("last_error", opt(&v.last_error)),
        ("bmc", bmc_reach(v)),
        ("power_verified_at", v.power_verified_at.as_ref().map_or_else(|| "never".into(), when)),
        ("bmc_profile", bmc_profile(v)),
        (
            "callback",
            v.callback
                .as_ref()
                .map(|c| format!("token {} (since {})", c.token, when(&c.since)))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "reservation",
            v.reservation
                .as_ref()
                .map(|r| format!("{} since {}", r.purpose, when(&r.since)))
                .unwrap_or_else(|| "-".into()),
        ),
        ("created_at", when(&v.created_at)),
        ("updated_at", when(&v.updated_at)),
    ];
    for (k, val) in rows {
        println!("{k:<24}{val}");
    }
}

/// `node show --json`: the node object as everywhere else, then its
/// `ports` and `portgroups`. serde's `flatten` works here, in JSON, where
/// the admin protocol's bincode could not carry it.
#[derive(Serialize)]
pub struct NodeDetailJson<'a> {
    #[serde(flatten)]
    node: &'a NodeView,
    ports: &'a [PortView],
    portgroups: &'a [PortGroupView],
}

impl<'a> NodeDetailJson<'a> {
    pub fn of(d: &'a NodeDetail) -> Self {
        NodeDetailJson { node: &d.node, ports: &d.ports, portgroups: &d.portgroups }
    }
}

/// `node show`: the node's fields, then one line per port and per group.
pub fn node_detail(d: &NodeDetail) {
    node(&d.node);
    let lines = |key: &str, items: Vec<String>| {
        if items.is_empty() {
            println!("{key:<24}-");
        }
        for (i, item) in items.iter().enumerate() {
            println!("{:<24}{item}", if i == 0 { key } else { "" });
        }
    };
    lines(
        "ports",
        d.ports
            .iter()
            .map(|p| match &p.portgroup {
                Some(g) => format!("{} (in {g})", p.address),
                None => p.address.clone(),
            })
            .collect(),
    );
    lines(
        "portgroups",
        d.portgroups
            .iter()
            .map(|g| {
                let members = if g.ports.is_empty() { "no ports".to_string() } else { g.ports.join(", ") };
                let address = g.address.as_ref().map(|a| format!(", address {a}")).unwrap_or_default();
                format!("{} ({}{address}): {members}", g.name, g.mode)
            })
            .collect(),
    );
}

/// `node validate`: a row per node and interface, as `openstack baremetal
/// node validate` prints them (`True`/`False`).
pub fn validation(list: &[NodeValidation]) {
    let mut rows = Vec::new();
    for v in list {
        if let Some(e) = &v.error {
            rows.push(vec![v.node.clone(), "-".into(), "False".into(), e.to_string()]);
        }
        for (interface, check) in &v.interfaces {
            rows.push(vec![
                v.node.clone(),
                interface.to_string(),
                if check.result { "True".into() } else { "False".into() },
                opt(&check.reason),
            ]);
        }
    }
    table(&["NODE", "INTERFACE", "RESULT", "REASON"], &rows);
}

/// `node validate --json`: per node, its interfaces keyed by name with
/// `result` and `reason` (Ironic's API shape), and an `error` (kind and
/// message) when the node could not be validated at all.
pub fn validation_json(list: &[NodeValidation]) -> serde_json::Value {
    list.iter()
        .map(|v| {
            let error = match &v.error {
                Some(e) => serde_json::json!({ "kind": e.kind(), "message": e.to_string() }),
                None => serde_json::Value::Null,
            };
            serde_json::json!({ "node": v.node, "interfaces": v.interfaces, "error": error })
        })
        .collect()
}

pub fn results(list: &[NodeResult]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                if r.ok { "ok".into() } else { "failed".into() },
                opt(&r.provision_state),
                opt(&r.power_state),
                opt(&r.error.as_ref().map(|e| &e.message)),
            ]
        })
        .collect();
    table(&["NODE", "RESULT", "PROVISION STATE", "POWER", "ERROR"], &rows);
}

kiln_store::string_enum!(
    /// A field of `kiln job list -o` (Ganeti's `gnt-job list -o`).
    JobField, "job field" {
        Id => "id",
        Status => "status",
        Priority => "priority",
        Summary => "summary",
        Ops => "ops",
        Opstatus => "opstatus",
        Submitted => "submitted",
        Started => "started",
        Ended => "ended",
        Depends => "depends",
        Error => "error",
        Archived => "archived",
    }
);

/// What `kiln job list` shows without `-o`.
pub const DEFAULT_JOB_FIELDS: &[JobField] =
    &[JobField::Id, JobField::Status, JobField::Priority, JobField::Submitted, JobField::Summary];

/// Reads `-o id,status,...`; `+f1,f2` adds to the default fields.
pub fn job_fields(spec: &str) -> anyhow::Result<Vec<JobField>> {
    let (mut fields, spec) = match spec.strip_prefix('+') {
        Some(more) => (DEFAULT_JOB_FIELDS.to_vec(), more),
        None => (Vec::new(), spec),
    };
    for name in spec.split(',').map(str::trim) {
        let field: JobField = name.parse()?;
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    Ok(fields)
}

impl JobField {
    fn header(self) -> String {
        self.as_str().to_uppercase()
    }

    /// The field as a table cell.
    fn text(self, j: &JobView) -> String {
        match self {
            JobField::Id => j.id.to_string(),
            JobField::Status => j.status.to_string(),
            JobField::Priority => j.priority.to_string(),
            JobField::Summary => j.ops.iter().map(|o| o.opcode.summary()).collect::<Vec<_>>().join("; "),
            JobField::Ops => j
                .ops
                .iter()
                .map(|o| serde_json::to_string(&crate::jobfile::file_opcode(&o.opcode)).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("; "),
            JobField::Opstatus => j.ops.iter().map(|o| o.status.as_str()).collect::<Vec<_>>().join(","),
            JobField::Submitted => when(&j.submitted_at),
            JobField::Started => when_or_dash(&j.started_at),
            JobField::Ended => when_or_dash(&j.ended_at),
            JobField::Depends if j.depends.is_empty() => "-".into(),
            JobField::Depends => depends_text(j),
            JobField::Error => opt(&j.error),
            JobField::Archived => if j.archived { "yes" } else { "no" }.into(),
        }
    }

    /// The field in JSON: the values `kiln --json job show` has.
    fn value(self, j: &JobView, whole: &Value) -> Value {
        match self {
            JobField::Summary => j.ops.iter().map(|o| Value::from(o.opcode.summary())).collect(),
            JobField::Ops => {
                whole["ops"].as_array().map_or(Value::Null, |ops| ops.iter().map(|o| o["opcode"].clone()).collect())
            }
            JobField::Opstatus => j.ops.iter().map(|o| Value::from(o.status.as_str())).collect(),
            JobField::Submitted => whole["submitted_at"].clone(),
            JobField::Started => whole["started_at"].clone(),
            JobField::Ended => whole["ended_at"].clone(),
            other => whole[other.as_str()].clone(),
        }
    }
}

/// `12 (success), 13 (success|error)`.
fn depends_text(j: &JobView) -> String {
    let deps: Vec<String> = j
        .depends
        .iter()
        .map(|d| {
            let statuses = d.statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("|");
            if statuses.is_empty() { d.job.to_string() } else { format!("{} ({statuses})", d.job) }
        })
        .collect();
    deps.join(", ")
}

pub fn jobs(list: &[JobView], fields: &[JobField]) {
    let rows: Vec<Vec<String>> = list.iter().map(|j| fields.iter().map(|f| f.text(j)).collect()).collect();
    let headers: Vec<String> = fields.iter().map(|f| f.header()).collect();
    table(&headers.iter().map(String::as_str).collect::<Vec<_>>(), &rows);
}

/// A job as `--json` prints it: every field of the view, its opcodes as
/// a job file writes them (so the document can be submitted again), and
/// its log when it has one.
pub fn job_value(j: &JobView) -> Value {
    let mut doc = serde_json::to_value(j).unwrap_or(Value::Null);
    if let Some(ops) = doc.get_mut("ops").and_then(Value::as_array_mut) {
        for (shown, op) in ops.iter_mut().zip(&j.ops) {
            shown["opcode"] = serde_json::to_value(crate::jobfile::file_opcode(&op.opcode)).unwrap_or(Value::Null);
        }
    }
    if let Some(fields) = doc.as_object_mut()
        && fields.get("log").is_some_and(Value::is_null)
    {
        // A list has no logs; `job show` does.
        fields.remove("log");
    }
    doc
}

/// Jobs as `--json` prints them: whole, or only `fields` (`-o`).
pub fn jobs_value(list: &[JobView], fields: Option<&[JobField]>) -> Value {
    list.iter()
        .map(|j| {
            let whole = job_value(j);
            match fields {
                None => whole,
                Some(fields) => {
                    Value::Object(fields.iter().map(|f| (f.as_str().to_string(), f.value(j, &whole))).collect())
                }
            }
        })
        .collect()
}

/// One log line for people: `TIME MESSAGE`, the level before the message
/// when it is not info.
pub fn log_line(e: &JobLogEntry) -> String {
    match e.level {
        LogLevel::Info => format!("{} {}", when(&e.at), e.message),
        level => format!("{} {level}: {}", when(&e.at), e.message),
    }
}

pub fn job(j: &JobView) {
    println!("job {} {}{}", j.id, j.status, if j.archived { " (archived)" } else { "" });
    println!("priority     {}", j.priority);
    println!("submitted    {}", when(&j.submitted_at));
    println!("started      {}", when_or_dash(&j.started_at));
    println!("ended        {}", when_or_dash(&j.ended_at));
    if !j.depends.is_empty() {
        println!("depends on   {}", depends_text(j));
    }
    if let Some(e) = &j.error {
        println!("error        {e}");
    }
    for (i, op) in j.ops.iter().enumerate() {
        println!(
            "opcode {}: {} [{}]{}",
            i + 1,
            op.opcode.summary(),
            op.status,
            op.error.as_ref().map(|e| format!(" {e}")).unwrap_or_default()
        );
        for r in op.results.iter().filter(|r| !r.ok) {
            println!("  {}: {}", r.node, r.error.as_ref().map_or("failed", |e| e.message.as_str()));
        }
        let ok = op.results.iter().filter(|r| r.ok).count();
        if !op.results.is_empty() {
            println!("  {ok}/{} nodes ok", op.results.len());
        }
    }
    if let Some(log) = j.log.as_ref().filter(|l| !l.is_empty()) {
        println!("log");
        let width = log.last().map_or(1, |e| e.serial.to_string().len());
        for e in log {
            println!("  {:>width$} {} {:<7} {}", e.serial, when(&e.at), e.level.as_str(), e.message);
        }
    }
}

pub fn queue(q: &QueueInfo) {
    println!("drained      {}", if q.drained { "yes (new jobs are refused)" } else { "no" });
    println!("running      {}/{}", q.running, q.max_running);
    println!("not ended    {} (at most {})", q.unfinished, q.max_queued);
    println!("last job id  {}", q.last_job_id);
    for (status, n) in &q.by_status {
        println!("  {status:<12}{n}");
    }
}

/// `kiln member list`, and the members part of `kiln status`.
pub fn members(list: &[MemberView]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|m| {
            vec![
                if m.this { format!("{} *", m.name) } else { m.name.clone() },
                m.state.clone(),
                m.host.clone(),
                m.pid.to_string(),
                format!("{:.1}s", m.heartbeat_age_ms as f64 / 1000.0),
                m.nodes.to_string(),
                m.id.clone(),
            ]
        })
        .collect();
    table(&["NAME", "STATE", "HOST", "PID", "HEARTBEAT", "NODES", "ID"], &rows);
}

pub fn ports(list: &[PortView]) {
    let rows: Vec<Vec<String>> =
        list.iter().map(|p| vec![p.address.clone(), p.node.clone(), opt(&p.portgroup), p.uuid.clone()]).collect();
    table(&["ADDRESS", "NODE", "GROUP", "UUID"], &rows);
}

pub fn port_groups(list: &[PortGroupView]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                g.node.clone(),
                g.mode.to_string(),
                opt(&g.address),
                if g.ports.is_empty() { "-".into() } else { g.ports.join(",") },
                g.uuid.clone(),
            ]
        })
        .collect();
    table(&["NAME", "NODE", "MODE", "ADDRESS", "PORTS", "UUID"], &rows);
}

pub fn history(list: &[HistoryEntry]) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|h| vec![when(&h.at), h.event.clone(), h.from_state.to_string(), h.to_state.to_string(), opt(&h.error)])
        .collect();
    table(&["AT", "EVENT", "FROM", "TO", "ERROR"], &rows);
}

pub fn status(s: &SiteStatus) {
    let started = chrono::DateTime::parse_from_rfc3339(&s.started_at)
        .map(|t| when(&t.with_timezone(&chrono::Utc)))
        .unwrap_or_else(|_| s.started_at.clone());
    println!("kiln {} (started {started})", s.version);
    println!("data dir     {}", s.data_dir);
    println!("nodes        {}", s.nodes);
    println!("maintenance  {}", s.maintenance);
    println!("reserved     {}", s.reserved);
    for (state, n) in &s.by_provision_state {
        println!("  {state:<20}{n}");
    }
    if !s.members.is_empty() {
        let alive = s.members.iter().filter(|m| m.state == "alive").count();
        println!("members      {alive} alive of {} (* answered)", s.members.len());
        members(&s.members);
    }
    if s.config.is_empty() {
        return;
    }
    let changed: Vec<String> =
        s.config_changed.iter().map(|k| format!("{k}={}", s.config.get(k).map_or("", String::as_str))).collect();
    match changed.is_empty() {
        true => println!("config       all defaults"),
        false => println!("config       {} (the rest default; --json lists every key)", changed.join(", ")),
    }
}

/// One line per event, for `kiln events`.
pub fn event_line(e: &NodeEvent) -> String {
    let mut line = format!(
        "{} #{} {} {} {} {}",
        when(&e.at),
        e.serial,
        e.node_name,
        match e.kind {
            kiln_actors::EventKind::Start => "start",
            kiln_actors::EventKind::End => "end",
            kiln_actors::EventKind::Error => "error",
        },
        e.action,
        e.provision_state
    );
    if let Some(err) = &e.error {
        line.push_str(&format!(": {err}"));
    }
    line
}

pub fn periodic(tasks: &[kiln_actors::scheduler::PeriodicInfo]) {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                format!("{}s", t.spacing_s),
                if t.enabled { "yes".into() } else { "no".into() },
                when_or_dash(&t.last_run),
                t.last_duration_ms.map(|d| format!("{d}ms")).unwrap_or_else(|| "-".into()),
                if t.running { "running".into() } else { when_or_dash(&t.next_run) },
                t.runs.to_string(),
                t.failures.to_string(),
                t.last_error.clone().or_else(|| t.last_result.clone()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &["NAME", "SPACING", "ENABLED", "LAST RUN", "DURATION", "NEXT RUN", "RUNS", "FAILURES", "LAST RESULT / ERROR"],
        &rows,
    );
}

/// clush's default output, as the lines come: `node: line`, stderr's
/// lines to stderr.
pub fn live_lines(lines: &[kiln_actors::exec::OutputLine]) {
    use std::io::Write;
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for l in lines {
        // A closed stdout ends the CLI (SIGPIPE), as it ends clush.
        let _ =
            if l.stderr { writeln!(err, "{}: {}", l.node, l.line) } else { writeln!(out, "{}: {}", l.node, l.line) };
    }
    let _ = out.flush();
}

/// A node's end, when it is news: why it failed, or its non-zero exit code.
pub fn node_end(o: &kiln_actors::exec::ExecOutcome) {
    if let Some(e) = &o.error {
        eprintln!("kiln: {}: {e}", o.node);
    } else if o.exit_code != 0 {
        eprintln!("kiln: {}: exited with exit code {}", o.node, o.exit_code);
    }
}

/// `-b`: nodes with identical output and exit code gathered under their
/// folded node set (dshbak -c style).
pub fn gathered(outcomes: &[kiln_actors::exec::ExecOutcome]) {
    use std::collections::BTreeMap;
    let mut groups: BTreeMap<(String, i32, Option<String>), Vec<&str>> = BTreeMap::new();
    for o in outcomes {
        let text = format!("{}{}", o.stdout, o.stderr);
        groups.entry((text, o.exit_code, o.error.clone())).or_default().push(&o.node);
    }
    for ((text, code, error), nodes) in groups {
        // Nodes that printed nothing and succeeded have nothing to show
        // (as `clush -b`): a copy that worked prints nothing at all.
        if text.is_empty() && code == 0 && error.is_none() {
            continue;
        }
        let set = kiln_actors::nodeset::NodeSet::from_names(nodes.iter().copied());
        println!("---------------");
        println!("{} ({})", set.fold(), nodes.len());
        println!("---------------");
        print!("{text}");
        if !text.is_empty() && !text.ends_with('\n') {
            println!();
        }
        if let Some(e) = error {
            println!("kiln: {e}");
        } else if code != 0 {
            println!("kiln: exited with exit code {code}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(names: &[&str]) -> Vec<NodeView> {
        let now = chrono::Utc::now();
        names
            .iter()
            .map(|n| {
                NodeView::of(&kiln_store::NodeRecord::enroll(n.to_string(), kiln_store::DriverKind::Fake, now), None)
            })
            .collect()
    }

    /// Prints `pages` as `kiln node list` streams them; the text.
    fn streamed(json: bool, pages: &[Vec<NodeView>], name_width: usize) -> String {
        let mut rows = NodeRows::new(Vec::new(), json, &pages[0], name_width);
        for page in pages {
            rows.page(page).unwrap();
        }
        String::from_utf8(rows.end().unwrap()).unwrap()
    }

    #[test]
    fn a_streamed_json_list_is_the_pretty_array_of_the_whole_list() {
        let pages = [views(&["n1", "n2"]), views(&["n3"]), views(&["a-much-longer-name-4"])];
        let whole: Vec<NodeView> = pages.concat();
        let expected = format!("{}\n", serde_json::to_string_pretty(&whole).unwrap());
        assert_eq!(streamed(true, &pages, 20), expected);
        let empty: Vec<NodeView> = Vec::new();
        assert_eq!(
            streamed(true, std::slice::from_ref(&empty), 0),
            format!("{}\n", serde_json::to_string_pretty(&empty).unwrap())
        );
    }

    #[test]
    fn a_streamed_table_keeps_its_columns_for_rows_wider_than_the_first_page() {
        let pages = [views(&["n1", "n2"]), views(&["a-much-longer-name-4"])];
        let text = streamed(false, &pages, "a-much-longer-name-4".len());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let uuid = lines[0].find("UUID").unwrap();
        let state = lines[0].find("PROVISION STATE").unwrap();
        for (line, view) in lines[1..].iter().zip(pages.concat()) {
            assert_eq!(&line[uuid..uuid + 36], view.uuid.to_string(), "{text}");
            assert_eq!(&line[state..state + 6], "enroll", "{text}");
        }
    }
}
