//! `/usage` and `/feature-access`: the engine's `check` (answered from memory) and `report`
//! (answered after its group commit), in Commet's shapes. The Node SDK names the feature
//! `feature`, the Python one `featureCode`: both are accepted.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tally_protocol::message::{
    CheckOutcome, CheckRequest, ModelUsage, ReportItem, ReportOutcome, Request, Response as Answer,
    Standing, AMOUNT_MAX,
};

use super::customers::has_no_plan_yet;
use super::error::ApiError;
use super::extract::{idempotency_key, whole, Caller, Json, ListShape, Query};
use super::views::{iso, model_name, ok, page};
use super::{unexpected, ApiState};
use crate::metering::catalogue::FeatureKind;

/// `POST /usage/check` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CheckBody {
    customer_id: String,
    feature_code: Option<String>,
    feature: Option<String>,
    quantity: Option<serde_json::Number>,
    #[serde(flatten)]
    tokens: TokensBody,
}

/// The model form of a request (the SDK's `model`, `inputTokens`, `outputTokens`, cache tokens;
/// for a check, `maxOutputTokens` too: the worst case).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TokensBody {
    model: Option<String>,
    input_tokens: Option<serde_json::Number>,
    output_tokens: Option<serde_json::Number>,
    max_output_tokens: Option<serde_json::Number>,
    cache_read_tokens: Option<serde_json::Number>,
    cache_write_tokens: Option<serde_json::Number>,
}

impl TokensBody {
    /// The output tokens alone (no model): a settle of a hold opened with a model request.
    pub(super) fn output_only(&self) -> Result<Option<u64>, ApiError> {
        match (&self.model, &self.output_tokens) {
            (None, Some(number)) => Ok(Some(whole("outputTokens", number, AMOUNT_MAX)?)),
            _ => Ok(None),
        }
    }

    /// The model usage, when `model` is given; its token counts checked like quantities.
    pub(super) fn usage(&self) -> Result<Option<ModelUsage>, ApiError> {
        let Some(model) = self.model.clone() else {
            return Ok(None);
        };
        let count = |field: &str, number: &Option<serde_json::Number>| match number {
            Some(number) => whole(field, number, AMOUNT_MAX),
            None => Ok(0),
        };
        let output = match &self.max_output_tokens {
            Some(number) => whole("maxOutputTokens", number, AMOUNT_MAX)?,
            None => count("outputTokens", &self.output_tokens)?,
        };
        Ok(Some(ModelUsage {
            model,
            input_tokens: count("inputTokens", &self.input_tokens)?,
            output_tokens: output,
            cache_read_tokens: count("cacheReadTokens", &self.cache_read_tokens)?,
            cache_write_tokens: count("cacheWriteTokens", &self.cache_write_tokens)?,
        }))
    }
}

/// `POST /usage/events` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TrackBody {
    customer_id: String,
    feature_code: Option<String>,
    feature: Option<String>,
    value: Option<serde_json::Number>,
    idempotency_key: Option<String>,
    event_id: Option<String>,
    timestamp: Option<String>,
    #[serde(flatten)]
    tokens: TokensBody,
}

/// `PUT /usage` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SetBody {
    customer_id: String,
    feature_code: Option<String>,
    feature: Option<String>,
    value: serde_json::Number,
    reason: Option<String>,
}

/// `GET /feature-access…` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AccessQuery {
    customer_id: String,
    action: Option<String>,
}

fn feature_of(feature_code: Option<String>, feature: Option<String>) -> Result<String, ApiError> {
    feature_code
        .or(feature)
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::invalid("featureCode", "give the feature's code"))
}

/// The engine's check; `None` for a customer with a profile and no plan yet.
async fn check_of(
    state: &ApiState,
    caller: Caller,
    customer: &str,
    feature: &str,
    amount: u64,
    model: Option<ModelUsage>,
) -> Result<Option<CheckOutcome>, ApiError> {
    let request = Request::Check(CheckRequest {
        model,
        customer: customer.into(),
        feature: feature.into(),
        amount,
    });
    match state.call(caller, request).await {
        Ok(Answer::Check(outcome)) => Ok(Some(outcome)),
        Ok(other) => Err(unexpected(&other)),
        Err(e) if has_no_plan_yet(state, &e, customer).await? => Ok(None),
        Err(e) => Err(e),
    }
}

fn no_subscription(customer: &str, feature: &str, quantity: u64) -> Value {
    json!({
        "allowed": false,
        "feature": feature,
        "featureCode": feature,
        "quantity": quantity,
        "reason": "no_active_subscription",
        "message": format!("customer `{customer}` has no plan yet; POST /subscriptions gives it one"),
        "subscriptionStatus": "none",
        "object": "usage_check",
        "livemode": false,
    })
}

/// A check's answer in the SDK's per-model shape (the fields of the other models left out).
/// Unit prices are what `quantity` costs per unit (rate units or credits), so one shard round
/// trip answers it all. Typed rather than built as a JSON map: it is the hot path.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckAnswer<'a> {
    allowed: bool,
    feature: &'a str,
    feature_code: &'a str,
    quantity: u64,
    subscription_status: &'static str,
    consumption_model: Option<&'static str>,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    included: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    held: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unlimited: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overage_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credits_per_unit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    estimated_credits: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan_credits: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purchased_credits: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_credits: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_price: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    estimated_amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_balance: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    block_on_exhaustion: Option<bool>,
    object: &'static str,
    livemode: bool,
}

/// `{success: true, data: CheckAnswer}`.
#[derive(Debug, Serialize)]
struct CheckEnvelope<'a> {
    success: bool,
    data: CheckAnswer<'a>,
}

fn check_answer<'a>(feature: &'a str, quantity: u64, outcome: &CheckOutcome) -> CheckAnswer<'a> {
    let per_unit = (quantity > 0).then(|| outcome.cost as f64 / quantity as f64);
    let denied = |reason| (!outcome.allowed).then_some(reason);
    let mut answer = CheckAnswer {
        allowed: outcome.allowed,
        feature,
        feature_code: feature,
        quantity,
        subscription_status: "active",
        seq: outcome.seq,
        object: "usage_check",
        ..CheckAnswer::default()
    };
    match outcome.standing {
        Standing::Metered {
            used,
            included,
            held,
            has_overage,
            ..
        } => {
            answer.consumption_model = Some("metered");
            answer.current = Some(used);
            answer.included = Some(included);
            answer.held = Some(held as i64);
            answer.remaining = Some(included.saturating_sub(used + held));
            answer.unlimited = Some(false);
            answer.overage_enabled = Some(has_overage);
            answer.estimated_amount = Some(outcome.cost);
            answer.currency = Some("USD");
            answer.block_on_exhaustion = Some(!has_overage);
            answer.reason = denied("included_limit_reached");
        }
        Standing::Credits {
            available,
            granted,
            purchased,
            held,
        } => {
            answer.consumption_model = Some("credits");
            answer.credits_per_unit = per_unit;
            answer.estimated_credits = Some(outcome.cost);
            answer.plan_credits = Some(granted);
            answer.purchased_credits = Some(purchased);
            answer.held = Some(held);
            answer.total_credits = Some(available);
            answer.block_on_exhaustion = Some(true);
            answer.reason = denied("insufficient_credits");
        }
        Standing::Balance {
            available_units,
            held_units,
            ..
        } => {
            answer.consumption_model = Some("balance");
            answer.unit_price = per_unit;
            answer.estimated_amount = Some(outcome.cost);
            answer.current_balance = Some(available_units);
            answer.held = Some(held_units);
            answer.currency = Some("USD");
            answer.block_on_exhaustion = Some(true);
            answer.reason = denied("insufficient_balance");
        }
        Standing::Flag { enabled } => answer.enabled = Some(enabled),
    }
    answer
}

/// `POST /usage/check`: may the customer use `quantity` (default 1) now? A dry run.
pub(super) async fn check(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<CheckBody>,
) -> Result<Response, ApiError> {
    let feature = feature_of(body.feature_code, body.feature)?;
    let model = body.tokens.usage()?;
    let quantity = match (&body.quantity, &model) {
        (_, Some(_)) => 0,
        (Some(number), None) => whole("quantity", number, AMOUNT_MAX)?,
        (None, None) => 1,
    };
    match check_of(&state, caller, &body.customer_id, &feature, quantity, model).await? {
        None => Ok(ok(no_subscription(&body.customer_id, &feature, quantity)).into_response()),
        Some(outcome) => Ok(axum::Json(CheckEnvelope {
            success: true,
            data: check_answer(&feature, quantity, &outcome),
        })
        .into_response()),
    }
}

async fn report(
    state: &ApiState,
    caller: Caller,
    item: ReportItem,
) -> Result<ReportOutcome, ApiError> {
    let customer = item.customer.clone();
    match state.call(caller, Request::Report(item)).await {
        Ok(Answer::Report(outcome)) => Ok(outcome),
        Ok(other) => Err(unexpected(&other)),
        Err(e) if has_no_plan_yet(state, &e, &customer).await? => Err(ApiError::not_found(
            "no_active_subscription",
            "customerId",
            format!("customer `{customer}` has no plan yet; POST /subscriptions gives it one"),
        )),
        Err(e) => Err(e),
    }
}

/// A usage event's public id: the customer's sequence number after it, and the customer.
fn event_id(customer: &str, seq: u64) -> String {
    format!("evt_{seq}_{customer}")
}

/// `POST /usage/events`: records `value` (default 1) units. Idempotent by `idempotencyKey` (or
/// `eventId`) in the body, else by the `Idempotency-Key` header: a retry answers the first
/// outcome (`duplicate: true`) and records nothing.
pub(super) async fn track(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<TrackBody>,
) -> Result<Response, ApiError> {
    let feature = feature_of(body.feature_code, body.feature)?;
    let model = body.tokens.usage()?;
    if let Some(timestamp) = &body.timestamp {
        chrono::DateTime::parse_from_rfc3339(timestamp).map_err(|e| {
            ApiError::invalid("timestamp", format!("is not an RFC 3339 date-time: {e}"))
        })?;
    }
    let value = match (&body.value, &model) {
        (_, Some(_)) => 0,
        (Some(number), None) => whole("value", number, AMOUNT_MAX)?,
        (None, None) => 1,
    };
    let explicit = body.idempotency_key.as_deref().or(body.event_id.as_deref());
    let key = idempotency_key(&headers, explicit)?;
    let mut item = ReportItem::new(body.customer_id.clone(), feature.clone(), value);
    item.model = model;
    item.idempotency_key = key;
    let outcome = report(&state, caller, item).await?;
    let now = iso(state.clock.now_ms());
    let status = if outcome.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let answer = json!({
        "id": event_id(&body.customer_id, outcome.seq),
        "customerId": body.customer_id,
        "feature": feature,
        "featureCode": feature,
        "value": outcome.amount,
        "idempotencyKey": body.idempotency_key,
        "eventId": body.event_id,
        "ts": now,
        "createdAt": now,
        "properties": [],
        "charged": outcome.charged,
        "duplicate": outcome.duplicate,
        "seq": outcome.seq,
        "object": "usage_event",
        "livemode": false,
    });
    Ok((status, ok(answer)).into_response())
}

/// `PUT /usage`: sets a metered feature's usage this period to `value`, recorded as an event of
/// the difference (so invoices still reconcile with events). Usage only grows within a period.
pub(super) async fn set(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<SetBody>,
) -> Result<Response, ApiError> {
    let feature = feature_of(body.feature_code, body.feature)?;
    let value = whole("value", &body.value, AMOUNT_MAX)?;
    let lock = state.set_locks.of(&body.customer_id, &feature);
    let _one_set_at_a_time = lock.lock().await;
    let view = state.customer(&body.customer_id).await?;
    let Some(usage) = view.usage.iter().find(|u| u.feature == feature) else {
        return Err(ApiError::billing(
            "feature_not_in_plan",
            format!("plan `{}` has no usage feature `{feature}`", view.plan),
        )
        .with_param("featureCode"));
    };
    if view.model != tally_protocol::message::Model::Metered {
        return Err(ApiError::invalid(
            "featureCode",
            format!(
                "plan `{}` is a {} plan; usage can be set only on metered plans",
                view.plan,
                model_name(view.model)
            ),
        ));
    }
    let previous = usage.used;
    if value < previous {
        return Err(ApiError::invalid(
            "value",
            format!("is {value}, below this period's usage of {previous}; usage only grows within a period"),
        ));
    }
    let mut adjustment = value - previous;
    let key = idempotency_key(&headers, None)?;
    let mut seq = view.seq;
    if adjustment > 0 {
        let mut item = ReportItem::new(body.customer_id.clone(), feature.clone(), adjustment);
        item.idempotency_key = key;
        let outcome = report(&state, caller, item).await?;
        seq = outcome.seq;
        adjustment = outcome.amount;
    }
    let now = iso(state.clock.now_ms());
    Ok(ok(json!({
        "id": event_id(&body.customer_id, seq),
        "customerId": body.customer_id,
        "feature": feature,
        "featureCode": feature,
        "value": previous + adjustment,
        "previousValue": previous,
        "adjustment": adjustment,
        "idempotencyKey": headers.get("idempotency-key").and_then(|v| v.to_str().ok()),
        "reason": body.reason,
        "ts": now,
        "createdAt": now,
        "object": "usage_adjustment",
        "livemode": false,
    }))
    .into_response())
}

fn access_json(state: &ApiState, feature: &str, outcome: &CheckOutcome, plan: &str) -> Value {
    let kind = state.catalogue.feature(feature);
    let mut answer = json!({
        "code": feature,
        "name": feature,
        "type": if kind == Some(FeatureKind::Flag) { "boolean" } else { "usage" },
        "allowed": outcome.allowed,
        "object": "feature",
        "livemode": false,
    });
    let extra = match &outcome.standing {
        Standing::Flag { enabled } => json!({"enabled": enabled}),
        Standing::Metered {
            used,
            included,
            overage_units,
            has_overage,
            ..
        } => json!({
            "enabled": true,
            "current": used,
            "included": included,
            "remaining": included.saturating_sub(*used),
            "overageQuantity": used.saturating_sub(*included),
            "overageCost": overage_units,
            "unlimited": false,
            "overageEnabled": has_overage,
            "willBeCharged": *has_overage && used >= included,
        }),
        Standing::Credits { available, .. } => json!({
            "enabled": true,
            "remaining": available,
            "willBeCharged": true,
        }),
        Standing::Balance {
            available_units, ..
        } => json!({
            "enabled": true,
            "remaining": available_units,
            "willBeCharged": true,
        }),
    };
    if let (Some(answer), Value::Object(extra)) = (answer.as_object_mut(), extra) {
        answer.extend(extra);
    }
    answer["plan"] = json!(plan);
    answer
}

/// `GET /feature-access/{code}?customerId=[&action=canUse]`: whether one more unit is allowed,
/// and where the customer stands.
pub(super) async fn access_one(
    State(state): State<ApiState>,
    caller: Caller,
    Path(code): Path<String>,
    Query(query): Query<AccessQuery>,
) -> Result<Response, ApiError> {
    if let Some(action) = query.action.as_deref().filter(|a| *a != "canUse") {
        return Err(ApiError::invalid(
            "action",
            format!("is `{action}`; the only action is canUse"),
        ));
    }
    let Some(outcome) = check_of(&state, caller, &query.customer_id, &code, 1, None).await? else {
        return Ok(ok(json!({
            "code": code,
            "allowed": false,
            "reason": "no_active_subscription",
            "object": "feature",
            "livemode": false,
        }))
        .into_response());
    };
    let view = state.customer(&query.customer_id).await?;
    Ok(ok(access_json(&state, &code, &outcome, &view.plan)).into_response())
}

/// `GET /feature-access?customerId=`: every feature of the customer's plan.
pub(super) async fn access_list(
    State(state): State<ApiState>,
    caller: Caller,
    shape: ListShape,
    Query(query): Query<AccessQuery>,
) -> Result<Response, ApiError> {
    let view = match state.customer(&query.customer_id).await {
        Ok(view) => view,
        Err(e) if has_no_plan_yet(&state, &e, &query.customer_id).await? => {
            return Ok(page(Vec::new(), None, shape).into_response());
        }
        Err(e) => return Err(e),
    };
    let Some(plan) = state.catalogue.plan(&view.plan).cloned() else {
        return Err(ApiError::internal(format!(
            "plan `{}` is not in the catalogue",
            view.plan
        )));
    };
    let mut features = Vec::new();
    for feature in plan.usage.keys().chain(plan.flags.iter()) {
        if let Some(outcome) =
            check_of(&state, caller, &query.customer_id, feature, 1, None).await?
        {
            features.push(access_json(&state, feature, &outcome, &view.plan));
        }
    }
    Ok(page(features, None, shape).into_response())
}
