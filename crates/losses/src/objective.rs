//! Targets computed once per run, and the objective evaluated at every optimizer step.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use vgg::{Features, Layer, Vgg19};

use crate::terms::{content_loss, gram, style_loss, tv_loss};
use crate::{Error, LossForm, Result};

/// What the objective is made of. Weights follow the paper's α (content) and β (style).
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectiveConfig {
    /// Layers whose activations should match the content image's.
    pub content_layers: Vec<Layer>,
    /// Layers whose Gram matrices should match the style image's.
    pub style_layers: Vec<Layer>,
    /// Per-style-layer weights `w_l`; `None` takes the form's default (1, or `1/|L|` for
    /// `paper`).
    pub style_layer_weights: Option<Vec<f64>>,
    /// α, the content weight.
    pub content_weight: f64,
    /// β, the style weight.
    pub style_weight: f64,
    /// Weight of the total-variation term (0 in the paper).
    pub tv_weight: f64,
    /// The normalisation of the losses.
    pub form: LossForm,
}

impl ObjectiveConfig {
    /// The weight of each style layer, in the order of `style_layers`.
    pub fn layer_weights(&self) -> Result<Vec<f64>> {
        match &self.style_layer_weights {
            Some(w) if w.len() != self.style_layers.len() => Err(Error::Config(format!(
                "{} style layer weights for {} style layers",
                w.len(),
                self.style_layers.len()
            ))),
            Some(w) => Ok(w.clone()),
            None => {
                let w = self.form.default_layer_weight(self.style_layers.len());
                Ok(vec![w; self.style_layers.len()])
            }
        }
    }

    fn layers(&self) -> Vec<Layer> {
        let mut l: Vec<Layer> = self.content_layers.iter().chain(&self.style_layers).copied().collect();
        l.sort();
        l.dedup();
        l
    }
}

/// One style image, `(1, 3, H, W)` preprocessed, and its blend weight.
#[derive(Clone, Debug)]
pub struct StyleImage {
    /// The image as network input.
    pub image: Tensor,
    /// Its share of the blended Gram targets (weights are normalised to sum to 1).
    pub weight: f64,
}

/// The content activations and style Gram matrices the generated image is compared with,
/// computed once per run.
#[derive(Clone, Debug)]
pub struct Targets {
    content: Features,
    /// Per style layer, the blend of `Σ_i w_i A_i / M_i` (Gram matrices per position), so that
    /// style images of any size compare with a generated image of any size.
    style: BTreeMap<Layer, Tensor>,
}

impl Targets {
    /// Runs the network on the content image (when there are content layers) and on every
    /// style image (when there are style layers).
    pub fn compute(
        vgg: &Vgg19,
        config: &ObjectiveConfig,
        content: Option<&Tensor>,
        styles: &[StyleImage],
    ) -> Result<Self> {
        let content = match (config.content_layers.is_empty(), content) {
            (true, _) => Features::new(),
            (false, Some(c)) => vgg.features(c, &config.content_layers)?,
            (false, None) => return Err(Error::Config("content layers need a content image".into())),
        };
        let mut style = BTreeMap::new();
        if !config.style_layers.is_empty() {
            let total: f64 = styles.iter().map(|s| s.weight).sum();
            if styles.is_empty() || total <= 0.0 || styles.iter().any(|s| s.weight < 0.0) {
                return Err(Error::Config(
                    "style layers need at least one style image, with non-negative weights summing to more than 0"
                        .into(),
                ));
            }
            for s in styles {
                let f = vgg.features(&s.image, &config.style_layers)?;
                for (l, a) in f {
                    let (_, _, h, w) = a.dims4()?;
                    let g = (gram(&a)?.squeeze(0)? * (s.weight / total / (h * w) as f64))?;
                    let sum = match style.remove(&l) {
                        Some(prev) => (prev + g)?,
                        None => g,
                    };
                    style.insert(l, sum);
                }
            }
        }
        Ok(Self { content, style })
    }

    /// The content activations, by layer.
    pub fn content(&self) -> &Features {
        &self.content
    }

    /// The style Gram matrix of `layer` for a generated image whose layer has `positions`
    /// positions: `(N, N)`.
    pub fn style_gram(&self, layer: Layer, positions: usize) -> Result<Tensor> {
        let a = self.style.get(&layer).ok_or_else(|| Error::Config(format!("no style target for {layer}")))?;
        Ok((a * positions as f64)?)
    }
}

/// The value of each term at one image (unweighted per term; `total` is the weighted sum).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Terms {
    /// `α · content + β · style + tv_weight · tv`.
    pub total: f64,
    /// `Σ_l content_l`.
    pub content: f64,
    /// `Σ_l w_l · style_l`.
    pub style: f64,
    /// Total variation.
    pub tv: f64,
    /// Each content layer's loss.
    pub content_layers: Vec<(Layer, f64)>,
    /// Each style layer's loss, times its layer weight `w_l`.
    pub style_layers: Vec<(Layer, f64)>,
}

/// An objective's value terms and its gradient with respect to the image.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The terms.
    pub terms: Terms,
    /// `∂ total / ∂ x`, the shape of the image.
    pub grad: Tensor,
}

/// The Gatys et al. objective over one network and one set of targets.
pub struct Objective<'a> {
    vgg: &'a Vgg19,
    config: ObjectiveConfig,
    targets: Targets,
    layers: Vec<Layer>,
    layer_weights: Vec<f64>,
}

impl<'a> Objective<'a> {
    /// An objective; fails if the configuration is inconsistent or a target is missing.
    pub fn new(vgg: &'a Vgg19, config: ObjectiveConfig, targets: Targets) -> Result<Self> {
        let layer_weights = config.layer_weights()?;
        if config.content_layers.is_empty() && config.style_layers.is_empty() && config.tv_weight == 0.0 {
            return Err(Error::Config("the objective has no content layer, no style layer and no tv weight".into()));
        }
        for l in &config.content_layers {
            if !targets.content.contains_key(l) {
                return Err(Error::Config(format!("no content target for {l}")));
            }
        }
        for l in &config.style_layers {
            if !targets.style.contains_key(l) {
                return Err(Error::Config(format!("no style target for {l}")));
            }
        }
        let layers = config.layers();
        Ok(Self { vgg, config, targets, layers, layer_weights })
    }

    /// The configuration.
    pub fn config(&self) -> &ObjectiveConfig {
        &self.config
    }

    /// The value and the gradient at `x`, `(1, 3, H, W)`, preprocessed.
    pub fn evaluate(&self, x: &Tensor) -> Result<Evaluation> {
        let (features, tape) = self.vgg.forward_tape(x, &self.layers)?;
        let (values, grads) = self.losses(&features, true)?;
        let mut grad = if grads.is_empty() { x.zeros_like()? } else { self.vgg.backward(&tape, &grads)? };
        let mut values = values;
        if self.config.tv_weight != 0.0 {
            let (v, g) = tv_loss(x)?;
            values.push(v);
            grad = (grad + (g * self.config.tv_weight)?)?;
        }
        Ok(Evaluation { terms: self.collect(values)?, grad })
    }

    /// The value terms at `x`, without the gradient.
    pub fn terms(&self, x: &Tensor) -> Result<Terms> {
        let features = self.vgg.features(x, &self.layers)?;
        let (mut values, _) = self.losses(&features, false)?;
        if self.config.tv_weight != 0.0 {
            values.push(tv_loss(x)?.0);
        }
        self.collect(values)
    }

    /// Per-layer values (content layers, then style layers) and, when `with_grad`, the
    /// weighted gradient with respect to each layer's activation.
    fn losses(&self, f: &Features, with_grad: bool) -> Result<(Vec<Tensor>, BTreeMap<Layer, Tensor>)> {
        let c = &self.config;
        let mut values = Vec::new();
        let mut grads: BTreeMap<Layer, Tensor> = BTreeMap::new();
        let mut add = |l: Layer, g: Tensor| -> Result<()> {
            let g = match grads.remove(&l) {
                Some(prev) => (prev + g)?,
                None => g,
            };
            grads.insert(l, g);
            Ok(())
        };
        for l in &c.content_layers {
            let (v, g) = content_loss(&f[l], &self.targets.content[l], c.form)?;
            values.push(v);
            if with_grad && c.content_weight != 0.0 {
                add(*l, (g * c.content_weight)?)?;
            }
        }
        for (l, w) in c.style_layers.iter().zip(&self.layer_weights) {
            let (_, _, h, wd) = f[l].dims4()?;
            let a = self.targets.style_gram(*l, h * wd)?;
            let (v, g) = style_loss(&f[l], &a, c.form, *w)?;
            values.push(v);
            if with_grad && c.style_weight != 0.0 {
                add(*l, (g * c.style_weight)?)?;
            }
        }
        Ok((values, grads))
    }

    /// Moves every scalar to the host at once and sums the terms.
    fn collect(&self, values: Vec<Tensor>) -> Result<Terms> {
        let c = &self.config;
        let host: Vec<f64> = if values.is_empty() {
            vec![]
        } else {
            Tensor::stack(&values, 0)?.to_dtype(DType::F64)?.to_vec1::<f64>()?
        };
        let nc = c.content_layers.len();
        let ns = c.style_layers.len();
        let content_layers: Vec<(Layer, f64)> =
            c.content_layers.iter().copied().zip(host[..nc].iter().copied()).collect();
        let style_layers: Vec<(Layer, f64)> =
            c.style_layers.iter().copied().zip(host[nc..nc + ns].iter().copied()).collect();
        let tv = host.get(nc + ns).copied().unwrap_or(0.0);
        let content: f64 = content_layers.iter().map(|(_, v)| v).sum();
        let style: f64 = style_layers.iter().map(|(_, v)| v).sum();
        let total = c.content_weight * content + c.style_weight * style + c.tv_weight * tv;
        Ok(Terms { total, content, style, tv, content_layers, style_layers })
    }
}
