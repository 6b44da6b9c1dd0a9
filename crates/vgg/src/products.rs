//! The Winograd products `M_ξ (K × T) = U_ξ (K × C) · V_ξ (C × T)` on AVX-512 for images of
//! few tiles, reading both operands where they lie.
//!
//! `gemm` packs both operands into panels of its own at every call, and its AVX-512 kernels
//! work on 64 tiles at a time. For the deep layers of a small image both cost: at 160×120 conv4
//! has 20 tiles and conv5 6, so each element of `U_ξ` (up to 512 × 512 floats per ξ, 38 MB per
//! layer) is used 20 or 6 times after being copied, and gemm's products there ran at 35–40
//! GFLOP/s (2 cores, 6 tiles) against 140–180 on large images. Here `U_ξ` is read in its own
//! layout, `[k][c]`: a register block of N output channels reads N rows side by side, each
//! front to back (N sequential streams, prefetched a few lines ahead); `V_ξ` is read as the
//! input transform wrote it, `[c][t]`, 16 tiles to a vector, a few rows ahead prefetched; the
//! register block's shape follows the tile count (16 to 64 tiles). The caller uses this for
//! images of fewer than 64 tiles ([`crate::winograd`]): from 64 tiles on, gemm was as fast or
//! faster (512×512, 2 threads: conv4 28.3 against 29.9 ms, conv5 7.8 against 8.5 ms).
//!
//! A register block is R vectors of 16 tiles × N output channels (R·N ≤ 24 accumulators), the
//! sum over all C input channels in one pass: `acc ← fma(v, u, acc)` from 0, c = 0, 1, …, C − 1.
//! Each tile's sum is its own vector lane, in that order whatever the block's shape, so a tile
//! gets the same bits wherever its block starts.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

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

/// Where one ξ's product reads and writes: `V_ξ` at `v[c·tb + t]`, `U_ξ` at `u[k·C + c]`, `M_ξ`
/// at `m[k·tb + t]`.
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
}

/// `M_ξ[k][t] = Σ_c U_ξ[k][c] V_ξ[c][t]` for every output channel k < K and every tile
/// t < ⌈nt/16⌉·16 (≤ tb: the lanes past `nt` compute whatever `V_ξ` holds there and are never
/// read).
///
/// # Safety
/// The CPU must have AVX-512F. `v` must be readable for C rows of `tb` floats, `u` for K rows
/// of C floats, `m` writable for K rows of `tb` floats, and nothing else may write them
/// meanwhile; `nt ≤ tb`, `tb` a multiple of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn product(o: Operands, nt: usize) {
    debug_assert!(o.tb.is_multiple_of(16) && nt <= o.tb);
    let vectors = nt.div_ceil(16);
    let (whole, rest) = (vectors / 4 * 4, vectors % 4);
    // SAFETY: the caller's bounds; each block reads rows of `v` from column t0 for R vectors
    // (t0 + 16·R ≤ tb), rows k0..k0 + n of `u` (k0 + n ≤ K), and writes that part of `m`.
    unsafe {
        // Groups of 4 vectors (64 tiles) with the output channels outside, so that the
        // channels' rows of `U_ξ` are reused from cache by every group; then the rest.
        by_channels::<4, 6>(o, 0, whole * 16);
        let t0 = whole * 16;
        match rest {
            1 => by_channels::<1, 16>(o, t0, t0 + 16),
            2 => by_channels::<2, 12>(o, t0, t0 + 32),
            3 => by_channels::<3, 8>(o, t0, t0 + 48),
            _ => {}
        }
    }
}

/// Tiles `t0..t1` (whole groups of R vectors) through every output channel, N at a time.
///
/// # Safety
/// As [`product`], with `t1 ≤ tb`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn by_channels<const R: usize, const N: usize>(o: Operands, t0: usize, t1: usize) {
    if t0 == t1 {
        return;
    }
    let mut k0 = 0;
    while k0 < o.k {
        let n = (o.k - k0).min(N);
        for t in (t0..t1).step_by(16 * R) {
            // SAFETY: the caller's bounds; k0 + n ≤ K, t + 16·R ≤ t1.
            unsafe { channels::<R>(o, t, k0, n) };
        }
        k0 += n;
    }
}

/// One register block of R vectors of tiles from `t0` and `n` ≤ 24 / R output channels from
/// `k0` (a block for each width, so that the accumulators are registers).
///
/// # Safety
/// As [`by_channels`], with `k0 + n ≤ K`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channels<const R: usize>(o: Operands, t0: usize, k0: usize, n: usize) {
    macro_rules! widths {
        ($($n:literal)*) => {
            match n {
                // SAFETY: the caller's bounds.
                $($n if R * $n <= 24 => unsafe { block::<R, $n>(o, t0, k0) },)*
                _ => unreachable!("a register block of {R} × {n}"),
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

/// The register block: `acc[j][r]` for channel k0 + j and tiles t0 + 16·r … t0 + 16·r + 15.
///
/// # Safety
/// As [`channels`], where the CPU's AVX-512F is enabled.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block<const R: usize, const N: usize>(o: Operands, t0: usize, k0: usize) {
    // SAFETY: every address read or written is inside the operands by the caller's bounds;
    // prefetches past them are hints that do not fault.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); R]; N];
        let (mut v, mut u) = (o.v.add(t0), o.u.add(k0 * o.c));
        for c in 0..o.c {
            if c % 16 == 0 {
                for j in 0..N {
                    _mm_prefetch::<_MM_HINT_T0>(u.wrapping_add(j * o.c + U_AHEAD).cast());
                }
            }
            for r in 0..R {
                _mm_prefetch::<_MM_HINT_T0>(v.wrapping_add(AHEAD * o.tb + 16 * r).cast());
            }
            let x: [__m512; R] = std::array::from_fn(|r| _mm512_loadu_ps(v.add(16 * r)));
            for (j, acc) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*u.add(j * o.c));
                for r in 0..R {
                    acc[r] = _mm512_fmadd_ps(x[r], w, acc[r]);
                }
            }
            v = v.add(o.tb);
            u = u.add(1);
        }
        let m = o.m.add(k0 * o.tb + t0);
        for (j, acc) in acc.iter().enumerate() {
            for (r, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(m.add(j * o.tb + 16 * r), *a);
            }
        }
    }
}
