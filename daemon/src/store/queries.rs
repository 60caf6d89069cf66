//! Listing what was persisted: a customer's events by time, its invoices and its transactions.

use tally_protocol::message::LIST_EVENTS_MAX;

use fjall::Keyspace;

use super::records::{self, RecordError, StoredEvent};
use super::{Store, StoreError};
use crate::metering::billing::{Invoice, Transaction};

impl Store {
    /// A customer's checkpointed events from `(at_ms, seq)` = `from` up to `at_ms < to_ms`, oldest
    /// first, at most [`LIST_EVENTS_MAX`]; the flag says whether more follow. (Events still in
    /// the commit log are not seen: the router has the owning shard ask for a checkpoint first.)
    pub fn list_events(
        &self,
        customer: &str,
        from: (u64, u64),
        to_ms: u64,
    ) -> Result<(Vec<StoredEvent>, bool), StoreError> {
        let mut events = Vec::new();
        if from.0 >= to_ms {
            return Ok((events, false));
        }
        let prefix = records::event_prefix(customer);
        let start = records::event_key(customer, from.0, from.1);
        // The segment holding `from` may begin before it: start at the last one that begins at
        // or before `from` (every key between the prefix and `start` is this customer's).
        let begin = match self.segments.range(prefix..=start.clone()).next_back() {
            Some(guard) => guard.key()?.to_vec(),
            None => start,
        };
        let end = records::event_key(customer, to_ms, 0);
        for guard in self.segments.range(begin..end) {
            let (_, value) = guard.into_inner()?;
            for event in records::decode_segment(&value)? {
                if (event.at_ms, event.seq) < from {
                    continue;
                }
                if event.at_ms >= to_ms {
                    return Ok((events, false));
                }
                if events.len() == LIST_EVENTS_MAX {
                    return Ok((events, true));
                }
                events.push(event);
            }
        }
        Ok((events, false))
    }

    /// The customer's newest `limit` invoices, oldest first.
    pub fn list_invoices(&self, customer: &str, limit: usize) -> Result<Vec<Invoice>, StoreError> {
        let mut invoices = newest(&self.invoices, customer, limit, records::decode_invoice)?;
        for invoice in &mut invoices {
            if let Some(lines) = self.invoice_models.get(records::invoice_key(invoice))? {
                invoice.models = records::decode_model_lines(&lines)?;
            }
        }
        Ok(invoices)
    }

    /// The customer's newest `limit` transactions, oldest first.
    pub fn list_transactions(
        &self,
        customer: &str,
        limit: usize,
    ) -> Result<Vec<Transaction>, StoreError> {
        newest(
            &self.transactions,
            customer,
            limit,
            records::decode_transaction,
        )
    }
}

/// The newest `limit` records of `customer` in `keyspace` (keyed by the customer's prefix, in
/// order), oldest first.
fn newest<T>(
    keyspace: &Keyspace,
    customer: &str,
    limit: usize,
    decode: impl Fn(&[u8]) -> Result<T, RecordError>,
) -> Result<Vec<T>, StoreError> {
    let mut found = Vec::new();
    for guard in keyspace.prefix(records::event_prefix(customer)).rev() {
        if found.len() == limit {
            break;
        }
        let (_, value) = guard.into_inner()?;
        found.push(decode(&value)?);
    }
    found.reverse();
    Ok(found)
}
