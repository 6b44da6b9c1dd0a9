//! What a sweep tells its watchers: the experiment's progress bar, which moves with the
//! iterations of the current run, weighted by each run's work (pixels × iterations of every
//! stage), so that its elapsed time and ETA are the whole experiment's; plain lines at most
//! every 30 s without a terminal (CI, Slurm logs); and the live view's page document.
//!
//! Runs completed by an earlier invocation, and the part of a run a checkpoint already holds,
//! are taken off the work to do rather than counted as done: the ETA after a resume measures
//! only what remains.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use runner::record::{CurvePoint, RunSummary, Status};
use runner::report::html::{page_data, Current};
use runner::run::{Checked, Progress, PREVIEW};
use runner::serve::LiveServer;
use runner::spec::Experiment;

/// Work units of a run: megapixel-iterations × 1000 over its stages.
fn work(run: &runner::spec::PlannedRun, c: &Checked) -> u64 {
    let stages = run.params.stages((c.width, c.height)).unwrap_or_default();
    let mp_it: f64 = if stages.is_empty() {
        f64::from(c.width) * f64::from(c.height) * run.params.optimizer.iterations.at(0) as f64
    } else {
        stages.iter().map(|s| f64::from(s.width) * f64::from(s.height) * s.iterations as f64).sum()
    };
    (mp_it / 1e3).ceil().max(1.0) as u64
}

/// The run under way.
#[derive(Clone, Copy)]
struct Running {
    /// Its index in the plan.
    index: usize,
    /// Its planned steps (0 until it says).
    planned: usize,
    /// The step it started from in this sweep (after a checkpoint's), once known.
    first: Option<usize>,
    /// The last step made.
    last: usize,
    /// The objective at that step.
    total: f64,
    /// Whether it has written a preview image.
    preview: bool,
}

/// The state of one sweep, for its bar, its log lines and its live view.
pub struct Tracker<'a> {
    exp: &'a Experiment,
    work: Vec<u64>,
    bar: ProgressBar,
    multi: MultiProgress,
    live: Option<LiveServer>,
    runs: Vec<RunSummary>,
    /// Work finished (or taken off) by runs that ended.
    done: u64,
    /// The runs under way (several with a batch), in the order they started.
    running: Vec<Running>,
    last_publish: Instant,
    last_line: Instant,
}

impl<'a> Tracker<'a> {
    /// A tracker of the runs of `exp` (sizes from `checked`), publishing to `live` if given.
    pub fn new(exp: &'a Experiment, checked: &[Checked], live: Option<LiveServer>) -> anyhow::Result<Self> {
        let work: Vec<u64> = exp.runs.iter().zip(checked).map(|(r, c)| work(r, c)).collect();
        let multi = MultiProgress::new();
        let bar = multi.add(ProgressBar::new(work.iter().sum()));
        bar.set_style(ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {msg}, {elapsed} elapsed, ETA {eta}")?);
        bar.set_prefix(exp.name.clone());
        let runs = runner::report::html::pending(exp);
        let past = Instant::now() - Duration::from_secs(3600);
        let t = Self {
            exp,
            work,
            bar,
            multi,
            live,
            runs,
            done: 0,
            running: Vec::new(),
            last_publish: past,
            last_line: Instant::now(),
        };
        t.message();
        Ok(t)
    }

    /// The bars' container (run bars go under the experiment's).
    pub fn multi(&self) -> &MultiProgress {
        &self.multi
    }

    fn finished(&self) -> usize {
        self.runs.iter().filter(|s| !matches!(s.status, Status::Pending | Status::Busy)).count()
    }

    fn message(&self) {
        self.bar.set_message(format!("{}/{} runs", self.finished(), self.runs.len()));
    }

    /// Run `i` starts.
    pub fn started(&mut self, i: usize) {
        self.running.retain(|r| r.index != i);
        self.running.push(Running { index: i, planned: 0, first: None, last: 0, total: f64::NAN, preview: false });
        self.runs[i].status = Status::Busy;
        self.runs[i].curve.clear();
        self.publish(true);
    }

    /// The work runs under way have done in this sweep.
    fn under_way(&self) -> u64 {
        self.running
            .iter()
            .map(|r| self.part(r.index, r.last, r.planned) - self.part(r.index, r.first.unwrap_or(0), r.planned))
            .sum()
    }

    /// An event of run `i`.
    pub fn progress(&mut self, i: usize, p: &Progress) {
        let Some(k) = self.running.iter().position(|r| r.index == i) else { return };
        let mut cur = self.running[k];
        let planned = cur.planned;
        match *p {
            Progress::Started { iterations, .. } => {
                cur.planned = iterations;
                self.running[k] = cur;
            }
            Progress::Step { iteration, total, evals, seconds } => {
                // A run continued from a checkpoint: what it had done is not this sweep's work.
                let first = cur.first.unwrap_or_else(|| {
                    let before = iteration.saturating_sub(1);
                    let part = self.part(i, before, planned);
                    self.bar.set_length(self.bar.length().unwrap_or(0).saturating_sub(part));
                    before
                });
                (cur.first, cur.last, cur.total) = (Some(first), iteration, total);
                self.running[k] = cur;
                self.bar.set_position(self.done + self.under_way());
                let s = &mut self.runs[i];
                s.curve.push(CurvePoint { iteration: iteration as f64, total });
                (s.iterations, s.evals, s.seconds) = (iteration, evals, seconds);
                self.publish(false);
                self.line();
            }
            Progress::Preview { .. } => {
                cur.preview = true;
                self.running[k] = cur;
                self.publish(true);
            }
        }
    }

    /// The share of run `i`'s work in `steps` of its `planned` steps.
    fn part(&self, i: usize, steps: usize, planned: usize) -> u64 {
        if planned == 0 {
            return 0;
        }
        (self.work[i] as f64 * steps.min(planned) as f64 / planned as f64) as u64
    }

    /// Run `i` ended with `s`.
    pub fn ended(&mut self, i: usize, s: &RunSummary) {
        let (planned, first, last) = match self.running.iter().position(|r| r.index == i) {
            Some(k) => {
                let c = self.running.remove(k);
                (c.planned, c.first.unwrap_or(0), c.last)
            }
            None => (0, 0, 0),
        };
        let done_now = if planned > 0 { self.part(i, last, planned) - self.part(i, first, planned) } else { 0 };
        // What the run did not do here (done before, left undone by a failure, an interruption
        // or an early stop) is off the work to do; a run another process computes (or
        // finishes) stays to do: this sweep comes back to it.
        let taken_off = match s.status {
            Status::Busy => 0,
            _ => self.work[i].saturating_sub(self.part(i, first, planned) + done_now),
        };
        self.done += done_now;
        self.bar.set_length(self.bar.length().unwrap_or(0).saturating_sub(taken_off));
        self.bar.set_position(self.done + self.under_way());
        let curve = std::mem::take(&mut self.runs[i].curve);
        self.runs[i] = s.clone();
        if self.runs[i].curve.is_empty() {
            self.runs[i].curve = curve;
        }
        self.message();
        self.publish(true);
    }

    /// A plain line every 30 s when there is no terminal to draw bars on.
    fn line(&mut self) {
        if !self.multi.is_hidden() || self.last_line.elapsed() < Duration::from_secs(30) {
            return;
        }
        self.last_line = Instant::now();
        let Some(&c) = self.running.first() else { return };
        eprintln!(
            "{}: {}/{} runs; {} iteration {}/{}, loss {:.4e}; {} elapsed, ETA {}",
            self.exp.name,
            self.finished(),
            self.runs.len(),
            self.runs[c.index].run.name,
            c.last,
            c.planned,
            c.total,
            indicatif::HumanDuration(self.bar.elapsed()),
            indicatif::HumanDuration(self.bar.eta()),
        );
    }

    /// Sends the page document to the live view (at most 4 times a second unless `now`).
    fn publish(&mut self, now: bool) {
        let Some(live) = &self.live else { return };
        if !now && self.last_publish.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last_publish = Instant::now();
        // The live view shows the run under way that started first.
        let current = self.running.first().map(|c| Current {
            name: self.runs[c.index].run.name.clone(),
            iteration: c.last,
            iterations: c.planned,
            total: c.total,
            image: c.preview.then(|| PREVIEW.to_string()),
        });
        let eta = format!(
            "{}/{} runs, {} elapsed, ETA {}",
            self.finished(),
            self.runs.len(),
            indicatif::HumanDuration(self.bar.elapsed()),
            indicatif::HumanDuration(self.bar.eta())
        );
        live.publish(&page_data(self.exp, &self.runs, current.as_ref(), &eta));
    }

    /// Clears the bar; the live view gets the final state.
    pub fn finish(mut self) {
        self.bar.finish_and_clear();
        self.publish(true);
    }
}
