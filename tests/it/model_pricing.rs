//! Usage priced by AI model over both doors: the shipped plan `assistant` (balance, `chat` priced
//! by model at cost + 20%), checks of a request's worst case, reports and holds in tokens, typed
//! errors for unknown or refused models, and the period's invoice reconciled with its events.

use std::time::Duration;

use serde_json::json;
use tally::http::HttpClient;
use tally_protocol::message::{ModelUsage, ReportItem, Role, TallyError, TopUpAmount};
use tally_protocol::Error;

use crate::test_daemon::TestDaemon;

/// 1,200 prompt and `output` answer tokens of gpt-4o ($2.50 and $10.00 per million).
fn gpt_4o(output: u64) -> ModelUsage {
    ModelUsage::new("gpt-4o", 1_200, output)
}

#[tokio::test]
async fn requests_are_priced_from_their_tokens_on_both_doors_and_the_invoice_reconciles() {
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    admin
        .admin()
        .create_customer("ann", "assistant")
        .await
        .unwrap();
    admin
        .admin()
        .top_up("ann", TopUpAmount::Units(10_000), None)
        .await
        .unwrap();

    // The worst case of a request: its input and the most output it may have, + 20%.
    let check = admin
        .entitlements()
        .check_tokens("ann", "chat", gpt_4o(4_096))
        .await
        .unwrap();
    assert!(check.allowed);
    assert_eq!(check.cost, 528, "($0.003 + $0.04096) × 1.2, rounded up");

    // What it used: $0.0065 of provider cost, 78 rate units charged.
    let reported = admin
        .usage()
        .report(ReportItem::tokens("ann", "chat", gpt_4o(350)))
        .await
        .unwrap();
    assert_eq!(reported.charged, 78);

    // A hold of the worst case, settled with what the answer used.
    let hold = admin
        .holds()
        .reserve_tokens("ann", "chat", gpt_4o(4_096), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(hold.held, 528);
    let settled = admin
        .holds()
        .settle_tokens(hold.hold.unwrap(), gpt_4o(350), None)
        .await
        .unwrap();
    assert_eq!(settled.charged, 78);

    // The HTTP door, in the Node SDK's model form, on the same wallet.
    let http = HttpClient::new(
        daemon.daemon().http_addr().unwrap(),
        Some(daemon.key(Role::Admin)),
    );
    let tracked = http
        .post(
            "/usage/events",
            &json!({"customerId": "ann", "feature": "chat", "model": "gpt-4o",
                    "inputTokens": 1_200, "outputTokens": 350}),
        )
        .await
        .unwrap();
    assert_eq!(tracked.status, 201, "{:?}", tracked.body);
    assert_eq!(tracked.data()["charged"], 78);
    let checked = http
        .post(
            "/usage/check",
            &json!({"customerId": "ann", "featureCode": "chat", "model": "gpt-4o",
                    "inputTokens": 1_200, "maxOutputTokens": 4_096}),
        )
        .await
        .unwrap();
    assert_eq!(checked.data()["estimatedAmount"], 528, "{:?}", checked.body);
    assert_eq!(checked.data()["currentBalance"], 10_000 - 3 * 78);

    // Unknown models and units on a feature priced by model are typed errors; nothing changes.
    let unknown = admin
        .usage()
        .report(ReportItem::tokens(
            "ann",
            "chat",
            ModelUsage::new("gpt-9", 1, 1),
        ))
        .await;
    assert!(matches!(
        unknown,
        Err(Error::Rejected(TallyError::UnknownModel { .. }))
    ));
    let units = admin
        .usage()
        .report(ReportItem::new("ann", "chat", 5))
        .await;
    assert!(matches!(
        units,
        Err(Error::Rejected(TallyError::InvalidRequest { .. }))
    ));
    let refused = http
        .post(
            "/usage/events",
            &json!({"customerId": "ann", "feature": "chat", "model": "gpt-9",
                    "inputTokens": 1, "outputTokens": 1}),
        )
        .await
        .unwrap();
    assert_eq!((refused.status, refused.code()), (404, "model_not_found"));
    let view = admin.admin().get_customer("ann").await.unwrap();
    assert_eq!(view.balance_units, 10_000 - 3 * 78);

    // The period's usage line is the provider's cost of the three requests, charged +20%, and it
    // reconciles with the events, to the rate unit.
    daemon.clock.advance_ms(1_000);
    let invoice = admin.admin().close_period("ann").await.unwrap();
    let line = invoice.lines.iter().find(|l| l.feature == "chat").unwrap();
    assert_eq!(line.used, 3 * 65_000_000, "cost units: 10⁻¹⁰ dollars");
    assert_eq!(line.consumed, 3 * 78);
    let check = tally_tui::run::reconcile(&admin, invoice).await.unwrap();
    assert!(check.is_reconciled(), "{check:?}");
    admin.close().await;
}
