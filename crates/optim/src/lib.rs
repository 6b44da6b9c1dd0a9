//! Optimizers over an image tensor, driven by a closure that returns the objective's value and
//! gradient at a point, as PyTorch's `optimizer.step(closure)`:
//!
//! - [`Lbfgs`]: the paper's optimizer, equivalent to `torch.optim.LBFGS` (learning rate, history
//!   size, tolerances, optional strong-Wolfe line search), plus a guard that keeps it from
//!   diverging on badly scaled objectives;
//! - [`Adam`]: neural-style's alternative.
//!
//! Every tensor stays on the device of the image; only scalars (dot products, values) come to
//! the host.
#![deny(missing_docs)]

mod adam;
mod host;
mod lbfgs;

pub use adam::{Adam, AdamConfig};
pub use lbfgs::{Lbfgs, LbfgsConfig, LineSearch};

/// A count stored as a number of a [`State`].
pub(crate) fn count(state: &State, key: &str) -> Result<usize> {
    let v = state.number(key)?;
    if v < 0.0 || v.fract() != 0.0 || v > 9.0e15 {
        return Err(Error::State(format!("`{key}` = {v} is not a count")));
    }
    Ok(v as usize)
}

use candle_core::Tensor;

/// Errors of the optimizers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The objective returned NaN or infinity where no recovery is possible.
    #[error("the objective is not finite ({value}) at evaluation {eval}")]
    NonFinite {
        /// 0-based index of the evaluation.
        eval: usize,
        /// The value returned.
        value: f64,
    },
    /// The objective closure failed.
    #[error("the objective failed")]
    Objective(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A saved state that cannot be restored.
    #[error("cannot restore the optimizer's state: {0}")]
    State(String),
    /// An error of the tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The objective: value and gradient (same shape and device as the point) at a point.
pub type Closure<'a> = dyn FnMut(&Tensor) -> Result<(f64, Tensor)> + 'a;

/// Which iterate a step's reported value belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueAt {
    /// The point before this step's update (Adam: the value comes with the gradient it uses).
    Before,
    /// The point after this step (L-BFGS: the value of the new iterate; an iterate that did not
    /// move when the step converged).
    After,
}

/// What one optimizer step did. With steps counted from 1, step `k` reports the value of
/// iterate `k` (`ValueAt::After`) or `k − 1` (`ValueAt::Before`), iterate 0 being the start:
/// [`StepReport::iterate`].
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// The objective's value at the iterate this step reports.
    pub value: f64,
    /// Which iterate that is, relative to this step.
    pub value_at: ValueAt,
    /// Global index (0-based, over the optimizer's life) of the evaluation that produced `value`.
    pub value_eval: usize,
    /// Evaluations made by this step.
    pub evals: usize,
    /// The optimizer's own stopping test fired (gradient or change below tolerance): further
    /// steps would not move.
    pub converged: bool,
}

impl StepReport {
    /// The index of the iterate whose value this report gives, for the `step`-th step (from 1).
    pub fn iterate(&self, step: usize) -> usize {
        match self.value_at {
            ValueAt::Before => step.saturating_sub(1),
            ValueAt::After => step,
        }
    }
}

/// Everything an optimizer needs to continue where it stopped: named tensors (its vectors, on
/// their device) and named numbers. Restored into an optimizer of the same configuration, it
/// makes the same steps as the one it was taken from.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Image-sized vectors (gradients, directions, curvature pairs, moments).
    pub tensors: std::collections::BTreeMap<String, Tensor>,
    /// Scalars (counters as exact integers in `f64`).
    pub numbers: std::collections::BTreeMap<String, f64>,
}

impl State {
    /// A number of the state, or an error naming it.
    pub fn number(&self, key: &str) -> Result<f64> {
        self.numbers.get(key).copied().ok_or_else(|| Error::State(format!("the number `{key}` is missing")))
    }

    /// A tensor of the state, or an error naming it.
    pub fn tensor(&self, key: &str) -> Result<Tensor> {
        self.tensors.get(key).cloned().ok_or_else(|| Error::State(format!("the tensor `{key}` is missing")))
    }
}

/// An optimizer over the pixels of an image.
pub trait Optimizer {
    /// Makes one step from `x`, updating it in place; `f` evaluates the objective.
    fn step(&mut self, x: &mut Tensor, f: &mut Closure<'_>) -> Result<StepReport>;

    /// Evaluations made so far.
    fn evals(&self) -> usize;

    /// The state to continue from later ([`Optimizer::restore`]).
    fn state(&self) -> State;

    /// Continues from a state taken by [`Optimizer::state`] of an optimizer of the same kind
    /// and configuration.
    fn restore(&mut self, state: &State) -> Result<()>;
}

/// `⟨a, b⟩` over all elements, as `f64`.
pub(crate) fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.flatten_all()?.unsqueeze(0)?;
    let b = b.flatten_all()?.unsqueeze(1)?;
    Ok(a.matmul(&b)?.flatten_all()?.to_vec1::<f32>()?[0] as f64)
}

/// `max |a|` over all elements.
pub(crate) fn abs_max(a: &Tensor) -> Result<f64> {
    Ok(a.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? as f64)
}

/// `Σ |a|` over all elements.
pub(crate) fn abs_sum(a: &Tensor) -> Result<f64> {
    Ok(a.abs()?.sum_all()?.to_scalar::<f32>()? as f64)
}

/// `a + s · b`.
pub(crate) fn axpy(a: &Tensor, s: f64, b: &Tensor) -> Result<Tensor> {
    Ok((a + (b * s)?)?)
}

#[cfg(test)]
pub(crate) mod testfns {
    use super::*;
    use candle_core::Device;

    /// Rosenbrock in 2·k dimensions, `Σ 100 (x_{2i+1} − x_{2i}²)² + (1 − x_{2i})²`, scaled.
    pub fn rosenbrock(scale: f64) -> impl FnMut(&Tensor) -> Result<(f64, Tensor)> {
        move |x: &Tensor| {
            let v = x.to_vec1::<f32>()?;
            let mut f = 0f64;
            let mut g = vec![0f32; v.len()];
            for i in (0..v.len()).step_by(2) {
                let (a, b) = (v[i] as f64, v[i + 1] as f64);
                f += 100.0 * (b - a * a).powi(2) + (1.0 - a).powi(2);
                g[i] = (scale * (-400.0 * a * (b - a * a) - 2.0 * (1.0 - a))) as f32;
                g[i + 1] = (scale * 200.0 * (b - a * a)) as f32;
            }
            Ok((scale * f, Tensor::from_vec(g, v.len(), x.device())?))
        }
    }

    /// `scale · Σ_i c_i (x_i − 1)²` with condition number 100.
    pub fn quadratic(scale: f64) -> impl FnMut(&Tensor) -> Result<(f64, Tensor)> {
        move |x: &Tensor| {
            let v = x.to_vec1::<f32>()?;
            let n = v.len();
            let mut f = 0f64;
            let mut g = vec![0f32; n];
            for (i, xi) in v.iter().enumerate() {
                let c = 1.0 + 99.0 * i as f64 / (n - 1) as f64;
                let d = *xi as f64 - 1.0;
                f += scale * c * d * d;
                g[i] = (scale * 2.0 * c * d) as f32;
            }
            Ok((f, Tensor::from_vec(g, n, x.device())?))
        }
    }

    pub fn start(v: &[f32]) -> Tensor {
        Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap()
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;
    use crate::testfns::{rosenbrock, start};

    /// `steps` steps of `opt` from `x`.
    fn steps(opt: &mut dyn Optimizer, x: &mut Tensor, n: usize) {
        let mut f = rosenbrock(1.0);
        for _ in 0..n {
            opt.step(x, &mut f).unwrap();
        }
    }

    /// An optimizer stopped after 7 steps and restored into a fresh one makes exactly the steps
    /// the uninterrupted one makes (L-BFGS with its history and both line searches, Adam).
    #[test]
    fn a_restored_optimizer_continues_exactly() {
        let x0 = [-1.2f32, 1.0, -0.5, 0.8, 1.5, 2.0];
        let make: [fn() -> Box<dyn Optimizer>; 3] = [
            || Box::new(Lbfgs::new(LbfgsConfig { history: 4, ..Default::default() })),
            || Box::new(Lbfgs::new(LbfgsConfig { line_search: LineSearch::StrongWolfe, ..Default::default() })),
            || Box::new(Adam::new(AdamConfig { lr: 0.05, ..Default::default() })),
        ];
        for new in make {
            let mut whole = new();
            let mut x = start(&x0);
            steps(whole.as_mut(), &mut x, 15);
            let mut first = new();
            let mut y = start(&x0);
            steps(first.as_mut(), &mut y, 7);
            let mut second = new();
            second.restore(&first.state()).unwrap();
            steps(second.as_mut(), &mut y, 8);
            assert_eq!(x.to_vec1::<f32>().unwrap(), y.to_vec1::<f32>().unwrap());
            assert_eq!(whole.evals(), second.evals());
        }
        let mut lbfgs = Lbfgs::new(LbfgsConfig { history: 2, ..Default::default() });
        let mut s = State::default();
        s.numbers.extend([
            ("h_diag".into(), 1.0),
            ("iterations".into(), 3.0),
            ("evals".into(), 4.0),
            ("pairs".into(), 3.0),
        ]);
        assert!(lbfgs.restore(&s).unwrap_err().to_string().contains("3 pairs for a history of 2"));
    }
}
