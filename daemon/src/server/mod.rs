//! The QUIC edge: accept connections, authenticate each stream, decode requests, route them to
//! shards, encode answers. It never touches customer state or storage directly.

mod stream;
pub mod telemetry;

pub(crate) use stream::stats;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicServerConfig;
use tally_protocol::message::ALPN;
use tokio::sync::{mpsc, oneshot, watch, Notify};

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
    /// The model prices in force, and how to reload them (`reload_models`).
    pub models: Arc<crate::models_reload::ModelPrices>,
    /// Webhook delivery's figures.
    pub webhooks: crate::webhooks::delivery::DeliveryStats,
    /// Webhook endpoints' management (the `webhooks` command) and the outbox (`watch_alerts`).
    pub webhook_admin: crate::webhooks::admin::WebhookAdmin,
    /// Accepted API keys.
    pub keys: ApiKeys,
    /// Limits from `[server]`.
    pub limits: ServerConfig,
    /// Counters for `stats` (the server thread records; `/metrics` reads now and then).
    pub telemetry: Arc<Mutex<telemetry::Telemetry>>,
    /// The daemon's clock (for `stats` timestamps).
    pub clock: Arc<dyn Clock>,
    /// Becomes `true` when the daemon starts shutting down: streams stop reading requests,
    /// answer what they hold, and end.
    pub draining: watch::Receiver<bool>,
    /// Connections accepted and not yet ended (including those still in their handshake).
    pub open_connections: AtomicU32,
}

/// Held by every connection and stream task; the server knows they have all ended when the
/// last clone is dropped (the receiver then yields `None`).
#[derive(Clone)]
struct Alive(
    #[expect(dead_code, reason = "held for its drop: the last one ends the drain")] mpsc::Sender<()>,
);

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
    // No 0-RTT: early data can be replayed by anyone who captured it, and a replayed report
    // would be counted twice. (0 is also rustls's default; this says it on purpose.)
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| BindError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    // Handshakes in progress count against the same budget as established connections.
    server.max_incoming(limits.max_connections as usize);
    let mut transport = tally_protocol::client::transport_config();
    transport
        .max_concurrent_bidi_streams(limits.streams_per_connection.into())
        // Only bidirectional streams are used: no unidirectional streams, no datagrams.
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(None)
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

/// Accepts connections until `stop` fires; then drains: refuses new connections and streams,
/// lets every stream answer what it has read (within `shutdown_grace`), and closes the endpoint.
pub async fn serve(
    endpoint: quinn::Endpoint,
    context: Arc<ServerContext>,
    drain: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
) {
    let (alive, mut all_ended) = mpsc::channel::<()>(1);
    let alive = Alive(alive);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let open = context.open_connections.load(Ordering::Relaxed);
                if open >= context.limits.max_connections {
                    tracing::warn!(open, remote = %incoming.remote_address(), "refusing a connection: server.max_connections reached");
                    incoming.refuse();
                    continue;
                }
                context.open_connections.fetch_add(1, Ordering::Relaxed);
                actix_rt::spawn(connection(incoming, context.clone(), alive.clone()));
            }
        }
    }
    let draining = Instant::now();
    endpoint.set_server_config(None);
    let _ = drain.send(true);
    drop(alive);
    let grace = Duration::from_millis(context.limits.shutdown_grace_ms);
    match tokio::time::timeout(grace, all_ended.recv()).await {
        Ok(_) => tracing::info!(
            elapsed_ms = draining.elapsed().as_millis() as u64,
            "drained: every stream answered what it had read"
        ),
        Err(_) => tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "shutdown grace ran out; closing the remaining connections"
        ),
    }
    endpoint.close(close_code::SHUTTING_DOWN.into(), b"tallyd is shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

/// The streams one connection has open (its tasks all run on the server thread), so that a
/// connection left with none can be closed instead of holding a slot until its idle timeout.
#[derive(Default)]
struct OpenStreams {
    count: Cell<u32>,
    /// Notified when a stream ends.
    ended: Notify,
}

/// Counts one open stream until dropped.
struct OpenStream(Rc<OpenStreams>);

impl OpenStreams {
    fn open(self: &Rc<Self>) -> OpenStream {
        self.count.set(self.count.get() + 1);
        OpenStream(self.clone())
    }

    /// Ends once the connection has had no stream open for `grace`.
    async fn none_for(&self, grace: Duration) {
        loop {
            while self.count.get() > 0 {
                self.ended.notified().await;
            }
            tokio::time::sleep(grace).await;
            if self.count.get() == 0 {
                return;
            }
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let streams = &self.0;
        streams.count.set(streams.count.get() - 1);
        streams.ended.notify_one();
    }
}

/// Releases the connection's slot however its task ends.
struct ConnectionSlot(Arc<ServerContext>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(incoming: quinn::Incoming, context: Arc<ServerContext>, alive: Alive) {
    let _slot = ConnectionSlot(context.clone());
    let handshake = Duration::from_millis(context.limits.handshake_timeout_ms);
    let connection = match tokio::time::timeout(handshake, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a connection failed during the QUIC handshake");
            return;
        }
        Err(_) => {
            tracing::info!("a connection did not finish its QUIC handshake in time");
            return;
        }
    };
    let remote = connection.remote_address();
    tracing::debug!(%remote, "connection accepted");
    // A connection must open its first stream within the handshake timeout (and then say Hello
    // within it), so idle connections cannot hold slots without authenticating.
    let first = match tokio::time::timeout(handshake, connection.accept_bi()).await {
        Ok(Ok(first)) => first,
        Ok(Err(_)) => return,
        Err(_) => {
            tracing::info!(%remote, "closing a connection that opened no stream in time");
            connection.close(
                close_code::HANDSHAKE_FAILED.into(),
                b"no stream opened within the handshake timeout",
            );
            return;
        }
    };
    context.telemetry().connections += 1;
    let mut draining = context.draining.clone();
    let streams = Rc::new(OpenStreams::default());
    let mut next = Some(first);
    while let Some((send, recv)) = next.take() {
        actix_rt::spawn(stream::serve_stream(
            connection.clone(),
            send,
            recv,
            context.clone(),
            (alive.clone(), streams.open()),
        ));
        next = tokio::select! {
            _ = draining.wait_for(|draining| *draining) => None,
            accepted = connection.accept_bi() => accepted.ok(),
            // The same rule as for a new connection: a stream within the handshake timeout.
            () = streams.none_for(handshake) => {
                tracing::debug!(%remote, "closing a connection left without a stream");
                connection.close(close_code::NORMAL.into(), b"no stream open");
                None
            }
        };
    }
    // The slot is free from here, whatever the streams still finish.
    context.telemetry().connections -= 1;
    tracing::debug!(%remote, "connection closed");
}
