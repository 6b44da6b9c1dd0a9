//! Adam (Kingma & Ba, 2015) over an image, as neural-style's `-optimizer adam`.

use candle_core::Tensor;

use crate::{Closure, Error, Optimizer, Result, State, StepReport, ValueAt};

/// Adam settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    /// Step size, in the units of the image (neural-style's default 10, for 0–255 pixels).
    pub lr: f64,
    /// Decay of the first moment (0.9).
    pub beta1: f64,
    /// Decay of the second moment (0.999).
    pub beta2: f64,
    /// Added to the denominator (1e-8).
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 10.0, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// Adam with bias correction; one step is one evaluation.
pub struct Adam {
    config: AdamConfig,
    m: Option<Tensor>,
    v: Option<Tensor>,
    t: i32,
    evals: usize,
}

impl Adam {
    /// A fresh optimizer.
    pub fn new(config: AdamConfig) -> Self {
        Self { config, m: None, v: None, t: 0, evals: 0 }
    }
}

impl Optimizer for Adam {
    fn evals(&self) -> usize {
        self.evals
    }

    fn state(&self) -> State {
        let mut s = State::default();
        s.numbers.insert("t".into(), f64::from(self.t));
        s.numbers.insert("evals".into(), self.evals as f64);
        for (k, v) in [("m", &self.m), ("v", &self.v)] {
            if let Some(v) = v {
                s.tensors.insert(k.into(), v.clone());
            }
        }
        s
    }

    fn restore(&mut self, s: &State) -> Result<()> {
        self.t = i32::try_from(crate::count(s, "t")?).map_err(|_| Error::State("`t` is too large".into()))?;
        self.evals = crate::count(s, "evals")?;
        self.m = s.tensors.get("m").cloned();
        self.v = s.tensors.get("v").cloned();
        Ok(())
    }

    fn step(&mut self, x: &mut Tensor, f: &mut Closure<'_>) -> Result<StepReport> {
        let (value, g) = f(x)?;
        let eval = self.evals;
        self.evals += 1;
        if !value.is_finite() {
            return Err(Error::NonFinite { eval, value });
        }
        let c = &self.config;
        self.t += 1;
        let m = match &self.m {
            Some(m) => ((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?,
            None => (&g * (1.0 - c.beta1))?,
        };
        let v = match &self.v {
            Some(v) => ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?,
            None => (g.sqr()? * (1.0 - c.beta2))?,
        };
        let m_hat_scale = 1.0 / (1.0 - c.beta1.powi(self.t));
        let v_hat_scale = 1.0 / (1.0 - c.beta2.powi(self.t));
        let denom = ((&v * v_hat_scale)?.sqrt()? + c.eps)?;
        let update = ((&m * (c.lr * m_hat_scale))? / denom)?;
        *x = (&*x - update)?;
        self.m = Some(m);
        self.v = Some(v);
        Ok(StepReport { value, value_at: ValueAt::Before, value_eval: eval, evals: 1, converged: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testfns::{quadratic, rosenbrock, start};

    fn run(lr: f64, mut f: impl FnMut(&Tensor) -> Result<(f64, Tensor)>, x0: &[f32], steps: usize) -> Vec<f32> {
        let mut opt = Adam::new(AdamConfig { lr, ..Default::default() });
        let mut x = start(x0);
        for _ in 0..steps {
            opt.step(&mut x, &mut f).unwrap();
        }
        x.to_vec1::<f32>().unwrap()
    }

    #[test]
    fn minimises_rosenbrock() {
        let x = run(0.02, rosenbrock(1.0), &[-1.2, 1.0], 20000);
        assert!(x.iter().all(|xi| (xi - 1.0).abs() < 2e-2), "{x:?}");
    }

    #[test]
    fn minimises_a_quadratic_scaled_by_1e12() {
        // Adam's step is invariant to the scale of the objective.
        let x0: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let x = run(0.05, quadratic(1e12), &x0, 3000);
        assert!(x.iter().all(|xi| (xi - 1.0).abs() < 1e-2), "{x:?}");
    }
}
