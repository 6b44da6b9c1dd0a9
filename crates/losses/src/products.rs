//! The style losses' two large products on the CPU: the statistics `A Bᵀ` of activations
//! (`F Fᵀ` for the Gram matrix) and the gradient's `D X`, in float32, in parallel tasks of fixed
//! shape, each one sequential `gemm` call.
//!
//! Why not candle's `matmul`: it hands the whole product to `gemm` with gemm's own threading,
//! which parallelises over the output. The style statistics of the shallow layers are products
//! of short, very wide matrices: at 256×256, `F Fᵀ` of relu1_1 is `(64, 65536) · (65536, 64)`,
//! a 64 × 64 result, and `D F` is `(64, 64) · (64, 65536)`. Measured on a Zen 3 (2 cores, AVX2,
//! 15 repetitions, best): `F Fᵀ` 14.0 ms through gemm's threads against 6.4 ms as partial
//! products over 8 chunks of positions summed; `D F` 12.5 against 7.1 ms in column chunks; at
//! relu2_1 (128 × 16384) 7.8 against 5.0 ms and 4.7 against 4.7 ms. In a whole evaluation at
//! 256×256 the style term of relu1_1 took 21–43 ms (median 27), relu2_1 15 ms.
//!
//! Here:
//! - `A Bᵀ`, `(N, M) · (M, N)`: the positions are cut into [`chunks`] (by `M` alone), the rows
//!   of the result into blocks of [`ROWS`]; each (chunk, block) task computes its rows of the
//!   chunk's partial product, and the partials are added in chunk order. When `A` is `B` (the
//!   Gram matrix) a block computes only its columns from its first row on (the upper triangle
//!   and the diagonal blocks: 36 of 64 blocks for 512 channels), and the result's lower
//!   triangle is then copied from the upper, so that it is exactly symmetric.
//! - `D X`, `(N, K) · (K, M)`: tasks of [`ROWS`] rows × a chunk of columns, each writing its own
//!   part of the result; every element is one sum over `K`, as in one call.
//!
//! The tasks' shapes follow the operands' sizes only, never the number of threads, so the
//! bits of a result do not depend on the machine's cores or on which thread ran what.
//! Tensors on another device, of another type, or not contiguous go through candle's `matmul`.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use vgg::tape::with_f32;

use crate::{Error, Result};

/// Rows of the result per task.
const ROWS: usize = 64;

/// Positions per chunk of `A Bᵀ` at least: the partial products are `N × N` each, to be added.
const MIN_CHUNK: usize = 8192;

/// Chunks of `A Bᵀ` at most (8 of 8192 positions for 64 channels at 256×256).
const MAX_CHUNKS: usize = 8;

/// Columns per task of `D X` at least.
const MIN_COLUMNS: usize = 256;

/// Column chunks of `D X` at most.
const MAX_COLUMN_CHUNKS: usize = 16;

/// How `A Bᵀ` cuts `m` positions: `chunks` pieces of `len` (the last shorter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chunks {
    count: usize,
    len: usize,
}

/// The chunks of `m` positions: as many as [`MAX_CHUNKS`] of at least [`MIN_CHUNK`], at least
/// one.
fn chunks(m: usize) -> Chunks {
    let count = (m / MIN_CHUNK).clamp(1, MAX_CHUNKS);
    Chunks { count, len: m.div_ceil(count) }
}

/// A pointer that tasks writing disjoint elements share.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: only used by tasks that write disjoint elements of one buffer, which outlives them.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// A matrix operand at `at`: element (i, j) at `at + i·rs + j·cs`.
struct Strided<P> {
    at: P,
    cs: usize,
    rs: usize,
}

/// `dst ← lhs · rhs` for `(rows, columns, depth)`, one sequential gemm call.
///
/// # Safety
/// Every element of the three operands in those dimensions must be inside its buffer, `dst`
/// writable and written by nothing else meanwhile, `lhs` and `rhs` readable.
unsafe fn product(
    (rows, columns, depth): (usize, usize, usize),
    dst: Strided<*mut f32>,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
) {
    // SAFETY: the caller's.
    unsafe {
        gemm::gemm(
            rows,
            columns,
            depth,
            dst.at,
            dst.cs as isize,
            dst.rs as isize,
            false,
            lhs.at,
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.at,
            rhs.cs as isize,
            rhs.rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Whether `t` can be read here: float32, on the CPU, contiguous.
fn here(t: &Tensor) -> bool {
    t.dtype() == DType::F32 && t.device().is_cpu() && t.is_contiguous()
}

/// `A Bᵀ` of `a` and `b`, both `(N, M)`: `(N, N)`. When `b` is `a` (the same tensor), the
/// result is exactly symmetric.
pub(crate) fn a_bt(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (n, m) = a.dims2()?;
    if b.dims2()? != (n, m) {
        return Err(Error::Numeric(format!("A Bᵀ of {:?} and {:?}", a.shape(), b.shape())));
    }
    if !(here(a) && here(b)) {
        return Ok(a.matmul(&b.t()?)?);
    }
    let out = if a.id() == b.id() && a.layout() == b.layout() {
        with_f32(a, |x| a_bt_values(x, x, n, m, true))??
    } else {
        with_f32(a, |x| with_f32(b, |y| a_bt_values(x, y, n, m, false)))???
    };
    Ok(Tensor::from_vec(out, (n, n), &Device::Cpu)?)
}

/// [`a_bt`] on the values, row-major; `symmetric`: `a` and `b` are the same matrix.
fn a_bt_values(a: &[f32], b: &[f32], n: usize, m: usize, symmetric: bool) -> Result<Vec<f32>> {
    let c = chunks(m);
    let nn = n.checked_mul(n).ok_or_else(|| Error::Numeric(format!("a {n} × {n} product overflows")))?;
    let total =
        nn.checked_mul(c.count).ok_or_else(|| Error::Numeric(format!("{} partial products of {n} × {n}", c.count)))?;
    let mut parts = vec![0f32; total];
    parts.par_chunks_mut(nn).enumerate().for_each(|(p, part)| {
        let (p0, p1) = (p * c.len, ((p + 1) * c.len).min(m));
        let out = Shared(part.as_mut_ptr());
        (0..n.div_ceil(ROWS)).into_par_iter().for_each(|blk| {
            let (r0, r1) = (blk * ROWS, ((blk + 1) * ROWS).min(n));
            let c0 = if symmetric { r0 } else { 0 };
            // SAFETY: rows r0..r1 of A, rows c0..n of B, positions p0..p1, all inside the
            // N × M operands; the task writes rows r0..r1, columns c0..n of its chunk's
            // N × N partial, which no other task writes, and `parts` outlives the loop.
            unsafe {
                product(
                    (r1 - r0, n - c0, p1 - p0),
                    Strided { at: out.at(r0 * n + c0), cs: 1, rs: n },
                    Strided { at: a.as_ptr().add(r0 * m + p0), cs: 1, rs: m },
                    Strided { at: b.as_ptr().add(c0 * m + p0), cs: m, rs: 1 },
                )
            };
        });
    });
    let (sum, rest) = parts.split_at_mut(nn);
    for part in rest.chunks(nn) {
        sum.iter_mut().zip(part).for_each(|(s, x)| *s += x);
    }
    parts.truncate(nn);
    if symmetric {
        for i in 0..n {
            for j in 0..i {
                parts[i * n + j] = parts[j * n + i];
            }
        }
    }
    Ok(parts)
}

/// `D X` of `d`, `(N, K)`, and `x`, `(K, M)`: `(N, M)`.
pub(crate) fn mul(d: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (n, k) = d.dims2()?;
    let (k2, m) = x.dims2()?;
    if k2 != k {
        return Err(Error::Numeric(format!("D X of {:?} and {:?}", d.shape(), x.shape())));
    }
    if !(here(d) && here(x)) {
        return Ok(d.matmul(x)?);
    }
    let out = with_f32(d, |dv| with_f32(x, |xv| mul_values(dv, xv, n, k, m)))???;
    Ok(Tensor::from_vec(out, (n, m), &Device::Cpu)?)
}

/// [`mul`] on the values, row-major.
fn mul_values(d: &[f32], x: &[f32], n: usize, k: usize, m: usize) -> Result<Vec<f32>> {
    let len = n.checked_mul(m).ok_or_else(|| Error::Numeric(format!("a {n} × {m} product overflows")))?;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let columns = (m / MIN_COLUMNS).clamp(1, MAX_COLUMN_CHUNKS);
    let width = m.div_ceil(columns);
    let blocks = n.div_ceil(ROWS);
    let o = Shared(out.as_mut_ptr());
    (0..blocks * columns).into_par_iter().for_each(|task| {
        let (blk, col) = (task / columns, task % columns);
        let (r0, r1) = (blk * ROWS, ((blk + 1) * ROWS).min(n));
        let (c0, c1) = (col * width, ((col + 1) * width).min(m));
        if c0 >= c1 {
            return;
        }
        // SAFETY: rows r0..r1 of D (N × K), columns c0..c1 of X (K × M); the task writes rows
        // r0..r1, columns c0..c1 of the N × M result, which no other task writes, inside its
        // capacity; `out` outlives the loop.
        unsafe {
            product(
                (r1 - r0, c1 - c0, k),
                Strided { at: o.at(r0 * m + c0), cs: 1, rs: m },
                Strided { at: d.as_ptr().add(r0 * k), cs: 1, rs: k },
                Strided { at: x.as_ptr().add(c0), cs: 1, rs: m },
            )
        };
    });
    // SAFETY: the tasks cover every (row, column) of the result: the row blocks cover 0..n,
    // the column chunks 0..m (`columns` chunks of ⌈m / columns⌉).
    unsafe { out.set_len(len) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(rows, cols)` values in [-1, 1) from a seed, with every tenth one zero (as after a ReLU).
    fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..rows * cols)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if i % 10 == 3 {
                    0.0
                } else {
                    (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                }
            })
            .collect()
    }

    fn reference(a: &[f32], b: &[f32], n: usize, k: usize, m: usize, b_transposed: bool) -> Vec<f64> {
        let mut out = vec![0f64; n * m];
        for i in 0..n {
            for j in 0..m {
                out[i * m + j] = (0..k)
                    .map(|l| a[i * k + l] as f64 * if b_transposed { b[j * k + l] } else { b[l * m + j] } as f64)
                    .sum();
            }
        }
        out
    }

    fn worst(got: &[f32], want: &[f64]) -> f64 {
        let scale = want.iter().fold(0f64, |a, x| a.max(x.abs()));
        got.iter().zip(want).fold(0f64, |a, (g, w)| a.max((*g as f64 - w).abs() / scale))
    }

    /// Shapes around every cut: rows not a multiple of [`ROWS`], positions of one and several
    /// chunks with a short last one, results of one and several row blocks.
    #[test]
    fn a_bt_is_the_product_in_every_cut() {
        for (n, m) in [(3, 5), (64, 100), (70, 8192 * 2 + 17), (130, 300), (5, 8192 * 9 + 3)] {
            let a = matrix(n, m, 1);
            let b = matrix(n, m, 2);
            let ta = Tensor::from_vec(a.clone(), (n, m), &Device::Cpu).unwrap();
            let tb = Tensor::from_vec(b.clone(), (n, m), &Device::Cpu).unwrap();
            let got = a_bt(&ta, &tb).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let e = worst(&got, &reference(&a, &b, n, m, n, true));
            assert!(e < 1e-6, "A Bᵀ of ({n}, {m}): worst relative error {e:e}");
            let gram = a_bt(&ta, &ta).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let e = worst(&gram, &reference(&a, &a, n, m, n, true));
            assert!(e < 1e-6, "A Aᵀ of ({n}, {m}): worst relative error {e:e}");
            for i in 0..n {
                for j in 0..n {
                    assert_eq!(gram[i * n + j].to_bits(), gram[j * n + i].to_bits(), "({n}, {m}): G[{i}][{j}]");
                }
            }
        }
    }

    #[test]
    fn mul_is_the_product_in_every_cut() {
        for (n, k, m) in [(3, 4, 5), (64, 64, 255), (70, 9, 256 * 16 + 31), (130, 129, 600), (512, 3, 256 * 40)] {
            let d = matrix(n, k, 3);
            let x = matrix(k, m, 4);
            let td = Tensor::from_vec(d.clone(), (n, k), &Device::Cpu).unwrap();
            let tx = Tensor::from_vec(x.clone(), (k, m), &Device::Cpu).unwrap();
            let got = mul(&td, &tx).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let e = worst(&got, &reference(&d, &x, n, k, m, false));
            assert!(e < 1e-6, "D X of ({n}, {k}) · ({k}, {m}): worst relative error {e:e}");
        }
    }

    /// The result's bits do not depend on the number of threads.
    #[test]
    fn results_do_not_depend_on_the_threads() {
        let (n, m) = (96, 8192 * 3 + 5);
        let a = Tensor::from_vec(matrix(n, m, 5), (n, m), &Device::Cpu).unwrap();
        let d = Tensor::from_vec(matrix(n, n, 6), (n, n), &Device::Cpu).unwrap();
        let run = || {
            let g = a_bt(&a, &a).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let y = mul(&d, &a).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (g, y)
        };
        let many = run();
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
        let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(run);
        for other in [one, three] {
            assert!(many.0.iter().zip(&other.0).all(|(x, y)| x.to_bits() == y.to_bits()));
            assert!(many.1.iter().zip(&other.1).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    /// Tensors that are not contiguous float32 CPU tensors go through candle.
    #[test]
    fn other_tensors_go_through_candle() {
        let a = Tensor::from_vec(matrix(4, 6, 7), (6, 4), &Device::Cpu).unwrap().t().unwrap();
        let want = a.matmul(&a.t().unwrap()).unwrap();
        let got = a_bt(&a, &a).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0);
        let a64 = a.to_dtype(DType::F64).unwrap().contiguous().unwrap();
        assert_eq!(mul(&a64, &a64.t().unwrap()).unwrap().dims(), &[4, 4]);
    }
}
