//! Winograd minimal filtering F(m×m, 3×3) for 3×3, stride-1, padding-1 convolutions on the CPU
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).
//!
//! For an output tile of m×m pixels, the a×a input tile (a = m + 2) is transformed to
//! `V = Bᵀ d B`, the kernel to `U = G g Gᵀ`, and `Y = Aᵀ (Σ_c U ⊙ V) A`. The sum over input
//! channels is, for each of the a² transform positions ξ, one matrix product
//! `M_ξ (K × T) = U_ξ (K × C) · V_ξ (C × T)` over the T tiles, done by the `gemm` crate, or in
//! place ([`crate::products`]) on AVX-512 and, for images of few tiles, on AVX2.
//! F(4×4, 3×3) needs 36 multiplications per 16 outputs where the direct convolution needs 144.
//!
//! Work is done in blocks of whole tile rows so that the transformed input and output of a block
//! stay in cache; inside a block, transforms are parallel over channels and the a² products are
//! parallel over ξ (rayon). The transforms' scratch lives in per-thread buffers kept from call
//! to call ([`with_buffer`]), not allocated and zeroed per group of channels.

// Index loops over the small constant tables are deliberate: with constant bounds they unroll
// and the table entries become compile-time constants.
#![allow(clippy::needless_range_loop)]

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::thread::LocalKey;

use rayon::prelude::*;

use crate::cpu::{simd, Simd};
use crate::kernel_cache::Floats;
use crate::products::{self, KernelLayout, Operands};
use crate::tape::Bits;
use crate::vector::{Portable, Vector};
#[cfg(target_arch = "x86_64")]
use crate::vector::{Ymm, Zmm};

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

/// A convolution's kernel in the Winograd domain: `U_ξ` (`K` outputs × `C` inputs) after `U_ξ'`
/// for ξ' < ξ, each in `layout`.
pub(crate) struct Kernel {
    u: Floats,
    k: usize,
    c: usize,
    variant: Variant,
    layout: KernelLayout,
}

impl Kernel {
    /// The kernel of `variant` for `k` outputs and `c` inputs whose floats are `u` in `layout`
    /// ([`transform`]'s, or a cache file's).
    pub(crate) fn new(u: Floats, k: usize, c: usize, variant: Variant, layout: KernelLayout) -> Self {
        assert_eq!(u.len(), variant.floats(k, c), "transformed kernel size");
        Self { u, k, c, variant, layout }
    }

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

impl Variant {
    /// The output tile's side m of F(m×m, 3×3).
    pub(crate) fn tile(self) -> usize {
        match self {
            Variant::F23 => 2,
            Variant::F43 => 4,
        }
    }

    /// Floats of a transformed kernel of `k` outputs and `c` inputs.
    pub(crate) fn floats(self, k: usize, c: usize) -> usize {
        (self.tile() + 2).pow(2) * k * c
    }

    /// The variant of [`crate::ConvAlgorithm::Fast`] for images of `h × w` on `level`:
    /// F(4×4, 3×3), but F(2×2, 3×3) on AVX-512 for images of fewer than [`FEW_TILES`] F(4×4)
    /// tiles. Chosen by the image's size, never the batch's, so that a batch's images are
    /// computed as alone.
    ///
    /// A layer of few tiles reads its transformed kernel (36·K·C floats, 38 MB at 512 → 512)
    /// for little arithmetic: at 160×120 the in-place products of conv4 (20 tiles) and conv5 (6)
    /// were 28% of an evaluation's samples, bound by those reads, with 12 and 10 of each
    /// AVX-512 vector's 32 and 16 lanes idle. F(2×2)'s kernel is 16·K·C floats: 1.78× the
    /// multiplications per output pixel for 0.44× the bytes, and its 4× more tiles fill the
    /// vectors (conv4 at 160×120: 80 tiles, done by gemm; conv5: 20, in place). Measured on an
    /// Intel Xeon (family 6 model 207, AVX-512), `runner bench`, five rounds alternating, the
    /// fastest evaluation of each process: 160×120 0.0874, 0.0852, 0.0860, 0.0903, 0.0891 s
    /// with F(4×4) throughout, 0.0845, 0.0851, 0.0865, 0.0940, 0.0905 s with this; 256×256
    /// (conv5: 16 tiles) 0.215, 0.199, 0.221, 0.237, 0.260 against 0.200, 0.201, 0.218, 0.219,
    /// 0.225 s; two profiles of 12 evaluations at 256×256 10 694 and 10 606 samples against
    /// 9 004 and 8 369. Peak RSS 522 → 343 MiB at 160×120 and 576 → 521 MiB at 256×256 (the
    /// kernels of those layers are 0.44× the size). F(2×2) on conv4 at 256×256 too (64 tiles)
    /// was slower (11 641 and 9 257 samples). On AVX2 (a Zen 3: `docs/performance.md`,
    /// 2026-11-30) F(2×2) on such layers gained nothing at 6 and 9 tiles and lost from 12 on:
    /// there the in-place products' vectors are 8 tiles wide and gemm's kernels slower.
    pub(crate) fn fast(level: Simd, h: usize, w: usize) -> Variant {
        let tiles = h.div_ceil(4).saturating_mul(w.div_ceil(4));
        if level == Simd::Avx512 && tiles < FEW_TILES {
            Variant::F23
        } else {
            Variant::F43
        }
    }
}

/// F(4×4) tiles per image below which [`Variant::fast`] takes F(2×2, 3×3) on AVX-512.
const FEW_TILES: usize = 64;

/// [`transform`]'s floats as a [`Kernel`] for the convolutions on `level`, for the tests (the
/// convolutions call [`transform`] themselves, through their kernel cache when they have one).
#[cfg(test)]
pub(crate) fn transform_kernel(
    level: Simd,
    variant: Variant,
    w: &[f32],
    k_out: usize,
    c_in: usize,
    transpose_flip: bool,
) -> Kernel {
    let layout = KernelLayout::of(level);
    Kernel::new(Floats::Owned(transform(variant, layout, w, k_out, c_in, transpose_flip)), k_out, c_in, variant, layout)
}

/// Transforms weights `w[k][c][3][3]` (`transpose_flip`: use `w[c][k][2-i][2-j]` instead, the
/// kernel of the input gradient, with `k` and `c` meaning the gradient conv's out/in channels)
/// into the Winograd domain: `U_ξ` (K × C in `layout`) after `U_ξ'` for ξ' < ξ.
pub(crate) fn transform(
    variant: Variant,
    layout: KernelLayout,
    w: &[f32],
    k_out: usize,
    c_in: usize,
    transpose_flip: bool,
) -> Vec<f32> {
    match variant {
        Variant::F23 => transform_kernel_t(&F23, layout, w, k_out, c_in, transpose_flip),
        Variant::F43 => transform_kernel_t(&F43, layout, w, k_out, c_in, transpose_flip),
    }
}

fn transform_kernel_t<const M: usize, const A: usize>(
    t: &Tables<M, A>,
    layout: KernelLayout,
    w: &[f32],
    k_out: usize,
    c_in: usize,
    transpose_flip: bool,
) -> Vec<f32> {
    let mut u = vec![0f32; A * A * k_out * c_in];
    let plane = k_out * c_in;
    let up = SharedMut(u.as_mut_ptr());
    // (k, c) pairs are independent: parallel over k, each k's rows written where they go, the
    // arithmetic over 64 input channels at a time so that it vectorises (the same operations
    // in the same order per value as one channel at a time: a 512 → 512 kernel took 57 ms so).
    (0..k_out).into_par_iter().for_each(|k| {
        const CB: usize = 64;
        let mut g = [[[0f64; CB]; 3]; 3];
        let mut tmp = [[[0f64; CB]; 3]; A];
        let mut row = [0f32; CB];
        for c0 in (0..c_in).step_by(CB) {
            let n = CB.min(c_in - c0);
            for (i, gi) in g.iter_mut().enumerate() {
                for (j, gij) in gi.iter_mut().enumerate() {
                    for (dc, v) in gij[..n].iter_mut().enumerate() {
                        let c = c0 + dc;
                        *v = f64::from(if transpose_flip {
                            w[((c * k_out + k) * 3 + (2 - i)) * 3 + (2 - j)]
                        } else {
                            w[((k * c_in + c) * 3 + i) * 3 + j]
                        });
                    }
                }
            }
            // tmp = G g (A×3); U = tmp Gᵀ (A×A); in f64 once, at load time.
            for (xi, ti) in tmp.iter_mut().enumerate() {
                for (j, tij) in ti.iter_mut().enumerate() {
                    let gx = t.g[xi].map(f64::from);
                    for dc in 0..n {
                        tij[dc] = gx[0] * g[0][j][dc] + gx[1] * g[1][j][dc] + gx[2] * g[2][j][dc];
                    }
                }
            }
            for xi in 0..A {
                for xj in 0..A {
                    let gx = t.g[xj].map(f64::from);
                    let ti = &tmp[xi];
                    for dc in 0..n {
                        row[dc] = (ti[0][dc] * gx[0] + ti[1][dc] * gx[1] + ti[2][dc] * gx[2]) as f32;
                    }
                    let plane_at = (xi * A + xj) * plane;
                    for (dc, &x) in row[..n].iter().enumerate() {
                        // SAFETY: the values of output channel k in every ξ-plane (in either
                        // layout, at `layout.at(K, C, k, c)` < K·C) are written by this k
                        // alone; `u` outlives the parallel loop.
                        unsafe { *up.ptr().add(plane_at + layout.at(k_out, c_in, k, c0 + dc)) = x };
                    }
                }
            }
        }
    });
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
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: the users of a `SharedMut` write disjoint elements (each says which) of a buffer that
// outlives them.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not its field).
    pub(crate) fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// Where [`input_tiles`] writes one channel's transformed tiles: (ξ, t) at `at + ξ·xs + t`, for
/// t below the block's tile count; the caller guarantees that this range is its own.
#[derive(Clone, Copy)]
struct Scatter {
    at: *mut f32,
    xs: usize,
}

/// `(N, K, H, W) = conv3x3(x (N, C, H, W) ⊙ mask, kernel)` followed by the epilogue, with
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
) -> Vec<f32> {
    conv_with(simd(), kernel, x, mask, (n, h, w), epi)
}

/// [`conv`] with the transforms on instruction set `level`, which the CPU must have.
fn conv_with(
    level: Simd,
    kernel: &Kernel,
    x: &[f32],
    mask: Option<Bits<'_>>,
    dims: (usize, usize, usize),
    epi: Epilogue<'_>,
) -> Vec<f32> {
    let (n, h, w) = dims;
    assert_eq!(kernel.layout, KernelLayout::of(level), "a kernel transformed for another instruction set");
    let len = [n, kernel.k, h, w].iter().try_fold(1usize, |a, &d| a.checked_mul(d)).expect("output size overflows");
    let mut out = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    match kernel.variant {
        Variant::F23 => dispatch::<2, 4, W23>(level, kernel, x, mask, dims, epi, spare),
        Variant::F43 => dispatch::<4, 6, W43>(level, kernel, x, mask, dims, epi, spare),
    }
    // SAFETY: `dispatch` wrote every element of out[..len]: each image's channels, through every
    // tile row, each row's pixels ([`output_row`]).
    unsafe { out.set_len(len) };
    out
}

thread_local! {
    /// The transforms' scratch, on each thread that runs them (tens of KiB).
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's buffer `key` (holding whatever earlier calls left,
/// zeros at first: `f`'s results must not depend on them, though padding lanes may compute with
/// them), which is kept for the next call and grows to the largest `len` asked. A call nested in
/// `f` on the same thread gets a buffer of its own.
pub(crate) fn with_buffer<R>(key: &'static LocalKey<Cell<Vec<f32>>>, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = key.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    key.set(buf);
    r
}

#[allow(clippy::too_many_arguments)]
fn dispatch<const M: usize, const A: usize, S: TableSet<M, A>>(
    level: Simd,
    kernel: &Kernel,
    x: &[f32],
    mask: Option<Bits<'_>>,
    (n, h, w): (usize, usize, usize),
    epi: Epilogue<'_>,
    out: &mut [MaybeUninit<f32>],
) {
    let (k_out, c_in) = (kernel.k, kernel.c);
    assert_eq!(x.len(), n * c_in * h * w, "input size");
    assert_eq!(out.len(), n * k_out * h * w, "output size");
    let (th, tw) = (h.div_ceil(M), w.div_ceil(M));
    // Tile rows of all images, image after image: row g is row g mod th of image g / th.
    let rows = n * th;
    let (rows_per_block, tb) = block_shape::<A>(c_in + k_out, tw, rows);
    // Allocated per call, not kept like the transforms' scratch: kept, the largest (19 MiB for
    // conv4 at 512×512) raised the peak memory by 5–8 MiB, for 0–5% of the time. Not zeroed:
    // every element is written before it is read ([`blocks`]). Zeroed, it was a memset of the
    // whole (4–5 MiB a layer at 160×120) on one thread before each layer's parallel loops,
    // 2.3–3.5% of a profile at 160×120 while the other thread waited.
    let mut operands = Vec::with_capacity((c_in + k_out) * A * A * tb);
    let (v, mbuf) = operands.spare_capacity_mut()[..(c_in + k_out) * A * A * tb].split_at_mut(c_in * A * A * tb);
    blocks::<M, A, S>(level, kernel, (x, mask), (n, h, w), epi, out, (rows_per_block, tb), v, mbuf)
}

/// Tile rows per block and the block's tiles padded (`tb`), for `channels` = C + K channels,
/// `tw` tiles a row and `rows` tile rows in all.
fn block_shape<const A: usize>(channels: usize, tw: usize, rows: usize) -> (usize, usize) {
    // Tile rows per block: keep the block's transformed input and output near 4 MiB...
    let per_tile = channels * A * A * 4;
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
    (rows_per_block, (rows_per_block * tw).next_multiple_of(16))
}

/// The blocks of [`dispatch`]: `rows_per_block` tile rows of `tb` tiles at most (padded),
/// through `v` (A²·C·tb floats) and `mbuf` (A²·K·tb), both uninitialised at first; `x` (with
/// its mask) as in [`conv`].
///
/// Layouts: `v` by ξ, then channel, then tile (`V_ξ` row c at ξ·C·tb + c·tb), so that gemm
/// packs each `V_ξ` from one contiguous run; `mbuf` by channel, then ξ, then tile (`M_ξ` row k
/// at k·A²·tb + ξ·tb), so that the output transform of channel k reads one contiguous run of
/// A²·tb floats rather than A² rows a K·tb-float plane apart. On a Zen 3 (AVX2) at 512×512
/// the output transform's samples fell from 3719–4545 to 2105–2340 in six evaluations (three
/// profiles each, ~40 000 samples in all), gemm's did not move beyond the noise; at 160×120,
/// 1885 → 1115 against 175–371 more in the in-place products. `v` by channel too (each
/// channel's A² rows in one run for the input transform) made gemm's packing and its
/// micro-kernel slower by more than the input transform gained.
///
/// What is read was written: a block's input transform writes the first `nt` columns of each
/// row of `v` rounded up to 16 (≤ tb), and its products read at most those; the products write
/// the first `nt` columns of each row of `mbuf` (in place: rounded up to the vector), and the
/// first block also zeroes the rest of each row, so that from then on all of `mbuf` holds
/// values (the output transform reads whole groups of lanes past a block's last tile, into
/// padding it never uses).
#[allow(clippy::too_many_arguments)]
fn blocks<const M: usize, const A: usize, S: TableSet<M, A>>(
    level: Simd,
    kernel: &Kernel,
    (x, mask): (&[f32], Option<Bits<'_>>),
    (n, h, w): (usize, usize, usize),
    epi: Epilogue<'_>,
    out: &mut [MaybeUninit<f32>],
    (rows_per_block, tb): (usize, usize),
    v: &mut [MaybeUninit<f32>],
    mbuf: &mut [MaybeUninit<f32>],
) {
    let (k_out, c_in) = (kernel.k, kernel.c);
    let (th, tw) = (h.div_ceil(M), w.div_ceil(M));
    let rows = n * th;
    // M_ξ's row stride in `mbuf`: channel k's A² rows of tb floats lie one after another.
    let ms = A * A * tb;
    let mut g0 = 0;
    while g0 < rows {
        let g1 = (g0 + rows_per_block).min(rows);
        let nt = (g1 - g0) * tw;
        // 1. input transform, parallel over channels
        let vp = SharedMut(v.as_mut_ptr().cast());
        (0..c_in).into_par_iter().for_each(|c| {
            // Channel c's values: (ξ, t) at ξ·C·tb + c·tb + t, t < tb, disjoint from every other
            // channel's, inside `v` (A²·C·tb floats), which outlives the loop.
            let vc = Scatter { at: vp.ptr().wrapping_add(c * tb), xs: c_in * tb };
            with_buffer(&SCRATCH, input_scratch::<M, A>(tw, tb), |scratch| {
                for g in g0..g1 {
                    let (b, ty) = (g / th, g % th);
                    let at = (b * c_in + c) * h * w;
                    let (xc, mc) = (&x[at..at + h * w], mask.map(|m| m.at(at)));
                    input_row::<M, A, S>(level, xc, mc, h, w, ty, tw, tb, scratch, (g - g0) * tw);
                }
                // Whole groups of lanes up to the padding (tb is a multiple of LANES): the
                // columns past nt hold earlier values and are never read as tiles.
                input_tiles::<M, A, S>(level, tb, nt.next_multiple_of(LANES), scratch, vc);
            })
        });
        // 2. A² products M_ξ = U_ξ V_ξ, parallel over ξ
        let (vp, mp) = (SharedMut(v.as_mut_ptr().cast()), SharedMut(mbuf.as_mut_ptr().cast()));
        let u = &kernel.u;
        let in_place = products::in_place(level, th * tw);
        let first = g0 == 0;
        (0..A * A).into_par_iter().for_each(|xi| {
            // Each ξ reads its own C × tb block of `v` (at ξ·C·tb) and writes its own K rows of
            // tb floats of `mbuf` (row k at k·A²·tb + ξ·tb), the first nt ≤ tb columns of each
            // (in place: up to the vector's next multiple ≤ tb), the first block all of them;
            // no two ξ touch the same element, and both buffers outlive the parallel loop. U_ξ
            // is K × C, row-major, at ξ·K·C.
            let (vx, mx) = (vp.ptr().wrapping_add(xi * c_in * tb), mp.ptr().wrapping_add(xi * tb));
            if first {
                // The columns nt..tb of each row, before the products write 0..nt: as the last
                // 16 columns (tb is a multiple of 16) in one fixed-size store where they cover
                // them, which they do wherever nt is the first block's (fewer than 16 columns
                // of padding). One `memset` call per row of a few floats, 281 thousand calls
                // per evaluation at 160×120, was 2.0% of `runner bench`'s samples there (0.56%
                // after) and 1.1% of a whole run's.
                let from = if tb - nt <= 16 { tb - 16 } else { nt };
                for k in 0..k_out {
                    // SAFETY: row k of M_ξ, columns from..tb, inside `mbuf` (above); the
                    // products write their columns after this.
                    unsafe {
                        let row = mx.add(k * ms + from);
                        if from == tb - 16 {
                            row.cast::<[f32; 16]>().write_unaligned([0.0; 16]);
                        } else {
                            std::ptr::write_bytes(row, 0, tb - from);
                        }
                    }
                }
            }
            let ux = u[xi * k_out * c_in..(xi + 1) * k_out * c_in].as_ptr();
            product(level, in_place, Operands { v: vx, u: ux, m: mx, c: c_in, k: k_out, tb, ms }, nt);
        });
        // SAFETY: every element of `mbuf` has been written, by this block's products or the
        // first block's (above), and the products are done.
        let mbuf: &[f32] = unsafe { std::slice::from_raw_parts(mbuf.as_ptr().cast(), mbuf.len()) };
        // 3. output transform, parallel over images × output channels
        out.par_chunks_mut(h * w).enumerate().for_each(|(j, yk)| {
            let (b, k) = (j / k_out, j % k_out);
            let rows_of_b = (b * th).max(g0)..((b + 1) * th).min(g1);
            if rows_of_b.is_empty() {
                return;
            }
            // Channel k's values: (ξ, t) at k·A²·tb + ξ·tb + t; this image's tiles are t0..t1.
            let (t0, t1) = ((rows_of_b.start - g0) * tw, (rows_of_b.end - g0) * tw);
            let mk = &mbuf[k * ms..];
            let bias = epi.bias.map(|b| b[k]).unwrap_or(0.0);
            // The tiles in whole groups of LANES where the row has the columns (always for an
            // image alone in its block, t0 = 0): the lanes past t1 compute whatever the
            // padding holds, into the scratch's padding, and are never read. The rest went one
            // lane at a time before (all 6 tiles of conv5 at 160×120, 4 of conv4's 20): on a
            // Zen 3 at 160×120 this pass's samples relative to the products' fell from
            // 0.136–0.148 to 0.111–0.119.
            let span = (t1 - t0).next_multiple_of(LANES);
            let stride = if t0 + span <= tb { span } else { t1 - t0 };
            with_buffer(&SCRATCH, output_scratch::<M, A>(tb), |scratch| {
                output_tiles::<M, A, S>(level, mk, tb, t0, t0 + stride, bias, epi.relu, scratch);
                for g in rows_of_b {
                    let (ty, tr) = (g % th, (g - g0) * tw - t0);
                    output_row::<M, A, S>(level, scratch, stride, tw, ty, tr, h, w, yk);
                }
            })
        });
        g0 = g1;
    }
}

/// One ξ's product `M_ξ = U_ξ V_ξ` ([`Operands`]) over the first `nt` tiles: in place on
/// `level` ([`crate::products`]) when `in_place`, else by `gemm`.
fn product(level: Simd, in_place: bool, o: Operands, nt: usize) {
    if in_place {
        // SAFETY: `in_place` only where `products::in_place` says so for `level`, a set the
        // CPU has ([`simd`], or at most [`Simd::detected`] in tests) other than the baseline;
        // the operands' bounds are the caller's ([`blocks`]), tb a multiple of 16
        // ([`block_shape`]).
        unsafe { products::product(level, o, nt) };
        return;
    }
    // SAFETY: as above; gemm reads the first nt columns of V_ξ and writes those of M_ξ.
    unsafe {
        gemm::gemm(
            o.k,
            nt,
            o.c,
            o.m,
            1,
            o.ms as isize,
            false,
            o.u,
            1,
            o.c as isize,
            o.v,
            1,
            o.tb as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Tiles per block at least (where the image has them): see [`dispatch`].
const MIN_TILES: usize = 128;

/// Defines `$name(level, args…)`: `$impl(level, args…)` compiled for AVX-512 or AVX2+FMA when
/// `level` says so (the caller guarantees the CPU has it: [`simd`]), else for the baseline
/// target; inside, `level` is a constant, which picks the set's [`Vector`] ([`in_lanes`]) and
/// the few places that use a set's instructions by name.
macro_rules! with_simd {
    ($name:ident, $impl:ident, ($($arg:ident: $ty:ty),*)) => {
        #[allow(clippy::too_many_arguments)]
        fn $name<const M: usize, const A: usize, S: TableSet<M, A>>(level: Simd, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide<const M: usize, const A: usize, S: TableSet<M, A>>($($arg: $ty),*) {
                    // SAFETY: compiled for AVX-512 (and AVX2), which the caller's CPU has.
                    unsafe { $impl::<M, A, S>(Simd::Avx512, $($arg),*) }
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn narrow<const M: usize, const A: usize, S: TableSet<M, A>>($($arg: $ty),*) {
                    // SAFETY: compiled for AVX2 and FMA, which the caller's CPU has.
                    unsafe { $impl::<M, A, S>(Simd::Avx2, $($arg),*) }
                }
                match level {
                    // SAFETY: `level` is at most what the CPU supports (`simd`, `Simd::detected`).
                    Simd::Avx512 => return unsafe { wide::<M, A, S>($($arg),*) },
                    // SAFETY: as above.
                    Simd::Avx2 => return unsafe { narrow::<M, A, S>($($arg),*) },
                    Simd::Baseline => {}
                }
            }
            // SAFETY: the baseline's vectors (`Portable`, `f32`) need no instruction set.
            unsafe { $impl::<M, A, S>(Simd::Baseline, $($arg),*) }
        }
    };
}

with_simd!(input_row, input_row_impl, (
    xc: &[f32], mc: Option<Bits<'_>>, h: usize, w: usize, ty: usize, tw: usize, tb: usize,
    scratch: &mut [f32], t0: usize
));
with_simd!(input_tiles, input_tiles_impl, (
    tb: usize, nt: usize, scratch: &mut [f32], vc: Scatter
));
with_simd!(output_tiles, output_tiles_impl, (
    mk: &[f32], xs: usize, t0: usize, t1: usize, bias: f32, relu: bool, scratch: &mut [f32]
));
with_simd!(output_row, output_row_impl, (
    scratch: &[f32], stride: usize, tw: usize, ty: usize, tr: usize, h: usize, w: usize,
    yk: &mut [MaybeUninit<f32>]
));

/// Scratch floats the input transform of one channel needs for `tw` tiles per row and blocks of
/// at most `tb` tiles: the tile columns of the block (A·A·tb), then one row's padded input
/// rows and their vertical transform (2·A·[`padded_row`]).
fn input_scratch<const M: usize, const A: usize>(tw: usize, tb: usize) -> usize {
    A * A * tb + 2 * A * padded_row::<M>(tw)
}

/// Floats of one padded input row of the input transform for `tw` tiles: at least M·(tw + 1)
/// (≥ M·tw + 2: the row from x = −1, zero beyond), rounded up to whole groups of [`LANES`] so
/// that the vertical pass never runs lane by lane (at 160×120 most rows of conv3–conv5 are
/// shorter than a group).
fn padded_row<const M: usize>(tw: usize) -> usize {
    (M * (tw + 1)).next_multiple_of(LANES)
}

/// Scratch floats the output transform of one channel needs for blocks of at most `tb` tiles:
/// the block's output tiles (M·M·tb).
fn output_scratch<const M: usize, const A: usize>(tb: usize) -> usize {
    M * M * tb
}

/// Tiles (or pixels) the transforms handle at once, at most: one AVX-512 vector. Each pass below
/// is written once, generic over a [`Vector`] `V`, and runs with the set's vector over whole
/// groups ([`in_lanes`]: 16 lanes on AVX-512, 8 on AVX2 and below) and with `f32` over the
/// rest; every lane does the same operations in the same order as `f32`, so the results depend
/// neither on where a group starts nor on the instruction set.
const LANES: usize = 16;

/// `V::LANES` floats of `s` from `at`.
///
/// # Safety
/// The CPU must have `V`'s set, enabled where this is inlined ([`Vector`]).
#[inline(always)]
unsafe fn get<V: Vector>(s: &[f32], at: usize) -> V {
    let s = &s[at..at + V::LANES];
    // SAFETY: V::LANES readable floats; the set by the caller.
    unsafe { V::load(s.as_ptr()) }
}

/// Stores `v` as `V::LANES` floats of `s` from `at`.
///
/// # Safety
/// As [`get`].
#[inline(always)]
unsafe fn put<V: Vector>(v: V, s: &mut [f32], at: usize) {
    let s = &mut s[at..at + V::LANES];
    // SAFETY: V::LANES writable floats; the set by the caller.
    unsafe { v.store(s.as_mut_ptr()) }
}

/// `init + Σ_j row[j] · x[j]` in every lane, term after term from j = 0; once the tables are
/// constants, the terms of 0 disappear and those of ±1 are an addition or subtraction.
///
/// # Safety
/// As [`get`].
#[inline(always)]
unsafe fn combine<V: Vector, const A: usize>(row: &[f32; A], x: &[V; A], init: f32) -> V {
    // SAFETY: the set by the caller.
    unsafe {
        let mut acc = V::splat(init);
        for j in 0..A {
            let c = row[j];
            acc = if c == 0.0 {
                acc
            } else if c == 1.0 {
                acc.add(x[j])
            } else if c == -1.0 {
                acc.sub(x[j])
            } else {
                acc.add(V::splat(c).mul(x[j]))
            };
        }
        acc
    }
}

/// Runs the body over `from..to` with `$V` the vector of `level` ([`Zmm`] on AVX-512, [`Ymm`]
/// on AVX2, [`Portable`] below) on whole groups of its lanes, then with `$V` = `f32` on the
/// rest. Every `$V` is an instance of the body: inside [`with_simd`]'s functions `level` is a
/// constant and only its set's instance remains.
macro_rules! in_lanes {
    ($level:expr, $from:expr, $to:expr, |$i:ident, $V:ident| $body:expr) => {{
        match $level {
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => in_lanes!(@groups Zmm, $from, $to, |$i, $V| $body),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => in_lanes!(@groups Ymm, $from, $to, |$i, $V| $body),
            _ => in_lanes!(@groups Portable, $from, $to, |$i, $V| $body),
        }
    }};
    (@groups $W:ty, $from:expr, $to:expr, |$i:ident, $V:ident| $body:expr) => {{
        const _: () = assert!(<$W as Vector>::LANES <= LANES);
        let (from, to) = ($from, $to);
        let n = <$W as Vector>::LANES;
        let body = from + (to - from) / n * n;
        let mut $i = from;
        while $i < body {
            type $V = $W;
            $body;
            $i += n;
        }
        while $i < to {
            type $V = f32;
            $body;
            $i += 1;
        }
    }};
}

/// First half of the input transform of tile row `ty` of one channel: its A input rows (masked
/// and zero-padded) through the vertical pass `r[ξi][x] = Σ_i Bᵀ[ξi][i] rows[i][x]`, then the
/// A columns of each tile of each `r[ξi]` stored as the block's tile columns
/// `col[ξi][j][t0 + tx] = r[ξi][M·tx + j]` (tiles overlap by A − M columns), so that the
/// horizontal pass ([`input_tiles`]) runs along all the block's tiles at once.
///
/// # Safety
/// The CPU must have `level`'s set, enabled where this is inlined ([`with_simd`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn input_row_impl<const M: usize, const A: usize, S: TableSet<M, A>>(
    level: Simd,
    xc: &[f32],
    mc: Option<Bits<'_>>,
    h: usize,
    w: usize,
    ty: usize,
    tw: usize,
    tb: usize,
    scratch: &mut [f32],
    t0: usize,
) {
    let len = padded_row::<M>(tw);
    let (cols, rest) = scratch.split_at_mut(A * A * tb);
    let (rows, r) = rest.split_at_mut(A * len);
    // SAFETY (every vector operation below): `level`'s set, by the caller.
    unsafe {
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
                    let (m, d) = (mc.at(y * w), &mut dst[1..=w]);
                    in_lanes!(level, 0, w, |x, V| {
                        let bits = m.get16(x) & (u32::MAX >> (32 - V::LANES));
                        let s = &src[x..x + V::LANES];
                        put(V::load_where(s.as_ptr(), bits), d, x)
                    });
                }
            }
            dst[w + 1..].fill(0.0);
        }
        in_lanes!(level, 0, len, |x, V| {
            let col: [V; A] = std::array::from_fn(|i| get(rows, i * len + x));
            for xi in 0..A {
                put(combine::<V, A>(&S::T.bt[xi], &col, 0.0), r, xi * len + x);
            }
        });
    }
    for xi in 0..A {
        let rr = &r[xi * len..(xi + 1) * len];
        #[cfg(target_arch = "x86_64")]
        let done = {
            // The A columns' rows from the block's first tile of this row (t0 + tw ≤ tb).
            let dst = &mut cols[xi * A * tb + t0..(xi * A + A - 1) * tb + t0 + tw];
            if level != Simd::Baseline && M == 4 && A == 6 {
                // SAFETY: this code runs compiled for AVX2 or AVX-512 (`with_simd`'s `narrow` or
                // `wide`, on a CPU that has it; `wide` enables AVX2 too); the bounds are checked
                // inside.
                unsafe { tile_columns_avx2(rr, dst, tb, tw) }
            } else if level == Simd::Avx512 && M == 2 && A == 4 {
                // SAFETY: this code runs compiled for AVX-512 (`with_simd`'s `wide`, on a CPU
                // that has it); the bounds are checked inside.
                unsafe { tile_columns_f23_avx512(rr, dst, tb, tw) }
            } else {
                0
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        in_lanes!(level, done, tw, |tx, V| {
            let src = &rr[M * tx..M * tx + M * V::LANES + (A - M)];
            for j in 0..A {
                let dst = &mut cols[(xi * A + j) * tb + t0 + tx..][..V::LANES];
                for l in 0..V::LANES {
                    dst[l] = src[l * M + j];
                }
            }
        });
    }
}

/// Second half of the input transform of one channel: the horizontal pass over the block's `nt`
/// tiles, `v[ξi·A + ξj][t] = Σ_j Bᵀ[ξj][j] col[ξi][j][t]`, into `vc`.
///
/// # Safety
/// As [`input_row_impl`].
#[inline(always)]
unsafe fn input_tiles_impl<const M: usize, const A: usize, S: TableSet<M, A>>(
    level: Simd,
    tb: usize,
    nt: usize,
    scratch: &mut [f32],
    vc: Scatter,
) {
    let cols = &scratch[..A * A * tb];
    for xi in 0..A {
        in_lanes!(level, 0, nt, |t, V| {
            // SAFETY: `level`'s set, by the caller; `vc` covers columns t < tb of every ξ
            // ([`Scatter`]), and t + V::LANES ≤ nt ≤ tb.
            unsafe {
                let d: [V; A] = std::array::from_fn(|j| get(cols, (xi * A + j) * tb + t));
                for xj in 0..A {
                    combine::<V, A>(&S::T.bt[xj], &d, 0.0).store(vc.at.add((xi * A + xj) * vc.xs + t));
                }
            }
        });
    }
}

/// First half of the output transform of one channel: tiles `t0..t1` of `mk[ξ·xs + t]` through
/// `y[r1][r2][t] = Σ_ξi Aᵀ[r1][ξi] Σ_ξj Aᵀ[r2][ξj] m[ξi·A + ξj][t] + bias` (and the ReLU), into
/// `scratch` at `(r1·M + r2)·(t1 − t0) + t − t0`.
///
/// # Safety
/// As [`input_row_impl`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn output_tiles_impl<const M: usize, const A: usize, S: TableSet<M, A>>(
    level: Simd,
    mk: &[f32],
    xs: usize,
    t0: usize,
    t1: usize,
    bias: f32,
    relu: bool,
    scratch: &mut [f32],
) {
    let nt = t1 - t0;
    let y = &mut scratch[..M * M * nt];
    in_lanes!(level, t0, t1, |t, V| {
        // SAFETY: `level`'s set, by the caller.
        unsafe {
            // Horizontal: q[ξi][r2] = Σ_ξj Aᵀ[r2][ξj] m[ξi·A + ξj], a vector of tiles at a time.
            let mut q = [[V::zero(); M]; A];
            for xi in 0..A {
                // The A² rows of `mk`, each fetched 32 tiles ahead. With the rows a K·tb-float
                // plane apart (too many streams for the hardware prefetcher), on a Zen 3 at
                // 512×512 this pass's samples fell from 0.186–0.190 of gemm's to 0.134–0.148
                // (16 tiles ahead: 0.173–0.177; 48: 0.143). With the rows tb floats apart
                // ([`blocks`]) it still pays there: 3343–3385 samples without, 2235–2423 with
                // (six evaluations, two profiles each); and on the project's AVX-512 Xeon
                // (2026-12-01, evaluations alternating with and without in one process, this
                // pass per evaluation): 160×120 6.9 → 6.4 and 7.6 → 7.0 ms, 512×512 160 → 139
                // and 147 → 128 ms.
                #[cfg(target_arch = "x86_64")]
                for xj in 0..A {
                    let ahead = mk.as_ptr().wrapping_add((xi * A + xj) * xs + t + 32);
                    // A prefetch is a hint: it never faults, whatever the address.
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ahead.cast());
                }
                let m: [V; A] = std::array::from_fn(|xj| get(mk, (xi * A + xj) * xs + t));
                for r2 in 0..M {
                    q[xi][r2] = combine::<V, A>(&S::T.at[r2], &m, 0.0);
                }
            }
            // Vertical, with bias and ReLU.
            for r2 in 0..M {
                let c: [V; A] = std::array::from_fn(|xi| q[xi][r2]);
                for r1 in 0..M {
                    let mut acc = combine::<V, A>(&S::T.at[r1], &c, bias);
                    if relu {
                        acc = acc.max(V::zero());
                    }
                    put(acc, y, (r1 * M + r2) * nt + t - t0);
                }
            }
        }
    });
}

/// Second half of the output transform: output tile row `ty` of one channel, whose tiles are at
/// `tr..tr + tw` of [`output_tiles`]' result, its phases `y[r1][r2][tx]` interleaved into
/// pixel order `M·tx + r2` of image rows `M·ty + r1`.
///
/// # Safety
/// As [`input_row_impl`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn output_row_impl<const M: usize, const A: usize, S: TableSet<M, A>>(
    level: Simd,
    scratch: &[f32],
    stride: usize,
    tw: usize,
    ty: usize,
    tr: usize,
    h: usize,
    w: usize,
    yk: &mut [MaybeUninit<f32>],
) {
    let full = (w / M).min(tw);
    for r1 in 0..M {
        let y = M * ty + r1;
        if y >= h {
            break;
        }
        let row = &mut yk[y * w..(y + 1) * w];
        in_lanes!(level, 0, full, |tx, V| {
            // Phase r2's V::LANES tiles from tile tx.
            let src: [&[f32]; M] = std::array::from_fn(|r2| &scratch[(r1 * M + r2) * stride + tr + tx..][..V::LANES]);
            let dst = &mut row[M * tx..M * (tx + V::LANES)];
            if cfg!(target_arch = "x86_64") && level == Simd::Avx512 && M == 4 && V::LANES == 16 {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: four rows of 16 floats and 64 to write (M = 4, 16 lanes); this code
                // runs compiled for AVX-512 only (`with_simd`'s `wide`, on a CPU that has it).
                unsafe {
                    interleave_4x16(std::array::from_fn(|r| src[r].as_ptr()), dst.as_mut_ptr().cast())
                };
            } else if cfg!(target_arch = "x86_64") && level == Simd::Avx2 && M == 4 && V::LANES == 8 {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: four rows of 8 floats and 32 to write (M = 4, 8 lanes); this code runs
                // compiled for AVX2 only (`with_simd`'s `narrow`, on a CPU that has it).
                unsafe {
                    interleave_4x8(std::array::from_fn(|r| src[r].as_ptr()), dst.as_mut_ptr().cast())
                };
            } else {
                for l in 0..V::LANES {
                    for r2 in 0..M {
                        dst[l * M + r2].write(src[r2][l]);
                    }
                }
            }
        });
        for (r2, v) in row[full * M..].iter_mut().enumerate() {
            v.write(scratch[(r1 * M + r2) * stride + tr + full]);
        }
    }
}

/// `dst[4·l + r] = src[r][l]` for r < 4, l < 16: four rows of 16 phases into 64 pixels
/// (LLVM writes the portable loop as 64 scalar moves).
///
/// # Safety
/// Each `src[r]` must be readable for 16 floats, `dst` writable for 64, and the CPU must have
/// AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn interleave_4x16(src: [*const f32; 4], dst: *mut f32) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's guarantees; every access is within the floats of each side.
    unsafe {
        let [a, b, c, d] = src.map(|p| _mm512_loadu_ps(p));
        let (ab_lo, ab_hi) = (_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let (cd_lo, cd_hi) = (_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        let pairs = |x: __m512, y: __m512, hi: bool| {
            let (x, y) = (_mm512_castps_pd(x), _mm512_castps_pd(y));
            _mm512_castpd_ps(if hi { _mm512_unpackhi_pd(x, y) } else { _mm512_unpacklo_pd(x, y) })
        };
        // 128-bit lane j of p_k holds pixel group 4j + k: (a, b, c, d) at phase 4j + k.
        let (p0, p1) = (pairs(ab_lo, cd_lo, false), pairs(ab_lo, cd_lo, true));
        let (p2, p3) = (pairs(ab_hi, cd_hi, false), pairs(ab_hi, cd_hi, true));
        // Then the 4 × 4 transpose of 128-bit lanes: output vector j is lane j of p0 … p3.
        let t0 = _mm512_shuffle_f32x4::<0b01_00_01_00>(p0, p1);
        let t1 = _mm512_shuffle_f32x4::<0b01_00_01_00>(p2, p3);
        let t2 = _mm512_shuffle_f32x4::<0b11_10_11_10>(p0, p1);
        let t3 = _mm512_shuffle_f32x4::<0b11_10_11_10>(p2, p3);
        _mm512_storeu_ps(dst, _mm512_shuffle_f32x4::<0b10_00_10_00>(t0, t1));
        _mm512_storeu_ps(dst.add(16), _mm512_shuffle_f32x4::<0b11_01_11_01>(t0, t1));
        _mm512_storeu_ps(dst.add(32), _mm512_shuffle_f32x4::<0b10_00_10_00>(t2, t3));
        _mm512_storeu_ps(dst.add(48), _mm512_shuffle_f32x4::<0b11_01_11_01>(t2, t3));
    }
}

/// `dst[4·l + r] = src[r][l]` for r < 4, l < 8: four rows of 8 phases into 32 pixels, AVX2's
/// [`interleave_4x16`]. The portable loop was 32 scalar loads and stores: [`output_row`] took
/// 3.0% of a profile at 512×512 on a Zen 3 (`perf record`, 6 evaluations), see
/// docs/performance.md for what this took.
///
/// # Safety
/// Each `src[r]` must be readable for 8 floats, `dst` writable for 32, and the CPU must have
/// AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn interleave_4x8(src: [*const f32; 4], dst: *mut f32) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's guarantees; every access is within the floats of each side.
    unsafe {
        let [a, b, c, d] = src.map(|p| _mm256_loadu_ps(p));
        // Within each 128-bit half (tiles 0–3, 4–7): the (a, b) and (c, d) pairs of its first two
        // tiles (lo) and last two (hi).
        let (ab_lo, ab_hi) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
        let (cd_lo, cd_hi) = (_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
        let pairs = |x: __m256, y: __m256, hi: bool| {
            let (x, y) = (_mm256_castps_pd(x), _mm256_castps_pd(y));
            _mm256_castpd_ps(if hi { _mm256_unpackhi_pd(x, y) } else { _mm256_unpacklo_pd(x, y) })
        };
        // Half j of p_k holds tile 4j + k's four pixels (a, b, c, d).
        let (p0, p1) = (pairs(ab_lo, cd_lo, false), pairs(ab_lo, cd_lo, true));
        let (p2, p3) = (pairs(ab_hi, cd_hi, false), pairs(ab_hi, cd_hi, true));
        // Tiles 0, 1 are the low halves of p0, p1; 2, 3 of p2, p3; 4 … 7 their high halves.
        _mm256_storeu_ps(dst, _mm256_permute2f128_ps::<0x20>(p0, p1));
        _mm256_storeu_ps(dst.add(8), _mm256_permute2f128_ps::<0x20>(p2, p3));
        _mm256_storeu_ps(dst.add(16), _mm256_permute2f128_ps::<0x31>(p0, p1));
        _mm256_storeu_ps(dst.add(24), _mm256_permute2f128_ps::<0x31>(p2, p3));
    }
}

/// `cols[j·stride + t] = row[4·t + j]` for j < 6 and the first tiles t of the row, in groups
/// of 8 and then 4: the six columns of F(4×4, 3×3)'s tiles, which start 4 floats apart and
/// overlap by 2 (LLVM writes the portable loop as scalar moves with their bounds checks: 40% of
/// the input transform's first half on a Zen 3 at 160×120; with [`padded_row`], that half took
/// 30–35% fewer samples at 160×120 and 512×512; on an AVX-512 Xeon, which ran the portable
/// loop before, the first half fell from 11.8% to 7.8% of the samples at 160×120 and an
/// evaluation from 0.132–0.142 to 0.123–0.130 s, three rounds alternating). A group is a 4 × 4 transpose of
/// 128-bit rows (two side by side for 8 tiles), once from the tiles' start (columns 0–3) and
/// once 4 floats on (columns 4 and 5 are columns 0 and 1 of the next tile). Returns the tiles
/// done, a multiple of 4; the caller does the rest.
///
/// # Safety
/// The CPU must have AVX2.
///
/// # Panics
/// If `row` is shorter than 4·(tiles + 1) floats or `cols` than 5·stride + tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_columns_avx2(row: &[f32], cols: &mut [f32], stride: usize, tiles: usize) -> usize {
    use std::arch::x86_64::*;
    assert!(row.len() >= 4 * (tiles + 1) && cols.len() >= 5 * stride + tiles, "tile columns out of bounds");
    let (src, dst) = (row.as_ptr(), cols.as_mut_ptr());
    let mut t = 0;
    // SAFETY: a group of 8 from tile t (t + 8 ≤ tiles) reads row[4t .. 4t + 4 + 32] and writes
    // cols[j·stride + t ..][..8], j < 6; a group of 4 half that: inside the bounds asserted.
    unsafe {
        while t + 8 <= tiles {
            for first in [0, 4] {
                let s = src.add(4 * t + first);
                // 128-bit lane 0 holds tile k's 4 floats, lane 1 tile k + 4's.
                let q = |k: usize| _mm256_loadu2_m128(s.add(4 * (k + 4)), s.add(4 * k));
                let (a, b, c, d) = (q(0), q(1), q(2), q(3));
                let (ab_lo, ab_hi) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
                let (cd_lo, cd_hi) = (_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
                let pairs = |x: __m256, y: __m256, hi: bool| {
                    let (x, y) = (_mm256_castps_pd(x), _mm256_castps_pd(y));
                    _mm256_castpd_ps(if hi { _mm256_unpackhi_pd(x, y) } else { _mm256_unpacklo_pd(x, y) })
                };
                // Column j of tiles 0–3 in lane 0 and of tiles 4–7 in lane 1: in tile order.
                let columns = [
                    pairs(ab_lo, cd_lo, false),
                    pairs(ab_lo, cd_lo, true),
                    pairs(ab_hi, cd_hi, false),
                    pairs(ab_hi, cd_hi, true),
                ];
                for (j, col) in columns.into_iter().enumerate().take(if first == 0 { 4 } else { 2 }) {
                    _mm256_storeu_ps(dst.add((first + j) * stride + t), col);
                }
            }
            t += 8;
        }
        if t + 4 <= tiles {
            for first in [0, 4] {
                let s = src.add(4 * t + first);
                let (a, b, c, d) =
                    (_mm_loadu_ps(s), _mm_loadu_ps(s.add(4)), _mm_loadu_ps(s.add(8)), _mm_loadu_ps(s.add(12)));
                let (ab_lo, ab_hi) = (_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b));
                let (cd_lo, cd_hi) = (_mm_unpacklo_ps(c, d), _mm_unpackhi_ps(c, d));
                let columns = [
                    _mm_movelh_ps(ab_lo, cd_lo),
                    _mm_movehl_ps(cd_lo, ab_lo),
                    _mm_movelh_ps(ab_hi, cd_hi),
                    _mm_movehl_ps(cd_hi, ab_hi),
                ];
                for (j, col) in columns.into_iter().enumerate().take(if first == 0 { 4 } else { 2 }) {
                    _mm_storeu_ps(dst.add((first + j) * stride + t), col);
                }
            }
            t += 4;
        }
    }
    t
}

/// `cols[j·stride + t] = row[2·t + j]` for j < 4 and the first tiles t of the row, 16 at a
/// time: the four columns of F(2×2, 3×3)'s tiles, which start 2 floats apart and overlap by 2
/// (the portable loop is a scalar move per float with its bounds checks: at 160×120, where
/// conv4 and conv5 take F(2×2), the hottest loop of the input transform). Columns 0 and 1 are
/// the even and odd floats from the tiles' start, columns 2 and 3 those from 2 floats on: each
/// one two-source permute of 32 floats. At 160×120 on the project's Xeon, evaluations
/// alternating with the portable loop in one process, the input transforms took 22.7 and 19.7
/// ms per evaluation against 23.5 and 19.9. Returns the tiles done, a multiple of 16; the
/// caller does the rest.
///
/// # Safety
/// The CPU must have AVX-512F.
///
/// # Panics
/// If `row` is shorter than 2·(tiles + 1) floats or `cols` than 3·stride + tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_columns_f23_avx512(row: &[f32], cols: &mut [f32], stride: usize, tiles: usize) -> usize {
    use std::arch::x86_64::*;
    assert!(row.len() >= 2 * (tiles + 1) && cols.len() >= 3 * stride + tiles, "tile columns out of bounds");
    let (src, dst) = (row.as_ptr(), cols.as_mut_ptr());
    let mut t = 0;
    // SAFETY: a group from tile t (t + 16 ≤ tiles) reads row[2t .. 2t + 2 + 32] ⊆
    // row[..2·tiles + 2] and writes cols[j·stride + t ..][..16], j < 4: inside the bounds
    // asserted.
    unsafe {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        while t + 16 <= tiles {
            for first in [0, 2] {
                let s = src.add(2 * t + first);
                let (lo, hi) = (_mm512_loadu_ps(s), _mm512_loadu_ps(s.add(16)));
                _mm512_storeu_ps(dst.add(first * stride + t), _mm512_permutex2var_ps(lo, even, hi));
                _mm512_storeu_ps(dst.add((first + 1) * stride + t), _mm512_permutex2var_ps(lo, odd, hi));
            }
            t += 16;
        }
    }
    t
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
                let kern = transform_kernel(simd(), variant, &wt, k, c, false);
                let out = conv(&kern, &x, None, 1, h, w, Epilogue { bias: None, relu: false });
                let e = rel_err(&out, &naive(&x, &wt, c, k, h, w));
                assert!(e < 3e-5, "{variant:?} {c} {k} {h} {w}: {e}");
            }
        }
    }

    #[test]
    fn fast_takes_f23_for_few_tiles_on_avx512_only() {
        // 20 × 15 pixels: 5 × 4 = 20 tiles of 4 × 4; 32 × 32: 64; 31 × 32: 8 × 8 = 64 (rounded up).
        assert_eq!(Variant::fast(Simd::Avx512, 15, 20), Variant::F23);
        assert_eq!(Variant::fast(Simd::Avx512, 28, 36), Variant::F23); // 7 × 9 = 63
        assert_eq!(Variant::fast(Simd::Avx512, 32, 32), Variant::F43);
        assert_eq!(Variant::fast(Simd::Avx512, 31, 32), Variant::F43);
        assert_eq!(Variant::fast(Simd::Avx512, 120, 160), Variant::F43);
        assert_eq!(Variant::fast(Simd::Avx2, 15, 20), Variant::F43);
        assert_eq!(Variant::fast(Simd::Baseline, 3, 5), Variant::F43);
    }

    #[test]
    fn every_instruction_set_the_cpu_has_computes_the_same_convolution() {
        // `NST_CPU` picks one set for a whole process; here each set this CPU has is run
        // directly, so one CI machine checks every path it can execute.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        // 70 columns: 18 tiles a row of F(4×4), so each set runs its groups of lanes and the
        // rest (AVX2's tile columns: two groups of 8 and 2 alone), 35 of F(2×2) (AVX-512's tile
        // columns: two groups of 16 and 3 alone); 47 columns: 12 tiles (AVX2: a group of 8 and
        // one of 4), 24 of F(2×2) (a group of 16 and 8 alone).
        for (c, k, h, w) in [(7, 9, 13, 70), (5, 6, 9, 47)] {
            let x: Vec<f32> = (0..c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..k * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
            let want = naive(&x, &wt, c, k, h, w);
            let levels: Vec<Simd> =
                [Simd::Baseline, Simd::Avx2, Simd::Avx512].into_iter().filter(|l| *l <= Simd::detected()).collect();
            assert!(levels.contains(&simd()), "the chosen set {:?} is one this CPU has", simd());
            for variant in [Variant::F23, Variant::F43] {
                let mut first: Option<Vec<f32>> = None;
                for &level in &levels {
                    // Each set's products read the kernel in a layout of their own.
                    let kern = transform_kernel(level, variant, &wt, k, c, false);
                    let out = conv_with(level, &kern, &x, None, (1, h, w), Epilogue { bias: None, relu: false });
                    let e = rel_err(&out, &want);
                    assert!(e < 3e-5, "{variant:?} {level:?} {w} columns: {e}");
                    // Only the rounding of fused multiply-adds may differ between sets.
                    let same = first.get_or_insert_with(|| out.clone());
                    let d = out.iter().zip(same.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    assert!(d < 1e-5, "{variant:?} {level:?} {w} columns differs from {:?} by {d}", levels[0]);
                }
            }
        }
    }

    #[test]
    fn products_in_place_and_by_gemm_are_the_sum_over_channels() {
        // Every register-block shape of the in-place products on each set the CPU has (AVX-512:
        // 1–3 vectors of 16 tiles and groups of 4, on panels of 6 channels; AVX2: 1 vector of 8
        // and groups of 2, on rows; channel counts whose last block is narrower than the others,
        // or the only one, or whose last panel is) against a sum in double precision, and in
        // place against the same sum in float32 in the order they promise (c = 0, 1, … from 0,
        // one fused multiply-add each), bit for bit; gemm's on the same operands, so that it is
        // checked wherever this runs.
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let sets = [Simd::Avx2, Simd::Avx512].into_iter().filter(|&l| l <= Simd::detected());
        let paths: Vec<Option<Simd>> = std::iter::once(None).chain(sets.map(Some)).collect();
        for (c, k) in [(5, 3), (37, 13), (16, 40), (64, 25), (3, 64), (9, 20)] {
            for nt in [1usize, 6, 8, 9, 16, 20, 33, 48, 64, 70, 130, 200] {
                let tb = nt.next_multiple_of(16);
                // Columns past nt hold values too: they are computed and must not be read.
                let v: Vec<f32> = (0..c * tb).map(|_| rng.random_range(-1.0..1.0)).collect();
                let u: Vec<f32> = (0..k * c).map(|_| rng.random_range(-1.0..1.0)).collect();
                // Rows of M_ξ wider apart than they are long, as in a convolution (A²·tb): what
                // lies between them must stay untouched.
                let ms = 3 * tb;
                for &path in &paths {
                    // `u` row by row; each path reads it in its set's layout.
                    let layout = KernelLayout::of(path.unwrap_or(Simd::Baseline));
                    let mut laid = vec![f32::NAN; k * c];
                    for (j, i) in (0..k).flat_map(|j| (0..c).map(move |i| (j, i))) {
                        laid[layout.at(k, c, j, i)] = u[j * c + i];
                    }
                    let mut m = vec![f32::NAN; k * ms];
                    let o = Operands { v: v.as_ptr(), u: laid.as_ptr(), m: m.as_mut_ptr(), c, k, tb, ms };
                    product(path.unwrap_or(Simd::Baseline), path.is_some(), o, nt);
                    for j in 0..k {
                        let gap = &m[j * ms + tb..(j + 1) * ms];
                        assert!(
                            gap.iter().all(|x| x.is_nan()),
                            "{path:?}, C {c}, K {k}, {nt} tiles: row {j} wrote past tb"
                        );
                        for t in 0..nt {
                            let want: f64 = (0..c).map(|i| u[j * c + i] as f64 * v[i * tb + t] as f64).sum();
                            let got = m[j * ms + t];
                            assert!(
                                (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "in place {path:?}, C {c}, K {k}, {nt} tiles: M[{j}][{t}] = {got}, want {want}"
                            );
                            if path.is_some() {
                                let order = (0..c).fold(0f32, |acc, i| v[i * tb + t].mul_add(u[j * c + i], acc));
                                assert_eq!(
                                    got.to_bits(),
                                    order.to_bits(),
                                    "in place {path:?}, C {c}, K {k}, {nt} tiles: M[{j}][{t}] = {got}, in order {order}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn panels_hold_the_values_of_the_rows() {
        // 20 outputs: three panels of 6 and one of 2; 70 inputs: the transform's chunks of 64
        // input channels and a rest; both variants and the input gradient's kernel.
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (k, c) = (20, 70);
        let wt: Vec<f32> = (0..k * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
        for variant in [Variant::F23, Variant::F43] {
            for flip in [false, true] {
                let (ko, ci) = if flip { (c, k) } else { (k, c) };
                let rows = transform(variant, KernelLayout::Rows, &wt, ko, ci, flip);
                let panels = transform(variant, KernelLayout::Panels, &wt, ko, ci, flip);
                let plane = ko * ci;
                for xi in 0..rows.len() / plane {
                    for (j, i) in (0..ko).flat_map(|j| (0..ci).map(move |i| (j, i))) {
                        let (r, p) =
                            (rows[xi * plane + j * ci + i], panels[xi * plane + KernelLayout::Panels.at(ko, ci, j, i)]);
                        assert_eq!(r.to_bits(), p.to_bits(), "{variant:?} flip {flip} ξ {xi} k {j} c {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn bias_relu_mask_and_transposed_kernel() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        // 37 columns: masked rows of two whole groups of 16 values and a rest, the groups' bits
        // crossing the mask's 64-bit words at many offsets.
        for (c, k, h, w) in [(6, 5, 10, 7), (3, 4, 9, 37)] {
            let x: Vec<f32> = (0..c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
            let m: Vec<f32> = (0..c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..k * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
            let bias: Vec<f32> = (0..k).map(|i| i as f32 * 0.3 - 0.5).collect();
            for variant in [Variant::F23, Variant::F43] {
                let kern = transform_kernel(simd(), variant, &wt, k, c, false);
                let epi = Epilogue { bias: Some(&bias), relu: true };
                let mask = crate::tape::BitMask::positive(
                    &candle_core::Tensor::from_vec(m.clone(), (1, c, h, w), &candle_core::Device::Cpu).unwrap(),
                )
                .unwrap();
                let out = conv(&kern, &x, Some(mask.bits()), 1, h, w, epi);
                let xm: Vec<f32> = x.iter().zip(&m).map(|(a, g)| if *g > 0.0 { *a } else { 0.0 }).collect();
                let want: Vec<f64> = naive(&xm, &wt, c, k, h, w)
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v + bias[i / (h * w)] as f64).max(0.0))
                    .collect();
                assert!(rel_err(&out, &want) < 1e-5);
                // The transposed-flipped kernel computes the input gradient: <conv(x), g> = <x, conv'(g)>
                let g: Vec<f32> = (0..k * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
                let kt = transform_kernel(simd(), variant, &wt, c, k, true);
                let gx = conv(&kt, &g, None, 1, h, w, Epilogue { bias: None, relu: false });
                let y = naive(&x, &wt, c, k, h, w);
                let lhs: f64 = y.iter().zip(&g).map(|(a, b)| a * *b as f64).sum();
                let rhs: f64 = x.iter().zip(&gx).map(|(a, b)| *a as f64 * *b as f64).sum();
                assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{lhs} {rhs}");
            }
        }
    }

    #[test]
    fn a_batch_computes_each_image_as_alone() {
        // Several images in one call (their tiles in the same products, blocks spanning image
        // boundaries) give each image the result of a call with that image alone; with a mask,
        // bias and ReLU; a non-square size whose tile rows do not divide the block; rows of 18
        // tiles, so that groups of lanes start at other offsets in a batch than alone.
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for &(n, c, k, h, w) in &[(3, 6, 5, 10, 7), (4, 64, 32, 5, 9), (2, 256, 512, 3, 2), (2, 16, 8, 9, 70)] {
            let x: Vec<f32> = (0..n * c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
            let m: Vec<f32> = (0..n * c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
            let wt: Vec<f32> = (0..k * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
            let bias: Vec<f32> = (0..k).map(|i| i as f32 * 0.1 - 0.2).collect();
            let mask = crate::tape::BitMask::positive(
                &candle_core::Tensor::from_vec(m.clone(), (n, c, h, w), &candle_core::Device::Cpu).unwrap(),
            )
            .unwrap();
            for variant in [Variant::F23, Variant::F43] {
                let kern = transform_kernel(simd(), variant, &wt, k, c, false);
                let epi = Epilogue { bias: Some(&bias), relu: true };
                let all = conv(&kern, &x, Some(mask.bits()), n, h, w, epi);
                for b in 0..n {
                    let xb = &x[b * c * h * w..(b + 1) * c * h * w];
                    let one = conv(&kern, xb, Some(mask.bits().at(b * c * h * w)), 1, h, w, epi);
                    let got = &all[b * k * h * w..(b + 1) * k * h * w];
                    let d = got.iter().zip(&one).map(|(a, e)| (a - e).abs()).fold(0f32, f32::max);
                    assert!(d <= 1e-6, "{variant:?} n={n} image {b}: differs by {d}");
                }
            }
        }
    }
}
