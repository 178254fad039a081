//! A node's part in a graceful shutdown: once the grace period has run out,
//! the task still holding the node is abandoned exactly as the restart rule
//! ([`super::plan::recover`]) would treat it after a crash, but now, with the
//! change committed before the daemon exits, so the store never shows a
//! node mid-task with no task running.

use actix::prelude::*;
use chrono::Utc;
use kiln_store::Write;

use super::actor::NodeActor;
use super::plan;
use crate::KilnError;
use crate::events::EventKind;

/// Closes the node to new work (exclusive requests get `Unavailable` with
/// `why`, and the actor commits nothing more), answers the requests waiting
/// for it, and abandons the running task: its caller gets an error, the node
/// is released and, if the store shows it mid-task, falls to its failed
/// state with `last_error` saying `why`. Answers whether the store needed
/// that change, once it is durable.
#[derive(Clone, Debug, Message)]
#[rtype(result = "bool")]
pub struct Abandon {
    pub why: String,
}

impl Handler<Abandon> for NodeActor {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, msg: Abandon, _: &mut Context<Self>) -> Self::Result {
        self.closing = Some(msg.why.clone());
        let name = self.name();
        for w in self.waiters.drain(..) {
            let _ = w.reply.send(Err(KilnError::Unavailable(format!("node {name}: {}", msg.why))));
        }
        // Taking the task away makes the driver replies still on their way
        // find no task to continue.
        // Without a task no commit of this node is in flight: nothing to do.
        let Some(mut task) = self.task.take() else {
            return Box::pin(actix::fut::ready(false));
        };
        if let Some(reply) = task.reply.take() {
            let _ = reply.send(Err(KilnError::Driver { node: name, message: msg.why.clone() }));
        }
        let action = task.action;
        self.unreserve();
        // Read the record back from the store rather than trusting memory: the
        // store serves requests in order, so this read sees every commit the
        // task sent before it was abandoned, even one not yet answered.
        let store = self.env.store.clone();
        let id = self.record.uuid;
        let why = msg.why;
        let fix = async move {
            let Some(stored) = store.read(move |b| b.load_node(id)).await? else { return Ok(None) };
            let Some((fixed, entry)) = plan::recover(&stored, &why, Utc::now()) else { return Ok(None) };
            store.commit(vec![Write::UpdateNode(fixed.clone()), Write::AppendHistory(entry)]).await?;
            Ok::<_, kiln_store::StoreError>(Some(fixed))
        };
        Box::pin(fix.into_actor(self).map(move |res, act, _| match res {
            Ok(Some(fixed)) => {
                act.record = fixed;
                act.publish_as(EventKind::Error, action, act.record.last_error.clone());
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(node = %act.record.uuid, name = %act.record.name, error = %e,
                    "cannot release the node at shutdown; the restart rule will");
                false
            }
        }))
    }
}
