//! A plan's price changed between two starts: usage already charged keeps its price. With
//! `effective = "now"` the period's invoice shows one line per price, each what its reports were
//! charged; with the default (`next_period`) the current period keeps the old price and the next
//! one starts at the new. Either way the invoice reconciles with its events, to the rate unit.

use std::path::Path;

use tally_daemon::config::{Config, DEFAULT_CONFIG_TOML};
use tally_protocol::message::*;
use tally_protocol::Client;
use tally_tui::billing_output::InvoiceCheck;

use crate::test_daemon::TestDaemon;

const OLD_OVERAGE: &str = r#"features.tokens = { included = 100000, overage = "0.002" }"#;

/// The shipped catalogue with pro's overage at $0.003, taking effect as `effective` says.
fn catalogue_with_new_price(
    effective: Option<&str>,
) -> std::sync::Arc<tally_daemon::metering::catalogue::Catalogue> {
    let effective = effective.map_or(String::new(), |e| format!("effective = \"{e}\"\n"));
    let text = DEFAULT_CONFIG_TOML.replace(
        OLD_OVERAGE,
        &format!("{effective}{}", OLD_OVERAGE.replace("0.002", "0.003")),
    );
    assert_ne!(
        text, DEFAULT_CONFIG_TOML,
        "the shipped config still prices tokens at 0.002"
    );
    Config::parse(&text, Path::new("."), "test")
        .unwrap()
        .catalogue
}

async fn report(client: &Client, units: u64) -> ReportOutcome {
    client
        .usage()
        .report(ReportItem::new("p", "tokens", units))
        .await
        .unwrap()
}

/// The invoice beside its period's events, as `tally reconcile` sets them.
async fn reconcile(client: &Client, invoice: InvoiceView) -> InvoiceCheck {
    tally_tui::run::reconcile(client, invoice).await.unwrap()
}

/// A daemon with customer `p` on `pro`, 130,000 tokens used at $0.002 (30,000 over), and a
/// minute gone by: a price change recorded now falls inside its period.
async fn customer_with_overage() -> TestDaemon {
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    admin.admin().create_customer("p", "pro").await.unwrap();
    assert_eq!(report(&admin, 130_000).await.charged, 600_000);
    admin.close().await;
    daemon.clock.advance_ms(60_000);
    daemon
}

fn metered_amounts(invoice: &InvoiceView) -> Vec<(u64, i64)> {
    invoice
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Metered)
        .map(|l| (l.used, l.amount_units))
        .collect()
}

#[tokio::test]
async fn a_price_effective_now_prices_only_later_usage_and_splits_the_line() {
    let mut daemon = customer_with_overage().await;

    daemon.restart_with(|config, _| config.catalogue = catalogue_with_new_price(Some("now")));
    let admin = daemon.client(Role::Admin).await;
    let later = report(&admin, 10_000).await;
    assert_eq!(later.charged, 300_000, "10,000 tokens at $0.003");
    let Standing::Metered {
        overage_cost_units, ..
    } = later.standing
    else {
        panic!("{later:?}")
    };
    assert_eq!(
        overage_cost_units, 900_000,
        "$60.00 + $30.00, not 40,000 × $0.003"
    );
    drop(admin);

    // The split survives a restart with the same catalogue.
    daemon.restart();
    let admin = daemon.client(Role::Admin).await;
    // Events are listed by time, [start, end): a close in the same millisecond as a report
    // would leave that report's event out of the listing (not out of the invoice).
    daemon.clock.advance_ms(1);
    let invoice = admin.admin().close_period("p").await.unwrap();
    assert_eq!(
        metered_amounts(&invoice),
        vec![(130_000, 600_000), (10_000, 300_000)]
    );
    assert_eq!(invoice.total_units, 1_390_000, "$49.00 + $60.00 + $30.00");
    let check = reconcile(&admin, invoice.clone()).await;
    assert!(check.is_reconciled(), "{check:?}");

    // A line whose money was tampered with no longer reconciles.
    let mut corrupted = invoice;
    let line = corrupted
        .lines
        .iter_mut()
        .rfind(|l| l.kind == LineKind::Metered)
        .unwrap();
    line.amount_units = 1_200_000;
    assert!(!reconcile(&admin, corrupted).await.is_reconciled());

    // The next period is priced at the new price alone.
    assert_eq!(report(&admin, 100_001).await.charged, 30);
}

#[tokio::test]
async fn a_price_effective_next_period_leaves_the_current_period_at_the_old_price() {
    let mut daemon = customer_with_overage().await;

    daemon.restart_with(|config, _| config.catalogue = catalogue_with_new_price(None));
    let admin = daemon.client(Role::Admin).await;
    assert_eq!(
        report(&admin, 10_000).await.charged,
        200_000,
        "still $0.002"
    );
    // Events are listed by time, [start, end): a close in the same millisecond as a report
    // would leave that report's event out of the listing (not out of the invoice).
    daemon.clock.advance_ms(1);
    let invoice = admin.admin().close_period("p").await.unwrap();
    assert_eq!(metered_amounts(&invoice), vec![(140_000, 800_000)]);
    assert_eq!(invoice.total_units, 1_290_000, "$49.00 + $80.00");
    assert!(reconcile(&admin, invoice).await.is_reconciled());

    assert_eq!(
        report(&admin, 100_001).await.charged,
        30,
        "the new period starts at $0.003"
    );
}
