//! [`HugePageAlloc`]: the system allocator, with large blocks on transparent huge pages whose
//! pages are reused, under the process's own peak.

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, with every block of 4 MiB or more a mapping of its own, in whole 2 MiB
/// pages backed by transparent huge pages (`madvise(MADV_HUGEPAGE)`), whose pages are kept when
/// it is freed and moved into the next large blocks, never more of them mapped than the most
/// that was in use at once ([`large`]). On other systems than Linux it is `System`.
///
/// Why: an evaluation at 512×512 writes about 1.5 GB of buffers (convolution outputs,
/// gradients, masks). glibc maps each block of 32 MiB or more afresh and unmaps it when freed,
/// so every evaluation faulted its pages in again, each zeroed by the kernel, and on this
/// project's virtual machines a first touch runs at 0.3–5 GB/s where a rewrite runs at 7–8.
/// Huge pages took one fault per 2 MiB instead of 512; kept pages take none, so from an
/// evaluation's second run on no page of its large buffers is faulted in. Earlier tries kept
/// whole blocks for the next request of the same length under a fixed cap, and raised the peak
/// (docs/performance.md); here any kept page serves any block, and the peak resident memory
/// stays what it was but for each live block's last huge page, which may reach past its size
/// (at most 2 MiB − 4 KiB a block). [`HugePageAlloc::release`] hands the kept pages back (the
/// runner does it before each run). The huge-page advice is honoured where
/// `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`; elsewhere the pages
/// stay small, and are reused all the same. A binary opts in with `#[global_allocator]`.
pub struct HugePageAlloc;

impl HugePageAlloc {
    /// Unmaps the pages kept for reuse; the bound on what is kept restarts from the bytes in use
    /// now. Call it where a new phase with other sizes starts (a run), so that one phase's
    /// peak is not held through the next.
    pub fn release() {
        large::release();
    }

    /// Bytes of large blocks (4 MiB or more, in whole 2 MiB pages) in use and kept for reuse
    /// now, through this allocator.
    pub fn large_bytes() -> LargeBytes {
        let (live, kept, bound) = large::counts();
        LargeBytes { live, kept, bound }
    }

    /// Makes every thread allocate from one heap (glibc's `mallopt(M_ARENA_MAX, 1)`), and every
    /// block below the large ones come from it (`M_MMAP_THRESHOLD` at [`LARGE_FROM`], the top
    /// of the heap trimmed past [`HEAP_TOP_KEPT`]); a no-op with other C libraries. Call it first
    /// thing in `main`, before other threads start.
    ///
    /// Why the thresholds: glibc's own start at 128 KiB and rise to the largest block it has
    /// freed, so blocks just under that size were still mapped afresh at every request, and the
    /// heap's top trimmed at twice it: 3 800 page faults per iteration of a run at 384×288 with
    /// the large blocks reused (a 40-iteration run, peak RSS 695 MB); with these 720 (701 MB).
    /// A top kept of 16 MiB gave 2 500.
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
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            const M_ARENA_MAX: i32 = -8;
            extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            // SAFETY: documented glibc tunables, set before the allocations they concern; a
            // failure (0) leaves glibc's default, which is only a matter of memory held and time.
            unsafe {
                mallopt(M_ARENA_MAX, 1);
                mallopt(M_MMAP_THRESHOLD, LARGE_FROM as i32);
                mallopt(M_TRIM_THRESHOLD, HEAP_TOP_KEPT as i32);
            }
        }
    }
}

/// What [`HugePageAlloc::large_bytes`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LargeBytes {
    /// In use.
    pub live: usize,
    /// Freed and kept for reuse.
    pub kept: usize,
    /// The most in use at once since the last [`HugePageAlloc::release`]: `live + kept` never
    /// exceeds it.
    pub bound: usize,
}

/// Blocks from this size on are mapped by [`large`] (smaller ones rarely span a whole aligned
/// huge page, and glibc's heap reuses them already).
const LARGE_FROM: usize = 4 << 20;

/// Free bytes at the top of glibc's heap kept rather than handed back (see
/// [`HugePageAlloc::one_arena`]).
const HEAP_TOP_KEPT: usize = 64 << 20;

/// Whether `layout` is served by [`large`]: Linux, 4 MiB or more, aligned to at most a huge page.
fn is_large(layout: Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= LARGE_FROM && layout.align() <= large::HUGE
}

// SAFETY: a large block is a private mapping of its own, page-aligned, at least `size` bytes,
// handed out to one owner at a time (a kept block is in the list only while nobody owns it);
// every other block comes from `System` with the caller's layout and goes back to it.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            return large::alloc(layout.size(), false);
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            return large::alloc(layout.size(), true);
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout) {
            // SAFETY: `ptr` came from `large::alloc` with this size (the caller's guarantee that
            // `layout` is the one it was allocated with) and is not used again.
            return unsafe { large::free(ptr, layout.size()) };
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        if !is_large(layout) && !is_large(new_layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // A move across the two kinds, or between large blocks: a new block, the bytes copied.
        // SAFETY: `new_layout` has a non-zero size (the caller's guarantee for `new_size`).
        let q = unsafe { self.alloc(new_layout) };
        if !q.is_null() {
            // SAFETY: both blocks hold at least the bytes copied and are distinct allocations;
            // the old one is freed with the layout it was allocated with.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        q
    }
}

/// Large blocks: private mappings of whole huge pages, whose pages are kept after a block is
/// freed and moved (`mremap`, no copy) into the next blocks, within a bound that keeps the memory
/// held under the peak the process reached anyway.
///
/// Every block is a whole number of 2 MiB pages starting on a 2 MiB boundary, so that any kept
/// page can serve any block and stays a huge page wherever it goes (a block's last page may reach
/// past its size: up to 2 MiB less 4 KiB more than asked is resident per block, against which no
/// page is faulted twice).
///
/// The bound: `live` is the bytes of large blocks in use, `kept` those freed and kept, `bound` the
/// highest `live` since the last [`release`]. A freed block is kept (`live + kept` does not
/// change). A request maps a fresh range and moves kept pages into it, as many as it needs or
/// as there are, so only what they do not cover is faulted in fresh, and only when nothing is
/// kept any more (then every mapped byte is live). So `live + kept ≤ bound`: the large blocks
/// mapped never exceed the most that were in use at once, what a process without keeping held
/// at its peak. An evaluation asks for the same bytes as the last
/// one, so from the second one on its buffers are written without faulting a page in
/// (docs/performance.md).
#[cfg(target_os = "linux")]
mod large {
    use std::ffi::c_void;
    use std::sync::{Mutex, MutexGuard, PoisonError};

    /// A transparent huge page of x86-64 and most aarch64 kernels: the unit of every block.
    pub(super) const HUGE: usize = 2 << 20;
    /// At most this many kept pieces (an evaluation at 1024×1024 frees a few dozen blocks
    /// between two of its requests); past it the oldest go.
    pub(super) const SLOTS: usize = 192;

    /// Huge pages of a mapping: `addr` and `len` are multiples of [`HUGE`].
    #[derive(Clone, Copy)]
    struct Piece {
        addr: usize,
        len: usize,
    }

    impl Piece {
        const NONE: Piece = Piece { addr: 0, len: 0 };
    }

    /// Pieces taken out of the list under the lock, to be moved or unmapped after it.
    struct Pieces {
        at: [Piece; SLOTS],
        n: usize,
    }

    impl Pieces {
        const NONE: Pieces = Pieces { at: [Piece::NONE; SLOTS], n: 0 };

        fn push(&mut self, p: Piece) {
            self.at[self.n] = p;
            self.n += 1;
        }

        fn unmap(&self) {
            for p in &self.at[..self.n] {
                unmap(p.addr, p.len);
            }
        }
    }

    /// The kept pieces, oldest first, and the byte counts of the rule.
    struct Kept {
        pieces: [Piece; SLOTS],
        n: usize,
        live: usize,
        kept: usize,
        bound: usize,
    }

    impl Kept {
        /// Takes the first `len` bytes of piece `i` (all of it when it is no longer).
        fn take_front(&mut self, i: usize, len: usize) -> Piece {
            let p = self.pieces[i];
            let front = Piece { addr: p.addr, len: len.min(p.len) };
            if p.len <= len {
                self.pieces.copy_within(i + 1..self.n, i);
                self.n -= 1;
            } else {
                self.pieces[i] = Piece { addr: p.addr + len, len: p.len - len };
            }
            self.kept -= front.len;
            front
        }

        /// Chooses kept pages for a block of `len` bytes, as moves to consecutive offsets of
        /// the block from 0: the smallest piece that covers what is left, or else the largest,
        /// until nothing is left or nothing is kept. What is left is fresh.
        fn choose(&mut self, len: usize, moves: &mut Pieces) {
            let mut left = len;
            while left > 0 {
                let pieces = self.pieces[..self.n].iter().enumerate();
                let best = pieces.clone().filter(|(_, p)| p.len >= left).min_by_key(|(_, p)| p.len);
                let Some((i, _)) = best.or_else(|| pieces.max_by_key(|(_, p)| p.len)) else { break };
                let p = self.take_front(i, left);
                left -= p.len;
                moves.push(p);
            }
        }

        /// Counts a block of `len` bytes as live, after [`Kept::choose`] moved kept pages into
        /// it. Nothing needs unmapping: `choose` leaves part of a block fresh only when nothing is
        /// kept any more, so then every mapped byte is live, and otherwise `live + kept` did
        /// not change.
        fn count_live(&mut self, len: usize) {
            self.live += len;
            self.bound = self.bound.max(self.live);
            debug_assert!(self.live + self.kept <= self.bound);
        }

        /// Keeps a freed block; returns the oldest piece when the list was full, to unmap.
        fn keep(&mut self, p: Piece) -> Option<Piece> {
            self.live -= p.len;
            let oldest = (self.n == SLOTS).then(|| {
                let len = self.pieces[0].len;
                self.take_front(0, len)
            });
            self.pieces[self.n] = p;
            self.n += 1;
            self.kept += p.len;
            oldest
        }
    }

    static KEPT: Mutex<Kept> = Mutex::new(Kept { pieces: [Piece::NONE; SLOTS], n: 0, live: 0, kept: 0, bound: 0 });

    /// The list (no code panics while holding it, so a poisoned lock is still consistent).
    fn lock() -> MutexGuard<'static, Kept> {
        KEPT.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A block of at least `size` bytes starting on a 2 MiB boundary, zeroed when `zeroed`, or
    /// null.
    pub(super) fn alloc(size: usize, zeroed: bool) -> *mut u8 {
        let Some(len) = size.checked_next_multiple_of(HUGE) else { return std::ptr::null_mut() };
        let Some(block) = map(len) else { return std::ptr::null_mut() };
        let mut moves = Pieces::NONE;
        {
            let mut k = lock();
            k.choose(len, &mut moves);
            k.count_live(len);
        }
        let mut at = 0;
        for (i, p) in moves.at[..moves.n].iter().enumerate() {
            if !move_pages(*p, block + at) {
                for q in &moves.at[i + 1..moves.n] {
                    unmap(q.addr, q.len);
                }
                unmap(block, len);
                lock().live -= len;
                return std::ptr::null_mut();
            }
            if zeroed && at < size {
                // SAFETY: `[block + at, block + at + n)` is inside the block just made (n ≤
                // p.len), owned by nobody else; past `size` nothing needs zeroing.
                unsafe { std::ptr::write_bytes((block + at) as *mut u8, 0, p.len.min(size - at)) };
            }
            at += p.len;
        }
        block as *mut u8
    }

    /// Returns a block of `size` bytes from [`alloc`] to the list.
    ///
    /// # Safety
    /// `p` came from [`alloc`] with this `size` and is not used again.
    pub(super) unsafe fn free(p: *mut u8, size: usize) {
        // `alloc` rounded the same size without overflow.
        let len = size.next_multiple_of(HUGE);
        let oldest = lock().keep(Piece { addr: p as usize, len });
        if let Some(o) = oldest {
            unmap(o.addr, o.len);
        }
    }

    /// Unmaps every kept piece; the bound restarts from the bytes in use now.
    pub(super) fn release() {
        let mut out = Pieces::NONE;
        {
            let mut k = lock();
            while k.n > 0 {
                let len = k.pieces[0].len;
                out.push(k.take_front(0, len));
            }
            k.bound = k.live;
        }
        out.unmap();
    }

    /// Bytes of large blocks in use, kept, and the bound.
    pub(super) fn counts() -> (usize, usize, usize) {
        let k = lock();
        (k.live, k.kept, k.bound)
    }

    const PROT_READ: i32 = 1;
    const PROT_WRITE: i32 = 2;
    const MAP_PRIVATE: i32 = 2;
    const MAP_FIXED: i32 = 0x10;
    const MAP_ANONYMOUS: i32 = 0x20;
    const MADV_HUGEPAGE: i32 = 14;
    const MREMAP_MAYMOVE: i32 = 1;
    const MREMAP_FIXED: i32 = 2;
    extern "C" {
        fn mmap(addr: *mut c_void, len: usize, prot: i32, flags: i32, fd: i32, offset: i64) -> *mut c_void;
        fn munmap(addr: *mut c_void, len: usize) -> i32;
        fn madvise(addr: *mut c_void, len: usize, advice: i32) -> i32;
        fn mremap(old: *mut c_void, old_len: usize, new_len: usize, flags: i32, new: *mut c_void) -> *mut c_void;
    }

    /// A fresh mapping of `len` bytes (a multiple of [`HUGE`]) starting on a huge-page boundary,
    /// advised to be backed by huge pages.
    fn map(len: usize) -> Option<usize> {
        let span = len.checked_add(HUGE)?;
        // SAFETY: a new private anonymous mapping; nothing else is touched.
        let base =
            unsafe { mmap(std::ptr::null_mut(), span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) };
        if base as isize == -1 {
            return None;
        }
        let base = base as usize;
        let start = base.next_multiple_of(HUGE);
        // The span's head and tail around the aligned block go back.
        unmap(base, start - base);
        unmap(start + len, base + span - (start + len));
        advise(start, len);
        Some(start)
    }

    /// Moves the pages of `p` to `to`, replacing the fresh pages there; returns false where a
    /// failed move left a hole in the destination that could not be mapped again. A piece may
    /// span mappings (it was gathered from several), which one `mremap` refuses: it is then
    /// moved 2 MiB at a time, each inside one mapping, and where one of those fails too the
    /// destination gets fresh pages. The piece is never left mapped.
    fn move_pages(p: Piece, to: usize) -> bool {
        if remap(p.addr, p.len, to) {
            return true;
        }
        for at in (0..p.len).step_by(HUGE) {
            if !remap(p.addr + at, HUGE, to + at) {
                unmap(p.addr + at, HUGE);
                // A failed MREMAP_FIXED may have unmapped the destination already.
                if !refill(to + at, HUGE) {
                    unmap(p.addr + at + HUGE, p.len - at - HUGE);
                    return false;
                }
            }
        }
        true
    }

    /// `mremap` of `[from, from + len)` onto `[to, to + len)`: whether it moved.
    fn remap(from: usize, len: usize, to: usize) -> bool {
        // SAFETY: `[from, from + len)` are pages of a kept piece, owned by the caller; `[to, to +
        // len)` are fresh pages of the block being made, owned by it; MREMAP_FIXED replaces them.
        let r = unsafe { mremap(from as *mut c_void, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to as *mut c_void) };
        r as usize == to
    }

    /// Maps fresh pages over `[to, to + len)` of a block being made: whether it could.
    fn refill(to: usize, len: usize) -> bool {
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
        // SAFETY: the range belongs to the block being made, owned by the caller; MAP_FIXED
        // replaces whatever is left there.
        let r = unsafe { mmap(to as *mut c_void, len, PROT_READ | PROT_WRITE, flags, -1, 0) };
        if r as usize != to {
            return false;
        }
        advise(to, len);
        true
    }

    /// Advises `[start, start + len)` (whole huge pages) to be backed by huge pages; a failure
    /// (no transparent huge pages) leaves them small: ignored.
    fn advise(start: usize, len: usize) {
        // SAFETY: inside a mapping owned by the caller; advice changes no contents.
        unsafe { madvise(start as *mut c_void, len, MADV_HUGEPAGE) };
    }

    fn unmap(addr: usize, len: usize) {
        if len > 0 {
            // SAFETY: whole pages of mappings made by `map`, owned by nobody any more.
            unsafe { munmap(addr as *mut c_void, len) };
        }
    }
}

/// Elsewhere no block is large ([`is_large`]): these are never called.
#[cfg(not(target_os = "linux"))]
mod large {
    pub(super) const HUGE: usize = 2 << 20;
    pub(super) fn alloc(_: usize, _: bool) -> *mut u8 {
        std::ptr::null_mut()
    }
    pub(super) unsafe fn free(_: *mut u8, _: usize) {}
    pub(super) fn release() {}
    pub(super) fn counts() -> (usize, usize, usize) {
        (0, 0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests share the one list of kept blocks (the tests' own allocator is `System`, so
    /// nothing else touches it): one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn blocks_keep_their_contents_through_zeroing_and_growth() {
        let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // 6 MiB + 3 bytes: large (an unaligned size: four huge pages); grown past 16 MiB, then
        // shrunk to a small block, each a move with the bytes copied.
        let a = HugePageAlloc;
        let layout = Layout::from_size_align(LARGE_FROM + (2 << 20) + 3, 64).unwrap();
        let pattern = |i: usize| (i % 251) as u8;
        // SAFETY: non-zero sizes; every pointer is used within its layout and freed once.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            let bytes = std::slice::from_raw_parts_mut(p, layout.size());
            assert!(bytes.iter().all(|&b| b == 0), "alloc_zeroed gave non-zero bytes");
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = pattern(i);
            }
            let grown = 16 << 20;
            let q = a.realloc(p, layout, grown);
            assert!(!q.is_null());
            let kept = std::slice::from_raw_parts(q, layout.size());
            assert!(kept.iter().enumerate().all(|(i, &b)| b == pattern(i)), "realloc lost bytes");
            let small = 1000;
            let r = a.realloc(q, Layout::from_size_align(grown, 64).unwrap(), small);
            assert!(!r.is_null());
            let kept = std::slice::from_raw_parts(r, small);
            assert!(kept.iter().enumerate().all(|(i, &b)| b == pattern(i)), "shrinking lost bytes");
            let s = a.realloc(r, Layout::from_size_align(small, 64).unwrap(), grown);
            let kept = std::slice::from_raw_parts(s, small);
            assert!(kept.iter().enumerate().all(|(i, &b)| b == pattern(i)), "growing from small lost bytes");
            a.dealloc(s, Layout::from_size_align(grown, 64).unwrap());
        }
        HugePageAlloc::release();
    }

    /// Freed blocks' pages serve the next requests (their old bytes show where not zeroed; a
    /// block gathered from pieces of several, a piece across two mappings moved 2 MiB at a
    /// time), and the blocks mapped never exceed the most in use at once.
    #[cfg(target_os = "linux")]
    #[test]
    fn freed_pages_are_reused_within_the_peak_of_those_in_use() {
        let _one = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        HugePageAlloc::release();
        let at_start = HugePageAlloc::large_bytes();
        assert_eq!(at_start.kept, 0);
        const MIB: usize = 1 << 20;
        let layout = |bytes: usize| Layout::from_size_align(bytes, 64).unwrap();
        let counts = |live: usize, kept: usize, bound: usize| LargeBytes {
            live: at_start.live + live * MIB,
            kept: kept * MIB,
            bound: at_start.live + bound * MIB,
        };
        let byte = |i: usize, seed: usize| ((i + seed) % 251) as u8;
        let a = HugePageAlloc;
        // SAFETY: non-zero sizes; every pointer is used within its layout and freed once.
        unsafe {
            let fill = |p: *mut u8, len: usize, seed: usize| {
                for (i, b) in std::slice::from_raw_parts_mut(p, len).iter_mut().enumerate() {
                    *b = byte(i, seed);
                }
            };
            let holds = |p: *mut u8, len: usize, seed: usize| {
                std::slice::from_raw_parts(p, len).iter().enumerate().all(|(i, &b)| b == byte(i, seed))
            };
            let zero = |p: *mut u8, len: usize| std::slice::from_raw_parts(p, len).iter().all(|&b| b == 0);
            // 8 MiB + 12 KiB: five huge pages.
            let odd = 8 * MIB + 12 * 1024;
            let first = a.alloc(layout(odd));
            assert_eq!(first as usize % (2 * MIB), 0, "a large block starts on a huge page");
            fill(first, odd, 0);
            a.dealloc(first, layout(odd));
            assert_eq!(HugePageAlloc::large_bytes(), counts(0, 10, 10));
            let again = a.alloc(layout(odd));
            assert!(holds(again, odd, 0), "the freed block's pages were not moved into the new one");
            assert_eq!(HugePageAlloc::large_bytes(), counts(10, 0, 10));
            fill(again, odd, 1);
            a.dealloc(again, layout(odd));
            let zeroed = a.alloc_zeroed(layout(odd));
            assert!(zero(zeroed, odd), "reused pages not zeroed");
            fill(zeroed, odd, 2);
            a.dealloc(zeroed, layout(odd));
            // 16 MiB: the 10 kept make its front (past `odd` never written: zero), the rest is
            // fresh.
            let big = a.alloc(layout(16 * MIB));
            assert!(holds(big, odd, 2) && zero(big.add(odd), 16 * MIB - odd));
            assert_eq!(HugePageAlloc::large_bytes(), counts(16, 0, 16));
            let four = a.alloc(layout(4 * MIB));
            assert_eq!(HugePageAlloc::large_bytes(), counts(20, 0, 20));
            fill(big, 16 * MIB, 3);
            fill(four, 4 * MIB, 4);
            a.dealloc(four, layout(4 * MIB));
            a.dealloc(big, layout(16 * MIB));
            // 6 MiB from the front of the smallest kept piece that covers it (the 16).
            let six = a.alloc(layout(6 * MIB));
            assert!(holds(six, 6 * MIB, 3));
            assert_eq!(HugePageAlloc::large_bytes(), counts(6, 14, 20));
            a.dealloc(six, layout(6 * MIB));
            // 14 MiB: none covers it, so the largest first: the 16's last 10 MiB, which lie in two
            // mappings (moved pages, then fresh ones); then the smallest that covers the 4 left,
            // the 4.
            let fourteen = a.alloc(layout(14 * MIB));
            assert!(holds(fourteen, 10 * MIB, 3 + 6 * MIB), "pieces across mappings not moved");
            assert!(holds(fourteen.add(10 * MIB), 4 * MIB, 4));
            assert_eq!(HugePageAlloc::large_bytes(), counts(14, 6, 20));
            // 30 MiB: everything kept (the 6), then 24 fresh; nothing kept any more.
            let thirty = a.alloc_zeroed(layout(30 * MIB));
            assert!(zero(thirty, 30 * MIB));
            assert_eq!(HugePageAlloc::large_bytes(), counts(44, 0, 44));
            a.dealloc(fourteen, layout(14 * MIB));
            a.dealloc(thirty, layout(30 * MIB));
            assert_eq!(HugePageAlloc::large_bytes(), counts(0, 44, 44));
        }
        HugePageAlloc::release();
        assert_eq!(HugePageAlloc::large_bytes(), counts(0, 0, 0));
        use super::large::SLOTS;
        // More freed blocks than the list holds: the oldest are unmapped (never touched here, so
        // these cost address space only).
        let many: Vec<*mut u8> = (0..SLOTS + 3).map(|_| unsafe { a.alloc(layout(4 * MIB)) }).collect();
        assert!(many.iter().all(|p| !p.is_null()));
        for p in many {
            // SAFETY: each block is freed once with its layout.
            unsafe { a.dealloc(p, layout(4 * MIB)) };
        }
        let n = SLOTS + 3;
        assert_eq!(HugePageAlloc::large_bytes(), counts(0, 4 * SLOTS, 4 * n));
        HugePageAlloc::release();
    }
}
