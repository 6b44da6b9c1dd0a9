//! Checking every input of a plan before anything runs: images exist, hash and decode; weights
//! files exist; devices open. Every problem is reported at once, each at its key in the spec.

use std::collections::BTreeSet;

use crate::device::resolve_device;
use crate::diag::Diagnostics;
use crate::params::Init;
use crate::spec::{Experiment, PlannedRun};
use crate::{Error, Result};

use super::Session;

/// The spec path of `key` in run `r` (where it was set), or the run itself.
fn path_of(r: &PlannedRun, key: &str) -> String {
    r.given.get(key).map_or_else(|| format!("run `{}`: {key} (default)", r.name), |g| g.path.clone())
}

/// Checks every input of `exp`; all problems at once.
pub fn preflight(session: &Session, exp: &Experiment) -> Result<()> {
    let mut diags = Diagnostics::default();
    let mut seen = BTreeSet::new();
    for r in &exp.runs {
        let p = &r.params;
        let mut images: Vec<(&str, &str)> = p.inputs.style.0.iter().map(|s| ("style", s.image.0.as_str())).collect();
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
                diags.push(exp.diagnostic(&path_of(r, key), format!("{key} = {name:?}: {}", crate::error::chain(&e))));
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
        Ok(())
    } else {
        Err(Error::Spec(Box::new(diags)))
    }
}
