//! The consumption models' rules for one customer: what a check allows, what a report charges,
//! where the customer stands, what a hold holds and when it expires.

use tally_protocol::message::{CustomerView, FeatureUsage, HoldView, Standing};

use super::{Assessment, Customer, FeatureRule, Hold};
use crate::catalogue::{ModelTerms, UsageTerms};

impl Customer {
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
        self.extras
            .holds()
            .values()
            .filter(|h| h.feature == feature)
            .map(|h| h.amount)
            .sum()
    }

    fn held_total(&self) -> i64 {
        self.extras.holds().values().map(|h| h.held).sum()
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
            UsageTerms::Credits { price } => {
                let cost = price.cost_of_increase(self.used(feature), amount);
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
            UsageTerms::Credits { price } => {
                let cost = price.cost_of_increase(used, amount);
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
        let previous = self.extras.insert_hold(
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
            .extras
            .holds()
            .iter()
            .filter(|(_, h)| h.expires_at_ms <= now_ms)
            .map(|(&id, _)| id)
            .collect();
        for &id in &expired {
            self.extras.remove_hold(id);
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
                .extras
                .holds()
                .iter()
                .map(|(&hold, h)| HoldView {
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
