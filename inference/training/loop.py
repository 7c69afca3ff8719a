"""The one optimisation loop every trainer (and every optimising engine) runs.

:func:`optimize` takes a loss function and what to feed it each step, and does the rest the
same way for everyone: an optimiser and a learning-rate schedule from ``torch.optim``,
gradient-norm clipping, mixed precision on CUDA (``torch.amp``: bf16 where supported, else
fp16 with a gradient scaler), minibatches from tensors, a ``DataLoader`` or a stream,
closure optimisers (L-BFGS), atomic safetensors checkpoints with bit-exact resume
(:mod:`inference.training.checkpoint`), a stop at a non-finite loss whose message names the
fix, a tqdm bar, and a per-step history of the loss and any metric the loss function reports.
It seeds nothing itself: trainers seed through :func:`inference.seeding.seeded` around model
construction and the loop together, so one seed fixes both.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from inference.checks import check_choice, check_float, check_int, positive_float
from inference.seeding import rng_state, set_rng_state
from inference.training.checkpoint import Checkpoint

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "LoopResult",
    "Minibatches",
    "amp_settings",
    "lr_factor",
    "make_optimizer",
    "make_schedule",
    "optimize",
]

#: Optimisers by name (``torch.optim`` classes).
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "lbfgs": torch.optim.LBFGS,
}

#: Learning-rate schedules by name: none, cosine decay to 0 over the run, linear warm-up then
#: cosine decay (the PFN's), exponential decay to ``final_lr`` at the last step.
SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential")

#: Weight of the newest loss in the running average the progress bar shows.
RUNNING_WEIGHT = 0.02


def lr_factor(step: int, num_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup_steps``, then cosine to 0 at ``num_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, num_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(params: Iterable[Tensor] | Iterable[dict[str, Any]],
                   optimizer: str | Callable[..., torch.optim.Optimizer] = "adam", lr: float = 1e-3,
                   **options: Any) -> torch.optim.Optimizer:
    """An optimiser over ``params`` (tensors or parameter groups).

    Args:
        optimizer: a name from :data:`OPTIMIZERS`, a ``torch.optim.Optimizer`` subclass, or a
            callable ``params -> Optimizer`` (then ``lr`` and ``options`` are not used).
        lr: learning rate; ``options`` go to the optimiser (``weight_decay``, ``betas``, ...).
    """
    params = list(params)
    if not params:
        raise ValueError("there are no parameters to optimise (all have requires_grad=False?)")
    if isinstance(optimizer, str):
        cls = OPTIMIZERS[check_choice(optimizer, "optimizer", OPTIMIZERS)]
        return cls(params, lr=positive_float(lr, "lr"), **options)
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer(params, lr=positive_float(lr, "lr"), **options)
    if not callable(optimizer):
        raise TypeError(f"optimizer must be a name, an Optimizer class or a callable params -> Optimizer, got "
                        f"{type(optimizer).__name__}")
    opt = optimizer(params)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer must build a torch.optim.Optimizer, got {type(opt).__name__}")
    return opt


def make_schedule(optimizer: torch.optim.Optimizer, schedule: str | Callable[..., Any] | None, num_steps: int,
                  warmup_steps: int | None = None, final_lr: float | None = None) -> Any:
    """A ``torch.optim.lr_scheduler`` for ``num_steps`` steps, or ``None`` for a constant rate.

    Args:
        schedule: a name from :data:`SCHEDULES`, ``None`` (constant) or a callable
            ``optimizer -> LRScheduler``.
        warmup_steps: warm-up length of ``"warmup_cosine"`` (default: 10% of the run).
        final_lr: the last step's rate under ``"exponential"`` (default: a tenth of the first).
    """
    if schedule is None or schedule == "constant":
        return None
    if callable(schedule):
        return schedule(optimizer)
    check_choice(schedule, "schedule", SCHEDULES)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_steps)
    if schedule == "warmup_cosine":
        warm = max(1, num_steps // 10) if warmup_steps is None else max(1, check_int(warmup_steps, "warmup_steps", 0))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, num_steps, warm))
    first = optimizer.param_groups[0]["lr"]
    last = first * 0.1 if final_lr is None else check_float(final_lr, "final_lr", 0.0, first, low_open=True)
    gamma = (last / first) ** (1.0 / max(num_steps - 1, 1))
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)


def amp_settings(device: torch.device, amp: bool) -> tuple[torch.dtype | None, bool]:
    """Autocast dtype (``None``: off) and whether a gradient scaler is needed. Mixed precision
    runs on CUDA only: bf16 where the GPU has it (no scaler needed), else fp16 with a scaler."""
    if not amp or device.type != "cuda":
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


class Minibatches:
    """Endless minibatches of rows of tensors, in a fresh random order every epoch.

    Each epoch is a permutation drawn with ``generator`` (a CPU generator, so the order does not
    depend on the device); an epoch ends when fewer than ``batch_size`` rows are left (those
    rows wait for a later epoch, as with ``drop_last=True``). With ``batch_size`` equal to the
    number of rows every batch is the whole data, unshuffled. The position in the epoch and the
    generator travel through checkpoints (:meth:`state_dict`), so a resumed run sees the same
    batches.

    Args:
        tensors: tensors with the same number of rows ``N``.
        batch_size: rows per batch, ``1 <= batch_size <= N`` (``None``: all rows).
        generator: the shuffling stream (default: a new CPU generator seeded from torch's global one).
    """

    def __init__(self, *tensors: Tensor, batch_size: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        if not tensors or not all(isinstance(t, Tensor) for t in tensors):
            raise TypeError("Minibatches needs one or more tensors")
        n = tensors[0].shape[0] if tensors[0].dim() else 0
        if n < 1 or any(t.dim() == 0 or t.shape[0] != n for t in tensors):
            raise ValueError(f"the tensors must share a first dimension N >= 1, got shapes "
                             f"{[tuple(t.shape) for t in tensors]}")
        self.tensors = tensors
        self.num_rows = n
        self.batch_size = n if batch_size is None else check_int(batch_size, "batch_size", 1, n)
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        self.generator = generator
        self._perm: Tensor | None = None
        self._pos = 0

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        return self

    def __next__(self) -> tuple[Tensor, ...]:
        if self.batch_size == self.num_rows:
            return self.tensors
        if self._perm is None or self._pos + self.batch_size > self.num_rows:
            self._perm, self._pos = torch.randperm(self.num_rows, generator=self.generator), 0
        idx = self._perm[self._pos:self._pos + self.batch_size].to(self.tensors[0].device)
        self._pos += self.batch_size
        return tuple(t[idx] for t in self.tensors)

    def state_dict(self) -> dict[str, Tensor]:
        """Generator state, current permutation and position (tensors, for safetensors)."""
        perm = torch.arange(0) if self._perm is None else self._perm
        return {"generator": self.generator.get_state(), "perm": perm, "pos": torch.tensor(self._pos)}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.generator.set_state(state["generator"].clone())
        self._perm = None if state["perm"].numel() == 0 else state["perm"].clone()
        self._pos = int(state["pos"])


class _BatchState(nn.Module):
    """Carries a :class:`Minibatches`' position through a checkpoint like a module's state."""

    def __init__(self, batches: Minibatches) -> None:
        super().__init__()
        self.batches = batches

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:  # type: ignore[override]
        return self.batches.state_dict()

    def load_state_dict(self, state: Mapping[str, Tensor], strict: bool = True, assign: bool = False) -> Any:
        self.batches.load_state_dict(state)


def _batch_source(batches: Any) -> Callable[[int], Any]:
    """``step -> batch`` from ``None`` (no batch), a callable, or a (re-iterable) iterable."""
    if batches is None:
        return lambda step: None
    if callable(batches) and not isinstance(batches, (DataLoader, Minibatches)):
        return batches
    if not isinstance(batches, Iterable):
        raise TypeError(f"batches must be None, a callable step -> batch, a DataLoader or an iterable, got "
                        f"{type(batches).__name__}")
    it: list[Iterator[Any]] = [iter(batches)]

    def draw(step: int) -> Any:
        try:
            return next(it[0])
        except StopIteration:  # a DataLoader's epoch ended: start the next one
            it[0] = iter(batches)
            try:
                return next(it[0])
            except StopIteration:
                raise ValueError("batches yielded nothing (an empty DataLoader or iterable)") from None

    return draw


@dataclass
class LoopResult:
    """What :func:`optimize` returns.

    Attributes:
        history: per-step ``"loss"`` and every metric the loss function reported, ``[num_steps]``
            float64 each (NaN at skipped steps).
        seconds: wall time of the run, earlier runs of a resumed one included.
        start: the step the run started from (0, or the checkpoint's step when it resumed).
        skipped: steps skipped for a non-finite loss or gradient.
    """

    history: dict[str, Tensor]
    seconds: float
    start: int
    skipped: int


def _nonfinite_message(value: float, step: int, desc: str, lr: float, clip: float | None,
                       checkpoint: Checkpoint | None) -> str:
    fixes = [f"lower lr (now {lr:.3g})"]
    if clip is None:
        fixes.append("clip gradients (clip=1.0)")
    fixes.append("or train in float64")
    where = f"; the last checkpoint ({checkpoint.path}) is intact" if checkpoint is not None else ""
    return f"{desc}: the loss became {value} at step {step}: {', '.join(fixes)}{where}"


def optimize(modules: nn.Module | Mapping[str, nn.Module], loss_fn: Callable[..., Any], num_steps: int, *,
             batches: Any = None, params: Iterable[Tensor] | Iterable[dict[str, Any]] | None = None,
             optimizer: str | Callable[..., torch.optim.Optimizer] = "adam", lr: float = 1e-3,
             optimizer_options: Mapping[str, Any] | None = None, schedule: str | Callable[..., Any] | None = None,
             warmup_steps: int | None = None, final_lr: float | None = None, clip: float | None = None,
             amp: bool = False, backward: bool = True, skip_nonfinite: float = 0.0,
             checkpoint: Checkpoint | None = None, generators: Mapping[str, torch.Generator] | None = None,
             settings: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None,
             progress: bool = True, desc: str = "train",
             callback: Callable[[int, dict[str, float]], None] | None = None) -> LoopResult:
    """Minimise ``loss_fn`` for ``num_steps`` optimiser steps.

    Each step: draw the step's batch, zero the gradients, ``loss_fn(batch)`` (``loss_fn()`` when
    ``batches`` is ``None``) under autocast when ``amp``, check the loss is finite, backward,
    unscale and clip, step the optimiser and the schedule, record, checkpoint when due, call
    ``callback(step, metrics)``.

    Args:
        modules: what is trained: a module, or named modules (e.g. a model and its adaptive
            vectors); all of their states are checkpointed.
        loss_fn: ``batch -> loss`` or ``batch -> (loss, {name: value})``; the extra values
            (floats or 0-d tensors) join the history. With a closure optimiser (L-BFGS) it is
            called inside the closure, as often as the optimiser needs.
        num_steps: optimiser steps (a resumed run continues to this total).
        batches: ``None``, a callable ``step -> batch`` (a stream, e.g. fresh draws from a task
            prior), a :class:`Minibatches` (its position is checkpointed) or any iterable such as
            a ``DataLoader`` (restarted when it runs out; a resumed run restarts its epoch).
        params: tensors or parameter groups to optimise (default: every parameter of
            ``modules`` with ``requires_grad``).
        optimizer, lr, optimizer_options: see :func:`make_optimizer`.
        schedule, warmup_steps, final_lr: see :func:`make_schedule`.
        clip: maximum gradient norm (``None``: no clipping).
        amp: mixed precision on CUDA (ignored on the CPU).
        backward: ``False`` when ``loss_fn`` accumulates the gradients itself (e.g. SLTT's
            per-time-step backward passes) and returns a detached loss.
        skip_nonfinite: the largest fraction of steps that may be skipped (no optimiser step,
            NaN recorded) for a non-finite loss or gradient before the run stops; 0 stops at
            the first.
        checkpoint: where to save and resume from (``None``: no checkpoints).
        generators: the run's own random generators (e.g. a data stream's), saved with torch's,
            NumPy's and Python's global ones in every checkpoint.
        settings: JSON-friendly settings recorded in the checkpoint; resuming with others is refused.
        meta: more JSON-friendly entries for the checkpoint's metadata (e.g. a model config).
        progress: show a tqdm bar (rank 0 only under ``torch.distributed``).
        desc: the bar's label and the name in error messages.
        callback: ``callback(step, metrics)`` after each step (and after its checkpoint), with
            ``step`` counted from 1.

    Returns:
        A :class:`LoopResult`.

    Raises:
        FloatingPointError: the loss (or, while skipping is allowed, a gradient) became
            non-finite more often than ``skip_nonfinite`` allows; the message names the fix.
        ValueError: bad settings, or a checkpoint written with other settings.
    """
    from inference.training.checkpoint import distributed_context

    named = {"module": modules} if isinstance(modules, nn.Module) else dict(modules)
    if not named or not all(isinstance(m, nn.Module) for m in named.values()):
        raise TypeError("modules must be an nn.Module or a mapping of names to nn.Modules")
    num_steps = check_int(num_steps, "num_steps")
    skip_nonfinite = check_float(skip_nonfinite, "skip_nonfinite", 0.0, 1.0)
    clip = None if clip is None else positive_float(clip, "clip")
    if params is None:
        params = [p for m in named.values() for p in m.parameters() if p.requires_grad]
    opt = make_optimizer(params, optimizer, lr, **dict(optimizer_options or {}))
    tensors = [p for g in opt.param_groups for p in g["params"]]
    device = tensors[0].device
    scheduler = make_schedule(opt, schedule, num_steps, warmup_steps, final_lr)
    amp_dtype, needs_scaler = amp_settings(device, amp)
    if needs_scaler and not backward:
        raise ValueError("amp with a gradient scaler needs the loop to run backward (backward=True)")
    scaler = torch.amp.GradScaler("cuda") if needs_scaler else None
    closure_opt = isinstance(opt, torch.optim.LBFGS)
    gens = dict(generators or {})
    draw = _batch_source(batches)
    saved = dict(named)
    if isinstance(batches, Minibatches):
        saved["batches"] = _BatchState(batches)
        gens.pop("batches", None)
    gen_list = [gens[k] for k in sorted(gens)]
    settings = dict(settings or {})
    history: dict[str, list[float]] = {"loss": []}
    start, seconds_before = 0, 0.0
    if checkpoint is not None:
        checkpoint.clean()
        restored = checkpoint.load(saved, opt, scheduler, scaler, settings)
        if restored is not None:
            start, history, rng, saved_meta = restored
            set_rng_state(rng, gen_list, device)
            seconds_before = float(saved_meta.get("seconds", 0.0))
    rank = distributed_context()[0]
    bar = tqdm(total=num_steps, initial=start, disable=not progress or rank != 0, desc=desc, leave=False)
    skipped = sum(math.isnan(v) for v in history["loss"])
    running: float | None = None
    t0 = time.perf_counter()

    def evaluate(batch: Any) -> tuple[Tensor, dict[str, Any]]:
        autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            out = loss_fn() if batches is None else loss_fn(batch)
        loss, metrics = (out if isinstance(out, tuple) else (out, {}))
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise TypeError(f"{desc}: loss_fn must return a scalar tensor (or (loss, metrics)), got "
                            f"{type(loss).__name__}")
        return loss, dict(metrics)

    for step in range(start, num_steps):
        batch = draw(step)
        opt.zero_grad(set_to_none=True)
        metrics: dict[str, Any] = {}
        if closure_opt:
            first: list[Any] = []

            def closure(batch: Any = batch, step: int = step, first: list[Any] = first) -> Tensor:
                opt.zero_grad(set_to_none=True)
                loss, extra = evaluate(batch)
                if not bool(torch.isfinite(loss)):
                    raise FloatingPointError(_nonfinite_message(float(loss), step, desc, opt.param_groups[0]["lr"],
                                                                clip, checkpoint))
                loss.backward()
                if not first:
                    first.append((loss.detach(), extra))
                return loss

            opt.step(closure)
            loss, metrics = first[0]
            finite = True
        else:
            loss, metrics = evaluate(batch)
            finite = bool(torch.isfinite(loss))
            if finite and backward:
                (scaler.scale(loss) if scaler is not None else loss).backward()
            if finite:
                if scaler is not None:
                    scaler.unscale_(opt)
                if clip is not None:
                    norm = torch.nn.utils.clip_grad_norm_(tensors, clip)
                    finite = scaler is not None or skip_nonfinite == 0.0 or bool(torch.isfinite(norm))
                elif skip_nonfinite > 0.0:
                    finite = all(bool(torch.isfinite(p.grad).all()) for p in tensors if p.grad is not None)
            if finite:
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
            else:
                skipped += 1
                if skipped > skip_nonfinite * num_steps:
                    lr_now = opt.param_groups[0]["lr"]
                    message = _nonfinite_message(float(loss.detach()), step, desc, lr_now, clip, checkpoint)
                    if skip_nonfinite > 0.0:
                        message += f" ({skipped} of {step + 1} steps were not finite; at most " \
                                   f"{skip_nonfinite:.0%} may be skipped)"
                    raise FloatingPointError(message)
                opt.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        value = float(loss.detach()) if finite else math.nan
        history["loss"].append(value)
        for name, v in metrics.items():
            history.setdefault(name, [math.nan] * (len(history["loss"]) - 1)).append(float(v))
        if finite:
            running = value if running is None else (1 - RUNNING_WEIGHT) * running + RUNNING_WEIGHT * value
        bar.update(1)
        if running is not None:
            bar.set_postfix(loss=f"{running:.4g}", lr=f"{opt.param_groups[0]['lr']:.2e}", refresh=False)
        done = step + 1
        if checkpoint is not None and checkpoint.due(done, num_steps):
            seconds = seconds_before + time.perf_counter() - t0
            checkpoint.write(saved, opt, scheduler, scaler, rng_state(gen_list, device), device, done, history,
                             {"settings": settings, "seconds": seconds, **dict(meta or {})})
        if callback is not None:
            callback(done, {k: v[-1] for k, v in history.items()})
    bar.close()
    opt.zero_grad(set_to_none=True)  # leave no stale gradients on the fitted parameters
    return LoopResult({k: torch.tensor(v, dtype=torch.float64) for k, v in history.items()},
                      seconds_before + time.perf_counter() - t0, start, skipped)
