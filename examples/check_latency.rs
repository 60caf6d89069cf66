//! Single-connection round trip of `check`, one request in flight: starts a daemon in this process
//! on loopback (temp data dir, real QUIC + TLS, real shards), warms up, then times N sequential
//! checks and prints the median and tail. The full load harness (`tally-bench`) is separate work.
//!
//! Expectation (docs/performance.md, Floors): quinn's own 1-in-flight round trip is ~58 µs p50 here, and each
//! cross-thread hop at idle costs ~20–25 µs; a check crosses server → shard → server, so ~100 µs.
//!
//! Run: `cargo run --release --example check_latency -- 20000`

use std::sync::Arc;
use std::time::Instant;

use tally::local::{arg_or, LocalDaemon};
use tally_daemon::SystemClock;
use tally_protocol::message::ReportItem;
use tally_protocol::Client;

fn main() -> anyhow::Result<()> {
    let count: usize = arg_or(1, 20_000)?;
    let LocalDaemon {
        daemon,
        admin: client_config,
        runtime,
        dir: _dir,
        ..
    } = LocalDaemon::start(Arc::new(SystemClock), |_| {})?;
    let mut samples_us = runtime.block_on(async {
        let client = Client::connect(client_config).await?;
        client.admin().create_customer("bench", "pro").await?;
        client
            .usage()
            .report(ReportItem::new("bench", "tokens", 10))
            .await?;
        for _ in 0..count / 10 {
            client.entitlements().check("bench", "tokens", 1).await?;
        }
        let mut samples_us = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            let outcome = client.entitlements().check("bench", "tokens", 1).await?;
            samples_us.push(started.elapsed().as_secs_f64() * 1e6);
            assert!(outcome.allowed);
        }
        client.close().await;
        anyhow::Ok(samples_us)
    })?;
    samples_us.sort_by(f64::total_cmp);
    let at = |q: f64| samples_us[((samples_us.len() - 1) as f64 * q) as usize];
    println!(
        "check round trip, 1 connection, 1 in flight, {count} requests: p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0)
    );
    daemon.shutdown().expect("a clean shutdown");
    Ok(())
}
