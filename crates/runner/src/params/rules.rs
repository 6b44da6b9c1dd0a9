//! Checks between the parameters of one run, applied identically to spec values, sweep values
//! and command-line overrides, after every layer is applied (so the order of keys never
//! matters), and the defaults that depend on other parameters.

use super::{Choice, ColorControl, OptimizerKind, RunParams};
use crate::params::Init;

/// Why `key` does not apply to run `p` (it is then refused when given, and left out of the
/// resolved record), or `None` when it applies.
pub fn not_applicable(key: &str, p: &RunParams) -> Option<String> {
    match key {
        "history" | "line_search" | "guard" if p.optimizer.optimizer != OptimizerKind::Lbfgs => {
            Some(format!("`{key}` applies to L-BFGS only, and this run's optimizer is {}", p.optimizer.optimizer))
        }
        "carry_moments" if p.optimizer.optimizer != OptimizerKind::Adam || p.geometry.scales.is_none() => {
            Some("`carry_moments` applies to Adam with `scales` only".to_string())
        }
        _ => None,
    }
}

/// One refused combination: the keys involved (the first is where the error is reported) and
/// what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The keys involved.
    pub keys: Vec<&'static str>,
    /// What is wrong and what would be valid.
    pub message: String,
}

fn conflict(keys: &[&'static str], message: impl Into<String>) -> Conflict {
    Conflict { keys: keys.to_vec(), message: message.into() }
}

/// Every refused combination in `p`. `given(key)` says where a key was set (`[sweep]`), or
/// `None` where it keeps its default.
pub fn check(p: &RunParams, given: &dyn Fn(&str) -> Option<String>) -> Vec<Conflict> {
    let mut out = Vec::new();
    let g = &p.geometry;
    if g.width.is_some() != g.height.is_some() {
        out.push(conflict(&["width", "height"], "give both width and height, or neither (and size)"));
    }
    if let (Some(s), Some(wh)) = (given("size"), given("width").or_else(|| given("height"))) {
        out.push(conflict(
            &["size", "width"],
            format!("size (from {s}) and width/height (from {wh}) both set the output size: give one"),
        ));
    }
    let content = p.inputs.content.0.is_some();
    let o = &p.objective;
    if !o.content_layers.0.is_empty() && !content {
        out.push(conflict(
            &["content_layers", "content"],
            "content layers need a content image (or set content_layers = [])",
        ));
    }
    if p.controls.preserve_colors != ColorControl::None && !content {
        out.push(conflict(
            &["preserve_colors", "content"],
            format!(
                "preserve_colors = \"{}\" keeps the photograph's colours and needs a content image (or set preserve_colors = \"none\")",
                p.controls.preserve_colors.name()
            ),
        ));
    }
    match p.start.init {
        Init::Content if !content => out.push(conflict(
            &["init", "content"],
            "init = \"content\" needs a content image (valid: content, style, noise, an image)",
        )),
        _ => {}
    }
    let n = o.style_layers.0.len();
    if let Some(w) = &o.style_layer_weights {
        if o.style_layers.inline_weights().is_some() {
            out.push(conflict(
                &["style_layer_weights", "style_layers"],
                "style layer weights are given twice: inline in style_layers and in style_layer_weights; give one",
            ));
        } else if w.0.len() != n {
            out.push(conflict(
                &["style_layer_weights", "style_layers"],
                format!("{} weights for {n} style layers", w.0.len()),
            ));
        }
    }
    if objective_is_zero(p) {
        out.push(conflict(
            &["content_weight", "style_weight", "tv_weight"],
            "nothing to optimise: no content term (no content layer, image or weight), no style term (no style \
             layer or weight) and no tv weight",
        ));
    }
    match p.stages((p.long_side(), p.long_side())) {
        Err(e) => out.push(conflict(&["scales"], format!("{}{}", e.at, e.message))),
        Ok(stages) => {
            if let Some(n) = p.optimizer.iterations.stages().filter(|n| *n != stages.len()) {
                let sides: Vec<String> = stages.iter().map(|s| s.side.to_string()).collect();
                out.push(conflict(
                    &["iterations", "scales"],
                    format!(
                        "{n} iteration counts for {} stages ({} px): give one per stage, or one number, or {{ first, rest }}",
                        stages.len(),
                        sides.join(", ")
                    ),
                ));
            }
        }
    }
    for key in ["history", "line_search", "guard", "carry_moments"] {
        if let (Some(from), Some(why)) = (given(key), not_applicable(key, p)) {
            out.push(conflict(&[key_static(key)], format!("{why} (set in {from}); remove it")));
        }
    }
    out
}

fn key_static(key: &str) -> &'static str {
    super::param(key).map(|p| p.key).unwrap_or("?")
}

/// Whether every term of the objective has weight zero.
fn objective_is_zero(p: &RunParams) -> bool {
    let o = &p.objective;
    let content = !o.content_layers.0.is_empty() && p.inputs.content.0.is_some() && o.content_weight.0 > 0.0;
    let layer_weights = p.style_layer_weights();
    let style = !o.style_layers.0.is_empty()
        && o.style_weight.0 > 0.0
        && layer_weights.is_none_or(|w| w.iter().any(|x| *x > 0.0));
    !(content || style || o.tv_weight.0 > 0.0)
}
