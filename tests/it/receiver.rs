//! A webhook receiver for tests: a real HTTP server on loopback that records every delivery
//! (its headers and raw body) and answers 200 — or 500 while told to fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub signature: String,
    pub event: String,
    pub body: Vec<u8>,
    /// Whether it was answered 200.
    pub accepted: bool,
}

impl Received {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

pub(crate) struct Receiver {
    pub addr: std::net::SocketAddr,
    failing: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let failing = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (f, r, a) = (failing.clone(), received.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (f, r, a) = (f.clone(), r.clone(), a.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (f, r, a) = (f.clone(), r.clone(), a.clone());
                            async move {
                                let header = |name: &str| {
                                    request
                                        .headers()
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or_default()
                                        .to_string()
                                };
                                let (signature, event) =
                                    (header("x-commet-signature"), header("x-commet-event"));
                                let body = request.into_body().collect().await?.to_bytes().to_vec();
                                let accepted = !f.load(Ordering::SeqCst);
                                r.lock().unwrap().push(Received {
                                    signature,
                                    event,
                                    body,
                                    accepted,
                                });
                                a.notify_waiters();
                                let status = if accepted { 200 } else { 500 };
                                Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            failing,
            received,
            arrived,
            task,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Answers 500 (as a receiver that is down) while `failing`.
    pub(crate) fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Every delivery so far, accepted or not.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The accepted deliveries, once there are at least `count` (or panics after 10 s).
    pub(crate) async fn accepted(&self, count: usize) -> Vec<Received> {
        self.until(count, true).await
    }

    /// Every delivery, accepted or refused, once there are at least `count`.
    pub(crate) async fn attempts(&self, count: usize) -> Vec<Received> {
        self.until(count, false).await
    }

    async fn until(&self, count: usize, only_accepted: bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.arrived.notified();
            let found: Vec<Received> = self
                .received()
                .into_iter()
                .filter(|r| r.accepted || !only_accepted)
                .collect();
            if found.len() >= count {
                return found;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let events: Vec<&str> = found.iter().map(|r| r.event.as_str()).collect();
                panic!(
                    "{} of {count} deliveries after 10 s: {events:?}",
                    found.len()
                );
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
