//! Serving an axum app with hyper: HTTP/1.1 with keep-alive and HTTP/2 (h2c, or ALPN over
//! rustls), a connection limit, a head-read deadline that also ends idle keep-alive connections,
//! and a graceful stop. Connections are tasks on the calling thread (a `LocalSet`), so the API
//! listener lives on the server thread beside the shards and a request never crosses threads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// The limits one listener enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Largest request head (HTTP/1.1 read buffer; HTTP/2 header list).
    pub header_bytes_max: usize,
    /// A request head must arrive within this, and an idle keep-alive connection is closed
    /// after it.
    pub read_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` turns `true`, then lets each connection finish the
/// request it is on (HTTP/1.1) or send GOAWAY (HTTP/2), and returns when all have ended or
/// `grace` has passed. Must run inside a `LocalSet`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let builder = Arc::new(builder(&limits));
    let (alive, mut all_ended) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let permit = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
        };
        let accepted = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait a moment rather than spin.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (app, builder, tls, stop, alive) = (
            app.clone(),
            builder.clone(),
            tls.clone(),
            stop.clone(),
            alive.clone(),
        );
        let read_timeout = limits.read_timeout;
        tokio::task::spawn_local(async move {
            let service = FirstRequest::new(TowerToHyperService::new(app));
            match tls {
                None => {
                    let io = TokioIo::new(stream);
                    serve_connection(&builder, io, service, stop, read_timeout).await;
                }
                Some(acceptor) => {
                    match tokio::time::timeout(read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let io = TokioIo::new(stream);
                            serve_connection(&builder, io, service, stop, read_timeout).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop((permit, alive));
        });
    }
    drop(alive);
    let _ = tokio::time::timeout(grace, all_ended.recv()).await;
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_buf_size(limits.header_bytes_max.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.header_bytes_max as u32)
        .keep_alive_interval(limits.read_timeout)
        .keep_alive_timeout(limits.read_timeout)
        .max_concurrent_streams(256);
    builder
}

/// Notes that a connection's first request arrived: until then hyper's own deadlines do not
/// run (it is still reading the bytes that tell HTTP/1.1 from HTTP/2), so the connection is
/// dropped if none arrives within the read timeout.
#[derive(Clone)]
struct FirstRequest {
    inner: TowerToHyperService<Router>,
    arrived: Arc<AtomicBool>,
}

impl FirstRequest {
    fn new(inner: TowerToHyperService<Router>) -> Self {
        Self {
            inner,
            arrived: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for FirstRequest {
    type Response = <TowerToHyperService<Router> as hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
    >>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
    >>::Error;
    type Future = <TowerToHyperService<Router> as hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
    >>::Future;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.arrived.store(true, Ordering::Relaxed);
        self.inner.call(request)
    }
}

async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: FirstRequest,
    mut stop: watch::Receiver<bool>,
    read_timeout: Duration,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let arrived = service.arrived.clone();
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let first_deadline = tokio::time::sleep(read_timeout);
    tokio::pin!(first_deadline);
    let mut watching = true;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = stop.wait_for(|stopped| *stopped) => break,
            _ = &mut first_deadline, if watching => {
                if !arrived.load(Ordering::Relaxed) {
                    return;
                }
                // The first request is in: hyper's deadlines take over.
                watching = false;
            }
        }
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Binds `addr` for [`serve`] (port 0 picks a free port).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// A rustls acceptor offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_acceptor(
    cert_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<TlsAcceptor, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(cert_chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
