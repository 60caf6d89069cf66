//! The HTTP/JSON API under `/api/v1`, in the shapes Commet's official SDKs (`@commet/node`,
//! `commet-sdk`) send and parse, so they work against Tally unmodified. Every request becomes the
//! same [`Request`] the QUIC door sends, through the same [`Router`] and shards: a read is
//! answered from memory, a write after its group commit. What is Tally's own (holds) lives under
//! `/api/v1/x-tally`; what Tally does not have answers `not_supported`.

mod billing;
mod catalogue;
mod customers;
pub mod error;
mod extract;
mod holds;
mod sandbox;
mod subscriptions;
mod usage;
pub(crate) mod views;
mod webhooks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::extract::{Request as HttpRequest, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post, put};
use tally_protocol::message::{CustomerRef, Request, Response, Role, TallyError};

use crate::clock::{Clock, TestClock};
use crate::credentials::ApiKeys;
use crate::metering::catalogue::Catalogue;
use crate::router::Router;
use crate::store::Store;
use error::ApiError;
use extract::Caller;

/// What the API's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState(Arc<Shared>);

/// The parts of the daemon the API uses.
pub struct Shared {
    /// The same router the QUIC server uses.
    pub router: Router,
    /// For customers' profiles (the engine's own state is only reached through `router`).
    pub store: Arc<Store>,
    /// Accepted keys and their roles.
    pub keys: ApiKeys,
    /// Plans and features, for the catalogue endpoints and to describe features.
    pub catalogue: Arc<Catalogue>,
    /// The daemon's clock (timestamps of profiles).
    pub clock: Arc<dyn Clock>,
    /// The QUIC server's counters, which `stats`, `tally top` and `/metrics` read: requests of
    /// both doors are counted together, by operation.
    pub telemetry: Arc<std::sync::Mutex<crate::server::telemetry::Telemetry>>,
    /// The sandbox's test clock, when `[sandbox] test_clock` is on.
    pub test_clock: Option<Arc<TestClock>>,
    /// Body limits.
    pub limits: BodyLimits,
    /// Webhook endpoints: added, changed, tested (shared with the QUIC command).
    pub webhooks: crate::webhooks::admin::WebhookAdmin,
    /// `PUT /usage` reads a counter and then records the difference: one at a time per
    /// customer and feature, so two concurrent sets cannot both add it.
    pub set_locks: SetLocks,
}

/// One lock per (customer, feature) being set; entries go when no set holds them.
#[derive(Default)]
pub struct SetLocks(std::sync::Mutex<HashMap<(String, String), Weak<SetLock>>>);

/// Held through one `PUT /usage`.
type SetLock = tokio::sync::Mutex<()>;

impl SetLocks {
    /// The lock of `customer`'s `feature`.
    fn of(&self, customer: &str, feature: &str) -> Arc<SetLock> {
        let mut locks = self.0.lock().expect("set locks poisoned");
        let key = (customer.to_string(), feature.to_string());
        if let Some(lock) = locks.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() >= 1024 {
            locks.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(SetLock::new(()));
        locks.insert(key, Arc::downgrade(&lock));
        lock
    }
}

/// How much of a body is read, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// `[http] body_bytes_max`.
    pub body_bytes_max: usize,
    /// `[http] read_timeout`.
    pub read_timeout: Duration,
}

impl std::ops::Deref for ApiState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl ApiState {
    /// Wraps the shared parts.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// Sends `request` to its shard as `caller`, with the QUIC door's role rule and validation.
    async fn call(&self, caller: Caller, request: Request) -> Result<Response, ApiError> {
        if !request.role_required().is_granted_to(caller.0) {
            return Err(TallyError::Forbidden {
                role: caller.0,
                operation: request.operation_name().into(),
            }
            .into());
        }
        tally_protocol::message::validate_request(&request)?;
        let operation = request.operation_name();
        let started = Instant::now();
        let result = self.router.route(request).await;
        self.telemetry
            .lock()
            .expect("telemetry lock poisoned")
            .record_answer(operation, started, Instant::now(), &result);
        Ok(result?)
    }

    /// The customer as its shard holds it now (closing its ended periods first). No role check:
    /// handlers that show it check theirs.
    async fn customer(
        &self,
        customer: &str,
    ) -> Result<tally_protocol::message::CustomerView, ApiError> {
        let request = Request::GetCustomer(CustomerRef {
            customer: customer.into(),
        });
        tally_protocol::message::validate_request(&request)?;
        match self.router.route(request).await? {
            Response::Customer(view) => Ok(view),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs a store read or write on the blocking pool (profile writes fsync).
    async fn blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || job(&store))
            .await
            .map_err(|e| ApiError::internal(format!("store task: {e}")))?
            .map_err(|e| ApiError::internal(format!("store: {e}")))
    }
}

/// A response of the wrong kind for its request: a bug, reported rather than panicked on.
fn unexpected(response: &Response) -> ApiError {
    ApiError::internal(format!(
        "unexpected answer from the shard: {:?}",
        std::mem::discriminant(response)
    ))
}

/// Requires an admin key (for what only an operator does: customers' details, plans, money in).
fn admin_only(caller: Caller, operation: &str) -> Result<(), ApiError> {
    match caller.0 {
        Role::Admin => Ok(()),
        role => Err(TallyError::Forbidden {
            role,
            operation: operation.into(),
        }
        .into()),
    }
}

/// The API's routes, under `/api/v1`.
pub fn routes(state: ApiState) -> axum::Router {
    let api = axum::Router::new()
        .route("/customers", get(customers::list).post(customers::create))
        .route(
            "/customers/{id}",
            get(customers::get).put(customers::update),
        )
        .route(
            "/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route("/subscriptions/active", get(subscriptions::active))
        .route("/subscriptions/{id}", get(subscriptions::get))
        .route(
            "/subscriptions/{id}/change-plan",
            post(subscriptions::change_plan),
        )
        .route("/subscriptions/{id}/cancel", post(subscriptions::cancel))
        .route(
            "/subscriptions/{id}/balance/topup",
            post(subscriptions::top_up),
        )
        .route(
            "/subscriptions/{id}/credits",
            post(subscriptions::purchase_credits),
        )
        .route("/usage/events", post(usage::track))
        .route("/usage/check", post(usage::check))
        .route("/usage", put(usage::set))
        .route("/feature-access", get(usage::access_list))
        .route("/feature-access/{code}", get(usage::access_one))
        .route("/credit-packs", get(catalogue::credit_packs))
        .route("/plans", get(catalogue::plans))
        .route("/plans/{id}", get(catalogue::plan))
        .route("/features", get(catalogue::features))
        .route("/features/{code}", get(catalogue::feature))
        .route("/invoices", get(billing::invoices))
        .route("/invoices/{id}", get(billing::invoice))
        .route("/transactions", get(billing::transactions))
        .route("/transactions/{id}", get(billing::transaction))
        .route("/test-clock", get(sandbox::get).post(sandbox::advance))
        .route(
            "/test-clock/process-billing",
            post(sandbox::process_billing),
        )
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/webhooks/{id}",
            // Node's SDK updates with PUT, Python's with PATCH.
            get(webhooks::get)
                .put(webhooks::update)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route("/webhooks/{id}/test", post(webhooks::test))
        .route("/x-tally/webhooks/{id}/failed", get(webhooks::failed))
        .route(
            "/x-tally/webhooks/{id}/redeliver",
            post(webhooks::redeliver),
        )
        .route("/x-tally/holds", post(holds::reserve))
        .route("/x-tally/holds/{id}/settle", post(holds::settle))
        .route("/x-tally/holds/{id}/release", post(holds::release))
        .route("/x-tally/holds/{id}/progress", post(holds::progress))
        .fallback(not_supported)
        .method_not_allowed_fallback(not_supported)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state);
    axum::Router::new().nest("/api/v1", api).fallback(|| async {
        ApiError::not_found(
            "not_found",
            "path",
            "Tally's API is under /api/v1 (Commet's paths); see docs/http-api.md",
        )
    })
}

/// Checks `x-api-key` against the configured keys (constant time, like the QUIC handshake), and
/// gives every answer an `x-request-id` (the SDKs keep it with their errors and telemetry).
async fn authenticate(
    State(state): State<ApiState>,
    mut request: HttpRequest,
    next: Next,
) -> HttpResponse {
    static REQUESTS: AtomicU64 = AtomicU64::new(0);
    let id = REQUESTS.fetch_add(1, Ordering::Relaxed);
    let role = match request.headers().get("x-api-key").map(|key| key.to_str()) {
        None => Err(ApiError::unauthorized("missing x-api-key header")),
        Some(Err(_)) => Err(ApiError::unauthorized("the API key is not valid")),
        Some(Ok(key)) => state
            .keys
            .role_of(key)
            .ok_or_else(|| ApiError::unauthorized("the API key is not valid")),
    };
    let mut response = match role {
        Ok(role) => {
            request.extensions_mut().insert(Caller(role));
            next.run(request).await
        }
        Err(error) => error.into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&format!("req_{id:x}")) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn not_supported(request: HttpRequest) -> ApiError {
    ApiError::not_supported(format!("{} {}", request.method(), request.uri().path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_feature_has_one_set_lock_while_anyone_holds_it() {
        let locks = SetLocks::default();
        let first = locks.of("c", "tokens");
        assert!(Arc::ptr_eq(&first, &locks.of("c", "tokens")));
        assert!(!Arc::ptr_eq(&first, &locks.of("c", "images")));
        assert!(!Arc::ptr_eq(&first, &locks.of("d", "tokens")));
        let held = first.try_lock().unwrap();
        assert!(locks.of("c", "tokens").try_lock().is_err(), "the same lock");
        drop(held);
        drop(first);
        // Nobody holds it: a new one is made (the old entry is only a dead Weak).
        let again = locks.of("c", "tokens");
        assert_eq!(Arc::strong_count(&again), 1);
    }
}
