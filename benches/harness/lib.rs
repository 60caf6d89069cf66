//! The root package: it owns the end-to-end tests (`tests/`), and here the load harness
//! `tally-bench` as a library (so a test can run it for a second) with a thin `main.rs`.
//!
//! # Layout
//! - [`workload`]: operation mix, customer distribution, deterministic sampling.
//! - [`driver`]: seeding, closed- and open-loop load, hdrhistograms, the report.
//! - [`pacer`]: releases open-loop requests at their times (finer than tokio's 1-ms timer).
//! - [`local`]: a daemon in this process, for the examples and probes.
//! - [`http`]: a keep-alive client for the HTTP/JSON API.
#![forbid(unsafe_code)]

pub mod driver;
pub mod http;
pub mod local;
pub mod pacer;
pub mod webhook_sink;
pub mod workload;
