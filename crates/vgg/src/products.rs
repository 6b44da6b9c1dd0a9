//! The Winograd products `M_ξ (K × T) = U_ξ (K × C) · V_ξ (C × T)` on AVX-512 (every image) or
//! AVX2+FMA (images of few tiles), reading both operands where they lie.
//!
//! `gemm` packs both operands into panels of its own at every call, and its kernels work on 64
//! (AVX-512) or 16 (AVX2) tiles at a time, the rest in narrower kernels with idle lanes. For the
//! deep layers of a small image both cost: at 160×120 conv4 has 20 tiles and conv5 6, so each
//! element of `U_ξ` (up to 512 × 512 floats per ξ, 38 MB per layer) is used 20 or 6 times
//! after being copied, and gemm's products there ran at 35–40 GFLOP/s (AVX-512, 2 cores, 6
//! tiles) against 140–180 on large images. Here `U_ξ` is read in its own layout, `[k][c]`: a
//! register block of N output channels reads N rows side by side, each front to back (N
//! sequential streams, prefetched a few lines ahead); `V_ξ` is read as the input transform
//! wrote it, `[c][t]`, one vector of tiles at a time, a few rows ahead prefetched; the register
//! block's shape follows the tile count. The caller ([`crate::winograd`]) uses this for images
//! of fewer tiles than [`Blocking::BELOW`] of the instruction set (on AVX2 gemm was as fast or
//! faster from there on; on AVX-512 this was faster at every size measured).
//!
//! A register block is R vectors of tiles × N output channels (at most [`Blocking::ACC`]
//! accumulators), the sum over all C input channels in one pass: `acc ← fma(v, u, acc)` from
//! 0, c = 0, 1, …, C − 1. Each tile's sum is its own vector lane, in that order whatever the
//! block's shape, so a tile gets the same bits wherever its block starts.
//!
//! On AVX-512 `U_ξ` lies in panels of [`PANEL`] output channels ([`KernelLayout::Panels`]), so
//! that a register block reads its weights as one stream, in the order it uses them, rather
//! than as one stream per output channel ([`KernelLayout::Rows`], which AVX2 and gemm read).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::cpu::Simd;
#[cfg(target_arch = "x86_64")]
use crate::vector::{Vector, Ymm, Zmm};

/// Rows of `V_ξ` prefetched ahead of the one in use: measured on the project's Xeon (one
/// thread, the 36 products of a 512 → 512 layer, on a first version of these blocks that read
/// `U_ξ` from a copy in panels), 0 / 4 / 8 / 16 rows: 20 tiles 7.5 / 6.4 / 5.7 / 5.7 ms,
/// 6 tiles 4.1 / 3.1 / 2.8 / 3.1 ms.
#[cfg(target_arch = "x86_64")]
const AHEAD: usize = 8;

/// Floats of each row of `U_ξ` prefetched ahead, once every 16 input channels (a cache line):
/// 32 / 64 / 128 gave 5.9 / 5.5 / 5.8 ms on 20 tiles (one thread, 36 products of 512 → 512;
/// 6.1 ms without).
#[cfg(target_arch = "x86_64")]
const U_AHEAD: usize = 64;

/// Output channels of a panel of [`KernelLayout::Panels`]: the output channels of AVX-512's
/// register blocks (4 vectors of tiles × 6 channels, then 18, 12 or 6) are whole panels.
pub(crate) const PANEL: usize = 6;

/// How a transformed kernel `U_ξ` (K × C, for each ξ) lies in memory; each set's products read
/// one ([`KernelLayout::of`]), and the kernels are transformed into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KernelLayout {
    /// Row k holds its C input channels: (k, c) at k·C + c. Read in place on AVX2, and by gemm.
    Rows,
    /// Panels of [`PANEL`] output channels: panel b (channels bP … bP + n − 1, where n =
    /// min(P, K − bP)) lies at bP·C and holds, for each input channel c, its n values: (k, c)
    /// at bP·C + c·n + (k − bP). Read in place on AVX-512, where a register block's channels
    /// are whole panels: its weights are one stream (two or three beside each other for the
    /// wider blocks), read front to back in the order of its multiply-adds, where with
    /// [`KernelLayout::Rows`] they were one stream per channel, each read a float at a time
    /// across its cache lines. Measured on the project's Xeon (family 6 model 207, 2026-12-01),
    /// within one `runner bench` process, evaluations alternating between rows (blocks of
    /// 1 × 16, 2 × 12 and 3 × 8 channels for the vectors left over) and panels (1 × 18, 2 × 12,
    /// 3 × 6), both copied into memory of the same kind, the products' time per evaluation:
    /// 160×120 63.5 → 56.0 and 53.9 → 48.0 ms, 256×256 130 → 123 ms, 384×288 225 → 208 ms,
    /// 512×512 616 → 544 and 505 → 479 ms. The same sums in the same order, so the same bits:
    /// a 5-iteration run at 160×120 wrote the same image and losses as before.
    Panels,
}

impl KernelLayout {
    /// The layout the products read on `level`.
    pub(crate) fn of(level: Simd) -> KernelLayout {
        #[cfg(target_arch = "x86_64")]
        {
            match level {
                Simd::Avx512 => <Zmm as Blocking>::LAYOUT,
                Simd::Avx2 => <Ymm as Blocking>::LAYOUT,
                Simd::Baseline => KernelLayout::Rows,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = level;
            KernelLayout::Rows
        }
    }

    /// Where (k, c) of a K × C kernel lies.
    pub(crate) fn at(self, k_total: usize, c_total: usize, k: usize, c: usize) -> usize {
        debug_assert!(k < k_total && c < c_total);
        match self {
            KernelLayout::Rows => k * c_total + c,
            KernelLayout::Panels => {
                let first = k / PANEL * PANEL;
                let n = PANEL.min(k_total - first);
                first * c_total + c * n + (k - first)
            }
        }
    }
}

/// Where one ξ's product reads and writes: `V_ξ` at `v[c·tb + t]`, `U_ξ` in the
/// [`KernelLayout`] of the set that reads it, `M_ξ` at `m[k·ms + t]`, for tiles t < tb.
#[derive(Clone, Copy)]
pub(crate) struct Operands {
    pub v: *const f32,
    pub u: *const f32,
    pub m: *mut f32,
    /// Input channels C.
    pub c: usize,
    /// Output channels K.
    pub k: usize,
    /// Tiles a row of `V_ξ` and `M_ξ` hold (a multiple of 16).
    pub tb: usize,
    /// Floats from one row of `M_ξ` to the next, at least `tb`.
    pub ms: usize,
}

/// Whether images of `tiles` tiles have their products done here on `level` rather than by
/// gemm: below [`Blocking::BELOW`] of the set, and always where the set's kernels lie in
/// panels (gemm reads rows); never on the baseline. Decided per image size, never by the
/// batch, so that a batch's images are computed as alone.
pub(crate) fn in_place(level: Simd, tiles: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        fn here<V: Blocking>(tiles: usize) -> bool {
            tiles < V::BELOW || V::LAYOUT == KernelLayout::Panels
        }
        match level {
            Simd::Avx512 => here::<Zmm>(tiles),
            Simd::Avx2 => here::<Ymm>(tiles),
            Simd::Baseline => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (level, tiles);
        false
    }
}

/// `M_ξ[k][t] = Σ_c U_ξ[k][c] V_ξ[c][t]` for every output channel k < K and every tile t below
/// `nt` rounded up to the set's vector (≤ tb: the lanes past `nt` compute whatever `V_ξ` holds
/// there and are never read).
///
/// # Safety
/// The CPU must have `level`'s instructions ([`Simd::Avx512`]: AVX-512F; [`Simd::Avx2`]: AVX2
/// and FMA); `level` is not the baseline. `v` must be readable for C rows of `tb` floats, `u`
/// for K·C floats in `level`'s [`KernelLayout`], `m` writable for K rows of `tb` floats `ms` ≥
/// `tb` apart, and nothing else may write them meanwhile; `nt ≤ tb`, `tb` a multiple of 16.
pub(crate) unsafe fn product(level: Simd, o: Operands, nt: usize) {
    debug_assert!(o.tb.is_multiple_of(16) && nt <= o.tb && o.ms >= o.tb);
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn wide(o: Operands, nt: usize) {
            // SAFETY: the caller's bounds and CPU.
            unsafe { blocks::<Zmm>(o, nt) }
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn narrow(o: Operands, nt: usize) {
            // SAFETY: the caller's bounds and CPU.
            unsafe { blocks::<Ymm>(o, nt) }
        }
        match level {
            // SAFETY: the caller's bounds and CPU.
            Simd::Avx512 => return unsafe { wide(o, nt) },
            // SAFETY: as above.
            Simd::Avx2 => return unsafe { narrow(o, nt) },
            Simd::Baseline => {}
        }
    }
    unreachable!("in-place products on {level:?}")
}

/// The register blocks' shapes and reach for one set's vector ([`Vector`], whose operations
/// are inlined into a function compiled for the set: [`product`]).
#[cfg(target_arch = "x86_64")]
trait Blocking: Vector {
    /// The layout of `U_ξ` the blocks read ([`KernelLayout::Panels`]: every block's output
    /// channels, [`Blocking::GROUP`]'s and [`Blocking::REST`]'s, are whole panels but at the
    /// end of K).
    const LAYOUT: KernelLayout;
    /// Accumulators a register block may hold: 24 of AVX-512's 32 registers, 12 of AVX2's 16
    /// (the rest hold a row of tiles and the broadcast weight).
    const ACC: usize;
    /// Images of fewer tiles than this are done here ([`in_place`]).
    const BELOW: usize;
    /// The block shapes: vectors of tiles × output channels of the groups every image's tiles
    /// are cut into, and the output channels of a block of the 1, 2, … vectors left over.
    const GROUP: (usize, usize);
    const REST: &'static [usize];
}

#[cfg(target_arch = "x86_64")]
impl Blocking for Zmm {
    const LAYOUT: KernelLayout = KernelLayout::Panels;
    const ACC: usize = 24;
    /// Every size: measured on the project's Xeon (2026-12-01), within one `runner bench`
    /// process, evaluations alternating between gemm from 64 tiles on and in place throughout
    /// (means of 20 / 10 / 4 evaluations per side, two processes per size), the products' time
    /// per evaluation: 160×120 51.2 → 48.8 and 54.7 → 49.7 ms, 256×256 111 → 107 and 106 →
    /// 105 ms, 512×512 433 → 420 and 405 → 404 ms. (Before 2026-12-01: from 64 tiles on gemm,
    /// then as fast as this or faster; since then a block's next rows are prefetched.)
    const BELOW: usize = usize::MAX;
    /// 4 vectors (64 tiles) × 6 channels, then 1 × 18, 2 × 12, 3 × 6: whole panels.
    const GROUP: (usize, usize) = (4, 6);
    const REST: &'static [usize] = &[18, 12, 6];
}

#[cfg(target_arch = "x86_64")]
impl Blocking for Ymm {
    const LAYOUT: KernelLayout = KernelLayout::Rows;
    const ACC: usize = 12;
    /// Measured on a Zen 3 (2 threads, the 36 products of one block, the two paths alternating,
    /// best of 15 each, in place / gemm): 512 → 512 channels on 6 tiles 0.71–0.86, on 20 tiles
    /// 0.86–0.92; on 64 tiles 1.17–1.18, 128 tiles 1.22; 256 → 256 on 80 tiles 1.06–1.17.
    /// (With 64 or 128 input channels and 140–200 tiles in place was 3–17% faster, but such
    /// layers are blocks of large images, whose deep layers want gemm.)
    const BELOW: usize = 64;
    /// 3 vectors (24 tiles) × 4 channels, then 1 × 10 and 2 × 6. On 20 tiles 3 × 4 took 15–18%
    /// fewer samples than 2 × 6 and 1 × 12 (`runner bench --size 160 --height 120`); on 6 tiles
    /// 1 × 10 0.82 of gemm's time where 1 × 8 took 0.85–0.91 and 1 × 12 0.85–0.95.
    const GROUP: (usize, usize) = (3, 4);
    const REST: &'static [usize] = &[10, 6];
}

/// Every block of one product: the tiles in groups of [`Blocking::GROUP`] with the output
/// channels outside, so that the channels' rows of `U_ξ` are reused from cache by every group;
/// then the vectors left over. Where the leftover's blocks are whole multiples of the groups'
/// channels (AVX-512's 18, 12 and 6 of 6), both go through the channels one leftover block at
/// a time, the groups first, so that the leftover reads its channels of `U_ξ` from cache
/// rather than from memory a second time (elsewhere: all groups, then all the leftover).
///
/// Measured on the project's Xeon (family 6 model 207, 2026-12-02), `runner bench` with
/// evaluations alternating between this and all groups first, the mean evaluation: 160×120
/// (conv4: 80 tiles of F(2×2), a group of 4 vectors and 1 left over, whose 16 MiB of `U_ξ` per
/// layer were read twice) 116.4 / 117.2, 109.5 / 113.7, 113.2 / 117.7, 117.8 / 125.4 ms;
/// 384×288 (108 tiles: 3 left over) 389.9 / 403.2, 444.0 / 459.6, 412.3 / 400.2 ms; 256×256
/// 242.9 / 247.1 ms; 512×512 861.9 / 854.5 ms. The same sums: a tile's is its own lane,
/// whichever block computes it.
///
/// # Safety
/// As [`product`], inlined into a function compiled for `V`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn blocks<V: Blocking>(o: Operands, nt: usize) {
    // `shapes!` below has blocks for groups of up to 4 vectors, and a rest width for each
    // count of vectors a group can leave over: a set outside that would skip tiles silently.
    const { assert!(V::GROUP.0 >= 1 && V::GROUP.0 <= 4 && V::REST.len() + 1 == V::GROUP.0) };
    // Panels hold PANEL channels: a block of another width would start inside one.
    const {
        let mut i = 0;
        while i < V::REST.len() {
            assert!(!matches!(V::LAYOUT, KernelLayout::Panels) || V::REST[i] % PANEL == 0);
            i += 1;
        }
        assert!(!matches!(V::LAYOUT, KernelLayout::Panels) || V::GROUP.1 % PANEL == 0);
    };
    let vectors = nt.div_ceil(V::LANES);
    let (group, _) = V::GROUP;
    let (whole, rest) = (vectors / group * group, vectors % group);
    let t0 = whole * V::LANES;
    // Channels per pass of both: a leftover block's, when it is whole groups' blocks; else all.
    let slab = match rest {
        r if r > 0 && V::REST[r - 1] % V::GROUP.1 == 0 => V::REST[r - 1],
        _ => o.k,
    };
    let mut k0 = 0;
    while k0 < o.k {
        let k1 = (k0 + slab).min(o.k);
        // SAFETY: the caller's bounds; each block reads rows of `v` from column t for R
        // vectors (t + R·LANES ≤ ⌈nt/LANES⌉·LANES ≤ tb), rows k0..k0 + n of `u` (k0 + n ≤
        // k1 ≤ K; k0 a multiple of every block's width, so of PANEL on panels), and writes
        // that part of `m`.
        unsafe {
            macro_rules! shapes {
                ($($r:literal)*) => {
                    $(if $r == group {
                        by_channels::<V, $r>(o, (0, t0), (k0, k1), V::GROUP.1);
                    })*
                    $(if $r == rest {
                        by_channels::<V, $r>(o, (t0, t0 + $r * V::LANES), (k0, k1), V::REST[rest - 1]);
                    })*
                };
            }
            shapes!(1 2 3 4);
        }
        k0 = k1;
    }
}

/// Tiles `t0..t1` (whole groups of R vectors) through output channels `k0..k1`, `width` at a
/// time.
///
/// # Safety
/// As [`product`], with `t1 ≤ tb`, `k1 ≤ K`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn by_channels<V: Blocking, const R: usize>(
    o: Operands,
    (t0, t1): (usize, usize),
    (k0, k1): (usize, usize),
    width: usize,
) {
    let mut k = k0;
    while t0 < t1 && k < k1 {
        let n = (k1 - k).min(width);
        for t in (t0..t1).step_by(V::LANES * R) {
            // SAFETY: the caller's bounds; k + n ≤ k1 ≤ K, t + R·LANES ≤ t1.
            unsafe { channels::<V, R>(o, t, k, n) };
        }
        k += n;
    }
}

/// One register block of R vectors of tiles from `t0` and `n` ≤ ACC / R output channels from
/// `k0` (a block for each width, so that the accumulators are registers), in the set's layout.
///
/// # Safety
/// As [`by_channels`], with `k0 + n ≤ K`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channels<V: Blocking, const R: usize>(o: Operands, t0: usize, k0: usize, n: usize) {
    macro_rules! widths {
        ($($n:literal)*) => {
            match n {
                // SAFETY: the caller's bounds.
                $($n if R * $n <= V::ACC => unsafe { block::<V, R, $n>(o, t0, k0) },)*
                _ => unreachable!("a register block of {R} × {n}"),
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18)
}

/// The register block: `acc[j][r]` for channel k0 + j and tiles t0 + LANES·r and the LANES
/// after, read from `U_ξ` in the set's layout.
///
/// # Safety
/// As [`channels`], where the CPU's `V` is enabled.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block<V: Blocking, const R: usize, const N: usize>(o: Operands, t0: usize, k0: usize) {
    // SAFETY: the caller's.
    unsafe {
        match V::LAYOUT {
            KernelLayout::Rows => block_rows::<V, R, N>(o, t0, k0),
            KernelLayout::Panels => block_panels::<V, R, N>(o, t0, k0),
        }
    }
}

/// Panels a register block reads at most (N ≤ 24 channels).
#[cfg(target_arch = "x86_64")]
const BLOCK_PANELS: usize = 4;

/// Input channels of a panel prefetched ahead of the one in use (4 to 24 cache lines, by the
/// panel's width): the distance of the measurement of [`KernelLayout::Panels`], not tuned.
#[cfg(target_arch = "x86_64")]
const PANEL_AHEAD: usize = 64;

/// [`block`] on [`KernelLayout::Panels`]: channels k0 … k0 + N − 1 are the panels from k0 (k0 a
/// multiple of [`PANEL`]; panel i holds min(P, N − iP) of them, as the kernel's own panels do:
/// N is a whole number of panels, or reaches K), each read as one stream, a channel's values
/// after the other's.
///
/// # Safety
/// As [`block`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block_panels<V: Blocking, const R: usize, const N: usize>(o: Operands, t0: usize, k0: usize) {
    const { assert!(N <= BLOCK_PANELS * PANEL) };
    let panels = N.div_ceil(PANEL);
    let width = |i: usize| PANEL.min(N - i * PANEL);
    debug_assert!(k0.is_multiple_of(PANEL) && k0 + N <= o.k);
    // SAFETY: panel i of the block is the kernel's panel at (k0 + iP)·C, C·width(i) floats
    // inside `u` (k0 + N ≤ K); every other address read or written is inside the operands by
    // the caller's bounds; prefetches past them are hints that do not fault.
    unsafe {
        let mut acc = [[V::zero(); R]; N];
        let mut u = [o.u; BLOCK_PANELS];
        for (i, u) in u.iter_mut().enumerate().take(panels) {
            *u = o.u.add((k0 + i * PANEL) * o.c);
        }
        let mut v = o.v.add(t0);
        for _ in 0..o.c {
            for (i, u) in u.iter().enumerate().take(panels) {
                _mm_prefetch::<_MM_HINT_T0>(u.wrapping_add(PANEL_AHEAD * width(i)).cast());
            }
            let x = tiles::<V, R>(v, o.tb);
            // Panel by panel, so that LLVM unrolls both loops whole and the accumulators stay
            // registers (with the panel of each channel computed, j / PANEL, it kept the 18 of
            // a 1 × 18 block on the stack).
            for (i, p) in u.iter().enumerate().take(panels) {
                for jj in 0..width(i) {
                    let w = V::splat(*p.add(jj));
                    let acc = &mut acc[i * PANEL + jj];
                    for r in 0..R {
                        acc[r] = V::fma(x[r], w, acc[r]);
                    }
                }
            }
            for (i, u) in u.iter_mut().enumerate().take(panels) {
                *u = u.add(width(i));
            }
            v = v.add(o.tb);
        }
        store(o, t0, k0, &acc);
    }
}

/// The R vectors of tiles of one row of `V_ξ` from `v` (rows `tb` floats apart), after
/// prefetching the same tiles [`AHEAD`] rows on.
///
/// # Safety
/// `v` readable for R·LANES floats; the CPU's `V` enabled where this is inlined.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tiles<V: Blocking, const R: usize>(v: *const f32, tb: usize) -> [V; R] {
    // SAFETY: the caller's bounds; prefetches are hints that do not fault.
    unsafe {
        for r in (0..R).step_by(16 / V::LANES) {
            _mm_prefetch::<_MM_HINT_T0>(v.wrapping_add(AHEAD * tb + V::LANES * r).cast());
        }
        std::array::from_fn(|r| V::load(v.add(V::LANES * r)))
    }
}

/// A register block's sums `acc[j][r]` into `M_ξ`: channel k0 + j, tiles t0 + LANES·r and the
/// LANES after.
///
/// # Safety
/// As [`block`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store<V: Blocking, const R: usize, const N: usize>(o: Operands, t0: usize, k0: usize, acc: &[[V; R]; N]) {
    // SAFETY: rows k0 … k0 + N − 1 of `M_ξ` from column t0 + R·LANES ≤ tb, by the caller's bounds.
    unsafe {
        let m = o.m.add(k0 * o.ms + t0);
        for (j, acc) in acc.iter().enumerate() {
            for (r, a) in acc.iter().enumerate() {
                a.store(m.add(j * o.ms + V::LANES * r));
            }
        }
    }
}

/// [`block`] on [`KernelLayout::Rows`].
///
/// # Safety
/// As [`block`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block_rows<V: Blocking, const R: usize, const N: usize>(o: Operands, t0: usize, k0: usize) {
    // SAFETY: every address read or written is inside the operands by the caller's bounds;
    // prefetches past them are hints that do not fault.
    unsafe {
        let mut acc = [[V::zero(); R]; N];
        let (mut v, mut u) = (o.v.add(t0), o.u.add(k0 * o.c));
        // Input channels in runs of 16 (a cache line of each row of `U_ξ`), each run after the
        // prefetches of its lines ahead: a test for the run's start inside the loop made LLVM
        // keep AVX2's accumulators on the stack. Besides its own rows' lines ahead, each run
        // prefetches the same line of the next block's N rows (k0 + N …), one block's time
        // ahead: without, a block began on N rows not yet in any cache, read from memory one
        // line of each at a time until the prefetches ahead caught up. Measured on a Zen 3
        // (AVX2, 2 threads, the 36 products of one layer, kernels rotated through six copies
        // so that they come from memory as in the network; each run's median of 30–61, seven
        // runs before and nine after, alternating, the range and its median): 512 → 512 on 20
        // tiles 5.2–6.2 (5.7) → 3.8–6.0 (4.3) ms, on 6 tiles 3.7–4.5 (3.8) → 2.8–3.6 (3.2) ms,
        // 256 → 512 on 20 tiles 3.0–3.5 (3.3) → 2.1–2.7 (2.4) ms; per evaluation at 160×120
        // (conv4 and conv5 in place), four rounds, 0.163–0.179 → 0.152–0.159 s; the same sums.
        // Prefetching two blocks ahead instead measured the same, and dropping the prefetches
        // of a block's own rows (the next block's now cover them) was slower on 20 tiles.
        let mut c = 0;
        while c < o.c {
            for j in 0..N {
                _mm_prefetch::<_MM_HINT_T0>(u.wrapping_add(j * o.c + U_AHEAD).cast());
            }
            for j in N..2 * N {
                _mm_prefetch::<_MM_HINT_T0>(u.wrapping_add(j * o.c).cast());
            }
            let run = (o.c - c).min(16);
            for _ in 0..run {
                let x = tiles::<V, R>(v, o.tb);
                for (j, acc) in acc.iter_mut().enumerate() {
                    let w = V::splat(*u.add(j * o.c));
                    for r in 0..R {
                        acc[r] = V::fma(x[r], w, acc[r]);
                    }
                }
                v = v.add(o.tb);
                u = u.add(1);
            }
            c += run;
        }
        store(o, t0, k0, &acc);
    }
}
