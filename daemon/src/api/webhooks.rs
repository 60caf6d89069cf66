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
use tally_protocol::message::TallyError;

use crate::store::outbox::StoredEndpoint;
use crate::webhooks::admin::{self, check_events, check_url};
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

/// A checked URL and events, with the field at fault named (the API's shape of the error).
fn checked(url: Option<&str>, events: Option<&[String]>) -> Result<(), ApiError> {
    if let Some(url) = url {
        check_url(url).map_err(|e| ApiError::invalid("url", reason(e)))?;
    }
    if let Some(events) = events {
        check_events(events).map_err(|e| ApiError::invalid("events", reason(e)))?;
    }
    Ok(())
}

fn reason(error: TallyError) -> String {
    match error {
        TallyError::InvalidRequest { reason } => reason,
        other => other.to_string(),
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

fn in_config(id: &str) -> ApiError {
    ApiError::conflict("webhook_in_config", reason(admin::in_config(id)))
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
    checked(Some(&body.url), Some(&body.events))?;
    let endpoint = state
        .webhooks
        .add(body.url, body.events, body.description, body.api_version)?;
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
    if let Some(endpoint) = state.webhooks.configured(&id) {
        return Ok(ok(configured_view(endpoint)).into_response());
    }
    Ok(ok(view(&state.webhooks.stored_one(&id)?)).into_response())
}

/// `PUT` (or `PATCH`) `/webhooks/{id}`: new values; delivery restarts with them (or stops, inactive).
pub(super) async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> Result<Response, ApiError> {
    admin_only(caller, "update_webhook")?;
    if state.webhooks.configured(&id).is_some() {
        return Err(in_config(&id));
    }
    let mut endpoint = state.webhooks.stored_one(&id)?;
    checked(body.url.as_deref(), body.events.as_deref())?;
    if let Some(url) = body.url {
        endpoint.url = url;
    }
    if let Some(events) = body.events {
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
    state.webhooks.update(&endpoint)?;
    Ok(ok(view(&endpoint)).into_response())
}

/// `DELETE /webhooks/{id}`.
pub(super) async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(caller, "delete_webhook")?;
    if state.webhooks.configured(&id).is_some() {
        return Err(in_config(&id));
    }
    state.webhooks.remove(&id)?;
    Ok(ok(json!({ "id": id, "deleted": true })).into_response())
}

/// `GET /x-tally/webhooks/{id}/failed`: the events the endpoint never took (dead letters).
pub(super) async fn failed(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(caller, "list_webhook_failures")?;
    let failures = state.webhooks.failures(&id)?;
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
    let data: Vec<Value> = state
        .webhooks
        .redeliver(&id)
        .await?
        .into_iter()
        .map(|(number, error)| {
            json!({
                "eventId": crate::webhooks::payload::event_id(number),
                "success": error.is_none(),
                "error": error,
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
    let error = state.webhooks.test(&id).await?;
    let answer = json!({
        "object": "webhook_delivery",
        "livemode": false,
        "success": error.is_none(),
        "deliveryId": endpoints::random_token("whd_"),
        "deliveredAt": iso(state.clock.now_ms()),
        "error": error,
    });
    Ok(ok(answer).into_response())
}
