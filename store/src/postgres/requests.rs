//! Node requests between members: how a member that does not own a node
//! gets it to act.
//!
//! Why it is shaped so:
//!
//! - **A durable row, not a connection between members.** The caller
//!   writes a `node_requests` row naming the node; whichever member owns the
//!   node when it looks claims the row (`FOR UPDATE SKIP LOCKED`, so two
//!   sweeps never take one row), runs the request through its own node
//!   actor and writes the answer into the row. A takeover between the
//!   write and the claim changes nothing: the new owner claims it.
//! - **Woken, not polled.** Writing a request notifies `kiln_requests`
//!   with the owner's id; writing an answer notifies `kiln_answers` with
//!   the request id ([`super::listener`]). Members still sweep now and then,
//!   so a wake-up lost with a reconnecting listener costs a delay, never a
//!   request.
//! - **A caller's timeout cancels only what has not started**: a queued
//!   row is deleted; a claimed one runs to its end and its answer is
//!   dropped by nobody but the sweep of old rows.

use tokio_postgres::Client;

use crate::NodeId;

/// The channel an owner is woken on; the payload is its member id.
pub const REQUESTS: &str = "kiln_requests";
/// The channel a caller is woken on; the payload is the request id.
pub const ANSWERS: &str = "kiln_answers";

/// One request claimed by its node's owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRequest {
    pub id: i64,
    pub node: NodeId,
    /// The request, as the caller encoded it.
    pub body: String,
}

/// Writes a request for `node` from `caller` and wakes the node's owner.
/// `None` when the node does not exist.
pub(super) async fn submit(
    client: &Client,
    node: NodeId,
    caller: &str,
    body: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "WITH r AS (INSERT INTO node_requests (node, caller, body)
                        SELECT uuid, $2, $3 FROM nodes WHERE uuid = $1 RETURNING id, node)
             SELECT r.id, pg_notify($4, n.owner) FROM r JOIN nodes n ON n.uuid = r.node",
            &[&node.to_string(), &caller, &body, &REQUESTS],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Claims up to `limit` queued requests for nodes `me` owns.
pub(super) async fn take(client: &Client, me: &str, limit: i64) -> Result<Vec<NodeRequest>, tokio_postgres::Error> {
    let rows = client
        .query(
            "UPDATE node_requests SET state = 'running' WHERE id IN (
                 SELECT r.id FROM node_requests r JOIN nodes n ON n.uuid = r.node
                 WHERE r.state = 'queued' AND n.owner = $1
                 ORDER BY r.id LIMIT $2 FOR UPDATE OF r SKIP LOCKED)
             RETURNING id, node, body",
            &[&me, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let node: String = r.get(1);
            Some(NodeRequest { id: r.get(0), node: node.parse().ok()?, body: r.get(2) })
        })
        .collect())
}

/// Writes the answer of a claimed request and wakes its caller.
pub(super) async fn answer(client: &Client, id: i64, answer: &str) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "WITH a AS (UPDATE node_requests SET state = 'answered', answer = $2 WHERE id = $1 RETURNING id)
             SELECT pg_notify($3, id::text) FROM a",
            &[&id, &answer, &ANSWERS],
        )
        .await?;
    Ok(())
}

/// The answer of a request, once there is one; the row goes with it.
pub(super) async fn collect(client: &Client, id: i64) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client
        .query_opt("DELETE FROM node_requests WHERE id = $1 AND state = 'answered' RETURNING answer", &[&id])
        .await?;
    Ok(row.and_then(|r| r.get(0)))
}

/// Withdraws a request nobody has claimed; false when it already runs
/// (or has run).
pub(super) async fn cancel(client: &Client, id: i64) -> Result<bool, tokio_postgres::Error> {
    Ok(client.execute("DELETE FROM node_requests WHERE id = $1 AND state = 'queued'", &[&id]).await? == 1)
}

/// Puts a claimed request back in the queue.
pub(super) async fn requeue(client: &Client, id: i64) -> Result<(), tokio_postgres::Error> {
    client.execute("UPDATE node_requests SET state = 'queued' WHERE id = $1 AND state = 'running'", &[&id]).await?;
    Ok(())
}

/// Answers every request that was running on one of `nodes` with `answer`
/// and wakes their callers: their member died while running them, so
/// whether they were carried out is for the nodes' history to say; they
/// are never run again.
pub(super) async fn fail_running(
    client: &Client,
    nodes: &[String],
    answer: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "WITH a AS (UPDATE node_requests SET state = 'answered', answer = $2
                        WHERE state = 'running' AND node = ANY($1) RETURNING id)
             SELECT pg_notify($3, id::text) FROM a",
            &[&nodes, &answer, &ANSWERS],
        )
        .await
}
