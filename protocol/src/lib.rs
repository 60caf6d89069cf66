//! Tally's wire protocol and client library.
//!
//! # Layout
//! - [`message`]: every request, response and typed error, and the wire limits (plain data).
//! - [`codec`]: bytes ⇄ messages: length-prefixed rkyv frames, validated with bytecheck.
//! - [`framing`]: reading whole frames from an async stream with a size limit.
//! - [`client`]: the QUIC client (quinn + rustls, ALPN `tally/1`) that every tool uses; it
//!   validates requests before sending and reconnects by itself.
//! - [`retry`]: backoff with jitter for requests answered `Overloaded` and for reconnecting.
//!
//! # Guarantees and limits
//! Every inbound frame is bounded by [`message::FRAME_BYTES_MAX`] and validated before use; a
//! malformed frame is an error value, never a panic. A connection starts with a `Hello`
//! (protocol version + API key) on its stream; requests carry ids so many can be in flight.
#![forbid(unsafe_code)]

#[cfg(feature = "client")]
pub mod client;
pub mod codec;
#[cfg(feature = "client")]
pub mod framing;
pub mod message;
pub mod retry;

#[cfg(feature = "client")]
pub use client::{Client, ClientConfig, ConnectionState, Error};
pub use message::*;
pub use retry::{ReconnectPolicy, RetryPolicy};
