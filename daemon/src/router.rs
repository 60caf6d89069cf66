//! Routing: which shard owns a request, and the bounded hand-off to it. A customer's shard is a
//! stable hash of its id; a hold's shard is in the high half of its id. A full mailbox answers
//! `Overloaded` at once instead of queueing without bound. Batches are split per shard, sent as
//! one message per shard, and reassembled in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use tally_protocol::message::{
    BatchItemResult, EventList, ListEventsRequest, ReportItem, Request, Response, ShardStats,
    TallyError, UsageEventView,
};
use tokio::sync::oneshot;

use crate::activity::ActivityReport;
use crate::clock::Clock;
use crate::committer::{CommitQueue, StoreHealth};
use crate::metering::billing::{Invoice, Transaction};
use crate::metering::engine::ShardCore;
use crate::shard::{
    ApplyBatch, ApplyRequest, Checkpoint, CloseDuePeriods, CollectStats, Collector, HandOver,
    SetCatalogue, Shard, ShardReport,
};
use crate::stable_hash::{shard_of, stable_hash};
use crate::store::{Store, StoreError};

/// Most invoices one `list_invoices` answer carries (the newest).
pub const LIST_INVOICES_MAX: usize = 500;
/// Most transactions one `list_transactions` answer carries (the newest).
pub const LIST_TRANSACTIONS_MAX: usize = 5_000;

/// Handles to every shard, and the store for reads that need no shard. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    shards: Arc<[ShardHandle]>,
    store: Arc<Store>,
}

/// A shard's address and its mailbox depth counter.
struct ShardHandle {
    address: Addr<Shard>,
    depth: Arc<AtomicU64>,
}

impl ShardHandle {
    /// Hands a message to the shard without waiting: a full mailbox is an error at once.
    fn try_send<M>(&self, message: M) -> Result<(), SendError<M>>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Shard: Handler<M>,
    {
        // Counted before sending, so the shard's decrement can never run first.
        self.depth.fetch_add(1, Ordering::Relaxed);
        self.address.try_send(message).inspect_err(|_| {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        })
    }
}

/// The running shards: their router and the arbiters (threads) to stop at shutdown.
pub struct Shards {
    /// Routes requests to the shards.
    pub router: Router,
    arbiters: Vec<Arbiter>,
}

impl Shards {
    /// Starts one shard per core in `cores`: each on its own arbiter (thread), or, with
    /// `on_this_thread`, all on the calling one (the server's). Must run inside an actix `System`.
    /// Shard `i` must own exactly the customers that `shard_of(hash, cores.len())` places on `i`.
    pub fn start(
        cores: Vec<ShardCore>,
        mailbox_capacity: usize,
        on_this_thread: bool,
        clock: Arc<dyn Clock>,
        store: Arc<Store>,
        commits: CommitQueue,
        health: StoreHealth,
    ) -> Shards {
        assert!(!cores.is_empty(), "at least one shard");
        let mut arbiters = Vec::with_capacity(cores.len());
        let mut handles = Vec::with_capacity(cores.len());
        // Shards on one thread share its collector, so they reach the committer together.
        let this_thread = Collector::new(commits.clone());
        for core in cores {
            let (home, collector) = if on_this_thread {
                (Arbiter::current(), this_thread.clone())
            } else {
                let arbiter = Arbiter::new();
                let handle = arbiter.handle();
                arbiters.push(arbiter);
                (handle, Collector::new(commits.clone()))
            };
            let (clock, health) = (clock.clone(), health.clone());
            let depth = Arc::new(AtomicU64::new(0));
            let shard_depth = depth.clone();
            let address = Shard::start_in_arbiter(&home, move |ctx| {
                ctx.set_mailbox_capacity(mailbox_capacity);
                Shard::new(core, clock, collector, health, shard_depth)
            });
            handles.push(ShardHandle { address, depth });
        }
        Shards {
            router: Router {
                shards: handles.into(),
                store,
            },
            arbiters,
        }
    }

    /// Hands every shard's pending burst to the committer, then stops every shard thread and
    /// waits for it.
    pub async fn stop_after_hand_over(self) {
        for shard in self.router.shards.iter() {
            let _ = shard.address.send(HandOver { now: true }).await;
        }
        self.stop();
    }

    /// Stops every shard thread and waits for it.
    pub fn stop(self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        for arbiter in self.arbiters {
            let _ = arbiter.join();
        }
    }
}

impl Router {
    fn shard_for_customer(&self, customer: &str) -> usize {
        shard_of(stable_hash(customer.as_bytes()), self.shards.len())
    }

    /// Sends a request to the shard that owns it and waits for the answer.
    pub async fn route(&self, request: Request) -> Result<Response, TallyError> {
        let shard = match &request {
            Request::Report(item) => self.shard_for_customer(&item.customer),
            Request::Check(c) => self.shard_for_customer(&c.customer),
            Request::Reserve(r) => self.shard_for_customer(&r.customer),
            Request::CreateCustomer(cp) | Request::ChangePlan(cp) => {
                self.shard_for_customer(&cp.customer)
            }
            Request::TopUp(t) => self.shard_for_customer(&t.customer),
            Request::GetCustomer(c) => self.shard_for_customer(&c.customer),
            Request::Settle(s) => shard_of(s.hold, self.shards.len()),
            Request::Release(r) => shard_of(r.hold, self.shards.len()),
            Request::Progress(p) => shard_of(p.hold, self.shards.len()),
            Request::ReportBatch(_) => {
                let Request::ReportBatch(items) = request else {
                    unreachable!()
                };
                return Ok(Response::ReportBatch(self.route_batch(items).await));
            }
            Request::ListEvents(_) => {
                let Request::ListEvents(list) = request else {
                    unreachable!()
                };
                return self.list_events(list).await;
            }
            Request::ListInvoices(c) => {
                // A close the sweep made may still be on its way to disk: wait for it.
                self.persisted(&c.customer).await?;
                let customer = c.customer.clone();
                let invoices = self
                    .read_store(move |store| store.list_invoices(&customer, LIST_INVOICES_MAX))
                    .await?;
                return Ok(Response::Invoices(
                    invoices.iter().map(Invoice::view).collect(),
                ));
            }
            Request::ListTransactions(c) => {
                self.persisted(&c.customer).await?;
                let customer = c.customer.clone();
                let transactions = self
                    .read_store(move |store| {
                        store.list_transactions(&customer, LIST_TRANSACTIONS_MAX)
                    })
                    .await?;
                return Ok(Response::Transactions(
                    transactions.iter().map(Transaction::view).collect(),
                ));
            }
            Request::ClosePeriod(c) => self.shard_for_customer(&c.customer),
            other => {
                return Err(TallyError::Unsupported {
                    operation: other.operation_name().into(),
                })
            }
        };
        let (reply, answer) = oneshot::channel();
        self.shards[shard]
            .try_send(ApplyRequest { request, reply })
            .map_err(send_error)?;
        answer.await.map_err(|_| shard_gone())?
    }

    /// Reads the store on the blocking pool. Events, invoices and transactions are immutable
    /// once written, so no shard needs to be involved, and a large read never stalls this thread.
    async fn read_store<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, TallyError> {
        let store = self.store.clone();
        let failed = |reason: String| TallyError::Internal {
            reason: format!("reading the store: {reason}"),
        };
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))
    }

    /// Returns once everything the customer's shard has applied so far is persisted and
    /// checkpointed (the shard asks the committer for a checkpoint behind all it handed over).
    async fn persisted(&self, customer: &str) -> Result<(), TallyError> {
        let (reply, checkpointed) = oneshot::channel();
        self.shards[self.shard_for_customer(customer)]
            .try_send(Checkpoint { reply })
            .map_err(send_error)?;
        checkpointed.await.map_err(|_| shard_gone())?
    }

    async fn list_events(&self, list: ListEventsRequest) -> Result<Response, TallyError> {
        // Events reach their segments at a checkpoint, so every acknowledged event is listed.
        self.persisted(&list.customer).await?;
        let (events, more) = self
            .read_store(move |store| {
                store.list_events(&list.customer, (list.from_ms, list.from_seq), list.to_ms)
            })
            .await?;
        let events = events.into_iter().map(UsageEventView::from).collect();
        Ok(Response::Events(EventList { events, more }))
    }

    async fn route_batch(&self, items: Vec<ReportItem>) -> Vec<BatchItemResult> {
        let total = items.len();
        let mut per_shard: Vec<Vec<(usize, ReportItem)>> = vec![Vec::new(); self.shards.len()];
        for (position, item) in items.into_iter().enumerate() {
            per_shard[self.shard_for_customer(&item.customer)].push((position, item));
        }
        let mut results: Vec<Option<BatchItemResult>> = vec![None; total];
        let mut waiting = Vec::new();
        for (shard, items) in per_shard.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let positions: Vec<usize> = items.iter().map(|(p, _)| *p).collect();
            let (reply, answer) = oneshot::channel();
            match self.shards[shard].try_send(ApplyBatch { items, reply }) {
                Ok(()) => waiting.push((positions, answer)),
                Err(e) => {
                    let error = send_error(e);
                    for p in positions {
                        results[p] = Some(BatchItemResult::Err(error.clone()));
                    }
                }
            }
        }
        for (positions, answer) in waiting {
            match answer.await {
                Ok(answered) => {
                    for (p, result) in answered {
                        results[p] = Some(result);
                    }
                }
                Err(_) => {
                    for p in positions {
                        results[p] = Some(BatchItemResult::Err(shard_gone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every position is answered by its shard or marked failed"))
            .collect()
    }

    /// Has every shard close its customers' ended periods now rather than at its next sweep;
    /// returns how many the first step of each closed (at most `CLOSES_PER_STEP_MAX` a shard; more
    /// follow in further steps, and a shard with a full mailbox is left to its sweep).
    pub async fn close_due_periods(&self) -> usize {
        let mut waiting = Vec::with_capacity(self.shards.len());
        for shard in self.shards.iter() {
            let (reply, closed) = oneshot::channel();
            if shard
                .try_send(CloseDuePeriods { reply: Some(reply) })
                .is_ok()
            {
                waiting.push(closed);
            }
        }
        let mut closed = 0;
        for answer in waiting {
            closed += answer.await.unwrap_or(0);
        }
        closed
    }

    /// Hands every shard `catalogue` (new model prices); returns once each has it in force.
    /// Waits for room in a full mailbox rather than failing: a reload is rare and must reach
    /// every shard.
    pub async fn set_catalogue(
        &self,
        catalogue: Arc<crate::metering::catalogue::Catalogue>,
    ) -> Result<(), TallyError> {
        for shard in self.shards.iter() {
            shard.depth.fetch_add(1, Ordering::Relaxed);
            shard
                .address
                .send(SetCatalogue(catalogue.clone()))
                .await
                .map_err(|_| shard_gone())?;
        }
        Ok(())
    }

    /// Every shard's figures, in shard order, and the store's size. A shard whose mailbox is
    /// full is reported with its depth only: stats never queue behind real work.
    pub async fn collect_stats(&self) -> (Vec<(ShardStats, ActivityReport)>, u64) {
        let mut waiting = Vec::with_capacity(self.shards.len());
        for shard in self.shards.iter() {
            let (reply, answer) = oneshot::channel();
            let sent = shard.try_send(CollectStats { reply }).is_ok();
            waiting.push(sent.then_some(answer));
        }
        let mut reports = Vec::with_capacity(self.shards.len());
        for (index, answer) in waiting.into_iter().enumerate() {
            let report = match answer {
                Some(answer) => answer.await.unwrap_or_default(),
                None => ShardReport::default(),
            };
            let stats = ShardStats {
                shard: index as u32,
                customers: report.customers,
                mailbox_depth: self.shards[index].depth.load(Ordering::Relaxed),
                handled: report.handled,
            };
            reports.push((stats, report.activity));
        }
        let storage_bytes = self
            .read_store(|store| Ok(store.disk_bytes()))
            .await
            .unwrap_or(0);
        (reports, storage_bytes)
    }
}

fn send_error<M>(error: SendError<M>) -> TallyError {
    match error {
        SendError::Full(_) => TallyError::Overloaded,
        SendError::Closed(_) => shard_gone(),
    }
}

fn shard_gone() -> TallyError {
    TallyError::Internal {
        reason: "the shard stopped before answering; the request may not have been applied".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::committer::{release_answers, Committer, Release};
    use crate::config::{Config, Durability, DEFAULT_CONFIG_TOML};
    use tally_protocol::message::{CheckRequest, CustomerPlan};

    #[test]
    fn a_full_mailbox_answers_overloaded_at_once_and_queued_requests_still_complete() {
        let config = Config::parse(
            DEFAULT_CONFIG_TOML,
            std::path::Path::new("."),
            "config.toml",
        )
        .unwrap();
        let system = actix::System::new();
        system.block_on(async move {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::open(dir.path(), Default::default()).unwrap());
            let health = StoreHealth::default();
            // As in the daemon: answers are released on this (the requests') thread.
            let (releases, released) = tokio::sync::mpsc::unbounded_channel();
            actix_rt::spawn(release_answers(released));
            let committer = Committer::start(
                store.clone(),
                Durability::Buffered,
                health.clone(),
                Release(releases),
                Default::default(),
                crate::committer::QUEUED_BURSTS_MAX,
            );
            let core = ShardCore::new(config.catalogue, 60_000, Default::default());
            let clock = Arc::new(ManualClock::new(0));
            let shards = Shards::start(
                vec![core],
                2,
                false,
                clock,
                store,
                committer.sender(),
                health,
            );
            let router = shards.router.clone();
            let create = Request::CreateCustomer(CustomerPlan {
                customer: "acme".into(),
                plan: "pro".into(),
            });
            router.route(create).await.unwrap();

            // Park the shard's thread so its mailbox fills up.
            let (release, parked) = std::sync::mpsc::channel::<()>();
            assert!(shards.arbiters[0].spawn_fn(move || {
                let _ = parked.recv();
            }));
            let (done, mut answers) = tokio::sync::mpsc::unbounded_channel();
            for _ in 0..20 {
                let router = router.clone();
                let done = done.clone();
                actix_rt::spawn(async move {
                    let check = Request::Check(CheckRequest {
                        model: None,
                        customer: "acme".into(),
                        feature: "tokens".into(),
                        amount: 1,
                    });
                    let _ = done.send(router.route(check).await);
                });
            }
            drop(done);
            let mut overloaded = 0;
            while overloaded < 10 {
                match answers.recv().await.expect("answers arrive") {
                    Err(TallyError::Overloaded) => overloaded += 1,
                    other => panic!(
                        "only overloaded answers can arrive while the shard is parked: {other:?}"
                    ),
                }
            }
            release.send(()).unwrap();
            let mut answered = 0;
            while let Some(answer) = answers.recv().await {
                match answer {
                    Ok(_) => answered += 1,
                    Err(TallyError::Overloaded) => overloaded += 1,
                    Err(other) => panic!("{other:?}"),
                }
            }
            assert_eq!(answered + overloaded, 20);
            assert!(
                answered >= 1,
                "queued requests complete once the shard runs again"
            );
            assert!(overloaded >= 10);
            shards.stop();
            committer.stop();
        });
    }
}
