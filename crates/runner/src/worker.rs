//! Each run in its own process, so that nothing one run does (a panic, an allocation that
//! aborts, the kernel's OOM killer) can take down the sweep: the parent records that run as
//! failed, with the child's last words, and goes on. A process per run also makes each run's
//! peak memory its own.
//!
//! The parent starts `runner __worker` and writes the run to its stdin as TOML (the resolved
//! parameters, as `run.toml` holds them); the child runs it and writes one JSON line per
//! event to its stdout (`started`, `step`, then `end` with the status). Interruption travels
//! the same way: the parent writes `interrupt` on the child's stdin (and a closed stdin, when
//! the parent dies, means the same), so the child stops after its current step.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use runner::assets::Assets;
use runner::params::RunParams;
use runner::record::{read_run_record, RunSummary, Status};
use runner::run::{execute, Policy, Progress, Session};
use runner::spec::{PlannedRun, Swept};
use serde_json::{json, Value as Json};
use toml::{Table, Value};

/// What a worker is asked to do.
fn payload(run: &PlannedRun, dir: &Path, policy: Policy, session: &Session) -> String {
    let mut t = Table::new();
    t.insert("dir".into(), Value::String(dir.display().to_string()));
    t.insert("force".into(), Value::Boolean(policy.force));
    t.insert("wait".into(), Value::Boolean(policy.wait));
    t.insert("preview_every".into(), Value::Integer(session.preview_every as i64));
    if let Some(d) = &session.spec_dir {
        t.insert("spec_dir".into(), Value::String(d.display().to_string()));
    }
    t.insert("name".into(), Value::String(run.name.clone()));
    t.insert("label".into(), Value::String(run.label.clone()));
    let swept = run
        .swept
        .iter()
        .map(|s| {
            let mut e = Table::new();
            e.insert("key".into(), Value::String(s.key.clone()));
            e.insert("label".into(), Value::String(s.label.clone()));
            Value::Table(e)
        })
        .collect();
    t.insert("swept".into(), Value::Array(swept));
    t.insert("params".into(), Value::Table(run.params.to_table()));
    toml::to_string(&t).unwrap_or_default()
}

/// The parent's side: runs `run` in a worker process (with the session's spec folder and
/// preview setting) and returns its summary.
pub fn execute_isolated(
    run: &PlannedRun,
    dir: &Path,
    policy: Policy,
    session: &Session,
    interrupts: &[Arc<AtomicBool>],
    progress: &mut dyn FnMut(Progress),
) -> RunSummary {
    let mut summary = RunSummary::new(run);
    match supervise(run, dir, policy, session, interrupts, progress, &mut summary) {
        Ok(status) => summary.status = status,
        Err(e) => summary.status = Status::Failed(format!("{e:#}")),
    }
    summary
}

/// The worker process and the threads that feed its stdin and drain its stderr.
struct Worker {
    child: std::process::Child,
    done: Arc<AtomicBool>,
    watcher: std::thread::JoinHandle<()>,
    err_reader: std::thread::JoinHandle<()>,
    last_words: Arc<Mutex<Vec<String>>>,
}

/// Starts `runner __worker`, hands it its job, forwards an interruption to it (any of the
/// `interrupts` set: Ctrl-C, or the run's claim lost to another worker), and keeps the last
/// lines of its stderr (backtrace frames left out).
fn spawn(job: &str, interrupts: &[Arc<AtomicBool>]) -> anyhow::Result<Worker> {
    let exe = std::env::current_exe().context("finding the runner's own executable")?;
    let mut child = Command::new(exe)
        .arg("__worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the run's process")?;
    let mut stdin = child.stdin.take().context("the worker's stdin")?;
    stdin.write_all(job.as_bytes())?;
    stdin.write_all(b"\n%%\n")?;
    stdin.flush()?;
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (interrupts, done) = (interrupts.to_vec(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if interrupts.iter().any(|i| i.load(Ordering::SeqCst)) {
                    let _ = stdin.write_all(b"interrupt\n").and_then(|_| stdin.flush());
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let last_words = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().context("the worker's stderr")?;
    let err_reader = {
        let last_words = last_words.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Backtrace frames say nothing to a user; the message before them does.
                let t = line.trim_start();
                let frame = t.split_once(": ").is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
                    || t.starts_with("at ")
                    || t.starts_with("stack backtrace")
                    || t.starts_with("note: Some details");
                if frame || t.is_empty() {
                    continue;
                }
                let mut w = last_words.lock().unwrap_or_else(|e| e.into_inner());
                w.push(line);
                if w.len() > 8 {
                    w.remove(0);
                }
            }
        })
    };
    Ok(Worker { child, done, watcher, err_reader, last_words })
}

/// Passes the worker's progress events on; its `end` event, if it sent one.
fn read_events(stdout: impl Read, progress: &mut dyn FnMut(Progress)) -> Option<Json> {
    let mut end = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let Ok(event) = serde_json::from_str::<Json>(&line) else { continue };
        match event["event"].as_str() {
            Some("started") => progress(Progress::Started {
                iterations: event["iterations"].as_u64().unwrap_or(0) as usize,
                device: event["device"].as_str().unwrap_or("").to_string(),
            }),
            Some("step") => progress(Progress::Step {
                iteration: event["iteration"].as_u64().unwrap_or(0) as usize,
                evals: event["evals"].as_u64().unwrap_or(0) as usize,
                total: event["total"].as_f64().unwrap_or(f64::NAN),
                seconds: event["seconds"].as_f64().unwrap_or(0.0),
            }),
            Some("preview") => {
                progress(Progress::Preview { iteration: event["iteration"].as_u64().unwrap_or(0) as usize })
            }
            Some("end") => end = Some(event),
            _ => {}
        }
    }
    end
}

fn supervise(
    run: &PlannedRun,
    dir: &Path,
    policy: Policy,
    session: &Session,
    interrupts: &[Arc<AtomicBool>],
    progress: &mut dyn FnMut(Progress),
    summary: &mut RunSummary,
) -> anyhow::Result<Status> {
    let mut w = spawn(&payload(run, dir, policy, session), interrupts)?;
    let stdout = w.child.stdout.take().context("the worker's stdout")?;
    let end = read_events(stdout, progress);
    let exit = w.child.wait().context("waiting for the run's process")?;
    w.done.store(true, Ordering::SeqCst);
    let _ = w.watcher.join();
    let _ = w.err_reader.join();
    let Some(end) = end else {
        // Ctrl-C on a terminal reaches the run's process too; a second one ends it at once.
        if interrupts.iter().any(|i| i.load(Ordering::SeqCst)) {
            return Ok(Status::Interrupted);
        }
        let words = w.last_words.lock().unwrap_or_else(|e| e.into_inner()).join(" | ");
        return Ok(Status::Failed(format!("the run's process died ({}): {words}", describe_exit(&exit))));
    };
    Ok(status_from_end(&end, dir, summary))
}

/// The run's status from the worker's `end` event; a completed run's numbers from its record.
fn status_from_end(end: &Json, dir: &Path, summary: &mut RunSummary) -> Status {
    summary.device = end["device"].as_str().unwrap_or("").to_string();
    summary.seconds = end["seconds"].as_f64().unwrap_or(0.0);
    summary.peak_rss_mib = end["peak_rss_mib"].as_f64();
    match end["status"].as_str() {
        Some(status @ ("ok" | "skipped" | "flagged")) => {
            let Some(rec) = read_run_record(dir) else {
                return Status::Failed("the run's process ended without its run.toml".into());
            };
            match (status, summary.fill_from(rec)) {
                (_, Some(why)) => Status::Flagged(why),
                ("skipped", None) => Status::Skipped,
                _ => Status::Ok,
            }
        }
        Some("interrupted") => Status::Interrupted,
        Some("busy") => Status::Busy,
        _ => Status::Failed(end["reason"].as_str().unwrap_or("").to_string()),
    }
}

fn describe_exit(s: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = s.signal() {
            let name = match sig {
                6 => " (SIGABRT: an allocation failed or the process aborted)",
                9 => " (SIGKILL: killed, often by the kernel when memory runs out)",
                11 => " (SIGSEGV)",
                _ => "",
            };
            return format!("signal {sig}{name}");
        }
    }
    format!("exit status {}", s.code().unwrap_or(-1))
}

fn emit(event: Json) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{event}");
    let _ = out.flush();
}

/// A worker's job, as the parent wrote it.
struct Job {
    run: PlannedRun,
    dir: PathBuf,
    policy: Policy,
    spec_dir: Option<PathBuf>,
    preview_every: usize,
}

/// Reads the job from stdin, up to the `%%` line; stdin stays open for interruptions.
fn read_job(stdin: &mut impl BufRead) -> anyhow::Result<Job> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if stdin.read_line(&mut line)? == 0 || line.trim_end() == "%%" {
            break;
        }
        text += &line;
    }
    let t: Table = text.parse().context("the worker's payload")?;
    let get = |k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let flag = |k: &str| t.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let params = RunParams::from_table(t.get("params").and_then(|v| v.as_table()).context("params")?)
        .map_err(|(k, p)| anyhow::anyhow!("params.{k}: {}", p.message))?;
    let swept = t
        .get("swept")
        .and_then(|v| v.as_array())
        .map(|a| {
            let s = |v: &Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            a.iter().map(|v| Swept { key: s(v, "key"), label: s(v, "label") }).collect()
        })
        .unwrap_or_default();
    Ok(Job {
        run: PlannedRun { name: get("name"), label: get("label"), params, swept, given: Default::default() },
        dir: PathBuf::from(get("dir")),
        policy: Policy { force: flag("force"), wait: flag("wait") },
        spec_dir: t.get("spec_dir").and_then(|v| v.as_str()).map(PathBuf::from),
        preview_every: t
            .get("preview_every")
            .and_then(|v| v.as_integer())
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0),
    })
}

/// The child's side, `runner __worker`: reads its run from stdin, runs it, reports on stdout.
pub fn worker_main(assets: Assets) -> anyhow::Result<ExitCode> {
    let mut stdin = BufReader::new(std::io::stdin());
    let job = read_job(&mut stdin)?;
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        // `interrupt` on stdin, or stdin closed (the parent is gone): stop after this step.
        let flag = interrupt.clone();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdin.read_to_string(&mut rest);
            flag.store(true, Ordering::SeqCst);
        });
        let flag = interrupt.clone();
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let mut session = Session::new(assets, interrupt);
    session.spec_dir = job.spec_dir;
    session.preview_every = job.preview_every;
    let mut on_progress = |p: Progress| match p {
        Progress::Preview { iteration } => emit(json!({"event": "preview", "iteration": iteration})),
        Progress::Started { iterations, device } => {
            emit(json!({"event": "started", "iterations": iterations, "device": device}))
        }
        Progress::Step { iteration, evals, total, seconds } => {
            emit(json!({"event": "step", "iteration": iteration, "evals": evals, "total": total, "seconds": seconds}))
        }
    };
    let s = execute(&mut session, &job.run, &job.dir, job.policy, &mut on_progress);
    let (status, reason) = match &s.status {
        Status::Ok => ("ok", String::new()),
        Status::Skipped => ("skipped", String::new()),
        Status::Flagged(w) => ("flagged", w.clone()),
        Status::Interrupted => ("interrupted", String::new()),
        Status::Busy => ("busy", String::new()),
        Status::Failed(r) => ("failed", r.clone()),
        Status::Pending => ("failed", "not run".into()),
    };
    let peak = s.peak_rss_mib;
    emit(
        json!({"event": "end", "status": status, "reason": reason, "seconds": s.seconds, "device": s.device, "peak_rss_mib": peak}),
    );
    Ok(ExitCode::SUCCESS)
}
