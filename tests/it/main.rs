//! End-to-end tests: each starts a real daemon on 127.0.0.1 with a temporary data dir and a
//! manual clock, and talks to it only through the client library (the bad-input tests also open
//! raw QUIC streams, as a hostile peer would). One binary so the suite links once.

mod bad_input;
mod bad_values;
mod bench_smoke;
mod billing;
mod concurrency;
mod connection_churn;
mod fuzz_corpus;
mod holds;
mod http_api;
mod idempotency;
mod limits;
mod model_pricing;
mod ops_http;
mod overload;
mod price_changes;
mod raw_peer;
mod receiver;
mod reconnect;
mod recovery;
mod sdks;
mod seed_examples;
mod startup;
mod stats;
mod streaming;
mod test_daemon;
mod webhooks;
