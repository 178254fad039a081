//! `kiln serve` as one member of a site whose store is shared (PostgreSQL):
//! joining, taking over what dead members left, and fencing itself.
//!
//! Why it is shaped so:
//!
//! - **Join before open.** The membership row is written before the store
//!   claims its nodes, so the ring the claim computes already counts this
//!   member, and the janitor can see it from its first heartbeat.
//! - **Takeover is a loop, not an event.** Every heartbeat the member asks
//!   the store for orphans (nodes whose owner is not a live member, placed
//!   here by the ring) and runs what it got through the restart rule
//!   ([`kiln_actors::takeover`]). A claim is a conditional write, so
//!   members racing for the same orphans cannot both win one.
//! - **Fencing stops the process.** A member that can no longer prove it is
//!   alive (its heartbeat overdue by its own clock, or its row declared
//!   dead) exits at once with [`FENCED`], committing nothing more: node
//!   actors, job queue and BMC calls in flight end with the process, and
//!   the service manager starts it again as a new member. The rows' owner
//!   and epoch refuse whatever it might still try to write before that.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use kiln_store::NodeRecord;
use kiln_store::postgres::PgOptions;
use kiln_store::postgres::listener::Listener;
use kiln_store::postgres::members::{Identity, Membership};
use kiln_store::ring::{POINTS_PER_MEMBER, Ring};
use tokio::sync::watch;

use crate::config::DaemonConfig;

/// The exit code of a member that fenced itself (EX_TEMPFAIL: start it
/// again, and it joins as a new member).
pub const FENCED: u8 = 75;

/// How often a member checks whether it must fence itself: well inside
/// the two heartbeats of margin it has before the others may take over.
const FENCE_CHECK: Duration = Duration::from_millis(200);

/// This host's name (`localhost` if it cannot be read).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if ok { String::from_utf8_lossy(&buf[..end]).into_owned() } else { "localhost".into() }
}

/// Where a node sits on the members' ring: its BMC's network endpoint
/// (`host:port`, the unit the per-BMC limit counts), so nodes behind one
/// BMC stay on one member with that limit; its uuid for a node without one.
pub fn ring_key(node: &NodeRecord) -> String {
    kiln_drivers::host_port(node.driver.as_str(), &node.driver_info).unwrap_or_else(|| node.uuid.to_string())
}

/// This process as a member: its row's heartbeat, and its ears for node
/// requests. Dropped, both stop (without marking the row `left`: see
/// [`Joined::leave`]).
pub struct Joined {
    membership: Membership,
    listener: Listener,
}

impl Joined {
    /// What the site's actors need of the membership; nodes taken from a
    /// dead member wait `fence_delay` before this one acts on them.
    pub fn shared(&self, fence_delay: Duration) -> kiln_actors::remote::Shared {
        kiln_actors::remote::Shared {
            member: self.membership.id().to_string(),
            wakes: self.listener.wakes(),
            fence: kiln_actors::remote::Fence(self.membership.fence()),
            fence_delay,
            directory: Default::default(),
            courier: Default::default(),
        }
    }

    /// Fences this member from elsewhere, saying why (the store, when a
    /// commit's outcome is unknown).
    pub fn expeller(&self) -> Arc<dyn Fn(&str) + Send + Sync> {
        self.membership.expeller()
    }

    /// Leaves the site cleanly: the row says `left`, so that the living
    /// take the nodes over at once.
    pub fn leave(self) {
        drop(self.listener);
        self.membership.leave();
    }
}

/// Joins the site as a new member and returns it with the options to open
/// the store with (as this member).
pub async fn join(cfg: &DaemonConfig, target: kiln_store::postgres::PgTarget) -> anyhow::Result<(Joined, PgOptions)> {
    let id = uuid::Uuid::new_v4().to_string();
    let options = PgOptions {
        target: target.clone(),
        member: id,
        connect_for: cfg.store_connect_timeout,
        ring_key: Some(ring_key),
        name: Some(cfg.member_name.clone()),
    };
    let identity = Identity { name: cfg.member_name.clone(), host: host_name(), pid: std::process::id() };
    let settings = cfg.membership;
    let joining = options.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let membership = Membership::join(joining.clone(), identity, settings)?;
        let listener = Listener::start(joining)?;
        Ok::<_, kiln_store::StoreError>(Joined { membership, listener })
    })
    .await
    .context("joining the site panicked")?
    .with_context(|| format!("cannot join the site on {target}"))?;
    Ok((joined, options))
}

/// Runs for the daemon's life: takes over orphaned nodes and jobs and
/// hands nodes over every heartbeat, with a watch thread that fences this
/// member when it must. Returns when `stop` turns true (the watch stops
/// with it).
pub async fn keep(site: kiln_actors::Site, joined: Arc<Joined>, mut stop: watch::Receiver<bool>) {
    let membership = &joined.membership;
    let stopped = Arc::new(AtomicBool::new(false));
    watch_fence(membership.fence(), stopped.clone());
    let mut takeover = tokio::time::interval(membership.settings().heartbeat);
    takeover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut balance = Balance::default();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = takeover.tick() => {
                if let Err(e) = take_over(&site, membership.id()).await {
                    tracing::warn!(error = %e, "taking over orphaned nodes failed; trying again next heartbeat");
                }
                if let Err(e) = balance.round(&site, membership.id()).await {
                    tracing::warn!(error = %e, "handing nodes over failed; trying again next heartbeat");
                }
            }
        }
    }
    stopped.store(true, Ordering::SeqCst);
}

/// Checks every [`FENCE_CHECK`] whether this member must fence itself, on
/// a thread of its own: nothing the site is waiting for (a store call
/// hanging on a cut link, a busy arbiter) can delay it.
fn watch_fence(fenced: Arc<dyn Fn() -> Option<String> + Send + Sync>, stopped: Arc<AtomicBool>) {
    let watch = move || {
        while !stopped.load(Ordering::SeqCst) {
            std::thread::sleep(FENCE_CHECK);
            if let Some(why) = fenced()
                && !stopped.load(Ordering::SeqCst)
            {
                fence(&why);
            }
        }
    };
    if let Err(e) = std::thread::Builder::new().name("kiln-fence".into()).spawn(watch) {
        // Without the watch, the rows' epochs still refuse a stale member.
        tracing::error!(error = %e, "cannot start the fence watch");
    }
}

/// Claims the orphans the ring places here and runs them, then the jobs
/// no live member runs (the restart rule ends those that were running).
async fn take_over(site: &kiln_actors::Site, me: &str) -> Result<(), kiln_actors::KilnError> {
    let claimed = site.store.read(|b| b.claim_orphans()).await?;
    if !claimed.is_empty() {
        let why = format!("member {me} took the node over from a member that died or left");
        let delay = site.config.shared.as_ref().map_or(Duration::ZERO, |s| s.fence_delay);
        kiln_actors::takeover::adopt(site, claimed, &why, delay).await?;
    }
    let jobs = site.store.read(|b| b.claim_orphan_jobs()).await?;
    if !jobs.is_empty() {
        let adopted = site
            .jobs
            .send(kiln_actors::jobs::AdoptJobs(jobs))
            .await
            .map_err(|_| kiln_actors::KilnError::Unavailable("the job queue is not running".into()))??;
        tracing::info!(
            resumed = adopted.resumed,
            ended = adopted.ended,
            "took over the jobs of a member that died or left"
        );
    }
    Ok(())
}

/// Nodes handed over (stopped, then released in one statement) at a
/// time: a joining member can claim the first wave while the next is
/// handed over.
const WAVE: usize = 10_000;

/// Handing nodes over when the ring changes, or when a node created here
/// is one the ring places on another member: a member that joins gets its
/// share from the living, node by node as each is idle (nothing is taken
/// from a live member: it gives).
#[derive(Default)]
struct Balance {
    /// The live members the last round saw.
    seen: Vec<String>,
    /// Nodes the ring places elsewhere are still here (busy, or more than
    /// a wave): look again next round even if nobody joined or left.
    pending: bool,
    /// The registry's count of nodes added (created here or adopted) the
    /// last round saw: a node created here may be one the ring places on
    /// another member, so a round that sees more looks again.
    added: u64,
}

impl Balance {
    async fn round(&mut self, site: &kiln_actors::Site, me: &str) -> Result<(), kiln_actors::KilnError> {
        let mut live = site.store.read(|b| b.shared().map_or_else(|| Ok(Vec::new()), |s| s.live_members())).await?;
        live.sort();
        let added = site.registry.added();
        if live == self.seen && !self.pending && added == self.added {
            return Ok(());
        }
        (self.seen, self.added) = (live.clone(), added);
        let ring = Ring::new(live, POINTS_PER_MEMBER);
        let owned = site.store.read(|b| b.load_owned_nodes()).await?;
        let away: Vec<_> = owned.iter().filter(|r| ring.owner(&ring_key(r)) != Some(me)).map(|r| r.uuid).collect();
        drop(owned);
        let (wanted, mut handed) = (away.len(), 0);
        // Wave after wave in one round: each wave is released in one
        // statement, so the member the ring now places them on claims the
        // first wave while this one hands over the next.
        for wave in away.chunks(WAVE) {
            handed += kiln_actors::remote::hand_over(&site.router(), wave.to_vec()).await?;
        }
        self.pending = handed < wanted;
        if wanted > 0 {
            tracing::info!(handed, wanted, "handed nodes over to the members the ring places them on");
        }
        Ok(())
    }
}

/// Stops the process at once, committing nothing more.
fn fence(why: &str) -> ! {
    tracing::error!(
        reason = why,
        "this member is fenced: stopping at once without writing (a restart joins as a new member)"
    );
    eprintln!("kiln: fenced: {why}; stopping without writing");
    std::process::exit(i32::from(FENCED))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(driver: kiln_store::DriverKind, info: &[(&str, &str)]) -> NodeRecord {
        let mut n = NodeRecord::enroll("n".into(), driver, chrono::Utc::now());
        n.driver_info = info.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        n
    }

    #[test]
    fn nodes_behind_one_bmc_share_a_ring_key_and_fake_nodes_have_their_own() {
        use kiln_store::DriverKind::{Fake, Ipmi, Redfish};
        let a = node(Redfish, &[("address", "https://bmc.example"), ("system_id", "1")]);
        let b = node(Redfish, &[("address", "https://BMC.example:443/"), ("system_id", "2"), ("username", "x")]);
        assert_eq!(ring_key(&a), ring_key(&b));
        assert_eq!(ring_key(&node(Ipmi, &[("address", "10.0.0.1")])), "10.0.0.1:623");
        let (f, g) = (node(Fake, &[]), node(Fake, &[]));
        assert_ne!(ring_key(&f), ring_key(&g));
        assert_eq!(ring_key(&f), f.uuid.to_string());
    }
}
