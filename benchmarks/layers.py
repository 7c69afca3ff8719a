"""Forward+backward time and peak memory of the ``bayesnets.nn`` layers vs their standard peers (issue 13).

Each row of :data:`ROWS` pairs a component with the ``torch.nn`` layer it replaces, at a
realistic size, and both are measured in this process, on the same device, with the same
input: one training step's forward and backward (input gradient included; gradients are
dropped after each step, as ``zero_grad()`` does before the next).

* **time**: median of ``torch.utils.benchmark.Timer.blocked_autorange`` (which synchronises
  CUDA), after warm-up.
* **peak memory**: the extra memory one step needs on top of what was allocated before it
  (parameters, input).

  - GPU: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
    ``memory_allocated()`` before the step.
  - CPU (Linux): the process's peak resident set (``VmHWM``), reset through
    ``/proc/self/clear_refs`` right before the step, minus its resident set then. glibc's
    mmap threshold is pinned to 64 KiB (``mallopt``) so that freed tensor buffers go back to
    the OS and the next step's peak is visible. ``tracemalloc`` cannot be used: it only sees
    Python's allocator, not torch's C++ one; ``resource.getrusage`` gives a high-water mark
    that cannot be reset. Other platforms print ``n/a``.

Adding a row: append a :class:`Row` to ``ROWS`` whose ``make_component`` /
``make_baseline`` take ``(device, dtype)`` and return a zero-argument callable that runs
one step; :func:`forward_backward` builds that callable for the usual ``module(*inputs)``.

Usage::

    python benchmarks/layers.py                      # every row, CPU (and CUDA when present)
    python benchmarks/layers.py --device cpu --rows PowerNorm
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.benchmark as tbench
from torch import Tensor, nn

from bayesnets.nn import (
    BandlimitedRandomFeatures,
    BiPerConv2d,
    BiPerLinear,
    MgConv2d,
    PolyNorm,
    PolyReLU,
    PowerNorm,
    SNNKLinear,
    SpikingMLP,
)
from inference.training import bptt_step, sltt_step

Step = Callable[[], Any]
Maker = Callable[[torch.device, torch.dtype], Step]

#: glibc mallopt parameter number of M_MMAP_THRESHOLD (malloc.h).
M_MMAP_THRESHOLD = -3
#: Allocations at least this large are mmapped, hence returned to the OS when freed.
MMAP_THRESHOLD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Row:
    """One comparison: a component and its standard peer on the same input size."""

    name: str
    baseline: str
    size: str
    make_component: Maker
    make_baseline: Maker


def forward_backward(make_module: Callable[[], nn.Module], make_inputs: Callable[[torch.device, torch.dtype], tuple],
                     **kwargs: Any) -> Maker:
    """A :data:`Maker` for ``module(*inputs, **kwargs)`` followed by ``output.sum().backward()``.

    Floating inputs require grad (the layer sits inside a network). ``kwargs`` may hold
    callables ``(inputs) -> value`` for keyword arguments built from the inputs.
    """

    def make(device: torch.device, dtype: torch.dtype) -> Step:
        module = make_module().to(device=device, dtype=dtype).train()
        inputs = tuple(t.requires_grad_() if t.is_floating_point() else t for t in make_inputs(device, dtype))
        kw = {k: (v(inputs) if callable(v) else v) for k, v in kwargs.items()}
        params = list(module.parameters())

        def step() -> None:
            module(*inputs, **kw).sum().backward()
            # Gradients are dropped after the step (as zero_grad() would before the next),
            # so that the memory before a step holds no stale gradients.
            for t in (*params, *inputs):
                t.grad = None

        return step

    return make


# ---------------------------------------------------------------------------------- sizes
# A transformer-base activation: batch 16, 128 tokens, width 512, FFN width 2048.
BATCH, TOKENS, WIDTH, FFN = 16, 128, 512, 2048
# A ResNet-18 (CIFAR) first-stage convolution: batch 32, 64 channels, 32 x 32, 3 x 3.
CONV_BATCH, CONV_CH, CONV_HW = 32, 64, 32


def _tokens(device: torch.device, dtype: torch.dtype) -> tuple[Tensor]:
    return (torch.randn(BATCH, TOKENS, WIDTH, device=device, dtype=dtype),)


def _pad_like(x: Tensor) -> Tensor:
    # Realistic padding: sequence lengths spread evenly between half and full length.
    lengths = torch.linspace(x.shape[1] // 2, x.shape[1], x.shape[0], device=x.device).long()
    return torch.arange(x.shape[1], device=x.device) >= lengths[:, None]


def _rows_of_tokens(device: torch.device, dtype: torch.dtype) -> tuple[Tensor]:
    return (torch.randn(BATCH * TOKENS, WIDTH, device=device, dtype=dtype),)


def _ffn_hidden(device: torch.device, dtype: torch.dtype) -> tuple[Tensor]:
    return (torch.randn(BATCH * TOKENS, FFN, device=device, dtype=dtype),)


def _images(device: torch.device, dtype: torch.dtype) -> tuple[Tensor]:
    return (torch.randn(CONV_BATCH, CONV_CH, CONV_HW, CONV_HW, device=device, dtype=dtype),)


ROWS: list[Row] = [
    Row("PowerNorm (masked)", "LayerNorm", f"[{BATCH}, {TOKENS}, {WIDTH}]",
        forward_backward(lambda: PowerNorm(WIDTH, warmup_iters=0), _tokens,
                         pad_mask=lambda inputs: _pad_like(inputs[0])),
        forward_backward(lambda: nn.LayerNorm(WIDTH), _tokens)),
    Row("PowerNorm", "BatchNorm1d", f"[{BATCH * TOKENS}, {WIDTH}]",
        forward_backward(lambda: PowerNorm(WIDTH, warmup_iters=0), _rows_of_tokens),
        forward_backward(lambda: nn.BatchNorm1d(WIDTH), _rows_of_tokens)),
    Row("PolyReLU(3)", "GELU", f"[{BATCH * TOKENS}, {FFN}]",
        forward_backward(lambda: PolyReLU(3), _ffn_hidden),
        forward_backward(lambda: nn.GELU(), _ffn_hidden)),
    Row("PolyNorm(3)", "GELU", f"[{BATCH * TOKENS}, {FFN}]",
        forward_backward(lambda: PolyNorm(3), _ffn_hidden),
        forward_backward(lambda: nn.GELU(), _ffn_hidden)),
    Row("BiPerLinear (stage 2)", "Linear", f"[{BATCH * TOKENS}, {WIDTH}] -> {WIDTH}",
        forward_backward(lambda: BiPerLinear(WIDTH, WIDTH, stage=2), _rows_of_tokens),
        forward_backward(lambda: nn.Linear(WIDTH, WIDTH), _rows_of_tokens)),
    Row("BiPerConv2d (stage 2)", "Conv2d", f"[{CONV_BATCH}, {CONV_CH}, {CONV_HW}, {CONV_HW}] 3x3",
        forward_backward(lambda: BiPerConv2d(CONV_CH, CONV_CH, 3, padding=1, stage=2), _images),
        forward_backward(lambda: nn.Conv2d(CONV_CH, CONV_CH, 3, padding=1, bias=False), _images)),
]


# P5, P6, P18, P43 (issue 13, second half) ----------------------------------------------
#: Random features: hidden width of the random network, projections of the SNNK layers.
RF_HIDDEN, SNNK_FEATURES = FFN, 256
#: A spiking MLP at MNIST-like scale: batch 256, 784 inputs, two 1024-unit LIF layers, 10 classes.
SNN_BATCH, SNN_IN, SNN_HIDDEN, SNN_CLASSES = 256, 784, 1024, 10


class _LinearCos(nn.Linear):
    """``cos(x W^T + b)``: the layer a cos-URF SNNK layer replaces."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cos(super().forward(x))


def _spiking_step(train_step: Callable[..., Tensor], num_steps: int) -> Maker:
    """One SLTT / BPTT training step (forward, per-step losses, backward) of the spiking MLP."""

    def make(device: torch.device, dtype: torch.dtype) -> Step:
        net = SpikingMLP(SNN_IN, [SNN_HIDDEN, SNN_HIDDEN], SNN_CLASSES, num_steps=num_steps, v_th=0.5).to(
            device=device, dtype=dtype)
        x = torch.randn(SNN_BATCH, SNN_IN, device=device, dtype=dtype)
        y = torch.randint(0, SNN_CLASSES, (SNN_BATCH,), device=device)

        def step() -> None:
            train_step(net, x, y)
            net.zero_grad(set_to_none=True)

        return step

    return make


ROWS += [
    Row("BandlimitedRF (frozen)", "Linear-tanh", f"[{BATCH * TOKENS}, {WIDTH}] -> {RF_HIDDEN} -> {WIDTH}",
        forward_backward(lambda: BandlimitedRandomFeatures(WIDTH, RF_HIDDEN, 1.0, WIDTH), _rows_of_tokens),
        forward_backward(lambda: nn.Sequential(nn.Linear(WIDTH, RF_HIDDEN), nn.Tanh(), nn.Linear(RF_HIDDEN, WIDTH)),
                         _rows_of_tokens)),
    Row(f"SNNK relu m={SNNK_FEATURES}", "Linear-ReLU", f"[{BATCH * TOKENS}, {WIDTH}] -> {WIDTH}",
        forward_backward(lambda: SNNKLinear(WIDTH, WIDTH, SNNK_FEATURES, "relu"), _rows_of_tokens),
        forward_backward(lambda: nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU()), _rows_of_tokens)),
    Row(f"SNNK cos m={SNNK_FEATURES}", "Linear-cos", f"[{BATCH * TOKENS}, {WIDTH}] -> {WIDTH}",
        forward_backward(lambda: SNNKLinear(WIDTH, WIDTH, SNNK_FEATURES, "cos"), _rows_of_tokens),
        forward_backward(lambda: _LinearCos(WIDTH, WIDTH), _rows_of_tokens)),
    Row("MgConv2d (4 levels)", "Conv2d", f"[{CONV_BATCH}, {CONV_CH}, {CONV_HW}, {CONV_HW}] 3x3",
        forward_backward(lambda: MgConv2d(CONV_CH, CONV_CH, levels=4), _images),
        forward_backward(lambda: nn.Conv2d(CONV_CH, CONV_CH, 3, padding=1, bias=False), _images)),
    *(Row(f"SLTT T={t}", f"BPTT T={t}", f"[{SNN_BATCH}, {SNN_IN}] {SNN_HIDDEN}x2 LIF",
          _spiking_step(sltt_step, t), _spiking_step(bptt_step, t)) for t in (1, 2, 4, 8, 16)),
]


# ------------------------------------------------------------------------------ measuring
def _proc_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))  # type: ignore[union-attr]


def _cpu_memory_supported() -> bool:
    if platform.system() != "Linux":
        return False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _proc_kib("VmHWM")
    except (OSError, AttributeError):
        return False
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        return False
    return True


def peak_memory(step: Step, device: torch.device) -> float | None:
    """Extra bytes at the peak of one ``step()`` over what was allocated before it (None: unknown)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - before)
    if not _CPU_MEMORY:
        return None
    before = _proc_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set to the current one
    step()
    return float(_proc_kib("VmHWM") - before) * 1024


def time_step(step: Step, min_run_time: float) -> float:
    """Median seconds per ``step()``."""
    for _ in range(2):  # warm-up (allocator caches, kernels, one-off initialisation)
        step()
    timer = tbench.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def measure(row: Row, device: torch.device, dtype: torch.dtype, min_run_time: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, make in (("component", row.make_component), ("baseline", row.make_baseline)):
        torch.manual_seed(0)
        step = make(device, dtype)
        step()  # one step first: lazily created buffers (e.g. .grad) are not "peak" work
        out[f"{key}_bytes"] = peak_memory(step, device)
        out[f"{key}_seconds"] = time_step(step, min_run_time)
        del step
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _mib(b: float | None) -> str:
    return "n/a" if b is None else f"{b / 2**20:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b <= 0 else f"{a / b:.2f}"


_CPU_MEMORY = False


def main(argv: list[str] | None = None) -> None:
    global _CPU_MEMORY
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", action="append", help="cpu / cuda (repeatable; default cpu + cuda if present)")
    parser.add_argument("--rows", default="", help="only rows whose component name contains this")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per layer")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16"])
    args = parser.parse_args(argv)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    dtype = getattr(torch, args.dtype)
    _CPU_MEMORY = _cpu_memory_supported()
    rows = [r for r in ROWS if args.rows.lower() in r.name.lower()]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, dtype {args.dtype}")
    header = (f"{'device':<6} {'component':<22} {'peer':<12} {'size':<28} {'ms':>8} {'peer ms':>8} {'x time':>7} "
              f"{'MiB':>8} {'peer MiB':>8} {'x mem':>6}")
    for name in devices:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            print(f"skipping {name}: no CUDA device", file=sys.stderr)
            continue
        if device.type == "cuda":
            print(f"GPU: {torch.cuda.get_device_name(device)}")
        print(header)
        print("-" * len(header))
        for row in rows:
            r = measure(row, device, dtype, args.min_run_time)
            print(f"{device.type:<6} {row.name:<22} {row.baseline:<12} {row.size:<28} "
                  f"{1e3 * r['component_seconds']:>8.2f} {1e3 * r['baseline_seconds']:>8.2f} "
                  f"{_ratio(r['component_seconds'], r['baseline_seconds']):>7} "
                  f"{_mib(r['component_bytes']):>8} {_mib(r['baseline_bytes']):>8} "
                  f"{_ratio(r['component_bytes'], r['baseline_bytes']):>6}", flush=True)
    print("x time / x mem: component / peer (lower is better for the component).")


if __name__ == "__main__":
    main()
