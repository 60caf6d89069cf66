//! What one shard has been doing, for the console: usage and spend per customer over the last
//! interval (top lists), recent invoices and transactions, and this month's revenue. Bounded: the
//! interval map is emptied each interval and keeps room for as many customers as the interval
//! saw (a busy interval's 100,000 entries kept ~5 MB per shard for good when it kept its
//! largest table), the recent lists keep a fixed number.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use compact_str::CompactString;
use tally_protocol::message::{
    InvoiceView, ModelUsageLine, RevenueStats, TopCustomer, TransactionView,
};

use crate::metering::billing::{Invoice, Transaction};
use crate::metering::catalogue::ModelTerms;
use crate::metering::engine::{Changes, ShardCore};
use crate::metering::models::add_to_lines;
use crate::metering::money::Price;

/// Customers in each top list.
pub const TOP_CUSTOMERS: usize = 10;
/// Invoices and transactions kept in the recent lists.
pub const RECENT_MAX: usize = 20;
/// Distinct customers tracked per interval; past it new customers are not counted until the
/// interval rolls (the top list then covers the first ones seen).
pub const ACTIVE_CUSTOMERS_MAX: usize = 100_000;

/// One shard's activity.
#[derive(Debug, Default)]
pub struct Activity {
    /// Units and spend per customer this interval; ids inline (no allocation per entry).
    interval: HashMap<CompactString, (u64, i64)>,
    top_by_usage: Vec<TopCustomer>,
    top_by_spend: Vec<TopCustomer>,
    recent_invoices: VecDeque<InvoiceView>,
    recent_transactions: VecDeque<TransactionView>,
    revenue: RevenueStats,
    models: Vec<ModelUsageLine>,
}

/// The activity a shard reports to `stats`.
#[derive(Debug, Clone, Default)]
pub struct ActivityReport {
    /// Top customers by usage in the last completed interval.
    pub top_by_usage: Vec<TopCustomer>,
    /// Top customers by spend in the last completed interval.
    pub top_by_spend: Vec<TopCustomer>,
    /// Newest first.
    pub recent_invoices: Vec<InvoiceView>,
    /// Newest first.
    pub recent_transactions: Vec<TransactionView>,
    /// This month so far.
    pub revenue: RevenueStats,
    /// Usage per (feature, model) since start.
    pub models: Vec<ModelUsageLine>,
}

impl Activity {
    /// Notes what `changes` (about to be persisted) record, at `now_ms`.
    pub fn note(&mut self, changes: &Changes, core: &ShardCore, now_ms: u64) {
        for event in &changes.events {
            if let Some(usage) = &event.model {
                add_to_lines(
                    &mut self.models,
                    &event.feature,
                    usage,
                    event.amount,
                    event.charged,
                );
            }
            let spend = match core.customer(&event.customer).map(|c| c.plan().terms) {
                Some(ModelTerms::Credits {
                    pack_credits,
                    pack_price_units,
                    ..
                }) => Price {
                    units: pack_price_units,
                    per: pack_credits.max(1) as u64,
                }
                .cost(event.charged.max(0) as u64),
                _ => event.charged,
            };
            if let Some(entry) = self.interval.get_mut(event.customer.as_str()) {
                entry.0 += event.amount;
                entry.1 += spend;
            } else if self.interval.len() < ACTIVE_CUSTOMERS_MAX {
                self.interval
                    .insert(event.customer.as_str().into(), (event.amount, spend));
            }
        }
        for invoice in &changes.invoices {
            self.count_revenue(
                now_ms,
                invoice.total_units,
                invoice.fee_units,
                invoice.net_units,
                true,
            );
            push_recent(&mut self.recent_invoices, Invoice::view(invoice));
        }
        for transaction in &changes.transactions {
            self.count_revenue(
                now_ms,
                transaction.total_units,
                transaction.fee_units,
                transaction.net_units,
                false,
            );
            push_recent(
                &mut self.recent_transactions,
                Transaction::view(transaction),
            );
        }
    }

    fn count_revenue(&mut self, now_ms: u64, gross: i64, fee: i64, net: i64, is_invoice: bool) {
        let month_start_ms = month_start(now_ms);
        if self.revenue.month_start_ms != month_start_ms {
            self.revenue = RevenueStats {
                month_start_ms,
                ..RevenueStats::default()
            };
        }
        self.revenue.gross_units += gross;
        self.revenue.fee_units += fee;
        self.revenue.net_units += net;
        if is_invoice {
            self.revenue.invoices += 1;
        } else {
            self.revenue.transactions += 1;
        }
    }

    /// Ends the interval: its top lists become the reported ones.
    pub fn roll_interval(&mut self) {
        let active = self.interval.len();
        let mut customers: Vec<(CompactString, (u64, i64))> = self.interval.drain().collect();
        // Room for as many as this interval saw: a steady load reuses the table without
        // growing it again; a burst's table is given back after one quiet interval.
        self.interval.shrink_to(active);
        let top = |customers: &[(CompactString, (u64, i64))]| -> Vec<TopCustomer> {
            customers
                .iter()
                .take(TOP_CUSTOMERS)
                .map(|(customer, (units, spend_units))| TopCustomer {
                    customer: customer.to_string(),
                    units: *units,
                    spend_units: *spend_units,
                })
                .collect()
        };
        customers.sort_by(|(a, (a_units, _)), (b, (b_units, _))| {
            b_units.cmp(a_units).then_with(|| a.cmp(b))
        });
        self.top_by_usage = top(&customers);
        customers.retain(|(_, (_, spend_units))| *spend_units > 0);
        customers.sort_by(|(a, (_, a_spend)), (b, (_, b_spend))| {
            b_spend.cmp(a_spend).then_with(|| a.cmp(b))
        });
        self.top_by_spend = top(&customers);
    }

    /// What `stats` shows of this shard.
    pub fn report(&self, now_ms: u64) -> ActivityReport {
        let mut revenue = self.revenue;
        if revenue.month_start_ms != month_start(now_ms) {
            revenue = RevenueStats {
                month_start_ms: month_start(now_ms),
                ..RevenueStats::default()
            };
        }
        ActivityReport {
            top_by_usage: self.top_by_usage.clone(),
            top_by_spend: self.top_by_spend.clone(),
            recent_invoices: self.recent_invoices.iter().cloned().collect(),
            recent_transactions: self.recent_transactions.iter().cloned().collect(),
            revenue,
            models: self.models.clone(),
        }
    }
}

fn push_recent<T>(list: &mut VecDeque<T>, item: T) {
    list.push_front(item);
    list.truncate(RECENT_MAX);
}

/// Start of the UTC calendar month containing `ms`.
pub fn month_start(ms: u64) -> u64 {
    let Some(at) = DateTime::<Utc>::from_timestamp_millis(ms as i64) else {
        return 0;
    };
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .map_or(0, |start| start.timestamp_millis() as u64)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, DEFAULT_CONFIG_TOML};
    use crate::metering::engine::UsageEvent;

    fn usage(customer: &str, amount: u64, charged: i64) -> UsageEvent {
        UsageEvent {
            customer: customer.into(),
            seq: 1,
            at_ms: 0,
            feature: "tokens".into(),
            amount,
            charged,
            idempotency_key: None,
            model: None,
        }
    }

    #[test]
    fn an_interval_ranks_its_customers_and_a_quiet_one_gives_its_table_back() {
        let mut activity = Activity::default();
        let changes = Changes {
            events: vec![
                usage("b", 5, 0),
                usage("a", 5, 30),
                usage("c", 9, 10),
                usage("a", 1, 5),
            ],
            ..Changes::default()
        };
        let catalogue = Config::parse(DEFAULT_CONFIG_TOML, Path::new("."), "config.toml")
            .unwrap()
            .catalogue;
        let core = ShardCore::new(catalogue, 60_000, Default::default());
        activity.note(&changes, &core, 0); // unknown customers: spend is what they were charged
        activity.roll_interval();
        let names =
            |top: &[TopCustomer]| top.iter().map(|c| c.customer.clone()).collect::<Vec<_>>();
        assert_eq!(names(&activity.top_by_usage), ["c", "a", "b"]);
        assert_eq!(activity.top_by_usage[1].units, 6);
        assert_eq!(
            names(&activity.top_by_spend),
            ["a", "c"],
            "no spend, not listed"
        );
        assert_eq!(activity.top_by_spend[0].spend_units, 35);
        assert!(activity.interval.is_empty());
        assert!(
            activity.interval.capacity() >= 3,
            "room kept for a steady load"
        );
        activity.roll_interval();
        assert!(
            activity.top_by_usage.is_empty(),
            "a quiet interval lists no one"
        );
        assert_eq!(
            activity.interval.capacity(),
            0,
            "a quiet interval gives the table back"
        );
    }

    #[test]
    fn month_start_is_the_first_at_midnight_utc() {
        // 2027-01-15T08:00:00Z → 2027-01-01T00:00:00Z.
        assert_eq!(month_start(1_800_000_000_000), 1_798_761_600_000);
    }
}
