//! Delivering the outbox: one thread of its own (never a shard's or the QUIC server's), one
//! task per endpoint walking the outbox in order from its cursor. Each event is POSTed with its
//! raw JSON body and Commet's headers until the endpoint answers 2xx — retried with exponential
//! backoff and jitter for `retry_for`, then dead-lettered — and the cursor moves past it. An
//! endpoint takes one event at a time, so it sees each customer's events in order; a slow or dead
//! endpoint only holds up its own task.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Request;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use tally_protocol::message::WebhookStats;
use tokio::sync::{mpsc, oneshot, watch};

use super::payload;
use crate::store::outbox::{StoredAlert, StoredFailure};
use crate::store::Store;

/// Events read from the outbox at a time.
const READ_BATCH: usize = 256;
/// An endpoint this many events behind is logged (and again at each further multiple).
pub const BACKLOG_WARN: u64 = 100_000;
/// How often delivered events past their retention are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Where events go.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// A stable id (`wh_` and a hash of the URL for endpoints from the config).
    pub id: String,
    /// The receiver.
    pub url: hyper::Uri,
    /// What the signature is keyed with.
    pub secret: String,
    /// The event names it takes; `None`: every one.
    pub events: Option<BTreeSet<String>>,
}

impl Endpoint {
    /// An endpoint from the config: its id follows from its URL.
    pub fn configured(url: hyper::Uri, secret: String, events: Option<BTreeSet<String>>) -> Self {
        let digest = Sha256::digest(url.to_string().as_bytes());
        let id = digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Endpoint {
            id: format!("wh_{id}"),
            url,
            secret,
            events,
        }
    }

    fn wants(&self, event: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.contains(event))
    }
}

/// How delivery retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveryTerms {
    /// How long an event is retried before it is dead-lettered.
    pub retry_for: Duration,
    /// Longest wait for one attempt's answer.
    pub timeout: Duration,
    /// The first retry's wait; each next one doubles, up to `backoff_max`.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// How long delivered events stay in the outbox.
    pub retention: Duration,
    /// Whether envelopes say `mode: sandbox`.
    pub sandbox: bool,
}

/// The running delivery thread.
pub struct Delivery {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    stats: DeliveryStats,
    control: DeliveryControl,
}

/// One endpoint's figures since start, for `stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// The endpoint's id and URL.
    pub endpoint: (String, String),
    /// The last event it is done with, plus one (0: none yet).
    pub done: AtomicU64,
    /// Events delivered.
    pub delivered: AtomicU64,
    /// Events dead-lettered.
    pub failed: AtomicU64,
    /// Failed attempts.
    pub attempts_failed: AtomicU64,
    /// Commit-to-2xx of the last delivery, ms.
    pub last_lag_ms: AtomicU64,
}

impl Counters {
    /// The endpoint's figures, with the outbox's head (`next`, the number after the last event).
    pub fn stats(&self, next: u64) -> WebhookStats {
        WebhookStats {
            endpoint: self.endpoint.0.clone(),
            url: self.endpoint.1.clone(),
            pending: next.saturating_sub(self.done.load(Ordering::Relaxed)),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            attempts_failed: self.attempts_failed.load(Ordering::Relaxed),
            last_lag_ms: self.last_lag_ms.load(Ordering::Relaxed),
        }
    }
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Each endpoint's counters, by endpoint id.
type CounterMap = Arc<Mutex<BTreeMap<String, Arc<Counters>>>>;

/// What `stats` reads of delivery: each endpoint's counters and the outbox's head.
#[derive(Debug, Clone)]
pub struct DeliveryStats {
    counters: CounterMap,
    head: watch::Receiver<u64>,
}

impl DeliveryStats {
    /// Each endpoint's figures now.
    pub fn snapshot(&self) -> Vec<WebhookStats> {
        let next = *self.head.borrow();
        let counters = self.counters.lock().expect("counters lock");
        counters.values().map(|c| c.stats(next)).collect()
    }
}

/// What the delivery thread is told while it runs.
enum Control {
    /// Deliver to this endpoint (again, if it was: a changed endpoint restarts).
    Start(Endpoint),
    /// Stop delivering to the endpoint with this id.
    Stop(String),
    /// Send one test event to the endpoint and say how it went.
    Test(Endpoint, oneshot::Sender<Result<(), String>>),
    /// Send the endpoint's dead letters again, one attempt each; say which were taken.
    Redeliver(Endpoint, oneshot::Sender<Vec<(u64, Result<(), String>)>>),
}

/// Adds, changes and removes endpoints of the running delivery (the API's endpoints).
#[derive(Clone)]
pub struct DeliveryControl {
    sender: mpsc::UnboundedSender<Control>,
}

impl DeliveryControl {
    /// Delivers to `endpoint` from now on (events from its cursor on; set it first).
    pub fn start(&self, endpoint: Endpoint) {
        let _ = self.sender.send(Control::Start(endpoint));
    }

    /// Stops delivering to endpoint `id`.
    pub fn stop(&self, id: &str) {
        let _ = self.sender.send(Control::Stop(id.to_owned()));
    }

    /// Sends `endpoint`'s dead letters again (one attempt each, from the delivery thread); the
    /// ones it takes are no longer dead letters. Returns each one's outcome.
    pub async fn redeliver(
        &self,
        endpoint: Endpoint,
    ) -> Result<Vec<(u64, Result<(), String>)>, String> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Control::Redeliver(endpoint, reply))
            .map_err(|_| "webhook delivery has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "webhook delivery has stopped".to_string())
    }

    /// Sends `endpoint` one signed `webhook.test` event, from the delivery thread.
    pub async fn test(&self, endpoint: Endpoint) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Control::Test(endpoint, reply))
            .map_err(|_| "webhook delivery has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "webhook delivery has stopped".to_string())?
    }
}

impl Delivery {
    /// Starts delivering `store`'s outbox to `endpoints` (more can be added through
    /// [`Delivery::control`]).
    pub fn start(store: Arc<Store>, endpoints: Vec<Endpoint>, terms: DeliveryTerms) -> Delivery {
        let (stop, stopped) = watch::channel(false);
        let (sender, controls) = mpsc::unbounded_channel();
        let counters = CounterMap::default();
        let stats = DeliveryStats {
            counters: counters.clone(),
            head: store.watch_outbox(),
        };
        let control = DeliveryControl { sender };
        let thread = std::thread::Builder::new()
            .name("tallyd-webhooks".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for webhook delivery");
                let supervisor = Supervisor {
                    store,
                    terms,
                    client: https_client(),
                    counters,
                    running: HashMap::new(),
                };
                runtime.block_on(supervisor.run(endpoints, controls, stopped));
            })
            .expect("starting the webhook thread");
        Delivery {
            stop,
            thread: Some(thread),
            stats,
            control,
        }
    }

    /// What `stats` reads of delivery.
    pub fn stats(&self) -> DeliveryStats {
        self.stats.clone()
    }

    /// Adds, changes and removes endpoints while it runs.
    pub fn control(&self) -> DeliveryControl {
        self.control.clone()
    }

    /// Stops delivering (an attempt in flight is abandoned; its event is delivered again after
    /// the next start) and waits for the thread.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The delivery thread's state: one task per endpoint, started and stopped as told.
struct Supervisor {
    store: Arc<Store>,
    terms: DeliveryTerms,
    client: HttpsClient,
    counters: CounterMap,
    running: HashMap<String, (watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl Supervisor {
    async fn run(
        mut self,
        endpoints: Vec<Endpoint>,
        mut controls: mpsc::UnboundedReceiver<Control>,
        mut stopped: watch::Receiver<bool>,
    ) {
        for endpoint in endpoints {
            self.start(endpoint).await;
        }
        let (purge_stop, purge_stopped) = watch::channel(false);
        let purge = tokio::spawn(purge_delivered(
            self.store.clone(),
            self.terms,
            self.counters.clone(),
            purge_stopped,
        ));
        loop {
            tokio::select! {
                control = controls.recv() => match control {
                    Some(Control::Start(endpoint)) => self.start(endpoint).await,
                    Some(Control::Stop(id)) => {
                        self.stop(&id).await;
                        self.counters.lock().expect("counters lock").remove(&id);
                    }
                    Some(Control::Test(endpoint, reply)) => {
                        let (client, terms) = (self.client.clone(), self.terms);
                        tokio::spawn(async move {
                            let _ = reply.send(send_test(&client, &endpoint, terms).await);
                        });
                    }
                    Some(Control::Redeliver(endpoint, reply)) => {
                        let (client, terms, store) =
                            (self.client.clone(), self.terms, self.store.clone());
                        tokio::spawn(async move {
                            let _ = reply.send(redeliver(&store, &client, &endpoint, terms).await);
                        });
                    }
                    None => break,
                },
                _ = stopped.changed() => break,
            }
        }
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
        let _ = purge_stop.send(true);
        let _ = purge.await;
    }

    async fn start(&mut self, endpoint: Endpoint) {
        self.stop(&endpoint.id).await;
        let counters = Arc::new(Counters {
            endpoint: (endpoint.id.clone(), endpoint.url.to_string()),
            ..Counters::default()
        });
        self.counters
            .lock()
            .expect("counters lock")
            .insert(endpoint.id.clone(), counters.clone());
        let (stop, stopped) = watch::channel(false);
        let id = endpoint.id.clone();
        let task = tokio::spawn(serve_endpoint(
            self.store.clone(),
            endpoint,
            self.terms,
            self.client.clone(),
            stopped,
            counters,
        ));
        self.running.insert(id, (stop, task));
    }

    async fn stop(&mut self, id: &str) {
        if let Some((stop, task)) = self.running.remove(id) {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

/// Each dead letter of `endpoint` sent again, one attempt, in order.
async fn redeliver(
    store: &Store,
    client: &HttpsClient,
    endpoint: &Endpoint,
    terms: DeliveryTerms,
) -> Vec<(u64, Result<(), String>)> {
    let failures = match store.webhook_failures(&endpoint.id) {
        Ok(failures) => failures,
        Err(e) => return vec![(0, Err(e.to_string()))],
    };
    let mut outcomes = Vec::new();
    for failure in failures {
        let outcome = match store.outbox_event(failure.number) {
            Ok(Some(alert)) => {
                let body = payload::envelope(
                    failure.number,
                    &alert.event,
                    alert.at_ms,
                    terms.sandbox,
                    &alert.data,
                )
                .map(Bytes::from)
                .map_err(|e| e.to_string());
                match body {
                    Ok(body) => {
                        let signature = payload::signature(&endpoint.secret, &body);
                        attempt(
                            client,
                            endpoint,
                            terms,
                            failure.number,
                            &alert,
                            &body,
                            &signature,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                }
            }
            Ok(None) => Err("purged from the outbox (past its retention)".into()),
            Err(e) => Err(e.to_string()),
        };
        if outcome.is_ok() {
            if let Err(e) = store.forget_webhook_failure(&endpoint.id, failure.number) {
                tracing::warn!(error = %e, "cannot forget a redelivered dead letter");
            }
        }
        outcomes.push((failure.number, outcome));
    }
    outcomes
}

/// One signed `webhook.test` event, one attempt.
async fn send_test(
    client: &HttpsClient,
    endpoint: &Endpoint,
    terms: DeliveryTerms,
) -> Result<(), String> {
    let data =
        serde_json::json!({ "endpointId": endpoint.id, "message": "a test event from tallyd" });
    let alert = StoredAlert {
        event: "webhook.test".into(),
        customer: String::new(),
        at_ms: now_ms(),
        data: serde_json::to_vec(&data).expect("JSON values serialize"),
    };
    let body = payload::envelope(
        u64::MAX,
        &alert.event,
        alert.at_ms,
        terms.sandbox,
        &alert.data,
    )
    .map(Bytes::from)
    .map_err(|e| e.to_string())?;
    let signature = payload::signature(&endpoint.secret, &body);
    attempt(client, endpoint, terms, u64::MAX, &alert, &body, &signature).await
}

/// HTTP and HTTPS (the system's roots; none found, HTTPS endpoints fail their handshake).
fn https_client() -> HttpsClient {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let connector = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(builder) => builder.https_or_http().enable_http1().build(),
        Err(e) => {
            tracing::warn!(error = %e, "no system root certificates: HTTPS webhook endpoints cannot be verified");
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .build()
        }
    };
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Why an endpoint's task ended.
struct Stopped;

async fn serve_endpoint(
    store: Arc<Store>,
    endpoint: Endpoint,
    terms: DeliveryTerms,
    client: HttpsClient,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let counters = &*counters;
    let mut head = store.watch_outbox();
    let mut cursor = match store.webhook_cursor(&endpoint.id) {
        Ok(cursor) => cursor,
        Err(e) => {
            tracing::error!(endpoint = %endpoint.url, error = %e, "cannot read the webhook cursor; not delivering");
            return;
        }
    };
    counters
        .done
        .store(cursor.map_or(0, |n| n + 1), Ordering::Relaxed);
    let mut backlog_warned = 0;
    loop {
        let events = match store.read_outbox(cursor, READ_BATCH) {
            Ok(events) => events,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the webhook outbox; retrying");
                if wait(&mut stop, terms.backoff_max).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if events.is_empty() {
            head.mark_unchanged();
            tokio::select! {
                _ = head.changed() => continue,
                _ = stop.changed() => return,
            }
        }
        let backlog = (*head.borrow()).saturating_sub(counters.done.load(Ordering::Relaxed));
        if backlog >= BACKLOG_WARN * (backlog_warned + 1) {
            backlog_warned = backlog / BACKLOG_WARN;
            tracing::warn!(endpoint = %endpoint.url, backlog, "a webhook endpoint is behind; its events are kept until it takes them or they are dead-lettered");
        } else if backlog < BACKLOG_WARN {
            backlog_warned = 0;
        }
        for (number, alert) in events {
            let failure = if endpoint.wants(&alert.event) {
                match deliver(
                    &client, &endpoint, terms, number, &alert, &mut stop, counters,
                )
                .await
                {
                    Ok(failure) => failure,
                    Err(Stopped) => return,
                }
            } else {
                None
            };
            // The cursor is written with each dead letter and after each batch read: a crash
            // sends at most a batch again (at least once), never skips one.
            if failure.is_some() {
                note_done(&store, &endpoint, number, failure.as_ref());
            }
            cursor = Some(number);
            counters.done.store(number + 1, Ordering::Relaxed);
        }
        if let Some(number) = cursor {
            note_done(&store, &endpoint, number, None);
        }
    }
}

fn note_done(store: &Store, endpoint: &Endpoint, number: u64, failure: Option<&StoredFailure>) {
    if let Err(e) = store.webhook_done(&endpoint.id, number, failure) {
        tracing::error!(endpoint = %endpoint.url, error = %e, "cannot note a webhook delivery; it may be sent again");
    }
}

/// Sends one event until the endpoint takes it (`None`) or the retry window closes (the
/// failure to dead-letter).
async fn deliver(
    client: &HttpsClient,
    endpoint: &Endpoint,
    terms: DeliveryTerms,
    number: u64,
    alert: &StoredAlert,
    stop: &mut watch::Receiver<bool>,
    counters: &Counters,
) -> Result<Option<StoredFailure>, Stopped> {
    let body = match payload::envelope(
        number,
        &alert.event,
        alert.at_ms,
        terms.sandbox,
        &alert.data,
    ) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            return Ok(Some(failure(
                number,
                alert,
                0,
                format!("stored data is not JSON: {e}"),
            )));
        }
    };
    let signature = payload::signature(&endpoint.secret, &body);
    let first = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let sent = attempt(client, endpoint, terms, number, alert, &body, &signature);
        let reason = tokio::select! {
            outcome = sent => match outcome {
                Ok(()) => {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    let lag = now_ms().saturating_sub(alert.at_ms);
                    counters.last_lag_ms.store(lag, Ordering::Relaxed);
                    return Ok(None);
                }
                Err(reason) => {
                    counters.attempts_failed.fetch_add(1, Ordering::Relaxed);
                    reason
                }
            },
            _ = stop.changed() => return Err(Stopped),
        };
        let delay = backoff(terms, attempts);
        if first.elapsed() + delay > terms.retry_for {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(endpoint = %endpoint.url, event = %payload::event_id(number), attempts, %reason, "webhook dead-lettered");
            return Ok(Some(failure(number, alert, attempts, reason)));
        }
        tracing::debug!(endpoint = %endpoint.url, event = %payload::event_id(number), attempts, %reason, "webhook attempt failed; retrying");
        wait(stop, delay).await?;
    }
}

async fn attempt(
    client: &HttpsClient,
    endpoint: &Endpoint,
    terms: DeliveryTerms,
    number: u64,
    alert: &StoredAlert,
    body: &Bytes,
    signature: &str,
) -> Result<(), String> {
    let sent_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let request = Request::post(endpoint.url.clone())
        .header("content-type", "application/json")
        .header("user-agent", concat!("tallyd/", env!("CARGO_PKG_VERSION")))
        .header("x-commet-signature", signature)
        .header("x-commet-event", alert.event.as_str())
        .header("x-commet-timestamp", sent_at.to_string())
        .header("x-commet-event-id", payload::event_id(number))
        .body(Full::new(body.clone()))
        .map_err(|e| format!("building the request: {e}"))?;
    match tokio::time::timeout(terms.timeout, client.request(request)).await {
        Err(_) => Err(format!("no answer within {:?}", terms.timeout)),
        Ok(Err(e)) => Err(format!("{e}")),
        Ok(Ok(answer)) if answer.status().is_success() => Ok(()),
        Ok(Ok(answer)) => Err(format!("answered {}", answer.status())),
    }
}

/// The wait before attempt `attempts + 1`: doubling from `backoff`, capped, with full jitter in
/// its upper half so endpoints that failed together do not retry together.
fn backoff(terms: DeliveryTerms, attempts: u32) -> Duration {
    let doubled = terms
        .backoff
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let capped = doubled.min(terms.backoff_max);
    capped.mul_f64(0.5 + fastrand::f64() / 2.0)
}

async fn wait(stop: &mut watch::Receiver<bool>, delay: Duration) -> Result<(), Stopped> {
    if *stop.borrow() {
        return Err(Stopped);
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => Ok(()),
        _ = stop.changed() => Err(Stopped),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn failure(number: u64, alert: &StoredAlert, attempts: u32, reason: String) -> StoredFailure {
    StoredFailure {
        number,
        event: alert.event.clone(),
        attempts,
        last_attempt_ms: now_ms(),
        reason,
    }
}

/// Deletes, every [`PURGE_EVERY`], the events every endpoint is done with that are older than
/// `terms.retention`.
async fn purge_delivered(
    store: Arc<Store>,
    terms: DeliveryTerms,
    counters: CounterMap,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if wait(&mut stop, PURGE_EVERY).await.is_err() {
            return;
        }
        // Taken by every endpoint (with none, by all of them), and past the retention.
        let done = counters
            .lock()
            .expect("counters lock")
            .values()
            .map(|c| c.done.load(Ordering::Relaxed))
            .min()
            .unwrap_or_else(|| store.outbox_next());
        let before_ms = now_ms().saturating_sub(terms.retention.as_millis() as u64);
        match store.purge_outbox(done, before_ms) {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged delivered webhook events"),
            Err(e) => tracing::warn!(error = %e, "cannot purge delivered webhook events"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() {
        let terms = DeliveryTerms {
            retry_for: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            retention: Duration::from_secs(60),
            sandbox: false,
        };
        for (attempts, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (30, 1_000),
        ] {
            let delay = backoff(terms, attempts).as_millis() as u64;
            assert!(
                (full / 2..=full).contains(&delay),
                "attempt {attempts}: {delay} ms"
            );
        }
    }

    #[test]
    fn endpoints_from_the_config_have_stable_ids_and_filter_events() {
        let url: hyper::Uri = "http://127.0.0.1:9/hooks".parse().unwrap();
        let all = Endpoint::configured(url.clone(), "s".into(), None);
        assert_eq!(all, Endpoint::configured(url.clone(), "s".into(), None));
        assert!(all.id.starts_with("wh_") && all.id.len() == 19);
        assert!(all.wants("balance.low"));
        let some = Endpoint::configured(url, "s".into(), Some(["balance.low".to_string()].into()));
        assert!(some.wants("balance.low") && !some.wants("invoice.created"));
    }
}
