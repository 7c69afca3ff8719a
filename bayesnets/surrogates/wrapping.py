"""What the t-process and PFN models need to join the surrogate contract: an input transform and a
``.to(device)`` that also moves the training data they keep as plain attributes."""

from __future__ import annotations

from typing import Any

from botorch.models.transforms.input import InputTransform
from botorch.posteriors import Posterior
from torch import Tensor

__all__ = ["DataMovingInputTransformed", "fit_input_transform"]


def fit_input_transform(train_X: Tensor, input_transform: InputTransform | None) -> Tensor:
    """``train_X`` through ``input_transform`` in train mode (learning e.g. ``Normalize``'s bounds),
    which is then left in eval mode; ``train_X`` itself when there is none."""
    if input_transform is None:
        return train_X
    input_transform.train()
    X = input_transform(train_X)
    input_transform.eval()
    return X


class DataMovingInputTransformed:
    """Mixin (before the model class): ``posterior`` applies the input transform first, and
    ``_apply`` (behind ``.to``, ``.double``, ...) also converts ``_data_attributes``."""

    #: Names of plain tensor attributes that hold training data.
    _data_attributes: tuple[str, ...] = ()

    def _data_moved(self) -> None:
        """Hook: drop caches built on the old data."""

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        super()._apply(fn, *args, **kwargs)  # type: ignore[misc]
        for name in self._data_attributes:
            if name in self.__dict__:  # absent while the parent's __init__ moves its parameters
                setattr(self, name, fn(getattr(self, name)))
        self._data_moved()
        return self

    def posterior(self, X: Tensor, output_indices: list[int] | None = None, observation_noise: bool | Tensor = False,
                  posterior_transform: Any = None, **kwargs: Any) -> Posterior:
        """The model's posterior at ``X`` ``[*batch, q, d]``, input transform applied first."""
        self.eval()  # type: ignore[attr-defined]
        return super().posterior(self.transform_inputs(X), output_indices,  # type: ignore[misc, attr-defined]
                                 observation_noise, posterior_transform, **kwargs)
