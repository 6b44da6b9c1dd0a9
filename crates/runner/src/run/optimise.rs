//! The optimisation loop of one run and the files it writes: `output.png`, snapshots,
//! `losses.csv` and `loss.png`. One row of losses per iterate, whichever the optimizer: each
//! step's report says which iterate its value belongs to (`optim::StepReport::iterate`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::Tensor;
use losses::{NetworkPass, Terms};
use optim::{Adam, AdamConfig, Lbfgs, LbfgsConfig, Optimizer};

use crate::output::{plot_log_marked, save_png, write_csv, Series};
use crate::params::{OptimizerKind, RunParams, Stage};
use crate::record::CurvePoint;
use crate::spec::PlannedRun;
use crate::{Error, Result};

use super::checkpoint;
use super::inputs::Setup;
use super::Progress;

/// The objective at one iterate: one row of `losses.csv`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LossRow {
    /// The iterate (0: the start), counted across stages.
    pub iteration: usize,
    /// The long side of the stage it was evaluated at, pixels.
    pub scale: u32,
    /// Evaluations made when it was recorded.
    pub evals: usize,
    /// Seconds since the optimisation started.
    pub seconds: f64,
    /// The objective's terms.
    pub terms: Terms,
}

/// One evaluation of the objective, as the closure saw it.
struct EvalRecord {
    terms: Terms,
    seconds: f64,
}

/// Why the optimisation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Every planned iteration was made.
    Completed,
    /// The evaluation budget (`max_evals`) was spent.
    MaxEvals,
    /// The optimizer's own test said no further step would move.
    Converged,
}

/// What the optimisation did.
pub(crate) struct Trace {
    /// Why it ended.
    pub stop: Stop,
    /// One row per iterate, the last one the final iterate's.
    pub rows: Vec<LossRow>,
    /// Steps made.
    pub iterations: usize,
    /// Evaluations made.
    pub evals: usize,
    /// Seconds of optimisation.
    pub seconds: f64,
    /// The output image, `(1, 3, H, W)`, preprocessed: the final iterate, or the average of the
    /// iterates with `average`.
    pub x: Tensor,
    /// The objective's terms at the output image.
    pub output_terms: Terms,
}

impl Trace {
    /// The total against the iteration.
    pub fn curve(&self) -> Vec<CurvePoint> {
        self.rows.iter().map(|r| CurvePoint { iteration: r.iteration as f64, total: r.terms.total }).collect()
    }
}

fn optimizer(p: &RunParams, setup: &Setup) -> Box<dyn Optimizer> {
    let o = &p.optimizer;
    match o.optimizer {
        OptimizerKind::Lbfgs => Box::new(Lbfgs::new(LbfgsConfig {
            lr: p.learning_rate(),
            history: o.history.get(),
            line_search: o.line_search,
            guard: o.guard,
            ..Default::default()
        })),
        // Adam's step is in pixel levels (neural-style's), the image in the network's units.
        OptimizerKind::Adam => Box::new(Adam::new(AdamConfig {
            lr: p.learning_rate() * setup.pre.units_per_pixel_level() as f64,
            ..Default::default()
        })),
    }
}

/// The exponential moving average of the iterates (`average`), bias-corrected as Adam's
/// moments are: after `t` updates with decay `d`, `sum = Σ_k (1 − d) d^(t−k) x_k` and the
/// average is `sum / (1 − d^t)` (the weights then sum to 1).
#[derive(Clone, Debug)]
pub(super) struct Average {
    /// The decay `d`.
    pub decay: f64,
    /// The uncorrected sum, `(1, 3, H, W)`.
    pub sum: Tensor,
    /// Updates made, `t`.
    pub steps: usize,
}

impl Average {
    fn new(decay: f64, x0: &Tensor) -> Result<Self> {
        Ok(Self { decay, sum: x0.zeros_like()?, steps: 0 })
    }

    fn update(&mut self, x: &Tensor) -> Result<()> {
        self.sum = ((&self.sum * self.decay)? + (x * (1.0 - self.decay))?)?;
        self.steps += 1;
        Ok(())
    }

    /// The average, `None` before the first update.
    fn value(&self) -> Result<Option<Tensor>> {
        if self.steps == 0 {
            return Ok(None);
        }
        let exponent = i32::try_from(self.steps).unwrap_or(i32::MAX);
        Ok(Some((&self.sum / (1.0 - self.decay.powi(exponent)))?))
    }
}

/// What one stage hands to the next (and a checkpoint to the run it resumes): the losses so
/// far and the counters that continue across stages.
#[derive(Clone, Debug, Default)]
pub(super) struct Carried {
    /// The losses so far, every stage's.
    pub rows: Vec<LossRow>,
    /// Steps made before this stage.
    pub step: usize,
    /// Evaluations made before this stage.
    pub evals: usize,
    /// Seconds of optimisation before this stage.
    pub seconds: f64,
    /// The optimizer's state to continue from: Adam's moments, resized to this stage
    /// (`carry_moments`); `None`: a fresh optimizer.
    pub state: Option<optim::State>,
}

/// The optimisation of one stage in progress: the optimizer, the iterate, the losses so far.
struct Loop<'s, 'n> {
    setup: &'s Setup<'n>,
    stage: Stage,
    opt: Box<dyn Optimizer>,
    x: Tensor,
    /// The average of the iterates, with `average` (restarted at each stage).
    average: Option<Average>,
    rows: Vec<LossRow>,
    /// Steps made, all stages'.
    step: usize,
    /// The step this stage started at.
    first_step: usize,
    /// Evaluations of the previous stages.
    evals_before: usize,
    /// Seconds of optimisation before this stage or invocation.
    before: f64,
    t0: Instant,
}

impl<'s, 'n> Loop<'s, 'n> {
    /// Stage `stage` from `setup.x0` after the previous stages (`carried`), or from `resume`,
    /// the run's checkpoint, when it was taken at this stage.
    fn start(
        setup: &'s Setup<'n>,
        p: &RunParams,
        stage: Stage,
        carried: Carried,
        resume: Option<checkpoint::Checkpoint>,
    ) -> Result<Self> {
        let mut opt = optimizer(p, setup);
        let t0 = Instant::now();
        let decay = p.optimizer.average.map(|d| d.0);
        if let Some(c) = resume {
            let average_ok = decay.is_some() == c.average.is_some();
            if c.stage == stage.index && c.x.dims() == setup.x0.dims() && average_ok && opt.restore(&c.state).is_ok() {
                return Ok(Loop {
                    setup,
                    stage,
                    opt,
                    x: c.x,
                    average: c.average,
                    rows: c.rows,
                    step: c.step,
                    first_step: c.first_step,
                    evals_before: c.evals_before,
                    before: c.seconds,
                    t0,
                });
            }
        }
        if let Some(state) = &carried.state {
            opt.restore(state)?;
        }
        let average = decay.map(|d| Average::new(d, &setup.x0)).transpose()?;
        Ok(Loop {
            setup,
            stage,
            opt,
            x: setup.x0.clone(),
            average,
            rows: carried.rows,
            step: carried.step,
            first_step: carried.step,
            evals_before: carried.evals,
            before: carried.seconds,
            t0,
        })
    }

    /// Evaluations made, all stages'.
    fn evals(&self) -> usize {
        self.evals_before + self.opt.evals()
    }

    fn seconds(&self) -> f64 {
        self.before + self.t0.elapsed().as_secs_f64()
    }

    /// One optimizer step, recording the losses of the iterate its report names; the network's
    /// passes go through `pass` when given (a batch of runs).
    fn advance(&mut self, mut pass: Option<&mut dyn NetworkPass>) -> Result<optim::StepReport> {
        let base = self.opt.evals();
        let (t0, before) = (self.t0, self.before);
        let mut evals: Vec<EvalRecord> = Vec::new();
        let objective = &self.setup.objective;
        let mut closure = |xk: &Tensor| -> optim::Result<(f64, Tensor)> {
            let e = match pass.as_deref_mut() {
                Some(pass) => objective.evaluate_through(xk, pass),
                None => objective.evaluate(xk),
            };
            let e = e.map_err(|e| optim::Error::Objective(Box::new(e)))?;
            evals.push(EvalRecord { terms: e.terms.clone(), seconds: before + t0.elapsed().as_secs_f64() });
            Ok((e.terms.total, e.grad))
        };
        let report = self.opt.step(&mut self.x, &mut closure)?;
        self.step += 1;
        if let Some(a) = &mut self.average {
            a.update(&self.x)?;
        }
        if self.rows.last().is_none_or(|r| r.scale != self.stage.side) {
            // Every optimizer's first evaluation is at the start of its stage.
            let e = &evals[0];
            self.rows.push(LossRow {
                iteration: self.first_step,
                scale: self.stage.side,
                evals: self.evals_before + 1,
                seconds: e.seconds,
                terms: e.terms.clone(),
            });
        }
        let iterate = report.iterate(self.step);
        let e = report.value_eval.checked_sub(base).and_then(|i| evals.get(i));
        if let (Some(e), true) = (e, self.rows.last().is_some_and(|r| r.iteration < iterate)) {
            self.rows.push(LossRow {
                iteration: iterate,
                scale: self.stage.side,
                evals: self.evals(),
                seconds: e.seconds,
                terms: e.terms.clone(),
            });
        }
        Ok(report)
    }

    fn checkpoint(&self, dir: &Path, id: &str) -> Result<()> {
        let c = checkpoint::Checkpoint {
            stage: self.stage.index,
            first_step: self.first_step,
            evals_before: self.evals_before,
            step: self.step,
            seconds: self.seconds(),
            x: self.x.clone(),
            rows: self.rows.clone(),
            state: self.opt.state(),
            average: self.average.clone(),
        };
        checkpoint::save(dir, id, &c)
    }

    /// The image the run outputs now: the average of the iterates, or the iterate.
    fn output(&self) -> Result<Tensor> {
        Ok(match &self.average {
            Some(a) => a.value()?.unwrap_or_else(|| self.x.clone()),
            None => self.x.clone(),
        })
    }

    fn finish(mut self, stop: Stop) -> Result<(Trace, Carried)> {
        let seconds = self.seconds();
        let (evals, side) = (self.evals(), self.stage.side);
        if self.rows.last().is_none_or(|r| r.scale != side || r.iteration < self.step) {
            // The final iterate was not evaluated (Adam evaluates before it updates): one more.
            let terms = self.setup.objective.terms(&self.x)?;
            self.rows.push(LossRow { iteration: self.step, scale: side, evals, seconds, terms });
        }
        let x = self.output()?;
        let output_terms = match (&self.average, self.rows.last()) {
            (None, Some(last)) => last.terms.clone(),
            _ => self.setup.objective.terms(&x)?,
        };
        let carried = Carried { rows: Vec::new(), step: self.step, evals, seconds, state: Some(self.opt.state()) };
        let trace = Trace { stop, rows: self.rows, iterations: self.step, evals, seconds, x, output_terms };
        Ok((trace, carried))
    }
}

/// What a run's optimisation listens to besides its parameters.
pub(crate) struct Watch<'a> {
    /// Set by Ctrl-C: checkpoint and stop.
    pub interrupt: &'a AtomicBool,
    /// Write `preview.png` every this many steps (0: never).
    pub preview_every: usize,
    /// The batch the network passes go through (`None`: the run's own network).
    pub pass: Option<&'a mut super::batch::Member>,
}

/// Runs stage `stage` of the optimizer from `setup.x0` after the previous stages (`carried`),
/// or from `resume` (the run's checkpoint, when taken at this stage), for the stage's
/// iterations (or the run's evaluations), saving snapshots and checkpoints into `dir`; when
/// `interrupt` is set, saves a checkpoint and stops with [`Error::Interrupted`]. Returns the
/// trace of all stages so far and what the next stage continues from (its `rows` empty: they
/// are in the trace).
#[allow(clippy::too_many_arguments)]
pub(super) fn optimise(
    setup: &Setup,
    p: &RunParams,
    stage: Stage,
    (carried, resume): (Carried, Option<checkpoint::Checkpoint>),
    dir: &Path,
    id: &str,
    watch: &mut Watch,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Trace, Carried)> {
    let (interrupt, preview_every) = (watch.interrupt, watch.preview_every);
    let mut lp = Loop::start(setup, p, stage, carried, resume)?;
    let end = lp.first_step + stage.iterations;
    let save_every = p.output.save_every.get();
    let interval = p.output.checkpoint_interval.0;
    let mut last_checkpoint = Instant::now();
    let stop = loop {
        if lp.step >= end {
            break Stop::Completed;
        }
        if interrupt.load(Ordering::SeqCst) {
            lp.checkpoint(dir, id)?;
            return Err(Error::Interrupted);
        }
        if p.optimizer.max_evals.is_some_and(|m| lp.evals() >= m.get()) {
            break Stop::MaxEvals;
        }
        let report = lp.advance(watch.pass.as_deref_mut().map(|m| m as &mut dyn NetworkPass))?;
        let step = lp.step;
        progress(Progress::Step { iteration: step, evals: lp.evals(), total: report.value, seconds: lp.seconds() });
        if save_every > 0 && step % save_every == 0 && step < end {
            save_png(&setup.image(&lp.output()?)?, &dir.join(format!("snapshot_{step:05}.png")))?;
        }
        if preview_every > 0 && step % preview_every == 0 && step < end {
            save_preview(&setup.image(&lp.output()?)?, dir)?;
            progress(Progress::Preview { iteration: step });
        }
        if report.converged {
            break Stop::Converged;
        }
        if interval > 0.0 && last_checkpoint.elapsed().as_secs_f64() >= interval && step < end {
            lp.checkpoint(dir, id)?;
            last_checkpoint = Instant::now();
        }
    };
    lp.finish(stop)
}

/// The image a watcher sees while the run goes on (`preview.png`, removed when the run ends):
/// fast compression, written atomically.
fn save_preview(img: &image::RgbImage, dir: &Path) -> Result<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let path = dir.join(PREVIEW);
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, FilterType::Sub)
        .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::Run(format!("cannot encode {}: {e}", path.display())))?;
    crate::fsutil::write_atomic(&path, &bytes)
}

/// The file name of a run's preview image.
pub const PREVIEW: &str = "preview.png";

/// Writes `output.png`, `losses.csv` and `loss.png` into `dir`; the output image.
pub(super) fn write_outputs(dir: &Path, run: &PlannedRun, setup: &Setup, trace: &Trace) -> Result<image::RgbImage> {
    let p = &run.params;
    let image = setup.image(&trace.x)?;
    save_png(&image, &dir.join("output.png"))?;
    write_losses(&dir.join("losses.csv"), p, &trace.rows)?;
    let o = &p.objective;
    let weighted = |f: &dyn Fn(&Terms) -> f64| trace.rows.iter().map(|r| (r.iteration as f64, f(&r.terms))).collect();
    let mut series = vec![Series { name: "total".into(), points: weighted(&|t| t.total), color: None }];
    if !o.content_layers.0.is_empty() {
        series.push(Series {
            name: "α·content".into(),
            points: weighted(&|t| o.content_weight.0 * t.content),
            color: None,
        });
    }
    if !o.style_layers.0.is_empty() {
        series
            .push(Series { name: "β·style".into(), points: weighted(&|t| o.style_weight.0 * t.style), color: None });
    }
    if o.tv_weight.0 > 0.0 {
        series.push(Series { name: "tv".into(), points: weighted(&|t| o.tv_weight.0 * t.tv), color: None });
    }
    // A dashed line where each stage after the first starts (the losses jump with the size).
    let marks: Vec<(f64, String)> = trace
        .rows
        .windows(2)
        .filter(|w| w[1].scale != w[0].scale)
        .map(|w| (w[1].iteration as f64, format!("{} px", w[1].scale)))
        .collect();
    plot_log_marked(&dir.join("loss.png"), &plot_title(dir, run, setup), "iteration", &series, &marks, (640, 400))?;
    Ok(image)
}

/// A run plot's title: the experiment (its folder), the run and what sets the curve's scale.
fn plot_title(dir: &Path, run: &PlannedRun, setup: &Setup) -> String {
    use crate::params::Choice;
    use crate::spec::format_float;
    let p = &run.params;
    let exp = dir.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    format!(
        "{exp} · {}: {}×{} px, {}, α {} β {}",
        if run.label.is_empty() { &run.name } else { &run.label },
        setup.width,
        setup.height,
        p.optimizer.optimizer.name(),
        format_float(p.objective.content_weight.0),
        format_float(p.objective.style_weight.0),
    )
}

/// The column names of `losses.csv`.
pub fn loss_columns(p: &RunParams) -> Vec<String> {
    let mut h: Vec<String> =
        ["iteration", "scale", "evals", "seconds", "total", "content", "style", "tv"].map(String::from).to_vec();
    h.extend(p.objective.content_layers.0.iter().map(|l| format!("content_{l}")));
    h.extend(p.objective.style_layers.layers().iter().map(|l| format!("style_{l}")));
    h
}

fn write_losses(path: &Path, p: &RunParams, rows: &[LossRow]) -> Result<()> {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let t = &r.terms;
            let mut cells = vec![
                r.iteration.to_string(),
                r.scale.to_string(),
                r.evals.to_string(),
                format!("{:.3}", r.seconds),
                e(t.total),
                e(t.content),
                e(t.style),
                e(t.tv),
            ];
            cells.extend(t.content_layers.iter().map(|(_, v)| e(*v)));
            cells.extend(t.style_layers.iter().map(|(_, v)| e(*v)));
            cells
        })
        .collect();
    write_csv(path, &loss_columns(p), &body)
}

fn e(v: f64) -> String {
    // `+ 0.0` turns −0 into 0.
    format!("{:.6e}", v + 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_average_is_bias_corrected_and_weights_recent_iterates() {
        let x = |v: f32| Tensor::full(v, (1, 3, 2, 2), &Device::Cpu).unwrap();
        let value = |a: &Average| a.value().unwrap().unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        let mut a = Average::new(0.9, &x(0.0)).unwrap();
        assert!(a.value().unwrap().is_none(), "nothing to average before the first step");
        // A constant sequence averages to itself at every step (the bias correction).
        for _ in 0..5 {
            a.update(&x(7.0)).unwrap();
            assert!((value(&a) - 7.0).abs() < 1e-5, "{}", value(&a));
        }
        // Two iterates: (0.1·0.9·1 + 0.1·3) / (1 − 0.81) = 0.39 / 0.19.
        let mut b = Average::new(0.9, &x(0.0)).unwrap();
        b.update(&x(1.0)).unwrap();
        b.update(&x(3.0)).unwrap();
        assert!((value(&b) - 0.39 / 0.19).abs() < 1e-5, "{}", value(&b));
        // Decay 0: the last iterate.
        let mut c = Average::new(0.0, &x(0.0)).unwrap();
        c.update(&x(1.0)).unwrap();
        c.update(&x(3.0)).unwrap();
        assert_eq!(value(&c), 3.0);
    }
}
