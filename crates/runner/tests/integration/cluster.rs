//! Issue 17: sweeps past one process. Static shards (`--shard I/N`, `--list`), the claim queue
//! on a shared folder (`--claim`: concurrent workers, a killed worker, a stale claim of another
//! machine, a claim taken over under a live worker) and `runner collect`, on tiny real runs.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::helpers::*;

fn start(args: &[&str], cwd: &Path) -> Child {
    weights_path();
    Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting runner")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

const FIVE: &str = r#"
name = "five"
[defaults]
content = "CONTENT"
style = "STYLE"
size = 64
iterations = 5
init = "noise"
[sweep]
seed = [0, 1, 2, 3, 4]
"#;

/// `summary.csv` as (name, status, final_total) rows.
fn summary(path: &Path) -> Vec<(String, String, String)> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |k: &str| h.iter().position(|c| c == k).unwrap();
    let (s, t) = (col("status"), col("final_total"));
    r.records().map(|x| x.unwrap()).map(|x| (x[0].to_string(), x[s].to_string(), x[t].to_string())).collect()
}

fn stdout_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect()
}

#[test]
fn shards_partition_the_plan_and_collect_rebuilds_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let s = fixture_spec(dir.path(), FIVE);
    let s = s.to_str().unwrap();
    let all = stdout_lines(&run_runner(&[s, "--list"], dir.path()));
    assert_eq!(all, ["seed=0", "seed=1", "seed=2", "seed=3", "seed=4"]);
    // Round robin over the plan's order; --only applies first.
    let list = |shard: &str, extra: &[&str]| {
        let mut args = vec![s, "--list", "--shard", shard];
        args.extend(extra);
        stdout_lines(&run_runner(&args, dir.path()))
    };
    assert_eq!(list("0/3", &[]), ["seed=0", "seed=3"]);
    assert_eq!(list("1/3", &[]), ["seed=1", "seed=4"]);
    assert_eq!(list("2/3", &[]), ["seed=2"]);
    assert_eq!(list("1/2", &["--only", "seed=[1-4]"]), ["seed=2", "seed=4"]);
    let bad = run_runner(&[s, "--shard", "3/3"], dir.path());
    assert!(!bad.status.success() && stderr(&bad).contains("the index must be below the count"), "{}", stderr(&bad));

    // Two shards of three: collect lists the third's runs as not run.
    for shard in ["0/3", "1/3"] {
        let o = run_runner(&[s, "--out", "shared", "--shard", shard], dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let c = run_runner(&["collect", s, "--out", "shared"], dir.path());
    assert_eq!(c.status.code(), Some(1), "runs are missing: {}", stderr(&c));
    assert!(stderr(&c).contains("4 of 5 runs complete") && stderr(&c).contains("seed=2"), "{}", stderr(&c));
    let partial = summary(&dir.path().join("shared/five/summary.csv"));
    assert_eq!(partial.len(), 5, "every planned run has a row");
    assert_eq!(partial[2].1, "not run");
    // The last shard; then collect twice: complete, and the same bytes each time.
    let o = run_runner(&[s, "--out", "shared", "--shard", "2/3"], dir.path());
    assert!(o.status.success() && stderr(&o).contains("5 of 5 runs complete"), "{}", stderr(&o));
    let csv = dir.path().join("shared/five/summary.csv");
    let c = run_runner(&["collect", s, "--out", "shared"], dir.path());
    assert!(c.status.success(), "{}", stderr(&c));
    let first = std::fs::read(&csv).unwrap();
    assert!(run_runner(&["collect", s, "--out", "shared"], dir.path()).status.success());
    assert_eq!(first, std::fs::read(&csv).unwrap(), "collect is idempotent");
    image::open(dir.path().join("shared/five/grid.png")).unwrap();
    image::open(dir.path().join("shared/five/curves.png")).unwrap();
    // The same sweep in one process: the same runs, the same final losses.
    let o = run_runner(&[s, "--out", "whole"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let whole = summary(&dir.path().join("whole/five/summary.csv"));
    assert_eq!(summary(&csv), whole);
    assert!(whole.iter().all(|r| r.1 == "ok"), "{whole:?}");
    // A plan changed since (another style weight) does not count the old records.
    let c = run_runner(&["collect", s, "--out", "shared", "--set", "style_weight=7"], dir.path());
    assert!(stderr(&c).contains("0 of 5 runs complete"), "{}", stderr(&c));
}

#[test]
fn claim_workers_compute_each_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = fixture_spec(dir.path(), FIVE);
    let s = s.to_str().unwrap();
    let workers: Vec<Child> = (0..3).map(|_| start(&[s, "--out", "q", "--claim"], dir.path())).collect();
    let outs: Vec<Output> = workers.into_iter().map(|w| w.wait_with_output().unwrap()).collect();
    let logs: Vec<String> = outs.iter().map(stderr).collect();
    assert!(outs.iter().all(|o| o.status.success()), "{logs:#?}");
    let computed: Vec<&str> = logs.iter().flat_map(|l| l.lines()).filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(computed.len(), 5, "each run computed once, none lost: {logs:#?}");
    let rows = summary(&dir.path().join("q/five/summary.csv"));
    assert!(rows.len() == 5 && rows.iter().all(|r| r.1 == "ok"), "{rows:?}");
    for run in ["seed=0", "seed=4"] {
        let left: Vec<_> = std::fs::read_dir(dir.path().join("q/five").join(run))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".claim"))
            .collect();
        assert!(left.is_empty(), "released claims are removed: {left:?}");
    }
    // The claims' conflicts are refused up front.
    let o = run_runner(&[s, "--claim", "--force"], dir.path());
    assert!(!o.status.success() && stderr(&o).contains("--force"), "{}", stderr(&o));
}

const ONE_LONG: &str = r#"
name = "long"
[defaults]
content = "CONTENT"
style = "STYLE"
size = 64
iterations = 120
save_every = 1
checkpoint_interval = 0
init = "noise"
"#;

fn wait_for(path: &Path, limit_s: u64) {
    let t0 = std::time::Instant::now();
    while !path.exists() {
        assert!(t0.elapsed().as_secs() < limit_s, "{} never appeared", path.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn losses_rows(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("losses.csv")).unwrap().lines().count() - 1
}

#[test]
fn a_killed_workers_run_is_taken_over_and_continued() {
    let dir = tempfile::tempdir().unwrap();
    let s = fixture_spec(dir.path(), ONE_LONG);
    let s = s.to_str().unwrap();
    let run = dir.path().join("q/long/run");
    let mut a = start(&[s, "--out", "q", "--claim"], dir.path());
    wait_for(&run.join("snapshot_00003.png"), 300);
    a.kill().unwrap(); // SIGKILL: no chance to release its claim
    a.wait().unwrap();
    assert!(run.join(".claim-0").is_file(), "the dead worker's claim is left behind");
    // Its process stops at its next step (its stdin closed) and leaves a checkpoint.
    wait_for(&run.join("checkpoint.toml"), 60);
    let b = run_runner(&[s, "--out", "q", "--claim"], dir.path());
    let log = stderr(&b);
    assert!(b.status.success(), "{log}");
    // Same machine, pid gone: taken over at once, not after --claim-stale (120 s).
    assert!(log.contains("takeover run: the claim of") && log.contains("ok       run"), "{log}");
    assert_eq!(losses_rows(&run), 121, "iteration 0 and 120 steps");
    assert!(!run.join(".claim-0").exists() && !run.join(".claim-1").exists(), "released");
}

#[test]
fn another_machines_silent_claim_goes_stale_and_a_taken_claim_stops_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = fixture_spec(dir.path(), ONE_LONG);
    let s = s.to_str().unwrap();
    // A claim written by a worker on another machine that then went silent.
    let run = dir.path().join("q/long/run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join(".claim-0"), "host = \"node-elsewhere\"\npid = 4242\n").unwrap();
    let mut a = start(&[s, "--out", "q", "--claim", "--claim-stale", "2"], dir.path());
    // It waits for it, takes it over after 2 s and starts; then its claim is taken over in turn
    // (as if it had stalled past the limit): the run stops, and is taken back once the
    // intruding claim goes silent for 2 s.
    wait_for(&run.join("snapshot_00003.png"), 300);
    assert!(run.join(".claim-1").is_file());
    std::fs::write(run.join(".claim-2"), "host = \"node-elsewhere\"\npid = 4243\n").unwrap();
    let status = a.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(a.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    let at = |p: &str| lines.iter().position(|l| l.starts_with(p)).unwrap_or_else(|| panic!("no `{p}`:\n{log}"));
    assert!(lines[at("waiting")].contains("node-elsewhere pid 4242"), "{log}");
    assert!(at("waiting") < at("takeover") && at("takeover") < at("lost"), "{log}");
    assert!(log.contains("the claim of node-elsewhere pid 4243"), "taken back: {log}");
    assert!(log.contains("ok       run"), "{log}");
    assert_eq!(losses_rows(&run), 121, "continued from its checkpoint, iteration 0 and 120 steps");
}
