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
//! - **Batched per member, not per node.** A bulk verb asks each remote
//!   node from its own task (the fan-out keeps its width), but the asks go
//!   through one courier per member ([`Courier`]): what is queued when it
//!   looks becomes one statement of requests, and one statement collects
//!   every answer there is for what it waits for. The owner likewise
//!   writes the answers that are ready as one statement. Each of these is
//!   a store read, which holds up the member's group commits while it
//!   runs: per node, they cost the caller and the owner several round
//!   trips each.

use std::time::Duration;

use kiln_store::postgres::listener::Wake;
use kiln_store::{NodeId, Shared as SharedStore, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::supervisor::{Asked, Router};
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
    /// Carries this member's requests for other members' nodes.
    pub courier: Courier,
}

/// The task that writes this member's requests for other members' nodes
/// and collects their answers, in batches; started at its first use.
#[derive(Clone, Default)]
pub struct Courier(std::sync::Arc<std::sync::OnceLock<mpsc::UnboundedSender<Ask>>>);

impl std::fmt::Debug for Courier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Courier")
    }
}

/// One request for the courier: the node, the encoded request, and where
/// its answer (as the owner wrote it) goes.
pub struct Ask {
    node: NodeId,
    body: String,
    reply: oneshot::Sender<Result<String, KilnError>>,
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
    let body = serde_json::to_string(&request)
        .map_err(|e| KilnError::Protocol(format!("cannot encode a node request: {e}")))?;
    let courier = shared.courier.0.get_or_init(|| {
        let (asks, inbox) = mpsc::unbounded_channel();
        actix::spawn(carry(router.store.clone(), shared.wakes.subscribe(), inbox));
        asks
    });
    let (reply, answer) = oneshot::channel();
    courier
        .send(Ask { node, body, reply })
        .map_err(|_| KilnError::Unavailable("the courier of node requests is not running".into()))?;
    let answer = answer.await.map_err(|_| KilnError::Unavailable("the courier of node requests stopped".into()))??;
    serde_json::from_str::<Answer>(&answer)
        .map_err(|e| KilnError::Protocol(format!("the owner's answer cannot be read: {e}")))?
}

/// A request written and not answered yet.
struct Waiting {
    node: NodeId,
    reply: oneshot::Sender<Result<String, KilnError>>,
    since: std::time::Instant,
    withdraw_tried: bool,
}

/// The courier: writes the requests queued in `inbox` (all that are there
/// when it looks, as one statement), and collects the answers of every
/// request it waits for (one statement) when woken for one of them, after
/// a resync, or every [`SWEEP`]. Runs until every sender is gone.
async fn carry(
    store: kiln_store::StoreHandle,
    mut wakes: broadcast::Receiver<Wake>,
    mut inbox: mpsc::UnboundedReceiver<Ask>,
) {
    let mut waiting: std::collections::HashMap<i64, Waiting> = Default::default();
    let (mut open, mut hearing) = (true, true);
    let mut looked = std::time::Instant::now();
    while open || !waiting.is_empty() {
        let mut asks = Vec::new();
        let mut look = false;
        tokio::select! {
            ask = inbox.recv(), if open => match ask {
                Some(ask) => asks.push(ask),
                None => open = false,
            },
            wake = wakes.recv(), if hearing => match wake {
                Ok(Wake::Answer(id)) => look = waiting.contains_key(&id),
                Ok(Wake::Requests(_) | Wake::Directory { .. } | Wake::Events) => {}
                Ok(Wake::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => look = true,
                // No more wake-ups: the sweep alone finds the answers.
                Err(broadcast::error::RecvError::Closed) => hearing = false,
            },
            () = tokio::time::sleep(SWEEP) => look = true,
        }
        // However busy, a sweep every SWEEP.
        look |= looked.elapsed() >= SWEEP;
        // Everything else already here goes in the same statements.
        while let Ok(ask) = inbox.try_recv() {
            asks.push(ask);
        }
        loop {
            match wakes.try_recv() {
                Ok(Wake::Answer(id)) => look |= waiting.contains_key(&id),
                Ok(Wake::Requests(_) | Wake::Directory { .. } | Wake::Events) => {}
                Ok(Wake::Resync) | Err(broadcast::error::TryRecvError::Lagged(_)) => look = true,
                Err(_) => break,
            }
        }
        if !asks.is_empty() {
            submit(&store, asks, &mut waiting).await;
        }
        if look && !waiting.is_empty() {
            looked = std::time::Instant::now();
            collect(&store, &mut waiting).await;
        }
    }
}

/// Writes `asks` as one statement and adds them to `waiting`; a node that
/// does not exist is answered so at once.
async fn submit(
    store: &kiln_store::StoreHandle,
    asks: Vec<Ask>,
    waiting: &mut std::collections::HashMap<i64, Waiting>,
) {
    let rows: Vec<(NodeId, String)> = asks.iter().map(|a| (a.node, a.body.clone())).collect();
    let written = match store.read(move |b| shared_of(b)?.submit_node_requests(&rows)).await {
        Ok(written) => written,
        Err(e) => {
            let e = KilnError::from(e);
            for ask in asks {
                let _ = ask.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    // The ids of each node's requests, in the order asked.
    let mut ids: std::collections::HashMap<NodeId, std::collections::VecDeque<i64>> = Default::default();
    for (node, id) in written {
        ids.entry(node).or_default().push_back(id);
    }
    let since = std::time::Instant::now();
    for ask in asks {
        match ids.get_mut(&ask.node).and_then(std::collections::VecDeque::pop_front) {
            Some(id) => {
                waiting.insert(id, Waiting { node: ask.node, reply: ask.reply, since, withdraw_tried: false });
            }
            None => {
                let _ = ask.reply.send(Err(KilnError::NotFound(format!("node {} does not exist", ask.node))));
            }
        }
    }
}

/// Collects every answer there is for `waiting` (one statement) and hands
/// each to its caller; withdraws what no member took within
/// [`TAKE_WITHIN`] and gives up on what was not answered within
/// [`ANSWER_WITHIN`].
async fn collect(store: &kiln_store::StoreHandle, waiting: &mut std::collections::HashMap<i64, Waiting>) {
    let ids: Vec<i64> = waiting.keys().copied().collect();
    match store.read(move |b| shared_of(b)?.collect_node_answers(&ids)).await {
        Ok(answers) => {
            for (id, answer) in answers {
                if let Some(w) = waiting.remove(&id) {
                    let _ = w.reply.send(Ok(answer));
                }
            }
        }
        // Tried again at the next wake-up or sweep.
        Err(e) => tracing::warn!(error = %e, "could not collect the answers of node requests"),
    }
    let overdue: Vec<i64> = waiting
        .iter()
        .filter(|(_, w)| w.since.elapsed() >= TAKE_WITHIN && !w.withdraw_tried)
        .map(|(id, _)| *id)
        .collect();
    for id in overdue {
        if let Some(w) = waiting.get_mut(&id) {
            w.withdraw_tried = true;
        }
        if let Ok(true) = store.read(move |b| shared_of(b)?.cancel_node_request(id)).await
            && let Some(w) = waiting.remove(&id)
        {
            let _ = w.reply.send(Err(KilnError::Unavailable(format!(
                "node {}: no member took the request within {} s (its owner may be down; \
                 a live member takes its nodes over within member_timeout); nothing was done",
                w.node,
                TAKE_WITHIN.as_secs()
            ))));
        }
    }
    let given_up: Vec<i64> =
        waiting.iter().filter(|(_, w)| w.since.elapsed() >= ANSWER_WITHIN).map(|(id, _)| *id).collect();
    for id in given_up {
        if let Some(w) = waiting.remove(&id) {
            let _ = w.reply.send(Err(KilnError::Unavailable(format!(
                "node {}: its owner took the request but did not answer within {} s",
                w.node,
                ANSWER_WITHIN.as_secs()
            ))));
        }
    }
}

/// Takes and runs the requests other members write for this member's
/// nodes, for the site's life. The answers that are ready go back as one
/// statement ([`answer_all`]).
pub async fn serve(router: Router, shared: Shared) {
    let mut wakes = shared.wakes.subscribe();
    let (answers, ready) = mpsc::unbounded_channel();
    actix::spawn(answer_all(router.store.clone(), ready));
    loop {
        let mut full = false;
        match router.store.read(|b| shared_of(b)?.take_node_requests(BATCH)).await {
            Ok(taken) => {
                full = taken.len() as i64 >= BATCH;
                for request in taken {
                    let router = router.clone();
                    let answers = answers.clone();
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
                        let _ = answers.send((id, text));
                    });
                }
            }
            Err(StoreError::Closed) => return,
            Err(e) => tracing::warn!(error = %e, "could not take node requests; trying again"),
        }
        // A full batch: more may be queued, with their wake-up spent.
        if !full {
            let me = shared.member.clone();
            wait_for(&mut wakes, move |w| matches!(w, Wake::Requests(owner) if *owner == me)).await;
        }
    }
}

/// Writes the answers of this member's requests as they come: all those
/// ready when it looks, as one statement.
async fn answer_all(store: kiln_store::StoreHandle, mut ready: mpsc::UnboundedReceiver<(i64, String)>) {
    while let Some(first) = ready.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = ready.try_recv() {
            batch.push(more);
        }
        let count = batch.len();
        if let Err(e) = store.read(move |b| shared_of(b)?.answer_node_requests(&batch)).await {
            tracing::warn!(answers = count, error = %e, "could not answer node requests");
        }
    }
}

/// Gives up the idle ones of `nodes` to the member the ring names: their
/// actors stop, then their rows lose this member as owner, for the other
/// to claim. A node that is busy stays (the next round tries again).
/// Returns how many were given up.
pub async fn hand_over(router: &Router, nodes: Vec<NodeId>) -> Result<usize, KilnError> {
    // Every actor is asked at once: each answers from its own mailbox, and
    // an idle one stops as it answers.
    // A node at rest leaves the registry at once: it has no actor to ask.
    let mut handed: Vec<NodeId> = Vec::new();
    let mut asks = Vec::new();
    for id in nodes {
        if router.registry.remove_resting(id) {
            handed.push(id);
        } else if let Some(Asked::Sent(asked)) = router.registry.send(id, crate::node::HandOver, |_| None) {
            asks.push(async move { (id, asked.await.unwrap_or(false)) });
        }
    }
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
        Ok(Request::Hold { holder }) => router.hold_local(node, &holder).await,
        Ok(Request::Release { holder }) => match router.release_local(node, &holder).await {
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
