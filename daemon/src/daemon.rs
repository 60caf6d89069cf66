//! Start-up and shutdown: prepare the data dir and credentials, start the shards and the QUIC
//! server on their own threads, and stop them in order. `main.rs` and the end-to-end tests both
//! start a daemon through [`Daemon::start`].

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tally_protocol::message::{ModelsReloaded, Role, TallyError};
use tally_protocol::ClientConfig;
use tokio::sync::oneshot;

use crate::api::{self, ApiState};
use crate::clock::{Clock, NeverBackwards, TestClock};
use crate::committer::{release_answers, Committer, Release, Released, StoreHealth};
use crate::config::Config;
use crate::credentials::{Credentials, CredentialsError, DevApiKeys};
use crate::data_dir::{self, DataDirError, DataDirLock};
use crate::http::ops::{OpsHttp, OpsStatus};
use crate::janitor::Janitor;
use crate::metering::engine::ShardCore;
use crate::metering::table::CustomerRows;
use crate::models_reload::ModelPrices;
use crate::router::Shards;
use crate::server::telemetry::Telemetry;
use crate::server::{self, BindError, ServerContext};
use crate::shard::STATS_INTERVAL;
use crate::stable_hash::{shard_of, stable_hash};
use crate::store::prices::{self, PriceRecovery};
use crate::store::{Store, StoreError, StoreFaults, Tail, Write};
use crate::webhooks::admin::WebhookAdmin;
use crate::webhooks::delivery::Delivery;

/// File in the data dir where a running daemon writes the address it listens on, so tools find
/// it even when the config says port 0.
pub const ADDR_FILE: &str = "tallyd.addr";
/// Where the address is written before it is renamed to [`ADDR_FILE`], so readers never see it
/// half-written.
pub const ADDR_FILE_TEMPORARY: &str = "tallyd.addr.tmp";

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir is missing, foreign, or held by another daemon.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// TLS or API key files could not be prepared.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// Development credentials on a non-loopback address.
    #[error("refusing to serve {addr} with development credentials: they are only for loopback; configure [server] tls_cert/tls_key and [auth] keys")]
    DevelopmentCredentialsOffLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The listener could not start.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The store could not be opened or recovered.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The server thread could not be started.
    #[error("cannot start the server thread: {0}")]
    Thread(String),
    /// The API's HTTP listener could not start.
    #[error("cannot serve [http] listen on {addr}: {source}")]
    HttpListen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The API's TLS could not be set up from the server's certificate.
    #[error("[http] tls: {0}")]
    HttpTls(String),
    /// The ops HTTP listener could not start.
    #[error("cannot serve [ops] http_listen on {addr}: {source}")]
    OpsListen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a shutdown did not end with everything persisted and the store closed cleanly. Nothing
/// acknowledged is at risk in any of these: an answer leaves only after its writes persisted.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// A write failed while serving; every request since was refused, so the store was left as
    /// it was (flushing a failed store can hang on fjall's crashed workers).
    #[error("the store failed while serving ({reason}); nothing after the failure was acknowledged; the next start recovers what was persisted before it")]
    StoreFailed {
        /// The first failure.
        reason: String,
    },
    /// The final flush failed; the next start replays the journal.
    #[error(
        "flushing the store at shutdown failed ({reason}); the next start replays the journal"
    )]
    FlushFailed {
        /// Why.
        reason: String,
    },
    /// Flushing and closing the store took longer than `shutdown_grace`.
    #[error("closing the store did not finish within shutdown_grace ({grace_ms} ms); the next start replays the journal")]
    CloseTimedOut {
        /// The grace in force.
        grace_ms: u64,
    },
    /// The server thread panicked.
    #[error("the server thread panicked")]
    ServerPanicked,
}

/// Knobs for tests and tools; production uses the defaults.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// Fault injection at the storage boundary.
    pub store_faults: StoreFaults,
    /// Called with the ops listener's address (if any) once it is up, before the store is
    /// opened: a test can hold recovery here and watch `/readyz` say 503.
    pub before_recovery: Option<Arc<dyn Fn(Option<SocketAddr>) + Send + Sync>>,
    /// Bursts the committer's queue holds before writes are refused (default
    /// [`crate::committer::QUEUED_BURSTS_MAX`]): a test fills a small one quickly.
    pub commit_queue_bursts: Option<usize>,
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("store_faults", &self.store_faults)
            .field("before_recovery", &self.before_recovery.is_some())
            .field("commit_queue_bursts", &self.commit_queue_bursts)
            .finish()
    }
}

/// A running daemon. Dropping it shuts it down.
pub struct Daemon {
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    cert_pem: String,
    dev_api_keys: Option<DevApiKeys>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ShutdownError>>>,
    /// Dropped after the server thread has stopped, so probes see the drain.
    ops: Option<OpsHttp>,
    models: Arc<ModelPrices>,
}

impl Daemon {
    /// Starts a daemon and returns once it has recovered its state and accepts connections.
    pub fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Daemon, StartError> {
        Daemon::start_with(config, clock, StartOptions::default())
    }

    /// [`Daemon::start`] with options.
    pub fn start_with(
        config: Config,
        clock: Arc<dyn Clock>,
        options: StartOptions,
    ) -> Result<Daemon, StartError> {
        let data_dir_lock = data_dir::open(&config.storage)?;
        let credentials = Credentials::prepare(&config)?;
        if credentials.is_development() {
            let http = config.http.listen.into_iter();
            if let Some(addr) = std::iter::once(config.server.listen)
                .chain(http)
                .find(|addr| !addr.ip().is_loopback())
            {
                return Err(StartError::DevelopmentCredentialsOffLoopback { addr });
            }
        }
        // The API's listener is bound now, so a taken port fails start-up before recovery.
        let http_listener = match config.http.listen {
            Some(addr) => Some(
                crate::http::serve::bind(addr)
                    .map_err(|source| StartError::HttpListen { addr, source })?,
            ),
            None => None,
        };
        let http_addr = match &http_listener {
            Some(listener) => {
                Some(
                    listener
                        .local_addr()
                        .map_err(|source| StartError::HttpListen {
                            addr: config.http.listen.expect("bound from it"),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let http_tls = if config.http.tls {
            Some(
                crate::http::serve::tls_acceptor(
                    credentials.cert_chain.clone(),
                    credentials.key.clone_key(),
                )
                .map_err(|e| StartError::HttpTls(e.to_string()))?,
            )
        } else {
            None
        };
        let test_clock = config
            .sandbox
            .test_clock
            .then(|| Arc::new(TestClock::new(clock.clone())));
        let clock: Arc<dyn Clock> = match &test_clock {
            Some(test_clock) => test_clock.clone(),
            None => clock,
        };
        let health = StoreHealth::default();
        let status = Arc::new(OpsStatus {
            server: OnceLock::new(),
            health: health.clone(),
        });
        // Up before recovery, so probes see "not ready" rather than nothing while it runs.
        let ops = match config.ops.http_listen {
            Some(addr) => Some(
                OpsHttp::start(addr, status.clone())
                    .map_err(|source| StartError::OpsListen { addr, source })?,
            ),
            None => None,
        };
        if let Some(hook) = &options.before_recovery {
            hook(ops.as_ref().map(OpsHttp::local_addr));
        }
        let opening = Instant::now();
        let store = Arc::new(Store::open(&config.storage.data_dir, options.store_faults)?);
        tracing::info!(
            elapsed_ms = opening.elapsed().as_millis() as u64,
            "opened the store (journal replayed)"
        );
        let (cores, clock_floor_ms, log) = recover(&store, &config, clock.now_ms())?;
        let mut endpoints = config.webhooks.endpoints.clone();
        for stored in store.webhook_endpoints()? {
            match crate::webhooks::endpoints::from_stored(&stored) {
                Some(endpoint) if stored.active => endpoints.push(endpoint),
                Some(_) => {}
                None => {
                    tracing::warn!(id = %stored.id, url = %stored.url, "a stored webhook endpoint's URL no longer parses; skipped");
                }
            }
        }
        let delivery = Delivery::start(store.clone(), endpoints, config.webhooks.terms);
        // Shards and the janitor see time that never goes back, from the newest stored event on.
        let clock: Arc<dyn Clock> = Arc::new(NeverBackwards::new(clock, clock_floor_ms));
        // Answers are awaited by tasks on the server thread, so they are released there.
        let (releases, released) = tokio::sync::mpsc::unbounded_channel();
        let committer = Committer::start(
            store.clone(),
            config.storage.durability,
            health.clone(),
            Release(releases),
            log,
            options
                .commit_queue_bursts
                .unwrap_or(crate::committer::QUEUED_BURSTS_MAX),
        );
        let janitor = Janitor::start(
            store.clone(),
            clock.clone(),
            config.storage.event_retention_ms,
            health.clone(),
        );
        let cert_pem = credentials.cert_pem.clone();
        let dev_api_keys = credentials.dev_api_keys.clone();
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel();
        let parts = Parts {
            config,
            credentials,
            clock,
            cores,
            store,
            committer,
            released,
            janitor,
            delivery,
            health,
            data_dir_lock,
            status,
            http_listener,
            http_tls,
            test_clock,
        };
        let thread = std::thread::Builder::new()
            .name("tallyd-server".into())
            .spawn(move || serve_on_this_thread(parts, ready, stopped))
            .map_err(|e| StartError::Thread(e.to_string()))?;
        let (addr, models) = started
            .recv()
            .map_err(|_| StartError::Thread("the server thread ended during start-up".into()))??;
        Ok(Daemon {
            addr,
            models,
            http_addr,
            cert_pem,
            dev_api_keys,
            stop: Some(stop),
            thread: Some(thread),
            ops,
        })
    }

    /// Reads the model prices from the config file again and puts them in force (SIGHUP); on
    /// any error nothing changes and the error says why.
    pub async fn reload_models(&self) -> Result<ModelsReloaded, TallyError> {
        self.models.reload().await
    }

    /// Where `/livez`, `/readyz` and `/metrics` are served, when `[ops] http_listen` is set.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().map(OpsHttp::local_addr)
    }

    /// Where the HTTP/JSON API is served (`/api/v1`), when `[http] listen` is set.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address the daemon listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the certificate the daemon presents (what a client must trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The development API keys, when no keys are configured.
    pub fn dev_api_keys(&self) -> Option<&DevApiKeys> {
        self.dev_api_keys.as_ref()
    }

    /// How a client reaches this daemon with its development key of `role` (`None` when keys
    /// are configured instead).
    pub fn dev_client_config(&self, role: Role) -> Option<ClientConfig> {
        let keys = self.dev_api_keys.as_ref()?;
        let key = match role {
            Role::Admin => &keys.admin,
            Role::Client => &keys.client,
            Role::Monitor => &keys.monitor,
        };
        Some(ClientConfig::new(
            self.addr,
            self.cert_pem.as_bytes().to_vec(),
            key.clone(),
        ))
    }

    /// Stops accepting, closes connections, stops the shards, persists, flushes and closes the
    /// store, and waits for it all. Always returns: after a storage failure, or when the store
    /// does not close within `shutdown_grace`, with the error (`tallyd` then exits non-zero).
    pub fn shutdown(mut self) -> Result<(), ShutdownError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), ShutdownError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(ShutdownError::ServerPanicked)),
            None => Ok(()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            tracing::error!(error = %e, "tallyd stopped with an error");
        }
    }
}

/// Everything the server thread takes ownership of.
struct Parts {
    config: Config,
    credentials: Credentials,
    clock: Arc<dyn Clock>,
    cores: Vec<ShardCore>,
    store: Arc<Store>,
    committer: Committer,
    /// The committer's answers, to release on the server thread.
    released: tokio::sync::mpsc::UnboundedReceiver<Released>,
    janitor: Janitor,
    /// Webhook delivery (endpoints may be added while it runs).
    delivery: Delivery,
    health: StoreHealth,
    /// Held until the store is flushed and closed, so a successor never opens it early.
    data_dir_lock: DataDirLock,
    status: Arc<OpsStatus>,
    /// The API's bound listener, if any.
    http_listener: Option<std::net::TcpListener>,
    http_tls: Option<tokio_rustls::TlsAcceptor>,
    test_clock: Option<Arc<TestClock>>,
}

fn serve_on_this_thread(
    parts: Parts,
    ready: std::sync::mpsc::Sender<Result<(SocketAddr, Arc<ModelPrices>), StartError>>,
    stop: oneshot::Receiver<()>,
) -> Result<(), ShutdownError> {
    let Parts {
        config,
        credentials,
        clock,
        cores,
        store,
        committer,
        released,
        janitor,
        delivery,
        health,
        data_dir_lock,
        status,
        http_listener,
        http_tls,
        test_clock,
    } = parts;
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let delivery_stats = delivery.stats();
    let webhook_admin = WebhookAdmin {
        control: delivery.control(),
        configured: config.webhooks.endpoints.clone(),
        store: store.clone(),
        clock: clock.clone(),
    };
    let system = actix::System::new();
    let commits = committer.sender();
    let shard_store = store.clone();
    let shard_health = health.clone();
    let api_store = store.clone();
    let (http_stop_sender, http_stop) = tokio::sync::watch::channel(false);
    system.block_on(async move {
        actix_rt::spawn(release_answers(released));
        if config.server.busy_poll_us > 0 {
            let window = Duration::from_micros(config.server.busy_poll_us.into());
            actix_rt::spawn(crate::platform::busy_poll::poll_while_busy(window));
        }
        let server_clock = clock.clone();
        let catalogue = cores
            .first()
            .expect("at least one shard")
            .catalogue()
            .clone();
        let shards = Shards::start(
            cores,
            config.server.mailbox_capacity,
            config.server.shards_on_server_thread,
            clock,
            shard_store,
            commits,
            shard_health,
        );
        let endpoint = match server::bind(&config.server, &credentials) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                shards.stop_after_hand_over().await;
                return;
            }
        };
        let addr = endpoint.local_addr().expect("a bound endpoint has an address");
        let (drain, draining) = tokio::sync::watch::channel(false);
        let telemetry = Arc::new(Mutex::new(Telemetry::new(STATS_INTERVAL)));
        let models = Arc::new(ModelPrices::new(
            config.source.clone(),
            catalogue,
            shards.router.clone(),
        ));
        let admin_for_api = webhook_admin.clone();
        let context = Arc::new(ServerContext {
            webhook_admin,
            webhooks: delivery_stats,
            models: models.clone(),
            router: shards.router.clone(),
            keys: credentials.keys.clone(),
            limits: config.server.clone(),
            telemetry: telemetry.clone(),
            clock: server_clock,
            draining,
            open_connections: AtomicU32::new(0),
        });
        // Ready (for /readyz) before start-up returns: a caller that saw `start` succeed, or read
        // the address file, must not then be told the daemon is still recovering.
        let _ = status.server.set(Arc::downgrade(&context));
        let addr_file = config.storage.data_dir.join(ADDR_FILE);
        let temporary = config.storage.data_dir.join(ADDR_FILE_TEMPORARY);
        if let Err(e) = write_atomically(&addr_file, &temporary, format!("{addr}\n").as_bytes()) {
            tracing::warn!(path = %addr_file.display(), error = %e, "cannot write the address file");
        }
        tracing::info!(%addr, shards = config.server.shards, "tallyd is listening");
        let api = http_listener.map(|listener| {
            let state = ApiState::new(api::Shared {
                router: shards.router.clone(),
                store: api_store.clone(),
                keys: credentials.keys.clone(),
                catalogue: config.catalogue.clone(),
                clock: context.clock.clone(),
                telemetry,
                test_clock,
                set_locks: api::SetLocks::default(),
                webhooks: admin_for_api,
                limits: api::BodyLimits {
                    body_bytes_max: config.http.body_bytes_max as usize,
                    read_timeout: Duration::from_millis(config.http.read_timeout_ms),
                },
            });
            let limits = crate::http::serve::Limits {
                max_connections: config.http.max_connections as usize,
                header_bytes_max: config.http.header_bytes_max as usize,
                read_timeout: Duration::from_millis(config.http.read_timeout_ms),
            };
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("a non-blocking listener");
            tracing::info!(addr = ?listener.local_addr().ok(), "HTTP API listening under /api/v1");
            actix_rt::spawn(crate::http::serve::serve(
                listener,
                api::routes(state),
                limits,
                http_tls,
                http_stop.clone(),
                grace,
            ))
        });
        let _ = ready.send(Ok((addr, models.clone())));
        server::serve(endpoint, context, drain, stop).await;
        // The API stops with QUIC: what it read is answered before the shards hand over.
        let _ = http_stop_sender.send(true);
        if let Some(api) = api {
            let _ = api.await;
        }
        shards.stop_after_hand_over().await;
    });
    // Shards on the server thread live in the System until it is dropped; dropping it ends them
    // (their last bursts were handed over above) and with them their committer senders.
    drop(system);
    // Every shard is gone, so the committer drains what they handed over and ends.
    committer.stop();
    janitor.stop();
    delivery.stop();
    let outcome = close_store(store, data_dir_lock, &health, grace);
    match &outcome {
        Ok(()) => tracing::info!("tallyd stopped"),
        Err(e) => tracing::error!(error = %e, "tallyd stopped without closing the store cleanly"),
    }
    outcome
}

/// Flushes the store (so the next start replays nothing) and closes it, releasing the data
/// dir's lock, within `grace`. A store that failed while serving is closed without a flush. If
/// closing does not finish in time, its thread is left to it, still holding the lock, so no
/// successor opens the store under it; `tallyd` exits meanwhile.
fn close_store(
    store: Arc<Store>,
    data_dir_lock: DataDirLock,
    health: &StoreHealth,
    grace: Duration,
) -> Result<(), ShutdownError> {
    let failed = health.failure().map(str::to_owned);
    let flush = failed.is_none();
    let (done, closed) = std::sync::mpsc::channel();
    let closing = Instant::now();
    let spawned = std::thread::Builder::new()
        .name("tallyd-close".into())
        .spawn(move || {
            let flushed = if flush {
                store.flush_for_shutdown()
            } else {
                Ok(())
            };
            drop(store);
            drop(data_dir_lock);
            let _ = done.send(flushed);
        });
    if spawned.is_err() {
        return Err(ShutdownError::FlushFailed {
            reason: "cannot start a thread to close the store".into(),
        });
    }
    let closed = closed.recv_timeout(grace);
    if let Some(reason) = failed {
        return Err(ShutdownError::StoreFailed { reason });
    }
    match closed {
        Ok(Ok(())) => {
            tracing::info!(
                elapsed_ms = closing.elapsed().as_millis() as u64,
                "flushed the store for a fast restart"
            );
            Ok(())
        }
        Ok(Err(e)) => Err(ShutdownError::FlushFailed {
            reason: e.to_string(),
        }),
        Err(_) => Err(ShutdownError::CloseTimedOut {
            grace_ms: grace.as_millis() as u64,
        }),
    }
}

/// Rebuilds every shard's state from the store, placing customers and keys by hash for the
/// current shard count (which may differ from the last run's).
/// Returns the shards' cores, the newest event time stored and the commit log still to
/// checkpoint.
fn recover(
    store: &Store,
    config: &Config,
    now_ms: u64,
) -> Result<(Vec<ShardCore>, u64, Tail), StartError> {
    let started = Instant::now();
    let shard_count = config.server.shards;
    let (catalogue, new_versions) =
        prices::catalogue_with_history(store, &config.catalogue, now_ms)?;
    let splits = store.price_splits()?;
    let mut prices = PriceRecovery::new(&catalogue, &splits, now_ms);
    let recovered = store.recover(&mut prices, now_ms, shard_count, |id| {
        shard_of(stable_hash(id.as_bytes()), shard_count)
    })?;
    // Before any answer: a customer's split must be on disk before it is billed by it.
    store.record_prices(&new_versions, &prices.new_splits, &prices.forgotten())?;
    if !prices.new_splits.is_empty() {
        tracing::info!(
            customers = prices.new_splits.len(),
            "recorded each customer's usage where a price change took effect now"
        );
    }
    let catalogue = Arc::new(catalogue);
    let read_ms = started.elapsed().as_millis() as u64;
    let customers = recovered.customers;
    let customer_count: usize = customers.iter().map(CustomerRows::len).sum();
    let key_count = recovered.keys.len();
    let mut keys: Vec<Vec<_>> = (0..shard_count).map(|_| Vec::new()).collect();
    for (key, record) in recovered.keys {
        keys[shard_of(record.placement, shard_count)].push((key, record));
    }
    if !recovered.expired_keys.is_empty() {
        let forget: Vec<Write> = recovered
            .expired_keys
            .into_iter()
            .map(|key| Write::ForgetKey { key })
            .collect();
        store.persist(forget, fjall::PersistMode::SyncData, &mut Tail::default())?;
    }
    // Each shard's maps are built on a thread of its own: independent work, and most of the
    // restart time with a million customers.
    let cores = std::thread::scope(|scope| {
        let building: Vec<_> = customers
            .into_iter()
            .zip(keys)
            .map(|(customers, keys)| {
                scope.spawn(|| {
                    ShardCore::restore(
                        catalogue.clone(),
                        config.billing.dedup_window_ms,
                        config.billing.terms(),
                        customers,
                        keys,
                    )
                })
            })
            .collect();
        building
            .into_iter()
            .map(|shard| shard.join().expect("restoring a shard does not panic"))
            .collect()
    });
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        customers = customer_count,
        idempotency_keys = key_count,
        log_records_replayed = recovered.log_records_replayed,
        event_segments_approx = store.approximate_segment_count(),
        shards = shard_count,
        read_ms,
        elapsed_ms,
        "recovered state from the store"
    );
    Ok((cores, recovered.clock_floor_ms, recovered.log))
}

/// Writes `path` so that a reader sees either no file or the whole of it (tools poll for the
/// address file and read it as soon as it exists): `temporary` first, then a rename.
fn write_atomically(
    path: &std::path::Path,
    temporary: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    std::fs::write(temporary, bytes)?;
    std::fs::rename(temporary, path)
}
