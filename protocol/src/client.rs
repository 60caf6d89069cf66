//! The async QUIC client: the only IO in this crate. One connection, one long-lived bidirectional
//! stream, many requests in flight matched to responses by id. `Client` is cheap to clone and safe
//! to share across tasks; every clone uses the same connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicClientConfig;
use rkyv::util::AlignedVec;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::codec::{decode, encode_frame};
use crate::framing::read_frame;
use crate::message::*;
use crate::retry::{jitter_seed, RetryPolicy};

/// Bytes of encoded frames the writer task coalesces into one stream write.
const WRITE_COALESCE_BYTES_MAX: usize = 64 * 1024;
/// Bytes read from the stream at once; answers are parsed out of this buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// How long [`Client::close`] waits for the close to leave this process.
pub const CLOSE_WAIT: Duration = Duration::from_millis(100);
/// What calls on a client closed with [`Client::close`] hear.
const CLOSED_BY_CLIENT: &str = "the client closed the connection";
/// The QUIC application close code of a client that closes on purpose.
const CLOSE_CODE_NORMAL: u32 = 0;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The daemon's QUIC address.
    pub addr: SocketAddr,
    /// The name the daemon's certificate is checked against (`localhost` for the development one).
    pub server_name: String,
    /// PEM of the certificate (or its CA) the daemon presents.
    pub ca_certificate_pem: Vec<u8>,
    /// The API key; its role decides which operations are allowed.
    pub api_key: String,
    /// How long one request may wait for its answer.
    pub request_timeout: Duration,
    /// How long connecting and the handshake may take.
    pub connect_timeout: Duration,
    /// Retries of idempotent requests answered `Overloaded`.
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// A config with the default timeouts (10 s per request, 5 s to connect).
    pub fn new(addr: SocketAddr, ca_certificate_pem: Vec<u8>, api_key: impl Into<String>) -> Self {
        Self {
            addr,
            server_name: "localhost".into(),
            ca_certificate_pem,
            api_key: api_key.into(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The daemon answered with a typed rejection; nothing was changed.
    #[error(transparent)]
    Rejected(#[from] TallyError),
    /// The connection could not be made.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The daemon's address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection is gone; in-flight requests may or may not have been applied.
    #[error("connection closed: {0}")]
    Closed(String),
    /// No answer within the request timeout; the request may or may not have been applied.
    #[error("no answer within {ms} ms")]
    Timeout {
        /// The timeout in force.
        ms: u64,
    },
    /// The daemon sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// A connection to a Tally daemon. Clone it freely.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    outgoing: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    inflight: Arc<Semaphore>,
    welcome: Welcome,
    request_timeout: Duration,
    retry: RetryPolicy,
    connection: quinn::Connection,
    endpoint: quinn::Endpoint,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: the close leaves only if the runtime still runs the endpoint's driver.
        self.connection
            .close(CLOSE_CODE_NORMAL.into(), b"client dropped");
    }
}

/// Who waits for the answer to a request id. Either way the entry holds the request's in-flight
/// slot until the daemon answers, because the daemon counts the request until then (and cuts off
/// a client that exceeds the limit it announced) — even if the caller gave up or was cancelled.
enum Waiter {
    /// A caller, until `deadline`.
    Caller {
        answer: oneshot::Sender<Outcome>,
        deadline: Instant,
        slot: OwnedSemaphorePermit,
    },
    /// Nobody: the caller timed out.
    Abandoned(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// What a waiting caller hears.
enum Outcome {
    Answered(Reply),
    TimedOut,
}

/// State the background reader shares with callers.
#[derive(Default)]
struct Shared {
    pending: Mutex<HashMap<u64, Waiter>>,
    closed: Mutex<Option<String>>,
    /// Set with `closed`, so that each call checks it without a lock.
    is_closed: AtomicBool,
}

impl Shared {
    /// The reader's end: it knows best why (a `Goodbye` says more than a failed write) — unless
    /// the client closed on purpose, which is what its callers should hear.
    fn close(&self, reason: String) {
        let mut closed = self.closed.lock().expect("client lock poisoned");
        if closed.as_deref() != Some(CLOSED_BY_CLIENT) {
            *closed = Some(reason);
        }
        self.is_closed.store(true, Ordering::Release);
        // Dropping the senders wakes every waiter, which then reads `closed`.
        self.pending().clear();
    }

    fn refuse_new(&self, reason: String) {
        self.closed
            .lock()
            .expect("client lock poisoned")
            .get_or_insert(reason);
        self.is_closed.store(true, Ordering::Release);
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        self.pending.lock().expect("client lock poisoned")
    }

    fn closed_reason(&self) -> Option<String> {
        if !self.is_closed.load(Ordering::Acquire) {
            return None;
        }
        self.closed.lock().expect("client lock poisoned").clone()
    }

    /// Tells every caller whose deadline has passed that it timed out (its slot stays taken
    /// until the answer comes); returns the earliest deadline still ahead.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut pending = self.pending();
        let expired: Vec<u64> = pending
            .iter()
            .filter_map(|(id, waiter)| match waiter {
                Waiter::Caller { deadline, .. } if *deadline <= now => Some(*id),
                _ => None,
            })
            .collect();
        for id in expired {
            if let Some(Waiter::Caller { answer, slot, .. }) = pending.remove(&id) {
                let _ = answer.send(Outcome::TimedOut);
                pending.insert(id, Waiter::Abandoned(slot));
            }
        }
        pending
            .values()
            .filter_map(|waiter| match waiter {
                Waiter::Caller { deadline, .. } => Some(*deadline),
                Waiter::Abandoned(_) => None,
            })
            .min()
    }
}

/// Times out callers for the connection's lifetime. One task per connection instead of a timer
/// per call: a call's deadline is always `request_timeout` after it was sent, so none is ever
/// earlier than those already waiting, and sleeping until the earliest one is enough.
async fn expire_calls(shared: Arc<Shared>, request_timeout: Duration) {
    while !shared.is_closed.load(Ordering::Acquire) {
        let now = Instant::now();
        let next = shared.expire(now).unwrap_or(now + request_timeout);
        tokio::time::sleep_until(next.into()).await;
    }
}

impl Client {
    /// Connects, checks the protocol version and authenticates with the API key.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        let addr = config.addr;
        let connect_error = move |reason: String| Error::Connect { addr, reason };
        let connecting = tokio::time::timeout(config.connect_timeout, open(&config));
        let (endpoint, connection, mut send, mut recv) = connecting.await.map_err(|_| {
            connect_error(format!("no answer within {:?}", config.connect_timeout))
        })??;

        let mut hello = Vec::new();
        let frame = ClientFrame::Hello(Hello {
            version: PROTOCOL_VERSION,
            api_key: config.api_key.clone(),
        });
        encode_frame(&frame, &mut hello).map_err(|e| Error::Protocol(e.to_string()))?;
        send.write_all(&hello)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let mut body = AlignedVec::new();
        let welcome = tokio::time::timeout(
            config.connect_timeout,
            read_frame(&mut recv, FRAME_BYTES_MAX, &mut body),
        )
        .await
        .map_err(|_| connect_error("no answer to the handshake".into()))?;
        match welcome {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Closed(
                    "the daemon closed the stream during the handshake".into(),
                ))
            }
            Err(e) => return Err(connect_error(e.to_string())),
        }
        let welcome =
            match decode::<ServerFrame>(&body).map_err(|e| Error::Protocol(e.to_string()))? {
                ServerFrame::Welcome(welcome) => welcome,
                ServerFrame::Goodbye(error) => return Err(Error::Rejected(error)),
                ServerFrame::Response(_) => {
                    return Err(Error::Protocol("a response before the welcome".into()))
                }
            };

        let shared = Arc::new(Shared::default());
        let inflight_max = welcome.inflight_max.max(1) as usize;
        let (outgoing, queued) = mpsc::channel(inflight_max);
        tokio::spawn(write_loop(send, queued, shared.clone()));
        tokio::spawn(read_loop(recv, shared.clone(), connection.clone()));
        tokio::spawn(expire_calls(shared.clone(), config.request_timeout));
        Ok(Client {
            inner: Arc::new(Inner {
                outgoing,
                shared,
                next_id: AtomicU64::new(1),
                inflight: Arc::new(Semaphore::new(inflight_max)),
                welcome,
                request_timeout: config.request_timeout,
                retry: config.retry,
                connection,
                endpoint,
            }),
        })
    }

    /// Closes the connection for every clone of this client and waits (at most [`CLOSE_WAIT`])
    /// until the close has left for the daemon, which then frees the connection's slot at once.
    /// Calls still waiting fail with [`Error::Closed`]; later calls fail the same way. A client
    /// dropped without `close` sends the close too, if its runtime still runs — a process that
    /// exits right after should call this first.
    pub async fn close(&self) {
        let inner = &self.inner;
        inner.shared.close(CLOSED_BY_CLIENT.into());
        inner
            .connection
            .close(CLOSE_CODE_NORMAL.into(), b"client closed");
        let _ = tokio::time::timeout(CLOSE_WAIT, inner.endpoint.wait_idle()).await;
    }

    /// What the daemon said in the handshake (role, limits).
    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
    }

    /// Sends one request and waits for its answer. Typed rejections become [`Error::Rejected`].
    /// An idempotent request answered `Overloaded` is retried per the config's [`RetryPolicy`].
    pub async fn call(&self, request: Request) -> Result<Response, Error> {
        let retries = if request.is_idempotent() {
            self.inner.retry.retries
        } else {
            0
        };
        let mut frame = Vec::new();
        // The id is reused by retries: each is sent only after the previous answer arrived.
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        encode_frame(
            &ClientFrame::Request(RequestFrame { id, request }),
            &mut frame,
        )
        .map_err(|e| Error::Protocol(e.to_string()))?;
        let body_bytes = frame.len() - crate::codec::LENGTH_PREFIX_BYTES;
        if body_bytes > self.inner.welcome.frame_bytes_max as usize {
            // Sending it would only get the connection cut off.
            return Err(Error::Rejected(TallyError::InvalidRequest {
                reason: format!(
                    "request frame is {body_bytes} bytes; the daemon's limit is {}",
                    self.inner.welcome.frame_bytes_max
                ),
            }));
        }
        let mut retry = 0;
        loop {
            let attempt = if retry < retries {
                frame.clone()
            } else {
                std::mem::take(&mut frame)
            };
            match self.send_and_wait(id, attempt).await {
                Err(Error::Rejected(TallyError::Overloaded)) if retry < retries => {
                    let delay = self.inner.retry.delay(retry, jitter_seed());
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
                result => return result,
            }
        }
    }

    async fn send_and_wait(&self, id: u64, frame: Vec<u8>) -> Result<Response, Error> {
        let inner = &self.inner;
        let slot = inner
            .inflight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (answer, answered) = oneshot::channel();
        let deadline = Instant::now() + inner.request_timeout;
        inner.shared.pending().insert(
            id,
            Waiter::Caller {
                answer,
                deadline,
                slot,
            },
        );
        if let Some(reason) = inner.shared.closed_reason() {
            inner.shared.pending().remove(&id);
            return Err(Error::Closed(reason));
        }
        if inner.outgoing.send(frame).await.is_err() {
            return Err(Error::Closed(
                inner.shared.closed_reason().unwrap_or_default(),
            ));
        }
        match answered.await {
            Ok(Outcome::Answered(Reply::Ok(response))) => Ok(response),
            Ok(Outcome::Answered(Reply::Err(error))) => Err(Error::Rejected(error)),
            Ok(Outcome::TimedOut) => Err(Error::Timeout {
                ms: inner.request_timeout.as_millis() as u64,
            }),
            Err(_) => Err(Error::Closed(
                inner
                    .shared
                    .closed_reason()
                    .unwrap_or_else(|| "the connection ended".into()),
            )),
        }
    }

    /// Usage reporting: `client.usage().report(..)`.
    pub fn usage(&self) -> Usage<'_> {
        Usage { client: self }
    }

    /// Entitlement checks: `client.entitlements().check(..)`.
    pub fn entitlements(&self) -> Entitlements<'_> {
        Entitlements { client: self }
    }

    /// Reservations for variable-cost work: `client.holds().reserve(..)`.
    pub fn holds(&self) -> Holds<'_> {
        Holds { client: self }
    }

    /// Admin operations (admin role).
    pub fn admin(&self) -> Admin<'_> {
        Admin { client: self }
    }

    /// Monitoring (monitor or admin role).
    pub fn monitor(&self) -> Monitor<'_> {
        Monitor { client: self }
    }
}

async fn open(
    config: &ClientConfig,
) -> Result<
    (
        quinn::Endpoint,
        quinn::Connection,
        quinn::SendStream,
        quinn::RecvStream,
    ),
    Error,
> {
    let addr = config.addr;
    let fail = move |reason: String| Error::Connect { addr, reason };
    let quic = quic_client_config(&config.ca_certificate_pem).map_err(fail)?;
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .expect("a literal socket address");
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| fail(e.to_string()))?;
    endpoint.set_default_client_config(quic);
    let connection = endpoint
        .connect(addr, &config.server_name)
        .map_err(|e| fail(e.to_string()))?
        .await
        .map_err(|e| fail(e.to_string()))?;
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok((endpoint, connection, send, recv))
}

fn quic_client_config(ca_pem: &[u8]) -> Result<quinn::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        let certificate = certificate.map_err(|e| format!("reading the CA certificate: {e}"))?;
        roots
            .add(certificate)
            .map_err(|e| format!("using the CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA certificate PEM holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = transport_config();
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    quic.transport_config(Arc::new(transport));
    Ok(quic)
}

/// The QUIC transport settings both ends start from. Each asks its peer to acknowledge every 16
/// packets (the ack-frequency extension; a peer without it keeps its default) and discovers
/// packet sizes up to 64 KiB (lost probes leave the size where it was): with quinn's defaults,
/// half of all datagrams at 64 checks in flight were pure ACKs, and answers left in 1,452-byte
/// packets even on loopback.
pub fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(u16::MAX);
    transport.mtu_discovery_config(Some(mtu));
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(16u32.into());
    transport.ack_frequency_config(Some(acks));
    transport
}

/// Coalesces queued frames into one write so pipelined requests share stream writes.
async fn write_loop(
    mut send: quinn::SendStream,
    mut queued: mpsc::Receiver<Vec<u8>>,
    shared: Arc<Shared>,
) {
    while let Some(mut batch) = queued.recv().await {
        while batch.len() < WRITE_COALESCE_BYTES_MAX {
            match queued.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if let Err(e) = send.write_all(&batch).await {
            // New calls fail from now on, but requests already sent may still be answered (a
            // draining daemon stops reading before it sends its last answers): the reader
            // settles them, and ends everything when the stream ends.
            shared.refuse_new(format!("writing to the daemon failed: {e}"));
            return;
        }
    }
    let _ = send.finish();
}

async fn read_loop(recv: quinn::RecvStream, shared: Arc<Shared>, connection: quinn::Connection) {
    // Frames are parsed out of one buffer: reading each frame's prefix and body from the stream
    // itself took the connection's lock three times per answer.
    let mut recv = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, recv);
    let mut body = AlignedVec::new();
    let reason = loop {
        match read_frame(&mut recv, FRAME_BYTES_MAX, &mut body).await {
            Ok(true) => {}
            Ok(false) => break "the daemon ended the stream".to_string(),
            Err(e) => break format!("reading from the daemon failed: {e}"),
        }
        match decode::<ServerFrame>(&body) {
            Ok(ServerFrame::Response(response)) => {
                let waiter = shared.pending().remove(&response.id);
                // An abandoned waiter timed out already; its late answer is dropped. Either way
                // the in-flight slot goes with the entry.
                if let Some(Waiter::Caller { answer, .. }) = waiter {
                    let _ = answer.send(Outcome::Answered(response.reply));
                }
            }
            Ok(ServerFrame::Goodbye(error)) => {
                break format!("the daemon closed the stream: {error}")
            }
            Ok(ServerFrame::Welcome(_)) => break "a second welcome from the daemon".to_string(),
            Err(e) => break format!("a malformed frame from the daemon: {e}"),
        }
    };
    shared.close(reason);
    // Every answer before the end has been handed over; closing now tells a draining daemon it
    // may stop (it keeps the connection open until then, so no sent answer is lost).
    connection.close(CLOSE_CODE_NORMAL.into(), b"stream ended");
}

fn unexpected(response: Response) -> Error {
    Error::Protocol(format!("unexpected response {response:?}"))
}

/// `client.usage()`.
pub struct Usage<'a> {
    client: &'a Client,
}

impl Usage<'_> {
    /// Records usage; see [`ReportItem`] for idempotency keys and `only_if_allowed`.
    pub async fn report(&self, item: ReportItem) -> Result<ReportOutcome, Error> {
        match self.client.call(Request::Report(item)).await? {
            Response::Report(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Records many usages at once; one result per item, in order.
    pub async fn report_batch(
        &self,
        items: Vec<ReportItem>,
    ) -> Result<Vec<BatchItemResult>, Error> {
        match self.client.call(Request::ReportBatch(items)).await? {
            Response::ReportBatch(results) => Ok(results),
            other => Err(unexpected(other)),
        }
    }
}

/// `client.entitlements()`.
pub struct Entitlements<'a> {
    client: &'a Client,
}

impl Entitlements<'_> {
    /// May `customer` use `amount` of `feature` now? Read-only.
    pub async fn check(
        &self,
        customer: &str,
        feature: &str,
        amount: u64,
    ) -> Result<CheckOutcome, Error> {
        let request = Request::Check(CheckRequest {
            customer: customer.into(),
            feature: feature.into(),
            amount,
        });
        match self.client.call(request).await? {
            Response::Check(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }
}

/// `client.holds()`.
pub struct Holds<'a> {
    client: &'a Client,
}

impl Holds<'_> {
    /// Holds the cost of `amount` for `ttl`; `allowed: false` when the customer cannot afford it.
    pub async fn reserve(
        &self,
        customer: &str,
        feature: &str,
        amount: u64,
        ttl: Duration,
    ) -> Result<ReserveOutcome, Error> {
        let request = Request::Reserve(ReserveRequest {
            customer: customer.into(),
            feature: feature.into(),
            amount,
            ttl_ms: ttl.as_millis().try_into().unwrap_or(u64::MAX),
        });
        match self.client.call(request).await? {
            Response::Reserve(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Charges `actual` units and releases the hold.
    pub async fn settle(
        &self,
        hold: u64,
        actual: u64,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<ReportOutcome, Error> {
        let request = Request::Settle(SettleRequest {
            hold,
            actual,
            idempotency_key,
        });
        match self.client.call(request).await? {
            Response::Report(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Releases the hold without charging.
    pub async fn release(&self, hold: u64) -> Result<ReleaseOutcome, Error> {
        match self
            .client
            .call(Request::Release(ReleaseRequest { hold }))
            .await?
        {
            Response::Release(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }
}

/// `client.admin()`.
pub struct Admin<'a> {
    client: &'a Client,
}

impl Admin<'_> {
    async fn customer_call(&self, request: Request) -> Result<CustomerView, Error> {
        match self.client.call(request).await? {
            Response::Customer(view) => Ok(view),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a customer on `plan`; its first period starts now.
    pub async fn create_customer(&self, customer: &str, plan: &str) -> Result<CustomerView, Error> {
        let request = Request::CreateCustomer(CustomerPlan {
            customer: customer.into(),
            plan: plan.into(),
        });
        self.customer_call(request).await
    }

    /// Moves a customer to `plan`; a new period starts now.
    pub async fn change_plan(&self, customer: &str, plan: &str) -> Result<CustomerView, Error> {
        let request = Request::ChangePlan(CustomerPlan {
            customer: customer.into(),
            plan: plan.into(),
        });
        self.customer_call(request).await
    }

    /// The customer's plan, period, usage, credits or balance and holds.
    pub async fn get_customer(&self, customer: &str) -> Result<CustomerView, Error> {
        self.customer_call(Request::GetCustomer(CustomerRef {
            customer: customer.into(),
        }))
        .await
    }

    /// Buys credit packs or loads dollars.
    pub async fn top_up(
        &self,
        customer: &str,
        amount: TopUpAmount,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<TopUpOutcome, Error> {
        let request = Request::TopUp(TopUpRequest {
            customer: customer.into(),
            amount,
            idempotency_key,
        });
        match self.client.call(request).await? {
            Response::TopUp(outcome) => Ok(*outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Raw usage events with `from_ms <= at_ms < to_ms`, oldest first (one page).
    pub async fn list_events(
        &self,
        customer: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<EventList, Error> {
        self.list_events_from(customer, (from_ms, 0), to_ms).await
    }

    /// One page of events from `(at_ms, seq)` on; see [`EventList::more`] for paging.
    pub async fn list_events_from(
        &self,
        customer: &str,
        from: (u64, u64),
        to_ms: u64,
    ) -> Result<EventList, Error> {
        let request = Request::ListEvents(ListEventsRequest {
            customer: customer.into(),
            from_ms: from.0,
            from_seq: from.1,
            to_ms,
        });
        match self.client.call(request).await? {
            Response::Events(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }

    /// Closes the customer's current period now and returns its invoice; the next period
    /// starts now.
    pub async fn close_period(&self, customer: &str) -> Result<InvoiceView, Error> {
        let request = Request::ClosePeriod(CustomerRef {
            customer: customer.into(),
        });
        match self.client.call(request).await? {
            Response::Closed(invoice) => Ok(invoice),
            other => Err(unexpected(other)),
        }
    }

    /// The customer's invoices, oldest first.
    pub async fn list_invoices(&self, customer: &str) -> Result<Vec<InvoiceView>, Error> {
        let request = Request::ListInvoices(CustomerRef {
            customer: customer.into(),
        });
        match self.client.call(request).await? {
            Response::Invoices(invoices) => Ok(invoices),
            other => Err(unexpected(other)),
        }
    }

    /// The customer's credit purchases and top-ups, oldest first.
    pub async fn list_transactions(&self, customer: &str) -> Result<Vec<TransactionView>, Error> {
        let request = Request::ListTransactions(CustomerRef {
            customer: customer.into(),
        });
        match self.client.call(request).await? {
            Response::Transactions(transactions) => Ok(transactions),
            other => Err(unexpected(other)),
        }
    }
}

/// `client.monitor()`.
pub struct Monitor<'a> {
    client: &'a Client,
}

impl Monitor<'_> {
    /// The console's data.
    pub async fn stats(&self) -> Result<StatsSnapshot, Error> {
        match self.client.call(Request::Stats).await? {
            Response::Stats(snapshot) => Ok(*snapshot),
            other => Err(unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(slots: &Arc<Semaphore>, deadline: Instant) -> (Waiter, oneshot::Receiver<Outcome>) {
        let (answer, answered) = oneshot::channel();
        let slot = slots.clone().try_acquire_owned().expect("a free slot");
        let waiter = Waiter::Caller {
            answer,
            deadline,
            slot,
        };
        (waiter, answered)
    }

    #[test]
    fn a_caller_past_its_deadline_times_out_but_keeps_its_slot() {
        let shared = Shared::default();
        let slots = Arc::new(Semaphore::new(2));
        let now = Instant::now();
        let (late, mut late_answered) = caller(&slots, now);
        let (early, mut early_answered) = caller(&slots, now + Duration::from_secs(5));
        shared.pending().insert(1, late);
        shared.pending().insert(2, early);

        let next = shared.expire(now);

        assert!(matches!(late_answered.try_recv(), Ok(Outcome::TimedOut)));
        assert!(early_answered.try_recv().is_err(), "not yet due");
        assert_eq!(next, Some(now + Duration::from_secs(5)));
        assert!(matches!(
            shared.pending().get(&1),
            Some(Waiter::Abandoned(_))
        ));
        assert_eq!(slots.available_permits(), 0, "both slots still taken");
        // The late answer arrives: the entry, and with it the slot, goes.
        shared.pending().remove(&1);
        assert_eq!(slots.available_permits(), 1);
    }

    #[test]
    fn closing_is_seen_without_a_lock_and_says_why() {
        let shared = Shared::default();
        assert_eq!(shared.closed_reason(), None);
        shared.refuse_new("writing failed".into());
        assert_eq!(shared.closed_reason().as_deref(), Some("writing failed"));
        shared.close("the daemon ended the stream".into());
        assert_eq!(
            shared.closed_reason().as_deref(),
            Some("the daemon ended the stream")
        );
    }
}
