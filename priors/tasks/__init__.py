"""Task priors: distributions over whole datasets, the training data of prior-data fitted
networks (PFNs; Müller et al., arXiv:2112.10510).

A task prior is an ``nn.Module`` (so ``prior.to(device)`` / ``prior.double()`` choose where
and in which dtype datasets are drawn) whose :meth:`TaskPrior.sample` returns a batch of
independent datasets ``(x, y)`` with ``x`` ``[batch, seq, features]`` and ``y`` ``[batch, seq]``
(float targets for regression, int64 class labels for classification). Every random draw
comes from the ``generator`` argument, so a training run that checkpoints the generator
resumes bit-exactly.

A new prior (e.g. learning curves, where ``x`` is the 1-D epoch index) subclasses
:class:`TaskPrior`, implements :meth:`TaskPrior.draw` and :meth:`TaskPrior.settings`, and is
rebuilt from its JSON description by :func:`prior_from_config`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from priors.tasks.sampling import randint

__all__ = ["TASKS", "BNNPrior", "GPHyperPrior", "GPPrior", "LearningCurvePrior", "TaskPrior", "prior_from_config"]

TASKS = ("regression", "classification")


class TaskPrior(nn.Module, ABC):
    """Base class of dataset priors for PFN training.

    Args:
        max_features: the most input features a dataset can have.
        min_features: the fewest; when ``sample`` is not told ``num_features`` it draws the
            count uniformly from ``[min_features, max_features]`` once per batch (one batch
            shares a feature count so it stacks into one tensor). Default: ``max_features``.

    Attributes:
        task: ``"regression"`` (float ``y``) or ``"classification"`` (int64 ``y`` in
            ``[0, num_classes)``).
        num_classes: number of classes for classification, else ``None``.
    """

    registry: ClassVar[dict[str, type[TaskPrior]]] = {}
    task: str = "regression"
    num_classes: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        TaskPrior.registry[cls.__name__] = cls

    def __init__(self, max_features: int, min_features: int | None = None) -> None:
        super().__init__()
        max_features = int(max_features)
        min_features = max_features if min_features is None else int(min_features)
        if max_features < 1:
            raise ValueError(f"max_features must be >= 1, got {max_features}")
        if not 1 <= min_features <= max_features:
            raise ValueError(f"min_features must be in [1, max_features={max_features}], got {min_features}")
        self.max_features = max_features
        self.min_features = min_features
        # Carries the device and dtype datasets are drawn on; moves with .to() / .double().
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def device(self) -> torch.device:
        """Where datasets are drawn."""
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of ``x`` (and of ``y`` for regression)."""
        return self._anchor.dtype

    def sample(self, batch_size: int, seq_len: int, num_features: int | None = None,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``batch_size`` independent datasets of ``seq_len`` points each.

        Args:
            batch_size: number of datasets.
            seq_len: points per dataset (train and test points together).
            num_features: input features of every dataset in the batch; ``None`` draws it.
            generator: source of all randomness (on the prior's device); ``None`` uses torch's
                global generator.

        Returns:
            ``(x, y)``: ``x`` ``[batch_size, seq_len, num_features]``, ``y`` ``[batch_size, seq_len]``.
        """
        if int(batch_size) < 1 or int(seq_len) < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
        if num_features is None:
            num_features = int(randint(self.min_features, self.max_features + 1, (), generator, self._anchor))
        if not 1 <= int(num_features) <= self.max_features:
            raise ValueError(f"num_features must be in [1, {self.max_features}], got {num_features}")
        return self.draw(int(batch_size), int(seq_len), int(num_features), generator)

    @abstractmethod
    def draw(self, batch_size: int, seq_len: int, num_features: int,
             generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Draw a batch (arguments already checked); see :meth:`sample`."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Constructor arguments as JSON-friendly values (``type(self)(**settings())`` rebuilds it)."""

    def config(self) -> dict[str, Any]:
        """JSON description, ``{"class": name, **settings}``; inverse of :func:`prior_from_config`."""
        return {"class": type(self).__name__, **self.settings()}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings().items())


def prior_from_config(config: dict[str, Any]) -> TaskPrior:
    """Rebuild a task prior from :meth:`TaskPrior.config` (any registered subclass)."""
    config = dict(config)
    name = config.pop("class", None)
    if name not in TaskPrior.registry:
        raise ValueError(f"unknown task prior class {name!r}; known: {sorted(TaskPrior.registry)}")
    return TaskPrior.registry[name](**config)


from priors.tasks.bnn import BNNPrior  # noqa: E402  (subclasses register on import)
from priors.tasks.gp import GPHyperPrior, GPPrior  # noqa: E402
from priors.tasks.learning_curves import LearningCurvePrior  # noqa: E402
