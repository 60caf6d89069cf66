//! The `stats` operation: refused for client keys, served for monitor and admin, and its counts
//! and percentiles reflect the traffic that was driven.

use std::time::Duration;

use tally_protocol::message::{ReportItem, Role, TallyError, TopUpAmount};
use tally_protocol::Error;

use crate::test_daemon::TestDaemon;

#[tokio::test]
async fn stats_is_refused_for_client_keys_and_served_for_monitor_and_admin() {
    let daemon = TestDaemon::start();
    let app = daemon.client(Role::Client).await;
    assert!(matches!(
        app.monitor().stats().await,
        Err(Error::Rejected(TallyError::Forbidden {
            role: Role::Client,
            ..
        }))
    ));
    for role in [Role::Monitor, Role::Admin] {
        let snapshot = daemon.client(role).await.monitor().stats().await.unwrap();
        assert_eq!(snapshot.shards.len(), 2);
    }
}

#[tokio::test]
async fn stats_reflect_the_traffic_driven() {
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    admin
        .admin()
        .create_customer("pics", "images")
        .await
        .unwrap();
    admin
        .admin()
        .top_up("pics", TopUpAmount::Packs(1), None)
        .await
        .unwrap();
    admin.admin().create_customer("acme", "pro").await.unwrap();
    for _ in 0..40 {
        admin
            .usage()
            .report(ReportItem::new("acme", "tokens", 10))
            .await
            .unwrap();
    }
    for _ in 0..25 {
        admin
            .entitlements()
            .check("pics", "image-gen", 100)
            .await
            .unwrap();
    }
    for _ in 0..5 {
        admin
            .entitlements()
            .check("pics", "image-gen", 1_000)
            .await
            .unwrap();
    }
    admin
        .holds()
        .reserve("pics", "image-gen", 1, Duration::from_secs(5))
        .await
        .unwrap();

    let monitor = daemon.client(Role::Monitor).await;
    let snapshot = monitor.monitor().stats().await.unwrap();
    let op = |name: &str| {
        snapshot
            .operations
            .iter()
            .find(|o| o.operation == name)
            .unwrap()
            .clone()
    };
    let reports = op("report");
    assert_eq!((reports.count, reports.errors), (40, 0));
    assert_eq!(reports.latency.count, 40);
    assert!(reports.latency.p50_us > 0 && reports.latency.p50_us <= reports.latency.p99_us);
    assert!(reports.latency.p99_us <= reports.latency.max_us);
    assert_eq!(op("check").count, 30);
    assert_eq!((snapshot.checks_allowed, snapshot.checks_denied), (25, 5));
    assert_eq!(op("reserve").count, 1);
    assert_eq!(snapshot.connections, 2);
    assert_eq!(snapshot.shards.iter().map(|s| s.customers).sum::<u64>(), 2);
    assert!(snapshot.shards.iter().map(|s| s.handled).sum::<u64>() >= 74);
    assert!(snapshot.storage_bytes > 0);
    assert_eq!(snapshot.recent_transactions.len(), 1);
    assert_eq!(
        snapshot.revenue.gross_units, 100_000,
        "one $10.00 pack this month"
    );
    assert_eq!(snapshot.revenue.fee_units, 8_500);
}
