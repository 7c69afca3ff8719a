"""The trainer contract: ``Trainer(**settings).fit(model, data, progress=True) -> Fit``.

The same shape as the engines' (``Engine(**settings).fit(model, x, y) -> Posterior``): every
setting goes to ``__init__`` (checked there, so a bad one fails before any work), the model and
data go to :meth:`Trainer.fit`, and the result is a :class:`~inference.training.fit.Fit`. The
settings every optimisation shares — steps, optimiser, learning rate and schedule, clipping,
mixed precision, minibatch size, seed, checkpointing — live on this base class, which runs them
through the one loop (:func:`inference.training.loop.optimize`); a subclass adds its own
settings and says, in ``fit``, what the loss is and what the batches are.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from inference.checks import Configurable, check_choice, check_float, check_int, check_name_or_callable, positive_float
from inference.training.checkpoint import Checkpoint
from inference.training.fit import Fit
from inference.training.loop import OPTIMIZERS, SCHEDULES, LoopResult, optimize

__all__ = ["Trainer"]


class Trainer(Configurable, ABC):
    """Base class of training procedures that return a point estimate.

    Args:
        num_steps: optimiser steps.
        optimizer: a name from :data:`~inference.training.loop.OPTIMIZERS`, an optimiser class
            or a callable ``params -> Optimizer``.
        lr: (peak) learning rate.
        weight_decay: the optimiser's weight decay.
        schedule: ``None``/``"constant"``, ``"cosine"``, ``"warmup_cosine"``, ``"exponential"``
            or a callable ``optimizer -> LRScheduler``.
        warmup_steps: warm-up of ``"warmup_cosine"`` (default 10% of ``num_steps``).
        clip: maximum gradient norm (``None``: none).
        amp: mixed precision on CUDA.
        batch_size: rows (or tasks) per step, where the trainer takes minibatches.
        seed: seeds the whole fit (``None``: drawn from torch's global generator); the caller's
            random state is left as it was.
        checkpoint_path: a safetensors file to checkpoint to and resume from.
        checkpoint_every: checkpoint period in steps (0: only at the end).
        resume: continue from ``checkpoint_path`` when it exists.
        callback: ``callback(step, metrics)`` after every step (``step`` from 1, ``metrics`` the
            step's history entries), e.g. for logging or to stop early by raising.
    """

    def __init__(self, num_steps: int = 1000, *, optimizer: str | Callable[..., Any] = "adam", lr: float = 1e-3,
                 weight_decay: float = 0.0, schedule: str | Callable[..., Any] | None = None,
                 warmup_steps: int | None = None, clip: float | None = None, amp: bool = False,
                 batch_size: int | None = None, seed: int | None = None,
                 checkpoint_path: str | Path | None = None, checkpoint_every: int = 0, resume: bool = True,
                 callback: Callable[[int, dict[str, float]], None] | None = None) -> None:
        self.num_steps = check_int(num_steps, "num_steps")
        self.optimizer = check_name_or_callable(optimizer, "optimizer", OPTIMIZERS, "params -> Optimizer")
        self._optimizer = optimizer
        self.lr = positive_float(lr, "lr")
        self.weight_decay = check_float(weight_decay, "weight_decay", 0.0)
        if isinstance(schedule, str):
            check_choice(schedule, "schedule", SCHEDULES)
        elif schedule is not None and not callable(schedule):
            raise TypeError(f"schedule must be a name, None or a callable, got {type(schedule).__name__}")
        self.schedule = schedule if schedule is None or isinstance(schedule, str) else "custom"
        self._schedule = schedule
        self.warmup_steps = None if warmup_steps is None else check_int(warmup_steps, "warmup_steps", 0)
        self.clip = None if clip is None else positive_float(clip, "clip")
        self.amp = bool(amp)
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size")
        self.seed = None if seed is None else int(seed)
        self.checkpoint_path = None if checkpoint_path is None else str(checkpoint_path)
        self.checkpoint_every = check_int(checkpoint_every, "checkpoint_every", 0)
        self.resume = bool(resume)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable (step, metrics) -> None, got {type(callback).__name__}")
        self._callback = callback

    @abstractmethod
    def fit(self, model: Any, data: Any = None, progress: bool = True) -> Fit:
        """Train ``model`` on ``data`` and return the :class:`Fit`."""

    # ------------------------------------------------------------------ for subclasses
    #: Settings that do not change the numbers (where and how often to checkpoint): a run may
    #: resume with other values of these.
    _bookkeeping = ("checkpoint_path", "checkpoint_every", "resume")

    def _numeric_settings(self) -> dict[str, Any]:
        """The settings a checkpoint must match to be resumed from."""
        return {k: v for k, v in self.settings().items() if k not in self._bookkeeping}

    def _checkpoint(self) -> Checkpoint | None:
        if self.checkpoint_path is None:
            return None
        return Checkpoint(self.checkpoint_path, self.checkpoint_every, self.resume)

    def _optimize(self, modules: nn.Module | Mapping[str, nn.Module], loss_fn: Callable[..., Any], *,
                  batches: Any = None, params: Iterable[Tensor] | Iterable[dict[str, Any]] | None = None,
                  progress: bool = True, desc: str | None = None, **loop: Any) -> LoopResult:
        """Run :func:`~inference.training.loop.optimize` with this trainer's settings (``loop``
        overrides or adds loop arguments, e.g. ``generators``, ``meta``, ``backward``)."""
        # Explicit even when 0: AdamW's own default is 0.01. L-BFGS and callables take none.
        named = isinstance(self._optimizer, str) or isinstance(self._optimizer, type)
        options = {"weight_decay": self.weight_decay} if named and self._optimizer != "lbfgs" else {}
        kwargs: dict[str, Any] = dict(
            batches=batches, params=params, optimizer=self._optimizer, lr=self.lr, optimizer_options=options,
            schedule=self._schedule, warmup_steps=self.warmup_steps, clip=self.clip, amp=self.amp,
            checkpoint=self._checkpoint(), settings=self._numeric_settings(), progress=progress,
            callback=self._callback,
            desc=desc or type(self).__name__)
        kwargs.update(loop)
        return optimize(modules, loss_fn, self.num_steps, **kwargs)

    def _record(self, result: LoopResult, seed: int, **attrs: Any) -> dict[str, Any]:
        """``Fit.attrs``: trainer name, settings, seed, wall time, resume point, plus ``attrs``."""
        return {"trainer": type(self).__name__, **self.settings(), "seed": seed, "seconds": result.seconds,
                "resumed_from": result.start, "skipped_steps": result.skipped, **attrs}

