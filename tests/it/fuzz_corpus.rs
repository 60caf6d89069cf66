//! Thousands of frames from the fuzz corpus (`fuzz/corpus/frame/`) and deterministic mutations of
//! them, sent over real connections both where the `Hello` belongs and after a monitor's `Hello`:
//! every stream gets an answer or a clean close in time, the daemon never panics, it keeps
//! serving, and no customer's state changes (an unauthenticated or monitor peer may change
//! nothing, whatever it sends).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use tally::workload::Rng;
use tally_protocol::message::*;
use tally_protocol::Client;

use crate::raw_peer::{self, PATIENCE};
use crate::test_daemon::TestDaemon;

const MUTATIONS: usize = 3_000;
const WORKERS: usize = 8;

/// Panics on the daemon's threads (all named `tallyd-…`) since the hook was installed.
static DAEMON_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_daemon_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if thread.name().is_some_and(|name| name.starts_with("tallyd")) {
                DAEMON_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// A draw below `n` from the harness's seeded generator: the same mutations every run.
fn below(rng: &mut Rng, n: usize) -> usize {
    rng.usize(..n)
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect()
}

/// One mutation of the kinds libFuzzer makes: flip, set, insert, delete, truncate, splice,
/// or rewrite the length prefix.
fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut frame = corpus[below(rng, corpus.len())].clone();
    for _ in 0..1 + below(rng, 4) {
        let at = below(rng, frame.len().max(1));
        match below(rng, 7) {
            0 if !frame.is_empty() => frame[at] ^= 1 << below(rng, 8),
            1 if !frame.is_empty() => frame[at] = below(rng, 256) as u8,
            2 => frame.insert(at.min(frame.len()), below(rng, 256) as u8),
            3 if frame.len() > 1 => {
                frame.remove(at);
            }
            4 => frame.truncate(at),
            5 => {
                let other = &corpus[below(rng, corpus.len())];
                let from = below(rng, other.len());
                frame.extend_from_slice(&other[from..]);
            }
            _ if frame.len() >= 4 => {
                let body = (frame.len() - 4) as u32;
                let length = [0, body, body + 1, body / 2, u32::MAX][below(rng, 5)];
                frame[..4].copy_from_slice(&length.to_le_bytes());
            }
            _ => {}
        }
    }
    frame
}

/// Everything an admin can see about the customers, to compare before and after.
async fn state(admin: &Client, customers: &[&str]) -> Vec<String> {
    let mut seen = Vec::new();
    for customer in customers {
        let view = admin.admin().get_customer(customer).await.unwrap();
        let invoices = admin.admin().list_invoices(customer).await.unwrap();
        let events = admin
            .admin()
            .list_events(customer, 0, u64::MAX)
            .await
            .unwrap();
        seen.push(format!("{view:?} {invoices:?} {events:?}"));
    }
    seen
}

/// Sends each frame on a fresh stream (after a monitor's Hello when `after_hello`), finishes
/// the stream so a short frame ends at once, and reads until the daemon is done with it.
async fn send_all(daemon: &TestDaemon, frames: Vec<(bool, Vec<u8>)>, monitor_key: String) -> usize {
    let endpoint = raw_peer::endpoint(daemon);
    let addr = daemon.daemon().local_addr();
    let mut connection: Option<quinn::Connection> = None;
    let mut answered = 0;
    let mut hello = Vec::new();
    tally_protocol::codec::encode_frame(
        &ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
            api_key: monitor_key,
        }),
        &mut hello,
    )
    .unwrap();
    for (after_hello, frame) in frames {
        let live = match connection.take() {
            Some(c) if c.close_reason().is_none() => c,
            _ => endpoint.connect(addr, "localhost").unwrap().await.unwrap(),
        };
        let Ok((mut send, mut recv)) = live.open_bi().await else {
            continue;
        };
        let mut bytes = if after_hello {
            hello.clone()
        } else {
            Vec::new()
        };
        bytes.extend_from_slice(&frame);
        if bytes.is_empty() {
            bytes.push(0);
        }
        let _ = send.write_all(&bytes).await;
        let _ = send.finish();
        // Whatever the daemon says, it must finish saying it in time.
        let read = tokio::time::timeout(PATIENCE, recv.read_to_end(usize::MAX)).await;
        assert!(
            read.is_ok(),
            "the daemon neither answered nor closed: {frame:02x?}"
        );
        answered += 1;
        connection = Some(live);
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_frames_never_crash_the_daemon_or_change_state() {
    count_daemon_panics();
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    let customers = ["acme", "globex", "initech"];
    for (customer, plan) in customers.iter().zip(["pro", "images", "wallet"]) {
        admin.admin().create_customer(customer, plan).await.unwrap();
    }
    admin
        .usage()
        .report(ReportItem::new("acme", "tokens", 1_500))
        .await
        .unwrap();
    admin
        .admin()
        .top_up("initech", TopUpAmount::Units(500_000), None)
        .await
        .unwrap();
    let before = state(&admin, &customers).await;

    let corpus = corpus();
    assert!(
        corpus.len() >= 18,
        "the corpus has a seed of every message kind"
    );
    let mut rng = Rng::with_seed(0x7a11_f022);
    let mut frames: Vec<(bool, Vec<u8>)> = corpus
        .iter()
        .flat_map(|f| [(false, f.clone()), (true, f.clone())])
        .collect();
    frames.extend((0..MUTATIONS).map(|i| (i % 2 == 1, mutate(&mut rng, &corpus))));
    let total = frames.len();
    let mut workers = tokio::task::JoinSet::new();
    let chunk = total.div_ceil(WORKERS);
    let daemon = Arc::new(daemon);
    for part in frames.chunks(chunk) {
        let (daemon, part, key) = (daemon.clone(), part.to_vec(), daemon.key(Role::Monitor));
        workers.spawn(async move { send_all(&daemon, part, key).await });
    }
    let mut answered = 0;
    while let Some(done) = workers.join_next().await {
        answered += done.unwrap();
    }

    assert_eq!(
        DAEMON_PANICS.load(Ordering::SeqCst),
        0,
        "the daemon panicked"
    );
    assert!(
        answered > total * 9 / 10,
        "only {answered} of {total} frames got through"
    );
    // Still serving, and nothing changed.
    admin
        .entitlements()
        .check("acme", "tokens", 1)
        .await
        .unwrap();
    assert_eq!(state(&admin, &customers).await, before);
    println!(
        "fuzz corpus: {total} frames ({} files + {MUTATIONS} mutations) over real connections",
        corpus.len()
    );
}
