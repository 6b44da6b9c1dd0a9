//! The instruction sets the CPU code runs with: the best this CPU has, or the one `NST_CPU`
//! names, so that each path can be measured on one machine.

use std::sync::atomic::{AtomicBool, Ordering};

/// The instruction set the transforms run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// The build's baseline target (x86-64: SSE2).
    Baseline,
    /// AVX2 with FMA, 256-bit vectors.
    Avx2,
    /// AVX-512 (F, VL) with FMA, 512-bit vectors.
    Avx512,
}

impl Simd {
    /// The name `NST_CPU` takes and `runner bench` prints.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Baseline => "baseline",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }

    /// The best set this CPU runs.
    pub fn detected() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            let fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            if fma && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                return Simd::Avx512;
            }
            if fma {
                return Simd::Avx2;
            }
        }
        Simd::Baseline
    }
}

/// The set the transforms use, chosen once: the best this CPU runs, or at most the one named by
/// `NST_CPU` (`avx512`, `avx2`, `baseline`), so that each path can be measured on one machine.
/// (It sets the transforms' instructions; the matrix products' kernels are gemm's choice:
/// [`gemm_kernels`].)
/// A set the CPU lacks is never used (its instructions would fault); an unknown name is
/// ignored.
pub fn simd() -> Simd {
    static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = Simd::detected();
        let asked = match std::env::var("NST_CPU").as_deref() {
            Ok("avx512") => Simd::Avx512,
            Ok("avx2") => Simd::Avx2,
            Ok("baseline") => Simd::Baseline,
            _ => best,
        };
        asked.min(best)
    })
}

/// The instruction set of gemm's micro-kernels (the Winograd products and candle's matrix
/// products): AVX-512 when this build has the `avx512` feature and the CPU has AVX-512F, else
/// AVX2+FMA when the CPU has them, else the baseline. gemm chooses at run time; `NST_CPU` does
/// not reach it.
pub fn gemm_kernels() -> Simd {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
            return Simd::Avx512;
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return Simd::Avx2;
        }
    }
    Simd::Baseline
}

/// Makes candle's own parallel element-wise operations (64 Ki elements and more) run on the
/// calling thread: sets `CANDLE_NUM_THREADS=1` unless it is set. Call it first thing in
/// `main`, while the process has a single thread (candle reads it once, at its first such
/// operation).
///
/// Why: candle 0.11 runs them on a pool of its own beside rayon's (one extra thread where
/// rayon has two), whose threads spin 25 000 `pause`s after each operation before they sleep
/// (0.7 ms on the project's Zen 3), on the cores where rayon's threads do the convolutions.
/// In a profile of a 100-iteration run at 160×120, that thread had 3.4% of all samples, 98.6%
/// of them spinning; these operations (the losses' element-wise steps) were under 1% of the
/// run, and run where they are called, inside an evaluation that already has rayon's threads.
pub fn one_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Runs `f` on a thread of rayon's global pool when `device` is the CPU, on this thread
/// otherwise (a GPU's context is bound to the thread that made it current).
///
/// Why: a parallel loop started from a thread outside the pool hands its work to the pool,
/// sleeps, and is woken when the work is done: two context switches per loop, and an
/// evaluation has hundreds of loops (three per convolution, others per pooling, ReLU mask and
/// loss). Started from a thread of the pool, a loop runs there and shares its work with the
/// other threads directly. At 160×120, 100 L-BFGS iterations: 114–151 thousand context
/// switches per run before, 18–20 thousand after (docs/performance.md). A call from inside the
/// pool runs `f` where it is. `f` must not wait for other threads' work outside the pool (a
/// batch's rendezvous, say): each such wait holds one of the pool's few threads, and the work
/// it waits for may need them.
///
/// While `f` runs, one other thread of the pool waits for work busily ([`keep_busy`]) instead of
/// going to sleep between loops (rayon's idle threads sleep after 32 `sched_yield`s, tens of
/// µs, and waking one takes a futex call and a trip through the scheduler): an evaluation
/// alternates parallel loops with short steps on one thread (candle's element-wise
/// operations, sums, reshapes) about a hundred times. Measured on the project's Xeon (family
/// 6 model 207, 2026-12-01) within one `runner bench` process, evaluations alternating with
/// and without: 160×120 111.6 against 115.2 and 111.0 against 116.2 ms, 256×256 226.1 against
/// 230.7 ms; 384×288 438.8 / 436.4 and 425.8 / 435.0 ms, 512×512 980 / 1063 and 1061 / 1046
/// ms (no difference beyond the noise there).
pub fn on_pool<R: Send>(device: &candle_core::Device, f: impl FnOnce() -> R + Send) -> R {
    if !device.is_cpu() {
        return f();
    }
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        let home = rayon::current_thread_index();
        let done = &done;
        s.spawn(move |_| keep_busy(home, done));
        let _stop = SetOnDrop(done);
        f()
    })
}

/// Sets its flag when dropped: when `f` returns or unwinds.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs the pool's pending jobs as they come, spinning between them, until `done`; at once on
/// thread `home` (where the caller's work runs: there it would wait for itself).
fn keep_busy(home: Option<usize>, done: &AtomicBool) {
    if rayon::current_thread_index() == home {
        return;
    }
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_pool_runs_cpu_work_on_a_pool_thread_and_returns_its_value() {
        let device = candle_core::Device::Cpu;
        assert_eq!(rayon::current_thread_index(), None, "the test itself runs outside the pool");
        let (inside, value) = on_pool(&device, || (rayon::current_thread_index(), 6 * 7));
        assert!(inside.is_some(), "CPU work ran outside rayon's pool");
        assert_eq!(value, 42);
        // Nested: runs where it is.
        let nested = on_pool(&device, || {
            let outer = rayon::current_thread_index();
            on_pool(&device, || rayon::current_thread_index() == outer)
        });
        assert!(nested, "a nested call moved to another thread");
    }

    #[test]
    fn on_pool_returns_when_f_panics_and_when_its_loops_need_every_thread() {
        let device = candle_core::Device::Cpu;
        // The waiting thread stops when `f` unwinds, so the scope ends and the panic comes out.
        let caught = std::panic::catch_unwind(|| on_pool(&device, || panic!("inside")));
        assert!(caught.is_err(), "the panic was lost");
        // Parallel loops inside `f`, whose jobs the waiting thread takes, come out whole.
        use rayon::prelude::*;
        for _ in 0..100 {
            let sum: u64 = on_pool(&device, || (0..10_000u64).into_par_iter().map(|i| i * i).sum());
            assert_eq!(sum, (0..10_000u64).map(|i| i * i).sum::<u64>());
        }
    }
}
