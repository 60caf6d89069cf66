//! Turning usage into money at period close, and purchases into transactions: invoice lines per
//! model, rounding to cents (half away from zero) and the merchant-of-record fee, all with
//! rust_decimal. Pure: the caller passes the time and the terms.

use rust_decimal::{Decimal, RoundingStrategy};
use tally_protocol::message::{
    CloseReason, InvoiceLineView, InvoiceView, LineKind, Model, ModelUsageLine, TransactionKind,
    TransactionView,
};

use super::catalogue::{ModelTerms, Plan, UsageTerms};
use super::customer::{metered_cost_between, Customer, PriceSplit};
use super::money::{dollars_to_units, units_to_dollars, Price};

/// The fee every invoice and transaction with a positive total carries, and the range of a
/// balance top-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingTerms {
    /// Percentage of the total (4.5 means 4.5%).
    pub fee_percent: Decimal,
    /// Fixed part, in rate units.
    pub fee_fixed_units: i64,
    /// The smallest balance top-up, in rate units (whole cents, netting at least zero).
    pub top_up_min_units: i64,
    /// The largest balance top-up, in rate units (whole cents).
    pub top_up_max_units: i64,
}

/// Rate units in a cent: a balance top-up is a whole number of them.
pub const UNITS_PER_CENT: i64 = 100;

impl Default for BillingTerms {
    /// The spec's defaults: 4.5% + $0.40; top-ups from $1.00 to $10,000.00.
    fn default() -> Self {
        Self {
            fee_percent: Decimal::new(45, 1),
            fee_fixed_units: 4_000,
            top_up_min_units: 10_000,
            top_up_max_units: 100_000_000,
        }
    }
}

/// Total, fee and payout of an amount, in rate units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// The amount rounded to cents.
    pub total_units: i64,
    /// `round_cents(total × fee_percent) + fee_fixed`, or 0 when the total is not positive.
    pub fee_units: i64,
    /// `total − fee`.
    pub net_units: i64,
}

/// `$1.00`, `$0.005`: at least two decimals, more only where the amount has them.
pub fn dollars(units: i64) -> String {
    let mut value = units_to_dollars(units).normalize();
    if value.scale() < 2 {
        value.rescale(2);
    }
    format!("${value}")
}

/// Rounds rate units to whole cents, half away from zero.
pub fn round_cents(units: i64) -> i64 {
    let rounded =
        units_to_dollars(units).round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    dollars_to_units(rounded).expect("cents are whole rate units")
}

impl BillingTerms {
    /// Checks a balance top-up of `units`: whole cents, within the configured range. What it
    /// credits is then exactly the transaction's gross, and its net is never negative.
    pub fn check_top_up(&self, units: i64) -> Result<(), String> {
        if units % UNITS_PER_CENT != 0 {
            return Err(format!(
                "a top-up of {} is not a whole number of cents",
                dollars(units)
            ));
        }
        if units < self.top_up_min_units {
            return Err(format!(
                "a top-up of {} is below the minimum of {} ([billing] min_top_up)",
                dollars(units),
                dollars(self.top_up_min_units)
            ));
        }
        if units > self.top_up_max_units {
            return Err(format!(
                "a top-up of {} is above the maximum of {} ([billing] max_top_up)",
                dollars(units),
                dollars(self.top_up_max_units)
            ));
        }
        Ok(())
    }

    /// Total, fee and net of `amount_units`.
    pub fn settle(&self, amount_units: i64) -> Settlement {
        let total_units = round_cents(amount_units);
        let fee_units = if total_units > 0 {
            let percent = units_to_dollars(total_units) * self.fee_percent / Decimal::ONE_HUNDRED;
            let percent = percent.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
            dollars_to_units(percent).expect("cents are whole rate units") + self.fee_fixed_units
        } else {
            0
        };
        Settlement {
            total_units,
            fee_units,
            net_units: total_units - fee_units,
        }
    }
}

/// A closed period's invoice, as stored and shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoice {
    /// The customer.
    pub customer: String,
    /// 1, 2, 3, … per customer.
    pub number: u64,
    /// The plan of the period.
    pub plan: String,
    /// The plan's consumption model.
    pub model: Model,
    /// Period start.
    pub period_start_ms: u64,
    /// Period end (exclusive).
    pub period_end_ms: u64,
    /// When it closed.
    pub closed_at_ms: u64,
    /// Why the period closed.
    pub reason: CloseReason,
    /// The lines.
    pub lines: Vec<InvoiceLine>,
    /// The period's usage per model of features priced by model (a breakdown of their lines).
    pub models: Vec<ModelUsageLine>,
    /// Sum of the lines rounded to cents.
    pub total_units: i64,
    /// The fee.
    pub fee_units: i64,
    /// total − fee.
    pub net_units: i64,
}

/// One invoice line.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceLine {
    /// What the line is for.
    pub kind: LineKind,
    /// The feature (see [`InvoiceLineView::feature`]).
    pub feature: String,
    /// Units used.
    pub used: u64,
    /// Units included.
    pub included: u64,
    /// Units charged at the price.
    pub overage: u64,
    /// Price in rate units per `per`.
    pub price_units: i64,
    /// Quantity of the price.
    pub per: u64,
    /// Credits or rate units consumed during the period.
    pub consumed: i64,
    /// Amount in rate units.
    pub amount_units: i64,
}

/// A purchase or top-up, as stored and shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// The customer.
    pub customer: String,
    /// 1, 2, 3, … per customer.
    pub number: u64,
    /// A credit purchase or a balance top-up.
    pub kind: TransactionKind,
    /// When.
    pub at_ms: u64,
    /// Packs or rate units.
    pub quantity: u64,
    /// Paid, rounded to cents.
    pub total_units: i64,
    /// Fee.
    pub fee_units: i64,
    /// total − fee.
    pub net_units: i64,
}

fn line(kind: LineKind, feature: &str) -> InvoiceLine {
    InvoiceLine {
        kind,
        feature: feature.into(),
        used: 0,
        included: 0,
        overage: 0,
        price_units: 0,
        per: 1,
        consumed: 0,
        amount_units: 0,
    }
}

/// The invoice lines of the customer's current period: the base price (the share of the period
/// `base_share` says, for a plan change), one line per usage feature and price in force while it
/// was used (a price change inside the period splits a feature's usage into one line per price,
/// each charging exactly what its reports were charged), and any debt.
pub fn invoice_lines(customer: &Customer, base_share: Option<(u64, u64)>) -> Vec<InvoiceLine> {
    let plan = &customer.plan();
    let segments = price_segments(customer);
    let mut lines = Vec::with_capacity(plan.usage.len() + 2);
    base_lines(customer, &segments, base_share, &mut lines);
    for feature in plan.usage.keys() {
        usage_lines(feature, &segments, &mut lines);
    }
    match plan.terms {
        ModelTerms::Credits {
            pack_credits,
            pack_price_units,
            ..
        } if customer.purchased_credits() < 0 => {
            let owed = customer.purchased_credits().unsigned_abs();
            let price = Price {
                units: pack_price_units,
                per: pack_credits.max(1) as u64,
            };
            let mut debt = line(LineKind::Debt, "credits");
            debt.used = owed;
            debt.overage = owed;
            debt.price_units = price.units;
            debt.per = price.per;
            debt.amount_units = price.cost(owed);
            lines.push(debt);
        }
        ModelTerms::Balance { .. } if customer.balance_units() < 0 => {
            let owed = customer.balance_units().unsigned_abs();
            let mut debt = line(LineKind::Debt, "");
            debt.used = owed;
            debt.overage = owed;
            debt.price_units = 1;
            debt.amount_units = owed as i64;
            lines.push(debt);
        }
        _ => {}
    }
    lines
}

/// A stretch of the period priced by one version of the plan: usage between two marks, between
/// two instants.
struct Segment<'a> {
    plan: &'a Plan,
    from: Mark<'a>,
    to: Mark<'a>,
    from_ms: u64,
    to_ms: u64,
}

/// A point in the period's usage.
#[derive(Clone, Copy)]
enum Mark<'a> {
    /// The period's start: nothing used.
    Start,
    /// A price change.
    Split(&'a PriceSplit),
    /// Now: the customer's counters.
    Now(&'a Customer),
}

impl Mark<'_> {
    /// Units of `feature` used in the period up to this mark.
    fn used(self, feature: &str) -> u64 {
        match self {
            Mark::Start => 0,
            Mark::Split(split) => split.used(feature),
            Mark::Now(customer) => customer.used(feature),
        }
    }
}

/// The current period cut at each price change inside it, in time order; one segment without
/// changes.
fn price_segments(customer: &Customer) -> Vec<Segment<'_>> {
    let splits = customer.price_splits();
    let mut segments = Vec::with_capacity(splits.len() + 1);
    let (mut from, mut from_ms) = (Mark::Start, customer.period_start_ms());
    for split in splits {
        segments.push(Segment {
            plan: &split.plan,
            from,
            to: Mark::Split(split),
            from_ms,
            to_ms: split.at_ms,
        });
        (from, from_ms) = (Mark::Split(split), split.at_ms);
    }
    segments.push(Segment {
        plan: customer.plan(),
        from,
        to: Mark::Now(customer),
        from_ms,
        to_ms: customer.period_end_ms(),
    });
    segments
}

/// The base price: one line, or one per segment when a change inside the period moved it,
/// each the share of the period the segment covers (within `base_share` for a plan change).
fn base_lines(
    customer: &Customer,
    segments: &[Segment<'_>],
    base_share: Option<(u64, u64)>,
    lines: &mut Vec<InvoiceLine>,
) {
    let base_of = |plan: &Plan, elapsed: u64, length: u64| {
        let mut base = line(LineKind::Base, "");
        base.used = 1;
        base.price_units = plan.base_price_units;
        base.amount_units = Price {
            units: plan.base_price_units,
            per: length.max(1),
        }
        .cost(elapsed.min(length));
        base
    };
    let length = customer.period_end_ms() - customer.period_start_ms();
    let (elapsed, length) = base_share.unwrap_or((length, length));
    let one_price = segments
        .iter()
        .all(|s| s.plan.base_price_units == customer.plan().base_price_units);
    if one_price {
        let mut base = base_of(customer.plan(), elapsed, length);
        if base_share.is_none() {
            base.amount_units = customer.plan().base_price_units;
        }
        lines.push(base);
        return;
    }
    let billed_to = customer.period_start_ms() + elapsed;
    for segment in segments {
        let span = segment.to_ms.min(billed_to).saturating_sub(segment.from_ms);
        lines.push(base_of(segment.plan, span, length));
    }
}

/// `feature`'s lines: one per run of segments with the same terms (their usage adds up
/// exactly), those with usage; a feature unused all period gets one empty line at its current
/// terms.
fn usage_lines(feature: &str, segments: &[Segment<'_>], lines: &mut Vec<InvoiceLine>) {
    let mut runs: Vec<(UsageTerms, u64, u64)> = Vec::new();
    for segment in segments {
        let Some(&terms) = segment.plan.usage.get(feature) else {
            continue;
        };
        let (from, to) = (segment.from.used(feature), segment.to.used(feature));
        match runs.last_mut() {
            Some((same, _, end)) if *same == terms => *end = to.max(*end),
            _ => runs.push((terms, from, to.max(from))),
        }
    }
    let used: Vec<_> = runs.iter().filter(|(_, from, to)| to > from).collect();
    let shown = if used.is_empty() {
        runs.last().into_iter().collect()
    } else {
        used
    };
    for &(terms, from, to) in shown {
        lines.push(usage_line(feature, terms, from, to));
    }
}

/// The line for `feature`'s usage from `from` to `to` units (cumulative in the period) at
/// `terms`: what the reports in that range were charged, to the rate unit.
fn usage_line(feature: &str, terms: UsageTerms, from: u64, to: u64) -> InvoiceLine {
    let mut l = match terms {
        UsageTerms::Metered { included, overage } => {
            let mut l = line(LineKind::Metered, feature);
            let over = |units: u64| units.saturating_sub(included);
            l.included = included;
            l.overage = over(to) - over(from);
            if let Some(price) = overage {
                l.price_units = price.units;
                l.per = price.per;
                l.amount_units = metered_cost_between(Some(&terms), from, to);
            }
            l
        }
        UsageTerms::Credits { price } => {
            let mut l = line(LineKind::Usage, feature);
            l.price_units = price.units;
            l.per = price.per;
            l.consumed = price.cost(to) - price.cost(from);
            l
        }
        UsageTerms::Balance { price } => {
            let mut l = line(LineKind::Usage, feature);
            l.price_units = price.units;
            l.per = price.per;
            l.consumed = price.cost(to) - price.cost(from);
            l
        }
    };
    l.used = to - from;
    l
}

impl Invoice {
    /// The invoice as the wire shows it.
    pub fn view(&self) -> InvoiceView {
        InvoiceView {
            customer: self.customer.clone(),
            number: self.number,
            plan: self.plan.clone(),
            model: self.model,
            period_start_ms: self.period_start_ms,
            period_end_ms: self.period_end_ms,
            closed_at_ms: self.closed_at_ms,
            reason: self.reason,
            lines: self
                .lines
                .iter()
                .map(|l| InvoiceLineView {
                    kind: l.kind,
                    feature: l.feature.clone(),
                    used: l.used,
                    included: l.included,
                    overage: l.overage,
                    price_units: l.price_units,
                    per: l.per,
                    consumed: l.consumed,
                    amount_units: l.amount_units,
                })
                .collect(),
            models: self.models.clone(),
            total_units: self.total_units,
            fee_units: self.fee_units,
            net_units: self.net_units,
        }
    }
}

impl Transaction {
    /// The transaction as the wire shows it.
    pub fn view(&self) -> TransactionView {
        TransactionView {
            customer: self.customer.clone(),
            number: self.number,
            kind: self.kind,
            at_ms: self.at_ms,
            quantity: self.quantity,
            total_units: self.total_units,
            fee_units: self.fee_units,
            net_units: self.net_units,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_pro_invoice_of_the_spec_has_the_exact_fee_and_net() {
        let s = BillingTerms::default().settle(1_090_000);
        assert_eq!(
            s,
            Settlement {
                total_units: 1_090_000,
                fee_units: 53_100,
                net_units: 1_036_900
            }
        );
    }

    #[test]
    fn purchases_carry_the_exact_fee() {
        let terms = BillingTerms::default();
        // Two packs of $10.00: 4.5% of $20.00 is $0.90, plus $0.40.
        assert_eq!(terms.settle(200_000).fee_units, 13_000);
        // $50.00: $2.25 + $0.40 = $2.65, net $47.35.
        assert_eq!(
            terms.settle(500_000),
            Settlement {
                total_units: 500_000,
                fee_units: 26_500,
                net_units: 473_500
            }
        );
        assert_eq!(
            terms.settle(0).fee_units,
            0,
            "no fee without a positive total"
        );
    }

    #[test]
    fn cents_round_half_away_from_zero() {
        assert_eq!(round_cents(12_350), 12_400);
        assert_eq!(round_cents(12_349), 12_300);
        assert_eq!(round_cents(-12_350), -12_400);
    }

    proptest! {
        #[test]
        fn net_plus_fee_is_the_total(amount in -10_000_000i64..1_000_000_000_000, percent in 0u32..1_000, fixed in 0i64..100_000) {
            let terms = BillingTerms { fee_percent: Decimal::new(i64::from(percent), 1), fee_fixed_units: fixed / 100 * 100, ..BillingTerms::default() };
            let s = terms.settle(amount);
            prop_assert_eq!(s.net_units + s.fee_units, s.total_units);
            prop_assert_eq!(s.total_units % 100, 0, "whole cents");
            prop_assert_eq!(s.fee_units % 100, 0, "whole cents");
        }
    }
}
