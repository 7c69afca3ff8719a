"""A 1-D picture of a neural process's predictive: mean, ±2 std band, function samples, data."""

from __future__ import annotations

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from bayesnets.processes.models import NeuralProcess

__all__ = ["plot_predictive"]


def plot_predictive(model: NeuralProcess, context_x: Tensor, context_y: Tensor, target_x: Tensor | None = None,
                    target_y: Tensor | None = None, *, x_range: tuple[float, float] = (-2.0, 2.0),
                    num_points: int = 200, num_draws: int = 5, ax: Axes | None = None) -> Figure:
    """Plot one 1-D task's predictive (never shown; the figure is returned).

    Args:
        model: a :class:`NeuralProcess` with ``x_dim = y_dim = 1``.
        context_x: ``[Nc, 1]`` (may be empty: the prior predictive).
        context_y: ``[Nc]`` or ``[Nc, 1]``.
        target_x: optional held-out inputs ``[Nt, 1]`` to scatter.
        target_y: their outputs ``[Nt]`` or ``[Nt, 1]``.
        x_range: interval of the prediction grid.
        num_points: grid size.
        num_draws: function samples drawn (0 for none).
        ax: axes to draw on (default: a new figure).

    Returns:
        The matplotlib figure.
    """
    if model.x_dim != 1 or model.y_dim != 1:
        raise ValueError(f"plot_predictive needs a model with x_dim = y_dim = 1, got {model.x_dim} and {model.y_dim}")
    if (target_x is None) != (target_y is None):
        raise ValueError("give both target_x and target_y, or neither")
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    ref = next(model.parameters())
    grid = torch.linspace(*x_range, num_points, device=ref.device, dtype=ref.dtype).unsqueeze(-1)
    with torch.no_grad():
        pred = model.predict(context_x, context_y, grid)
        mean, std = pred.mean[:, 0].cpu(), pred.stddev[:, 0].cpu()
        draws = pred.sample((num_draws,))[..., 0].cpu() if num_draws else None
    g = grid[:, 0].cpu()
    ax.fill_between(g, mean - 2 * std, mean + 2 * std, alpha=0.25, color="C0", label="±2 std")
    ax.plot(g, mean, color="C0", label="mean")
    if draws is not None:
        for i, d in enumerate(draws):
            ax.plot(g, d, color="C0", alpha=0.35, lw=0.8, label="samples" if i == 0 else None)
    if target_x is not None:
        ax.scatter(target_x.reshape(-1).cpu(), target_y.reshape(-1).cpu(), s=12, color="C3", label="target")
    if context_x.numel():
        ax.scatter(context_x.reshape(-1).cpu(), context_y.reshape(-1).cpu(), s=18, color="k", label="context")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(type(model).__name__)
    ax.legend(loc="best", fontsize="small")
    return fig
