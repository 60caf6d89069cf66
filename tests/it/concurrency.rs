//! 16 tasks race atomic consume-reports and reservations against one credits customer: it never
//! spends more than it bought, and the final credits equal purchases minus what the answers say
//! was consumed.

use std::time::Duration;

use tally_protocol::message::{ReportItem, Role, TallyError, TopUpAmount};
use tally_protocol::Error;

use crate::test_daemon::TestDaemon;

const TASKS: u64 = 16;
const ROUNDS: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_consumers_never_overspend_and_the_books_balance() {
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    admin
        .admin()
        .create_customer("race", "images")
        .await
        .unwrap();
    admin
        .admin()
        .top_up("race", TopUpAmount::Packs(2), None)
        .await
        .unwrap();
    let bought = 1_000i64;

    let app = daemon.client(Role::Client).await;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let (mut consumed, mut denied) = (0i64, 0u64);
            for round in 0..ROUNDS {
                let amount = 1 + (task * 7 + round * 3) % 5;
                if (task + round) % 2 == 0 {
                    match app
                        .usage()
                        .report(ReportItem::new("race", "image-gen", amount).only_if_allowed())
                        .await
                    {
                        Ok(outcome) => consumed += outcome.charged,
                        Err(Error::Rejected(TallyError::InsufficientBalance { .. })) => denied += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                } else {
                    let hold = app
                        .holds()
                        .reserve("race", "image-gen", amount, Duration::from_secs(60))
                        .await
                        .unwrap();
                    let Some(id) = hold.hold else {
                        denied += 1;
                        continue;
                    };
                    if round % 3 == 0 {
                        app.holds().release(id).await.unwrap();
                    } else {
                        // Actual usage is at most the estimate here, so it was paid for.
                        let outcome = app
                            .holds()
                            .settle(id, amount - round % 2, None)
                            .await
                            .unwrap();
                        consumed += outcome.charged;
                    }
                }
            }
            (consumed, denied)
        }));
    }
    let mut consumed = 0;
    let mut denied = 0;
    for task in tasks {
        let (c, d) = task.await.unwrap();
        consumed += c;
        denied += d;
    }
    let view = admin.admin().get_customer("race").await.unwrap();
    assert!(view.holds.is_empty());
    assert!(
        view.purchased_credits >= 0,
        "spent more than bought: {}",
        view.purchased_credits
    );
    assert_eq!(view.purchased_credits, bought - consumed);
    assert_eq!(view.usage[0].used as i64, consumed, "one credit per image");
    assert!(
        denied > 0,
        "the race must exhaust the credits for the test to mean anything"
    );
}
