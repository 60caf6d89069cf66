//! Tally over HTTP: the serving stack (hyper through axum) and the ops listener. The Commet-shaped
//! API that runs on it lives in [`crate::api`].

pub mod ops;
pub mod serve;
