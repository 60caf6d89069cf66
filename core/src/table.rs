//! A shard's customers, each stored once: fixed-size chunks of [`Customer`]s addressed by a
//! [`Slot`], and a hash index of slots keyed by the id that lives only in the customer.
//!
//! Why not `HashMap<String, Customer>`: that table holds the id twice (key and field) and sizes
//! its buckets for whole customers at a load factor of at most 7/8 rounded up to a power of two —
//! up to 2.3 customer-sizes of memory per customer. Here the index costs 4.6–5.7 bytes per
//! customer ([`SlotIndex`]), the chunks waste at most one chunk, and growing never moves a
//! customer (no multi-megabyte copy stalls the shard). Other per-customer indexes (period ends, hold owners) hold the 4-byte slot
//! instead of a copy of the id. Customers are never removed, so slots never dangle.

use std::hash::{BuildHasher, RandomState};

use super::customer::Customer;
use super::slot_index::SlotIndex;

/// Where a customer lives in its shard's table; stable for the life of the shard.
pub type Slot = u32;

/// Bytes per chunk: small enough that a half-empty last chunk is noise, large enough that the
/// chunk list stays short — and a power of two, because allocators round a block up to a size
/// class or a page (docs/performance.md, "large blocks on mappings of their own"). The daemon
/// asserts that its allocator gives a chunk a mapping of its own.
pub const CHUNK_BYTES: usize = 128 * 1024;

/// Customers per chunk: as many as fit in [`CHUNK_BYTES`].
const CHUNK: usize = CHUNK_BYTES / std::mem::size_of::<Customer>();

/// Customers in slot order, in chunks that never move; on their own (not yet indexed) they are
/// what recovery reads back for a shard.
#[derive(Debug, Default)]
pub struct CustomerRows {
    chunks: Vec<Vec<Customer>>,
    len: usize,
}

impl CustomerRows {
    /// Adds a customer in the next slot and returns that slot.
    pub fn push(&mut self, customer: Customer) -> Slot {
        let slot = Slot::try_from(self.len).expect("a shard holds fewer than 2^32 customers");
        if self.chunks.last().is_none_or(|chunk| chunk.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks
            .last_mut()
            .expect("a chunk with room was just ensured")
            .push(customer);
        self.len += 1;
        slot
    }

    /// How many it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, slot: Slot) -> &Customer {
        let slot = slot as usize;
        &self.chunks[slot / CHUNK][slot % CHUNK]
    }

    fn at_mut(&mut self, slot: Slot) -> &mut Customer {
        let slot = slot as usize;
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }
}

/// A shard's customers.
#[derive(Debug, Default)]
pub struct CustomerTable {
    rows: CustomerRows,
    index: SlotIndex,
    hasher: RandomState,
}

impl CustomerTable {
    /// How many customers it holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The slot of the customer `id`.
    pub fn slot_of(&self, id: &str) -> Option<Slot> {
        self.find(id, self.hasher.hash_one(id))
    }

    fn find(&self, id: &str, hash: u64) -> Option<Slot> {
        self.index.find(hash, |slot| self.rows.at(slot).id() == id)
    }

    /// The customer `id`.
    pub fn get(&self, id: &str) -> Option<&Customer> {
        self.slot_of(id).map(|slot| self.at(slot))
    }

    /// The customer in `slot`. Panics on a slot this table never handed out.
    pub fn at(&self, slot: Slot) -> &Customer {
        self.rows.at(slot)
    }

    /// The customer in `slot`, to change. Panics on a slot this table never handed out.
    pub fn at_mut(&mut self, slot: Slot) -> &mut Customer {
        self.rows.at_mut(slot)
    }

    /// Adds `customer` and returns its slot, or gives it back if its id is taken.
    pub fn insert(&mut self, customer: Customer) -> Result<Slot, Box<Customer>> {
        let hash = self.hasher.hash_one(customer.id());
        if self.find(customer.id(), hash).is_some() {
            return Err(Box::new(customer));
        }
        let slot = self.rows.push(customer);
        self.index_slot(slot, hash);
        Ok(slot)
    }

    /// Indexes customers read back at recovery (the slow part, so it runs on the shard's own
    /// thread); gives back the id of a customer that appears twice.
    pub fn index(rows: CustomerRows) -> Result<Self, String> {
        let mut table = CustomerTable {
            index: SlotIndex::with_capacity(rows.len()),
            rows,
            hasher: RandomState::new(),
        };
        for slot in 0..table.rows.len() as Slot {
            let id = table.rows.at(slot).id();
            let hash = table.hasher.hash_one(id);
            if table.find(id, hash).is_some() {
                return Err(id.to_string());
            }
            table.index_slot(slot, hash);
        }
        Ok(table)
    }

    /// Adds the customer in `slot` (its id hashing to `hash`) to the index.
    fn index_slot(&mut self, slot: Slot, hash: u64) {
        let Self {
            rows,
            index,
            hasher,
        } = self;
        index.insert_next(hash, slot, |other| hasher.hash_one(rows.at(other).id()));
    }

    /// Every customer with its slot, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &Customer)> {
        self.rows
            .chunks
            .iter()
            .flatten()
            .enumerate()
            .map(|(slot, customer)| (slot as Slot, customer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(id: &str) -> Customer {
        let catalogue = crate::shipped::catalogue();
        Customer::new(id, catalogue.plan("pro").unwrap().clone(), 0)
    }

    #[test]
    fn finds_every_customer_by_id_across_chunks_and_index_growth() {
        let mut table = CustomerTable::default();
        let n = CHUNK * 2 + 17;
        for i in 0..n {
            let slot = table.insert(customer(&format!("c-{i}"))).unwrap();
            assert_eq!(slot as usize, i);
        }
        assert_eq!(table.len(), n);
        for i in 0..n {
            let id = format!("c-{i}");
            assert_eq!(table.slot_of(&id), Some(i as Slot));
            assert_eq!(table.get(&id).unwrap().id(), id);
        }
        assert_eq!(table.slot_of("c-missing"), None);
        assert_eq!(table.iter().count(), n);
    }

    #[test]
    fn indexes_customers_read_back_and_refuses_an_id_stored_twice() {
        let mut rows = CustomerRows::default();
        for i in 0..CHUNK + 3 {
            rows.push(customer(&format!("c-{i}")));
        }
        assert_eq!(rows.len(), CHUNK + 3);
        let table = CustomerTable::index(rows).unwrap();
        assert_eq!(table.len(), CHUNK + 3);
        assert_eq!(table.slot_of("c-0"), Some(0));
        assert_eq!(
            table.slot_of(&format!("c-{}", CHUNK + 2)),
            Some(CHUNK as Slot + 2)
        );
        assert_eq!(table.slot_of("c-missing"), None);

        let mut rows = CustomerRows::default();
        for id in ["a", "b", "a"] {
            rows.push(customer(id));
        }
        assert_eq!(CustomerTable::index(rows).unwrap_err(), "a");
    }

    #[test]
    fn refuses_a_taken_id_and_keeps_the_first() {
        let mut table = CustomerTable::default();
        let first = table.insert(customer("acme")).unwrap();
        let before = table.at(first).seq();
        assert!(table.at_mut(first).top_up(0, 1).is_some());
        let refused = table.insert(customer("acme")).unwrap_err();
        assert_eq!(refused.id(), "acme");
        assert_eq!(table.len(), 1);
        assert_eq!(table.get("acme").unwrap().seq(), before + 1);
    }
}
