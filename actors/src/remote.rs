//! Node work on a store shared by several members: finding nodes another
//! member runs, asking their owner to act, and acting on what others ask
//! of this member's nodes.
//!
//! Why it is shaped so:
//!
//! - **Any member answers any request.** The router resolves names against
//!   its own actors first and then against the database; a node this
//!   member runs is driven by its actor as on a site of one, any other
//!   through a request row its owner claims (`kiln_store::postgres::requests`).
//!   Reads of nodes another member runs come from the database.
//! - **Only the owner touches a node.** A request is executed by the
//!   owner's own node actor ([`Router::run_local`]), never forwarded again,
//!   so the node's lock and FIFO hold across members as within one.
//! - **Woken, with a sweep behind it.** Owners and callers wait for the
//!   listener's wake-ups ([`Wake`]) and look again every [`SWEEP`] anyway.

use std::time::Duration;

use kiln_store::postgres::listener::Wake;
use kiln_store::{NodeId, Shared as SharedStore, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::supervisor::Router;
use crate::view::NodeView;
use crate::{KilnError, Op};

/// How often owners and callers look for requests and answers without a
/// wake-up.
pub const SWEEP: Duration = Duration::from_secs(1);

/// How long a caller waits for another member to take its request before
/// withdrawing it (nothing was done then).
pub const TAKE_WITHIN: Duration = Duration::from_secs(30);

/// The longest a caller waits for a request its owner has taken.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3600);

/// Requests an owner takes at a time.
const BATCH: i64 = 256;

/// This member on a shared store.
#[derive(Clone, Debug)]
pub struct Shared {
    /// This process's member id.
    pub member: String,
    /// The listener's wake-ups.
    pub wakes: broadcast::Sender<Wake>,
    /// Whether this member may still act (checked right before each BMC
    /// call).
    pub fence: Fence,
    /// How long nodes taken from a dead member wait before this member
    /// acts on them (`bmc_fence_delay`).
    pub fence_delay: Duration,
    /// Every node of the site by name, kept current by the database's
    /// announcements ([`crate::directory::keep`]).
    pub directory: std::sync::Arc<crate::directory::Directory>,
}

/// Why this member must not act any more, if it must not.
#[derive(Clone)]
pub struct Fence(pub std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl Fence {
    /// Why not, when this member is fenced.
    pub fn check(&self) -> Option<String> {
        (self.0)()
    }
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fence")
    }
}

/// A request for another member's node, as written into its row. Each is
/// answered with the node as its owner shows it after the request.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// An operation ([`Router::run_for`]).
    Run { op: Op, wait: bool, holder: Option<String> },
    /// A live read of the power state from the BMC (`kiln node power
    /// status`): the node with the state read.
    ReadPower,
    /// Holds the node for a job ([`Router::hold`]).
    Hold { holder: String },
    /// Ends a job's hold ([`Router::release`]); refused when it held none.
    Release { holder: String },
}

type Answer = Result<NodeView, KilnError>;

fn shared_of(b: &mut dyn kiln_store::Backend) -> Result<&mut dyn SharedStore, StoreError> {
    b.shared().ok_or_else(|| StoreError::Database { message: "the store is not shared".into(), constraint: None })
}

/// Asks the owner of `node` to run `op` and waits for its answer.
pub async fn run(
    router: &Router,
    shared: &Shared,
    node: NodeId,
    op: Op,
    wait: bool,
    holder: Option<&str>,
) -> Result<NodeView, KilnError> {
    ask(router, shared, node, Request::Run { op, wait, holder: holder.map(str::to_string) }).await
}

/// Asks the owner of `node` to carry out `request` and waits for its answer.
pub async fn ask(router: &Router, shared: &Shared, node: NodeId, request: Request) -> Result<NodeView, KilnError> {
    // Subscribed before the request is written: its answer cannot slip by.
    let mut wakes = shared.wakes.subscribe();
    let body = serde_json::to_string(&request)
        .map_err(|e| KilnError::Protocol(format!("cannot encode a node request: {e}")))?;
    let id = router
        .store
        .read(move |b| shared_of(b)?.submit_node_request(node, &body))
        .await?
        .ok_or_else(|| KilnError::NotFound(format!("node {node} does not exist")))?;
    let started = std::time::Instant::now();
    let mut withdrawn_tried = false;
    loop {
        if let Some(answer) = router.store.read(move |b| shared_of(b)?.collect_node_answer(id)).await? {
            return serde_json::from_str::<Answer>(&answer)
                .map_err(|e| KilnError::Protocol(format!("the owner's answer cannot be read: {e}")))?;
        }
        let waited = started.elapsed();
        if waited >= TAKE_WITHIN && !withdrawn_tried {
            withdrawn_tried = true;
            if router.store.read(move |b| shared_of(b)?.cancel_node_request(id)).await? {
                return Err(KilnError::Unavailable(format!(
                    "node {node}: no member took the request within {} s (its owner may be down; \
                     a live member takes its nodes over within member_timeout); nothing was done",
                    TAKE_WITHIN.as_secs()
                )));
            }
        }
        if waited >= ANSWER_WITHIN {
            return Err(KilnError::Unavailable(format!(
                "node {node}: its owner took the request but did not answer within {} s",
                ANSWER_WITHIN.as_secs()
            )));
        }
        wait_for(&mut wakes, |w| matches!(w, Wake::Answer(a) if *a == id)).await;
    }
}

/// Takes and runs the requests other members write for this member's
/// nodes, for the site's life.
pub async fn serve(router: Router, shared: Shared) {
    let mut wakes = shared.wakes.subscribe();
    loop {
        match router.store.read(|b| shared_of(b)?.take_node_requests(BATCH)).await {
            Ok(taken) => {
                for request in taken {
                    let router = router.clone();
                    actix::spawn(async move {
                        let id = request.id;
                        if !router.registry.by_id.contains_key(&request.node) {
                            // Handed over or not adopted yet: for whoever
                            // runs the node to take.
                            if let Err(e) = router.store.read(move |b| shared_of(b)?.requeue_node_request(id)).await {
                                tracing::warn!(request = id, error = %e, "could not requeue a node request");
                            }
                            return;
                        }
                        let answer = execute(&router, request.node, &request.body).await;
                        let text = serde_json::to_string(&answer).unwrap_or_else(|e| {
                            serde_json::to_string(&Answer::Err(KilnError::Protocol(format!(
                                "cannot encode the answer: {e}"
                            ))))
                            .unwrap_or_default()
                        });
                        if let Err(e) = router.store.read(move |b| shared_of(b)?.answer_node_request(id, &text)).await {
                            tracing::warn!(request = id, error = %e, "could not answer a node request");
                        }
                    });
                }
            }
            Err(StoreError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "could not take node requests; trying again"),
        }
        let me = shared.member.clone();
        wait_for(&mut wakes, move |w| matches!(w, Wake::Requests(owner) if *owner == me)).await;
    }
}

/// Gives up the idle ones of `nodes` to the member the ring names: their
/// actors stop, then their rows lose this member as owner, for the other
/// to claim. A node that is busy stays (the next round tries again).
/// Returns how many were given up.
pub async fn hand_over(router: &Router, nodes: Vec<NodeId>) -> Result<usize, KilnError> {
    // Every actor is asked at once: each answers from its own mailbox, and
    // an idle one stops as it answers.
    let asks = nodes.into_iter().filter_map(|id| {
        let addr = router.registry.by_id.get(&id)?.addr.clone();
        Some(async move { (id, addr.send(crate::node::HandOver).await.unwrap_or(false)) })
    });
    let mut handed = Vec::new();
    for (id, gave) in futures::future::join_all(asks).await {
        if gave {
            router.registry.remove(id);
            handed.push(id);
        }
    }
    if handed.is_empty() {
        return Ok(0);
    }
    let asked = handed.clone();
    match router.store.read(move |b| shared_of(b)?.release_nodes(&asked)).await {
        Ok(released) => Ok(released.len()),
        Err(e) => {
            // The rows are still this member's: run the nodes again.
            let back = router.store.read(move |b| b.load_owned_nodes()).await?;
            let back: Vec<_> = back.into_iter().filter(|r| handed.contains(&r.uuid)).collect();
            let _ = router.supervisor.send(crate::supervisor::AdoptRecords(back)).await;
            Err(e.into())
        }
    }
}

/// Ends the requests a dead member was running on `nodes` (just claimed
/// from it) with an error that says so: whether each was carried out is
/// for the node's history to tell, and none is run again.
pub async fn fail_orphaned(router: &Router, nodes: Vec<NodeId>) -> Result<u64, KilnError> {
    if nodes.is_empty() || router.registry.shared.is_none() {
        return Ok(0);
    }
    let answer: Answer = Err(KilnError::Unavailable(
        "the member running this request died before it answered; the node's history says what was done".into(),
    ));
    let text = serde_json::to_string(&answer).map_err(|e| KilnError::Protocol(e.to_string()))?;
    Ok(router.store.read(move |b| shared_of(b)?.fail_running_requests(&nodes, &text)).await?)
}

/// Runs one request on this member's own node actor.
async fn execute(router: &Router, node: NodeId, body: &str) -> Answer {
    match serde_json::from_str::<Request>(body) {
        Ok(Request::Run { op, wait, holder }) => router.run_local(node, op, wait, holder.as_deref()).await,
        Ok(Request::ReadPower) => router.read_power_local(node).await,
        Ok(Request::Hold { holder }) => router.hold(node, &holder).await,
        Ok(Request::Release { holder }) => match router.release(node, &holder).await {
            true => router.show(node).await,
            false => Err(KilnError::Conflict(format!("node {node} was not held by {holder}"))),
        },
        Err(e) => Err(KilnError::InvalidInput(format!("a node request that cannot be read: {e}"))),
    }
}

/// Waits for a wake-up `wanted` accepts, a resync, or the sweep interval.
pub(crate) async fn wait_for(wakes: &mut broadcast::Receiver<Wake>, wanted: impl Fn(&Wake) -> bool) {
    let _ = tokio::time::timeout(SWEEP, async {
        loop {
            match wakes.recv().await {
                Ok(Wake::Resync) => return,
                Ok(w) if wanted(&w) => return,
                Ok(_) => {}
                // Missed some: look now.
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await;
                }
            }
        }
    })
    .await;
}
