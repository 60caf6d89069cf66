//! The operations listener, on a thread of its own: `/livez` (the process answers), `/readyz`
//! (503 until the store is recovered and QUIC listens; 503 again while draining or after a
//! storage failure) and `/metrics` (Prometheus text, no per-customer labels). Up before recovery,
//! on the same HTTP stack as the API, with small limits: it cannot be used to hold the daemon's
//! resources.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tally_protocol::message::{ModelUsageLine, StatsSnapshot, WebhookStats};
use tokio::sync::watch;

use super::serve::{self, Limits};
use crate::committer::StoreHealth;
use crate::server::ServerContext;

/// The ops listener's limits: probes and scrapers need little.
const LIMITS: Limits = Limits {
    max_connections: 32,
    header_bytes_max: 8 * 1024,
    read_timeout: Duration::from_secs(5),
};

/// What the listener reports on: filled in as start-up progresses.
#[derive(Default)]
pub struct OpsStatus {
    /// Set once the QUIC server is listening (which is after recovery). Weak, so the listener
    /// never keeps the server's parts alive past shutdown.
    pub server: OnceLock<Weak<ServerContext>>,
    /// The storage health shared with the committer.
    pub health: StoreHealth,
}

impl OpsStatus {
    /// Why the daemon is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        if let Some(failure) = self.health.failure() {
            return Some(format!("storage failed: {failure}"));
        }
        let Some(server) = self.server.get() else {
            return Some("recovering state from the store".into());
        };
        match server.upgrade() {
            None => Some("stopped".into()),
            Some(server) if *server.draining.borrow() => Some("shutting down".into()),
            Some(_) => None,
        }
    }
}

/// The running listener; dropping it stops it.
pub struct OpsHttp {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl OpsHttp {
    /// Binds `addr` and serves on a thread of its own.
    pub fn start(addr: SocketAddr, status: Arc<OpsStatus>) -> std::io::Result<OpsHttp> {
        let listener = serve::bind(addr)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("tallyd-ops".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("a non-blocking listener");
                    let app = routes(status);
                    serve::serve(listener, app, LIMITS, None, stopped, Duration::ZERO).await;
                });
            })?;
        tracing::info!(%addr, "ops HTTP listener: /livez /readyz /metrics");
        Ok(OpsHttp {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for OpsHttp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn routes(status: Arc<OpsStatus>) -> axum::Router {
    axum::Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found; try /livez, /readyz or /metrics\n",
            )
        })
        .with_state(status)
}

async fn readyz(State(status): State<Arc<OpsStatus>>) -> Response {
    match status.not_ready() {
        None => "ready\n".into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn metrics_page(State(status): State<Arc<OpsStatus>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics(&status).await,
    )
        .into_response()
}

async fn metrics(status: &OpsStatus) -> String {
    let ready = status.not_ready().is_none();
    let server = status.server.get().and_then(Weak::upgrade);
    let snapshot = match server {
        Some(server) => Some(crate::server::stats(&server).await),
        None => None,
    };
    let store_healthy = status.health.failure().is_none();
    render_metrics(ready, store_healthy, snapshot.as_ref())
}

/// Prometheus text exposition of a stats snapshot (what `tally top` shows, minus customers).
pub fn render_metrics(
    ready: bool,
    store_healthy: bool,
    snapshot: Option<&StatsSnapshot>,
) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |value: f64| vec![(String::new(), value)];
    family(
        "tally_up",
        "gauge",
        "1 while the process answers.",
        &one(1.0),
    );
    let ready = if ready { 1.0 } else { 0.0 };
    family(
        "tally_ready",
        "gauge",
        "1 when /readyz answers 200.",
        &one(ready),
    );
    family(
        "tally_store_healthy",
        "gauge",
        "0 once a write to the store failed (disk full, I/O error): every request is refused until a restart.",
        &one(if store_healthy { 1.0 } else { 0.0 }),
    );
    let Some(s) = snapshot else {
        return out;
    };
    family(
        "tally_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        &one(s.uptime_ms as f64 / 1000.0),
    );
    let per_op = |value: &dyn Fn(&tally_protocol::message::OperationStats) -> f64| {
        s.operations
            .iter()
            .map(|op| (format!("{{operation=\"{}\"}}", op.operation), value(op)))
            .collect::<Vec<_>>()
    };
    family(
        "tally_requests_total",
        "counter",
        "Requests answered, by operation.",
        &per_op(&|op| op.count as f64),
    );
    family(
        "tally_request_errors_total",
        "counter",
        "Requests answered with an error, by operation.",
        &per_op(&|op| op.errors as f64),
    );
    let mut quantiles = Vec::new();
    for op in &s.operations {
        for (q, us) in [
            ("0.5", op.latency.p50_us),
            ("0.9", op.latency.p90_us),
            ("0.99", op.latency.p99_us),
            ("0.999", op.latency.p999_us),
        ] {
            quantiles.push((
                format!("{{operation=\"{}\",quantile=\"{q}\"}}", op.operation),
                us as f64 / 1e6,
            ));
        }
    }
    family(
        "tally_request_duration_seconds",
        "gauge",
        "Latency from decode to answer since start, by operation and quantile.",
        &quantiles,
    );
    family(
        "tally_checks_total",
        "counter",
        "Check answers by result.",
        &[
            ("{result=\"allowed\"}".into(), s.checks_allowed as f64),
            ("{result=\"denied\"}".into(), s.checks_denied as f64),
        ],
    );
    family(
        "tally_connections",
        "gauge",
        "Open client connections.",
        &one(s.connections as f64),
    );
    let per_shard = |value: &dyn Fn(&tally_protocol::message::ShardStats) -> f64| {
        s.shards
            .iter()
            .map(|shard| (format!("{{shard=\"{}\"}}", shard.shard), value(shard)))
            .collect::<Vec<_>>()
    };
    family(
        "tally_shard_customers",
        "gauge",
        "Customers held by each shard.",
        &per_shard(&|shard| shard.customers as f64),
    );
    family(
        "tally_shard_mailbox_depth",
        "gauge",
        "Messages waiting in each shard's mailbox.",
        &per_shard(&|shard| shard.mailbox_depth as f64),
    );
    family(
        "tally_shard_handled_total",
        "counter",
        "Messages each shard has handled.",
        &per_shard(&|shard| shard.handled as f64),
    );
    family(
        "tally_storage_bytes",
        "gauge",
        "Bytes the store occupies on disk.",
        &one(s.storage_bytes as f64),
    );
    let per_model = |value: &dyn Fn(&ModelUsageLine) -> Vec<(&'static str, f64)>| {
        let mut samples = Vec::new();
        for line in &s.models {
            for (kind, v) in value(line) {
                let kind = if kind.is_empty() {
                    String::new()
                } else {
                    format!(",kind=\"{kind}\"")
                };
                samples.push((
                    format!(
                        "{{feature=\"{}\",model=\"{}\"{kind}}}",
                        line.feature, line.model
                    ),
                    v,
                ));
            }
        }
        samples
    };
    family(
        "tally_model_requests_total",
        "counter",
        "Requests recorded on features priced by AI model, by feature and model.",
        &per_model(&|l| vec![("", l.requests as f64)]),
    );
    family(
        "tally_model_tokens_total",
        "counter",
        "Tokens recorded on features priced by AI model, by feature, model and kind.",
        &per_model(&|l| {
            vec![
                ("input", l.input_tokens as f64),
                ("output", l.output_tokens as f64),
                ("cache_read", l.cache_read_tokens as f64),
                ("cache_write", l.cache_write_tokens as f64),
            ]
        }),
    );
    family(
        "tally_model_cost_dollars_total",
        "counter",
        "The providers' cost of those requests at the prices they were priced at, in dollars.",
        &per_model(&|l| vec![("", l.cost_units as f64 / 1e10)]),
    );
    let per_endpoint = |value: &dyn Fn(&WebhookStats) -> f64| {
        s.webhooks
            .iter()
            .map(|w| (format!("{{endpoint=\"{}\"}}", w.endpoint), value(w)))
            .collect::<Vec<_>>()
    };
    family(
        "tally_webhook_pending",
        "gauge",
        "Events in the outbox an endpoint has not taken yet.",
        &per_endpoint(&|w| w.pending as f64),
    );
    family(
        "tally_webhook_delivered_total",
        "counter",
        "Events an endpoint took (answered 2xx) since start.",
        &per_endpoint(&|w| w.delivered as f64),
    );
    family(
        "tally_webhook_failed_total",
        "counter",
        "Events dead-lettered after the retry window since start.",
        &per_endpoint(&|w| w.failed as f64),
    );
    family(
        "tally_webhook_attempts_failed_total",
        "counter",
        "Delivery attempts answered with an error or not at all since start.",
        &per_endpoint(&|w| w.attempts_failed as f64),
    );
    family(
        "tally_webhook_last_lag_seconds",
        "gauge",
        "From the change's commit to the endpoint's 2xx, for the last event delivered.",
        &per_endpoint(&|w| w.last_lag_ms as f64 / 1000.0),
    );
    family(
        "tally_revenue_month_dollars",
        "gauge",
        "This month's invoiced and purchased totals since the daemon started, by kind.",
        &[
            (
                "{kind=\"gross\"}".into(),
                s.revenue.gross_units as f64 / 10_000.0,
            ),
            (
                "{kind=\"fee\"}".into(),
                s.revenue.fee_units as f64 / 10_000.0,
            ),
            (
                "{kind=\"net\"}".into(),
                s.revenue.net_units as f64 / 10_000.0,
            ),
        ],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_protocol::message::{LatencySummary, OperationStats, ShardStats};

    #[test]
    fn metrics_are_prometheus_text_without_customers() {
        let snapshot = StatsSnapshot {
            uptime_ms: 1_500,
            operations: vec![OperationStats {
                operation: "check".into(),
                count: 10,
                errors: 1,
                latency: LatencySummary {
                    count: 10,
                    p50_us: 70,
                    p90_us: 90,
                    p99_us: 150,
                    p999_us: 200,
                    max_us: 210,
                },
                recent: LatencySummary::default(),
            }],
            shards: vec![ShardStats {
                shard: 0,
                customers: 3,
                mailbox_depth: 0,
                handled: 12,
            }],
            webhooks: vec![WebhookStats {
                endpoint: "wh_0123456789abcdef".into(),
                url: "https://example.com/hooks".into(),
                pending: 3,
                delivered: 40,
                failed: 1,
                attempts_failed: 7,
                last_lag_ms: 12,
            }],
            models: vec![ModelUsageLine {
                feature: "chat".into(),
                model: "gpt-4o".into(),
                requests: 2,
                input_tokens: 2_400,
                output_tokens: 700,
                cost_units: 130_000_000,
                ..ModelUsageLine::default()
            }],
            ..StatsSnapshot::default()
        };
        let text = render_metrics(true, true, Some(&snapshot));
        for line in [
            "# TYPE tally_requests_total counter",
            "tally_requests_total{operation=\"check\"} 10",
            "tally_request_errors_total{operation=\"check\"} 1",
            "tally_request_duration_seconds{operation=\"check\",quantile=\"0.99\"} 0.00015",
            "tally_shard_customers{shard=\"0\"} 3",
            "tally_ready 1",
            "tally_store_healthy 1",
            "tally_uptime_seconds 1.5",
            "tally_model_requests_total{feature=\"chat\",model=\"gpt-4o\"} 2",
            "tally_model_tokens_total{feature=\"chat\",model=\"gpt-4o\",kind=\"output\"} 700",
            "tally_model_cost_dollars_total{feature=\"chat\",model=\"gpt-4o\"} 0.013",
            "tally_webhook_pending{endpoint=\"wh_0123456789abcdef\"} 3",
            "tally_webhook_delivered_total{endpoint=\"wh_0123456789abcdef\"} 40",
            "tally_webhook_last_lag_seconds{endpoint=\"wh_0123456789abcdef\"} 0.012",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(!text.contains("customer=\""));
        // Every sample line is `name{labels} value` with a known family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("tally_"), "{line}");
            value.parse::<f64>().unwrap();
        }
    }
}
