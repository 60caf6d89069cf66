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

/// One invoice's usage per feature against its period's events.
pub struct InvoiceCheck {
    /// The invoice.
    pub invoice: InvoiceView,
    /// Per feature: (invoiced units, units in the events).
    pub features: BTreeMap<String, (u64, u64)>,
}

impl InvoiceCheck {
    /// Whether every feature's invoiced usage equals its events.
    pub fn is_reconciled(&self) -> bool {
        self.features
            .values()
            .all(|(invoiced, events)| invoiced == events)
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
        invoices_json.push(json!({
            "number": check.invoice.number,
            "period_start": timestamp(check.invoice.period_start_ms),
            "period_end": timestamp(check.invoice.period_end_ms),
            "features": features, "reconciled": check.is_reconciled(),
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
