//! A run's checkpoint: the current image, the optimizer's whole state (L-BFGS history
//! included) and the losses so far, written every `checkpoint_interval` seconds and when the
//! run is interrupted, so that the next invocation continues the run instead of starting over.
//!
//! Two files in the run's folder: `checkpoint.safetensors` (the image as `x` and the optimizer's
//! tensors as `opt/<name>`) and `checkpoint.toml` (the run's identity, the step, the seconds,
//! the optimizer's numbers and the loss rows), each written atomically, the TOML last: it names
//! the step the tensors belong to, and a checkpoint is used only when both agree and the
//! identity is the run's.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use losses::Terms;
use toml::{Table, Value};

use super::optimise::LossRow;
use crate::fsutil::write_atomic;
use crate::{Error, Result};

const TENSORS: &str = "checkpoint.safetensors";
const RECORD: &str = "checkpoint.toml";

/// Where a run stands.
pub(super) struct Checkpoint {
    /// The stage it was taken at (0: the first; single-scale runs have only that one).
    pub stage: usize,
    /// The step that stage started at.
    pub first_step: usize,
    /// Evaluations of the stages before it.
    pub evals_before: usize,
    /// Steps made, all stages'.
    pub step: usize,
    /// Seconds of optimisation so far.
    pub seconds: f64,
    /// The current image, `(1, 3, H, W)`.
    pub x: Tensor,
    /// The losses so far.
    pub rows: Vec<LossRow>,
    /// The optimizer's state.
    pub state: optim::State,
    /// The average of the iterates, with `average`.
    pub average: Option<super::optimise::Average>,
}

fn layers_value(v: &[(vgg::Layer, f64)]) -> Value {
    Value::Array(v.iter().map(|(l, x)| Value::Array(vec![Value::String(l.to_string()), Value::Float(*x)])).collect())
}

fn row_value(r: &LossRow) -> Value {
    let t = &r.terms;
    let mut m = Table::new();
    m.insert("iteration".into(), Value::Integer(r.iteration as i64));
    m.insert("scale".into(), Value::Integer(i64::from(r.scale)));
    m.insert("evals".into(), Value::Integer(r.evals as i64));
    m.insert("seconds".into(), Value::Float(r.seconds));
    for (k, v) in [("total", t.total), ("content", t.content), ("style", t.style), ("tv", t.tv)] {
        m.insert(k.into(), Value::Float(v));
    }
    m.insert("content_layers".into(), layers_value(&t.content_layers));
    m.insert("style_layers".into(), layers_value(&t.style_layers));
    Value::Table(m)
}

/// Whether `dir` holds a checkpoint (of whatever identity).
pub(super) fn exists(dir: &Path) -> bool {
    dir.join(RECORD).is_file()
}

/// Writes the checkpoint of run `id` into `dir`.
pub(super) fn save(dir: &Path, id: &str, c: &Checkpoint) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> =
        c.state.tensors.iter().map(|(k, t)| (format!("opt/{k}"), t.clone())).collect();
    tensors.insert("x".into(), c.x.clone());
    if let Some(a) = &c.average {
        tensors.insert("average".into(), a.sum.clone());
    }
    let tmp = tempfile::Builder::new().prefix(".partial-").tempfile_in(dir).map_err(Error::io(dir))?;
    candle_core::safetensors::save(&tensors, tmp.path())?;
    tmp.persist(dir.join(TENSORS)).map_err(|e| Error::Io { path: dir.join(TENSORS), source: e.error })?;
    let mut t = Table::new();
    t.insert("id".into(), Value::String(id.into()));
    t.insert("step".into(), Value::Integer(c.step as i64));
    t.insert("stage".into(), Value::Integer(c.stage as i64));
    t.insert("first_step".into(), Value::Integer(c.first_step as i64));
    t.insert("evals_before".into(), Value::Integer(c.evals_before as i64));
    t.insert("seconds".into(), Value::Float(c.seconds));
    t.insert(
        "numbers".into(),
        Value::Table(c.state.numbers.iter().map(|(k, v)| (k.clone(), Value::Float(*v))).collect()),
    );
    t.insert("rows".into(), Value::Array(c.rows.iter().map(row_value).collect()));
    if let Some(a) = &c.average {
        let mut m = Table::new();
        m.insert("decay".into(), Value::Float(a.decay));
        m.insert("steps".into(), Value::Integer(a.steps as i64));
        t.insert("average".into(), Value::Table(m));
    }
    let text = toml::to_string(&t).map_err(|e| Error::Run(format!("cannot write the checkpoint: {e}")))?;
    write_atomic(&dir.join(RECORD), text.as_bytes())
}

fn layers_of(v: Option<&Value>) -> Option<Vec<(vgg::Layer, f64)>> {
    v?.as_array()?
        .iter()
        .map(|p| {
            let p = p.as_array()?;
            Some((p.first()?.as_str()?.parse().ok()?, p.get(1)?.as_float()?))
        })
        .collect()
}

fn row_of(v: &Value) -> Option<LossRow> {
    let num = |k: &str| v.get(k).and_then(|x| x.as_float());
    let int = |k: &str| v.get(k).and_then(|x| x.as_integer()).and_then(|i| usize::try_from(i).ok());
    Some(LossRow {
        iteration: int("iteration")?,
        scale: u32::try_from(int("scale")?).ok()?,
        evals: int("evals")?,
        seconds: num("seconds")?,
        terms: Terms {
            total: num("total")?,
            content: num("content")?,
            style: num("style")?,
            tv: num("tv")?,
            content_layers: layers_of(v.get("content_layers"))?,
            style_layers: layers_of(v.get("style_layers"))?,
        },
    })
}

/// The checkpoint of run `id` in `dir`, on `device`; `None` when there is none, it belongs to
/// another identity, or it cannot be read (the run then starts over).
pub(super) fn load(dir: &Path, id: &str, device: &Device) -> Option<Checkpoint> {
    let t: Table = std::fs::read_to_string(dir.join(RECORD)).ok()?.parse().ok()?;
    if t.get("id")?.as_str()? != id {
        return None;
    }
    let mut tensors = candle_core::safetensors::load(dir.join(TENSORS), device).ok()?;
    let x = tensors.remove("x")?;
    let average = match (t.get("average"), tensors.remove("average")) {
        (Some(a), Some(sum)) => Some(super::optimise::Average {
            decay: a.get("decay")?.as_float()?,
            sum,
            steps: usize::try_from(a.get("steps")?.as_integer()?).ok()?,
        }),
        (None, None) => None,
        _ => return None,
    };
    let state = optim::State {
        tensors: tensors.into_iter().filter_map(|(k, v)| Some((k.strip_prefix("opt/")?.to_string(), v))).collect(),
        numbers: t
            .get("numbers")?
            .as_table()?
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_float()?)))
            .collect::<Option<_>>()?,
    };
    let count = |k: &str| usize::try_from(t.get(k)?.as_integer()?).ok();
    Some(Checkpoint {
        stage: count("stage")?,
        first_step: count("first_step")?,
        evals_before: count("evals_before")?,
        step: count("step")?,
        seconds: t.get("seconds")?.as_float()?,
        x,
        rows: t.get("rows")?.as_array()?.iter().map(row_of).collect::<Option<_>>()?,
        state,
        average,
    })
}

/// Removes the checkpoint of a completed run.
pub(super) fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(RECORD));
    let _ = std::fs::remove_file(dir.join(TENSORS));
}
