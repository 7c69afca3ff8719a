"""The 1-D plot helper returns a figure with the band, mean, samples and data."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from bayesnets.processes import MPNP, NP, plot_predictive


def test_plot_predictive(tkwargs):
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    model = MPNP(hidden=16, num_heads=2, num_samples=8).to(**tkwargs)
    cx, cy = torch.rand(5, 1, **tkwargs) * 4 - 2, torch.randn(5, **tkwargs)
    tx, ty = torch.rand(3, 1, **tkwargs) * 4 - 2, torch.randn(3, **tkwargs)
    fig = plot_predictive(model, cx, cy, tx, ty, num_points=50, num_draws=3)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.lines) == 1 + 3 and len(ax.collections) == 3  # mean + draws; band + targets + context
    plt.close(fig)
    fig = plot_predictive(model, cx[:0], cy[:0], num_draws=0)  # empty context: the prior predictive
    assert len(fig.axes[0].lines) == 1
    plt.close(fig)


def test_plot_checks(tkwargs):
    model = NP(x_dim=2, hidden=8, num_heads=2).to(**tkwargs)
    with pytest.raises(ValueError, match="x_dim = y_dim = 1"):
        plot_predictive(model, torch.zeros(0, 2, **tkwargs), torch.zeros(0, **tkwargs))
    model = NP(hidden=8, num_heads=2).to(**tkwargs)
    with pytest.raises(ValueError, match="target_x and target_y"):
        plot_predictive(model, torch.zeros(1, 1, **tkwargs), torch.zeros(1, **tkwargs), torch.zeros(2, 1, **tkwargs))
