//! Issue 16: batched sweeps (`--batch`). Runs evaluated together give each run what it gets
//! alone — on the CPU bit for bit: every loss of every iterate and the output image — with
//! runs of two sizes and different layers in flight at once, and a run that fails mid-way
//! leaving the others untouched.

use std::path::Path;

use crate::helpers::*;

/// Every run folder of `exp_dir` with `losses.csv` less its seconds column and `output.png`.
fn results(exp_dir: &Path) -> Vec<(String, String, Vec<u8>)> {
    let mut runs: Vec<(String, String, Vec<u8>)> = std::fs::read_dir(exp_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("losses.csv").is_file())
        .map(|p| {
            let csv = std::fs::read_to_string(p.join("losses.csv")).unwrap();
            let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
            let seconds = header.iter().position(|c| *c == "seconds").unwrap();
            let rows = csv
                .lines()
                .map(|l| l.split(',').enumerate().filter(|(k, _)| *k != seconds).map(|(_, v)| v).collect::<Vec<_>>())
                .map(|cells| cells.join(","))
                .collect::<Vec<_>>()
                .join("\n");
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, rows, std::fs::read(p.join("output.png")).unwrap())
        })
        .collect();
    runs.sort();
    runs
}

/// The most images one network pass held, from the sweep's `batched` line.
fn largest_pass(stderr: &str) -> usize {
    let line =
        stderr.lines().find(|l| l.starts_with("batched ")).unwrap_or_else(|| panic!("no batched line: {stderr}"));
    line.rsplit("at most ").next().unwrap().trim_end_matches(')').parse().unwrap()
}

const MIXED: &str = r#"
name = "mixed"
[defaults]
content = "CONTENT"
style = "STYLE"
size = 64
iterations = 8
init = "noise"
[sweep]
seed = [0, 1]
content_layers = [["relu2_2"], ["relu4_2"]]
size = [64, 40]
"#;

#[test]
fn batched_sweep_equals_sequential_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = fixture_spec(dir.path(), MIXED);
    let s = s.to_str().unwrap();
    let alone = run_runner(&[s, "--out", "alone", "--in-process"], dir.path());
    assert!(alone.status.success(), "{}", String::from_utf8_lossy(&alone.stderr));
    let batched = run_runner(&[s, "--out", "batched", "--batch", "8"], dir.path());
    let err = String::from_utf8_lossy(&batched.stderr);
    assert!(batched.status.success(), "{err}");
    // Two sizes: two groups of four runs each a round.
    assert!(largest_pass(&err) >= 3, "{err}");
    let (a, b) = (results(&dir.path().join("alone/mixed")), results(&dir.path().join("batched/mixed")));
    assert_eq!(a.len(), 8);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        assert_eq!(x.1, y.1, "{}: losses differ", x.0);
        assert!(x.2 == y.2, "{}: output images differ", x.0);
    }
}

const DIVERGING: &str = r#"
name = "diverging"
[defaults]
content = "CONTENT"
style = "STYLE"
size = 64
iterations = 8
init = "noise"
[sweep]
seed = [0, 1]
learning_rate = [1, 1e38]
"#;

#[test]
fn a_run_failing_mid_batch_leaves_the_others_as_they_are_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = fixture_spec(dir.path(), DIVERGING);
    let s = s.to_str().unwrap();
    let batched = run_runner(&[s, "--out", "batched", "--batch", "4"], dir.path());
    let err = String::from_utf8_lossy(&batched.stderr);
    assert!(!batched.status.success(), "two runs fail: {err}");
    // The diverging runs fail after several batched passes; the others complete.
    assert_eq!(err.lines().filter(|l| l.starts_with("FAILED") && l.contains("not finite")).count(), 2, "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("ok ")).count(), 2, "{err}");
    assert_eq!(largest_pass(&err), 4, "{err}");
    let alone = run_runner(&[s, "--out", "alone", "--in-process", "--only", "*learning_rate=1_*"], dir.path());
    assert!(alone.status.success(), "{}", String::from_utf8_lossy(&alone.stderr));
    let (a, b) = (results(&dir.path().join("alone/diverging")), results(&dir.path().join("batched/diverging")));
    assert_eq!(a.len(), 2);
    assert_eq!(a, b, "the completed runs equal their runs alone");
}

#[test]
fn batch_flag_values_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let s = fixture_spec(dir.path(), DIVERGING);
    let out = run_runner(&[s.to_str().unwrap(), "--batch", "0", "--list"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("`0` is neither a number of runs (1 or more) nor `auto`"), "{err}");
    let out = run_runner(&[s.to_str().unwrap(), "--batch", "2", "--claim"], dir.path());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
