//! What a run leaves as its record: `run.toml` (the resolved run, the sha256 of its inputs, the
//! program, the results), written last as the mark of a complete run and read back to skip it
//! on the next invocation; and the in-memory summary of a run that experiment outputs are made of.

use std::path::Path;

use losses::Terms;
use toml::{Table, Value};

use crate::assets::Asset;
use crate::fsutil::write_atomic;
use crate::spec::PlannedRun;
use crate::{Error, Result};

/// The program, as written into every `run.toml`: version, commit (when built from a git
/// checkout; `GATYS_COMMIT` overrides) and a hash of the sources that compute the numbers.
pub const PROGRAM: &str = concat!(
    "gatys-rs runner ",
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("GATYS_COMMIT"),
    ", numerics ",
    env!("GATYS_NUMERICS"),
    ")"
);

/// The hash of the sources that compute a run's numbers (the `vgg`, `losses` and `optim` crates,
/// the runner's `run/` module and `Cargo.lock`), made by `build.rs`: part of every run's
/// identity, so changed numerics redo runs while changes elsewhere keep them.
pub const NUMERICS: &str = env!("GATYS_NUMERICS");

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// Completed now.
    Ok,
    /// Completed by an earlier invocation with the same identity; outputs kept.
    Skipped,
    /// Completed, but the result is suspect: `diverged: …`, `stopped early: …`, `degenerate: …`.
    Flagged(String),
    /// Another process holds the run's lock: it is computing it now.
    Busy,
    /// Stopped by Ctrl-C (or a termination signal); the next invocation does it again.
    Interrupted,
    /// Failed, with the reason.
    Failed(String),
    /// Not run yet (as `runner collect` finds a run without outputs, claim or checkpoint).
    Pending,
}

impl Status {
    /// The word in `summary.csv` and progress lines (`ok`, `interrupted`, or the reason).
    pub fn cell(&self) -> String {
        match self {
            Status::Ok | Status::Skipped => "ok".into(),
            Status::Interrupted => "interrupted".into(),
            Status::Busy => "running in another process".into(),
            Status::Flagged(why) => why.clone(),
            Status::Failed(reason) => reason.replace('\n', " "),
            Status::Pending => "not run".into(),
        }
    }

    /// Whether the run's outputs are complete (flagged runs' too).
    pub fn is_complete(&self) -> bool {
        matches!(self, Status::Ok | Status::Skipped | Status::Flagged(_))
    }
}

/// One point of a loss curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    /// Optimizer step (0: the start).
    pub iteration: f64,
    /// Total objective.
    pub total: f64,
}

/// What one run did, for `summary.csv` and the experiment's figures.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The planned run.
    pub run: PlannedRun,
    /// How it ended.
    pub status: Status,
    /// Objective terms at the final iterate.
    pub final_terms: Option<Terms>,
    /// Steps made.
    pub iterations: usize,
    /// Evaluations made.
    pub evals: usize,
    /// Seconds of optimisation.
    pub seconds: f64,
    /// Peak resident memory of the process during the run, MiB (Linux).
    pub peak_rss_mib: Option<f64>,
    /// The device used.
    pub device: String,
    /// The loss curve.
    pub curve: Vec<CurvePoint>,
}

impl RunSummary {
    /// A summary of a run that has not started.
    pub fn new(run: &PlannedRun) -> Self {
        Self {
            run: run.clone(),
            status: Status::Failed("not started".into()),
            final_terms: None,
            iterations: 0,
            evals: 0,
            seconds: 0.0,
            peak_rss_mib: None,
            device: String::new(),
            curve: vec![],
        }
    }
}

impl RunSummary {
    /// Takes the numbers of a completed run from its record; the flag it was recorded with.
    pub fn fill_from(&mut self, rec: RunRecord) -> Option<String> {
        self.final_terms = Some(rec.final_terms);
        self.iterations = rec.iterations;
        self.evals = rec.evals;
        self.seconds = rec.seconds;
        self.device = rec.device;
        self.peak_rss_mib = rec.peak_rss_mib;
        self.curve = rec.curve;
        rec.flag
    }
}

/// One input of a run: its role (`weights`, `content`, `style0`, `init`) and the file.
#[derive(Clone, Debug)]
pub struct NamedInput {
    /// The role.
    pub role: String,
    /// The file and its hash.
    pub asset: Asset,
}

/// What `run.toml` records of a completed run besides its summary.
pub struct RecordHeader<'a> {
    /// The run's identity (hash of parameters, inputs and numerics).
    pub id: &'a str,
    /// Every input.
    pub inputs: &'a [NamedInput],
    /// The output's width and height in pixels.
    pub width: u32,
    /// See `width`.
    pub height: u32,
}

/// Writes `dir/run.toml`: the fully resolved run, the sha256 of every input, the program, the
/// device, and the results.
pub fn write_run_record(dir: &Path, h: &RecordHeader, s: &RunSummary) -> Result<()> {
    let run = &s.run;
    let mut t = Table::new();
    t.insert("id".into(), Value::String(h.id.into()));
    t.insert("program".into(), Value::String(PROGRAM.into()));
    t.insert("name".into(), Value::String(run.name.clone()));
    t.insert("label".into(), Value::String(run.label.clone()));
    t.insert("device".into(), Value::String(s.device.clone()));
    t.insert("width".into(), Value::Integer(h.width.into()));
    t.insert("height".into(), Value::Integer(h.height.into()));
    t.insert("params".into(), Value::Table(run.params.to_table()));
    let swept: Table = run.swept.iter().map(|w| (w.key.clone(), Value::String(w.label.clone()))).collect();
    t.insert("swept".into(), Value::Table(swept));
    let inputs: Table = h
        .inputs
        .iter()
        .map(|i| {
            let mut e = Table::new();
            e.insert("path".into(), Value::String(i.asset.path.display().to_string()));
            e.insert("sha256".into(), Value::String(i.asset.sha256.clone()));
            (i.role.clone(), Value::Table(e))
        })
        .collect();
    t.insert("inputs".into(), Value::Table(inputs));
    t.insert("result".into(), Value::Table(result_table(s)));
    let text = format!(
        "# The fully resolved run: `params` parses back as a [[run]] table of a spec.\n{}",
        toml::to_string(&t).map_err(|e| Error::Run(format!("cannot write run.toml: {e}")))?
    );
    write_atomic(&dir.join("run.toml"), text.as_bytes())
}

fn result_table(s: &RunSummary) -> Table {
    let mut r = Table::new();
    let f = Value::Float;
    r.insert("status".into(), Value::String(s.status.cell()));
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
    r
}

/// What a completed run left in its `run.toml`.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// Hash of the resolved parameters, inputs and numerics.
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
    /// The loss curve, from `losses.csv`.
    pub curve: Vec<CurvePoint>,
    /// Why the result was flagged (`diverged: …`), when it was.
    pub flag: Option<String>,
}

/// Reads a complete run's record, or `None` when there is none or it is unreadable (the run is
/// then simply done again).
pub fn read_run_record(dir: &Path) -> Option<RunRecord> {
    let text = std::fs::read_to_string(dir.join("run.toml")).ok()?;
    let t = text.parse::<Table>().ok()?;
    let result = t.get("result")?.as_table()?;
    let num = |k: &str| result.get(k).and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)));
    let layers = |k: &str| -> Vec<(vgg::Layer, f64)> {
        let mut v: Vec<(vgg::Layer, f64)> = result
            .get(k)
            .and_then(|v| v.as_table())
            .map(|m| m.iter().filter_map(|(l, v)| Some((l.parse().ok()?, v.as_float()?))).collect())
            .unwrap_or_default();
        v.sort_by_key(|(l, _)| *l);
        v
    };
    let final_terms = Terms {
        total: num("final_total")?,
        content: num("final_content").unwrap_or(0.0),
        style: num("final_style").unwrap_or(0.0),
        tv: num("final_tv").unwrap_or(0.0),
        content_layers: layers("final_content_layers"),
        style_layers: layers("final_style_layers"),
    };
    Some(RunRecord {
        id: t.get("id")?.as_str()?.to_string(),
        final_terms,
        iterations: num("iterations").unwrap_or(0.0) as usize,
        evals: num("evals").unwrap_or(0.0) as usize,
        seconds: num("seconds").unwrap_or(0.0),
        device: t.get("device").and_then(|v| v.as_str()).unwrap_or("").to_string(),
        peak_rss_mib: num("peak_rss_mib"),
        curve: read_curve(&dir.join("losses.csv")),
        flag: result.get("status").and_then(|s| s.as_str()).filter(|s| *s != "ok").map(String::from),
    })
}

/// The (iteration, total) of every row of a run's `losses.csv`, its columns found by name;
/// empty when it cannot be read.
pub fn read_curve(path: &Path) -> Vec<CurvePoint> {
    let Ok(mut r) = csv::Reader::from_path(path) else { return vec![] };
    let Ok(h) = r.headers() else { return vec![] };
    let col = |k: &str| h.iter().position(|c| c == k);
    let (Some(it), Some(total)) = (col("iteration"), col("total")) else { return vec![] };
    r.records()
        .filter_map(|rec| {
            let rec = rec.ok()?;
            Some(CurvePoint { iteration: rec.get(it)?.parse().ok()?, total: rec.get(total)?.parse().ok()? })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The curve of a run read back from its files (skipped and collected runs) was the seconds
    /// column once `scale` was inserted before it: columns are found by name now.
    #[test]
    fn the_curve_is_read_by_column_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("losses.csv");
        let text = "iteration,scale,evals,seconds,total,content\n0,64,1,0.05,7.5e5,1\n1,64,2,0.09,2.3e5,1\n";
        std::fs::write(&p, text).unwrap();
        let c = read_curve(&p);
        assert_eq!(c, [CurvePoint { iteration: 0.0, total: 7.5e5 }, CurvePoint { iteration: 1.0, total: 2.3e5 }]);
    }
}
