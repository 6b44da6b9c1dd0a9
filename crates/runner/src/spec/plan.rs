//! From parsed layers to the plan: counting runs before expanding them, expanding sweeps,
//! applying command-line overrides, checking each run, and naming it.

use std::collections::BTreeMap;

use toml::Value;

use super::{Axis, Cx, Given, Origin, PlannedRun, RunTemplate, Swept};
use crate::diag::{Diagnostic, Diagnostics};
use crate::params::{self, rules, Param, Positive, RunParams};

/// Names a run or experiment cannot have: the files an experiment folder holds besides its runs.
pub const RESERVED_NAMES: &[&str] = &["summary.csv", "grid.png", "curves.png", "index.html"];

/// Longest run or experiment name, in bytes (file systems allow 255; room for temporary names).
pub const MAX_NAME_BYTES: usize = 200;

/// Limits on a plan.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The most runs one spec may expand to (`--max-runs`).
    pub max_runs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_runs: 10_000 }
    }
}

/// Why `s` cannot name a run or an experiment (a folder), or `None`.
pub fn name_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("a name cannot be empty".into());
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.=+".contains(c)) || s.starts_with('.') {
        return Some(format!("`{s}` is not a name: letters, digits, `_`, `-`, `.`, `=`, `+`, not starting with `.`"));
    }
    if s.len() > MAX_NAME_BYTES {
        return Some(format!("a name of {} bytes is too long: at most {MAX_NAME_BYTES}", s.len()));
    }
    if RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(s)) {
        return Some(format!("`{s}` is reserved for an experiment's own files ({})", RESERVED_NAMES.join(", ")));
    }
    None
}

/// Command-line values applied to every run after the spec, replacing the spec's.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    items: Vec<Override>,
    problems: Diagnostics,
}

#[derive(Clone, Debug)]
struct Override {
    param: &'static Param,
    value: Value,
}

impl Overrides {
    /// Adds `--KEY TEXT` (`text` read as a flag value: [`params::flag_value`]); a problem is
    /// kept and reported with the spec's.
    pub fn set(&mut self, key: &str, text: &str) {
        let flag = format!("--{}", key.replace('_', "-"));
        self.add(key, &flag, params::flag_value(text), &format!("`{text}`"));
    }

    /// Adds a value given as TOML (for arguments that are not one flag's text), named `flag` in
    /// problems.
    pub fn set_value(&mut self, key: &str, flag: &str, value: toml::Value) {
        self.add(key, flag, value, "the value");
    }

    fn add(&mut self, key: &str, flag: &str, value: toml::Value, shown: &str) {
        let diag =
            |message: String| Diagnostic { file: "command line".into(), path: flag.into(), message, location: None };
        let Some(param) = params::param(key) else {
            self.problems
                .push(diag(format!("no parameter `{key}`; {}", crate::diag::did_you_mean(key, params::keys()))));
            return;
        };
        match (param.set)(&mut RunParams::default(), &value) {
            Ok(()) => self.items.push(Override { param, value }),
            Err(p) => self.problems.push(diag(format!("{shown}{}: {}", p.at, p.message))),
        }
    }

    /// Whether no override was given.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(super) fn check(&self, diags: &mut Diagnostics) {
        for d in &self.problems.items {
            diags.push(d.clone());
        }
    }

    fn apply(&self, p: &mut RunParams, given: &mut BTreeMap<&'static str, Given>) {
        for o in &self.items {
            let flag = format!("--{}", o.param.key.replace('_', "-"));
            // Validated in `set`.
            let _ = (o.param.set)(p, &o.value);
            given.insert(o.param.key, Given { origin: Origin::CommandLine, path: flag });
            if o.param.key == "size" {
                // `--size` replaces the spec's width and height (documented precedence).
                p.geometry.width = None;
                p.geometry.height = None;
                given.remove("width");
                given.remove("height");
            }
        }
    }
}

/// How many runs the templates expand to, or `None` past `u64`.
fn count(runs: &[RunTemplate], top_sweep: &[Axis]) -> Option<u64> {
    let top = top_sweep.iter().try_fold(1u64, |n, a| n.checked_mul(a.values.len() as u64))?;
    runs.iter().try_fold(0u64, |total, r| {
        let own = r.sweep.iter().try_fold(top, |n, a| n.checked_mul(a.values.len() as u64))?;
        total.checked_add(own)
    })
}

/// Expands every run's sweeps into planned runs, checked and named. The number of runs is
/// counted and limited before anything is expanded.
pub(super) fn expand(
    cx: &mut Cx,
    runs: &[RunTemplate],
    top_sweep: &[Axis],
    overrides: &Overrides,
    limits: &Limits,
) -> Vec<PlannedRun> {
    let n = count(runs, top_sweep);
    if n.is_none_or(|n| n > limits.max_runs) {
        let n = n.map_or("more than 2^64".to_string(), |n| n.to_string());
        let at = if top_sweep.is_empty() { "run" } else { "sweep" };
        cx.err(at, format!("this spec expands to {n} runs, more than the limit of {}: sweep fewer values, or raise the limit with --max-runs", limits.max_runs));
        return vec![];
    }
    let mut out = Vec::new();
    for run in runs {
        let axes: Vec<&Axis> = top_sweep.iter().chain(&run.sweep).collect();
        let mut combo = vec![0usize; axes.len()];
        loop {
            out.push(instantiate(cx, run, &axes, &combo, overrides));
            if !next_combination(&mut combo, &axes) {
                break;
            }
        }
    }
    check_unique_names(cx, &out);
    out
}

/// Advances `combo` like an odometer (the last axis fastest); false after the last.
fn next_combination(combo: &mut [usize], axes: &[&Axis]) -> bool {
    for i in (0..combo.len()).rev() {
        combo[i] += 1;
        if combo[i] < axes[i].values.len() {
            return true;
        }
        combo[i] = 0;
    }
    false
}

fn instantiate(cx: &mut Cx, run: &RunTemplate, axes: &[&Axis], combo: &[usize], overrides: &Overrides) -> PlannedRun {
    let mut params = run.params.clone();
    let mut given = run.given.clone();
    let mut swept = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    if !run.name.is_empty() {
        parts.push(run.name.clone());
    }
    for (axis, &i) in axes.iter().zip(combo) {
        let v = &axis.values[i];
        // Each value was checked when the sweep was read.
        let _ = (axis.param.set)(&mut params, &v.value);
        given.insert(axis.param.key, Given { origin: axis.origin.clone(), path: v.path.clone() });
        swept.push(Swept { key: axis.param.key.into(), label: v.label.clone() });
        parts.push(format!("{}={}", axis.param.key, v.label));
    }
    overrides.apply(&mut params, &mut given);
    let name = if parts.is_empty() { "run".to_string() } else { sanitize(&parts.join("_")) };
    let label = if parts.is_empty() { name.clone() } else { parts.join(", ") };
    let where_ = |k: &str| given.get(k).map(|g| g.origin.to_string());
    for c in rules::check(&params, &where_) {
        let path = c.keys.iter().find_map(|k| given.get(k)).map_or_else(|| format!("run `{name}`"), |g| g.path.clone());
        cx.err(&path, format!("run `{name}`: {}", c.message));
    }
    if let Some(why) = name_problem(&name) {
        cx.err(
            &run_path(run),
            format!("run `{label}`: {why}; give the run a shorter explicit name ([[run]] name = ...)"),
        );
    }
    resolve(&mut params);
    PlannedRun { name, label, params, swept, given }
}

fn run_path(run: &RunTemplate) -> String {
    if run.name.is_empty() {
        "sweep".into()
    } else {
        format!("run `{}`", run.name)
    }
}

/// Defaults that depend on other parameters, made explicit so the record shows them: the size
/// (512 unless width and height are given) and the learning rate (per optimizer).
fn resolve(p: &mut RunParams) {
    let g = &mut p.geometry;
    if g.size.is_none() && g.width.is_none() && g.height.is_none() {
        g.size = Some(params::types::Int(512));
    }
    let lr = p.learning_rate();
    p.optimizer.learning_rate = Some(Positive::from_f64(lr));
}

fn check_unique_names(cx: &mut Cx, runs: &[PlannedRun]) {
    let mut seen = std::collections::HashMap::new();
    for r in runs {
        if let Some(first) = seen.insert(r.name.as_str(), r.label.as_str()) {
            cx.err(
                "run",
                format!("two runs are named `{}` ({first} and {}); give explicit runs distinct names", r.name, r.label),
            );
        }
    }
}

/// Keys whose values differ between runs, in documentation order.
pub(super) fn varying_keys(runs: &[PlannedRun]) -> Vec<String> {
    params::PARAMS
        .iter()
        .filter(|p| runs.windows(2).any(|w| (p.get)(&w[0].params) != (p.get)(&w[1].params)))
        .map(|p| p.key.to_string())
        .collect()
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.=+".contains(c) { c } else { '_' }).collect()
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

impl super::Experiment {
    /// The plan as a spec: one `[[run]]` per run with every parameter. It parses back to the
    /// same plan (`--dry-run` prints it).
    pub fn to_spec(&self) -> String {
        let mut top = toml::Table::new();
        top.insert("name".into(), Value::String(self.name.clone()));
        if !self.description.is_empty() {
            top.insert("description".into(), Value::String(self.description.clone()));
        }
        let runs = self
            .runs
            .iter()
            .map(|r| {
                let mut t = toml::Table::new();
                t.insert("name".into(), Value::String(r.name.clone()));
                t.extend(r.params.to_table());
                Value::Table(t)
            })
            .collect();
        top.insert("run".into(), Value::Array(runs));
        let labels: Vec<String> = self.runs.iter().map(|r| format!("#   {}: {}", r.name, r.label)).collect();
        format!(
            "# {} runs of `{}`, every parameter resolved (runner --dry-run); it runs as it is.\n{}\n\n{}",
            self.runs.len(),
            self.name,
            labels.join("\n"),
            toml::to_string(&top).unwrap_or_default()
        )
    }
}
