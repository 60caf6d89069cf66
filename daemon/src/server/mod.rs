//! The QUIC edge: accept connections, authenticate each stream, decode requests, route them to
//! shards, encode answers. It never touches customer state or storage directly.

mod stream;
pub mod telemetry;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use tally_protocol::message::ALPN;
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::credentials::{ApiKeys, Credentials};
use crate::router::Router;

/// QUIC application close codes the daemon uses.
pub mod close_code {
    /// Normal shutdown or client-requested close.
    pub const NORMAL: u32 = 0;
    /// The peer broke the protocol (malformed or oversized frame).
    pub const PROTOCOL_VIOLATION: u32 = 1;
    /// The peer failed the handshake (bad key, wrong version, no Hello in time).
    pub const HANDSHAKE_FAILED: u32 = 2;
    /// The daemon is shutting down.
    pub const SHUTTING_DOWN: u32 = 3;
}

/// What every stream handler needs; shared by all connections.
pub struct ServerContext {
    /// Routes requests to shards.
    pub router: Router,
    /// Accepted API keys.
    pub keys: ApiKeys,
    /// Limits from `[server]`.
    pub limits: ServerConfig,
    /// Counters for `stats` (only the server thread touches them; the lock is uncontended).
    pub telemetry: Mutex<telemetry::Telemetry>,
    /// The daemon's clock (for `stats` timestamps).
    pub clock: Arc<dyn Clock>,
}

impl ServerContext {
    fn telemetry(&self) -> std::sync::MutexGuard<'_, telemetry::Telemetry> {
        self.telemetry.lock().expect("telemetry lock poisoned")
    }
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// TLS configuration was refused.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds the QUIC endpoint with TLS 1.3, ALPN `tally/1`, and the connection limits.
pub fn bind(
    limits: &ServerConfig,
    credentials: &Credentials,
) -> Result<quinn::Endpoint, BindError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| BindError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(credentials.cert_chain.clone(), credentials.key.clone_key())
        .map_err(|e| BindError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| BindError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits.streams_per_connection.into())
        .max_concurrent_uni_streams(0u32.into())
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_millis(limits.idle_timeout_ms))
                .map_err(|e| BindError::Tls(format!("idle timeout: {e}")))?,
        ));
    server.transport_config(Arc::new(transport));
    quinn::Endpoint::server(server, limits.listen).map_err(|source| BindError::Bind {
        addr: limits.listen,
        source,
    })
}

/// Accepts connections until `stop` fires, then closes the endpoint.
pub async fn serve(
    endpoint: quinn::Endpoint,
    context: Arc<ServerContext>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                actix_rt::spawn(connection(incoming, context.clone()));
            }
        }
    }
    endpoint.close(close_code::SHUTTING_DOWN.into(), b"tallyd is shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

async fn connection(incoming: quinn::Incoming, context: Arc<ServerContext>) {
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(e) => {
            tracing::debug!(error = %e, "a connection failed during the QUIC handshake");
            return;
        }
    };
    let remote = connection.remote_address();
    tracing::debug!(%remote, "connection accepted");
    context.telemetry().connections += 1;
    while let Ok((send, recv)) = connection.accept_bi().await {
        actix_rt::spawn(stream::serve_stream(
            connection.clone(),
            send,
            recv,
            context.clone(),
        ));
    }
    context.telemetry().connections -= 1;
    tracing::debug!(%remote, "connection closed");
}
