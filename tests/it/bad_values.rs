//! A value outside a limit is a typed rejection of that one request: the stream, the connection
//! and every other request in flight on it carry on. The daemon answers it for a raw peer; the
//! client library refuses it before sending, with the same error. Zero is a normal amount.

use std::time::Duration;

use tally_protocol::message::*;
use tally_protocol::{Client, ConnectionState, Error};

use crate::raw_peer::RawPeer;
use crate::test_daemon::TestDaemon;

/// One request of each bad value a product could send by mistake.
fn bad_requests() -> Vec<Request> {
    vec![
        Request::Report(ReportItem::new("w", "gpt-4", AMOUNT_MAX + 1)),
        Request::Report(ReportItem::new("", "gpt-4", 1)),
        Request::Report(ReportItem::new(
            "x".repeat(CUSTOMER_ID_BYTES_MAX + 1),
            "gpt-4",
            1,
        )),
        Request::Reserve(ReserveRequest {
            model: None,
            customer: "w".into(),
            feature: "gpt-4".into(),
            amount: 1,
            ttl_ms: 0,
        }),
        Request::ReportBatch(Vec::new()),
        Request::CreateCustomer(CustomerPlan {
            customer: String::new(),
            plan: "pro".into(),
        }),
        Request::Check(CheckRequest {
            model: None,
            customer: "w".into(),
            feature: String::new(),
            amount: 1,
        }),
    ]
}

fn good_check(id: u64) -> RequestFrame {
    RequestFrame {
        id,
        request: Request::Check(CheckRequest {
            model: None,
            customer: "w".into(),
            feature: "gpt-4".into(),
            amount: 1,
        }),
    }
}

async fn daemon_with_wallet() -> (TestDaemon, Client) {
    let daemon = TestDaemon::start();
    let admin = daemon.client(Role::Admin).await;
    admin.admin().create_customer("w", "wallet").await.unwrap();
    admin
        .admin()
        .top_up("w", TopUpAmount::Units(500_000), None)
        .await
        .unwrap();
    (daemon, admin)
}

#[tokio::test]
async fn the_daemon_answers_each_bad_value_with_a_typed_error_and_keeps_the_stream() {
    let (daemon, _admin) = daemon_with_wallet().await;
    let mut peer = RawPeer::authenticated(&daemon, daemon.key(Role::Admin)).await;
    let bad = bad_requests();
    // 64 in flight: the bad ones among good checks, all written before any answer is read.
    let mut bad_ids = Vec::new();
    for id in 0..64u64 {
        let frame = match bad.get((id / 9) as usize) {
            Some(request) if id % 9 == 4 => {
                bad_ids.push(id);
                RequestFrame {
                    id,
                    request: request.clone(),
                }
            }
            _ => good_check(id),
        };
        peer.send_frame(&ClientFrame::Request(frame)).await;
    }
    assert_eq!(bad_ids.len(), bad.len());
    let mut answered = 0;
    while answered < 64 {
        let ServerFrame::Response(response) = peer.next_frame().await else {
            panic!("the stream must carry on")
        };
        answered += 1;
        match (bad_ids.contains(&response.id), response.reply) {
            (true, Reply::Err(TallyError::InvalidRequest { reason })) => {
                assert!(!reason.is_empty());
            }
            (false, Reply::Ok(Response::Check(check))) => assert!(check.allowed),
            (is_bad, reply) => panic!("request {} (bad: {is_bad}): {reply:?}", response.id),
        }
    }
    // The same stream still serves.
    peer.send_frame(&ClientFrame::Request(good_check(1_000)))
        .await;
    let ServerFrame::Response(last) = peer.next_frame().await else {
        panic!("the stream must carry on")
    };
    assert_eq!(last.id, 1_000);
}

#[tokio::test]
async fn the_client_refuses_bad_values_locally_and_its_other_calls_carry_on() {
    let (daemon, admin) = daemon_with_wallet().await;
    let client = daemon.client(Role::Admin).await;
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..57 {
        let client = client.clone();
        calls.spawn(async move {
            let item = ReportItem::new("w", "gpt-4", 1).with_idempotency_key([n; 16]);
            client.usage().report(item).await.map(|_| ())
        });
    }
    for request in bad_requests() {
        let client = client.clone();
        calls.spawn(async move {
            match client.call(request).await {
                Err(Error::Rejected(TallyError::InvalidRequest { .. })) => Ok(()),
                other => panic!("expected a local typed rejection, got {other:?}"),
            }
        });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(client.state(), ConnectionState::Connected);
    let view = admin.admin().get_customer("w").await.unwrap();
    let gpt4 = view.usage.iter().find(|u| u.feature == "gpt-4").unwrap();
    assert_eq!(gpt4.used, 57, "every good report counted once");
    // The bad ones never left the process: the daemon counted only what it was sent.
    let stats = admin.monitor().stats().await.unwrap();
    let seen = |operation: &str| {
        stats
            .operations
            .iter()
            .find(|op| op.operation == operation)
            .map_or(0, |op| op.count)
    };
    assert_eq!(seen("report"), 57);
    assert_eq!(seen("create_customer"), 1, "the wallet's, not the bad one");
    for operation in ["reserve", "report_batch", "check"] {
        assert_eq!(seen(operation), 0, "{operation}");
    }
}

#[tokio::test]
async fn zero_is_a_normal_amount() {
    let (daemon, admin) = daemon_with_wallet().await;
    let client = daemon.client(Role::Client).await;
    let before = admin.admin().get_customer("w").await.unwrap().seq;
    let empty = client
        .usage()
        .report(ReportItem::new("w", "gpt-4", 0))
        .await
        .unwrap();
    assert_eq!((empty.amount, empty.charged, empty.seq), (0, 0, before));
    assert!(
        client
            .entitlements()
            .check("w", "gpt-4", 0)
            .await
            .unwrap()
            .allowed
    );
    let hold = client
        .holds()
        .reserve("w", "gpt-4", 0, Duration::from_secs(30))
        .await
        .unwrap();
    let settled = client
        .holds()
        .settle(hold.hold.expect("a hold of nothing is allowed"), 0, None)
        .await
        .unwrap();
    assert_eq!(settled.charged, 0);
    let events = admin.admin().list_events("w", 0, u64::MAX).await.unwrap();
    assert!(events.events.is_empty(), "{:?}", events.events);
}

#[tokio::test]
async fn a_balance_top_up_is_whole_cents_within_the_configured_range() {
    let (_daemon, admin) = daemon_with_wallet().await;
    for (units, names) in [
        (40, "whole number of cents"),
        (50, "whole number of cents"),
        (5_000, "minimum of $1.00"),
        (100_000_100, "maximum of $10000.00"),
    ] {
        let refused = admin
            .admin()
            .top_up("w", TopUpAmount::Units(units), None)
            .await;
        assert!(
            matches!(&refused, Err(Error::Rejected(TallyError::InvalidRequest { reason })) if reason.contains(names)),
            "{units}: {refused:?}"
        );
    }
    let view = admin.admin().get_customer("w").await.unwrap();
    let loaded = admin
        .admin()
        .top_up("w", TopUpAmount::Units(10_000), None)
        .await
        .unwrap();
    assert_eq!(loaded.balance_added_units, loaded.transaction.total_units);
    assert_eq!(
        (loaded.transaction.fee_units, loaded.transaction.net_units),
        (4_500, 5_500),
        "$1.00 pays $0.05 + $0.40 and nets $0.55"
    );
    assert_eq!(loaded.seq, view.seq + 1, "refusals changed nothing");
}
