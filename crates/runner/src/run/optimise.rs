//! The optimisation loop of one run and the files it writes: `output.png`, snapshots,
//! `losses.csv` and `loss.png`. One row of losses per iterate, whichever the optimizer: each
//! step's report says which iterate its value belongs to (`optim::StepReport::iterate`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::Tensor;
use losses::Terms;
use optim::{Adam, AdamConfig, Lbfgs, LbfgsConfig, Optimizer};

use crate::output::{plot_log, save_png, write_csv, Series};
use crate::params::{OptimizerKind, RunParams};
use crate::record::CurvePoint;
use crate::spec::PlannedRun;
use crate::{Error, Result};

use super::checkpoint;
use super::inputs::Setup;
use super::Progress;

/// The objective at one iterate: one row of `losses.csv`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LossRow {
    /// The iterate (0: the start).
    pub iteration: usize,
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
    /// The final image, `(1, 3, H, W)`, preprocessed.
    pub x: Tensor,
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

/// The optimisation in progress: the optimizer, the iterate, the losses so far.
struct Loop<'s, 'n> {
    setup: &'s Setup<'n>,
    opt: Box<dyn Optimizer>,
    x: Tensor,
    rows: Vec<LossRow>,
    step: usize,
    /// Seconds of optimisation before this invocation (a resumed run's).
    before: f64,
    t0: Instant,
}

impl<'s, 'n> Loop<'s, 'n> {
    /// A fresh start at `setup.x0`, or the run's checkpoint in `dir` when there is one.
    fn start(setup: &'s Setup<'n>, p: &RunParams, dir: &Path, id: &str) -> Result<Self> {
        let mut opt = optimizer(p, setup);
        let t0 = Instant::now();
        if let Some(c) = checkpoint::load(dir, id, setup.x0.device()) {
            if c.x.dims() == setup.x0.dims() && opt.restore(&c.state).is_ok() {
                return Ok(Loop { setup, opt, x: c.x, rows: c.rows, step: c.step, before: c.seconds, t0 });
            }
        }
        Ok(Loop { setup, opt, x: setup.x0.clone(), rows: Vec::new(), step: 0, before: 0.0, t0 })
    }

    fn seconds(&self) -> f64 {
        self.before + self.t0.elapsed().as_secs_f64()
    }

    /// One optimizer step, recording the losses of the iterate its report names.
    fn advance(&mut self) -> Result<optim::StepReport> {
        let base = self.opt.evals();
        let (t0, before) = (self.t0, self.before);
        let mut evals: Vec<EvalRecord> = Vec::new();
        let objective = &self.setup.objective;
        let mut closure = |xk: &Tensor| -> optim::Result<(f64, Tensor)> {
            let e = objective.evaluate(xk).map_err(|e| optim::Error::Objective(Box::new(e)))?;
            evals.push(EvalRecord { terms: e.terms.clone(), seconds: before + t0.elapsed().as_secs_f64() });
            Ok((e.terms.total, e.grad))
        };
        let report = self.opt.step(&mut self.x, &mut closure)?;
        self.step += 1;
        if self.rows.is_empty() {
            // Every optimizer's first evaluation is at the start.
            let e = &evals[0];
            self.rows.push(LossRow { iteration: 0, evals: 1, seconds: e.seconds, terms: e.terms.clone() });
        }
        let iterate = report.iterate(self.step);
        let e = report.value_eval.checked_sub(base).and_then(|i| evals.get(i));
        if let (Some(e), true) = (e, self.rows.last().is_some_and(|r| r.iteration < iterate)) {
            self.rows.push(LossRow {
                iteration: iterate,
                evals: self.opt.evals(),
                seconds: e.seconds,
                terms: e.terms.clone(),
            });
        }
        Ok(report)
    }

    fn checkpoint(&self, dir: &Path, id: &str) -> Result<()> {
        let c = checkpoint::Checkpoint {
            step: self.step,
            seconds: self.seconds(),
            x: self.x.clone(),
            rows: self.rows.clone(),
            state: self.opt.state(),
        };
        checkpoint::save(dir, id, &c)
    }

    fn finish(mut self, stop: Stop) -> Result<Trace> {
        let seconds = self.seconds();
        if self.rows.last().is_none_or(|r| r.iteration < self.step) {
            // The final iterate was not evaluated (Adam evaluates before it updates): one more.
            let terms = self.setup.objective.terms(&self.x)?;
            self.rows.push(LossRow { iteration: self.step, evals: self.opt.evals(), seconds, terms });
        }
        let evals = self.opt.evals();
        Ok(Trace { stop, rows: self.rows, iterations: self.step, evals, seconds, x: self.x })
    }
}

/// Runs the optimizer from `setup.x0` (or from the run's checkpoint in `dir`) for the run's
/// iterations (or evaluations), saving snapshots and checkpoints into `dir`; when `interrupt`
/// is set, saves a checkpoint and stops with [`Error::Interrupted`].
pub(super) fn optimise(
    setup: &Setup,
    p: &RunParams,
    dir: &Path,
    id: &str,
    interrupt: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Trace> {
    let mut lp = Loop::start(setup, p, dir, id)?;
    let (iterations, save_every) = (p.optimizer.iterations.get(), p.output.save_every.get());
    let interval = p.output.checkpoint_interval.0;
    let mut last_checkpoint = Instant::now();
    let stop = loop {
        if lp.step >= iterations {
            break Stop::Completed;
        }
        if interrupt.load(Ordering::SeqCst) {
            lp.checkpoint(dir, id)?;
            return Err(Error::Interrupted);
        }
        if p.optimizer.max_evals.is_some_and(|m| lp.opt.evals() >= m.get()) {
            break Stop::MaxEvals;
        }
        let report = lp.advance()?;
        let step = lp.step;
        progress(Progress::Step { iteration: step, evals: lp.opt.evals(), total: report.value, seconds: lp.seconds() });
        if save_every > 0 && step % save_every == 0 && step < iterations {
            save_png(&setup.image(&lp.x)?, &dir.join(format!("snapshot_{step:05}.png")))?;
        }
        if report.converged {
            break Stop::Converged;
        }
        if interval > 0.0 && last_checkpoint.elapsed().as_secs_f64() >= interval && step < iterations {
            lp.checkpoint(dir, id)?;
            last_checkpoint = Instant::now();
        }
    };
    lp.finish(stop)
}

/// Writes `output.png`, `losses.csv` and `loss.png` into `dir`; the output image.
pub(super) fn write_outputs(dir: &Path, run: &PlannedRun, setup: &Setup, trace: &Trace) -> Result<image::RgbImage> {
    let p = &run.params;
    let image = setup.image(&trace.x)?;
    save_png(&image, &dir.join("output.png"))?;
    write_losses(&dir.join("losses.csv"), p, &trace.rows)?;
    let o = &p.objective;
    let weighted = |f: &dyn Fn(&Terms) -> f64| trace.rows.iter().map(|r| (r.iteration as f64, f(&r.terms))).collect();
    let mut series = vec![Series { name: "total".into(), points: weighted(&|t| t.total) }];
    if !o.content_layers.0.is_empty() {
        series.push(Series { name: "α·content".into(), points: weighted(&|t| o.content_weight.0 * t.content) });
    }
    if !o.style_layers.0.is_empty() {
        series.push(Series { name: "β·style".into(), points: weighted(&|t| o.style_weight.0 * t.style) });
    }
    if o.tv_weight.0 > 0.0 {
        series.push(Series { name: "tv".into(), points: weighted(&|t| o.tv_weight.0 * t.tv) });
    }
    plot_log(&dir.join("loss.png"), &run.label, "iteration", &series, (640, 400))?;
    Ok(image)
}

/// The column names of `losses.csv`.
pub fn loss_columns(p: &RunParams) -> Vec<String> {
    let mut h: Vec<String> =
        ["iteration", "evals", "seconds", "total", "content", "style", "tv"].map(String::from).to_vec();
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
