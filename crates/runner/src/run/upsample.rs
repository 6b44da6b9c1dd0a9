//! Resizing image-shaped float tensors between the stages of a coarse-to-fine run: the iterate
//! (bicubic, as crowsonkb's `F.interpolate(mode='bicubic')`, but with Keys' a = −½, Catmull–Rom,
//! which reproduces linear and quadratic ramps exactly where PyTorch's a = −¾ bends them by a few
//! percent) and Adam's moments (bilinear, which keeps the second moment non-negative). In float, on the host: an 8-bit image would round the
//! iterate, and the `image` crate clamps float pixels to 0 … 1.
//!
//! Sample positions are PyTorch's with `align_corners=False`: output pixel `i` of `n` reads the
//! source at `(i + ½) · m / n − ½`; taps beyond the border repeat the edge pixel.

use candle_core::Tensor;

use crate::Result;

/// The interpolation kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Filter {
    /// Linear in each direction: 2 taps, weights in 0 … 1.
    Bilinear,
    /// Keys' cubic convolution with a = −½ (Catmull–Rom): 4 taps.
    Bicubic,
}

/// Keys' cubic kernel with a = −½ at distance `t`.
fn cubic(t: f64) -> f64 {
    const A: f64 = -0.5;
    let t = t.abs();
    if t <= 1.0 {
        ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0
    } else if t < 2.0 {
        ((A * t - 5.0 * A) * t + 8.0 * A) * t - 4.0 * A
    } else {
        0.0
    }
}

/// For each of `n` output positions, the source indices (clamped to `0 … m−1`) and weights.
fn taps(filter: Filter, m: usize, n: usize) -> Vec<Vec<(usize, f32)>> {
    let clamp = |i: i64| i.clamp(0, m as i64 - 1) as usize;
    (0..n)
        .map(|i| {
            let x = (i as f64 + 0.5) * m as f64 / n as f64 - 0.5;
            match filter {
                Filter::Bilinear => {
                    let x = x.max(0.0);
                    let x0 = x.floor();
                    let t = x - x0;
                    vec![(clamp(x0 as i64), (1.0 - t) as f32), (clamp(x0 as i64 + 1), t as f32)]
                }
                Filter::Bicubic => {
                    let x0 = x.floor();
                    let t = x - x0;
                    (-1..=2).map(|k| (clamp(x0 as i64 + k), cubic(t - k as f64) as f32)).collect()
                }
            }
        })
        .collect()
}

/// `planes` of `h × w` each, resized to `height × width` with `filter`, plane by plane.
fn resize_planes(planes: &[f32], (w, h): (usize, usize), (width, height): (usize, usize), filter: Filter) -> Vec<f32> {
    let (tx, ty) = (taps(filter, w, width), taps(filter, h, height));
    let count = planes.len() / (w * h).max(1);
    let mut out = vec![0f32; count * width * height];
    let mut rows = vec![0f32; h * width];
    for (src, dst) in planes.chunks_exact(w * h).zip(out.chunks_exact_mut(width * height)) {
        for (y, row) in rows.chunks_exact_mut(width).enumerate() {
            let line = &src[y * w..(y + 1) * w];
            for (o, t) in row.iter_mut().zip(&tx) {
                *o = t.iter().map(|&(i, c)| c * line[i]).sum();
            }
        }
        for (y, t) in ty.iter().enumerate() {
            let o = &mut dst[y * width..(y + 1) * width];
            o.fill(0.0);
            for &(i, c) in t {
                for (a, b) in o.iter_mut().zip(&rows[i * width..(i + 1) * width]) {
                    *a += c * b;
                }
            }
        }
    }
    out
}

/// `x` of shape `(N, C, H, W)` resized to `(N, C, height, width)` with `filter`, on its device.
pub(super) fn resize(x: &Tensor, (width, height): (u32, u32), filter: Filter) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (width, height) = (width as usize, height as usize);
    if (w, h) == (width, height) {
        return Ok(x.clone());
    }
    let host = x.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
    let out = resize_planes(&host, (w, h), (width, height), filter);
    Ok(Tensor::from_vec(out, (n, c, height, width), x.device())?.to_dtype(x.dtype())?)
}

/// Adam's state after a stage, for the next stage of `(width, height)`: its moments resized
/// (bilinear), its step count kept (the bias correction goes on), its evaluation count
/// restarted (the run counts the stages' evaluations itself).
pub(super) fn carry_adam_state(state: &optim::State, size: (u32, u32)) -> Result<optim::State> {
    let mut out = state.clone();
    for t in out.tensors.values_mut() {
        *t = resize(t, size, Filter::Bilinear)?;
    }
    out.numbers.insert("evals".into(), 0.0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn constants_and_ramps_survive_and_shapes_follow_the_target() {
        let dev = Device::Cpu;
        let c = Tensor::full(3.5f32, (1, 3, 5, 7), &dev).unwrap();
        for f in [Filter::Bilinear, Filter::Bicubic] {
            let r = resize(&c, (10, 14), f).unwrap();
            assert_eq!(r.dims(), [1, 3, 14, 10]);
            assert!(values(&r).iter().all(|v| (v - 3.5).abs() < 1e-5), "{f:?}");
        }
        // A horizontal ramp x: doubling samples it at (i + ½)/2 − ½ = i/2 − ¼, exactly for both
        // kernels where no tap reaches past the border (Keys' kernel with a = −½ reproduces
        // polynomials up to degree 2; PyTorch's a = −¾ gives 1.703 for 1.75 here).
        let w = 8;
        let ramp: Vec<f32> = (0..2 * w).map(|i| (i % w) as f32).collect();
        let t = Tensor::from_vec(ramp, (1, 1, 2, w), &dev).unwrap();
        for f in [Filter::Bilinear, Filter::Bicubic] {
            let r = values(&resize(&t, (2 * w as u32, 4), f).unwrap());
            for (i, v) in r.iter().enumerate().take(2 * w - 4).skip(4) {
                let want = i as f32 / 2.0 - 0.25;
                assert!((v - want).abs() < 1e-5, "{f:?} at {i}: {v} vs {want}");
            }
        }
    }

    #[test]
    fn bilinear_keeps_second_moments_non_negative_where_bicubic_would_not() {
        let dev = Device::Cpu;
        // A spike: bicubic rings below zero next to it, bilinear cannot.
        let mut v = vec![0f32; 16];
        v[5] = 1.0;
        let t = Tensor::from_vec(v, (1, 1, 4, 4), &dev).unwrap();
        assert!(values(&resize(&t, (11, 11), Filter::Bilinear).unwrap()).iter().all(|x| *x >= 0.0));
        assert!(values(&resize(&t, (11, 11), Filter::Bicubic).unwrap()).iter().any(|x| *x < -1e-4));
        let mut s = optim::State::default();
        s.tensors.insert("v".into(), t);
        s.numbers.insert("t".into(), 12.0);
        s.numbers.insert("evals".into(), 12.0);
        let carried = carry_adam_state(&s, (8, 6)).unwrap();
        assert_eq!(carried.tensors["v"].dims(), [1, 1, 6, 8]);
        assert_eq!((carried.numbers["t"], carried.numbers["evals"]), (12.0, 0.0));
    }
}
