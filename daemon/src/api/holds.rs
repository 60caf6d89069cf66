//! `/x-tally/holds`: Tally's own extension (Commet has no holds). Reserve an estimate before
//! variable-cost work, settle what it used, or release it; the engine's `reserve`, `settle` and
//! `release`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tally_protocol::message::{
    ModelUsage, ProgressRequest, ReleaseRequest, Request, ReserveRequest, Response as Answer,
    SettleRequest, AMOUNT_MAX, HOLD_TTL_MS_MAX,
};

use super::error::ApiError;
use super::extract::{idempotency_key, whole, Caller, Json};
use super::usage::TokensBody;
use super::views::{iso, ok};
use super::{unexpected, ApiState};

/// `POST /x-tally/holds` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReserveBody {
    customer_id: String,
    feature_code: Option<String>,
    feature: Option<String>,
    quantity: Option<serde_json::Number>,
    ttl_seconds: serde_json::Number,
    #[serde(flatten)]
    tokens: TokensBody,
}

/// `POST /x-tally/holds/{id}/settle` body.
#[derive(Debug, Deserialize)]
pub(super) struct SettleBody {
    actual: Option<serde_json::Number>,
    #[serde(flatten)]
    tokens: TokensBody,
}

/// A quantity, required unless the request is in model form.
fn quantity(
    field: &str,
    number: Option<&serde_json::Number>,
    model: Option<&ModelUsage>,
) -> Result<u64, ApiError> {
    match (number, model) {
        (_, Some(_)) => Ok(0),
        (Some(number), None) => whole(field, number, AMOUNT_MAX),
        (None, None) => Err(ApiError::invalid(
            field,
            "give it, or the model form (model, inputTokens, maxOutputTokens)",
        )),
    }
}

fn hold_id(hold: u64) -> String {
    format!("hold_{hold:016x}")
}

fn parse_hold(id: &str) -> Result<u64, ApiError> {
    id.strip_prefix("hold_")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .ok_or_else(|| {
            ApiError::not_found("hold_not_found", "id", format!("`{id}` is not a hold id"))
        })
}

/// `POST /x-tally/holds`: holds `quantity` units' worth for `ttlSeconds`.
pub(super) async fn reserve(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<ReserveBody>,
) -> Result<Response, ApiError> {
    let feature = body
        .feature_code
        .or(body.feature)
        .ok_or_else(|| ApiError::invalid("featureCode", "give the feature's code"))?;
    let model = body.tokens.usage()?;
    let amount = quantity("quantity", body.quantity.as_ref(), model.as_ref())?;
    let ttl_s = whole("ttlSeconds", &body.ttl_seconds, HOLD_TTL_MS_MAX / 1000)?;
    if ttl_s == 0 {
        return Err(ApiError::invalid("ttlSeconds", "must be at least 1"));
    }
    let request = Request::Reserve(ReserveRequest {
        model,
        customer: body.customer_id.clone(),
        feature: feature.clone(),
        amount,
        ttl_ms: ttl_s * 1000,
    });
    let outcome = match state.call(caller, request).await? {
        Answer::Reserve(outcome) => outcome,
        other => return Err(unexpected(&other)),
    };
    let status = if outcome.allowed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let answer = json!({
        "id": outcome.hold.map(hold_id),
        "allowed": outcome.allowed,
        "customerId": body.customer_id,
        "featureCode": feature,
        "quantity": amount,
        "held": outcome.held,
        "expiresAt": (outcome.expires_at_ms > 0).then(|| iso(outcome.expires_at_ms)),
        "seq": outcome.seq,
        "object": "hold",
        "livemode": false,
    });
    Ok((status, ok(answer)).into_response())
}

/// `POST /x-tally/holds/{id}/settle {actual}`: charges `actual` units (or the model form, or
/// `outputTokens` alone for a hold opened with a model request) and frees the rest; idempotent
/// by `Idempotency-Key`.
pub(super) async fn settle(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<SettleBody>,
) -> Result<Response, ApiError> {
    let hold = parse_hold(&id)?;
    let model = body.tokens.usage()?;
    let output_tokens = body.tokens.output_only()?;
    let actual = match output_tokens {
        Some(_) if body.actual.is_none() => 0,
        _ => quantity("actual", body.actual.as_ref(), model.as_ref())?,
    };
    let request = Request::Settle(SettleRequest {
        actual,
        model,
        hold,
        idempotency_key: idempotency_key(&headers, None)?,
        output_tokens,
    });
    let outcome = match state.call(caller, request).await? {
        Answer::Report(outcome) => outcome,
        other => return Err(unexpected(&other)),
    };
    Ok(ok(json!({
        "id": id,
        "settled": outcome.amount,
        "charged": outcome.charged,
        "duplicate": outcome.duplicate,
        "seq": outcome.seq,
        "object": "hold",
        "livemode": false,
    }))
    .into_response())
}

/// `POST /x-tally/holds/{id}/progress` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProgressBody {
    output_tokens: serde_json::Number,
}

/// `POST /x-tally/holds/{id}/progress {outputTokens}`: the output a streamed answer has so far
/// (a running total); grows the hold, or says where to cut the answer off.
pub(super) async fn progress(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ProgressBody>,
) -> Result<Response, ApiError> {
    let request = Request::Progress(ProgressRequest {
        hold: parse_hold(&id)?,
        output_tokens: whole("outputTokens", &body.output_tokens, AMOUNT_MAX)?,
    });
    let outcome = match state.call(caller, request).await? {
        Answer::Progress(outcome) => outcome,
        other => return Err(unexpected(&other)),
    };
    Ok(ok(json!({
        "id": id,
        "cutOff": outcome.cut_off,
        "outputTokensAllowed": outcome.output_tokens_allowed,
        "held": outcome.held,
        "seq": outcome.seq,
        "object": "hold",
        "livemode": false,
    }))
    .into_response())
}

/// `POST /x-tally/holds/{id}/release`: frees the hold without charging.
pub(super) async fn release(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let hold = parse_hold(&id)?;
    let outcome = match state
        .call(caller, Request::Release(ReleaseRequest { hold }))
        .await?
    {
        Answer::Release(outcome) => outcome,
        other => return Err(unexpected(&other)),
    };
    Ok(ok(json!({
        "id": id,
        "released": outcome.released,
        "seq": outcome.seq,
        "object": "hold",
        "livemode": false,
    }))
    .into_response())
}
