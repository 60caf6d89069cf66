//! The consumption models' rules for one customer: what a check allows, what a report charges,
//! where the customer stands, what a hold holds and when it expires.

use tally_protocol::message::{CustomerView, FeatureUsage, HoldView, Standing, TallyError};

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

    /// Whether a hold of `amount` fits beside the open holds: [`Customer::assess`], but what
    /// credits and balance holds take is [`hold_bound`], not the next report's exact cost.
    pub fn assess_hold(&self, feature: &str, terms: UsageTerms, amount: u64) -> Assessment {
        let assessment = self.assess(feature, terms, amount);
        match terms {
            UsageTerms::Metered { .. } => assessment,
            UsageTerms::Credits { .. } | UsageTerms::Balance { .. } if amount > 0 => {
                let bound = hold_bound(terms, amount);
                Assessment {
                    is_allowed: assessment.limit_available >= bound,
                    cost: bound,
                    limit_cost: bound,
                    limit_available: assessment.limit_available,
                }
            }
            _ => assessment,
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

    /// Opens `hold` as `hold_id` (the caller has assessed it with [`Customer::assess_hold`];
    /// the id must be unused). It holds [`hold_bound`] of its amount.
    pub fn open_hold(&mut self, hold_id: u64, terms: UsageTerms, mut hold: Hold) {
        hold.held = hold_bound(terms, hold.amount);
        let previous = self.extras.insert_hold(hold_id, hold);
        assert!(previous.is_none(), "hold id {hold_id:#x} reused");
        self.seq += 1;
    }

    /// Takes `output_tokens`, the running total an answer has streamed, against hold `id`
    /// (opened with a model request on a feature with `terms`). Once it reaches what the hold
    /// covers, the hold grows by as much again as it covers, or — when the customer cannot pay
    /// for that (counting every other open hold) — to the most output they can pay for: the
    /// cut-off.
    pub fn progress_hold(
        &mut self,
        id: u64,
        terms: UsageTerms,
        output_tokens: u64,
    ) -> Result<HoldProgress, TallyError> {
        let hold = self
            .extras
            .holds()
            .get(&id)
            .ok_or(TallyError::UnknownHold { hold: id })?;
        let request = hold
            .request
            .as_deref()
            .ok_or_else(|| TallyError::InvalidRequest {
                reason: format!(
                "hold {id:#x} was opened for units, not a model request: settle it with its units"
            ),
            })?;
        let reported = request
            .reported_output
            .map_or(output_tokens, |r| r.max(output_tokens));
        let covered = request.usage.output_tokens;
        let (feature, amount, held) = (hold.feature.clone(), hold.amount, hold.held);
        // The hold covering `output` tokens — (amount, held) — when the customer can pay for it,
        // beside every other hold (this one's current `held` counted back in).
        let affordable = |output: u64| -> Option<(u64, i64)> {
            let cost = request.cost_with_output(output)?;
            match terms {
                UsageTerms::Metered { .. } => {
                    let assessment = self.assess(&feature, terms, cost.checked_sub(amount)?);
                    assessment.is_allowed.then_some((cost, cost as i64))
                }
                UsageTerms::Credits { .. } | UsageTerms::Balance { .. } => {
                    let bound = hold_bound(terms, cost);
                    let whole = self.assess(&feature, terms, cost);
                    (cost == 0 || whole.limit_available + held >= bound).then_some((cost, bound))
                }
            }
        };
        let mut progress = HoldProgress {
            cut_off: false,
            output_tokens_allowed: covered,
            grew: false,
        };
        let mut growth = None;
        // A stream that reached what its hold covers asks for more.
        if reported >= covered {
            let target = reported.saturating_add(covered.max(1));
            if let Some(extra) = affordable(target) {
                growth = Some((target, extra));
            } else {
                // Affordability only falls as the output grows: search the last affordable count.
                let (mut lo, mut hi) = (covered, target);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if affordable(mid).is_some() {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                progress.cut_off = true;
                if lo > covered {
                    growth = affordable(lo).map(|extra| (lo, extra));
                }
            }
        }
        let hold = self.extras.hold_mut(id).expect("the hold was found above");
        let request = hold.request.as_deref_mut().expect("checked above");
        request.reported_output = Some(reported);
        if let Some((output, (cost, held))) = growth {
            request.usage.output_tokens = output;
            hold.amount = cost;
            hold.held = held;
            progress.output_tokens_allowed = output;
            progress.grew = true;
            self.seq += 1;
        }
        Ok(progress)
    }

    /// Removes the holds that expired at or before `now_ms`; returns them.
    pub fn expire_holds(&mut self, now_ms: u64) -> Vec<(u64, Hold)> {
        let expired: Vec<u64> = self
            .extras
            .holds()
            .iter()
            .filter(|(_, h)| h.expires_at_ms <= now_ms)
            .map(|(&id, _)| id)
            .collect();
        expired
            .into_iter()
            .filter_map(|id| {
                self.seq += 1;
                Some((id, self.extras.remove_hold(id)?))
            })
            .collect()
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
            models: self.model_lines().to_vec(),
        }
    }
}

/// What a hold of `amount` holds: its units (metered), or the price of `amount` on its own
/// (credits, balance). With cumulative rounding, `amount` on top of any usage costs at most
/// that, so settling any part of a hold, in any order with other charges, never takes more than
/// it held — where the next report's exact cost could be one rate unit short.
pub fn hold_bound(terms: UsageTerms, amount: u64) -> i64 {
    match terms {
        UsageTerms::Metered { .. } => amount as i64,
        UsageTerms::Credits { price } | UsageTerms::Balance { price } => price.cost(amount),
    }
}

/// What a hold did with a `progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldProgress {
    /// The customer cannot pay for more than `output_tokens_allowed`.
    pub cut_off: bool,
    /// Output tokens the hold covers now.
    pub output_tokens_allowed: u64,
    /// Whether the hold grew (a change an answer must not run ahead of).
    pub grew: bool,
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
