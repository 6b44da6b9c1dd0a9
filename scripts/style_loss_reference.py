#!/usr/bin/env python3
"""Float64 reference values of the three style losses (gram, mean_cov, wasserstein), guided and
unguided, for `crates/losses/tests/style_reference.rs`.

Written from the definitions in `crates/losses/src/style.rs`'s documentation, independently of
its code: numpy for the statistics, `scipy.linalg.sqrtm` (a Schur decomposition, not the
eigendecomposition the Rust code uses) for the matrix square roots of W2.

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install numpy scipy
    /tmp/ref/bin/python scripts/style_loss_reference.py > crates/losses/tests/fixtures/style_reference.json

Features are seeded random ReLU-like activations (non-negative, a quarter of them zero), so the
fixture is small and the same on every machine; one case has fewer positions than channels
(a singular covariance, as at relu5_1 of a small image), where the regularising eps matters.
"""
import json

import numpy as np
import scipy.linalg

# Per-position factor k(N) of each loss form for the Gram and mean/covariance losses: the form's
# c(N, M) times M^2 (seed and jcjohnson: 1/N^4; paper: 1/(4 N^2)).
FORMS = {"seed": lambda n: 1.0 / n**4, "paper": lambda n: 1.0 / (4.0 * n**2), "jcjohnson": lambda n: 1.0 / n**4}


def stats(f, g):
    """Mean, second moment and mass of features f (N, M) weighted by the guide g (M)."""
    m = g.sum()
    mu = f @ g / m
    s = (f * g) @ f.T / m
    return mu, s, m


def w2_squared(mu, cov, mu_t, cov_t):
    root_t = scipy.linalg.sqrtm(cov_t)
    cross = scipy.linalg.sqrtm(root_t @ cov @ root_t)
    return float(np.sum((mu - mu_t) ** 2) + np.trace(cov) + np.trace(cov_t) - 2.0 * np.real(np.trace(cross)))


def losses(f, g, style, style_guide, form):
    n, positions = f.shape
    mu, s, m = stats(f, g)
    mu_t, s_t, _ = stats(style, style_guide)
    cov, cov_t = s - np.outer(mu, mu), s_t - np.outer(mu_t, mu_t)
    lam = m / positions
    k = FORMS[form](n)
    eps = 1e-4 * np.trace(cov_t) / n
    w2 = w2_squared(mu, cov + eps * np.eye(n), mu_t, cov_t + eps * np.eye(n))
    return {
        "gram": lam * k * float(np.sum((s - s_t) ** 2)),
        "mean_cov": lam * k * float(np.sum((mu - mu_t) ** 2) + np.sum((cov - cov_t) ** 2)),
        "wasserstein": lam * w2 / n,
    }


def features(rng, n, h, w):
    x = rng.standard_normal((n, h, w)) * 3.0 + 1.5
    return np.maximum(x, 0.0)


def main():
    rng = np.random.default_rng(20161128)
    cases = []
    for name, (n, h, w), (hs, ws) in [("full_rank", (8, 5, 7), (4, 6)), ("singular", (8, 2, 3), (3, 3))]:
        f = features(rng, n, h, w)
        style = features(rng, n, hs, ws)
        guide = rng.uniform(0.0, 1.0, (h, w))
        style_guide = (rng.uniform(0.0, 1.0, (hs, ws)) > 0.3).astype(float)
        ones, style_ones = np.ones((h, w)), np.ones((hs, ws))
        for guided in (False, True):
            g, sg = (guide, style_guide) if guided else (ones, style_ones)
            expected = {
                form: losses(f.reshape(n, -1), g.ravel(), style.reshape(n, -1), sg.ravel(), form) for form in FORMS
            }
            cases.append({
                "name": f"{name}{'_guided' if guided else ''}",
                "features": {"shape": [1, n, h, w], "data": f.ravel().tolist()},
                "style": {"shape": [1, n, hs, ws], "data": style.ravel().tolist()},
                "guide": {"shape": [1, 1, h, w], "data": g.ravel().tolist()} if guided else None,
                "style_guide": {"shape": [1, 1, hs, ws], "data": sg.ravel().tolist()} if guided else None,
                "expected": expected,
            })
    print(json.dumps({
        "generator": "scripts/style_loss_reference.py",
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "cases": cases,
    }, indent=1))


if __name__ == "__main__":
    main()
