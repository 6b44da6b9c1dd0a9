//! Whether a run that finished produced something worth its status `ok`: a loss that grew, an
//! optimizer that stopped before its iterations, or an output that is constant or mostly
//! saturated are recorded as such (`diverged: …`, `stopped early: …`, `degenerate: …`).

use image::RgbImage;

use super::optimise::{Stop, Trace};

/// The share of channel values at 0 or 255 above which an output is called saturated. A
/// photograph or painting has a few percent; white-noise starts clipped by a huge `noise_std`,
/// or a loss scaled into overflow, have most.
pub const MAX_SATURATED: f64 = 0.5;

/// Why the result is suspect, or `None` when it is fine.
pub(super) fn verdict(trace: &Trace, planned: usize, image: &RgbImage) -> Option<String> {
    let values = image.as_raw();
    let (lo, hi) = values.iter().fold((u8::MAX, u8::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    if hi.saturating_sub(lo) <= 2 {
        return Some(format!("degenerate: the output is a constant image (every value in {lo}…{hi})"));
    }
    let saturated = values.iter().filter(|v| **v == 0 || **v == 255).count() as f64 / values.len().max(1) as f64;
    if saturated > MAX_SATURATED {
        return Some(format!(
            "degenerate: {:.0}% of the output's values are saturated at 0 or 255 (more than {:.0}%)",
            100.0 * saturated,
            100.0 * MAX_SATURATED
        ));
    }
    // Losses at different sizes differ in scale: the last stage's rows are compared.
    let last_scale = trace.rows.last().map(|r| r.scale);
    let first = trace.rows.iter().find(|r| Some(r.scale) == last_scale);
    if let (Some(first), Some(last)) = (first, trace.rows.last()) {
        if last.terms.total > first.terms.total {
            return Some(format!("diverged: the loss grew from {:.4e} to {:.4e}", first.terms.total, last.terms.total));
        }
    }
    if trace.stop == Stop::Converged && trace.iterations < planned {
        return Some(format!(
            "stopped early: the optimizer could not move after {} of {planned} iterations (zero gradient or step)",
            trace.iterations
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::optimise::LossRow;

    fn trace(totals: &[f64], stop: Stop) -> Trace {
        let rows = totals
            .iter()
            .enumerate()
            .map(|(i, t)| LossRow {
                iteration: i,
                scale: 64,
                evals: i + 1,
                seconds: 0.0,
                terms: losses::Terms {
                    total: *t,
                    content: 0.0,
                    style: 0.0,
                    tv: 0.0,
                    content_layers: vec![],
                    style_layers: vec![],
                },
            })
            .collect::<Vec<_>>();
        let x = candle_core::Tensor::zeros((1, 3, 2, 2), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let output_terms = rows.last().map(|r| r.terms.clone()).unwrap_or_default();
        Trace { stop, rows, iterations: totals.len() - 1, evals: totals.len(), seconds: 0.0, x, output_terms }
    }

    /// A varied image: a gradient with no saturated values.
    fn image() -> RgbImage {
        RgbImage::from_fn(16, 8, |x, y| image::Rgb([(10 + 10 * x) as u8, (20 + 20 * y) as u8, 128]))
    }

    #[test]
    fn each_kind_of_suspect_result_is_named() {
        assert_eq!(verdict(&trace(&[10.0, 5.0, 1.0], Stop::Completed), 2, &image()), None);
        let v = verdict(&trace(&[10.0, 50.0], Stop::Completed), 1, &image()).unwrap();
        assert!(v.starts_with("diverged: the loss grew from 1.0000e1 to 5.0000e1"), "{v}");
        let v = verdict(&trace(&[10.0, 5.0], Stop::Converged), 5, &image()).unwrap();
        assert!(v.starts_with("stopped early") && v.contains("1 of 5"), "{v}");
        assert_eq!(verdict(&trace(&[10.0, 5.0], Stop::MaxEvals), 5, &image()), None, "a budget reached is no fault");
        let flat = RgbImage::from_pixel(8, 8, image::Rgb([7, 8, 9]));
        assert!(verdict(&trace(&[2.0, 1.0], Stop::Completed), 1, &flat).unwrap().contains("constant"));
        let clipped =
            RgbImage::from_fn(8, 8, |x, _| if x < 5 { image::Rgb([0, 255, 0]) } else { image::Rgb([9, 99, 199]) });
        assert!(verdict(&trace(&[2.0, 1.0], Stop::Completed), 1, &clipped).unwrap().contains("saturated"));
    }
}
