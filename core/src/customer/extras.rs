//! What few customers have, in one box behind one pointer: open holds, the usage counters of a
//! plan with more usage features than fit inline, and the price changes inside the current
//! period. Most customers have none of them, so they cost 8 bytes (a null pointer) instead of an
//! empty map's three words, a slice's two and a vector's three — a million customers' worth.

use std::collections::BTreeMap;
use std::sync::Arc;

use tally_protocol::message::{ModelUsage, ModelUsageLine};

use crate::catalogue::Plan;
use crate::models::ModelPrice;

/// The rarely used parts of a customer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extras(Option<Box<ExtraParts>>);

/// What [`Extras`] boxes; never all empty.
#[derive(Debug, Clone, Default, PartialEq)]
struct ExtraParts {
    holds: BTreeMap<u64, Hold>,
    /// The counters of a plan with more usage features than fit inline ("wide"); empty
    /// otherwise.
    wide_counters: Box<[u64]>,
    /// Price changes that took effect inside the current period, oldest first.
    splits: Vec<PriceSplit>,
    /// The period's usage per (feature, model) of features priced by model, sorted.
    model_lines: Vec<ModelUsageLine>,
    /// Rate units of the balance's last refill (what `balance.low` is a tenth of).
    last_refill_units: i64,
}

/// No open hold (what [`Extras::holds`] lends when there is no box).
static NO_HOLDS: BTreeMap<u64, Hold> = BTreeMap::new();

/// An open reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The usage feature held for.
    pub feature: String,
    /// Units held.
    pub amount: u64,
    /// What is held: units (metered), credits (credits) or rate units (balance).
    pub held: i64,
    /// When it releases itself.
    pub expires_at_ms: u64,
    /// The model request it was opened for (a feature priced by model), if any.
    pub request: Option<Box<HoldRequest>>,
}

/// A hold's model request: what settling it with output tokens alone, streaming progress and
/// expiry price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    /// The model, input and cache tokens; `output_tokens` is the output the hold covers now.
    pub usage: ModelUsage,
    /// The model's prices when the hold was opened: the whole request is priced at them.
    pub price: ModelPrice,
    /// The running total of output tokens reported by `progress`, if any was.
    pub reported_output: Option<u64>,
}

impl HoldRequest {
    /// The request with `output_tokens` of output.
    pub fn with_output(&self, output_tokens: u64) -> ModelUsage {
        ModelUsage {
            output_tokens,
            ..self.usage.clone()
        }
    }

    /// What the request costs with `output_tokens` of output, in cost units (`None` past
    /// the largest amount).
    pub fn cost_with_output(&self, output_tokens: u64) -> Option<u64> {
        self.price.cost(&self.with_output(output_tokens))
    }
}

/// A price change inside a period: the usage before it, and the prices it was used at.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceSplit {
    /// The plan's prices before the change.
    pub plan: Arc<Plan>,
    /// When the change took effect.
    pub at_ms: u64,
    /// Units of each usage feature used in the period before it (cumulative).
    pub usage: Vec<(String, u64)>,
}

impl PriceSplit {
    /// Units of `feature` used before the change.
    pub fn used(&self, feature: &str) -> u64 {
        self.usage
            .iter()
            .find(|(f, _)| f == feature)
            .map_or(0, |(_, units)| *units)
    }
}

impl Extras {
    /// With `holds` open and nothing else.
    pub fn with_holds(holds: BTreeMap<u64, Hold>) -> Self {
        Extras((!holds.is_empty()).then(|| {
            Box::new(ExtraParts {
                holds,
                ..ExtraParts::default()
            })
        }))
    }

    /// The open holds by id.
    pub fn holds(&self) -> &BTreeMap<u64, Hold> {
        self.0.as_ref().map_or(&NO_HOLDS, |parts| &parts.holds)
    }

    /// Opens `hold` as `id`; returns a hold it replaced.
    pub fn insert_hold(&mut self, id: u64, hold: Hold) -> Option<Hold> {
        self.0.get_or_insert_default().holds.insert(id, hold)
    }

    /// The hold `id`, to change.
    pub fn hold_mut(&mut self, id: u64) -> Option<&mut Hold> {
        self.0.as_mut()?.holds.get_mut(&id)
    }

    /// Removes the hold `id`.
    pub fn remove_hold(&mut self, id: u64) -> Option<Hold> {
        let removed = self.0.as_mut()?.holds.remove(&id);
        self.drop_box_if_empty();
        removed
    }

    /// Drops every hold.
    pub fn clear_holds(&mut self) {
        if let Some(parts) = self.0.as_mut() {
            parts.holds.clear();
        }
        self.drop_box_if_empty();
    }

    /// A wide plan's counters, if it is on one.
    pub fn wide_counters(&self) -> Option<&[u64]> {
        self.0
            .as_deref()
            .map(|parts| &*parts.wide_counters)
            .filter(|counters| !counters.is_empty())
    }

    /// A wide plan's counters, to change.
    pub fn wide_counters_mut(&mut self) -> Option<&mut [u64]> {
        self.0
            .as_deref_mut()
            .map(|parts| &mut *parts.wide_counters)
            .filter(|counters| !counters.is_empty())
    }

    /// Keeps `counters` (a wide plan's), or none (an empty slice).
    pub fn set_wide_counters(&mut self, counters: Box<[u64]>) {
        if counters.is_empty() && self.0.is_none() {
            return;
        }
        self.0.get_or_insert_default().wide_counters = counters;
        self.drop_box_if_empty();
    }

    /// The price changes inside the current period, oldest first.
    pub fn splits(&self) -> &[PriceSplit] {
        self.0.as_deref().map_or(&[], |parts| &parts.splits)
    }

    /// Replaces the price changes of the current period.
    pub fn set_splits(&mut self, splits: Vec<PriceSplit>) {
        if splits.is_empty() && self.0.is_none() {
            return;
        }
        self.0.get_or_insert_default().splits = splits;
        self.drop_box_if_empty();
    }

    /// The period's usage per model of the features priced by model.
    pub fn model_lines(&self) -> &[ModelUsageLine] {
        self.0.as_deref().map_or(&[], |parts| &parts.model_lines)
    }

    /// Adds one request of `usage` on `feature`, which cost `cost_units` and was charged
    /// `charged`, to the period's lines.
    pub fn add_model_usage(
        &mut self,
        feature: &str,
        usage: &ModelUsage,
        cost_units: u64,
        charged: i64,
    ) {
        let lines = &mut self.0.get_or_insert_default().model_lines;
        crate::models::add_to_lines(lines, feature, usage, cost_units, charged);
    }

    /// Replaces the period's model lines (restoring stored state).
    pub fn set_model_lines(&mut self, lines: Vec<ModelUsageLine>) {
        if lines.is_empty() && self.0.is_none() {
            return;
        }
        self.0.get_or_insert_default().model_lines = lines;
        self.drop_box_if_empty();
    }

    /// The period's model lines, leaving none (a period closes).
    pub fn take_model_lines(&mut self) -> Vec<ModelUsageLine> {
        let lines = self
            .0
            .as_mut()
            .map(|parts| std::mem::take(&mut parts.model_lines))
            .unwrap_or_default();
        self.drop_box_if_empty();
        lines
    }

    /// Rate units of the balance's last refill; 0 before any.
    pub fn last_refill_units(&self) -> i64 {
        self.0.as_deref().map_or(0, |parts| parts.last_refill_units)
    }

    /// Notes a refill of `units`.
    pub fn set_last_refill_units(&mut self, units: i64) {
        if units == 0 && self.0.is_none() {
            return;
        }
        self.0.get_or_insert_default().last_refill_units = units;
        self.drop_box_if_empty();
    }

    fn drop_box_if_empty(&mut self) {
        if self.0.as_ref().is_some_and(|parts| {
            parts.holds.is_empty()
                && parts.wide_counters.is_empty()
                && parts.splits.is_empty()
                && parts.model_lines.is_empty()
                && parts.last_refill_units == 0
        }) {
            self.0 = None;
        }
    }

    /// Whether the box is allocated.
    #[cfg(test)]
    pub(crate) fn is_boxed(&self) -> bool {
        self.0.is_some()
    }
}
