//! Hostile and mistaken peers: garbage, oversized frames, no Hello, wrong key, wrong version,
//! wrong role. Each gets a typed error or a clean close with a code, and the daemon keeps serving
//! everyone else with state unchanged.

use tally_protocol::message::*;
use tally_protocol::{Client, Error};

use crate::raw_peer::{goodbye, RawPeer};
use crate::test_daemon::TestDaemon;

#[tokio::test]
async fn bad_peers_are_cut_off_and_good_ones_keep_being_served() {
    let daemon = TestDaemon::start();
    let good = daemon.client(Role::Admin).await;
    good.admin().create_customer("acme", "pro").await.unwrap();
    good.usage()
        .report(ReportItem::new("acme", "tokens", 7))
        .await
        .unwrap();

    // Random bytes where the Hello should be.
    let mut peer = RawPeer::connect(&daemon).await;
    let mut garbage = 64u32.to_le_bytes().to_vec();
    garbage.extend((0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(11)));
    peer.send.write_all(&garbage).await.unwrap();
    assert!(matches!(
        goodbye(peer.next_frame().await),
        TallyError::InvalidRequest { .. }
    ));
    assert_eq!(peer.close_code().await, 2);

    // A request before Hello.
    let mut peer = RawPeer::connect(&daemon).await;
    let request = ClientFrame::Request(RequestFrame {
        id: 1,
        request: Request::Report(ReportItem::new("acme", "tokens", 1_000)),
    });
    peer.send_frame(&request).await;
    assert!(matches!(
        goodbye(peer.next_frame().await),
        TallyError::Unauthorized { .. }
    ));

    // An oversized frame after a good Hello.
    let mut peer = RawPeer::connect(&daemon).await;
    assert!(matches!(
        peer.hello(daemon.key(Role::Admin)).await,
        ServerFrame::Welcome(_)
    ));
    peer.send
        .write_all(&(FRAME_BYTES_MAX + 1).to_le_bytes())
        .await
        .unwrap();
    let error = goodbye(peer.next_frame().await);
    assert!(
        error
            .to_string()
            .contains(&format!("frame is {} bytes", FRAME_BYTES_MAX + 1)),
        "{error}"
    );
    assert_eq!(peer.close_code().await, 1);

    // A malformed frame after a good Hello.
    let mut peer = RawPeer::connect(&daemon).await;
    assert!(matches!(
        peer.hello(daemon.key(Role::Client)).await,
        ServerFrame::Welcome(_)
    ));
    peer.send.write_all(&garbage).await.unwrap();
    assert!(matches!(
        goodbye(peer.next_frame().await),
        TallyError::InvalidRequest { .. }
    ));

    // Wrong key, wrong version, wrong role — through the client library.
    let wrong_key = Client::connect(daemon.client_config("tally_admin_guess".into())).await;
    assert!(matches!(
        wrong_key.err(),
        Some(Error::Rejected(TallyError::Unauthorized { .. }))
    ));
    let mut peer = RawPeer::connect(&daemon).await;
    peer.send_frame(&ClientFrame::Hello(Hello {
        version: PROTOCOL_VERSION + 1,
        api_key: daemon.key(Role::Admin),
    }))
    .await;
    assert_eq!(
        goodbye(peer.next_frame().await),
        TallyError::VersionMismatch {
            server: PROTOCOL_VERSION,
            client: PROTOCOL_VERSION + 1
        }
    );
    let app = daemon.client(Role::Client).await;
    let forbidden = app.admin().create_customer("mallory", "pro").await;
    assert!(matches!(
        forbidden,
        Err(Error::Rejected(TallyError::Forbidden {
            role: Role::Client,
            ..
        }))
    ));
    let monitor = daemon.client(Role::Monitor).await;
    let forbidden = monitor.entitlements().check("acme", "tokens", 1).await;
    assert!(matches!(
        forbidden,
        Err(Error::Rejected(TallyError::Forbidden { .. }))
    ));

    // The first connection still works, and nothing changed.
    let view = good.admin().get_customer("acme").await.unwrap();
    assert_eq!(view.usage[0].used, 7);
    assert!(matches!(
        good.admin().get_customer("mallory").await,
        Err(Error::Rejected(TallyError::UnknownCustomer { .. }))
    ));
}
