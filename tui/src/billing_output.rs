//! How invoices, transactions, events and reconciliations are shown: human tables, one JSON
//! document (`--json`), or CSV rows for invoices. Money in JSON and CSV is a decimal dollar
//! string (`"109.00"`).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tally_protocol::message::{
    CloseReason, EventList, InvoiceLineView, InvoiceView, LineKind, Model, TransactionKind,
    TransactionView, UsageEventView,
};

use crate::output::{dollars, timestamp, Output};

fn reason_name(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Scheduled => "scheduled",
        CloseReason::Manual => "manual",
        CloseReason::PlanChange => "plan_change",
    }
}

fn kind_name(kind: LineKind) -> &'static str {
    match kind {
        LineKind::Base => "base",
        LineKind::Metered => "metered",
        LineKind::Usage => "usage",
        LineKind::Debt => "debt",
    }
}

fn unit_price(model: Model, line: &InvoiceLineView) -> String {
    if model == Model::Credits && line.kind == LineKind::Usage {
        // Credits features are priced in credits, not dollars.
        return format!("{} credits", line.price_units);
    }
    match line.per {
        1 => dollars(line.price_units),
        per => format!("{} per {per}", dollars(line.price_units)),
    }
}

fn line_json(model: Model, line: &InvoiceLineView) -> Value {
    json!({
        "kind": kind_name(line.kind), "feature": line.feature, "used": line.used,
        "included": line.included, "overage": line.overage, "unit_price": unit_price(model, line),
        "per": line.per, "consumed": line.consumed, "amount": dollars(line.amount_units),
    })
}

/// One invoice as JSON.
pub fn invoice_json(invoice: &InvoiceView) -> Value {
    json!({
        "customer": invoice.customer, "number": invoice.number, "plan": invoice.plan,
        "period_start": timestamp(invoice.period_start_ms), "period_end": timestamp(invoice.period_end_ms),
        "closed_at": timestamp(invoice.closed_at_ms), "reason": reason_name(invoice.reason),
        "lines": invoice.lines.iter().map(|l| line_json(invoice.model, l)).collect::<Vec<_>>(),
        "total": dollars(invoice.total_units), "fee": dollars(invoice.fee_units), "net": dollars(invoice.net_units),
    })
}

fn invoice_human(invoice: &InvoiceView) -> String {
    let mut out = format!(
        "invoice #{} for {} on {} ({}), {} → {}\n",
        invoice.number,
        invoice.customer,
        invoice.plan,
        reason_name(invoice.reason),
        timestamp(invoice.period_start_ms),
        timestamp(invoice.period_end_ms)
    );
    out.push_str(&format!(
        "  {:<8} {:<18} {:>12} {:>12} {:>12} {:>20} {:>12}\n",
        "line", "feature", "used", "included", "charged", "unit price", "amount"
    ));
    for line in &invoice.lines {
        out.push_str(&format!(
            "  {:<8} {:<18} {:>12} {:>12} {:>12} {:>20} {:>12}\n",
            kind_name(line.kind),
            line.feature,
            line.used,
            line.included,
            line.overage,
            unit_price(invoice.model, line),
            dollars(line.amount_units)
        ));
    }
    out.push_str(&format!(
        "  total ${}   fee ${}   net ${}",
        dollars(invoice.total_units),
        dollars(invoice.fee_units),
        dollars(invoice.net_units)
    ));
    out
}

/// `tally close-period`.
pub fn closed(invoice: &InvoiceView) -> Output {
    Output {
        json: invoice_json(invoice),
        human: invoice_human(invoice),
    }
}

/// `tally invoices`.
pub fn invoices(customer: &str, invoices: &[InvoiceView]) -> Output {
    let human = if invoices.is_empty() {
        format!("{customer} has no invoices yet")
    } else {
        invoices
            .iter()
            .map(invoice_human)
            .collect::<Vec<_>>()
            .join("\n\n")
    };
    Output {
        json: json!({ "customer": customer, "invoices": invoices.iter().map(invoice_json).collect::<Vec<_>>() }),
        human,
    }
}

/// `tally invoices --csv`: one row per invoice line, with the invoice's totals on each row.
pub fn invoices_csv(invoices: &[InvoiceView]) -> String {
    let mut out = String::from(
        "customer,number,plan,period_start,period_end,reason,line,feature,used,included,charged,unit_price,per,amount,total,fee,net\n",
    );
    for invoice in invoices {
        for line in &invoice.lines {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                csv_field(&invoice.customer),
                invoice.number,
                csv_field(&invoice.plan),
                timestamp(invoice.period_start_ms),
                timestamp(invoice.period_end_ms),
                reason_name(invoice.reason),
                kind_name(line.kind),
                csv_field(&line.feature),
                line.used,
                line.included,
                line.overage,
                csv_field(&unit_price(invoice.model, line)),
                line.per,
                dollars(line.amount_units),
                dollars(invoice.total_units),
                dollars(invoice.fee_units),
                dollars(invoice.net_units)
            ));
        }
    }
    out
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn transaction_kind(kind: TransactionKind) -> &'static str {
    match kind {
        TransactionKind::CreditPurchase => "credit_purchase",
        TransactionKind::BalanceTopUp => "balance_top_up",
    }
}

/// One transaction as JSON.
pub fn transaction_json(t: &TransactionView) -> Value {
    json!({
        "customer": t.customer, "number": t.number, "kind": transaction_kind(t.kind),
        "at": timestamp(t.at_ms), "quantity": t.quantity,
        "total": dollars(t.total_units), "fee": dollars(t.fee_units), "net": dollars(t.net_units),
    })
}

/// `tally transactions`.
pub fn transactions(customer: &str, transactions: &[TransactionView]) -> Output {
    let mut human = format!(
        "{:>4} {:<16} {:<25} {:>10} {:>10} {:>8} {:>10}",
        "#", "kind", "at", "quantity", "total", "fee", "net"
    );
    for t in transactions {
        human.push_str(&format!(
            "\n{:>4} {:<16} {:<25} {:>10} {:>10} {:>8} {:>10}",
            t.number,
            transaction_kind(t.kind),
            timestamp(t.at_ms),
            t.quantity,
            dollars(t.total_units),
            dollars(t.fee_units),
            dollars(t.net_units)
        ));
    }
    Output {
        json: json!({ "customer": customer, "transactions": transactions.iter().map(transaction_json).collect::<Vec<_>>() }),
        human,
    }
}

fn event_json(e: &UsageEventView) -> Value {
    json!({
        "at": timestamp(e.at_ms), "at_ms": e.at_ms, "seq": e.seq, "feature": e.feature,
        "amount": e.amount, "charged": e.charged,
        "idempotency_key": e.idempotency_key.map(hex::encode),
    })
}

/// `tally events`.
pub fn events(customer: &str, list: &EventList) -> Output {
    let mut human = format!(
        "{:<25} {:>8} {:<16} {:>12} {:>10}",
        "at", "seq", "feature", "amount", "charged"
    );
    for e in &list.events {
        human.push_str(&format!(
            "\n{:<25} {:>8} {:<16} {:>12} {:>10}",
            timestamp(e.at_ms),
            e.seq,
            e.feature,
            e.amount,
            e.charged
        ));
    }
    if list.more {
        human.push_str("\n… more events follow; narrow the range with --from/--to");
    }
    Output {
        json: json!({ "customer": customer, "events": list.events.iter().map(event_json).collect::<Vec<_>>(), "more": list.more }),
        human,
    }
}

/// An invoice beside the events of its period.
#[derive(Debug)]
pub struct InvoiceCheck {
    /// The invoice.
    pub invoice: InvoiceView,
    /// Per feature: (invoiced units, units in the events).
    pub features: BTreeMap<String, (u64, u64)>,
    /// Every usage line beside the events that make it up.
    pub lines: Vec<LineCheck>,
}

/// One metered or usage line beside its events: a feature's events are taken in order, each
/// line of the feature taking as many units as it invoices (a price change splits a feature's
/// usage into one line per price, in time order).
#[derive(Debug, Clone, PartialEq)]
pub struct LineCheck {
    /// The line's position in the invoice.
    pub position: usize,
    /// The feature.
    pub feature: String,
    /// Units the line invoices, and units of its events.
    pub used: (u64, u64),
    /// What the line charges (rate units; credits for a credits plan's usage line), and the sum
    /// of its events' charges.
    pub amount: (i64, i64),
}

impl LineCheck {
    /// Whether the line agrees with its events to the unit and to the rate unit.
    pub fn is_reconciled(&self) -> bool {
        self.used.0 == self.used.1 && self.amount.0 == self.amount.1
    }
}

impl InvoiceCheck {
    /// Lines each beside their events: `events` per feature, `(units, charged)` in time order.
    pub fn new(invoice: InvoiceView, events: &BTreeMap<String, Vec<(u64, i64)>>) -> InvoiceCheck {
        let mut features: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut lines = Vec::new();
        let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
        for (position, line) in invoice.lines.iter().enumerate() {
            if !matches!(line.kind, LineKind::Metered | LineKind::Usage) {
                continue;
            }
            features.entry(line.feature.clone()).or_default().0 += line.used;
            let feature_events = events.get(&line.feature).map_or(&[][..], Vec::as_slice);
            let next = taken.entry(line.feature.as_str()).or_default();
            let (mut used, mut charged) = (0u64, 0i64);
            while used < line.used && *next < feature_events.len() {
                let (units, cost) = feature_events[*next];
                used += units;
                charged += cost;
                *next += 1;
            }
            let amount = match line.kind {
                LineKind::Metered => line.amount_units,
                _ => line.consumed,
            };
            lines.push(LineCheck {
                position,
                feature: line.feature.clone(),
                used: (line.used, used),
                amount: (amount, charged),
            });
        }
        for (feature, feature_events) in events {
            features.entry(feature.clone()).or_default().1 +=
                feature_events.iter().map(|(units, _)| units).sum::<u64>();
        }
        InvoiceCheck {
            invoice,
            features,
            lines,
        }
    }

    /// Whether every feature's invoiced usage equals its events, and every line's money the
    /// sum of its events' charges.
    pub fn is_reconciled(&self) -> bool {
        self.features
            .values()
            .all(|(invoiced, events)| invoiced == events)
            && self.lines.iter().all(LineCheck::is_reconciled)
    }
}

/// `tally reconcile`.
pub fn reconciliation(customer: &str, checks: &[InvoiceCheck]) -> Output {
    let is_reconciled = checks.iter().all(InvoiceCheck::is_reconciled);
    let mut human = Vec::new();
    let mut invoices_json = Vec::new();
    for check in checks {
        let mut features = serde_json::Map::new();
        for (feature, (invoiced, events)) in &check.features {
            features.insert(
                feature.clone(),
                json!({ "invoiced": invoiced, "events": events, "ok": invoiced == events }),
            );
            human.push(format!(
                "invoice #{} {} → {} {:<16} invoiced {:>12} events {:>12} {}",
                check.invoice.number,
                timestamp(check.invoice.period_start_ms),
                timestamp(check.invoice.period_end_ms),
                feature,
                invoiced,
                events,
                if invoiced == events { "ok" } else { "MISMATCH" }
            ));
        }
        let mut lines_json = Vec::new();
        for line in &check.lines {
            let amount = |value: i64| match check.invoice.model {
                Model::Credits => format!("{value} credits"),
                _ => dollars(value),
            };
            human.push(format!(
                "invoice #{} line {} {:<16} invoiced {:>14} events {:>14} {}",
                check.invoice.number,
                line.position + 1,
                line.feature,
                amount(line.amount.0),
                amount(line.amount.1),
                if line.is_reconciled() {
                    "ok"
                } else {
                    "MISMATCH"
                }
            ));
            lines_json.push(json!({
                "line": line.position + 1, "feature": line.feature,
                "invoiced_units": line.used.0, "events_units": line.used.1,
                "invoiced_amount": line.amount.0, "events_amount": line.amount.1,
                "ok": line.is_reconciled(),
            }));
        }
        invoices_json.push(json!({
            "number": check.invoice.number,
            "period_start": timestamp(check.invoice.period_start_ms),
            "period_end": timestamp(check.invoice.period_end_ms),
            "features": features, "lines": lines_json, "reconciled": check.is_reconciled(),
        }));
    }
    human.push(if is_reconciled {
        format!(
            "{customer}: {} invoices reconcile with the stored events",
            checks.len()
        )
    } else {
        format!("{customer}: invoices and events DIFFER")
    });
    Output {
        json: json!({ "customer": customer, "reconciled": is_reconciled, "invoices": invoices_json }),
        human: human.join("\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metered_line(used: u64, included: u64, amount_units: i64) -> InvoiceLineView {
        InvoiceLineView {
            kind: LineKind::Metered,
            feature: "tokens".into(),
            used,
            included,
            overage: used.saturating_sub(included),
            price_units: 0,
            per: 1,
            consumed: 0,
            amount_units,
        }
    }

    /// 130,000 tokens at $0.002 over 100,000 included, then 10,000 at $0.003: two lines.
    fn invoice(second_amount_units: i64) -> InvoiceView {
        let base = InvoiceLineView {
            kind: LineKind::Base,
            feature: String::new(),
            used: 1,
            amount_units: 490_000,
            ..metered_line(0, 0, 0)
        };
        InvoiceView {
            customer: "p".into(),
            number: 1,
            plan: "pro".into(),
            model: Model::Metered,
            period_start_ms: 0,
            period_end_ms: 10,
            closed_at_ms: 10,
            reason: CloseReason::Manual,
            lines: vec![
                base,
                metered_line(130_000, 100_000, 600_000),
                metered_line(10_000, 100_000, second_amount_units),
            ],
            models: Vec::new(),
            total_units: 1_390_000,
            fee_units: 0,
            net_units: 0,
        }
    }

    fn events() -> BTreeMap<String, Vec<(u64, i64)>> {
        BTreeMap::from([(
            "tokens".to_string(),
            vec![(100_000, 0), (30_000, 600_000), (10_000, 300_000)],
        )])
    }

    #[test]
    fn each_line_is_set_beside_its_own_events_in_order() {
        let check = InvoiceCheck::new(invoice(300_000), &events());
        assert!(check.is_reconciled(), "{check:?}");
        assert_eq!(check.lines.len(), 2);
        assert_eq!(check.lines[0].amount, (600_000, 600_000));
        assert_eq!(check.lines[1].used, (10_000, 10_000));
        assert_eq!(check.features["tokens"], (140_000, 140_000));
    }

    #[test]
    fn a_line_whose_money_differs_from_its_events_is_a_mismatch_with_both_figures() {
        // The whole period repriced at the new price: the events say $30.00, the line $120.00.
        let check = InvoiceCheck::new(invoice(1_200_000), &events());
        assert!(!check.is_reconciled());
        let out = reconciliation("p", &[check]);
        assert!(out.human.contains("120.00"), "{}", out.human);
        assert!(out.human.contains(" 30.00"), "{}", out.human);
        assert!(out.human.contains("MISMATCH"), "{}", out.human);
        assert_eq!(out.json["reconciled"], false);
        assert_eq!(
            out.json["invoices"][0]["lines"][1]["events_amount"],
            300_000
        );
    }
}
