"""Random-MLP (BNN) task prior (PFN paper, arXiv:2112.10510, §5.3).

Each dataset gets its own MLP whose weights and biases are drawn i.i.d. Gaussian; inputs
are ``x ~ N(0, I_d)``. Regression targets are ``f(x) + noise_std * eps``; classification
labels are ``Categorical(softmax(f(x)))``. The paper's setting is binary classification with
one hidden layer, all weights ``N(0, 1)`` (``hidden=(5,)`` with 3 features, or ``(64,)`` with
8); ``fan_in=True`` instead scales weight stds by ``1/sqrt(fan_in)`` so wide nets stay O(1).
All datasets of a batch are evaluated at once with batched matrix products.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

from priors.tasks import TASKS, TaskPrior
from priors.tasks.sampling import normal

__all__ = ["ACTIVATIONS", "BNNPrior"]

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "gelu": torch.nn.functional.gelu, "identity": lambda t: t}


class BNNPrior(TaskPrior):
    """Datasets from randomly drawn MLPs.

    Args:
        max_features, min_features: see :class:`TaskPrior`.
        hidden: hidden layer widths.
        activation: one of ``tanh``, ``relu``, ``gelu``, ``identity``.
        weight_std: standard deviation of every weight (divided by ``sqrt(fan_in)`` when
            ``fan_in``; a padded input feature does not count towards the fan-in).
        bias_std: standard deviation of every bias.
        fan_in: scale weight stds by ``1/sqrt(fan_in)``.
        task: ``"regression"`` or ``"classification"``.
        num_classes: classes for classification (network outputs); ignored for regression.
        noise_std: observation noise of regression targets.
    """

    def __init__(self, max_features: int = 3, min_features: int | None = None, hidden: tuple[int, ...] = (5,),
                 activation: str = "tanh", weight_std: float = 1.0, bias_std: float = 1.0, fan_in: bool = False,
                 task: str = "classification", num_classes: int = 2, noise_std: float = 0.1) -> None:
        super().__init__(max_features, min_features)
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {hidden!r}")
        if not (float(weight_std) > 0 and float(bias_std) >= 0 and float(noise_std) >= 0):
            raise ValueError("weight_std must be > 0, bias_std and noise_std >= 0")
        self.activation, self.fan_in = activation, bool(fan_in)
        self.weight_std, self.bias_std, self.noise_std = float(weight_std), float(bias_std), float(noise_std)
        self.task = task
        if task == "classification":
            if int(num_classes) < 2:
                raise ValueError(f"num_classes must be >= 2 for classification, got {num_classes}")
            self.num_classes = int(num_classes)
        else:
            self.num_classes = None

    def settings(self) -> dict[str, Any]:
        return dict(max_features=self.max_features, min_features=self.min_features, hidden=list(self.hidden),
                    activation=self.activation, weight_std=self.weight_std, bias_std=self.bias_std,
                    fan_in=self.fan_in, task=self.task, num_classes=self.num_classes or 2,
                    noise_std=self.noise_std)

    def draw(self, batch_size: int, seq_len: int, num_features: int,
             generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        like = self._anchor
        h = normal((batch_size, seq_len, num_features), generator, like)
        x = h
        act = ACTIVATIONS[self.activation]
        widths = [num_features, *self.hidden, self.num_classes or 1]
        for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
            std = self.weight_std / math.sqrt(n_in) if self.fan_in else self.weight_std
            w = normal((batch_size, n_in, n_out), generator, like) * std
            b = normal((batch_size, 1, n_out), generator, like) * self.bias_std
            h = h @ w + b
            if i < len(widths) - 2:
                h = act(h)
        if self.task == "regression":
            return x, h.squeeze(-1) + self.noise_std * normal((batch_size, seq_len), generator, like)
        probs = torch.softmax(h, dim=-1)
        y = torch.multinomial(probs.reshape(-1, self.num_classes), 1, generator=generator)
        return x, y.reshape(batch_size, seq_len)
