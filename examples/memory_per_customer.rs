//! Resident memory per customer: starts a daemon in this process, measures its resident set,
//! creates N customers on the `wallet` plan (three usage features) and reports once on each
//! feature of each (so every counter exists), then measures again. The difference over N is the
//! cost of a customer, fjall's memtables and caches included (they are bounded, so they weigh
//! less per customer as N grows). The client's own buffers are in the figure too (small). Each
//! line also gives the bytes live in the allocator per customer (counted by a wrapper around
//! `tallyd`'s allocator): the rest of the resident figure is what the allocator holds beyond them.
//! It measures just loaded (checkpoints and flushes of the load still under way), then again
//! after each idle time given (default 5 s: past the quiet threads' memtable flush and page
//! collects, 1 s after their last work; and 65 s, which once included the janitor's first pass
//! over every segment key — now made only when a segment can have expired, at least hourly).
//!
//! Run: `cargo run --release --example memory_per_customer -- 1000000 [idle_secs...]`

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tally::driver::{customer, seed_customers};
use tally::local::LocalDaemon;
use tally_daemon::config::Durability;
use tally_daemon::platform::allocator::TallyAllocator;
use tally_daemon::SystemClock;
use tally_protocol::message::{BatchItemResult, ReportItem};
use tally_protocol::Client;

/// The same allocator as `tallyd` (the daemon runs in this process, and its footprint depends
/// on the allocator as much as on its structures), counting the bytes live in it: resident minus
/// live is what the allocator holds beyond what the program uses.
#[global_allocator]
static ALLOCATOR: Counting = Counting(AtomicI64::new(0));

struct Counting(AtomicI64);

// SAFETY: every call is passed to `tallyd`'s allocator unchanged; the counter only adds and
// subtracts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe {
            self.0.fetch_add(layout.size() as i64, Ordering::Relaxed);
            TallyAllocator.alloc(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe {
            self.0.fetch_sub(layout.size() as i64, Ordering::Relaxed);
            TallyAllocator.dealloc(ptr, layout);
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe {
            self.0.fetch_add(layout.size() as i64, Ordering::Relaxed);
            TallyAllocator.alloc_zeroed(layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe {
            self.0
                .fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            TallyAllocator.realloc(ptr, layout, new_size)
        }
    }
}

fn live_bytes() -> u64 {
    ALLOCATOR.0.load(Ordering::Relaxed).max(0) as u64
}

const FEATURES: [&str; 3] = ["gpt-4", "gpt-3.5", "embeddings"];

fn resident_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/self/statm"))?
        .parse()?;
    Ok(pages * 4096)
}

fn main() -> anyhow::Result<()> {
    tally_daemon::platform::memory::configure_for_mimalloc()?;
    let mut args = std::env::args().skip(1);
    let customers: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let mut marks: Vec<u64> = args.map(|n| n.parse()).collect::<Result<_, _>>()?;
    if marks.is_empty() {
        marks = vec![5, 65];
    }
    let LocalDaemon {
        daemon,
        admin: client_config,
        runtime,
        dir: _dir,
        ..
    } = LocalDaemon::start(Arc::new(SystemClock), |config| {
        config.storage.durability = Durability::Buffered;
    })?;
    let client = runtime.block_on(Client::connect(client_config))?;
    // What a quiet daemon does 1 s after its last work (`memory::release_idle`): start-up's
    // freed large blocks are not part of the empty daemon.
    tally_daemon::platform::allocator::release_cached();
    let empty = resident_bytes()?;
    let empty_live = live_bytes();
    let loading = Instant::now();
    runtime.block_on(async {
        seed_customers(&client, customers, "wallet").await?;
        for start in (0..customers).step_by(1_000) {
            for feature in FEATURES {
                let items = (start..(start + 1_000).min(customers))
                    .map(|c| ReportItem::new(customer(c), feature, 1))
                    .collect();
                let results = client.usage().report_batch(items).await?;
                if let Some(BatchItemResult::Err(e)) = results
                    .into_iter()
                    .find(|r| matches!(r, BatchItemResult::Err(_)))
                {
                    return Err(anyhow::Error::from(e));
                }
            }
        }
        anyhow::Ok(())
    })?;
    let loaded = resident_bytes()?;
    let per_customer = |resident: u64| resident.saturating_sub(empty) / customers as u64;
    let live_per_customer = || live_bytes().saturating_sub(empty_live) / customers as u64;
    println!(
        "{customers} customers × {} features loaded in {:.1} s; resident {} MiB empty, {} MiB loaded: {} bytes per customer above the empty daemon ({} live)",
        FEATURES.len(),
        loading.elapsed().as_secs_f64(),
        empty / (1 << 20),
        loaded / (1 << 20),
        per_customer(loaded),
        live_per_customer()
    );
    let idle = Instant::now();
    for mark in marks {
        std::thread::sleep(std::time::Duration::from_secs(mark).saturating_sub(idle.elapsed()));
        let settled = resident_bytes()?;
        println!(
            "after {mark} s idle: resident {} MiB: {} bytes per customer above the empty daemon ({} live)",
            settled / (1 << 20),
            per_customer(settled),
            live_per_customer()
        );
    }
    runtime.block_on(client.close());
    daemon.shutdown().expect("a clean shutdown");
    Ok(())
}
