//! Durable-report throughput and latency in each durability mode, from one run of the same load:
//! for each mode, a fresh daemon in this process (temp data dir, real QUIC/TLS/fjall), C customers
//! on `pro`, T tasks each keeping one `report` in flight over one connection, for S seconds.
//! Prints reports/s and p50/p99 per mode.
//!
//! Expectation (docs/performance.md, Floors): `sync` is bounded by group commit — one fdatasync (~0.2 ms)
//! covers everything queued meanwhile, so throughput grows with in-flight requests; `buffered`
//! and `periodic` skip the fsync and are bounded by the QUIC path and the thread hops.
//!
//! Run: `cargo run --release --example durability_load -- 10 256 1000`  (seconds, tasks, customers)

use std::sync::Arc;
use std::time::{Duration, Instant};

use tally::local::LocalDaemon;
use tally_daemon::config::Durability;
use tally_daemon::SystemClock;
use tally_protocol::message::ReportItem;
use tally_protocol::Client;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let seconds = args.next().transpose()?.unwrap_or(10);
    let tasks = args.next().transpose()?.unwrap_or(256) as usize;
    let customers = args.next().transpose()?.unwrap_or(1_000) as usize;
    for (name, durability) in [
        ("sync", Durability::Sync),
        ("buffered", Durability::Buffered),
        ("periodic", Durability::Periodic { interval_ms: 100 }),
    ] {
        let (reports, mut samples_us) = run(durability, seconds, tasks, customers)?;
        samples_us.sort_by(f64::total_cmp);
        let at = |q: f64| samples_us[((samples_us.len() - 1) as f64 * q) as usize];
        println!(
            "{name:>8}: {:>9.0} reports/s  p50 {:>6.0} µs  p99 {:>7.0} µs  ({reports} reports, {tasks} in flight, {customers} customers, {seconds} s)",
            reports as f64 / seconds as f64,
            at(0.5),
            at(0.99)
        );
    }
    Ok(())
}

fn run(
    durability: Durability,
    seconds: u64,
    tasks: usize,
    customers: usize,
) -> anyhow::Result<(usize, Vec<f64>)> {
    let LocalDaemon {
        daemon,
        admin: client_config,
        runtime,
        dir: _dir,
        ..
    } = LocalDaemon::start(Arc::new(SystemClock), |config| {
        config.storage.durability = durability;
    })?;
    let result = runtime.block_on(async move {
        let client = Client::connect(client_config).await?;
        for c in 0..customers {
            client
                .admin()
                .create_customer(&format!("c{c}"), "pro")
                .await?;
        }
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut handles = Vec::new();
        for task in 0..tasks {
            let client = client.clone();
            handles.push(tokio::spawn(async move {
                let mut samples_us = Vec::new();
                let mut n = task;
                while Instant::now() < deadline {
                    let item = ReportItem::new(format!("c{}", n % customers), "tokens", 1);
                    n += tasks;
                    let started = Instant::now();
                    client.usage().report(item).await?;
                    samples_us.push(started.elapsed().as_secs_f64() * 1e6);
                }
                anyhow::Ok(samples_us)
            }));
        }
        let mut samples_us = Vec::new();
        for handle in handles {
            samples_us.extend(handle.await??);
        }
        client.close().await;
        anyhow::Ok((samples_us.len(), samples_us))
    });
    daemon.shutdown().expect("a clean shutdown");
    result
}
