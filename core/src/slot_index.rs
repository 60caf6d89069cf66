//! A hash index of a shard's customer slots: 4 bytes per entry, at 70–87.5% full.
//!
//! Why not `hashbrown`: its tables are a power of two of 5-byte buckets (4-byte slot, control
//! byte) and grow at 7/8 full, so a shard of 500,000 customers sat in 2^20 buckets, 48% full —
//! 10.5 bytes per customer of the 200 the memory target allows. Here the entry count is any number, grown in steps
//! of 5/4, and an entry packs the slot with a tag of the hash's low bits, so a probe touches a
//! customer only when the tag matches. Linear probing from `hash × len / 2^64`: customers are
//! never removed, so there are no tombstones; at 7/8 full, Knuth's estimates for linear probing
//! are ~32 entries scanned for a miss (two cache lines) and ~4.5 for a hit. (By its growth rule,
//! 500,000 customers — a shard's share of 1M — sit in 650,658 entries: 77% full, 5.2 bytes each.)
//!
//! The index holds slots `0..len` (a table hands slots out in order and never takes one back),
//! so growing re-hashes customers in slot order — through the chunks front to back — instead of
//! chasing each entry's customer in the index's order.

use super::table::Slot;

/// Most entries in use per [`LOAD_DEN`] entries before growing.
const LOAD_NUM: usize = 7;
const LOAD_DEN: usize = 8;

/// Fewest entries: tiny tables (tests, a new shard) skip the first few growth steps.
const ENTRIES_MIN: usize = 16;

/// Slots indexed by hash; see the module doc.
#[derive(Debug, Default)]
pub struct SlotIndex {
    /// 0 is empty; otherwise `slot + 1` in the low [`SlotIndex::slot_bits`] bits and the hash's
    /// tag in the rest.
    entries: Box<[u32]>,
    len: usize,
    slot_bits: u32,
}

impl SlotIndex {
    /// An index with room for `count` slots before it grows.
    pub fn with_capacity(count: usize) -> Self {
        let mut index = SlotIndex::default();
        if count > 0 {
            index.resize(count, |_| {
                unreachable!("a new index holds nothing to re-hash")
            });
        }
        index
    }

    /// The slot whose hash is `hash` and for which `is_it` says yes.
    pub fn find(&self, hash: u64, is_it: impl Fn(Slot) -> bool) -> Option<Slot> {
        if self.entries.is_empty() {
            return None;
        }
        let tag_mask = self.tag_mask();
        let tag = hash as u32 & tag_mask;
        let mut at = self.home(hash);
        loop {
            let entry = self.entries[at];
            if entry == 0 {
                return None;
            }
            if entry & tag_mask == tag {
                let slot = (entry & !tag_mask) - 1;
                if is_it(slot) {
                    return Some(slot);
                }
            }
            at = self.after(at);
        }
    }

    /// Adds `slot` (which must be the next one: as many as it holds) under `hash`, growing first
    /// if need be; `hash_of` gives the hash of a slot already held.
    pub fn insert_next(&mut self, hash: u64, slot: Slot, hash_of: impl Fn(Slot) -> u64) {
        assert_eq!(slot as usize, self.len, "slots are indexed in order");
        if (self.len + 1) * LOAD_DEN > self.entries.len() * LOAD_NUM {
            let room = self.entries.len() * LOAD_NUM / LOAD_DEN;
            self.resize((room + room / 4).max(self.len + 1), hash_of);
        }
        self.place(hash, slot);
        self.len += 1;
    }

    /// Re-builds the entries with room for `count` slots at most 7/8 full.
    fn resize(&mut self, count: usize, hash_of: impl Fn(Slot) -> u64) {
        let entries = (count * LOAD_DEN).div_ceil(LOAD_NUM).max(ENTRIES_MIN);
        // `slot + 1` < `entries` (never full), so this many bits hold it.
        let slot_bits = usize::BITS - entries.leading_zeros();
        assert!(
            slot_bits <= u32::BITS,
            "a shard's index holds fewer than 2^32 entries"
        );
        self.entries = vec![0; entries].into_boxed_slice();
        self.slot_bits = slot_bits;
        for slot in 0..self.len as Slot {
            self.place(hash_of(slot), slot);
        }
    }

    fn place(&mut self, hash: u64, slot: Slot) {
        let entry = (hash as u32 & self.tag_mask()) | (slot + 1);
        let mut at = self.home(hash);
        while self.entries[at] != 0 {
            at = self.after(at);
        }
        self.entries[at] = entry;
    }

    /// The entry a probe looks at after `at` (the last one wraps to the first).
    fn after(&self, at: usize) -> usize {
        if at + 1 == self.entries.len() {
            0
        } else {
            at + 1
        }
    }

    /// Where a hash's probe starts: its high bits scaled to the entry count.
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.entries.len() as u128) >> 64) as usize
    }

    /// The entry bits that hold the tag: those above the slot's.
    fn tag_mask(&self) -> u32 {
        u32::MAX.checked_shl(self.slot_bits).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A deliberately poor hash for some tests: many slots share high bits (one probe run) and
    /// low bits (one tag).
    fn clumped(slot: Slot) -> u64 {
        u64::from(slot % 3) << 62 | u64::from(slot % 5)
    }

    /// A well-spread hash.
    fn mixed(slot: Slot) -> u64 {
        (u64::from(slot) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    #[test]
    fn finds_every_slot_through_growth_and_misses_what_it_does_not_hold() {
        let hash = mixed;
        let mut index = SlotIndex::default();
        assert_eq!(index.find(hash(0), |_| true), None);
        for slot in 0..10_000 {
            index.insert_next(hash(slot), slot, hash);
            assert!(index.len * LOAD_DEN <= index.entries.len() * LOAD_NUM);
        }
        for slot in 0..10_000 {
            assert_eq!(index.find(hash(slot), |s| s == slot), Some(slot));
        }
        assert_eq!(index.find(hash(10_000), |s| s == 10_000), None);
        assert_eq!(index.find(hash(7), |_| false), None);
    }

    #[test]
    fn grows_in_steps_of_a_quarter_and_stays_above_seven_tenths_full() {
        let mut index = SlotIndex::default();
        let mut sizes = vec![];
        for slot in 0..100_000 {
            index.insert_next(mixed(slot), slot, mixed);
            if sizes.last() != Some(&index.entries.len()) {
                sizes.push(index.entries.len());
            }
            if slot >= 1_000 {
                let full = index.len as f64 / index.entries.len() as f64;
                assert!((0.69..=0.875).contains(&full), "{full} at {slot}");
            }
        }
        for step in sizes.windows(2).skip(3) {
            let ratio = step[1] as f64 / step[0] as f64;
            assert!((1.2..1.3).contains(&ratio), "{sizes:?}");
        }
    }

    #[test]
    fn finds_slots_whose_hashes_collide_in_home_and_tag() {
        let mut index = SlotIndex::default();
        for slot in 0..1_000 {
            index.insert_next(clumped(slot), slot, clumped);
        }
        for slot in 0..1_000 {
            assert_eq!(index.find(clumped(slot), |s| s == slot), Some(slot));
        }
        assert_eq!(index.find(clumped(1_000), |s| s == 1_000), None);
    }

    #[test]
    fn sized_for_a_recovery_it_holds_that_many_without_growing() {
        let mut index = SlotIndex::with_capacity(1_000);
        let entries = index.entries.len();
        for slot in 0..1_000 {
            index.insert_next(clumped(slot), slot, clumped);
        }
        assert_eq!(index.entries.len(), entries);
        assert!(entries < 1_000 * 8 / 7 + 2, "{entries}");
    }

    #[test]
    #[should_panic(expected = "slots are indexed in order")]
    fn refuses_a_slot_out_of_order() {
        SlotIndex::default().insert_next(1, 5, |_| 1);
    }

    proptest! {
        #[test]
        fn every_slot_is_found_whatever_the_hashes(hashes in prop::collection::vec(any::<u64>(), 0..400)) {
            let hash_of = |slot: Slot| hashes[slot as usize];
            let mut index = SlotIndex::default();
            for slot in 0..hashes.len() as Slot {
                index.insert_next(hash_of(slot), slot, hash_of);
            }
            for slot in 0..hashes.len() as Slot {
                // Several slots may share a hash: the caller's test tells them apart.
                prop_assert_eq!(index.find(hash_of(slot), |s| s == slot), Some(slot));
            }
        }
    }
}
