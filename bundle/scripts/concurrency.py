"""Benchmark (not a test): the bundle's sample run alone, then two of the same runs at once, with the default CPU
thread policy and with every process taking every core (``OMP_NUM_THREADS`` = cores, torch's own default).

    python bundle/scripts/concurrency.py [--repeats 2] [--prior network --max_iters N]

Prints, per policy, the lone run's seconds and each concurrent run's seconds and its ratio to the lone run
(the target: at most 2.5x). Run from the repository root. By default the bundle's default prior runs (the filter);
``--prior network`` times network fits instead, ``--max_iters`` capping them (network only).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _command(out: str, prior: str | None, max_iters: int | None) -> list[str]:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", "bundle", "--config_file",
           "bundle/configs/inference.json", "--meta_file", "bundle/configs/metadata.json", "--output_dir", out,
           "--overwrite", "true"]
    return cmd + (["--prior", prior] if prior else []) + (["--max_iters", str(max_iters)] if max_iters else [])


def _env(threads: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads:
        env["OMP_NUM_THREADS"] = threads
    return {**env, "PYTHONWARNINGS": "ignore"}


def _timed(procs: list[subprocess.Popen]) -> list[float]:
    start = time.perf_counter()
    ends = [0.0] * len(procs)
    while any(p.poll() is None for p in procs) or not all(ends):
        for i, p in enumerate(procs):
            if p.poll() is not None and not ends[i]:
                if p.returncode:
                    raise SystemExit(f"run failed with status {p.returncode}")
                ends[i] = time.perf_counter() - start
        time.sleep(0.05)
    return ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--prior", default=None, help="the bundle's prior (auto, filter, network, network+filter)")
    parser.add_argument("--max_iters", type=int, default=None, help="network only: cap on iterations")
    parser.add_argument("--policies", default="default,every-core", help="which of default, every-core to run")
    args = parser.parse_args()
    if args.max_iters and args.prior not in ("network", "network+filter"):
        parser.error("--max_iters sets the network fit: pass --prior network (or network+filter) with it.")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    tmp = tempfile.mkdtemp(prefix="dnaprior_concurrency_")
    policies = {"default": ("default policy", None),
                "every-core": (f"every core (OMP_NUM_THREADS={cores})", str(cores))}
    for name in args.policies.split(","):
        label, threads = policies[name]
        for rep in range(args.repeats):
            run = lambda k: subprocess.Popen(_command(f"{tmp}/o{k}", args.prior, args.max_iters), cwd=ROOT,
                                             env=_env(threads), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            (lone,) = _timed([run(0)])
            pair = _timed([run(1), run(2)])
            print(f"{label}, repeat {rep + 1}: lone {lone:.1f} s; two at once {pair[0]:.1f} s and {pair[1]:.1f} s "
                  f"({max(pair) / lone:.2f}x the lone run)", flush=True)


if __name__ == "__main__":
    main()
