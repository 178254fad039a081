//! A node's part in a graceful shutdown, decided in the core: once the grace
//! period has run out, the task still holding the node is abandoned exactly
//! as the restart rule ([`plan::recover`]) would treat it after a crash, but
//! now, with the change committed before the daemon exits, so the store never
//! shows a node mid-task with no task running. The fixed record is adopted
//! like any other ([`NodeCore::adopt`]), so the gauges follow it.

use kiln_store::{NodeRecord, StoreError, Write};
use tokio::sync::oneshot;

use super::super::plan;
use super::{AfterCommit, NodeCore};
use crate::KilnError;
use crate::events::EventKind;
use crate::node::effects::{Answer, Effect};

/// An abandoned task whose record is being read back.
pub(super) struct Abandoning {
    reply: oneshot::Sender<bool>,
    why: String,
    action: String,
}

/// The restart rule's change on its way to the store.
pub(super) struct Fixing {
    reply: oneshot::Sender<bool>,
    action: String,
    fixed: NodeRecord,
}

impl NodeCore {
    /// Closes the node to new work, answers the requests waiting for it and
    /// abandons the running task (its caller gets an error, the node is
    /// released). Answers whether the store needed the restart rule's
    /// change, once it is durable.
    pub(super) fn abandon(&mut self, why: String, reply: oneshot::Sender<bool>) {
        self.closing = Some(why.as_str().into());
        let name = self.name();
        for w in std::mem::take(&mut self.waiters) {
            let err = KilnError::Unavailable(format!("node {name}: {why}"));
            self.answer(Answer::Node(w.reply, Box::new(Err(err))));
        }
        // Taking the task away makes the driver replies still on their way
        // find no task to continue. Without a task no commit of this node is
        // in flight: nothing to do.
        let Some(mut task) = self.task.take() else {
            return self.answer(Answer::Done(reply, false));
        };
        if let Some(caller) = task.reply.take() {
            let err = KilnError::Driver { node: name, message: why.clone() };
            self.answer(Answer::Node(caller, Box::new(Err(err))));
        }
        self.node.unreserve();
        // Read the record back from the store rather than trusting memory: the
        // store serves requests in order, so this read sees every commit the
        // task sent before it was abandoned, even one not yet answered.
        let ticket = self.ticket(super::Awaiting::Load(Abandoning { reply, why, action: task.action }));
        self.out.push(Effect::LoadStored { ticket });
    }

    pub(super) fn loaded(&mut self, then: Abandoning, result: Result<Option<NodeRecord>, StoreError>) {
        let Abandoning { reply, why, action } = then;
        let stored = match result {
            Ok(Some(stored)) => stored,
            Ok(None) => return self.answer(Answer::Done(reply, false)),
            Err(e) => {
                self.cannot_release(&KilnError::from(e));
                return self.answer(Answer::Done(reply, false));
            }
        };
        let Some((fixed, entry)) = plan::recover(&stored, &why, self.clock.now()) else {
            return self.answer(Answer::Done(reply, false));
        };
        let writes = vec![Write::UpdateNode(fixed.clone().into()), Write::AppendHistory(entry)];
        self.commit_writes(writes, None, AfterCommit::Abandon(Box::new(Fixing { reply, action, fixed })));
    }

    pub(super) fn abandon_committed(&mut self, then: Fixing, result: Result<(), KilnError>) {
        let Fixing { reply, action, fixed } = then;
        match result {
            Ok(()) => {
                self.adopt(fixed);
                let error = self.node.record().last_error.clone();
                self.publish_as(EventKind::Error, action, error);
                self.answer(Answer::Done(reply, true));
            }
            Err(e) => {
                self.cannot_release(&e);
                self.answer(Answer::Done(reply, false));
            }
        }
    }

    fn cannot_release(&self, e: &KilnError) {
        let r = self.node.record();
        tracing::error!(node = %r.uuid, name = %r.name, error = %e,
            "cannot release the node at shutdown; the restart rule will");
    }
}
