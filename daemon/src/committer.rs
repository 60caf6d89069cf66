//! Group commit: one thread takes every burst the shards queued, writes them to the store as one
//! atomic batch, persists it per the durability mode, and only then releases the answers that
//! depended on it. No timer on the acknowledgement path: an idle committer commits a lone burst at
//! once; a busy one takes everything that queued while it was persisting (one fsync for all).
//! A failed write is never acknowledged: its answers become errors and the store is marked failed.
//! The committer also has the commit log checkpointed (see [`crate::store`]) on a thread of its
//! own: when its tail passes [`CHECKPOINT_BYTES`], when it is [`CHECKPOINT_INTERVAL`] old, when
//! a reader asks (listing events), and before it stops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjall::PersistMode;
use tally_protocol::message::{BatchItemResult, Response, TallyError};
use tokio::sync::{mpsc, oneshot};

use crate::config::Durability;
use crate::platform::memory;
use crate::store::{Store, Tail, Write, CHECKPOINT_BYTES, QUIET_FLUSH_MIN_BYTES};

/// Bursts that may wait for the committer before shards refuse writes (`Overloaded`, nothing
/// applied) while still answering reads: the hand-off itself never blocks the thread that
/// serves requests.
pub const QUEUED_BURSTS_MAX: usize = 256;
/// Most writes in one store batch; a larger backlog is committed in several batches.
pub const COMMIT_WRITES_MAX: usize = 65_536;
/// Longest a logged commit waits for its checkpoint (an idle daemon's log empties this soon).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);

/// An answer waiting for the writes it depends on.
pub enum PendingReply {
    /// One request's answer.
    One {
        /// Where it goes.
        reply: oneshot::Sender<Result<Response, TallyError>>,
        /// The answer.
        answer: Result<Response, TallyError>,
    },
    /// A shard's share of a batch.
    Batch {
        /// Where it goes.
        reply: oneshot::Sender<Vec<(usize, BatchItemResult)>>,
        /// The results with their positions in the batch.
        answer: Vec<(usize, BatchItemResult)>,
    },
    /// A reader waiting for everything committed so far to be checkpointed (events are listed
    /// from their segments).
    Checkpointed {
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<(), TallyError>>,
    },
}

impl PendingReply {
    /// Sends the answer (its writes are persisted). A caller that went away is ignored.
    pub fn release(self) {
        match self {
            PendingReply::One { reply, answer } => drop(reply.send(answer)),
            PendingReply::Batch { reply, answer } => drop(reply.send(answer)),
            PendingReply::Checkpointed { reply } => drop(reply.send(Ok(()))),
        }
    }

    fn needs_checkpoint(&self) -> bool {
        matches!(self, PendingReply::Checkpointed { .. })
    }

    /// Replaces the answer by `error` (its writes were not persisted).
    pub fn fail(self, error: TallyError) {
        match self {
            PendingReply::One { reply, .. } => drop(reply.send(Err(error))),
            PendingReply::Batch { reply, answer } => {
                let failed = answer
                    .into_iter()
                    .map(|(position, _)| (position, BatchItemResult::Err(error.clone())))
                    .collect();
                drop(reply.send(failed));
            }
            PendingReply::Checkpointed { reply } => drop(reply.send(Err(error))),
        }
    }
}

/// What one shard hands the committer: writes and the answers that wait for them.
#[derive(Default)]
pub struct Burst {
    /// Store writes, in the order they were made.
    pub writes: Vec<Write>,
    /// Answers to release once the writes are persisted.
    pub replies: Vec<PendingReply>,
}

/// Whether the store is still trustworthy. Once a write fails it never is again in this process:
/// memory may be ahead of disk, so every shard refuses work until a restart recovers.
#[derive(Debug, Clone, Default)]
pub struct StoreHealth(Arc<OnceLock<String>>);

impl StoreHealth {
    /// Records the first failure.
    pub fn fail(&self, reason: String) {
        let _ = self.0.set(reason);
    }

    /// The failure, if any.
    pub fn failure(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }

    /// The typed error that requests get once the store failed.
    pub fn refusal(reason: &str) -> TallyError {
        TallyError::Internal {
            reason: format!(
                "storage failed ({reason}); nothing was applied; restart tallyd to recover"
            ),
        }
    }
}

/// Where a commit's answers go once its writes are persisted: one message per commit to
/// [`release_answers`], running on the thread whose tasks await the answers (the server thread),
/// which releases them there. Released from the committer, each answer cost a cross-thread
/// wake-up, and they trickled out as they were woken one by one (more, smaller datagrams). If
/// the task is gone (shutting down), they are released on the committer thread.
pub struct Release(pub mpsc::UnboundedSender<Released>);

/// One commit's answers, and why its writes failed if they did.
pub struct Released {
    replies: Vec<PendingReply>,
    failure: Option<String>,
}

impl Release {
    fn answer(&self, replies: Vec<PendingReply>, failure: Option<&str>) {
        if replies.is_empty() {
            return;
        }
        let released = Released {
            replies,
            failure: failure.map(str::to_owned),
        };
        if let Err(unsent) = self.0.send(released) {
            answer(unsent.0.replies, unsent.0.failure.as_deref());
        }
    }
}

/// Releases the answers the committer hands over ([`Release`]) until it stops.
pub async fn release_answers(mut released: mpsc::UnboundedReceiver<Released>) {
    while let Some(Released { replies, failure }) = released.recv().await {
        answer(replies, failure.as_deref());
    }
}

/// Where shards queue bursts for the committer. Sending never blocks (a full queue would stall
/// the server thread, reads included, when shards share it); instead shards ask
/// [`CommitQueue::is_full`] before applying a write and refuse it while it is, so what waits
/// stays within [`QUEUED_BURSTS_MAX`] plus the bursts already made of accepted writes.
#[derive(Clone)]
pub struct CommitQueue {
    sender: std::sync::mpsc::Sender<Burst>,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

impl CommitQueue {
    /// Whether the committer is `limit` bursts behind: writes are refused until it catches up.
    pub fn is_full(&self) -> bool {
        self.queued.load(Ordering::Relaxed) >= self.limit
    }

    /// Queues a burst without waiting; gives it back if the committer has stopped.
    pub fn send(&self, burst: Burst) -> Result<(), Burst> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.sender.send(burst).map_err(|unsent| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            unsent.0
        })
    }

    /// A queue that is full at `limit` bursts, and the committer's end of it.
    pub fn with_limit(limit: usize) -> (CommitQueue, QueuedBursts) {
        let (sender, bursts) = std::sync::mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let queue = CommitQueue {
            sender,
            queued: queued.clone(),
            limit,
        };
        (queue, QueuedBursts { bursts, queued })
    }
}

/// The committer's end of a [`CommitQueue`].
pub struct QueuedBursts {
    bursts: Receiver<Burst>,
    queued: Arc<AtomicUsize>,
}

impl QueuedBursts {
    fn taken(&self, burst: Burst) -> Burst {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        burst
    }

    fn recv_releasing_when_quiet(&self) -> Option<Burst> {
        memory::recv_releasing_when_quiet(&self.bursts)
            .ok()
            .map(|burst| self.taken(burst))
    }

    fn recv_timeout(&self, timeout: Duration) -> Result<Burst, RecvTimeoutError> {
        self.bursts
            .recv_timeout(timeout)
            .map(|burst| self.taken(burst))
    }

    /// The next burst if one is queued.
    pub fn try_recv(&self) -> Option<Burst> {
        self.bursts.try_recv().ok().map(|burst| self.taken(burst))
    }
}

/// The committer thread.
pub struct Committer {
    sender: Option<CommitQueue>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the committer for `store` in `durability` mode; answers are released as `release`
    /// says. `log` is what recovery found in the commit log ([`crate::store::Recovered::log`]):
    /// it is checkpointed first, before any tail of new commits.
    pub fn start(
        store: Arc<Store>,
        durability: Durability,
        health: StoreHealth,
        release: Release,
        log: Tail,
        queue_limit: usize,
    ) -> Committer {
        let (sender, bursts) = CommitQueue::with_limit(queue_limit);
        let thread = std::thread::Builder::new()
            .name("tallyd-committer".into())
            .spawn(move || commit_loop(&store, durability, &health, &bursts, &release, log))
            .expect("spawning the committer thread");
        Committer {
            sender: Some(sender),
            thread: Some(thread),
        }
    }

    /// A handle for a shard to queue bursts.
    pub fn sender(&self) -> CommitQueue {
        self.sender.clone().expect("the committer is running")
    }

    /// Waits until every queued burst is committed and the thread ends. Every other sender
    /// (the shards) must be gone first.
    pub fn stop(mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn commit_loop(
    store: &Arc<Store>,
    durability: Durability,
    health: &StoreHealth,
    bursts: &QueuedBursts,
    release: &Release,
    mut recovered_log: Tail,
) {
    let (mode, sync_every) = match durability {
        Durability::Sync => (PersistMode::SyncData, None),
        Durability::Buffered => (PersistMode::Buffer, None),
        Durability::Periodic { interval_ms } => (
            PersistMode::Buffer,
            Some(Duration::from_millis(interval_ms)),
        ),
    };
    let checkpointer = Checkpointer::start(store.clone(), health.clone());
    checkpointer.hand_over(&mut recovered_log, Vec::new());
    let mut last_sync = Instant::now();
    let mut tail = Tail::default();
    let mut tail_since: Option<Instant> = None;
    loop {
        let sync_due = sync_every.map(|every| last_sync + every);
        let checkpoint_due = tail_since.map(|since| since + CHECKPOINT_INTERVAL);
        let first = match sync_due.into_iter().chain(checkpoint_due).min() {
            None => match bursts.recv_releasing_when_quiet() {
                Some(burst) => burst,
                None => break,
            },
            Some(due) => match bursts.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(burst) => burst,
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if checkpoint_due.is_some_and(|due| due <= now) {
                        checkpointer.hand_over(&mut tail, Vec::new());
                        tail_since = None;
                    }
                    if sync_due.is_some_and(|due| due <= now) {
                        sync(store, health);
                        last_sync = Instant::now();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut writes = first.writes;
        let mut replies = first.replies;
        while writes.len() < COMMIT_WRITES_MAX {
            match bursts.try_recv() {
                Some(mut burst) => {
                    writes.append(&mut burst.writes);
                    replies.append(&mut burst.replies);
                }
                None => break,
            }
        }
        let (waiting, replies): (Vec<_>, Vec<_>) = replies
            .into_iter()
            .partition(PendingReply::needs_checkpoint);
        commit(store, mode, health, writes, replies, &mut tail, release);
        if !waiting.is_empty() || tail.bytes() >= CHECKPOINT_BYTES {
            checkpointer.hand_over(&mut tail, waiting);
        }
        if tail.is_empty() {
            tail_since = None;
        } else if tail_since.is_none() {
            tail_since = Some(Instant::now());
        }
        if sync_every.is_some_and(|every| last_sync.elapsed() >= every) {
            sync(store, health);
            last_sync = Instant::now();
        }
    }
    // Stopping: what the log holds goes to its keyspaces, so a clean restart replays nothing.
    checkpointer.hand_over(&mut tail, Vec::new());
    checkpointer.stop();
    if sync_every.is_some() {
        sync(store, health);
    }
}

fn commit(
    store: &Store,
    mode: PersistMode,
    health: &StoreHealth,
    writes: Vec<Write>,
    replies: Vec<PendingReply>,
    tail: &mut Tail,
    release: &Release,
) {
    let write_count = writes.len();
    let result = match health.failure() {
        Some(reason) => Err(reason.to_string()),
        None if writes.is_empty() => Ok(()),
        None => store.persist(writes, mode, tail).map_err(|e| e.to_string()),
    };
    if let Err(reason) = &result {
        if health.failure().is_none() {
            tracing::error!(error = %reason, writes = write_count, "persisting a group commit failed; refusing all work until restart");
            health.fail(reason.clone());
        }
    }
    release.answer(replies, result.err().as_deref());
}

/// Releases `replies` when their writes are persisted (`failure` is `None`), or refuses them.
fn answer(replies: Vec<PendingReply>, failure: Option<&str>) {
    match failure {
        None => replies.into_iter().for_each(PendingReply::release),
        Some(reason) => {
            let refusal = StoreHealth::refusal(reason);
            replies
                .into_iter()
                .for_each(|reply| reply.fail(refusal.clone()));
        }
    }
}

/// Tails waiting for the checkpointer beside the one it is writing; when the queue is full the
/// committer waits (backpressure rather than memory growth).
const QUEUED_TAILS_MAX: usize = 1;

/// The thread that checkpoints the committer's tails, in the order they were handed over, so a
/// checkpoint (tens of thousands of rows and segments with many customers) never stalls a
/// commit. Rows cannot go back in time: tails are written one after the other, each covering
/// later log records than the one before.
struct Checkpointer {
    tails: SyncSender<(Tail, Vec<PendingReply>)>,
    /// Tails handed over and not yet taken up by the thread.
    queued: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    fn start(store: Arc<Store>, health: StoreHealth) -> Checkpointer {
        let (tails, handed_over) = sync_channel::<(Tail, Vec<PendingReply>)>(QUEUED_TAILS_MAX);
        let queued = Arc::new(AtomicUsize::new(0));
        let still_queued = queued.clone();
        let thread = std::thread::Builder::new()
            .name("tallyd-checkpoint".into())
            .spawn(move || {
                let when_quiet = || {
                    flush_when_quiet(&store, &health);
                    memory::release_idle();
                };
                while let Ok((mut tail, waiting)) =
                    memory::recv_or_when_quiet(&handed_over, memory::QUIET_AFTER, when_quiet)
                {
                    still_queued.fetch_sub(1, Ordering::SeqCst);
                    // Behind once the next tail is here: the committer may soon wait for this
                    // one, so it catches up in one batch rather than wait for commits between
                    // small ones.
                    let behind = || still_queued.load(Ordering::SeqCst) > 0;
                    checkpoint(&store, &health, &mut tail, behind);
                    answer(waiting, health.failure());
                }
            })
            .expect("spawning the checkpoint thread");
        Checkpointer {
            tails,
            queued,
            thread,
        }
    }

    /// Hands `tail` over (leaving it empty); `waiting` hear when it is checkpointed.
    fn hand_over(&self, tail: &mut Tail, waiting: Vec<PendingReply>) {
        if tail.is_empty() && waiting.is_empty() {
            return;
        }
        let job = (std::mem::take(tail), waiting);
        self.queued.fetch_add(1, Ordering::SeqCst);
        if let Err(unsent) = self.tails.send(job) {
            // The thread is gone (it only ends when this sender is dropped): refuse, never hang.
            let (_, waiting) = unsent.0;
            answer(waiting, Some("the checkpoint thread stopped"));
        }
    }

    /// Waits until every handed-over tail is checkpointed.
    fn stop(self) {
        drop(self.tails);
        let _ = self.thread.join();
    }
}

/// Checkpoints the tail. Not synced: a checkpoint lost in a crash loses the deletion of its log
/// records with it (its last batch), so the next start replays them.
fn checkpoint(store: &Store, health: &StoreHealth, tail: &mut Tail, behind: impl Fn() -> bool) {
    if health.failure().is_some() || tail.is_empty() {
        return;
    }
    if let Err(e) = store.checkpoint_unless_behind(tail, PersistMode::Buffer, behind) {
        tracing::error!(error = %e, "checkpointing the commit log failed; refusing all work until restart");
        health.fail(e.to_string());
    }
}

/// Flushes the memtables of a daemon gone quiet, so that neither they nor the pages around them
/// stay resident ([`Store::flush_memtables_over`]); on the checkpoint thread, which has nothing
/// else to do then (a tail handed over meanwhile waits for the flush, ~50–70 ms at 1M
/// customers). A failure only leaves them in memory: the next flush fjall makes will say more.
fn flush_when_quiet(store: &Store, health: &StoreHealth) {
    if health.failure().is_some() {
        return;
    }
    if let Err(e) = store.flush_memtables_over(QUIET_FLUSH_MIN_BYTES) {
        tracing::warn!(error = %e, "flushing the memtables of a quiet daemon failed");
    }
}

fn sync(store: &Store, health: &StoreHealth) {
    if health.failure().is_some() {
        return;
    }
    if let Err(e) = store.sync() {
        tracing::error!(error = %e, "periodic fsync failed; refusing all work until restart");
        health.fail(e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_protocol::message::{CheckOutcome, Standing};

    fn pending() -> (
        PendingReply,
        oneshot::Receiver<Result<Response, TallyError>>,
    ) {
        let (reply, answered) = oneshot::channel();
        let answer = Ok(Response::Check(CheckOutcome {
            allowed: true,
            seq: 1,
            cost: 0,
            standing: Standing::Flag { enabled: true },
        }));
        (PendingReply::One { reply, answer }, answered)
    }

    #[test]
    fn answers_handed_to_the_releasing_task_arrive_there() {
        let (task, released) = mpsc::unbounded_channel();
        let release = Release(task);
        let (reply, mut answered) = pending();
        release.answer(vec![reply], None);
        assert!(answered.try_recv().is_err(), "not released on this thread");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        drop(release);
        runtime.block_on(release_answers(released));
        assert!(matches!(answered.try_recv(), Ok(Ok(Response::Check(_)))));
    }

    #[test]
    fn a_failed_commit_refuses_its_answers_through_the_task_too() {
        let (task, released) = mpsc::unbounded_channel();
        let release = Release(task);
        let (reply, mut answered) = pending();
        release.answer(vec![reply], Some("disk gone"));
        drop(release);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(release_answers(released));
        let Ok(Err(TallyError::Internal { reason })) = answered.try_recv() else {
            panic!("expected a refusal")
        };
        assert!(reason.contains("disk gone"), "{reason}");
    }

    #[test]
    fn with_the_task_gone_answers_are_released_inline() {
        let (task, released) = mpsc::unbounded_channel();
        drop(released);
        let (reply, mut answered) = pending();
        Release(task).answer(vec![reply], None);
        assert!(matches!(answered.try_recv(), Ok(Ok(Response::Check(_)))));
    }

    #[test]
    fn the_queue_is_full_at_its_limit_and_sending_never_waits() {
        let (queue, bursts) = CommitQueue::with_limit(2);
        assert!(queue.send(Burst::default()).is_ok());
        assert!(!queue.is_full());
        assert!(queue.send(Burst::default()).is_ok());
        assert!(queue.is_full());
        // Past the limit too: bursts of writes already applied must still reach the disk.
        assert!(queue.send(Burst::default()).is_ok());
        assert!(bursts.try_recv().is_some() && bursts.try_recv().is_some());
        assert!(!queue.is_full(), "one left");
        drop(bursts);
        assert!(
            queue.send(Burst::default()).is_err(),
            "the committer is gone"
        );
        assert!(!queue.is_full(), "a refused burst does not count");
    }
}
