"""The input gradient of a 3×3 convolution through the forward's own Winograd kernel.

Design check for issue 15's next step ("one Winograd kernel for both passes",
docs/performance.md): today the CPU backward pass transforms a second kernel, the transposed,
flipped weights (395 MiB of Winograd-domain kernels in all, half of them this copy). The
adjoint of the forward's per-tile formula, Y = Aᵀ [U ⊙ (Bᵀ d B)] A with U = G g Gᵀ, is

    dd_c = B [Σ_k U_kc ⊙ (A dY_k Aᵀ)] Bᵀ      (each 6×6 input tile; tiles overlap by 2, added)

so the backward pass can read the forward's U (transposed over channels) and needs no kernel
of its own. This script checks that formula, with the F(4×4, 3×3) tables of
crates/vgg/src/winograd.rs (points 0, 1, −1, ½, −2, ∞), against a direct computation in
float64, and compares its float32 error with today's way (the flipped, transposed kernel through
the forward algorithm). Non-square images with partial tiles; exits non-zero if the float64
result is not exact to rounding or the float32 error is more than 1.5× today's.

    python scripts/winograd_adjoint.py [C K H W]     # default 16 24 13 10

Measured 2026-11-30 (numpy 2, Zen 3): 16 → 24 channels at 13×10, float32 relative error 9.0e-7
against 1.0e-6 today; 256 → 512 at 9×14, 5.7e-6 against 6.6e-6.
"""

import sys

import numpy as np

BT = np.array([[1, -1.5, -2, 1.5, 1, 0], [0, -1, .5, 2.5, 1, 0], [0, 1, -2.5, .5, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, .5, -1, -.5, 1, 0], [0, 1, -1.5, -2, 1.5, 1]])
G = np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3], [-1 / 3, 1 / 3, -1 / 3], [-16 / 15, -8 / 15, -4 / 15],
              [1 / 15, -2 / 15, 4 / 15], [0, 0, 1]])
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, .5, -2, 0], [0, 1, 1, .25, 4, 0], [0, 1, -1, .125, -8, 1]])


def direct_forward(x, w):
    """(K, H, W) = 3×3 correlation of x (C, H, W) with w (K, C, 3, 3), padding 1."""
    _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    return sum(np.einsum('cij,kc->kij', xp[:, a:a + h, b:b + wd], w[:, :, a, b]) for a in range(3) for b in range(3))


def direct_input_grad(dy, w):
    """(C, H, W): the adjoint of `direct_forward` applied to dy (K, H, W)."""
    _, h, wd = dy.shape
    dyp = np.pad(dy, ((0, 0), (1, 1), (1, 1)))
    return sum(np.einsum('kij,kc->cij', dyp[:, 2 - a:2 - a + h, 2 - b:2 - b + wd], w[:, :, a, b])
               for a in range(3) for b in range(3))


def kernel(w, dt):
    """U (6, 6, K, C) = G g Gᵀ per (k, c), in float64, then rounded to dt (as the Rust code)."""
    return np.einsum('ia,kcab,jb->ijkc', G, w, G).astype(dt)


def transposed_winograd(dy, w, dt):
    """The input gradient through the forward's kernel U: tiles of dY, A dY Aᵀ, Σ_k U_kc ⊙ ·,
    B · Bᵀ, overlapping 6×6 tiles added into the padded input grid."""
    k_out, h, wd = dy.shape
    c_in = w.shape[1]
    u = kernel(w, dt)
    th, tw = -(-h // 4), -(-wd // 4)
    dyp = np.zeros((k_out, th * 4, tw * 4), dt)
    dyp[:, :h, :wd] = dy
    dxp = np.zeros((c_in, th * 4 + 2, tw * 4 + 2), dt)
    a, b = AT.T.astype(dt), BT.T.astype(dt)
    for ty in range(th):
        for tx in range(tw):
            t = dyp[:, ty * 4:ty * 4 + 4, tx * 4:tx * 4 + 4]
            x = np.einsum('ia,kab,jb->ijk', a, t, a)
            m = np.einsum('ijkc,ijk->ijc', u, x)
            dxp[:, ty * 4:ty * 4 + 6, tx * 4:tx * 4 + 6] += np.einsum('ia,abc,jb->cij', b, m, b)
    return dxp[:, 1:h + 1, 1:wd + 1]


def winograd_forward(x, w, dt):
    """Today's F(4×4, 3×3) forward, the algorithm the backward pass runs with the flipped kernel."""
    c_in, h, wd = x.shape
    u = kernel(w, dt)
    th, tw = -(-h // 4), -(-wd // 4)
    xp = np.zeros((c_in, th * 4 + 2, tw * 4 + 2), dt)
    xp[:, 1:h + 1, 1:wd + 1] = x
    y = np.zeros((w.shape[0], th * 4, tw * 4), dt)
    bt, at = BT.astype(dt), AT.astype(dt)
    for ty in range(th):
        for tx in range(tw):
            v = np.einsum('ia,cab,jb->ijc', bt, xp[:, ty * 4:ty * 4 + 6, tx * 4:tx * 4 + 6], bt)
            m = np.einsum('ijkc,ijc->ijk', u, v)
            y[:, ty * 4:ty * 4 + 4, tx * 4:tx * 4 + 4] = np.einsum('ia,abk,jb->kij', at, m, at)
    return y[:, :h, :wd]


def main():
    c_in, k_out, h, wd = (int(v) for v in (sys.argv[1:5] if len(sys.argv) > 4 else (16, 24, 13, 10)))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((c_in, h, wd))
    w = rng.standard_normal((k_out, c_in, 3, 3))
    dy = rng.standard_normal((k_out, h, wd))
    ref = direct_input_grad(dy, w)
    lhs, rhs = np.vdot(direct_forward(x, w), dy), np.vdot(x, ref)
    assert abs(lhs - rhs) <= 1e-9 * abs(lhs), f"the direct input gradient is not the adjoint: {lhs} vs {rhs}"
    scale = np.abs(ref).max()
    exact = np.abs(transposed_winograd(dy, w, np.float64) - ref).max() / scale
    ours = np.abs(transposed_winograd(dy.astype(np.float32), w, np.float32) - ref).max() / scale
    flipped = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    today = np.abs(winograd_forward(dy.astype(np.float32), flipped, np.float32) - ref).max() / scale
    print(f"{c_in} -> {k_out} channels, {wd}x{h}: relative max error, float64 {exact:.2e}; "
          f"float32 through U {ours:.2e}, through the flipped kernel (today) {today:.2e}")
    if exact > 1e-12 or ours > 1.5 * today:
        sys.exit("the transposed formula does not hold")


if __name__ == "__main__":
    main()
