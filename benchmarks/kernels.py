"""Gram-matrix throughput of the depth-3 ReLU NNGP kernel against BoTorch's ``InfiniteWidthBNNKernel`` (issue 5).

Both kernels get the same inputs (``n x n`` Gram of ``n`` points of dimension ``d``, default
2000 x 100) and the same hyperparameters (σ_w² -> ``weight_var``, σ_b² -> ``bias_var``; both
define ``depth`` as the number of hidden layers and the first layer as σ_w² x·x'/d + σ_b²),
set *after* moving to the dtype so neither is rounded through float32. Rows:

* ``K(X, X)`` without autograd — the training Gram (ours computes one block triangle and mirrors it);
* ``K(X, Z)`` without autograd — a cross-covariance (no symmetry to exploit);
* ``K(X, X) + backward`` — forward and backward to both hyperparameters (the GP-fitting path).

Values must agree to 1e-6 (relative, float64) wherever both apply; BoTorch clamps correlations
to ``1 - 1e-7``, which moves entries at x = x' by ~1e-7. Timing: the two kernels alternate,
``--repeats`` times each after a warm-up, and the median is reported as entries per second and as
the ratio ours / BoTorch (> 1 means ours is faster).

Usage::

    python benchmarks/kernels.py                       # CPU (and CUDA when present), float32 + float64
    python benchmarks/kernels.py --threads 1 --n 2000 --dim 100
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from botorch.models.kernels.infinite_width_bnn import InfiniteWidthBNNKernel

from priors.kernels import NNGPKernel

WEIGHT_VARIANCE = 2.0
BIAS_VARIANCE = 0.1
AGREEMENT_TOL = 1e-6


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_pair(run_a: Callable[[], object], run_b: Callable[[], object], repeats: int, device) -> tuple[float, float]:
    """Median seconds of two callables, alternated so that load changes hit both alike."""
    for run in (run_a, run_b):  # warm-up
        run()
    times_a, times_b = [], []
    for _ in range(repeats):
        for run, times in ((run_a, times_a), (run_b, times_b)):
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def _kernels(depth: int, device: torch.device, dtype: torch.dtype) -> tuple[NNGPKernel, InfiniteWidthBNNKernel]:
    ours = NNGPKernel(depth=depth, activation="relu").to(device=device, dtype=dtype)
    ours.weight_variance, ours.bias_variance = WEIGHT_VARIANCE, BIAS_VARIANCE
    theirs = InfiniteWidthBNNKernel(depth=depth).to(device=device, dtype=dtype)
    theirs.weight_var, theirs.bias_var = WEIGHT_VARIANCE, BIAS_VARIANCE
    return ours, theirs


def _gram_and_backward(kernel: torch.nn.Module, x: torch.Tensor) -> None:
    kernel.zero_grad(set_to_none=True)
    kernel(x, x).to_dense().sum().backward()


def run(device: torch.device, dtype: torch.dtype, n: int, dim: int, depth: int, repeats: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    z = torch.randn(n, dim, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    ours, theirs = _kernels(depth, device, dtype)
    with torch.no_grad():
        for name, (a, b) in (("K(X, X)", (x, x)), ("K(X, Z)", (x, z))):
            k_ours, k_theirs = ours(a, b).to_dense(), theirs(a, b).to_dense()
            rel = float(((k_ours - k_theirs).abs() / k_theirs.abs()).max())
            verdict = "ok" if rel < AGREEMENT_TOL or dtype != torch.float64 else "MISMATCH"
            print(f"  agreement {name}: max relative difference {rel:.2e} ({verdict})")
            if verdict == "MISMATCH":
                raise SystemExit(f"kernels disagree beyond {AGREEMENT_TOL} in float64")
    rows = []
    with torch.no_grad():
        rows.append(
            ("K(X, X)", *_time_pair(lambda: ours(x, x).to_dense(), lambda: theirs(x, x).to_dense(), repeats, device))
        )
        rows.append(
            ("K(X, Z)", *_time_pair(lambda: ours(x, z).to_dense(), lambda: theirs(x, z).to_dense(), repeats, device))
        )
    rows.append(
        (
            "K(X, X) + backward",
            *_time_pair(lambda: _gram_and_backward(ours, x), lambda: _gram_and_backward(theirs, x), repeats, device),
        )
    )
    entries = n * n
    print(f"  {'row':<20} {'ours (entries/s)':>18} {'BoTorch (entries/s)':>20} {'ratio':>7}")
    for name, t_ours, t_theirs in rows:
        print(f"  {name:<20} {entries / t_ours:>18.3e} {entries / t_theirs:>20.3e} {t_theirs / t_ours:>6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CPU, then CUDA when present)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    else:
        devices = [torch.device(args.device)]
    print(
        f"NNGP depth-{args.depth} ReLU Gram, {args.n} x {args.n} inputs of dimension {args.dim}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"{platform.processor() or platform.machine()}"
    )
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        for dtype in (torch.float32, torch.float64):
            print(f"{name} {str(dtype).removeprefix('torch.')}:")
            run(device, dtype, args.n, args.dim, args.depth, args.repeats)


if __name__ == "__main__":
    main()
