//! The experiment's outputs from its run folders: whichever runs are finished, by whichever
//! process, on whichever machine. `summary.csv`, `grid.png` and `curves.png` are rebuilt from
//! each run's `run.toml` and `losses.csv` (a record counts only when its identity is the
//! plan's, so a spec edited since is not mixed in), idempotently, and safely while workers are
//! still writing (every file is replaced atomically). Runs without outputs are listed with what
//! is known of them: failed (`failed.toml`, written by the worker that saw it fail), running
//! (a live claim), interrupted (a checkpoint), or not run.

use std::path::Path;
use std::time::Duration;

use toml::{Table, Value};

use super::claim;
use crate::fsutil::write_atomic;
use crate::record::{RunSummary, Status};
use crate::run::{checkpointed, completed, Session};
use crate::spec::Experiment;
use crate::Result;

const FAILED: &str = "failed.toml";

/// Records in `dir` that the run of identity `id` failed, and why (for [`collect`]).
pub fn mark_failed(dir: &Path, id: &str, reason: &str) -> Result<()> {
    let mut t = Table::new();
    t.insert("id".into(), Value::String(id.into()));
    t.insert("reason".into(), Value::String(reason.into()));
    t.insert("host".into(), Value::String(super::hostname()));
    t.insert("pid".into(), Value::Integer(i64::from(std::process::id())));
    let text = format!("# The last attempt at this run failed; the next one removes this file.\n{t}");
    write_atomic(&dir.join(FAILED), text.as_bytes())
}

/// Removes a failure record (the run completed, or starts again).
pub fn clear_failed(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(FAILED));
}

/// The reason recorded for a failed run of identity `id`.
fn failure(dir: &Path, id: &str) -> Option<String> {
    let t = std::fs::read_to_string(dir.join(FAILED)).ok()?.parse::<Table>().ok()?;
    if t.get("id")?.as_str()? != id {
        return None;
    }
    let host = t.get("host").and_then(|h| h.as_str()).unwrap_or("?");
    Some(format!("{} (on {host})", t.get("reason")?.as_str()?))
}

/// What [`collect`] found.
pub struct Collected {
    /// Every run of the plan, in its order: complete ones from their records, the others with
    /// the status that says where they stand ([`Status::Pending`] when nothing is known).
    pub runs: Vec<RunSummary>,
}

impl Collected {
    /// The runs whose outputs are not complete, with their status.
    pub fn missing(&self) -> impl Iterator<Item = &RunSummary> {
        self.runs.iter().filter(|s| !s.status.is_complete())
    }
}

/// Where each run of `exp` stands in `exp_dir/<run>/`; a live claim is one whose heartbeat is
/// younger than `stale_after`.
pub fn collect(session: &mut Session, exp: &Experiment, exp_dir: &Path, stale_after: Duration) -> Result<Collected> {
    let mut runs = Vec::with_capacity(exp.runs.len());
    for run in &exp.runs {
        let dir = exp_dir.join(&run.name);
        if let Some(done) = completed(session, run, &dir)? {
            runs.push(done);
            continue;
        }
        let mut s = RunSummary::new(run);
        s.status = if let Some(why) = failure(&dir, &session.identity(run)?) {
            Status::Failed(why)
        } else if claim::current(&dir)?.is_some_and(|h| !h.is_stale(stale_after)) {
            Status::Busy
        } else if checkpointed(&dir) {
            Status::Interrupted
        } else {
            Status::Pending
        };
        runs.push(s);
    }
    Ok(Collected { runs })
}

/// [`collect`], then the experiment's outputs written from it.
pub fn collect_and_write(
    session: &mut Session,
    exp: &Experiment,
    exp_dir: &Path,
    stale_after: Duration,
) -> Result<Collected> {
    let c = collect(session, exp, exp_dir, stale_after)?;
    crate::report::write_experiment_outputs(exp_dir, exp, &c.runs)?;
    Ok(c)
}
