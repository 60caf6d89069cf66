//! The metering core: every billing rule — money, catalogue, periods, the three consumption
//! models, holds and idempotency — as pure code. It must not use actix, fjall, quinn, tokio or
//! the system clock: the shard around it decides *when*, this decides *what*.

pub mod billing;
pub mod catalogue;
pub mod customer;
pub mod engine;
pub mod idempotency;
pub mod money;
pub mod period;
pub mod slot_index;
pub mod table;
