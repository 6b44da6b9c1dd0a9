//! Colour control (Gatys, Ecker, Bethge, Hertzmann and Shechtman, "Controlling Perceptual
//! Factors in Neural Style Transfer", CVPR 2017, §5), on images before and after the
//! optimisation:
//!
//! * **Luminance-only transfer** (§5.1): content and style become their luminance `Y` of YIQ
//!   (NTSC: `Y = 0.299 R + 0.587 G + 0.114 B`), the style's luminance is matched in mean and
//!   standard deviation to the content's, the transfer runs on these grey images, and the
//!   output keeps the result's `Y` with the photograph's `I` and `Q` (its chrominance).
//! * **Colour histogram matching** (§5.2): before the transfer, each style pixel `x` becomes
//!   `A (x − μₛ) + μ_c`, where `μ` are the RGB means and `A = Σ_c^½ Σₛ^{-½}` with symmetric
//!   matrix square roots of the RGB covariances (the paper's "image analogies" variant; its
//!   Cholesky variant gives another `A` with the same covariance), so that the style's colours
//!   have the photograph's mean and covariance.

use image::{Rgb, RgbImage};
use losses::linalg::SymEigen;

use crate::params::ColorControl;
use crate::{Error, Result};

/// RGB → YIQ (NTSC 1953), rows `Y`, `I`, `Q`.
const TO_YIQ: [[f64; 3]; 3] = [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]];

fn mul(m: &[[f64; 3]; 3], x: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|i| m[i][0] * x[0] + m[i][1] * x[1] + m[i][2] * x[2])
}

/// The inverse of a 3 × 3 matrix (by cofactors; only called on [`TO_YIQ`], which is invertible).
fn inverse(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let c = |i: usize, j: usize| {
        let (r0, r1) = ((i + 1) % 3, (i + 2) % 3);
        let (c0, c1) = ((j + 1) % 3, (j + 2) % 3);
        m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]
    };
    let det = m[0][0] * c(0, 0) + m[0][1] * c(0, 1) + m[0][2] * c(0, 2);
    [0, 1, 2].map(|i| [0, 1, 2].map(|j| c(j, i) / det))
}

fn pixel(p: &Rgb<u8>) -> [f64; 3] {
    p.0.map(f64::from)
}

fn to_u8(x: [f64; 3]) -> Rgb<u8> {
    Rgb(x.map(|v| v.round().clamp(0.0, 255.0) as u8))
}

/// The luminance `Y` of every pixel, as a grey RGB image.
pub fn luminance(img: &RgbImage) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let l = mul(&TO_YIQ, pixel(img.get_pixel(x, y)))[0];
        to_u8([l; 3])
    })
}

/// Mean and standard deviation of the luminance of a grey image.
fn moments(grey: &RgbImage) -> (f64, f64) {
    let (mean, cov) = rgb_moments(grey);
    (mean[0], cov[0].sqrt())
}

/// The style's luminance with the content's luminance mean and standard deviation (both grey
/// images from [`luminance`]).
pub fn match_luminance(style: &RgbImage, content: &RgbImage) -> RgbImage {
    let (ms, ss) = moments(style);
    let (mc, sc) = moments(content);
    let gain = if ss > 0.0 { sc / ss } else { 1.0 };
    RgbImage::from_fn(style.width(), style.height(), |x, y| {
        let l = (f64::from(style.get_pixel(x, y).0[0]) - ms) * gain + mc;
        to_u8([l; 3])
    })
}

/// RGB mean and covariance (3 × 3, row-major) of an image.
fn rgb_moments(img: &RgbImage) -> ([f64; 3], [f64; 9]) {
    let n = (img.width() as f64 * img.height() as f64).max(1.0);
    let mut mean = [0.0; 3];
    for p in img.pixels() {
        for (m, v) in mean.iter_mut().zip(pixel(p)) {
            *m += v / n;
        }
    }
    let mut cov = [0.0; 9];
    for p in img.pixels() {
        let d = [0, 1, 2].map(|i| pixel(p)[i] - mean[i]);
        for i in 0..3 {
            for j in 0..3 {
                cov[i * 3 + j] += d[i] * d[j] / n;
            }
        }
    }
    (mean, cov)
}

/// The style image with the content image's RGB mean and covariance (§5.2).
pub fn match_histogram(style: &RgbImage, content: &RgbImage) -> Result<RgbImage> {
    let (ms, cs) = rgb_moments(style);
    let (mc, cc) = rgb_moments(content);
    // A small ridge keeps a flat style (one colour: a singular covariance) finite.
    let ridge = |c: [f64; 9]| {
        let mut c = c;
        for i in 0..3 {
            c[i * 4] += 1e-3;
        }
        c
    };
    let es = SymEigen::new(&ridge(cs), 3).map_err(|e| Error::Run(format!("colour matching: {e}")))?;
    let ec = SymEigen::new(&ridge(cc), 3).map_err(|e| Error::Run(format!("colour matching: {e}")))?;
    let inv_root_s = es.apply(|l| 1.0 / l.max(1e-12).sqrt());
    let root_c = ec.apply(|l| l.max(0.0).sqrt());
    let mut a = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            a[i][j] = (0..3).map(|k| root_c[i * 3 + k] * inv_root_s[k * 3 + j]).sum();
        }
    }
    Ok(RgbImage::from_fn(style.width(), style.height(), |x, y| {
        let d = [0, 1, 2].map(|i| pixel(style.get_pixel(x, y))[i] - ms[i]);
        let t = mul(&a, d);
        to_u8([0, 1, 2].map(|i| t[i] + mc[i]))
    }))
}

/// What a run does to its images for its colour control.
#[derive(Clone, Debug)]
pub enum Colour {
    /// Nothing.
    Keep,
    /// Luminance-only transfer: the photograph (at the output's size) gives the chrominance.
    Luminance(RgbImage),
    /// The style images are matched to the photograph (at the output's size).
    Histogram(RgbImage),
}

impl Colour {
    /// The control `c` for a photograph `content` at the output's size (`None`: no content
    /// image, which the parameter rules refuse for any control but `none`).
    pub fn new(c: ColorControl, content: Option<&RgbImage>) -> Result<Self> {
        let need = || content.cloned().ok_or_else(|| Error::Run("colour control needs a content image".into()));
        Ok(match c {
            ColorControl::None => Colour::Keep,
            ColorControl::Luminance => Colour::Luminance(need()?),
            ColorControl::Histogram => Colour::Histogram(need()?),
        })
    }

    /// A content or starting image as the optimisation sees it.
    pub fn input(&self, img: &RgbImage) -> RgbImage {
        match self {
            Colour::Luminance(_) => luminance(img),
            Colour::Keep | Colour::Histogram(_) => img.clone(),
        }
    }

    /// A style image as the optimisation sees it.
    pub fn style(&self, img: &RgbImage) -> Result<RgbImage> {
        match self {
            Colour::Keep => Ok(img.clone()),
            Colour::Luminance(c) => Ok(match_luminance(&luminance(img), &luminance(c))),
            Colour::Histogram(c) => match_histogram(img, c),
        }
    }

    /// The output image from the optimisation's result.
    pub fn output(&self, img: RgbImage) -> RgbImage {
        match self {
            Colour::Luminance(c) if c.dimensions() == img.dimensions() => {
                let from_yiq = inverse(&TO_YIQ);
                RgbImage::from_fn(img.width(), img.height(), |x, y| {
                    let l = mul(&TO_YIQ, pixel(img.get_pixel(x, y)))[0];
                    let yiq = mul(&TO_YIQ, pixel(c.get_pixel(x, y)));
                    to_u8(mul(&from_yiq, [l, yiq[1], yiq[2]]))
                })
            }
            _ => img,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(w: u32, h: u32, seed: u64, tint: [u8; 3]) -> RgbImage {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        RgbImage::from_fn(w, h, |_, _| Rgb([0, 1, 2].map(|i| rng.random_range(0..=128u8).saturating_add(tint[i]))))
    }

    #[test]
    fn yiq_round_trips_and_luminance_output_keeps_the_photographs_colours() {
        let inv = inverse(&TO_YIQ);
        let back = mul(&inv, mul(&TO_YIQ, [10.0, 200.0, 77.0]));
        assert!(back.iter().zip([10.0, 200.0, 77.0]).all(|(a, b)| (a - b).abs() < 1e-9), "{back:?}");
        // The photograph's own luminance recombined with its chrominance is the photograph.
        let photo = random(7, 5, 1, [60, 20, 0]);
        let c = Colour::Luminance(photo.clone());
        let out = c.output(c.input(&photo));
        let worst =
            photo.pixels().zip(out.pixels()).flat_map(|(a, b)| (0..3).map(move |i| a.0[i].abs_diff(b.0[i]))).max();
        // Rounding Y to a byte, then back to RGB: at most 2 levels.
        assert!(worst <= Some(2), "{worst:?}");
        // A grey result takes the photograph's hue.
        let out = c.output(RgbImage::from_pixel(7, 5, Rgb([128; 3])));
        assert!(out.pixels().any(|p| p.0[0] != p.0[2]));
    }

    #[test]
    fn histogram_matching_gives_the_photographs_mean_and_covariance() {
        let style = random(13, 9, 2, [100, 0, 30]);
        let photo = random(11, 8, 3, [0, 90, 10]);
        let (mc, cc) = rgb_moments(&photo);
        let (mm, cm) = rgb_moments(&match_histogram(&style, &photo).unwrap());
        assert!(mc.iter().zip(mm).all(|(a, b)| (a - b).abs() < 1.0), "{mc:?} {mm:?}");
        // Rounding to bytes and clipping move the covariance a little.
        assert!(cc.iter().zip(cm).all(|(a, b)| (a - b).abs() < 0.03 * cc[0].max(cc[4]).max(cc[8])), "{cc:?} {cm:?}");
        // A one-colour style stays finite.
        let flat = RgbImage::from_pixel(4, 4, Rgb([200, 10, 10]));
        assert!(match_histogram(&flat, &photo).is_ok());
    }

    #[test]
    fn luminance_matching_gives_the_photographs_luminance_moments() {
        let s = luminance(&random(13, 9, 4, [120, 0, 0]));
        let c = luminance(&random(11, 8, 5, [0, 0, 40]));
        let (mc, sc) = moments(&c);
        let (mm, sm) = moments(&match_luminance(&s, &c));
        assert!((mc - mm).abs() < 0.6 && (sc - sm).abs() < 0.6, "{mc} {sc} vs {mm} {sm}");
    }
}
