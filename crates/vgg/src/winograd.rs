//! Winograd minimal filtering F(m×m, 3×3) for 3×3, stride-1, padding-1 convolutions on the CPU
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).
//!
//! For an output tile of m×m pixels, the a×a input tile (a = m + 2) is transformed to
//! `V = Bᵀ d B`, the kernel to `U = G g Gᵀ`, and `Y = Aᵀ (Σ_c U ⊙ V) A`. The sum over input
//! channels is, for each of the a² transform positions ξ, one matrix product
//! `M_ξ (K × T) = U_ξ (K × C) · V_ξ (C × T)` over the T tiles, done by the `gemm` crate.
//! F(4×4, 3×3) needs 36 multiplications per 16 outputs where the direct convolution needs 144.
//!
//! Work is done in blocks of whole tile rows so that the transformed input and output of a block
//! stay in cache; inside a block, transforms are parallel over channels and the a² products are
//! parallel over ξ (rayon). Buffers are allocated per call; there is no hidden global state.

// Index loops over the small constant tables are deliberate: with constant bounds they unroll
// and the table entries become compile-time constants.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use crate::tape::Bits;

/// The constant matrices of one Winograd variant: `bt` (a×a), `g` (a×3), `at` (m×a).
pub(crate) struct Tables<const M: usize, const A: usize> {
    bt: [[f32; A]; A],
    g: [[f32; 3]; A],
    at: [[f32; A]; M],
}

/// F(2×2, 3×3), interpolation points 0, 1, −1, ∞.
pub(crate) const F23: Tables<2, 4> = Tables {
    bt: [[1., 0., -1., 0.], [0., 1., 1., 0.], [0., -1., 1., 0.], [0., 1., 0., -1.]],
    g: [[1., 0., 0.], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0., 0., 1.]],
    at: [[1., 1., 1., 0.], [0., 1., -1., -1.]],
};

/// F(4×4, 3×3) with interpolation points 0, 1, −1, ½, −2, ∞ rather than Lavin & Gray's
/// 0, ±1, ±2, ∞: about 1.7× smaller float32 error (mean 1.3e-6 against 2.2e-6 relative over 64
/// channels of random data), and every constant applied at run time (`bt`, `at`) is a dyadic
/// fraction, exact in binary; the fractions of `g` touch only the weights, once, in f64.
pub(crate) const F43: Tables<4, 6> = Tables {
    bt: [
        [1., -1.5, -2., 1.5, 1., 0.],
        [0., -1., 0.5, 2.5, 1., 0.],
        [0., 1., -2.5, 0.5, 1., 0.],
        [0., -2., -1., 2., 1., 0.],
        [0., 0.5, -1., -0.5, 1., 0.],
        [0., 1., -1.5, -2., 1.5, 1.],
    ],
    g: [
        [1., 0., 0.],
        [1. / 3., 1. / 3., 1. / 3.],
        [-1. / 3., 1. / 3., -1. / 3.],
        [-16. / 15., -8. / 15., -4. / 15.],
        [1. / 15., -2. / 15., 4. / 15.],
        [0., 0., 1.],
    ],
    at: [
        [1., 1., 1., 1., 1., 0.],
        [0., 1., -1., 0.5, -2., 0.],
        [0., 1., 1., 0.25, 4., 0.],
        [0., 1., -1., 0.125, -8., 1.],
    ],
};

/// A Winograd variant's tables as compile-time constants, so that the transforms specialise.
pub(crate) trait TableSet<const M: usize, const A: usize> {
    const T: Tables<M, A>;
}

/// Marker for F(2×2, 3×3).
pub(crate) struct W23;
impl TableSet<2, 4> for W23 {
    const T: Tables<2, 4> = F23;
}

/// Marker for F(4×4, 3×3).
pub(crate) struct W43;
impl TableSet<4, 6> for W43 {
    const T: Tables<4, 6> = F43;
}

/// `acc + c * x`, written so that, once the tables are constants, multiplications by 0 and ±1
/// disappear at compile time.
#[inline(always)]
fn madd(acc: f32, c: f32, x: f32) -> f32 {
    if c == 0.0 {
        acc
    } else if c == 1.0 {
        acc + x
    } else if c == -1.0 {
        acc - x
    } else {
        acc + c * x
    }
}

/// A convolution's kernel in the Winograd domain: `u[ξ][k][c]` for `K` outputs, `C` inputs.
pub(crate) struct Kernel {
    u: Vec<f32>,
    k: usize,
    c: usize,
    variant: Variant,
}

impl Kernel {
    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.u.len() * 4
    }
}

/// Which Winograd variant a kernel was transformed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Variant {
    F23,
    F43,
}

/// Transforms weights `w[k][c][3][3]` (`transpose_flip`: use `w[c][k][2-i][2-j]` instead, the
/// kernel of the input gradient, with `k` and `c` meaning the gradient conv's out/in channels).
pub(crate) fn transform_kernel(variant: Variant, w: &[f32], k_out: usize, c_in: usize, transpose_flip: bool) -> Kernel {
    let u = match variant {
        Variant::F23 => transform_kernel_t(&F23, w, k_out, c_in, transpose_flip),
        Variant::F43 => transform_kernel_t(&F43, w, k_out, c_in, transpose_flip),
    };
    Kernel { u, k: k_out, c: c_in, variant }
}

fn transform_kernel_t<const M: usize, const A: usize>(
    t: &Tables<M, A>,
    w: &[f32],
    k_out: usize,
    c_in: usize,
    transpose_flip: bool,
) -> Vec<f32> {
    let mut u = vec![0f32; A * A * k_out * c_in];
    let plane = k_out * c_in;
    // (k, c) pairs are independent: parallel over k, then scattered into the ξ-major layout.
    let rows: Vec<Vec<f32>> = (0..k_out)
        .into_par_iter()
        .map(|k| {
            let mut out = vec![0f32; A * A * c_in];
            for c in 0..c_in {
                let mut g = [[0f32; 3]; 3];
                for (i, row) in g.iter_mut().enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = if transpose_flip {
                            w[((c * k_out + k) * 3 + (2 - i)) * 3 + (2 - j)]
                        } else {
                            w[((k * c_in + c) * 3 + i) * 3 + j]
                        };
                    }
                }
                // tmp = G g (A×3); U = tmp Gᵀ (A×A); accumulate in f64 once, at load time.
                let mut tmp = [[0f64; 3]; A];
                for (xi, trow) in tmp.iter_mut().enumerate() {
                    for (j, v) in trow.iter_mut().enumerate() {
                        *v = (0..3).map(|i| t.g[xi][i] as f64 * g[i][j] as f64).sum();
                    }
                }
                for xi in 0..A {
                    for xj in 0..A {
                        let v: f64 = (0..3).map(|j| tmp[xi][j] * t.g[xj][j] as f64).sum();
                        out[(xi * A + xj) * c_in + c] = v as f32;
                    }
                }
            }
            out
        })
        .collect();
    for (k, r) in rows.iter().enumerate() {
        for xi in 0..A * A {
            u[xi * plane + k * c_in..xi * plane + (k + 1) * c_in].copy_from_slice(&r[xi * c_in..(xi + 1) * c_in]);
        }
    }
    u
}

/// What the output of [`conv`] goes through before it is stored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epilogue<'a> {
    /// Added per output channel.
    pub bias: Option<&'a [f32]>,
    /// Apply `max(0, ·)`.
    pub relu: bool,
}

/// A raw pointer that may be shared by threads that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: the users of a `SharedMut` write disjoint elements (each says which) of a buffer that
// outlives them.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not its field).
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// Where [`input_row`] writes one channel's transformed tiles: (ξ, t) at `at + ξ·xs + t`, for
/// t below the block's tile count; the caller guarantees that this range is its own.
#[derive(Clone, Copy)]
struct Scatter {
    at: *mut f32,
    xs: usize,
}

/// `out (N, K, H, W) = conv3x3(x (N, C, H, W) ⊙ mask, kernel)` followed by the epilogue, with
/// the variant the kernel was transformed for. `mask`, when given, holds one bit per value of
/// `x`; it zeroes the inputs whose bit is 0 (the ReLU derivative of the backward pass, fused).
/// The tiles of all `n` images go through the same products, so that a batch of small images
/// reads the transformed kernel once per block instead of once per image; every output value
/// is still its own image's (a column of the products is one tile).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    kernel: &Kernel,
    x: &[f32],
    mask: Option<Bits<'_>>,
    n: usize,
    h: usize,
    w: usize,
    epi: Epilogue<'_>,
    out: &mut [f32],
) {
    conv_with(simd(), kernel, x, mask, (n, h, w), epi, out)
}

/// [`conv`] with the transforms on instruction set `level`, which the CPU must have.
fn conv_with(
    level: Simd,
    kernel: &Kernel,
    x: &[f32],
    mask: Option<Bits<'_>>,
    dims: (usize, usize, usize),
    epi: Epilogue<'_>,
    out: &mut [f32],
) {
    match kernel.variant {
        Variant::F23 => dispatch::<2, 4, W23>(level, kernel, x, mask, dims, epi, out),
        Variant::F43 => dispatch::<4, 6, W43>(level, kernel, x, mask, dims, epi, out),
    }
}

#[allow(clippy::too_many_arguments)]
fn dispatch<const M: usize, const A: usize, S: TableSet<M, A>>(
    level: Simd,
    kernel: &Kernel,
    x: &[f32],
    mask: Option<Bits<'_>>,
    (n, h, w): (usize, usize, usize),
    epi: Epilogue<'_>,
    out: &mut [f32],
) {
    let (k_out, c_in) = (kernel.k, kernel.c);
    assert_eq!(x.len(), n * c_in * h * w, "input size");
    assert_eq!(out.len(), n * k_out * h * w, "output size");
    let (th, tw) = (h.div_ceil(M), w.div_ceil(M));
    // Tile rows of all images, image after image: row g is row g mod th of image g / th.
    let rows = n * th;
    // Tile rows per block: keep the block's transformed input and output near 4 MiB...
    let per_tile = (c_in + k_out) * A * A * 4;
    // ... and at least MIN_TILES tiles, so that each product reads its part of the kernel (up
    // to 512 × 512 floats per ξ) once per MIN_TILES tiles rather than once per tile row (16
    // tiles at conv4 of a 512×512 image: gemm's AVX-512 kernel then does 100 GFLOP/s on one
    // core, 170 from 64 tiles on). Measured at 512×512 on the project's Xeon, forward: conv4_2
    // 45 ms with one tile row per block, 27 ms with 128 tiles; conv3_2 40 → 31 ms.
    let rows_per_block = ((4 << 20) / (per_tile * tw)).max(MIN_TILES.div_ceil(tw)).clamp(1, rows.max(1));
    // A row of a product's operands holds the block's tiles, padded to a multiple of 16 (a
    // whole number of AVX-512 vectors), so that a row's stride is never 1 like its element
    // stride: there `gemm` would choose its orientation, and so its summation order, by the tile
    // count, and a batch would round unlike its images alone.
    let tb = (rows_per_block * tw).next_multiple_of(16);
    let mut v = vec![0f32; c_in * A * A * tb];
    let mut mbuf = vec![0f32; k_out * A * A * tb];
    let mut g0 = 0;
    while g0 < rows {
        let g1 = (g0 + rows_per_block).min(rows);
        let nt = (g1 - g0) * tw;
        // 1. input transform, parallel over channels
        let vp = SharedMut(v.as_mut_ptr());
        (0..c_in).into_par_iter().for_each_init(
            || vec![0f32; input_scratch::<M, A>(tw)],
            |scratch, c| {
                // Channel c's values: (ξ, t) at ξ·C·tb + c·tb + t, t < tb, disjoint from every
                // other channel's, inside `v` (A²·C·tb floats), which outlives the loop.
                let vc = Scatter { at: vp.ptr().wrapping_add(c * tb), xs: c_in * tb };
                for g in g0..g1 {
                    let (b, ty) = (g / th, g % th);
                    let at = (b * c_in + c) * h * w;
                    let (xc, mc) = (&x[at..at + h * w], mask.map(|m| m.at(at)));
                    input_row::<M, A, S>(level, xc, mc, h, w, ty, tw, scratch, vc, (g - g0) * tw);
                }
            },
        );
        // 2. A² products M_ξ = U_ξ V_ξ, parallel over ξ
        let (vp, mp) = (SharedMut(v.as_mut_ptr()), SharedMut(mbuf.as_mut_ptr()));
        let u = &kernel.u;
        (0..A * A).into_par_iter().for_each(|xi| {
            // Each ξ reads its own C × tb block of `v` (at ξ·C·tb) and writes its own K × tb
            // block of `mbuf` (at ξ·K·tb), the first nt ≤ tb columns of each row; no two ξ
            // touch the same element, and both buffers outlive the parallel loop.
            let (vx, mx) = (vp.ptr().wrapping_add(xi * c_in * tb), mp.ptr().wrapping_add(xi * k_out * tb));
            // SAFETY: as above; U_ξ is K × C, row-major, at ξ·K·C.
            unsafe {
                gemm::gemm(
                    k_out,
                    nt,
                    c_in,
                    mx,
                    1,
                    tb as isize,
                    false,
                    u.as_ptr().add(xi * k_out * c_in),
                    1,
                    c_in as isize,
                    vx as *const f32,
                    1,
                    tb as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
        // 3. output transform, parallel over images × output channels
        let mbuf = &mbuf;
        out.par_chunks_mut(h * w).enumerate().for_each_init(
            || vec![0f32; output_scratch::<M, A>(tw)],
            |scratch, (j, yk)| {
                let (b, k) = (j / k_out, j % k_out);
                let rows_of_b = (b * th).max(g0)..((b + 1) * th).min(g1);
                if rows_of_b.is_empty() {
                    return;
                }
                // Channel k's values: (ξ, t) at ξ·K·tb + k·tb + t.
                let mk = &mbuf[k * tb..];
                let bias = epi.bias.map(|b| b[k]).unwrap_or(0.0);
                for g in rows_of_b {
                    let (t0, ty) = ((g - g0) * tw, g % th);
                    output_row::<M, A, S>(level, mk, t0, k_out * tb, tw, ty, h, w, bias, epi.relu, scratch, yk);
                }
            },
        );
        g0 = g1;
    }
}

/// Tiles per block at least (where the image has them): see [`dispatch`].
const MIN_TILES: usize = 128;

/// The instruction set the transforms run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// The build's baseline target (x86-64: SSE2).
    Baseline,
    /// AVX2 with FMA, 256-bit vectors.
    Avx2,
    /// AVX-512 (F, VL) with FMA, 512-bit vectors.
    Avx512,
}

impl Simd {
    /// The name `NST_CPU` takes and `runner bench` prints.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Baseline => "baseline",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }

    /// The best set this CPU runs.
    pub fn detected() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            let fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if fma && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                return Simd::Avx512;
            }
            if fma {
                return Simd::Avx2;
            }
        }
        Simd::Baseline
    }
}

/// The set the transforms use, chosen once: the best this CPU runs, or at most the one named by
/// `NST_CPU` (`avx512`, `avx2`, `baseline`), so that each path can be measured on one machine.
/// (It sets the transforms' instructions; the matrix products' kernels are gemm's choice:
/// [`gemm_kernels`].)
/// A set the CPU lacks is never used (its instructions would fault); an unknown name is
/// ignored.
pub fn simd() -> Simd {
    static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = Simd::detected();
        let asked = match std::env::var("NST_CPU").as_deref() {
            Ok("avx512") => Simd::Avx512,
            Ok("avx2") => Simd::Avx2,
            Ok("baseline") => Simd::Baseline,
            _ => best,
        };
        asked.min(best)
    })
}

/// The instruction set of gemm's micro-kernels (the Winograd products and candle's matrix
/// products): AVX-512 when this build has the `avx512` feature and the CPU has AVX-512F, else
/// AVX2+FMA when the CPU has them, else the baseline. gemm chooses at run time; `NST_CPU` does
/// not reach it.
pub fn gemm_kernels() -> Simd {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
            return Simd::Avx512;
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return Simd::Avx2;
        }
    }
    Simd::Baseline
}

/// Defines `$name(level, args…)`: `$impl` compiled for AVX-512 or AVX2+FMA when `level` says
/// so (the caller guarantees the CPU has it: [`simd`]), else for the baseline target. The
/// transforms are plain loops over constant tables that the compiler vectorises.
macro_rules! with_simd {
    ($name:ident, $impl:ident, ($($arg:ident: $ty:ty),*)) => {
        #[allow(clippy::too_many_arguments)]
        fn $name<const M: usize, const A: usize, S: TableSet<M, A>>(level: Simd, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide<const M: usize, const A: usize, S: TableSet<M, A>>($($arg: $ty),*) {
                    $impl::<M, A, S>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn narrow<const M: usize, const A: usize, S: TableSet<M, A>>($($arg: $ty),*) {
                    $impl::<M, A, S>($($arg),*)
                }
                match level {
                    // SAFETY: `level` is at most what the CPU supports (`simd`, `Simd::detected`).
                    Simd::Avx512 => return unsafe { wide::<M, A, S>($($arg),*) },
                    // SAFETY: as above.
                    Simd::Avx2 => return unsafe { narrow::<M, A, S>($($arg),*) },
                    Simd::Baseline => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = level;
            $impl::<M, A, S>($($arg),*)
        }
    };
}

with_simd!(input_row, input_row_impl, (
    xc: &[f32], mc: Option<Bits<'_>>, h: usize, w: usize, ty: usize, tw: usize,
    scratch: &mut [f32], vc: Scatter, t0: usize
));
with_simd!(output_row, output_row_impl, (
    mk: &[f32], t0: usize, xs: usize, tw: usize, ty: usize, h: usize, w: usize,
    bias: f32, relu: bool, q: &mut [f32], yk: &mut [f32]
));

/// Scratch floats [`input_row`] needs for `tw` tiles per row.
fn input_scratch<const M: usize, const A: usize>(tw: usize) -> usize {
    let n = tw + 1;
    2 * A * M * n + M * n
}

/// Scratch floats [`output_row`] needs for `tw` tiles per row.
fn output_scratch<const M: usize, const A: usize>(tw: usize) -> usize {
    (A + M) * M * tw
}

/// Transforms the tiles of tile row `ty` of one channel into `vc`, (ξ, t0 + tx) for each tile.
///
/// Every loop runs over contiguous memory: the vertical pass works on whole padded rows; its
/// result is then split into M phases (`P_p[tx] = r[M·tx + p]`), so that column j of tile `tx`
/// is `P_{j mod M}[tx + j / M]` and the horizontal pass runs along the tiles.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn input_row_impl<const M: usize, const A: usize, S: TableSet<M, A>>(
    xc: &[f32],
    mc: Option<Bits<'_>>,
    h: usize,
    w: usize,
    ty: usize,
    tw: usize,
    scratch: &mut [f32],
    vc: Scatter,
    t0: usize,
) {
    let t = &S::T;
    let n = tw + 1; // tiles plus the columns beyond the last tile
    let len = M * n; // ≥ M·tw + 2: the padded row, x from −1
    let (rows, rest) = scratch.split_at_mut(A * len);
    let (r, phases) = rest.split_at_mut(A * len);
    for i in 0..A {
        let dst = &mut rows[i * len..(i + 1) * len];
        let y = (M * ty + i) as isize - 1;
        if y < 0 || y >= h as isize {
            dst.fill(0.0);
            continue;
        }
        let y = y as usize;
        let src = &xc[y * w..(y + 1) * w];
        dst[0] = 0.0;
        match mc {
            None => dst[1..=w].copy_from_slice(src),
            Some(mc) => {
                let m = mc.at(y * w);
                for (x, (d, &v)) in dst[1..=w].iter_mut().zip(src).enumerate() {
                    *d = if m.get(x) { v } else { 0.0 };
                }
            }
        }
        dst[w + 1..].fill(0.0);
    }
    // Vertical pass: r[ξi][x] = Σ_i Bᵀ[ξi][i] rows[i][x]. All A outputs of a column are computed
    // together so that the coefficient loops unroll to constants.
    for x in 0..len {
        let col: [f32; A] = std::array::from_fn(|i| rows[i * len + x]);
        for xi in 0..A {
            let mut acc = 0.0;
            for i in 0..A {
                acc = madd(acc, t.bt[xi][i], col[i]);
            }
            r[xi * len + x] = acc;
        }
    }
    // Horizontal pass: v[ξi·A + ξj][tx] = Σ_j Bᵀ[ξj][j] r[ξi][M·tx + j]
    for xi in 0..A {
        let rr = &r[xi * len..(xi + 1) * len];
        for (tx, chunk) in rr.chunks_exact(M).enumerate() {
            for (p, &v) in chunk.iter().enumerate() {
                phases[p * n + tx] = v;
            }
        }
        for tx in 0..tw {
            let d: [f32; A] = std::array::from_fn(|j| phases[(j % M) * n + tx + j / M]);
            for xj in 0..A {
                let mut acc = 0.0;
                for j in 0..A {
                    acc = madd(acc, t.bt[xj][j], d[j]);
                }
                // SAFETY: `vc` covers columns t < tb of every ξ ([`Scatter`]); t0 + tx < tb.
                unsafe { *vc.at.add((xi * A + xj) * vc.xs + t0 + tx) = acc };
            }
        }
    }
}

/// Transforms `mk[ξ·xs + t0 + tx]` back to output tile row `ty` of one channel, with the
/// epilogue.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_row_impl<const M: usize, const A: usize, S: TableSet<M, A>>(
    mk: &[f32],
    t0: usize,
    xs: usize,
    tw: usize,
    ty: usize,
    h: usize,
    w: usize,
    bias: f32,
    relu: bool,
    q: &mut [f32],
    yk: &mut [f32],
) {
    let t = &S::T;
    let (q, yrow) = q.split_at_mut(A * M * tw);
    // Horizontal pass: q[ξi][r2][tx] = Σ_ξj Aᵀ[r2][ξj] m[ξi·A + ξj][tx]
    for xi in 0..A {
        for tx in 0..tw {
            let m: [f32; A] = std::array::from_fn(|xj| mk[(xi * A + xj) * xs + t0 + tx]);
            for r2 in 0..M {
                let mut acc = 0.0;
                for xj in 0..A {
                    acc = madd(acc, t.at[r2][xj], m[xj]);
                }
                q[(xi * M + r2) * tw + tx] = acc;
            }
        }
    }
    // Vertical pass: y[r1][M·tx + r2] = Σ_ξi Aᵀ[r1][ξi] q[ξi][r2][tx] + bias, into yrow[r1][r2][tx]
    for r2 in 0..M {
        for tx in 0..tw {
            let c: [f32; A] = std::array::from_fn(|xi| q[(xi * M + r2) * tw + tx]);
            for r1 in 0..M {
                let mut acc = bias;
                for xi in 0..A {
                    acc = madd(acc, t.at[r1][xi], c[xi]);
                }
                yrow[(r1 * M + r2) * tw + tx] = if relu { acc.max(0.0) } else { acc };
            }
        }
    }
    let full = (w / M).min(tw);
    for r1 in 0..M {
        let y = M * ty + r1;
        if y >= h {
            break;
        }
        let yrow = &yrow[r1 * M * tw..(r1 + 1) * M * tw];
        let row = &mut yk[y * w..(y + 1) * w];
        let (body, tail) = row.split_at_mut(full * M);
        for (tx, chunk) in body.chunks_exact_mut(M).enumerate() {
            for (r2, v) in chunk.iter_mut().enumerate() {
                *v = yrow[r2 * tw + tx];
            }
        }
        for (r2, v) in tail.iter_mut().enumerate() {
            *v = yrow[r2 * tw + full];
        }
    }
}

/// `(K, C)`: output and input channels of a transformed kernel.
pub(crate) fn kernel_dims(k: &Kernel) -> (usize, usize) {
    (k.k, k.c)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Direct 3×3 cross-correlation with zero padding 1, in f64.
    pub(crate) fn naive(x: &[f32], wt: &[f32], c: usize, k: usize, h: usize, w: usize) -> Vec<f64> {
        let mut out = vec![0f64; k * h * w];
        for o in 0..k {
            for y in 0..h {
                for xx in 0..w {
                    let mut acc = 0f64;
                    for i in 0..c {
                        for dy in 0..3 {
                            for dx in 0..3 {
                                let (sy, sx) = (y as isize + dy - 1, xx as isize + dx - 1);
                                if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                    continue;
                                }
                                acc += x[(i * h + sy as usize) * w + sx as usize] as f64
                                    * wt[((o * c + i) * 3 + dy as usize) * 3 + dx as usize] as f64;
                            }
                        }
                    }
                    out[(o * h + y) * w + xx] = acc;
                }
            }
        }
        out
    }

    fn rel_err(a: &[f32], b: &[f64]) -> f64 {
        let max_abs = b.iter().fold(0f64, |m, v| m.max(v.abs()));
        let max_err = a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((*x as f64 - y).abs()));
        max_err / max_abs
    }

    #[test]
    fn matches_direct_convolution_on_odd_sizes() {
        // 128 → 128 channels at 520×4 spans several blocks of tile rows (F(4×4): 130 rows, blocks
        // of 128; F(2×2): 260 rows, blocks of 128) with a partial last one; 9×130 is wide.
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for variant in [Variant::F23, Variant::F43] {
            for &(c, k, h, w) in &[
                (3, 8, 7, 11),
                (16, 5, 9, 6),
                (4, 4, 1, 1),
                (8, 16, 13, 17),
                (512, 256, 6, 8),
                (256, 64, 3, 4),
                (64, 3, 9, 130),
                (3, 130, 11, 70),
                (128, 128, 520, 4),
            ] {
                let x: Vec<f32> = (0..c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
                let wt: Vec<f32> = (0..k * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
                let kern = transform_kernel(variant, &wt, k, c, false);
                let mut out = vec![0f32; k * h * w];
                conv(&kern, &x, None, 1, h, w, Epilogue { bias: None, relu: false }, &mut out);
                let e = rel_err(&out, &naive(&x, &wt, c, k, h, w));
                assert!(e < 3e-5, "{variant:?} {c} {k} {h} {w}: {e}");
            }
        }
    }

    #[test]
    fn every_instruction_set_the_cpu_has_computes_the_same_convolution() {
        // `NST_CPU` picks one set for a whole process; here each set this CPU has is run
        // directly, so one CI machine checks every path it can execute.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (c, k, h, w) = (7, 9, 13, 10);
        let x: Vec<f32> = (0..c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
        let wt: Vec<f32> = (0..k * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
        let want = naive(&x, &wt, c, k, h, w);
        let levels: Vec<Simd> =
            [Simd::Baseline, Simd::Avx2, Simd::Avx512].into_iter().filter(|l| *l <= Simd::detected()).collect();
        assert!(levels.contains(&simd()), "the chosen set {:?} is one this CPU has", simd());
        for variant in [Variant::F23, Variant::F43] {
            let kern = transform_kernel(variant, &wt, k, c, false);
            let mut first: Option<Vec<f32>> = None;
            for &level in &levels {
                let mut out = vec![0f32; k * h * w];
                conv_with(level, &kern, &x, None, (1, h, w), Epilogue { bias: None, relu: false }, &mut out);
                let e = rel_err(&out, &want);
                assert!(e < 3e-5, "{variant:?} {level:?}: {e}");
                // Only the rounding of fused multiply-adds may differ between sets.
                let same = first.get_or_insert_with(|| out.clone());
                let d = out.iter().zip(same.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(d < 1e-5, "{variant:?} {level:?} differs from {:?} by {d}", levels[0]);
            }
        }
    }

    #[test]
    fn bias_relu_mask_and_transposed_kernel() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let (c, k, h, w) = (6, 5, 10, 7);
        let x: Vec<f32> = (0..c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
        let m: Vec<f32> = (0..c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
        let wt: Vec<f32> = (0..k * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
        let bias: Vec<f32> = (0..k).map(|i| i as f32 * 0.3 - 0.5).collect();
        for variant in [Variant::F23, Variant::F43] {
            let kern = transform_kernel(variant, &wt, k, c, false);
            let mut out = vec![0f32; k * h * w];
            let epi = Epilogue { bias: Some(&bias), relu: true };
            let mask = crate::tape::BitMask::positive(
                &candle_core::Tensor::from_vec(m.clone(), (1, c, h, w), &candle_core::Device::Cpu).unwrap(),
            )
            .unwrap();
            conv(&kern, &x, Some(mask.bits()), 1, h, w, epi, &mut out);
            let xm: Vec<f32> = x.iter().zip(&m).map(|(a, g)| if *g > 0.0 { *a } else { 0.0 }).collect();
            let want: Vec<f64> = naive(&xm, &wt, c, k, h, w)
                .iter()
                .enumerate()
                .map(|(i, v)| (v + bias[i / (h * w)] as f64).max(0.0))
                .collect();
            assert!(rel_err(&out, &want) < 1e-5);
            // The transposed-flipped kernel computes the input gradient: <conv(x), g> = <x, conv'(g)>
            let g: Vec<f32> = (0..k * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
            let kt = transform_kernel(variant, &wt, c, k, true);
            let mut gx = vec![0f32; c * h * w];
            conv(&kt, &g, None, 1, h, w, Epilogue { bias: None, relu: false }, &mut gx);
            let y = naive(&x, &wt, c, k, h, w);
            let lhs: f64 = y.iter().zip(&g).map(|(a, b)| a * *b as f64).sum();
            let rhs: f64 = x.iter().zip(&gx).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{lhs} {rhs}");
        }
    }

    #[test]
    fn a_batch_computes_each_image_as_alone() {
        // Several images in one call (their tiles in the same products, blocks spanning image
        // boundaries) give each image the result of a call with that image alone; with a mask,
        // bias and ReLU; a non-square size whose tile rows do not divide the block.
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for &(n, c, k, h, w) in &[(3, 6, 5, 10, 7), (4, 64, 32, 5, 9), (2, 256, 512, 3, 2)] {
            let x: Vec<f32> = (0..n * c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
            let m: Vec<f32> = (0..n * c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..k * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
            let bias: Vec<f32> = (0..k).map(|i| i as f32 * 0.1 - 0.2).collect();
            let mask = crate::tape::BitMask::positive(
                &candle_core::Tensor::from_vec(m.clone(), (n, c, h, w), &candle_core::Device::Cpu).unwrap(),
            )
            .unwrap();
            for variant in [Variant::F23, Variant::F43] {
                let kern = transform_kernel(variant, &wt, k, c, false);
                let epi = Epilogue { bias: Some(&bias), relu: true };
                let mut all = vec![0f32; n * k * h * w];
                conv(&kern, &x, Some(mask.bits()), n, h, w, epi, &mut all);
                for b in 0..n {
                    let mut one = vec![0f32; k * h * w];
                    let xb = &x[b * c * h * w..(b + 1) * c * h * w];
                    conv(&kern, xb, Some(mask.bits().at(b * c * h * w)), 1, h, w, epi, &mut one);
                    let got = &all[b * k * h * w..(b + 1) * k * h * w];
                    let d = got.iter().zip(&one).map(|(a, e)| (a - e).abs()).fold(0f32, f32::max);
                    assert!(d <= 1e-6, "{variant:?} n={n} image {b}: differs by {d}");
                }
            }
        }
    }
}
