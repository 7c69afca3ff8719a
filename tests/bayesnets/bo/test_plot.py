"""Regret plots: a matplotlib Figure, one line and band per surrogate, log scale for regret."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from bayesnets.bo.plot import REGRET_FLOOR, plot_regret
from bayesnets.bo.record import BORecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _record(surrogate: str, seed: int, trace: list[float], regret: bool = True) -> BORecord:
    Y = torch.zeros(3, 1, dtype=torch.float64)
    return BORecord(problem="branin", surrogate=surrogate, seed=seed, X=torch.zeros(3, 2, dtype=torch.float64),
                    Y=Y, F=Y, iteration=[0, 1, 2], best=[-t for t in trace], regret=trace if regret else None,
                    fit_time=[0.1, 0.1], acq_time=[0.1, 0.1])


def test_regret_plot_has_a_line_per_surrogate_on_a_log_axis(tmp_path: Path) -> None:
    recs = [_record("gp", 0, [4.0, 2.0, 0.0]), _record("gp", 1, [2.0, 1.0, 0.5]), _record("ibnn", 0, [3.0, 1.0, 0.0])]
    png = tmp_path / "regret.png"
    fig = plot_regret(recs, path=png)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"gp (n=2)", "ibnn (n=1)"}
    np.testing.assert_allclose(lines["gp (n=2)"].get_ydata(), [3.0, 1.5, 0.25])  # the mean over seeds
    # An exact zero regret (the optimum found) is clipped to the floor of the log axis, not dropped.
    np.testing.assert_allclose(lines["ibnn (n=1)"].get_ydata(), [3.0, 1.0, REGRET_FLOOR])
    assert len(ax.collections) == 1  # a standard-error band for gp only (one ibnn seed has none)
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_best_value_plot_is_linear() -> None:
    fig = plot_regret([_record("gp", 0, [4.0, 2.0, 1.0], regret=False)], title="t")
    (ax,) = fig.axes
    assert ax.get_yscale() == "linear" and ax.get_title() == "t" and ax.get_ylabel() == "best value"
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [-4.0, -2.0, -1.0])
