//! Writes the fuzz target's seed corpus: one valid frame of every client message kind (and a
//! few edge cases), as the daemon reads them off the wire. The fuzzer mutates these; the
//! end-to-end test `fuzz_corpus` sends them and their mutations to a real daemon.
//!
//! `cargo run --example fuzz_seeds` (rewrites `fuzz/corpus/frame/seed-*`).

use std::path::Path;

use tally_protocol::codec::encode_frame;
use tally_protocol::message::*;

fn main() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame");
    std::fs::create_dir_all(&dir)?;
    let customer = |c: &str| CustomerRef { customer: c.into() };
    let request = |id: u64, request: Request| ClientFrame::Request(RequestFrame { id, request });
    let frames = [
        (
            "hello",
            ClientFrame::Hello(Hello {
                version: PROTOCOL_VERSION,
                api_key: "tally_monitor_0123456789abcdef".into(),
            }),
        ),
        (
            "report",
            request(1, Request::Report(ReportItem::new("acme", "tokens", 1_500))),
        ),
        (
            "report-keyed-only-if-allowed",
            request(
                2,
                Request::Report(ReportItem {
                    only_if_allowed: true,
                    ..ReportItem::new("acme", "gpt-4", 3).with_idempotency_key([9; 16])
                }),
            ),
        ),
        (
            "report-batch",
            request(
                3,
                Request::ReportBatch(vec![
                    ReportItem::new("acme", "tokens", 1),
                    ReportItem::new("globex", "image-gen", 2),
                ]),
            ),
        ),
        (
            "check",
            request(
                4,
                Request::Check(CheckRequest {
                    model: None,
                    customer: "acme".into(),
                    feature: "tokens".into(),
                    amount: 10,
                }),
            ),
        ),
        (
            "reserve",
            request(
                5,
                Request::Reserve(ReserveRequest {
                    model: None,
                    customer: "acme".into(),
                    feature: "gpt-4".into(),
                    amount: 2,
                    ttl_ms: 60_000,
                }),
            ),
        ),
        (
            "settle",
            request(
                6,
                Request::Settle(SettleRequest {
                    model: None,
                    hold: 0x1234,
                    actual: 1,
                    idempotency_key: Some([3; 16]),
                    output_tokens: None,
                }),
            ),
        ),
        (
            "release",
            request(7, Request::Release(ReleaseRequest { hold: 0x1234 })),
        ),
        (
            "progress",
            request(
                7,
                Request::Progress(ProgressRequest {
                    hold: 0x1234,
                    output_tokens: 300,
                }),
            ),
        ),
        (
            "create-customer",
            request(
                8,
                Request::CreateCustomer(CustomerPlan {
                    customer: "initech".into(),
                    plan: "wallet".into(),
                }),
            ),
        ),
        (
            "change-plan",
            request(
                9,
                Request::ChangePlan(CustomerPlan {
                    customer: "acme".into(),
                    plan: "images".into(),
                }),
            ),
        ),
        (
            "top-up-units",
            request(
                10,
                Request::TopUp(TopUpRequest {
                    customer: "acme".into(),
                    amount: TopUpAmount::Units(500_000),
                    idempotency_key: None,
                }),
            ),
        ),
        (
            "top-up-packs",
            request(
                11,
                Request::TopUp(TopUpRequest {
                    customer: "acme".into(),
                    amount: TopUpAmount::Packs(2),
                    idempotency_key: Some([4; 16]),
                }),
            ),
        ),
        (
            "get-customer",
            request(12, Request::GetCustomer(customer("acme"))),
        ),
        (
            "list-events",
            request(
                13,
                Request::ListEvents(ListEventsRequest {
                    customer: "acme".into(),
                    from_ms: 0,
                    from_seq: 0,
                    to_ms: u64::MAX,
                }),
            ),
        ),
        (
            "list-invoices",
            request(14, Request::ListInvoices(customer("acme"))),
        ),
        (
            "list-transactions",
            request(15, Request::ListTransactions(customer("acme"))),
        ),
        (
            "close-period",
            request(16, Request::ClosePeriod(customer("acme"))),
        ),
        ("stats", request(17, Request::Stats)),
    ];
    for (name, frame) in &frames {
        let mut bytes = Vec::new();
        encode_frame(frame, &mut bytes)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    println!("wrote {} seeds to {}", frames.len(), dir.display());
    Ok(())
}
