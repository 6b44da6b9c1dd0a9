//! `runner bench`: the time of one evaluation of the default objective (forward to `relu5_1`,
//! backward to the image) on random images, as `../shared/bench/torch_reference.py bench`
//! measures it, printed as one JSON line with the same keys (and the CPU's model and the
//! instruction set of the Winograd transforms, `NST_CPU` to force one).

use std::time::Instant;

use candle_core::Tensor;
use losses::{LossForm, Objective, ObjectiveConfig, StyleImage, StyleLoss, StyleRegion, Targets};
use vgg::{ConvAlgorithm, Layer, Pooling, Vgg19, VggWeights, WeightsFormat};

use crate::assets::Assets;
use crate::device::{device_name, peak_rss_mib, resolve_device};
use crate::params::DeviceChoice;
use crate::Result;

/// What to time.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// Timed evaluations (after one warm-up evaluation).
    pub evals: usize,
    /// Device.
    pub device: DeviceChoice,
    /// Convolution algorithm.
    pub algorithm: ConvAlgorithm,
    /// The style loss (the torch reference's is `gram`).
    pub style_loss: StyleLoss,
}

fn objective_layers(o: &Objective<'_>) -> Vec<Layer> {
    let c = o.config();
    c.content_layers.iter().chain(&c.style_layers).copied().collect()
}

/// The CPU's model name (`/proc/cpuinfo`), or `null` where it cannot be read.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// Runs the benchmark and returns the JSON line.
pub fn bench(assets: &Assets, c: &BenchConfig) -> Result<String> {
    let device = resolve_device(c.device)?;
    let w = assets.weights()?;
    let weights = VggWeights::load(&w.path, WeightsFormat::detect(&w.path)?, &device)?;
    let mut net = Vgg19::new(&weights, Pooling::Max, c.algorithm)?;
    if let Some(cache) = assets.kernel_cache() {
        net = net.with_kernel_cache(cache.clone());
    }
    drop(weights);
    let layers = |names: &[&str]| names.iter().map(|s| s.parse::<Layer>()).collect::<vgg::Result<Vec<_>>>();
    let config = ObjectiveConfig {
        content_layers: layers(&["relu4_2"])?,
        style_layers: layers(&["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"])?,
        style_layer_weights: None,
        content_weight: 20.0,
        style_weight: 1e3,
        tv_weight: 0.0,
        form: LossForm::Seed,
        style_loss: c.style_loss,
    };
    // Random images in [-128, 128), as the torch reference's `torch.rand(...) * 255 - 128`.
    let shape = (1, 3, c.height, c.width);
    let content = (Tensor::rand(0f32, 255f32, shape, &device)? - 128.0)?;
    let style = (Tensor::rand(0f32, 255f32, shape, &device)? - 128.0)?;
    let targets =
        Targets::compute(&net, &config, Some(&content), &[StyleRegion::whole(vec![StyleImage::new(style, 1.0)])])?;
    let objective = Objective::new(&net, config, targets)?;
    let mut times = Vec::with_capacity(c.evals);
    for i in 0..=c.evals {
        device.synchronize()?;
        let t = Instant::now();
        let e = objective.evaluate(&content)?;
        // Make sure the gradient is computed, not only queued.
        let _ = e.grad.flatten_all()?.narrow(0, 0, 1)?.to_vec1::<f32>()?;
        device.synchronize()?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    // The forward pass alone (to relu5_1, keeping what the backward pass needs), for the split.
    let layers: Vec<Layer> = objective_layers(&objective);
    let mut fwd = Vec::with_capacity(c.evals);
    for _ in 0..c.evals {
        device.synchronize()?;
        let t = Instant::now();
        let (f, _tape) = net.forward_tape(&content, &layers)?;
        drop(f);
        device.synchronize()?;
        fwd.push(t.elapsed().as_secs_f64());
    }
    fwd.sort_by(|a, b| a.total_cmp(b));
    let json = serde_json::json!({
        "impl": format!("gatys-rs {} ({:?})", env!("CARGO_PKG_VERSION"), c.algorithm),
        "style_loss": c.style_loss.name(),
        "device": device_name(&device),
        "threads": rayon::current_num_threads(),
        "cpu": cpu_model(),
        "simd": vgg::simd().name(),
        "gemm": vgg::gemm_kernels().name(),
        "width": c.width,
        "height": c.height,
        "evals": c.evals,
        "s_per_eval_median": median,
        "s_per_eval_min": times[0],
        "s_forward_median": fwd[fwd.len() / 2],
        "peak_rss_mib": peak_rss_mib().map(|m| (m * 10.0).round() / 10.0),
        "peak_gpu_mib": serde_json::Value::Null,
        "winograd_kernels_mib": (net.transformed_bytes() as f64 / 1048576.0).round(),
        "kernel_cache": assets.kernel_cache().map(|k| {
            let s = k.stats();
            serde_json::json!({"dir": k.dir(), "loaded": s.loaded, "stored": s.stored, "failed": s.failed})
        }),
    });
    Ok(json.to_string())
}
