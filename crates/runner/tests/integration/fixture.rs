//! The network and the objective against PyTorch's float64 values (fixture README: features and
//! Gram matrices within 1e-4 relative, losses within 1e-4, gradients within 1e-3).

use candle_core::{Device, Tensor, Var};
use losses::{LossForm, Objective};
use vgg::{ConvAlgorithm, Layer, Preprocessing};

use crate::helpers::*;

#[test]
fn preprocessing_equals_the_fixture() {
    for name in ["content", "style"] {
        let img = vgg::imageio::load_rgb(&fixture_dir().join(format!("{name}_64x48.png"))).unwrap();
        assert_eq!(img.dimensions(), (64, 48));
        let x = Preprocessing::Caffe.to_tensor(&img, &Device::Cpu).unwrap();
        let e = rel_err(&x, &t(&format!("{name}.preprocessed")));
        assert!(e < 1e-6, "{name}: {e}");
    }
}

#[test]
fn every_layer_matches_pytorch_within_1e4() {
    let x = t("content.preprocessed");
    for alg in [ConvAlgorithm::Fast, ConvAlgorithm::Winograd2x2, ConvAlgorithm::Candle] {
        let f = net(alg).features(&x, &Layer::all()).unwrap();
        assert_eq!(f.len(), 37);
        let mut report = Vec::new();
        let mut worst: f64 = 0.0;
        for (l, got) in &f {
            let e = rel_err(got, &t(&format!("content.{l}")));
            worst = worst.max(e);
            report.push(format!("{l} {e:.1e}"));
            assert!(e < 1e-4, "{alg:?} {l}: relative error {e}");
        }
        eprintln!("{alg:?}: worst {worst:.2e}; {}", report.join(", "));
    }
}

#[test]
fn style_grams_match_pytorch() {
    let net = net(ConvAlgorithm::Fast);
    let layers: Vec<Layer> = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"].map(layer).to_vec();
    let f = net.features(&t("style.preprocessed"), &layers).unwrap();
    for l in layers {
        let g = losses::gram(&f[&l]).unwrap().squeeze(0).unwrap();
        let e = rel_err(&g, &t(&format!("style.gram.{l}")));
        eprintln!("gram {l}: {e:.2e}");
        assert!(e < 1e-4, "{l}: {e}");
    }
}

fn check_losses_and_gradient(form: LossForm, alg: ConvAlgorithm) {
    let net = net(alg);
    let config = fixture_config(form);
    let targets = fixture_targets(&net, &config);
    let obj = Objective::new(&net, config, targets).unwrap();
    let e = obj.evaluate(&t("x0")).unwrap();
    let f = form.name();
    let tol = 1e-4;
    let total = rel(e.terms.total, scalar(&format!("x0.{f}.loss.total")));
    let content = rel(e.terms.content, scalar(&format!("x0.{f}.loss.content")));
    assert!(total < tol && content < tol, "{f} {alg:?}: total {total:.2e}, content {content:.2e}");
    for (l, v) in &e.terms.style_layers {
        let r = rel(*v, scalar(&format!("x0.{f}.loss.style.{l}")));
        assert!(r < tol, "{f} {alg:?}: style {l} {r:.2e}");
    }
    let g = rel_err(&e.grad, &t(&format!("x0.{f}.grad.total")));
    eprintln!("{f} {alg:?}: total {total:.2e}, content {content:.2e}, gradient {g:.2e}");
    assert!(g < 1e-3, "{f} {alg:?}: gradient relative error {g}");
    // The value-only path agrees with the evaluation.
    let terms = obj.terms(&t("x0")).unwrap();
    assert!(rel(terms.total, e.terms.total) < 1e-6);
}

#[test]
fn seed_form_losses_and_gradient_match_pytorch() {
    check_losses_and_gradient(LossForm::Seed, ConvAlgorithm::Fast);
    // The generic path (candle's conv2d, as on GPUs) computes the same gradient.
    check_losses_and_gradient(LossForm::Seed, ConvAlgorithm::Candle);
}

#[test]
fn paper_form_losses_and_gradient_match_pytorch() {
    check_losses_and_gradient(LossForm::Paper, ConvAlgorithm::Fast);
}

/// The layers probed by the backward tests: a conv, a relu and a pool output, across blocks 1–3.
fn probed_layers() -> Vec<Layer> {
    ["conv1_2", "relu2_1", "pool2", "relu3_1", "conv3_2"].map(layer).to_vec()
}

/// A seeded non-square image `(1, 3, 40, 28)` and seeded probes `R_l` for every probed layer:
/// the loss Σ_l ⟨R_l, F_l⟩ has gradient R_l with respect to F_l.
fn seeded_image_and_probes(net: &vgg::Vgg19) -> (Tensor, std::collections::BTreeMap<Layer, Tensor>) {
    let x = seeded_normal(11, 40.0, &[1, 3, 40, 28]);
    let feats = net.features(&x, &probed_layers()).unwrap();
    let probes =
        feats.iter().enumerate().map(|(i, (l, f))| (*l, seeded_normal(100 + i as u64, 1.0, f.dims()))).collect();
    (x, probes)
}

/// The hand-written backward pass against candle's autograd through the same operations, on a
/// seeded non-square image, with gradients injected at conv, relu and pool layers. Both use
/// candle's convolution (`ConvAlgorithm::Candle`), so their ReLU masks and max-pool winners are
/// the same bit for bit and the comparison measures only the backward pass (the Winograd path
/// is checked against this one below). Pooling is written as a max over a reshape here:
/// candle's `max_pool2d` backward multiplies the gradient by (number of maxima)/4 instead of
/// dividing by the number of maxima.
#[test]
fn hand_written_backward_equals_candle_autograd() {
    let dev = Device::Cpu;
    let layers = probed_layers();
    let direct = net(ConvAlgorithm::Candle);
    let (x, probes) = seeded_image_and_probes(&direct);
    let (_, tape) = direct.forward_tape(&x, &layers).unwrap();
    let ours = direct.backward(&tape, probes.clone()).unwrap();
    // Autograd through candle ops with the same weights.
    let var = Var::from_tensor(&x).unwrap();
    let w = weights();
    let mut cur = var.as_tensor().clone();
    let mut loss = Tensor::zeros((), candle_core::DType::F32, &dev).unwrap();
    let deepest = *layers.iter().max().unwrap();
    for (c, cw) in vgg::ConvId::all().zip(w.convs()) {
        let y = cur
            .conv2d(&cw.weight.tensor().unwrap(), 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&cw.bias.reshape((1, (), 1, 1)).unwrap())
            .unwrap();
        if let Some(r) = probes.get(&Layer::Conv(c)) {
            loss = (loss + (&y * r).unwrap().sum_all().unwrap()).unwrap();
        }
        let r = y.relu().unwrap();
        if let Some(p) = probes.get(&Layer::Relu(c)) {
            loss = (loss + (&r * p).unwrap().sum_all().unwrap()).unwrap();
        }
        cur = r;
        if c.ends_block() {
            let (n, ch, h, w) = cur.dims4().unwrap();
            cur = cur.reshape((n, ch, h / 2, 2, w / 2, 2)).unwrap().max(5).unwrap().max(3).unwrap();
            if let Some(p) = probes.get(&Layer::Pool(c.block() as u8)) {
                loss = (loss + (&cur * p).unwrap().sum_all().unwrap()).unwrap();
            }
        }
        if Layer::Relu(c) >= deepest {
            break;
        }
    }
    let grads = loss.backward().unwrap();
    let reference = grads.get(var.as_tensor()).unwrap();
    let e = rel_err(&ours, reference);
    eprintln!("hand-written backward vs candle autograd: {e:.2e}");
    // Measured 6.5e-7 (float32 rounding of two summation orders); 1e-4 leaves 150x headroom.
    assert!(e < 1e-4, "{e}");
}

/// The Winograd backward (`ConvAlgorithm::Fast`, the CPU default) against candle's convolution,
/// both run on the same forward tape, hence the same masks: only the transposed convolutions
/// differ.
#[test]
fn winograd_backward_equals_direct_backward_on_the_same_masks() {
    let direct = net(ConvAlgorithm::Candle);
    let (x, probes) = seeded_image_and_probes(&direct);
    let (_, tape) = direct.forward_tape(&x, &probed_layers()).unwrap();
    let reference = direct.backward(&tape, probes.clone()).unwrap();
    for alg in [ConvAlgorithm::Fast, ConvAlgorithm::Winograd2x2] {
        let e = rel_err(&net(alg).backward(&tape, probes.clone()).unwrap(), &reference);
        eprintln!("{alg:?} backward vs direct backward, same tape: {e:.2e}");
        assert!(e < 1e-4, "{alg:?}: {e}");
    }
}

/// The Winograd forward's ReLU masks against candle's convolution on the same seeded image:
/// they may differ only where the pre-activation is within float32 error of zero (a tie that
/// either side may break), never elsewhere.
#[test]
fn winograd_relu_masks_differ_only_at_ties() {
    let convs: Vec<Layer> = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2"].map(layer).to_vec();
    let direct = net(ConvAlgorithm::Candle);
    let x = seeded_normal(11, 40.0, &[1, 3, 40, 28]);
    let want = direct.features(&x, &convs).unwrap();
    for alg in [ConvAlgorithm::Fast, ConvAlgorithm::Winograd2x2] {
        let got = net(alg).features(&x, &convs).unwrap();
        for l in &convs {
            let a = got[l].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = want[l].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            // A tie: within 1e-5 of the layer's largest value (the features agree within
            // ~2e-6 relative, `every_layer_matches_pytorch_within_1e4`).
            let tie = 1e-5 * scale;
            let flips: Vec<f32> =
                a.iter().zip(&b).filter(|(p, q)| (**p > 0.0) != (**q > 0.0)).map(|(_, q)| *q).collect();
            let worst = flips.iter().fold(0f32, |m, v| m.max(v.abs()));
            eprintln!(
                "{alg:?} {l}: {} of {} masks differ, largest |pre-activation| there {worst:.1e}",
                flips.len(),
                b.len()
            );
            assert!(
                worst <= tie,
                "{alg:?} {l}: a ReLU mask differs where the pre-activation is {worst} (tie bound {tie})"
            );
        }
    }
}

/// Kernels read back from a cache folder (`vgg::KernelCache`) give the forward and backward
/// passes the same bits as kernels transformed afresh, for both Winograd variants, on a
/// non-square image; the network that reads them transforms none.
#[test]
fn cached_kernels_give_the_bits_of_fresh_ones() {
    let bits =
        |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for alg in [ConvAlgorithm::Fast, ConvAlgorithm::Winograd2x2] {
        // A folder per algorithm: on AVX-512, `Fast` takes F(2×2) for this small image's deep
        // layers, whose kernels the second algorithm would otherwise find stored already.
        let dir = tempfile::tempdir().unwrap();
        let fresh = net(alg);
        let (x, probes) = seeded_image_and_probes(&fresh);
        let pass = |n: &vgg::Vgg19| {
            let (f, tape) = n.forward_tape(&x, &probed_layers()).unwrap();
            let g = n.backward(&tape, probes.clone()).unwrap();
            (f.values().map(bits).collect::<Vec<_>>(), bits(&g))
        };
        let want = pass(&fresh);
        let writer = std::sync::Arc::new(vgg::KernelCache::new(dir.path()));
        assert_eq!(pass(&net(alg).with_kernel_cache(writer.clone())), want, "{alg:?}: with kernels being written");
        let reader = std::sync::Arc::new(vgg::KernelCache::new(dir.path()));
        assert_eq!(pass(&net(alg).with_kernel_cache(reader.clone())), want, "{alg:?}: with kernels read back");
        let (w, r) = (writer.stats(), reader.stats());
        eprintln!("{alg:?}: writer {w:?}, reader {r:?}");
        assert!(w.stored > 0 && w.failed == 0, "{alg:?}: {w:?}");
        assert_eq!(r, vgg::CacheStats { loaded: w.stored, stored: 0, failed: 0 }, "{alg:?}");
    }
}
