//! What the backward pass keeps of a forward pass on the CPU, and the backward steps that read
//! it. The weights are frozen, so the input gradient of a convolution needs only its kernel; a
//! ReLU's needs only where its output was positive (1 bit per value: [`BitMask`]); a 2×2 max
//! pooling's only which of its four inputs was the maximum (2 bits per output: [`PoolArgmax`]);
//! an average pooling's nothing. No activation is kept except those the losses read, 32× less
//! than keeping every ReLU's output in float32.
//!
//! All tensors here are `(N, C, H, W)`, float32, contiguous, on the CPU.

use candle_core::{CpuStorage, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::{Error, Result};

/// Runs `f` on the values of `t`, a float32 CPU tensor, without copying them when `t` is
/// contiguous.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(f(&v[a..b])),
        _ => Err(Error::Shape(format!("expected a float32 CPU tensor, got {:?} on {:?}", t.dtype(), t.device()))),
    }
}

/// Where a ReLU's output was positive, one bit per value, in the tensor's order.
pub struct BitMask {
    words: Vec<u64>,
    dims: Vec<usize>,
}

/// A view of a [`BitMask`] from a value's index on.
#[derive(Clone, Copy)]
pub(crate) struct Bits<'a> {
    words: &'a [u64],
    offset: usize,
}

impl Bits<'_> {
    /// Whether value `i` (from the view's start) was positive.
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> bool {
        let k = self.offset + i;
        (self.words[k >> 6] >> (k & 63)) & 1 == 1
    }

    /// Whether values `i .. i + 16` (from the view's start) were positive, as bits 0 … 15; values
    /// past the mask's end read as 0.
    #[inline(always)]
    pub(crate) fn get16(&self, i: usize) -> u32 {
        let k = self.offset + i;
        let (w, s) = (k >> 6, k & 63);
        let lo = self.words[w] >> s;
        // Bits of the next word, when the 16 cross a word boundary (s > 48).
        let hi = if s > 48 { self.words.get(w + 1).map_or(0, |n| n << (64 - s)) } else { 0 };
        ((lo | hi) & 0xFFFF) as u32
    }

    /// The view from value `i` on.
    pub(crate) fn at(self, i: usize) -> Self {
        Bits { words: self.words, offset: self.offset + i }
    }
}

impl BitMask {
    /// `[x > 0]` of `x`.
    pub fn positive(x: &Tensor) -> Result<Self> {
        let words = with_f32(x, |v| {
            v.par_chunks(64 * 1024).flat_map_iter(|chunk| chunk.chunks(64).map(positive_bits)).collect::<Vec<u64>>()
        })?;
        Ok(Self { words, dims: x.dims().to_vec() })
    }

    /// The shape of the tensor it was made from.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    pub(crate) fn bits(&self) -> Bits<'_> {
        Bits { words: &self.words, offset: 0 }
    }

    /// The mask as a float32 tensor of 0 and 1 on `device` (for the paths that multiply).
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let n: usize = self.dims.iter().product();
        let b = self.bits();
        let v: Vec<f32> = (0..n).map(|i| if b.get(i) { 1.0 } else { 0.0 }).collect();
        Ok(Tensor::from_vec(v, self.dims.as_slice(), device)?)
    }

    /// `g ⊙ mask + add`: the gradient at a convolution's output when a loss reads the
    /// convolution's output itself (`add`) and the layers after its ReLU send `g`.
    pub fn masked_add(&self, g: &Tensor, add: &Tensor) -> Result<Tensor> {
        if g.dims() != self.dims || add.dims() != self.dims {
            return Err(Error::Shape(format!("mask {:?}, gradients {:?} and {:?}", self.dims, g.dims(), add.dims())));
        }
        let b = self.bits();
        let out = with_f32(g, |g| {
            with_f32(add, |a| {
                g.iter().zip(a).enumerate().map(|(i, (&g, &a))| if b.get(i) { g + a } else { a }).collect::<Vec<f32>>()
            })
        })??;
        Ok(Tensor::from_vec(out, self.dims.as_slice(), &Device::Cpu)?)
    }
}

/// Bit i: `chunk[i] > 0`, for a chunk of at most 64 values.
fn positive_bits(chunk: &[f32]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if chunk.len() == 64 && crate::cpu::simd() >= crate::cpu::Simd::Avx2 {
        // SAFETY: the CPU has AVX2 (`simd` never chooses a set it lacks; `NST_CPU=baseline`
        // takes the scalar fold, with the same bits) and the chunk 64 values.
        return unsafe { positive_bits_avx2(chunk) };
    }
    chunk.iter().enumerate().fold(0u64, |w, (i, &x)| w | (u64::from(x > 0.0) << i))
}

/// [`positive_bits`] of 64 values, 8 compares at a time (the scalar fold took 4% of an
/// evaluation at 512×512). `>` is ordered: NaN gives 0, as in the scalar code.
///
/// # Safety
/// The CPU has AVX2; `chunk` holds 64 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn positive_bits_avx2(chunk: &[f32]) -> u64 {
    use std::arch::x86_64::*;
    let zero = _mm256_setzero_ps();
    let mut w = 0u64;
    for (i, eight) in chunk.chunks_exact(8).enumerate() {
        // SAFETY: `eight` has 8 values (chunks_exact).
        let v = unsafe { _mm256_loadu_ps(eight.as_ptr()) };
        let bits = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(v, zero)) as u32 as u64;
        w |= bits << (8 * i);
    }
    w
}

/// Which input of each 2×2 window was its maximum (the first in reading order on ties, as
/// PyTorch's), 2 bits per output, four outputs per byte; and the pooling's input shape.
pub struct PoolArgmax {
    codes: Vec<u8>,
    input: [usize; 4],
}

impl PoolArgmax {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.codes.len()
    }
}

fn dims4(t: &Tensor) -> Result<[usize; 4]> {
    let (n, c, h, w) = t.dims4()?;
    Ok([n, c, h, w])
}

/// 2×2, stride-2 max pooling of `x` (odd last rows and columns dropped), `(N, C, H/2, W/2)`,
/// and the argmax its backward pass needs.
pub fn max_pool_argmax(x: &Tensor) -> Result<(Tensor, PoolArgmax)> {
    let [n, c, h, w] = dims4(x)?;
    let (hp, wp) = (h / 2, w / 2);
    let planes = n * c;
    let (pooled, codes) = with_f32(x, |v| {
        let mut pooled = vec![0f32; planes * hp * wp];
        let mut codes = vec![0u8; planes * hp * wp];
        // The set `NST_CPU` chose (the scalar rows with `baseline`): the same results either way.
        #[cfg(target_arch = "x86_64")]
        let avx2 = crate::cpu::simd() >= crate::cpu::Simd::Avx2;
        pooled.par_chunks_mut(hp * wp).zip(codes.par_chunks_mut(hp * wp)).enumerate().for_each(|(p, (out, code))| {
            let src = &v[p * h * w..(p + 1) * h * w];
            for i in 0..hp {
                let (r0, r1) = (&src[2 * i * w..(2 * i + 1) * w], &src[(2 * i + 1) * w..(2 * i + 2) * w]);
                let (out, code) = (&mut out[i * wp..(i + 1) * wp], &mut code[i * wp..(i + 1) * wp]);
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    // SAFETY: the CPU has AVX2: `simd` never chooses a set it lacks.
                    unsafe { pool_row_avx2(r0, r1, out, code) };
                    continue;
                }
                pool_row(r0, r1, out, code, 0);
            }
        });
        (pooled, codes)
    })?;
    // Four 2-bit codes per byte.
    let packed = codes.par_chunks(4).map(|q| q.iter().enumerate().fold(0u8, |b, (i, &c)| b | (c << (2 * i)))).collect();
    Ok((Tensor::from_vec(pooled, (n, c, hp, wp), &Device::Cpu)?, PoolArgmax { codes: packed, input: [n, c, h, w] }))
}

/// One row of 2×2 windows from window `from` on: `out[j]` the largest of `r0[2j]`, `r0[2j + 1]`,
/// `r1[2j]`, `r1[2j + 1]`, `code[j]` its place in that order, the first on ties (a later value
/// wins only if greater: NaN never does, and NaN in the first place stays).
fn pool_row(r0: &[f32], r1: &[f32], out: &mut [f32], code: &mut [u8], from: usize) {
    for j in from..out.len() {
        let cand = [r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]];
        let mut best = 0;
        for k in 1..4 {
            if cand[k] > cand[best] {
                best = k;
            }
        }
        out[j] = cand[best];
        code[j] = best as u8;
    }
}

/// [`pool_row`] 8 windows at a time, the same comparisons in the same order (`>` ordered,
/// false with NaN), then the rest one by one. The scalar loop, one window at a time, took
/// 2.4% of a profile at 512×512 on a Zen 3 (docs/performance.md).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pool_row_avx2(r0: &[f32], r1: &[f32], out: &mut [f32], code: &mut [u8]) {
    use std::arch::x86_64::*;
    let groups = out.len() / 8;
    assert!(r0.len() >= 16 * groups && r1.len() >= 16 * groups && code.len() >= 8 * groups);
    // The low byte of each 32-bit lane, then lanes 0 and 4's groups of four bytes side by side.
    let low_bytes = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    );
    let halves = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
    let ks = [_mm256_set1_epi32(1), _mm256_set1_epi32(2), _mm256_set1_epi32(3)];
    for g in 0..groups {
        // SAFETY: 16 floats of each row from 16g (asserted above).
        let [a, b, c, d] = unsafe {
            let (x0, x1) = (_mm256_loadu_ps(r0.as_ptr().add(16 * g)), _mm256_loadu_ps(r0.as_ptr().add(16 * g + 8)));
            let (y0, y1) = (_mm256_loadu_ps(r1.as_ptr().add(16 * g)), _mm256_loadu_ps(r1.as_ptr().add(16 * g + 8)));
            // Even and odd columns: the shuffle picks them within each 128-bit half (windows 0,
            // 1, 4, 5 | 2, 3, 6, 7), the permutation of 64-bit pairs puts them in order.
            macro_rules! columns {
                ($p:expr, $q:expr, $pick:literal) => {
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                        _mm256_shuffle_ps::<$pick>($p, $q),
                    )))
                };
            }
            [
                columns!(x0, x1, 0b10_00_10_00),
                columns!(x0, x1, 0b11_01_11_01),
                columns!(y0, y1, 0b10_00_10_00),
                columns!(y0, y1, 0b11_01_11_01),
            ]
        };
        let (mut best, mut at) = (a, _mm256_setzero_si256());
        for (cand, k) in [b, c, d].into_iter().zip(ks) {
            let wins = _mm256_cmp_ps::<_CMP_GT_OQ>(cand, best);
            best = _mm256_blendv_ps(best, cand, wins);
            at = _mm256_blendv_epi8(at, k, _mm256_castps_si256(wins));
        }
        let bytes = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(at, low_bytes), halves);
        // SAFETY: 8 floats and 8 bytes from 8g (asserted above).
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * g), best);
            _mm_storel_epi64(code.as_mut_ptr().add(8 * g).cast(), _mm256_castsi256_si128(bytes));
        }
    }
    pool_row(r0, r1, out, code, 8 * groups);
}

/// The gradient at a max pooling's input from `grad` at its output: each output's gradient goes
/// to its window's maximum, zero elsewhere (and on the dropped odd row and column).
pub fn max_pool_backward(grad: &Tensor, a: &PoolArgmax) -> Result<Tensor> {
    let [n, c, h, w] = a.input;
    let (hp, wp) = (h / 2, w / 2);
    if grad.dims() != [n, c, hp, wp] {
        return Err(Error::Shape(format!("pooling gradient {:?} for an input of {:?}", grad.dims(), a.input)));
    }
    let out = with_f32(grad, |g| {
        let mut out = vec![0f32; n * c * h * w];
        out.par_chunks_mut(h * w).enumerate().for_each(|(p, dst)| {
            let gs = &g[p * hp * wp..(p + 1) * hp * wp];
            for i in 0..hp {
                for j in 0..wp {
                    let k = p * hp * wp + i * wp + j;
                    let code = (a.codes[k >> 2] >> (2 * (k & 3))) & 3;
                    let (di, dj) = (usize::from(code >> 1), usize::from(code & 1));
                    dst[(2 * i + di) * w + 2 * j + dj] = gs[i * wp + j];
                }
            }
        });
        out
    })?;
    Ok(Tensor::from_vec(out, (n, c, h, w), &Device::Cpu)?)
}

/// The gradient at a 2×2 average pooling's input of `(N, C, H, W)` from `grad` at its output:
/// a quarter of each output's gradient to each input of its window.
pub fn avg_pool_backward(grad: &Tensor, [n, c, h, w]: [usize; 4]) -> Result<Tensor> {
    let (hp, wp) = (h / 2, w / 2);
    let out = with_f32(grad, |g| {
        let mut out = vec![0f32; n * c * h * w];
        out.par_chunks_mut(h * w).enumerate().for_each(|(p, dst)| {
            for i in 0..2 * hp {
                for j in 0..2 * wp {
                    dst[i * w + j] = 0.25 * g[p * hp * wp + (i / 2) * wp + j / 2];
                }
            }
        });
        out
    })?;
    Ok(Tensor::from_vec(out, (n, c, h, w), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Vec<f32>, d: (usize, usize, usize, usize)) -> Tensor {
        Tensor::from_vec(v, d, &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn masks_keep_one_bit_per_value_across_word_boundaries() {
        // 2 × 3 × 7 × 5 = 210 values: not a multiple of 64 (three whole words, then a part);
        // NaN, −0 and the smallest positive value among them.
        let mut v: Vec<f32> = (0..210).map(|i| ((i * 37 % 11) as f32) - 5.0).collect();
        (v[3], v[70], v[130], v[200]) = (f32::NAN, -0.0, f32::from_bits(1), f32::NAN);
        let x = t(v.clone(), (2, 3, 7, 5));
        let m = BitMask::positive(&x).unwrap();
        assert_eq!(m.bytes(), 4 * 8);
        let want: Vec<f32> = v.iter().map(|&x| if x > 0.0 { 1.0 } else { 0.0 }).collect();
        assert_eq!(values(&m.to_tensor(&Device::Cpu).unwrap()), want);
        // 16 bits at a time from every offset, across word boundaries and past the end.
        for (i, _) in v.iter().enumerate() {
            let bits = m.bits().get16(i);
            for l in 0..16 {
                let want = v.get(i + l).is_some_and(|&x| x > 0.0);
                assert_eq!((bits >> l) & 1 == 1, want, "bit {l} from value {i}");
            }
        }
        let g = t((0..210).map(|i| i as f32).collect(), (2, 3, 7, 5));
        let add = t(vec![0.5; 210], (2, 3, 7, 5));
        let s = values(&m.masked_add(&g, &add).unwrap());
        for i in 0..210 {
            assert_eq!(s[i], if v[i] > 0.0 { i as f32 + 0.5 } else { 0.5 });
        }
    }

    #[test]
    fn pooling_rows_of_every_length_agree_with_the_first_maximum_rule() {
        // Rows of 0 to 41 windows (AVX2: whole groups of 8 and a rest), values from a few
        // levels so that ties are common, with NaN and ±0 among them; each window checked
        // against the rule directly, and the AVX2 rows against the scalar ones bit for bit.
        let levels = [1.0f32, 2.0, -0.0, 0.0, f32::NAN, 2.0, -3.0];
        for wp in 0..42 {
            let row =
                |seed: usize| -> Vec<f32> { (0..2 * wp + 1).map(|i| levels[(i * 5 + seed * 3 + i / 7) % 7]).collect() };
            let (r0, r1) = (row(wp), row(wp + 1));
            let (mut out, mut code) = (vec![0f32; wp], vec![0u8; wp]);
            pool_row(&r0, &r1, &mut out, &mut code, 0);
            for j in 0..wp {
                let cand = [r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]];
                let k = usize::from(code[j]);
                assert_eq!(out[j].to_bits(), cand[k].to_bits());
                if cand.iter().all(|c| !c.is_nan()) {
                    // The first maximum (+0 and −0 are equal: the first of them).
                    let max = cand.iter().copied().fold(f32::MIN, f32::max);
                    let first = cand.iter().position(|&c| c == max);
                    assert_eq!(Some(k), first, "{wp} windows: window {j} {cand:?}");
                }
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let (mut out2, mut code2) = (vec![7f32; wp], vec![7u8; wp]);
                // SAFETY: the CPU has AVX2.
                unsafe { pool_row_avx2(&r0, &r1, &mut out2, &mut code2) };
                assert_eq!(code2, code, "{wp} windows");
                assert_eq!(
                    out2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn max_pooling_routes_each_gradient_to_its_first_maximum() {
        // One 3×5 plane (odd sides: the last row and column are dropped), ties included.
        #[rustfmt::skip]
        let x = t(vec![
            1., 4., 2., 2., 9.,
            3., 0., 2., 2., 9.,
            9., 9., 9., 9., 9.,
        ], (1, 1, 3, 5));
        let (p, a) = max_pool_argmax(&x).unwrap();
        assert_eq!(values(&p), [4., 2.]);
        assert_eq!(values(&candle_core::Tensor::max_pool2d(&x, 2).unwrap()), [4., 2.]);
        let g = max_pool_backward(&t(vec![10., 20.], (1, 1, 1, 2)), &a).unwrap();
        #[rustfmt::skip]
        assert_eq!(values(&g), [
            0., 10., 20., 0., 0.,
            0., 0., 0., 0., 0.,
            0., 0., 0., 0., 0.,
        ]);
        let ga = avg_pool_backward(&t(vec![4., 8.], (1, 1, 1, 2)), [1, 1, 3, 5]).unwrap();
        assert_eq!(values(&ga)[..5], [1., 1., 2., 2., 0.]);
        assert_eq!(values(&ga)[10..], [0.; 5]);
    }
}
