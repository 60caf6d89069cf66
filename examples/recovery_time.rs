//! Recovery time: writes E usage events across C customers (in `report_batch`es of 1,000, in
//! `buffered` mode to load quickly), then stops the daemon — cleanly, or by aborting the process
//! like a crash (`crash`: the loading runs in a child process that calls `abort()`) — and times a
//! restart on the same data dir until it accepts connections. Recovery reads one row per customer
//! plus live idempotency keys; events are not replayed. After a crash fjall also replays its
//! journal, bounded by `JOURNAL_BYTES_MAX`.
//!
//! Run: `cargo run --release --example recovery_time -- 1000000 100000 [clean|crash]`

use std::sync::Arc;
use std::time::Instant;

use tally::driver::{customer, seed_customers};
use tally_daemon::config::{Config, Durability};
use tally_daemon::{Daemon, SystemClock};
use tally_protocol::message::{BatchItemResult, ReportItem, Role};
use tally_protocol::Client;

/// The same allocator as `tallyd`: recovery allocates a customer's state per row.
#[global_allocator]
static ALLOCATOR: tally_daemon::platform::allocator::TallyAllocator =
    tally_daemon::platform::allocator::TallyAllocator;

const BATCH: usize = 1_000;

fn main() -> anyhow::Result<()> {
    tally_daemon::platform::memory::configure_for_mimalloc()?;
    tracing_subscriber::fmt()
        .with_env_filter("tally_daemon=info")
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let events = args.next().transpose()?.unwrap_or(1_000_000);
    let customers = args.next().transpose()?.unwrap_or(100_000);
    let is_crash = std::env::args().nth(3).as_deref() == Some("crash");
    if let Ok(dir) = std::env::var("TALLY_RECOVERY_CHILD_DIR") {
        load(std::path::Path::new(&dir), events, customers)?;
        // Die like a crash: no shutdown, no flush; only what reached the OS survives.
        std::process::abort();
    }
    let dir = tempfile::tempdir()?;
    let config = config_in(dir.path())?;
    if is_crash {
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(std::env::args().skip(1))
            .env("TALLY_RECOVERY_CHILD_DIR", dir.path())
            .status()?;
        println!("loader exited with {status} (aborted on purpose)");
    } else {
        load(dir.path(), events, customers)?;
    }
    let restarting = Instant::now();
    let daemon = Daemon::start(config, Arc::new(SystemClock))?;
    let how = if is_crash {
        "after a crash"
    } else {
        "after a clean shutdown"
    };
    println!(
        "restart to ready {how} (recovery included): {} ms for {customers} customers, {events} events",
        restarting.elapsed().as_millis()
    );
    daemon.shutdown().expect("a clean shutdown");
    Ok(())
}

fn config_in(dir: &std::path::Path) -> anyhow::Result<Config> {
    let mut config = Config::loopback_in(dir);
    config.storage.durability = Durability::Buffered;
    Ok(config)
}

/// Creates the customers and reports the events; returns with the daemon still running.
fn load(dir: &std::path::Path, events: usize, customers: usize) -> anyhow::Result<()> {
    let config = config_in(dir)?;
    let daemon = Daemon::start(config.clone(), Arc::new(SystemClock))?;
    let client_config = daemon
        .dev_client_config(Role::Admin)
        .expect("development keys");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let loading = Instant::now();
    runtime.block_on(async {
        let client = Client::connect(client_config).await?;
        seed_customers(&client, customers, "pro").await?;
        let mut in_flight = Vec::new();
        for start in (0..events).step_by(BATCH) {
            let items = (start..(start + BATCH).min(events))
                .map(|n| ReportItem::new(customer(n % customers), "tokens", 1))
                .collect();
            let client = client.clone();
            in_flight.push(tokio::spawn(async move {
                client.usage().report_batch(items).await
            }));
            if in_flight.len() == 8 {
                check(in_flight.remove(0).await??)?;
            }
        }
        for handle in in_flight {
            check(handle.await??)?;
        }
        client.close().await;
        anyhow::Ok(())
    })?;
    println!(
        "loaded {events} events across {customers} customers in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    if std::env::var("TALLY_RECOVERY_CHILD_DIR").is_err() {
        daemon.shutdown().expect("a clean shutdown");
    } else {
        std::mem::forget(daemon);
    }
    Ok(())
}

fn check(results: Vec<BatchItemResult>) -> anyhow::Result<()> {
    match results
        .into_iter()
        .find(|r| matches!(r, BatchItemResult::Err(_)))
    {
        Some(BatchItemResult::Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}
