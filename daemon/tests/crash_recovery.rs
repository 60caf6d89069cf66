//! kill -9 recovery: runs the real `tallyd` binary as a child process, drives concurrent keyed
//! reports from several tasks, SIGKILLs the daemon at a random moment, restarts it on the same
//! data dir, retries every unacknowledged report with its original key, and checks that each
//! customer's usage is exactly the sum of the distinct reports — no loss, no double count — and
//! that its listed events (replayed from the commit log) are each there once and add up to it.
//! Several kill points per run, in `sync` and `buffered` modes. The seed is printed; set
//! `TALLY_CRASH_SEED` to replay a run.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_protocol::message::ReportItem;
use tally_protocol::Client;

use support::{folder_with_config, runtime, Tallyd};

const CUSTOMERS: usize = 8;
const TASKS: usize = 6;
const KILL_POINTS: usize = 3;

/// The test's generator, seeded from the printed seed so a failing run can be replayed.
type Rng = fastrand::Rng;

/// One report and whether the daemon acknowledged it.
#[derive(Clone)]
struct Sent {
    item: ReportItem,
    is_acknowledged: bool,
}

/// Starts the reporting tasks; they stop at the first failed call (the daemon died) or when
/// `stop` is set.
fn drive_until_killed(
    client: &Client,
    sent: &Arc<Mutex<Vec<Sent>>>,
    stop: &Arc<AtomicBool>,
    seed: u64,
    round: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (client, sent, stop) = (client.clone(), sent.clone(), stop.clone());
        let mut rng = Rng::with_seed(
            seed ^ ((round * TASKS + task) as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&(round as u64 * 1_000 + task as u64).to_be_bytes());
                key[8..].copy_from_slice(&n.to_be_bytes());
                let customer = format!("c{}", rng.u64(..CUSTOMERS as u64));
                let item = ReportItem::new(customer, "tokens", 1 + rng.u64(..1_000))
                    .with_idempotency_key(key);
                let position = {
                    let mut sent = sent.lock().unwrap();
                    sent.push(Sent {
                        item: item.clone(),
                        is_acknowledged: false,
                    });
                    sent.len() - 1
                };
                match client.usage().report(item).await {
                    Ok(_) => sent.lock().unwrap()[position].is_acknowledged = true,
                    Err(_) => break,
                }
            }
        }));
    }
    tasks
}

/// The seed from `TALLY_CRASH_SEED`, or a fresh one; printed so a failure can be replayed.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("TALLY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("{test}: TALLY_CRASH_SEED={seed}");
    seed
}

/// Creates customers `{prefix}0` … on `plan`.
fn create_customers(runtime: &tokio::runtime::Runtime, daemon: &Tallyd, prefix: &str, plan: &str) {
    runtime.block_on(async {
        let client = daemon.client().await;
        for c in 0..CUSTOMERS {
            let id = format!("{prefix}{c}");
            client.admin().create_customer(&id, plan).await.unwrap();
        }
    });
}

fn run_crash_rounds(durability: &str) {
    let seed = seed(&format!("crash test ({durability})"));
    let dir = folder_with_config(durability, "");

    let runtime = runtime();
    let mut rng = Rng::with_seed(seed);
    let sent = Arc::new(Mutex::new(Vec::<Sent>::new()));
    let mut daemon = Tallyd::start(dir.path());
    create_customers(&runtime, &daemon, "c", "pro");
    for round in 0..KILL_POINTS {
        let stop = Arc::new(AtomicBool::new(false));
        let kill_after = Duration::from_millis(50 + rng.u64(..400));
        let tasks = runtime.block_on(async {
            let client = daemon.client().await;
            let tasks = drive_until_killed(&client, &sent, &stop, seed, round);
            // The random kill point: how long the load runs before SIGKILL.
            tokio::time::sleep(kill_after).await;
            tasks
        });
        daemon.kill();
        stop.store(true, Ordering::SeqCst);
        runtime.block_on(async {
            // Each task ends once its in-flight call fails (connection lost or timed out).
            for task in tasks {
                task.await.unwrap();
            }
        });
        daemon = Tallyd::start(dir.path());
        runtime.block_on(async {
            let client = daemon.client().await;
            let unacknowledged: Vec<usize> = {
                let sent = sent.lock().unwrap();
                (0..sent.len())
                    .filter(|&i| !sent[i].is_acknowledged)
                    .collect()
            };
            for position in unacknowledged {
                let item = sent.lock().unwrap()[position].item.clone();
                client
                    .usage()
                    .report(item)
                    .await
                    .expect("a retry after restart succeeds");
                sent.lock().unwrap()[position].is_acknowledged = true;
            }
            let mut expected: HashMap<String, u64> = HashMap::new();
            for s in sent.lock().unwrap().iter() {
                *expected.entry(s.item.customer.clone()).or_default() += s.item.amount;
            }
            for c in 0..CUSTOMERS {
                let id = format!("c{c}");
                let view = client.admin().get_customer(&id).await.unwrap();
                let used = view
                    .usage
                    .iter()
                    .find(|u| u.feature == "tokens")
                    .unwrap()
                    .used;
                assert_eq!(
                    used,
                    expected.get(&id).copied().unwrap_or(0),
                    "customer {id} after kill point {round} (seed {seed})"
                );
                // The events (replayed from the commit log into segments after each kill) are
                // each listed once and add up to the counter.
                let (mut from, mut seqs, mut listed) = ((0, 0), Vec::new(), 0);
                loop {
                    let page = client
                        .admin()
                        .list_events_from(&id, from, u64::MAX)
                        .await
                        .unwrap();
                    for event in &page.events {
                        seqs.push(event.seq);
                        listed += event.amount;
                    }
                    match (page.more, page.events.last()) {
                        (true, Some(last)) => from = (last.at_ms, last.seq + 1),
                        _ => break,
                    }
                }
                let distinct = seqs.len();
                seqs.dedup();
                assert_eq!(seqs.len(), distinct, "customer {id}: an event listed twice (seed {seed})");
                assert_eq!(listed, used, "customer {id}: events against the counter after kill point {round} (seed {seed})");
            }
        });
    }
    let total = sent.lock().unwrap().len();
    assert!(
        total > KILL_POINTS * TASKS,
        "too few reports ({total}) for the test to mean anything"
    );
    eprintln!("crash test ({durability}): {total} distinct reports across {KILL_POINTS} kill points, all counted exactly once");
    daemon.kill();
}

#[test]
fn sync_mode_loses_and_doubles_nothing_across_kill_9() {
    run_crash_rounds("sync");
}

#[test]
fn buffered_mode_loses_and_doubles_nothing_across_kill_9() {
    run_crash_rounds("buffered");
}

/// Periods of one second close continuously (by the sweep and on touch) while reports flow;
/// SIGKILL lands in the middle of closes. After each restart every customer's invoices must be
/// numbered 1..n without gaps or repeats, each period must start where the previous ended, and
/// each invoice's usage must equal its period's stored events: every period closed exactly once.
#[test]
fn period_closes_interrupted_by_kill_9_happen_exactly_once() {
    let seed = seed("period close crash test");
    let dir = folder_with_config(
        "sync",
        "\n[plans.tick]\nmodel = \"metered\"\nperiod = \"1 second\"\nbase_price = \"1.00\"\n\
         features.tokens = { included = 10, overage = \"0.01\" }\n",
    );
    let runtime = runtime();
    let mut rng = Rng::with_seed(seed);
    let mut daemon = Tallyd::start(dir.path());
    create_customers(&runtime, &daemon, "t", "tick");
    let mut invoices_seen = 0;
    for round in 0..2 {
        let kill_after = Duration::from_millis(1_200 + rng.u64(..1_500));
        runtime.block_on(async {
            let client = daemon.client().await;
            let started = Instant::now();
            let mut n = 0u64;
            while started.elapsed() < kill_after {
                n += 1;
                let item =
                    ReportItem::new(format!("t{}", n % CUSTOMERS as u64), "tokens", 1 + n % 7);
                client.usage().report(item).await.unwrap();
            }
        });
        daemon.kill();
        daemon = Tallyd::start(dir.path());
        invoices_seen = runtime.block_on(async {
            let client = daemon.client().await;
            let mut total = 0;
            for c in 0..CUSTOMERS {
                let id = format!("t{c}");
                let view = client.admin().get_customer(&id).await.unwrap();
                let invoices = client.admin().list_invoices(&id).await.unwrap();
                for (i, invoice) in invoices.iter().enumerate() {
                    assert_eq!(
                        invoice.number,
                        i as u64 + 1,
                        "{id}: numbered without gaps or repeats (round {round}, seed {seed})"
                    );
                    if i > 0 {
                        assert_eq!(
                            invoice.period_start_ms,
                            invoices[i - 1].period_end_ms,
                            "{id}: contiguous periods"
                        );
                    }
                    let events = client
                        .admin()
                        .list_events(&id, invoice.period_start_ms, invoice.period_end_ms)
                        .await
                        .unwrap();
                    let from_events: u64 = events.events.iter().map(|e| e.amount).sum();
                    let invoiced: u64 = invoice
                        .lines
                        .iter()
                        .filter(|l| l.feature == "tokens")
                        .map(|l| l.used)
                        .sum();
                    assert_eq!(
                        invoiced, from_events,
                        "{id} invoice {}: usage reconciles",
                        invoice.number
                    );
                }
                assert!(
                    invoices
                        .iter()
                        .any(|i| i.period_end_ms == view.period_start_ms),
                    "{id}: the current period starts where an invoice ended"
                );
                total += invoices.len();
            }
            total
        });
        // At least (round + 1) × 1.2 s have passed since the customers were created, and reading
        // a customer closes every period that ended, so each has at least round + 1 invoices.
        assert!(
            invoices_seen >= CUSTOMERS * (round + 1),
            "periods must have closed for the test to mean anything"
        );
    }
    eprintln!("period close crash test: {invoices_seen} invoices, each period closed exactly once");
    daemon.kill();
}
