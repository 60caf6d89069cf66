//! `config.toml` as written: every section's keys with their defaults, unknown keys refused.
//! [`super::sections`] turns them into the validated [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::FRAME_BYTES_MAX;
use crate::metering::catalogue::{FeatureToml, PlanToml};
use crate::metering::models::ModelToml;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigToml {
    #[serde(default)]
    pub(super) server: ServerToml,
    #[serde(default)]
    pub(super) storage: StorageToml,
    #[serde(default)]
    pub(super) auth: AuthToml,
    #[serde(default)]
    pub(super) billing: BillingToml,
    #[serde(default)]
    pub(super) ops: OpsToml,
    #[serde(default)]
    pub(super) http: HttpToml,
    #[serde(default)]
    pub(super) sandbox: SandboxToml,
    #[serde(default)]
    pub(super) features: BTreeMap<String, FeatureToml>,
    #[serde(default)]
    pub(super) plans: BTreeMap<String, PlanToml>,
    #[serde(default)]
    pub(super) models: BTreeMap<String, ModelToml>,
    #[serde(default)]
    pub(super) webhooks: Vec<WebhookToml>,
    #[serde(default)]
    pub(super) webhook_delivery: WebhookDeliveryToml,
}

/// `[[webhooks]]`: one endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhookToml {
    pub(super) url: String,
    pub(super) secret: String,
    #[serde(default)]
    pub(super) events: Option<Vec<String>>,
}

/// `[webhook_delivery]`: how every endpoint is retried.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct WebhookDeliveryToml {
    pub(super) retry_for: String,
    pub(super) timeout: String,
    pub(super) backoff: String,
    pub(super) backoff_max: String,
    pub(super) retention: String,
}

impl Default for WebhookDeliveryToml {
    fn default() -> Self {
        Self {
            retry_for: "24h".into(),
            timeout: "10s".into(),
            backoff: "1s".into(),
            backoff_max: "10m".into(),
            retention: "7d".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ServerToml {
    pub(super) listen: String,
    pub(super) shards: usize,
    pub(super) shards_on_server_thread: bool,
    pub(super) busy_poll_us: u32,
    pub(super) mailbox_capacity: usize,
    pub(super) inflight_per_stream: u32,
    pub(super) streams_per_connection: u32,
    pub(super) max_connections: u32,
    pub(super) frame_bytes_max: u32,
    pub(super) idle_timeout: String,
    pub(super) handshake_timeout: String,
    pub(super) frame_timeout: String,
    pub(super) shutdown_grace: String,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
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
pub(super) struct StorageToml {
    pub(super) data_dir: PathBuf,
    pub(super) durability: String,
    pub(super) periodic_ms: u64,
    pub(super) create_if_missing: bool,
    pub(super) event_retention: String,
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
pub(super) struct OpsToml {
    pub(super) http_listen: String,
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
pub(super) struct HttpToml {
    pub(super) listen: String,
    pub(super) max_connections: u32,
    pub(super) body_bytes_max: u32,
    pub(super) header_bytes_max: u32,
    pub(super) read_timeout: String,
    pub(super) tls: bool,
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
pub(super) struct SandboxToml {
    pub(super) test_clock: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthToml {
    #[serde(default)]
    pub(super) keys: Vec<KeyToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyToml {
    pub(super) name: String,
    pub(super) role: String,
    pub(super) sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct BillingToml {
    pub(super) fee_percent: String,
    pub(super) fee_fixed: String,
    pub(super) min_top_up: String,
    pub(super) max_top_up: String,
    pub(super) dedup_window: String,
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
