//! The metering core: every billing rule — money, catalogue and its price versions, periods, the
//! three consumption models, holds and idempotency — as pure code. No runtime, storage, clock or
//! `unsafe` (the crate depends on none of them): the daemon's shards decide *when*, this decides
//! *what*, and is handed the time.
//!
//! # Layout
//! - [`money`], [`period`], [`catalogue`], [`models`]: rate units and prices, billing periods,
//!   validated plans, AI model prices.
//! - [`customer`], [`billing`]: one customer's state and rules; invoice lines and transactions.
//! - [`idempotency`], [`table`], [`slot_index`], [`engine`]: a shard's customers and keys, and
//!   [`engine::ShardCore::handle`], the one entry point for requests.
//! - [`stable_hash`]: placement and fingerprints, stable across releases.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alerts;
pub mod billing;
pub mod catalogue;
pub mod customer;
pub mod engine;
pub mod idempotency;
pub mod models;
pub mod money;
pub mod period;
pub mod slot_index;
pub mod stable_hash;
pub mod table;

#[cfg(test)]
pub(crate) mod shipped;
#[cfg(test)]
mod streaming_tests;
