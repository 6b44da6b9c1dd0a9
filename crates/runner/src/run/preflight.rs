//! Checking every input of a plan before anything runs: images exist, hash and decode; weights
//! files exist; devices open; each run's estimated peak memory fits the memory available
//! ([`super::memory`]). Every problem is reported at once, each at its key in the spec.

use std::collections::BTreeSet;

use crate::device::resolve_device;
use crate::diag::Diagnostics;
use crate::params::Init;
use crate::spec::{Experiment, PlannedRun};
use crate::{Error, Result};

use super::memory::{self, MemoryEstimate};
use super::Session;

/// The output size of run `p`: from the content image's header and the size rule.
fn output_size(session: &Session, p: &crate::params::RunParams) -> Option<(u32, u32)> {
    let content = match &p.inputs.content.0 {
        Some(c) => Some(image::image_dimensions(&session.image(&c.0).ok()?.path).ok()?),
        None => None,
    };
    Some(p.output_size(content))
}

fn memory_message(c: &Checked, avail: f64) -> String {
    let gib = |m: f64| m / 1024.0;
    format!(
        "at {}×{} this run needs about {:.1} GiB (of which {:.1} GiB the optimizer's stored vectors), and {:.1} GiB \
         are available: lower `size`, or `history` (L-BFGS keeps two image-sized vectors per step of history), or \
         pass --no-memory-check to run anyway",
        c.width,
        c.height,
        gib(c.memory.peak_mib),
        gib(c.memory.optimizer_mib),
        gib(avail)
    )
}

/// The spec path of `key` in run `r` (where it was set), or the run itself.
fn path_of(r: &PlannedRun, key: &str) -> String {
    r.given.get(key).map_or_else(|| format!("run `{}`: {key} (default)", r.name), |g| g.path.clone())
}

/// Why stage `s` is too small for the deepest layer of run `p` (which needs 2^(block − 1)
/// pixels on each side, twice that after its block's pooling), or `None`.
fn too_small(p: &crate::params::RunParams, s: &crate::params::Stage) -> Option<String> {
    let deepest = memory::deepest(p)?;
    let need = 1u32 << (deepest.conv().block() - 1 + usize::from(matches!(deepest, vgg::Layer::Pool(_))));
    (s.width.min(s.height) < need).then(|| {
        format!(
            "the stage at {} px is {}×{}: {deepest} needs at least {need} px on each side (start the scales later)",
            s.side, s.width, s.height
        )
    })
}

/// What preflight learnt of a run.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The output's width in pixels.
    pub width: u32,
    /// The output's height in pixels.
    pub height: u32,
    /// Its estimated peak memory.
    pub memory: MemoryEstimate,
}

/// Checks every input of `exp` and, when `check_memory`, that each run's estimated peak memory
/// fits the memory available; all problems at once. Returns each run's size and estimate.
pub fn preflight(session: &Session, exp: &Experiment, check_memory: bool) -> Result<Vec<Checked>> {
    let mut diags = Diagnostics::default();
    let mut seen = BTreeSet::new();
    let available = memory::available_mib();
    let mut checked = Vec::new();
    for r in &exp.runs {
        let c = output_size(session, &r.params).map(|(width, height)| Checked {
            width,
            height,
            memory: memory::estimate(&r.params, width, height),
        });
        if let (true, Some(c), Some(avail)) = (check_memory, &c, available) {
            if c.memory.peak_mib > avail {
                diags.push(exp.diagnostic(&path_of(r, "size"), memory_message(c, avail)));
            }
        }
        let size = c.as_ref().map(|c| (c.width, c.height));
        checked.extend(c);
        let p = &r.params;
        // Every stage's size (the output's alone without `scales`); the plan refused schedules
        // that do not expand.
        let stages = size.and_then(|size| p.stages(size).ok()).unwrap_or_default();
        if let Some(why) = stages.iter().find_map(|s| too_small(p, s)) {
            diags.push(exp.diagnostic(&path_of(r, if p.geometry.scales.is_some() { "scales" } else { "size" }), why));
        }
        let mut images: Vec<(&str, &str)> = Vec::new();
        for s in &p.inputs.style.0 {
            images.push(("style", s.image.0.as_str()));
            images.extend(s.mask.iter().chain(&s.style_mask).map(|m| ("style", m.0.as_str())));
            let side = |st: &crate::params::Stage| super::inputs::style_side(p, s.scale.0, (st.width, st.height));
            if let Some(e) = stages.iter().find_map(|st| side(st).err()) {
                diags.push(exp.diagnostic(&path_of(r, "style_scale"), crate::error::chain(&e)));
            }
        }
        images.extend(p.inputs.content.0.as_ref().map(|c| ("content", c.0.as_str())));
        if let Init::Image(i) = &p.start.init {
            images.push(("init", i.0.as_str()));
        }
        for (key, name) in images {
            if !seen.insert(format!("image {name}")) {
                continue;
            }
            let checked = session.image(name).and_then(|a| Ok(vgg::imageio::load_rgb(&a.path)?));
            if let Err(e) = checked {
                // The key and the name are said once, here.
                let why = match &e {
                    Error::Asset { message, .. } => message.clone(),
                    other => crate::error::chain(other),
                };
                diags.push(exp.diagnostic(&path_of(r, key), format!("{key} = {name:?}: {why}")));
            }
        }
        if seen.insert(format!("device {}", p.output.device)) {
            if let Err(e) = resolve_device(p.output.device) {
                diags.push(exp.diagnostic(&path_of(r, "device"), crate::error::chain(&e)));
            }
        }
        if let Some(w) = &p.inputs.weights.0 {
            if seen.insert(format!("weights {w}")) && !std::path::Path::new(w).is_file() {
                diags.push(exp.diagnostic(&path_of(r, "weights"), format!("weights = {w:?}: no such file")));
            }
        }
    }
    if diags.is_empty() {
        Ok(checked)
    } else {
        Err(Error::Spec(Box::new(diags)))
    }
}
