//! A client stays up across a daemon restart: it reconnects by itself, calls made meanwhile wait
//! for it, keyed writes in flight are sent again and counted once, reads are answered after the
//! reconnect, and its state says what happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tally_protocol::message::*;
use tally_protocol::ConnectionState;

use crate::test_daemon::TestDaemon;

const CUSTOMERS: u64 = 4;
const TASKS: u64 = 16;
const REPORTS_PER_TASK: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_carries_on_across_a_daemon_restart() {
    let mut daemon = TestDaemon::start();
    let addr = daemon.daemon().local_addr();
    let admin = daemon.client(Role::Admin).await;
    for c in 0..CUSTOMERS {
        admin
            .admin()
            .create_customer(&format!("c{c}"), "pro")
            .await
            .unwrap();
    }
    admin.close().await;
    let client = daemon.client(Role::Client).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut changes = client.state_changes();
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let state = changes.borrow_and_update().clone();
                seen.lock().unwrap().push(state);
            }
        })
    };

    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (client, acknowledged) = (client.clone(), acknowledged.clone());
        tasks.spawn(async move {
            for n in 0..REPORTS_PER_TASK {
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&task.to_be_bytes());
                key[8..].copy_from_slice(&n.to_be_bytes());
                let customer = format!("c{}", n % CUSTOMERS);
                let item = ReportItem::new(&customer, "tokens", 1).with_idempotency_key(key);
                client.usage().report(item).await.expect("a keyed report");
                acknowledged.fetch_add(1, Ordering::Relaxed);
                if n % 10 == 0 {
                    let check = client.entitlements().check(&customer, "tokens", 1).await;
                    assert!(check.expect("a read").allowed);
                }
            }
        });
    }
    while acknowledged.load(Ordering::Relaxed) < TASKS * REPORTS_PER_TASK / 4 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // Same address, so the client finds the new daemon where the old one was.
    tokio::task::block_in_place(|| daemon.restart_with(|config, _| config.server.listen = addr));
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    assert_eq!(client.state(), ConnectionState::Connected);
    let states = seen.lock().unwrap().clone();
    assert!(
        states
            .iter()
            .any(|s| matches!(s, ConnectionState::Reconnecting { .. })),
        "{states:?}"
    );
    let admin = daemon.client(Role::Admin).await;
    let mut total = 0;
    for c in 0..CUSTOMERS {
        let view = admin.admin().get_customer(&format!("c{c}")).await.unwrap();
        total += view.usage[0].used;
    }
    assert_eq!(total, TASKS * REPORTS_PER_TASK, "every keyed report once");
    println!("states the client went through: {states:?}");
    client.close().await;
    drop(client);
    recorder.await.unwrap();
}
