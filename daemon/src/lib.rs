//! tallyd: the Tally metering and entitlement daemon, as a library with a thin `main.rs`.
//!
//! # Layout
//! - [`metering`]: the pure core — money, catalogue, periods, models, holds, idempotency.
//! - [`shard`] and [`router`]: the actix shard actors that own customers, and routing to them.
//! - [`committer`] and [`store`]: group commit into the fjall store, and recovery from it.
//! - [`server`]: the QUIC edge — accept, authenticate, decode, route, encode.
//! - [`daemon`]: start-up and shutdown; [`config`], [`credentials`], [`clock`] around it.
//!
//! # Guarantees
//! Answers are exact: the shard that owns a customer answers from its live state. An answer to a
//! state change is released only after the change is persisted per the durability mode (`sync`:
//! fsynced; `buffered`: in the OS; `periodic`: in the OS, fsynced every N ms); a restart
//! recovers every customer, hold and idempotency key from the store before serving.

pub mod activity;
pub mod api;
pub mod clock;
pub mod committer;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod data_dir;
pub mod demo;
pub mod http;
pub mod janitor;
pub mod models_reload;
pub mod platform;
pub mod router;
pub mod server;
pub mod shard;
pub mod store;
pub mod webhooks;

/// The metering core (the `tally-core` crate), under the name the daemon's modules use.
pub use tally_core as metering;
pub use tally_core::stable_hash;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use daemon::{Daemon, ShutdownError, StartError, StartOptions};
