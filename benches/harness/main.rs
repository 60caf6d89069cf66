//! `tally-bench`: prints a human table, then one JSON object as the last stdout line.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = tally::driver::Args::parse();
    let report = tally::driver::run(args)?;
    println!("{}", report.table);
    println!("{}", report.json);
    Ok(())
}
