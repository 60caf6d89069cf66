//! A webhook receiver for `tally-bench --webhooks`: a real HTTP server on loopback, on a thread
//! of its own, that answers every delivery (after `delay`, to play a slow receiver) and measures
//! how many arrived, how fast, and each one's lag from the change's commit (the envelope's
//! `timestamp`) to its arrival.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// What the sink saw.
#[derive(Debug)]
pub struct Received {
    /// Deliveries.
    pub count: u64,
    /// From the first delivery to the last.
    pub span: Duration,
    /// Commit-to-arrival lag, ms.
    pub lag_ms: Histogram<u64>,
}

struct State {
    count: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    lag_ms: Histogram<u64>,
}

/// The running sink.
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Sink {
    /// Starts a sink that answers each delivery after `delay`.
    pub fn start(delay: Duration) -> anyhow::Result<Sink> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            count: 0,
            first: None,
            last: None,
            lag_ms: Histogram::new_with_bounds(1, 3_600_000, 3)?,
        }));
        let shared = state.clone();
        std::thread::Builder::new()
            .name("bench-webhook-sink".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the sink");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            return;
                        };
                        let state = shared.clone();
                        tokio::spawn(async move {
                            let service = service_fn(
                                move |request: hyper::Request<hyper::body::Incoming>| {
                                    let state = state.clone();
                                    async move {
                                        let body = request.into_body().collect().await?.to_bytes();
                                        if !delay.is_zero() {
                                            tokio::time::sleep(delay).await;
                                        }
                                        note(&state, &body);
                                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(
                                            Bytes::new(),
                                        )))
                                    }
                                },
                            );
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
            })?;
        Ok(Sink { addr, state })
    }

    /// Deliveries so far.
    pub fn count(&self) -> u64 {
        self.state.lock().expect("sink lock").count
    }

    /// What it saw.
    pub fn received(&self) -> Received {
        let state = self.state.lock().expect("sink lock");
        Received {
            count: state.count,
            span: match (state.first, state.last) {
                (Some(first), Some(last)) => last - first,
                _ => Duration::ZERO,
            },
            lag_ms: state.lag_ms.clone(),
        }
    }
}

fn note(state: &Mutex<State>, body: &[u8]) {
    let now = Instant::now();
    let lag_ms = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["timestamp"].as_str().map(str::to_owned))
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| (chrono::Utc::now().timestamp_millis() - t.timestamp_millis()).max(1) as u64);
    let mut state = state.lock().expect("sink lock");
    state.count += 1;
    state.first.get_or_insert(now);
    state.last = Some(now);
    if let Some(lag) = lag_ms {
        let _ = state.lag_ms.record(lag);
    }
}
