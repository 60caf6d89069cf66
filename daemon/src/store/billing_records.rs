//! Invoices and transactions as the store keeps them: disk records of their own, with the
//! core's enums as the one-byte codes the format has always used (so a store written before
//! reads back unchanged), and the conversions both ways — an unknown code is a corrupt record.

use rkyv::{Archive, Deserialize, Serialize};
use tally_protocol::message::{CloseReason, LineKind, Model, TransactionKind};

use tally_protocol::codec::decode;

use super::records::{encode, RecordError};
use crate::metering::billing::{Invoice, InvoiceLine, Transaction};

/// A closed period's invoice as stored (`invoices` keyspace).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct StoredInvoice {
    customer: String,
    number: u64,
    plan: String,
    /// 0 metered, 1 credits, 2 balance.
    model: u8,
    period_start_ms: u64,
    period_end_ms: u64,
    closed_at_ms: u64,
    /// 0 scheduled, 1 manual, 2 plan change.
    reason: u8,
    lines: Vec<StoredInvoiceLine>,
    total_units: i64,
    fee_units: i64,
    net_units: i64,
}

/// One invoice line as stored.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct StoredInvoiceLine {
    /// 0 base, 1 metered, 2 usage, 3 debt.
    kind: u8,
    feature: String,
    used: u64,
    included: u64,
    overage: u64,
    price_units: i64,
    per: u64,
    consumed: i64,
    amount_units: i64,
}

/// A purchase or top-up as stored (`transactions` keyspace).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct StoredTransaction {
    customer: String,
    number: u64,
    /// 0 credit purchase, 1 balance top-up.
    kind: u8,
    at_ms: u64,
    quantity: u64,
    total_units: i64,
    fee_units: i64,
    net_units: i64,
}

fn model_code(model: Model) -> u8 {
    match model {
        Model::Metered => 0,
        Model::Credits => 1,
        Model::Balance => 2,
    }
}

fn reason_code(reason: CloseReason) -> u8 {
    match reason {
        CloseReason::Scheduled => 0,
        CloseReason::Manual => 1,
        CloseReason::PlanChange => 2,
    }
}

fn line_code(kind: LineKind) -> u8 {
    match kind {
        LineKind::Base => 0,
        LineKind::Metered => 1,
        LineKind::Usage => 2,
        LineKind::Debt => 3,
    }
}

fn corrupt(what: &'static str, field: &str, code: u8) -> RecordError {
    RecordError::Corrupt {
        what,
        reason: format!("{field} code {code} is not one this tallyd knows"),
    }
}

impl From<&Invoice> for StoredInvoice {
    fn from(invoice: &Invoice) -> Self {
        StoredInvoice {
            customer: invoice.customer.clone(),
            number: invoice.number,
            plan: invoice.plan.clone(),
            model: model_code(invoice.model),
            period_start_ms: invoice.period_start_ms,
            period_end_ms: invoice.period_end_ms,
            closed_at_ms: invoice.closed_at_ms,
            reason: reason_code(invoice.reason),
            lines: invoice
                .lines
                .iter()
                .map(|l| StoredInvoiceLine {
                    kind: line_code(l.kind),
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
            total_units: invoice.total_units,
            fee_units: invoice.fee_units,
            net_units: invoice.net_units,
        }
    }
}

impl TryFrom<StoredInvoice> for Invoice {
    type Error = RecordError;

    fn try_from(stored: StoredInvoice) -> Result<Self, RecordError> {
        let model = match stored.model {
            0 => Model::Metered,
            1 => Model::Credits,
            2 => Model::Balance,
            code => return Err(corrupt("invoice", "model", code)),
        };
        let reason = match stored.reason {
            0 => CloseReason::Scheduled,
            1 => CloseReason::Manual,
            2 => CloseReason::PlanChange,
            code => return Err(corrupt("invoice", "close reason", code)),
        };
        let lines = stored
            .lines
            .into_iter()
            .map(|l| {
                let kind = match l.kind {
                    0 => LineKind::Base,
                    1 => LineKind::Metered,
                    2 => LineKind::Usage,
                    3 => LineKind::Debt,
                    code => return Err(corrupt("invoice", "line kind", code)),
                };
                Ok(InvoiceLine {
                    kind,
                    feature: l.feature,
                    used: l.used,
                    included: l.included,
                    overage: l.overage,
                    price_units: l.price_units,
                    per: l.per,
                    consumed: l.consumed,
                    amount_units: l.amount_units,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Invoice {
            customer: stored.customer,
            number: stored.number,
            plan: stored.plan,
            model,
            period_start_ms: stored.period_start_ms,
            period_end_ms: stored.period_end_ms,
            closed_at_ms: stored.closed_at_ms,
            reason,
            lines,
            // Kept beside the invoice (`invoice_models`), read by the listing.
            models: Vec::new(),
            total_units: stored.total_units,
            fee_units: stored.fee_units,
            net_units: stored.net_units,
        })
    }
}

impl From<&Transaction> for StoredTransaction {
    fn from(t: &Transaction) -> Self {
        StoredTransaction {
            customer: t.customer.clone(),
            number: t.number,
            kind: match t.kind {
                TransactionKind::CreditPurchase => 0,
                TransactionKind::BalanceTopUp => 1,
            },
            at_ms: t.at_ms,
            quantity: t.quantity,
            total_units: t.total_units,
            fee_units: t.fee_units,
            net_units: t.net_units,
        }
    }
}

impl TryFrom<StoredTransaction> for Transaction {
    type Error = RecordError;

    fn try_from(stored: StoredTransaction) -> Result<Self, RecordError> {
        let kind = match stored.kind {
            0 => TransactionKind::CreditPurchase,
            1 => TransactionKind::BalanceTopUp,
            code => return Err(corrupt("transaction", "kind", code)),
        };
        Ok(Transaction {
            customer: stored.customer,
            number: stored.number,
            kind,
            at_ms: stored.at_ms,
            quantity: stored.quantity,
            total_units: stored.total_units,
            fee_units: stored.fee_units,
            net_units: stored.net_units,
        })
    }
}

/// An invoice as stored.
pub fn encode_invoice(invoice: &Invoice) -> Vec<u8> {
    encode(&StoredInvoice::from(invoice))
}

/// A stored invoice, checked.
pub fn decode_invoice(bytes: &[u8]) -> Result<Invoice, RecordError> {
    let stored: StoredInvoice = decode(bytes).map_err(|e| RecordError::Corrupt {
        what: "invoice",
        reason: e.to_string(),
    })?;
    Invoice::try_from(stored)
}

/// A transaction as stored.
pub fn encode_transaction(transaction: &Transaction) -> Vec<u8> {
    encode(&StoredTransaction::from(transaction))
}

/// A stored transaction, checked.
pub fn decode_transaction(bytes: &[u8]) -> Result<Transaction, RecordError> {
    let stored: StoredTransaction = decode(bytes).map_err(|e| RecordError::Corrupt {
        what: "transaction",
        reason: e.to_string(),
    })?;
    Transaction::try_from(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_code_is_a_corrupt_record_not_a_guess() {
        let mut stored = StoredTransaction {
            customer: "acme".into(),
            number: 1,
            kind: 1,
            at_ms: 5,
            quantity: 10_000,
            total_units: 10_000,
            fee_units: 4_500,
            net_units: 5_500,
        };
        let back = decode_transaction(&encode(&stored)).unwrap();
        assert_eq!(back.kind, TransactionKind::BalanceTopUp);
        assert_eq!(
            encode_transaction(&back),
            encode(&stored),
            "the same bytes as before"
        );
        stored.kind = 7;
        let error = decode_transaction(&encode(&stored)).unwrap_err();
        assert!(error.to_string().contains("kind code 7"), "{error}");
    }
}
