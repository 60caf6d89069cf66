//! The shard actor: owns one [`ShardCore`] exclusively on its own actix arbiter (thread), so the
//! hot path takes no locks. It decides *when* things happen — applying requests in mailbox order,
//! sweeping expired holds — and never *what* (that is the core's).
//!
//! Persistence slots in here: a shard will apply a burst of requests to memory, write them as one
//! store batch, and only then send the replies it collected (group commit). Replies therefore
//! travel in a oneshot inside each message rather than as the handler's return value.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tally_protocol::message::{BatchItemResult, ReportItem, Request, Response, TallyError};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::metering::engine::ShardCore;

/// How often a shard releases expired holds that no request touched. Expiry itself is exact
/// (every answer expires its customer's holds first); the sweep only frees them sooner.
pub const HOLD_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// One shard.
pub struct Shard {
    core: ShardCore,
    clock: Arc<dyn Clock>,
}

impl Shard {
    /// A shard around `core`, reading time from `clock`.
    pub fn new(core: ShardCore, clock: Arc<dyn Clock>) -> Self {
        Self { core, clock }
    }
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(HOLD_SWEEP_INTERVAL, |shard, _| {
            shard.core.expire_holds(shard.clock.now_ms());
        });
    }
}

/// Apply one request and answer on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyRequest {
    /// A request routed to this shard.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Response, TallyError>>,
}

impl Handler<ApplyRequest> for Shard {
    type Result = ();

    fn handle(&mut self, message: ApplyRequest, _: &mut Self::Context) {
        let answer = self.core.handle(self.clock.now_ms(), message.request);
        // The caller may have given up (connection gone); the state change stands either way.
        let _ = message.reply.send(answer);
    }
}

/// Apply this shard's items of a batch, in order; each keeps its position in the whole batch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyBatch {
    /// `(position in the batch, item)`.
    pub items: Vec<(usize, ReportItem)>,
    /// Where the results go, with their positions.
    pub reply: oneshot::Sender<Vec<(usize, BatchItemResult)>>,
}

impl Handler<ApplyBatch> for Shard {
    type Result = ();

    fn handle(&mut self, message: ApplyBatch, _: &mut Self::Context) {
        let now_ms = self.clock.now_ms();
        let (positions, items): (Vec<usize>, Vec<ReportItem>) = message.items.into_iter().unzip();
        let results = self.core.report_batch(now_ms, items);
        let _ = message
            .reply
            .send(positions.into_iter().zip(results).collect());
    }
}

/// How many customers the shard owns.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountCustomers;

impl Handler<CountCustomers> for Shard {
    type Result = usize;

    fn handle(&mut self, _: CountCustomers, _: &mut Self::Context) -> usize {
        self.core.customer_count()
    }
}
