//! Typed rejections.

use rkyv::{Archive, Deserialize, Serialize};

use super::*;

/// Typed rejections. Each one means nothing was changed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TallyError {
    /// No customer has this id.
    #[error("unknown customer `{customer}`")]
    UnknownCustomer {
        /// The id asked for.
        customer: String,
    },
    /// `create_customer` with an id that exists.
    #[error("customer `{customer}` already exists")]
    CustomerExists {
        /// The id asked for.
        customer: String,
    },
    /// No plan has this slug.
    #[error("unknown plan `{plan}`")]
    UnknownPlan {
        /// The slug asked for.
        plan: String,
    },
    /// No feature in the catalogue has this slug.
    #[error("unknown feature `{feature}`")]
    UnknownFeature {
        /// The slug asked for.
        feature: String,
    },
    /// The feature exists but the customer's plan does not have it.
    #[error("feature `{feature}` is not in plan `{plan}`")]
    FeatureNotInPlan {
        /// The feature's slug.
        feature: String,
        /// The customer's plan.
        plan: String,
    },
    /// No model in the catalogue has this name.
    #[error("unknown model `{model}`")]
    UnknownModel {
        /// The name asked for.
        model: String,
    },
    /// The model exists, but the plan's feature does not accept it.
    #[error("model `{model}` is not accepted by feature `{feature}` of plan `{plan}`")]
    ModelNotInPlan {
        /// The model.
        model: String,
        /// The feature.
        feature: String,
        /// The customer's plan.
        plan: String,
    },
    /// Usage was reported or reserved on a flag feature.
    #[error("feature `{feature}` is a flag feature; only usage features take usage")]
    NotAUsageFeature {
        /// The feature's slug.
        feature: String,
    },
    /// No open hold has this id (never made, settled, released or expired).
    #[error("hold {hold:016x} is not open (unknown, settled, released or expired)")]
    UnknownHold {
        /// The hold id asked for.
        hold: u64,
    },
    /// Not allowed: included units, credits or balance would be exceeded.
    #[error("insufficient balance: the request costs {cost}, {available} is available")]
    InsufficientBalance {
        /// What the request costs (units, credits or rate units by model).
        cost: i64,
        /// What is available (same unit).
        available: i64,
    },
    /// The key is missing, wrong, or the stream has not said `Hello` yet.
    #[error("unauthorized: {reason}")]
    Unauthorized {
        /// Why.
        reason: String,
    },
    /// The key's role may not do this.
    #[error("forbidden: a {role:?} key may not call {operation}")]
    Forbidden {
        /// The key's role.
        role: Role,
        /// The operation refused.
        operation: String,
    },
    /// The shard that owns the customer is saturated; retry later with backoff.
    #[error("overloaded: the shard's mailbox is full; retry with backoff")]
    Overloaded,
    /// The request breaks a rule of the protocol (bad size, bad field, malformed frame).
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// Why, with the value and the limit.
        reason: String,
    },
    /// The daemon does not implement this operation yet.
    #[error("unsupported: {operation} is not implemented by this daemon yet")]
    Unsupported {
        /// The operation.
        operation: String,
    },
    /// Client and daemon speak different protocol versions.
    #[error("protocol version mismatch: the daemon speaks {server}, the client {client}")]
    VersionMismatch {
        /// The daemon's version.
        server: u32,
        /// The client's version.
        client: u32,
    },
    /// The idempotency key was already used for a different request.
    #[error("conflict: {reason}")]
    Conflict {
        /// Why.
        reason: String,
    },
    /// The daemon failed to do something it should have; the request was not applied.
    #[error("internal error: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
    /// The daemon is shutting down: requests already read were answered; reconnect (to it after
    /// its restart, or to another daemon).
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// No webhook endpoint has this id.
    #[error("unknown webhook endpoint `{id}`")]
    UnknownWebhook {
        /// The id asked for.
        id: String,
    },
}
