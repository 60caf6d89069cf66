//! The shard actor: owns one [`ShardCore`] exclusively on its own actix arbiter (thread), so the
//! hot path takes no locks. It decides *when* things happen — applying requests in mailbox order,
//! handing each burst of changes to the committer, sweeping expired holds and keys — never *what*
//! (that is the core's).
//!
//! Group commit, shard side: requests are applied to memory as they arrive; answers that depend
//! on a change wait in the current burst. When the mailbox is drained (or the burst is full) the
//! burst's writes and answers go to the committer, which releases the answers after persisting.
//! Read-only requests (`check`, `get_customer`) are answered from memory at once, unless reading
//! changed state (a due period closed, holds expired): then they wait like writes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tally_protocol::message::{BatchItemResult, ReportItem, Request, Response, TallyError};
use tokio::sync::oneshot;

use crate::activity::{Activity, ActivityReport};
use crate::clock::Clock;
use crate::committer::{Burst, CommitQueue, PendingReply, StoreHealth};
use crate::metering::engine::ShardCore;
use crate::platform::memory::{self, QuietWatch};
use crate::store::{writes_for, Write};

/// How often a shard releases expired holds and forgets expired keys that no request touched.
/// Expiry itself is exact (every answer expires its customer's holds first); the sweep only
/// frees them sooner and persists the release.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Most answers in one burst; a larger backlog is handed over in several bursts.
pub const BURST_REPLIES_MAX: usize = 4_096;
/// Length of the console's "last interval" (top customers, recent latency).
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);
/// Most customers whose due periods one sweep step closes; a larger backlog continues in the
/// next step, after the mailbox is drained, so requests keep being served meanwhile.
pub const CLOSES_PER_STEP_MAX: usize = 2_000;

/// Where the shards of one thread put their bursts. What they add during one turn of the
/// thread's task queue reaches the committer as one burst: two shards on the server thread that
/// each handed their own burst over made two commits (and two wake-ups) where one would do.
pub struct Collector {
    commits: CommitQueue,
    collected: Mutex<Collected>,
}

#[derive(Default)]
struct Collected {
    burst: Burst,
    is_sending_scheduled: bool,
}

impl Collector {
    /// A collector sending to the committer's queue `commits`.
    pub fn new(commits: CommitQueue) -> Arc<Collector> {
        Arc::new(Collector {
            commits,
            collected: Mutex::default(),
        })
    }

    /// Adds one shard's writes and answers, in order after what it added before. They are sent
    /// at the end of this turn of the thread's tasks, or at once with `now` (or when the burst
    /// is full).
    fn add(self: &Arc<Self>, mut writes: Vec<Write>, mut replies: Vec<PendingReply>, now: bool) {
        let mut collected = self.collected.lock().expect("collector lock");
        collected.burst.writes.append(&mut writes);
        collected.burst.replies.append(&mut replies);
        if now || collected.burst.replies.len() >= BURST_REPLIES_MAX {
            drop(collected);
            self.send();
        } else if !collected.is_sending_scheduled {
            collected.is_sending_scheduled = true;
            // Runs after the tasks already queued on this thread: the other shards' turns.
            let collector = self.clone();
            actix_rt::spawn(async move { collector.send() });
        }
    }

    /// Whether the committer is too far behind to take more writes (see [`CommitQueue`]).
    fn is_full(&self) -> bool {
        self.commits.is_full()
    }

    /// Sends what was collected, without waiting: the shards stop adding writes once the
    /// committer's queue is full.
    fn send(&self) {
        let burst = {
            let mut collected = self.collected.lock().expect("collector lock");
            collected.is_sending_scheduled = false;
            std::mem::take(&mut collected.burst)
        };
        if burst.writes.is_empty() && burst.replies.is_empty() {
            return;
        }
        if let Err(unsent) = self.commits.send(burst) {
            let refusal = StoreHealth::refusal("the committer stopped");
            unsent
                .replies
                .into_iter()
                .for_each(|reply| reply.fail(refusal.clone()));
        }
    }
}

/// One shard.
pub struct Shard {
    core: ShardCore,
    clock: Arc<dyn Clock>,
    collector: Arc<Collector>,
    health: StoreHealth,
    replies: Vec<PendingReply>,
    is_handover_scheduled: bool,
    /// Messages sent to this shard and not yet handled (the router adds, the shard subtracts).
    depth: Arc<AtomicU64>,
    handled: u64,
    /// Whether a sweep found nothing handled on this thread since the last: then the thread
    /// gives its free pages back.
    quiet: QuietWatch,
    activity: Activity,
}

impl Shard {
    /// A shard around `core`, reading time from `clock`, committing through `collector` (the
    /// one of the thread it runs on).
    pub fn new(
        core: ShardCore,
        clock: Arc<dyn Clock>,
        collector: Arc<Collector>,
        health: StoreHealth,
        depth: Arc<AtomicU64>,
    ) -> Self {
        Self {
            core,
            clock,
            collector,
            health,
            replies: Vec::new(),
            is_handover_scheduled: false,
            depth,
            handled: 0,
            quiet: QuietWatch::default(),
            activity: Activity::default(),
        }
    }

    /// Counts a message taken off the mailbox.
    fn took_message(&mut self) {
        self.handled += 1;
        crate::platform::worked();
        self.depth.fetch_sub(1, Ordering::Relaxed);
    }

    /// Schedules the hand-over of the current burst once the mailbox is drained, or hands it over
    /// now when it is full.
    fn burst_grew(&mut self, ctx: &mut Context<Self>) {
        if self.replies.len() >= BURST_REPLIES_MAX {
            self.hand_over(true);
        } else if !self.is_handover_scheduled
            && (!self.replies.is_empty() || self.core.has_changes())
        {
            self.is_handover_scheduled = true;
            // Notifications run after the mailbox is drained: everything that arrived meanwhile
            // joins this burst, with no timer on the acknowledgement path.
            ctx.notify(HandOver { now: false });
        }
    }

    /// Closes a bounded number of due periods, and schedules another step if more are due.
    /// Closes up to a step's worth of ended periods (the rest in further steps); returns how many.
    fn close_due_periods(&mut self, ctx: &mut Context<Self>) -> usize {
        let closed = self
            .core
            .close_due_periods(self.clock.now_ms(), CLOSES_PER_STEP_MAX);
        if closed == CLOSES_PER_STEP_MAX {
            ctx.notify(CloseDuePeriods { reply: None });
        }
        self.burst_grew(ctx);
        closed
    }

    /// Hands the current burst to this thread's collector: sent with the other shards' at the
    /// end of this turn, or at once with `now`.
    fn hand_over(&mut self, now: bool) {
        let changes = self.core.take_changes();
        self.activity
            .note(&changes, &self.core, self.clock.now_ms());
        let writes = writes_for(changes, &self.core);
        let replies = std::mem::take(&mut self.replies);
        if writes.is_empty() && replies.is_empty() && !now {
            return;
        }
        self.collector.add(writes, replies, now);
    }
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP_INTERVAL, |shard, ctx| {
            // Behind a full commit queue the sweep waits: every answer does its customer's
            // expiry and closes itself, and the sweep's writes would only lengthen the queue.
            if !shard.collector.is_full() {
                let now_ms = shard.clock.now_ms();
                shard.core.purge_keys(now_ms);
                shard.core.expire_holds(now_ms);
                let _ = shard.close_due_periods(ctx);
            }
            if shard.quiet.tick(crate::platform::work_done()) {
                memory::release_idle();
            }
        });
        ctx.run_interval(STATS_INTERVAL, |shard, _| shard.activity.roll_interval());
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.hand_over(true);
        Running::Stop
    }
}

/// Hand the current burst over (sent by the shard to itself when its mailbox is drained, and at
/// shutdown with `now`, so that nothing waits for a turn that may never come).
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandOver {
    /// Send it to the committer at once rather than at the end of this turn.
    pub now: bool,
}

impl Handler<HandOver> for Shard {
    type Result = ();

    fn handle(&mut self, message: HandOver, _: &mut Self::Context) {
        self.is_handover_scheduled = false;
        self.hand_over(message.now);
    }
}

/// Continue closing due periods (sent by the shard to itself, and by the sandbox's test clock
/// after moving time forward, which is told how many this step closed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseDuePeriods {
    /// Where the count of periods closed by this step goes.
    pub reply: Option<oneshot::Sender<usize>>,
}

impl Handler<CloseDuePeriods> for Shard {
    type Result = ();

    fn handle(&mut self, message: CloseDuePeriods, ctx: &mut Self::Context) {
        let closed = self.close_due_periods(ctx);
        if let Some(reply) = message.reply {
            let _ = reply.send(closed);
        }
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

    fn handle(&mut self, message: ApplyRequest, ctx: &mut Self::Context) {
        self.took_message();
        if let Some(reason) = self.health.failure() {
            let _ = message.reply.send(Err(StoreHealth::refusal(reason)));
            return;
        }
        let is_read_only = matches!(message.request, Request::Check(_) | Request::GetCustomer(_));
        if !is_read_only && self.collector.is_full() {
            // Refused before it is applied, so memory never runs ahead of what will persist.
            let _ = message.reply.send(Err(TallyError::Overloaded));
            return;
        }
        // A progress that only notes its running total promises nothing new: answered like a
        // check, its note persists with the next commit.
        let may_answer_at_once = is_read_only || matches!(message.request, Request::Progress(_));
        let answer = self.core.handle(self.clock.now_ms(), message.request);
        if may_answer_at_once && !self.core.did_last_request_change_state() {
            // Served from memory; it may reflect changes still being persisted, whose own
            // answers are held until they are.
            let _ = message.reply.send(answer);
        } else {
            self.replies.push(PendingReply::One {
                reply: message.reply,
                answer,
            });
        }
        self.burst_grew(ctx);
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

    fn handle(&mut self, message: ApplyBatch, ctx: &mut Self::Context) {
        self.took_message();
        let (positions, items): (Vec<usize>, Vec<ReportItem>) = message.items.into_iter().unzip();
        if let Some(reason) = self.health.failure() {
            let refusal = BatchItemResult::Err(StoreHealth::refusal(reason));
            let _ = message.reply.send(
                positions
                    .into_iter()
                    .map(|p| (p, refusal.clone()))
                    .collect(),
            );
            return;
        }
        if self.collector.is_full() {
            let _ = message.reply.send(
                positions
                    .into_iter()
                    .map(|p| (p, BatchItemResult::Err(TallyError::Overloaded)))
                    .collect(),
            );
            return;
        }
        let results = self.core.report_batch(self.clock.now_ms(), items);
        self.replies.push(PendingReply::Batch {
            reply: message.reply,
            answer: positions.into_iter().zip(results).collect(),
        });
        self.burst_grew(ctx);
    }
}

/// Hand the current burst over with a request to checkpoint the commit log; `reply` hears when
/// everything this shard handed over so far is checkpointed (event listings read segments).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Checkpoint {
    /// Where the outcome goes.
    pub reply: oneshot::Sender<Result<(), TallyError>>,
}

impl Handler<Checkpoint> for Shard {
    type Result = ();

    fn handle(&mut self, message: Checkpoint, _: &mut Self::Context) {
        self.took_message();
        self.replies.push(PendingReply::Checkpointed {
            reply: message.reply,
        });
        self.hand_over(true);
    }
}

/// Price the requests that follow by a new catalogue (model prices reloaded); answers when in
/// force.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetCatalogue(pub Arc<crate::metering::catalogue::Catalogue>);

impl Handler<SetCatalogue> for Shard {
    type Result = ();

    fn handle(&mut self, message: SetCatalogue, _: &mut Self::Context) {
        self.took_message();
        self.core.set_catalogue(message.0);
    }
}

/// What the shard reports to `stats`.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    /// Customers it owns.
    pub customers: u64,
    /// Messages handled since start.
    pub handled: u64,
    /// Recent activity.
    pub activity: ActivityReport,
}

/// Report the shard's figures on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CollectStats {
    /// Where the report goes.
    pub reply: oneshot::Sender<ShardReport>,
}

impl Handler<CollectStats> for Shard {
    type Result = ();

    fn handle(&mut self, message: CollectStats, _: &mut Self::Context) {
        self.took_message();
        let _ = message.reply.send(ShardReport {
            customers: self.core.customer_count() as u64,
            handled: self.handled,
            activity: self.activity.report(self.clock.now_ms()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting() -> PendingReply {
        let (reply, _) = oneshot::channel();
        PendingReply::Checkpointed { reply }
    }

    #[test]
    fn what_the_shards_of_a_thread_add_in_one_turn_is_sent_as_one_burst() {
        let (commits, bursts) = CommitQueue::with_limit(8);
        actix::System::new().block_on(async move {
            let collector = Collector::new(commits);
            collector.add(Vec::new(), vec![waiting()], false);
            collector.add(Vec::new(), vec![waiting(), waiting()], false);
            assert!(
                bursts.try_recv().is_none(),
                "nothing is sent before the turn ends"
            );
            let mut sent = None;
            for _ in 0..100 {
                tokio::task::yield_now().await;
                if let Some(burst) = bursts.try_recv() {
                    sent = Some(burst);
                    break;
                }
            }
            let burst = sent.expect("the burst was sent once the turn ended");
            assert_eq!(burst.replies.len(), 3);
            assert!(bursts.try_recv().is_none(), "one burst, not one per shard");

            collector.add(Vec::new(), vec![waiting()], true);
            let burst = bursts.try_recv().expect("sent at once");
            assert_eq!(burst.replies.len(), 1);
        });
    }

    #[test]
    fn with_the_committer_gone_answers_are_refused() {
        let (commits, bursts) = CommitQueue::with_limit(8);
        drop(bursts);
        let (reply, mut refused) = oneshot::channel();
        Collector::new(commits).add(Vec::new(), vec![PendingReply::Checkpointed { reply }], true);
        assert!(matches!(
            refused.try_recv(),
            Ok(Err(TallyError::Internal { .. }))
        ));
    }
}
