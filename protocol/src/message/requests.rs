//! What a client asks: the bodies of [`Request`]'s variants.

use rkyv::{Archive, Deserialize, Serialize};

use super::*;

/// One usage report.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReportItem {
    /// The customer's id.
    pub customer: String,
    /// A usage feature's slug.
    pub feature: String,
    /// Units used, 0..=`AMOUNT_MAX` (0 is allowed and changes nothing).
    pub amount: u64,
    /// A retry with the same key returns the first outcome and changes nothing.
    pub idempotency_key: Option<IdempotencyKey>,
    /// Atomic check-and-consume: record nothing and answer `InsufficientBalance` unless allowed.
    pub only_if_allowed: bool,
    /// For a feature priced by AI model: the model and its tokens (then `amount` is 0; the
    /// daemon prices the tokens).
    pub model: Option<ModelUsage>,
}

/// Tokens of one AI model request, for a feature priced by model (`pricing = "ai_model"`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelUsage {
    /// The model's name in the catalogue (`[models."gpt-4o"]`).
    pub model: String,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Answer tokens (for a check or a hold: the most the answer may have).
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write_tokens: u64,
}

impl ModelUsage {
    /// `input` prompt and `output` answer tokens of `model`, no cache.
    pub fn new(model: impl Into<String>, input: u64, output: u64) -> Self {
        Self {
            model: model.into(),
            input_tokens: input,
            output_tokens: output,
            ..Self::default()
        }
    }
}

impl ReportItem {
    /// A plain report of `amount` units: always recorded, no idempotency key.
    pub fn new(customer: impl Into<String>, feature: impl Into<String>, amount: u64) -> Self {
        Self {
            customer: customer.into(),
            feature: feature.into(),
            amount,
            idempotency_key: None,
            only_if_allowed: false,
            model: None,
        }
    }

    /// A report of one AI model request on a feature priced by model.
    pub fn tokens(
        customer: impl Into<String>,
        feature: impl Into<String>,
        usage: ModelUsage,
    ) -> Self {
        Self {
            model: Some(usage),
            ..Self::new(customer, feature, 0)
        }
    }

    /// With an idempotency key: a retry returns the first outcome and changes nothing.
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    /// As an atomic check-and-consume: recorded only if allowed.
    pub fn only_if_allowed(mut self) -> Self {
        self.only_if_allowed = true;
        self
    }
}

/// A read-only entitlement question.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CheckRequest {
    /// The customer's id.
    pub customer: String,
    /// A usage or flag feature's slug.
    pub feature: String,
    /// Units the customer is about to use (ignored for flag features).
    pub amount: u64,
    /// For a feature priced by AI model: the request's model and tokens, with the most output
    /// it may produce (then `amount` is 0).
    pub model: Option<ModelUsage>,
}

/// Hold an estimate for variable-cost work.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReserveRequest {
    /// The customer's id.
    pub customer: String,
    /// A usage feature's slug.
    pub feature: String,
    /// Units to hold.
    pub amount: u64,
    /// The hold releases itself this long after it was made, 1..=`HOLD_TTL_MS_MAX`.
    pub ttl_ms: u64,
    /// For a feature priced by AI model: the request's model and tokens with the most output it
    /// may produce — the worst case is held (then `amount` is 0).
    pub model: Option<ModelUsage>,
}

/// Charge a hold's actual usage.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SettleRequest {
    /// The hold id that `reserve` returned.
    pub hold: u64,
    /// Units actually used; may exceed the hold and is then charged in full.
    pub actual: u64,
    /// A retry with the same key returns the first outcome and changes nothing.
    pub idempotency_key: Option<IdempotencyKey>,
    /// For a hold on a feature priced by AI model: the tokens actually used (then `actual` is 0).
    pub model: Option<ModelUsage>,
    /// For a hold opened with a model request: the answer's output tokens; the model, input and
    /// cache tokens are the hold's (then `actual` is 0 and `model` is absent).
    pub output_tokens: Option<u64>,
}

/// The output tokens an answer has streamed so far, against a hold opened with a model request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ProgressRequest {
    /// The hold id that `reserve` returned.
    pub hold: u64,
    /// Output tokens streamed so far: a running total, so a retry or a late duplicate changes
    /// nothing.
    pub output_tokens: u64,
}

/// Release a hold without charging.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReleaseRequest {
    /// The hold id that `reserve` returned.
    pub hold: u64,
}

/// A customer and a plan.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CustomerPlan {
    /// The customer's id.
    pub customer: String,
    /// A plan slug from the catalogue.
    pub plan: String,
}

/// A customer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CustomerRef {
    /// The customer's id.
    pub customer: String,
}

/// Buy credits or load dollars.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TopUpRequest {
    /// The customer's id.
    pub customer: String,
    /// Packs for a credits plan, rate units for a balance plan.
    pub amount: TopUpAmount,
    /// A retry with the same key returns the first outcome and changes nothing.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// What a top-up buys.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum TopUpAmount {
    /// Credit packs (credits plans), 1..=`TOP_UP_PACKS_MAX`.
    Packs(u32),
    /// Rate units (balance plans), 1..=`TOP_UP_UNITS_MAX`.
    Units(i64),
}

/// A time range of events.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ListEventsRequest {
    /// The customer's id.
    pub customer: String,
    /// Inclusive start, milliseconds since the Unix epoch.
    pub from_ms: u64,
    /// Within `from_ms`, the first sequence number to include (0 for all). To page, ask again
    /// with the last event's `at_ms` and `seq + 1`.
    pub from_seq: u64,
    /// Exclusive end, milliseconds since the Unix epoch.
    pub to_ms: u64,
}
