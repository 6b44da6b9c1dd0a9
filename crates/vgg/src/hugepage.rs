//! [`HugePageAlloc`]: the system allocator, with large blocks backed by transparent huge pages.

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, asking the kernel to back each block of 4 MiB or more with
/// transparent huge pages (`madvise(MADV_HUGEPAGE)` on Linux; elsewhere it is `System`).
///
/// Why: an evaluation at 512×512 writes about 1.5 GB of fresh buffers (convolution outputs,
/// gradients, masks); each comes from `mmap` and is faulted in 4 KiB at a time on its first
/// write: 8–11% of the time went to the page-fault path in a profile on the project's Xeon. A
/// huge page takes one fault per 2 MiB instead of 512. Nothing is kept or pooled: blocks are
/// freed as before, so the memory held is the same. The advice is honoured where
/// `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`; elsewhere it is a
/// no-op. A binary opts in with `#[global_allocator]`.
pub struct HugePageAlloc;

impl HugePageAlloc {
    /// Makes every thread allocate from one heap (glibc's `mallopt(M_ARENA_MAX, 1)`; a no-op
    /// with other C libraries). Call it first thing in `main`, before other threads start.
    ///
    /// Why: glibc gives threads heaps of their own, and what one heap frees stays there for
    /// that thread. On the CPU an evaluation runs on whichever thread of rayon's pool takes it
    /// ([`crate::on_pool`]), so its buffers came from two heaps by turns, each keeping the
    /// other's peak: peak RSS of a 40-iteration run at 384×288 rose from 708–716 to 790–835
    /// MiB; with one heap it is 715–720 MiB (docs/performance.md). The shared heap's lock cost
    /// nothing measurable: whole runs alternating with the build before, three rounds, took
    /// 0.82–0.96 of its time at 160×120 and 0.93–1.02 at 384×288.
    pub fn one_arena() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            const M_ARENA_MAX: i32 = -8;
            extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            // SAFETY: a documented glibc tunable, set before the allocations it concerns; a
            // failure (0) leaves glibc's default, which is only a matter of memory held.
            unsafe { mallopt(M_ARENA_MAX, 1) };
        }
    }
}

/// Blocks from this size on are advised (smaller ones rarely span a whole aligned huge page).
const ADVISE_FROM: usize = 4 << 20;

// SAFETY: every block comes from `System` with the caller's layout and goes back to it; the
// advice changes how pages are backed, never their contents or the block's bounds.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        advise(p, new_size);
        p
    }
}

/// Advises the whole 2 MiB pages inside `[p, p + size)` to be huge.
#[cfg(target_os = "linux")]
fn advise(p: *mut u8, size: usize) {
    const HUGE: usize = 2 << 20;
    const MADV_HUGEPAGE: i32 = 14;
    extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    if p.is_null() || size < ADVISE_FROM {
        return;
    }
    let start = p as usize;
    let Some(stop) = start.checked_add(size) else { return };
    let (first, end) = (start.next_multiple_of(HUGE), stop / HUGE * HUGE);
    if end > first {
        // SAFETY: [first, end) is page-aligned and inside the block just allocated. A failure
        // (a kernel without transparent huge pages) leaves the block as it was: ignored.
        unsafe { madvise(first as *mut std::ffi::c_void, end - first, MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_: *mut u8, _: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_keep_their_contents_through_zeroing_and_growth() {
        // 6 MiB + 3 bytes: advised (an unaligned size, its whole 2 MiB pages inside); then grown
        // past 16 MiB, where the block may move.
        let a = HugePageAlloc;
        let layout = Layout::from_size_align(ADVISE_FROM + (2 << 20) + 3, 64).unwrap();
        // SAFETY: a non-zero size; every pointer is used within its layout and freed once.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            let bytes = std::slice::from_raw_parts_mut(p, layout.size());
            assert!(bytes.iter().all(|&b| b == 0), "alloc_zeroed gave non-zero bytes");
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
            let grown = 16 << 20;
            let q = a.realloc(p, layout, grown);
            assert!(!q.is_null());
            let kept = std::slice::from_raw_parts(q, layout.size());
            assert!(kept.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "realloc lost bytes");
            a.dealloc(q, Layout::from_size_align(grown, 64).unwrap());
            let small = Layout::from_size_align(100, 8).unwrap();
            let r = a.alloc(small);
            assert!(!r.is_null());
            a.dealloc(r, small);
        }
    }
}
