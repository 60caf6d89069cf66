//! How long closing N due periods takes: a daemon in this process with a manual clock, N
//! customers on `pro` (each with some usage), then the clock jumps one month and the shards'
//! sweeps close every period (invoice written, counters reset, persisted in `sync` mode). Timed
//! from the jump until the last customer in closing order has its invoice stored.
//!
//! Expectation: the core's close is a few µs per customer; the cost is encoding and persisting a
//! customer row and an invoice each (~300 B), in group commits of thousands — so roughly
//! 100k closes/s on this machine, and the sweep's first tick (≤ 1 s) on top.
//!
//! Run: `cargo run --release --example close_periods -- 100000`

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally::local::{arg_or, LocalDaemon};
use tally_daemon::stable_hash::{shard_of, stable_hash};
use tally_daemon::ManualClock;
use tally_protocol::message::ReportItem;
use tally_protocol::Client;

const T0_MS: u64 = 1_800_000_000_000;
const CREATORS: usize = 16;

fn main() -> anyhow::Result<()> {
    let customers: usize = arg_or(1, 100_000)?;
    let clock = ManualClock::new(T0_MS);
    let LocalDaemon {
        daemon,
        admin: client_config,
        runtime,
        dir: _dir,
        config,
    } = LocalDaemon::start(Arc::new(clock.clone()), |_| {})?;
    let shards = config.server.shards;
    runtime.block_on(async {
        let client = Client::connect(client_config).await?;
        let mut creators = Vec::new();
        for creator in 0..CREATORS {
            let client = client.clone();
            creators.push(tokio::spawn(async move {
                for c in (creator..customers).step_by(CREATORS) {
                    let id = format!("c{c:07}");
                    client.admin().create_customer(&id, "pro").await?;
                    client
                        .usage()
                        .report(ReportItem::new(id, "tokens", 100_000 + c as u64))
                        .await?;
                }
                anyhow::Ok(())
            }));
        }
        for creator in creators {
            creator.await??;
        }
        println!("created {customers} customers with usage");

        // Each shard closes in (period end, id) order: wait for the last id of every shard.
        let mut last_per_shard = vec![String::new(); shards];
        for c in 0..customers {
            let id = format!("c{c:07}");
            let shard = shard_of(stable_hash(id.as_bytes()), shards);
            last_per_shard[shard] = id;
        }
        let jumped = Instant::now();
        clock.advance_ms(31 * 24 * 60 * 60 * 1000);
        for last in last_per_shard.iter().filter(|id| !id.is_empty()) {
            while client.admin().list_invoices(last).await?.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let elapsed = jumped.elapsed();
        println!(
            "closed {customers} due periods in {} ms ({:.0} closes/s), sweep tick latency included",
            elapsed.as_millis(),
            customers as f64 / elapsed.as_secs_f64()
        );
        let sample = client.admin().list_invoices("c0000000").await?;
        client.close().await;
        println!(
            "sample invoice: total {} units, fee {} units",
            sample[0].total_units, sample[0].fee_units
        );
        anyhow::Ok(())
    })?;
    daemon.shutdown().expect("a clean shutdown");
    Ok(())
}
