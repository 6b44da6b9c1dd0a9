//! A run's inputs: the files it reads (resolved and hashed, which makes its identity), then the
//! tensors made of them: content and style targets, the objective, the starting image.

use candle_core::{Device, Tensor};
use image::RgbImage;
use losses::{Objective, ObjectiveConfig, StyleImage, Targets};
use rand::SeedableRng;
use rand_distr::Distribution;
use vgg::{Preprocessing, Resize, Vgg19};

use crate::assets::Asset;
use crate::params::{Init, RunParams};
use crate::record::{NamedInput, NUMERICS};
use crate::{Error, Result};

use super::Session;

/// The files of a run, resolved and hashed.
pub(super) struct Inputs {
    weights: Asset,
    content: Option<Asset>,
    styles: Vec<Asset>,
    init: Option<Asset>,
}

impl Inputs {
    /// Every input with its role, for `run.toml`.
    pub(super) fn named(&self) -> Vec<NamedInput> {
        let one = |role: &str, a: &Asset| NamedInput { role: role.into(), asset: a.clone() };
        let mut v = vec![one("weights", &self.weights)];
        v.extend(self.content.iter().map(|c| one("content", c)));
        v.extend(self.styles.iter().enumerate().map(|(k, s)| one(&format!("style{k}"), s)));
        v.extend(self.init.iter().map(|x| one("init", x)));
        v
    }
}

/// Resolves and hashes the files of run `p`.
pub(super) fn resolve(session: &Session, p: &RunParams, weights: Asset) -> Result<Inputs> {
    Ok(Inputs {
        weights,
        content: p.inputs.content.0.as_ref().map(|c| session.image(&c.0)).transpose()?,
        styles: p.inputs.style.0.iter().map(|s| session.image(&s.image.0)).collect::<Result<_>>()?,
        init: match &p.start.init {
            Init::Image(i) => Some(session.image(&i.0)?),
            _ => None,
        },
    })
}

/// The run's identity: a hash of its resolved parameters, its inputs' hashes and the numerics'
/// sources. Equal identities compute equal results.
pub(super) fn identity(p: &RunParams, inputs: &Inputs) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(NUMERICS.as_bytes());
    h.update(p.to_table().to_string().as_bytes());
    for a in std::iter::once(&inputs.weights).chain(&inputs.content).chain(&inputs.styles).chain(&inputs.init) {
        h.update(a.sha256.as_bytes());
    }
    crate::fsutil::hex(&h.finalize())[..16].to_string()
}

/// Everything the optimisation needs: the objective, the starting image and the output size.
pub(super) struct Setup<'a> {
    /// The objective, targets computed.
    pub objective: Objective<'a>,
    /// The starting image, `(1, 3, H, W)`, preprocessed.
    pub x0: Tensor,
    /// The network's preprocessing (to turn iterates into images).
    pub pre: Preprocessing,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
}

impl<'a> Setup<'a> {
    /// Loads the images, computes the targets and the starting image.
    pub(super) fn build(net: &'a Vgg19, p: &RunParams, inputs: &Inputs, device: &Device) -> Result<Self> {
        let pre = net.preprocessing();
        let content_img = inputs.content.as_ref().map(|a| vgg::imageio::load_rgb(&a.path)).transpose()?;
        let (width, height) = p.output_size(content_img.as_ref().map(|img| img.dimensions()));
        let exact = Resize::Exact { width, height };
        let to_tensor = |img: &RgbImage| pre.to_tensor(&vgg::imageio::resize(img, exact), device);
        let content = content_img.as_ref().map(to_tensor).transpose()?;
        let mut style_imgs = Vec::new();
        let mut styles = Vec::new();
        for (a, s) in inputs.styles.iter().zip(&p.inputs.style.0) {
            let img = vgg::imageio::load_rgb(&a.path)?;
            // Style images at the output's long side, aspect kept: the Gram targets are compared
            // per position, so sizes need not match (the seed resizes both to one size).
            let resized = vgg::imageio::resize(&img, Resize::LongSide(width.max(height)));
            styles.push(StyleImage { image: pre.to_tensor(&resized, device)?, weight: s.weight });
            style_imgs.push(img);
        }
        let config = objective_config(p);
        let targets = Targets::compute(net, &config, content.as_ref(), &styles)?;
        let objective = Objective::new(net, config, targets)?;
        let x0 = match &p.start.init {
            Init::Content => content.ok_or_else(|| Error::Run("init = content without a content image".into()))?,
            Init::Style => {
                to_tensor(style_imgs.first().ok_or_else(|| Error::Run("init = style without a style image".into()))?)?
            }
            Init::Noise => {
                let std = p.start.noise_std.0 * pre.units_per_pixel_level() as f64;
                noise(p.start.seed.0, std, (height as usize, width as usize), device)?
            }
            Init::Image(_) => {
                let a = inputs.init.as_ref().ok_or_else(|| Error::Run("init image missing".into()))?;
                to_tensor(&vgg::imageio::load_rgb(&a.path)?)?
            }
        };
        Ok(Setup { objective, x0, pre, width, height })
    }
}

/// The objective's configuration from a run's parameters.
fn objective_config(p: &RunParams) -> ObjectiveConfig {
    let o = &p.objective;
    ObjectiveConfig {
        content_layers: o.content_layers.0.clone(),
        style_layers: o.style_layers.layers(),
        style_layer_weights: p.style_layer_weights(),
        content_weight: o.content_weight.0,
        style_weight: o.style_weight.0,
        tv_weight: o.tv_weight.0,
        form: o.loss_form,
    }
}

/// `std · N(0, 1)` noise of shape `(1, 3, H, W)`, from a seeded generator (the same on every
/// device and machine).
pub fn noise(seed: u64, std: f64, (h, w): (usize, usize), device: &Device) -> Result<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = rand_distr::StandardNormal;
    let v: Vec<f32> = (0..3 * h * w).map(|_| (std * Distribution::<f64>::sample(&normal, &mut rng)) as f32).collect();
    Ok(Tensor::from_vec(v, (1, 3, h, w), device)?)
}
