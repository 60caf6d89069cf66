//! Billing over the wire with a controlled clock: the spec's Pro invoice, purchase and top-up
//! transactions with the exact fee, month-end anchoring, plan changes, and invoices that
//! reconcile with the stored events.

use std::collections::BTreeMap;

use tally_protocol::message::{
    CloseReason, LineKind, ReportItem, Role, TopUpAmount, TransactionKind,
};
use tally_protocol::Client;

use crate::test_daemon::TestDaemon;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Sums a period's stored events per feature, page by page.
async fn usage_from_events(
    client: &Client,
    customer: &str,
    from_ms: u64,
    to_ms: u64,
) -> BTreeMap<String, u64> {
    let mut usage = BTreeMap::new();
    let mut from = (from_ms, 0);
    loop {
        let page = client
            .admin()
            .list_events_from(customer, from, to_ms)
            .await
            .unwrap();
        for event in &page.events {
            *usage.entry(event.feature.clone()).or_default() += event.amount;
        }
        match (page.more, page.events.last()) {
            (true, Some(last)) => from = (last.at_ms, last.seq + 1),
            _ => return usage,
        }
    }
}

#[tokio::test]
async fn pro_customer_using_130000_tokens_is_invoiced_109_dollars_with_fee_5_31() {
    let daemon = TestDaemon::start();
    let client = daemon.client(Role::Admin).await;
    client.admin().create_customer("acme", "pro").await.unwrap();
    client
        .usage()
        .report(ReportItem::new("acme", "tokens", 100_000))
        .await
        .unwrap();
    client
        .usage()
        .report(ReportItem::new("acme", "tokens", 30_000))
        .await
        .unwrap();

    // 2027-01-15 → 2027-02-15: the period ends; reading the customer closes it.
    daemon.clock.advance_ms(31 * DAY_MS);
    let view = client.admin().get_customer("acme").await.unwrap();
    assert_eq!(view.usage[0].used, 0, "the next period starts at zero");
    let invoices = client.admin().list_invoices("acme").await.unwrap();
    assert_eq!(invoices.len(), 1);
    let invoice = &invoices[0];
    assert_eq!(invoice.reason, CloseReason::Scheduled);
    assert_eq!(invoice.period_end_ms, view.period_start_ms);
    assert_eq!(
        (invoice.total_units, invoice.fee_units, invoice.net_units),
        (1_090_000, 53_100, 1_036_900)
    );
    let base = &invoice.lines[0];
    assert_eq!((base.kind, base.amount_units), (LineKind::Base, 490_000));
    let tokens = invoice
        .lines
        .iter()
        .find(|l| l.feature == "tokens")
        .unwrap();
    assert_eq!(
        (tokens.used, tokens.included, tokens.overage),
        (130_000, 100_000, 30_000)
    );
    assert_eq!(
        (tokens.price_units, tokens.per, tokens.amount_units),
        (20, 1, 600_000)
    );

    let from_events = usage_from_events(
        &client,
        "acme",
        invoice.period_start_ms,
        invoice.period_end_ms,
    )
    .await;
    assert_eq!(
        from_events.get("tokens"),
        Some(&130_000),
        "the invoice reconciles with the events"
    );
}

#[tokio::test]
async fn purchases_and_top_ups_are_transactions_with_the_exact_fee() {
    let daemon = TestDaemon::start();
    let client = daemon.client(Role::Admin).await;
    client
        .admin()
        .create_customer("pics", "images")
        .await
        .unwrap();
    let bought = client
        .admin()
        .top_up("pics", TopUpAmount::Packs(2), None)
        .await
        .unwrap();
    assert_eq!(bought.customer.purchased_credits, 1_000);
    let t = &bought.transaction;
    assert_eq!(t.kind, TransactionKind::CreditPurchase);
    assert_eq!(
        (t.total_units, t.fee_units, t.net_units),
        (200_000, 13_000, 187_000),
        "$20.00, $1.30, $18.70"
    );

    client
        .admin()
        .create_customer("wally", "wallet")
        .await
        .unwrap();
    let loaded = client
        .admin()
        .top_up("wally", TopUpAmount::Units(500_000), None)
        .await
        .unwrap();
    let t = &loaded.transaction;
    assert_eq!(t.kind, TransactionKind::BalanceTopUp);
    assert_eq!(
        (t.total_units, t.fee_units, t.net_units),
        (500_000, 26_500, 473_500),
        "$50.00, $2.65, $47.35"
    );

    let listed = client.admin().list_transactions("wally").await.unwrap();
    assert_eq!(listed, vec![loaded.transaction.clone()]);
    let listed = client.admin().list_transactions("pics").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].number, 1);
}

#[tokio::test]
async fn monthly_periods_anchored_on_january_31_close_on_february_29_then_march_31() {
    let daemon = TestDaemon::start();
    daemon.clock.set_ms(1_832_932_800_000); // 2028-01-31T12:00:00Z (2028 is a leap year)
    let client = daemon.client(Role::Admin).await;
    client.admin().create_customer("leap", "pro").await.unwrap();
    daemon.clock.set_ms(1_838_116_800_000 + 5 * DAY_MS); // 2028-04-05: two periods are due
    client.admin().get_customer("leap").await.unwrap();
    let invoices = client.admin().list_invoices("leap").await.unwrap();
    let ends: Vec<u64> = invoices.iter().map(|i| i.period_end_ms).collect();
    assert_eq!(
        ends,
        vec![1_835_438_400_000, 1_838_116_800_000],
        "2028-02-29 and 2028-03-31, 12:00 UTC"
    );
    assert_eq!(invoices[1].period_start_ms, invoices[0].period_end_ms);
    assert!(
        invoices.iter().all(|i| i.total_units == 490_000),
        "base price only, no usage"
    );
}

#[tokio::test]
async fn negative_credits_are_invoiced_at_the_pack_price_and_reset() {
    let daemon = TestDaemon::start();
    let client = daemon.client(Role::Admin).await;
    client
        .admin()
        .create_customer("pics", "images")
        .await
        .unwrap();
    client
        .admin()
        .top_up("pics", TopUpAmount::Packs(1), None)
        .await
        .unwrap();
    client
        .usage()
        .report(ReportItem::new("pics", "image-gen", 530))
        .await
        .unwrap();
    let invoice = client.admin().close_period("pics").await.unwrap();
    assert_eq!(invoice.reason, CloseReason::Manual);
    let debt = invoice
        .lines
        .iter()
        .find(|l| l.kind == LineKind::Debt)
        .unwrap();
    assert_eq!(
        (debt.used, debt.amount_units),
        (30, 6_000),
        "30 credits at $10.00 / 500 = $0.60"
    );
    let usage = invoice
        .lines
        .iter()
        .find(|l| l.kind == LineKind::Usage)
        .unwrap();
    assert_eq!(
        (usage.used, usage.consumed, usage.amount_units),
        (530, 530, 0)
    );
    assert_eq!(
        (invoice.total_units, invoice.fee_units),
        (6_000, 4_300),
        "$0.60, fee $0.03 + $0.40"
    );
    let view = client.admin().get_customer("pics").await.unwrap();
    assert_eq!(view.purchased_credits, 0);
}

#[tokio::test]
async fn a_plan_change_closes_the_period_with_a_prorated_base_price_and_keeps_the_money() {
    let daemon = TestDaemon::start();
    let client = daemon.client(Role::Admin).await;
    client.admin().create_customer("c", "pro").await.unwrap();
    let period = client.admin().get_customer("c").await.unwrap();
    let length = period.period_end_ms - period.period_start_ms;
    daemon.clock.advance_ms(length / 2);
    client.admin().change_plan("c", "wallet").await.unwrap();
    let invoices = client.admin().list_invoices("c").await.unwrap();
    assert_eq!(invoices[0].reason, CloseReason::PlanChange);
    assert_eq!(invoices[0].lines[0].amount_units, 245_000, "half of $49.00");
    let view = client.admin().get_customer("c").await.unwrap();
    assert_eq!(view.plan, "wallet");
}
