//! Gatys et al. 2017's controls (issue 13) on the real network: guided style regions, colour
//! control, style scale and the style losses, end to end and at the objective.

use std::path::Path;
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use losses::{Objective, StyleImage, StyleLoss, StyleRegion, Targets};
use vgg::ConvAlgorithm;

use crate::helpers::*;

fn runner(args: &[&str], cwd: &Path) -> Output {
    weights_path();
    Command::new(env!("CARGO_BIN_EXE_runner")).args(args).current_dir(cwd).output().expect("running runner")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A grey guide image: white where `inside(x, y)`.
fn write_mask(path: &Path, (w, h): (u32, u32), inside: impl Fn(u32, u32) -> bool) {
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([if inside(x, y) { 255 } else { 0 }])).save(path).unwrap();
}

/// YIQ chrominance (I, Q) of a pixel.
fn chroma(p: &image::Rgb<u8>) -> (f64, f64) {
    let [r, g, b] = p.0.map(f64::from);
    (0.596 * r - 0.274 * g - 0.322 * b, 0.211 * r - 0.523 * g + 0.312 * b)
}

#[test]
fn guided_styles_colour_control_and_style_scale_run_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_mask(&d.join("left.png"), (32, 24), |x, _| x < 13);
    write_mask(&d.join("right.png"), (32, 24), |x, _| x >= 13);
    write_mask(&d.join("top.png"), (64, 48), |_, y| y < 30);
    let content = fixture_dir().join("content_64x48.png");
    let style = fixture_dir().join("style_64x48.png");
    // An odd, non-square output, so that the guides' poolings must follow the network's rounding.
    let text = r#"
        name = "controls"
        [defaults]
        content = "CONTENT"
        width = 70
        height = 45
        iterations = 3
        style = [
            { image = "STYLE", mask = "left.png" },
            { image = "STYLE", mask = "right.png", scale = 0.75, style_mask = "top.png" },
        ]
        [[run]]
        name = "luminance_w2"
        preserve_colors = "luminance"
        style_loss = "wasserstein"
        [[run]]
        name = "histogram_mean_cov"
        preserve_colors = "histogram"
        style_loss = "mean_cov"
        style_scale = 1.5
        optimizer = "adam"
    "#
    .replace("CONTENT", content.to_str().unwrap())
    .replace("STYLE", style.to_str().unwrap());
    std::fs::write(d.join("exp.toml"), text).unwrap();
    let o = runner(&["exp.toml", "--out", "res"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let photo = image::open(&content).unwrap().resize_exact(70, 45, image::imageops::FilterType::Triangle).to_rgb8();
    for run in ["luminance_w2", "histogram_mean_cov"] {
        let run_dir = d.join("res/controls").join(run);
        let out = image::open(run_dir.join("output.png")).unwrap().to_rgb8();
        assert_eq!(out.dimensions(), (70, 45), "{run}");
        let mut csv = csv::Reader::from_path(run_dir.join("losses.csv")).unwrap();
        let total = csv.headers().unwrap().iter().position(|h| h == "total").unwrap();
        let totals: Vec<f64> = csv.records().map(|r| r.unwrap()[total].parse().unwrap()).collect();
        assert!(totals.last() < totals.first(), "{run}: the loss decreases: {totals:?}");
        let record: toml::Table = std::fs::read_to_string(run_dir.join("run.toml")).unwrap().parse().unwrap();
        for role in ["style0.mask", "style1.mask", "style1.style_mask"] {
            assert!(record["inputs"][role]["sha256"].as_str().is_some_and(|h| h.len() == 64), "{run}: {role}");
        }
        if run == "luminance_w2" {
            // The output's colour is the photograph's: its chrominance differs only by the
            // rounding of the recombination and the photograph's resampling.
            let diff: f64 = out
                .pixels()
                .zip(photo.pixels())
                .map(|(a, b)| {
                    let ((ia, qa), (ib, qb)) = (chroma(a), chroma(b));
                    (ia - ib).abs() + (qa - qb).abs()
                })
                .sum::<f64>()
                / (70.0 * 45.0);
            assert!(diff < 4.0, "mean |ΔI| + |ΔQ| = {diff}");
        }
    }
    // A style scale that leaves a style image a few pixels wide is refused before anything
    // runs, naming the key; colour control without a photograph too.
    let o = runner(&["exp.toml", "--out", "res2", "--set", "style_scale=0.05", "--dry-run"], d);
    assert!(!o.status.success() && stderr(&o).contains("style_scale") && stderr(&o).contains("16"), "{}", stderr(&o));
    let o = runner(
        &["exp.toml", "--out", "res2", "--set", "content=none", "--set", "preserve_colors=luminance", "--dry-run"],
        d,
    );
    assert!(!o.status.success() && stderr(&o).contains("preserve_colors"), "{}", stderr(&o));
}

/// A white guide over the output (and over the style) is the unguided objective, and two
/// guides that split the output into regions of the same style cost at least as much, at an
/// odd non-square size on VGG19 (guides pooled as the network pools).
#[test]
fn a_white_guide_is_the_unguided_objective_on_vgg19() {
    let net = net(ConvAlgorithm::Fast);
    let style = t("style.preprocessed");
    let x = style.narrow(2, 1, 45).unwrap().narrow(3, 2, 61).unwrap().contiguous().unwrap();
    let x = (x + seeded_normal(3, 20.0, &[1, 3, 45, 61])).unwrap();
    for loss in StyleLoss::ALL {
        let mut config = fixture_config(losses::LossForm::Seed);
        config.content_layers.clear();
        config.style_loss = loss;
        let ones = Tensor::ones((1, 1, 45, 61), DType::F32, &Device::Cpu).unwrap();
        let style_ones = Tensor::ones((1, 1, 48, 64), DType::F32, &Device::Cpu).unwrap();
        let evaluate = |regions: Vec<StyleRegion>| {
            let targets = Targets::compute(&net, &config, None, &regions).unwrap();
            Objective::new(&net, config.clone(), targets).unwrap().evaluate(&x).unwrap()
        };
        let whole = evaluate(vec![StyleRegion::whole(vec![StyleImage::new(style.clone(), 1.0)])]);
        let guided = evaluate(vec![StyleRegion {
            guide: Some(ones.clone()),
            styles: vec![StyleImage { image: style.clone(), weight: 1.0, guide: Some(style_ones) }],
        }]);
        let r = rel(guided.terms.total, whole.terms.total);
        let g = rel_err(&guided.grad, &whole.grad);
        assert!(r < 1e-5 && g < 1e-5, "{loss}: value {r:e}, gradient {g:e}");
        let left: Vec<f32> = (0..45 * 61).map(|i| if i % 61 < 30 { 1.0 } else { 0.0 }).collect();
        let left = Tensor::from_vec(left, (1, 1, 45, 61), &Device::Cpu).unwrap();
        let right = (&ones - &left).unwrap();
        let split = evaluate(
            [left, right]
                .into_iter()
                .map(|g| StyleRegion { guide: Some(g), styles: vec![StyleImage::new(style.clone(), 1.0)] })
                .collect(),
        );
        assert!(
            split.terms.total >= whole.terms.total * (1.0 - 1e-5),
            "{loss}: {split:?} < {whole:?}",
            split = split.terms.total,
            whole = whole.terms.total
        );
        eprintln!(
            "{loss}: white guide value {r:.1e}, gradient {g:.1e}; split/whole {:.3}",
            split.terms.total / whole.terms.total
        );
    }
}
