//! Webhooks: the shard's alerts as Commet-shaped events, kept in a durable outbox written in
//! the same atomic batch as the change that caused them ([`crate::store::outbox`]), delivered —
//! signed so Commet's SDKs verify them — to every endpoint that wants them, at least once and in
//! outbox order, off the shards' and the QUIC server's threads.

pub mod admin;
pub mod delivery;
pub mod endpoints;
pub mod payload;
pub mod watch;
