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
