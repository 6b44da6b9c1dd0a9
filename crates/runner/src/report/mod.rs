//! The experiment-level outputs, made from the runs' summaries: `summary.csv`, `grid.png`,
//! `curves.png`, `index.html`.

use std::path::Path;

use toml::Value;

use crate::output::{contact_sheet, plot_log, write_csv, Series};
use crate::record::RunSummary;
use crate::spec::{format_float, label, Experiment, PlannedRun};
use crate::Result;

/// The value of parameter `key` of a run, as a short label.
pub fn param_label(run: &PlannedRun, key: &str) -> String {
    if let Some(s) = run.swept.iter().find(|s| s.key == key) {
        return s.label.clone();
    }
    match (key, run.params.get(key)) {
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
        (_, Some(v)) => label(&v),
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

/// When one numeric parameter is swept, each run's colour on the sequential viridis scale by its
/// value (smallest dark purple, largest yellow), so that curves read in the order of the sweep;
/// `None` (the categorical palette) otherwise.
fn sweep_shades(exp: &Experiment, runs: &[RunSummary]) -> Vec<Option<[u8; 3]>> {
    let [key] = exp.varying_keys.as_slice() else { return vec![None; runs.len()] };
    let values: Option<Vec<f64>> = runs.iter().map(|s| param_label(&s.run, key).parse::<f64>().ok()).collect();
    let Some(values) = values.filter(|v| v.len() > 1) else { return vec![None; runs.len()] };
    // Ranks, so that log-spaced sweeps (1e3 … 1e6) spread over the scale too.
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    let top = (sorted.len() - 1).max(1) as f64;
    values
        .iter()
        .map(|v| Some(crate::output::viridis(sorted.iter().position(|x| x == v).unwrap_or(0) as f64 / top)))
        .collect()
}

/// Writes `summary.csv`, `grid.png` and `curves.png` of an experiment.
pub fn write_experiment_outputs(exp_dir: &Path, exp: &Experiment, runs: &[RunSummary]) -> Result<()> {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|s| {
            let mut r = vec![s.run.name.clone()];
            r.extend(exp.varying_keys.iter().map(|k| param_label(&s.run, k)));
            r.push(s.status.cell());
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
        if s.status.is_complete() {
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
    let shades = sweep_shades(exp, runs);
    let series: Vec<Series> = runs
        .iter()
        .zip(&shades)
        .filter(|(s, _)| !s.curve.is_empty())
        .map(|(s, shade)| Series {
            name: s.run.label.clone(),
            points: s.curve.iter().map(|p| (p.iteration, p.total)).collect(),
            color: *shade,
        })
        .collect();
    if !series.is_empty() {
        let swept =
            if exp.varying_keys.is_empty() { String::new() } else { format!(" by {}", exp.varying_keys.join(", ")) };
        let title = format!("{}: total loss{swept} ({} runs)", exp.name, series.len());
        plot_log(&exp_dir.join("curves.png"), &title, "iteration", &series, (800, 500))?;
    }
    html::write_index(exp_dir, exp, runs)
}

pub mod ablations;
pub mod html;
