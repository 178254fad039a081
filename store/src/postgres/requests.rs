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
//! - **Batched both ways.** A bulk verb through a member that does not run
//!   the nodes writes the requests it has at once as one statement; an
//!   owner claims up to a batch at a time and writes the answers that are
//!   ready as one statement; a caller collects every answered request it
//!   waits for in one statement. Round trips go with the number of waves,
//!   not of nodes.
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

/// Writes one request per `(node, body)` from `caller`, in one statement,
/// and wakes the nodes' owners (PostgreSQL delivers one notification per
/// owner and transaction, however many rows name it). Returns each written
/// request's node and id, in the order asked; a node that does not exist
/// gets none.
pub(super) async fn submit(
    client: &Client,
    asked: &[(NodeId, String)],
    caller: &str,
) -> Result<Vec<(NodeId, i64)>, tokio_postgres::Error> {
    let nodes: Vec<String> = asked.iter().map(|(node, _)| node.to_string()).collect();
    let bodies: Vec<&str> = asked.iter().map(|(_, body)| body.as_str()).collect();
    let rows = client
        .query(
            "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS v(node, body, i)),
                  r AS (INSERT INTO node_requests (node, caller, body)
                        SELECT v.node, $3, v.body FROM v JOIN nodes n ON n.uuid = v.node ORDER BY v.i
                        RETURNING id, node)
             SELECT r.id, r.node, pg_notify($4, n.owner) FROM r JOIN nodes n ON n.uuid = r.node ORDER BY r.id",
            &[&nodes, &bodies, &caller, &REQUESTS],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let node: String = r.get(1);
            Some((node.parse().ok()?, r.get(0)))
        })
        .collect())
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

/// Writes the answers of claimed requests (`(id, answer)`), in one
/// statement, and wakes each one's caller.
pub(super) async fn answer(client: &Client, answers: &[(i64, String)]) -> Result<(), tokio_postgres::Error> {
    let ids: Vec<i64> = answers.iter().map(|(id, _)| *id).collect();
    let texts: Vec<&str> = answers.iter().map(|(_, text)| text.as_str()).collect();
    client
        .execute(
            "WITH a AS (UPDATE node_requests r SET state = 'answered', answer = v.answer
                        FROM unnest($1::bigint[], $2::text[]) AS v(id, answer)
                        WHERE r.id = v.id RETURNING r.id)
             SELECT pg_notify($3, id::text) FROM a",
            &[&ids, &texts, &ANSWERS],
        )
        .await?;
    Ok(())
}

/// The answers there are of the requests `ids`, as `(id, answer)`; the
/// rows answered go with them.
pub(super) async fn collect(client: &Client, ids: &[i64]) -> Result<Vec<(i64, String)>, tokio_postgres::Error> {
    let rows = client
        .query("DELETE FROM node_requests WHERE id = ANY($1) AND state = 'answered' RETURNING id, answer", &[&ids])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default())).collect())
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
