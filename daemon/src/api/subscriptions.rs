//! `/subscriptions`: a customer on a plan. Tally has one subscription per customer, with id
//! `sub_<customer>`; creating it is the engine's `create_customer`, changing it `change_plan`.
//! Money in (`balance/topup`, `credits`) is the engine's `top_up`, idempotent by the request's
//! `Idempotency-Key`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tally_protocol::message::{
    CustomerPlan, CustomerView, Request, Response as Answer, TopUpAmount, TopUpRequest,
};

use super::customers::{check_id, has_no_plan_yet, profile};
use super::error::ApiError;
use super::extract::{idempotency_key, whole, Caller, Json, ListShape, Query};
use super::views::{ok, page, subscription};
use super::{admin_only, unexpected, ApiState};
use crate::metering::billing::UNITS_PER_CENT;

/// `POST /subscriptions` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateBody {
    customer_id: String,
    plan_code: Option<String>,
    plan_id: Option<String>,
}

/// `POST /subscriptions/{id}/change-plan` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ChangeBody {
    new_plan_id: Option<String>,
    plan_id: Option<String>,
    plan_code: Option<String>,
}

/// `GET /subscriptions/active` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ActiveQuery {
    customer_id: String,
}

/// `POST /subscriptions/{id}/balance/topup` body.
#[derive(Debug, Deserialize)]
pub(super) struct TopUpBody {
    amount: serde_json::Number,
}

/// `POST /subscriptions/{id}/credits` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreditsBody {
    credit_pack_id: String,
    packs: Option<serde_json::Number>,
}

/// The customer a subscription id names.
fn customer_of(id: &str) -> Result<&str, ApiError> {
    id.strip_prefix("sub_")
        .filter(|customer| !customer.is_empty())
        .ok_or_else(|| {
            ApiError::not_found(
                "subscription_not_found",
                "id",
                format!("`{id}` is not a subscription id (they are sub_<customer id>)"),
            )
        })
}

fn answer(state: &ApiState, view: &CustomerView) -> serde_json::Value {
    subscription(view, &state.catalogue, state.clock.now_ms())
}

fn plan_given(field: &'static str, plan: Option<String>) -> Result<String, ApiError> {
    plan.ok_or_else(|| ApiError::invalid(field, "give the plan's code"))
}

/// `POST /subscriptions`: puts a customer (with a profile, from `POST /customers`) on a plan.
/// Asking again for the plan it is on returns its subscription (a retry is harmless).
pub(super) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<CreateBody>,
) -> Result<Response, ApiError> {
    admin_only(caller, "create_subscription")?;
    check_id("customerId", &body.customer_id)?;
    let plan = plan_given("planCode", body.plan_code.or(body.plan_id))?;
    if state.catalogue.plan(&plan).is_none() {
        return Err(ApiError::not_found(
            "plan_not_found",
            "planCode",
            format!("unknown plan `{plan}`"),
        ));
    }
    if profile(&state, &body.customer_id).await?.is_none() {
        return Err(ApiError::not_found(
            "customer_not_found",
            "customerId",
            format!(
                "no customer `{}`; create it first with POST /customers",
                body.customer_id
            ),
        ));
    }
    let request = Request::CreateCustomer(CustomerPlan {
        customer: body.customer_id.clone(),
        plan: plan.clone(),
    });
    match state.call(caller, request).await {
        Ok(Answer::Customer(view)) => {
            Ok((StatusCode::CREATED, ok(answer(&state, &view))).into_response())
        }
        Ok(other) => Err(unexpected(&other)),
        Err(e) if e.code == "already_has_active_subscription" => {
            let view = state.customer(&body.customer_id).await?;
            if view.plan == plan {
                return Ok(ok(answer(&state, &view)).into_response());
            }
            Err(ApiError::conflict(
                "already_has_active_subscription",
                format!(
                    "customer `{}` is on plan `{}`; change it with POST /subscriptions/{}/change-plan",
                    view.customer,
                    view.plan,
                    super::views::subscription_id(&view.customer)
                ),
            ))
        }
        Err(e) => Err(e),
    }
}

/// `GET /subscriptions/active?customerId=`: the subscription, or `null` for a customer with a
/// profile and no plan.
pub(super) async fn active(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<ActiveQuery>,
) -> Result<Response, ApiError> {
    admin_only(caller, "get_subscription")?;
    match state.customer(&query.customer_id).await {
        Ok(view) => Ok(ok(answer(&state, &view)).into_response()),
        Err(e) if has_no_plan_yet(&state, &e, &query.customer_id).await? => {
            Ok(ok(serde_json::Value::Null).into_response())
        }
        Err(e) => Err(e),
    }
}

/// `GET /subscriptions` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    customer_id: Option<String>,
    status: Option<String>,
}

/// `GET /subscriptions?customerId=[&status=]`: the customer's subscription, if it has one
/// (Tally lists per customer; every subscription is `active`).
pub(super) async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    shape: ListShape,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    admin_only(caller, "list_subscriptions")?;
    let customer = query.customer_id.ok_or_else(|| {
        ApiError::invalid(
            "customerId",
            "Tally lists subscriptions per customer; give customerId",
        )
    })?;
    let wanted = query
        .status
        .as_deref()
        .is_none_or(|status| status == "active");
    let found = match state.customer(&customer).await {
        Ok(view) if wanted => vec![answer(&state, &view)],
        Ok(_) => Vec::new(),
        Err(e) if e.code == "customer_not_found" => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(page(found, None, shape).into_response())
}

/// `GET /subscriptions/{id}`.
pub(super) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(caller, "get_subscription")?;
    let view = state
        .customer(customer_of(&id)?)
        .await
        .map_err(not_found_as_subscription)?;
    Ok(ok(answer(&state, &view)).into_response())
}

fn not_found_as_subscription(error: ApiError) -> ApiError {
    if error.code == "customer_not_found" {
        ApiError::not_found("subscription_not_found", "id", error.message)
    } else {
        error
    }
}

/// `POST /subscriptions/{id}/change-plan`: closes the period at the old plan (its invoice) and
/// starts one at the new plan, as the engine's `change_plan` does.
pub(super) async fn change_plan(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ChangeBody>,
) -> Result<Response, ApiError> {
    let customer = customer_of(&id)?.to_string();
    let plan = plan_given(
        "newPlanId",
        body.new_plan_id.or(body.plan_id).or(body.plan_code),
    )?;
    let request = Request::ChangePlan(CustomerPlan {
        customer: customer.clone(),
        plan: plan.clone(),
    });
    match state.call(caller, request).await {
        Ok(Answer::Customer(view)) => Ok(ok(answer(&state, &view)).into_response()),
        Ok(other) => Err(unexpected(&other)),
        Err(e) => Err(not_found_as_subscription(e)),
    }
}

/// `POST /subscriptions/{id}/cancel`: Tally keeps every customer on a plan; ending one is not
/// there yet.
pub(super) async fn cancel(Path(id): Path<String>) -> ApiError {
    ApiError::not_supported(format!(
        "canceling a subscription ({id}); change it to a free plan with change-plan instead"
    ))
}

/// `POST /subscriptions/{id}/balance/topup {amount}`: `amount` in cents onto a balance plan.
pub(super) async fn top_up(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<TopUpBody>,
) -> Result<Response, ApiError> {
    let customer = customer_of(&id)?.to_string();
    let max_cents = (tally_protocol::message::TOP_UP_UNITS_MAX / UNITS_PER_CENT) as u64;
    let cents = whole("amount", &body.amount, max_cents)?;
    if cents == 0 {
        return Err(ApiError::invalid("amount", "must be at least 1 (cent)"));
    }
    let outcome = top_up_request(
        &state,
        caller,
        &headers,
        customer,
        TopUpAmount::Units(cents as i64 * UNITS_PER_CENT),
    )
    .await?;
    Ok(ok(json!({
        "amount": cents,
        "balance": outcome.customer.balance_units,
        "transactionId": super::views::transaction_id(&outcome.transaction.customer, outcome.transaction.number),
        "duplicate": outcome.duplicate,
        "object": "balance_topup",
        "livemode": false,
    }))
    .into_response())
}

/// `POST /subscriptions/{id}/credits {creditPackId}`: buys the plan's credit pack (`packs`, a
/// Tally extension, buys several at once).
pub(super) async fn purchase_credits(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<CreditsBody>,
) -> Result<Response, ApiError> {
    let customer = customer_of(&id)?.to_string();
    let pack_plan = body
        .credit_pack_id
        .strip_prefix("pack_")
        .unwrap_or_default();
    if state.catalogue.plan(pack_plan).is_none() {
        return Err(ApiError::not_found(
            "credit_pack_not_found",
            "creditPackId",
            format!(
                "no credit pack `{}`; GET /credit-packs lists them",
                body.credit_pack_id
            ),
        ));
    }
    let packs = match &body.packs {
        Some(number) => whole(
            "packs",
            number,
            tally_protocol::message::TOP_UP_PACKS_MAX.into(),
        )?,
        None => 1,
    };
    if packs == 0 {
        return Err(ApiError::invalid("packs", "must be at least 1"));
    }
    let view = state
        .customer(&customer)
        .await
        .map_err(not_found_as_subscription)?;
    if view.plan != pack_plan {
        return Err(ApiError::invalid(
            "creditPackId",
            format!(
                "`{}` is plan {pack_plan}'s pack; customer `{customer}` is on plan {}",
                body.credit_pack_id, view.plan
            ),
        ));
    }
    let outcome = top_up_request(
        &state,
        caller,
        &headers,
        customer,
        TopUpAmount::Packs(packs as u32),
    )
    .await?;
    Ok(ok(json!({
        "credits": outcome.credits_added,
        "purchasedCredits": outcome.customer.purchased_credits,
        "transactionId": super::views::transaction_id(&outcome.transaction.customer, outcome.transaction.number),
        "duplicate": outcome.duplicate,
        "object": "credit_grant",
        "livemode": false,
    }))
    .into_response())
}

async fn top_up_request(
    state: &ApiState,
    caller: Caller,
    headers: &HeaderMap,
    customer: String,
    amount: TopUpAmount,
) -> Result<Box<tally_protocol::message::TopUpOutcome>, ApiError> {
    let request = Request::TopUp(TopUpRequest {
        customer,
        amount,
        idempotency_key: idempotency_key(headers, None)?,
    });
    match state.call(caller, request).await {
        Ok(Answer::TopUp(outcome)) => Ok(outcome),
        Ok(other) => Err(unexpected(&other)),
        Err(e) => Err(not_found_as_subscription(e)),
    }
}
