//! The eigendecomposition of a real symmetric matrix, in `f64` on the host: what the
//! Wasserstein style loss needs for its matrix square roots (and the colour matching of the
//! runner for its 3 × 3 covariances).
//!
//! Householder reduction to tridiagonal form, then the implicit QL algorithm with Wilkinson
//! shifts (the EISPACK `tred2` / `tql2` pair, as described by Wilkinson and Reinsch, *Handbook
//! for Automatic Computation* vol. II, and Golub and Van Loan §8.3). `O(n³)`; for the 512 × 512
//! covariances of VGG19's last blocks this is exact to rounding where a fixed number of
//! Newton–Schulz iterations is not (see `style.rs`).

use crate::{Error, Result};

/// `A = V diag(values) Vᵀ` for a symmetric `A`.
#[derive(Clone, Debug)]
pub struct SymEigen {
    /// The order `n`.
    pub n: usize,
    /// The eigenvalues, ascending.
    pub values: Vec<f64>,
    /// The eigenvectors as rows: `vectors[k * n .. (k + 1) * n]` belongs to `values[k]`
    /// (so this is `Vᵀ`, row-major).
    pub vectors: Vec<f64>,
}

impl SymEigen {
    /// Decomposes the symmetric `n × n` matrix `a` (row-major; only its lower triangle is read).
    pub fn new(a: &[f64], n: usize) -> Result<Self> {
        if a.len() != n * n {
            return Err(Error::Config(format!("a {n} × {n} matrix needs {} entries, not {}", n * n, a.len())));
        }
        if a.iter().any(|x| !x.is_finite()) {
            return Err(Error::Numeric("the matrix to decompose has a non-finite entry".into()));
        }
        if n == 0 {
            return Ok(Self { n, values: vec![], vectors: vec![] });
        }
        // Symmetrise from the lower triangle, so that rounding in the caller cannot matter.
        let mut v = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                v[i * n + j] = a[i * n + j];
                v[j * n + i] = a[i * n + j];
            }
        }
        let mut d = vec![0.0; n];
        let mut e = vec![0.0; n];
        // Stored column-major, `v` ends as the orthogonal transformation's transpose: its
        // rows are the vectors that QL rotates in pairs.
        tridiagonalize(&mut v, &mut d, &mut e, n);
        let mut vt = v;
        ql_implicit(&mut vt, &mut d, &mut e, n)?;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| d[i].total_cmp(&d[j]));
        let values = order.iter().map(|&i| d[i]).collect();
        let mut vectors = Vec::with_capacity(n * n);
        for &i in &order {
            vectors.extend_from_slice(&vt[i * n..(i + 1) * n]);
        }
        Ok(Self { n, values, vectors })
    }

    /// `V diag(f(values)) Vᵀ`, row-major: the matrix function `f(A)`.
    pub fn apply(&self, f: impl Fn(f64) -> f64) -> Vec<f64> {
        let n = self.n;
        let mut out = vec![0.0; n * n];
        for (k, &lambda) in self.values.iter().enumerate() {
            let fl = f(lambda);
            if fl == 0.0 {
                continue;
            }
            let v = &self.vectors[k * n..(k + 1) * n];
            for i in 0..n {
                let s = fl * v[i];
                let row = &mut out[i * n..(i + 1) * n];
                for (o, vj) in row.iter_mut().zip(v) {
                    *o += s * vj;
                }
            }
        }
        out
    }
}

/// Householder reduction of the symmetric `v` (column-major, so that the inner loops, which
/// run down columns, are contiguous; overwritten by the accumulated orthogonal transformation
/// `Q`, `A = Q T Qᵀ`) to the tridiagonal `T` with diagonal `d` and subdiagonal `e[1..]`.
fn tridiagonalize(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    let at = |i: usize, j: usize| j * n + i;
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
    }
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
                v[at(j, i)] = 0.0;
            }
        } else {
            // The Householder vector of row i, scaled.
            for dk in d[..i].iter_mut() {
                *dk /= scale;
                h += *dk * *dk;
            }
            let f = d[i - 1];
            let g = if f > 0.0 { -h.sqrt() } else { h.sqrt() };
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].fill(0.0);
            // e = A u (the lower triangle of the leading block).
            for j in 0..i {
                let f = d[j];
                v[at(j, i)] = f;
                let mut g = e[j] + v[at(j, j)] * f;
                for k in j + 1..i {
                    g += v[at(k, j)] * d[k];
                    e[k] += v[at(k, j)] * f;
                }
                e[j] = g;
            }
            let mut f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            // A -= u pᵀ + p uᵀ.
            for j in 0..i {
                let (f, g) = (d[j], e[j]);
                for k in j..i {
                    v[at(k, j)] -= f * e[k] + g * d[k];
                }
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
            }
        }
        d[i] = h;
    }
    // Accumulate the transformations.
    for i in 0..n - 1 {
        v[at(n - 1, i)] = v[at(i, i)];
        v[at(i, i)] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[at(k, i + 1)] / h;
            }
            for j in 0..=i {
                let mut g = 0.0;
                for k in 0..=i {
                    g += v[at(k, i + 1)] * v[at(k, j)];
                }
                for k in 0..=i {
                    v[at(k, j)] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[at(k, i + 1)] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
        v[at(n - 1, j)] = 0.0;
    }
    v[at(n - 1, n - 1)] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL with Wilkinson shifts on the tridiagonal (`d`, `e[1..]`), rotating the rows of
/// `vt` (the eigenvectors as rows). On return `d` holds the eigenvalues, unsorted.
fn ql_implicit(vt: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) -> Result<()> {
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0f64;
    let mut tst1 = 0.0f64;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            let mut iterations = 0;
            loop {
                iterations += 1;
                if iterations > 60 {
                    return Err(Error::Numeric(format!(
                        "the QL eigenvalue iteration did not converge for eigenvalue {l} of {n}"
                    )));
                }
                // The shift, from the leading 2 × 2 block.
                let g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for di in d.iter_mut().take(n).skip(l + 2) {
                    *di -= h;
                }
                f += h;
                // The implicit QL sweep.
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0, 1.0, 1.0);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0, 0.0);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    let (lo, hi) = vt.split_at_mut((i + 1) * n);
                    let row_i = &mut lo[i * n..];
                    let row_i1 = &mut hi[..n];
                    for (a, b) in row_i.iter_mut().zip(row_i1.iter_mut()) {
                        let hk = *b;
                        *b = s * *a + c * hk;
                        *a = c * *a - s * hk;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_symmetric(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let x: f64 = rng.random_range(-1.0..1.0);
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
        }
        a
    }

    /// `‖A − V Λ Vᵀ‖_max` and `‖V Vᵀ − I‖_max`.
    fn residuals(a: &[f64], e: &SymEigen) -> (f64, f64) {
        let n = e.n;
        let back = e.apply(|x| x);
        let rec = a.iter().zip(&back).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        let mut orth = 0.0f64;
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..n).map(|k| e.vectors[i * n + k] * e.vectors[j * n + k]).sum();
                orth = orth.max((dot - if i == j { 1.0 } else { 0.0 }).abs());
            }
        }
        (rec, orth)
    }

    #[test]
    fn decomposes_random_symmetric_matrices() {
        for (n, seed) in [(1, 1), (2, 2), (3, 3), (7, 4), (64, 5), (130, 6)] {
            let a = random_symmetric(n, seed);
            let e = SymEigen::new(&a, n).unwrap();
            let (rec, orth) = residuals(&a, &e);
            assert!(rec < 1e-12 * n as f64 && orth < 1e-12 * n as f64, "n {n}: {rec:e} {orth:e}");
            assert!(e.values.windows(2).all(|w| w[0] <= w[1]), "ascending");
        }
    }

    #[test]
    fn known_spectra_and_degenerate_matrices() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let e = SymEigen::new(&[2.0, 1.0, 1.0, 2.0], 2).unwrap();
        assert!((e.values[0] - 1.0).abs() < 1e-14 && (e.values[1] - 3.0).abs() < 1e-14);
        // Zero, identity (repeated eigenvalues) and a rank-one matrix.
        for a in [vec![0.0; 16], (0..16).map(|k| if k % 5 == 0 { 1.0 } else { 0.0 }).collect(), vec![1.0; 16]] {
            let e = SymEigen::new(&a, 4).unwrap();
            let (rec, orth) = residuals(&a, &e);
            assert!(rec < 1e-13 && orth < 1e-13, "{a:?}: {rec:e} {orth:e}");
        }
        assert!((SymEigen::new(&[1.0; 16], 4).unwrap().values[3] - 4.0).abs() < 1e-13);
        // The square root of a positive definite matrix squares back to it.
        let mut a = random_symmetric(9, 8);
        for i in 0..9 {
            a[i * 9 + i] += 10.0;
        }
        let e = SymEigen::new(&a, 9).unwrap();
        let s = SymEigen::new(&e.apply(f64::sqrt), 9).unwrap().apply(|x| x * x);
        assert!(a.iter().zip(&s).all(|(x, y)| (x - y).abs() < 1e-12));
    }

    #[test]
    fn refuses_non_finite_and_misshaped_input() {
        assert!(SymEigen::new(&[1.0, f64::NAN, f64::NAN, 1.0], 2).is_err());
        assert!(SymEigen::new(&[1.0, 2.0, 3.0], 2).is_err());
    }
}
