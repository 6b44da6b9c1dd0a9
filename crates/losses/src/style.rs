//! The style term of one layer in its three forms, over the whole image or a guided region
//! (Gatys et al. 2017, §4), each with its gradient.
//!
//! Notation for one layer: `F` the output's activation as an `N × M` matrix (`N` channels, `M`
//! positions), `g ∈ [0, 1]^M` the region's guide at this layer (all ones without one), its mass
//! `m = Σ g`, and the region's statistics, weighted by `g`:
//! `μ = F g / m`, `S = F diag(g) Fᵀ / m` (the second moment; `G = m S` the guided Gram matrix,
//! `F diag(g) Fᵀ`, which for a binary guide is Gatys 2017's `(F ∘ T)(F ∘ T)ᵀ`) and
//! `Σ = S − μ μᵀ`. The target's (`μₜ`, `Sₜ`, `Σₜ`) are the same statistics of the style image
//! over its own guide, blended by weight as a mixture (means and second moments averaged).
//!
//! Each region's term is multiplied by `λ = m / M`, its share of the image, so that one region
//! covering the image is exactly the unguided term, and a partition into regions of one style
//! adds up to at least the unguided term (by convexity). With `w` the layer's weight and `k(N)`
//! the loss form's per-position factor (`1/N⁴` in `seed` and `jcjohnson`, `1/(4N²)` in `paper`):
//!
//! | `style_loss`   | value                                                   |
//! |----------------|---------------------------------------------------------|
//! | `gram`         | `λ w k(N) ‖S − Sₜ‖²`, i.e. the form's `c(N, m) ‖G − m Sₜ‖²` |
//! | `mean_cov`     | `λ w k(N) (‖μ − μₜ‖² + ‖Σ − Σₜ‖²)`                       |
//! | `wasserstein`  | `λ w W₂² / N`, `W₂² = ‖μ − μₜ‖² + tr Σ̃ + tr Σ̃ₜ − 2 tr (Σ̃ₜ^½ Σ̃ Σ̃ₜ^½)^½` |
//!
//! with `Σ̃ = Σ + εI`, `ε = 10⁻⁴ tr Σₜ / N` (a ten-thousandth of the style's mean variance, so
//! the regularisation is the same at every layer whatever its scale). `W₂²` is the squared
//! 2-Wasserstein distance between the Gaussians `N(μ, Σ̃)` and `N(μₜ, Σ̃ₜ)`; divided by `N` as in
//! crowsonkb/style-transfer-pytorch (a mean over channels), in every loss form: its scale is
//! not a Gram matrix's, so it needs its own style weight (see docs/controls.md).
//!
//! Gradients, with `C = F − μ 1ᵀ` (centred features) and `D_μ = μ − μₜ`:
//! * `gram`: `∂/∂F = 4 λ w c (G − m Sₜ) F diag(g)`.
//! * `mean_cov`: with `D_Σ = Σ − Σₜ`, `∂/∂μ ‖D_μ‖² = 2 D_μ`, `∂/∂Σ ‖D_Σ‖² = 2 D_Σ`, and
//!   through `Σ = F diag(g) Fᵀ/m − μμᵀ`, `μ = F g / m`:
//!   `∂/∂F = λ w k [2 D_μ gᵀ + 4 D_Σ C diag(g)] / m`.
//! * `wasserstein`: with `B = Σ̃ₜ^½` and `K = B Σ̃ B`, `d tr K^½ = ½ tr(K^{-½} dK)`, so
//!   `∂W₂²/∂Σ = I − B K^{-½} B =: E` (symmetric) and
//!   `∂/∂F = λ w [2 D_μ gᵀ + 2 E C diag(g)] / (m N)`.
//!
//! The matrix square roots are exact eigendecompositions in `f64` ([`crate::linalg`]), not
//! Newton–Schulz iterations: covariances of ReLU features are singular up to `ε` (dead channels,
//! fewer positions than channels at `relu5_1`), where a fixed number of Newton–Schulz steps has
//! not converged on the small eigenvalues and `K^{-½}`, which the gradient needs, is far off;
//! the eigendecomposition gives both roots to rounding. It costs 0.14 s for a 512 × 512 matrix
//! here (2-core Xeon), once per evaluation at each of `relu4_1` and `relu5_1`.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};

use crate::linalg::SymEigen;
use crate::products;
use crate::{Error, LossForm, Result};

/// How a style layer's statistics are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StyleLoss {
    /// Squared distance of Gram matrices (the 2016 paper's).
    #[default]
    Gram,
    /// Squared distance of the feature means plus of the covariances.
    MeanCov,
    /// Squared 2-Wasserstein distance between Gaussians fitted to the features.
    Wasserstein,
}

impl StyleLoss {
    /// Every style loss, for listing valid values.
    pub const ALL: [StyleLoss; 3] = [StyleLoss::Gram, StyleLoss::MeanCov, StyleLoss::Wasserstein];

    /// The name used in specs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            StyleLoss::Gram => "gram",
            StyleLoss::MeanCov => "mean_cov",
            StyleLoss::Wasserstein => "wasserstein",
        }
    }
}

impl fmt::Display for StyleLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StyleLoss {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        StyleLoss::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let valid: Vec<&str> = StyleLoss::ALL.iter().map(|l| l.name()).collect();
            Error::Config(format!("unknown style loss `{s}` (valid: {})", valid.join(", ")))
        })
    }
}

/// The guided statistics of one layer per unit of guide mass: `μ = F g / m`, `(N)`, and
/// `S = F diag(g) Fᵀ / m`, `(N, N)`.
#[derive(Clone, Debug)]
pub struct Moments {
    /// The mean of the features, `(N)`.
    pub mean: Tensor,
    /// The second raw moment of the features, `(N, N)`.
    pub second: Tensor,
}

impl Moments {
    /// The moments of activations `f`, `(1, N, H, W)`, weighted by `guide`, `(1, 1, H, W)`
    /// (`None`: every position), and the guide's mass `m` (`None` when it is below
    /// [`MIN_MASS`]: the region is absent at this layer).
    pub fn of(f: &Tensor, guide: Option<&Tensor>) -> Result<Option<(Self, f64)>> {
        let Some(x) = Weighted::of(f, guide)? else { return Ok(None) };
        Ok(Some((x.moments()?, x.mass)))
    }

    /// The covariance `S − μ μᵀ`, `(N, N)`.
    pub fn covariance(&self) -> Result<Tensor> {
        let mu = self.mean.unsqueeze(1)?;
        Ok((&self.second - mu.matmul(&mu.t()?)?)?)
    }

    /// The mixture `Σ wᵢ · momentsᵢ / Σ wᵢ`.
    pub fn blend(parts: &[(Moments, f64)]) -> Result<Self> {
        let total: f64 = parts.iter().map(|(_, w)| w).sum();
        if parts.is_empty() || total <= 0.0 {
            return Err(Error::Config("a blend needs moments with weights summing to more than 0".into()));
        }
        let (first, w0) = &parts[0];
        let mut mean = (&first.mean * (w0 / total))?;
        let mut second = (&first.second * (w0 / total))?;
        for (m, w) in &parts[1..] {
            mean = (mean + (&m.mean * (w / total))?)?;
            second = (second + (&m.second * (w / total))?)?;
        }
        Ok(Self { mean, second })
    }
}

/// The activations of one layer as an `(N, M)` matrix `F` (M positions), `F diag(g)`, and the
/// guide's mass `m`.
struct Weighted {
    flat: Tensor,
    weighted: Tensor,
    mass: f64,
}

impl Weighted {
    /// `f` is `(1, N, H, W)`, `guide` `(1, 1, H, W)` (`None`: every position); `None` when the
    /// mass is below [`MIN_MASS`].
    fn of(f: &Tensor, guide: Option<&Tensor>) -> Result<Option<Self>> {
        let (_, n, h, w) = f.dims4()?;
        let flat = f.reshape((n, h * w))?;
        let (weighted, mass) = match guide {
            None => (flat.clone(), (h * w) as f64),
            Some(g) => {
                check_guide(g, h, w)?;
                let g = g.reshape((1, h * w))?;
                (flat.broadcast_mul(&g)?, g.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?)
            }
        };
        Ok((mass >= MIN_MASS).then_some(Self { flat, weighted, mass }))
    }

    /// `S = F diag(g) Fᵀ / m`, `(N, N)`.
    fn second(&self) -> Result<Tensor> {
        Ok((products::a_bt(&self.weighted, &self.flat)? / self.mass)?)
    }

    /// `μ = F g / m` and `S`.
    fn moments(&self) -> Result<Moments> {
        let mean = (self.weighted.sum(1)? / self.mass)?;
        Ok(Moments { mean, second: self.second()? })
    }
}

/// Guide mass below which a region counts as absent from a layer (a region that a guide's
/// down-sampling has reduced to nothing contributes no term, rather than dividing by zero).
pub const MIN_MASS: f64 = 1e-3;

fn check_guide(g: &Tensor, h: usize, w: usize) -> Result<()> {
    let (b, c, gh, gw) = g.dims4()?;
    if (b, c, gh, gw) != (1, 1, h, w) {
        return Err(Error::Config(format!("a guide of shape {:?} for a layer of {h} × {w} positions", g.dims())));
    }
    Ok(())
}

/// A region's style target at one layer, prepared for its loss.
#[derive(Clone, Debug)]
pub struct StyleTarget {
    moments: Moments,
    /// `Σₜ` (`mean_cov`).
    cov: Option<Tensor>,
    /// `B = Σ̃ₜ^½` in `f64`, `tr Σ̃ₜ` and `ε` (`wasserstein`).
    w2: Option<(Tensor, f64, f64)>,
}

impl StyleTarget {
    /// The target for `loss` from the style's blended moments.
    pub fn new(moments: Moments, loss: StyleLoss) -> Result<Self> {
        let (cov, w2) = match loss {
            StyleLoss::Gram => (None, None),
            StyleLoss::MeanCov => (Some(moments.covariance()?), None),
            StyleLoss::Wasserstein => {
                let cov = moments.covariance()?.to_dtype(DType::F64)?;
                let n = cov.dim(0)?;
                let tr = trace(&cov)?;
                let eps = (1e-4 * tr / n as f64).max(1e-8);
                let reg = (cov + identity(n, eps, moments.mean.device())?)?;
                let eig = eigen(&reg)?;
                let b = from_host(&eig.apply(|x| x.max(0.0).sqrt()), n, moments.mean.device())?;
                (None, Some((b, tr + n as f64 * eps, eps)))
            }
        };
        Ok(Self { moments, cov, w2 })
    }

    /// The blended moments.
    pub fn moments(&self) -> &Moments {
        &self.moments
    }
}

/// The trace of an `(N, N)` matrix, summed where it lives (no copy of the matrix to the host).
fn trace(a: &Tensor) -> Result<f64> {
    let eye = Tensor::eye(a.dim(0)?, a.dtype(), a.device())?;
    Ok((a * eye)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn identity(n: usize, scale: f64, device: &candle_core::Device) -> Result<Tensor> {
    Ok((Tensor::eye(n, DType::F64, device)? * scale)?)
}

fn eigen(a: &Tensor) -> Result<SymEigen> {
    let n = a.dim(0)?;
    let host = a.to_device(&candle_core::Device::Cpu)?.flatten_all()?.to_vec1::<f64>()?;
    SymEigen::new(&host, n)
}

fn from_host(v: &[f64], n: usize, device: &candle_core::Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, (n, n), device)?)
}

/// The style term of one layer for one region, times the layer weight `w`, and its gradient
/// with respect to `f`, times `w · grad_scale` (the objective's style weight is applied to the
/// small `(N, N)` factors before their product with the activation, so that no second
/// activation-sized tensor is made to scale the gradient).
///
/// `f` is the output's activation `(1, N, H, W)`, `guide` the region's guide `(1, 1, H, W)`
/// (`None`: the whole image), `target` the region's target. Returns `None` when the region is
/// absent at this layer. See the module documentation for the formulas.
pub fn style_term(
    f: &Tensor,
    guide: Option<&Tensor>,
    target: &StyleTarget,
    loss: StyleLoss,
    form: LossForm,
    w: f64,
    grad_scale: f64,
) -> Result<Option<(Tensor, Tensor)>> {
    let (b, n, h, wd) = f.dims4()?;
    if b != 1 {
        return Err(Error::Config(format!("the style term takes one image, not a batch of {b}")));
    }
    let positions = (h * wd) as f64;
    let Some(x) = Weighted::of(f, guide)? else {
        return Ok(None);
    };
    let mass = x.mass;
    let lambda = mass / positions;
    let weighted = |v: &Tensor| -> Result<Tensor> {
        Ok(match guide {
            None => v.clone(),
            Some(g) => v.broadcast_mul(&g.reshape((1, h * wd))?)?,
        })
    };
    let t = &target.moments;
    let (value, grad) = match loss {
        StyleLoss::Gram => {
            // c(N, m) ‖G − m Sₜ‖² with G = m S, scaled by λ. Without the mean, which only the
            // other losses need (1 of an evaluation's 100 ms at 160×120).
            let c = lambda * w * form.style_factor_f64(n, mass);
            let d = ((x.second()? - &t.second)? * mass)?;
            let value = (d.sqr()?.sum_all()? * c)?;
            (value, products::mul(&(d * (4.0 * c * grad_scale))?, &x.weighted)?)
        }
        StyleLoss::MeanCov => {
            let m = x.moments()?;
            let k = lambda * w * form.style_factor_f64(n, positions) * positions * positions;
            let cov_t = target.cov.as_ref().ok_or_else(|| Error::Config("no covariance target".into()))?;
            let d_mu = (&m.mean - &t.mean)?;
            let d_cov = (m.covariance()? - cov_t)?;
            let value = ((d_mu.sqr()?.sum_all()? + d_cov.sqr()?.sum_all()?)? * k)?;
            let centred = x.flat.broadcast_sub(&m.mean.unsqueeze(1)?)?;
            let grad = mean_grad(&d_mu, guide, h * wd, 2.0 * k / mass * grad_scale)?;
            let grad = (grad + products::mul(&(d_cov * (4.0 * k / mass * grad_scale))?, &weighted(&centred)?)?)?;
            (value, grad)
        }
        StyleLoss::Wasserstein => {
            let m = x.moments()?;
            let (value, e) = wasserstein(&m, target, n)?;
            let k = lambda * w / n as f64;
            let d_mu = (&m.mean - &t.mean)?;
            let centred = x.flat.broadcast_sub(&m.mean.unsqueeze(1)?)?;
            let grad = mean_grad(&d_mu, guide, h * wd, 2.0 * k / mass * grad_scale)?;
            let grad = (grad + products::mul(&(e * (2.0 * k / mass * grad_scale))?, &weighted(&centred)?)?)?;
            ((value * k)?, grad)
        }
    };
    Ok(Some((value, grad.reshape((1, n, h, wd))?)))
}

/// `scale · D_μ gᵀ`, `(N, M)`.
fn mean_grad(d_mu: &Tensor, guide: Option<&Tensor>, positions: usize, scale: f64) -> Result<Tensor> {
    let n = d_mu.dim(0)?;
    let col = (d_mu.unsqueeze(1)? * scale)?;
    Ok(match guide {
        None => col.broadcast_as((n, positions))?.contiguous()?,
        Some(g) => col.broadcast_mul(&g.reshape((1, positions))?)?,
    })
}

/// `W₂²` (0-d) and `E = ∂W₂²/∂Σ = I − B K^{-½} B` (`(N, N)`), in the features' dtype.
fn wasserstein(m: &Moments, target: &StyleTarget, n: usize) -> Result<(Tensor, Tensor)> {
    let (b, tr_t, eps) = target.w2.as_ref().ok_or_else(|| Error::Config("no Wasserstein target".into()))?;
    let device = m.mean.device();
    let cov = (m.covariance()?.to_dtype(DType::F64)? + identity(n, *eps, device)?)?;
    let tr = trace(&cov)?;
    let k = b.matmul(&cov)?.matmul(b)?;
    let eig = eigen(&k)?;
    // K is positive definite up to rounding; clamp what rounding made negative.
    let floor = eig.values.last().copied().unwrap_or(0.0).max(0.0) * 1e-14 + f64::MIN_POSITIVE;
    let root_trace: f64 = eig.values.iter().map(|&l| l.max(0.0).sqrt()).sum();
    // B K^{-½} B = P P ᵀ with P = B V diag(λ^{-¼}).
    let vt = from_host(&eig.vectors, n, device)?;
    let quarter: Vec<f64> = eig.values.iter().map(|&l| l.max(floor).powf(-0.25)).collect();
    let p = b.matmul(&vt.t()?)?.broadcast_mul(&Tensor::from_slice(&quarter, (1, n), device)?)?;
    let e = (Tensor::eye(n, DType::F64, device)? - p.matmul(&p.t()?)?)?;
    let d_mu = (&m.mean - &target.moments.mean)?.to_dtype(DType::F64)?;
    let mean_term = d_mu.sqr()?.sum_all()?.to_scalar::<f64>()?;
    let value = mean_term + tr + tr_t - 2.0 * root_trace;
    let dtype = m.mean.dtype();
    Ok((Tensor::new(value, device)?.to_dtype(dtype)?, e.to_dtype(dtype)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    fn random(shape: &[usize], seed: u64, lo: f32) -> Tensor {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0).max(lo)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn target(seed: u64, guide: Option<&Tensor>, loss: StyleLoss) -> StyleTarget {
        let s = (random(&[1, 6, 4, 5], seed, -0.3) + 0.3).unwrap();
        let (m, _) = Moments::of(&s, guide).unwrap().unwrap();
        StyleTarget::new(m, loss).unwrap()
    }

    /// Central differences along random directions against ⟨grad, v⟩, all in `f64` (the
    /// module runs in the features' dtype), so that rounding does not hide an error.
    fn check(f: &Tensor, loss: impl Fn(&Tensor) -> (Tensor, Tensor), tol: f64) -> f64 {
        let (_, grad) = loss(f);
        let mut worst = 0.0f64;
        for seed in 0..4 {
            let v = random(f.dims(), 100 + seed, -1.0).to_dtype(DType::F64).unwrap();
            // The terms are quartic in F and ‖v‖ ≈ 11, so the truncation error of central
            // differences is ~ (eps ‖v‖)² relative: 1e-8 at this step, rounding ~1e-11.
            let eps = 1e-5;
            let at = |s: f64| loss(&(f + (&v * s).unwrap()).unwrap()).0.to_scalar::<f64>().unwrap();
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            let analytic = (&grad * &v).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
            let err = (numeric - analytic).abs() / numeric.abs().max(analytic.abs()).max(1e-6);
            worst = worst.max(err);
            assert!(err < tol, "numeric {numeric} vs analytic {analytic}");
        }
        worst
    }

    /// Every loss, form and guide: the gradient equals the finite differences of the value.
    #[test]
    fn every_style_loss_gradient_matches_finite_differences() {
        let f64 = |t: Tensor| t.to_dtype(DType::F64).unwrap();
        // Full rank, and fewer positions than channels (a singular covariance, as at relu5_1).
        for (k, shape) in [[1, 6, 4, 5], [1, 8, 2, 3]].into_iter().enumerate() {
            let seed = 10 * k as u64;
            let f = f64((random(&shape, seed + 1, -0.3) + 0.3).unwrap());
            let soft = f64(random(&[1, 1, shape[2], shape[3]], seed + 2, -1.0).abs().unwrap());
            let s = f64((random(&[1, shape[1], 4, 5], seed + 3, -0.3) + 0.3).unwrap());
            for loss in StyleLoss::ALL {
                let t = StyleTarget::new(Moments::of(&s, None).unwrap().unwrap().0, loss).unwrap();
                for form in LossForm::ALL {
                    for guide in [None, Some(&soft)] {
                        let worst = check(
                            &f,
                            |x| style_term(x, guide, &t, loss, form, 0.7, 1.0).unwrap().unwrap(),
                            // Central differences in f64 (see `check`): measured worst in the
                            // closing note of issue 13.
                            1e-6,
                        );
                        let g = guide.is_some();
                        eprintln!("{shape:?} {loss} {form} guided={g}: worst relative error {worst:.1e}");
                    }
                }
            }
        }
    }

    #[test]
    fn unguided_gram_term_is_the_2016_style_loss() {
        let f = random(&[1, 6, 3, 5], 3, -0.3);
        let s = random(&[1, 6, 3, 5], 4, -0.3);
        let a = crate::gram(&s).unwrap().squeeze(0).unwrap();
        let t = StyleTarget::new(Moments::of(&s, None).unwrap().unwrap().0, StyleLoss::Gram).unwrap();
        for form in LossForm::ALL {
            let (v1, g1) = crate::style_loss(&f, &a, form, 0.7).unwrap();
            let (v2, g2) = style_term(&f, None, &t, StyleLoss::Gram, form, 0.7, 1.0).unwrap().unwrap();
            let (v1, v2) = (v1.to_scalar::<f32>().unwrap(), v2.to_scalar::<f32>().unwrap());
            assert!((v1 - v2).abs() <= 1e-5 * v1.abs(), "{form}: {v1} vs {v2}");
            let dg = (g1 - g2).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(dg < 1e-6, "{form}: {dg}");
        }
    }

    #[test]
    fn grad_scale_scales_the_gradient_and_not_the_value() {
        let f = (random(&[1, 6, 4, 5], 11, -0.3) + 0.3).unwrap();
        for loss in StyleLoss::ALL {
            let t = target(6, None, loss);
            let (v1, g1) = style_term(&f, None, &t, loss, LossForm::Seed, 0.7, 1.0).unwrap().unwrap();
            let (v2, g2) = style_term(&f, None, &t, loss, LossForm::Seed, 0.7, 250.0).unwrap().unwrap();
            assert_eq!(v1.to_scalar::<f32>().unwrap(), v2.to_scalar::<f32>().unwrap(), "{loss:?}");
            let scaled = (g1 * 250.0).unwrap();
            let e = (&scaled - &g2).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let m = scaled.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(m > 0.0 && e <= 1e-5 * m, "{loss:?}: {e} of {m}");
        }
    }

    #[test]
    fn a_full_guide_is_no_guide_and_a_partition_adds_up_to_at_least_the_whole() {
        let f = (random(&[1, 6, 4, 5], 5, -0.3) + 0.3).unwrap();
        let ones = Tensor::ones((1, 1, 4, 5), DType::F32, &Device::Cpu).unwrap();
        let left =
            Tensor::from_vec((0..20).map(|i| if i % 5 < 2 { 1f32 } else { 0. }).collect(), (1, 1, 4, 5), &Device::Cpu)
                .unwrap();
        let right = (&ones - &left).unwrap();
        let value = |g: Option<&Tensor>, t: &StyleTarget, loss| {
            style_term(&f, g, t, loss, LossForm::Seed, 1.0, 1.0).unwrap().unwrap().0.to_scalar::<f32>().unwrap() as f64
        };
        for loss in StyleLoss::ALL {
            let t = target(6, None, loss);
            let whole = value(None, &t, loss);
            assert!((value(Some(&ones), &t, loss) - whole).abs() <= 1e-5 * whole, "{loss}");
            let parts = value(Some(&left), &t, loss) + value(Some(&right), &t, loss);
            assert!(parts >= whole * (1.0 - 1e-5), "{loss}: {parts} < {whole}");
        }
        // A region that vanished at this layer contributes nothing.
        let t = target(6, None, StyleLoss::Gram);
        let zero = ones.zeros_like().unwrap();
        assert!(style_term(&f, Some(&zero), &t, StyleLoss::Gram, LossForm::Seed, 1.0, 1.0).unwrap().is_none());
    }

    #[test]
    fn wasserstein_of_a_distribution_to_itself_is_zero_and_names_round_trip() {
        let s = (random(&[1, 6, 4, 5], 7, -0.3) + 0.3).unwrap();
        let t = target(7, None, StyleLoss::Wasserstein);
        let (v, _) = style_term(&s, None, &t, StyleLoss::Wasserstein, LossForm::Seed, 1.0, 1.0).unwrap().unwrap();
        let scale = Moments::of(&s, None).unwrap().unwrap().0.covariance().unwrap().abs().unwrap().max_all().unwrap();
        let (v, scale) = (v.to_scalar::<f32>().unwrap(), scale.to_scalar::<f32>().unwrap());
        assert!(v.abs() < 1e-5 * scale, "{v} vs scale {scale}");
        for l in StyleLoss::ALL {
            assert_eq!(l.name().parse::<StyleLoss>().unwrap(), l);
        }
        assert!("gramm".parse::<StyleLoss>().unwrap_err().to_string().contains("mean_cov"));
    }
}
