//! `tally-bench`: prints a human table, then one JSON object as the last stdout line.
#![forbid(unsafe_code)]

use clap::Parser;

/// The same allocator as `tallyd`, so a `--spawn`ed daemon runs as it would in production.
#[global_allocator]
static ALLOCATOR: tally_daemon::platform::allocator::TallyAllocator =
    tally_daemon::platform::allocator::TallyAllocator;

fn main() -> anyhow::Result<()> {
    let args = tally::driver::Args::parse();
    // `--spawn` runs the daemon in this process: give it what `tallyd` has.
    tally_daemon::platform::memory::configure_for_mimalloc()?;
    let report = tally::driver::run(args)?;
    println!("{}", report.table);
    println!("{}", report.json);
    Ok(())
}
