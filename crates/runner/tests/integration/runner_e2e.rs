//! The `runner` binary end to end on tiny real runs (64×48 fixture images, a few iterations).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::helpers::*;

fn runner(args: &[&str], cwd: &Path) -> Output {
    weights_path(); // fetched once, shared through the cache
    Command::new(env!("CARGO_BIN_EXE_runner")).args(args).current_dir(cwd).output().expect("running runner")
}

fn spec(dir: &Path, body: &str) -> PathBuf {
    let content = fixture_dir().join("content_64x48.png");
    let style = fixture_dir().join("style_64x48.png");
    let text = body.replace("CONTENT", &content.display().to_string()).replace("STYLE", &style.display().to_string());
    let p = dir.join("exp.toml");
    std::fs::write(&p, text).unwrap();
    p
}

const TINY: &str = r#"
name = "tiny"
description = "a tiny real experiment"
[defaults]
content = "CONTENT"
style = "STYLE"
iterations = 4
save_every = 2
init = "noise"
size = 64
[sweep]
seed = [0, 1]
"#;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn a_tiny_experiment_writes_every_output_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), TINY);
    let o = runner(&[s.to_str().unwrap(), "--out", "res"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let exp = dir.path().join("res/tiny");
    for run in ["seed=0", "seed=1"] {
        let d = exp.join(run);
        let img = image::open(d.join("output.png")).unwrap();
        assert_eq!((img.width(), img.height()), (64, 48), "non-square output keeps the aspect");
        assert!(d.join("snapshot_00002.png").is_file());
        image::open(d.join("loss.png")).unwrap();
        let mut csv = csv::Reader::from_path(d.join("losses.csv")).unwrap();
        let header: Vec<String> = csv.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(&header[..8], ["iteration", "scale", "evals", "seconds", "total", "content", "style", "tv"]);
        assert!(header.contains(&"content_relu4_2".to_string()) && header.contains(&"style_relu5_1".to_string()));
        let rows: Vec<csv::StringRecord> = csv.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 5, "iteration 0 and 4 steps");
        let totals: Vec<f64> = rows.iter().map(|r| r[4].parse().unwrap()).collect();
        assert!(totals[4] < totals[0], "the loss decreases: {totals:?}");
        let record: toml::Table = std::fs::read_to_string(d.join("run.toml")).unwrap().parse().unwrap();
        assert_eq!(record["inputs"]["weights"]["sha256"].as_str().unwrap(), runner::assets::WEIGHTS.1);
        assert_eq!(record["result"]["iterations"].as_integer().unwrap(), 4);
        assert!(record["program"].as_str().unwrap().starts_with("gatys-rs runner"));
        let params = runner::params::RunParams::from_table(record["params"].as_table().unwrap()).unwrap();
        assert_eq!(params.optimizer.iterations.at(0), 4);
    }
    let mut summary = csv::Reader::from_path(exp.join("summary.csv")).unwrap();
    let h: Vec<String> = summary.headers().unwrap().iter().map(String::from).collect();
    for col in [
        "name",
        "seed",
        "status",
        "final_total",
        "final_content",
        "final_style",
        "iterations",
        "evals",
        "seconds",
        "s_per_eval",
        "peak_rss_mib",
    ] {
        assert!(h.contains(&col.to_string()), "summary.csv lacks {col}: {h:?}");
    }
    let rows: Vec<csv::StringRecord> = summary.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| &r[2] == "ok" && r[3].parse::<f64>().unwrap() > 0.0));
    assert!(image::open(exp.join("grid.png")).unwrap().width() > 128);
    image::open(exp.join("curves.png")).unwrap();
    // index.html: self-contained, its data the summary's.
    let page = std::fs::read_to_string(exp.join("index.html")).unwrap();
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"), "nothing fetched from elsewhere");
    let json = page.split_once("id=\"data\">").unwrap().1.split_once("</script>").unwrap().0;
    let data: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(data["experiment"], "tiny");
    assert_eq!(data["varying"], serde_json::json!(["seed"]));
    for (k, r) in rows.iter().enumerate() {
        let run = &data["runs"][k];
        assert_eq!(run["name"], &r[0]);
        assert_eq!(run["state"], "ok");
        assert_eq!(run["image"], "output.png");
        let (page_total, csv_total) = (run["final_total"].as_f64().unwrap(), r[3].parse::<f64>().unwrap());
        assert!((page_total - csv_total).abs() <= 1e-6 * csv_total, "{page_total} vs {csv_total}");
        assert_eq!(run["curve"].as_array().unwrap().len(), 5, "iteration 0 and 4 steps");
        assert!(run["params"].as_str().unwrap().contains(&format!("seed = {k}")));
    }
    // A second invocation skips complete runs and leaves their outputs untouched; the summary
    // keeps what the runs measured (time, memory, losses), not what the skipping process did.
    let before = std::fs::metadata(exp.join("seed=0/output.png")).unwrap().modified().unwrap();
    let summary_before = std::fs::read_to_string(exp.join("summary.csv")).unwrap();
    let o = runner(&[s.to_str().unwrap(), "--out", "res"], dir.path());
    assert!(o.status.success() && stderr(&o).matches("skipped").count() == 2, "{}", stderr(&o));
    assert_eq!(std::fs::metadata(exp.join("seed=0/output.png")).unwrap().modified().unwrap(), before);
    assert_eq!(std::fs::read_to_string(exp.join("summary.csv")).unwrap(), summary_before);
    // A changed parameter changes the identity: the run is done again.
    let o = runner(&[s.to_str().unwrap(), "--out", "res", "--iterations", "2", "--only", "seed=1"], dir.path());
    assert!(o.status.success() && stderr(&o).contains("ok       seed=1"), "{}", stderr(&o));
    // --force redoes a complete run.
    let o =
        runner(&[s.to_str().unwrap(), "--out", "res", "--iterations", "2", "--only", "seed=1", "--force"], dir.path());
    assert!(stderr(&o).contains("ok       seed=1"), "{}", stderr(&o));
}

#[test]
fn a_failing_run_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.bin");
    std::fs::write(&bad, b"not weights at all").unwrap();
    let body = format!(
        r#"
        name = "mixed"
        [defaults]
        content = "CONTENT"
        style = "STYLE"
        iterations = 2
        [[run]]
        name = "broken"
        weights = "{}"
        [[run]]
        name = "good"
        "#,
        bad.display()
    );
    let s = spec(dir.path(), &body);
    let o = runner(&[s.to_str().unwrap(), "--out", "res"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let exp = dir.path().join("res/mixed");
    assert!(exp.join("good/output.png").is_file());
    assert!(!exp.join("broken/run.toml").exists());
    let text = std::fs::read_to_string(exp.join("summary.csv")).unwrap();
    let broken = text.lines().find(|l| l.starts_with("broken")).unwrap();
    assert!(broken.contains("broken.bin") && broken.contains("magic"), "{broken}");
    assert!(text.lines().any(|l| l.starts_with("good") && l.contains(",ok,")), "{text}");
}

#[test]
fn bad_specs_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "name = \"x\"\n[defaults]\ncontent = \"photos/me.jpg\"\nstyle = \"nowhere.png\"\n");
    let o = runner(&[s.to_str().unwrap(), "--out", "res"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let m = stderr(&o);
    // Both missing images at once, each at its key and line, saying where it looked.
    assert!(m.contains("exp.toml:3:11: defaults.content") && m.contains("photos/me.jpg"), "{m}");
    assert!(m.contains("exp.toml:4:9: defaults.style") && m.contains("nowhere.png"), "{m}");
    assert!(m.contains(&format!("looked for the file at {}", dir.path().join("photos/me.jpg").display())), "{m}");
    assert!(!m.contains("did you mean"), "no far-fetched image name is suggested: {m}");
    // A missing spec: the operating system's reason, said once.
    let o = runner(&["nowhere.toml"], dir.path());
    let m = stderr(&o);
    assert_eq!((o.status.code(), m.matches("No such file").count()), (Some(2), 1), "{m}");
    assert!(!dir.path().join("res").exists(), "nothing ran");
    let s = spec(dir.path(), "name = \"x\"\n[defaults]\ncontent_layers = [\"relu4_22\"]\n");
    let o = runner(&[s.to_str().unwrap()], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("did you mean `relu4_2`"), "{}", stderr(&o));
    // An unreadable image: a file that is not an image.
    std::fs::write(dir.path().join("fake.png"), b"plain text").unwrap();
    let s = spec(dir.path(), "name = \"x\"\n[defaults]\ncontent = \"fake.png\"\nstyle = \"STYLE\"\n");
    let o = runner(&[s.to_str().unwrap()], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("fake.png"), "{}", stderr(&o));
    if !cfg!(feature = "cuda") {
        let s =
            spec(dir.path(), "name = \"x\"\n[defaults]\ncontent = \"CONTENT\"\nstyle = \"STYLE\"\ndevice = \"cuda\"\n");
        let o = runner(&[s.to_str().unwrap()], dir.path());
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("built without CUDA") && stderr(&o).contains("--features cuda"), "{}", stderr(&o));
    }
}

#[test]
fn dry_run_prints_the_resolved_plan_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), TINY);
    let o = runner(&[s.to_str().unwrap(), "--out", "res", "--dry-run", "--size", "96"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("2 runs of `tiny`") && out.contains("name = \"seed=1\"") && out.contains("size = 96"),
        "{out}"
    );
    // The printed plan is a spec that runs as it is: the same runs, the same parameters.
    let printed = runner::spec::parse_text(&out, "printed.toml").unwrap();
    let original = runner::spec::load(
        &s,
        &{
            let mut o = runner::spec::Overrides::default();
            o.set("size", "96");
            o
        },
        &runner::spec::Limits::default(),
    )
    .unwrap();
    assert_eq!(
        printed.runs.iter().map(|r| (&r.name, &r.params)).collect::<Vec<_>>(),
        original.runs.iter().map(|r| (&r.name, &r.params)).collect::<Vec<_>>()
    );
    assert!(!dir.path().join("res").exists());
}

#[test]
fn report_fills_the_template_from_results() {
    let dir = tempfile::tempdir().unwrap();
    let s =
        spec(dir.path(), &TINY.replace("iterations = 4", "iterations = 2").replace("save_every = 2", "save_every = 0"));
    let o = runner(&[s.to_str().unwrap(), "--out", "res"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("ablations.template.md"),
        "Total {{total}}.\n{{meta init}}\n{{grid init}}\n{{table init}}\n",
    )
    .unwrap();
    // Missing experiments are named.
    let o = runner(&["report", "--results", "res", "--docs", "docs", "--doc", "ablations"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("style_transfer") && stderr(&o).contains("scripts/ablations.sh"), "{}", stderr(&o));
    for exp in runner::report::ablations::ABLATIONS {
        let to = dir.path().join("res").join(exp);
        std::fs::create_dir_all(&to).unwrap();
        for entry in walk(&dir.path().join("res/tiny")) {
            let rel = entry.strip_prefix(dir.path().join("res/tiny")).unwrap();
            std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
            std::fs::copy(&entry, to.join(rel)).unwrap();
        }
    }
    let o = runner(&["report", "--results", "res", "--docs", "docs", "--doc", "ablations"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    // Every document without `--doc`: the controls' template is missing here, and named.
    let o = runner(&["report", "--results", "res", "--docs", "docs"], dir.path());
    assert!(!o.status.success() && stderr(&o).contains("controls.template.md"), "{}", stderr(&o));
    let md = std::fs::read_to_string(docs.join("ablations.md")).unwrap();
    assert!(md.contains("2 runs at 64×48 px, 2 iterations each") && md.contains("| seed=1 | ok |"), "{md}");
    assert!(md.contains("![init: final images](ablations/init.png)") && !md.contains("{{"), "{md}");
    image::open(docs.join("ablations/init.png")).unwrap();
    image::open(docs.join("ablations/ratio_curves.png")).unwrap();
}

/// Polls for `path` to exist; fails the test after `limit_s` seconds (a hang, not a race: the
/// outcome does not depend on when the file appears).
fn wait_for_file(path: &Path, limit_s: u64) {
    let t0 = std::time::Instant::now();
    while !path.exists() {
        assert!(t0.elapsed().as_secs() < limit_s, "{} never appeared", path.display());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn ctrl_c_keeps_finished_runs_and_the_next_invocation_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
        name = "interrupted"
        [defaults]
        content = "CONTENT"
        style = "STYLE"
        [[run]]
        name = "short"
        iterations = 2
        [[run]]
        name = "long"
        iterations = 100000
        save_every = 1
    "#;
    let s = spec(dir.path(), body);
    weights_path();
    let child = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([s.to_str().unwrap(), "--out", "res"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The long run is under way once its first snapshot exists (written after its first step,
    // so after the short run's outputs): a state of the files, not a guess about time.
    let under_way = dir.path().join("res/interrupted/long/snapshot_00001.png");
    wait_for_file(&under_way, 300);
    assert!(dir.path().join("res/interrupted/short/run.toml").is_file());
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = std::fs::read_to_string(dir.path().join("res/interrupted/summary.csv")).unwrap();
    assert!(summary.lines().any(|l| l.starts_with("short") && l.contains(",ok,")), "{summary}");
    assert!(summary.lines().any(|l| l.starts_with("long") && l.contains("interrupted")), "{summary}");
    assert!(!dir.path().join("res/interrupted/long/run.toml").exists());
    // The next invocation skips the finished run.
    let o = runner(&[s.to_str().unwrap(), "--out", "res", "--only", "short"], dir.path());
    assert!(o.status.success() && stderr(&o).contains("skipped  short"), "{}", stderr(&o));
}

#[test]
fn transfer_writes_the_image_and_its_run_files() {
    let dir = tempfile::tempdir().unwrap();
    let content = fixture_dir().join("content_64x48.png");
    let style = fixture_dir().join("style_64x48.png");
    let (c, s) = (content.to_str().unwrap(), style.to_str().unwrap());
    // 5 iterations, not 3: the run must end below where it started (else it is flagged as
    // diverged), and L-BFGS's second step from noise may overshoot. It did once conv1_1 was
    // computed directly (other bits, same math): 2.07e8, 8.6e7, then 2.10e8 at iteration 3;
    // from iteration 4 on the loss falls with either convolution (5 iterations: 5.8e7 against
    // 5.2e7 with the Winograd conv1_1).
    let args = ["transfer", c, s, s, "-o", "out/picture.png", "--size", "64", "--iterations", "5", "--init", "noise"];
    let extra = ["--style-weight", "1e4", "--style-blend-weights", "3,1", "--style-layers", "relu1_1,relu2_1"];
    let all: Vec<&str> = args.iter().chain(&extra).copied().collect();
    let o = runner(&all, dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(dir.path().join("out/picture.png")).unwrap();
    assert_eq!((img.width(), img.height()), (64, 48));
    let run = dir.path().join("out/picture");
    for f in ["losses.csv", "loss.png", "run.toml", "output.png"] {
        assert!(run.join(f).is_file(), "{f}");
    }
    let record: toml::Table = std::fs::read_to_string(run.join("run.toml")).unwrap().parse().unwrap();
    let p = runner::params::RunParams::from_table(record["params"].as_table().unwrap()).unwrap();
    assert_eq!((p.objective.style_weight.0, p.optimizer.iterations.at(0)), (1e4, 5));
    assert_eq!(p.inputs.style.0.iter().map(|s| s.weight).collect::<Vec<_>>(), [3.0, 1.0]);
    assert_eq!(p.objective.style_layers.layers().len(), 2);
    assert!(!dir.path().join("out/summary.csv").exists(), "a one-off writes no experiment files");
    // --dry-run prints the equivalent spec, which parses to the same run.
    let dry: Vec<&str> = all.iter().copied().chain(["--dry-run"]).collect();
    let o = runner(&dry, dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = runner::spec::parse_text(&String::from_utf8_lossy(&o.stdout), "printed.toml").unwrap();
    assert_eq!(printed.runs[0].params, p);
    // Flags are checked as spec values are, and every problem is said at once.
    let o = runner(&["transfer", c, s, "-o", "x.png", "--size", "15", "--optimizer", "sgd"], dir.path());
    let m = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{m}");
    assert!(
        m.contains("--size") && m.contains("16 … 16384") && m.contains("--optimizer") && m.contains("lbfgs, adam"),
        "{m}"
    );
    let o = runner(&["transfer", "--help"], dir.path());
    let help = String::from_utf8_lossy(&o.stdout);
    for p in runner::params::PARAMS.iter().filter(|p| p.key != "content" && p.key != "style") {
        assert!(help.contains(&format!("--{}", p.key.replace('_', "-"))), "--help lacks {}", p.key);
    }
}

/// Issue 12: `style_weight = 1e38` ended in a black image and `noise_std = 1e308` in saturated
/// noise, both recorded `ok`. Suspect results are now flagged, in the summary and the record,
/// and stay flagged when a later invocation skips them.
#[test]
fn suspect_results_are_flagged_not_ok() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
        name = "suspect"
        [defaults]
        content = "CONTENT"
        style = "STYLE"
        size = 64
        iterations = 5
        [[run]]
        name = "huge_style_weight"
        style_weight = 1e38
        [[run]]
        name = "huge_noise"
        init = "noise"
        noise_std = 1e308
        [[run]]
        name = "fine"
    "#;
    let s = spec(dir.path(), body);
    let o = runner(&[s.to_str().unwrap(), "--out", "res"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let summary = std::fs::read_to_string(dir.path().join("res/suspect/summary.csv")).unwrap();
    let row = |name: &str| summary.lines().find(|l| l.starts_with(name)).unwrap().to_string();
    assert!(row("huge_style_weight").contains("degenerate: the output is a constant image"), "{summary}");
    assert!(row("huge_noise").contains("degenerate:") && row("huge_noise").contains("saturated"), "{summary}");
    assert!(row("fine").contains(",ok,"), "{summary}");
    let record = std::fs::read_to_string(dir.path().join("res/suspect/huge_noise/run.toml")).unwrap();
    assert!(record.contains("status = \"degenerate:"), "{record}");
    let o = runner(&[s.to_str().unwrap(), "--out", "res"], dir.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(dir.path().join("res/suspect/summary.csv")).unwrap(), summary);
}

/// Issue 12: an allocation that aborts took the whole sweep down, with no summary. Each run now
/// runs in its own process: under a 2 GB address-space limit the 2048 px run dies, is recorded
/// as failed with the reason, and the next run and the summary are still done.
#[test]
fn a_run_that_aborts_does_not_take_down_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
        name = "iso"
        [defaults]
        content = "CONTENT"
        style = "STYLE"
        iterations = 1
        [[run]]
        name = "big"
        size = 2048
        [[run]]
        name = "small"
        size = 64
    "#;
    let s = spec(dir.path(), body);
    weights_path();
    let exe = env!("CARGO_BIN_EXE_runner");
    let script = format!("ulimit -v 2000000; exec '{exe}' '{}' --out res --no-memory-check", s.display());
    let o = Command::new("sh").args(["-c", &script]).current_dir(dir.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let summary = std::fs::read_to_string(dir.path().join("res/iso/summary.csv")).unwrap();
    let big = summary.lines().find(|l| l.starts_with("big")).unwrap();
    assert!(big.contains("the run's process died") && big.contains("memory allocation of"), "{summary}");
    assert!(summary.lines().any(|l| l.starts_with("small") && l.contains(",ok,")), "{summary}");
    assert!(dir.path().join("res/iso/small/output.png").is_file());
}

/// Issue 12: `size = 4000` and more passed the plan, then aborted the process. Memory is now
/// planned: the estimate is within ±25% of the measured peak at 256, 512 and 1024 px (measured
/// here in each run's own process), and a run that cannot fit is refused before anything runs.
#[test]
fn memory_is_planned_and_the_estimate_holds() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
        name = "mem"
        [defaults]
        content = "tubingen"
        style = "starry_night"
        iterations = 2
        [sweep]
        size = [256, 512, 1024]
    "#;
    let s = spec(dir.path(), body);
    let o = runner(&[s.to_str().unwrap(), "--out", "res"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let exp = runner::spec::load(&s, &Default::default(), &Default::default()).unwrap();
    let mut rows = csv::Reader::from_path(dir.path().join("res/mem/summary.csv")).unwrap();
    let header = rows.headers().unwrap().clone();
    let col = |k: &str| header.iter().position(|h| h == k).unwrap();
    let mut report = Vec::new();
    for (r, row) in exp.runs.iter().zip(rows.records().map(|r| r.unwrap())) {
        let record: toml::Table = std::fs::read_to_string(dir.path().join("res/mem").join(&r.name).join("run.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let (w, h) = (record["width"].as_integer().unwrap() as u32, record["height"].as_integer().unwrap() as u32);
        let measured: f64 = row[col("peak_rss_mib")].parse().unwrap();
        let estimate = runner::run::memory::estimate(&r.params, w, h).peak_mib;
        let error = estimate / measured - 1.0;
        report
            .push(format!("{w}×{h}: estimate {estimate:.0} MiB, measured {measured:.0} MiB ({:+.0}%)", 100.0 * error));
        assert!(error.abs() <= 0.25, "{}", report.join("; "));
    }
    eprintln!("memory estimate: {}", report.join("; "));
    // A run that cannot fit is refused while planning, with what to lower.
    let big = spec(dir.path(), "name = \"big\"\n[defaults]\nsize = 16384\n");
    let o = runner(&[big.to_str().unwrap(), "--out", "res"], dir.path());
    let m = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{m}");
    assert!(
        m.contains("exp.toml:3:8: defaults.size")
            && m.contains("GiB")
            && m.contains("available")
            && m.contains("--no-memory-check"),
        "{m}"
    );
    assert!(!dir.path().join("res/big").exists());
}

/// Issue 12: two runners on one output folder both computed every run. Runs are locked while
/// computed: started together, the two processes compute each run once between them, and both
/// end with the complete summary.
#[test]
fn concurrent_runners_share_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"
        name = "shared"
        [defaults]
        content = "CONTENT"
        style = "STYLE"
        size = 64
        iterations = 6
        [sweep]
        seed = [0, 1, 2, 3, 4, 5]
        init = ["noise"]
    "#;
    let s = spec(dir.path(), body);
    weights_path();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_runner"))
            .args([s.to_str().unwrap(), "--out", "res"])
            .current_dir(dir.path())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start(), start());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (ea, eb) = (stderr(&a), stderr(&b));
    assert!(a.status.success() && b.status.success(), "{ea}\n{eb}");
    let computed = |e: &str| e.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(computed(&ea) + computed(&eb), 6, "each run computed once:\n{ea}\n{eb}");
    let summary = std::fs::read_to_string(dir.path().join("res/shared/summary.csv")).unwrap();
    assert_eq!(summary.lines().filter(|l| l.contains(",ok,")).count(), 6, "{summary}");
}

/// Issue 12: an interrupted run lost its iterations. It now leaves a checkpoint (image,
/// optimizer state with the L-BFGS history, losses) and the next invocation continues it: the
/// result equals an uninterrupted run's, L-BFGS (history 3, so the restored pairs matter) and
/// Adam alike.
#[test]
fn an_interrupted_run_continues_from_its_checkpoint() {
    use runner::run::{execute, Policy, Progress, Session};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    weights_path();
    // Adam with the average of the iterates as output: the average is part of the checkpoint.
    for optimizer in ["lbfgs\"\nhistory = 3", "adam\"\naverage = 0.8"] {
        let body = format!(
            "name = \"cp\"\n[defaults]\ncontent = \"CONTENT\"\nstyle = \"STYLE\"\nsize = 64\niterations = 12\ninit = \"noise\"\ncheckpoint_interval = 0\noptimizer = \"{optimizer}\n"
        );
        let s = spec(dir.path(), &body);
        let exp = runner::spec::load(&s, &Default::default(), &Default::default()).unwrap();
        let run = &exp.runs[0];
        let flag = Arc::new(AtomicBool::new(false));
        let mut session = Session::new(runner::assets::Assets::from_env(), flag.clone());
        let whole = dir.path().join(format!("whole-{}", &optimizer[..4]));
        let a = execute(&mut session, run, &whole, Policy::default(), &mut |_| {});
        assert_eq!(a.status, runner::record::Status::Ok, "{:?}", a.status);
        let parts = dir.path().join(format!("parts-{}", &optimizer[..4]));
        let mut stop_at_5 = |p: Progress| {
            if let Progress::Step { iteration: 5, .. } = p {
                flag.store(true, Ordering::SeqCst);
            }
        };
        let b = execute(&mut session, run, &parts, Policy::default(), &mut stop_at_5);
        assert_eq!(b.status, runner::record::Status::Interrupted);
        assert!(parts.join("checkpoint.toml").is_file() && parts.join("checkpoint.safetensors").is_file());
        flag.store(false, Ordering::SeqCst);
        let mut first_step = None;
        let c = execute(&mut session, run, &parts, Policy::default(), &mut |p| {
            if let Progress::Step { iteration, .. } = p {
                first_step.get_or_insert(iteration);
            }
        });
        assert_eq!(c.status, runner::record::Status::Ok, "{:?}", c.status);
        assert_eq!(first_step, Some(6), "{optimizer}: continued after step 5, not from the start");
        let (fa, fc) = (a.final_terms.unwrap().total, c.final_terms.unwrap().total);
        assert!((fa - fc).abs() <= 1e-6 * fa.abs(), "{optimizer}: uninterrupted {fa}, continued {fc}");
        let losses = |d: &std::path::Path| -> Vec<String> {
            std::fs::read_to_string(d.join("losses.csv"))
                .unwrap()
                .lines()
                .map(|l| {
                    let cells: Vec<&str> = l.split(',').collect();
                    [&cells[..3], &cells[4..]].concat().join(",")
                })
                .collect()
        };
        assert_eq!(losses(&whole), losses(&parts), "{optimizer}: every row but the seconds");
        assert!(!parts.join("checkpoint.toml").exists(), "a completed run leaves no checkpoint");
    }
}

/// Issue 12: when the contact sheet could not be written (a full disk), the sweep stopped, and
/// every rerun stopped at the same point. Writing the experiment's figures failing is now a
/// warning: here `grid.png` cannot be written (a folder has its name), and every run is done.
#[test]
fn failing_to_write_the_figures_never_stops_the_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s =
        spec(dir.path(), &TINY.replace("save_every = 2", "save_every = 0").replace("iterations = 4", "iterations = 2"));
    std::fs::create_dir_all(dir.path().join("res/tiny/grid.png/blocked")).unwrap();
    let o = runner(&[s.to_str().unwrap(), "--out", "res"], dir.path());
    let m = stderr(&o);
    assert!(o.status.success(), "{m}");
    assert!(m.contains("warning: writing the outputs of") && m.contains("the runs go on"), "{m}");
    assert_eq!(m.matches("ok       seed=").count(), 2, "{m}");
    assert!(dir.path().join("res/tiny/summary.csv").is_file());
}
