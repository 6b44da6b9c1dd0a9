//! Build-time identity of the program: the git commit (or `GATYS_COMMIT`, or `unknown`) and a
//! hash of the sources that compute a run's numbers, so that results are redone when, and only
//! when, the numerics change (`record::NUMERICS`).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = here.join("../..");
    // The numerics: the network, the losses, the optimizers, the runner's run/ (inputs, start,
    // loop) and the locked dependency versions (candle, gemm).
    let sources = [
        root.join("crates/vgg/src"),
        root.join("crates/losses/src"),
        root.join("crates/optim/src"),
        here.join("src/run"),
    ];
    let mut list = Vec::new();
    for s in &sources {
        println!("cargo:rerun-if-changed={}", s.display());
        files(s, &mut list);
    }
    let lock = root.join("Cargo.lock");
    if lock.is_file() {
        println!("cargo:rerun-if-changed={}", lock.display());
        list.push(lock);
    }
    list.sort();
    let mut h = Sha256::new();
    for f in &list {
        // Paths relative to the workspace, so the hash does not depend on where it is checked out.
        h.update(f.strip_prefix(&root).unwrap_or(f).to_string_lossy().as_bytes());
        h.update(std::fs::read(f).unwrap_or_default());
    }
    let numerics: String = h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=GATYS_NUMERICS={numerics}");

    println!("cargo:rerun-if-env-changed=GATYS_COMMIT");
    let commit = std::env::var("GATYS_COMMIT").ok().filter(|s| !s.is_empty()).or_else(|| git_commit(&root));
    println!("cargo:rustc-env=GATYS_COMMIT={}", commit.unwrap_or_else(|| "unknown".into()));
}

fn git_commit(root: &Path) -> Option<String> {
    // Rebuilt when HEAD moves: HEAD itself, and the branch file it names.
    let git = root.join(".git");
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        println!("cargo:rerun-if-changed={}", git.join("HEAD").display());
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            if git.join(r).exists() {
                println!("cargo:rerun-if-changed={}", git.join(r).display());
            }
        }
    }
    let out =
        std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(root).output().ok()?;
    let id = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !id.is_empty()).then_some(id)
}
