//! The allocator `tallyd` installs: mimalloc, except that large blocks get a mapping of their own.
//!
//! mimalloc keeps blocks over ~84 KiB in 4-MiB pages and gives a page back only once every block
//! in it is free, so a few long-lived large blocks among short-lived ones kept whole pages
//! resident (docs/performance.md, "large blocks on mappings of their own"). A block of
//! [`OWN_MAPPING_MIN`] or more is mapped on its own, so what stays resident is what is in use;
//! the hot path's smaller blocks stay with mimalloc. Freed mappings are kept for reuse by the
//! next block of their size class, up to [`CACHE_BYTES_MAX`] (mapping afresh each time cost
//! batches a fifth of their throughput), until the daemon goes quiet ([`release_cached`], from
//! `memory::release_idle`).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Mutex, MutexGuard};

/// Blocks this large and up get a mapping of their own: above mimalloc's medium classes (which
/// share 512-KiB pages), where its pages are 4 MiB.
pub const OWN_MAPPING_MIN: usize = 96 * 1024;
// The customer table's chunks are the blocks this is for.
const _: () = assert!(tally_core::table::CHUNK_BYTES >= OWN_MAPPING_MIN);

/// Most bytes of freed mappings kept for reuse.
pub const CACHE_BYTES_MAX: usize = 32 << 20;

/// Most freed mappings kept for reuse.
const CACHE_ENTRIES_MAX: usize = 64;

/// The page size mappings are counted in, and the alignment a fresh mapping always has.
const PAGE: usize = 4096;

/// mimalloc, with blocks of [`OWN_MAPPING_MIN`] bytes and up mapped on their own.
#[derive(Debug, Default, Clone, Copy)]
pub struct TallyAllocator;

fn own_mapping(size: usize, align: usize) -> bool {
    size >= OWN_MAPPING_MIN && align <= PAGE
}

/// The length of the mapping that holds a block of `size` bytes: whole pages, rounded up to one
/// of four classes per doubling, so that a freed mapping fits the next block of nearly the same
/// size. Pages past the block's end are only address space until something writes them.
fn mapping_len(size: usize) -> usize {
    let pages = size.div_ceil(PAGE);
    let step = (1usize << pages.ilog2()).div_ceil(4);
    pages.div_ceil(step) * step * PAGE
}

/// Mappings as (address, length).
type Entries = [(usize, usize); CACHE_ENTRIES_MAX];

/// Freed mappings kept for reuse, oldest first.
struct Cache {
    entries: Entries,
    count: usize,
    bytes: usize,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    entries: [(0, 0); CACHE_ENTRIES_MAX],
    count: 0,
    bytes: 0,
});

fn cache() -> MutexGuard<'static, Cache> {
    // Nothing panics while holding it; a poisoned cache is still a valid list.
    CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cache {
    /// A kept mapping for a block needing `len` bytes: one of exactly that length if there is
    /// one, else the most recently kept (the caller resizes it). The newest first: its pages
    /// are the likeliest to be resident.
    fn take(&mut self, len: usize) -> Option<(*mut u8, usize)> {
        let kept = &self.entries[..self.count];
        let index = kept
            .iter()
            .rposition(|&(_, entry_len)| entry_len == len)
            .or(self.count.checked_sub(1))?;
        let (address, entry_len) = self.entries[index];
        self.entries.copy_within(index + 1..self.count, index);
        self.count -= 1;
        self.bytes -= entry_len;
        Some((address as *mut u8, entry_len))
    }

    /// Keeps the mapping, first making room by moving the oldest kept ones to `evicted`;
    /// returns how many it moved (a mapping larger than the whole cache is itself evicted).
    fn keep(&mut self, address: *mut u8, len: usize, evicted: &mut Entries) -> usize {
        if len > CACHE_BYTES_MAX {
            evicted[0] = (address as usize, len);
            return 1;
        }
        let mut moved = 0;
        while self.count == CACHE_ENTRIES_MAX || self.bytes + len > CACHE_BYTES_MAX {
            let oldest = self.entries[0];
            self.entries.copy_within(1..self.count, 0);
            self.count -= 1;
            self.bytes -= oldest.1;
            evicted[moved] = oldest;
            moved += 1;
        }
        self.entries[self.count] = (address as usize, len);
        self.count += 1;
        self.bytes += len;
        moved
    }
}

/// Unmaps every freed mapping kept for reuse: what a quiet process calls so that what stays
/// resident is what is in use.
pub fn release_cached() {
    let mut taken = [(0, 0); CACHE_ENTRIES_MAX];
    let count = {
        let mut cache = cache();
        let count = cache.count;
        taken[..count].copy_from_slice(&cache.entries[..count]);
        cache.count = 0;
        cache.bytes = 0;
        count
    };
    for &(address, len) in &taken[..count] {
        // SAFETY: a cached entry is a whole mapping of ours that no block uses any more.
        unsafe { unmap(address as *mut u8, len) };
    }
}

/// Bytes of freed mappings kept for reuse right now.
#[cfg(test)]
fn cached_bytes() -> usize {
    cache().bytes
}

/// A mapping for a block of `size` bytes (a kept one if there is one, resized), or null; its
/// bytes are whatever they were.
fn map(size: usize) -> *mut u8 {
    let len = mapping_len(size);
    let kept = cache().take(len);
    if let Some((address, kept_len)) = kept {
        if kept_len == len {
            return address;
        }
        // SAFETY: a kept mapping is a whole mapping of ours that no block uses.
        let resized = unsafe { remap(address, kept_len, len) };
        if !resized.is_null() {
            return resized;
        }
        // SAFETY: as above; it failed to resize, so it is still whole.
        unsafe { unmap(address, kept_len) };
    }
    map_fresh(len)
}

/// The mapping resized to `new_len`, or null (and the mapping as it was) if the kernel refuses.
///
/// # Safety
/// `ptr` and `old_len` are one whole mapping of ours; the caller's `ptr` is invalid afterwards
/// unless this returns null.
unsafe fn remap(ptr: *mut u8, old_len: usize, new_len: usize) -> *mut u8 {
    // SAFETY: per the caller. Shrinking stays in place; growing may move the mapping (its pages,
    // not their bytes).
    let moved = unsafe { libc::mremap(ptr.cast(), old_len, new_len, libc::MREMAP_MAYMOVE) };
    null_if_failed(moved)
}

fn null_if_failed(address: *mut libc::c_void) -> *mut u8 {
    if address == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        address.cast()
    }
}

/// A new mapping of `len` bytes, zero and not resident until written, or null.
fn map_fresh(len: usize) -> *mut u8 {
    // SAFETY: a new anonymous mapping at an address the kernel picks touches no existing memory.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    null_if_failed(address)
}

/// # Safety
/// `ptr` is the mapping [`map`] returned for a block of `size` bytes, not used afterwards.
unsafe fn free_mapping(ptr: *mut u8, size: usize) {
    // Unmapped after the lock is let go; on the stack, as the allocator must not allocate here.
    let mut evicted = [(0, 0); CACHE_ENTRIES_MAX];
    let count = cache().keep(ptr, mapping_len(size), &mut evicted);
    for &(address, len) in &evicted[..count] {
        // SAFETY: evicted entries are whole mappings of ours that no block uses any more.
        unsafe { unmap(address as *mut u8, len) }
    }
}

/// # Safety
/// `ptr` and `len` are one whole mapping, not used afterwards.
unsafe fn unmap(ptr: *mut u8, len: usize) {
    // SAFETY: per the caller. It cannot fail for a range that was mapped; if it did, the memory
    // would only stay mapped.
    unsafe { libc::munmap(ptr.cast(), len) };
}

// SAFETY: every block is either mimalloc's (asked for, resized and freed only through mimalloc,
// with the layout the caller passed) or a mapping of ours of `mapping_len(size)` bytes; which of
// the two is decided by the layout alone, which `GlobalAlloc` guarantees is the same at
// allocation, resize and free. A mapping is in the cache only while no block uses it.
unsafe impl GlobalAlloc for TallyAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if own_mapping(layout.size(), layout.align()) {
            map(layout.size())
        } else {
            // SAFETY: the caller's contract for `alloc` is mimalloc's.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if own_mapping(layout.size(), layout.align()) {
            // Not a kept one: zeroing it would make every page resident, where a fresh mapping
            // is zero and resident only where written (a histogram's counts, a sparse table).
            map_fresh(mapping_len(layout.size()))
        } else {
            // SAFETY: the caller's contract for `alloc_zeroed` is mimalloc's.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if own_mapping(layout.size(), layout.align()) {
            // SAFETY: a block of this layout came from `map` with this size.
            unsafe { free_mapping(ptr, layout.size()) }
        } else {
            // SAFETY: a block of this layout came from mimalloc.
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        match (
            own_mapping(layout.size(), align),
            own_mapping(new_size, align),
        ) {
            // SAFETY: both sizes are mimalloc's; the caller's contract for `realloc` is its.
            (false, false) => unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) },
            (true, true) => {
                let (old_len, new_len) = (mapping_len(layout.size()), mapping_len(new_size));
                if old_len == new_len {
                    return ptr;
                }
                // SAFETY: `ptr` is a whole mapping of `old_len` bytes (a block of this layout);
                // on null the caller keeps the old block, which `remap` left as it was.
                unsafe { remap(ptr, old_len, new_len) }
            }
            _ => {
                // SAFETY: `new_size` with the old alignment is a valid layout (the caller's
                // contract for `realloc`).
                let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
                // SAFETY: a non-zero size (the caller's contract).
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks are live, distinct and at least this long.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache is process-wide: the tests that use it take turns.
    static TURN: Mutex<()> = Mutex::new(());

    fn turn() -> MutexGuard<'static, ()> {
        TURN.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[test]
    fn mapping_lengths_are_whole_pages_in_four_classes_per_doubling() {
        assert_eq!(mapping_len(OWN_MAPPING_MIN), OWN_MAPPING_MIN);
        assert_eq!(mapping_len(OWN_MAPPING_MIN + 1), 112 * 1024);
        assert_eq!(mapping_len(104 * 1024), 112 * 1024);
        assert_eq!(mapping_len(128 * 1024), 128 * 1024);
        assert_eq!(mapping_len(208 * 1024), 224 * 1024);
        for size in (OWN_MAPPING_MIN..(8 << 20)).step_by(4093) {
            let len = mapping_len(size);
            assert_eq!(len % PAGE, 0);
            assert!(len >= size, "{size}");
            assert!(len - size < size / 4 + PAGE, "{size} → {len}");
            assert!(mapping_len(len) == len, "a class's length is its own class");
        }
    }

    #[test]
    fn a_freed_mapping_is_reused_for_its_class_until_released() {
        let _turn = turn();
        let allocator = TallyAllocator;
        release_cached();
        // SAFETY: non-zero sizes, each block freed with the layout it was asked with; mincore
        // only reads the page table.
        unsafe {
            let first = Layout::from_size_align(3 << 20, 8).unwrap();
            let ptr = allocator.alloc(first);
            fill(ptr, first.size());
            allocator.dealloc(ptr, first);
            assert_eq!(cached_bytes(), mapping_len(first.size()));
            // A zeroed block is a fresh mapping (zero, resident only where written).
            let zeroed = allocator.alloc_zeroed(first);
            assert_ne!(zeroed, ptr);
            assert!((0..first.size()).all(|i| zeroed.add(i).read() == 0));
            assert_eq!(cached_bytes(), mapping_len(first.size()));
            allocator.dealloc(zeroed, first);
            // Same class, a little smaller: a kept mapping, as it was.
            release_cached();
            let ptr = allocator.alloc(first);
            fill(ptr, first.size());
            allocator.dealloc(ptr, first);
            let second = Layout::from_size_align((3 << 20) - 1000, 8).unwrap();
            let again = allocator.alloc(second);
            assert_eq!(again, ptr);
            assert_eq!(cached_bytes(), 0);
            assert!(holds_fill(again, second.size()));
            allocator.dealloc(again, second);
            release_cached();
            assert_eq!(cached_bytes(), 0);
            let mut residency = [0u8; 1];
            let status = libc::mincore(ptr.cast(), PAGE, residency.as_mut_ptr());
            assert_eq!(status, -1, "released mappings are unmapped");
        }
    }

    #[test]
    fn the_cache_keeps_at_most_its_byte_limit() {
        let _turn = turn();
        let allocator = TallyAllocator;
        release_cached();
        let layout = Layout::from_size_align(5 << 20, 8).unwrap();
        let blocks = CACHE_BYTES_MAX / mapping_len(layout.size()) + 2;
        // SAFETY: non-zero sizes, each block freed with the layout it was asked with.
        unsafe {
            let held: Vec<_> = (0..blocks).map(|_| allocator.alloc(layout)).collect();
            for ptr in held {
                allocator.dealloc(ptr, layout);
            }
        }
        assert!(cached_bytes() <= CACHE_BYTES_MAX);
        assert!(cached_bytes() > CACHE_BYTES_MAX - mapping_len(layout.size()));
        release_cached();
    }

    fn fill(ptr: *mut u8, len: usize) {
        for i in 0..len {
            // SAFETY: the test's block is at least `len` long.
            unsafe { ptr.add(i).write(i as u8 ^ 0x5a) };
        }
    }

    fn holds_fill(ptr: *const u8, len: usize) -> bool {
        // SAFETY: the test's block is at least `len` long.
        (0..len).all(|i| unsafe { ptr.add(i).read() } == i as u8 ^ 0x5a)
    }

    #[test]
    fn blocks_on_both_sides_of_the_threshold_keep_their_bytes_through_resizes() {
        let _turn = turn();
        let allocator = TallyAllocator;
        let sizes = [
            64,
            OWN_MAPPING_MIN - 1,
            OWN_MAPPING_MIN,
            OWN_MAPPING_MIN + 1,
            3 * OWN_MAPPING_MIN + 17,
            16,
        ];
        let layout = Layout::from_size_align(sizes[0], 8).unwrap();
        // SAFETY: a non-zero size; each resize passes the block's current layout.
        unsafe {
            let mut ptr = allocator.alloc(layout);
            assert!(!ptr.is_null());
            fill(ptr, sizes[0]);
            let mut current = layout;
            for &size in &sizes[1..] {
                ptr = allocator.realloc(ptr, current, size);
                assert!(!ptr.is_null(), "resize to {size}");
                let kept = current.size().min(size);
                assert!(
                    holds_fill(ptr, kept),
                    "bytes kept from {} to {size}",
                    current.size()
                );
                fill(ptr, size);
                current = Layout::from_size_align(size, 8).unwrap();
            }
            allocator.dealloc(ptr, current);
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_on_both_sides_of_the_threshold() {
        let _turn = turn();
        let allocator = TallyAllocator;
        for size in [100, OWN_MAPPING_MIN, 5 * OWN_MAPPING_MIN] {
            let layout = Layout::from_size_align(size, 16).unwrap();
            // SAFETY: a non-zero size, freed with the layout it was asked with.
            unsafe {
                let ptr = allocator.alloc_zeroed(layout);
                assert!(!ptr.is_null());
                assert_eq!(ptr as usize % 16, 0);
                assert!((0..size).all(|i| ptr.add(i).read() == 0), "size {size}");
                allocator.dealloc(ptr, layout);
            }
        }
    }

    #[test]
    fn alignments_past_a_page_stay_with_mimalloc_and_are_honoured() {
        let _turn = turn();
        let allocator = TallyAllocator;
        let layout = Layout::from_size_align(OWN_MAPPING_MIN * 2, 64 * 1024).unwrap();
        assert!(!own_mapping(layout.size(), layout.align()));
        // SAFETY: a non-zero size, freed with the layout it was asked with.
        unsafe {
            let ptr = allocator.alloc(layout);
            assert!(!ptr.is_null());
            assert_eq!(ptr as usize % (64 * 1024), 0);
            fill(ptr, layout.size());
            assert!(holds_fill(ptr, layout.size()));
            allocator.dealloc(ptr, layout);
        }
    }

    extern "C" {
        fn mi_is_in_heap_region(ptr: *const u8) -> bool;
    }

    #[test]
    fn large_blocks_are_outside_mimalloc_and_small_ones_inside() {
        let _turn = turn();
        let allocator = TallyAllocator;
        for (size, in_mimalloc) in [
            (1000, true),
            (OWN_MAPPING_MIN - 1, true),
            (OWN_MAPPING_MIN, false),
            (4 << 20, false),
        ] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: a non-zero size, freed with the layout it was asked with; the mimalloc
            // query only reads the address.
            unsafe {
                let ptr = allocator.alloc(layout);
                assert!(!ptr.is_null());
                assert_eq!(mi_is_in_heap_region(ptr), in_mimalloc, "size {size}");
                if !in_mimalloc {
                    assert_eq!(ptr as usize % PAGE, 0, "a mapping starts on a page");
                }
                allocator.dealloc(ptr, layout);
            }
        }
    }
}
