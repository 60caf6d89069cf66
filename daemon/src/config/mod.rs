//! `config.toml`: typed, with unknown keys refused, validated once at start-up. Relative paths
//! resolve against the folder of the config file. Every problem is reported with its key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rust_decimal::Decimal;

use tally_protocol::message::{Role, FRAME_BYTES_MAX, TOP_UP_UNITS_MAX};

use crate::metering::billing::{dollars, BillingTerms, UNITS_PER_CENT};
use crate::metering::catalogue::Catalogue;
use crate::metering::money::parse_dollars;
use crate::metering::period::{parse_duration_ms, Period};

/// The config shipped at the root of the repository, used when no file is given or found.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../../config.toml");

/// Most shards; each is a thread.
pub const SHARDS_MAX: usize = 256;
/// Largest shard mailbox, in messages.
pub const MAILBOX_CAPACITY_MAX: usize = 1 << 20;
/// Longest busy-poll window, in microseconds: longer only keeps a core busy longer.
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

mod raw;
mod sections;

use raw::ConfigToml;
use sections::*;

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
    /// `[[webhooks]]` and `[webhook_delivery]`.
    pub webhooks: WebhooksConfig,
    /// `[features]` and `[plans]`.
    pub catalogue: Arc<Catalogue>,
    /// The file it was read from and the overrides applied (`None`: text, such as the embedded
    /// defaults) — what a reload of the model prices reads again.
    pub source: Option<ConfigSource>,
}

/// `[[webhooks]]`: where alerts are delivered, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhooksConfig {
    /// The endpoints of `config.toml` (more can be added through the API).
    pub endpoints: Vec<crate::webhooks::delivery::Endpoint>,
    /// Retries, timeouts, mode.
    pub terms: crate::webhooks::delivery::DeliveryTerms,
}

/// Where a config came from, to read it again.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSource {
    /// The file.
    pub path: PathBuf,
    /// The `TALLY__…` overrides applied on top.
    pub overrides: Vec<(String, String)>,
}

impl ConfigSource {
    /// Reads and validates the file again, with the same overrides.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load_with_overrides(&self.path, &self.overrides)
    }
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
    /// sleeps (0: never polls); see `platform::busy_poll`.
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
        let mut config =
            Config::parse_with_overrides(&text, &base, &path.display().to_string(), overrides)?;
        config.source = Some(ConfigSource {
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
            overrides: overrides.to_vec(),
        });
        Ok(config)
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
        let webhooks = webhooks_config(
            &raw.webhooks,
            &raw.webhook_delivery,
            sandbox.test_clock,
            &mut errors,
        );
        let mut catalogue =
            Catalogue::build(&raw.features, &raw.plans).unwrap_or_else(|catalogue_errors| {
                errors.extend(catalogue_errors);
                Catalogue::build(&BTreeMap::new(), &BTreeMap::new())
                    .expect("an empty catalogue is valid")
            });
        if let Err(model_errors) = catalogue.set_models(&raw.models) {
            errors.extend(model_errors);
        }
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
            webhooks,
            catalogue: Arc::new(catalogue),
            source: None,
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
    fn webhook_endpoints_are_checked_with_their_key_named() {
        let text = format!(
            "{DEFAULT_CONFIG_TOML}\n{}",
            r#"
[[webhooks]]
url = "https://example.com/a"
secret = "whsec_0123456789abcdef"
events = ["balance.low"]

[[webhooks]]
url = "ftp://example.com/b"
secret = "short"

[[webhooks]]
url = "https://example.com/c"
secret = "whsec_0123456789abcdef"
events = ["payout.paid"]

[[webhooks]]
url = "https://example.com/a"
secret = "whsec_0123456789abcdef"
"#
        );
        let err = Config::parse(&text, Path::new("."), "c.toml")
            .unwrap_err()
            .to_string();
        for expected in [
            "webhooks[1].url",
            "webhooks[1].secret",
            "webhooks[2].events: Tally never sends `payout.paid`",
            "webhooks[3].url: `https://example.com/a` is listed twice",
        ] {
            assert!(err.contains(expected), "{expected} missing from {err}");
        }
        assert!(!err.contains("webhooks[0]"), "{err}");
        let good = text.split("\n[[webhooks]]\nurl = \"ftp").next().unwrap();
        let config = Config::parse(good, Path::new("."), "c.toml").unwrap();
        assert_eq!(config.webhooks.endpoints.len(), 1);
        assert!(config.webhooks.endpoints[0]
            .events
            .as_ref()
            .is_some_and(|e| e.contains("balance.low")));
        assert_eq!(
            config.webhooks.terms.retry_for,
            std::time::Duration::from_secs(24 * 3_600)
        );
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
