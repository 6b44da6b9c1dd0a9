#!/usr/bin/env python3
"""How far PyTorch's own float32 L-BFGS drifts from its float64 trace on the fixture's problem:
the yardstick for the tolerances of `crates/runner/tests/integration/optimizers.rs`.

The fixture (`../shared/fixtures/torch-reference`) holds `torch.optim.LBFGS`'s trace in float64
(30 steps, seed form, from x0). This script runs the same optimisation with the same code
(`../shared/bench/torch_reference.py`'s network and objective) in float64 — to check that it
reproduces the fixture — and in float32 with 1 and 2 threads (oneDNN sums in a different order
with each), and prints each float32 trace's relative difference from the float64 one per
evaluation, with and without the strong-Wolfe line search.

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy pillow safetensors
    /tmp/torchenv/bin/python scripts/lbfgs_float32_drift.py --weights W.bin
"""
import argparse
import json
import os
import sys

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--weights", required=True)
    p.add_argument("--fixture", default=os.path.join(os.path.dirname(__file__), "../../shared/fixtures/torch-reference"))
    p.add_argument("--bench", default=os.path.join(os.path.dirname(__file__), "../../shared/bench"))
    a = p.parse_args()
    sys.path.insert(0, a.bench)
    import torch_reference as tr
    from safetensors.torch import load_file

    ref = json.load(open(os.path.join(a.fixture, "reference.json")))
    tensors = load_file(os.path.join(a.fixture, "reference.safetensors"))
    meta = ref["_meta"]
    alpha, beta = meta["forms"]["seed"]["alpha"], meta["forms"]["seed"]["beta"]
    cl, sl = [meta["content_layer"]], meta["style_layers"]

    def trace(dtype, threads, line_search):
        torch.set_num_threads(threads)
        w = {k: (W.to(dtype), b.to(dtype)) for k, (W, b) in tr.load_vgg(a.weights).items()}
        c = tensors["content.preprocessed"].to(dtype)
        s = tensors["style.preprocessed"].to(dtype)
        with torch.no_grad():
            P = tr.features(w, c, set(cl))
            A = {l: tr.gram(v) for l, v in tr.features(w, s, set(sl)).items()}
        f = tr.objective(w, cl, sl, alpha, beta, P, A, "seed")
        x = tensors["x0"].to(dtype).clone().requires_grad_(True)
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=100, tolerance_grad=0.0,
                                tolerance_change=0.0, line_search_fn=line_search)
        values = []

        def closure():
            opt.zero_grad()
            loss, _, _ = f(x)
            loss.backward()
            values.append(loss.item())
            return loss

        for _ in range(30):
            opt.step(closure)
        return values

    out = {"torch": torch.__version__}
    for name, ls in [("none", None), ("strong_wolfe", "strong_wolfe")]:
        want = ref[f"lbfgs.seed.{name}.evals"]
        f64 = trace(torch.float64, 2, ls)
        rel = lambda got: [abs(g - r) / abs(r) for g, r in zip(got, want)]
        out[f"{name}.float64_max_rel"] = max(rel(f64))
        for threads in (1, 2):
            r = rel(trace(torch.float32, threads, ls))
            out[f"{name}.float32_{threads}threads.rel"] = [float(f"{v:.2e}") for v in r]
            out[f"{name}.float32_{threads}threads.max_rel_first5"] = max(r[:5])
            out[f"{name}.float32_{threads}threads.rel_at_30"] = r[29] if len(r) >= 30 else None
            out[f"{name}.float32_{threads}threads.max_rel"] = max(r)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
