//! Sweeps past one process: static shards of a plan ([`Shard`]), a work queue of claims on a
//! shared folder ([`claim`]), and the experiment's outputs rebuilt from whatever runs are
//! finished ([`collect`]). Nothing here schedules: Slurm job arrays and Kubernetes Indexed Jobs
//! start the processes (`scripts/slurm/`, `scripts/k8s/`, `docs/cluster.md`).

pub mod claim;
pub mod collect;

use std::fmt;
use std::str::FromStr;

/// The `index`-th of `count` disjoint parts of a plan (`--shard I/N`, 0-based).
///
/// Run `k` of the plan (in its order: the order of `runner SPEC --list`, after `--only`) goes
/// to shard `k mod count`: the parts depend on the spec and the flags alone, never on the
/// machine, the time or which shard starts first, and their sizes differ by at most one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This part, `0 ≤ index < count`.
    pub index: usize,
    /// The number of parts, at least 1.
    pub count: usize,
}

/// A `--shard` value that is not `I/N` with `0 ≤ I < N`.
#[derive(Debug, thiserror::Error)]
#[error("`{value}`: {why} (expected I/N with 0 <= I < N, as `--shard 0/4` … `--shard 3/4`)")]
pub struct ShardError {
    /// The value given.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, ShardError> {
        let err = |why| ShardError { value: s.to_string(), why };
        let (i, n) = s.split_once('/').ok_or_else(|| err("no `/`"))?;
        let index: usize = i.trim().parse().map_err(|_| err("the index is not a whole number"))?;
        let count: usize = n.trim().parse().map_err(|_| err("the count is not a whole number"))?;
        if count == 0 {
            return Err(err("the count must be at least 1"));
        }
        if index >= count {
            return Err(err("the index must be below the count"));
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether run `k` of the plan belongs to this shard.
    pub fn contains(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

/// This machine's name, as claims record it (`/proc/sys/kernel/hostname`, else `$HOSTNAME`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition() {
        assert_eq!("2/5".parse::<Shard>().unwrap(), Shard { index: 2, count: 5 });
        for (bad, why) in [
            ("3", "no `/`"),
            ("a/2", "index"),
            ("1/x", "count is not"),
            ("0/0", "at least 1"),
            ("2/2", "below the count"),
            ("-1/2", "index"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
        // Every run in exactly one of the shards, sizes within one of each other.
        let runs = 23;
        let parts: Vec<Vec<usize>> =
            (0..4).map(|i| (0..runs).filter(|&k| Shard { index: i, count: 4 }.contains(k)).collect()).collect();
        let mut all: Vec<usize> = parts.concat();
        all.sort();
        assert_eq!(all, (0..runs).collect::<Vec<_>>());
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert_eq!(sizes, [6, 6, 6, 5]);
    }
}
