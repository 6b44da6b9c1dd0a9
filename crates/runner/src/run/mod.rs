//! Executing one planned run, top to bottom: resolve its inputs ([`inputs`]), skip it when an
//! earlier invocation completed it, build its objective and starting image, optimise
//! ([`optimise`]), write its outputs and, last, its record. The core reports progress through a
//! callback and knows nothing of terminals.

pub mod batch;
mod checkpoint;
pub mod colour;
mod inputs;
pub mod memory;
pub(crate) mod optimise;
mod preflight;
mod upsample;
mod verdict;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use vgg::{ConvAlgorithm, Vgg19, VggWeights, WeightsFormat};

use crate::assets::{Asset, Assets};
use crate::device::{device_name, peak_rss_mib, reset_peak_rss, resolve_device};
use crate::output;
use crate::params::{DeviceChoice, RunParams};
use crate::record::{read_run_record, RunSummary, Status};
use crate::spec::PlannedRun;
use crate::{Error, Result};

pub use inputs::noise;
pub use optimise::{loss_columns, PREVIEW};
pub use preflight::{preflight, Checked};

/// What a run reports while it runs.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Inputs are ready and the optimisation starts.
    Started {
        /// Planned steps.
        iterations: usize,
        /// The device, in words.
        device: String,
    },
    /// A new `preview.png` in the run's folder (with [`Session::preview_every`]).
    Preview {
        /// The step it shows.
        iteration: usize,
    },
    /// One optimizer step done.
    Step {
        /// Steps done.
        iteration: usize,
        /// Evaluations done.
        evals: usize,
        /// The objective at the iterate the step reports.
        total: f64,
        /// Seconds since the optimisation started.
        seconds: f64,
    },
}

/// The networks a session has loaded, by weights file, device and pooling.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct NetKey {
    weights: Option<String>,
    device: DeviceChoice,
    pooling: &'static str,
}

/// Shared state between the runs of one invocation: fetched inputs and loaded networks.
pub struct Session {
    assets: Assets,
    nets: HashMap<NetKey, (Arc<Vgg19>, Asset)>,
    /// Weights files hashed so far, by the run's `weights` (`None`: the default file).
    weights: HashMap<Option<String>, Asset>,
    /// Identities computed so far, by resolved parameters (inputs do not change during an
    /// invocation).
    identities: HashMap<String, String>,
    interrupt: Arc<AtomicBool>,
    /// Directory that relative image paths in the spec are resolved against first.
    pub spec_dir: Option<PathBuf>,
    /// Write the current image as `preview.png` every this many steps (0: never), for the live
    /// view; it is removed when the run ends.
    pub preview_every: usize,
}

impl Session {
    /// A session fetching through `assets`; `interrupt` is set by Ctrl-C.
    pub fn new(assets: Assets, interrupt: Arc<AtomicBool>) -> Self {
        Self {
            assets,
            nets: HashMap::new(),
            weights: HashMap::new(),
            identities: HashMap::new(),
            interrupt,
            spec_dir: None,
            preview_every: 0,
        }
    }

    /// The asset store.
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// An image by name or path (relative paths are tried against the spec's folder first).
    pub fn image(&self, name: &str) -> Result<Asset> {
        if let Some(dir) = &self.spec_dir {
            let p = dir.join(name);
            if !crate::assets::manifest().contains_key(name) && Path::new(name).is_relative() && p.is_file() {
                return self.assets.image(&p.to_string_lossy());
            }
        }
        self.assets.image(name).map_err(|e| match e {
            Error::Asset { name: n, message } if !crate::assets::manifest().contains_key(name) => {
                let mut looked: Vec<String> = self
                    .spec_dir
                    .iter()
                    .map(|d| d.join(name))
                    .chain(std::iter::once(PathBuf::from(name)))
                    .map(|p| std::path::absolute(&p).unwrap_or(p).display().to_string())
                    .collect();
                looked.dedup();
                Error::Asset {
                    name: n,
                    message: format!("{message} (looked for the file at {})", looked.join(" and ")),
                }
            }
            other => other,
        })
    }

    /// The network for a run's weights, device and pooling (loaded once per session).
    fn network(&mut self, p: &RunParams, device: &Device) -> Result<(Arc<Vgg19>, Asset)> {
        let key = NetKey {
            weights: p.inputs.weights.0.clone(),
            device: p.output.device,
            pooling: p.objective.pooling.name(),
        };
        if let Some(n) = self.nets.get(&key) {
            return Ok(n.clone());
        }
        let asset = self.weights_asset(p)?;
        let format = WeightsFormat::detect(&asset.path)?;
        let weights = VggWeights::load(&asset.path, format, device)?;
        let mut net = Vgg19::new(&weights, p.objective.pooling, ConvAlgorithm::Fast)?;
        if let Some(cache) = self.assets.kernel_cache() {
            net = net.with_kernel_cache(cache.clone());
        }
        let net = Arc::new(net);
        self.nets.insert(key, (net.clone(), asset.clone()));
        Ok((net, asset))
    }
}

impl Session {
    /// The weights file of run `p`, fetched and hashed once per session.
    fn weights_asset(&mut self, p: &RunParams) -> Result<Asset> {
        let key = p.inputs.weights.0.clone();
        if let Some(a) = self.weights.get(&key) {
            return Ok(a.clone());
        }
        let asset = match &key {
            Some(path) => Asset { path: PathBuf::from(path), sha256: crate::fsutil::sha256_file(Path::new(path))? },
            None => self.assets.weights()?,
        };
        self.weights.insert(key, asset.clone());
        Ok(asset)
    }

    /// The identity of `run` (the hash of its resolved parameters, its inputs' sha256 and the
    /// numerics' sources) without loading the network: what `run.toml` must record for the run
    /// to count as done.
    pub fn identity(&mut self, run: &PlannedRun) -> Result<String> {
        let key = run.params.to_table().to_string();
        if let Some(id) = self.identities.get(&key) {
            return Ok(id.clone());
        }
        let weights = self.weights_asset(&run.params)?;
        let inputs = inputs::resolve(self, &run.params, weights)?;
        let id = inputs::identity(&run.params, &inputs);
        self.identities.insert(key, id.clone());
        Ok(id)
    }
}

/// The summary of `run` when `dir` holds its complete outputs, of the same identity (status
/// `Skipped`, or `Flagged` with the flag it was recorded with); `None` otherwise.
pub fn completed(session: &mut Session, run: &PlannedRun, dir: &Path) -> Result<Option<RunSummary>> {
    if !dir.join("run.toml").is_file() {
        return Ok(None);
    }
    let id = session.identity(run)?;
    let mut summary = RunSummary::new(run);
    Ok(skip_if_complete(dir, &id, &mut summary).map(|status| RunSummary { status, ..summary }))
}

/// Whether `dir` holds a checkpoint of a run that stopped before its end.
pub fn checkpointed(dir: &Path) -> bool {
    checkpoint::exists(dir)
}

/// How [`execute`] treats a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// Redo a run whose outputs are complete.
    pub force: bool,
    /// Wait for a run that another process is computing (instead of returning
    /// [`Status::Busy`]), then skip it when that process completed it.
    pub wait: bool,
}

/// Takes the run's lock (`dir/.lock`, an advisory `flock` the kernel releases when the holding
/// process ends, however it ends: no stale lock can remain). `None` when another process holds
/// it and `wait` is false.
fn lock(dir: &Path, wait: bool) -> Result<Option<std::fs::File>> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let path = dir.join(".lock");
    let f =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(Error::io(&path))?;
    if wait {
        f.lock().map_err(Error::io(&path))?;
        return Ok(Some(f));
    }
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Io { path, source: e }),
    }
}

/// Runs one planned run into `dir`, or skips it when its outputs are complete and its identity
/// unchanged (unless `policy.force`). Concurrent runners share the work: a run another process
/// is computing is [`Status::Busy`] (or waited for, with `policy.wait`). Never panics out:
/// failures become a status.
pub fn execute(
    session: &mut Session,
    run: &PlannedRun,
    dir: &Path,
    policy: Policy,
    progress: &mut dyn FnMut(Progress),
) -> RunSummary {
    let started = Instant::now();
    let mut summary = RunSummary::new(run);
    reset_peak_rss();
    let (interrupt, preview_every) = (session.interrupt.clone(), session.preview_every);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(prepared) = prepare(session, run, dir, policy, &mut summary)? else {
            return Ok(summary.status.clone());
        };
        progress(Progress::Started { iterations: prepared.planned, device: summary.device.clone() });
        let mut watch = optimise::Watch { interrupt: &interrupt, preview_every, pass: None };
        complete(&prepared, run, dir, &mut watch, progress, &mut summary)
    }));
    ended(summary, result, started)
}

/// What [`execute_batched`] reports, in the calling thread.
#[derive(Debug)]
pub enum BatchEvent {
    /// Run `i` (its index in the plan) starts: its inputs are about to be resolved.
    Started(usize),
    /// An event of run `i`.
    Progress(usize, Progress),
    /// Run `i` ended, however it ended.
    Ended(usize, Box<RunSummary>),
}

/// One run for [`execute_batched`]: its index in the plan, the run and its folder.
pub type Job<'a> = (usize, &'a PlannedRun, PathBuf);

/// Runs `jobs` as [`execute`] runs each, up to `width` at once, each in its own thread, their
/// network passes pooled into batches ([`batch`]): a run starts as soon as one ends, so the
/// batch stays full. Inputs are resolved, locks taken and complete runs skipped in the calling
/// thread, which also receives every event (`on`). Stops starting runs on Ctrl-C (the runs in
/// flight save a checkpoint and stop). Failures stay per run: an error or a panic in one run's
/// thread fails that run only; a crash of the process (an aborted allocation) ends them all,
/// which is why [`memory::batch_width`] sizes the batch from the memory plan. The peak memory
/// each run records is the process's (the batch's).
pub fn execute_batched(
    session: &mut Session,
    jobs: &[Job],
    policy: Policy,
    width: usize,
    on: &mut dyn FnMut(&mut Session, BatchEvent),
) -> batch::BatchStats {
    enum Msg {
        Progress(Progress),
        Ended(Box<RunSummary>),
    }
    let batch = batch::Batch::new();
    let (interrupt, preview_every) = (session.interrupt.clone(), session.preview_every);
    reset_peak_rss();
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Msg)>();
        let mut queue = jobs.iter();
        let mut in_flight = 0usize;
        loop {
            while in_flight < width.max(1) && !interrupt.load(std::sync::atomic::Ordering::SeqCst) {
                let Some((i, run, dir)) = queue.next() else { break };
                let (i, run, dir) = (*i, *run, dir.as_path());
                on(session, BatchEvent::Started(i));
                let started = Instant::now();
                let mut summary = RunSummary::new(run);
                let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    prepare(session, run, dir, policy, &mut summary)
                }));
                let prepared = match prepared {
                    Ok(Ok(Some(p))) => p,
                    // Nothing to compute (busy, complete), or the preparation failed.
                    other => {
                        let status = summary.status.clone();
                        let result = other.map(|r| r.map(|_| status));
                        on(session, BatchEvent::Ended(i, Box::new(ended(summary, result, started))));
                        continue;
                    }
                };
                let device = summary.device.clone();
                on(session, BatchEvent::Progress(i, Progress::Started { iterations: prepared.planned, device }));
                let (tx, batch, interrupt) = (tx.clone(), batch.clone(), interrupt.clone());
                scope.spawn(move || {
                    let mut member = batch::Member::new(batch, prepared.net.clone());
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let mut watch =
                            optimise::Watch { interrupt: &interrupt, preview_every, pass: Some(&mut member) };
                        let mut progress = |p: Progress| {
                            let _ = tx.send((i, Msg::Progress(p)));
                        };
                        complete(&prepared, run, dir, &mut watch, &mut progress, &mut summary)
                    }));
                    // Out of the batch before anything else: the others no longer wait for it.
                    drop(member);
                    drop(prepared);
                    let _ = tx.send((i, Msg::Ended(Box::new(ended(summary, result, started)))));
                });
                in_flight += 1;
            }
            if in_flight == 0 {
                break;
            }
            match rx.recv() {
                Ok((i, Msg::Progress(p))) => on(session, BatchEvent::Progress(i, p)),
                Ok((i, Msg::Ended(s))) => {
                    in_flight -= 1;
                    on(session, BatchEvent::Ended(i, s));
                }
                Err(_) => break,
            }
        }
    });
    batch.stats()
}

/// A run ready to optimise: its lock held, its inputs resolved, not complete already.
struct Prepared {
    _lock: std::fs::File,
    net: Arc<Vgg19>,
    device: Device,
    inputs: inputs::Inputs,
    id: String,
    stages: Vec<crate::params::Stage>,
    /// Steps over all stages.
    planned: usize,
}

/// Takes the run's lock and resolves its inputs; `None` when there is nothing to compute:
/// another process holds the run (`Busy`) or it is complete (`Skipped`, or `Flagged` as
/// recorded), the status in `summary`.
fn prepare(
    session: &mut Session,
    run: &PlannedRun,
    dir: &Path,
    policy: Policy,
    summary: &mut RunSummary,
) -> Result<Option<Prepared>> {
    let Some(lock) = lock(dir, policy.wait)? else {
        summary.status = Status::Busy;
        return Ok(None);
    };
    let p = &run.params;
    let device = resolve_device(p.output.device)?;
    summary.device = device_name(&device);
    let (net, weights) = session.network(p, &device)?;
    let inputs = inputs::resolve(session, p, weights)?;
    let id = inputs::identity(p, &inputs);
    if !policy.force {
        if let Some(status) = skip_if_complete(dir, &id, summary) {
            summary.status = status;
            return Ok(None);
        }
    }
    let stages = p.stages(inputs::Setup::output_size(p, &inputs)?).map_err(|e| Error::Run(e.message))?;
    let planned: usize = stages.iter().map(|s| s.iterations).sum();
    Ok(Some(Prepared { _lock: lock, net, device, inputs, id, stages, planned }))
}

/// Optimises a prepared run and writes its outputs and, last, its record.
fn complete(
    r: &Prepared,
    run: &PlannedRun,
    dir: &Path,
    watch: &mut optimise::Watch,
    progress: &mut dyn FnMut(Progress),
    summary: &mut RunSummary,
) -> Result<Status> {
    let p = &run.params;
    let (setup, trace) = optimise_stages(&r.net, p, &r.inputs, &r.device, &r.stages, (dir, &r.id), watch, progress)?;
    if let Some(m) = watch.pass.as_deref_mut() {
        // The outputs are this run's alone: the batch does not wait for them.
        m.leave();
    }
    summary.iterations = trace.iterations;
    summary.evals = trace.evals;
    summary.seconds = trace.seconds;
    summary.final_terms = Some(trace.output_terms.clone());
    summary.curve = trace.curve();
    let image = optimise::write_outputs(dir, run, &setup, &trace)?;
    let status = match verdict::verdict(&trace, r.planned, &image) {
        Some(why) => Status::Flagged(why),
        None => Status::Ok,
    };
    summary.status = status.clone();
    summary.peak_rss_mib = peak_rss_mib();
    let header =
        crate::record::RecordHeader { id: &r.id, inputs: &r.inputs.named(), width: setup.width, height: setup.height };
    crate::record::write_run_record(dir, &header, summary)?;
    checkpoint::remove(dir);
    let _ = std::fs::remove_file(dir.join(optimise::PREVIEW));
    Ok(status)
}

/// The summary of a run that ended with `result` (a panic's message included).
fn ended(mut summary: RunSummary, result: std::thread::Result<Result<Status>>, started: Instant) -> RunSummary {
    // A skipped run keeps the peak recorded when it ran, not this process's.
    if !matches!(result, Ok(Ok(Status::Skipped | Status::Flagged(_) | Status::Busy))) {
        summary.peak_rss_mib = peak_rss_mib();
    }
    summary.status = match result {
        Ok(Ok(status)) => status,
        Ok(Err(Error::Interrupted)) => Status::Interrupted,
        Ok(Err(e)) => Status::Failed(crate::error::chain(&e)),
        Err(panic) => Status::Failed(format!("internal error: {}", crate::error::panic_message(&*panic))),
    };
    if summary.seconds == 0.0 {
        summary.seconds = started.elapsed().as_secs_f64();
    }
    summary
}

/// Runs every stage in turn, each from the previous one's output resized to it, saving each
/// stage's image as `scale_NN.png` when there are several; resumes at the stage of the run's
/// checkpoint. Returns the last stage's setup and the trace of all stages.
#[allow(clippy::too_many_arguments)]
fn optimise_stages<'n>(
    net: &'n Vgg19,
    p: &RunParams,
    inputs: &inputs::Inputs,
    device: &Device,
    stages: &[crate::params::Stage],
    (dir, id): (&Path, &str),
    watch: &mut optimise::Watch,
    progress: &mut dyn FnMut(Progress),
) -> Result<(inputs::Setup<'n>, optimise::Trace)> {
    let mut resume = checkpoint::load(dir, id, device)
        .filter(|c| stages.get(c.stage).is_some_and(|s| c.x.dims() == [1, 3, s.height as usize, s.width as usize]));
    let mut k = resume.as_ref().map_or(0, |c| c.stage);
    let (mut carried, mut start) = (optimise::Carried::default(), None);
    loop {
        let stage = stages[k];
        let t = Instant::now();
        let setup = inputs::Setup::build(net, p, inputs, device, (stage.width, stage.height), start.take())?;
        // Later stages' targets and start count in the run's seconds (the first stage's, as a
        // single-scale run's, do not).
        if k > 0 && carried.step > 0 {
            carried.seconds += t.elapsed().as_secs_f64();
        }
        let (trace, next) = optimise::optimise(&setup, p, stage, (carried, resume.take()), dir, id, watch, progress)?;
        if stages.len() > 1 {
            output::save_png(&setup.image(&trace.x)?, &dir.join(format!("scale_{k:02}.png")))?;
        }
        // An exhausted evaluation budget goes straight to the output's size.
        k = if trace.stop == optimise::Stop::MaxEvals { stages.len() - 1 } else { k + 1 };
        let Some(to) = stages.get(k).filter(|_| k > stage.index) else {
            return Ok((setup, trace));
        };
        let size = (to.width, to.height);
        start = Some(upsample::resize(&trace.x, size, upsample::Filter::Bicubic)?);
        let state = match (p.optimizer.optimizer, p.optimizer.carry_moments, next.state) {
            (crate::params::OptimizerKind::Adam, true, Some(s)) => Some(upsample::carry_adam_state(&s, size)?),
            // L-BFGS's pairs belong to the previous size: its history restarts.
            _ => None,
        };
        carried = optimise::Carried { rows: trace.rows, state, ..next };
    }
}

/// The status of the complete outputs of a run of identity `id` in `dir` (`Skipped`, or the
/// flag it was recorded with), filling `summary` from its record; `None` when there are none.
fn skip_if_complete(dir: &Path, id: &str, summary: &mut RunSummary) -> Option<Status> {
    let prev = read_run_record(dir)?;
    if prev.id != id || !dir.join("output.png").is_file() || !dir.join("losses.csv").is_file() {
        return None;
    }
    Some(match summary.fill_from(prev) {
        Some(why) => Status::Flagged(why),
        None => Status::Skipped,
    })
}
