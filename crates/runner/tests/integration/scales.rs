//! Coarse-to-fine runs (issue 14): each stage's image and losses are kept, each stage starts
//! from the previous one's output, L-BFGS restarts its history at each stage while Adam carries
//! its moments (or not), an interrupted run resumes inside its stage, and schedules that cannot
//! run are refused before anything runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use runner::record::Status;
use runner::run::{execute, Policy, Progress, Session};

use crate::helpers::{fixture_dir, weights_path};

fn spec(dir: &Path, defaults: &str) -> PathBuf {
    let content = fixture_dir().join("content_64x48.png");
    let style = fixture_dir().join("style_64x48.png");
    let text = format!(
        "name = \"ms\"\n[defaults]\ncontent = {:?}\nstyle = {:?}\nsize = 64\ncheckpoint_interval = 0\n{defaults}\n",
        content.display().to_string(),
        style.display().to_string()
    );
    let p = dir.join("exp.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// One run of the spec with `defaults` into `out`, stopping after step `stop_after` when given.
fn run(dir: &Path, defaults: &str, out: &str, stop_after: Option<usize>) -> runner::record::RunSummary {
    let s = spec(dir, defaults);
    let exp = runner::spec::load(&s, &Default::default(), &Default::default()).unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let mut session = Session::new(runner::assets::Assets::from_env(), flag.clone());
    execute(&mut session, &exp.runs[0], &dir.join(out), Policy::default(), &mut |p| {
        if let (Progress::Step { iteration, .. }, Some(n)) = (p, stop_after) {
            if iteration == n {
                flag.store(true, Ordering::SeqCst);
            }
        }
    })
}

/// `losses.csv` as rows of (iteration, scale, total), and every row without its seconds.
fn losses(d: &Path) -> (Vec<(usize, u32, f64)>, Vec<String>) {
    let text = std::fs::read_to_string(d.join("losses.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..5], ["iteration", "scale", "evals", "seconds", "total"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let parsed = rows.iter().map(|c| (c[0].parse().unwrap(), c[1].parse().unwrap(), c[4].parse().unwrap())).collect();
    let without_seconds = rows.iter().map(|c| [&c[..3], &c[4..]].concat().join(",")).collect();
    (parsed, without_seconds)
}

fn dims(p: &Path) -> (u32, u32) {
    image::image_dimensions(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn each_stage_keeps_its_image_and_losses_and_starts_from_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    weights_path();
    let ms = "optimizer = \"adam\"\naverage = 0.5\nscales = [32, 48]\niterations = { first = 4, rest = 3 }";
    let a = run(dir.path(), ms, "whole", None);
    assert_eq!(a.status, Status::Ok, "{:?}", a.status);
    assert_eq!(a.iterations, 10, "4 + 3 + 3 steps");
    let d = dir.path().join("whole");
    // The 64×48 content sets the aspect ratio of every stage.
    for (k, size) in [(0, (32, 24)), (1, (48, 36)), (2, (64, 48))] {
        assert_eq!(dims(&d.join(format!("scale_{k:02}.png"))), size);
    }
    assert_eq!(std::fs::read(d.join("scale_02.png")).unwrap(), std::fs::read(d.join("output.png")).unwrap());
    let (rows, _) = losses(&d);
    let at = |scale: u32| rows.iter().filter(|r| r.1 == scale).map(|r| r.0).collect::<Vec<_>>();
    // Each stage has its start and each of its steps; a stage starts at the step the previous
    // one ended (the same iterate, resized).
    assert_eq!(at(32), [0, 1, 2, 3, 4]);
    assert_eq!(at(48), [4, 5, 6, 7]);
    assert_eq!(at(64), [7, 8, 9, 10]);
    let marks = image::open(d.join("loss.png")).unwrap();
    assert_eq!((marks.width(), marks.height()), (640, 400));

    // Adam's moments carried (resized) or restarted (the default) give different runs.
    let carry = format!("{ms}\ncarry_moments = true");
    let c = run(dir.path(), &carry, "carry", None);
    assert_eq!(c.status, Status::Ok, "{:?}", c.status);
    let (fa, fc) = (a.final_terms.as_ref().unwrap().total, c.final_terms.as_ref().unwrap().total);
    assert!((fa - fc).abs() > 1e-4 * fa, "carrying the moments changes the run: {fa} vs {fc}");
    let (c_rows, _) = losses(&dir.path().join("carry"));
    assert_eq!(rows[..6], c_rows[..6], "the first stage and the next one's start do not depend on it");

    // Interrupted inside the second stage, the run continues there, carried moments and
    // average included: the same losses.
    let b = run(dir.path(), &carry, "parts", Some(5));
    assert_eq!(b.status, Status::Interrupted);
    let c2 = run(dir.path(), &carry, "parts", None);
    assert_eq!(c2.status, Status::Ok, "{:?}", c2.status);
    assert_eq!(losses(&dir.path().join("carry")).1, losses(&dir.path().join("parts")).1, "every row but the seconds");
}

#[test]
fn lbfgs_restarts_its_history_at_each_stage() {
    let dir = tempfile::tempdir().unwrap();
    weights_path();
    let a = run(dir.path(), "init = \"noise\"\nscales = [32, 48]\niterations = [6, 5, 5]", "lbfgs", None);
    assert!(matches!(a.status, Status::Ok | Status::Flagged(_)), "{:?}", a.status);
    let (rows, _) = losses(&dir.path().join("lbfgs"));
    // A fresh L-BFGS takes a first step of lr · min(1, 1/‖g‖₁) along −g, tiny against these
    // gradients, so the loss barely moves on each stage's first step; a kept history would
    // take a quasi-Newton step at once (as the steps after it do).
    for scale in [32, 48, 64] {
        let s: Vec<f64> = rows.iter().filter(|r| r.1 == scale).map(|r| r.2).collect();
        assert!(s.len() >= 4, "{scale}: {s:?}");
        let first = (s[0] - s[1]).abs() / s[0];
        let later = (s[0] - s[s.len() - 1]).abs() / s[0];
        assert!(first < 1e-3 && later > 1e-2, "stage {scale}: first step {first:.2e}, all steps {later:.2e}: {s:?}");
    }
}

#[test]
fn schedules_that_cannot_run_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    // A 64×48 output whose first stage, 16 px long, is 16×12: too small for relu5_1.
    let s = spec(dir.path(), "scales = [16, 32]");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args([s.to_str().unwrap(), "--out", "res"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let m = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{m}");
    assert!(m.contains("defaults.scales") && m.contains("16×12") && m.contains("relu5_1 needs at least 16"), "{m}");
    assert!(!dir.path().join("res/ms").join("output.png").exists());
}
