//! A work queue on a shared folder: each run's folder holds at most one live claim, taken by
//! creating a file exclusively (`O_EXCL`, atomic on local filesystems and on NFSv3+), so that
//! several runners on several machines pointed at one `--out` take each run once.
//!
//! The claims of a run are numbered: `.claim-0`, `.claim-1`, …; the highest is the current one.
//! A worker takes a run nobody claimed by creating `.claim-0`. The owner refreshes its claim's
//! modification time every quarter of `stale_after` (its heartbeat). A claim whose heartbeat is
//! older than `stale_after`, or whose process is gone (same host, no such pid), is stale: a
//! worker takes the run over by creating the next number, which only one worker can do. An
//! owner whose claim was taken over (it was stalled, or cut off from the folder, for longer than
//! `stale_after`) sees the higher number at its next heartbeat and stops the run: the run is
//! never computed by two workers at once, and a dead worker's run is never lost. Releasing
//! removes the run's claim files; the run's `run.toml` then says whether it is done.
//!
//! Staleness compares the file's modification time with this machine's clock: the machines
//! sharing a folder need synchronised clocks (NTP), as Slurm and munge already require.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::{Error, Result};

const PREFIX: &str = ".claim-";

/// Who holds a claim, as its file says.
#[derive(Clone, Debug, PartialEq)]
pub struct Holder {
    /// The claim's number.
    pub generation: u64,
    /// The worker's machine.
    pub host: String,
    /// The worker's process id (0 when the file could not be read yet).
    pub pid: u32,
    /// Time since its last heartbeat.
    pub age: Duration,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} pid {}, heartbeat {:.0} s ago", self.host, self.pid, self.age.as_secs_f64())
    }
}

/// The outcome of [`try_claim`].
pub enum Attempt {
    /// The run is this worker's until the claim is dropped.
    Claimed(Claim),
    /// Another worker holds a live claim.
    Held(Holder),
}

/// A claim this process holds, kept alive by a heartbeat thread; dropping it releases the run.
pub struct Claim {
    dir: PathBuf,
    generation: u64,
    lost: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
    /// The previous holder, when this claim took a stale one over.
    pub took_over: Option<Holder>,
}

impl Claim {
    /// Set once another worker has taken the run over: the run must stop.
    pub fn lost_flag(&self) -> Arc<AtomicBool> {
        self.lost.clone()
    }

    /// Whether another worker has taken the run over.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.heartbeat.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        // A lost claim belongs to its new owner's files now; ours stays as history.
        if !self.is_lost() {
            for (g, path) in claim_files(&self.dir).unwrap_or_default() {
                if g <= self.generation {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

/// The claim files of a run's folder, by number.
fn claim_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else { continue };
        if let Ok(g) = n.parse::<u64>() {
            v.push((g, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// The current claim of a run's folder, if any.
pub fn current(dir: &Path) -> Result<Option<Holder>> {
    let files = match claim_files(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io { path: dir.into(), source: e }),
    };
    let Some((generation, path)) = files.last() else { return Ok(None) };
    Ok(read_holder(path, *generation))
}

fn read_holder(path: &Path, generation: u64) -> Option<Holder> {
    // A claim that vanished since it was listed was released: no holder.
    let meta = std::fs::metadata(path).ok()?;
    let age = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).unwrap_or_default();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let t = text.parse::<toml::Table>().unwrap_or_default();
    Some(Holder {
        generation,
        host: t.get("host").and_then(|v| v.as_str()).unwrap_or("?").to_string(),
        pid: t.get("pid").and_then(|v| v.as_integer()).and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        age,
    })
}

impl Holder {
    /// Whether the holder is presumed dead: no heartbeat for `stale_after`, or (on this machine)
    /// its process is gone.
    pub fn is_stale(&self, stale_after: Duration) -> bool {
        if self.age > stale_after {
            return true;
        }
        let here = self.host == super::hostname();
        here && self.pid != 0 && !Path::new("/proc").join(self.pid.to_string()).exists()
    }
}

/// Tries to claim the run in `dir` (created if missing): takes it when nobody holds it or its
/// holder is stale (see [`Holder::is_stale`]); heartbeats every `stale_after / 4` while claimed.
pub fn try_claim(dir: &Path, stale_after: Duration) -> Result<Attempt> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let (generation, took_over) = match current(dir)? {
        None => (0, None),
        Some(h) if h.is_stale(stale_after) => (h.generation + 1, Some(h)),
        Some(h) => return Ok(Attempt::Held(h)),
    };
    let path = dir.join(format!("{PREFIX}{generation}"));
    let mut f = match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(f) => f,
        // Another worker took that number first: it holds the run now.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let h = read_holder(&path, generation).unwrap_or(Holder {
                generation,
                host: "?".into(),
                pid: 0,
                age: Duration::ZERO,
            });
            return Ok(Attempt::Held(h));
        }
        Err(e) => return Err(Error::Io { path, source: e }),
    };
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let text = format!(
        "# A claim of gatys-rs's runner (--claim): this worker computes the run; see docs/cluster.md.\n\
         host = {:?}\npid = {}\nsince = {since}\n",
        super::hostname(),
        std::process::id()
    );
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(Error::io(&path))?;
    let (lost, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let heartbeat = spawn_heartbeat(f, dir.to_path_buf(), generation, stale_after / 4, lost.clone(), stop.clone());
    Ok(Attempt::Claimed(Claim {
        dir: dir.to_path_buf(),
        generation,
        lost,
        stop,
        heartbeat: Some(heartbeat),
        took_over,
    }))
}

/// Refreshes the claim's modification time every `period` and watches for a takeover (a
/// higher-numbered claim) or a removed claim file, which set `lost`.
fn spawn_heartbeat(
    file: File,
    dir: PathBuf,
    generation: u64,
    period: Duration,
    lost: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let period = period.max(Duration::from_millis(100));
    let own = dir.join(format!("{PREFIX}{generation}"));
    let next = dir.join(format!("{PREFIX}{}", generation + 1));
    std::thread::spawn(move || loop {
        std::thread::park_timeout(period);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if next.exists() || !own.exists() {
            lost.store(true, Ordering::SeqCst);
            return;
        }
        let _ = file.set_modified(SystemTime::now());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(a: Attempt) -> Claim {
        match a {
            Attempt::Claimed(c) => c,
            Attempt::Held(h) => panic!("held by {h}"),
        }
    }

    fn held(a: Attempt) -> Holder {
        match a {
            Attempt::Claimed(_) => panic!("claimed, expected held"),
            Attempt::Held(h) => h,
        }
    }

    #[test]
    fn one_claim_per_run_then_release() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let stale = Duration::from_secs(60);
        let c = claimed(try_claim(&dir, stale).unwrap());
        assert!(c.took_over.is_none());
        let h = held(try_claim(&dir, stale).unwrap());
        assert_eq!((h.generation, h.pid, h.host.clone()), (0, std::process::id(), crate::cluster::hostname()));
        drop(c);
        assert!(current(&dir).unwrap().is_none(), "released");
        let c = claimed(try_claim(&dir, stale).unwrap());
        assert_eq!(c.generation, 0);
    }

    #[test]
    fn stale_claims_are_taken_over_once_and_the_loser_notices() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        std::fs::create_dir_all(&dir).unwrap();
        // A claim of a worker on another machine, silent for 10 s.
        let path = dir.join(".claim-0");
        std::fs::write(&path, "host = \"elsewhere\"\npid = 4242\n").unwrap();
        let f = File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(10)).unwrap();
        let h = held(try_claim(&dir, Duration::from_secs(60)).unwrap());
        assert_eq!((h.host.as_str(), h.pid), ("elsewhere", 4242));
        assert!(h.age >= Duration::from_secs(9), "{h}");
        // Stale for a 5 s limit: taken over, as number 1, by one worker only.
        let c = claimed(try_claim(&dir, Duration::from_secs(5)).unwrap());
        assert_eq!((c.generation, c.took_over.as_ref().map(|h| h.pid)), (1, Some(4242)));
        let h = held(try_claim(&dir, Duration::from_secs(5)).unwrap());
        assert_eq!(h.generation, 1);
        // Our own claim, taken over in turn (as if we had stalled): the heartbeat notices.
        std::fs::write(dir.join(".claim-2"), "host = \"elsewhere\"\npid = 4243\n").unwrap();
        let t = std::time::Instant::now();
        while !c.is_lost() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(c.is_lost(), "the takeover went unnoticed for 10 s (heartbeat every 1.25 s)");
        drop(c);
        // A lost claim leaves the new owner's files alone.
        assert_eq!(current(&dir).unwrap().map(|h| h.pid), Some(4243));
    }

    #[test]
    fn a_dead_process_on_this_machine_is_stale_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        std::fs::create_dir_all(&dir).unwrap();
        // A process that has ended: its pid is free (until reused, which the heartbeat covers).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let text = format!("host = {:?}\npid = {pid}\n", crate::cluster::hostname());
        std::fs::write(dir.join(".claim-0"), text).unwrap();
        let c = claimed(try_claim(&dir, Duration::from_secs(3600)).unwrap());
        assert_eq!(c.took_over.as_ref().map(|h| h.pid), Some(pid));
        // A live process's fresh claim is respected.
        let text = format!("host = {:?}\npid = {}\n", crate::cluster::hostname(), std::process::id());
        let dir2 = tmp.path().join("run2");
        std::fs::create_dir_all(&dir2).unwrap();
        std::fs::write(dir2.join(".claim-0"), text).unwrap();
        held(try_claim(&dir2, Duration::from_secs(3600)).unwrap());
    }
}
