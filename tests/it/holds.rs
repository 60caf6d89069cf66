//! Reservations over the wire: held amounts are unavailable, holds expire by the injected clock.

use std::time::Duration;

use tally_protocol::message::{ReportItem, Role, TallyError, TopUpAmount};
use tally_protocol::Error;

use crate::test_daemon::TestDaemon;

#[tokio::test]
async fn a_hold_blocks_spending_until_it_expires_by_the_clock() {
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    admin.admin().create_customer("w", "wallet").await.unwrap();
    admin
        .admin()
        .top_up("w", TopUpAmount::Units(10_000), None)
        .await
        .unwrap();

    let hold = admin
        .holds()
        .reserve("w", "gpt-4", 33, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(hold.allowed);
    assert_eq!(hold.held, 9_900);
    assert!(
        !admin
            .entitlements()
            .check("w", "gpt-4", 1)
            .await
            .unwrap()
            .allowed
    );
    let refused = admin
        .usage()
        .report(ReportItem::new("w", "gpt-4", 1).only_if_allowed())
        .await;
    assert_eq!(
        refused.unwrap_err(),
        Error::Rejected(TallyError::InsufficientBalance {
            cost: 300,
            available: 100
        })
    );

    daemon.clock.advance_ms(30_000);
    assert!(
        admin
            .entitlements()
            .check("w", "gpt-4", 3)
            .await
            .unwrap()
            .allowed
    );
    let late = admin.holds().settle(hold.hold.unwrap(), 3, None).await;
    assert!(matches!(
        late,
        Err(Error::Rejected(TallyError::UnknownHold { .. }))
    ));
    let view = admin.admin().get_customer("w").await.unwrap();
    assert!(view.holds.is_empty());
    assert_eq!(
        view.balance_units, 10_000,
        "an expired hold charges nothing"
    );
}

#[tokio::test]
async fn settle_charges_the_actual_and_release_charges_nothing() {
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    admin.admin().create_customer("acme", "pro").await.unwrap();
    let hold = admin
        .holds()
        .reserve("acme", "tokens", 5_000, Duration::from_secs(60))
        .await
        .unwrap();
    let settled = admin
        .holds()
        .settle(hold.hold.unwrap(), 4_200, None)
        .await
        .unwrap();
    assert_eq!(settled.amount, 4_200);
    let hold = admin
        .holds()
        .reserve("acme", "tokens", 1_000, Duration::from_secs(60))
        .await
        .unwrap();
    let released = admin.holds().release(hold.hold.unwrap()).await.unwrap();
    assert_eq!(released.released, 1_000);
    let view = admin.admin().get_customer("acme").await.unwrap();
    assert_eq!(view.usage[0].used, 4_200);
}
