//! `/plans`, `/features`, `/credit-packs`: the catalogue from `config.toml`, read-only (plans
//! change by editing the config and restarting; their prices are versioned).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::{Caller, ListShape};
use super::views::{self, ok, page};
use super::ApiState;

/// `GET /plans`.
pub(super) async fn plans(State(state): State<ApiState>, _: Caller, shape: ListShape) -> Response {
    let plans = state
        .catalogue
        .plans()
        .enumerate()
        .map(|(order, plan)| views::plan(plan, order))
        .collect();
    page(plans, None, shape).into_response()
}

/// `GET /plans/{id}` (the id is the plan's code).
pub(super) async fn plan(
    State(state): State<ApiState>,
    _: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (order, plan) = state
        .catalogue
        .plans()
        .enumerate()
        .find(|(_, plan)| plan.slug == id)
        .ok_or_else(|| {
            ApiError::not_found("plan_not_found", "id", format!("unknown plan `{id}`"))
        })?;
    Ok(ok(views::plan(plan, order)).into_response())
}

/// `GET /features`.
pub(super) async fn features(
    State(state): State<ApiState>,
    _: Caller,
    shape: ListShape,
) -> Response {
    let features = state
        .catalogue
        .features()
        .map(|(code, kind)| views::feature(code, kind))
        .collect();
    page(features, None, shape).into_response()
}

/// `GET /features/{code}`.
pub(super) async fn feature(
    State(state): State<ApiState>,
    _: Caller,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let kind = state.catalogue.feature(&code).ok_or_else(|| {
        ApiError::not_found(
            "feature_not_found",
            "code",
            format!("unknown feature `{code}`"),
        )
    })?;
    Ok(ok(views::feature(&code, kind)).into_response())
}

/// `GET /credit-packs`: each credits plan's pack.
pub(super) async fn credit_packs(
    State(state): State<ApiState>,
    _: Caller,
    shape: ListShape,
) -> Response {
    let packs = state
        .catalogue
        .plans()
        .filter_map(|plan| views::credit_pack(plan))
        .collect();
    page(packs, None, shape).into_response()
}
