//! The allocator of strategy components: free lists by size class.
//!
//! A strategy's allocations are small and repetitive: every batch brings three
//! lists the host allocates through `cabi_realloc`, and every signal a few
//! short strings, all freed again within the call or right after it. The
//! default wasm allocator (wasi-libc's dlmalloc) spends several calls and
//! searches on each of these. Here a small block is popped from, or pushed on,
//! the free list of its size class, which is a handful of instructions. In the
//! backtest bench this made the wasm run about 5% faster than dlmalloc and
//! than talc (see BENCHMARKS.md).
//!
//! Blocks of 16 bytes to 4 KiB, aligned to at most 16, come from 64 KiB slabs
//! taken from the system allocator; a freed block goes back to its own class
//! and is never returned to the system, so a class holds at most as much as
//! the most it ever had in use. Anything larger, or more aligned, goes to the
//! system allocator as before. It is built for single-threaded wasm (a
//! component instance runs on one thread) and is the global allocator only
//! there; natively it is an ordinary value, which is how it is tested.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr::{self, null_mut};

/// Size classes: 16 << c bytes for c in 0..CLASSES (16 B to 4 KiB).
const CLASSES: usize = 9;
const MIN_BLOCK: usize = 16;
const MAX_BLOCK: usize = MIN_BLOCK << (CLASSES - 1);
/// What one slab holds; blocks are cut from it in order.
const SLAB: usize = 64 * 1024;

/// The allocator. One instance is the global allocator of a wasm strategy.
#[derive(Debug)]
pub struct SizeClasses {
    state: UnsafeCell<State>,
}

#[derive(Debug)]
struct State {
    /// Head of each class's list of free blocks (the next pointer is stored
    /// in the block itself).
    free: [*mut u8; CLASSES],
    /// The unused rest of the current slab.
    next: *mut u8,
    end: *mut u8,
}

// SAFETY: a wasm component instance is single-threaded (the global allocator
// is only installed where `target_feature = "atomics"` is off), and the
// native tests use each value from one thread.
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    pub const fn new() -> SizeClasses {
        SizeClasses {
            state: UnsafeCell::new(State {
                free: [null_mut(); CLASSES],
                next: null_mut(),
                end: null_mut(),
            }),
        }
    }
}

impl Default for SizeClasses {
    fn default() -> SizeClasses {
        SizeClasses::new()
    }
}

/// The size class of `layout`, or `None` for the system allocator.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size().max(MIN_BLOCK);
    if size > MAX_BLOCK || layout.align() > MIN_BLOCK {
        return None;
    }
    // The smallest c with 16 << c >= size.
    Some((usize::BITS - (size - 1).leading_zeros()) as usize - MIN_BLOCK.trailing_zeros() as usize)
}

// SAFETY: every block handed out is at least `layout.size()` bytes, aligned
// to 16 (slabs are 16-aligned and every block size is a multiple of 16), and
// belongs to nobody else until it is freed; `dealloc` receives the layout it
// was allocated with (GlobalAlloc's contract), so it finds the same class.
unsafe impl GlobalAlloc for SizeClasses {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's layout, passed on.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: single-threaded (see `Sync`), and no reference into the
        // state outlives this call.
        let state = unsafe { &mut *self.state.get() };
        let head = state.free[class];
        if !head.is_null() {
            // SAFETY: a free block holds the next free block of its class.
            state.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        let size = MIN_BLOCK << class;
        if (state.end as usize) - (state.next as usize) < size {
            // The slab's rest (less than one block of this class) is left.
            // SAFETY: SLAB is non-zero and 16 is a power of two.
            let slab = unsafe { System.alloc(Layout::from_size_align_unchecked(SLAB, MIN_BLOCK)) };
            if slab.is_null() {
                return null_mut();
            }
            state.next = slab;
            // SAFETY: one past the end of the slab.
            state.end = unsafe { slab.add(SLAB) };
        }
        let block = state.next;
        // SAFETY: `size` bytes remain in the slab (checked above).
        state.next = unsafe { block.add(size) };
        block
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            // SAFETY: it came from the system allocator with this layout.
            return unsafe { System.dealloc(block, layout) };
        };
        // SAFETY: as in `alloc`.
        let state = unsafe { &mut *self.state.get() };
        // SAFETY: the block is ours again, 16-aligned and at least 16 bytes.
        unsafe { block.cast::<*mut u8>().write(state.free[class]) };
        state.free[class] = block;
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract: `new_size`, rounded up to
        // `layout.align()`, does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            (Some(old), Some(new)) if old == new => block,
            // SAFETY: both from and to the system allocator.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: as `alloc` and `dealloc`; the two blocks are distinct.
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    unsafe {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("layout")
    }

    #[test]
    fn sizes_map_to_the_smallest_class_that_holds_them() {
        assert_eq!(class_of(layout(1, 1)), Some(0));
        assert_eq!(class_of(layout(16, 8)), Some(0));
        assert_eq!(class_of(layout(17, 8)), Some(1));
        assert_eq!(class_of(layout(32, 16)), Some(1));
        assert_eq!(class_of(layout(33, 1)), Some(2));
        assert_eq!(class_of(layout(4096, 8)), Some(CLASSES - 1));
        assert_eq!(class_of(layout(4097, 8)), None, "too big: the system's");
        assert_eq!(class_of(layout(64, 32)), None, "too aligned: the system's");
    }

    #[test]
    fn blocks_are_aligned_distinct_and_reused_once_freed() {
        // SAFETY (whole test): every pointer is used within its layout and
        // freed once with the layout it was allocated with.
        let heap = SizeClasses::new();
        let mut live = Vec::new();
        for i in 0..5_000usize {
            let l = layout(1 + i % 700, [1, 2, 4, 8, 16][i % 5]);
            let p = unsafe { heap.alloc(l) };
            assert!(!p.is_null());
            assert_eq!(p as usize % 16, 0, "block {i} misaligned");
            unsafe { ptr::write_bytes(p, (i % 251) as u8, l.size()) };
            live.push((p, l, (i % 251) as u8));
        }
        // No two live blocks overlap: each still holds its own fill byte.
        for &(p, l, byte) in &live {
            let bytes = unsafe { std::slice::from_raw_parts(p, l.size()) };
            assert!(bytes.iter().all(|&b| b == byte));
        }
        let (p, l, _) = live.swap_remove(17);
        unsafe { heap.dealloc(p, l) };
        let again = unsafe { heap.alloc(l) };
        assert_eq!(again, p, "a freed block is the next of its class");
        live.push((again, l, 0));
        for (p, l, _) in live {
            unsafe { heap.dealloc(p, l) };
        }
    }

    #[test]
    fn realloc_keeps_contents_across_classes_and_into_the_system_allocator() {
        let heap = SizeClasses::new();
        // SAFETY: as above; each realloc's result replaces the old pointer.
        unsafe {
            let mut l = layout(10, 1);
            let mut p = heap.alloc(l);
            for i in 0..10 {
                *p.add(i) = i as u8;
            }
            let same = heap.realloc(p, l, 16);
            assert_eq!(same, p, "still class 0: no move");
            l = layout(16, 1);
            for size in [100, 3_000, 10_000, 70_000, 40] {
                p = heap.realloc(p, l, size);
                assert!(!p.is_null());
                let kept = (0..10).all(|i| *p.add(i) == i as u8);
                assert!(kept, "contents lost growing to {size}");
                l = layout(size, 1);
            }
            heap.dealloc(p, l);
        }
    }
}
