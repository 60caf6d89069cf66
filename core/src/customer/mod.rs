//! One customer's live state and the rules of its plan's consumption model: what a check allows,
//! what a report charges, what a hold holds. Pure: time comes in as `now_ms`.

use std::collections::BTreeMap;
use std::sync::Arc;

use compact_str::CompactString;

use tally_protocol::message::{CloseReason, ModelUsage, ModelUsageLine, TallyError};

mod extras;
mod rules;

pub use extras::{Extras, Hold, HoldRequest, PriceSplit};
pub use rules::{hold_bound, metered_cost_between, HoldProgress};

use super::billing::{invoice_lines, BillingTerms, Invoice};
use super::catalogue::{Catalogue, FeatureKind, ModelTerms, Plan, PricesOverPeriod, UsageTerms};

/// A customer's state: everything that survives between requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    /// The customer's id (inline up to 24 bytes: no allocation of its own).
    id: CompactString,
    /// The current plan.
    plan: Arc<Plan>,
    /// Count of state changes applied so far.
    seq: u64,
    /// When the subscription to the current plan started; periods are counted from here.
    anchor_ms: u64,
    /// Start of the current period.
    period_start_ms: u64,
    /// End (exclusive) of the current period.
    period_end_ms: u64,
    /// Units used this period, one counter per usage feature of the plan in the plan's order
    /// ([`Plan::usage_slot`]): no feature names per customer. Read and written through
    /// [`Customer::counters`]: a plan with more usage features keeps its counters in `holds`.
    inline_usage: InlineCounters,
    /// Credits granted this period; spent before purchased credits.
    granted_credits: i64,
    /// Purchased credits; may go negative after plain reports.
    purchased_credits: i64,
    /// Dollar balance in rate units; may go negative after plain reports.
    balance_units: i64,
    /// Open holds by id.
    /// What few customers have: open holds, the counters of a plan with more usage features than
    /// fit inline, price changes inside the period.
    extras: Extras,
    /// Low 32 bits of the next hold id.
    next_hold: u32,
    /// Invoices issued so far (the last invoice's number).
    invoices_issued: u64,
    /// Transactions made so far (the last transaction's number). 32 bits: beside `next_hold` it
    /// fills what would be padding; a top-up past the last number is refused.
    transactions_made: u32,
}

// Most of a customer's memory is this struct (the memory target is ≤ 200 bytes per customer in
// all, docs/performance.md): growing it is a decision, not an accident.
const _: () = assert!(std::mem::size_of::<Customer>() <= 136);
const _: () = assert!(std::mem::size_of::<Extras>() == 8);

/// A customer's state as the store keeps it, to restore it: every field but the usage counters,
/// which follow the plan ([`Customer::set_used`] after [`Customer::restore`]).
#[derive(Debug)]
pub struct CustomerParts {
    /// The customer's id.
    pub id: CompactString,
    /// The plan (the version in force at the period's start).
    pub plan: Arc<Plan>,
    /// Count of state changes applied so far.
    pub seq: u64,
    /// When the subscription to the plan started.
    pub anchor_ms: u64,
    /// Start of the current period.
    pub period_start_ms: u64,
    /// End (exclusive) of the current period.
    pub period_end_ms: u64,
    /// Credits granted this period.
    pub granted_credits: i64,
    /// Purchased credits.
    pub purchased_credits: i64,
    /// Dollar balance in rate units.
    pub balance_units: i64,
    /// Open holds by id.
    pub holds: BTreeMap<u64, Hold>,
    /// Low 32 bits of the next hold id.
    pub next_hold: u32,
    /// Invoices issued so far.
    pub invoices_issued: u64,
    /// Transactions made so far.
    pub transactions_made: u32,
    /// The period's usage per model of features priced by model.
    pub model_lines: Vec<ModelUsageLine>,
    /// Rate units of the balance's last refill.
    pub last_refill_units: i64,
}

/// Counters held inline: every plan in the shipped catalogue has at most this many usage features.
const INLINE_COUNTERS: usize = 3;

/// A customer's usage counters when its plan has at most [`INLINE_COUNTERS`] usage features
/// (slots past the plan's count stay 0). Why inline: a million small boxes cost their allocator
/// overhead and, allocated among short-lived request buffers, pin partly empty pages. Why not an
/// enum of these and a boxed slice: its tag took 8 bytes of every customer (of the memory target's
/// budget) to say what the plan already says; a plan with more usage features keeps all its
/// counters in its [`Extras`] box instead, which most customers never allocate.
pub type InlineCounters = [u64; INLINE_COUNTERS];

/// How a plan treats one feature.
#[derive(Debug, Clone, Copy)]
pub enum FeatureRule {
    /// A usage feature with its terms.
    Usage(UsageTerms),
    /// A flag feature, on or off for this plan.
    Flag(bool),
}

/// Whether an amount may be used now, and what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assessment {
    /// Whether it is allowed.
    pub is_allowed: bool,
    /// What it costs: overage rate units (metered), credits, or rate units (balance).
    pub cost: i64,
    /// For a refusal: what the limit measured is (units, rate units or credits).
    pub limit_cost: i64,
    /// For a refusal: what is available of that.
    pub limit_available: i64,
}

impl Assessment {
    /// The typed refusal for a denied assessment.
    pub fn refusal(&self) -> TallyError {
        TallyError::InsufficientBalance {
            cost: self.limit_cost,
            available: self.limit_available,
        }
    }
}

impl Customer {
    /// A new customer whose first period starts at `now_ms`.
    pub fn new(id: impl Into<CompactString>, plan: Arc<Plan>, now_ms: u64) -> Customer {
        let mut customer = Customer {
            id: id.into(),
            plan: plan.clone(),
            seq: 0,
            anchor_ms: now_ms,
            period_start_ms: now_ms,
            period_end_ms: now_ms,
            inline_usage: InlineCounters::default(),
            granted_credits: 0,
            purchased_credits: 0,
            balance_units: 0,
            extras: Extras::default(),
            next_hold: 0,
            invoices_issued: 0,
            transactions_made: 0,
        };
        customer.start_plan(plan, now_ms);
        customer
    }

    /// A customer restored from its stored `parts`, with no usage counted yet.
    pub fn restore(parts: CustomerParts) -> Customer {
        let mut customer = Customer {
            id: parts.id,
            plan: parts.plan,
            seq: parts.seq,
            anchor_ms: parts.anchor_ms,
            period_start_ms: parts.period_start_ms,
            period_end_ms: parts.period_end_ms,
            inline_usage: InlineCounters::default(),
            granted_credits: parts.granted_credits,
            purchased_credits: parts.purchased_credits,
            balance_units: parts.balance_units,
            extras: Extras::with_holds(parts.holds),
            next_hold: parts.next_hold,
            invoices_issued: parts.invoices_issued,
            transactions_made: parts.transactions_made,
        };
        customer.extras.set_model_lines(parts.model_lines);
        customer
            .extras
            .set_last_refill_units(parts.last_refill_units);
        customer.reset_counters();
        customer
    }

    /// The customer's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current plan (the version of its prices in force).
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// Count of state changes applied so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// When the subscription to the current plan started.
    pub fn anchor_ms(&self) -> u64 {
        self.anchor_ms
    }

    /// Start of the current period.
    pub fn period_start_ms(&self) -> u64 {
        self.period_start_ms
    }

    /// End (exclusive) of the current period.
    pub fn period_end_ms(&self) -> u64 {
        self.period_end_ms
    }

    /// Credits granted this period.
    pub fn granted_credits(&self) -> i64 {
        self.granted_credits
    }

    /// Purchased credits (may be negative after plain reports).
    pub fn purchased_credits(&self) -> i64 {
        self.purchased_credits
    }

    /// Dollar balance in rate units (may be negative after plain reports).
    pub fn balance_units(&self) -> i64 {
        self.balance_units
    }

    /// Open holds by id.
    pub fn holds(&self) -> &BTreeMap<u64, Hold> {
        self.extras.holds()
    }

    /// Rate units of the balance's last refill (a top-up); 0 before any.
    pub fn last_refill_units(&self) -> i64 {
        self.extras.last_refill_units()
    }

    /// Credits the plan grants each period (0 unless a credits plan).
    pub fn plan_credits(&self) -> i64 {
        match self.plan.terms {
            ModelTerms::Credits { grant_credits, .. } => grant_credits,
            _ => 0,
        }
    }

    /// The period's usage per model of the features priced by model, sorted.
    pub fn model_lines(&self) -> &[ModelUsageLine] {
        self.extras.model_lines()
    }

    /// Counts one request of `usage` on `feature` in the period's model lines.
    pub fn add_model_usage(
        &mut self,
        feature: &str,
        usage: &ModelUsage,
        cost_units: u64,
        charged: i64,
    ) {
        self.extras
            .add_model_usage(feature, usage, cost_units, charged);
    }

    /// Low 32 bits of the next hold id.
    pub fn next_hold(&self) -> u32 {
        self.next_hold
    }

    /// Invoices issued so far.
    pub fn invoices_issued(&self) -> u64 {
        self.invoices_issued
    }

    /// Transactions made so far.
    pub fn transactions_made(&self) -> u32 {
        self.transactions_made
    }

    /// For tests of the last transaction number.
    #[cfg(test)]
    pub(crate) fn set_transactions_made(&mut self, made: u32) {
        self.transactions_made = made;
    }

    /// Starts `plan` afresh at `now_ms`: new period, usage and holds cleared, the plan's credit
    /// grant. Purchased credits and the balance are kept (they are the customer's money).
    /// Returns the ids of the holds dropped.
    pub fn start_plan(&mut self, plan: Arc<Plan>, now_ms: u64) -> Vec<u64> {
        self.grant_credits_of(&plan);
        self.anchor_ms = now_ms;
        self.period_start_ms = now_ms;
        self.period_end_ms = plan.period.end_containing(now_ms, now_ms);
        self.plan = plan;
        self.reset_counters();
        self.extras.set_splits(Vec::new());
        let dropped = self.extras.holds().keys().copied().collect();
        self.extras.clear_holds();
        self.seq += 1;
        dropped
    }

    /// Closes the current period at `end_ms` (`closed_at_ms` for a scheduled close is the
    /// moment it was noticed) and returns its invoice. Usage resets, the period's credit grant
    /// renews, credits or balance below zero are invoiced and reset to zero; purchased credits
    /// and balance carry over. The next period follows from the anchor (scheduled), starts at
    /// `end_ms` with a new anchor (manual), or is the caller's to start (plan change).
    pub fn close_period(
        &mut self,
        end_ms: u64,
        closed_at_ms: u64,
        reason: CloseReason,
        terms: &BillingTerms,
    ) -> Invoice {
        assert!(
            end_ms >= self.period_start_ms,
            "a period ends after it starts"
        );
        let base_share = (reason == CloseReason::PlanChange).then(|| {
            (
                end_ms - self.period_start_ms,
                self.period_end_ms - self.period_start_ms,
            )
        });
        let lines = invoice_lines(self, base_share);
        let settlement = terms.settle(lines.iter().map(|l| l.amount_units).sum());
        self.invoices_issued += 1;
        let invoice = Invoice {
            customer: self.id.to_string(),
            number: self.invoices_issued,
            plan: self.plan.slug.clone(),
            model: self.plan.model(),
            period_start_ms: self.period_start_ms,
            period_end_ms: end_ms,
            closed_at_ms,
            reason,
            lines,
            models: self.extras.take_model_lines(),
            total_units: settlement.total_units,
            fee_units: settlement.fee_units,
            net_units: settlement.net_units,
        };
        self.counters_mut().fill(0);
        self.extras.set_splits(Vec::new());
        match self.plan.terms {
            ModelTerms::Credits { .. } => self.purchased_credits = self.purchased_credits.max(0),
            ModelTerms::Balance { .. } => self.balance_units = self.balance_units.max(0),
            ModelTerms::Metered { .. } => {}
        }
        let plan = self.plan.clone();
        self.grant_credits_of(&plan);
        match reason {
            CloseReason::Scheduled => {
                self.period_start_ms = end_ms;
                self.period_end_ms = plan.period.end_containing(self.anchor_ms, end_ms);
            }
            CloseReason::Manual => {
                self.anchor_ms = end_ms;
                self.period_start_ms = end_ms;
                self.period_end_ms = plan.period.end_containing(end_ms, end_ms);
            }
            CloseReason::PlanChange => {}
        }
        self.seq += 1;
        invoice
    }

    fn grant_credits_of(&mut self, plan: &Plan) {
        self.granted_credits = match plan.terms {
            ModelTerms::Credits { grant_credits, .. } => grant_credits,
            _ => 0,
        };
    }

    /// How the customer's plan treats `feature`.
    pub fn rule(&self, catalogue: &Catalogue, feature: &str) -> Result<FeatureRule, TallyError> {
        match catalogue.feature(feature) {
            None => Err(TallyError::UnknownFeature {
                feature: feature.into(),
            }),
            Some(FeatureKind::Flag) => Ok(FeatureRule::Flag(self.plan.flags.contains(feature))),
            Some(FeatureKind::Usage) => self
                .plan
                .usage
                .get(feature)
                .copied()
                .map(FeatureRule::Usage)
                .ok_or_else(|| TallyError::FeatureNotInPlan {
                    feature: feature.into(),
                    plan: self.plan.slug.clone(),
                }),
        }
    }

    /// Like [`Customer::rule`] but refuses flag features, for operations that take usage.
    pub fn usage_terms(
        &self,
        catalogue: &Catalogue,
        feature: &str,
    ) -> Result<UsageTerms, TallyError> {
        match self.rule(catalogue, feature)? {
            FeatureRule::Usage(terms) => Ok(terms),
            FeatureRule::Flag(_) => Err(TallyError::NotAUsageFeature {
                feature: feature.into(),
            }),
        }
    }

    /// The usage counters, indexed by the plan's usage slots ([`Plan::usage_slot`]).
    pub fn counters(&self) -> &[u64] {
        self.extras.wide_counters().unwrap_or(&self.inline_usage)
    }

    fn counters_mut(&mut self) -> &mut [u64] {
        match self.extras.wide_counters_mut() {
            Some(counters) => counters,
            None => &mut self.inline_usage,
        }
    }

    /// Zeroes the counters, sized for the current plan: inline if they fit, else in the holds'
    /// box (a plan change may move them either way).
    pub fn reset_counters(&mut self) {
        self.inline_usage = InlineCounters::default();
        let count = self.plan.usage.len();
        self.extras.set_wide_counters(if count > INLINE_COUNTERS {
            vec![0; count].into_boxed_slice()
        } else {
            Box::default()
        });
    }

    /// Units of `feature` used this period (0 for a feature not in the plan).
    pub fn used(&self, feature: &str) -> u64 {
        self.plan
            .usage_slot(feature)
            .map_or(0, |slot| self.counters()[slot])
    }

    /// Units used this period, by usage feature of the plan.
    pub fn usage(&self) -> impl Iterator<Item = (&str, u64)> {
        self.plan
            .usage
            .keys()
            .map(String::as_str)
            .zip(self.counters().iter().copied())
    }

    /// A new hold id: `placement` as its high half, and the next low half not `is_taken`.
    pub fn new_hold_id(&mut self, placement: u64, is_taken: impl Fn(u64) -> bool) -> u64 {
        loop {
            let candidate = placement | u64::from(self.next_hold);
            self.next_hold = self.next_hold.wrapping_add(1);
            if !is_taken(candidate) {
                return candidate;
            }
        }
    }

    /// Closes hold `id` by charging `actual` units of its feature — a state change whether or
    /// not anything is charged. Returns the hold, its feature's terms, and what was charged.
    pub fn settle_hold(
        &mut self,
        catalogue: &Catalogue,
        id: u64,
        actual: u64,
    ) -> Result<(Hold, UsageTerms, i64), TallyError> {
        let hold = self
            .extras
            .remove_hold(id)
            .ok_or(TallyError::UnknownHold { hold: id })?;
        let terms = self
            .usage_terms(catalogue, &hold.feature)
            .expect("plan changes drop holds, so a hold's feature is in the plan");
        let charged = if actual > 0 {
            self.record(&hold.feature, terms, actual)
        } else {
            self.seq += 1;
            0
        };
        Ok((hold, terms, charged))
    }

    /// Releases hold `id` without charging.
    pub fn release_hold(&mut self, id: u64) -> Result<Hold, TallyError> {
        let hold = self
            .extras
            .remove_hold(id)
            .ok_or(TallyError::UnknownHold { hold: id })?;
        self.seq += 1;
        Ok(hold)
    }

    /// A purchase or top-up that adds `credits` and `balance_units`; returns the transaction's
    /// number, or `None` — and nothing changes — past the last number a customer can have.
    pub fn top_up(&mut self, credits: i64, balance_units: i64) -> Option<u32> {
        let number = self.transactions_made.checked_add(1)?;
        self.purchased_credits += credits;
        self.balance_units += balance_units;
        if balance_units > 0 {
            self.extras.set_last_refill_units(balance_units);
        }
        self.transactions_made = number;
        self.seq += 1;
        Some(number)
    }

    /// After a close: prices the new period by the versions in force over it — usually the
    /// latest, but one recorded `next_period` after the period started waits, and one recorded
    /// `now` inside it (the daemon was down across the period's end) splits it where it took
    /// effect.
    pub fn enter_period_prices(&mut self, catalogue: &Catalogue) {
        let slug = self.plan.slug.clone();
        let Some(prices) =
            catalogue.prices_over_period(&slug, self.period_start_ms, self.period_end_ms)
        else {
            return;
        };
        let period_changed = prices.first.period != self.plan.period;
        self.enter_prices(prices, |_| None);
        if period_changed {
            self.period_end_ms = self
                .plan
                .period
                .end_containing(self.anchor_ms, self.period_start_ms);
        }
    }

    /// The price changes that took effect inside the current period, oldest first.
    pub fn price_splits(&self) -> &[PriceSplit] {
        self.extras.splits()
    }

    /// Prices the current period as `prices` says: the customer moves to the last version, and
    /// each change inside the period becomes a split holding the usage before it —
    /// `usage_at(since_ms)` if known (recorded when the change took effect), else none (no
    /// usage can have been recorded in the period before a change it was closed after).
    pub fn enter_prices(
        &mut self,
        prices: PricesOverPeriod,
        mut usage_at: impl FnMut(u64) -> Option<Vec<(String, u64)>>,
    ) {
        let mut before = prices.first;
        let mut splits = Vec::with_capacity(prices.changes.len());
        for (at_ms, after) in prices.changes {
            splits.push(PriceSplit {
                plan: std::mem::replace(&mut before, after),
                at_ms,
                usage: usage_at(at_ms).unwrap_or_default(),
            });
        }
        self.adopt_prices(before);
        self.extras.set_splits(splits);
    }

    /// Moves to another version of the same plan's prices, keeping the period and its usage.
    fn adopt_prices(&mut self, plan: Arc<Plan>) {
        if Arc::ptr_eq(&plan, &self.plan) {
            return;
        }
        let usage: Vec<(String, u64)> = self
            .usage()
            .map(|(feature, units)| (feature.to_string(), units))
            .collect();
        self.plan = plan;
        self.reset_counters();
        for (feature, units) in usage {
            self.set_used(&feature, units);
        }
    }
}

/// The shipped catalogue and a plan `wide` with five metered usage features (more than fit
/// inline).
#[cfg(test)]
pub(crate) fn catalogue_with_a_wide_plan() -> Arc<Catalogue> {
    let toml = format!(
        "{}\n{}",
        crate::shipped::CONFIG_TOML,
        include_str!("../../testdata/wide_plan.toml")
    );
    crate::shipped::catalogue_of(&toml)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans() -> (Arc<Plan>, Arc<Plan>) {
        let catalogue = catalogue_with_a_wide_plan();
        let plan = |slug| catalogue.plan(slug).unwrap().clone();
        (plan("pro"), plan("wide"))
    }

    #[test]
    fn counters_live_inline_for_few_features_and_in_the_extras_for_many() {
        let (pro, wide) = plans();
        let mut customer = Customer::new("acme", pro.clone(), 0);
        assert_eq!(customer.counters(), [0; INLINE_COUNTERS]);
        assert!(!customer.extras.is_boxed(), "no box for a few-feature plan");

        customer.start_plan(wide.clone(), 1);
        assert_eq!(customer.counters().len(), 5);
        let terms = customer.plan.usage["embeddings"];
        customer.record("embeddings", terms, 7);
        assert_eq!(customer.used("embeddings"), 7);
        assert_eq!(customer.inline_usage, [0; INLINE_COUNTERS]);
        let hold = Hold {
            feature: "tokens".into(),
            amount: 1,
            held: 1,
            expires_at_ms: 10,
            request: None,
        };
        customer.extras.insert_hold(1, hold.clone());
        assert_eq!(customer.extras.remove_hold(1), Some(hold.clone()));
        customer.extras.insert_hold(2, hold);
        customer.extras.clear_holds();
        assert!(customer.holds().is_empty());
        assert_eq!(
            customer.used("embeddings"),
            7,
            "the counters outlive the holds"
        );
        assert!(customer
            .usage()
            .any(|(feature, units)| feature == "embeddings" && units == 7));

        customer.close_period(
            customer.period_end_ms,
            customer.period_end_ms,
            CloseReason::Scheduled,
            &BillingTerms::default(),
        );
        assert_eq!(customer.counters(), [0; 5]);

        customer.start_plan(pro, 2);
        customer.record("tokens", customer.plan.usage["tokens"], 3);
        assert_eq!(customer.counters(), [3, 0, 0]);
        assert!(!customer.extras.is_boxed(), "the box goes with the plan");
    }

    #[test]
    fn the_extras_box_goes_when_its_last_hold_goes() {
        let mut extras = Extras::default();
        let hold = |amount| Hold {
            feature: "tokens".into(),
            amount,
            held: amount as i64,
            expires_at_ms: 10,
            request: None,
        };
        assert!(extras.insert_hold(2, hold(5)).is_none());
        assert!(extras.insert_hold(1, hold(3)).is_none());
        assert_eq!(extras.holds().keys().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(extras.remove_hold(1).map(|h| h.amount), Some(3));
        assert_eq!(extras.holds().len(), 1);
        assert_eq!(extras.remove_hold(2).map(|h| h.amount), Some(5));
        assert!(extras.holds().is_empty());
        assert!(!extras.is_boxed());
        assert!(extras.remove_hold(2).is_none());
    }
}
