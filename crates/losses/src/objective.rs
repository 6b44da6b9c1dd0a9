//! Targets computed once per run, and the objective evaluated at every optimizer step.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use vgg::{Features, Layer, Vgg19};

use crate::style::{style_term, Moments, StyleLoss, StyleTarget};
use crate::terms::{content_loss, tv_loss};
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
    /// How the style statistics are compared.
    pub style_loss: StyleLoss,
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

/// One style image, `(1, 3, H, W)` preprocessed, its blend weight, and optionally the region
/// of it whose statistics count.
#[derive(Clone, Debug)]
pub struct StyleImage {
    /// The image as network input.
    pub image: Tensor,
    /// Its share of the blended targets of its region (weights are normalised to sum to 1).
    pub weight: f64,
    /// A guide over the image, `(1, 1, H, W)` with values in `[0, 1]`: only the positions it
    /// covers (weighted by it) make the style's statistics. `None`: the whole image.
    pub guide: Option<Tensor>,
}

impl StyleImage {
    /// The whole image with weight `weight`.
    pub fn new(image: Tensor, weight: f64) -> Self {
        Self { image, weight, guide: None }
    }
}

/// A region of the output and the styles blended into it (Gatys et al. 2017, §4).
#[derive(Clone, Debug)]
pub struct StyleRegion {
    /// A guide over the output, `(1, 1, H, W)` at the output's size with values in `[0, 1]`;
    /// `None`: the whole output.
    pub guide: Option<Tensor>,
    /// The styles of this region.
    pub styles: Vec<StyleImage>,
}

impl StyleRegion {
    /// One region covering the whole output (the 2016 paper's style term).
    pub fn whole(styles: Vec<StyleImage>) -> Self {
        Self { guide: None, styles }
    }
}

/// A guide `(1, 1, H, W)` brought to the grid of `layer`: averaged over the 2×2 cells of each
/// pooling before it, as the network's poolings shrink its input (stride 2, rounding down).
pub fn guide_at(guide: &Tensor, layer: Layer) -> Result<Tensor> {
    let mut g = guide.clone();
    for _ in 0..layer.poolings_before() {
        g = g.avg_pool2d(2)?;
    }
    Ok(g)
}

/// One region's targets: per style layer, its guide over the output and the style's target.
#[derive(Clone, Debug)]
struct RegionTargets {
    /// The output's guide at each style layer (empty: the whole output).
    guides: BTreeMap<Layer, Tensor>,
    /// The target statistics at each style layer.
    targets: BTreeMap<Layer, StyleTarget>,
}

/// The content activations and style statistics the generated image is compared with,
/// computed once per run.
#[derive(Clone, Debug)]
pub struct Targets {
    content: Features,
    /// Per style region, its targets. Statistics are per unit of guide mass, so that style
    /// images of any size compare with a generated image of any size.
    regions: Vec<RegionTargets>,
}

impl Targets {
    /// Runs the network on the content image (when there are content layers) and on every
    /// style image (when there are style layers).
    pub fn compute(
        vgg: &Vgg19,
        config: &ObjectiveConfig,
        content: Option<&Tensor>,
        regions: &[StyleRegion],
    ) -> Result<Self> {
        let content = match (config.content_layers.is_empty(), content) {
            (true, _) => Features::new(),
            (false, Some(c)) => vgg.features(c, &config.content_layers)?,
            (false, None) => return Err(Error::Config("content layers need a content image".into())),
        };
        let mut out = Vec::new();
        if !config.style_layers.is_empty() {
            if regions.is_empty() {
                return Err(Error::Config("style layers need at least one style image".into()));
            }
            for (k, r) in regions.iter().enumerate() {
                out.push(region_targets(vgg, config, r).map_err(|e| match e {
                    Error::Config(m) if regions.len() > 1 => Error::Config(format!("style region {}: {m}", k + 1)),
                    e => e,
                })?);
            }
        }
        Ok(Self { content, regions: out })
    }

    /// The content activations, by layer.
    pub fn content(&self) -> &Features {
        &self.content
    }

    /// The blended style moments of `region` (in the order given) at `layer`.
    pub fn style_moments(&self, region: usize, layer: Layer) -> Option<&Moments> {
        self.regions.get(region)?.targets.get(&layer).map(|t| t.moments())
    }
}

/// The targets of one region: each style's guided moments, blended by weight.
fn region_targets(vgg: &Vgg19, config: &ObjectiveConfig, region: &StyleRegion) -> Result<RegionTargets> {
    let total: f64 = region.styles.iter().map(|s| s.weight).sum();
    if region.styles.is_empty() || total <= 0.0 || region.styles.iter().any(|s| s.weight < 0.0) {
        return Err(Error::Config(
            "style layers need at least one style image, with non-negative weights summing to more than 0".into(),
        ));
    }
    let mut parts: BTreeMap<Layer, Vec<(Moments, f64)>> = BTreeMap::new();
    for s in &region.styles {
        let f = vgg.features(&s.image, &config.style_layers)?;
        for (l, a) in f {
            let guide = s.guide.as_ref().map(|g| guide_at(g, l)).transpose()?;
            let (m, _) = Moments::of(&a, guide.as_ref())?.ok_or_else(|| {
                Error::Config(format!(
                    "the style image's guide (style_mask) leaves less than one position of it at {l}: paint more of it white"
                ))
            })?;
            parts.entry(l).or_default().push((m, s.weight));
        }
    }
    let mut targets = BTreeMap::new();
    for (l, p) in parts {
        targets.insert(l, StyleTarget::new(Moments::blend(&p)?, config.style_loss)?);
    }
    let mut guides = BTreeMap::new();
    if let Some(g) = &region.guide {
        let mut largest = 0f64;
        for l in &config.style_layers {
            let at = guide_at(g, *l)?;
            largest = largest.max(at.to_dtype(candle_core::DType::F64)?.sum_all()?.to_scalar::<f64>()?);
            guides.insert(*l, at);
        }
        if largest < crate::style::MIN_MASS {
            return Err(Error::Config(
                "the output's guide (mask) covers none of the output: its styles would have no effect; paint their \
                 region white"
                    .into(),
            ));
        }
    }
    Ok(RegionTargets { guides, targets })
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

/// The two passes through the network an evaluation makes: forward to the layers the objective
/// reads, then backward from the gradients at those layers to the image.
pub trait NetworkPass {
    /// The activations of `layers` at `x` (`(1, 3, H, W)`), each `(1, C, H_l, W_l)`, keeping
    /// what [`NetworkPass::backward`] needs.
    fn forward(&mut self, x: &Tensor, layers: &[Layer]) -> Result<Features>;
    /// The gradient at the image of the last forward pass (`(1, 3, H, W)`) of
    /// `Σ_l ⟨grads[l], features[l]⟩` ([`Vgg19::backward`]).
    fn backward(&mut self, grads: BTreeMap<Layer, Tensor>) -> Result<Tensor>;
}

/// The objective's own network, one image at a time.
struct OwnPass<'v> {
    vgg: &'v Vgg19,
    tape: Option<vgg::Tape>,
}

impl NetworkPass for OwnPass<'_> {
    fn forward(&mut self, x: &Tensor, layers: &[Layer]) -> Result<Features> {
        let (features, tape) = self.vgg.forward_tape(x, layers)?;
        self.tape = Some(tape);
        Ok(features)
    }

    fn backward(&mut self, grads: BTreeMap<Layer, Tensor>) -> Result<Tensor> {
        let tape = self.tape.take().ok_or_else(|| Error::Config("a backward pass without a forward pass".into()))?;
        Ok(self.vgg.backward(&tape, grads)?)
    }
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
            if targets.regions.is_empty() || targets.regions.iter().any(|r| !r.targets.contains_key(l)) {
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

    /// The network this objective reads.
    pub fn vgg(&self) -> &'a Vgg19 {
        self.vgg
    }

    /// The layers whose activations the objective reads, in network order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The value and the gradient at `x`, `(1, 3, H, W)`, preprocessed.
    ///
    /// On the CPU it runs on a thread of rayon's pool ([`vgg::on_pool`]), the losses' parallel
    /// loops too.
    pub fn evaluate(&self, x: &Tensor) -> Result<Evaluation> {
        vgg::on_pool(x.device(), || self.evaluate_through(x, &mut OwnPass { vgg: self.vgg, tape: None }))
    }

    /// [`Objective::evaluate`] with the network's passes made by `pass` (which must compute
    /// what [`Objective::vgg`] would: a batch of several runs' images, for instance).
    /// It runs on the caller's thread, not moved into rayon's pool as [`Objective::evaluate`]
    /// is: a pass may block until other threads' passes arrive (a batch of runs), and blocked
    /// on the pool's threads those would never be served.
    pub fn evaluate_through(&self, x: &Tensor, pass: &mut dyn NetworkPass) -> Result<Evaluation> {
        let features = pass.forward(x, &self.layers)?;
        let (values, grads) = self.losses(features, true)?;
        let mut grad = if grads.is_empty() { x.zeros_like()? } else { pass.backward(grads)? };
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
        vgg::on_pool(x.device(), || self.terms_here(x))
    }

    fn terms_here(&self, x: &Tensor) -> Result<Terms> {
        let features = self.vgg.features(x, &self.layers)?;
        let (mut values, _) = self.losses(features, false)?;
        if self.config.tv_weight != 0.0 {
            values.push(tv_loss(x)?.0);
        }
        self.collect(values)
    }

    /// Per-layer values (content layers, then style layers) and, when `with_grad`, the
    /// weighted gradient with respect to each layer's activation. Each activation of `f` is
    /// dropped once its terms are taken, and the style layers go deepest first, so that the
    /// largest activation (block 1's) meets few others: at 1024² each of its tensors is 256 MiB.
    fn losses(&self, mut f: Features, with_grad: bool) -> Result<(Vec<Tensor>, BTreeMap<Layer, Tensor>)> {
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
            if !c.style_layers.contains(l) {
                f.remove(l);
            }
        }
        // The style terms' gradients come out times β (β = 0: no gradient is kept).
        let beta = c.style_weight;
        let terms = if c.style_loss == StyleLoss::Wasserstein {
            self.style_terms_parallel(&f, beta)?
        } else {
            let mut terms = Vec::with_capacity(c.style_layers.len());
            for (l, w) in c.style_layers.iter().zip(&self.layer_weights).rev() {
                let feature = f.remove(l).ok_or_else(|| Error::Config(format!("no activation for {l}")))?;
                terms.push((self.style_layer(&feature, *l, *w, beta)?, feature.dtype(), feature.device().clone()));
            }
            terms.reverse();
            terms
        };
        for (l, (layer_terms, dtype, device)) in c.style_layers.iter().zip(terms) {
            let mut value: Option<Tensor> = None;
            for (v, g) in layer_terms.into_iter().flatten() {
                value = Some(match value {
                    Some(prev) => (prev + v)?,
                    None => v,
                });
                if with_grad && beta != 0.0 {
                    add(*l, g)?;
                }
            }
            values.push(match value {
                Some(v) => v,
                None => Tensor::zeros((), dtype, &device)?,
            });
        }
        Ok((values, grads))
    }

    /// The style term of layer `l` (activation `f`, layer weight `w`) in every region (`None`:
    /// the region is absent from the layer), gradients times `grad_scale`.
    fn style_layer(&self, f: &Tensor, l: Layer, w: f64, grad_scale: f64) -> Result<Vec<Option<(Tensor, Tensor)>>> {
        let c = &self.config;
        self.targets
            .regions
            .iter()
            .map(|r| style_term(f, r.guides.get(&l), &r.targets[&l], c.style_loss, c.form, w, grad_scale))
            .collect()
    }

    /// Every style layer's terms ([`Objective::style_layer`]), layers in parallel: the
    /// Wasserstein loss spends most of its time in host eigendecompositions, one per layer and
    /// region (the order of the results, and so of the sums, does not depend on the scheduling).
    #[allow(clippy::type_complexity)]
    fn style_terms_parallel(
        &self,
        f: &Features,
        grad_scale: f64,
    ) -> Result<Vec<(Vec<Option<(Tensor, Tensor)>>, DType, candle_core::Device)>> {
        use rayon::prelude::*;
        let jobs: Vec<_> = self.config.style_layers.iter().zip(&self.layer_weights).collect();
        jobs.into_par_iter()
            .map(|(l, w)| {
                let feature = f.get(l).ok_or_else(|| Error::Config(format!("no activation for {l}")))?;
                Ok((self.style_layer(feature, *l, *w, grad_scale)?, feature.dtype(), feature.device().clone()))
            })
            .collect()
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
