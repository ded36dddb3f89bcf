"""Speed benchmark: time, iterations, PSNR and peak memory of DNA-Prior's presets against BM3D and a plain DIP.

    python benchmarks/speed.py --out bench_speed                  # the real run (plain DIP: 2500 iterations)
    python benchmarks/speed.py --dip-iters 20 --profile-iters 20 --out /tmp/s   # smoke test

Real scans with Gaussian noise (sigma 0.1 of the range, fixed seed): the 217x180 MRI slice, pydicom's 128x128
CT slice and nibabel's 128x96x24 EPI volume. Every method runs in its own fresh Python process, so its peak
memory is its own: the growth of the peak resident set (``ru_maxrss``) over the process after imports and data
loading on CPU, ``torch.cuda.max_memory_allocated`` on CUDA. The DNA-Prior rows run ``--prior`` (default ``auto``:
the filter, no network). Then one DNA-Prior run is profiled with ``torch.profiler`` to show where the time goes.
Writes ``speed.md`` into ``--out`` and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import numpy as np
from common import (
    QUICK_CASE,
    VOLUME_CASE,
    Denoiser,
    MethodRun,
    Scan,
    add_noise,
    capture_fit_info,
    default_data_dir,
    dnaprior_denoiser,
    fits_network,
    fmt,
    fmt_sig,
    load_scans,
    machine_summary,
    markdown_table,
    noise_seed,
    peers,
    psnr,
    reference_method,
    warm_up,
)

CASES = (QUICK_CASE, "ct_small_2d", VOLUME_CASE)
PRESETS = ("fast", "default", "quality")
NOISE = "gaussian"
RESULT_TAG = "SPEED-RESULT "


def dip_label(iters: int) -> str:
    return f"plain DIP (MSE, no TV, {iters} iters)"


def plain_dip_denoiser(iters: int, device: str | None, seed: int = 0) -> Denoiser:
    """The original Deep Image Prior recipe through ``fit_prior``: 5 levels of 128 channels, a 32-channel random
    code (no blurred image in it), pixel MSE (the spectral fidelity with equal weights is MSE by Parseval), no TV,
    ``iters`` iterations, no stop.
    """
    import torch

    from monai_dnaprior import NetworkConfig, fit_prior, get_noise_model
    from monai_dnaprior.devices import resolve_device

    config = NetworkConfig(
        max_iters=iters, min_iters=10**9, patience=10**9, tv_scale=0.0, channels=(128,) * 5, skip_channels=4,
        code_channels=32, code_blur=0.0,
    )

    def run(noisy: np.ndarray) -> MethodRun:
        start = time.perf_counter()
        target = torch.as_tensor(noisy)[None, None].to(resolve_device(device))
        model = get_noise_model("gaussian", target[0], target.ndim - 2, 0.0)  # level 0: no TV, no stop by change
        result = fit_prior(target, model, config, seed)
        out = result.image[0, 0].cpu().numpy()
        return MethodRun(out, time.perf_counter() - start, {"iterations": result.iterations})

    return run


def methods_for(scan: Scan, args: argparse.Namespace) -> dict[str, Callable[[], Denoiser]]:
    """Method name to a factory of its denoiser (factories, so a worker builds only the one it runs)."""
    ref = reference_method(scan.is_volume)
    table: dict[str, Callable[[], Denoiser]] = {ref: lambda: peers(scan.is_volume)[ref]}
    for preset in PRESETS:
        table[f"DNA-Prior {preset}"] = functools.partial(
            dnaprior_denoiser, NOISE, preset=preset, max_iters=args.max_iters, device=args.device, prior=args.prior
        )
    if not scan.is_volume:  # the plain recipe on a volume would be hours on a CPU
        table[dip_label(args.dip_iters)] = functools.partial(plain_dip_denoiser, args.dip_iters, args.device)
    if args.methods:
        table = {k: v for k, v in table.items() if k == ref or any(m in k for m in args.methods.split(","))}
    return table


# ------------------------------------------------------------------------------------------ one method per process


@dataclass
class Measurement:
    case: str
    shape: str
    method: str
    seconds: float
    iterations: int | None
    psnr: float
    peak_mib: float
    memory_kind: str


def peak_memory_mib() -> float:
    """This process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(args: argparse.Namespace) -> None:
    """Run one (case, method) and print its :class:`Measurement` as a tagged JSON line."""
    import torch

    case, method = args.worker
    scan = load_scans(args.data_dir, [case])[0]
    noisy = add_noise(scan.image, NOISE, noise_seed(scan.name, NOISE))
    denoiser = methods_for(scan, args)[method]()
    warm_up(args.device)  # imports and one tiny run: neither time nor memory baseline includes start-up costs
    fits = method.startswith(("DNA", "plain"))  # the peers run on the CPU whatever the device
    on_cuda = fits and torch.cuda.is_available() and (args.device or "cuda").startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    before = peak_memory_mib()
    run = denoiser(noisy)
    peak = torch.cuda.max_memory_allocated() / 2**20 if on_cuda else peak_memory_mib() - before
    m = Measurement(scan.name, scan.shape_str, method, run.seconds, run.info.get("iterations"),
                    psnr(scan.image, run.output), peak, "CUDA allocated" if on_cuda else "CPU RSS growth")
    print(RESULT_TAG + json.dumps(asdict(m)), flush=True)


def measure(case: str, method: str, args: argparse.Namespace) -> Measurement:
    """Run ``method`` on ``case`` in a fresh interpreter and read back its measurement."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, method, "--data-dir", str(args.data_dir),
           "--dip-iters", str(args.dip_iters)]
    cmd += ["--max-iters", str(args.max_iters)] if args.max_iters else []
    cmd += ["--prior", args.prior]
    cmd += ["--device", args.device] if args.device else []
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return Measurement(**json.loads(line[len(RESULT_TAG):]))
    raise RuntimeError(f"{method} on {case} failed:\n{done.stderr[-3000:]}")


# ------------------------------------------------------------------------------------------------------ profile

LABELS = {
    "auto noise model": ("dnaprior::auto",),
    "noise field (levels, spectrum)": ("dnaprior::field",),
    "block matching (refinement)": ("dnaprior::matching",),
    "refinement, all else (transforms, gains, aggregation)": ("dnaprior::refinement",),
    "NL-Bayes step (with its block matching)": ("dnaprior::bayes",),
    "forward (network)": ("dnaprior::forward",),
    "spectral fidelity (incl. forward FFTs)": ("dnaprior::fidelity",),
    "total variation": ("dnaprior::tv",),
    "backward (incl. FFT backward)": ("dnaprior::backward",),
    "optimiser step + zero_grad": ("Optimizer.step", "Optimizer.zero_grad"),
    "EMA + early stop": ("dnaprior::ema",),
}
OP_GROUPS = {"FFT ops (fwd + bwd)": ("fft",), "convolution (fwd + bwd)": ("conv",),
             "batch norm (fwd + bwd)": ("batch_norm",), "interpolation (fwd + bwd)": ("upsample", "interp")}


def labelled(fn: Callable, label: str, sync: bool = False) -> Callable:
    """``fn`` inside a profiler ``record_function`` span named ``label``; with ``sync`` the span waits for CUDA,
    so that it measures the GPU work it launched rather than the launch alone."""
    import torch
    from torch.profiler import record_function

    @functools.wraps(fn)
    def wrapper(*a, **k):
        with record_function(label):
            out = fn(*a, **k)
            if sync:
                torch.cuda.synchronize()
            return out

    return wrapper


@contextlib.contextmanager
def labelled_fit(sync: bool = False) -> Iterator[None]:
    """Label the parts of the fit loop for the profiler, for the duration only (``sync``: on CUDA)."""
    import torch

    import monai_dnaprior.denoising as denoising
    import monai_dnaprior.filters.collaborative as collaborative
    import monai_dnaprior.filters.pipeline as pipeline
    import monai_dnaprior.network.fit as network_fit
    from monai_dnaprior.network.hourglass import DIPHourglass
    from monai_dnaprior.network.losses import SpectralFidelity
    from monai_dnaprior.network.stopping import OutputAverager

    targets = [(DIPHourglass, "forward", "dnaprior::forward"), (SpectralFidelity, "forward", "dnaprior::fidelity"),
               (network_fit, "total_variation", "dnaprior::tv"), (torch.Tensor, "backward", "dnaprior::backward"),
               (OutputAverager, "update", "dnaprior::ema"), (denoising, "choose_noise_model", "dnaprior::auto"),
               (denoising, "estimate_noise_field", "dnaprior::field"),
               (collaborative, "match_blocks", "dnaprior::matching"),
               (pipeline, "collaborative_refine", "dnaprior::refinement"),
               (pipeline, "bayes_refine", "dnaprior::bayes")]
    with contextlib.ExitStack() as stack:
        for owner, name, label in targets:
            stack.enter_context(mock.patch.object(owner, name, labelled(getattr(owner, name), label, sync)))
        yield


def profile_fit(scan: Scan, args: argparse.Namespace, prior: str = "auto") -> str:
    """Profile one default DNA-Prior run with the given prior (``"auto"``: as it comes, the filter; ``"network"``:
    the network fit, capped at ``--profile-iters``); Markdown tables of the wall time by part of the pipeline and
    the loop, and by op."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    noisy = add_noise(scan.image, NOISE, noise_seed(scan.name, NOISE))
    denoiser = dnaprior_denoiser(NOISE, preset="default", max_iters=args.profile_iters, device=args.device,
                                 prior=prior)
    warm_up(args.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    from monai_dnaprior.devices import resolve_device

    on_cuda = resolve_device(args.device).type == "cuda"
    with capture_fit_info() as infos, labelled_fit(on_cuda), profile(activities=activities) as prof:
        start = time.perf_counter()
        denoiser(noisy)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    iters = infos[-1]["iterations"] if infos else None

    def spans(keys: tuple[str, ...]) -> float:
        return sum(e.cpu_time_total for e in events if e.key.startswith(keys)) / 1e6

    parts = {name: spans(keys) for name, keys in LABELS.items()}
    parts["refinement, all else (transforms, gains, aggregation)"] -= parts["block matching (refinement)"]
    rows = [[name, fmt_sig(s), fmt(100 * s / wall, 1)] for name, s in parts.items()]
    other = wall - sum(parts.values())
    rows += [["other / Python overhead (wall - sum)", fmt_sig(other), fmt(100 * other / wall, 1)],
             ["**total wall (profiled)**", fmt_sig(wall), "100.0"]]
    ops = {name: sum(e.self_cpu_time_total for e in events if not e.key.startswith(("dnaprior::", "Optimizer"))
                     and any(p in e.key.lower() for p in pats)) / 1e6 for name, pats in OP_GROUPS.items()}
    op_total = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::")) / 1e6
    op_rows = [[name, fmt_sig(s), fmt(100 * s / wall, 1)] for name, s in ops.items()]
    op_rows.append(["all aten ops (self time)", fmt_sig(op_total), fmt(100 * op_total / wall, 1)])
    cap = f" (max_iters {args.profile_iters})" if fits_network(prior) else ""
    head = (f"One default-preset run of {scan.name} ({scan.shape_str}) with `prior={prior!r}`: {iters} network "
            f"iterations{cap}, {wall:.2f} s under the profiler.")
    return "\n\n".join([
        head, "By part of the loop (wall time of labelled spans):",
        markdown_table(["part", "seconds", "% of wall"], rows),
        "By op (self time of the ops, forward and backward together):",
        markdown_table(["ops", "seconds", "% of wall"], op_rows),
    ])


# ------------------------------------------------------------------------------------------------------- report


def results_table(ms: list[Measurement]) -> str:
    refs = {m.case: m for m in ms if m.method in ("BM3D", "BM4D")}
    rows = []
    for m in ms:
        ref = refs.get(m.case)
        rows.append([m.case, m.shape, m.method, fmt_sig(m.seconds), fmt(m.iterations), fmt(m.psnr),
                     fmt(m.psnr - ref.psnr) if ref else "", fmt_sig(m.seconds / ref.seconds) if ref else "",
                     fmt(m.peak_mib, 0) + ("" if m.memory_kind.startswith("CPU") else " (CUDA)")])
    headers = ["case", "size", "method", "seconds", "iterations", "PSNR (dB)", "ΔPSNR vs BM3D/BM4D (dB)",
               "time / BM3D/BM4D", "peak memory (MiB)"]
    return markdown_table(headers, rows)


def speedup_table(ms: list[Measurement]) -> str:
    rows = []
    for case in dict.fromkeys(m.case for m in ms):
        by = {m.method: m for m in ms if m.case == case}
        dip = next((m for k, m in by.items() if k.startswith("plain DIP")), None)
        default = by.get("DNA-Prior default")
        if dip and default:
            rows.append([case, fmt_sig(dip.seconds), fmt_sig(default.seconds), fmt_sig(dip.seconds / default.seconds),
                         fmt(default.psnr - dip.psnr)])
    headers = ["case", "plain DIP s", "DNA-Prior default s", "speedup (x)", "ΔPSNR default - DIP (dB)"]
    return markdown_table(headers, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder (default ./bench_out)")
    p.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder of the shared NIfTI scans")
    p.add_argument("--prior", default="auto", help="DNA-Prior's prior: auto (the filter), filter, network or "
                   "network+filter (default auto)")
    p.add_argument("--max-iters", type=int, default=None,
                   help="cap the network's iterations where --prior fits one (smoke tests only)")
    p.add_argument("--dip-iters", type=int, default=2500, help="iterations of the plain DIP baseline")
    p.add_argument("--profile-iters", type=int, default=300, help="max_iters of the profiled run's network, if any")
    p.add_argument("--no-profile", action="store_true", help="skip the profile")
    p.add_argument("--cases", default=None, help=f"comma-separated substrings of {', '.join(CASES)}")
    p.add_argument("--methods", default=None, help="comma-separated substrings of the method names to run")
    p.add_argument("--device", default=None, help="device of DNA-Prior and DIP (default: CUDA when available)")
    p.add_argument("--worker", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    args.out.mkdir(parents=True, exist_ok=True)
    scans = load_scans(args.data_dir, list(CASES), args.cases.split(",") if args.cases else None)
    ms: list[Measurement] = []
    for scan in scans:
        for method in methods_for(scan, args):
            print(f"  {scan.name} / {method} ...", end="", file=sys.stderr, flush=True)
            ms.append(measure(scan.name, method, args))
            print(f" {ms[-1].psnr:.2f} dB in {ms[-1].seconds:.1f} s", file=sys.stderr, flush=True)
    parts = [
        "# DNA-Prior speed benchmark",
        (
            f"Machine: {machine_summary()}. Gaussian noise sigma 0.1 (fixed seed). One fresh process per method, "
            "warmed up by one tiny run. Peak memory: the growth of the process's peak resident set during the call "
            "(CPU), or `torch.cuda.max_memory_allocated` (marked CUDA). Reference: BM3D in 2D, BM4D for the volume."
        ),
        results_table(ms),
        "Default preset against the plain Deep Image Prior recipe:",
        speedup_table(ms),
    ]
    two_d = [s for s in scans if not s.is_volume]
    if not args.no_profile and two_d:
        what = ("The default as it comes (`prior=\"auto\"`: the filter, no network):" if args.prior == "auto"
                else f"With `prior={args.prior!r}`:")
        parts += ["## Where the time goes", what, profile_fit(two_d[0], args, args.prior)]
    text = "\n\n".join(parts) + "\n"
    (args.out / "speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
