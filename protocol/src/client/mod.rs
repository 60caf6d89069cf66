//! The async QUIC client: the only IO in this crate. One connection at a time, one long-lived
//! bidirectional stream, many requests in flight matched to responses by id. `Client` is cheap
//! to clone and safe to share across tasks; every clone uses the same connection.
//!
//! The client stays up: when its connection is lost (a daemon restart, `Goodbye(ShuttingDown)`,
//! a network fault) it reconnects by itself with backoff and jitter ([`ReconnectPolicy`]), and
//! calls made meanwhile wait for it, within [`ReconnectPolicy::call_wait`]. A request in flight
//! when the connection died is sent again on the next one if repeating it is safe (reads, and
//! writes with an idempotency key); an unkeyed write fails with
//! [`Error::ConnectionLost`]`{ outcome_unknown: true }` — use idempotency keys for exactly-once.
//! Requests are validated here before they are sent, with the daemon's rules, so a bad value
//! fails locally with the typed error the daemon would give.
//!
//! # Layout
//! - `session`: one connection — handshake, writer, reader, timeouts.
//! - `api`: the typed calls (`usage()`, `entitlements()`, `holds()`, `admin()`, `monitor()`).

mod api;
mod session;

pub use api::{Admin, Entitlements, Events, Holds, Monitor, Subscription, Usage};
pub use session::transport_config;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::codec::encode_frame;
use crate::message::*;
use crate::retry::{jitter_seed, ReconnectPolicy, RetryPolicy};
use session::{Failed, Session};

/// How long [`Client::close`] waits for the close to leave this process.
pub const CLOSE_WAIT: Duration = Duration::from_millis(100);
/// The QUIC application close code of a client that closes on purpose.
const CLOSE_CODE_NORMAL: u32 = 0;
/// What calls on a client closed with [`Client::close`] hear.
const CLOSED_BY_CLIENT: &str = "the client closed the connection";
/// How many times one request is sent again after connections were lost under it: a request
/// that kills every connection it is sent on must not loop.
const LOST_RESENDS_MAX: u32 = 3;

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
    /// Reconnecting after a lost connection.
    pub reconnect: ReconnectPolicy,
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
            reconnect: ReconnectPolicy::default(),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The daemon answered with a typed rejection (or, for a bad value, this client did before
    /// sending); nothing was changed.
    #[error(transparent)]
    Rejected(#[from] TallyError),
    /// The connection could not be made (or remade within [`ReconnectPolicy::call_wait`]).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The daemon's address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection was lost with this request sent and unanswered, and repeating it is not
    /// safe (a write without an idempotency key): it may or may not have been applied.
    #[error("connection lost before the answer ({reason}); the request may or may not have been applied — send writes with an idempotency key to retry them safely")]
    ConnectionLost {
        /// Always `true` here: whether it was applied is unknown.
        outcome_unknown: bool,
        /// How the connection ended.
        reason: String,
    },
    /// The client was closed with [`Client::close`].
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

/// Where the client's connection stands; see [`Client::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected; calls go out at once.
    Connected,
    /// The connection was lost; the client is reconnecting and calls wait for it.
    Reconnecting {
        /// Attempts made since the connection was lost.
        attempt: u32,
        /// Why the connection was lost, or why the last attempt failed.
        last_error: String,
    },
    /// Closed with [`Client::close`]; calls fail with [`Error::Closed`].
    Closed,
}

/// A connection to a Tally daemon that stays up. Clone it freely.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    next_id: AtomicU64,
    /// The connection calls use; replaced by the supervisor after a loss.
    link: watch::Sender<Link>,
    state: watch::Sender<ConnectionState>,
    /// The last session's `Welcome`.
    welcome: Mutex<Welcome>,
}

#[derive(Clone)]
enum Link {
    Up(Arc<Session>),
    Down,
    Closed,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ends the session, so the supervisor waiting on it ends too.
        if let Link::Up(session) = &*self.link.borrow() {
            session.abandon();
        }
    }
}

impl Inner {
    /// Makes `session` the one calls use, unless the client was closed meanwhile.
    fn publish(&self, session: &Arc<Session>) -> bool {
        let published = self.link.send_if_modified(|link| {
            if matches!(link, Link::Closed) {
                return false;
            }
            *link = Link::Up(session.clone());
            true
        });
        if published {
            *self.welcome.lock().expect("client lock poisoned") = session.welcome.clone();
            self.state.send_replace(ConnectionState::Connected);
        }
        published
    }

    /// Notes that the connection is down and why, unless the client was closed.
    fn reconnecting(&self, attempt: u32, last_error: String) -> bool {
        let is_open = self.link.send_if_modified(|link| match link {
            Link::Closed => false,
            Link::Up(_) | Link::Down => {
                *link = Link::Down;
                true
            }
        });
        if is_open {
            self.state.send_replace(ConnectionState::Reconnecting {
                attempt,
                last_error,
            });
        }
        is_open
    }
}

/// Reconnects for the client's lifetime: waits for the session to end, then opens the next one
/// (the first attempt at once, then with backoff). Holds the client only weakly, so dropping
/// every `Client` ends it.
async fn supervise(inner: Weak<Inner>, mut session: Arc<Session>) {
    loop {
        let why = session.ended().await;
        drop(session);
        let Some(client) = inner.upgrade() else {
            return;
        };
        if !client.reconnecting(0, why) {
            return;
        }
        let (config, policy) = (client.config.clone(), client.config.reconnect);
        drop(client);
        let mut attempt = 0;
        session = loop {
            attempt += 1;
            let opened = Session::open(&config).await;
            let Some(client) = inner.upgrade() else {
                if let Ok(session) = opened {
                    session.abandon();
                }
                return;
            };
            match opened {
                Ok(session) if client.publish(&session) => break session,
                Ok(session) => {
                    session.close(CLOSED_BY_CLIENT).await;
                    return;
                }
                Err(e) => {
                    if !client.reconnecting(attempt, e.to_string()) {
                        return;
                    }
                }
            }
            drop(client);
            tokio::time::sleep(policy.delay(attempt - 1, jitter_seed())).await;
        };
    }
}

impl Client {
    /// Connects, checks the protocol version and authenticates with the API key. Fails if the
    /// first connection cannot be made; after that, the client reconnects by itself.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        let session = Session::open(&config).await?;
        let inner = Arc::new(Inner {
            welcome: Mutex::new(session.welcome.clone()),
            config,
            next_id: AtomicU64::new(1),
            link: watch::Sender::new(Link::Up(session.clone())),
            state: watch::Sender::new(ConnectionState::Connected),
        });
        tokio::spawn(supervise(Arc::downgrade(&inner), session));
        Ok(Client { inner })
    }

    /// Closes the connection for every clone of this client and waits (at most [`CLOSE_WAIT`])
    /// until the close has left for the daemon, which then frees the connection's slot at once.
    /// Calls still waiting fail with [`Error::Closed`]; later calls fail the same way. A client
    /// dropped without `close` sends the close too, if its runtime still runs — a process that
    /// exits right after should call this first.
    pub async fn close(&self) {
        let previous = self.inner.link.send_replace(Link::Closed);
        self.inner.state.send_replace(ConnectionState::Closed);
        if let Link::Up(session) = previous {
            session.close(CLOSED_BY_CLIENT).await;
        }
    }

    /// Where the connection stands now.
    pub fn state(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// A receiver that sees every change of [`Client::state`].
    pub fn state_changes(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.subscribe()
    }

    /// What the daemon said in the last handshake (role, limits).
    pub fn welcome(&self) -> Welcome {
        self.inner
            .welcome
            .lock()
            .expect("client lock poisoned")
            .clone()
    }

    /// Sends one request and waits for its answer. Typed rejections become [`Error::Rejected`],
    /// and a request that breaks a limit is rejected here without being sent. An idempotent
    /// request answered `Overloaded` is retried per the config's [`RetryPolicy`]; one whose
    /// connection was lost is sent again after the client reconnects.
    pub async fn call(&self, request: Request) -> Result<Response, Error> {
        validate_request(&request)?;
        let may_repeat = request.is_idempotent();
        let overload_retries = if may_repeat {
            self.inner.config.retry.retries
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
        let (mut overloaded, mut lost) = (0, 0);
        loop {
            let session = self.session().await?;
            check_frame_size(&frame, &session.welcome)?;
            let attempt = if may_repeat {
                frame.clone()
            } else {
                std::mem::take(&mut frame)
            };
            match session.send_and_wait(id, attempt).await {
                Ok(response) => return Ok(response),
                Err(Failed::Final(Error::Rejected(TallyError::Overloaded)))
                    if overloaded < overload_retries =>
                {
                    let delay = self.inner.config.retry.delay(overloaded, jitter_seed());
                    tokio::time::sleep(delay).await;
                    overloaded += 1;
                }
                Err(Failed::Final(error)) => return Err(error),
                Err(Failed::NotSent(unsent)) => frame = unsent,
                Err(Failed::Lost(_)) if may_repeat && lost < LOST_RESENDS_MAX => lost += 1,
                Err(Failed::Lost(reason)) => {
                    return Err(Error::ConnectionLost {
                        outcome_unknown: true,
                        reason,
                    })
                }
            }
        }
    }

    /// The session to send on: the current one, or the next one once the client has
    /// reconnected (waiting at most [`ReconnectPolicy::call_wait`]).
    async fn session(&self) -> Result<Arc<Session>, Error> {
        // The common case, without a receiver of its own.
        if let Link::Up(session) = &*self.inner.link.borrow() {
            if !session.has_ended() {
                return Ok(session.clone());
            }
        }
        let mut link = self.inner.link.subscribe();
        let wait = self.inner.config.reconnect.call_wait;
        let usable = async {
            loop {
                let found = match &*link.borrow_and_update() {
                    Link::Up(session) if !session.has_ended() => Some(Ok(session.clone())),
                    Link::Closed => Some(Err(Error::Closed(CLOSED_BY_CLIENT.into()))),
                    Link::Up(_) | Link::Down => None,
                };
                if let Some(found) = found {
                    return found;
                }
                if link.changed().await.is_err() {
                    return Err(Error::Closed(CLOSED_BY_CLIENT.into()));
                }
            }
        };
        match tokio::time::timeout(wait, usable).await {
            Ok(found) => found,
            Err(_) => Err(Error::Connect {
                addr: self.inner.config.addr,
                reason: match self.state() {
                    ConnectionState::Reconnecting { last_error, .. } => {
                        format!("not reconnected within {wait:?}: {last_error}")
                    }
                    _ => format!("not reconnected within {wait:?}"),
                },
            }),
        }
    }
}

/// A frame over the daemon's limit would only get the connection cut off.
fn check_frame_size(frame: &[u8], welcome: &Welcome) -> Result<(), Error> {
    let body_bytes = frame.len() - crate::codec::LENGTH_PREFIX_BYTES;
    if body_bytes > welcome.frame_bytes_max as usize {
        return Err(Error::Rejected(TallyError::InvalidRequest {
            reason: format!(
                "request frame is {body_bytes} bytes; the daemon's limit is {}",
                welcome.frame_bytes_max
            ),
        }));
    }
    Ok(())
}
