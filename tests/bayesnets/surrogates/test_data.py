"""check_train_data names the argument and the expected shape."""

from __future__ import annotations

import pytest
import torch

from bayesnets.surrogates.data import check_train_data


def test_good_data_passes(tkwargs):
    check_train_data(torch.rand(4, 3, **tkwargs), torch.rand(4, 2, **tkwargs))


@pytest.mark.parametrize("X, Y, match", [
    ([[0.0]], torch.zeros(1, 1), "train_X must be a torch.Tensor"),
    (torch.zeros(0, 2), torch.zeros(0, 1), "train_X is empty"),
    (torch.zeros(3, 2), torch.zeros(3, 1, dtype=torch.float32), "share dtype and device"),
    (torch.tensor([[float("inf"), 0.0]]), torch.zeros(1, 1), "train_X contains NaN or infinite"),
])
def test_bad_data(X, Y, match):
    X = X.double() if isinstance(X, torch.Tensor) and X.dtype == torch.float32 else X
    with pytest.raises((TypeError, ValueError), match=match):
        check_train_data(X, Y if Y.dtype == torch.float32 and "share" in match else Y.double())
