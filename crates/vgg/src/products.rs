//! The Winograd products `M (K × T) = U (K × C) · V (C × T)` on AVX-512, with the kernel `U`
//! packed once, when the kernel is transformed, into panels of `KR` output channels.
//!
//! A product is computed `KR` rows of `M` by at most `16·TR` columns at a time, in registers:
//! for each input channel `c`, `TR` vectors of 16 tiles are loaded from row `c` of `V`, each of
//! the panel's `KR` values `U[k][c]` is broadcast, and `KR × TR` fused multiply-adds accumulate
//! (`KR × TR = 24` of the 32 vector registers). The sum runs over every `c` in registers and is
//! stored once; nothing of `V` or `M` is copied or repacked: both keep the Winograd code's
//! layout (a channel's row, tiles contiguous), and a last partial vector of tiles is loaded and
//! stored under a mask.
//!
//! Why not the `gemm` crate here: measured on the project's Intel Xeon (one core, AVX-512, the
//! products of VGG19's layers, K = C = 512, T = 16–128): `gemm`'s AVX-512 kernels 80–93 GFLOP/s,
//! these 130–160 GFLOP/s, where the core's peak (two 512-bit FMA pipes) measured 190. `gemm`
//! repacks both operands on every call and its kernel has 6 columns for our 16–64 tiles; here
//! the kernel's packing is paid once per network and the tiles are the vector lanes.
//!
//! Panel height: `KR = 8` (with `TR = 3`) for K ≤ 128, `KR = 12` (`TR = 2`) above, so that K =
//! 64 and 128 need no padding rows and K = 256, 512 use the faster taller panel (measured:
//! 146–148 against 129 GFLOP/s at K = 64; 153–160 against 135–150 at K = 256, 512).

/// Output channels per panel for `k` output channels.
pub(crate) fn panel_rows(k: usize) -> usize {
    if k > 128 {
        12
    } else {
        8
    }
}

/// `u` (K × C, row-major) as panels of `kr` rows, `[K / kr][C][kr]`, the rows past K zero.
pub(crate) fn pack(u: &[f32], k: usize, c: usize, kr: usize) -> Vec<f32> {
    assert_eq!(u.len(), k * c, "kernel size");
    let panels = k.div_ceil(kr);
    let mut out = vec![0f32; panels * c * kr];
    for (p, panel) in out.chunks_exact_mut(c * kr).enumerate() {
        for r in 0..kr.min(k - p * kr) {
            let row = &u[(p * kr + r) * c..(p * kr + r + 1) * c];
            for (ci, &x) in row.iter().enumerate() {
                panel[ci * kr + r] = x;
            }
        }
    }
    out
}

/// Where a product reads and writes: `V` rows of `t` tiles `v_rs` floats apart, `M` rows
/// `m_rs` apart.
#[derive(Clone, Copy)]
pub(crate) struct Operands {
    /// `V`'s first element, row `c` at `v + c·v_rs`.
    pub v: *const f32,
    /// Floats between rows of `V`.
    pub v_rs: usize,
    /// `M`'s first element, row `k` at `m + k·m_rs`.
    pub m: *mut f32,
    /// Floats between rows of `M`.
    pub m_rs: usize,
}

/// `M[k][t] = Σ_c U[k][c] V[c][t]` for `k < K`, `t < T`; `u` is `U` as [`pack`] made it with
/// `kr = panel_rows(K)`.
///
/// # Safety
/// The CPU has AVX-512F. Rows `0..C` of `V` hold `T` readable floats from `op.v`, rows `0..K`
/// of `M` `T` writable floats from `op.m`, which no other thread touches meanwhile.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn product(u: &[f32], (k, t, c): (usize, usize, usize), op: Operands) {
    let kr = panel_rows(k);
    assert_eq!(u.len(), k.div_ceil(kr) * kr * c, "packed kernel size");
    // SAFETY: as this function's contract; `u` holds every panel (checked above).
    unsafe {
        match kr {
            8 => panels::<8, 3>(u, (k, t, c), op),
            _ => panels::<12, 2>(u, (k, t, c), op),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn panels<const KR: usize, const TR: usize>(u: &[f32], (k, t, c): (usize, usize, usize), op: Operands) {
    for (p, panel) in u.chunks_exact(c * KR).enumerate() {
        let rows = KR.min(k - p * KR);
        let mut t0 = 0;
        while t0 < t {
            let n = (t - t0).min(16 * TR);
            // SAFETY: columns t0..t0+n of rows 0..C of V and of rows p·KR..p·KR+rows of M lie in
            // what the caller vouched for.
            unsafe {
                let at = Operands { v: op.v.add(t0), m: op.m.add(p * KR * op.m_rs + t0), ..op };
                match n.div_ceil(16) {
                    1 => block::<KR, 1>(panel, c, at, rows, n),
                    2 => block::<KR, 2>(panel, c, at, rows, n),
                    _ => block::<KR, TR>(panel, c, at, rows, n),
                }
            }
            t0 += n;
        }
    }
}

/// One register block: `rows ≤ KR` rows of `M` by `n` tiles, `16·(W − 1) < n ≤ 16·W`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block<const KR: usize, const W: usize>(panel: &[f32], c: usize, op: Operands, rows: usize, n: usize) {
    use std::arch::x86_64::*;
    let last: __mmask16 = if n.is_multiple_of(16) { 0xffff } else { (1u16 << (n % 16)) - 1 };
    let mut acc = [[_mm512_setzero_ps(); W]; KR];
    for (ci, us) in panel.chunks_exact(KR).enumerate().take(c) {
        // SAFETY: row ci of V has n readable floats (the caller's contract); the last vector
        // reads only the lanes under `last`.
        // Rows of V are `v_rs` apart, often a page or more: fetch 8 rows ahead, which the
        // hardware prefetcher would not (measured +15% on the K = C = 512 products). A
        // prefetch never faults; the address is only computed, with wrapping arithmetic.
        for j in 0..W {
            _mm_prefetch::<_MM_HINT_T0>(op.v.wrapping_add((ci + 8) * op.v_rs + 16 * j) as *const i8);
        }
        let vv: [__m512; W] = std::array::from_fn(|j| unsafe {
            let p = op.v.add(ci * op.v_rs + 16 * j);
            if j + 1 == W {
                _mm512_maskz_loadu_ps(last, p)
            } else {
                _mm512_loadu_ps(p)
            }
        });
        for r in 0..KR {
            let b = _mm512_set1_ps(us[r]);
            for j in 0..W {
                acc[r][j] = _mm512_fmadd_ps(b, vv[j], acc[r][j]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(rows) {
        for (j, &a) in acc.iter().enumerate() {
            // SAFETY: row r of this block of M has n writable floats; the last vector writes
            // only the lanes under `last`.
            unsafe {
                let p = op.m.add(r * op.m_rs + 16 * j);
                if j + 1 == W {
                    _mm512_mask_storeu_ps(p, last, a)
                } else {
                    _mm512_storeu_ps(p, a)
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn products_match_a_direct_sum_at_every_tail() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F on this CPU: the packed products are never used here");
            return;
        }
        // K: below, at and past both panel heights (3, 8, 20, 130); T: partial, whole and
        // several vectors; C: the first layer's 3 and a generic count. Rows of V and M padded
        // (strides past T) so that a read or write past T would show.
        for &(k, t, c) in &[(3, 5, 64), (8, 16, 3), (20, 17, 7), (64, 48, 64), (130, 33, 9), (24, 70, 5)] {
            let (v_rs, m_rs) = (t + 5, t + 3);
            let u: Vec<f32> = (0..k * c).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
            let v: Vec<f32> = (0..c * v_rs).map(|i| ((i * 53 % 29) as f32 - 14.0) / 5.0).collect();
            let mut m = vec![f32::NAN; k * m_rs];
            let packed = pack(&u, k, c, panel_rows(k));
            let op = Operands { v: v.as_ptr(), v_rs, m: m.as_mut_ptr(), m_rs };
            // SAFETY: the CPU has AVX-512F (checked above); V has C rows of v_rs ≥ T floats, M
            // K rows of m_rs ≥ T floats.
            unsafe { product(&packed, (k, t, c), op) };
            for kk in 0..k {
                for tt in 0..m_rs {
                    let got = m[kk * m_rs + tt];
                    if tt >= t {
                        assert!(got.is_nan(), "wrote past T at ({kk}, {tt}) for {k}×{t}×{c}");
                        continue;
                    }
                    let want: f64 = (0..c).map(|ci| f64::from(u[kk * c + ci]) * f64::from(v[ci * v_rs + tt])).sum();
                    assert!(
                        (f64::from(got) - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "({kk}, {tt}) of {k}×{t}×{c}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
