//! Every wire limit holds against a peer that breaks it — a connection that never authenticates,
//! a peer trickling one byte at a time, too many requests in flight, too many connections, a
//! frame over the configured size, 0-RTT — and a well-behaved client on another connection keeps
//! being served while it happens.

use std::time::{Duration, Instant};

use tally_daemon::server::close_code;
use tally_daemon::StartOptions;
use tally_protocol::message::*;
use tally_protocol::{Client, Error};

use crate::raw_peer::{self, goodbye, RawPeer, PATIENCE};
use crate::test_daemon::TestDaemon;

/// A well-behaved client: `n` checks one after another; every one must be answered. Returns the
/// median round trip, printed for the reader (timing is never asserted).
async fn checks_keep_working(client: &Client, n: usize) -> Duration {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let outcome = client.entitlements().check("acme", "tokens", 1).await;
        took.push(started.elapsed());
        assert!(outcome.expect("a well-behaved client is served").allowed);
    }
    took.sort();
    took[n / 2]
}

async fn daemon_with_customer(
    adjust: impl FnOnce(&mut tally_daemon::config::Config),
) -> (TestDaemon, Client) {
    let daemon = TestDaemon::start_with(adjust, StartOptions::default());
    let admin = daemon.client(Role::Admin).await;
    admin.admin().create_customer("acme", "pro").await.unwrap();
    (daemon, admin)
}

#[tokio::test]
async fn a_connection_that_never_authenticates_is_cut_off() {
    let (daemon, admin) = daemon_with_customer(|c| c.server.handshake_timeout_ms = 300).await;

    // Connected, but no stream ever opened.
    let endpoint = raw_peer::endpoint(&daemon);
    let silent = endpoint
        .connect(daemon.daemon().local_addr(), "localhost")
        .unwrap()
        .await
        .unwrap();
    // A stream opened with half a Hello, then nothing.
    let mut half = RawPeer::connect(&daemon).await;
    half.send.write_all(&[200, 0, 0, 0, 1, 2]).await.unwrap();

    let median = checks_keep_working(&admin, 50).await;
    assert_eq!(
        raw_peer::close_code(&silent).await,
        u64::from(close_code::HANDSHAKE_FAILED)
    );
    let error = goodbye(half.next_frame().await);
    assert!(matches!(error, TallyError::Unauthorized { .. }), "{error}");
    assert_eq!(
        half.close_code().await,
        u64::from(close_code::HANDSHAKE_FAILED)
    );
    println!("checks while two peers hung in their handshakes: median {median:?}");
}

#[tokio::test]
async fn a_peer_trickling_one_byte_at_a_time_is_cut_off() {
    let (daemon, admin) = daemon_with_customer(|c| c.server.frame_timeout_ms = 400).await;
    let mut slow = RawPeer::authenticated(&daemon, daemon.key(Role::Client)).await;
    let mut frame = Vec::new();
    tally_protocol::codec::encode_frame(
        &ClientFrame::Request(RequestFrame {
            id: 1,
            request: Request::Report(ReportItem::new("acme", "tokens", 5)),
        }),
        &mut frame,
    )
    .unwrap();
    // The peer sends one byte every 50 ms: each arrives well inside the idle timeout, but the
    // frame as a whole cannot arrive inside the frame timeout.
    let trickle = async {
        for byte in &frame {
            if slow.send.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the whole frame was accepted at one byte per 50 ms");
    };
    let (_, median) = tokio::join!(trickle, checks_keep_working(&admin, 200));
    let error = goodbye(slow.next_frame().await);
    assert!(error.to_string().contains("longer than 400 ms"), "{error}");
    assert_eq!(
        slow.close_code().await,
        u64::from(close_code::PROTOCOL_VIOLATION)
    );
    let view = admin.admin().get_customer("acme").await.unwrap();
    assert_eq!(
        view.usage[0].used, 0,
        "the trickled report was never applied"
    );
    println!("checks while a peer trickled bytes: median {median:?}");
}

#[tokio::test]
async fn more_requests_in_flight_than_announced_cut_the_peer_off_after_answering_the_rest() {
    let (daemon, admin) = daemon_with_customer(|c| c.server.inflight_per_stream = 4).await;
    let mut greedy = RawPeer::connect(&daemon).await;
    let ServerFrame::Welcome(welcome) = greedy.hello(daemon.key(Role::Client)).await else {
        panic!("expected a welcome")
    };
    assert_eq!(welcome.inflight_max, 4);
    // 64 durable reports in one write: the daemon reads them far faster than it can fsync.
    let mut burst = Vec::new();
    for id in 1..=64 {
        tally_protocol::codec::encode_frame(
            &ClientFrame::Request(RequestFrame {
                id,
                request: Request::Report(ReportItem::new("acme", "tokens", 1)),
            }),
            &mut burst,
        )
        .unwrap();
    }
    greedy.send.write_all(&burst).await.unwrap();
    let mut answered = 0;
    let error = loop {
        match greedy.next_frame().await {
            ServerFrame::Response(response) => {
                assert!(matches!(response.reply, Reply::Ok(_)), "{response:?}");
                answered += 1;
            }
            ServerFrame::Goodbye(error) => break error,
            ServerFrame::Welcome(_) => panic!("a second welcome"),
        }
    };
    assert!(
        error.to_string().contains("more than 4 requests in flight"),
        "{error}"
    );
    assert_eq!(
        greedy.close_code().await,
        u64::from(close_code::PROTOCOL_VIOLATION)
    );
    assert!((1..=4).contains(&answered), "{answered} answered");
    // Exactly the answered reports were applied; the rest were never read into the engine.
    let view = admin.admin().get_customer("acme").await.unwrap();
    assert_eq!(view.usage[0].used, answered);
    checks_keep_working(&admin, 20).await;
}

#[tokio::test]
async fn calls_given_up_on_keep_their_slot_until_the_daemon_answers() {
    let (daemon, admin) = daemon_with_customer(|c| c.server.inflight_per_stream = 2).await;
    let client = daemon.client(Role::Client).await;
    // Each call is abandoned as soon as it has been queued for sending (a zero timeout polls it
    // once): the daemon still counts the sent ones until it answers, so the client must not
    // send more meanwhile, or the daemon would cut the connection off.
    for _ in 0..20 {
        let items = (0..2_000)
            .map(|_| ReportItem::new("acme", "tokens", 1))
            .collect();
        let abandoned =
            tokio::time::timeout(Duration::ZERO, client.usage().report_batch(items)).await;
        assert!(abandoned.is_err(), "a batch was answered at once");
    }
    // This one waits for a slot, so it is sent once an abandoned batch is answered.
    let last = client
        .usage()
        .report(ReportItem::new("acme", "tokens", 1))
        .await
        .expect("the connection was never cut off");
    let view = admin.admin().get_customer("acme").await.unwrap();
    assert_eq!(
        view.usage[0].used,
        last.amount + 2 * 2_000,
        "exactly the two batches that had slots were sent"
    );
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_and_slots_come_back() {
    let (daemon, admin) = daemon_with_customer(|c| c.server.max_connections = 2).await;
    let second = daemon.client(Role::Client).await;
    let refused = Client::connect(daemon.client_config(daemon.key(Role::Client))).await;
    assert!(
        matches!(refused, Err(Error::Connect { .. })),
        "a third connection was accepted"
    );
    checks_keep_working(&admin, 10).await;
    drop(second);
    // The daemon frees the slot when it sees the close; connect until it has.
    let deadline = Instant::now() + PATIENCE;
    let third = loop {
        match Client::connect(daemon.client_config(daemon.key(Role::Client))).await {
            Ok(client) => break client,
            Err(_) if Instant::now() < deadline => tokio::task::yield_now().await,
            Err(e) => panic!("the freed slot never came back: {e}"),
        }
    };
    third
        .entitlements()
        .check("acme", "tokens", 1)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_configured_frame_limit_holds_and_the_client_says_so_before_sending() {
    let (daemon, admin) = daemon_with_customer(|c| c.server.frame_bytes_max = 4096).await;
    assert_eq!(admin.welcome().frame_bytes_max, 4096);
    let items: Vec<ReportItem> = (0..200)
        .map(|_| ReportItem::new("acme", "tokens", 1))
        .collect();
    // The client library refuses before sending, and its connection stays usable.
    let refused = admin.usage().report_batch(items.clone()).await;
    let Err(Error::Rejected(TallyError::InvalidRequest { reason })) = refused else {
        panic!("expected a local refusal, got {refused:?}")
    };
    assert!(reason.contains("limit is 4096"), "{reason}");
    checks_keep_working(&admin, 5).await;
    // A raw peer that sends it anyway is cut off.
    let mut raw = RawPeer::authenticated(&daemon, daemon.key(Role::Client)).await;
    raw.send_frame(&ClientFrame::Request(RequestFrame {
        id: 1,
        request: Request::ReportBatch(items),
    }))
    .await;
    let error = goodbye(raw.next_frame().await);
    assert!(error.to_string().contains("the limit is 4096"), "{error}");
    assert_eq!(
        raw.close_code().await,
        u64::from(close_code::PROTOCOL_VIOLATION)
    );
    let view = admin.admin().get_customer("acme").await.unwrap();
    assert_eq!(view.usage[0].used, 0);
}

#[tokio::test]
async fn early_data_is_never_accepted() {
    let daemon = TestDaemon::start();
    let endpoint = raw_peer::endpoint(&daemon);
    let addr = daemon.daemon().local_addr();
    // A first full connection, which leaves the endpoint a session ticket.
    let first = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = first.open_bi().await.unwrap();
    let mut hello = Vec::new();
    tally_protocol::codec::encode_frame(
        &ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
            api_key: daemon.key(Role::Client),
        }),
        &mut hello,
    )
    .unwrap();
    send.write_all(&hello).await.unwrap();
    let mut body = rkyv::util::AlignedVec::new();
    tally_protocol::framing::read_frame(&mut recv, FRAME_BYTES_MAX, &mut body)
        .await
        .unwrap();
    // A resumed connection may not send data before the handshake completes.
    let resumed = endpoint.connect(addr, "localhost").unwrap();
    match resumed.into_0rtt() {
        Ok(_) => panic!("the daemon offered 0-RTT"),
        Err(connecting) => {
            // The full handshake still works.
            connecting.await.unwrap().close(0u32.into(), b"done");
        }
    }
    first.close(0u32.into(), b"done");
}
