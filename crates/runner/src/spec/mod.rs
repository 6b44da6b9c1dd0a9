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
//! Precedence, from low to high: built-in defaults, `[defaults]`, then each run's own values:
//! its `[[run]]` keys, the top-level `[sweep]` and its `[run.sweep]` (a key may be given in only
//! one of these three; two are refused), then command-line overrides, which replace spec values
//! in every run (`--size` also replaces `width` and `height`). Each key sets its own parameter
//! only, so the order of keys never matters. The full reference is `docs/experiments.md`.

mod plan;
pub mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::diag::{Diagnostic, Diagnostics};
use crate::params::{self, types::did_you_mean, Param, RunParams};
use crate::{Error, Result};
pub use plan::{format_float, label, Limits, Overrides, RESERVED_NAMES};
use source::SourceMap;

/// The top-level keys of a spec.
const TOP_KEYS: &[&str] = &["name", "description", "defaults", "sweep", "run"];

/// Where a parameter's value was set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The spec's `[defaults]`.
    Defaults,
    /// The spec's top-level `[sweep]`.
    Sweep,
    /// A `[[run]]` table (its name).
    Run(String),
    /// A `[run.sweep]` (its run's name).
    RunSweep(String),
    /// A command-line flag.
    CommandLine,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Defaults => f.write_str("[defaults]"),
            Origin::Sweep => f.write_str("[sweep]"),
            Origin::Run(n) => write!(f, "[[run]] `{n}`"),
            Origin::RunSweep(n) => write!(f, "[run.sweep] of `{n}`"),
            Origin::CommandLine => f.write_str("the command line"),
        }
    }
}

/// Where a key of a run was set: the layer and the key's path in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Given {
    /// The layer.
    pub origin: Origin,
    /// The dotted path (`run[0].sweep.seed[1]`), for positions in errors.
    pub path: String,
}

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
    /// Keys whose values differ between runs, in documentation order.
    pub varying_keys: Vec<String>,
    /// Where keys are in the spec's text, for later diagnostics.
    pub source: std::sync::Arc<SourceMap>,
}

impl Experiment {
    /// A diagnostic at `path` of the spec (a key path from [`PlannedRun::given`]).
    pub fn diagnostic(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.display().to_string(),
            path: path.into(),
            message: message.into(),
            location: self.source.locate(path, false),
        }
    }
}

/// One swept value of a run: the key and the value's short label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swept {
    /// The parameter.
    pub key: String,
    /// Its value, as in the run's name (`relu1_1+relu2_1`).
    pub label: String,
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
    /// The swept keys and their values, for tables and contact sheets.
    pub swept: Vec<Swept>,
    /// Where each key that is not a built-in default was set.
    pub given: BTreeMap<&'static str, Given>,
}

/// Reads and checks a spec file, with command-line overrides applied to every run.
pub fn load(path: &Path, overrides: &Overrides, limits: &Limits) -> Result<Experiment> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let mut e = parse(&text, &path.display().to_string(), overrides, limits)?;
    e.file = path.to_path_buf();
    Ok(e)
}

/// Checks a spec given as text (no overrides, default limits); `file` names it in errors.
pub fn parse_text(text: &str, file: &str) -> Result<Experiment> {
    parse(text, file, &Overrides::default(), &Limits::default())
}

/// Checks a spec given as text; `file` names it in errors. Every problem is reported at once.
pub fn parse(text: &str, file: &str, overrides: &Overrides, limits: &Limits) -> Result<Experiment> {
    let doc = toml_edit::ImDocument::parse(text).map_err(|e| syntax_error(file, text, &e))?;
    let top: Table = toml::from_str(text).map_err(|e| syntax_error_toml(file, text, &e))?;
    let mut cx = Cx { file, source: SourceMap::new(text, &doc), diags: Diagnostics::default() };
    let header = cx.header(&top);
    let base = cx.defaults(top.get("defaults"));
    let top_sweep = match top.get("sweep") {
        Some(v) => cx.axes("sweep", v, &Origin::Sweep),
        None => vec![],
    };
    let runs = cx.explicit_runs(top.get("run"), &base, &top_sweep);
    overrides.check(&mut cx.diags);
    if !cx.diags.is_empty() {
        cx.diags.sort();
        return Err(Error::Spec(Box::new(cx.diags)));
    }
    let planned = plan::expand(&mut cx, &runs, &top_sweep, overrides, limits);
    if !cx.diags.is_empty() {
        cx.diags.sort();
        return Err(Error::Spec(Box::new(cx.diags)));
    }
    let (name, description) = header.unwrap_or_default();
    let varying_keys = plan::varying_keys(&planned);
    let source = std::sync::Arc::new(cx.source);
    Ok(Experiment { name, description, file: PathBuf::from(file), runs: planned, varying_keys, source })
}

fn syntax_error(file: &str, text: &str, e: &toml_edit::TomlError) -> Error {
    let source = SourceMap::from_text(text);
    let location = e.span().map(|s| source.location(s));
    let message = e.message().trim().to_string();
    Error::Spec(Box::new(Diagnostics {
        items: vec![Diagnostic { file: file.into(), path: "TOML syntax".into(), message, location }],
        more: 0,
    }))
}

fn syntax_error_toml(file: &str, text: &str, e: &toml::de::Error) -> Error {
    let source = SourceMap::from_text(text);
    let location = e.span().map(|s| source.location(s));
    Error::Spec(Box::new(Diagnostics {
        items: vec![Diagnostic { file: file.into(), path: "TOML".into(), message: e.message().into(), location }],
        more: 0,
    }))
}

/// One sweep axis: a parameter and its values, each with its label and path.
pub(crate) struct Axis {
    param: &'static Param,
    origin: Origin,
    values: Vec<AxisValue>,
}

struct AxisValue {
    value: Value,
    label: String,
    path: String,
}

/// A `[[run]]` (or the implicit run) before its sweeps are expanded.
pub(crate) struct RunTemplate {
    name: String,
    params: RunParams,
    given: BTreeMap<&'static str, Given>,
    sweep: Vec<Axis>,
}

/// The parsing context: the file, where things are in it, and the problems found so far.
pub(crate) struct Cx<'a> {
    file: &'a str,
    source: SourceMap,
    diags: Diagnostics,
}

impl Cx<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.report(path, message, false);
    }

    fn report(&mut self, path: &str, message: impl Into<String>, at_key: bool) {
        let location = self.source.locate(path, at_key);
        self.diags.push(Diagnostic { file: self.file.into(), path: path.into(), message: message.into(), location });
    }

    fn unknown_key(&mut self, path: &str, key: &str, valid: impl Iterator<Item = &'static str> + Clone) {
        let hint = if params::param(key).is_some() {
            "run parameters go under [defaults], [sweep] or [[run]]".to_string()
        } else {
            did_you_mean(key, valid)
        };
        self.report(path, format!("unknown key `{key}`; {hint}"), true);
    }

    fn header(&mut self, top: &Table) -> Option<(String, String)> {
        for k in top.keys() {
            if !TOP_KEYS.contains(&k.as_str()) {
                self.unknown_key(k, k, TOP_KEYS.iter().copied());
            }
        }
        let name = match top.get("name") {
            Some(Value::String(s)) => match plan::name_problem(s) {
                None => Some(s.clone()),
                Some(why) => {
                    self.err("name", why);
                    None
                }
            },
            Some(v) => {
                self.err("name", format!("expected a name, found {v}"));
                None
            }
            None => {
                self.err("name", "missing: every experiment has a name (its output folder)");
                None
            }
        };
        let description = match top.get("description") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                self.err("description", format!("expected a string, found {v}"));
                String::new()
            }
            None => String::new(),
        };
        name.map(|n| (n, description))
    }

    /// Sets `key` of `p` from `v`, reporting a problem at `path`; the parameter when it is known.
    fn set(&mut self, p: &mut RunParams, path: &str, key: &str, v: &Value) -> Option<&'static Param> {
        let Some(param) = params::param(key) else {
            self.unknown_key(path, key, params::keys());
            return None;
        };
        match (param.set)(p, v) {
            Ok(()) => Some(param),
            Err(problem) => {
                self.err(&format!("{path}{}", problem.at), problem.message);
                None
            }
        }
    }

    fn defaults(&mut self, v: Option<&Value>) -> RunTemplate {
        let mut t =
            RunTemplate { name: String::new(), params: RunParams::default(), given: BTreeMap::new(), sweep: vec![] };
        let Some(v) = v else { return t };
        let Some(table) = v.as_table() else {
            self.err("defaults", "expected a table of run parameters ([defaults])");
            return t;
        };
        for (k, v) in table {
            let path = format!("defaults.{k}");
            if let Some(param) = self.set(&mut t.params, &path, k, v) {
                t.given.insert(param.key, Given { origin: Origin::Defaults, path });
            }
        }
        t
    }

    fn axes(&mut self, path: &str, v: &Value, origin: &Origin) -> Vec<Axis> {
        let Some(table) = v.as_table() else {
            self.err(path, "expected a table of key = [values]");
            return vec![];
        };
        let mut out = Vec::new();
        for (k, v) in table {
            let kpath = format!("{path}.{k}");
            let Some(param) = params::param(k) else {
                self.unknown_key(&kpath, k, params::keys());
                continue;
            };
            let Some(values) = self.axis_values(&kpath, v) else { continue };
            let mut axis = Axis { param, origin: origin.clone(), values: vec![] };
            for (i, value) in values.into_iter().enumerate() {
                let vpath = format!("{kpath}[{i}]");
                if self.set(&mut RunParams::default(), &vpath, k, &value).is_some() {
                    axis.values.push(AxisValue { label: label(&value), value, path: vpath });
                }
            }
            out.push(axis);
        }
        out
    }

    /// The values of one sweep key: a non-empty array, or `{ cumulative = [a, b, c] }` →
    /// `[[a], [a, b], [a, b, c]]`.
    fn axis_values(&mut self, path: &str, v: &Value) -> Option<Vec<Value>> {
        match v {
            Value::Array(a) if !a.is_empty() => Some(a.clone()),
            Value::Table(c) if c.contains_key("cumulative") && c.len() == 1 => match &c["cumulative"] {
                Value::Array(items) if !items.is_empty() => {
                    Some((1..=items.len()).map(|n| Value::Array(items[..n].to_vec())).collect())
                }
                _ => {
                    self.err(&format!("{path}.cumulative"), "cumulative takes a non-empty array");
                    None
                }
            },
            _ => {
                self.err(
                    path,
                    "a sweep key takes a non-empty array of values, or for layer lists { cumulative = [...] }",
                );
                None
            }
        }
    }

    fn explicit_runs(&mut self, v: Option<&Value>, base: &RunTemplate, top_sweep: &[Axis]) -> Vec<RunTemplate> {
        let implicit = || RunTemplate {
            name: String::new(),
            params: base.params.clone(),
            given: base.given.clone(),
            sweep: vec![],
        };
        let Some(v) = v else { return vec![implicit()] };
        let Some(runs) = v.as_array().filter(|a| !a.is_empty()) else {
            self.err("run", "expected one or more [[run]] tables");
            return vec![];
        };
        let mut out = Vec::new();
        for (i, r) in runs.iter().enumerate() {
            let path = format!("run[{i}]");
            let Some(t) = r.as_table() else {
                self.err(&path, "expected a table ([[run]])");
                continue;
            };
            if let Some(run) = self.explicit_run(&path, t, base, top_sweep) {
                out.push(run);
            }
        }
        out
    }

    fn explicit_run(&mut self, path: &str, t: &Table, base: &RunTemplate, top_sweep: &[Axis]) -> Option<RunTemplate> {
        let name = match t.get("name") {
            Some(Value::String(s)) => match plan::name_problem(s) {
                None => s.clone(),
                Some(why) => {
                    self.err(&format!("{path}.name"), why);
                    return None;
                }
            },
            Some(v) => {
                self.err(&format!("{path}.name"), format!("expected a name, found {v}"));
                return None;
            }
            None => {
                self.err(path, "missing `name`: every [[run]] has a name");
                return None;
            }
        };
        let mut run =
            RunTemplate { name: name.clone(), params: base.params.clone(), given: base.given.clone(), sweep: vec![] };
        for (k, v) in t {
            let kpath = format!("{path}.{k}");
            match k.as_str() {
                "name" => {}
                "sweep" => run.sweep = self.axes(&kpath, v, &Origin::RunSweep(name.clone())),
                _ => {
                    if let Some(param) = self.set(&mut run.params, &kpath, k, v) {
                        run.given.insert(param.key, Given { origin: Origin::Run(name.clone()), path: kpath });
                    }
                }
            }
        }
        self.refuse_shadowing(path, &run, top_sweep);
        Some(run)
    }

    /// A key given in two of a run's own layers (its table, `[sweep]`, its `[run.sweep]`) would
    /// silently replace one with the other: refused, naming both places.
    fn refuse_shadowing(&mut self, path: &str, run: &RunTemplate, top_sweep: &[Axis]) {
        for a in &run.sweep {
            let key = a.param.key;
            if let Some(g) = run.given.get(key).filter(|g| g.origin == Origin::Run(run.name.clone())) {
                let where_ = self.position(&g.path);
                self.err(
                    &format!("{path}.sweep.{key}"),
                    format!("`{key}` is also set in this [[run]] ({where_}): give it in one place"),
                );
            }
            if top_sweep.iter().any(|t| t.param.key == key) {
                self.err(
                    &format!("{path}.sweep.{key}"),
                    format!(
                        "`{key}` is also swept in the top-level [sweep] ({}): sweep it in one place",
                        self.position(&format!("sweep.{key}"))
                    ),
                );
            }
        }
        for t in top_sweep {
            let key = t.param.key;
            if let Some(g) = run.given.get(key).filter(|g| g.origin == Origin::Run(run.name.clone())) {
                let at = self.position(&format!("sweep.{key}"));
                self.err(&g.path.clone(), format!("`{key}` is also swept in the top-level [sweep] ({at}), which would replace this value: give it in one place"));
            }
        }
    }

    /// `line N` of a path, for messages that point at a second place.
    fn position(&self, path: &str) -> String {
        match self.source.locate(path, true) {
            Some(l) => format!("{}:{}", self.file, l.line),
            None => path.to_string(),
        }
    }
}
