//! The objective of Gatys, Ecker and Bethge (CVPR 2016): a weighted sum of a content loss on
//! VGG19 features, a style loss, and (an addition of later work) total variation; with the
//! controls of Gatys et al. (CVPR 2017): guided style regions, and style losses beyond the Gram
//! matrix (means and covariances, the 2-Wasserstein distance between Gaussians).
//!
//! Reads top to bottom: [`gram`] and the per-layer losses ([`content_loss`], [`style_loss`],
//! [`tv_loss`]), each returning its value and its gradient; the style term in its three forms
//! over guided regions ([`style_term`], with [`linalg`] for its matrix square roots); the
//! precomputed [`Targets`]; and the [`Objective`], which runs VGG19 forward, sums the terms, and
//! backpropagates to the pixels.
//!
//! Notation: for one layer, `F` is the generated image's activation seen as an `N × M` matrix
//! (`N` channels, `M = H·W` positions), `P` the content image's, `G = F Fᵀ` the (unnormalised)
//! Gram matrix and `A` the style image's Gram matrix.
#![deny(missing_docs)]

mod error;
mod form;
pub mod linalg;
mod objective;
mod products;
mod style;
mod terms;

pub use error::{Error, Result};
pub use form::LossForm;
pub use objective::{
    guide_at, Evaluation, NetworkPass, Objective, ObjectiveConfig, StyleImage, StyleRegion, Targets, Terms,
};
pub use style::{style_term, Moments, StyleLoss, StyleTarget, MIN_MASS};
pub use terms::{content_loss, gram, style_loss, tv_loss};
