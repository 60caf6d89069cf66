//! Drives a daemon: seeds customers, then runs the load closed-loop (each of `connections ×
//! inflight` tasks keeps one request in flight) or open-loop (`--rate`: a fixed arrival rate,
//! the tasks' schedules staggered evenly; a request the harness sends late — because its task
//! was still waiting for the previous answer — is timed from its intended start, which corrects
//! coordinated omission), and records client-side latency per operation in hdrhistograms.
//!
//! Requests are released at their times by a [`Pacer`] thread, not tokio's timer (1-ms ticks:
//! it sent a millisecond's requests as one clump). One sent on time is timed from when it is
//! sent: the pacer's own lateness (its thread's wake-up) is not the daemon's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use tally_daemon::config::{Config, Durability};
use tally_daemon::{Daemon, SystemClock};
use tally_protocol::message::{
    BatchItemResult, ModelUsage, OperationStats, ReportItem, ReserveOutcome, Role, TallyError,
    TopUpAmount, RATE_UNITS_PER_DOLLAR,
};
use tally_protocol::{Client, ClientConfig, Error};

use crate::http::HttpClient;
use crate::pacer::Pacer;
use crate::webhook_sink::{Received, Sink};
use crate::workload::{Distribution, Mix, Op, Rng};

/// Largest latency recorded, in microseconds.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Customers created at once while seeding.
const SEEDERS: usize = 64;

/// `tally-bench`: load for a Tally daemon over QUIC with the real client library.
#[derive(Debug, Clone, Parser)]
#[command(name = "tally-bench", version)]
pub struct Args {
    /// Daemon to drive (default: discovered from ./config.toml like `tally`).
    #[arg(long, conflicts_with = "spawn")]
    pub addr: Option<SocketAddr>,
    /// Start a daemon on loopback with a temporary data dir (in this process) and stop it after.
    #[arg(long)]
    pub spawn: bool,
    /// QUIC connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Operation weights: check, report, consume (only_if_allowed report), reserve-settle, batch,
    /// or tokens alone (a gpt-4o request's tokens reported on plan assistant's chat).
    #[arg(long, default_value = "check=80,report=20")]
    pub mix: String,
    /// Customers (seeded on plan `pro` as bench-0 … bench-N−1).
    #[arg(long, default_value_t = 10_000)]
    pub customers: usize,
    /// Customer distribution: uniform or zipf:S.
    #[arg(long, default_value = "uniform")]
    pub dist: String,
    /// Items per `report_batch`.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Measured time, e.g. 10s.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Unmeasured time before it, e.g. 2s.
    #[arg(long, default_value = "2s")]
    pub warmup: String,
    /// Durability of a `--spawn`ed daemon: sync, buffered or periodic.
    #[arg(long, default_value = "sync")]
    pub durability: String,
    /// Shards of a `--spawn`ed daemon (default: one per core).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Run a `--spawn`ed daemon's shards on threads of their own instead of its QUIC server
    /// thread (`[server] shards_on_server_thread = false`).
    #[arg(long)]
    pub shard_threads: bool,
    /// `[server] busy_poll_us` of a `--spawn`ed daemon (default: the config's, 300; 0 = off).
    #[arg(long)]
    pub busy_poll_us: Option<u32>,
    /// Open loop: total requests per second (default: closed loop).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Threads of the client's runtime.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// API key for `--addr` (default: the development admin key).
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Certificate to trust for `--addr`.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Config file to discover the daemon from (default ./config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Drive the HTTP/JSON API instead of QUIC: `--connections` keep-alive HTTP/1.1
    /// connections, one request in flight on each (`--inflight` must be 1). Needs `--spawn` or
    /// `--http-addr`. Mix: check (POST /usage/check), report (POST /usage/events) and
    /// reserve-settle (Tally's /x-tally/holds).
    #[arg(long)]
    pub http: bool,
    /// The daemon's `[http] listen` address, for `--http` without `--spawn`.
    #[arg(long, requires = "http")]
    pub http_addr: Option<SocketAddr>,
    /// With `--spawn`: a webhook endpoint on loopback takes every alert (the seeding's
    /// `customer.created` ones at least); its deliveries per second and commit-to-arrival lag
    /// are reported after the run (it waits for the outbox to drain, at most 60 s).
    #[arg(long, requires = "spawn")]
    pub webhooks: bool,
    /// The webhook endpoint answers each delivery after this many ms (a slow receiver).
    #[arg(long, default_value_t = 0, requires = "webhooks")]
    pub webhook_delay_ms: u64,
}

/// How the load reaches the daemon.
#[derive(Clone)]
enum Door {
    /// The client library over QUIC.
    Quic(Client),
    /// The HTTP/JSON API, one keep-alive connection per client.
    Http(Box<HttpClient>),
}

/// What a run measured.
pub struct Report {
    /// The human table.
    pub table: String,
    /// The JSON object printed last.
    pub json: serde_json::Value,
}

struct Plan {
    mix: Mix,
    dist: Distribution,
    customers: usize,
    batch: usize,
    warmup: Duration,
    duration: Duration,
    per_task_interval: Option<Duration>,
}

#[derive(Default)]
struct Tally {
    histograms: BTreeMap<Op, Histogram<u64>>,
    errors: u64,
    reports: u64,
    /// The daemon's own latency per operation (decode to answer) since it started — with
    /// `--spawn` this run, warm-up included; with `--addr` its whole life, other clients too —
    /// when its stats are readable: what the client's figures add on top is network, QUIC and
    /// client.
    daemon_side: Vec<OperationStats>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds")
}

/// Runs the benchmark the arguments describe.
pub fn run(args: Args) -> anyhow::Result<Report> {
    let duration = parse_duration(&args.duration)?;
    let warmup = parse_duration(&args.warmup)?;
    if args.connections == 0 || args.inflight == 0 || args.customers == 0 || args.batch == 0 {
        bail!("--connections, --inflight, --customers and --batch must be at least 1");
    }
    if args.http && args.inflight != 1 {
        bail!("--http: an HTTP/1.1 connection has one request in flight; give --inflight 1 and more --connections");
    }
    let tasks = args.connections * args.inflight;
    let plan = Plan {
        mix: Mix::parse(&args.mix)?,
        dist: Distribution::parse(&args.dist, args.customers)?,
        customers: args.customers,
        batch: args.batch,
        warmup,
        duration,
        per_task_interval: match args.rate {
            Some(0) => bail!("--rate must be at least 1"),
            Some(rate) => Some(Duration::from_secs_f64(tasks as f64 / rate as f64)),
            None => None,
        },
    };
    let sink = if args.webhooks {
        Some(Sink::start(Duration::from_millis(args.webhook_delay_ms))?)
    } else {
        None
    };
    let (daemon, _dir, client_config) = target(&args, sink.as_ref().map(|s| s.addr))?;
    let http = match (args.http, &daemon, args.http_addr) {
        (false, _, _) => None,
        (true, _, Some(addr)) => Some(addr),
        (true, Some(daemon), None) => Some(
            daemon
                .http_addr()
                .context("the spawned daemon has no [http] listener")?,
        ),
        (true, None, None) => bail!("--http needs --spawn or --http-addr"),
    };
    let mix = Mix::parse(&args.mix)?;
    if mix.ops().any(Op::is_priced_by_model) && !mix.ops().all(Op::is_priced_by_model) {
        bail!("--mix: model and stream run without the others (their customers are on plan assistant, the others' on pro)");
    }
    if args.http
        && mix
            .ops()
            .any(|op| matches!(op, Op::Consume | Op::Batch | Op::Stream))
    {
        bail!("--http: the mix may have check, report, reserve-settle or model (consume, batch and stream are QUIC's)");
    }
    let runtime = if args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .enable_all()
            .build()?
    };
    let plan = Arc::new(plan);
    let tally = runtime.block_on(drive(
        client_config,
        http,
        args.connections,
        args.inflight,
        plan.clone(),
    ))?;
    let webhooks = sink.map(|sink| {
        // Until the outbox is drained: no delivery for a second, or 60 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut seen = sink.count();
        while std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            let now = sink.count();
            if now == seen && now > 0 {
                break;
            }
            seen = now;
        }
        sink.received()
    });
    if let Some(daemon) = daemon {
        daemon.shutdown().context("stopping the spawned daemon")?;
    }
    Ok(report(&args, &plan, tally, webhooks))
}

type Target = (Option<Daemon>, Option<tempfile::TempDir>, ClientConfig);

fn target(args: &Args, webhook_sink: Option<SocketAddr>) -> anyhow::Result<Target> {
    if args.spawn {
        let dir = tempfile::tempdir()?;
        let mut config = Config::loopback_in(dir.path());
        if let Some(addr) = webhook_sink {
            let url = format!("http://{addr}/hooks").parse()?;
            config.webhooks.endpoints =
                vec![tally_daemon::webhooks::delivery::Endpoint::configured(
                    url,
                    "whsec_bench_0123456789".into(),
                    None,
                )];
        }
        config.storage.durability = match args.durability.as_str() {
            "sync" => Durability::Sync,
            "buffered" => Durability::Buffered,
            "periodic" => Durability::Periodic { interval_ms: 100 },
            other => bail!("--durability `{other}` must be sync, buffered or periodic"),
        };
        if let Some(shards) = args.shards {
            config.server.shards = shards.max(1);
        }
        if args.shard_threads {
            config.server.shards_on_server_thread = false;
        }
        if let Some(us) = args.busy_poll_us {
            config.server.busy_poll_us = us;
        }
        let daemon = Daemon::start(config, Arc::new(SystemClock)).context("starting tallyd")?;
        let client = daemon
            .dev_client_config(Role::Admin)
            .expect("development keys");
        return Ok((Some(daemon), Some(dir), client));
    }
    let overrides = tally_tui::discovery::Overrides {
        config: args.config.clone(),
        addr: args.addr,
        api_key: args.api_key.clone(),
        ca_cert: args.ca_cert.clone(),
    };
    let found = tally_tui::discovery::discover(&overrides)?;
    Ok((
        None,
        None,
        ClientConfig::new(found.addr, found.ca_pem, found.api_key),
    ))
}

/// The id of the harness's customer number `index`.
pub fn customer(index: usize) -> String {
    format!("bench-{index}")
}

async fn drive(
    config: ClientConfig,
    http: Option<SocketAddr>,
    connections: usize,
    inflight: usize,
    plan: Arc<Plan>,
) -> anyhow::Result<Tally> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(
            Client::connect(config.clone())
                .await
                .context("connecting")?,
        );
    }
    let seeded_on = if plan.mix.ops().any(Op::is_priced_by_model) {
        "assistant"
    } else {
        "pro"
    };
    seed_customers(&clients[0], plan.customers, seeded_on).await?;
    let started = Instant::now() + Duration::from_millis(10);
    let pacer = plan.per_task_interval.map(|_| Arc::new(Pacer::start()));
    let mut tasks = Vec::new();
    let mut tallies = Vec::new();
    let doors: Vec<Door> = match http {
        None => clients.iter().cloned().map(Door::Quic).collect(),
        Some(addr) => (0..connections)
            .map(|_| {
                Door::Http(Box::new(HttpClient::new(
                    addr,
                    Some(config.api_key.clone()),
                )))
            })
            .collect(),
    };
    for (c, door) in doors.iter().enumerate() {
        // One set of histograms per connection, not per task: 256 tasks' histograms (~140 KiB
        // each) made every record a cache miss on the machine the daemon shares.
        let tally = Arc::new(Mutex::new(Tally::default()));
        tallies.push(tally.clone());
        for slot in 0..inflight {
            let seed = ((c * inflight + slot) as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            // Open loop: task k's schedule starts k arrivals later, so the tasks' requests
            // interleave at the fixed rate instead of all being due at the same instants.
            let task = c * inflight + slot;
            let offset = plan.per_task_interval.map_or(Duration::ZERO, |interval| {
                interval.mul_f64(task as f64 / (connections * inflight) as f64)
            });
            tasks.push(tokio::spawn(load(
                door.clone(),
                plan.clone(),
                pacer.clone(),
                started + offset,
                seed,
                tally.clone(),
            )));
        }
    }
    for task in tasks {
        task.await??;
    }
    let mut total = Tally::default();
    for tally in tallies {
        let tally = std::mem::take(&mut *tally.lock().expect("tally lock"));
        total.errors += tally.errors;
        total.reports += tally.reports;
        for (op, h) in tally.histograms {
            total
                .histograms
                .entry(op)
                .or_insert_with(histogram)
                .add(&h)?;
        }
    }
    if let Ok(stats) = clients[0].monitor().stats().await {
        total.daemon_side = stats
            .operations
            .into_iter()
            .filter(|op| op.count > 0 && op.operation != "create_customer")
            .collect();
    }
    for client in &clients {
        client.close().await;
    }
    Ok(total)
}

/// Creates customers [`customer`]`(0..customers)` on `plan` with many calls in flight; ones
/// that exist already are kept (so a running daemon can be driven twice).
pub async fn seed_customers(client: &Client, customers: usize, plan: &str) -> anyhow::Result<()> {
    let mut seeders = Vec::new();
    for first in 0..SEEDERS.min(customers) {
        let (client, plan) = (client.clone(), plan.to_string());
        seeders.push(tokio::spawn(async move {
            for index in (first..customers).step_by(SEEDERS) {
                match client
                    .admin()
                    .create_customer(&customer(index), &plan)
                    .await
                {
                    Ok(_) if plan == "assistant" => {
                        // The largest top-up the shipped config takes: $10,000, which a run's
                        // streams do not spend.
                        let wallet = TopUpAmount::Units(10_000 * RATE_UNITS_PER_DOLLAR);
                        client
                            .admin()
                            .top_up(&customer(index), wallet, None)
                            .await
                            .map_err(|e| anyhow!("topping up {}: {e}", customer(index)))?;
                    }
                    Ok(_) | Err(Error::Rejected(TallyError::CustomerExists { .. })) => {}
                    Err(e) => return Err(anyhow!("seeding {}: {e}", customer(index))),
                }
            }
            Ok(())
        }));
    }
    for seeder in seeders {
        seeder.await??;
    }
    Ok(())
}

async fn load(
    door: Door,
    plan: Arc<Plan>,
    pacer: Option<Arc<Pacer>>,
    started: Instant,
    seed: u64,
    tally: Arc<Mutex<Tally>>,
) -> anyhow::Result<()> {
    let mut rng = Rng::with_seed(seed);
    let mut streaming = None;
    let measuring_from = started + plan.warmup;
    let end = measuring_from + plan.duration;
    let mut intended = started
        .checked_sub(plan.per_task_interval.unwrap_or_default())
        .unwrap_or(started);
    loop {
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        let begin = match plan.per_task_interval.zip(pacer.as_deref()) {
            Some((interval, pacer)) => {
                // Open loop: each request has a start time on a fixed schedule; waiting for the
                // previous answer must not delay when the next one is due.
                intended += interval;
                if now >= intended {
                    // Late (the previous answer took longer than the interval): timed from when
                    // it was due.
                    intended
                } else {
                    pacer.until(intended).await;
                    Instant::now()
                }
            }
            None => now,
        };
        let op = plan.mix.pick(rng.u64(..));
        let (ok, reports) = match &door {
            Door::Quic(client) if op == Op::Stream => {
                stream_step(client, &plan, &mut streaming, &mut rng).await
            }
            Door::Quic(client) => one_request(client, &plan, op, &mut rng).await,
            Door::Http(client) => one_http_request(client, &plan, op, &mut rng).await,
        };
        if begin >= measuring_from {
            let us = (begin.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX);
            let mut tally = tally.lock().expect("tally lock");
            tally
                .histograms
                .entry(op)
                .or_insert_with(histogram)
                .saturating_record(us);
            tally.errors += u64::from(!ok);
            tally.reports += reports;
        }
    }
}

/// Sends one operation; returns whether it succeeded and how many reports it carried.
async fn one_request(client: &Client, plan: &Plan, op: Op, rng: &mut Rng) -> (bool, u64) {
    let id = customer(plan.dist.pick(rng.u64(..), plan.customers));
    match op {
        Op::Check => (
            client.entitlements().check(&id, "tokens", 1).await.is_ok(),
            0,
        ),
        Op::Report => (
            client
                .usage()
                .report(ReportItem::new(id, "tokens", 1))
                .await
                .is_ok(),
            1,
        ),
        Op::Consume => {
            let item = ReportItem::new(id, "tokens", 1).only_if_allowed();
            (client.usage().report(item).await.is_ok(), 1)
        }
        Op::ReserveSettle => {
            let held = client
                .holds()
                .reserve(&id, "tokens", 10, Duration::from_secs(30))
                .await;
            match held.ok().and_then(|h| h.hold) {
                Some(hold) => (client.holds().settle(hold, 7, None).await.is_ok(), 1),
                None => (false, 0),
            }
        }
        Op::Model => {
            let usage = ModelUsage::new("gpt-4o", 1_200, 350);
            let item = ReportItem::tokens(id, "chat", usage);
            (client.usage().report(item).await.is_ok(), 1)
        }
        Op::Stream => unreachable!("a stream step keeps its task's answer: stream_step"),
        Op::Batch => {
            let items = (0..plan.batch)
                .map(|_| {
                    ReportItem::new(
                        customer(plan.dist.pick(rng.u64(..), plan.customers)),
                        "tokens",
                        1,
                    )
                })
                .collect();
            match client.usage().report_batch(items).await {
                Ok(results) => {
                    let ok = results
                        .iter()
                        .filter(|r| matches!(r, BatchItemResult::Ok(_)))
                        .count();
                    (ok == results.len(), ok as u64)
                }
                Err(_) => (false, 0),
            }
        }
    }
}

/// Sends one operation over HTTP; returns whether it succeeded and how many reports it carried.
async fn one_http_request(client: &HttpClient, plan: &Plan, op: Op, rng: &mut Rng) -> (bool, u64) {
    let id = customer(plan.dist.pick(rng.u64(..), plan.customers));
    let success =
        |answer: anyhow::Result<crate::http::Answer>| answer.is_ok_and(|a| a.status < 300);
    match op {
        Op::Check => {
            let body =
                serde_json::json!({"customerId": id, "featureCode": "tokens", "quantity": 1});
            (success(client.post("/usage/check", &body).await), 0)
        }
        Op::Report => {
            let body = serde_json::json!({"customerId": id, "feature": "tokens", "value": 1});
            (success(client.post("/usage/events", &body).await), 1)
        }
        Op::ReserveSettle => {
            let body = serde_json::json!({
                "customerId": id, "featureCode": "tokens", "quantity": 10, "ttlSeconds": 30,
            });
            let held = client.post("/x-tally/holds", &body).await;
            let hold = held
                .ok()
                .and_then(|a| a.data()["id"].as_str().map(str::to_owned));
            match hold {
                Some(hold) => {
                    let settle = serde_json::json!({"actual": 7});
                    let path = format!("/x-tally/holds/{hold}/settle");
                    (success(client.post(&path, &settle).await), 1)
                }
                None => (false, 0),
            }
        }
        Op::Model => {
            let body = serde_json::json!({
                "customerId": id, "feature": "chat", "model": "gpt-4o",
                "inputTokens": 1_200, "outputTokens": 350,
            });
            (success(client.post("/usage/events", &body).await), 1)
        }
        Op::Consume | Op::Batch | Op::Stream => (false, 0),
    }
}

/// A task's answer being streamed: its hold and the output reported so far.
struct Streaming {
    hold: u64,
    delivered: u64,
}

/// Output tokens one `stream` step adds, and the length of a streamed answer.
const STREAM_STEP: u64 = 50;
const STREAM_ANSWER: u64 = 4_096;

/// One `stream` operation: the next `progress` of the task's answer, opening a new answer (and
/// settling the finished one) when there is none. Returns whether it succeeded and the reports
/// it carried (a settle).
async fn stream_step(
    client: &Client,
    plan: &Plan,
    streaming: &mut Option<Streaming>,
    rng: &mut Rng,
) -> (bool, u64) {
    let holds = client.holds();
    let mut reports = 0;
    if let Some(done) = streaming.take_if(|s| s.delivered >= STREAM_ANSWER) {
        if holds
            .settle_output(done.hold, done.delivered, None)
            .await
            .is_err()
        {
            return (false, 0);
        }
        reports = 1;
    }
    if streaming.is_none() {
        let id = customer(plan.dist.pick(rng.u64(..), plan.customers));
        let request = ModelUsage::new("gpt-4o", 1_200, 256);
        match holds
            .reserve_tokens(&id, "chat", request, Duration::from_secs(30))
            .await
        {
            Ok(ReserveOutcome {
                hold: Some(hold), ..
            }) => *streaming = Some(Streaming { hold, delivered: 0 }),
            _ => return (false, reports),
        }
    }
    let stream = streaming.as_mut().expect("opened above");
    stream.delivered += STREAM_STEP;
    match holds.progress(stream.hold, stream.delivered).await {
        Ok(answer) if !answer.cut_off => (true, reports),
        _ => {
            *streaming = None;
            (false, reports)
        }
    }
}

/// One line of the table: name, count, rate, then p50, p90, p99, p99.9 and max in µs.
fn table_row(name: &str, count: u64, rate: &str, micros: [u64; 5]) -> String {
    let [p50, p90, p99, p999, max] = micros;
    format!("{name:<15} {count:>10} {rate:>10} {p50:>8} {p90:>8} {p99:>8} {p999:>8} {max:>9}\n")
}

fn report(args: &Args, plan: &Plan, tally: Tally, webhooks: Option<Received>) -> Report {
    let seconds = plan.duration.as_secs_f64();
    let mut table = format!(
        "{:<15} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
        "operation", "count", "ops/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
    );
    let mut json = serde_json::Map::new();
    let (mut ops, mut max_us) = (0u64, 0u64);
    for op in plan.mix.ops() {
        let h = tally.histograms.get(&op).cloned().unwrap_or_else(histogram);
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        table.push_str(&table_row(
            op.name(),
            h.len(),
            &format!("{:.0}", h.len() as f64 / seconds),
            [q(0.5), q(0.9), q(0.99), q(0.999), h.max()],
        ));
        let key = op.name().replace('-', "_");
        json.insert(format!("{key}_p50_us"), q(0.5).into());
        json.insert(format!("{key}_p90_us"), q(0.9).into());
        json.insert(format!("{key}_p99_us"), q(0.99).into());
        json.insert(format!("{key}_p999_us"), q(0.999).into());
        json.insert(format!("{key}_ops"), h.len().into());
        ops += h.len();
        max_us = max_us.max(h.max());
    }
    for key in ["report", "check"] {
        for q in ["p50", "p99", "p999"] {
            json.entry(format!("{key}_{q}_us")).or_insert(0.into());
        }
    }
    json.insert("ops".into(), ops.into());
    json.insert(
        "ops_per_sec".into(),
        ((ops as f64 / seconds).round() as u64).into(),
    );
    json.insert(
        "reports_per_sec".into(),
        ((tally.reports as f64 / seconds).round() as u64).into(),
    );
    json.insert("errors".into(), tally.errors.into());
    json.insert("max_us".into(), max_us.into());
    json.insert("connections".into(), args.connections.into());
    json.insert("inflight".into(), args.inflight.into());
    json.insert("mix".into(), plan.mix.describe().into());
    json.insert("customers".into(), args.customers.into());
    json.insert("dist".into(), plan.dist.describe().into());
    json.insert("batch".into(), args.batch.into());
    json.insert("duration_s".into(), seconds.into());
    json.insert("warmup_s".into(), plan.warmup.as_secs_f64().into());
    json.insert(
        "durability".into(),
        (if args.spawn {
            args.durability.as_str()
        } else {
            "daemon's"
        })
        .into(),
    );
    json.insert(
        "rate".into(),
        args.rate.map_or(serde_json::Value::Null, Into::into),
    );
    json.insert(
        "mode".into(),
        (if args.rate.is_some() {
            "open"
        } else {
            "closed"
        })
        .into(),
    );
    json.insert("spawn".into(), args.spawn.into());
    json.insert(
        "door".into(),
        (if args.http { "http" } else { "quic" }).into(),
    );
    if !tally.daemon_side.is_empty() {
        table.push_str("daemon-side, decode to answer, since the daemon started:\n");
        let mut daemon = serde_json::Map::new();
        for op in &tally.daemon_side {
            let l = op.latency;
            table.push_str(&table_row(
                &op.operation,
                l.count,
                "",
                [l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us],
            ));
            daemon.insert(
                op.operation.clone(),
                serde_json::json!({"p50_us": l.p50_us, "p99_us": l.p99_us, "p999_us": l.p999_us}),
            );
        }
        json.insert("daemon_side".into(), daemon.into());
    }
    if let Some(w) = webhooks {
        let rate = w.count as f64 / w.span.as_secs_f64().max(1e-3);
        let (p50, p99) = (
            w.lag_ms.value_at_quantile(0.5),
            w.lag_ms.value_at_quantile(0.99),
        );
        table.push_str(&format!(
            "webhooks: {} delivered in {:.1} s ({rate:.0}/s), commit-to-arrival lag p50 {p50} ms, p99 {p99} ms\n",
            w.count,
            w.span.as_secs_f64()
        ));
        json.insert("webhooks_delivered".into(), w.count.into());
        json.insert("webhooks_per_sec".into(), (rate.round() as u64).into());
        json.insert("webhook_lag_p50_ms".into(), p50.into());
        json.insert("webhook_lag_p99_ms".into(), p99.into());
    }
    table.push_str(&format!(
        "{ops} ops in {seconds:.1} s: {:.0} ops/s, {:.0} reports/s, {} errors",
        ops as f64 / seconds,
        tally.reports as f64 / seconds,
        tally.errors
    ));
    Report {
        table,
        json: serde_json::Value::Object(json),
    }
}

/// `10s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    tally_tui::run::parse_ttl(text)
}
