//! The root package holds no code: it owns the end-to-end tests in `tests/it/` (and, later, the
//! benches), so that a plain `cargo test` at the root runs every test of every package.
