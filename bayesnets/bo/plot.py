"""Regret (or hypervolume) curves of BO runs: mean ± standard error over seeds, one line per surrogate,
as in the figures of Li, Rudner & Wilson (arXiv 2305.20028)."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bayesnets.bo.record import Aggregate, BORecord, aggregate

__all__ = ["plot_regret"]

#: Regret values are clipped to this floor on the log axis (a run can hit the optimum exactly).
REGRET_FLOOR = 1e-12


def plot_regret(records: list[BORecord] | dict[str, Aggregate], *, ax: Axes | None = None, title: str | None = None,
                path: str | Path | None = None, dpi: int = 100) -> Figure:
    """Plot each surrogate's trace against the BO iteration: mean line, ± one standard error band.

    The y axis is logarithmic for regret (simple or hypervolume regret) and linear for best values or
    hypervolumes (problems whose optimum is unknown).

    Args:
        records: runs of one problem (any surrogates and seeds), or :func:`aggregate`'s result.
        ax: draw into these axes (default: a new figure).
        title: axes title (default: the problem's name and the number of seeds).
        path: also save the figure here (PNG by the suffix).
        dpi: resolution of the saved file.

    Returns:
        The matplotlib ``Figure`` (never shown).
    """
    groups = aggregate(records) if isinstance(records, list) else records
    if not groups:
        raise ValueError("records is empty: nothing to plot")
    if ax is None:
        fig = Figure(figsize=(6.0, 4.0))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    metrics = {g.metric for g in groups.values()}
    log = all(m.endswith("regret") for m in metrics)
    for g in groups.values():
        x = list(range(len(g.mean)))
        mean = [max(v, REGRET_FLOOR) if log else v for v in g.mean]
        (line,) = ax.plot(x, mean, label=f"{g.surrogate} (n={len(g.seeds)})")
        if all(math.isfinite(s) for s in g.se):
            lower = [m - s for m, s in zip(g.mean, g.se, strict=True)]
            upper = [m + s for m, s in zip(g.mean, g.se, strict=True)]
            if log:
                lower, upper = [max(v, REGRET_FLOOR) for v in lower], [max(v, REGRET_FLOOR) for v in upper]
            ax.fill_between(x, lower, upper, color=line.get_color(), alpha=0.2, linewidth=0)
    if log:
        ax.set_yscale("log")
    problem = next(iter(groups.values())).problem
    seeds = max(len(g.seeds) for g in groups.values())
    ax.set_xlabel("BO iteration (0: initial design)")
    ax.set_ylabel(" / ".join(sorted(metrics)))
    ax.set_title(title if title is not None else f"{problem}: mean ± s.e. over {seeds} seed(s)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig
