//! Connecting a node to its BMC without holding up the actors' thread.
//!
//! Building a BMC client may read a file (a Redfish `ca_file`) and sets up a
//! TLS client: slow enough to stall every node, job and admin request that
//! shares the arbiter. So [`DriverPool::obtain`] builds it on a blocking
//! thread and hands back a [`Connecting`]: a shared future of the driver
//! actor. The node core already waits for a connection as an effect
//! (`Effect::Connect`, answered by `Input::Connected`), so nothing but the
//! shell notices that the answer now comes later.
//!
//! Nodes that name the same BMC endpoint with the same settings share one
//! driver actor. Whatever their settings, every node naming one network
//! endpoint (`host:port`, [`kiln_drivers::host_port`]) shares that
//! endpoint's [`Endpoint`]: a semaphore of `bmc_max_concurrent` permits that
//! each driver call holds while it runs, and the state its clients share
//! (IPMI's command spacing), so a BMC behind which many nodes sit is asked
//! at most that many things at once, as NVIDIA's bare-metal manager caps
//! calls per BMC. The endpoint is kept from its first use for the pool's
//! life: a few bytes per BMC, and a limit that never resets while calls
//! hold it. A node's `connect_timeout` defaults to the site's
//! `bmc_connect_timeout` here, put into the settings the client is built
//! from. The pool keeps the
//! connection by that key from the moment it starts, not only once it is
//! done, so nodes connecting at the same time await the same future and get
//! the same actor. A connection that failed, or whose actor stopped, is
//! replaced by the next request for it.
//!
//! The pool lets go of a driver that no node has held for [`DRIVER_IDLE`].
//! Nodes at rest hold none, so that is a BMC whose nodes have all been at
//! rest that long, were deleted, or now name other settings (a rotated
//! password gets a driver of its own, under another key). Without that, such
//! drivers stayed for the pool's life, each with its client and, for Redfish,
//! its session open on the BMC with the old credentials. Once no one holds
//! it, its actor stops and a Redfish driver logs its session out. The check
//! runs at most once every [`SWEEP_EVERY`], when a node asks for a driver,
//! on a blocking thread (a pool may hold a million entries). A power sync
//! every minute keeps every synced BMC's driver. A site that syncs less often
//! than [`DRIVER_IDLE`] builds a BMC's driver again at each sync: 2.6 µs of
//! CPU, plus a login to a BMC that uses session auth. What the driver learned
//! (its profile) is kept with the node, so the BMC is not probed again.
//!
//! A node's BMC profile (what was learned about its quirks, stored with the
//! node) goes into the client it is built with ([`kiln_drivers::connect_known`]),
//! so a BMC known from before a restart is not probed again; the pool key
//! leaves it out, so nodes of one BMC still share one client, which learns
//! for all of them. A reset profile evicts the client ([`DriverPool::evict`]).
//!
//! The driver actors run on the site's driver arbiter when it has one (their
//! HTTP and IPMI work then leaves the node actors' thread), otherwise on the
//! arbiter of whoever awaits the connection; a `fake` BMC's on its node's.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kiln_drivers::{DriverError, EndpointState, Profile};
use kiln_store::{DriverKind, NodeRecord, PowerState};
use tokio::sync::Semaphore;

use crate::driver::DriverActor;
use crate::metrics::Metrics;
use crate::threads::OwnArbiter;

/// A driver actor on its way (or there already): await it, or `peek` it.
pub type Connecting = Shared<BoxFuture<'static, Result<Addr<DriverActor>, DriverError>>>;

/// How long the pool keeps a driver that no node holds.
pub const DRIVER_IDLE: Duration = Duration::from_secs(600);

/// How often, at most, the pool looks for drivers to let go.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A driver in the pool, and when the pool last saw it handed out or held.
struct Pooled {
    connecting: Connecting,
    seen: Instant,
}

impl Pooled {
    fn new(connecting: Connecting, now: Instant) -> Self {
        Pooled { connecting, seen: now }
    }

    fn seen_at(&mut self, now: Instant) {
        self.seen = self.seen.max(now);
    }

    /// Whether to keep it at `now`: a node holds it (then it is seen now),
    /// or it is usable and was seen less than [`DRIVER_IDLE`] ago.
    fn keep(&mut self, now: Instant) -> bool {
        // The pool's own handle is one; a node's is another. The pool never
        // polls its handle, so the count is there to read.
        if self.connecting.strong_count().is_some_and(|n| n > 1) {
            self.seen_at(now);
            return true;
        }
        usable(&self.connecting) && now.saturating_duration_since(self.seen) < DRIVER_IDLE
    }
}

/// Whether `connecting` can still give a driver: it is under way, or done
/// with an actor that still runs.
pub fn usable(connecting: &Connecting) -> bool {
    match connecting.peek() {
        None => true,
        Some(Ok(driver)) => driver.connected(),
        Some(Err(_)) => false,
    }
}

/// What building a node's driver actor needs, read from its record.
pub struct DriverSpec {
    kind: DriverKind,
    info: BTreeMap<String, String>,
    /// How the BMC is named in errors (its address; never credentials).
    label: String,
    /// What was learned about the BMC before.
    known: Profile,
}

impl DriverSpec {
    /// The driver `record` names.
    pub fn of(record: &NodeRecord) -> Self {
        let mut info = record.driver_info.clone();
        if record.driver == DriverKind::Fake && record.power_state == Some(PowerState::On) {
            // A fake BMC lives in memory: start it where the record says it was.
            info.entry("power".into()).or_insert_with(|| "on".into());
        }
        let label = info.get("address").cloned().unwrap_or_else(|| format!("fake BMC of {}", record.name));
        let known = record.bmc_profile.as_ref().map(super::core::driver_profile).unwrap_or_default();
        DriverSpec { kind: record.driver, info, label, known }
    }

    /// The pool key: the endpoint and a hash of the settings, so a changed
    /// password or timeout gets a fresh actor (the key never holds the
    /// password itself). None for drivers that share nothing (`fake`).
    fn key(&self) -> Option<String> {
        kiln_drivers::endpoint(self.kind.as_str(), &self.info).map(|endpoint| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.info.hash(&mut h);
            format!("{endpoint}#{:016x}", h.finish())
        })
    }
}

/// What the site asks of every BMC: `bmc_connect_timeout` and
/// `bmc_max_concurrent` ([`crate::SiteConfig`]).
#[derive(Clone, Copy, Debug)]
pub struct BmcLimits {
    pub connect_timeout: Duration,
    pub max_concurrent: usize,
}

impl Default for BmcLimits {
    fn default() -> Self {
        BmcLimits { connect_timeout: Duration::from_secs(3), max_concurrent: 4 }
    }
}

/// What the nodes of one network endpoint share.
#[derive(Clone)]
pub struct Endpoint {
    /// Calls in flight to the endpoint: each holds a permit while it runs.
    pub limit: Arc<Semaphore>,
    /// What its BMC clients share (IPMI's spacing).
    state: EndpointState,
}

/// The site's driver actors for shared BMC endpoints, and where new ones run.
#[derive(Clone)]
pub struct DriverPool {
    by_endpoint: Arc<DashMap<String, Pooled>>,
    /// When the pool last looked for drivers to let go.
    swept: Arc<Mutex<Instant>>,
    /// By `host:port`.
    endpoints: Arc<DashMap<String, Endpoint>>,
    limits: BmcLimits,
    /// The arbiter driver actors start on (kept running while the pool
    /// lives); `None`: the awaiting actor's.
    arbiter: Option<OwnArbiter>,
    call_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl DriverPool {
    pub fn new(arbiter: Option<OwnArbiter>, call_timeout: Duration, limits: BmcLimits, metrics: Arc<Metrics>) -> Self {
        DriverPool {
            by_endpoint: Arc::default(),
            swept: Arc::new(Mutex::new(Instant::now())),
            endpoints: Arc::default(),
            limits,
            arbiter,
            call_timeout,
            metrics,
        }
    }

    /// The shared part of the network endpoint `host_port`, made on first use.
    pub fn endpoint(&self, host_port: &str) -> Endpoint {
        self.endpoints
            .entry(host_port.to_string())
            .or_insert_with(|| Endpoint {
                limit: Arc::new(Semaphore::new(self.limits.max_concurrent.max(1))),
                state: EndpointState::default(),
            })
            .clone()
    }

    /// The driver for `spec`: the one of its endpoint when it is usable
    /// (connected or connecting), else a new connection.
    pub fn obtain(&self, spec: DriverSpec) -> Connecting {
        let spec = self.settled(spec);
        let Some(key) = spec.key() else { return self.connect(spec) };
        let now = Instant::now();
        self.sweep_now_and_then(now);
        match self.by_endpoint.entry(key) {
            Entry::Occupied(mut held) if usable(&held.get().connecting) => {
                held.get_mut().seen_at(now);
                held.get().connecting.clone()
            }
            Entry::Occupied(mut stale) => {
                let fresh = self.connect(spec);
                drop(stale.insert(Pooled::new(fresh.clone(), now)));
                fresh
            }
            Entry::Vacant(free) => free.insert(Pooled::new(self.connect(spec), now)).connecting.clone(),
        }
    }

    /// Runs [`Self::sweep`] on a blocking thread when the last one was
    /// [`SWEEP_EVERY`] before `now`.
    fn sweep_now_and_then(&self, now: Instant) {
        {
            let mut swept = self.swept.lock().unwrap_or_else(PoisonError::into_inner);
            if now.saturating_duration_since(*swept) < SWEEP_EVERY {
                return;
            }
            *swept = now;
        }
        let pool = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || pool.sweep(now))),
            // Outside a runtime (a caller embedding the pool): here, then.
            Err(_) => {
                pool.sweep(now);
            }
        }
    }

    /// Lets go of every driver that no node holds and that was last seen
    /// [`DRIVER_IDLE`] before `now`, and of failed or stopped ones. Returns
    /// how many drivers it keeps.
    pub fn sweep(&self, now: Instant) -> usize {
        self.by_endpoint.retain(|_, pooled| pooled.keep(now));
        self.by_endpoint.len()
    }

    /// Drops the pool's driver for `spec`, so the next node asking for it
    /// gets a new client (one that has learned nothing). Nodes holding the
    /// old one keep it until they reconnect.
    pub fn evict(&self, spec: DriverSpec) {
        if let Some(key) = self.settled(spec).key() {
            self.by_endpoint.remove(&key);
        }
    }

    /// `spec` with the site's settings a node does not set itself: the
    /// site's connect timeout.
    fn settled(&self, mut spec: DriverSpec) -> DriverSpec {
        if spec.kind != DriverKind::Fake {
            let secs = self.limits.connect_timeout.as_secs_f64();
            spec.info.entry("connect_timeout".into()).or_insert_with(|| format!("{secs}"));
        }
        spec
    }

    /// Builds the BMC client on a blocking thread, then starts its actor.
    /// A `fake` BMC lives in memory: it is built here, at once, and its
    /// actor runs beside its node's, since a hop to another thread and a
    /// blocking-pool task per node would cost more than the building.
    fn connect(&self, spec: DriverSpec) -> Connecting {
        let DriverSpec { kind, info, label, known } = spec;
        if kind == DriverKind::Fake {
            let (call_timeout, metrics) = (self.call_timeout, self.metrics.clone());
            let built = kiln_drivers::connect(kind.as_str(), &info)
                .map(|bmc| DriverActor::new(bmc, label, call_timeout).observed(metrics, kind).start());
            let ready = futures::future::ready(built).boxed().shared();
            // Polled once, so that `peek` sees it done.
            let _ = ready.clone().now_or_never();
            return ready;
        }
        let arbiter = self.arbiter.as_ref().map(OwnArbiter::handle);
        let (call_timeout, metrics) = (self.call_timeout, self.metrics.clone());
        let endpoint = kiln_drivers::host_port(kind.as_str(), &info).map(|hp| self.endpoint(&hp));
        async move {
            let state = endpoint.as_ref().map(|e| e.state.clone()).unwrap_or_default();
            let bmc =
                tokio::task::spawn_blocking(move || kiln_drivers::connect_known(kind.as_str(), &info, &state, &known))
                    .await
                    .map_err(|e| DriverError::Panicked(crate::panics::join_text(e)))??;
            let limit = endpoint.map(|e| e.limit);
            let actor = move |_: &mut Context<DriverActor>| {
                DriverActor::new(bmc, label, call_timeout).limited(limit).observed(metrics, kind)
            };
            Ok(match arbiter {
                Some(arbiter) => DriverActor::start_in_arbiter(&arbiter, actor),
                None => DriverActor::create(actor),
            })
        }
        .boxed()
        .shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipmi_node(name: &str, password: &str) -> NodeRecord {
        let mut record = NodeRecord::enroll(name.into(), DriverKind::Ipmi, chrono::Utc::now());
        record.driver_info = [("address", "10.0.0.9"), ("password", password)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        record
    }

    fn pool(arbiter: Option<OwnArbiter>) -> DriverPool {
        DriverPool::new(arbiter, Duration::from_secs(5), BmcLimits::default(), Arc::new(Metrics::default()))
    }

    #[test]
    fn nodes_connecting_at_once_to_one_endpoint_share_one_actor() {
        actix::System::new().block_on(async {
            let pool = pool(None);
            // Both ask before either connection has ended.
            let a = pool.obtain(DriverSpec::of(&ipmi_node("a", "hunter22")));
            let b = pool.obtain(DriverSpec::of(&ipmi_node("b", "hunter22")));
            assert!(a.peek().is_none(), "the client is built off this thread");
            let (a, b) = (a.await.unwrap(), b.await.unwrap());
            assert_eq!(a, b);
            // Later nodes find it done.
            assert_eq!(pool.obtain(DriverSpec::of(&ipmi_node("c", "hunter22"))).await.unwrap(), a);
            // Other settings, another actor.
            assert_ne!(pool.obtain(DriverSpec::of(&ipmi_node("d", "other"))).await.unwrap(), a);
        });
    }

    #[test]
    fn fake_bmcs_are_not_shared_and_a_failed_connection_is_tried_again() {
        actix::System::new().block_on(async {
            let pool = pool(None);
            let record = NodeRecord::enroll("f".into(), DriverKind::Fake, chrono::Utc::now());
            let one = pool.obtain(DriverSpec::of(&record)).await.unwrap();
            assert_ne!(pool.obtain(DriverSpec::of(&record)).await.unwrap(), one);

            let mut bad = ipmi_node("bad", "hunter22");
            bad.driver_info.insert("port".into(), "not a port".into());
            let failed = pool.obtain(DriverSpec::of(&bad));
            assert!(failed.clone().await.is_err());
            assert!(!usable(&failed));
            let again = pool.obtain(DriverSpec::of(&bad));
            assert!(again.peek().is_none(), "a new attempt, not the cached failure");
        });
    }

    #[test]
    fn a_driver_no_node_holds_is_let_go_once_idle_and_a_held_one_is_kept() {
        actix::System::new().block_on(async {
            let pool = pool(None);
            let start = Instant::now();
            // A node holds `a`'s handle; nothing holds `b`'s.
            let held = pool.obtain(DriverSpec::of(&ipmi_node("a", "hunter22")));
            let a = held.clone().await.unwrap();
            let b = pool.obtain(DriverSpec::of(&ipmi_node("b", "old password"))).await.unwrap();
            assert_eq!(pool.sweep(start), 2);
            assert_eq!(pool.sweep(start + DRIVER_IDLE - Duration::from_secs(1)), 2);

            let idle = start + DRIVER_IDLE + Duration::from_secs(1);
            assert_eq!(pool.sweep(idle), 1, "b is let go, a is held");
            assert_ne!(pool.obtain(DriverSpec::of(&ipmi_node("b", "old password"))).await.unwrap(), b);
            assert_eq!(pool.obtain(DriverSpec::of(&ipmi_node("a", "hunter22"))).await.unwrap(), a);

            // Let go of, `a` counts as seen at the last sweep that found it
            // held; the new `b`, seen when it was handed out, goes first.
            drop(held);
            assert_eq!(pool.sweep(idle + DRIVER_IDLE - Duration::from_secs(1)), 1);
            assert_eq!(pool.sweep(idle + DRIVER_IDLE + Duration::from_secs(1)), 0);
            assert_ne!(pool.obtain(DriverSpec::of(&ipmi_node("a", "hunter22"))).await.unwrap(), a);
        });
    }

    #[test]
    fn driver_actors_run_on_the_pool_s_arbiter() {
        actix::System::new().block_on(async {
            let pool = pool(Some(OwnArbiter::start()));
            let here = std::thread::current().id();
            let driver = pool.obtain(DriverSpec::of(&ipmi_node("a", "hunter22"))).await.unwrap();
            let there = driver.send(crate::driver::ThreadOfForTest).await.unwrap();
            assert_ne!(there, here);
        });
    }
}
