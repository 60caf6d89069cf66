//! What a durable commit's fdatasync costs on this disk, by how the log file was laid out, with
//! and without other files being written and synced meanwhile (as fjall's flushes and
//! compactions do while the committer syncs its journal). Not Tally code: a probe of the floor
//! the commit path stands on.
//!
//! Each step writes 12 KiB (a group commit's record) at the next offset of a 256 MiB file and
//! fdatasyncs it, with 200 µs between steps, for 8 s. Layouts: `sparse` (`set_len`, as fjall
//! creates its journal: every write fills a hole, so every sync commits metadata too) and `zero`
//! (written with zeros first: the sync only writes data). `bg` adds a thread writing and syncing
//! a 16 MiB file every 100 ms.
//!
//! Run: `cargo run --release --example fsync_probe -- zero bg [dir]` (dir defaults to the
//! system's temp folder; it must be on the disk under test).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LOG_BYTES: u64 = 256 << 20;
const RECORD_BYTES: usize = 12 * 1024;
const RUN: Duration = Duration::from_secs(8);
const BETWEEN_SYNCS: Duration = Duration::from_micros(200);

fn summary(mut micros: Vec<u64>) -> String {
    micros.sort_unstable();
    let n = micros.len();
    let at = |q: f64| micros[((n as f64 * q) as usize).min(n - 1)];
    format!(
        "{n} syncs: p50 {} µs, p90 {}, p99 {}, p99.9 {}, max {}; {} over 1 ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        micros[n - 1],
        micros.iter().filter(|&&us| us > 1_000).count()
    )
}

fn lay_out(path: &Path, layout: &str) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    match layout {
        "sparse" => file.set_len(LOG_BYTES)?,
        "zero" => {
            let zeros = vec![0u8; 1 << 20];
            for mib in 0..(LOG_BYTES >> 20) {
                file.write_all_at(&zeros, mib << 20)?;
            }
        }
        other => anyhow::bail!("layout `{other}`: expected sparse or zero"),
    }
    file.sync_all()?;
    Ok(file)
}

/// Writes and syncs a 16 MiB file every 100 ms until `stop`, keeping the last four.
fn background_writer(dir: PathBuf, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut table = File::create(dir.join(format!("table-{written}")))?;
        for _ in 0..16 {
            table.write_all(&chunk)?;
        }
        table.sync_all()?;
        if written >= 4 {
            std::fs::remove_file(dir.join(format!("table-{}", written - 4)))?;
        }
        written += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let layout = args.next().unwrap_or_else(|| "zero".into());
    let background = args.next().is_some_and(|arg| arg == "bg");
    let dir = match args.next() {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let log = lay_out(&dir.path().join("log"), &layout)?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = background.then(|| {
        let (dir, stop) = (dir.path().to_path_buf(), stop.clone());
        std::thread::spawn(move || background_writer(dir, stop))
    });
    let record = vec![1u8; RECORD_BYTES];
    let mut micros = Vec::new();
    let mut offset = 0u64;
    let started = Instant::now();
    while started.elapsed() < RUN {
        let sync = Instant::now();
        log.write_all_at(&record, offset)?;
        log.sync_data()?;
        micros.push(sync.elapsed().as_micros() as u64);
        offset = (offset + RECORD_BYTES as u64) % (LOG_BYTES - RECORD_BYTES as u64);
        std::thread::sleep(BETWEEN_SYNCS);
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(writer) = writer {
        writer.join().expect("the background writer")?;
    }
    println!(
        "{layout} log{}: {}",
        if background {
            ", other files written meanwhile"
        } else {
            ""
        },
        summary(micros)
    );
    Ok(())
}
