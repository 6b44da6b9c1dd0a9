//! Executing one planned run: inputs, network, targets, optimisation, outputs. The core reports
//! progress through a callback and knows nothing of terminals.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use image::RgbImage;
use losses::{Objective, ObjectiveConfig, StyleImage, Targets, Terms};
use optim::{Adam, AdamConfig, Lbfgs, LbfgsConfig, Optimizer};
use rand::SeedableRng;
use rand_distr::Distribution;
use vgg::{ConvAlgorithm, Resize, Vgg19, VggWeights, WeightsFormat};

use crate::assets::{Asset, Assets};
use crate::output::{plot_log, save_png, write_csv, Series};
use crate::params::{DeviceChoice, Init, OptimizerKind, RunParams};
use crate::spec::{to_table, PlannedRun};
use crate::{Error, Result};

/// The program version written into every `run.toml`.
pub const VERSION: &str = concat!("gatys-rs runner ", env!("CARGO_PKG_VERSION"));

/// What a run reports while it runs.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Inputs are ready and the optimisation starts.
    Started {
        /// Planned steps.
        iterations: usize,
        /// The device, in words.
        device: String,
    },
    /// One optimizer step done.
    Step {
        /// Steps done.
        iteration: usize,
        /// Evaluations done.
        evals: usize,
        /// The objective at the current iterate.
        total: f64,
        /// Seconds since the optimisation started.
        seconds: f64,
    },
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// Completed now.
    Ok,
    /// Completed by an earlier invocation with the same identity; outputs kept.
    Skipped,
    /// Failed, with the reason.
    Failed(String),
}

/// One line of `summary.csv`.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The planned run.
    pub run: PlannedRun,
    /// How it ended.
    pub status: Status,
    /// Objective terms at the final iterate.
    pub final_terms: Option<Terms>,
    /// Steps made.
    pub iterations: usize,
    /// Evaluations made.
    pub evals: usize,
    /// Seconds of optimisation.
    pub seconds: f64,
    /// Peak resident memory of the process during the run, MiB (Linux).
    pub peak_rss_mib: Option<f64>,
    /// The device used.
    pub device: String,
    /// The loss curve (iteration, total), for the experiment's plot.
    pub curve: Vec<(f64, f64)>,
}

/// Resolves a device choice; a clear error when CUDA is asked of a binary built without it.
pub fn resolve_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => {
            if !cfg!(feature = "cuda") {
                return Err(Error::Run(format!(
                    "device `{}` asked, but this runner was built without CUDA: rebuild with \
                     `cargo build --release --features cuda` (README, \"GPU\"), or use device = \"cpu\"",
                    String::from(choice)
                )));
            }
            Device::new_cuda(n).map_err(|e| Error::Run(format!("cannot open CUDA device {n}: {e}")))
        }
        DeviceChoice::Auto => {
            if cfg!(feature = "cuda") {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
    }
}

/// Describes a device in words.
pub fn device_name(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        other => format!("{other:?}"),
    }
}

/// Shared state between the runs of one invocation: fetched inputs and loaded networks.
pub struct Session {
    assets: Assets,
    nets: HashMap<String, (Arc<Vgg19>, Asset)>,
    interrupt: Arc<AtomicBool>,
    /// Directory that relative image paths in the spec are resolved against first.
    pub spec_dir: Option<PathBuf>,
}

impl Session {
    /// A session fetching through `assets`; `interrupt` is set by Ctrl-C.
    pub fn new(assets: Assets, interrupt: Arc<AtomicBool>) -> Self {
        Self { assets, nets: HashMap::new(), interrupt, spec_dir: None }
    }

    /// The asset store.
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// An image by name or path (relative paths are tried against the spec's folder first).
    pub fn image(&self, name: &str) -> Result<Asset> {
        if let Some(dir) = &self.spec_dir {
            let p = dir.join(name);
            if !crate::assets::manifest().contains_key(name) && Path::new(name).is_relative() && p.is_file() {
                return self.assets.image(&p.to_string_lossy());
            }
        }
        self.assets.image(name)
    }

    /// The network for a run's weights, device and pooling (loaded once per session).
    pub fn network(&mut self, p: &RunParams, device: &Device) -> Result<(Arc<Vgg19>, Asset)> {
        let key = format!("{:?}|{:?}|{:?}", p.weights, device.location(), p.pooling);
        if let Some(n) = self.nets.get(&key) {
            return Ok(n.clone());
        }
        let asset = match &p.weights {
            Some(path) => Asset { path: PathBuf::from(path), sha256: crate::assets::sha256_file(Path::new(path))? },
            None => self.assets.weights()?,
        };
        let format = WeightsFormat::detect(&asset.path)?;
        let weights = VggWeights::load(&asset.path, format, device)?;
        let net = Arc::new(Vgg19::new(&weights, p.pooling, ConvAlgorithm::Fast)?);
        self.nets.insert(key, (net.clone(), asset.clone()));
        Ok((net, asset))
    }
}

/// The inputs of a run, resolved and hashed.
struct Inputs {
    weights: Asset,
    content: Option<Asset>,
    styles: Vec<Asset>,
    init: Option<Asset>,
}

fn identity(p: &RunParams, inputs: &Inputs) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(VERSION.as_bytes());
    h.update(to_table(p).to_string().as_bytes());
    for a in std::iter::once(&inputs.weights).chain(&inputs.content).chain(&inputs.styles).chain(&inputs.init) {
        h.update(a.sha256.as_bytes());
    }
    crate::assets::hex(&h.finalize())[..16].to_string()
}

/// Runs one planned run into `dir/<run name>/`, or skips it when its outputs are complete and
/// its identity unchanged (unless `force`). Never panics out: failures become a status.
pub fn execute(
    session: &mut Session,
    run: &PlannedRun,
    exp_dir: &Path,
    force: bool,
    progress: &mut dyn FnMut(Progress),
) -> RunSummary {
    let started = Instant::now();
    let mut summary = RunSummary {
        run: run.clone(),
        status: Status::Failed("not started".into()),
        final_terms: None,
        iterations: 0,
        evals: 0,
        seconds: 0.0,
        peak_rss_mib: None,
        device: String::new(),
        curve: vec![],
    };
    reset_peak_rss();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        execute_inner(session, run, exp_dir, force, progress, &mut summary)
    }));
    // A skipped run keeps the peak recorded when it ran, not this process's.
    if !matches!(result, Ok(Ok(Status::Skipped))) {
        summary.peak_rss_mib = peak_rss_mib();
    }
    match result {
        Ok(Ok(status)) => summary.status = status,
        Ok(Err(e)) => summary.status = Status::Failed(e.to_string()),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            summary.status = Status::Failed(format!("internal error: {msg}"));
        }
    }
    if summary.seconds == 0.0 {
        summary.seconds = started.elapsed().as_secs_f64();
    }
    summary
}

fn execute_inner(
    session: &mut Session,
    run: &PlannedRun,
    exp_dir: &Path,
    force: bool,
    progress: &mut dyn FnMut(Progress),
    summary: &mut RunSummary,
) -> Result<Status> {
    let p = &run.params;
    let dir = exp_dir.join(&run.name);
    let device = resolve_device(p.device)?;
    summary.device = device_name(&device);
    let (net, weights) = session.network(p, &device)?;
    let inputs = Inputs {
        weights,
        content: p.content.as_deref().map(|c| session.image(c)).transpose()?,
        styles: p.style.iter().map(|s| session.image(&s.image)).collect::<Result<_>>()?,
        init: match &p.init {
            Init::Image(i) => Some(session.image(i)?),
            _ => None,
        },
    };
    let id = identity(p, &inputs);
    if !force {
        if let Some(prev) = crate::report::read_run_record(&dir)? {
            if prev.id == id && dir.join("output.png").is_file() && dir.join("losses.csv").is_file() {
                summary.final_terms = Some(prev.final_terms);
                summary.iterations = prev.iterations;
                summary.evals = prev.evals;
                summary.seconds = prev.seconds;
                summary.device = prev.device;
                summary.peak_rss_mib = prev.peak_rss_mib;
                summary.curve = prev.curve;
                return Ok(Status::Skipped);
            }
        }
    }
    let pre = net.preprocessing();
    // Output size: from the content image (or the explicit size without one).
    let content_img = inputs.content.as_ref().map(|a| vgg::imageio::load_rgb(&a.path)).transpose()?;
    let (w, h) = match (&content_img, p.resize()) {
        (Some(img), r) => r.target(img.width(), img.height()),
        (None, Resize::Exact { width, height }) => (width, height),
        (None, Resize::LongSide(n)) => (n, n),
        (None, Resize::Keep) => return Err(Error::Run("no content image and no size".into())),
    };
    let long = w.max(h);
    let content_t = content_img
        .as_ref()
        .map(|img| pre.to_tensor(&vgg::imageio::resize(img, Resize::Exact { width: w, height: h }), &device))
        .transpose()?;
    let mut style_imgs: Vec<RgbImage> = Vec::new();
    let mut styles = Vec::new();
    for (a, s) in inputs.styles.iter().zip(&p.style) {
        let img = vgg::imageio::load_rgb(&a.path)?;
        // Style images at the output's long side, aspect kept: the Gram targets are compared per
        // position, so sizes need not match (the seed resizes both to one size).
        let resized = vgg::imageio::resize(&img, Resize::LongSide(long));
        styles.push(StyleImage { image: pre.to_tensor(&resized, &device)?, weight: s.weight });
        style_imgs.push(img);
    }
    let config = ObjectiveConfig {
        content_layers: p.content_layers.clone(),
        style_layers: p.style_layers.clone(),
        style_layer_weights: p.style_layer_weights.clone(),
        content_weight: p.content_weight,
        style_weight: p.style_weight,
        tv_weight: p.tv_weight,
        form: p.loss_form,
    };
    let targets = Targets::compute(&net, &config, content_t.as_ref(), &styles)?;
    let objective = Objective::new(&net, config, targets)?;
    let mut x = match &p.init {
        Init::Content => {
            content_t.clone().ok_or_else(|| Error::Run("init = content without a content image".into()))?
        }
        Init::Style => {
            let img = style_imgs.first().ok_or_else(|| Error::Run("init = style without a style image".into()))?;
            pre.to_tensor(&vgg::imageio::resize(img, Resize::Exact { width: w, height: h }), &device)?
        }
        Init::Noise => {
            noise(p.seed, p.noise_std * pre.units_per_pixel_level() as f64, (h as usize, w as usize), &device)?
        }
        Init::Image(_) => {
            let a = inputs.init.as_ref().ok_or_else(|| Error::Run("init image missing".into()))?;
            let img = vgg::imageio::load_rgb(&a.path)?;
            pre.to_tensor(&vgg::imageio::resize(&img, Resize::Exact { width: w, height: h }), &device)?
        }
    };
    let mut optimizer: Box<dyn Optimizer> = match p.optimizer {
        OptimizerKind::Lbfgs => Box::new(Lbfgs::new(LbfgsConfig {
            lr: p.effective_learning_rate(),
            history: p.history,
            line_search: p.line_search,
            guard: p.guard,
            ..Default::default()
        })),
        OptimizerKind::Adam => Box::new(Adam::new(AdamConfig {
            lr: p.effective_learning_rate() * pre.units_per_pixel_level() as f64,
            ..Default::default()
        })),
    };
    progress(Progress::Started { iterations: p.iterations, device: summary.device.clone() });
    let t0 = Instant::now();
    let mut evals: Vec<(Terms, f64)> = Vec::new();
    let mut rows: Vec<(usize, usize, f64, Terms)> = Vec::new();
    let interrupt = session.interrupt.clone();
    let mut iteration = 0;
    while iteration < p.iterations {
        if interrupt.load(Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        if p.max_evals.is_some_and(|m| optimizer.evals() >= m) {
            break;
        }
        let mut closure = |xk: &Tensor| -> optim::Result<(f64, Tensor)> {
            let e = objective.evaluate(xk).map_err(|e| optim::Error::Objective(Box::new(e)))?;
            evals.push((e.terms.clone(), t0.elapsed().as_secs_f64()));
            Ok((e.terms.total, e.grad))
        };
        let report = optimizer.step(&mut x, &mut closure)?;
        iteration += 1;
        if iteration == 1 {
            let (terms, secs) = evals[0].clone();
            match p.optimizer {
                OptimizerKind::Lbfgs => rows.push((0, 1, secs, terms)),
                OptimizerKind::Adam => {}
            }
        }
        match p.optimizer {
            OptimizerKind::Lbfgs => {
                let (terms, _) = evals[report.value_eval].clone();
                rows.push((iteration, optimizer.evals(), t0.elapsed().as_secs_f64(), terms));
            }
            // Adam's evaluation k is at iterate k (before its update).
            OptimizerKind::Adam => {
                let (terms, secs) = evals[report.value_eval].clone();
                rows.push((iteration - 1, optimizer.evals(), secs, terms));
            }
        }
        progress(Progress::Step {
            iteration,
            evals: optimizer.evals(),
            total: report.value,
            seconds: t0.elapsed().as_secs_f64(),
        });
        if p.save_every > 0 && iteration % p.save_every == 0 && iteration < p.iterations {
            save_png(&pre.to_image(&x)?, &dir.join(format!("snapshot_{iteration:05}.png")))?;
        }
        if report.converged {
            break;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let final_terms = objective.terms(&x)?;
    if p.optimizer == OptimizerKind::Adam {
        rows.push((iteration, optimizer.evals(), seconds, final_terms.clone()));
    }
    summary.iterations = iteration;
    summary.evals = optimizer.evals();
    summary.seconds = seconds;
    summary.final_terms = Some(final_terms.clone());
    summary.curve = rows.iter().map(|r| (r.0 as f64, r.3.total)).collect();
    // Outputs; run.toml last, as the mark of a complete run.
    save_png(&pre.to_image(&x)?, &dir.join("output.png"))?;
    write_losses(&dir.join("losses.csv"), p, &rows)?;
    let weighted = |f: &dyn Fn(&Terms) -> f64| rows.iter().map(|r| (r.0 as f64, f(&r.3))).collect::<Vec<_>>();
    let mut series = vec![Series { name: "total".into(), points: weighted(&|t| t.total) }];
    if !p.content_layers.is_empty() {
        series.push(Series { name: "α·content".into(), points: weighted(&|t| p.content_weight * t.content) });
    }
    if !p.style_layers.is_empty() {
        series.push(Series { name: "β·style".into(), points: weighted(&|t| p.style_weight * t.style) });
    }
    if p.tv_weight > 0.0 {
        series.push(Series { name: "tv".into(), points: weighted(&|t| p.tv_weight * t.tv) });
    }
    plot_log(&dir.join("loss.png"), &run.label, "iteration", &series, (640, 400))?;
    summary.peak_rss_mib = peak_rss_mib();
    crate::report::write_run_record(&dir, &id, run, &inputs_list(&inputs), summary, (w, h))?;
    Ok(Status::Ok)
}

fn inputs_list(i: &Inputs) -> Vec<(String, Asset)> {
    let mut v = vec![("weights".to_string(), i.weights.clone())];
    if let Some(c) = &i.content {
        v.push(("content".into(), c.clone()));
    }
    for (k, s) in i.styles.iter().enumerate() {
        v.push((format!("style{k}"), s.clone()));
    }
    if let Some(x) = &i.init {
        v.push(("init".into(), x.clone()));
    }
    v
}

/// `std · N(0, 1)` noise of shape `(1, 3, H, W)`, from a seeded generator (the same on every
/// device and machine).
pub fn noise(seed: u64, std: f64, (h, w): (usize, usize), device: &Device) -> Result<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = rand_distr::StandardNormal;
    let v: Vec<f32> = (0..3 * h * w).map(|_| (std * Distribution::<f64>::sample(&normal, &mut rng)) as f32).collect();
    Ok(Tensor::from_vec(v, (1, 3, h, w), device)?)
}

/// The column names of `losses.csv`.
pub fn loss_columns(p: &RunParams) -> Vec<String> {
    let mut h: Vec<String> =
        ["iteration", "evals", "seconds", "total", "content", "style", "tv"].map(String::from).to_vec();
    h.extend(p.content_layers.iter().map(|l| format!("content_{l}")));
    h.extend(p.style_layers.iter().map(|l| format!("style_{l}")));
    h
}

fn write_losses(path: &Path, p: &RunParams, rows: &[(usize, usize, f64, Terms)]) -> Result<()> {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|(it, ev, s, t)| {
            let mut r =
                vec![it.to_string(), ev.to_string(), format!("{s:.3}"), e(t.total), e(t.content), e(t.style), e(t.tv)];
            r.extend(t.content_layers.iter().map(|(_, v)| e(*v)));
            r.extend(t.style_layers.iter().map(|(_, v)| e(*v)));
            r
        })
        .collect();
    write_csv(path, &loss_columns(p), &body)
}

fn e(v: f64) -> String {
    // `+ 0.0` turns −0 into 0.
    format!("{:.6e}", v + 0.0)
}

/// Resets the kernel's peak-RSS counter of this process (Linux), so each run reports its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process, MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
