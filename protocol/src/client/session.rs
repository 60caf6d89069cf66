//! One QUIC connection to the daemon: the handshake, one long-lived stream, a writer task that
//! coalesces frames, a reader task that hands each answer to its caller by id, and a task that
//! times out callers. A session ends for good when its stream does; [`super::Client`] then
//! opens the next one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicClientConfig;
use rkyv::util::AlignedVec;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::codec::{decode, encode_frame};
use crate::framing::read_frame;
use crate::message::*;

use super::{ClientConfig, Error, CLOSE_CODE_NORMAL, CLOSE_WAIT};

/// Bytes of encoded frames the writer task coalesces into one stream write.
const WRITE_COALESCE_BYTES_MAX: usize = 64 * 1024;
/// Bytes read from the stream at once; answers are parsed out of this buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// How often [`Session::close`] looks whether its close frame has left.
const CLOSE_POLL: Duration = Duration::from_millis(1);

/// How one attempt to send a request on a session went, when it did not bring an answer.
#[derive(Debug)]
pub(super) enum Failed {
    /// The daemon answered, or the call timed out; final.
    Final(Error),
    /// The session had ended before the request was handed to its writer: the daemon never
    /// saw it, so it may go on the next session whatever it is. Here is its frame back.
    NotSent(Vec<u8>),
    /// The session ended with the request sent and unanswered: it may or may not have been
    /// applied.
    Lost(String),
}

/// One connection and its stream.
pub(super) struct Session {
    outgoing: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    inflight: Arc<Semaphore>,
    pub(super) welcome: Welcome,
    request_timeout: Duration,
    connection: quinn::Connection,
    /// Held so the endpoint (its socket and driver) lives as long as the session.
    _endpoint: quinn::Endpoint,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Best effort: the close leaves only if the runtime still runs the endpoint's driver.
        self.connection
            .close(CLOSE_CODE_NORMAL.into(), b"client dropped");
    }
}

impl Session {
    /// Connects, checks the protocol version and authenticates with the API key.
    pub(super) async fn open(config: &ClientConfig) -> Result<Arc<Session>, Error> {
        let addr = config.addr;
        let connect_error = move |reason: String| Error::Connect { addr, reason };
        let connecting = tokio::time::timeout(config.connect_timeout, open(config));
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
                return Err(connect_error(
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
        Ok(Arc::new(Session {
            outgoing,
            shared,
            inflight: Arc::new(Semaphore::new(inflight_max)),
            welcome,
            request_timeout: config.request_timeout,
            connection,
            _endpoint: endpoint,
        }))
    }

    /// Whether the session has ended (no new request can be sent on it).
    pub(super) fn has_ended(&self) -> bool {
        self.shared.closed_reason().is_some()
    }

    /// Waits until the session has ended; returns why.
    pub(super) async fn ended(&self) -> String {
        let mut ended = self.shared.ended.subscribe();
        let _ = ended.wait_for(|ended| *ended).await;
        self.shared.closed_reason().unwrap_or_default()
    }

    /// Ends the session on purpose: waiting callers hear `reason`, the daemon gets the close,
    /// and this waits (at most [`CLOSE_WAIT`]) for the close to leave.
    pub(super) async fn close(&self, reason: &str) {
        self.shared.close(reason.into());
        let datagrams = self.connection.stats().udp_tx.datagrams;
        self.connection
            .close(CLOSE_CODE_NORMAL.into(), reason.as_bytes());
        // Until a datagram — the close — has left: not `Endpoint::wait_idle`, which also sits out
        // the draining period (3 probe timeouts, ~80 ms on loopback) that the peer does not need.
        let sent = async {
            while self.connection.stats().udp_tx.datagrams == datagrams {
                tokio::time::sleep(CLOSE_POLL).await;
            }
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, sent).await;
    }

    /// Ends the session without waiting (the client is gone): the reader stops, and with it
    /// whatever waits for the session's end.
    pub(super) fn abandon(&self) {
        self.shared.close("the client was dropped".into());
        self.connection
            .close(CLOSE_CODE_NORMAL.into(), b"client dropped");
    }

    /// Sends one encoded request and waits for its answer.
    pub(super) async fn send_and_wait(&self, id: u64, frame: Vec<u8>) -> Result<Response, Failed> {
        let slot = self
            .inflight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (answer, answered) = oneshot::channel();
        let deadline = Instant::now() + self.request_timeout;
        self.shared.pending().insert(
            id,
            Waiter::Caller {
                answer,
                deadline,
                slot,
            },
        );
        if self.has_ended() {
            self.shared.pending().remove(&id);
            return Err(Failed::NotSent(frame));
        }
        if let Err(unsent) = self.outgoing.send(frame).await {
            self.shared.pending().remove(&id);
            return Err(Failed::NotSent(unsent.0));
        }
        match answered.await {
            Ok(Outcome::Answered(Reply::Ok(response))) => Ok(response),
            Ok(Outcome::Answered(Reply::Err(error))) => Err(Failed::Final(Error::Rejected(error))),
            Ok(Outcome::TimedOut) => Err(Failed::Final(Error::Timeout {
                ms: self.request_timeout.as_millis() as u64,
            })),
            Err(_) => Err(Failed::Lost(
                self.shared
                    .closed_reason()
                    .unwrap_or_else(|| "the connection ended".into()),
            )),
        }
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
    Abandoned(
        #[expect(dead_code, reason = "held for its drop: it frees the slot")] OwnedSemaphorePermit,
    ),
}

/// What a waiting caller hears.
enum Outcome {
    Answered(Reply),
    TimedOut,
}

/// Why the session takes no more requests.
#[derive(Default)]
struct Closed {
    reason: Option<String>,
    /// The session has ended (not only refused new requests): `reason` is final.
    has_ended: bool,
}

/// State the background tasks share with callers.
struct Shared {
    pending: Mutex<HashMap<u64, Waiter>>,
    closed: Mutex<Closed>,
    /// Set with `closed`, so that each call checks it without a lock.
    is_closed: AtomicBool,
    /// Becomes `true` when the reader has ended: every answer the session will get is in.
    ended: watch::Sender<bool>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            pending: Mutex::default(),
            closed: Mutex::default(),
            is_closed: AtomicBool::new(false),
            ended: watch::Sender::new(false),
        }
    }
}

impl Shared {
    /// Ends the session with `reason`, unless it already ended: the first end says why (the
    /// reader's `Goodbye` says more than a failed write before it; a close on purpose stays one).
    fn close(&self, reason: String) {
        let mut closed = self.closed.lock().expect("client lock poisoned");
        if !closed.has_ended {
            *closed = Closed {
                reason: Some(reason),
                has_ended: true,
            };
        }
        drop(closed);
        self.is_closed.store(true, Ordering::Release);
        // Dropping the senders wakes every waiter, which then reads `closed`.
        self.pending().clear();
        self.ended.send_replace(true);
    }

    /// Refuses new requests; those sent may still be answered (the reader ends the session).
    fn refuse_new(&self, reason: String) {
        self.closed
            .lock()
            .expect("client lock poisoned")
            .reason
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
        self.closed
            .lock()
            .expect("client lock poisoned")
            .reason
            .clone()
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

/// Times out callers for the session's lifetime. One task per session instead of a timer per
/// call: a call's deadline is always `request_timeout` after it was sent, so none is ever
/// earlier than those already waiting, and sleeping until the earliest one is enough.
async fn expire_calls(shared: Arc<Shared>, request_timeout: Duration) {
    let mut ended = shared.ended.subscribe();
    while !*ended.borrow() {
        let now = Instant::now();
        let next = shared.expire(now).unwrap_or(now + request_timeout);
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            _ = ended.changed() => {}
        }
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
    fn the_reader_says_why_a_session_ended_and_its_first_end_is_kept() {
        let shared = Shared::default();
        assert_eq!(shared.closed_reason(), None);
        assert!(!*shared.ended.borrow());
        shared.refuse_new("writing failed".into());
        assert_eq!(shared.closed_reason().as_deref(), Some("writing failed"));
        assert!(!*shared.ended.borrow(), "the reader has not ended yet");
        shared.close("the daemon closed the stream: shutting down".into());
        assert_eq!(
            shared.closed_reason().as_deref(),
            Some("the daemon closed the stream: shutting down")
        );
        assert!(*shared.ended.borrow());
        shared.close("stream ended".into());
        assert_eq!(
            shared.closed_reason().as_deref(),
            Some("the daemon closed the stream: shutting down"),
            "the first end says why"
        );
    }
}
