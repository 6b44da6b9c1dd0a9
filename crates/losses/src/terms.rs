//! The three loss terms, each with its gradient. Values are 0-d `f32` tensors left on the
//! device, so that an evaluation moves all its scalars to the host at once.

use candle_core::{DType, Tensor};

use crate::{LossForm, Result};

/// Gram matrices `G = F Fᵀ` of activations `f` of shape `(B, N, H, W)`: `(B, N, N)`,
/// unnormalised.
pub fn gram(f: &Tensor) -> Result<Tensor> {
    let (b, n, h, w) = f.dims4()?;
    let f = f.reshape((b, n, h * w))?;
    Ok(f.matmul(&f.t()?)?)
}

/// Content loss of one layer and its gradient with respect to `f`.
///
/// `f` and `p` are `(B, N, H, W)`; `seed`/`jcjohnson`: `mean((F − P)²)`, gradient
/// `2 (F − P) / numel`; `paper`: `½ Σ(F − P)²`, gradient `F − P`.
pub fn content_loss(f: &Tensor, p: &Tensor, form: LossForm) -> Result<(Tensor, Tensor)> {
    let d = (f - p)?;
    let c = form.content_factor(f.elem_count());
    let value = (d.sqr()?.sum_all()? * c)?;
    let grad = (d * (2.0 * c))?;
    Ok((value, grad))
}

/// Style loss of one layer, times its layer weight `w`, and its gradient with respect to `f`.
///
/// `f` is `(B, N, H, W)`, `a` the target Gram matrix `(N, N)` (for images of the same number
/// of positions `M = H·W`). With `c` the form's factor (see [`LossForm`]):
/// `E = w · c · Σ(G − A)²` and `∂E/∂F = 4 w c (G − A) F`, since `G` is symmetric.
pub fn style_loss(f: &Tensor, a: &Tensor, form: LossForm, w: f64) -> Result<(Tensor, Tensor)> {
    let (b, n, h, wd) = f.dims4()?;
    let c = w * form.style_factor(n, h * wd);
    let g = gram(f)?;
    let d = g.broadcast_sub(a)?;
    let value = (d.sqr()?.sum_all()? * c)?;
    let grad = d.matmul(&f.reshape((b, n, h * wd))?)?.reshape((b, n, h, wd))?;
    Ok((value, (grad * (4.0 * c))?))
}

/// Total variation of images `x` of shape `(B, C, H, W)` and its gradient:
/// `Σ (x[i, j+1] − x[i, j])² + Σ (x[i+1, j] − x[i, j])²` over every channel (squared,
/// anisotropic, unnormalised; the weight sets the scale).
pub fn tv_loss(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (_, _, h, w) = x.dims4()?;
    let mut value = Tensor::zeros((), DType::F32, x.device())?;
    let mut grad = x.zeros_like()?;
    for (dim, len) in [(3usize, w), (2usize, h)] {
        if len < 2 {
            continue;
        }
        let d = (x.narrow(dim, 1, len - 1)? - x.narrow(dim, 0, len - 1)?)?;
        value = (value + d.sqr()?.sum_all()?)?;
        let d2 = (d * 2.0)?;
        grad = ((grad + d2.pad_with_zeros(dim, 1, 0)?)? - d2.pad_with_zeros(dim, 0, 1)?)?;
    }
    Ok((value, grad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0).max(-0.3)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Central finite differences in f64 of a loss along random directions vs the analytic
    /// directional derivative ⟨grad, v⟩.
    fn check(f: &Tensor, loss: impl Fn(&Tensor) -> (Tensor, Tensor)) {
        let (_, grad) = loss(f);
        for seed in 0..3 {
            let v = random(f.dims(), 100 + seed);
            let eps = 1e-2;
            let plus = loss(&(f + (&v * eps).unwrap()).unwrap()).0.to_scalar::<f32>().unwrap() as f64;
            let minus = loss(&(f - (&v * eps).unwrap()).unwrap()).0.to_scalar::<f32>().unwrap() as f64;
            let numeric = (plus - minus) / (2.0 * eps);
            let analytic = (&grad * &v).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
            let scale = numeric.abs().max(analytic.abs()).max(1e-6);
            assert!((numeric - analytic).abs() / scale < 2e-3, "numeric {numeric} vs analytic {analytic}");
        }
    }

    #[test]
    fn content_gradient_matches_finite_differences() {
        let f = random(&[1, 4, 5, 7], 1);
        let p = random(&[1, 4, 5, 7], 2);
        for form in LossForm::ALL {
            check(&f, |x| content_loss(x, &p, form).unwrap());
        }
    }

    #[test]
    fn style_gradient_matches_finite_differences() {
        let f = random(&[1, 6, 3, 5], 3);
        let a = gram(&random(&[1, 6, 3, 5], 4)).unwrap().squeeze(0).unwrap();
        for form in LossForm::ALL {
            check(&f, |x| style_loss(x, &a, form, 0.7).unwrap());
        }
    }

    #[test]
    fn tv_gradient_matches_finite_differences() {
        check(&random(&[1, 3, 6, 4], 5), |x| tv_loss(x).unwrap());
        check(&random(&[2, 1, 1, 5], 6), |x| tv_loss(x).unwrap());
    }

    #[test]
    fn gram_is_unnormalised_and_batched() {
        let f = Tensor::arange(0f32, 12., &Device::Cpu).unwrap().reshape((2, 2, 1, 3)).unwrap();
        let g = gram(&f).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(g[0], vec![vec![5., 14.], vec![14., 50.]]);
        assert_eq!(g[1][0][0], 36. + 49. + 64.);
    }

    #[test]
    fn forms_scale_as_documented() {
        let f = random(&[1, 4, 5, 7], 7);
        let p = f.zeros_like().unwrap();
        let ss: f64 = f.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let paper = content_loss(&f, &p, LossForm::Paper).unwrap().0.to_scalar::<f32>().unwrap() as f64;
        let seed = content_loss(&f, &p, LossForm::Seed).unwrap().0.to_scalar::<f32>().unwrap() as f64;
        assert!((paper - 0.5 * ss).abs() < 1e-4 * ss);
        assert!((seed - ss / 140.0).abs() < 1e-6 * ss);
    }
}
