//! Overload and fairness: a saturated shard answers `Overloaded` at once while the other shard
//! keeps serving, no acknowledged report is lost and no refused one is applied; a connection
//! flooding the daemon does not starve another connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_daemon::stable_hash::{shard_of, stable_hash};
use tally_daemon::StartOptions;
use tally_protocol::message::*;
use tally_protocol::{Client, Error, RetryPolicy};
use tokio::task::JoinSet;

use crate::test_daemon::TestDaemon;

/// `n` customer ids that live on `shard` of `shards`.
fn customers_on(shard: usize, shards: usize, prefix: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|id| shard_of(stable_hash(id.as_bytes()), shards) == shard)
        .take(n)
        .collect()
}

/// Every acknowledged report is counted and no refused one is applied.
async fn counts_match(admin: &Client, acked: &HashMap<String, u64>, calm: &str) {
    for (customer, acked) in acked {
        let view = admin.admin().get_customer(customer).await.unwrap();
        assert_eq!(view.usage[0].used, *acked, "{customer}");
    }
    let view = admin.admin().get_customer(calm).await.unwrap();
    assert_eq!(view.usage[0].used, 200);
}

fn median(mut took: Vec<Duration>) -> Duration {
    took.sort();
    took[took.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_shard_answers_overloaded_and_loses_nothing_while_the_other_serves() {
    let daemon = TestDaemon::start_with(
        |c| {
            c.server.shards = 2;
            c.server.mailbox_capacity = 4;
        },
        StartOptions::default(),
    );
    let admin = daemon.client(Role::Admin).await;
    let hot = customers_on(0, 2, "hot", 8);
    let calm = customers_on(1, 2, "calm", 1).remove(0);
    for customer in hot.iter().chain([&calm]) {
        admin
            .admin()
            .create_customer(customer, "pro")
            .await
            .unwrap();
    }
    // Unkeyed reports are not idempotent, so even the default policy surfaces `Overloaded`;
    // `NONE` makes that explicit.
    let mut config = daemon.client_config(daemon.key(Role::Client));
    config.retry = RetryPolicy::NONE;
    let flooder = Client::connect(config).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = JoinSet::new();
    for task in 0..512usize {
        let (client, customer, stop) =
            (flooder.clone(), hot[task % hot.len()].clone(), stop.clone());
        flood.spawn(async move {
            let (mut acked, mut overloaded) = (0u64, 0u64);
            for _ in 0..1_000 {
                match client
                    .usage()
                    .report(ReportItem::new(&customer, "tokens", 1))
                    .await
                {
                    Ok(_) => acked += 1,
                    Err(Error::Rejected(TallyError::Overloaded)) => overloaded += 1,
                    Err(e) => panic!("unexpected error under overload: {e}"),
                }
                if stop.load(Ordering::Relaxed) && overloaded > 0 {
                    break;
                }
            }
            (customer, acked, overloaded)
        });
    }
    // Meanwhile the other shard's customer is served: checks and reports, every one answered.
    let calm_client = daemon.client(Role::Client).await;
    let mut calm_took = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        calm_client
            .usage()
            .report(ReportItem::new(&calm, "tokens", 1))
            .await
            .expect("the calm shard keeps serving");
        assert!(
            calm_client
                .entitlements()
                .check(&calm, "tokens", 1)
                .await
                .expect("the calm shard keeps serving")
                .allowed
        );
        calm_took.push(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut overloaded = 0;
    while let Some(result) = flood.join_next().await {
        let (customer, ok, refused) = result.unwrap();
        *acked.entry(customer).or_default() += ok;
        overloaded += refused;
    }
    assert!(overloaded > 0, "the flood never saturated the shard");
    // In memory, and after a restart from the store.
    counts_match(&admin, &acked, &calm).await;
    let mut daemon = daemon;
    daemon.restart();
    counts_match(&daemon.client(Role::Admin).await, &acked, &calm).await;
    println!(
        "overload: {} acked, {overloaded} refused on the hot shard; calm shard report+check median {:?}",
        acked.values().sum::<u64>(),
        median(calm_took)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_connection_does_not_starve_another() {
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    let customers: Vec<String> = (0..64).map(|i| format!("c{i}")).collect();
    for customer in customers.iter().chain([&"quiet".to_string()]) {
        admin
            .admin()
            .create_customer(customer, "pro")
            .await
            .unwrap();
    }
    let quiet = daemon.client(Role::Client).await;
    let mut before = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        quiet
            .entitlements()
            .check("quiet", "tokens", 1)
            .await
            .unwrap();
        before.push(started.elapsed());
    }

    let flooder = daemon.client(Role::Client).await;
    let inflight = flooder.welcome().inflight_max as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = JoinSet::new();
    for task in 0..inflight {
        let (client, stop) = (flooder.clone(), stop.clone());
        let customer = customers[task % customers.len()].clone();
        flood.spawn(async move {
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let report = ReportItem::new(&customer, "tokens", 1);
                client
                    .usage()
                    .report(report)
                    .await
                    .expect("the flood is served too");
                client
                    .entitlements()
                    .check(&customer, "tokens", 1)
                    .await
                    .unwrap();
                done += 2;
            }
            done
        });
    }
    // Let the flood reach full speed: wait until it has been answered a few thousand times.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = admin.monitor().stats().await.unwrap();
        let reports: u64 = stats
            .operations
            .iter()
            .filter(|op| op.operation == "report")
            .map(|op| op.count)
            .sum();
        if reports > 2_000 || Instant::now() > deadline {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut during = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let outcome = quiet.entitlements().check("quiet", "tokens", 1).await;
        during.push(started.elapsed());
        assert!(outcome.expect("the quiet connection is served").allowed);
    }
    stop.store(true, Ordering::Relaxed);
    let mut flooded = 0;
    while let Some(done) = flood.join_next().await {
        flooded += done.unwrap();
    }
    assert!(flooded > 0);
    println!(
        "fairness: quiet check median {:?} alone, {:?} beside a flood of {inflight} in flight ({flooded} flood requests)",
        median(before),
        median(during)
    );
}

/// A committer that cannot keep up (here: a disk that stopped answering) never stalls the thread
/// that serves requests: once its queue is full, writes are refused `Overloaded` before they are
/// applied, reads keep being answered from memory, nothing is acknowledged before it persists,
/// and everything acknowledged is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_committer_refuses_writes_and_keeps_answering_reads() {
    let faults = tally_daemon::store::StoreFaults::default();
    let mut daemon = TestDaemon::start_with(
        |_| {},
        StartOptions {
            store_faults: faults.clone(),
            commit_queue_bursts: Some(2),
            ..StartOptions::default()
        },
    );
    let admin = daemon.client(Role::Admin).await;
    admin.admin().create_customer("acme", "pro").await.unwrap();
    let reader = daemon.client(Role::Client).await;
    let median_before = median(checks(&reader, 50).await);
    let mut config = daemon.client_config(daemon.key(Role::Client));
    config.retry = RetryPolicy::NONE;
    let writer = Client::connect(config).await.unwrap();

    faults.stall_persists(true);
    // One write at a time, each in a burst of its own: the committer stalls in the first, the
    // next ones fill its queue, and then a write is refused.
    let mut waiting = JoinSet::new();
    let mut applied = 0;
    let refusal = loop {
        assert!(applied < 50, "no write refused behind a stalled committer");
        let writer = writer.clone();
        let mut write = tokio::spawn(async move {
            writer
                .usage()
                .report(ReportItem::new("acme", "tokens", 1))
                .await
        });
        let used = loop {
            let used = admin.admin().get_customer("acme").await.unwrap().usage[0].used;
            if used > applied || write.is_finished() {
                break used;
            }
            tokio::task::yield_now().await;
        };
        if used > applied {
            applied = used;
            waiting.spawn(async move { write.await.unwrap() });
        } else {
            break (&mut write).await.unwrap();
        }
    };
    assert!(
        matches!(refusal, Err(Error::Rejected(TallyError::Overloaded))),
        "{refusal:?}"
    );
    assert!(
        applied >= 2,
        "the queue filled before any write was refused"
    );
    let median_stalled = median(checks(&reader, 50).await);
    let more = writer
        .usage()
        .report(ReportItem::new("acme", "tokens", 1))
        .await;
    assert!(matches!(more, Err(Error::Rejected(TallyError::Overloaded))));
    println!(
        "checks beside a stalled committer with a full queue: median {median_stalled:?} (before the stall: {median_before:?}); {applied} writes applied and waiting"
    );
    assert_eq!(
        admin.admin().get_customer("acme").await.unwrap().usage[0].used,
        applied,
        "a refused write is not applied"
    );
    assert!(
        waiting.try_join_next().is_none(),
        "nothing is acknowledged before it persists"
    );

    faults.stall_persists(false);
    let mut acknowledged = 0;
    while let Some(answer) = waiting.join_next().await {
        answer
            .unwrap()
            .expect("an applied write is acknowledged once persisted");
        acknowledged += 1;
    }
    assert_eq!(acknowledged, applied);
    drop((admin, reader, writer));
    daemon.restart();
    let admin = daemon.client(Role::Admin).await;
    let view = admin.admin().get_customer("acme").await.unwrap();
    assert_eq!(
        view.usage[0].used, acknowledged,
        "every acknowledged write after a restart"
    );
}

/// `n` checks of `acme` one after another, each answered; their round trips.
async fn checks(client: &Client, n: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let check = client.entitlements().check("acme", "tokens", 1).await;
        took.push(started.elapsed());
        assert!(check.expect("a read beside a stalled committer").allowed);
    }
    took
}
