//! `/webhooks`: endpoints in Commet's shapes (`WebhookEndpoint`, `WebhookEndpointCreated` with
//! its `secretKey`, `WebhookTestResult`). Endpoints added here are kept in the store and
//! delivered to from the outbox's head on; those of `config.toml` are listed and tested but
//! changed only there. Admin only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{Caller, Json, ListShape};
use super::views::{iso, ok, page};
use super::{admin_only, ApiState};
use crate::store::outbox::StoredEndpoint;
use crate::webhooks::delivery::Endpoint;
use crate::webhooks::endpoints::{self, EVENTS};

/// `POST /webhooks` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CreateBody {
    url: String,
    events: Vec<String>,
    description: Option<String>,
    api_version: Option<String>,
}

/// `PUT`/`PATCH /webhooks/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct UpdateBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<Option<String>>,
    is_active: Option<bool>,
    api_version: Option<String>,
}

fn checked_url(url: &str) -> Result<(), ApiError> {
    endpoints::parse_url(url).map(|_| ()).ok_or_else(|| {
        ApiError::invalid("url", format!("`{url}` is not an http:// or https:// URL"))
    })
}

fn checked_events(events: &[String]) -> Result<(), ApiError> {
    match events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        Some(unknown) => Err(ApiError::invalid(
            "events",
            format!(
                "Tally never sends `{unknown}`; it sends {}",
                EVENTS.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn view(stored: &StoredEndpoint) -> Value {
    json!({
        "id": stored.id,
        "object": "webhook",
        "livemode": false,
        "url": stored.url,
        "events": stored.events.clone().unwrap_or_else(|| EVENTS.iter().map(ToString::to_string).collect()),
        "description": stored.description,
        "isActive": stored.active,
        "apiVersion": stored.api_version,
        "createdAt": iso(stored.created_at_ms),
    })
}

fn configured_view(endpoint: &Endpoint) -> Value {
    let events: Vec<String> = match &endpoint.events {
        Some(events) => events.iter().cloned().collect(),
        None => EVENTS.iter().map(ToString::to_string).collect(),
    };
    json!({
        "id": endpoint.id,
        "object": "webhook",
        "livemode": false,
        "url": endpoint.url.to_string(),
        "events": events,
        "description": "defined in config.toml",
        "isActive": true,
        "apiVersion": null,
        "createdAt": iso(0),
    })
}

fn stored(state: &ApiState, id: &str) -> Result<StoredEndpoint, ApiError> {
    state
        .store
        .webhook_endpoints()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .find(|e| e.id == id)
        .ok_or_else(|| {
            ApiError::not_found(
                "webhook_not_found",
                "id",
                format!("no webhook endpoint `{id}`"),
            )
        })
}

fn configured<'a>(state: &'a ApiState, id: &str) -> Option<&'a Endpoint> {
    state.webhooks.configured.iter().find(|e| e.id == id)
}

fn in_config(id: &str) -> ApiError {
    ApiError::conflict(
        "webhook_in_config",
        format!("webhook endpoint `{id}` is defined in config.toml; change it there"),
    )
}

/// `GET /webhooks`.
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    shape: ListShape,
) -> Result<Response, ApiError> {
    admin_only(caller, "list_webhooks")?;
    let mut all: Vec<Value> = state
        .webhooks
        .configured
        .iter()
        .map(configured_view)
        .collect();
    let kept = state
        .store
        .webhook_endpoints()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    all.extend(kept.iter().map(view));
    Ok(page(all, None, shape).into_response())
}

/// `POST /webhooks`: a new endpoint (its secret is answered once, as `secretKey`).
pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<CreateBody>,
) -> Result<Response, ApiError> {
    admin_only(caller, "create_webhook")?;
    checked_url(&body.url)?;
    checked_events(&body.events)?;
    let endpoint = StoredEndpoint {
        id: endpoints::random_token("wh_"),
        url: body.url,
        secret: endpoints::random_token("whsec_"),
        events: Some(body.events).filter(|events| !events.is_empty()),
        description: body.description,
        active: true,
        api_version: body.api_version,
        created_at_ms: state.clock.now_ms(),
    };
    state
        .store
        .put_webhook_endpoint(&endpoint)
        .and_then(|()| state.store.start_webhook_at_head(&endpoint.id))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(delivery) = endpoints::from_stored(&endpoint) {
        state.webhooks.control.start(delivery);
    }
    let mut answer = view(&endpoint);
    answer["secretKey"] = endpoint.secret.clone().into();
    Ok((StatusCode::CREATED, ok(answer)).into_response())
}

/// `GET /webhooks/{id}`.
pub(super) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(caller, "get_webhook")?;
    if let Some(endpoint) = configured(&state, &id) {
        return Ok(ok(configured_view(endpoint)).into_response());
    }
    Ok(ok(view(&stored(&state, &id)?)).into_response())
}

/// `PUT` (or `PATCH`) `/webhooks/{id}`: new values; delivery restarts with them (or stops, inactive).
pub(super) async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> Result<Response, ApiError> {
    admin_only(caller, "update_webhook")?;
    if configured(&state, &id).is_some() {
        return Err(in_config(&id));
    }
    let mut endpoint = stored(&state, &id)?;
    if let Some(url) = body.url {
        checked_url(&url)?;
        endpoint.url = url;
    }
    if let Some(events) = body.events {
        checked_events(&events)?;
        endpoint.events = Some(events).filter(|events| !events.is_empty());
    }
    if let Some(description) = body.description {
        endpoint.description = description;
    }
    if let Some(active) = body.is_active {
        endpoint.active = active;
    }
    if let Some(version) = body.api_version {
        endpoint.api_version = Some(version);
    }
    state
        .store
        .put_webhook_endpoint(&endpoint)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match endpoints::from_stored(&endpoint).filter(|_| endpoint.active) {
        Some(delivery) => state.webhooks.control.start(delivery),
        None => state.webhooks.control.stop(&endpoint.id),
    }
    Ok(ok(view(&endpoint)).into_response())
}

/// `DELETE /webhooks/{id}`.
pub(super) async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(caller, "delete_webhook")?;
    if configured(&state, &id).is_some() {
        return Err(in_config(&id));
    }
    let removed = state
        .store
        .remove_webhook_endpoint(&id)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if !removed {
        return Err(ApiError::not_found(
            "webhook_not_found",
            "id",
            format!("no webhook endpoint `{id}`"),
        ));
    }
    state.webhooks.control.stop(&id);
    Ok(ok(json!({ "id": id, "deleted": true })).into_response())
}

/// The endpoint `id` as delivery takes it, from the config or the store.
fn delivery_endpoint(state: &ApiState, id: &str) -> Result<Endpoint, ApiError> {
    match configured(state, id) {
        Some(endpoint) => Ok(endpoint.clone()),
        None => endpoints::from_stored(&stored(state, id)?)
            .ok_or_else(|| ApiError::invalid("url", "the endpoint's URL does not parse")),
    }
}

/// `GET /x-tally/webhooks/{id}/failed`: the events the endpoint never took (dead letters).
pub(super) async fn failed(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(caller, "list_webhook_failures")?;
    delivery_endpoint(&state, &id)?;
    let failures = state
        .store
        .webhook_failures(&id)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let data: Vec<Value> = failures
        .iter()
        .map(|f| {
            json!({
                "eventId": crate::webhooks::payload::event_id(f.number),
                "event": f.event,
                "attempts": f.attempts,
                "lastAttemptAt": iso(f.last_attempt_ms),
                "reason": f.reason,
            })
        })
        .collect();
    Ok(ok(json!({ "object": "list", "data": data })).into_response())
}

/// `POST /x-tally/webhooks/{id}/redeliver`: the endpoint's dead letters sent again, one attempt
/// each; those it takes stop being dead letters.
pub(super) async fn redeliver(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(caller, "redeliver_webhooks")?;
    let endpoint = delivery_endpoint(&state, &id)?;
    let outcomes = state
        .webhooks
        .control
        .redeliver(endpoint)
        .await
        .map_err(ApiError::internal)?;
    let data: Vec<Value> = outcomes
        .into_iter()
        .map(|(number, outcome)| {
            json!({
                "eventId": crate::webhooks::payload::event_id(number),
                "success": outcome.is_ok(),
                "error": outcome.err(),
            })
        })
        .collect();
    Ok(ok(json!({ "object": "list", "data": data })).into_response())
}

/// `POST /webhooks/{id}/test`: one signed `webhook.test` event, one attempt.
pub(super) async fn test(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(caller, "test_webhook")?;
    let endpoint = delivery_endpoint(&state, &id)?;
    let sent = state.webhooks.control.test(endpoint).await;
    let answer = json!({
        "object": "webhook_delivery",
        "livemode": false,
        "success": sent.is_ok(),
        "deliveryId": endpoints::random_token("whd_"),
        "deliveredAt": iso(state.clock.now_ms()),
        "error": sent.err(),
    });
    Ok(ok(answer).into_response())
}
