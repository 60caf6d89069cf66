//! Validating each section of `config.toml`: every problem is pushed with its key path, so one
//! start-up reports them all.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::webhooks::delivery::{DeliveryTerms, Endpoint};

use super::raw::*;
use super::*;

pub(super) const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The longest a period can last: months count as 31 days.
pub(super) fn period_upper_bound_ms(period: Period) -> u64 {
    match period {
        Period::Months(months) => u64::from(months) * 31 * DAY_MS,
        Period::Fixed { length_ms } => length_ms,
    }
}

pub(super) fn duration(at: &str, text: &str, errors: &mut Vec<String>) -> u64 {
    parse_duration_ms(text).unwrap_or_else(|e| {
        errors.push(format!("{at}: {e}"));
        1
    })
}

pub(super) fn server_config(
    raw: &ServerToml,
    base: &Path,
    errors: &mut Vec<String>,
) -> ServerConfig {
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

pub(super) fn ops_config(raw: &OpsToml, errors: &mut Vec<String>) -> OpsConfig {
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

pub(super) fn http_config(raw: &HttpToml, errors: &mut Vec<String>) -> HttpConfig {
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

pub(super) fn storage_config(
    raw: &StorageToml,
    base: &Path,
    errors: &mut Vec<String>,
) -> StorageConfig {
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

pub(super) fn auth_config(raw: &AuthToml, errors: &mut Vec<String>) -> AuthConfig {
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

pub(super) fn billing_config(raw: &BillingToml, errors: &mut Vec<String>) -> BillingConfig {
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

pub(super) fn webhooks_config(
    endpoints: &[WebhookToml],
    delivery: &WebhookDeliveryToml,
    sandbox: bool,
    errors: &mut Vec<String>,
) -> WebhooksConfig {
    let mut found = Vec::new();
    for (index, raw) in endpoints.iter().enumerate() {
        let at = format!("webhooks[{index}]");
        if raw.secret.len() < 16 {
            errors.push(format!(
                "{at}.secret: is {} bytes; it must be at least 16 (receivers check signatures with it)",
                raw.secret.len()
            ));
        }
        let Some(url) = crate::webhooks::endpoints::parse_url(&raw.url) else {
            errors.push(format!(
                "{at}.url: `{}` is not an http:// or https:// URL",
                raw.url
            ));
            continue;
        };
        let events = raw.events.as_ref().map(|events| {
            for event in events {
                if !crate::webhooks::endpoints::EVENTS.contains(&event.as_str()) {
                    errors.push(format!(
                        "{at}.events: Tally never sends `{event}`; it sends {}",
                        crate::webhooks::endpoints::EVENTS.join(", ")
                    ));
                }
            }
            events.iter().cloned().collect()
        });
        let endpoint = Endpoint::configured(url, raw.secret.clone(), events);
        if found.iter().any(|e: &Endpoint| e.id == endpoint.id) {
            errors.push(format!("{at}.url: `{}` is listed twice", raw.url));
            continue;
        }
        found.push(endpoint);
    }
    let ms = |key: &str, text: &str, errors: &mut Vec<String>| {
        Duration::from_millis(duration(&format!("webhook_delivery.{key}"), text, errors))
    };
    let terms = DeliveryTerms {
        retry_for: ms("retry_for", &delivery.retry_for, errors),
        timeout: ms("timeout", &delivery.timeout, errors),
        backoff: ms("backoff", &delivery.backoff, errors),
        backoff_max: ms("backoff_max", &delivery.backoff_max, errors),
        retention: ms("retention", &delivery.retention, errors),
        sandbox,
    };
    if terms.backoff > terms.backoff_max {
        errors.push("webhook_delivery.backoff: is longer than backoff_max".into());
    }
    WebhooksConfig {
        endpoints: found,
        terms,
    }
}
