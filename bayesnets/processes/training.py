"""Meta-training and evaluation of neural processes on a stream of tasks.

:class:`NPTrainer` draws a fresh batch of tasks every step (the "infinite data" setting of the
NP literature's GP benchmarks) and minimises the model's own :meth:`~NeuralProcess.loss` with
Adam and a cosine learning-rate decay (as juho-lee/bnp), in the shared training loop
(:func:`inference.training.loop.optimize`: checkpoints with exact resume, clipping, AMP, a
stop at a non-finite loss). :func:`fit` is its one-call form. :func:`evaluate` reports the
per-point context and target log-likelihoods the literature tabulates. The models are CNP
(arXiv 1807.01613), NP (1807.01622), ANP (1901.05761) and the martingale posterior NP
(P40, arXiv 2304.09431).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from bayesnets.processes.data import TaskBatch, TaskSampler
from bayesnets.processes.models import NeuralProcess
from inference.seeding import base_seed, seeded
from inference.training.fit import Fit
from inference.training.trainer import Trainer

__all__ = ["BATCH_SIZE", "LEARNING_RATE", "NPTrainer", "evaluate", "fit", "log_likelihoods"]

# Adam step size of the NPF/BNP GP configs (yuneg11/Neural-Process-Family, juho-lee/bnp).
LEARNING_RATE = 5e-4
#: Tasks per step unless told otherwise.
BATCH_SIZE = 64


class NPTrainer(Trainer):
    """Meta-train a :class:`NeuralProcess` on fresh tasks every step.

    Each step draws ``batch_size`` tasks from the sampler, on the model's device and in its
    dtype, and takes one optimiser step on ``model.loss(batch)``. The draws come from torch's
    global generator (CPU, or the model's CUDA device), seeded by ``seed`` for the fit and
    carried through checkpoints, so a resumed run sees the same tasks.

    Args:
        num_steps: optimiser steps (one fresh task batch each).
        batch_size: tasks per step.
        lr: initial step size (the NPF/BNP GP configs' 5e-4).
        schedule: decay of the step size (default: cosine to zero over ``num_steps``).
        Other arguments as for :class:`~inference.training.trainer.Trainer` (default optimiser Adam).

    Example:
        >>> fit = NPTrainer(num_steps=1000, batch_size=32, seed=0).fit(MPNP(hidden=64), GPTaskSampler("rbf"))
        >>> fit.history["loss"]        # [1000]
    """

    def __init__(self, num_steps: int = 1000, *, batch_size: int = BATCH_SIZE, lr: float = LEARNING_RATE,
                 schedule: str | Callable[..., Any] | None = "cosine", **loop: Any) -> None:
        super().__init__(num_steps, batch_size=batch_size, lr=lr, schedule=schedule, **loop)

    def fit(self, model: NeuralProcess, tasks: TaskSampler, progress: bool = True) -> Fit:
        """Meta-train ``model`` in place on tasks drawn from ``tasks``.

        Args:
            model: any :class:`NeuralProcess`.
            tasks: a task sampler (e.g. :class:`~bayesnets.processes.data.GPTaskSampler`) with
                ``sample(batch_size, device=..., dtype=...) -> TaskBatch``.
            progress: show a tqdm bar with the running loss.

        Returns:
            A :class:`~inference.training.fit.Fit` of ``model`` with ``history["loss"]``
            (``[num_steps]``, the model's loss per step).
        """
        if not isinstance(model, NeuralProcess):
            raise TypeError(f"model must be a NeuralProcess, got {type(model).__name__}")
        if not callable(getattr(tasks, "sample", None)):
            raise TypeError(f"tasks must be a TaskSampler (sample(batch_size, device=, dtype=) -> TaskBatch), got "
                            f"{type(tasks).__name__}")
        ref = next(model.parameters())
        batch_size = self.batch_size

        def batches(step: int) -> TaskBatch:
            return tasks.sample(batch_size, device=ref.device, dtype=ref.dtype)

        seed = base_seed(self.seed)
        model.train()
        with seeded(seed, like=ref):
            result = self._optimize(model, model.loss, batches=batches, progress=progress,
                                    desc=f"fit {type(model).__name__}")
        model.eval()
        return Fit(model, result.history, self._record(result, seed, model=type(model).__name__))


def fit(model: NeuralProcess, tasks: TaskSampler, num_steps: int = 1000, batch_size: int = BATCH_SIZE,
        lr: float = LEARNING_RATE, seed: int | None = None, progress: bool = True) -> Fit:
    """Meta-train ``model`` in place on tasks drawn from ``tasks``: :class:`NPTrainer` in one call.

    Args:
        model: any :class:`NeuralProcess`.
        tasks: a task sampler (e.g. :class:`~bayesnets.processes.data.GPTaskSampler`); batches are
            drawn on the model's device and in its dtype.
        num_steps: optimisation steps (one fresh batch each).
        batch_size: tasks per step.
        lr: initial Adam step size, decayed to zero with a cosine schedule.
        seed: seeds the task draws and the model's sampling (default: drawn from torch's global
            generator); the caller's random state is restored afterwards.
        progress: show a tqdm bar with the running loss.

    Returns:
        The :class:`~inference.training.fit.Fit`; ``fit.history["loss"]`` is the loss at every
        step, ``[num_steps]`` (this function returned that tensor before it returned the fit).
    """
    return NPTrainer(num_steps, batch_size=batch_size, lr=lr, seed=seed).fit(model, tasks, progress=progress)


def log_likelihoods(model: NeuralProcess, batch: TaskBatch, num_samples: int | None = None) -> dict[str, Tensor]:
    """Per-task mean per-point predictive log-likelihoods of the context and target points.

    Both come from one prediction at all inputs given the context (so the function draws are
    shared), each point scored by the ``K``-draw mixture :meth:`NPPredictive.log_prob`.

    Returns:
        ``{"context": [B], "target": [B]}`` (``"context"`` is NaN for an empty context).
    """
    cx, cy, x, y, _ = model.check_inputs(batch.context_x, batch.context_y, batch.x, batch.y)
    with torch.no_grad():
        lp = model.predict(cx, cy, x, num_samples=num_samples).log_prob(y)
    nc = batch.context_x.shape[-2]
    return {"context": lp[..., :nc].mean(-1), "target": lp[..., nc:].mean(-1)}


def evaluate(model: NeuralProcess, tasks: Iterable[TaskBatch], num_samples: int | None = None,
             seed: int = 0) -> dict[str, float]:
    """Mean context and target log-likelihood per point over a test set.

    Args:
        model: a trained :class:`NeuralProcess`.
        tasks: task batches (e.g. :func:`~bayesnets.processes.data.gp_test_set`).
        num_samples: function draws per prediction (default the model's).
        seed: seeds the model's function draws; the caller's random state is restored.

    Returns:
        ``{"context_ll": float, "target_ll": float}`` averaged over all tasks.
    """
    model.eval()
    ref = next(model.parameters())
    ctx: list[Tensor] = []
    tgt: list[Tensor] = []
    with seeded(seed, like=ref):
        for batch in tasks:
            ll = log_likelihoods(model, batch.to(device=ref.device, dtype=ref.dtype), num_samples)
            ctx.append(ll["context"])
            tgt.append(ll["target"])
    if not tgt:
        raise ValueError("tasks is empty")
    return {"context_ll": torch.cat(ctx).nanmean().item(), "target_ll": torch.cat(tgt).mean().item()}
