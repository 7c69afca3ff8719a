"""PFN surrogate: the shipped GP-prior PFN (:mod:`bayesnets.pfn.pretrained`) as a BoTorch model.

A prior-data fitted network (Müller et al., arXiv 2112.10510) predicts the posterior predictive
in one forward pass, so "fitting" is reading the data. This wraps
:class:`bayesnets.pfn.botorch.PFNModel` with the ``"gp"`` weights, which were trained for 1-5
features, adds an input transform and ``.to(device)`` for the data, and (for ``m > 1``
outcomes) builds a ``ModelList`` of one PFN model per outcome (:func:`fit_pfn`). Outcomes are
standardised by ``PFNModel`` itself (the equivalent of ``Standardize``).
"""

from __future__ import annotations

from typing import Any

from botorch.models.model import Model, ModelList
from botorch.models.transforms.input import InputTransform
from torch import Tensor

from bayesnets.pfn.botorch import PFNModel
from bayesnets.pfn.model import PFN
from bayesnets.pfn.pretrained import load_pretrained
from bayesnets.surrogates.data import check_train_data
from bayesnets.surrogates.wrapping import DataMovingInputTransformed, fit_input_transform

__all__ = ["MAX_PFN_FEATURES", "PFNSurrogate", "fit_pfn"]

#: The shipped "gp" PFN was trained on tasks with 1-5 input features (bayesnets/pfn/pretrained.py).
MAX_PFN_FEATURES = 5


class PFNSurrogate(DataMovingInputTransformed, PFNModel):
    """``PFNModel`` with the shipped ``"gp"`` PFN, an input transform and ``.to(device)``.

    Args:
        train_X: ``[n, d]`` inputs in the unit cube, ``d <= 5``; train_Y: ``[n, 1]``.
        pfn: another regression PFN (default: the shipped ``"gp"`` one).
        input_transform: optional, e.g. ``Normalize(d)`` (the PFN expects unit-cube inputs).
    """

    _data_attributes = ("train_X", "train_Y", "y_mean", "y_std")

    def __init__(self, train_X: Tensor, train_Y: Tensor, pfn: PFN | None = None,
                 input_transform: InputTransform | None = None) -> None:
        check_train_data(train_X, train_Y)
        if pfn is None and train_X.shape[-1] > MAX_PFN_FEATURES:
            raise ValueError(f"train_X has {train_X.shape[-1]} features but the shipped 'gp' PFN supports 1-"
                             f"{MAX_PFN_FEATURES}; use another surrogate (e.g. 'gp' or 'ibnn') for this problem")
        if train_Y.shape[-1] != 1:
            raise ValueError(f"train_Y must have shape [n, 1] for one PFN model, got {tuple(train_Y.shape)}; "
                             "fit_pfn builds one per outcome")
        X = fit_input_transform(train_X, input_transform)
        super().__init__(X, train_Y, pfn=load_pretrained("gp") if pfn is None else pfn)
        if input_transform is not None:
            self.input_transform = input_transform


def fit_pfn(train_X: Tensor, train_Y: Tensor, *, seed: int = 0, **kwargs: Any) -> Model:
    """A :class:`PFNSurrogate` (``m = 1``) or a ``ModelList`` of one per outcome; ``seed`` is unused
    (nothing is random: the PFN reads the data)."""
    check_train_data(train_X, train_Y)
    if train_Y.shape[-1] == 1:
        return PFNSurrogate(train_X, train_Y, **kwargs)
    pfn = kwargs.pop("pfn", None) or load_pretrained("gp").to(train_X.device)
    return ModelList(*[PFNSurrogate(train_X, train_Y[:, j:j + 1], pfn=pfn, **kwargs)
                       for j in range(train_Y.shape[-1])])
