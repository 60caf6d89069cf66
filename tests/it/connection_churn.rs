//! Clients that connect per request — a shell loop of CLI calls, a cron job, a serverless
//! function — never lock others out: a client that closes frees its connection slot at once, and
//! one that vanishes without a word (its process killed) frees it when the idle timeout passes.

use std::time::{Duration, Instant};

use tally_daemon::StartOptions;
use tally_protocol::message::Role;
use tally_protocol::{Client, Error};

use crate::test_daemon::TestDaemon;

const CONNECTIONS_MAX: u32 = 16;

/// Polls `stats` (on a connection of its own) until it counts `expected` connections, itself
/// included; returns how long that took, or fails after `patience`.
async fn connections_reach(monitor: &Client, expected: u64, patience: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let connections = monitor.monitor().stats().await.unwrap().connections;
        if connections == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < patience,
            "{connections} connections after {patience:?}; expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn clients_that_close_free_their_slots_at_once() {
    let daemon = TestDaemon::start_with(
        |c| {
            c.server.max_connections = CONNECTIONS_MAX;
            c.server.idle_timeout_ms = 60_000;
        },
        StartOptions::default(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let admin = daemon.client(Role::Admin).await;
        admin.admin().create_customer("c1", "pro").await.unwrap();
        admin.close().await;
    });

    // As a shell loop of CLI calls: each client's runtime (its process) ends right after close,
    // so only what `close` sent before returning reaches the daemon.
    let config = daemon.client_config(daemon.key(Role::Client));
    for n in 0..3 * CONNECTIONS_MAX {
        let one_call = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        one_call.block_on(async {
            let client = Client::connect(config.clone())
                .await
                .unwrap_or_else(|e| panic!("connection {n} of a sequence was refused: {e}"));
            let outcome = client
                .entitlements()
                .check("c1", "tokens", 1)
                .await
                .unwrap();
            assert!(outcome.allowed);
            client.close().await;
        });
        drop(one_call);
    }

    runtime.block_on(async {
        let monitor = daemon.client(Role::Monitor).await;
        let took = connections_reach(&monitor, 1, Duration::from_secs(1)).await;
        println!(
            "the connections gauge was back to the monitor alone {took:?} after the last close"
        );
    });
}

#[tokio::test]
async fn a_closed_client_fails_later_calls_with_a_clear_error() {
    let daemon = TestDaemon::start();
    let client = daemon.client(Role::Admin).await;
    client.close().await;
    let after = client.entitlements().check("c1", "tokens", 1).await;
    assert!(
        matches!(&after, Err(Error::Closed(reason)) if reason.contains("client closed")),
        "{after:?}"
    );
}

#[test]
fn a_client_that_vanishes_frees_its_slot_when_the_idle_timeout_passes() {
    const SLOTS: u32 = 4;
    const IDLE_TIMEOUT_MS: u64 = 1_000;
    let daemon = TestDaemon::start_with(
        |c| {
            c.server.max_connections = SLOTS;
            c.server.idle_timeout_ms = IDLE_TIMEOUT_MS;
        },
        StartOptions::default(),
    );
    let config = daemon.client_config(daemon.key(Role::Client));
    // As a SIGKILL leaves them: connected, then nothing at all — no close, no packet — from a
    // runtime that is gone (the clients are leaked so no code of ours runs for them).
    let vanishing = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    vanishing.block_on(async {
        for _ in 0..SLOTS {
            std::mem::forget(Client::connect(config.clone()).await.unwrap());
        }
    });
    drop(vanishing);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let refused = Client::connect(config.clone()).await;
        assert!(
            matches!(&refused, Err(Error::Connect { .. })),
            "every slot is held until the idle timeout: {:?}",
            refused.map(|_| ())
        );
        let started = Instant::now();
        let patience = Duration::from_millis(5 * IDLE_TIMEOUT_MS);
        let client = loop {
            match Client::connect(config.clone()).await {
                Ok(client) => break client,
                Err(e) => assert!(started.elapsed() < patience, "still refused: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!(
            "a slot was free {:?} after the vanished clients' last packet (idle timeout {IDLE_TIMEOUT_MS} ms)",
            started.elapsed()
        );
        client.close().await;
    });
}
