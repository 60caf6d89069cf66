//! tallyd: the Tally metering and entitlement daemon, as a library with a thin `main.rs`.
//!
//! # Layout
//! - [`metering`]: the pure core — money, catalogue, periods, models, holds, idempotency.
//! - [`shard`] and [`router`]: the actix shard actors that own customers, and routing to them.
//! - [`server`]: the QUIC edge — accept, authenticate, decode, route, encode.
//! - [`daemon`]: start-up and shutdown; [`config`], [`credentials`], [`clock`] around it.
//!
//! # Guarantees (this release)
//! Answers are exact: the shard that owns a customer answers from its live state. State lives in
//! memory only: persistence (fjall, group commit) is the next piece of work, and a restart starts
//! empty until then.

pub mod clock;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod metering;
pub mod router;
pub mod server;
pub mod shard;
pub mod stable_hash;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use daemon::{Daemon, StartError};
