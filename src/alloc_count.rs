//! Counting heap allocations, for the benchmarks only (feature `count-allocs`): the `sluice`
//! binary then installs [`Counting`] as its global allocator and `/metrics` reports
//! `sluice_heap_allocations_total`, which `ALLOCS=1 scripts/bench-b3.sh` divides by the queries
//! served. Off by default: the shared counter costs an atomic add per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The system allocator, counting every allocation and reallocation.
pub struct Counting;

// SAFETY: every method delegates to `System` with the same arguments; counting has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

impl Counting {
    /// Marks the counter as live (called by the binary that installed this allocator).
    pub fn install(&self) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

/// Heap allocations so far, when [`Counting`] is the global allocator.
pub fn allocations() -> Option<u64> {
    INSTALLED
        .load(Ordering::Relaxed)
        .then(|| ALLOCATIONS.load(Ordering::Relaxed))
}
