//! What a product hears about: the moments a customer's money or quota crosses a line, and the
//! lifecycle changes around them. The shard decides a crossing from the counters just before and
//! just after the change that made it, in the same step, so a crossing fires once however
//! requests interleave — and only for a change that is persisted with it.

use tally_protocol::message::CloseReason;

use crate::catalogue::UsageTerms;
use crate::customer::Customer;

/// Share of a quota that `quota.threshold_reached` fires at, in percent.
pub const QUOTA_THRESHOLD_PERCENT: u64 = 80;
/// Share of the last refill (balance) or of the period's plan credits under which the `low`
/// events fire, in percent.
pub const LOW_PERCENT: i64 = 10;

/// One thing that happened to a customer, stamped with the change that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The customer.
    pub customer: String,
    /// The customer's sequence number after the change (with `index`, unique per customer).
    pub seq: u64,
    /// Which of the change's alerts this is (a change can cross several lines).
    pub index: u8,
    /// When the change happened.
    pub at_ms: u64,
    /// What happened.
    pub kind: AlertKind,
}

/// What happened, with the figures a receiver needs (money in rate units).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertKind {
    /// A customer was created on a plan (`customer.created`, `subscription.created`).
    CustomerCreated {
        /// The plan.
        plan: String,
        /// The first period.
        period_start_ms: u64,
    },
    /// The customer moved to another plan (`subscription.plan_changed`).
    PlanChanged {
        /// The plan before.
        from: String,
        /// The plan now.
        to: String,
    },
    /// Dollars were loaded (`balance.topped_up`).
    BalanceToppedUp {
        /// Rate units added.
        amount_units: i64,
        /// The top-up's transaction number.
        transaction: u32,
    },
    /// The balance crossed below 10% of its last refill (`balance.low`).
    BalanceLow {
        /// The balance after the crossing.
        balance_units: i64,
        /// The line crossed.
        threshold_units: i64,
    },
    /// The balance crossed to zero or below (`balance.depleted`).
    BalanceDepleted {
        /// The balance after the crossing.
        balance_units: i64,
    },
    /// Credit packs were bought (`credits.purchased`).
    CreditsPurchased {
        /// Credits added.
        credits: i64,
        /// The purchase's transaction number.
        transaction: u32,
    },
    /// Remaining credits crossed below 10% of the period's plan credits (`credits.low`).
    CreditsLow {
        /// Credits remaining (plan and purchased).
        remaining: i64,
        /// The line crossed.
        threshold: i64,
        /// The plan credits of the period.
        period_credits: i64,
    },
    /// Remaining credits crossed to zero or below (`credits.depleted`).
    CreditsDepleted {
        /// Credits remaining.
        remaining: i64,
    },
    /// A metered feature's usage crossed 80% of its included quantity
    /// (`quota.threshold_reached`).
    QuotaThresholdReached {
        /// The feature.
        feature: String,
        /// Usage after the crossing.
        used: u64,
        /// Included this period.
        included: u64,
        /// The period's start.
        period_start_ms: u64,
    },
    /// A metered feature's usage passed its included quantity (`quota.exceeded`).
    QuotaExceeded {
        /// The feature.
        feature: String,
        /// Usage after the crossing.
        used: u64,
        /// Included this period.
        included: u64,
        /// Whether usage past it is billed (else it is refused from now on).
        overage_enabled: bool,
        /// The period's start.
        period_start_ms: u64,
    },
    /// A period closed into an invoice (`invoice.created`).
    InvoiceCreated {
        /// The invoice's number.
        number: u64,
        /// The period.
        period_start_ms: u64,
        /// Its end.
        period_end_ms: u64,
        /// The total, rounded to cents.
        total_units: i64,
        /// Why it closed.
        reason: CloseReason,
    },
}

/// Every name [`AlertKind::event_name`] gives, as Commet names them: what endpoints may ask for.
pub const EVENT_NAMES: &[&str] = &[
    "customer.created",
    "subscription.plan_changed",
    "balance.topped_up",
    "balance.low",
    "balance.depleted",
    "credits.purchased",
    "credits.low",
    "credits.depleted",
    "quota.threshold_reached",
    "quota.exceeded",
    "invoice.created",
];

impl AlertKind {
    /// Commet's name for it (one of [`EVENT_NAMES`]).
    pub fn event_name(&self) -> &'static str {
        match self {
            AlertKind::CustomerCreated { .. } => "customer.created",
            AlertKind::PlanChanged { .. } => "subscription.plan_changed",
            AlertKind::BalanceToppedUp { .. } => "balance.topped_up",
            AlertKind::BalanceLow { .. } => "balance.low",
            AlertKind::BalanceDepleted { .. } => "balance.depleted",
            AlertKind::CreditsPurchased { .. } => "credits.purchased",
            AlertKind::CreditsLow { .. } => "credits.low",
            AlertKind::CreditsDepleted { .. } => "credits.depleted",
            AlertKind::QuotaThresholdReached { .. } => "quota.threshold_reached",
            AlertKind::QuotaExceeded { .. } => "quota.exceeded",
            AlertKind::InvoiceCreated { .. } => "invoice.created",
        }
    }
}

/// A customer's money and one feature's usage, taken before a change to see what it crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    balance_units: i64,
    credits: i64,
    used: u64,
}

impl Levels {
    /// Where `customer` stands now, on `feature`.
    pub fn of(customer: &Customer, feature: &str) -> Levels {
        Levels {
            balance_units: customer.balance_units(),
            credits: customer.granted_credits() + customer.purchased_credits(),
            used: customer.used(feature),
        }
    }
}

/// The lines `customer` crossed on `feature` (with `terms`) since `before`, in a fixed order.
pub fn crossings(
    before: Levels,
    customer: &Customer,
    feature: &str,
    terms: UsageTerms,
) -> Vec<AlertKind> {
    let after = Levels::of(customer, feature);
    let mut found = Vec::new();
    match terms {
        UsageTerms::Metered { included, overage } if included > 0 => {
            let line = (included * QUOTA_THRESHOLD_PERCENT).div_ceil(100);
            if before.used < line && after.used >= line {
                found.push(AlertKind::QuotaThresholdReached {
                    feature: feature.into(),
                    used: after.used,
                    included,
                    period_start_ms: customer.period_start_ms(),
                });
            }
            if before.used <= included && after.used > included {
                found.push(AlertKind::QuotaExceeded {
                    feature: feature.into(),
                    used: after.used,
                    included,
                    overage_enabled: overage.is_some(),
                    period_start_ms: customer.period_start_ms(),
                });
            }
        }
        UsageTerms::Metered { .. } => {}
        UsageTerms::Credits { .. } => {
            let period_credits = customer.plan_credits();
            let line = period_credits * LOW_PERCENT / 100;
            if period_credits > 0 && before.credits >= line && after.credits < line {
                found.push(AlertKind::CreditsLow {
                    remaining: after.credits,
                    threshold: line,
                    period_credits,
                });
            }
            if before.credits > 0 && after.credits <= 0 {
                found.push(AlertKind::CreditsDepleted {
                    remaining: after.credits,
                });
            }
        }
        UsageTerms::Balance { .. } => {
            let line = customer.last_refill_units() * LOW_PERCENT / 100;
            if line > 0 && before.balance_units >= line && after.balance_units < line {
                found.push(AlertKind::BalanceLow {
                    balance_units: after.balance_units,
                    threshold_units: line,
                });
            }
            if before.balance_units > 0 && after.balance_units <= 0 {
                found.push(AlertKind::BalanceDepleted {
                    balance_units: after.balance_units,
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Catalogue;
    use std::sync::Arc;

    fn customer(plan: &str) -> (Customer, Arc<Catalogue>) {
        let catalogue = crate::shipped::catalogue_of(crate::shipped::CONFIG_TOML);
        let plan = catalogue.plan(plan).unwrap().clone();
        (Customer::new("acme", plan, 0), catalogue)
    }

    fn record(
        customer: &mut Customer,
        catalogue: &Catalogue,
        feature: &str,
        amount: u64,
    ) -> Vec<&'static str> {
        let terms = customer.usage_terms(catalogue, feature).unwrap();
        let before = Levels::of(customer, feature);
        customer.record(feature, terms, amount);
        crossings(before, customer, feature, terms)
            .iter()
            .map(AlertKind::event_name)
            .collect()
    }

    #[test]
    fn a_quota_warns_at_80_percent_and_is_exceeded_past_included_once_each() {
        let (mut pro, catalogue) = customer("pro");
        let included = match pro.usage_terms(&catalogue, "tokens").unwrap() {
            UsageTerms::Metered { included, .. } => included,
            other => panic!("{other:?}"),
        };
        let line = included * 8 / 10;
        assert!(record(&mut pro, &catalogue, "tokens", line - 1).is_empty());
        assert_eq!(
            record(&mut pro, &catalogue, "tokens", 1),
            ["quota.threshold_reached"]
        );
        assert!(
            record(&mut pro, &catalogue, "tokens", included - line).is_empty(),
            "at included, not past it"
        );
        assert_eq!(
            record(&mut pro, &catalogue, "tokens", 1),
            ["quota.exceeded"]
        );
        assert!(
            record(&mut pro, &catalogue, "tokens", 1_000).is_empty(),
            "once per period"
        );
    }

    #[test]
    fn one_change_can_cross_both_lines_and_a_balance_warns_at_a_tenth_of_its_last_refill() {
        let (mut pro, catalogue) = customer("pro");
        let names = record(&mut pro, &catalogue, "tokens", 10_000_000);
        assert_eq!(names, ["quota.threshold_reached", "quota.exceeded"]);

        let (mut wallet, catalogue) = customer("assistant");
        wallet.top_up(0, 10_000);
        assert_eq!(wallet.last_refill_units(), 10_000);
        let usage = |output| tally_protocol::message::ModelUsage::new("gpt-4o", 0, output);
        let terms = wallet.usage_terms(&catalogue, "chat").unwrap();
        let spend = |wallet: &mut Customer, output: u64| {
            let before = Levels::of(wallet, "chat");
            let cost = catalogue.models()["gpt-4o"].cost(&usage(output)).unwrap();
            wallet.record("chat", terms, cost);
            crossings(before, wallet, "chat", terms)
                .iter()
                .map(AlertKind::event_name)
                .collect::<Vec<_>>()
        };
        // 0.12 rate units a token: 75,000 tokens leave $0.10 of $1.00.
        assert!(spend(&mut wallet, 75_000).is_empty());
        assert_eq!(spend(&mut wallet, 1_000), ["balance.low"]);
        assert!(spend(&mut wallet, 1_000).is_empty());
        assert_eq!(spend(&mut wallet, 10_000), ["balance.depleted"]);
        assert!(spend(&mut wallet, 10).is_empty(), "below zero already");
    }

    #[test]
    fn every_kind_is_named_in_the_list_endpoints_choose_from() {
        let kinds = [
            AlertKind::CustomerCreated {
                plan: String::new(),
                period_start_ms: 0,
            },
            AlertKind::PlanChanged {
                from: String::new(),
                to: String::new(),
            },
            AlertKind::BalanceToppedUp {
                amount_units: 0,
                transaction: 0,
            },
            AlertKind::BalanceLow {
                balance_units: 0,
                threshold_units: 0,
            },
            AlertKind::BalanceDepleted { balance_units: 0 },
            AlertKind::CreditsPurchased {
                credits: 0,
                transaction: 0,
            },
            AlertKind::CreditsLow {
                remaining: 0,
                threshold: 0,
                period_credits: 0,
            },
            AlertKind::CreditsDepleted { remaining: 0 },
            AlertKind::QuotaThresholdReached {
                feature: String::new(),
                used: 0,
                included: 0,
                period_start_ms: 0,
            },
            AlertKind::QuotaExceeded {
                feature: String::new(),
                used: 0,
                included: 0,
                overage_enabled: false,
                period_start_ms: 0,
            },
            AlertKind::InvoiceCreated {
                number: 0,
                period_start_ms: 0,
                period_end_ms: 0,
                total_units: 0,
                reason: CloseReason::Manual,
            },
        ];
        let names: Vec<&str> = kinds.iter().map(AlertKind::event_name).collect();
        assert_eq!(names, EVENT_NAMES);
    }

    #[test]
    fn the_shard_stamps_each_alert_with_the_change_that_caused_it() {
        use crate::billing::BillingTerms;
        use crate::engine::ShardCore;
        use tally_protocol::message::*;
        let mut core = ShardCore::new(
            crate::shipped::catalogue_of(crate::shipped::CONFIG_TOML),
            60_000,
            BillingTerms::default(),
        );
        let created = CustomerPlan {
            customer: "ada".into(),
            plan: "assistant".into(),
        };
        core.handle(0, Request::CreateCustomer(created)).unwrap();
        let top_up = TopUpRequest {
            customer: "ada".into(),
            amount: TopUpAmount::Units(10_000),
            idempotency_key: None,
        };
        core.handle(1, Request::TopUp(top_up)).unwrap();
        // One request that takes $1.00 to -$0.20: two lines crossed by one change.
        let item = ReportItem::tokens("ada", "chat", ModelUsage::new("gpt-4o", 0, 100_000));
        core.handle(2, Request::Report(item)).unwrap();
        let close = CustomerRef {
            customer: "ada".into(),
        };
        core.handle(3, Request::ClosePeriod(close)).unwrap();
        let alerts = core.take_changes().alerts;
        let seen: Vec<(&str, u64, u8, u64)> = alerts
            .iter()
            .map(|a| (a.kind.event_name(), a.seq, a.index, a.at_ms))
            .collect();
        assert_eq!(
            seen,
            [
                ("customer.created", 1, 0, 0),
                ("balance.topped_up", 2, 0, 1),
                ("balance.low", 3, 0, 2),
                ("balance.depleted", 3, 1, 2),
                ("invoice.created", 4, 0, 3),
            ]
        );
        assert_eq!(
            alerts[3].kind,
            AlertKind::BalanceDepleted {
                balance_units: -2_000
            }
        );
    }
}
