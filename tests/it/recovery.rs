//! Clean restarts recover every customer exactly, idempotency keys survive a restart, and a
//! store that fails writes never lets a request be acknowledged.

use std::time::Duration;

use tally_daemon::store::StoreFaults;
use tally_daemon::ShutdownError;
use tally_protocol::message::{CustomerView, ReportItem, Role, TallyError, TopUpAmount};
use tally_protocol::{Client, Error};

use crate::test_daemon::TestDaemon;

async fn views(client: &Client, ids: &[&str]) -> Vec<CustomerView> {
    let mut views = Vec::new();
    for id in ids {
        views.push(client.admin().get_customer(id).await.unwrap());
    }
    views
}

#[tokio::test]
async fn every_model_with_open_holds_is_identical_after_a_restart() {
    let mut daemon = TestDaemon::start();
    let client = daemon.client(Role::Admin).await;
    let admin = client.admin();
    admin.create_customer("acme", "pro").await.unwrap();
    client
        .usage()
        .report(ReportItem::new("acme", "tokens", 120_000))
        .await
        .unwrap();
    client
        .holds()
        .reserve("acme", "tokens", 500, Duration::from_secs(60))
        .await
        .unwrap();
    admin.create_customer("pics", "images").await.unwrap();
    admin
        .top_up("pics", TopUpAmount::Packs(2), None)
        .await
        .unwrap();
    client
        .usage()
        .report(ReportItem::new("pics", "image-gen", 17))
        .await
        .unwrap();
    client
        .holds()
        .reserve("pics", "image-gen", 40, Duration::from_secs(60))
        .await
        .unwrap();
    admin.create_customer("wally", "wallet").await.unwrap();
    admin
        .top_up("wally", TopUpAmount::Units(500_000), None)
        .await
        .unwrap();
    for feature in ["gpt-4", "gpt-3.5", "embeddings"] {
        client
            .usage()
            .report(ReportItem::new("wally", feature, 3))
            .await
            .unwrap();
    }
    client
        .holds()
        .reserve("wally", "gpt-4", 2, Duration::from_secs(60))
        .await
        .unwrap();
    let ids = ["acme", "pics", "wally"];
    let before = views(&client, &ids).await;
    drop(client);

    // Twice, and the second time on three shards: placement follows the new shard count.
    daemon.restart();
    daemon.restart_with(|config, _| config.server.shards = 3);
    let client = daemon.client(Role::Admin).await;
    assert_eq!(views(&client, &ids).await, before);

    // Holds survive the restart, are still owned by the right shard, and still expire.
    let hold = before[2].holds[0].hold;
    client.holds().release(hold).await.unwrap();
    daemon.clock.advance_ms(60_000);
    let after = client.admin().get_customer("pics").await.unwrap();
    assert!(after.holds.is_empty());
    assert_eq!(after.purchased_credits, 1_000 - 17);
}

#[tokio::test]
async fn a_duplicate_key_after_a_restart_gets_the_original_outcome() {
    let mut daemon = TestDaemon::start();
    let client = daemon.client(Role::Admin).await;
    client
        .admin()
        .create_customer("wally", "wallet")
        .await
        .unwrap();
    let top_up_key = [1u8; 16];
    let top_up = client
        .admin()
        .top_up("wally", TopUpAmount::Units(10_000), Some(top_up_key))
        .await
        .unwrap();
    let key = [2u8; 16];
    let item = ReportItem::new("wally", "gpt-4", 2).with_idempotency_key(key);
    let first = client.usage().report(item.clone()).await.unwrap();
    drop(client);

    daemon.restart();
    let client = daemon.client(Role::Admin).await;
    let retry = client.usage().report(item).await.unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.seq, first.seq);
    assert_eq!(retry.charged, first.charged);
    assert_eq!(retry.standing, first.standing);
    let again = client
        .admin()
        .top_up("wally", TopUpAmount::Units(10_000), Some(top_up_key))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.customer, top_up.customer);
    let view = client.admin().get_customer("wally").await.unwrap();
    assert_eq!(view.balance_units, 10_000 - 600, "each counted once");

    // Past the window the key is forgotten, also by the store.
    daemon
        .clock
        .advance_ms(daemon.config.billing.dedup_window_ms);
    drop(client);
    daemon.restart();
    let client = daemon.client(Role::Admin).await;
    let late = ReportItem::new("wally", "gpt-4", 2).with_idempotency_key(key);
    assert!(!client.usage().report(late).await.unwrap().duplicate);
}

#[tokio::test]
async fn a_failed_write_is_never_acknowledged() {
    let faults = StoreFaults::default();
    let options = tally_daemon::StartOptions {
        store_faults: faults.clone(),
        ..Default::default()
    };
    let mut daemon = TestDaemon::start_with(|_| {}, options);
    let client = daemon.client(Role::Admin).await;
    client.admin().create_customer("acme", "pro").await.unwrap();
    client
        .usage()
        .report(ReportItem::new("acme", "tokens", 10))
        .await
        .unwrap();

    faults.fail_writes(true);
    let failed = client
        .usage()
        .report(ReportItem::new("acme", "tokens", 5))
        .await;
    assert!(
        matches!(failed, Err(Error::Rejected(TallyError::Internal { .. }))),
        "{failed:?}"
    );
    // Memory may be ahead of disk now, so the daemon refuses everything until a restart.
    let refused = client.entitlements().check("acme", "tokens", 1).await;
    assert!(matches!(
        refused,
        Err(Error::Rejected(TallyError::Internal { .. }))
    ));
    drop(client);

    // Shutdown ends, and says the store failed, instead of flushing a failed store (which
    // can wait forever on fjall's crashed workers).
    let stopping = std::time::Instant::now();
    let stopped = daemon.stop();
    eprintln!(
        "shutdown after a storage failure took {} ms",
        stopping.elapsed().as_millis()
    );
    assert!(
        matches!(stopped, Err(ShutdownError::StoreFailed { .. })),
        "{stopped:?}"
    );
    daemon.start_again(|_, options| options.store_faults = StoreFaults::default());
    let client = daemon.client(Role::Admin).await;
    let view = client.admin().get_customer("acme").await.unwrap();
    assert_eq!(
        view.usage[0].used, 10,
        "only the acknowledged report counts"
    );
}

#[tokio::test]
async fn events_are_listed_per_customer_and_time_range() {
    let daemon = TestDaemon::start();
    let client = daemon.client(Role::Admin).await;
    client.admin().create_customer("acme", "pro").await.unwrap();
    client
        .admin()
        .create_customer("acme2", "pro")
        .await
        .unwrap();
    let start = daemon.clock.now();
    for amount in 1..=5u64 {
        let item =
            ReportItem::new("acme", "tokens", amount).with_idempotency_key([amount as u8; 16]);
        client.usage().report(item).await.unwrap();
        client
            .usage()
            .report(ReportItem::new("acme2", "tokens", 100))
            .await
            .unwrap();
        daemon.clock.advance_ms(1_000);
    }
    let all = client
        .admin()
        .list_events("acme", 0, u64::MAX)
        .await
        .unwrap();
    assert!(!all.more);
    let amounts: Vec<u64> = all.events.iter().map(|e| e.amount).collect();
    assert_eq!(amounts, vec![1, 2, 3, 4, 5]);
    assert_eq!(all.events[2].idempotency_key, Some([3; 16]));
    let middle = client
        .admin()
        .list_events("acme", start + 1_000, start + 3_000)
        .await
        .unwrap();
    let amounts: Vec<u64> = middle.events.iter().map(|e| e.amount).collect();
    assert_eq!(amounts, vec![2, 3]);
}
