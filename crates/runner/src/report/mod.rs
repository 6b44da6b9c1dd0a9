//! Records of runs (`run.toml`) and the experiment-level outputs: `summary.csv`, `grid.png`,
//! `curves.png`.

use std::path::Path;

use losses::Terms;
use toml::{Table, Value};

use crate::assets::{write_atomic, Asset};
use crate::output::{contact_sheet, plot_log, write_csv, Series};
use crate::run::{RunSummary, Status, VERSION};
use crate::spec::{format_float, label, to_table, Experiment, PlannedRun};
use crate::{Error, Result};

/// What a completed run left in its `run.toml`.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// Hash of the resolved parameters, inputs and program version.
    pub id: String,
    /// Terms at the final iterate.
    pub final_terms: Terms,
    /// Steps made.
    pub iterations: usize,
    /// Evaluations made.
    pub evals: usize,
    /// Seconds of optimisation.
    pub seconds: f64,
    /// Device used.
    pub device: String,
    /// Peak resident memory of the process during the run, MiB, where it was recorded.
    pub peak_rss_mib: Option<f64>,
    /// (iteration, total) from `losses.csv`.
    pub curve: Vec<(f64, f64)>,
}

/// Writes `dir/run.toml`: the fully resolved run, the sha256 of every input, the program
/// version, the device, and the results.
pub fn write_run_record(
    dir: &Path,
    id: &str,
    run: &PlannedRun,
    inputs: &[(String, Asset)],
    s: &RunSummary,
    (w, h): (u32, u32),
) -> Result<()> {
    let mut t = Table::new();
    t.insert("id".into(), Value::String(id.into()));
    t.insert("program".into(), Value::String(VERSION.into()));
    t.insert("name".into(), Value::String(run.name.clone()));
    t.insert("label".into(), Value::String(run.label.clone()));
    t.insert("device".into(), Value::String(s.device.clone()));
    t.insert("width".into(), Value::Integer(w as i64));
    t.insert("height".into(), Value::Integer(h as i64));
    t.insert("params".into(), Value::Table(to_table(&run.params)));
    let mut swept = Table::new();
    for (k, v) in &run.swept {
        swept.insert(k.clone(), Value::String(v.clone()));
    }
    t.insert("swept".into(), Value::Table(swept));
    let mut ins = Table::new();
    for (k, a) in inputs {
        let mut e = Table::new();
        e.insert("path".into(), Value::String(a.path.display().to_string()));
        e.insert("sha256".into(), Value::String(a.sha256.clone()));
        ins.insert(k.clone(), Value::Table(e));
    }
    t.insert("inputs".into(), Value::Table(ins));
    let mut r = Table::new();
    let f = Value::Float;
    r.insert("status".into(), Value::String("ok".into()));
    r.insert("iterations".into(), Value::Integer(s.iterations as i64));
    r.insert("evals".into(), Value::Integer(s.evals as i64));
    r.insert("seconds".into(), f(s.seconds));
    r.insert("s_per_eval".into(), f(s.seconds / s.evals.max(1) as f64));
    if let Some(m) = s.peak_rss_mib {
        r.insert("peak_rss_mib".into(), f(m));
    }
    if let Some(ft) = &s.final_terms {
        r.insert("final_total".into(), f(ft.total));
        r.insert("final_content".into(), f(ft.content));
        r.insert("final_style".into(), f(ft.style));
        r.insert("final_tv".into(), f(ft.tv));
        let layers = |v: &[(vgg::Layer, f64)]| Value::Table(v.iter().map(|(l, x)| (l.to_string(), f(*x))).collect());
        r.insert("final_content_layers".into(), layers(&ft.content_layers));
        r.insert("final_style_layers".into(), layers(&ft.style_layers));
    }
    t.insert("result".into(), Value::Table(r));
    let text = format!(
        "# The fully resolved run: `params` parses back as a [[run]] table of a spec.\n{}",
        toml::to_string(&t).map_err(|e| Error::Run(format!("cannot write run.toml: {e}")))?
    );
    write_atomic(&dir.join("run.toml"), text.as_bytes())
}

/// Reads a complete run's record, or `None` when there is none (or it is unreadable: the run is
/// then simply done again).
pub fn read_run_record(dir: &Path) -> Result<Option<RunRecord>> {
    let Ok(text) = std::fs::read_to_string(dir.join("run.toml")) else { return Ok(None) };
    let Ok(t) = text.parse::<Table>() else { return Ok(None) };
    let get = |k: &str| t.get("result").and_then(|r| r.get(k)).cloned();
    let num = |k: &str| get(k).and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)));
    let layers = |k: &str| -> Vec<(vgg::Layer, f64)> {
        get(k)
            .and_then(|v| v.as_table().cloned())
            .map(|m| m.iter().filter_map(|(l, v)| Some((l.parse().ok()?, v.as_float()?))).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let (Some(id), Some(total)) = (t.get("id").and_then(|v| v.as_str()), num("final_total")) else {
        return Ok(None);
    };
    let mut content_layers = layers("final_content_layers");
    let mut style_layers = layers("final_style_layers");
    content_layers.sort_by_key(|(l, _)| *l);
    style_layers.sort_by_key(|(l, _)| *l);
    let final_terms = Terms {
        total,
        content: num("final_content").unwrap_or(0.0),
        style: num("final_style").unwrap_or(0.0),
        tv: num("final_tv").unwrap_or(0.0),
        content_layers,
        style_layers,
    };
    Ok(Some(RunRecord {
        id: id.to_string(),
        final_terms,
        iterations: num("iterations").unwrap_or(0.0) as usize,
        evals: num("evals").unwrap_or(0.0) as usize,
        seconds: num("seconds").unwrap_or(0.0),
        device: t.get("device").and_then(|v| v.as_str()).unwrap_or("").to_string(),
        peak_rss_mib: num("peak_rss_mib"),
        curve: read_curve(&dir.join("losses.csv")),
    }))
}

/// (iteration, total) of every row of a run's `losses.csv`; empty when it cannot be read.
pub(crate) fn read_curve(path: &Path) -> Vec<(f64, f64)> {
    let Ok(mut r) = csv::Reader::from_path(path) else { return vec![] };
    r.records()
        .filter_map(|rec| {
            let rec = rec.ok()?;
            Some((rec.get(0)?.parse().ok()?, rec.get(3)?.parse().ok()?))
        })
        .collect()
}

/// The value of parameter `key` of a run, as a short label.
pub fn param_label(run: &PlannedRun, key: &str) -> String {
    if let Some((_, v)) = run.swept.iter().find(|(k, _)| k == key) {
        return v.clone();
    }
    let t = to_table(&run.params);
    match (key, t.get(key)) {
        ("style", Some(Value::Array(a))) => a
            .iter()
            .map(|s| {
                let image = s.get("image").map(label).unwrap_or_default();
                match s.get("weight").and_then(|w| w.as_float()) {
                    Some(w) if a.len() > 1 => format!("{image}:{}", format_float(w)),
                    _ => image,
                }
            })
            .collect::<Vec<_>>()
            .join("+"),
        (_, Some(v)) => label(v),
        (_, None) => String::new(),
    }
}

/// The columns of `summary.csv`.
pub fn summary_columns(exp: &Experiment) -> Vec<String> {
    let mut h = vec!["name".to_string()];
    h.extend(exp.varying_keys.iter().cloned());
    h.extend(
        [
            "status",
            "final_total",
            "final_content",
            "final_style",
            "iterations",
            "evals",
            "seconds",
            "s_per_eval",
            "peak_rss_mib",
            "device",
        ]
        .map(String::from),
    );
    h
}

/// Writes `summary.csv`, `grid.png` and `curves.png` of an experiment.
pub fn write_experiment_outputs(exp_dir: &Path, exp: &Experiment, runs: &[RunSummary]) -> Result<()> {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|s| {
            let mut r = vec![s.run.name.clone()];
            r.extend(exp.varying_keys.iter().map(|k| param_label(&s.run, k)));
            r.push(match &s.status {
                Status::Ok | Status::Skipped => "ok".into(),
                Status::Failed(reason) => reason.replace('\n', " "),
            });
            let ft = s.final_terms.as_ref();
            let num = |v: Option<f64>| v.map(|x| format!("{:.6e}", x + 0.0)).unwrap_or_default();
            r.push(num(ft.map(|t| t.total)));
            r.push(num(ft.map(|t| t.content)));
            r.push(num(ft.map(|t| t.style)));
            r.push(s.iterations.to_string());
            r.push(s.evals.to_string());
            r.push(format!("{:.2}", s.seconds));
            r.push(if s.evals > 0 { format!("{:.4}", s.seconds / s.evals as f64) } else { String::new() });
            r.push(s.peak_rss_mib.map(|m| format!("{m:.0}")).unwrap_or_default());
            r.push(s.device.clone());
            r
        })
        .collect();
    write_csv(&exp_dir.join("summary.csv"), &summary_columns(exp), &rows)?;
    let mut items = Vec::new();
    for s in runs {
        let p = exp_dir.join(&s.run.name).join("output.png");
        if matches!(s.status, Status::Ok | Status::Skipped) {
            if let Ok(img) = vgg::imageio::load_rgb(&p) {
                items.push((img, s.run.label.clone()));
            }
        }
    }
    if !items.is_empty() {
        let n = items.len();
        let columns = if n <= 5 {
            n
        } else if n <= 10 {
            n.div_ceil(2)
        } else {
            5
        };
        contact_sheet(&exp_dir.join("grid.png"), &items, columns, 256)?;
    }
    let series: Vec<Series> = runs
        .iter()
        .filter(|s| !s.curve.is_empty())
        .map(|s| Series { name: s.run.label.clone(), points: s.curve.clone() })
        .collect();
    if !series.is_empty() {
        plot_log(&exp_dir.join("curves.png"), &format!("{}: total loss", exp.name), "iteration", &series, (800, 500))?;
    }
    Ok(())
}

pub mod ablations;
