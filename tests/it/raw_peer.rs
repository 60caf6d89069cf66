//! A QUIC peer that speaks raw bytes, as a hostile or broken client would: it can skip the
//! handshake, trickle bytes, pipeline past the limits or send garbage.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rkyv::util::AlignedVec;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tally_protocol::codec::{decode, encode_frame};
use tally_protocol::framing::read_frame;
use tally_protocol::message::*;

use crate::test_daemon::TestDaemon;

/// How long a test waits for the daemon to say or do something before failing.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// A client endpoint that trusts the daemon's certificate. It keeps TLS session tickets and asks
/// for 0-RTT, so a second connection can try to send early data.
pub(crate) fn endpoint(daemon: &TestDaemon) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(daemon.daemon().cert_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = true;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).unwrap(),
    )));
    endpoint
}

/// One raw connection with one bidirectional stream.
pub(crate) struct RawPeer {
    pub connection: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    _endpoint: quinn::Endpoint,
}

impl RawPeer {
    /// Connects and opens a stream (QUIC sends nothing for it until the first byte is written).
    pub(crate) async fn connect(daemon: &TestDaemon) -> RawPeer {
        let endpoint = endpoint(daemon);
        let connection = endpoint
            .connect(daemon.daemon().local_addr(), "localhost")
            .unwrap()
            .await
            .unwrap();
        let (send, recv) = connection.open_bi().await.unwrap();
        RawPeer {
            connection,
            send,
            recv,
            _endpoint: endpoint,
        }
    }

    /// Connects and says Hello with `api_key`; panics unless welcomed.
    pub(crate) async fn authenticated(daemon: &TestDaemon, api_key: String) -> RawPeer {
        let mut peer = RawPeer::connect(daemon).await;
        match peer.hello(api_key).await {
            ServerFrame::Welcome(_) => peer,
            other => panic!("expected a welcome, got {other:?}"),
        }
    }

    pub(crate) async fn send_frame(&mut self, frame: &ClientFrame) {
        let mut bytes = Vec::new();
        encode_frame(frame, &mut bytes).unwrap();
        self.send.write_all(&bytes).await.unwrap();
    }

    pub(crate) async fn hello(&mut self, api_key: String) -> ServerFrame {
        self.send_frame(&ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
            api_key,
        }))
        .await;
        self.next_frame().await
    }

    pub(crate) async fn next_frame(&mut self) -> ServerFrame {
        self.try_next_frame()
            .await
            .expect("the stream ended without a word")
    }

    /// The next frame, or `None` if the stream ends or fails first.
    pub(crate) async fn try_next_frame(&mut self) -> Option<ServerFrame> {
        let mut body = AlignedVec::new();
        let read = tokio::time::timeout(
            PATIENCE,
            read_frame(&mut self.recv, FRAME_BYTES_MAX, &mut body),
        );
        match read.await.expect("an answer in time") {
            Ok(true) => Some(decode(&body).expect("a valid server frame")),
            Ok(false) | Err(_) => None,
        }
    }

    /// Waits for the daemon to close the connection and returns its code.
    pub(crate) async fn close_code(&self) -> u64 {
        close_code(&self.connection).await
    }
}

/// Waits for the daemon to close `connection` and returns its application close code.
pub(crate) async fn close_code(connection: &quinn::Connection) -> u64 {
    let closed = tokio::time::timeout(PATIENCE, connection.closed())
        .await
        .expect("closed in time");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => close.error_code.into_inner(),
        other => panic!("expected an application close, got {other}"),
    }
}

/// The error of a `Goodbye`; panics on any other frame.
pub(crate) fn goodbye(frame: ServerFrame) -> TallyError {
    match frame {
        ServerFrame::Goodbye(error) => error,
        other => panic!("expected a goodbye, got {other:?}"),
    }
}
