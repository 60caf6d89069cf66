//! `tally`: the operator's command line for a running Tally daemon.
//!
//! # Layout
//! - [`cli`]: the command-line shapes (a contract for users' scripts).
//! - [`discovery`]: finding the daemon, its certificate and a key with no flags.
//! - [`run`]: one command → one call through the client library.
//! - [`output`] and [`billing_output`]: human lines, one JSON object, or CSV.
//!
//! - [`console`]: `tally top`, the live ratatui console.
//!
//! This crate talks to the daemon only through `tally-protocol`, never through the daemon crate.
#![forbid(unsafe_code)]

pub mod billing_output;
pub mod cli;
pub mod console;
pub mod discovery;
pub mod output;
pub mod run;
