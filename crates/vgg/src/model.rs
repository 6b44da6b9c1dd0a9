//! VGG19's feature part: 16 convolutions with ReLU, 5 poolings, and the backward pass to the
//! image that the style-transfer objective needs.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::conv::{Conv3x3, ConvAlgorithm, Rectified};
use crate::imageio::Preprocessing;
use crate::kernel_cache::KernelCache;
use crate::layer::{ConvId, Layer};
use crate::tape::{self, BitMask, PoolArgmax};
use crate::weights::VggWeights;
use crate::{Error, Result};

/// The pooling that ends each block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pooling {
    /// 2×2 max pooling, stride 2: VGG19 as trained.
    #[default]
    Max,
    /// 2×2 average pooling, stride 2: Gatys et al. report "slightly more appealing results".
    Avg,
}

impl Pooling {
    /// Every pooling, for listing valid values.
    pub const ALL: [Pooling; 2] = [Pooling::Max, Pooling::Avg];

    /// The name used in specs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Max => "max",
            Pooling::Avg => "avg",
        }
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Pooling {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        crate::parse_name(s, &Pooling::ALL, Pooling::name, "pooling")
    }
}

/// Activations by layer, each `(N, C, H, W)`.
pub type Features = BTreeMap<Layer, Tensor>;

/// What the backward pass needs from a forward pass, per layer up to the deepest requested. On
/// the CPU only where each ReLU's output was positive (1 bit per value) and each max pooling's
/// argmax (2 bits per output) ([`crate::tape`]); on other devices every ReLU and pooling output.
pub struct Tape {
    relu: Vec<Rectified>,
    pool: Vec<Pooled>,
    input_dims: Vec<usize>,
    device: candle_core::Device,
}

/// What the backward pass knows of a pooling.
enum Pooled {
    /// Its output (its input is the ReLU output before it): other devices.
    Output(Tensor),
    /// Its argmax: max pooling on the CPU.
    Argmax(PoolArgmax),
    /// Its input's shape: average pooling on the CPU needs nothing else.
    Average([usize; 4]),
}

impl Tape {
    /// Bytes of the masks, argmaxes and activations it holds.
    pub fn bytes(&self) -> usize {
        let pool = |p: &Pooled| match p {
            Pooled::Output(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Pooled::Argmax(a) => a.bytes(),
            Pooled::Average(_) => 0,
        };
        self.relu.iter().map(Rectified::bytes).sum::<usize>() + self.pool.iter().map(pool).sum::<usize>()
    }
}

/// VGG19 up to `conv5_4`, with named-layer extraction and the input gradient.
pub struct Vgg19 {
    convs: Vec<Conv3x3>,
    pooling: Pooling,
    preprocessing: Preprocessing,
}

impl Vgg19 {
    /// The network with the given weights, pooling and convolution algorithm.
    pub fn new(weights: &VggWeights, pooling: Pooling, algorithm: ConvAlgorithm) -> Result<Self> {
        let convs = weights
            .convs()
            .iter()
            .map(|w| Conv3x3::new(w.weight.clone(), w.bias.clone(), algorithm))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { convs, pooling, preprocessing: weights.preprocessing() })
    }

    /// Takes the convolutions' Winograd-domain kernels (CPU) from `cache`, where those
    /// transformed by this process are written for the next ([`KernelCache`]).
    pub fn with_kernel_cache(mut self, cache: Arc<KernelCache>) -> Self {
        self.convs = self.convs.into_iter().map(|c| c.with_kernel_cache(cache.clone())).collect();
        self
    }

    /// The preprocessing the weights expect for input images.
    pub fn preprocessing(&self) -> Preprocessing {
        self.preprocessing
    }

    /// The pooling between blocks.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Bytes of Winograd-domain kernels built so far (CPU only).
    pub fn transformed_bytes(&self) -> usize {
        self.convs.iter().map(|c| c.transformed_bytes()).sum()
    }

    fn conv(&self, c: ConvId) -> &Conv3x3 {
        &self.convs[c.ordinal()]
    }

    /// The activations of `layers` for the images `x` of shape `(N, 3, H, W)` (preprocessed), in
    /// one forward pass that stops at the deepest layer requested.
    pub fn features(&self, x: &Tensor, layers: &[Layer]) -> Result<Features> {
        Ok(self.run(x, layers, false)?.0)
    }

    /// Like [`Vgg19::features`], also returning the [`Tape`] that [`Vgg19::backward`] needs.
    pub fn forward_tape(&self, x: &Tensor, layers: &[Layer]) -> Result<(Features, Tape)> {
        let (f, t) = self.run(x, layers, true)?;
        Ok((
            f,
            t.unwrap_or(Tape { relu: vec![], pool: vec![], input_dims: x.dims().to_vec(), device: x.device().clone() }),
        ))
    }

    fn run(&self, x: &Tensor, layers: &[Layer], tape: bool) -> Result<(Features, Option<Tape>)> {
        crate::on_pool(x.device(), || self.run_here(x, layers, tape))
    }

    fn run_here(&self, x: &Tensor, layers: &[Layer], tape: bool) -> Result<(Features, Option<Tape>)> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 {
            return Err(Error::Shape(format!("expected images (N, 3, H, W), got {:?}", x.dims())));
        }
        let mut out = Features::new();
        let Some(deepest) = layers.iter().max().copied() else {
            return Ok((out, None));
        };
        let min_side = 1usize << (deepest.conv().block() - 1 + usize::from(matches!(deepest, Layer::Pool(_))));
        if h < min_side || w < min_side {
            return Err(Error::Shape(format!(
                "an image of {w}×{h} is too small to reach {deepest} (needs at least {min_side}×{min_side})"
            )));
        }
        let mut t = Tape { relu: vec![], pool: vec![], input_dims: x.dims().to_vec(), device: x.device().clone() };
        // On the CPU the tape keeps bits, not activations.
        let compact = x.device().is_cpu();
        let mut cur = x.to_dtype(DType::F32)?;
        for c in ConvId::all() {
            let conv = self.conv(c);
            let r = if layers.contains(&Layer::Conv(c)) {
                let y = conv.forward_with(&cur, false)?;
                out.insert(Layer::Conv(c), y.clone());
                y.relu()?
            } else {
                conv.forward_with(&cur, true)?
            };
            if layers.contains(&Layer::Relu(c)) {
                out.insert(Layer::Relu(c), r.clone());
            }
            if tape {
                t.relu.push(if compact {
                    Rectified::Mask(BitMask::positive(&r)?)
                } else {
                    Rectified::Output(r.clone())
                });
            }
            if deepest <= Layer::Relu(c) {
                break;
            }
            cur = r;
            if c.ends_block() {
                let (p, saved) = self.pool(&cur, tape && compact)?;
                let pl = Layer::Pool(c.block() as u8);
                if layers.contains(&pl) {
                    out.insert(pl, p.clone());
                }
                if tape {
                    t.pool.push(saved.unwrap_or_else(|| Pooled::Output(p.clone())));
                }
                if deepest <= pl {
                    break;
                }
                cur = p;
            }
        }
        Ok((out, tape.then_some(t)))
    }

    /// The pooling of `x`, and with `compact` what its backward pass needs on the CPU.
    fn pool(&self, x: &Tensor, compact: bool) -> Result<(Tensor, Option<Pooled>)> {
        Ok(match (self.pooling, compact) {
            (Pooling::Max, true) => {
                let (p, a) = tape::max_pool_argmax(x)?;
                (p, Some(Pooled::Argmax(a)))
            }
            (Pooling::Max, false) => (x.max_pool2d(2)?, None),
            (Pooling::Avg, true) => {
                let (n, c, h, w) = x.dims4()?;
                (x.avg_pool2d(2)?, Some(Pooled::Average([n, c, h, w])))
            }
            (Pooling::Avg, false) => (x.avg_pool2d(2)?, None),
        })
    }

    /// Gradient with respect to the input of the forward pass recorded in `tape` of
    /// `Σ_l ⟨grads[l], features[l]⟩`: each `grads[l]` is the derivative of a loss with respect to
    /// the activation of layer `l` (same shape). Returns `(N, 3, H, W)`. Only the image gradient
    /// is computed (the weights are frozen).
    pub fn backward(&self, tape: &Tape, grads: BTreeMap<Layer, Tensor>) -> Result<Tensor> {
        crate::on_pool(&tape.device, || self.backward_here(tape, grads))
    }

    fn backward_here(&self, tape: &Tape, grads: BTreeMap<Layer, Tensor>) -> Result<Tensor> {
        let Some(deepest) = grads.keys().max().copied() else {
            return Ok(Tensor::zeros(tape.input_dims.as_slice(), DType::F32, &tape.device)?);
        };
        let last = deepest.conv();
        if tape.relu.len() <= last.ordinal() {
            return Err(Error::Shape(format!("the forward pass did not reach {deepest}")));
        }
        // Each layer's gradient is dropped once added: at block 1 only its own are alive.
        let mut grads = grads;
        let mut add = |g: Option<Tensor>, l: Layer| -> Result<Option<Tensor>> {
            Ok(match (g, grads.remove(&l)) {
                (Some(g), Some(d)) => Some((g + d)?),
                (None, Some(d)) => Some(d),
                (g, None) => g,
            })
        };
        let mut g: Option<Tensor> = None;
        for c in ConvId::all().take(last.ordinal() + 1).collect::<Vec<_>>().into_iter().rev() {
            let r = &tape.relu[c.ordinal()];
            if c.ends_block() && Layer::Pool(c.block() as u8) <= deepest {
                g = add(g, Layer::Pool(c.block() as u8))?;
                if let Some(gp) = g.take() {
                    g = Some(self.pool_backward(&gp, r, &tape.pool[c.block() - 1])?);
                }
            }
            g = add(g, Layer::Relu(c))?;
            let conv = self.conv(c);
            g = match (g, add(None, Layer::Conv(c))?) {
                (Some(g), None) => Some(conv.input_grad(&g, Some(r))?),
                (g, Some(gc)) => {
                    let gy = match (g, r) {
                        (Some(g), Rectified::Mask(m)) => m.masked_add(&g, &gc)?,
                        (Some(g), Rectified::Output(r)) => ((g * r.gt(0f32)?.to_dtype(DType::F32)?)? + gc)?,
                        (None, _) => gc,
                    };
                    Some(conv.input_grad(&gy, None)?)
                }
                (None, None) => None,
            };
        }
        match g {
            Some(g) => Ok(g),
            None => Err(Error::Shape("no gradient reached the image".into())),
        }
    }

    /// Gradient through a 2×2, stride-2 pooling from `grad` (`(N, C, H/2, W/2)`) at its output
    /// to its input (`(N, C, H, W)`, the output of ReLU `input`; odd rows and columns are
    /// dropped by the pooling and get zero). Max pooling routes the gradient to the window's
    /// maximum: on the CPU the first in reading order, as PyTorch; on other devices to every
    /// position equal to it (exact ties only happen between ReLU zeros, whose gradient the
    /// next ReLU mask clears).
    fn pool_backward(&self, grad: &Tensor, input: &Rectified, saved: &Pooled) -> Result<Tensor> {
        let (input, output) = match (saved, input) {
            (Pooled::Argmax(a), _) => return tape::max_pool_backward(grad, a),
            (Pooled::Average(dims), _) => return tape::avg_pool_backward(grad, *dims),
            (Pooled::Output(p), Rectified::Output(r)) => (r, p),
            (Pooled::Output(_), Rectified::Mask(_)) => {
                return Err(Error::Shape("a pooling output kept with a ReLU mask: tapes are per device".into()))
            }
        };
        let (_, _, h, w) = input.dims4()?;
        let (hp, wp) = (h / 2, w / 2);
        let up_g = grad.upsample_nearest2d(2 * hp, 2 * wp)?;
        let g = match self.pooling {
            Pooling::Max => {
                let up_p = output.upsample_nearest2d(2 * hp, 2 * wp)?;
                let inner = input.narrow(2, 0, 2 * hp)?.narrow(3, 0, 2 * wp)?;
                (up_g * inner.eq(&up_p)?.to_dtype(DType::F32)?)?
            }
            Pooling::Avg => (up_g * 0.25)?,
        };
        Ok(g.pad_with_zeros(2, 0, h - 2 * hp)?.pad_with_zeros(3, 0, w - 2 * wp)?)
    }
}
