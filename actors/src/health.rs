//! Is the site alive? A round trip through each long-lived actor and the
//! store thread, for a service manager's watchdog: if any of them is wedged
//! (a handler that never returns, a store thread stuck on the disk) the
//! check fails or times out, the daemon stops telling systemd it is well,
//! and systemd restarts it.

use std::time::Duration;

use actix::prelude::*;

use crate::jobs::JobQueue;
use crate::scheduler::Scheduler;
use crate::supervisor::Supervisor;
use crate::{KilnError, Site};

/// Answered at once by the actor that gets it: proof its mailbox moves.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Ping;

impl Handler<Ping> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

impl Handler<Ping> for JobQueue {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

impl Handler<Ping> for Scheduler {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

impl Site {
    /// Pings the supervisor, the job queue, the scheduler and the store
    /// thread; fails naming the first that did not answer within `within`.
    pub async fn check_alive(&self, within: Duration) -> Result<(), KilnError> {
        let late = |what: &str| KilnError::Unavailable(format!("the {what} did not answer within {within:?}"));
        let ok = |r: Result<Result<(), MailboxError>, tokio::time::error::Elapsed>| matches!(r, Ok(Ok(())));
        if !ok(tokio::time::timeout(within, self.supervisor.send(Ping)).await) {
            return Err(late("supervisor"));
        }
        if !ok(tokio::time::timeout(within, self.jobs.send(Ping)).await) {
            return Err(late("job queue"));
        }
        if !ok(tokio::time::timeout(within, self.scheduler.send(Ping)).await) {
            return Err(late("scheduler"));
        }
        match tokio::time::timeout(within, self.store.read(|_| Ok(()))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(KilnError::Unavailable(format!("the store does not answer: {e}"))),
            Err(_) => Err(late("store")),
        }
    }
}
