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
