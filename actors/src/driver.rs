//! Driver actors: one per BMC endpoint and settings, the only way node
//! actors reach a BMC.
//!
//! A BMC is slow and fragile, so each call holds a permit of its network
//! endpoint's semaphore while it runs (`bmc_max_concurrent`, shared by every
//! actor of that `host:port`, see `node/connect.rs`): more calls wait their
//! turn, in order. The actor bounds each call, its wait for a permit
//! included, with a timeout, and runs the call itself in a spawned
//! tokio task so that a panicking driver becomes a [`DriverError::Panicked`]
//! for the node instead of killing an actor (ARCHITECTURE.md, "Panics").

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use kiln_drivers::{Bmc, Boot, DriverError, Inspection, Power, PowerAction, Profile};
use kiln_store::DriverKind;
use tracing::Instrument;

use crate::metrics::{BmcCall, Metrics};

/// A call to a BMC.
#[derive(Clone, Debug, Message)]
#[rtype(result = "Result<DriverReply, DriverError>")]
pub enum DriverCall {
    GetPower,
    SetPower(PowerAction),
    SetBoot(Boot, bool),
    GetBoot,
    Inspect,
    /// Empty the system's virtual CD.
    EjectMedia,
    /// Put the image at this URL into the system's virtual CD.
    InsertMedia(String),
}

/// A [`DriverCall`] made for one node. The driver's own log lines during
/// the call ("Redfish session token refused", an IPMI retry) carry `span`,
/// the node's (with its task's action and job), so the operator learns
/// which node's call met them even when nodes share the BMC's actor.
#[derive(Debug, Message)]
#[rtype(result = "Called")]
pub struct NodeCall {
    pub call: DriverCall,
    pub span: tracing::Span,
}

/// The answer to a [`NodeCall`]: the BMC's, and what the client has
/// learned about the BMC's quirks by then (its [`Profile`]), for the node
/// to keep.
#[derive(Debug)]
pub struct Called {
    pub result: Result<DriverReply, DriverError>,
    pub learned: Profile,
}

/// A BMC's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum DriverReply {
    Power(Power),
    Done,
    Boot(Option<Boot>),
    /// What an inspection found: facts for the properties, NICs for ports.
    Inspected(Inspection),
}

/// The actor in front of one BMC.
pub struct DriverActor {
    bmc: Arc<dyn Bmc>,
    /// How the BMC is named in errors (its address; never credentials).
    label: String,
    call_timeout: Duration,
    /// The endpoint's calls in flight (`None`: no limit, a fake BMC).
    limit: Option<Arc<tokio::sync::Semaphore>>,
    /// Where each call's latency and failure are counted, under which driver.
    metrics: Option<(Arc<Metrics>, DriverKind)>,
}

impl DriverActor {
    pub fn new(bmc: Arc<dyn Bmc>, label: String, call_timeout: Duration) -> Self {
        DriverActor { bmc, label, call_timeout, limit: None, metrics: None }
    }

    /// Holds a permit of `limit` during each call.
    pub fn limited(mut self, limit: Option<Arc<tokio::sync::Semaphore>>) -> Self {
        self.limit = limit;
        self
    }

    /// Counts every call in `metrics`, labelled with `driver`.
    pub fn observed(mut self, metrics: Arc<Metrics>, driver: DriverKind) -> Self {
        self.metrics = Some((metrics, driver));
        self
    }
}

impl DriverCall {
    /// The call as metrics label it.
    pub fn metric(&self) -> BmcCall {
        match self {
            DriverCall::GetPower => BmcCall::GetPower,
            DriverCall::SetPower(_) => BmcCall::SetPower,
            DriverCall::SetBoot(..) => BmcCall::SetBoot,
            DriverCall::GetBoot => BmcCall::GetBoot,
            DriverCall::Inspect => BmcCall::Inspect,
            DriverCall::EjectMedia => BmcCall::EjectMedia,
            DriverCall::InsertMedia(_) => BmcCall::InsertMedia,
        }
    }
}

impl Actor for DriverActor {
    type Context = Context<Self>;
}

impl Handler<DriverCall> for DriverActor {
    type Result = ResponseFuture<Result<DriverReply, DriverError>>;

    fn handle(&mut self, call: DriverCall, _: &mut Context<Self>) -> Self::Result {
        let called = self.start(call, tracing::Span::none());
        Box::pin(async move { called.await.result })
    }
}

impl Handler<NodeCall> for DriverActor {
    type Result = ResponseFuture<Called>;

    fn handle(&mut self, msg: NodeCall, _: &mut Context<Self>) -> Self::Result {
        self.start(msg.call, msg.span)
    }
}

impl DriverActor {
    /// Runs `call` in a task of its own inside `span`, holding a permit of
    /// the endpoint, bounded by the call timeout.
    fn start(&mut self, call: DriverCall, span: tracing::Span) -> ResponseFuture<Called> {
        let bmc = self.bmc.clone();
        let asked = self.bmc.clone();
        let label = self.label.clone();
        let limit = self.call_timeout;
        let permits = self.limit.clone();
        let metrics = self.metrics.clone();
        let metric = call.metric();
        let began = Instant::now();
        let running = tokio::spawn(
            async move {
                let work = async {
                    // Closed never: the pool keeps the semaphore.
                    let _permit = match &permits {
                        Some(p) => Some(p.acquire().await.map_err(|_| DriverError::Unavailable)?),
                        None => None,
                    };
                    match call {
                        DriverCall::GetPower => bmc.get_power_state().await.map(DriverReply::Power),
                        DriverCall::SetPower(a) => bmc.set_power_state(a).await.map(|_| DriverReply::Done),
                        DriverCall::SetBoot(d, p) => bmc.set_boot_device(d, p).await.map(|_| DriverReply::Done),
                        DriverCall::GetBoot => bmc.get_boot_device().await.map(DriverReply::Boot),
                        DriverCall::Inspect => bmc.inspect().await.map(DriverReply::Inspected),
                        DriverCall::EjectMedia => bmc.eject_media().await.map(|_| DriverReply::Done),
                        DriverCall::InsertMedia(url) => bmc.insert_media(&url).await.map(|_| DriverReply::Done),
                    }
                };
                match tokio::time::timeout(limit, work).await {
                    Ok(result) => result,
                    Err(_) => Err(DriverError::Timeout { address: label, seconds: limit.as_secs() }),
                }
            }
            .instrument(span),
        );
        Box::pin(async move {
            let result = match running.await {
                Ok(result) => result,
                Err(join) => Err(DriverError::Panicked(crate::panics::join_text(join))),
            };
            if let Some((m, driver)) = metrics {
                m.bmc_call(driver, metric, began.elapsed(), result.is_err());
            }
            Called { result, learned: asked.profile() }
        })
    }
}

/// Asks a driver actor which thread it runs on, so tests can check where the
/// site put it. Exists only in test builds.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "std::thread::ThreadId")]
pub struct ThreadOfForTest;

#[cfg(test)]
impl Handler<ThreadOfForTest> for DriverActor {
    type Result = MessageResult<ThreadOfForTest>;
    fn handle(&mut self, _: ThreadOfForTest, _: &mut Context<Self>) -> Self::Result {
        MessageResult(std::thread::current().id())
    }
}
