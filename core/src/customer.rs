//! One customer's live state and the rules of its plan's consumption model: what a check allows,
//! what a report charges, what a hold holds. Pure: time comes in as `now_ms`.

use std::collections::BTreeMap;
use std::sync::Arc;

use compact_str::CompactString;

use tally_protocol::message::{
    CloseReason, CustomerView, FeatureUsage, HoldView, Standing, TallyError,
};

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
    holds: Holds,
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
const _: () = assert!(std::mem::size_of::<Holds>() == 8);

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
    pub holds: Holds,
    /// Low 32 bits of the next hold id.
    pub next_hold: u32,
    /// Invoices issued so far.
    pub invoices_issued: u64,
    /// Transactions made so far.
    pub transactions_made: u32,
}

/// Counters held inline: every plan in the shipped catalogue has at most this many usage features.
const INLINE_COUNTERS: usize = 3;

/// A customer's usage counters when its plan has at most [`INLINE_COUNTERS`] usage features
/// (slots past the plan's count stay 0). Why inline: a million small boxes cost their allocator
/// overhead and, allocated among short-lived request buffers, pin partly empty pages. Why not an
/// enum of these and a boxed slice: its tag took 8 bytes of every customer (of the memory target's
/// budget) to say what the plan already says; a plan with more usage features keeps all its
/// counters in the [`Holds`] box instead, which most customers never allocate.
pub type InlineCounters = [u64; INLINE_COUNTERS];

/// A customer's open holds by id and, in the same box, the usage counters of a plan with more
/// than [`INLINE_COUNTERS`] usage features. Most customers have neither, so both cost one null
/// pointer rather than an empty map's three words and a slice's two (a million customers' worth).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holds(Option<Box<Spare>>);

/// What [`Holds`] boxes; never all empty.
#[derive(Debug, Clone, Default, PartialEq)]
struct Spare {
    holds: BTreeMap<u64, Hold>,
    /// A many-feature plan's counters; empty for a plan whose counters fit inline.
    counters: Box<[u64]>,
    /// Price changes that took effect inside the current period (rare: most customers never
    /// have one, so they live in this box too).
    splits: Vec<PriceSplit>,
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

impl Holds {
    /// How many are open.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |spare| spare.holds.len())
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|spare| spare.holds.is_empty())
    }

    /// The hold `id`.
    pub fn get(&self, id: u64) -> Option<&Hold> {
        self.0.as_ref()?.holds.get(&id)
    }

    /// Opens `hold` as `id`; returns a hold it replaced.
    pub fn insert(&mut self, id: u64, hold: Hold) -> Option<Hold> {
        self.0.get_or_insert_default().holds.insert(id, hold)
    }

    /// Removes the hold `id`.
    pub fn remove(&mut self, id: u64) -> Option<Hold> {
        let removed = self.0.as_mut()?.holds.remove(&id);
        self.drop_box_if_empty();
        removed
    }

    /// Drops every hold (a many-feature plan's counters stay).
    pub fn clear(&mut self) {
        if let Some(spare) = self.0.as_mut() {
            spare.holds.clear();
        }
        self.drop_box_if_empty();
    }

    /// The open holds by id, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Hold)> {
        self.0
            .iter()
            .flat_map(|spare| spare.holds.iter().map(|(&id, hold)| (id, hold)))
    }

    /// The open holds, in id order.
    pub fn values(&self) -> impl Iterator<Item = &Hold> {
        self.iter().map(|(_, hold)| hold)
    }

    /// A many-feature plan's counters, if they live here.
    fn counters(&self) -> Option<&[u64]> {
        self.0
            .as_deref()
            .map(|spare| &*spare.counters)
            .filter(|counters| !counters.is_empty())
    }

    fn counters_mut(&mut self) -> Option<&mut [u64]> {
        self.0
            .as_deref_mut()
            .map(|spare| &mut *spare.counters)
            .filter(|counters| !counters.is_empty())
    }

    /// Keeps `counters` here (a plan with more usage features than fit inline), or none (an
    /// empty slice).
    fn set_counters(&mut self, counters: Box<[u64]>) {
        if counters.is_empty() && self.0.is_none() {
            return;
        }
        self.0.get_or_insert_default().counters = counters;
        self.drop_box_if_empty();
    }

    /// The price changes inside the current period, oldest first.
    fn splits(&self) -> &[PriceSplit] {
        self.0.as_deref().map_or(&[], |spare| &spare.splits)
    }

    fn set_splits(&mut self, splits: Vec<PriceSplit>) {
        if splits.is_empty() && self.0.is_none() {
            return;
        }
        self.0.get_or_insert_default().splits = splits;
        self.drop_box_if_empty();
    }

    fn drop_box_if_empty(&mut self) {
        if self.0.as_ref().is_some_and(|spare| {
            spare.holds.is_empty() && spare.counters.is_empty() && spare.splits.is_empty()
        }) {
            self.0 = None;
        }
    }
}

impl FromIterator<(u64, Hold)> for Holds {
    fn from_iter<I: IntoIterator<Item = (u64, Hold)>>(iter: I) -> Self {
        let holds: BTreeMap<u64, Hold> = iter.into_iter().collect();
        Holds((!holds.is_empty()).then(|| {
            Box::new(Spare {
                holds,
                ..Spare::default()
            })
        }))
    }
}

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
}

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
            holds: Holds::default(),
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
            holds: parts.holds,
            next_hold: parts.next_hold,
            invoices_issued: parts.invoices_issued,
            transactions_made: parts.transactions_made,
        };
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
    pub fn holds(&self) -> &Holds {
        &self.holds
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
        self.holds.set_splits(Vec::new());
        let dropped = self.holds.iter().map(|(id, _)| id).collect();
        self.holds.clear();
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
            total_units: settlement.total_units,
            fee_units: settlement.fee_units,
            net_units: settlement.net_units,
        };
        self.counters_mut().fill(0);
        self.holds.set_splits(Vec::new());
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
        self.holds.counters().unwrap_or(&self.inline_usage)
    }

    fn counters_mut(&mut self) -> &mut [u64] {
        match self.holds.counters_mut() {
            Some(counters) => counters,
            None => &mut self.inline_usage,
        }
    }

    /// Zeroes the counters, sized for the current plan: inline if they fit, else in the holds'
    /// box (a plan change may move them either way).
    pub fn reset_counters(&mut self) {
        self.inline_usage = InlineCounters::default();
        let count = self.plan.usage.len();
        self.holds.set_counters(if count > INLINE_COUNTERS {
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
            .holds
            .remove(id)
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
            .holds
            .remove(id)
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
        self.holds.splits()
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
        self.holds.set_splits(splits);
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

    /// What `units` of metered `feature` cost in overage this period, each unit at the price in
    /// force when it was used (the splits' prices, then the current one).
    fn overage_cost_to(&self, feature: &str, units: u64) -> i64 {
        let mut cost = 0;
        let mut from = 0;
        for split in self.price_splits() {
            let to = split.used(feature).max(from).min(units.max(from));
            cost += metered_cost_between(split.plan.usage.get(feature), from, to);
            from = to;
        }
        cost + metered_cost_between(self.plan.usage.get(feature), from, units.max(from))
    }

    /// Sets the units of `feature` used this period (restoring stored state); `false` if the
    /// plan has no such usage feature.
    pub fn set_used(&mut self, feature: &str, units: u64) -> bool {
        match self.plan.usage_slot(feature) {
            Some(slot) => {
                self.counters_mut()[slot] = units;
                true
            }
            None => false,
        }
    }

    fn held_amount(&self, feature: &str) -> u64 {
        self.holds
            .values()
            .filter(|h| h.feature == feature)
            .map(|h| h.amount)
            .sum()
    }

    fn held_total(&self) -> i64 {
        self.holds.values().map(|h| h.held).sum()
    }

    fn available_credits(&self) -> i64 {
        self.granted_credits + self.purchased_credits - self.held_total()
    }

    /// Overage cost so far across every metered feature, counting held units as used.
    fn overage_cost_with_holds(&self) -> i64 {
        self.plan
            .usage
            .iter()
            .map(|(feature, terms)| match terms {
                UsageTerms::Metered {
                    overage: Some(_), ..
                } => self.overage_cost_to(feature, self.used(feature) + self.held_amount(feature)),
                _ => 0,
            })
            .sum()
    }

    /// Whether `amount` more of `feature` may be used now, counting open holds as used.
    pub fn assess(&self, feature: &str, terms: UsageTerms, amount: u64) -> Assessment {
        if amount == 0 {
            // Nothing costs nothing, even to a customer in debt.
            return allowed(0);
        }
        match terms {
            UsageTerms::Metered { included, overage } => {
                let committed = self.used(feature) + self.held_amount(feature);
                let within = committed + amount <= included;
                let cost = overage.map_or(0, |price| {
                    let over = |u: u64| u.saturating_sub(included);
                    price.cost(over(committed + amount)) - price.cost(over(committed))
                });
                let ModelTerms::Metered { spending_cap_units } = self.plan.terms else {
                    unreachable!("metered terms only exist in metered plans")
                };
                match (within, overage, spending_cap_units) {
                    (true, _, _) | (false, Some(_), None) => allowed(cost),
                    (false, Some(_), Some(cap)) => {
                        let spent = self.overage_cost_with_holds();
                        Assessment {
                            is_allowed: spent + cost <= cap,
                            cost,
                            limit_cost: cost,
                            limit_available: cap - spent,
                        }
                    }
                    (false, None, _) => Assessment {
                        is_allowed: false,
                        cost,
                        limit_cost: amount as i64,
                        limit_available: included.saturating_sub(committed) as i64,
                    },
                }
            }
            UsageTerms::Credits { credits_per_unit } => {
                let cost = amount as i64 * credits_per_unit;
                let available = self.available_credits();
                Assessment {
                    is_allowed: available >= cost,
                    cost,
                    limit_cost: cost,
                    limit_available: available,
                }
            }
            UsageTerms::Balance { price } => {
                let cost = price.cost_of_increase(self.used(feature), amount);
                let ModelTerms::Balance { overdraft_units } = self.plan.terms else {
                    unreachable!("balance terms only exist in balance plans")
                };
                let available = self.balance_units - self.held_total();
                Assessment {
                    is_allowed: available - cost >= -overdraft_units,
                    cost,
                    limit_cost: cost,
                    limit_available: available + overdraft_units,
                }
            }
        }
    }

    /// Records `amount` of `feature` unconditionally (the work has happened) and returns what it
    /// cost. Credits are taken from the period's grant first; credits and balance may go negative.
    pub fn record(&mut self, feature: &str, terms: UsageTerms, amount: u64) -> i64 {
        let slot = self
            .plan
            .usage_slot(feature)
            .expect("usage terms come from the customer's plan");
        let used = self.counters()[slot];
        let charged = match terms {
            UsageTerms::Metered { included, overage } => overage.map_or(0, |price| {
                let over = |u: u64| u.saturating_sub(included);
                price.cost(over(used + amount)) - price.cost(over(used))
            }),
            UsageTerms::Credits { credits_per_unit } => {
                let cost = amount as i64 * credits_per_unit;
                let from_grant = cost.min(self.granted_credits.max(0));
                self.granted_credits -= from_grant;
                self.purchased_credits -= cost - from_grant;
                cost
            }
            UsageTerms::Balance { price } => {
                let cost = price.cost_of_increase(used, amount);
                self.balance_units -= cost;
                cost
            }
        };
        self.counters_mut()[slot] = used + amount;
        self.seq += 1;
        charged
    }

    /// Where the customer stands on `feature`.
    pub fn standing(&self, feature: &str, rule: FeatureRule) -> Standing {
        match rule {
            FeatureRule::Flag(enabled) => Standing::Flag { enabled },
            FeatureRule::Usage(UsageTerms::Metered { included, overage }) => {
                let used = self.used(feature);
                let overage_units = used.saturating_sub(included);
                Standing::Metered {
                    used,
                    included,
                    held: self.held_amount(feature),
                    overage_units,
                    overage_cost_units: match overage {
                        Some(_) => self.overage_cost_to(feature, used),
                        None => 0,
                    },
                    has_overage: overage.is_some(),
                }
            }
            FeatureRule::Usage(UsageTerms::Credits { .. }) => Standing::Credits {
                available: self.available_credits(),
                granted: self.granted_credits,
                purchased: self.purchased_credits,
                held: self.held_total(),
            },
            FeatureRule::Usage(UsageTerms::Balance { .. }) => {
                let ModelTerms::Balance { overdraft_units } = self.plan.terms else {
                    unreachable!("balance terms only exist in balance plans")
                };
                Standing::Balance {
                    available_units: self.balance_units - self.held_total(),
                    balance_units: self.balance_units,
                    held_units: self.held_total(),
                    overdraft_units,
                }
            }
        }
    }

    /// Opens a hold (the caller has assessed it as allowed). `hold_id` must be unused.
    pub fn open_hold(
        &mut self,
        hold_id: u64,
        feature: &str,
        terms: UsageTerms,
        amount: u64,
        cost: i64,
        expires_at_ms: u64,
    ) {
        let held = match terms {
            UsageTerms::Metered { .. } => amount as i64,
            UsageTerms::Credits { .. } | UsageTerms::Balance { .. } => cost,
        };
        let previous = self.holds.insert(
            hold_id,
            Hold {
                feature: feature.into(),
                amount,
                held,
                expires_at_ms,
            },
        );
        assert!(previous.is_none(), "hold id {hold_id:#x} reused");
        self.seq += 1;
    }

    /// Removes the holds that expired at or before `now_ms`; returns their ids.
    pub fn expire_holds(&mut self, now_ms: u64) -> Vec<u64> {
        let expired: Vec<u64> = self
            .holds
            .iter()
            .filter(|(_, h)| h.expires_at_ms <= now_ms)
            .map(|(id, _)| id)
            .collect();
        for &id in &expired {
            self.holds.remove(id);
            self.seq += 1;
        }
        expired
    }

    /// The admin view.
    pub fn view(&self) -> CustomerView {
        CustomerView {
            customer: self.id.to_string(),
            plan: self.plan.slug.clone(),
            model: self.plan.model(),
            seq: self.seq,
            period_start_ms: self.period_start_ms,
            period_end_ms: self.period_end_ms,
            usage: self
                .plan
                .usage
                .iter()
                .map(|(feature, terms)| FeatureUsage {
                    feature: feature.clone(),
                    used: self.used(feature),
                    included: match terms {
                        UsageTerms::Metered { included, .. } => *included,
                        _ => 0,
                    },
                })
                .collect(),
            granted_credits: self.granted_credits,
            purchased_credits: self.purchased_credits,
            balance_units: self.balance_units,
            holds: self
                .holds
                .iter()
                .map(|(hold, h)| HoldView {
                    hold,
                    feature: h.feature.clone(),
                    amount: h.amount,
                    held: h.held,
                    expires_at_ms: h.expires_at_ms,
                })
                .collect(),
        }
    }
}

/// The overage cost of the usage from `from` to `to` units under `terms` (cumulative, so the
/// costs of consecutive ranges add up to the cost of their union); 0 for non-metered terms.
pub fn metered_cost_between(terms: Option<&UsageTerms>, from: u64, to: u64) -> i64 {
    match terms {
        Some(UsageTerms::Metered {
            included,
            overage: Some(price),
        }) => {
            let over = |units: u64| units.saturating_sub(*included);
            price.cost(over(to)) - price.cost(over(from))
        }
        _ => 0,
    }
}

fn allowed(cost: i64) -> Assessment {
    Assessment {
        is_allowed: true,
        cost,
        limit_cost: cost,
        limit_available: 0,
    }
}

/// The shipped catalogue and a plan `wide` with five metered usage features (more than fit
/// inline).
#[cfg(test)]
pub(crate) fn catalogue_with_a_wide_plan() -> Arc<Catalogue> {
    let toml = format!(
        "{}\n{}",
        crate::shipped::CONFIG_TOML,
        include_str!("../testdata/wide_plan.toml")
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
    fn counters_live_inline_for_few_features_and_beside_the_holds_for_many() {
        let (pro, wide) = plans();
        let mut customer = Customer::new("acme", pro.clone(), 0);
        assert_eq!(customer.counters(), [0; INLINE_COUNTERS]);
        assert_eq!(
            customer.holds,
            Holds::default(),
            "no box for a few-feature plan"
        );

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
        };
        customer.holds.insert(1, hold.clone());
        assert_eq!(customer.holds.remove(1), Some(hold.clone()));
        customer.holds.insert(2, hold);
        customer.holds.clear();
        assert!(customer.holds.is_empty());
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
        assert_eq!(
            customer.holds,
            Holds::default(),
            "the box goes with the plan"
        );
    }

    #[test]
    fn holds_drop_their_map_when_the_last_one_goes() {
        let mut holds = Holds::default();
        let hold = |amount| Hold {
            feature: "tokens".into(),
            amount,
            held: amount as i64,
            expires_at_ms: 10,
        };
        assert!(holds.insert(2, hold(5)).is_none());
        assert!(holds.insert(1, hold(3)).is_none());
        assert_eq!(holds.iter().map(|(id, _)| id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(holds.remove(1).map(|h| h.amount), Some(3));
        assert_eq!(holds.len(), 1);
        assert_eq!(holds.remove(2).map(|h| h.amount), Some(5));
        assert!(holds.is_empty());
        assert_eq!(holds, Holds::default());
        assert!(holds.remove(2).is_none());
    }
}
