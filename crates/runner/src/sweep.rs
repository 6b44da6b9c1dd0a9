//! Running a plan's runs with progress bars and status lines: every run of the plan, one shard
//! of it, or the runs this process claims from a folder shared with other runners
//! ([`runner::cluster`]). The experiment's outputs are rewritten after each run: from this
//! invocation's summaries when it runs the whole plan, from the run folders otherwise (other
//! processes compute the rest).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use runner::cluster::claim::{self, Attempt};
use runner::cluster::collect;
use runner::record::{RunSummary, Status};
use runner::run::{execute, execute_batched, BatchEvent, Job, Policy, Progress, Session};
use runner::spec::{Experiment, PlannedRun};

use crate::track::Tracker;
use crate::worker;

/// How runs are executed.
pub struct RunMode {
    /// Redo complete runs.
    pub force: bool,
    /// Each run in its own process ([`worker`]).
    pub isolated: bool,
    /// Set by Ctrl-C.
    pub interrupt: Arc<AtomicBool>,
    /// Runs evaluated together as one batch, in this process (1: one run at a time).
    pub batch: usize,
}

/// Where the experiment's outputs are made from.
#[derive(Clone, Copy)]
pub enum Outputs<'a> {
    /// Nowhere (a one-off transfer).
    None,
    /// This invocation's summaries, into this folder (it runs the whole plan).
    Memory(&'a Path),
    /// The run folders of the whole `plan` under `dir` (a shard or a claim worker).
    Disk {
        /// The experiment's folder.
        dir: &'a Path,
        /// Every run of the experiment, not only this process's.
        plan: &'a Experiment,
        /// When a claim counts as dead.
        stale_after: Duration,
    },
}

/// Rewrites the experiment's outputs; a failure is reported, never fatal (the runs go on).
fn write_outputs(session: &mut Session, exp: &Experiment, summaries: &[RunSummary], outputs: Outputs) {
    let (dir, result) = match outputs {
        Outputs::None => return,
        Outputs::Memory(dir) => {
            let mut ordered = summaries.to_vec();
            ordered.sort_by_key(|x| exp.runs.iter().position(|r| r.name == x.run.name));
            (dir, runner::report::write_experiment_outputs(dir, exp, &ordered))
        }
        Outputs::Disk { dir, plan, stale_after } => {
            (dir, collect::collect_and_write(session, plan, dir, stale_after).map(|_| ()))
        }
    };
    if let Err(e) = result {
        eprintln!("warning: writing the outputs of {} failed (the runs go on): {}", dir.display(), runner::chain(&e));
    }
}

/// Leaves `failed.toml` in a failed run's folder (for `runner collect`), removes it from a
/// completed one's.
fn note_outcome(session: &mut Session, s: &RunSummary, dir: &Path) {
    match &s.status {
        Status::Failed(reason) => {
            if let Ok(id) = session.identity(&s.run) {
                if let Err(e) = collect::mark_failed(dir, &id, reason) {
                    eprintln!("warning: recording the failure of {}: {}", s.run.name, runner::chain(&e));
                }
            }
        }
        st if st.is_complete() => collect::clear_failed(dir),
        _ => {}
    }
}

/// What follows a run's end, however it was run: its outcome noted in its folder (`dir`), its
/// summary recorded, the experiment's outputs rewritten.
fn settle(
    session: &mut Session,
    exp: &Experiment,
    outputs: Outputs,
    summaries: &mut Vec<RunSummary>,
    s: RunSummary,
    dir: &Path,
) {
    note_outcome(session, &s, dir);
    record(summaries, s);
    write_outputs(session, exp, summaries, outputs);
}

/// Puts `s` in `summaries`, replacing an earlier summary of the same run.
fn record(summaries: &mut Vec<RunSummary>, s: RunSummary) {
    match summaries.iter().position(|x| x.run.name == s.run.name) {
        Some(k) => summaries[k] = s,
        None => summaries.push(s),
    }
}

/// Runs every run of `exp`, each into `dir_of(run)`, with progress bars, rewriting the
/// experiment's outputs after each. Runs another process is computing are left for last, then
/// waited for, so several runners on one folder share the work and each ends with the whole
/// summary.
pub fn run_all(
    session: &mut Session,
    exp: &Experiment,
    outputs: Outputs,
    mode: &RunMode,
    dir_of: impl Fn(&PlannedRun) -> PathBuf,
    mut track: Tracker,
) -> anyhow::Result<Vec<RunSummary>> {
    let mut summaries: Vec<RunSummary> = Vec::new();
    let mut busy = Vec::new();
    let passes = [Policy { force: mode.force, wait: false }, Policy { force: false, wait: true }];
    for (pass, policy) in passes.into_iter().enumerate() {
        let todo: Vec<usize> = if pass == 0 { (0..exp.runs.len()).collect() } else { std::mem::take(&mut busy) };
        if pass == 0 && mode.batch > 1 {
            let jobs: Vec<Job> = todo.iter().map(|&i| (i, &exp.runs[i], dir_of(&exp.runs[i]))).collect();
            let stop =
                run_batched(session, exp, (&jobs, policy), mode.batch, outputs, &mut summaries, &mut busy, &mut track);
            if stop {
                track.finish();
                return Ok(summaries);
            }
            continue;
        }
        for i in todo {
            let run = &exp.runs[i];
            let dir = dir_of(run);
            let s = run_one(session, (i, run), &dir, policy, mode, &[], &mut track)?;
            let stop = s.status == Status::Interrupted;
            if s.status == Status::Busy {
                busy.push(i);
            }
            settle(session, exp, outputs, &mut summaries, s, &dir);
            if stop {
                track.finish();
                return Ok(summaries);
            }
        }
    }
    track.finish();
    summaries.sort_by_key(|x| exp.runs.iter().position(|r| r.name == x.run.name));
    Ok(summaries)
}

/// Runs the runs of `exp` that this process claims in `exp_dir` (see [`claim`]), until every
/// run is complete, failed here, or interrupted: a run another worker holds is waited for, and
/// taken over when its claim goes stale, so that no run is lost with a dead worker. A run that
/// failed here is left to other workers (each worker tries a run once).
pub fn run_claimed(
    session: &mut Session,
    exp: &Experiment,
    exp_dir: &Path,
    mode: &RunMode,
    stale_after: Duration,
    mut track: Tracker,
) -> anyhow::Result<Vec<RunSummary>> {
    let outputs = Outputs::Disk { dir: exp_dir, plan: exp, stale_after };
    let policy = Policy { force: mode.force, wait: false };
    let mut summaries: Vec<RunSummary> = Vec::new();
    let mut settled = BTreeSet::new();
    let mut waited_for = Vec::new();
    loop {
        let mut waiting = Vec::new();
        for (i, run) in exp.runs.iter().enumerate() {
            if settled.contains(&i) || mode.interrupt.load(Ordering::SeqCst) {
                continue;
            }
            let dir = exp_dir.join(&run.name);
            if !mode.force {
                if let Some(done) = runner::run::completed(session, run, &dir)? {
                    settled.insert(i);
                    track.started(i);
                    track.ended(i, &done);
                    record(&mut summaries, done);
                    continue;
                }
            }
            let c = match claim::try_claim(&dir, stale_after)? {
                Attempt::Held(h) => {
                    waiting.push(format!("{} ({h})", run.name));
                    continue;
                }
                Attempt::Claimed(c) => c,
            };
            if let Some(h) = &c.took_over {
                say(track.multi(), format!("takeover {}: the claim of {h} was stale", run.name));
            }
            let mut s = run_one(session, (i, run), &dir, policy, mode, &[c.lost_flag()], &mut track)?;
            if c.is_lost() {
                let by = claim::current(&dir)?.map(|h| h.to_string()).unwrap_or_default();
                say(
                    track.multi(),
                    format!("lost     {}: another worker took it over ({by}); it goes on there", run.name),
                );
                s.status = Status::Busy;
            }
            drop(c);
            match s.status {
                // Its lock is held (a process that lost its claim has not stopped yet): later.
                Status::Busy => waiting.push(format!("{} (finishing in another process)", run.name)),
                Status::Interrupted => {}
                _ => {
                    settled.insert(i);
                }
            }
            settle(session, exp, outputs, &mut summaries, s, &dir);
        }
        if waiting.is_empty() || mode.interrupt.load(Ordering::SeqCst) {
            break;
        }
        if waiting != waited_for {
            say(
                track.multi(),
                format!("waiting  for {} run(s) other workers hold: {}", waiting.len(), waiting.join(", ")),
            );
            waited_for = waiting;
        }
        std::thread::sleep((stale_after / 8).clamp(Duration::from_millis(200), Duration::from_secs(2)));
    }
    track.finish();
    summaries.sort_by_key(|x| exp.runs.iter().position(|r| r.name == x.run.name));
    Ok(summaries)
}

/// A status line, above the bars on a terminal, on stderr otherwise.
fn say(multi: &MultiProgress, line: String) {
    if multi.is_hidden() || multi.println(&line).is_err() {
        eprintln!("{line}");
    }
}

/// One run with its progress bar and its status line; `stop` are further reasons to stop it
/// besides Ctrl-C (isolated runs only).
fn run_one(
    session: &mut Session,
    (i, run): (usize, &PlannedRun),
    dir: &Path,
    policy: Policy,
    mode: &RunMode,
    stop: &[Arc<AtomicBool>],
    track: &mut Tracker,
) -> anyhow::Result<RunSummary> {
    track.started(i);
    let multi = track.multi().clone();
    let bar = run_bar(&multi, run, policy);
    let mut on_progress = |p: Progress| {
        show(&bar, &p);
        track.progress(i, &p);
    };
    let s = if mode.isolated {
        let mut interrupts = vec![mode.interrupt.clone()];
        interrupts.extend(stop.iter().cloned());
        worker::execute_isolated(run, dir, policy, session, &interrupts, &mut on_progress)
    } else {
        execute(session, run, dir, policy, &mut on_progress)
    };
    bar.finish_and_clear();
    say(&multi, status_line(&s));
    track.ended(i, &s);
    Ok(s)
}

/// A run's progress bar, under the experiment's.
fn run_bar(multi: &MultiProgress, run: &PlannedRun, policy: Policy) -> ProgressBar {
    let bar = multi.add(ProgressBar::new(run.params.optimizer.iterations.at(0) as u64));
    if let Ok(style) = ProgressStyle::with_template("  {prefix} [{bar:30}] {pos}/{len} it  {msg}  ETA {eta}") {
        bar.set_style(style);
    }
    bar.set_prefix(run.name.clone());
    bar.enable_steady_tick(Duration::from_millis(500));
    if policy.wait {
        bar.set_message("waiting for the process computing it");
    }
    bar
}

/// A run's event on its bar.
fn show(bar: &ProgressBar, p: &Progress) {
    match p {
        Progress::Started { iterations, device } => {
            bar.set_length(*iterations as u64);
            bar.set_message(device.clone());
        }
        Progress::Step { iteration, evals, total, seconds } => {
            bar.set_position(*iteration as u64);
            bar.set_message(format!("loss {total:.4e}  {:.2} s/it  {evals} evals", seconds / *iteration as f64));
        }
        Progress::Preview { .. } => {}
    }
}

/// The runs `jobs` of `exp` evaluated as batches of up to `width` runs in this process
/// ([`runner::run::execute_batched`]), with a bar per run in flight; each run's outcome is
/// recorded and the experiment's outputs rewritten as it ends. Runs another process holds go
/// to `busy`. Returns whether Ctrl-C stopped the sweep.
#[allow(clippy::too_many_arguments)]
fn run_batched(
    session: &mut Session,
    exp: &Experiment,
    (jobs, policy): (&[Job], Policy),
    width: usize,
    outputs: Outputs,
    summaries: &mut Vec<RunSummary>,
    busy: &mut Vec<usize>,
    track: &mut Tracker,
) -> bool {
    let multi = track.multi().clone();
    let mut bars: Vec<Option<ProgressBar>> = vec![None; exp.runs.len()];
    let mut stopped = false;
    let stats = execute_batched(session, jobs, policy, width, &mut |session, event| match event {
        BatchEvent::Started(i) => {
            track.started(i);
            bars[i] = Some(run_bar(&multi, &exp.runs[i], policy));
        }
        BatchEvent::Progress(i, p) => {
            if let Some(bar) = &bars[i] {
                show(bar, &p);
            }
            track.progress(i, &p);
        }
        BatchEvent::Ended(i, s) => {
            if let Some(bar) = bars[i].take() {
                bar.finish_and_clear();
            }
            say(&multi, status_line(&s));
            track.ended(i, &s);
            stopped |= s.status == Status::Interrupted;
            if s.status == Status::Busy {
                busy.push(i);
            }
            if let Some((_, _, dir)) = jobs.iter().find(|j| j.0 == i) {
                settle(session, exp, outputs, summaries, *s, dir);
            }
        }
    });
    if stats.passes > 0 {
        say(
            &multi,
            format!(
                "batched  {} evaluations in {} network passes ({:.1} images a pass on average, at most {})",
                stats.images,
                stats.passes,
                stats.images as f64 / stats.passes as f64,
                stats.largest
            ),
        );
    }
    stopped
}

fn status_line(s: &RunSummary) -> String {
    let name = &s.run.name;
    match &s.status {
        Status::Ok => format!(
            "ok       {name}: {} it, {} evals, {:.1} s ({:.3} s/eval) on {}, final loss {:.4e}",
            s.iterations,
            s.evals,
            s.seconds,
            s.seconds / s.evals.max(1) as f64,
            s.device,
            s.final_terms.as_ref().map(|t| t.total).unwrap_or(f64::NAN)
        ),
        Status::Skipped => format!("skipped  {name}: complete from an earlier invocation (--force to redo)"),
        Status::Interrupted => format!("interrupted {name}: it starts again on the next invocation"),
        Status::Busy => format!("busy     {name}: another process is computing it; waiting for it"),
        Status::Flagged(why) => format!("FLAGGED  {name}: {why} ({} it, {:.1} s)", s.iterations, s.seconds),
        Status::Failed(r) => format!("FAILED   {name}: {r}"),
        Status::Pending => format!("pending  {name}: not run"),
    }
}
