//! Direct 3×3 convolutions (stride 1, padding 1) for layers with few channels on one side. In
//! VGG19 that is the first layer, conv1_1 (3 → 64), and its input gradient (64 → 3), both at
//! the image's full size.
//!
//! Winograd ([`crate::winograd`]) saves multiplications in the products over channels, and pays
//! for it with transforms of every input and output channel. With 3 channels on one side there
//! is little product to save, and the transforms of the 64 on the other side are most of the
//! work: conv1_1 at 384×288 took 10.6–13.6 ms forward (input transform 0.9 ms, products 3.0,
//! output transform of 64 channels 5.7–9.7) and 8.4–13.8 ms for its input gradient (input
//! transform of 64 masked channels 7–10 ms), against 191 million multiply-adds each way.
//! Computed here (Intel Xeon, family 6 model 207, AVX-512, 2026-12-01): 3.7–5.8 ms forward and
//! 4.8–6.8 ms for the gradient at 384×288, 1.2 and 1.0 ms at 160×120 (2.1 and 2.3 ms before);
//! within one `runner bench` process, evaluations alternating between the two paths, the mean
//! evaluation at 384×288 fell by 15, 20 and 26 ms (of 383–509) in three processes and at
//! 160×120 by 2.9 and 3.6 ms (of 103–122).
//!
//! Here each output value is `Σ_c Σ_dy Σ_dx w[k][c][dy][dx] · x[c][y + dy − 1][x + dx − 1]`,
//! in that order, one fused multiply-add per term from 0, then the bias (and the ReLU): the
//! same operations in every lane of every instruction set's vector ([`Vector`]), so the bits
//! depend on neither.
//!
//! Work: tasks of [`BAND`] output rows of one image, in parallel. A task first copies the input
//! rows it reads (masked, zero-padded) into a scratch buffer, then computes register blocks of
//! `KB` output channels × `PV` vectors of pixels, whose inputs are unaligned loads from those
//! rows, one per tap, and whose weights are broadcast from the kernel's layout
//! ([`DirectKernel`]), where a block's `KB` weights of one tap lie side by side.

use std::cell::Cell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::cpu::Simd;
use crate::tape::Bits;
use crate::vector::{Portable, Vector};
#[cfg(target_arch = "x86_64")]
use crate::vector::{Ymm, Zmm};
use crate::winograd::{with_buffer, Epilogue, SharedMut};

/// Channels on the thin side, at most, of a convolution computed here ([`thin`]).
const THIN: usize = 4;

/// Output rows per task: each input row copied into the scratch serves up to 3 of them.
const BAND: usize = 4;

/// Whether a convolution of `c` input and `k` output channels is computed here rather than by
/// Winograd: when either side has at most [`THIN`] channels.
pub(crate) fn thin(c: usize, k: usize) -> bool {
    c.min(k) <= THIN
}

/// A 3×3 kernel of `k` outputs and `c` inputs laid out for [`conv`]: output channels in blocks
/// of `kb` (4, 3, 2 or 1, the largest that divides `k`); for block b, input channel c and tap
/// t = 3·dy + dx, the block's `kb` weights side by side at `((b·C + c)·9 + t)·kb`.
pub(crate) struct DirectKernel {
    w: Vec<f32>,
    k: usize,
    c: usize,
    kb: usize,
}

impl DirectKernel {
    /// From weights `w[k][c][3][3]`, or with `transpose_flip` from `w[c][k][2 − dy][2 − dx]`
    /// (the input gradient's kernel, `k` and `c` being the gradient convolution's output and
    /// input channels), as [`crate::winograd::transform`] takes them.
    pub(crate) fn new(w: &[f32], k: usize, c: usize, transpose_flip: bool) -> Self {
        assert_eq!(w.len(), k * c * 9, "weights of a {k} × {c} 3×3 kernel");
        let kb = [4, 3, 2].into_iter().find(|&b| k.is_multiple_of(b)).unwrap_or(1);
        let mut laid = vec![0f32; w.len()];
        for o in 0..k {
            for i in 0..c {
                for t in 0..9 {
                    let (dy, dx) = (t / 3, t % 3);
                    let from = if transpose_flip {
                        ((i * k + o) * 3 + 2 - dy) * 3 + 2 - dx
                    } else {
                        ((o * c + i) * 3 + dy) * 3 + dx
                    };
                    laid[((o / kb * c + i) * 9 + t) * kb + o % kb] = w[from];
                }
            }
        }
        Self { w: laid, k, c, kb }
    }

    /// Output and input channels.
    pub(crate) fn dims(&self) -> (usize, usize) {
        (self.k, self.c)
    }
}

thread_local! {
    /// The padded input rows of a task, on each thread that runs them (up to a few hundred KiB
    /// for 64 input channels).
    static ROWS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// `(N, K, H, W) = conv3x3(x (N, C, H, W) ⊙ mask, kernel)` followed by the epilogue, computed
/// directly on `level` (a set the CPU has); `mask`, when given, holds one bit per value of `x`
/// and zeroes those whose bit is 0.
pub(crate) fn conv(
    level: Simd,
    kernel: &DirectKernel,
    x: &[f32],
    mask: Option<Bits<'_>>,
    (n, h, w): (usize, usize, usize),
    epi: Epilogue<'_>,
) -> Vec<f32> {
    let (k, c) = kernel.dims();
    assert_eq!(x.len(), n * c * h * w, "input size");
    if let Some(b) = epi.bias {
        assert_eq!(b.len(), k, "bias size");
    }
    let len = [n, k, h, w].iter().try_fold(1usize, |a, &d| a.checked_mul(d)).expect("output size overflows");
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let y = SharedMut(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    let bands = h.div_ceil(BAND);
    (0..n * bands).into_par_iter().for_each(|j| {
        let (b, y0) = (j / bands, j % bands * BAND);
        let task = Band {
            kernel,
            x: &x[b * c * h * w..(b + 1) * c * h * w],
            mask: mask.map(|m| m.at(b * c * h * w)),
            h,
            w,
            y0,
            rows: BAND.min(h - y0),
            epi,
            // Image b's output, (K, H, W), of which this task writes rows y0 .. y0 + rows of
            // every channel: no other task's.
            out: y.ptr().wrapping_add(b * k * h * w),
        };
        // SAFETY: `level` is a set the CPU has (the caller's); `out` as above, inside `out`'s
        // capacity of `len` floats, which outlives the loop.
        unsafe { band(level, &task) }
    });
    // SAFETY: the tasks wrote every element: each image's rows, in bands, of every channel,
    // each row's pixels ([`band_with`]).
    unsafe { out.set_len(len) };
    out
}

/// One task of [`conv`]: output rows `y0 .. y0 + rows` of one image.
struct Band<'a> {
    kernel: &'a DirectKernel,
    /// The image's input, `(C, H, W)`.
    x: &'a [f32],
    /// From the image's first input value.
    mask: Option<Bits<'a>>,
    h: usize,
    w: usize,
    y0: usize,
    rows: usize,
    epi: Epilogue<'a>,
    /// The image's output, `(K, H, W)`: `K·H·W` floats, of which this task owns its rows.
    out: *mut f32,
}

/// [`band_with`] on `level`'s vectors.
///
/// # Safety
/// The CPU must have `level`'s set; `t.out` as [`Band`] says.
unsafe fn band(level: Simd, t: &Band<'_>) {
    // The scratch is taken here, outside the functions compiled for a set, which get it as an
    // argument: code in a closure is compiled without the features of the function that
    // defines it, so with the scratch taken inside `band_with` (`with_buffer`'s closure) every
    // vector operation of the band became a call, and conv1_1 at 160×120 took 30 ms instead of
    // 1.2 (measured, `runner bench`, a8fea1b).
    let len = t.kernel.c * (t.rows + 2) * padded_width(t.w, MAX_STEP);
    with_buffer(&ROWS, len, |scratch| {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            unsafe fn wide(t: &Band<'_>, scratch: &mut [f32]) {
                // SAFETY: compiled for AVX-512, which the caller's CPU has; `t` by the caller.
                unsafe { band_with::<Zmm, 4>(t, scratch) }
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn narrow(t: &Band<'_>, scratch: &mut [f32]) {
                // SAFETY: compiled for AVX2 and FMA, which the caller's CPU has; `t` by the caller.
                unsafe { band_with::<Ymm, 2>(t, scratch) }
            }
            match level {
                // SAFETY: the CPU has the set (the caller's); `t` by the caller.
                Simd::Avx512 => return unsafe { wide(t, scratch) },
                // SAFETY: as above.
                Simd::Avx2 => return unsafe { narrow(t, scratch) },
                Simd::Baseline => {}
            }
        }
        // SAFETY: `Portable` needs no instruction set; `t` by the caller.
        unsafe { band_with::<Portable, 2>(t, scratch) }
    })
}

/// Pixels of a register block's row (`PV` vectors) on any set, at most.
const MAX_STEP: usize = 64;

/// A padded row's floats for blocks of `step` pixels: column j holds input column j − 1, zeros
/// at 0 and from w + 1 on, wide enough for the last block's vectors and taps (its lanes past w
/// compute on zeros, never stored).
fn padded_width(w: usize, step: usize) -> usize {
    w.next_multiple_of(step) + 2
}

/// Copies the input rows the band reads into `scratch` (at least C·(rows + 2) padded rows of
/// [`MAX_STEP`]), then computes its outputs in register blocks of `KB` channels (the kernel's)
/// × `PV` vectors `V`.
///
/// # Safety
/// The CPU must have `V`'s set, enabled where this is inlined; `t.out` as [`Band`] says.
#[inline(always)]
unsafe fn band_with<V: Vector, const PV: usize>(t: &Band<'_>, scratch: &mut [f32]) {
    const { assert!(PV * V::LANES <= MAX_STEP) };
    let wp = padded_width(t.w, PV * V::LANES);
    let scratch = &mut scratch[..t.kernel.c * (t.rows + 2) * wp];
    // SAFETY: `V`'s set by the caller; the scratch holds C·(rows + 2)·wp floats.
    unsafe { fill_rows::<V>(t, scratch, wp) };
    // SAFETY: as above, and `t.out` by the caller.
    unsafe {
        match t.kernel.kb {
            4 => outputs::<V, PV, 4>(t, scratch, wp),
            3 => outputs::<V, PV, 3>(t, scratch, wp),
            2 => outputs::<V, PV, 2>(t, scratch, wp),
            _ => outputs::<V, PV, 1>(t, scratch, wp),
        }
    }
}

/// Row `r` of channel c of `rows` (C × (rows + 2) rows of `wp` floats): input row y0 − 1 + r,
/// masked and zero-padded ([`band_with`]), zeros where that row is outside the image.
///
/// # Safety
/// As [`band_with`]; `rows` holds C·(t.rows + 2)·wp floats, wp ≥ w + 2.
#[inline(always)]
unsafe fn fill_rows<V: Vector>(t: &Band<'_>, rows: &mut [f32], wp: usize) {
    let span = t.rows + 2;
    for (i, row) in rows.chunks_exact_mut(wp).enumerate() {
        let (ch, r) = (i / span, i % span);
        let Some(yy) = (t.y0 + r).checked_sub(1).filter(|&yy| yy < t.h) else {
            row.fill(0.0);
            continue;
        };
        let at = (ch * t.h + yy) * t.w;
        let src = &t.x[at..at + t.w];
        row[0] = 0.0;
        row[t.w + 1..].fill(0.0);
        let dst = &mut row[1..t.w + 1];
        let whole = t.w / V::LANES * V::LANES;
        for x in (0..whole).step_by(V::LANES) {
            let bits = t.mask.map_or(u32::MAX, |m| m.get16(at + x));
            // SAFETY: V::LANES floats at x < whole ≤ w of both; the set by the caller.
            unsafe { V::load_where(src.as_ptr().add(x), bits).store(dst.as_mut_ptr().add(x)) };
        }
        for x in whole..t.w {
            dst[x] = if t.mask.is_none_or(|m| m.get(at + x)) { src[x] } else { 0.0 };
        }
    }
}

/// The band's outputs from its padded rows, `KB` channels × `PV` vectors at a time.
///
/// # Safety
/// As [`band_with`]; `rows` as [`fill_rows`] left them.
#[inline(always)]
unsafe fn outputs<V: Vector, const PV: usize, const KB: usize>(t: &Band<'_>, rows: &[f32], wp: usize) {
    let (k, c) = t.kernel.dims();
    let (span, step) = (t.rows + 2, PV * V::LANES);
    let plane = t.h * t.w;
    for r in 0..t.rows {
        let y = t.y0 + r;
        for kb in 0..k / KB {
            let wk = &t.kernel.w[kb * c * 9 * KB..(kb + 1) * c * 9 * KB];
            for x0 in (0..t.w).step_by(step) {
                // SAFETY: the set by the caller.
                let mut acc = [[unsafe { V::zero() }; PV]; KB];
                for ch in 0..c {
                    for dy in 0..3 {
                        let row = &rows[(ch * span + r + dy) * wp..][..wp];
                        for dx in 0..3 {
                            // SAFETY: x0 + step − 1 + dx < w.next_multiple_of(step) + 2 = wp.
                            let inp: [V; PV] =
                                std::array::from_fn(|p| unsafe { V::load(row.as_ptr().add(x0 + p * V::LANES + dx)) });
                            let taps = &wk[(ch * 9 + dy * 3 + dx) * KB..][..KB];
                            for (kk, &tw) in taps.iter().enumerate() {
                                // SAFETY: the set by the caller.
                                let wv = unsafe { V::splat(tw) };
                                for p in 0..PV {
                                    acc[kk][p] = unsafe { V::fma(inp[p], wv, acc[kk][p]) };
                                }
                            }
                        }
                    }
                }
                for (kk, lanes) in acc.iter().enumerate() {
                    let o = kb * KB + kk;
                    // SAFETY: the set by the caller.
                    let bias = unsafe { V::splat(t.epi.bias.map_or(0.0, |b| b[o])) };
                    for (p, &v) in lanes.iter().enumerate() {
                        let x = x0 + p * V::LANES;
                        if x >= t.w {
                            break;
                        }
                        // SAFETY: the set by the caller.
                        let mut v = unsafe { v.add(bias) };
                        if t.epi.relu {
                            v = unsafe { v.max(V::zero()) };
                        }
                        // Row y of channel o: this task's (Band::out).
                        let dst = t.out.wrapping_add(o * plane + y * t.w + x);
                        let n = V::LANES.min(t.w - x);
                        // SAFETY: n ≤ w − x floats of row y of channel o, this task's.
                        unsafe {
                            if n == V::LANES {
                                v.store(dst);
                            } else {
                                let mut tail = [MaybeUninit::<f32>::uninit(); 16];
                                v.store(tail.as_mut_ptr().cast());
                                std::ptr::copy_nonoverlapping(tail.as_ptr().cast::<f32>(), dst, n);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tape::BitMask;
    use crate::winograd::tests::naive;
    use candle_core::{Device, Tensor};
    use rand::{Rng, SeedableRng};

    /// The sets this CPU runs, the baseline included.
    fn levels() -> Vec<Simd> {
        [Simd::Baseline, Simd::Avx2, Simd::Avx512].into_iter().filter(|&l| l <= Simd::detected()).collect()
    }

    #[test]
    fn direct_convolutions_match_the_definition_and_agree_bit_for_bit_across_sets() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // (C, K, H, W, N): the first layer and its gradient, channel counts for each block
        // width, widths around the vectors' 8, 16, 32 and 64 pixels, one row and one column.
        let shapes = [
            (3, 64, 13, 37, 1),
            (64, 3, 9, 70, 2),
            (3, 8, 5, 64, 1),
            (5, 2, 7, 33, 1),
            (2, 7, 1, 17, 2),
            (3, 6, 6, 1, 1),
            (1, 1, 3, 3, 1),
        ];
        for (c, k, h, w, n) in shapes {
            let wt: Vec<f32> = (0..k * c * 9).map(|_| rng.random_range(-1.0..1.0)).collect();
            let x: Vec<f32> = (0..n * c * h * w).map(|_| rng.random_range(-1.0..1.0)).collect();
            let bias: Vec<f32> = (0..k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let signs = Tensor::from_vec(
                (0..x.len()).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>(),
                (n, c, h, w),
                &Device::Cpu,
            )
            .unwrap();
            let mask = BitMask::positive(&signs).unwrap();
            let masked: Vec<f32> =
                x.iter().enumerate().map(|(i, &v)| if mask.bits().get(i) { v } else { 0.0 }).collect();
            for (masking, relu, flip) in [(false, true, false), (true, false, true), (true, true, false)] {
                // The kernel as the definition reads it: w[k][c] itself, or from the transposed
                // flipped weights of a K-input, C-output convolution.
                let direct = if flip {
                    let mut orig = vec![0f32; wt.len()];
                    for o in 0..k {
                        for i in 0..c {
                            for t in 0..9 {
                                orig[((i * k + o) * 3 + 2 - t / 3) * 3 + 2 - t % 3] = wt[(o * c + i) * 9 + t];
                            }
                        }
                    }
                    DirectKernel::new(&orig, k, c, true)
                } else {
                    DirectKernel::new(&wt, k, c, false)
                };
                let input = if masking { &masked } else { &x };
                let mut want = Vec::new();
                for b in 0..n {
                    let y = naive(&input[b * c * h * w..(b + 1) * c * h * w], &wt, c, k, h, w);
                    want.extend(y.iter().enumerate().map(|(i, &v)| {
                        let v = v + f64::from(bias[i / (h * w)]);
                        if relu {
                            v.max(0.0)
                        } else {
                            v
                        }
                    }));
                }
                let epi = Epilogue { bias: Some(&bias), relu };
                let mut first: Option<Vec<f32>> = None;
                for level in levels() {
                    let got = conv(level, &direct, &x, masking.then(|| mask.bits()), (n, h, w), epi);
                    let what = format!("C {c} K {k} {h}×{w} N {n}, mask {masking}, relu {relu}, {level:?}");
                    assert_eq!(got.len(), want.len(), "{what}");
                    for (i, (&g, &e)) in got.iter().zip(&want).enumerate() {
                        // f32 sums of at most 9·64 terms of magnitude ≤ 1 against f64.
                        assert!((f64::from(g) - e).abs() <= 1e-5 * (1.0 + e.abs()), "{what}: [{i}] {g} vs {e}");
                    }
                    match &first {
                        None => first = Some(got),
                        Some(f) => assert!(
                            f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{what}: other bits than the first set's"
                        ),
                    }
                }
            }
        }
    }
}
