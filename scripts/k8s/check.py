#!/usr/bin/env python3
"""CI check of the Kubernetes manifests (issue 17): Kubernetes' own schema (kubernetes-validate,
strict), then the fields the runner depends on, and the pods' command lines run for real with
the runner (`--list` appended) for every completion index: together the shards must list every
run of the plan once.

    python3 scripts/k8s/check.py RUNNER        # from the repository's root

Needs kubernetes-validate and PyYAML (.ci/run installs them in a virtual environment)."""

import os
import subprocess
import sys

import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def load(name):
    with open(os.path.join(HERE, name)) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for d in docs:
        # Raises with the path of the offending field; strict: unknown fields are errors too.
        kubernetes_validate.validate(d, kubernetes_validate.latest_version(), strict=True)
    return docs


def env(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def check(cond, what):
    if not cond:
        sys.exit(f"k8s check: {what}")


def pod(job):
    spec = job["spec"]["template"]["spec"]
    check(spec["restartPolicy"] == "Never", f"{job['metadata']['name']}: restartPolicy must be Never")
    (c,) = spec["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
    return c, mounts, claims


def run_line(container, extra_env, runner):
    """The container's command line, run here with `runner` on PATH and `--list` appended."""
    cmd = container["command"] + [container["args"][0] + " --list"]
    bindir = os.path.dirname(os.path.abspath(runner))
    given = {k: v for k, v in env(container).items() if v is not None}  # valueFrom: set by Kubernetes
    e = dict(os.environ, **given, **extra_env, PATH=bindir + os.pathsep + os.environ["PATH"])
    out = subprocess.run(cmd, env=e, cwd=ROOT, capture_output=True, text=True)
    check(out.returncode == 0, f"`{' '.join(cmd)}` failed: {out.stderr.strip()}")
    return out.stdout.split()


def main():
    runner = sys.argv[1] if len(sys.argv) > 1 else "target/debug/runner"
    check(os.path.basename(runner) == "runner", "the runner binary must be named runner (the manifests call it so)")
    sweep = load("sweep-job.yaml")
    (collect,) = load("collect-job.yaml")
    pvcs = {d["metadata"]["name"]: d for d in sweep if d["kind"] == "PersistentVolumeClaim"}
    (job,) = [d for d in sweep if d["kind"] == "Job"]
    spec = job["spec"]
    check(spec.get("completionMode") == "Indexed", "the sweep must be an Indexed Job (JOB_COMPLETION_INDEX)")
    n = spec["completions"]
    check(spec.get("parallelism", n) <= n, "parallelism above completions")
    c, mounts, claims = pod(job)
    e = env(c)
    check(e.get("SHARDS") == str(n), f"SHARDS={e.get('SHARDS')} but completions={n}: runs would be lost or doubled")
    args = c["args"][0]
    check('--shard "$JOB_COMPLETION_INDEX/$SHARDS"' in args, "the pod must pass --shard $JOB_COMPLETION_INDEX/$SHARDS")
    out = args.split("--out", 1)[1].split()[0]
    check(out in mounts.values(), f"--out {out} is not a mounted volume: results would die with the pod")
    for name, claim in claims.items():
        check(claim in pvcs, f"volume {name}: claim {claim} is not defined in sweep-job.yaml")
        check("ReadWriteMany" in pvcs[claim]["spec"]["accessModes"], f"{claim}: pods on several nodes need ReadWriteMany")
    cc, cmounts, cclaims = pod(collect)
    check(cc["image"] == c["image"], "the collect job must run the sweep's image")
    check(cclaims == claims and cmounts == mounts, "the collect job must mount the sweep's volume at the same place")
    check(" collect " in cc["args"][0], "the collect job must run `runner collect`")
    for k in ("SPEC", "PLAN_FLAGS"):
        check(env(cc).get(k) == e.get(k), f"{k} differs between the sweep and the collect job: collect would not find the runs")

    # The pods' own command lines: every index, then the whole plan.
    shards = [run_line(c, {"JOB_COMPLETION_INDEX": str(i)}, runner) for i in range(n)]
    whole = subprocess.run(
        [runner, e["SPEC"], "--list"] + e["PLAN_FLAGS"].split(), cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    listed = sorted(r for s in shards for r in s)
    check(listed == sorted(whole), f"the shards list {listed}, the plan has {whole}")
    check(all(shards), f"an empty shard: {shards} (fewer runs than completions)")
    print(f"k8s check: manifests valid (Kubernetes {kubernetes_validate.latest_version()}, strict); "
          f"{n} indexed pods run shards of {len(whole)} runs of {e['SPEC']}, each run once; collect job matches")


if __name__ == "__main__":
    main()
