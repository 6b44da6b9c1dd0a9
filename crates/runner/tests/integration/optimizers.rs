//! L-BFGS against torch.optim.LBFGS's traces on the real objective, and on the badly scaled
//! `paper` form where PyTorch's blows up in float32.

use candle_core::Tensor;
use losses::{LossForm, Objective};
use optim::{Lbfgs, LbfgsConfig, LineSearch, Optimizer};
use vgg::ConvAlgorithm;

use crate::helpers::*;

/// Runs L-BFGS from the fixture's x0 until `evals` evaluations (or a step that converged without
/// evaluating); returns every evaluation's value and the value at each iterate x_k (k = 0 …).
fn trace(
    alg: ConvAlgorithm,
    x0: &str,
    form: LossForm,
    config: LbfgsConfig,
    evals: usize,
) -> (Vec<f64>, Vec<f64>, Tensor) {
    let (v, i, x, err) = try_trace(alg, x0, form, config, evals);
    if let Some(e) = err {
        panic!("L-BFGS failed: {e}");
    }
    (v, i, x)
}

/// Like `trace`, stopping at the first error and returning it, or at a step that made no
/// evaluation (converged: every later call would return the same).
fn try_trace(
    alg: ConvAlgorithm,
    x0: &str,
    form: LossForm,
    config: LbfgsConfig,
    evals: usize,
) -> (Vec<f64>, Vec<f64>, Tensor, Option<String>) {
    let net = net(alg);
    let cfg = fixture_config(form);
    let targets = fixture_targets(&net, &cfg);
    let obj = Objective::new(&net, cfg, targets).unwrap();
    let mut values = Vec::new();
    let mut iterates = Vec::new();
    let mut x = t(x0);
    let mut opt = Lbfgs::new(config);
    while opt.evals() < evals {
        let mut f = |x: &Tensor| -> optim::Result<(f64, Tensor)> {
            let e = obj.evaluate(x).map_err(|e| optim::Error::Objective(Box::new(e)))?;
            values.push(e.terms.total);
            Ok((e.terms.total, e.grad))
        };
        let r = match opt.step(&mut x, &mut f) {
            Ok(r) => r,
            Err(e) => return (values, iterates, x, Some(e.to_string())),
        };
        if iterates.is_empty() {
            iterates.push(values[0]);
        }
        iterates.push(r.value);
        if r.evals == 0 {
            // A step that stopped without evaluating (converged) does so again at every call:
            // end here, or this loop, which counts evaluations, would never end.
            break;
        }
    }
    (values, iterates, x, None)
}

fn sci(v: &[f64]) -> Vec<String> {
    v.iter().map(|x| format!("{x:.6e}")).collect()
}

/// The first evaluations of L-BFGS hinge on the curvature of a step of 1e-4 pixel levels, a
/// difference of two nearly equal gradients: they amplify any float32 rounding of the gradient
/// about 3000-fold. The equivalence with PyTorch is therefore checked with candle's direct
/// convolution (gradient within 5e-7 of float64); the Winograd path (gradient within 3e-6) is
/// held to 4% on the first evaluations. Not 1%, as it was: where a pre-activation is a tie
/// (within 1e-5 of its layer's largest value, `fixture::winograd_relu_masks_differ_only_at_ties`)
/// float32 rounding decides its ReLU mask, and the backward pass then differs around it. At x0
/// on the AVX2 path with conv1_1 computed directly (2026-12-01), three such ties (conv2_1,
/// conv2_2 and conv3_2, |pre-activation| at most 7.2e-4 against layer maxima of 2.6e3–5.7e3)
/// fell the other way from candle's: the gradient moved 7.6e-4 from PyTorch's (within the 1e-3
/// of `fixture::check_losses_and_gradient`), most in the image region under them, and
/// evaluations 2–4 moved 1.4e-2, 3.0e-2 and 5.4e-3 (AVX-512, no flipped tie: 4.9e-4, 6.2e-4,
/// 1.4e-3).
///
/// Over the whole trace no float32 run follows the float64 one closely, PyTorch's included:
/// `scripts/lbfgs_float32_drift.py` (torch 2.15, this trace in float32 with 1 and 2 threads,
/// whose summation orders differ) measured PyTorch's float32 runs at up to 1.8e-3 from its
/// float64 trace in the first five evaluations and up to 5.6% (1 thread; 3.3% with 2) over the
/// 30, where they cross one another (at the 30th evaluation 0.9% and 0.01%). A point check at
/// the 30th evaluation (2% until gemm's AVX-512 kernels, whose rounding put ours at 3.1%)
/// therefore tests the rounding, not the optimizer; every evaluation is held to PyTorch's own
/// float32 envelope instead, 6%, with either convolution.
#[test]
fn lbfgs_without_line_search_follows_torch() {
    let want = list("lbfgs.seed.none.evals");
    for (alg, first5, all) in [(ConvAlgorithm::Candle, 1e-3, 0.06), (ConvAlgorithm::Fast, 4e-2, 0.06)] {
        let (got, _, x) = trace(alg, "x0", LossForm::Seed, LbfgsConfig::default(), want.len());
        let got = &got[..want.len()];
        let rels: Vec<f64> = got.iter().zip(&want).map(|(a, b)| rel(*a, *b)).collect();
        let shown: Vec<String> = rels.iter().map(|r| format!("{r:.1e}")).collect();
        eprintln!("none, {alg:?}: first 5 evaluations {:?} (torch {:?})", sci(&got[..5]), sci(&want[..5]));
        eprintln!("none, {alg:?}: relative difference per evaluation {shown:?}");
        eprintln!(
            "none, {alg:?}: 30th evaluation {:.6e} vs torch {:.6e}; x after 30 steps {:.2e} from torch's",
            got[29],
            want[29],
            rel_err(&x, &t("lbfgs.seed.none.x_final"))
        );
        for i in 0..5 {
            assert!(rels[i] < first5, "{alg:?} evaluation {i}: {} vs torch {}", got[i], want[i]);
        }
        for (i, r) in rels.iter().enumerate() {
            assert!(*r < all, "{alg:?} evaluation {i}: {} vs torch {} ({r:.1e})", got[i], want[i]);
        }
    }
}

#[test]
fn lbfgs_with_strong_wolfe_follows_torch() {
    // PyTorch re-evaluates the current point at each step() call (max_iter = 1); ours keeps it.
    // Its trace is [f(x0), trial, f(x1) again, trial, f(x2) again, …]: the even entries are the
    // iterates. With max_iter = 1 its search may make no evaluation after the first trial
    // (max_ls = max_eval − 1 = 0), so the trial is kept only if lower: the same setting here.
    let want_evals = list("lbfgs.seed.strong_wolfe.evals");
    assert_eq!(want_evals.len(), 60);
    let want: Vec<f64> = want_evals.iter().step_by(2).copied().collect();
    let cfg = LbfgsConfig { line_search: LineSearch::StrongWolfe, max_line_search_evals: 0, ..Default::default() };
    let (evals, got, _) = trace(ConvAlgorithm::Candle, "x0", LossForm::Seed, cfg, 30);
    let n = want.len().min(got.len()) - 1;
    let rels: Vec<String> = got.iter().zip(&want).map(|(a, b)| format!("{:.1e}", rel(*a, *b))).collect();
    eprintln!("strong wolfe: first 5 iterates {:?} (torch {:?})", sci(&got[..5]), sci(&want[..5]));
    eprintln!("strong wolfe: relative difference per iterate {rels:?}");
    eprintln!(
        "strong wolfe: iterate {n}: {:.6e} vs torch {:.6e}, {} evaluations (torch: 60)",
        got[n],
        want[n],
        evals.len()
    );
    for k in 0..5 {
        assert!(rel(got[k], want[k]) < 1e-3, "iterate {k}: {} vs torch {}", got[k], want[k]);
    }
    // A trial is kept only if lower: the iterates never rise.
    for k in 1..got.len() {
        assert!(got[k] <= got[k - 1], "iterate {k} rose: {} after {}", got[k], got[k - 1]);
    }
    // From iterate 20 on, PyTorch's float64 run is stuck: its trial point is higher and its
    // search may not shrink it (its trace repeats 48192448.75 / 48315035.39). Where a float32
    // run gets stuck depends on its rounding: PyTorch's own float32 runs of this trace end 0.6%
    // (2 threads) and 29% (1 thread) from the float64 one and pass through points up to 69% away
    // (scripts/lbfgs_float32_drift.py); ours, with gemm's AVX-512 kernels, sticks at 7.9e7, 64%
    // above. What is checked past the first iterates is that it got there: below a fifth of the
    // start (PyTorch: 4.8e7 from 6.8e8).
    assert!(got[n] < 0.2 * got[0], "iterate {n}: {} from {}", got[n], got[0]);
}

/// The `paper` form started from the content image (values near 9e12): PyTorch's L-BFGS
/// overflows float32 on its second step and never recovers (measured with torch 2.15: `inf`
/// then NaN without line search; stuck at the start with strong Wolfe). The guarded one
/// converges with either line search; unguarded, it reproduces PyTorch's failure.
#[test]
fn lbfgs_converges_on_the_badly_scaled_paper_form() {
    for ls in [LineSearch::None, LineSearch::StrongWolfe] {
        let cfg = LbfgsConfig { line_search: ls, ..Default::default() };
        let (values, iterates, _) = trace(ConvAlgorithm::Fast, "content.preprocessed", LossForm::Paper, cfg, 40);
        let (start, end) = (iterates[0], *iterates.last().unwrap());
        eprintln!("paper, {ls:?}, guarded: {start:.3e} -> {end:.3e} in {} evaluations", values.len());
        assert!(end.is_finite() && end < start * 0.2, "{ls:?}: {start} -> {end}");
    }
    let plain = LbfgsConfig { guard: false, ..Default::default() };
    let (values, _, _, err) = try_trace(ConvAlgorithm::Fast, "content.preprocessed", LossForm::Paper, plain, 10);
    eprintln!("paper, unguarded: {:?} {err:?}", values.iter().map(|v| format!("{v:.3e}")).collect::<Vec<_>>());
    assert!(values.iter().any(|v| !v.is_finite()) || err.is_some(), "the unguarded run did not overflow: {values:?}");
}
