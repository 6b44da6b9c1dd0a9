//! `index.html` of an experiment: the summary as a sortable table, each run's image, loss curve
//! and parameters a click away, two runs side by side; one self-contained file (inline style and
//! script, nothing fetched from elsewhere) that opens from the file system, its images linked
//! relative to it. The page renders one JSON document ([`page_data`]) embedded in it; the live
//! view (`runner SPEC --serve`) serves the same page and pushes newer documents to it.

use std::path::Path;

use serde_json::{json, Value};

use crate::fsutil::write_atomic;
use crate::record::{RunSummary, Status};
use crate::spec::Experiment;
use crate::Result;

const TEMPLATE: &str = include_str!("index.html");

/// The most points of a loss curve a page carries (longer curves are thinned evenly, keeping
/// the first and the last).
const CURVE_POINTS: usize = 400;

/// The run being optimised, for the live view.
#[derive(Clone, Debug, Default)]
pub struct Current {
    /// Its name.
    pub name: String,
    /// Steps made.
    pub iteration: usize,
    /// Steps planned.
    pub iterations: usize,
    /// The objective at the last step.
    pub total: f64,
    /// Its latest image, relative to the run's folder (`live.png`), once there is one.
    pub image: Option<String>,
}

/// A word for a run's state, for styling and filtering.
fn state(s: &Status) -> &'static str {
    match s {
        Status::Ok | Status::Skipped => "ok",
        Status::Flagged(_) => "flagged",
        Status::Failed(_) => "failed",
        Status::Busy => "running",
        Status::Interrupted => "interrupted",
        Status::Pending => "pending",
    }
}

fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= CURVE_POINTS {
        return points.to_vec();
    }
    let last = points.len() - 1;
    (0..CURVE_POINTS).map(|k| points[k * last / (CURVE_POINTS - 1)]).collect()
}

/// The JSON document the page renders: the experiment, every run (swept values, status, final
/// losses, numbers, parameters as TOML, loss curve, image), the current run and an ETA.
pub fn page_data(exp: &Experiment, runs: &[RunSummary], current: Option<&Current>, eta: &str) -> Value {
    let runs: Vec<Value> = runs
        .iter()
        .map(|s| {
            let r = &s.run;
            let swept: serde_json::Map<String, Value> =
                exp.varying_keys.iter().map(|k| (k.clone(), Value::String(super::param_label(r, k)))).collect();
            let t = s.final_terms.as_ref();
            let curve: Vec<(f64, f64)> = s.curve.iter().map(|p| (p.iteration, p.total)).collect();
            json!({
                "name": r.name,
                "label": r.label,
                "swept": swept,
                // (summary.csv's words are for other processes' runs; here it is this one's)
                "status": if s.status == Status::Busy { "running".into() } else { s.status.cell() },
                "state": state(&s.status),
                "complete": s.status.is_complete(),
                "final_total": t.map(|t| t.total),
                "final_content": t.map(|t| t.content),
                "final_style": t.map(|t| t.style),
                "iterations": s.iterations,
                "evals": s.evals,
                "seconds": (s.seconds * 100.0).round() / 100.0,
                "device": s.device,
                "image": s.status.is_complete().then_some("output.png"),
                "params": toml::to_string(&r.params.to_table()).unwrap_or_default(),
                "curve": thin(&curve),
            })
        })
        .collect();
    json!({
        "experiment": exp.name,
        "description": exp.description,
        "varying": exp.varying_keys,
        "runs": runs,
        "current": current.map(|c| json!({
            "name": c.name, "iteration": c.iteration, "iterations": c.iterations,
            "total": c.total, "image": c.image,
        })),
        "eta": eta,
    })
}

/// JSON that can sit inside a `<script>` element: no `<` (so no `</script>` or `<!--`).
pub fn script_safe(v: &Value) -> String {
    v.to_string().replace('<', "\\u003c")
}

/// Text for HTML content and quoted attributes.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The page of experiment `name` for `data` (see [`page_data`]).
pub fn render(name: &str, data: &Value) -> String {
    let title = escape(name);
    TEMPLATE.replacen("<title>TITLE</title>", &format!("<title>{title} · gatys-rs</title>"), 1).replacen(
        ">DATA</script>",
        &format!(">{}</script>", script_safe(data)),
        1,
    )
}

/// The page document of `exp` before any run started (every run `not run`).
pub fn initial_data(exp: &Experiment) -> Value {
    page_data(exp, &pending(exp), None, "")
}

/// A summary per run of `exp`, none started.
pub fn pending(exp: &Experiment) -> Vec<RunSummary> {
    exp.runs.iter().map(|r| RunSummary { status: Status::Pending, ..RunSummary::new(r) }).collect()
}

/// Writes `exp_dir/index.html` for these runs.
pub fn write_index(exp_dir: &Path, exp: &Experiment, runs: &[RunSummary]) -> Result<()> {
    let page = render(&exp.name, &page_data(exp, runs, None, ""));
    write_atomic(&exp_dir.join("index.html"), page.as_bytes())
}

/// Writes `results/index.html`: a link to every experiment folder under `results` that has an
/// `index.html`, with its counts from `summary.csv`.
pub fn write_results_index(results: &Path) -> Result<usize> {
    let mut rows = String::new();
    let mut entries: Vec<_> = std::fs::read_dir(results)
        .map_err(crate::Error::io(results))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("index.html").is_file())
        .collect();
    entries.sort();
    for dir in &entries {
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let (mut done, mut all) = (0, 0);
        if let Ok(mut r) = csv::Reader::from_path(dir.join("summary.csv")) {
            let status = r.headers().ok().and_then(|h| h.iter().position(|c| c == "status"));
            for rec in r.records().map_while(|x| x.ok()) {
                all += 1;
                done += usize::from(status.and_then(|k| rec.get(k)) == Some("ok"));
            }
        }
        let esc = escape(&name);
        rows += &format!(
            "<tr><td><a href=\"{}/index.html\">{esc}</a></td><td class=\"num\">{done} of {all} ok</td></tr>\n",
            esc.replace('%', "%25").replace('#', "%23").replace('?', "%3F")
        );
    }
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Experiments · gatys-rs</title>\n\
         <style>body{{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:800px}}\
         td{{padding:4px 12px;border-bottom:1px solid #d7dbe3}}.num{{text-align:right}}</style></head>\n\
         <body><h1>Experiments</h1><table id=\"experiments\">\n{rows}</table></body></html>\n"
    );
    write_atomic(&results.join("index.html"), page.as_bytes())?;
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_json_cannot_close_its_script() {
        let v = json!({"name": "</script><script>alert(1)</script><!--"});
        let s = script_safe(&v);
        assert!(!s.contains('<'), "{s}");
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v, "the same document once parsed");
    }

    #[test]
    fn long_curves_are_thinned_keeping_both_ends() {
        let pts: Vec<(f64, f64)> = (0..=1000).map(|i| (i as f64, 1e6 / (1.0 + i as f64))).collect();
        let t = thin(&pts);
        assert_eq!(t.len(), CURVE_POINTS);
        assert_eq!((t[0], t[CURVE_POINTS - 1]), (pts[0], pts[1000]));
        assert!(t.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
