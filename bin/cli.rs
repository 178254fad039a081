//! The command line, as clap types. Parsing only: [`crate::commands`] runs it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// kiln: a site-local control plane for bare-metal machines.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    /// The daemon's admin socket: the one `serve` listens on, the one every
    /// other command talks to (default: $KILN_SOCKET, else
    /// ./kiln-data/kiln.sock; for `serve`, DATA_DIR/kiln.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Print one JSON document instead of tables (before or after the
    /// subcommand: `kiln --json node list`, `kiln node list --json`).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    #[command(after_help = "Every config key is also read from KILN_<KEY> (KILN_LOCK_WAIT=5s) and \
--set KEY=VALUE; flags beat the environment, which beats the file. `kiln serve --check-config` shows \
every key's value and source; docs/config.md lists them. SIGHUP reloads the file.")]
    Serve(ServeArgs),
    /// Show the site at a glance.
    Status,
    /// Manage nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage ports.
    #[command(subcommand)]
    Port(PortCommand),
    /// Jobs: list, show, watch, cancel, priority, archive, autoarchive, submit.
    #[command(subcommand)]
    Job(JobCommand),
    /// The job queue: drain on|off, status.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// The members of a site whose store (PostgreSQL) is shared by several
    /// `kiln serve`: list.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Run a command on every node of a set (ClusterShell's clush).
    Exec(ExecArgs),
    /// Copy a file (or, with -r, a directory) to every node of a set (scp;
    /// cp with --worker exec).
    Copy(CopyArgs),
    /// Gather a file or directory from every node of a set into a local
    /// directory, as DEST/NAME.node (clush --rcopy).
    Rcopy(RcopyArgs),
    /// Periodic tasks: list, run one now.
    #[command(subcommand)]
    Periodic(PeriodicCommand),
    /// Show recent events (the last 1,000), or with --since the stored ones
    /// after a serial; with --follow, keep printing new ones.
    Events {
        /// Print new events as they happen, from now on (Ctrl-C stops);
        /// with --since, after the stored events since that serial.
        #[arg(long, short)]
        follow: bool,
        /// Replay the stored events after this serial (each event's
        /// `serial`; the newest 100,000 are kept, across restarts), so a
        /// consumer that reconnects misses nothing. On a PostgreSQL site
        /// every member keeps the same series, of every member's events.
        #[arg(long, value_name = "SERIAL")]
        since: Option<u64>,
        /// Only the events of these nodes (a node set; the daemon filters).
        #[arg(short = 'w', long = "nodes", value_name = "NODESET")]
        nodes: Option<String>,
        /// Only events of these kinds (comma-separated: start, end, error).
        #[arg(long = "kind", value_name = "KIND,...", value_delimiter = ',', value_parser = parse_event_kind)]
        kinds: Vec<kiln_actors::EventKind>,
    },
    /// Measure a performance scenario in-process (docs/performance.md).
    Bench(BenchArgs),
    /// Expand, fold or count a node set (no daemon needed).
    Nodeset(NodesetArgs),
    /// The store: online backup (no daemon needed; safe while it runs).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory.
    Manpage {
        /// Write kiln.1, kiln-node.1, kiln-node-create.1, ... here instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `kiln serve`. Every key of the config file can also be set by its
/// `KILN_<KEY>` environment variable or `--set KEY=VALUE`; precedence: flags,
/// then environment, then file, then defaults (docs/config.md).
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// A TOML config file.
    #[arg(long, env = "KILN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the store (and by default the socket) live [default: ./kiln-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The store: "sqlite" (the file in the data dir) or a postgres:// URL [default: sqlite].
    #[arg(long, value_name = "sqlite|URL")]
    pub store: Option<String>,
    /// The admin socket to listen on: the global `--socket`, which may
    /// come before or after `serve`.
    #[arg(skip)]
    pub socket: Option<PathBuf>,
    /// Enrol N fake nodes demo1..N when the store is empty.
    #[arg(long, value_name = "N")]
    pub demo: Option<usize>,
    /// How long an exclusive request waits for a busy node (5, 1.5, 500ms, 2m) [default: 0].
    #[arg(long, value_name = "DURATION")]
    pub lock_wait: Option<String>,
    /// At most this many jobs run at once [default: 64].
    #[arg(long, value_name = "N")]
    pub max_running_jobs: Option<usize>,
    /// At most this many jobs not ended (queued, waiting, running); a
    /// submission past it is refused [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_queued_jobs: Option<usize>,
    /// Time between power syncs [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub power_sync_interval: Option<String>,
    /// Run no periodic task on its own (`kiln periodic run` still works).
    #[arg(long)]
    pub no_periodic: bool,
    /// How long SIGTERM lets running opcodes finish before failing them [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// Log format on stderr [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Set any config key (repeatable): `--set lock_wait=5s`.
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Validate the configuration, print every key's value and source, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Serve the Ironic-compatible HTTP API at ADDR (off by default; docs/ironic-api.md).
    #[arg(long, value_name = "ADDR")]
    pub api_addr: Option<String>,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::layered::Seconds::parse(s).map(|d| d.0)
}

fn parse_event_kind(s: &str) -> Result<kiln_actors::EventKind, String> {
    s.trim().parse()
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy the store into a new file: a consistent snapshot, checked,
    /// taken while the daemon runs. Restore: stop kiln, put the copy in
    /// place as DATA_DIR/kiln.sqlite, start kiln.
    Backup {
        /// The new file (it must not exist).
        dest: PathBuf,
        /// The daemon's config file (for its data_dir).
        #[arg(long, env = "KILN_CONFIG")]
        config: Option<PathBuf>,
        /// The data dir [default: from the config, $KILN_DATA_DIR, else ./kiln-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Enrol a node.
    Create(CreateArgs),
    /// Enrol every node of a JSON or YAML file, all or nothing.
    Import {
        /// A list of {name, driver, driver_info, properties, ports: [MAC]}.
        file: PathBuf,
    },
    /// List nodes.
    List {
        /// A node set to list (default: all).
        nodes: Option<String>,
        /// Only nodes in this provision state.
        #[arg(long)]
        state: Option<String>,
        /// Only nodes in maintenance.
        #[arg(long)]
        maintenance: bool,
        /// Only nodes whose BMC could not be reached at its last call
        /// (`unreachable`), or could (`reachable`).
        #[arg(long, value_name = "REACH", value_parser = ["reachable", "unreachable"])]
        bmc: Option<String>,
        /// Only nodes whose power state no BMC has confirmed for longer
        /// than DURATION (30s, 5m, 2h), or ever.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        stale: Option<std::time::Duration>,
    },
    /// Show one node, with its ports and port groups.
    Show {
        /// A node name or uuid.
        node: String,
    },
    /// Check each driver interface of nodes (power, management, boot,
    /// deploy, inspect), as `openstack baremetal node validate`; answers
    /// while a task holds a node. Exit 0 only if every interface passed.
    Validate {
        /// A node name, a uuid or a node set (`demo[1-64]`).
        nodes: String,
    },
    /// Show a node's history of transitions and errors.
    History {
        /// A node name or uuid.
        node: String,
        /// How many of the newest entries to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Change a node's name, driver, driver_info, properties, extra or instance_info.
    Set(SetArgs),
    /// Delete nodes.
    Delete {
        /// A node name, a uuid or a node set (`demo[1-64]`).
        nodes: String,
    },
    /// manage: enroll → manageable (verifies the BMC).
    Manage(VerbArgs),
    /// provide: manageable → available (cleans).
    Provide(VerbArgs),
    /// inspect: read hardware facts into properties.
    Inspect(VerbArgs),
    /// clean: manual cleaning from manageable.
    Clean(VerbArgs),
    /// deploy: available → active (PXE, or a Redfish node's
    /// instance_info.image_url from virtual media).
    Deploy(DeployArgs),
    /// undeploy: active → available (tears down and cleans).
    Undeploy(VerbArgs),
    /// rebuild: redeploy an active or failed node.
    Rebuild(VerbArgs),
    /// abort: stop a node waiting or held.
    Abort(VerbArgs),
    /// rescue: boot an active node into rescue.
    Rescue(VerbArgs),
    /// unrescue: return from rescue to active.
    Unrescue(VerbArgs),
    /// adopt: take over a running machine as active.
    Adopt(VerbArgs),
    /// unhold: let a held node go on.
    Unhold(VerbArgs),
    /// service: service an active node.
    Service(VerbArgs),
    /// Report from a node's booted system (a ramdisk, an installer's last
    /// step) that a deploy, clean or inspection it waited for is done, or
    /// failed; the node goes on from its wait state.
    Callback {
        /// A node name or uuid.
        node: String,
        /// The one-time token the node was issued (`kiln node show`).
        #[arg(long)]
        token: String,
        /// Report a failure: the node fails with this message.
        #[arg(long, value_name = "MESSAGE")]
        fail: Option<String>,
    },
    /// Power actions and status.
    #[command(subcommand)]
    Power(PowerCommand),
    /// Boot device.
    #[command(subcommand, name = "boot-device")]
    BootDevice(BootDeviceCommand),
    /// Maintenance mode.
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The node's name: letters, digits, '.', '_' or '-'.
    pub name: String,
    // The help is `driver_help()`: the drivers crate's list of drivers.
    #[arg(long, help = driver_help())]
    pub driver: String,
    /// The BMC address (driver_info.address).
    #[arg(long)]
    pub address: Option<String>,
    /// The BMC user (driver_info.username).
    #[arg(long)]
    pub username: Option<String>,
    /// A file holding the BMC password (never pass it on the command line).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Any driver_info key (repeatable).
    #[arg(long = "driver-info", value_name = "K=V")]
    pub driver_info: Vec<String>,
    /// A property (repeatable).
    #[arg(long = "property", value_name = "K=V")]
    pub properties: Vec<String>,
    /// A port's MAC address (repeatable).
    #[arg(long = "mac", value_name = "MAC")]
    pub macs: Vec<String>,
}

/// `--driver`'s help, from the drivers crate's list: "fake, redfish or ipmi".
pub fn driver_help() -> String {
    let names: Vec<&str> = kiln_drivers::Kind::ALL.iter().map(|k| k.as_str()).collect();
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// A node name or uuid.
    pub node: String,
    /// Rename the node (unique across the site).
    #[arg(long)]
    pub name: Option<String>,
    // The help is `driver_help()`; allowed in enroll, inspecting, inspect
    // wait, manageable, available, or in maintenance.
    #[arg(long, help = driver_help())]
    pub driver: Option<String>,
    /// Set a driver_info key (repeatable).
    #[arg(long = "driver-info", value_name = "K=V")]
    pub driver_info: Vec<String>,
    /// Set a property (repeatable).
    #[arg(long = "property", value_name = "K=V")]
    pub properties: Vec<String>,
    /// Remove a driver_info key.
    #[arg(long = "unset-driver-info", value_name = "K")]
    pub unset_driver_info: Vec<String>,
    /// Remove a property.
    #[arg(long = "unset-property", value_name = "K")]
    pub unset_properties: Vec<String>,
    /// Set an extra key (repeatable); V is JSON if it parses, else a string.
    #[arg(long = "extra", value_name = "K=V")]
    pub extra: Vec<String>,
    /// Remove an extra key.
    #[arg(long = "unset-extra", value_name = "K")]
    pub unset_extra: Vec<String>,
    /// Set an instance_info key (repeatable; `image_url` is what a Redfish
    /// deploy boots); V is JSON if it parses, else a string.
    #[arg(long = "instance-info", value_name = "K=V")]
    pub instance_info: Vec<String>,
    /// Remove an instance_info key.
    #[arg(long = "unset-instance-info", value_name = "K")]
    pub unset_instance_info: Vec<String>,
    /// Set driver_info.password from a file.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Forget what was learned about the node's BMC (its auth mode, cipher
    /// suite): the next call finds it out again.
    #[arg(long)]
    pub reset_bmc_profile: bool,
}

#[derive(Debug, Args, Clone)]
pub struct DeployArgs {
    #[command(flatten)]
    pub verb: VerbArgs,
    /// Set instance_info.image_url first: a Redfish node boots this image
    /// from virtual media (one node only).
    #[arg(long, value_name = "URL")]
    pub image: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct VerbArgs {
    /// A node name, a uuid or a node set (`demo[1-64]`).
    pub nodes: String,
    /// Wait until every node has settled; exit non-zero if any failed.
    #[arg(long)]
    pub wait: bool,
    /// At most this many nodes at once.
    #[arg(long, short = 'f')]
    pub fanout: Option<u32>,
    /// The job's priority, -20 (first) to 19 (last), like Ganeti's.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub priority: i32,
}

#[derive(Debug, Subcommand)]
pub enum PowerCommand {
    /// Power on.
    On(VerbArgs),
    /// Power off at once.
    Off(VerbArgs),
    /// Hard off, then on (a node that is off is switched on).
    Reboot(VerbArgs),
    /// Ask the OS to shut down (a graceful shutdown), until power is off.
    #[command(name = "soft-off")]
    SoftOff(VerbArgs),
    /// Read the power state from the BMCs.
    Status {
        /// A node name, a uuid or a node set (`demo[1-64]`).
        nodes: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BootDeviceCommand {
    /// Set the boot device.
    Set {
        /// A node name, a uuid or a node set (`demo[1-64]`).
        nodes: String,
        /// pxe, disk, cdrom or bios.
        device: String,
        /// For every boot, not only the next one.
        #[arg(long)]
        persistent: bool,
        /// At most this many nodes at once.
        #[arg(long, short = 'f')]
        fanout: Option<u32>,
        /// The job's priority, -20 (first) to 19 (last), like Ganeti's.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
        priority: i32,
    },
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Put nodes in maintenance: power sync leaves them alone.
    On {
        /// A node name, a uuid or a node set (`demo[1-64]`).
        nodes: String,
        /// Why, for whoever looks next.
        #[arg(long)]
        reason: Option<String>,
        /// The job's priority, -20 (first) to 19 (last), like Ganeti's.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
        priority: i32,
    },
    /// Take nodes out of maintenance.
    Off {
        /// A node name, a uuid or a node set (`demo[1-64]`).
        nodes: String,
        /// The job's priority, -20 (first) to 19 (last), like Ganeti's.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
        priority: i32,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Add a port to a node.
    Create {
        /// The port's MAC address.
        mac: String,
        /// The node it belongs to (name or uuid).
        #[arg(long)]
        node: String,
    },
    /// List ports.
    List {
        /// Only this node's ports (name or uuid).
        #[arg(long)]
        node: Option<String>,
    },
    /// Delete a port.
    Delete {
        /// The port's MAC address.
        mac: String,
    },
    /// Put a port in a port group (bond), or take it out.
    #[command(group(clap::ArgGroup::new("membership").args(["group", "no_group"]).required(true)))]
    Set {
        /// The port's MAC address.
        mac: String,
        /// The port group to put it in (name or uuid; one of the port's node).
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// Take it out of its port group.
        #[arg(long)]
        no_group: bool,
    },
    /// Port groups: bonds of a node's ports.
    #[command(subcommand)]
    Group(PortGroupCommand),
}

#[derive(Debug, Subcommand)]
pub enum PortGroupCommand {
    /// Bond ports of one node into a new port group.
    Create {
        /// The group's name, unique in the site: letters, digits, '.', '_' or '-'.
        name: String,
        /// The node whose ports it bonds (name or uuid).
        #[arg(long)]
        node: String,
        /// The bonding mode: balance-rr, active-backup, balance-xor,
        /// broadcast, 802.3ad, balance-tlb or balance-alb.
        #[arg(long, default_value = "active-backup")]
        mode: String,
        /// The bond's own MAC address, if it has a fixed one.
        #[arg(long, value_name = "MAC")]
        address: Option<String>,
        /// A member: the MAC address of one of the node's ports, in no group
        /// yet (repeatable).
        #[arg(long = "port", value_name = "MAC")]
        ports: Vec<String>,
    },
    /// List port groups with their member ports.
    List {
        /// Only this node's groups (name or uuid).
        #[arg(long)]
        node: Option<String>,
    },
    /// Show one port group.
    Show {
        /// The group's name or uuid.
        name: String,
    },
    /// Delete a port group; its ports stay, in no group.
    Delete {
        /// The group's name or uuid.
        name: String,
    },
}

/// As ClusterShell's `nodeset`: one mode flag, then one or more node sets,
/// taken together (`kiln nodeset -f n1 n2 'n[5-7]'` prints `n[1-2,5-7]`),
/// then intersected with every `-i` and less every `-x`.
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("mode").args(["expand", "fold", "count", "list", "regroup"]).required(true).multiple(false)
))]
pub struct NodesetArgs {
    /// Expand: print every name, space separated (or -S).
    #[arg(short = 'e', long)]
    pub expand: bool,
    /// Fold: print the shortest form.
    #[arg(short = 'f', long)]
    pub fold: bool,
    /// Count the names.
    #[arg(short = 'c', long)]
    pub count: bool,
    /// List the groups (of the node sets given, else all): -l names them,
    /// -ll adds their nodes, -lll their count too.
    #[arg(short = 'l', long, action = clap::ArgAction::Count)]
    pub list: u8,
    /// Fold with groups: the groups wholly in the set as @name, then the rest.
    #[arg(short = 'r', long)]
    pub regroup: bool,
    /// Remove these nodes (a node set; may be given more than once).
    #[arg(short = 'x', long = "exclude", value_name = "NODESET")]
    pub exclude: Vec<String>,
    /// Keep only the nodes also in this node set (may be given more than once).
    #[arg(short = 'i', long = "intersection", value_name = "NODESET")]
    pub intersection: Vec<String>,
    /// The separator of expanded names (default: a space; `\n` and `\t` are understood).
    #[arg(short = 'S', long = "separator", value_name = "SEP")]
    pub separator: Option<String>,
    /// The config file whose `[groups]` and group sources define `@name`.
    #[arg(long, env = "KILN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Node sets (`n[1-4]`, `@rack1!n3`); several are taken together.
    #[arg(value_name = "NODESET", required_unless_present = "list")]
    pub sets: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// List live (not archived) jobs: the newest `--limit` of them, oldest
    /// first; or the jobs given by id (archived ones too).
    List {
        /// Only these jobs, in this order (`kiln job list 3 5 7`).
        #[arg(value_name = "ID")]
        ids: Vec<u64>,
        /// The fields to show, comma-separated, as `gnt-job list -o`:
        /// id, status, priority, summary, ops (the opcodes as a job file
        /// writes them), opstatus, submitted, started, ended, depends,
        /// error, archived; `+FIELD,...` adds to the default
        /// (id,status,priority,submitted,summary).
        #[arg(long, short = 'o', value_name = "FIELDS")]
        output: Option<String>,
        /// Only jobs in this status (queued, waiting, running, success,
        /// error, canceling, canceled).
        #[arg(long)]
        status: Option<String>,
        /// How many of the newest to list; 0 lists every live job.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Show a job: its opcodes, per-node results and log.
    Show {
        /// The job id.
        id: u64,
    },
    /// Follow a job's log until it ends; the exit code is 0 only on success.
    Watch {
        /// The job id.
        id: u64,
    },
    /// Cancel a job (a running one stops before its next opcode and node).
    Cancel {
        /// The job id.
        id: u64,
    },
    /// Change a queued or waiting job's priority (-20 first … 19 last).
    Priority {
        /// The job id.
        id: u64,
        /// The new priority.
        #[arg(allow_negative_numbers = true)]
        priority: i32,
    },
    /// Move an ended job out of the live queue.
    Archive {
        /// The job id.
        id: u64,
    },
    /// Archive every job that ended more than AGE ago (`1h`, `7d`), or
    /// every ended job (`all`); says how many.
    Autoarchive {
        /// An age (`90s`, `30m`, `1h`, `7d`) or `all`.
        age: String,
    },
    /// Submit a job file (JSON or YAML: `ops`, a list of opcodes, with an
    /// optional `priority` and `depends`), or several jobs at once (a list
    /// of such jobs, or `jobs: [...]`; `depends: [{job: -1}]` names the job
    /// before), all or nothing.
    Submit {
        /// The job file, e.g. `ops: [{op: sleep, seconds: 1}]`, or the same in JSON.
        file: PathBuf,
        /// Follow it to its end.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Every member the site remembers: name, state, host, pid, heartbeat
    /// age, nodes owned (the member that answered is marked `*`).
    List,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Refuse (on) or accept again (off) new jobs; running jobs finish.
    Drain {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// The queue at a glance.
    Status,
}

#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// nodeset, lock, jobs, lifecycle, admin, scale, power-sync, exec, api, list, or all.
    pub scenario: String,
    /// Nodes (lifecycle: 10000, lock: 10000, scale: 100000, api: 1000, list: 100000).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Jobs to submit (jobs: 1000000).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Concurrent clients (jobs: 64 submitters, admin: 32 socket clients, api: 8 HTTP clients).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Requests (admin and api: 200000; lock: 1000 contenders on one node).
    #[arg(long)]
    pub requests: Option<usize>,
    /// Exclusive no-op tasks (lock: 100000).
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Names to fold (nodeset: 100000).
    #[arg(long)]
    pub names: Option<usize>,
    /// Fanout of node-set opcodes (lifecycle: 1024); the most reads in
    /// flight (power-sync: 2048, adapting below it).
    #[arg(long)]
    pub fanout: Option<u32>,
    /// Simulated BMC latency in ms (power-sync: 100).
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Run each scenario this many times, each in a process of its own, and
    /// report every figure's median (`--json` also lists each run's value).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
}

#[derive(Debug, Subcommand)]
pub enum PeriodicCommand {
    /// Every task: spacing, last run, duration, result, error, counts.
    List,
    /// Run a task now and wait for the run to end.
    Run {
        /// The task's name, as `kiln periodic list` shows it.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkerKind {
    Ssh,
    Exec,
}

/// Options shared by exec and copy.
#[derive(Debug, Args, Clone)]
pub struct FanoutArgs {
    /// The nodes (a node set; names that are not nodes are used as host names).
    #[arg(short = 'w', value_name = "NODESET")]
    pub nodes: String,
    /// At most this many commands at once.
    #[arg(short = 'f', long, default_value_t = 64)]
    pub fanout: usize,
    /// Connect timeout in seconds (ssh).
    #[arg(short = 'u', long = "connect-timeout", default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Command timeout in seconds, per node (default: none).
    #[arg(short = 't', long = "command-timeout")]
    pub command_timeout: Option<f64>,
    /// Timeout of the whole run in seconds: commands still running then are
    /// killed and reported timed out, nodes not started are not (default: none).
    #[arg(long = "timeout-total", value_name = "SECONDS")]
    pub timeout_total: Option<f64>,
    /// Print one JSON object per node as it ends, one a line (for scripts
    /// that stream; --json prints one document at the end).
    #[arg(long = "json-lines")]
    pub json_lines: bool,
    /// ssh (to the node's `address` property, else its name) or exec (local, %h = node name).
    #[arg(long, value_enum, default_value_t = WorkerKind::Ssh)]
    pub worker: WorkerKind,
    /// Extra ssh options, as one string (`-o "-p 2222 -i KEY"`), like clush -o.
    #[arg(short = 'o', long = "options", allow_hyphen_values = true)]
    pub options: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Gather nodes with identical output (dshbak -c style), printed at
    /// the end; without it lines are printed as they come, `node: line`.
    #[arg(short = 'b')]
    pub gather: bool,
    /// Do not send standard input to the commands (by default it is read
    /// whole, unless it is a terminal, and sent to every node).
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// The command.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Copy directories and what they hold (scp -r, cp -r).
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// The local file (or directory, with -r) to copy.
    pub source: PathBuf,
    /// Where to put it on each node (%h: the node's name).
    pub dest: String,
}

#[derive(Debug, Args)]
pub struct RcopyArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Gather directories and what they hold (scp -r, cp -r).
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// The file (or directory, with -r) on each node (%h: the node's name).
    pub source: String,
    /// The local directory that receives each node's copy as NAME.node.
    pub dest: PathBuf,
}

#[cfg(test)]
mod tests {
    /// The drivers crate's list is the one the CLI shows; the store spells
    /// the same names in `DriverKind` (neither crate may depend on the
    /// other), so this checks the two lists agree, in order.
    #[test]
    fn the_store_and_the_drivers_crate_name_the_same_drivers() {
        let drivers: Vec<&str> = kiln_drivers::Kind::ALL.iter().map(|k| k.as_str()).collect();
        let stored: Vec<&str> = kiln_store::DriverKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(drivers, stored, "kiln_drivers::Kind::ALL and kiln_store::DriverKind::ALL");
        assert_eq!(super::driver_help(), "fake, redfish or ipmi");
    }
}
