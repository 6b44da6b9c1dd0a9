//! L-BFGS as `torch.optim.LBFGS` computes it (Nocedal & Wright, algorithm 7.4, with PyTorch's
//! step-length rules and its strong-Wolfe line search, itself a port of minFunc), one
//! `step` being one L-BFGS iteration (PyTorch's `step()` with `max_iter = 1`).
//!
//! Differences from PyTorch, each deliberate:
//! - The value and gradient at the new iterate are kept, so a step never re-evaluates the point
//!   the previous step ended on. Without line search PyTorch makes the same evaluations in the
//!   same order; with strong Wolfe it re-evaluates the current point at each `step()` call, which
//!   costs it one evaluation per iteration that this one saves.
//! - The guard ([`LbfgsConfig::guard`]): without line search, a step whose value is not finite
//!   or more than `guard_growth` times the previous value is shrunk tenfold and retried; with
//!   strong Wolfe, a first trial point whose value is not finite is shrunk likewise before the
//!   bracketing starts, and a cubic step that is not finite falls back to bisection. PyTorch has
//!   none: on the `paper` normalisation started from the content image (values near 1e13) its
//!   second step overshoots, the loss overflows float32, and it never recovers (NaN without line
//!   search; stuck at the start with strong Wolfe). The guard never fires on a run that does not
//!   blow up, so such runs follow PyTorch's evaluations exactly.
//! - On the CPU the two-loop recursion runs in place, each update fused with the next dot
//!   product (`crate::host`), and its dot products accumulate in double precision where
//!   PyTorch's (and this crate's device path) accumulate in float32: the directions differ in
//!   the last float32 bits.
//! - The line search's budget is its own setting ([`LbfgsConfig::max_line_search_evals`], 25 as
//!   in `_strong_wolfe`). PyTorch ≥ 2.x caps it at `max_eval − 1` evaluations after the first
//!   trial, which is 0 for the `max_iter = 1` steps of the style-transfer code: its "strong Wolfe"
//!   then evaluates one trial point and keeps it only if it is lower. Setting 0 here gives that.

use std::collections::VecDeque;

use candle_core::Tensor;

use crate::{abs_max, abs_sum, axpy, dot, Closure, Error, Optimizer, Result, State, StepReport, ValueAt};

/// The line search after each direction is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LineSearch {
    /// A fixed step of `lr` (`lr · min(1, 1/‖g‖₁)` on the first iteration), as in PyTorch's
    /// default and Gatys' code.
    #[default]
    None,
    /// Strong-Wolfe line search (c₁ = 1e-4, c₂ = 0.9, at most 25 evaluations), PyTorch's
    /// `line_search_fn="strong_wolfe"`.
    StrongWolfe,
}

impl LineSearch {
    /// Every line search, for listing valid values.
    pub const ALL: [LineSearch; 2] = [LineSearch::None, LineSearch::StrongWolfe];

    /// The name used in specs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LineSearch::None => "none",
            LineSearch::StrongWolfe => "strong_wolfe",
        }
    }
}

impl std::fmt::Display for LineSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// L-BFGS settings; defaults are `torch.optim.LBFGS`'s, except the tolerances, which are off
/// as in the style-transfer references (a run lasts a fixed number of iterations).
#[derive(Clone, Debug, PartialEq)]
pub struct LbfgsConfig {
    /// Step length (1).
    pub lr: f64,
    /// Number of curvature pairs kept (100).
    pub history: usize,
    /// Stop when `max |g| ≤ tolerance_grad` (0: off).
    pub tolerance_grad: f64,
    /// Stop when the step or the change of value is below this (0: off).
    pub tolerance_change: f64,
    /// The line search.
    pub line_search: LineSearch,
    /// Evaluations the strong-Wolfe search may make after its first trial point (25; PyTorch's
    /// `LBFGS(max_iter=1)` allows 0, see the module docs).
    pub max_line_search_evals: usize,
    /// Shrink steps that overflow or explode (see the module docs); `true`.
    pub guard: bool,
    /// How many times larger than the previous value a guarded step's value may be (10).
    pub guard_growth: f64,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        Self {
            lr: 1.0,
            history: 100,
            tolerance_grad: 0.0,
            tolerance_change: 0.0,
            line_search: LineSearch::None,
            max_line_search_evals: 25,
            guard: true,
            guard_growth: 10.0,
        }
    }
}

/// The point the optimizer stands on, evaluated.
struct Current {
    value: f64,
    grad: Tensor,
    eval: usize,
}

/// Limited-memory BFGS over one image tensor.
pub struct Lbfgs {
    config: LbfgsConfig,
    current: Option<Current>,
    /// Direction and step length of the previous iteration, and the gradient it started from.
    previous: Option<(Tensor, f64, Tensor)>,
    /// Curvature pairs (s, y, 1/yᵀs), oldest first.
    pairs: VecDeque<(Tensor, Tensor, f64)>,
    h_diag: f64,
    iterations: usize,
    evals: usize,
}

impl Lbfgs {
    /// A fresh optimizer.
    pub fn new(config: LbfgsConfig) -> Self {
        Self { config, current: None, previous: None, pairs: VecDeque::new(), h_diag: 1.0, iterations: 0, evals: 0 }
    }

    fn eval(&mut self, f: &mut Closure<'_>, x: &Tensor) -> Result<(f64, Tensor, usize)> {
        let (v, g) = f(x)?;
        let index = self.evals;
        self.evals += 1;
        Ok((v, g, index))
    }

    /// Two-loop recursion: `−H g` with the stored pairs and `H₀ = h_diag · I`. The scalars of
    /// the recursion stay on the device as 0-d tensors (as PyTorch's do), so a GPU step does not
    /// wait on the host once per stored pair.
    fn direction(&self, g: &Tensor) -> Result<Tensor> {
        // On the CPU: in place, one parallel pass per pair (crate::host).
        if let Some(d) = crate::host::direction(g, &self.pairs, self.h_diag)? {
            return Ok(d);
        }
        let mut q = g.neg()?;
        let mut alphas: Vec<Tensor> = Vec::with_capacity(self.pairs.len());
        for (s, y, rho) in self.pairs.iter().rev() {
            let a = (dot_tensor(s, &q)? * *rho)?;
            q = (q - y.broadcast_mul(&a.to_dtype(y.dtype())?)?)?;
            alphas.push(a);
        }
        alphas.reverse();
        let mut r = (q * self.h_diag)?;
        for ((s, y, rho), a) in self.pairs.iter().zip(&alphas) {
            let beta = (dot_tensor(y, &r)? * *rho)?;
            r = (r + s.broadcast_mul(&(a - beta)?.to_dtype(s.dtype())?)?)?;
        }
        Ok(r)
    }
}

/// `⟨a, b⟩` as a 0-d `f64` tensor on the device: the recursion's scalars are combined in
/// double precision (`α − β` cancels), as the host-side version of this code did.
fn dot_tensor(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let a = a.flatten_all()?.unsqueeze(0)?;
    let b = b.flatten_all()?.unsqueeze(1)?;
    Ok(a.matmul(&b)?.reshape(())?.to_dtype(candle_core::DType::F64)?)
}

impl Optimizer for Lbfgs {
    fn evals(&self) -> usize {
        self.evals
    }

    fn state(&self) -> State {
        let mut s = State::default();
        let mut num = |k: &str, v: f64| s.numbers.insert(k.into(), v);
        num("h_diag", self.h_diag);
        num("iterations", self.iterations as f64);
        num("evals", self.evals as f64);
        num("pairs", self.pairs.len() as f64);
        if let Some(c) = &self.current {
            num("current.value", c.value);
            num("current.eval", c.eval as f64);
            s.tensors.insert("current.grad".into(), c.grad.clone());
        }
        if let Some((d, t, g)) = &self.previous {
            s.numbers.insert("previous.t".into(), *t);
            s.tensors.insert("previous.d".into(), d.clone());
            s.tensors.insert("previous.g".into(), g.clone());
        }
        for (i, (sv, y, rho)) in self.pairs.iter().enumerate() {
            s.numbers.insert(format!("pair{i}.rho"), *rho);
            s.tensors.insert(format!("pair{i}.s"), sv.clone());
            s.tensors.insert(format!("pair{i}.y"), y.clone());
        }
        s
    }

    fn restore(&mut self, s: &State) -> Result<()> {
        self.h_diag = s.number("h_diag")?;
        self.iterations = crate::count(s, "iterations")?;
        self.evals = crate::count(s, "evals")?;
        let pairs = crate::count(s, "pairs")?;
        if pairs > self.config.history {
            return Err(Error::State(format!("{pairs} pairs for a history of {}", self.config.history)));
        }
        self.current = match s.tensors.get("current.grad") {
            Some(grad) => Some(Current {
                value: s.number("current.value")?,
                grad: grad.clone(),
                eval: crate::count(s, "current.eval")?,
            }),
            None => None,
        };
        self.previous = match s.tensors.get("previous.d") {
            Some(d) => Some((d.clone(), s.number("previous.t")?, s.tensor("previous.g")?)),
            None => None,
        };
        self.pairs = (0..pairs)
            .map(|i| {
                Ok((
                    s.tensor(&format!("pair{i}.s"))?,
                    s.tensor(&format!("pair{i}.y"))?,
                    s.number(&format!("pair{i}.rho"))?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    fn step(&mut self, x: &mut Tensor, f: &mut Closure<'_>) -> Result<StepReport> {
        let evals_before = self.evals;
        let cur = match self.current.take() {
            Some(c) => c,
            None => {
                let (value, grad, eval) = self.eval(f, x)?;
                if !value.is_finite() {
                    return Err(Error::NonFinite { eval, value });
                }
                Current { value, grad, eval }
            }
        };
        let report = |value: f64, value_eval: usize, evals: usize, converged: bool| StepReport {
            value,
            value_at: ValueAt::After,
            value_eval,
            evals,
            converged,
        };
        if abs_max(&cur.grad)? <= self.config.tolerance_grad {
            let r = report(cur.value, cur.eval, self.evals - evals_before, true);
            self.current = Some(cur);
            return Ok(r);
        }
        self.iterations += 1;
        // Update the memory with the pair of the previous iteration, then the direction.
        let d = match self.previous.take() {
            None => cur.grad.neg()?,
            Some((d_prev, t_prev, g_prev)) => {
                let y = (&cur.grad - &g_prev)?;
                let s = (d_prev * t_prev)?;
                let ys = dot(&y, &s)?;
                if ys > 1e-10 {
                    if self.pairs.len() == self.config.history {
                        self.pairs.pop_front();
                    }
                    let yy = dot(&y, &y)?;
                    self.pairs.push_back((s, y, 1.0 / ys));
                    self.h_diag = ys / yy;
                }
                self.direction(&cur.grad)?
            }
        };
        let mut t = if self.iterations == 1 {
            (1.0f64).min(1.0 / abs_sum(&cur.grad)?) * self.config.lr
        } else {
            self.config.lr
        };
        let gtd = dot(&cur.grad, &d)?;
        if gtd > -self.config.tolerance_change {
            let r = report(cur.value, cur.eval, self.evals - evals_before, true);
            self.current = Some(cur);
            return Ok(r);
        }
        let (value, grad, eval) = match self.config.line_search {
            LineSearch::None => {
                let mut tries = 0;
                loop {
                    let (v, g, e) = self.eval(f, &axpy(x, t, &d)?)?;
                    let explodes = !v.is_finite() || v > self.config.guard_growth * cur.value.abs();
                    if !(self.config.guard && explodes) || tries == 20 {
                        break (v, g, e);
                    }
                    // Guard: the quadratic model overshot; shorten the step.
                    t *= 0.1;
                    tries += 1;
                }
            }
            LineSearch::StrongWolfe => {
                let (v, g, e, t_ls) = strong_wolfe(self, f, x, t, &d, &cur, gtd)?;
                t = t_ls;
                (v, g, e)
            }
        };
        if !value.is_finite() {
            return Err(Error::NonFinite { eval, value });
        }
        let moved = abs_max(&d)? * t;
        *x = axpy(x, t, &d)?;
        let converged =
            moved <= self.config.tolerance_change || (value - cur.value).abs() < self.config.tolerance_change;
        self.previous = Some((d, t, cur.grad));
        self.current = Some(Current { value, grad, eval });
        Ok(report(value, eval, self.evals - evals_before, converged))
    }
}

/// Minimiser of the cubic interpolating `(x1, f1, g1)` and `(x2, f2, g2)`, clamped to
/// `bounds` (default: the interval between the points); the midpoint when the cubic has none.
fn cubic_interpolate(x1: f64, f1: f64, g1: f64, x2: f64, f2: f64, g2: f64, bounds: Option<(f64, f64)>) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        min_pos.max(lo).min(hi)
    } else {
        (lo + hi) / 2.0
    }
}

/// One point of the line search: step, value, gradient, directional derivative, eval index.
#[derive(Clone)]
struct Probe {
    t: f64,
    f: f64,
    g: Tensor,
    gtd: f64,
    eval: usize,
}

/// Strong-Wolfe line search along `d` from `x` (value `cur.value`, slope `gtd`), starting at
/// step `t`: bracketing, then zoom by cubic interpolation (c₁ = 1e-4, c₂ = 0.9, tolerance on the
/// bracket 1e-9, at most `max_line_search_evals` more evaluations), as PyTorch's `_strong_wolfe`.
#[allow(clippy::neg_cmp_op_on_partial_ord)] // `!(a <= b)` is true for NaN, on purpose
fn strong_wolfe(
    opt: &mut Lbfgs,
    f: &mut Closure<'_>,
    x: &Tensor,
    mut t: f64,
    d: &Tensor,
    cur: &Current,
    gtd: f64,
) -> Result<(f64, Tensor, usize, f64)> {
    const C1: f64 = 1e-4;
    const C2: f64 = 0.9;
    const TOLERANCE_CHANGE: f64 = 1e-9;
    let max_ls = opt.config.max_line_search_evals;
    let d_norm = abs_max(d)?;
    let mut probe = |opt: &mut Lbfgs, t: f64| -> Result<Probe> {
        let (v, g, e) = opt.eval(f, &axpy(x, t, d)?)?;
        let gtd = dot(&g, d)?;
        Ok(Probe { t, f: v, g, gtd, eval: e })
    };
    let start = Probe { t: 0.0, f: cur.value, g: cur.grad.clone(), gtd, eval: cur.eval };
    let mut new = probe(opt, t)?;
    let mut shrinks = 0;
    while opt.config.guard && !new.f.is_finite() && shrinks < 20 {
        // Guard: a trial point that overflows says nothing useful to the interpolation.
        t *= 0.1;
        new = probe(opt, t)?;
        shrinks += 1;
    }
    let mut prev = start.clone();
    let mut ls_iter = 0;
    let mut done = false;
    let mut bracket: Vec<Probe>;
    loop {
        if ls_iter >= max_ls {
            bracket = vec![start.clone(), new.clone()];
            break;
        }
        // A non-finite value never satisfies the sufficient-decrease test (NaN compares false).
        if !(new.f <= cur.value + C1 * t * gtd) || (ls_iter > 1 && new.f >= prev.f) {
            bracket = vec![prev.clone(), new.clone()];
            break;
        }
        if new.gtd.abs() <= -C2 * gtd {
            bracket = vec![new.clone()];
            done = true;
            break;
        }
        if new.gtd >= 0.0 {
            bracket = vec![prev.clone(), new.clone()];
            break;
        }
        let min_step = t + 0.01 * (t - prev.t);
        let max_step = t * 10.0;
        let t_next = cubic_interpolate(prev.t, prev.f, prev.gtd, t, new.f, new.gtd, Some((min_step, max_step)));
        prev = new;
        t = t_next;
        new = probe(opt, t)?;
        ls_iter += 1;
    }
    // Zoom: shrink the bracket until a point satisfies the conditions.
    let mut insuf_progress = false;
    let (mut low, mut high) = if bracket.len() == 1 || bracket[0].f <= bracket[1].f { (0, 1) } else { (1, 0) };
    while !done && ls_iter < max_ls && bracket.len() == 2 {
        if (bracket[1].t - bracket[0].t).abs() * d_norm < TOLERANCE_CHANGE {
            break;
        }
        let (b0, b1) = (&bracket[0], &bracket[1]);
        t = cubic_interpolate(b0.t, b0.f, b0.gtd, b1.t, b1.f, b1.gtd, None);
        let (bmin, bmax) = (b0.t.min(b1.t), b0.t.max(b1.t));
        if opt.config.guard && !t.is_finite() {
            t = 0.5 * (bmin + bmax);
        }
        let eps = 0.1 * (bmax - bmin);
        if (bmax - t).min(t - bmin) < eps {
            if insuf_progress || t >= bmax || t <= bmin {
                t = if (t - bmax).abs() < (t - bmin).abs() { bmax - eps } else { bmin + eps };
                insuf_progress = false;
            } else {
                insuf_progress = true;
            }
        } else {
            insuf_progress = false;
        }
        let p = probe(opt, t)?;
        ls_iter += 1;
        if !(p.f <= cur.value + C1 * t * gtd) || p.f >= bracket[low].f {
            bracket[high] = p;
            (low, high) = if bracket[0].f <= bracket[1].f { (0, 1) } else { (1, 0) };
        } else {
            if p.gtd.abs() <= -C2 * gtd {
                done = true;
            } else if p.gtd * (bracket[high].t - bracket[low].t) >= 0.0 {
                bracket[high] = bracket[low].clone();
            }
            bracket[low] = p;
        }
    }
    let best = bracket.swap_remove(if bracket.len() == 1 { 0 } else { low });
    Ok((best.f, best.g, best.eval, best.t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testfns::{quadratic, rosenbrock, start};

    fn run(
        config: LbfgsConfig,
        mut f: impl FnMut(&Tensor) -> Result<(f64, Tensor)>,
        x0: &[f32],
        steps: usize,
    ) -> (Vec<f32>, f64) {
        let mut opt = Lbfgs::new(config);
        let mut x = start(x0);
        let mut last = f64::NAN;
        for _ in 0..steps {
            let r = opt.step(&mut x, &mut f).unwrap();
            last = r.value;
            if r.converged {
                break;
            }
        }
        (x.to_vec1::<f32>().unwrap(), last)
    }

    #[test]
    fn minimises_rosenbrock_with_and_without_line_search() {
        for ls in [LineSearch::None, LineSearch::StrongWolfe] {
            let cfg = LbfgsConfig { line_search: ls, history: 10, ..Default::default() };
            let (x, v) = run(cfg, rosenbrock(1.0), &[-1.2, 1.0, -1.2, 1.0], 200);
            assert!(v < 1e-6, "{ls:?}: {v}");
            assert!(x.iter().all(|xi| (xi - 1.0).abs() < 1e-2), "{ls:?}: {x:?}");
        }
    }

    #[test]
    fn minimises_a_quadratic_scaled_by_1e12() {
        for ls in [LineSearch::None, LineSearch::StrongWolfe] {
            let cfg = LbfgsConfig { line_search: ls, ..Default::default() };
            let x0: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
            let (x, v) = run(cfg, quadratic(1e12), &x0, 100);
            assert!(v < 1e12 * 1e-8, "{ls:?}: {v}");
            assert!(x.iter().all(|xi| (xi - 1.0).abs() < 1e-3), "{ls:?}");
        }
    }
}
