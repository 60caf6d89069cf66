//! `/test-clock`: with `[sandbox] test_clock = true`, moves the daemon's clock forward so a
//! product can see a period close and its invoice from an SDK. Refused (`sandbox_only`) when
//! off. Time only moves forward; holds expire and periods close as they would have.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{whole, Caller, Json};
use super::views::{iso, ok};
use super::{admin_only, ApiState};
use crate::clock::TestClock;

const DAY_MS: u64 = 86_400_000;
/// Furthest one call moves the clock.
const ADVANCE_DAYS_MAX: u64 = 3_660;

/// `POST /test-clock` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AdvanceBody {
    advance_days: Option<serde_json::Number>,
    frozen_time: Option<String>,
}

fn test_clock(state: &ApiState, caller: Caller) -> Result<&TestClock, ApiError> {
    admin_only(caller, "test_clock")?;
    state
        .test_clock
        .as_deref()
        .ok_or_else(ApiError::sandbox_only)
}

fn clock_json(state: &ApiState, clock: &TestClock) -> serde_json::Value {
    let now = iso(state.clock.now_ms());
    let moved = clock.offset_ms() > 0;
    json!({
        "simulatedTime": moved.then(|| now.clone()),
        "isActive": moved,
        "now": now,
        "offsetMs": clock.offset_ms(),
        "latestRun": null,
        "object": "test_clock",
        "livemode": false,
    })
}

/// `GET /test-clock`.
pub(super) async fn get(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let clock = test_clock(&state, caller)?;
    Ok(ok(clock_json(&state, clock)).into_response())
}

/// `POST /test-clock {advanceDays | frozenTime}`: moves time forward, then has every shard close
/// the periods that ended.
pub(super) async fn advance(
    State(state): State<ApiState>,
    caller: Caller,
    Json(body): Json<AdvanceBody>,
) -> Result<Response, ApiError> {
    let clock = test_clock(&state, caller)?;
    let now = state.clock.now_ms();
    let by_ms = match (&body.advance_days, &body.frozen_time) {
        (Some(days), None) => whole("advanceDays", days, ADVANCE_DAYS_MAX)? * DAY_MS,
        (None, Some(time)) => {
            let target = chrono::DateTime::parse_from_rfc3339(time)
                .map_err(|e| {
                    ApiError::invalid("frozenTime", format!("is not an RFC 3339 date-time: {e}"))
                })?
                .timestamp_millis();
            let target = u64::try_from(target).unwrap_or(0);
            if target <= now {
                return Err(ApiError::invalid(
                    "frozenTime",
                    format!(
                        "is not after now ({}); the clock only moves forward",
                        iso(now)
                    ),
                ));
            }
            target - now
        }
        _ => {
            return Err(ApiError::invalid(
                "advanceDays",
                "give one of advanceDays or frozenTime",
            ))
        }
    };
    let started = iso(now);
    clock.advance_ms(by_ms);
    let closed = state.router.close_due_periods().await;
    // Both SDKs' answers in one: the clock (Node's `TestClock`) and the run (Python's
    // `TestClockRun`: the periods its first step closed; any more close right behind it).
    let mut answer = clock_json(&state, clock);
    if let Some(fields) = answer.as_object_mut() {
        fields.extend([
            (
                "id".to_string(),
                json!(format!("run_{}", clock.offset_ms())),
            ),
            ("status".into(), json!("completed")),
            ("startedAtTime".into(), json!(started)),
            ("targetTime".into(), json!(iso(now + by_ms))),
            ("estimatedDeadlineCount".into(), json!(closed)),
            ("completedDeadlineCount".into(), json!(closed)),
            ("failedDeadlineCount".into(), json!(0)),
            ("error".into(), Value::Null),
            ("items".into(), json!([])),
        ]);
    }
    Ok(ok(answer).into_response())
}

/// `POST /test-clock/process-billing`: closes due periods now rather than at each shard's next
/// sweep, and says how many it closed (a first step's worth per shard; the rest follow).
pub(super) async fn process_billing(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    test_clock(&state, caller)?;
    let closed = state.router.close_due_periods().await;
    Ok(ok(json!({
        "customersFound": closed,
        "enqueued": closed,
        "failed": 0,
        "dunningRetried": 0,
        "dunningFailed": 0,
        "object": "test_clock",
        "livemode": false,
    }))
    .into_response())
}
