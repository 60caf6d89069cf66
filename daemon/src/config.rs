//! `config.toml`: typed, with unknown keys refused, validated once at start-up. Relative paths
//! resolve against the folder of the config file. Every problem is reported with its key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;
use tally_protocol::message::{Role, FRAME_BYTES_MAX, TOP_UP_UNITS_MAX};

use crate::metering::billing::{dollars, BillingTerms, UNITS_PER_CENT};
use crate::metering::catalogue::{Catalogue, FeatureToml, PlanToml};
use crate::metering::money::parse_dollars;
use crate::metering::period::{parse_duration_ms, Period};

/// The config shipped at the root of the repository, used when no file is given or found.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../config.toml");

/// Most shards; each is a thread.
pub const SHARDS_MAX: usize = 256;
/// Largest shard mailbox, in messages.
pub const MAILBOX_CAPACITY_MAX: usize = 1 << 20;
/// Longest busy-poll window, in microseconds (1,000 gained nothing over 300 in the A/Bs of
/// docs/performance.md; longer only keeps a core busy longer).
pub const BUSY_POLL_US_MAX: u32 = 10_000;
/// Most connections the daemon may be configured to serve at once.
pub const MAX_CONNECTIONS_MAX: u32 = 1 << 20;
/// Smallest configurable frame limit: a `Hello` with the longest key and a small request fit.
pub const FRAME_BYTES_MIN: u32 = 4 * 1024;
/// Most requests in flight per stream.
pub const INFLIGHT_PER_STREAM_MAX: u32 = 65_536;

/// Why the config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key of the wrong type or unknown.
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or "the embedded defaults".
        origin: String,
        /// The parser's message, with the key and line.
        message: String,
    },
    /// Valid TOML that breaks a rule; every problem found, one per line.
    #[error("{origin} is invalid:\n  {}", errors.join("\n  "))]
    Invalid {
        /// The file, or "the embedded defaults".
        origin: String,
        /// Each problem, starting with its key path.
        errors: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigToml {
    #[serde(default)]
    server: ServerToml,
    #[serde(default)]
    storage: StorageToml,
    #[serde(default)]
    auth: AuthToml,
    #[serde(default)]
    billing: BillingToml,
    #[serde(default)]
    ops: OpsToml,
    #[serde(default)]
    http: HttpToml,
    #[serde(default)]
    sandbox: SandboxToml,
    #[serde(default)]
    features: BTreeMap<String, FeatureToml>,
    #[serde(default)]
    plans: BTreeMap<String, PlanToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerToml {
    listen: String,
    shards: usize,
    shards_on_server_thread: bool,
    busy_poll_us: u32,
    mailbox_capacity: usize,
    inflight_per_stream: u32,
    streams_per_connection: u32,
    max_connections: u32,
    frame_bytes_max: u32,
    idle_timeout: String,
    handshake_timeout: String,
    frame_timeout: String,
    shutdown_grace: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

impl Default for ServerToml {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7070".into(),
            shards: 0,
            shards_on_server_thread: true,
            busy_poll_us: 300,
            mailbox_capacity: 4_096,
            inflight_per_stream: 64,
            streams_per_connection: 4,
            max_connections: 1_024,
            frame_bytes_max: FRAME_BYTES_MAX,
            idle_timeout: "30s".into(),
            handshake_timeout: "5s".into(),
            frame_timeout: "10s".into(),
            shutdown_grace: "10s".into(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StorageToml {
    data_dir: PathBuf,
    durability: String,
    periodic_ms: u64,
    create_if_missing: bool,
    event_retention: String,
}

impl Default for StorageToml {
    fn default() -> Self {
        Self {
            data_dir: "tally-data".into(),
            durability: "sync".into(),
            periodic_ms: 100,
            create_if_missing: false,
            event_retention: "13 months".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OpsToml {
    http_listen: String,
}

impl Default for OpsToml {
    fn default() -> Self {
        Self {
            http_listen: "127.0.0.1:7071".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HttpToml {
    listen: String,
    max_connections: u32,
    body_bytes_max: u32,
    header_bytes_max: u32,
    read_timeout: String,
    tls: bool,
}

impl Default for HttpToml {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7072".into(),
            max_connections: 1_024,
            body_bytes_max: 64 * 1024,
            header_bytes_max: 16 * 1024,
            read_timeout: "10s".into(),
            tls: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SandboxToml {
    test_clock: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthToml {
    #[serde(default)]
    keys: Vec<KeyToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyToml {
    name: String,
    role: String,
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BillingToml {
    fee_percent: String,
    fee_fixed: String,
    min_top_up: String,
    max_top_up: String,
    dedup_window: String,
}

impl Default for BillingToml {
    fn default() -> Self {
        Self {
            fee_percent: "4.5".into(),
            fee_fixed: "0.40".into(),
            min_top_up: "1.00".into(),
            max_top_up: "10000.00".into(),
            dedup_window: "24 hours".into(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[billing]`.
    pub billing: BillingConfig,
    /// `[ops]`.
    pub ops: OpsConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[sandbox]`.
    pub sandbox: SandboxConfig,
    /// `[features]` and `[plans]`.
    pub catalogue: Arc<Catalogue>,
}

/// `[server]`: the QUIC listener and its limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Shard actors; 0 in the file means one per core.
    pub shards: usize,
    /// Run the shard actors on the QUIC server's thread instead of one thread each.
    pub shards_on_server_thread: bool,
    /// How long the server thread keeps polling its sockets after its last work before it
    /// sleeps (0: never polls); see `server::busy_poll`.
    pub busy_poll_us: u32,
    /// Messages a shard's mailbox holds before requests are answered `Overloaded`.
    pub mailbox_capacity: usize,
    /// Requests processed at once per stream; more wait unread (QUIC flow control pushes back).
    pub inflight_per_stream: u32,
    /// Bidirectional streams a connection may open.
    pub streams_per_connection: u32,
    /// Connections served at once; more are refused during the QUIC handshake.
    pub max_connections: u32,
    /// A connection silent this long is closed.
    pub idle_timeout_ms: u64,
    /// A connection must open a stream and complete its `Hello` within this.
    pub handshake_timeout_ms: u64,
    /// Once a frame's first byte arrives, the whole frame must arrive within this (a peer
    /// trickling bytes cannot hold a stream forever).
    pub frame_timeout_ms: u64,
    /// On shutdown, how long in-flight requests may take to be answered before connections close.
    pub shutdown_grace_ms: u64,
    /// Largest frame accepted.
    pub frame_bytes_max: u32,
    /// Certificate and key files; `None` means development credentials in the data dir.
    pub tls: Option<TlsFiles>,
}

/// A certificate chain and its private key, PEM.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain PEM.
    pub cert: PathBuf,
    /// Private key PEM.
    pub key: PathBuf,
}

/// How acknowledged writes are made durable (used once persistence lands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before acknowledging, one fsync per group commit.
    Sync,
    /// Written to the OS before acknowledging.
    Buffered,
    /// fsync every `periodic_ms`.
    Periodic {
        /// Interval between fsyncs.
        interval_ms: u64,
    },
}

/// `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Absolute data directory.
    pub data_dir: PathBuf,
    /// Durability mode.
    pub durability: Durability,
    /// Whether a missing data dir may be created.
    pub create_if_missing: bool,
    /// Usage events older than this are deleted (at least two of the longest plan period, so
    /// the current and the previous period always reconcile).
    pub event_retention_ms: u64,
}

/// `[auth]`: API keys stored as SHA-256 hex.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Configured keys; empty means development keys in the data dir.
    pub keys: Vec<ApiKeyEntry>,
}

/// One configured key.
#[derive(Debug, Clone)]
pub struct ApiKeyEntry {
    /// A name for logs.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// SHA-256 of the key.
    pub sha256: [u8; 32],
}

/// `[http]`: the HTTP/JSON API (Commet's shapes) and its limits.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where the API is served; `None` turns it off.
    pub listen: Option<SocketAddr>,
    /// Connections served at once.
    pub max_connections: u32,
    /// Largest request body.
    pub body_bytes_max: u32,
    /// Largest request head.
    pub header_bytes_max: u32,
    /// A request's head and body must arrive within this; an idle connection is closed after it.
    pub read_timeout_ms: u64,
    /// Serve HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with the server's certificate.
    pub tls: bool,
}

/// `[sandbox]`: testing aids that must stay off in production.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    /// The API's `/test-clock` endpoints may move the daemon's clock forward.
    pub test_clock: bool,
}

/// Most connections `[http] max_connections` may allow.
pub const HTTP_CONNECTIONS_MAX: u32 = 65_536;
/// Largest `[http] body_bytes_max`.
pub const HTTP_BODY_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// `[http] header_bytes_max` bounds.
pub const HTTP_HEADER_BYTES: std::ops::RangeInclusive<u32> = 8 * 1024..=1024 * 1024;

/// `[ops]`: the HTTP listener for health checks and metrics.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    /// Where `/livez`, `/readyz` and `/metrics` are served; `None` turns the listener off.
    pub http_listen: Option<SocketAddr>,
}

/// `[billing]`.
#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// Merchant-of-record fee as a percentage (4.5 means 4.5%).
    pub fee_percent: Decimal,
    /// Fixed fee per transaction, in rate units.
    pub fee_fixed_units: i64,
    /// Smallest balance top-up, in rate units (whole cents; its net after the fee is ≥ 0).
    pub top_up_min_units: i64,
    /// Largest balance top-up, in rate units (whole cents).
    pub top_up_max_units: i64,
    /// How long idempotency keys are remembered.
    pub dedup_window_ms: u64,
}

impl BillingConfig {
    /// The fee terms the metering core applies.
    pub fn terms(&self) -> BillingTerms {
        BillingTerms {
            fee_percent: self.fee_percent,
            fee_fixed_units: self.fee_fixed_units,
            top_up_min_units: self.top_up_min_units,
            top_up_max_units: self.top_up_max_units,
        }
    }
}

impl Config {
    /// The shipped config with its data under `dir`, listening on 127.0.0.1 port 0: the daemon
    /// that tests, benchmarks and probes start in-process.
    pub fn loopback_in(dir: &Path) -> Config {
        let mut config = Config::parse(DEFAULT_CONFIG_TOML, dir, "the embedded default config")
            .expect("the shipped config is valid (tested)");
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.ops.http_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.http.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config
    }

    /// Reads and validates a config file; relative paths resolve against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_overrides(path, &[])
    }

    /// [`Config::load`] with environment overrides (see [`Config::parse_with_overrides`]).
    pub fn load_with_overrides(
        path: &Path,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        Config::parse_with_overrides(&text, &base, &path.display().to_string(), overrides)
    }

    /// Validates config text; relative paths resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_with_overrides(text, base_dir, origin, &[])
    }

    /// [`Config::parse`], then environment overrides applied on top: each `(name, value)` with
    /// a name like `TALLY__SERVER__LISTEN` sets `server.listen`. A value that reads as TOML (a
    /// number, a boolean, a quoted string, an array) is taken as such, anything else as a string.
    pub fn parse_with_overrides(
        text: &str,
        base_dir: &Path,
        origin: &str,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let parse_error = |origin: &str, e: toml::de::Error| ConfigError::Parse {
            origin: origin.into(),
            message: e.to_string().trim_end().into(),
        };
        let (raw, origin): (ConfigToml, String) = if overrides.is_empty() {
            (
                toml::from_str(text).map_err(|e| parse_error(origin, e))?,
                origin.into(),
            )
        } else {
            let mut table: toml::Table =
                toml::from_str(text).map_err(|e| parse_error(origin, e))?;
            let names: Vec<&str> = overrides.iter().map(|(name, _)| name.as_str()).collect();
            let origin = format!("{origin} with {}", names.join(", "));
            let mut errors = Vec::new();
            for (name, value) in overrides {
                if let Err(e) = apply_override(&mut table, name, value) {
                    errors.push(format!("{name}: {e}"));
                }
            }
            if !errors.is_empty() {
                return Err(ConfigError::Invalid { origin, errors });
            }
            let raw = table
                .try_into()
                .map_err(|e: toml::de::Error| parse_error(&origin, e))?;
            (raw, origin)
        };
        let origin = origin.as_str();
        let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
        let mut errors = Vec::new();
        let server = server_config(&raw.server, &base_dir, &mut errors);
        let storage = storage_config(&raw.storage, &base_dir, &mut errors);
        let auth = auth_config(&raw.auth, &mut errors);
        let billing = billing_config(&raw.billing, &mut errors);
        let ops = ops_config(&raw.ops, &mut errors);
        let http = http_config(&raw.http, &mut errors);
        let sandbox = SandboxConfig {
            test_clock: raw.sandbox.test_clock,
        };
        let catalogue =
            Catalogue::build(&raw.features, &raw.plans).unwrap_or_else(|catalogue_errors| {
                errors.extend(catalogue_errors);
                Catalogue::build(&BTreeMap::new(), &BTreeMap::new())
                    .expect("an empty catalogue is valid")
            });
        let longest_period_ms = catalogue
            .plans()
            .map(|plan| period_upper_bound_ms(plan.period))
            .max()
            .unwrap_or(0);
        if storage.event_retention_ms < longest_period_ms.saturating_mul(2) {
            errors.push(format!(
                "storage.event_retention: keeps {} days of events; the longest plan period needs at least {} (two periods)",
                storage.event_retention_ms / DAY_MS,
                longest_period_ms.saturating_mul(2).div_ceil(DAY_MS)
            ));
        }
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                origin: origin.into(),
                errors,
            });
        }
        Ok(Config {
            server,
            storage,
            auth,
            billing,
            ops,
            http,
            sandbox,
            catalogue: Arc::new(catalogue),
        })
    }
}

/// Environment variables starting with this override config keys (see
/// [`Config::parse_with_overrides`]).
pub const ENV_PREFIX: &str = "TALLY__";

/// The `TALLY__…` variables of this process, sorted by name so errors list them stably.
pub fn env_overrides() -> Vec<(String, String)> {
    let mut overrides: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    overrides.sort();
    overrides
}

fn apply_override(table: &mut toml::Table, name: &str, value: &str) -> Result<(), String> {
    let path: Vec<String> = name
        .strip_prefix(ENV_PREFIX)
        .unwrap_or(name)
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(format!(
            "write the key path as {ENV_PREFIX}SECTION__KEY, e.g. {ENV_PREFIX}SERVER__LISTEN"
        ));
    }
    let (last, sections) = path.split_last().expect("split yields at least one part");
    let mut at = table;
    for (depth, section) in sections.iter().enumerate() {
        let entry = at
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{}` is a value, not a section", path[..=depth].join(".")))?;
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"));
    at.insert(
        last.clone(),
        parsed.unwrap_or_else(|| toml::Value::String(value.into())),
    );
    Ok(())
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The longest a period can last: months count as 31 days.
fn period_upper_bound_ms(period: Period) -> u64 {
    match period {
        Period::Months(months) => u64::from(months) * 31 * DAY_MS,
        Period::Fixed { length_ms } => length_ms,
    }
}

fn duration(at: &str, text: &str, errors: &mut Vec<String>) -> u64 {
    parse_duration_ms(text).unwrap_or_else(|e| {
        errors.push(format!("{at}: {e}"));
        1
    })
}

fn server_config(raw: &ServerToml, base: &Path, errors: &mut Vec<String>) -> ServerConfig {
    let listen = raw.listen.parse().unwrap_or_else(|_| {
        errors.push(format!(
            "server.listen: `{}` is not an address; write IP:PORT, e.g. \"127.0.0.1:7070\"",
            raw.listen
        ));
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    let shards = if raw.shards == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    } else {
        raw.shards
    };
    if shards > SHARDS_MAX {
        errors.push(format!(
            "server.shards: is {shards}; the limit is {SHARDS_MAX}"
        ));
    }
    if raw.busy_poll_us > BUSY_POLL_US_MAX {
        errors.push(format!(
            "server.busy_poll_us: is {}; it must be 0 (off) to {BUSY_POLL_US_MAX}",
            raw.busy_poll_us
        ));
    }
    if raw.mailbox_capacity == 0 || raw.mailbox_capacity > MAILBOX_CAPACITY_MAX {
        errors.push(format!(
            "server.mailbox_capacity: is {}; it must be 1 to {MAILBOX_CAPACITY_MAX}",
            raw.mailbox_capacity
        ));
    }
    if raw.inflight_per_stream == 0 || raw.inflight_per_stream > INFLIGHT_PER_STREAM_MAX {
        errors.push(format!(
            "server.inflight_per_stream: is {}; it must be 1 to {INFLIGHT_PER_STREAM_MAX}",
            raw.inflight_per_stream
        ));
    }
    if raw.streams_per_connection == 0 || raw.streams_per_connection > 64 {
        errors.push(format!(
            "server.streams_per_connection: is {}; it must be 1 to 64",
            raw.streams_per_connection
        ));
    }
    if raw.max_connections == 0 || raw.max_connections > MAX_CONNECTIONS_MAX {
        errors.push(format!(
            "server.max_connections: is {}; it must be 1 to {MAX_CONNECTIONS_MAX}",
            raw.max_connections
        ));
    }
    if raw.frame_bytes_max < FRAME_BYTES_MIN || raw.frame_bytes_max > FRAME_BYTES_MAX {
        errors.push(format!(
            "server.frame_bytes_max: is {}; it must be {FRAME_BYTES_MIN} to {FRAME_BYTES_MAX}",
            raw.frame_bytes_max
        ));
    }
    let tls = match (&raw.tls_cert, &raw.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: base.join(cert),
            key: base.join(key),
        }),
        _ => {
            errors.push("server.tls_cert, server.tls_key: give both or neither".into());
            None
        }
    };
    ServerConfig {
        listen,
        shards: shards.clamp(1, SHARDS_MAX),
        shards_on_server_thread: raw.shards_on_server_thread,
        busy_poll_us: raw.busy_poll_us,
        mailbox_capacity: raw.mailbox_capacity,
        inflight_per_stream: raw.inflight_per_stream,
        streams_per_connection: raw.streams_per_connection,
        max_connections: raw.max_connections,
        idle_timeout_ms: duration("server.idle_timeout", &raw.idle_timeout, errors),
        handshake_timeout_ms: duration("server.handshake_timeout", &raw.handshake_timeout, errors),
        frame_timeout_ms: duration("server.frame_timeout", &raw.frame_timeout, errors),
        shutdown_grace_ms: duration("server.shutdown_grace", &raw.shutdown_grace, errors),
        frame_bytes_max: raw.frame_bytes_max,
        tls,
    }
}

fn ops_config(raw: &OpsToml, errors: &mut Vec<String>) -> OpsConfig {
    let http_listen = match raw.http_listen.trim() {
        "" => None,
        text => text.parse().map(Some).unwrap_or_else(|_| {
            errors.push(format!(
                "ops.http_listen: `{text}` is not an address; write IP:PORT, or \"\" to turn the listener off"
            ));
            None
        }),
    };
    OpsConfig { http_listen }
}

fn http_config(raw: &HttpToml, errors: &mut Vec<String>) -> HttpConfig {
    let listen = match raw.listen.trim() {
        "" => None,
        text => text.parse().map(Some).unwrap_or_else(|_| {
            errors.push(format!(
                "http.listen: `{text}` is not an address; write IP:PORT, or \"\" to turn the API off"
            ));
            None
        }),
    };
    if raw.max_connections == 0 || raw.max_connections > HTTP_CONNECTIONS_MAX {
        errors.push(format!(
            "http.max_connections: is {}; it must be 1 to {HTTP_CONNECTIONS_MAX}",
            raw.max_connections
        ));
    }
    if raw.body_bytes_max < 1024 || raw.body_bytes_max > HTTP_BODY_BYTES_MAX {
        errors.push(format!(
            "http.body_bytes_max: is {}; it must be 1024 to {HTTP_BODY_BYTES_MAX}",
            raw.body_bytes_max
        ));
    }
    if !HTTP_HEADER_BYTES.contains(&raw.header_bytes_max) {
        errors.push(format!(
            "http.header_bytes_max: is {}; it must be {} to {}",
            raw.header_bytes_max,
            HTTP_HEADER_BYTES.start(),
            HTTP_HEADER_BYTES.end()
        ));
    }
    let read_timeout_ms = duration("http.read_timeout", &raw.read_timeout, errors);
    if read_timeout_ms == 0 {
        errors.push("http.read_timeout: must be longer than 0".into());
    }
    HttpConfig {
        listen,
        max_connections: raw.max_connections,
        body_bytes_max: raw.body_bytes_max,
        header_bytes_max: raw.header_bytes_max,
        read_timeout_ms,
        tls: raw.tls,
    }
}

fn storage_config(raw: &StorageToml, base: &Path, errors: &mut Vec<String>) -> StorageConfig {
    let durability = match raw.durability.as_str() {
        "sync" => Durability::Sync,
        "buffered" => Durability::Buffered,
        "periodic" if (1..=60_000).contains(&raw.periodic_ms) => Durability::Periodic {
            interval_ms: raw.periodic_ms,
        },
        "periodic" => {
            errors.push(format!(
                "storage.periodic_ms: is {}; it must be 1 to 60000",
                raw.periodic_ms
            ));
            Durability::Sync
        }
        other => {
            errors.push(format!(
                "storage.durability: `{other}` is not a mode; use \"sync\", \"buffered\" or \"periodic\""
            ));
            Durability::Sync
        }
    };
    StorageConfig {
        data_dir: base.join(&raw.data_dir),
        durability,
        create_if_missing: raw.create_if_missing,
        event_retention_ms: match Period::parse(&raw.event_retention) {
            Ok(period) => period_upper_bound_ms(period),
            Err(e) => {
                errors.push(format!("storage.event_retention: {e}"));
                u64::MAX
            }
        },
    }
}

fn auth_config(raw: &AuthToml, errors: &mut Vec<String>) -> AuthConfig {
    let mut keys = Vec::new();
    for (i, key) in raw.keys.iter().enumerate() {
        let at = format!("auth.keys[{i}] ({})", key.name);
        let role = match key.role.as_str() {
            "client" => Role::Client,
            "admin" => Role::Admin,
            "monitor" => Role::Monitor,
            other => {
                errors.push(format!(
                    "{at}.role: `{other}` is not a role; use client, admin or monitor"
                ));
                continue;
            }
        };
        let mut sha256 = [0u8; 32];
        if hex::decode_to_slice(&key.sha256, &mut sha256).is_err() {
            errors.push(format!(
                "{at}.sha256: must be 64 hex digits (the SHA-256 of the key)"
            ));
            continue;
        }
        keys.push(ApiKeyEntry {
            name: key.name.clone(),
            role,
            sha256,
        });
    }
    AuthConfig { keys }
}

fn billing_config(raw: &BillingToml, errors: &mut Vec<String>) -> BillingConfig {
    let fee_percent = match raw.fee_percent.parse::<Decimal>() {
        Ok(p) if p >= Decimal::ZERO && p <= Decimal::ONE_HUNDRED => p,
        _ => {
            errors.push(format!(
                "billing.fee_percent: `{}` must be a decimal from 0 to 100",
                raw.fee_percent
            ));
            Decimal::ZERO
        }
    };
    let fee_fixed_units = parse_dollars(&raw.fee_fixed).unwrap_or_else(|e| {
        errors.push(format!("billing.fee_fixed: {e}"));
        0
    });
    let top_up = |key: &str, text: &str, errors: &mut Vec<String>| match parse_dollars(text) {
        Ok(units)
            if units % UNITS_PER_CENT == 0
                && (UNITS_PER_CENT..=TOP_UP_UNITS_MAX).contains(&units) =>
        {
            units
        }
        Ok(_) => {
            errors.push(format!(
                "billing.{key}: `{text}` must be whole cents from 0.01 to {}",
                dollars(TOP_UP_UNITS_MAX)
            ));
            0
        }
        Err(e) => {
            errors.push(format!("billing.{key}: {e}"));
            0
        }
    };
    let config = BillingConfig {
        fee_percent,
        fee_fixed_units,
        top_up_min_units: top_up("min_top_up", &raw.min_top_up, errors),
        top_up_max_units: top_up("max_top_up", &raw.max_top_up, errors),
        dedup_window_ms: duration("billing.dedup_window", &raw.dedup_window, errors),
    };
    if config.top_up_min_units > config.top_up_max_units {
        errors.push(format!(
            "billing.min_top_up: `{}` is above billing.max_top_up `{}`",
            raw.min_top_up, raw.max_top_up
        ));
    }
    let smallest = config.terms().settle(config.top_up_min_units);
    if config.top_up_min_units > 0 && smallest.net_units < 0 {
        errors.push(format!(
            "billing.min_top_up: a top-up of `{}` would net {} after its fee of {}; raise it above the fee",
            raw.min_top_up,
            dollars(smallest.net_units),
            dollars(smallest.fee_units)
        ));
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_is_valid() {
        let config =
            Config::parse(DEFAULT_CONFIG_TOML, Path::new("/srv/tally"), "config.toml").unwrap();
        assert_eq!(config.storage.data_dir, Path::new("/srv/tally/tally-data"));
        for plan in ["pro", "images", "wallet"] {
            assert!(config.catalogue.plan(plan).is_some(), "plan {plan}");
        }
        assert_eq!(config.billing.fee_fixed_units, 4_000);
        assert_eq!(config.billing.dedup_window_ms, 24 * 3_600_000);
    }

    #[test]
    fn event_retention_must_cover_two_periods() {
        let text = DEFAULT_CONFIG_TOML.replace(
            "event_retention = \"13 months\"",
            "event_retention = \"1 month\"",
        );
        let err = Config::parse(&text, Path::new("."), "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage.event_retention"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Config::parse(
            "[server]\nlisten = \"127.0.0.1:1\"\nspeed = 3\n",
            Path::new("."),
            "c.toml",
        )
        .unwrap_err();
        assert!(err.to_string().contains("speed"), "{err}");
    }

    fn overrides(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_variables_override_config_keys() {
        let config = Config::parse_with_overrides(
            DEFAULT_CONFIG_TOML,
            Path::new("/srv"),
            "config.toml",
            &overrides(&[
                ("TALLY__SERVER__LISTEN", "127.0.0.1:9999"),
                ("TALLY__SERVER__MAX_CONNECTIONS", "7"),
                ("TALLY__STORAGE__DURABILITY", "buffered"),
                ("TALLY__STORAGE__CREATE_IF_MISSING", "false"),
                ("TALLY__OPS__HTTP_LISTEN", ""),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 9999);
        assert_eq!(config.server.max_connections, 7);
        assert_eq!(config.storage.durability, Durability::Buffered);
        assert!(!config.storage.create_if_missing);
        assert_eq!(config.ops.http_listen, None);
        // The file's other keys are untouched.
        assert_eq!(config.billing.fee_fixed_units, 4_000);
    }

    #[test]
    fn a_bad_override_names_the_variable_and_the_key() {
        let err = Config::parse_with_overrides(
            DEFAULT_CONFIG_TOML,
            Path::new("."),
            "config.toml",
            &overrides(&[("TALLY__SERVER__LISTEN", "nowhere")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("TALLY__SERVER__LISTEN"), "{err}");
        assert!(err.contains("server.listen"), "{err}");
        let err = Config::parse_with_overrides(
            DEFAULT_CONFIG_TOML,
            Path::new("."),
            "config.toml",
            &overrides(&[("TALLY__SERVER__LISEN", "127.0.0.1:1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = Config::parse_with_overrides(
            DEFAULT_CONFIG_TOML,
            Path::new("."),
            "config.toml",
            &overrides(&[("TALLY__SERVER__LISTEN__PORT", "1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.listen"), "{err}");
    }

    #[test]
    fn wire_limits_are_bounded() {
        let text = DEFAULT_CONFIG_TOML
            .replace("max_connections = 1024", "max_connections = 0")
            .replace("frame_bytes_max = 2097152", "frame_bytes_max = 10");
        let err = Config::parse(&text, Path::new("."), "c.toml")
            .unwrap_err()
            .to_string();
        for path in ["server.max_connections", "server.frame_bytes_max"] {
            assert!(err.contains(path), "{path} missing from {err}");
        }
    }

    #[test]
    fn busy_polling_is_on_by_default_can_be_turned_off_and_is_bounded() {
        let shipped = Config::parse(DEFAULT_CONFIG_TOML, Path::new("."), "c.toml").unwrap();
        let unset = Config::parse("", Path::new("."), "c.toml").unwrap();
        assert_eq!(shipped.server.busy_poll_us, 300);
        assert_eq!(
            unset.server.busy_poll_us, 300,
            "the file and the built-in default agree"
        );
        let off = Config::parse_with_overrides(
            DEFAULT_CONFIG_TOML,
            Path::new("."),
            "c.toml",
            &overrides(&[("TALLY__SERVER__BUSY_POLL_US", "0")]),
        )
        .unwrap();
        assert_eq!(off.server.busy_poll_us, 0);
        let text = DEFAULT_CONFIG_TOML.replace("busy_poll_us = 300", "busy_poll_us = 10001");
        let err = Config::parse(&text, Path::new("."), "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.busy_poll_us"), "{err}");
        assert!(err.contains("10000"), "{err}");
    }

    #[test]
    fn every_problem_is_listed_with_its_key_path() {
        let text = "[server]\nlisten = \"nowhere\"\n[storage]\ndurability = \"sometimes\"\n[billing]\nfee_fixed = \"-1\"\n";
        let err = Config::parse(text, Path::new("."), "c.toml")
            .unwrap_err()
            .to_string();
        for path in ["server.listen", "storage.durability", "billing.fee_fixed"] {
            assert!(err.contains(path), "{path} missing from {err}");
        }
    }

    #[test]
    fn a_top_up_range_that_could_cost_the_merchant_is_refused() {
        let with = |min: &str| {
            let text = DEFAULT_CONFIG_TOML
                .replace("min_top_up = \"1.00\"", &format!("min_top_up = \"{min}\""));
            Config::parse(&text, Path::new("."), "c.toml").map_err(|e| e.to_string())
        };
        assert_eq!(with("1.00").unwrap().billing.top_up_min_units, 10_000);
        let below_fee = with("0.30").unwrap_err();
        assert!(below_fee.contains("billing.min_top_up"), "{below_fee}");
        assert!(below_fee.contains("$-0.11"), "{below_fee}");
        let sub_cent = with("1.005").unwrap_err();
        assert!(sub_cent.contains("whole cents"), "{sub_cent}");
        let above_max = with("20000.00").unwrap_err();
        assert!(
            above_max.contains("above billing.max_top_up"),
            "{above_max}"
        );
    }
}
