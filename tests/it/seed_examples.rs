//! The three examples of SPEC §4, replayed over the wire with exact figures.

use tally_protocol::message::{ReportItem, Role, Standing, TopUpAmount};

use crate::test_daemon::TestDaemon;

#[tokio::test]
async fn pro_customer_is_within_included_at_100000_and_pays_20_units_at_100001() {
    let daemon = TestDaemon::start();
    let client = daemon.client(Role::Admin).await;
    client.admin().create_customer("acme", "pro").await.unwrap();

    let outcome = client
        .usage()
        .report(ReportItem::new("acme", "tokens", 100_000))
        .await
        .unwrap();
    assert_eq!(outcome.charged, 0);
    assert!(matches!(
        outcome.standing,
        Standing::Metered {
            used: 100_000,
            included: 100_000,
            overage_units: 0,
            overage_cost_units: 0,
            ..
        }
    ));
    let check = client
        .entitlements()
        .check("acme", "tokens", 1)
        .await
        .unwrap();
    assert!(check.allowed);
    assert_eq!(check.cost, 20, "one token past included costs $0.002");
    assert_eq!(check.seq, outcome.seq);

    let outcome = client
        .usage()
        .report(ReportItem::new("acme", "tokens", 1))
        .await
        .unwrap();
    assert_eq!(outcome.charged, 20);
    assert!(matches!(
        outcome.standing,
        Standing::Metered {
            used: 100_001,
            overage_units: 1,
            overage_cost_units: 20,
            ..
        }
    ));
    let support = client
        .entitlements()
        .check("acme", "priority-support", 1)
        .await
        .unwrap();
    assert!(support.allowed, "pro has the priority-support flag");
}

#[tokio::test]
async fn credits_customer_runs_500_images_on_one_pack_and_the_501st_check_is_denied() {
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    let app = daemon.client(Role::Client).await;
    admin
        .admin()
        .create_customer("pics", "images")
        .await
        .unwrap();
    let purchase = admin
        .admin()
        .top_up("pics", TopUpAmount::Packs(1), None)
        .await
        .unwrap();
    assert_eq!(purchase.credits_added, 500);
    assert_eq!(purchase.gross_units, 100_000, "a pack costs $10.00");

    for n in 1..=500u64 {
        let check = app
            .entitlements()
            .check("pics", "image-gen", 1)
            .await
            .unwrap();
        assert!(check.allowed, "image {n} is allowed");
        let outcome = app
            .usage()
            .report(ReportItem::new("pics", "image-gen", 1))
            .await
            .unwrap();
        assert_eq!(outcome.charged, 1);
    }
    let check = app
        .entitlements()
        .check("pics", "image-gen", 1)
        .await
        .unwrap();
    assert!(!check.allowed, "the 501st image is denied");
    assert!(matches!(
        check.standing,
        Standing::Credits {
            available: 0,
            purchased: 0,
            ..
        }
    ));
    let view = admin.admin().get_customer("pics").await.unwrap();
    assert_eq!(view.usage[0].used, 500);
}

#[tokio::test]
async fn balance_customer_is_charged_300_30_and_1_units_from_50_dollars() {
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    admin
        .admin()
        .create_customer("wally", "wallet")
        .await
        .unwrap();
    admin
        .admin()
        .top_up("wally", TopUpAmount::Units(500_000), None)
        .await
        .unwrap();

    let app = daemon.client(Role::Client).await;
    for (feature, expected) in [("gpt-4", 300), ("gpt-3.5", 30), ("embeddings", 1)] {
        let check = app.entitlements().check("wally", feature, 1).await.unwrap();
        assert!(check.allowed);
        assert_eq!(check.cost, expected, "{feature}");
        let outcome = app
            .usage()
            .report(ReportItem::new("wally", feature, 1))
            .await
            .unwrap();
        assert_eq!(outcome.charged, expected, "{feature}");
    }
    let view = admin.admin().get_customer("wally").await.unwrap();
    assert_eq!(
        view.balance_units,
        500_000 - 331,
        "$50.00 − $0.0331 = $49.9669"
    );
}
