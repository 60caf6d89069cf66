//! `/customers`: a customer's profile (email, name, metadata), kept in the store's `profiles`
//! by customer id. A customer may have a profile and no plan yet (`POST /subscriptions` gives it
//! one); a customer created over QUIC has a plan and no profile, and is shown with empty
//! details.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tally_protocol::message::CUSTOMER_ID_BYTES_MAX;

use super::error::ApiError;
use super::extract::{Caller, Json, ListShape, Query};
use super::views::{iso, ok, page};
use super::{admin_only, ApiState};

/// Most customers one list page holds.
const PAGE_MAX: usize = 100;

/// What Tally keeps about a customer besides its counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(super) struct Profile {
    external_id: Option<String>,
    full_name: Option<String>,
    email: Option<String>,
    tax_document: Option<String>,
    timezone: Option<String>,
    metadata: Option<Map<String, Value>>,
    created_at_ms: u64,
    updated_at_ms: u64,
}

/// `POST /customers` and `PUT /customers/{id}` bodies (unknown fields are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CustomerBody {
    id: Option<String>,
    external_id: Option<String>,
    full_name: Option<String>,
    email: Option<String>,
    tax_document: Option<String>,
    timezone: Option<String>,
    metadata: Option<Map<String, Value>>,
}

/// `GET /customers` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    external_id: Option<String>,
}

/// Checks a customer id taken from a request (it is also a path segment of other endpoints).
pub(super) fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > CUSTOMER_ID_BYTES_MAX {
        return Err(ApiError::invalid(
            field,
            format!(
                "is {} bytes; a customer id is 1 to {CUSTOMER_ID_BYTES_MAX}",
                id.len()
            ),
        ));
    }
    if id
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | '?' | '#' | '%'))
    {
        return Err(ApiError::invalid(
            field,
            "must not hold spaces, control characters or any of / ? # %",
        ));
    }
    Ok(())
}

fn customer_json(id: &str, profile: &Profile) -> Value {
    json!({
        "id": id,
        "externalId": profile.external_id.clone().or_else(|| Some(id.to_string())),
        "fullName": profile.full_name,
        "email": profile.email.clone().unwrap_or_default(),
        "taxDocument": profile.tax_document,
        "documentType": null,
        "timezone": profile.timezone,
        "metadata": profile.metadata,
        "createdAt": iso(profile.created_at_ms),
        "updatedAt": iso(profile.updated_at_ms),
        "object": "customer",
        "livemode": false,
    })
}

/// The stored profile of `id`, if any.
pub(super) async fn profile(state: &ApiState, id: &str) -> Result<Option<Profile>, ApiError> {
    let key = id.to_string();
    let Some(bytes) = state.blocking(move |store| store.profile(&key)).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::internal(format!("stored profile of `{id}` is unreadable: {e}")))
}

/// Whether `error` says there is no such customer while `customer` has a profile: a customer
/// with no plan yet, which the usage endpoints answer as such rather than as unknown.
pub(super) async fn has_no_plan_yet(
    state: &ApiState,
    error: &ApiError,
    customer: &str,
) -> Result<bool, ApiError> {
    Ok(error.code == "customer_not_found" && profile(state, customer).await?.is_some())
}

async fn save(state: &ApiState, id: &str, profile: &Profile) -> Result<(), ApiError> {
    let bytes = serde_json::to_vec(profile).expect("a profile serializes");
    let key = id.to_string();
    state
        .blocking(move |store| store.put_profile(&key, &bytes))
        .await
}

/// `POST /customers`: idempotent by id — creating an existing customer returns it unchanged.
pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<CustomerBody>,
) -> Result<Response, ApiError> {
    admin_only(caller, "create_customer")?;
    let (field, id) = match (&body.id, &body.external_id) {
        (Some(id), _) => ("id", id.clone()),
        (None, Some(external)) => ("externalId", external.clone()),
        (None, None) => {
            return Err(ApiError::invalid(
                "id",
                "give `id` or `externalId`: it is the customer's id in Tally",
            ))
        }
    };
    check_id(field, &id)?;
    if let Some(existing) = profile(&state, &id).await? {
        return Ok(ok(customer_json(&id, &existing)).into_response());
    }
    let now = state.clock.now_ms();
    let profile = Profile {
        external_id: body.external_id,
        full_name: body.full_name,
        email: body.email,
        tax_document: body.tax_document,
        timezone: body.timezone,
        metadata: body.metadata,
        created_at_ms: now,
        updated_at_ms: now,
    };
    save(&state, &id, &profile).await?;
    Ok((StatusCode::CREATED, ok(customer_json(&id, &profile))).into_response())
}

/// `GET /customers/{id}`.
pub(super) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(caller, "get_customer")?;
    let found = match profile(&state, &id).await? {
        Some(profile) => profile,
        // A customer made over QUIC: it exists if its shard has it.
        None => {
            state.customer(&id).await?;
            Profile::default()
        }
    };
    Ok(ok(customer_json(&id, &found)).into_response())
}

/// `PUT /customers/{id}`: changes the fields given, keeps the others.
pub(super) async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<CustomerBody>,
) -> Result<Response, ApiError> {
    admin_only(caller, "update_customer")?;
    check_id("id", &id)?;
    let mut profile = match profile(&state, &id).await? {
        Some(profile) => profile,
        None => {
            state.customer(&id).await?;
            Profile {
                created_at_ms: state.clock.now_ms(),
                ..Profile::default()
            }
        }
    };
    let set = |slot: &mut Option<String>, value: Option<String>| {
        if value.is_some() {
            *slot = value;
        }
    };
    set(&mut profile.external_id, body.external_id);
    set(&mut profile.full_name, body.full_name);
    set(&mut profile.email, body.email);
    set(&mut profile.tax_document, body.tax_document);
    set(&mut profile.timezone, body.timezone);
    if body.metadata.is_some() {
        profile.metadata = body.metadata;
    }
    profile.updated_at_ms = state.clock.now_ms();
    save(&state, &id, &profile).await?;
    Ok(ok(customer_json(&id, &profile)).into_response())
}

/// `GET /customers?limit=&cursor=`: profiles in id order; `nextCursor` is the last id.
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    shape: ListShape,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    admin_only(caller, "list_customers")?;
    let limit = query.limit.unwrap_or(25);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("is {limit}; it must be 1 to {PAGE_MAX}"),
        ));
    }
    if let Some(external) = query.external_id {
        let found = profile(&state, &external).await?;
        let data = found
            .map(|p| vec![customer_json(&external, &p)])
            .unwrap_or_default();
        return Ok(page(data, None, shape).into_response());
    }
    let cursor = query.cursor.clone();
    let mut rows = state
        .blocking(move |store| store.list_profiles(cursor.as_deref(), limit + 1))
        .await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let mut data = Vec::with_capacity(rows.len());
    for (id, bytes) in &rows {
        let profile: Profile = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::internal(format!("stored profile of `{id}`: {e}")))?;
        data.push(customer_json(id, &profile));
    }
    let next = more
        .then(|| rows.last().map(|(id, _)| id.clone()))
        .flatten();
    Ok(page(data, next, shape).into_response())
}
