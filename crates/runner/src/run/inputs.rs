//! A run's inputs: the files it reads (resolved and hashed, which makes its identity), then the
//! tensors made of them: content and style targets, the objective, the starting image.

use candle_core::{Device, Tensor};
use image::RgbImage;
use losses::{Objective, ObjectiveConfig, StyleImage, StyleRegion, Targets};
use rand::SeedableRng;
use rand_distr::Distribution;
use vgg::{Preprocessing, Resize, Vgg19};

use crate::assets::Asset;
use crate::params::{Init, RunParams};
use crate::record::{NamedInput, NUMERICS};
use crate::{Error, Result};

use super::colour::Colour;
use super::Session;

/// The files of a run, resolved and hashed.
pub(super) struct Inputs {
    weights: Asset,
    content: Option<Asset>,
    styles: Vec<StyleAssets>,
    init: Option<Asset>,
}

/// A style image and its guides.
struct StyleAssets {
    image: Asset,
    mask: Option<Asset>,
    style_mask: Option<Asset>,
}

impl Inputs {
    /// Every input with its role, for `run.toml`.
    pub(super) fn named(&self) -> Vec<NamedInput> {
        let one = |role: &str, a: &Asset| NamedInput { role: role.into(), asset: a.clone() };
        let mut v = vec![one("weights", &self.weights)];
        v.extend(self.content.iter().map(|c| one("content", c)));
        for (k, s) in self.styles.iter().enumerate() {
            v.push(one(&format!("style{k}"), &s.image));
            v.extend(s.mask.iter().map(|m| one(&format!("style{k}.mask"), m)));
            v.extend(s.style_mask.iter().map(|m| one(&format!("style{k}.style_mask"), m)));
        }
        v.extend(self.init.iter().map(|x| one("init", x)));
        v
    }
}

/// Resolves and hashes the files of run `p`.
pub(super) fn resolve(session: &Session, p: &RunParams, weights: Asset) -> Result<Inputs> {
    Ok(Inputs {
        weights,
        content: p.inputs.content.0.as_ref().map(|c| session.image(&c.0)).transpose()?,
        styles: p
            .inputs
            .style
            .0
            .iter()
            .map(|s| {
                Ok(StyleAssets {
                    image: session.image(&s.image.0)?,
                    mask: s.mask.as_ref().map(|m| session.image(&m.0)).transpose()?,
                    style_mask: s.style_mask.as_ref().map(|m| session.image(&m.0)).transpose()?,
                })
            })
            .collect::<Result<_>>()?,
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
    for a in inputs.named() {
        h.update(a.asset.sha256.as_bytes());
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
    /// The colour control, which makes the output image of an iterate.
    colour: Colour,
}

impl<'a> Setup<'a> {
    /// The output's size for run `p`: the content image's aspect ratio (read from its header)
    /// and the size rule.
    pub(super) fn output_size(p: &RunParams, inputs: &Inputs) -> Result<(u32, u32)> {
        let content = inputs
            .content
            .as_ref()
            .map(|a| {
                image::image_dimensions(&a.path)
                    .map_err(|source| Error::from(vgg::Error::Image { path: a.path.clone(), source }))
            })
            .transpose()?;
        Ok(p.output_size(content))
    }

    /// Loads the images at `(width, height)` (one stage's size), computes the targets there,
    /// and the starting image: `start` (the previous stage's output, resized) or the run's
    /// `init`.
    pub(super) fn build(
        net: &'a Vgg19,
        p: &RunParams,
        inputs: &Inputs,
        device: &Device,
        (width, height): (u32, u32),
        start: Option<Tensor>,
    ) -> Result<Self> {
        let pre = net.preprocessing();
        let content_img = inputs.content.as_ref().map(|a| vgg::imageio::load_rgb(&a.path)).transpose()?;
        let exact = |img: &RgbImage| vgg::imageio::resize(img, Resize::Exact { width, height });
        let photo = content_img.as_ref().map(exact);
        let colour = Colour::new(p.controls.preserve_colors, photo.as_ref())?;
        let to_tensor = |img: &RgbImage| pre.to_tensor(&colour.input(&exact(img)), device);
        let content = content_img.as_ref().map(to_tensor).transpose()?;
        let regions = style_regions(p, inputs, &colour, (width, height), |img| pre.to_tensor(img, device), device)?;
        let config = objective_config(p);
        let targets = Targets::compute(net, &config, content.as_ref(), &regions)?;
        let objective = Objective::new(net, config, targets)?;
        let x0 = match (start, &p.start.init) {
            (Some(x), _) => x,
            (None, Init::Content) => {
                content.ok_or_else(|| Error::Run("init = content without a content image".into()))?
            }
            (None, Init::Style) => {
                let a = inputs.styles.first().ok_or_else(|| Error::Run("init = style without a style image".into()))?;
                pre.to_tensor(&colour.style(&exact(&vgg::imageio::load_rgb(&a.image.path)?))?, device)?
            }
            (None, Init::Noise) => {
                let std = p.start.noise_std.0 * pre.units_per_pixel_level() as f64;
                noise(p.start.seed.0, std, (height as usize, width as usize), device)?
            }
            (None, Init::Image(_)) => {
                let a = inputs.init.as_ref().ok_or_else(|| Error::Run("init image missing".into()))?;
                to_tensor(&vgg::imageio::load_rgb(&a.path)?)?
            }
        };
        Ok(Setup { objective, x0, pre, width, height, colour })
    }

    /// The output image of an iterate `x`, `(1, 3, H, W)`.
    pub(super) fn image(&self, x: &Tensor) -> Result<RgbImage> {
        Ok(self.colour.output(self.pre.to_image(x)?))
    }
}

/// The long side of style images for an output of `(width, height)`: the output's long side
/// times `style_scale` times the style's own `scale`, refused outside 16 … 16384 px.
pub(super) fn style_side(p: &RunParams, scale: f64, (width, height): (u32, u32)) -> Result<u32> {
    let side = p.style_long_side(scale, (width, height)).round();
    if !(16.0..=f64::from(vgg::imageio::MAX_SIDE)).contains(&side) {
        return Err(Error::Run(format!(
            "style_scale {} × scale {scale} makes a style image {side} px on its long side for a {width}×{height} \
             output; the valid range is 16 … {} px",
            p.controls.style_scale.0,
            vgg::imageio::MAX_SIDE
        )));
    }
    Ok(side as u32)
}

/// A guide image as a `(1, 1, H, W)` tensor at `size`: its luminance, 0 (black) to 1 (white).
fn guide(path: &std::path::Path, (width, height): (u32, u32), device: &Device) -> Result<Tensor> {
    let img = vgg::imageio::resize(&vgg::imageio::load_rgb(path)?, Resize::Exact { width, height });
    let v: Vec<f32> = super::colour::luminance(&img).pixels().map(|p| f32::from(p.0[0]) / 255.0).collect();
    Ok(Tensor::from_vec(v, (1, 1, height as usize, width as usize), device)?)
}

/// The run's style regions: styles grouped by their output mask (none: the whole output), each
/// style resized (style_scale × scale), colour-controlled and with its own guide.
fn style_regions(
    p: &RunParams,
    inputs: &Inputs,
    colour: &Colour,
    size: (u32, u32),
    to_tensor: impl Fn(&RgbImage) -> vgg::Result<Tensor>,
    device: &Device,
) -> Result<Vec<StyleRegion>> {
    let mut regions: Vec<(Option<&std::path::Path>, StyleRegion)> = Vec::new();
    for (a, s) in inputs.styles.iter().zip(&p.inputs.style.0) {
        let side = style_side(p, s.scale.0, size)?;
        // Style images keep their aspect ratio: the targets are statistics per position, so
        // sizes need not match (the seed resizes both to one size).
        let img =
            colour.style(&vgg::imageio::resize(&vgg::imageio::load_rgb(&a.image.path)?, Resize::LongSide(side)))?;
        let style_guide = a.style_mask.as_ref().map(|m| guide(&m.path, img.dimensions(), device)).transpose()?;
        let style = StyleImage { image: to_tensor(&img)?, weight: s.weight, guide: style_guide };
        let key = a.mask.as_ref().map(|m| m.path.as_path());
        match regions.iter_mut().find(|(k, _)| *k == key) {
            Some((_, r)) => r.styles.push(style),
            None => {
                let g = a.mask.as_ref().map(|m| guide(&m.path, size, device)).transpose()?;
                regions.push((key, StyleRegion { guide: g, styles: vec![style] }));
            }
        }
    }
    Ok(regions.into_iter().map(|(_, r)| r).collect())
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
        style_loss: o.style_loss,
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
