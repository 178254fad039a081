//! The settings a site runs with. The binary fills them from its config file,
//! `KILN_*` variables and flags; an embedding application builds one in code.

use std::path::PathBuf;
use std::time::Duration;

/// How a site runs.
#[derive(Clone, Debug)]
pub struct SiteConfig {
    /// Holds `kiln.sqlite` (and, for the daemon, the admin socket).
    pub data_dir: PathBuf,
    /// How long an exclusive request waits for a busy node before it fails
    /// with `NodeLocked` (0 = fail at once, as Ironic).
    pub lock_wait: Duration,
    /// The longest one BMC call may take.
    pub driver_call_timeout: Duration,
    /// How long a BMC may take to accept a connection (Redfish) or answer
    /// the reachability probe (IPMI) before it is unreachable; a node's
    /// `driver_info.connect_timeout` overrides it.
    pub bmc_connect_timeout: Duration,
    /// At most this many calls in flight to one BMC endpoint (host and
    /// port), across every node that names it.
    pub bmc_max_concurrent: usize,
    /// At most this many nodes of one bulk operation run at once.
    pub default_fanout: usize,
    /// At most this many jobs run at once.
    pub max_running_jobs: usize,
    /// At most this many jobs that have not ended (queued, waiting,
    /// running): each is held whole in memory, so a submission past it is
    /// refused.
    pub max_queued_jobs: usize,
    /// Node groups: `@name` in a node set expands to the expression.
    pub groups: std::collections::BTreeMap<String, String>,
    /// The built-in periodic tasks' settings.
    pub periodic: crate::periodic::PeriodicConfig,
    /// Enrol this many `fake` nodes named `demo1..N` when the store is empty.
    pub demo_nodes: usize,
    /// Where the site's actors read the time ([`crate::clock`]); a test
    /// passes a [`crate::clock::ManualClock`].
    pub clock: crate::clock::SharedClock,
    /// Which threads the site runs on ([`crate::threads`]).
    pub threads: crate::threads::Threads,
    /// This process as a member of a site whose store is shared by
    /// several (the daemon on PostgreSQL); `None` on a store of its own.
    pub shared: Option<crate::remote::Shared>,
    /// A node with nothing to do gives up its actor after this long and
    /// is kept as its record until its next message ([`crate::node::rest`]);
    /// `None`: every node keeps its actor.
    pub node_rest_after: Option<Duration>,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            data_dir: PathBuf::from("kiln-data"),
            lock_wait: Duration::ZERO,
            driver_call_timeout: Duration::from_secs(120),
            bmc_connect_timeout: Duration::from_secs(3),
            bmc_max_concurrent: 4,
            default_fanout: 64,
            max_running_jobs: 64,
            max_queued_jobs: 100_000,
            periodic: Default::default(),
            groups: Default::default(),
            demo_nodes: 0,
            clock: crate::clock::system(),
            threads: Default::default(),
            shared: None,
            node_rest_after: Some(crate::node::rest::DEFAULT_REST_AFTER),
        }
    }
}

impl SiteConfig {
    /// The SQLite file of the site.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("kiln.sqlite")
    }
}
