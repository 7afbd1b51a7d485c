//! Counting the heap, for `idle_session_bytes` (issue 19, item 3).
//!
//! [`CountingAllocator`] wraps [`System`] and, only while a [`HeapWindow`]
//! is open, adds the size of every allocation to a counter and subtracts the
//! size of every free. A window's [`growth`](HeapWindow::growth) is then the
//! net change of live heap bytes while it was open: what the code run in it
//! kept. Sizes are those requested (`Layout::size`), not what the system
//! allocator rounds them up to, and the count is process-wide: every thread's
//! allocations count, so nothing else should run in a window.
//!
//! The `tether-bench` binary and this crate's smoke test install it:
//!
//! ```
//! #[global_allocator]
//! static HEAP: tether_bench::CountingAllocator = tether_bench::CountingAllocator;
//! # fn main() {}
//! ```
//!
//! Without it (a library user's own allocator), no window opens and the
//! figure is reported as absent. Outside a window the wrapper costs one
//! relaxed load per allocation and writes nothing shared, so the other
//! figures are not slowed by cache-line traffic between the cores.

// A `GlobalAlloc` impl is `unsafe` by definition; this is the one place in
// the crate (Cargo.toml lowers the workspace's `forbid` to `deny` for it).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};

/// Whether a window is open (the allocator counts only then).
static COUNTING: AtomicBool = AtomicBool::new(false);
/// Net bytes allocated while counting.
static NET_BYTES: AtomicIsize = AtomicIsize::new(0);
/// Allocations seen while counting (tells whether the allocator is installed).
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes while a [`HeapWindow`] is open.
/// Install it with `#[global_allocator]` (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

fn grew(bytes: usize) {
    if COUNTING.load(Relaxed) {
        NET_BYTES.fetch_add(bytes as isize, Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
    }
}

fn shrank(bytes: usize) {
    if COUNTING.load(Relaxed) {
        NET_BYTES.fetch_sub(bytes as isize, Relaxed);
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, whose
// contract is exactly `GlobalAlloc`'s, and returns its result unchanged; the
// counting touches only atomics and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            grew(new_size);
            shrank(layout.size());
        }
        new
    }
}

/// While alive, [`CountingAllocator`] counts. One at a time.
pub(crate) struct HeapWindow(());

impl HeapWindow {
    /// Opens a window, or `None` if [`CountingAllocator`] is not the global
    /// allocator (or another window is open).
    pub(crate) fn open() -> Option<Self> {
        if COUNTING.swap(true, Relaxed) {
            return None;
        }
        NET_BYTES.store(0, Relaxed);
        ALLOCATIONS.store(0, Relaxed);
        drop(std::hint::black_box(Box::new(0u64)));
        if ALLOCATIONS.load(Relaxed) == 0 {
            COUNTING.store(false, Relaxed);
            return None;
        }
        Some(Self(()))
    }

    /// Net live heap bytes allocated since the window opened.
    pub(crate) fn growth(&self) -> isize {
        NET_BYTES.load(Relaxed)
    }
}

impl Drop for HeapWindow {
    fn drop(&mut self) {
        COUNTING.store(false, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_window_opens_without_the_counting_allocator() {
        // The unit tests run on the system allocator: the figure must then
        // be absent, not zero.
        assert!(HeapWindow::open().is_none());
        assert!(!COUNTING.load(Relaxed));
    }
}
