//! Micro-benchmarks (divan), one binary: `cargo bench --bench micro`.
//!
//! Back-of-the-envelope expectations (docs/performance.md, Floors: rkyv serialize of a 48 B message into a
//! reused buffer 16 ns, 138 ns with a fresh allocation; validated access 0.7–6 ns, a batch of 64
//! ~250 ns; fdatasync ~180 µs):
//! - codec: encoding a request frame allocates (~150–300 ns); decode + validate + deserialize of a
//!   check or report is a few hundred ns (strings are copied out); a 64-item batch ~10–20 µs.
//! - core: `check` on a warm customer is a hash lookup plus a little arithmetic (~100–300 ns);
//!   `report` also records the change for persistence (~200–500 ns).
//! - group commit: 1,000 reports through one shard core, encoded and persisted as one fjall
//!   batch with `SyncData`: ~0.5 ms of core + encoding plus one fdatasync (~0.2–1 ms).

use std::sync::Arc;

use divan::{black_box, Bencher};
use tally_daemon::config::{Config, DEFAULT_CONFIG_TOML};
use tally_daemon::metering::engine::ShardCore;
use tally_daemon::store::{writes_for, Store, Tail, CHECKPOINT_BYTES};
use tally_protocol::codec::{decode_client_frame, encode_frame, LENGTH_PREFIX_BYTES};
use tally_protocol::message::*;

fn main() {
    divan::main();
}

const T0: u64 = 1_800_000_000_000;

fn frame(request: Request) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_frame(
        &ClientFrame::Request(RequestFrame { id: 7, request }),
        &mut bytes,
    )
    .unwrap();
    bytes
}

fn check() -> Request {
    Request::Check(CheckRequest {
        model: None,
        customer: "customer-000042".into(),
        feature: "tokens".into(),
        amount: 1,
    })
}

fn report() -> Request {
    Request::Report(
        ReportItem::new("customer-000042", "tokens", 1_200).with_idempotency_key([7; 16]),
    )
}

fn batch() -> Request {
    Request::ReportBatch(
        (0..64)
            .map(|i| ReportItem::new(format!("customer-{i:06}"), "tokens", 10))
            .collect(),
    )
}

mod codec {
    use super::*;

    #[divan::bench(args = ["check", "report", "batch64"])]
    fn encode(bencher: Bencher, kind: &str) {
        let request = match kind {
            "check" => check(),
            "report" => report(),
            _ => batch(),
        };
        bencher.bench_local(|| frame(black_box(request.clone())));
    }

    #[divan::bench(args = ["check", "report", "batch64"])]
    fn decode_and_validate(bencher: Bencher, kind: &str) {
        let bytes = frame(match kind {
            "check" => check(),
            "report" => report(),
            _ => batch(),
        });
        let mut body = rkyv::util::AlignedVec::<16>::new();
        body.extend_from_slice(&bytes[LENGTH_PREFIX_BYTES..]);
        bencher.bench_local(|| decode_client_frame(black_box(&body)).unwrap());
    }
}

fn warm_core() -> ShardCore {
    core_of(10_000)
}

/// A core holding `customers` customers, `customer-000000` onwards, on `pro`.
fn core_of(customers: usize) -> ShardCore {
    let config = Config::parse(
        DEFAULT_CONFIG_TOML,
        std::path::Path::new("."),
        "config.toml",
    )
    .unwrap();
    let mut core = ShardCore::new(config.catalogue, 60_000, config.billing.terms());
    for i in 0..customers {
        let create = Request::CreateCustomer(CustomerPlan {
            customer: format!("customer-{i:06}"),
            plan: "pro".into(),
        });
        core.handle(T0, create).unwrap();
    }
    core.take_changes();
    core
}

mod core {
    use super::*;

    #[divan::bench]
    fn check_warm_customer(bencher: Bencher) {
        let mut core = warm_core();
        bencher.bench_local(|| core.handle(T0, black_box(check())).unwrap());
    }

    /// A check of a customer picked at random among 500,000 (one shard's share of 1M): the
    /// index probe and the customer's row miss the caches. Expected ~0.3–0.6 µs (two or three
    /// cache misses of ~100 ns on top of the warm check).
    #[divan::bench(sample_count = 100, sample_size = 200)]
    fn check_among_500k_customers(bencher: Bencher) {
        let mut core = core_of(500_000);
        let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
        bencher
            .with_inputs(|| {
                let customer = format!("customer-{:06}", rng.u64(..500_000));
                Request::Check(CheckRequest {
                    model: None,
                    customer,
                    feature: "tokens".into(),
                    amount: 1,
                })
            })
            .bench_local_values(|request| core.handle(T0, request).unwrap());
    }

    #[divan::bench]
    fn report_warm_customer(bencher: Bencher) {
        let mut core = warm_core();
        bencher.bench_local(|| {
            let request = Request::Report(ReportItem::new("customer-000042", "tokens", 1));
            let answer = core.handle(T0, black_box(request)).unwrap();
            // What the shard does with every change: take it for the next burst.
            black_box(core.take_changes());
            answer
        });
    }
}

mod model_pricing {
    use super::*;

    /// A customer on the shipped `assistant` plan (balance; `chat` priced by model).
    fn assistant() -> ShardCore {
        let mut core = warm_core();
        let create = Request::CreateCustomer(CustomerPlan {
            customer: "ann".into(),
            plan: "assistant".into(),
        });
        core.handle(T0, create).unwrap();
        core.take_changes();
        core
    }

    /// The check of a request's worst case priced from its tokens: beside `core::check_warm_customer`,
    /// what looking the model up and pricing four token kinds adds.
    #[divan::bench]
    fn check_tokens(bencher: Bencher) {
        let mut core = assistant();
        bencher.bench_local(|| {
            let request = Request::Check(CheckRequest {
                customer: "ann".into(),
                feature: "chat".into(),
                amount: 0,
                model: Some(ModelUsage::new("gpt-4o", 1_200, 4_096)),
            });
            core.handle(T0, black_box(request)).unwrap()
        });
    }
}

mod group_commit {
    use super::*;

    /// One shard's group commit of 1,000 reports: apply to the core, encode the burst, persist
    /// it as one fjall batch (one commit-log record) with fdatasync, and checkpoint when the
    /// committer would (its share of the checkpoint cost lands in some samples).
    #[divan::bench(sample_count = 30)]
    fn thousand_reports_synced(bencher: Bencher) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Default::default()).unwrap());
        let mut core = warm_core();
        let mut tail = Tail::default();
        let mut n = 0u64;
        bencher.bench_local(|| {
            for _ in 0..1_000 {
                n += 1;
                let item = ReportItem::new(format!("customer-{:06}", n % 10_000), "tokens", 1);
                core.handle(T0, Request::Report(item)).unwrap();
            }
            let writes = writes_for(core.take_changes(), &core);
            store
                .persist(writes, fjall::PersistMode::SyncData, &mut tail)
                .unwrap();
            if tail.bytes() >= CHECKPOINT_BYTES {
                store
                    .checkpoint(&mut tail, fjall::PersistMode::Buffer)
                    .unwrap();
            }
        });
    }
}
