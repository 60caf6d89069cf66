//! Errors in Commet's shape, `{success: false, error: {type, code, message, param, details}}`,
//! which both SDKs turn into their typed exceptions (`code = "validation_error"` with `details:
//! [{field, message}]` becomes `CommetValidationError`). Every refusal says why; none changes
//! anything stored.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tally_protocol::message::TallyError;

/// A refused request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Commet's error type (`validation_error`, `not_found_error`, …).
    pub kind: &'static str,
    /// Commet's error code (`customer_not_found`, …).
    pub code: &'static str,
    /// What happened, for a person.
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// Per-field messages of a validation error.
    pub details: Vec<(String, String)>,
    /// Seconds to wait before retrying (429, 503).
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            kind,
            code,
            message,
            param: None,
            details: Vec::new(),
            retry_after_s: None,
        }
    }

    /// A field that is missing, of the wrong type or out of range.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut error = Self::new(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "validation_error",
            format!("{field}: {message}"),
        );
        error.param = Some(field.into());
        error.details = vec![(field.into(), message)];
        error
    }

    /// Something that does not exist.
    pub fn not_found(code: &'static str, param: &str, message: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            code,
            message.into(),
        );
        error.param = Some(param.into());
        error
    }

    /// A request that contradicts what exists.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict_error", code, message.into())
    }

    /// A part of Commet's API that Tally does not have.
    pub fn not_supported(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "invalid_request_error",
            "not_supported",
            format!("{what} is not supported by Tally; see docs/http-api.md for what is"),
        )
    }

    /// No key, or a key Tally does not accept.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "unauthorized",
            message.into(),
        )
    }

    /// A key whose role may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "authentication_error",
            "forbidden",
            message.into(),
        )
    }

    /// The sandbox's test clock is off.
    pub fn sandbox_only() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "authentication_error",
            "sandbox_only",
            "the test clock is off; set [sandbox] test_clock = true (never in production)".into(),
        )
    }

    /// A billing rule refused it (not enough credits or balance, feature not in the plan).
    pub fn billing(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "billing_error",
            code,
            message.into(),
        )
    }

    /// A body larger than `[http] body_bytes_max`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "validation_error",
            "payload_too_large",
            format!("the request body is larger than {limit} bytes ([http] body_bytes_max)"),
        )
    }

    /// A body that did not arrive within `[http] read_timeout`.
    pub fn timed_out() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            "the request body did not arrive within [http] read_timeout".into(),
        )
    }

    /// The body is not JSON at all.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "invalid_json",
            message.into(),
        )
    }

    /// Something failed inside Tally; nothing was applied.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal_error",
            message.into(),
        )
    }

    /// The parameter the error is about.
    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.into());
        self
    }
}

impl From<TallyError> for ApiError {
    fn from(error: TallyError) -> Self {
        let message = error.to_string();
        match error {
            TallyError::UnknownCustomer { .. } => {
                ApiError::not_found("customer_not_found", "customerId", message)
            }
            TallyError::CustomerExists { .. } => {
                ApiError::conflict("already_has_active_subscription", message)
            }
            TallyError::UnknownPlan { .. } => {
                ApiError::not_found("plan_not_found", "planCode", message)
            }
            TallyError::UnknownFeature { .. } => {
                ApiError::not_found("feature_not_found", "feature", message)
            }
            TallyError::FeatureNotInPlan { .. } => {
                ApiError::billing("feature_not_in_plan", message).with_param("feature")
            }
            TallyError::NotAUsageFeature { .. } => ApiError::invalid("feature", message),
            TallyError::UnknownModel { .. } => {
                ApiError::not_found("model_not_found", "model", message)
            }
            TallyError::ModelNotInPlan { .. } => {
                ApiError::billing("model_not_in_plan", message).with_param("model")
            }
            TallyError::UnknownHold { .. } => ApiError::not_found("hold_not_found", "id", message),
            TallyError::UnknownWebhook { .. } => {
                ApiError::not_found("webhook_not_found", "id", message)
            }
            TallyError::InsufficientBalance { .. } => {
                ApiError::billing("insufficient_balance", message)
            }
            TallyError::Unauthorized { .. } => ApiError::unauthorized(message),
            TallyError::Forbidden { .. } => ApiError::forbidden(message),
            TallyError::Overloaded => {
                let mut error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limited",
                    message,
                );
                error.retry_after_s = Some(1);
                error
            }
            TallyError::InvalidRequest { reason } => ApiError::invalid("request", reason),
            TallyError::Unsupported { operation } => ApiError::not_supported(operation),
            TallyError::Conflict { .. } => ApiError::conflict("idempotency_key_mismatch", message)
                .with_param("Idempotency-Key"),
            TallyError::ShuttingDown => {
                let mut error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    "shutting_down",
                    message,
                );
                error.retry_after_s = Some(1);
                error
            }
            TallyError::VersionMismatch { .. } | TallyError::Internal { .. } => {
                ApiError::internal(message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({
            "type": self.kind,
            "code": self.code,
            "message": self.message,
        });
        if let Some(param) = &self.param {
            error["param"] = json!(param);
        }
        if !self.details.is_empty() {
            error["details"] = self
                .details
                .iter()
                .map(|(field, message)| json!({"field": field, "message": message}))
                .collect();
        }
        let body = json!({"success": false, "error": error});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_error_has_a_commet_code_and_a_4xx_or_5xx() {
        let errors = [
            TallyError::UnknownCustomer {
                customer: "c".into(),
            },
            TallyError::Overloaded,
            TallyError::Conflict { reason: "r".into() },
            TallyError::InvalidRequest { reason: "r".into() },
            TallyError::InsufficientBalance {
                cost: 2,
                available: 1,
            },
        ];
        let expected = [
            (404, "customer_not_found"),
            (429, "rate_limited"),
            (409, "idempotency_key_mismatch"),
            (400, "validation_error"),
            (400, "insufficient_balance"),
        ];
        for (error, (status, code)) in errors.into_iter().zip(expected) {
            let api = ApiError::from(error);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
        }
        let overloaded = ApiError::from(TallyError::Overloaded).into_response();
        assert_eq!(overloaded.headers()[header::RETRY_AFTER], "1");
    }
}
