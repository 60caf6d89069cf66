//! Idempotency keys over the wire: a retry returns the first outcome and changes nothing.

use tally_protocol::message::{BatchItemResult, ReportItem, Role, TallyError};
use tally_protocol::Error;

use crate::test_daemon::TestDaemon;

#[tokio::test]
async fn a_retried_report_is_a_duplicate_and_counts_once() {
    let daemon = TestDaemon::start();
    let client = daemon.client(Role::Admin).await;
    client.admin().create_customer("acme", "pro").await.unwrap();
    let key = [9u8; 16];
    let item = ReportItem::new("acme", "tokens", 250).with_idempotency_key(key);
    let first = client.usage().report(item.clone()).await.unwrap();
    let retry = client.usage().report(item.clone()).await.unwrap();
    assert!(!first.duplicate);
    assert!(retry.duplicate);
    assert_eq!(retry.seq, first.seq);
    let in_batch = client.usage().report_batch(vec![item]).await.unwrap();
    assert!(matches!(&in_batch[0], BatchItemResult::Ok(o) if o.duplicate));
    let view = client.admin().get_customer("acme").await.unwrap();
    assert_eq!(view.usage[0].used, 250);

    let changed = ReportItem::new("acme", "tokens", 251).with_idempotency_key(key);
    let conflict = client.usage().report(changed).await;
    assert!(matches!(
        conflict,
        Err(Error::Rejected(TallyError::Conflict { .. }))
    ));
}

#[tokio::test]
async fn a_batch_spanning_shards_answers_every_item_in_order() {
    let daemon = TestDaemon::start();
    let client = daemon.client(Role::Admin).await;
    for i in 0..20 {
        client
            .admin()
            .create_customer(&format!("c{i}"), "pro")
            .await
            .unwrap();
    }
    let mut items: Vec<ReportItem> = (0..20)
        .map(|i| ReportItem::new(format!("c{i}"), "tokens", i + 1))
        .collect();
    items.push(ReportItem::new("nobody", "tokens", 1));
    let results = client.usage().report_batch(items).await.unwrap();
    assert_eq!(results.len(), 21);
    for (i, result) in results[..20].iter().enumerate() {
        assert!(
            matches!(result, BatchItemResult::Ok(o) if o.amount == i as u64 + 1),
            "item {i}: {result:?}"
        );
    }
    assert!(matches!(
        results[20],
        BatchItemResult::Err(TallyError::UnknownCustomer { .. })
    ));
}
