//! L-BFGS's two-loop recursion on the CPU, in place, in one parallel pass over memory per
//! stored pair.
//!
//! The recursion as written (Nocedal & Wright, algorithm 7.4) reads each pair twice per loop: a
//! dot product, then an update of the running vector with it. With `m` pairs of `n` floats that
//! is `4m` passes over `n`-float vectors, and, with tensor operations, two fresh `n`-float
//! allocations per pair and loop. Each update is fused here with the next dot product, which
//! needs the updated vector:
//!
//! - loop 1, `i = m−1 … 0`: `α_i = ρ_i ⟨s_i, q⟩`, `q ← q − α_i y_i`; the pass that updates `q`
//!   with `y_i` also accumulates `⟨s_{i−1}, q⟩` for the next `α`;
//! - loop 2, `i = 0 … m−1`: `β_i = ρ_i ⟨y_i, r⟩`, `r ← r + (α_i − β_i) s_i`; the pass that
//!   updates `r` with `s_i` accumulates `⟨y_{i+1}, r⟩`.
//!
//! `2m + 2` passes, no allocation but the result, each pass split into fixed chunks run in
//! parallel whose partial sums are added in chunk order: the result does not depend on the
//! number of threads. Dot products accumulate in double precision (the device path multiplies
//! in float32 and converts the sum); the updates are in float32, with the scalar rounded to
//! float32 first, as the device path does.

use std::collections::VecDeque;

use candle_core::{CpuStorage, DType, Storage, Tensor};
use rayon::prelude::*;

use crate::Result;

/// Floats per chunk of a parallel pass (64 KiB): fixed, so the sums are the same on any
/// number of threads.
const CHUNK: usize = 1 << 14;

/// A contiguous float32 CPU tensor's values, borrowed.
struct Host<'a> {
    storage: candle_core::StorageRef<'a>,
    start: usize,
    len: usize,
}

impl<'a> Host<'a> {
    fn of(t: &'a Tensor) -> Option<Self> {
        if t.dtype() != DType::F32 {
            return None;
        }
        let (storage, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        matches!(&*storage, Storage::Cpu(CpuStorage::F32(_))).then_some(Self { storage, start, len: end - start })
    }

    fn values(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.start + self.len],
            // `of` accepts nothing else.
            _ => &[],
        }
    }
}

/// `−H g` with the pairs `(s, y, ρ)` (oldest first) and `H₀ = h_diag · I`, when `g` and every
/// pair are contiguous float32 CPU tensors of `g`'s size; `None` otherwise (the device path).
pub(crate) fn direction(g: &Tensor, pairs: &VecDeque<(Tensor, Tensor, f64)>, h_diag: f64) -> Result<Option<Tensor>> {
    let Some(gh) = Host::of(g) else { return Ok(None) };
    let n = gh.len;
    let mut s = Vec::with_capacity(pairs.len());
    let mut y = Vec::with_capacity(pairs.len());
    for (sk, yk, _) in pairs {
        match (Host::of(sk), Host::of(yk)) {
            (Some(a), Some(b)) if a.len == n && b.len == n => {
                s.push(a);
                y.push(b);
            }
            _ => return Ok(None),
        }
    }
    let (s, y): (Vec<&[f32]>, Vec<&[f32]>) =
        (s.iter().map(Host::values).collect(), y.iter().map(Host::values).collect());
    let rho: Vec<f64> = pairs.iter().map(|p| p.2).collect();
    let mut q: Vec<f32> = gh.values().iter().map(|v| -v).collect();
    drop(gh);
    // From a thread of the pool, each pass's parallel loop shares its chunks with the other
    // threads directly, instead of handing them over and waking this thread after each of the
    // 2m + 2 passes (`vgg::on_pool`).
    rayon::scope(|_| recursion(&mut q, &s, &y, &rho, h_diag));
    Ok(Some(Tensor::from_vec(q, g.shape(), g.device())?))
}

/// The two loops on `q` (`−g` on entry, `−H g` on return), pairs `(s, y, ρ)` oldest first.
fn recursion(q: &mut [f32], s: &[&[f32]], y: &[&[f32]], rho: &[f64], h_diag: f64) {
    let m = rho.len();
    let mut alpha = vec![0f64; m];
    let mut d = match m {
        0 => 0.0,
        _ => update_dot(q, 0.0, None, s[m - 1], 1.0),
    };
    for i in (0..m).rev() {
        alpha[i] = rho[i] * d;
        let next = if i > 0 { s[i - 1] } else { &[] };
        d = update_dot(q, -alpha[i] as f32, Some(y[i]), next, 1.0);
    }
    // r = h_diag · q, with ⟨y_0, r⟩ in the same pass.
    let first = y.first().copied().unwrap_or(&[]);
    let mut d = update_dot(q, 0.0, None, first, h_diag as f32);
    for i in 0..m {
        let beta = rho[i] * d;
        let next = if i + 1 < m { y[i + 1] } else { &[] };
        d = update_dot(q, (alpha[i] - beta) as f32, Some(s[i]), next, 1.0);
    }
}

/// `v ← scale · v + c · add` (without `add`: `v ← scale · v`), and `⟨next, v⟩` of the updated
/// `v` in double precision (0 when `next` is empty), in one parallel pass.
fn update_dot(v: &mut [f32], c: f32, add: Option<&[f32]>, next: &[f32], scale: f32) -> f64 {
    update_dot_with(Level::detected(), v, c, add, next, scale)
}

fn update_dot_with(level: Level, v: &mut [f32], c: f32, add: Option<&[f32]>, next: &[f32], scale: f32) -> f64 {
    let partial: Vec<f64> = v
        .par_chunks_mut(CHUNK)
        .enumerate()
        .map(|(k, vc)| {
            let at = k * CHUNK..k * CHUNK + vc.len();
            let add = add.map(|a| &a[at.clone()]);
            let next = (!next.is_empty()).then(|| &next[at]);
            level.chunk(vc, c, add, next, scale)
        })
        .collect();
    partial.iter().sum()
}

/// The widest vectors [`chunk`] is compiled for here: AVX-512 where the CPU has it and the
/// build has the `avx512` feature (as for gemm's kernels, `NST_CPU` does not reach it), else
/// AVX2, else the baseline (SSE2 on x86-64: two double-precision lanes, so the dot products
/// were bound by arithmetic, not memory). Each computes the same bits: the same operations in
/// the same order, more of them at once.
///
/// Measured on the project's Xeon (family 6 model 207, 2026-12-02): 100 pairs of 57 600 floats
/// (160×120), the whole recursion on one thread, by turns with the code before (baseline, a
/// dot-product pass after each update pass): 8.1–9.5 against 15.8–17.1 ms; on two threads,
/// medians of 24 turns 5.6 / 6.5 against 6.1 / 6.9 ms. In 100-iteration runs at 160×120, the
/// time of the L-BFGS steps beyond their evaluations: 481 and 432 against 727 and 605 ms.
#[derive(Clone, Copy, Debug)]
enum Level {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    Avx512,
}

impl Level {
    fn detected() -> Level {
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Level::Avx2;
        }
        Level::Baseline
    }

    fn chunk(self, v: &mut [f32], c: f32, add: Option<&[f32]>, next: Option<&[f32]>, scale: f32) -> f64 {
        match self {
            Level::Baseline => chunk(v, c, add, next, scale),
            // SAFETY: `detected` returns these only where the CPU has their instructions.
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => unsafe { chunk_avx2(v, c, add, next, scale) },
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            Level::Avx512 => unsafe { chunk_avx512(v, c, add, next, scale) },
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn chunk_avx2(v: &mut [f32], c: f32, add: Option<&[f32]>, next: Option<&[f32]>, scale: f32) -> f64 {
    chunk(v, c, add, next, scale)
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[target_feature(enable = "avx512f")]
fn chunk_avx512(v: &mut [f32], c: f32, add: Option<&[f32]>, next: Option<&[f32]>, scale: f32) -> f64 {
    chunk(v, c, add, next, scale)
}

/// Floats per step of [`chunk`]'s loop: a cache line.
const LINE: usize = 16;

/// Floats prefetched ahead of the line in use, in each vector read (2 KiB): the vectors of
/// the pairs come from memory, one short stream per pass. 128 / 512 / 1024 on one thread
/// (Xeon model 207): 10.0–11.5 / 8.1–9.4 / 9.0–10.5 ms per recursion of 100 pairs.
const AHEAD: usize = 512;

/// One chunk of [`update_dot`]: each line of `v` updated, then its terms of `⟨next, v⟩`
/// added, in double precision, to eight lanes (lane l takes the elements l, l + 8, …), summed
/// in lane order at the end, then the elements past the last multiple of 8 one by one. Products
/// and sums are separate operations, never fused, on every instruction set.
#[inline(always)]
fn chunk(v: &mut [f32], c: f32, add: Option<&[f32]>, next: Option<&[f32]>, scale: f32) -> f64 {
    let n = v.len();
    let lines = n / LINE * LINE;
    let mut lanes = [0f64; 8];
    let mut dot_lines = |xs: &[f32], ns: &[f32]| {
        for (x8, n8) in xs.chunks_exact(8).zip(ns.chunks_exact(8)) {
            for l in 0..8 {
                lanes[l] += f64::from(x8[l]) * f64::from(n8[l]);
            }
        }
    };
    match add {
        Some(a) => {
            let a = &a[..n];
            for (j, (xs, a16)) in v[..lines].chunks_exact_mut(LINE).zip(a[..lines].chunks_exact(LINE)).enumerate() {
                prefetch(a, j * LINE + AHEAD);
                for (x, a) in xs.iter_mut().zip(a16) {
                    *x = scale * *x + c * a;
                }
                if let Some(next) = next {
                    prefetch(next, j * LINE + AHEAD);
                    dot_lines(xs, &next[j * LINE..(j + 1) * LINE]);
                }
            }
            for (x, a) in v[lines..].iter_mut().zip(&a[lines..]) {
                *x = scale * *x + c * a;
            }
        }
        None if scale != 1.0 => v.iter_mut().for_each(|x| *x *= scale),
        None => {}
    }
    let Some(next) = next else { return 0.0 };
    let eights = n / 8 * 8;
    // The lines' terms are in the lanes already when `add` came with them.
    let from = if add.is_some() { lines } else { 0 };
    dot_lines(&v[from..eights], &next[from..eights]);
    let mut sum: f64 = lanes.iter().sum();
    for j in eights..n {
        sum += f64::from(v[j]) * f64::from(next[j]);
    }
    sum
}

/// Asks for the cache line of `v[at]`, when `at` lies inside `v`.
#[inline(always)]
fn prefetch(v: &[f32], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if at < v.len() {
        // SAFETY: a hint, for an address inside `v`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(v.as_ptr().add(at).cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The recursion on the host against the textbook one in double precision.
    #[test]
    fn the_fused_recursion_is_the_two_loop_recursion() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Not a multiple of the chunk or of the lanes.
        let n = 3 * CHUNK + 37;
        let vec = |rng: &mut rand::rngs::StdRng| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        for m in [0usize, 1, 5] {
            let g = vec(&mut rng);
            let raw: Vec<(Vec<f32>, Vec<f32>)> = (0..m)
                .map(|_| {
                    let s = vec(&mut rng);
                    // y ≈ 2 s + noise: yᵀs > 0, as for a convex objective.
                    let y: Vec<f32> = s.iter().map(|v| 2.0 * v + 0.1 * rng.random_range(-1.0f32..1.0)).collect();
                    (s, y)
                })
                .collect();
            let dot = |a: &[f32], b: &[f64]| a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum::<f64>();
            let rho: Vec<f64> = raw
                .iter()
                .map(|(s, y)| 1.0 / s.iter().zip(y).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>())
                .collect();
            let h = 0.37;
            // Textbook, f64 throughout.
            let mut q: Vec<f64> = g.iter().map(|v| -f64::from(*v)).collect();
            let mut alpha = vec![0.0; m];
            for i in (0..m).rev() {
                alpha[i] = rho[i] * dot(&raw[i].0, &q);
                q.iter_mut().zip(&raw[i].1).for_each(|(x, y)| *x -= alpha[i] * f64::from(*y));
            }
            let mut r: Vec<f64> = q.iter().map(|v| h * v).collect();
            for i in 0..m {
                let beta = rho[i] * dot(&raw[i].1, &r);
                r.iter_mut().zip(&raw[i].0).for_each(|(x, s)| *x += (alpha[i] - beta) * f64::from(*s));
            }
            let tensor = |v: &Vec<f32>| Tensor::from_vec(v.clone(), n, &Device::Cpu).unwrap();
            let pairs: VecDeque<(Tensor, Tensor, f64)> =
                raw.iter().zip(&rho).map(|((s, y), r)| (tensor(s), tensor(y), *r)).collect();
            let got = direction(&tensor(&g), &pairs, h).unwrap().unwrap().to_vec1::<f32>().unwrap();
            let scale = r.iter().fold(0f64, |a, v| a.max(v.abs()));
            let err = got.iter().zip(&r).fold(0f64, |a, (x, y)| a.max((f64::from(*x) - y).abs()));
            assert!(err <= 1e-5 * scale, "m = {m}: max error {err} of {scale}");
        }
    }

    /// Every instruction set gives the baseline's bits, for every shape of chunk: with and
    /// without an update, with and without a dot product, lengths not a multiple of a line,
    /// of 8, or of the chunk.
    #[test]
    fn every_instruction_set_gives_the_baselines_bits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let levels = [
            Level::Baseline,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2,
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            Level::Avx512,
        ];
        let here = Level::detected();
        for n in [1usize, 7, 8, 15, 16, 23, 1000, CHUNK + 13, 2 * CHUNK + 40] {
            let vec =
                |rng: &mut rand::rngs::StdRng| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
            let (v0, a, next) = (vec(&mut rng), vec(&mut rng), vec(&mut rng));
            for (add, next, scale) in [
                (Some(&a[..]), &next[..], 1.0),
                (None, &next[..], 0.37),
                (None, &next[..], 1.0),
                (Some(&a[..]), &[][..], 1.0),
            ] {
                let run = |level: Level| {
                    let mut v = v0.clone();
                    let d = update_dot_with(level, &mut v, -0.61, add, next, scale);
                    (v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), d.to_bits())
                };
                let want = run(Level::Baseline);
                for level in levels.iter().filter(|l| (**l as u8) <= (here as u8)) {
                    assert!(run(*level) == want, "{level:?}, n = {n}, add {}, next {}", add.is_some(), next.len());
                }
            }
        }
    }

    #[test]
    fn other_devices_and_types_take_the_device_path() {
        let g = Tensor::zeros(8, DType::F64, &Device::Cpu).unwrap();
        assert!(direction(&g, &VecDeque::new(), 1.0).unwrap().is_none());
        // A non-contiguous gradient.
        let g = Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap().t().unwrap();
        assert!(direction(&g, &VecDeque::new(), 1.0).unwrap().is_none());
    }
}
