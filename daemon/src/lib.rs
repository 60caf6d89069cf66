//! tallyd: the Tally metering and entitlement daemon, as a library with a thin `main.rs`.
//!
//! # Layout
//! - [`metering`]: the pure core — money, catalogue, periods, models, holds, idempotency.
//! - [`config`]: `config.toml`, typed and validated.
//! - [`clock`]: injected time.
//! - [`stable_hash`]: customer placement and request fingerprints.

pub mod clock;
pub mod config;
pub mod metering;
pub mod stable_hash;
