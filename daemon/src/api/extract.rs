//! Reading requests: the key's role, a bounded JSON body (size and time), query strings, the
//! `Idempotency-Key` header, and whole quantities. Each failure is a typed [`ApiError`] naming
//! the field.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tally_protocol::message::{IdempotencyKey, Role};

use super::error::ApiError;
use super::ApiState;

/// Longest `Idempotency-Key` accepted.
pub(super) const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// The role of the request's `x-api-key` (the auth layer put it there).
#[derive(Debug, Clone, Copy)]
pub(super) struct Caller(pub Role);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .copied()
            .ok_or_else(|| ApiError::unauthorized("missing x-api-key header"))
    }
}

/// The first `commet-version` whose lists are objects (`{object: "list", data, hasMore}` inside
/// `data`); earlier versions (and requests without the header) get the array in `data`.
pub(super) const LIST_OBJECTS_SINCE: &str = "2026-08-27";

/// How the caller's API version shapes lists.
#[derive(Debug, Clone, Copy)]
pub(super) struct ListShape {
    /// Lists are objects inside `data`.
    pub nested: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for ListShape {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let version = parts
            .headers
            .get("commet-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // ISO dates compare as strings.
        Ok(ListShape {
            nested: version >= LIST_OBJECTS_SINCE,
        })
    }
}

/// A JSON body, read within `[http] body_bytes_max` and `read_timeout`; an empty body reads as
/// `{}` (the SDKs send none on some POSTs).
#[derive(Debug)]
pub(super) struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        let limit = state.limits.body_bytes_max;
        let body = request.into_body();
        let bytes =
            tokio::time::timeout(state.limits.read_timeout, axum::body::to_bytes(body, limit))
                .await
                .map_err(|_| ApiError::timed_out())?
                .map_err(|e| {
                    // `to_bytes` reports the limit as a `LengthLimitError` somewhere in the chain.
                    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                    while let Some(error) = source {
                        if error.is::<http_body_util::LengthLimitError>() {
                            return ApiError::too_large(limit);
                        }
                        source = error.source();
                    }
                    ApiError::invalid_json(format!("reading the body: {e}"))
                })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse(bytes).map(Json)
    }
}

/// Parses JSON into `T`, naming the field at fault.
pub(super) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => Ok(value),
        Err(e) => {
            let inner = e.inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::invalid_json(format!(
                    "the body is not valid JSON: {inner}"
                )));
            }
            let path = e.path().to_string();
            let message = inner.to_string();
            // serde names a missing field in its message, not in the path.
            let field = match message.strip_prefix("missing field `") {
                Some(rest) => rest.split('`').next().unwrap_or(&path).to_string(),
                None => path,
            };
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_string();
            Err(ApiError::invalid(&field, message))
        }
    }
}

/// Query parameters.
#[derive(Debug)]
pub(super) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(Query)
            .map_err(|e| ApiError::invalid("query", e.to_string()))
    }
}

/// The request's `Idempotency-Key`, as Tally's 16-byte key; `explicit` (a key in the body)
/// wins over the header.
pub(super) fn idempotency_key(
    headers: &HeaderMap,
    explicit: Option<&str>,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let (field, text) = match explicit {
        Some(text) => ("idempotencyKey", text),
        None => match headers.get("idempotency-key") {
            None => return Ok(None),
            Some(value) => (
                "Idempotency-Key",
                value.to_str().map_err(|_| {
                    ApiError::invalid("Idempotency-Key", "must be visible ASCII characters")
                })?,
            ),
        },
    };
    if text.is_empty() || text.len() > IDEMPOTENCY_KEY_BYTES_MAX {
        return Err(ApiError::invalid(
            field,
            format!(
                "is {} bytes; it must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX}",
                text.len()
            ),
        ));
    }
    Ok(Some(key_of(text)))
}

/// The 16-byte key a string names (the same string, over HTTP, always the same key).
pub(super) fn key_of(text: &str) -> IdempotencyKey {
    let digest = Sha256::new()
        .chain_update(b"tally-http-idempotency\0")
        .chain_update(text.as_bytes())
        .finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// A JSON number as a whole quantity `0..=max`.
pub(super) fn whole(field: &str, number: &serde_json::Number, max: u64) -> Result<u64, ApiError> {
    if let Some(value) = number.as_u64() {
        if value <= max {
            return Ok(value);
        }
        return Err(ApiError::invalid(
            field,
            format!("is {value}; the largest is {max}"),
        ));
    }
    let reason = match number.as_f64() {
        Some(value) if value < 0.0 => format!("is {number}; it must not be negative"),
        Some(value) if value.fract() == 0.0 && value <= max as f64 => {
            return Ok(value as u64);
        }
        Some(value) if value.fract() != 0.0 => {
            format!("is {number}; it must be a whole number")
        }
        _ => format!("is {number}; the largest is {max}"),
    };
    Err(ApiError::invalid(field, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[expect(dead_code, reason = "read only through Debug in the assertions")]
    struct Body {
        customer_id: String,
        quantity: Option<u64>,
    }

    #[test]
    fn json_errors_name_the_field() {
        let missing = parse::<Body>(br#"{"quantity": 1}"#).unwrap_err();
        assert_eq!(missing.param.as_deref(), Some("customerId"));
        assert_eq!(missing.code, "validation_error");
        let wrong = parse::<Body>(br#"{"customerId": "c", "quantity": "x"}"#).unwrap_err();
        assert_eq!(wrong.param.as_deref(), Some("quantity"));
        let garbage = parse::<Body>(b"{nope").unwrap_err();
        assert_eq!(garbage.code, "invalid_json");
    }

    #[test]
    fn quantities_are_whole_and_bounded() {
        let n = |text: &str| serde_json::from_str::<serde_json::Number>(text).unwrap();
        assert_eq!(whole("value", &n("3"), 10), Ok(3));
        assert_eq!(whole("value", &n("3.0"), 10), Ok(3));
        for bad in ["-1", "1.5", "11", "1e300"] {
            let error = whole("value", &n(bad), 10).unwrap_err();
            assert_eq!(error.param.as_deref(), Some("value"), "{bad}");
        }
    }

    #[test]
    fn the_same_key_text_is_the_same_key_and_long_ones_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", "commet-node-retry-1".parse().unwrap());
        let from_header = idempotency_key(&headers, None).unwrap();
        assert_eq!(from_header, Some(key_of("commet-node-retry-1")));
        assert_eq!(
            idempotency_key(&headers, Some("mine")).unwrap(),
            Some(key_of("mine"))
        );
        assert!(idempotency_key(&HeaderMap::new(), Some(&"k".repeat(256))).is_err());
    }
}
