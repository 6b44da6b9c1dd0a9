//! `runner`: runs a TOML experiment (every run of its sweep), or times the objective.
//!
//! ```text
//! runner experiments/quickstart.toml            # the README's main job
//! runner SPEC.toml --dry-run                    # print the checked plan
//! runner bench --size 256                       # one JSON line, as torch_reference.py bench
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use runner::assets::Assets;
use runner::params::DeviceChoice;
use runner::run::{execute, Progress, Session, Status};
use runner::spec::{self, Overrides};

#[derive(Parser)]
#[command(
    version,
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
    /// Time one evaluation of the objective (forward to relu5_1 and backward to the image) and
    /// print one JSON line with the keys of ../shared/bench/torch_reference.py bench.
    Bench(BenchArgs),
    /// Fetch the weights and every manifest image into the cache, verifying their hashes.
    Fetch,
    /// Build docs/ablations.md and its figures from the results of the ablation experiments.
    Report(ReportArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The experiment spec (TOML); see docs/experiments.md.
    spec: Option<PathBuf>,
    /// Output folder; results go to DIR/<experiment name>/<run name>/.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Only the runs whose names match this glob (`*seed=1*`).
    #[arg(long)]
    only: Option<String>,
    /// Print the checked plan and stop.
    #[arg(long)]
    dry_run: bool,
    /// Run again even runs whose outputs are complete.
    #[arg(long)]
    force: bool,
    /// Device for every run: auto, cpu, cuda, cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Long side in pixels for every run.
    #[arg(long)]
    size: Option<u32>,
    /// Optimizer steps for every run.
    #[arg(long)]
    iterations: Option<usize>,
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
    /// fast (Winograd F(4x4,3x3) on CPU), winograd2x2, or candle (candle's conv2d).
    #[arg(long, default_value = "fast")]
    algorithm: String,
}

#[derive(Args)]
struct ReportArgs {
    /// Where the experiments' results are.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Where the report and its figures go.
    #[arg(long, default_value = "docs")]
    docs: PathBuf,
}

fn main() -> ExitCode {
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
            let algorithm = match b.algorithm.as_str() {
                "fast" => vgg::ConvAlgorithm::Fast,
                "winograd2x2" => vgg::ConvAlgorithm::Winograd2x2,
                "candle" => vgg::ConvAlgorithm::Candle,
                other => bail!("--algorithm `{other}` is not valid (valid: fast, winograd2x2, candle)"),
            };
            let cfg = runner::bench::BenchConfig {
                width: b.size,
                height: b.height.unwrap_or(b.size),
                evals: b.evals.max(1),
                device: b.device.parse::<DeviceChoice>().map_err(anyhow::Error::msg).context("--device")?,
                algorithm,
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
            runner::report::ablations::build(&r.results, &r.docs)?;
            Ok(ExitCode::SUCCESS)
        }
        None => run_spec(cli.run, assets),
    }
}

fn run_spec(a: RunArgs, assets: Assets) -> anyhow::Result<ExitCode> {
    let Some(spec_path) = a.spec else {
        bail!("give an experiment spec (runner experiments/quickstart.toml) or a subcommand; see --help");
    };
    let mut exp = spec::load(&spec_path)?;
    let device = a
        .device
        .as_deref()
        .map(|d| d.parse::<DeviceChoice>().map_err(anyhow::Error::msg).context("--device"))
        .transpose()?;
    exp.apply_overrides(&Overrides { size: a.size, iterations: a.iterations, device })?;
    if let Some(glob) = &a.only {
        let m = globset::Glob::new(glob).with_context(|| format!("--only `{glob}`"))?.compile_matcher();
        exp.runs.retain(|r| m.is_match(&r.name));
        if exp.runs.is_empty() {
            bail!("--only `{glob}` matches no run of {}", spec_path.display());
        }
    }
    let interrupt = Arc::new(AtomicBool::new(false));
    let mut session = Session::new(assets, interrupt.clone());
    session.spec_dir = spec_path.parent().map(|p| p.to_path_buf());
    // Check every input before anything runs: images exist, hash and decode; devices open.
    preflight(&mut session, &exp)?;
    let exp_dir = a.out.join(&exp.name);
    if a.dry_run {
        let mut plan = format!("# {} ({} runs) -> {}\n", exp.name, exp.runs.len(), exp_dir.display());
        if !exp.description.is_empty() {
            plan += &format!("# {}\n", exp.description.trim());
        }
        for r in &exp.runs {
            plan += &format!("\n[[run]]  # {}\nname = {:?}\n{}", r.label, r.name, spec::to_table(&r.params));
        }
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), plan.as_bytes());
        return Ok(ExitCode::SUCCESS);
    }
    {
        let flag = interrupt.clone();
        ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: finishing the current step; press Ctrl-C again to quit now");
        })
        .context("installing the Ctrl-C handler")?;
    }
    let multi = MultiProgress::new();
    let total = multi.add(ProgressBar::new(exp.runs.len() as u64));
    total.set_style(ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30}] {pos}/{len} runs, {elapsed} elapsed, ETA {eta}",
    )?);
    total.set_prefix(exp.name.clone());
    let mut summaries = Vec::new();
    for run in &exp.runs {
        let bar = multi.add(ProgressBar::new(run.params.iterations as u64));
        bar.set_style(ProgressStyle::with_template("  {prefix} [{bar:30}] {pos}/{len} it  {msg}  ETA {eta}")?);
        bar.set_prefix(run.name.clone());
        bar.enable_steady_tick(Duration::from_millis(500));
        let mut on_progress = |p: Progress| match p {
            Progress::Started { iterations, device } => {
                bar.set_length(iterations as u64);
                bar.set_message(device);
            }
            Progress::Step { iteration, evals, total, seconds } => {
                bar.set_position(iteration as u64);
                bar.set_message(format!("loss {total:.4e}  {:.2} s/it  {evals} evals", seconds / iteration as f64));
            }
        };
        let s = execute(&mut session, run, &exp_dir, a.force, &mut on_progress);
        bar.finish_and_clear();
        let line = match &s.status {
            Status::Ok => format!(
                "ok       {}: {} it, {} evals, {:.1} s ({:.3} s/eval) on {}, final loss {:.4e}",
                run.name,
                s.iterations,
                s.evals,
                s.seconds,
                s.seconds / s.evals.max(1) as f64,
                s.device,
                s.final_terms.as_ref().map(|t| t.total).unwrap_or(f64::NAN)
            ),
            Status::Skipped => format!("skipped  {}: complete from an earlier invocation (--force to redo)", run.name),
            Status::Failed(r) => format!("FAILED   {}: {r}", run.name),
        };
        if multi.is_hidden() {
            eprintln!("{line}");
        } else {
            multi.println(line)?;
        }
        summaries.push(s);
        total.inc(1);
        runner::report::write_experiment_outputs(&exp_dir, &exp, &summaries)
            .with_context(|| format!("writing the outputs of {}", exp_dir.display()))?;
        if interrupt.load(Ordering::SeqCst) {
            break;
        }
    }
    total.finish_and_clear();
    let failed = summaries.iter().filter(|s| matches!(s.status, Status::Failed(_))).count();
    eprintln!("{}: {} runs, {} failed; results in {}", exp.name, summaries.len(), failed, exp_dir.display());
    if interrupt.load(Ordering::SeqCst) {
        return Ok(ExitCode::from(130));
    }
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn preflight(session: &mut Session, exp: &runner::spec::Experiment) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for r in &exp.runs {
        let p = &r.params;
        let mut names: Vec<&str> = p.style.iter().map(|s| s.image.as_str()).collect();
        names.extend(p.content.as_deref());
        if let runner::params::Init::Image(i) = &p.init {
            names.push(i);
        }
        for n in names {
            if seen.insert(n.to_string()) {
                let a = session.image(n).with_context(|| format!("{}: run `{}`", exp.file.display(), r.name))?;
                vgg::imageio::load_rgb(&a.path)
                    .with_context(|| format!("{}: run `{}`: image `{n}`", exp.file.display(), r.name))?;
            }
        }
        if seen.insert(format!("device {:?}", p.device)) {
            runner::run::resolve_device(p.device)
                .with_context(|| format!("{}: run `{}`", exp.file.display(), r.name))?;
        }
        if let Some(w) = &p.weights {
            if !std::path::Path::new(w).is_file() {
                bail!("{}: run `{}`: weights: {w} is not a file", exp.file.display(), r.name);
            }
        }
    }
    Ok(())
}
