"""Meta-training and evaluation of neural processes on a stream of tasks.

:func:`fit` draws a fresh batch of tasks every step (the "infinite data" setting of the NP
literature's GP benchmarks) and minimises the model's own :meth:`~NeuralProcess.loss` with Adam
and a cosine learning-rate decay (as juho-lee/bnp). :func:`evaluate` reports the per-point
context and target log-likelihoods the literature tabulates.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from bayesnets.processes.data import TaskBatch, TaskSampler
from bayesnets.processes.models import NeuralProcess
from inference.engine import base_seed, seeded

__all__ = ["evaluate", "fit", "log_likelihoods"]

# Adam step size of the NPF/BNP GP configs (yuneg11/Neural-Process-Family, juho-lee/bnp).
LEARNING_RATE = 5e-4


def fit(model: NeuralProcess, tasks: TaskSampler, num_steps: int = 1000, batch_size: int = 64,
        lr: float = LEARNING_RATE, seed: int | None = None, progress: bool = True) -> Tensor:
    """Meta-train ``model`` in place on tasks drawn from ``tasks``.

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
        The loss at every step, ``[num_steps]``.
    """
    if not isinstance(model, NeuralProcess):
        raise TypeError(f"model must be a NeuralProcess, got {type(model).__name__}")
    if int(num_steps) < 1 or int(batch_size) < 1:
        raise ValueError(f"num_steps and batch_size must be >= 1, got {num_steps} and {batch_size}")
    ref = next(model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(num_steps))
    losses = torch.empty(int(num_steps))
    model.train()
    with seeded(base_seed(seed), like=ref):
        bar = tqdm(range(int(num_steps)), disable=not progress, desc=f"fit {type(model).__name__}")
        for step in bar:
            batch = tasks.sample(int(batch_size), device=ref.device, dtype=ref.dtype)
            loss = model.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses[step] = loss.detach()
            if progress and step % 50 == 0:
                bar.set_postfix(loss=f"{losses[step].item():.3f}")
    model.eval()
    return losses


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
