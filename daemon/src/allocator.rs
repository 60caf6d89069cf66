//! The allocator `tallyd` runs on (mimalloc) and how it is set up. Every binary that runs the
//! daemon — `tallyd`, `tally-bench`, the examples — installs [`Allocator`] and calls
//! [`configure`] first, so they all measure what production runs.

use std::ffi::{c_int, c_long};

/// mimalloc instead of glibc's malloc: the hot path allocates small short-lived buffers on
/// several threads, where glibc spent more time than the daemon's own code (docs/performance.md).
pub type Allocator = mimalloc::MiMalloc;

/// How long mimalloc keeps memory freed back to it before returning it to the OS, in ms.
///
/// Its default (1,000 ms) is counted from the next time the freeing thread calls into the
/// allocator: a checkpoint or flush thread that goes quiet keeps what it freed resident for
/// good. At 1M customers that was ~100 bytes per customer (memory example: 472 → 364 resident
/// just loaded, 441 → 341 settled with 0 ms; 355/356 with 10 ms). 0 ms returned pages on every
/// free (10× the purges, +1.5 s of system time over the 16-s load); 10 ms costs ~3× the purges
/// and no throughput we could tell from noise (same-sitting A/B in docs/performance.md).
pub const PURGE_DELAY_MS: c_long = 10;

/// mimalloc's option index of `purge_delay` (`mi_option_e` in its v3 `mimalloc.h`).
const MI_OPTION_PURGE_DELAY: c_int = 15;

extern "C" {
    fn mi_option_set_default(option: c_int, value: c_long);
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
}

/// Sets mimalloc's options for the daemon. `MIMALLOC_*` environment variables still win.
pub fn configure() {
    // SAFETY: mimalloc's option table is static and this index is in range; setting a
    // default is a plain store, safe at any time (it only changes when freed pages go back).
    unsafe { mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configure_sets_the_purge_delay_and_no_other_option() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // the environment decides, by design
        }
        // SAFETY: reading an option is a plain load.
        let before = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            before, 1_000,
            "the index names mimalloc's purge_delay (default 1,000 ms)"
        );
        configure();
        assert_eq!(
            unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) },
            PURGE_DELAY_MS
        );
    }
}
