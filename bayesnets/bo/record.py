"""Results of BO runs: one :class:`BORecord` per (problem, surrogate, seed), saved as JSON (never pickled),
and their aggregate over seeds (mean ± standard error), as reported by Li, Rudner & Wilson (arXiv 2305.20028).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["FORMAT", "Aggregate", "BORecord", "aggregate", "load_records", "save_records"]

#: Tag written into every results file, checked on load.
FORMAT = "bayesnets.bo.records/1"


def _to_json(t: Tensor) -> list:
    """A tensor as nested lists with ``None`` for NaN (JSON has no NaN)."""
    return [_to_json(row) for row in t] if t.dim() > 1 else [None if math.isnan(v) else v for v in t.tolist()]


def _from_json(values: list, cols: int) -> Tensor:
    rows = [[math.nan if v is None else float(v) for v in row] for row in values]
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), cols)


def _floats(values: list[float | None] | None) -> list[float] | None:
    return None if values is None else [math.nan if v is None else float(v) for v in values]


def _nulls(values: list[float] | None) -> list[float | None] | None:
    return None if values is None else [None if math.isnan(v) else v for v in values]


@dataclass
class BORecord:
    """One BO run.

    Attributes:
        problem: the problem's name.
        surrogate: the surrogate's name.
        seed: the run's seed (initial design, surrogate fits, acquisition optimisation, noise).
        X: ``[N, d]`` every evaluated point, in the problem's own coordinates, initial design first.
        Y: ``[N, m]`` observed values (with noise; NaN where the objective failed).
        F: ``[N, m]`` noise-free values (what regret is measured on).
        iteration: ``[N]`` the BO iteration that proposed each point (0: initial design).
        best: per iteration ``0..T`` the best noise-free value (one objective) or dominated hypervolume
            (several) among the finite evaluations so far.
        regret: per iteration ``optimum - best`` (or ``max_hv - hypervolume``); ``None`` when the optimum is
            unknown.
        fit_time: per BO iteration, seconds spent fitting the surrogate.
        acq_time: per BO iteration, seconds spent building and optimising the acquisition function.
        settings: everything else needed to rerun it (iterations, batch size, acquisition, ...).
        fit_warnings: per BO iteration, the warnings the surrogate's fit raised (e.g. divergent HMC
            transitions), collected here instead of printed at every iteration.
    """

    problem: str
    surrogate: str
    seed: int
    X: Tensor
    Y: Tensor
    F: Tensor
    iteration: list[int]
    best: list[float]
    regret: list[float] | None
    fit_time: list[float] = field(default_factory=list)
    acq_time: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    fit_warnings: list[list[str]] = field(default_factory=list)

    @property
    def metric(self) -> str:
        """What :meth:`trace` holds: ``"simple regret"``, ``"hypervolume regret"``, ``"best value"`` or
        ``"hypervolume"``."""
        multi = self.Y.shape[-1] > 1
        if self.regret is not None:
            return "hypervolume regret" if multi else "simple regret"
        return "hypervolume" if multi else "best value"

    @property
    def trace(self) -> list[float]:
        """Per iteration ``0..T``: the regret when the optimum is known, else the best value / hypervolume."""
        return self.regret if self.regret is not None else self.best

    @property
    def time_per_iteration(self) -> float:
        """Mean seconds per BO iteration (fit + acquisition); ``nan`` without iterations."""
        n = len(self.fit_time)
        return (sum(self.fit_time) + sum(self.acq_time)) / n if n else math.nan

    @property
    def num_nan(self) -> int:
        """Evaluations whose objective value was NaN (kept here, skipped by the surrogate)."""
        return int((~torch.isfinite(self.Y).all(-1)).sum())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN written as ``null``)."""
        return {
            "problem": self.problem, "surrogate": self.surrogate, "seed": self.seed,
            "dim": self.X.shape[-1], "num_objectives": self.Y.shape[-1],
            "X": _to_json(self.X.detach().cpu().double()), "Y": _to_json(self.Y.detach().cpu().double()),
            "F": _to_json(self.F.detach().cpu().double()), "iteration": list(self.iteration),
            "best": _nulls(self.best), "regret": _nulls(self.regret),
            "fit_time": list(self.fit_time), "acq_time": list(self.acq_time), "settings": self.settings,
            "fit_warnings": [list(w) for w in self.fit_warnings],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BORecord:
        """Inverse of :meth:`to_dict`."""
        d, m = int(data["dim"]), int(data["num_objectives"])
        return cls(problem=data["problem"], surrogate=data["surrogate"], seed=int(data["seed"]),
                   X=_from_json(data["X"], d), Y=_from_json(data["Y"], m), F=_from_json(data["F"], m),
                   iteration=[int(i) for i in data["iteration"]], best=_floats(data["best"]),
                   regret=_floats(data["regret"]), fit_time=[float(t) for t in data["fit_time"]],
                   acq_time=[float(t) for t in data["acq_time"]], settings=dict(data["settings"]),
                   fit_warnings=[[str(w) for w in ws] for ws in data.get("fit_warnings", [])])


def save_records(records: list[BORecord], path: str | Path) -> Path:
    """Write ``records`` to a JSON file (standard JSON: no NaN literals); returns the path."""
    path = Path(path)
    path.write_text(json.dumps({"format": FORMAT, "records": [r.to_dict() for r in records]}, allow_nan=False))
    return path


def load_records(path: str | Path) -> list[BORecord]:
    """Read records written by :func:`save_records`.

    Raises:
        ValueError: the file is not a bayesnets BO results file.
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a BO results file (expected format {FORMAT!r})")
    return [BORecord.from_dict(r) for r in data["records"]]


@dataclass
class Aggregate:
    """One surrogate's runs on one problem, summarised over seeds.

    Attributes:
        surrogate: the surrogate's name.
        problem: the problem's name.
        metric: what ``mean``/``se`` hold (see :attr:`BORecord.metric`).
        seeds: the seeds aggregated.
        mean: per iteration ``0..T``, the mean of the trace over seeds.
        se: per iteration, its standard error (sample std / sqrt(n); ``nan`` for one seed).
        time_per_iteration: mean seconds per BO iteration (fit + acquisition) over seeds, and its standard error.
        fit_time: mean seconds per surrogate fit.
        acq_time: mean seconds per acquisition optimisation.
    """

    surrogate: str
    problem: str
    metric: str
    seeds: list[int]
    mean: list[float]
    se: list[float]
    time_per_iteration: tuple[float, float]
    fit_time: float
    acq_time: float

    @property
    def final(self) -> tuple[float, float]:
        """``(mean, se)`` at the last iteration."""
        return self.mean[-1], self.se[-1]


def _mean_se(values: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard error along dim 0 (``nan`` error for a single value)."""
    n = values.shape[0]
    se = values.std(0, correction=1) / math.sqrt(n) if n > 1 else torch.full_like(values[0], math.nan)
    return values.mean(0), se


def aggregate(records: list[BORecord]) -> dict[str, Aggregate]:
    """Mean ± standard error over seeds, per surrogate, in the order surrogates first appear.

    Raises:
        ValueError: no records, records of several problems, or runs of one surrogate with different
            numbers of iterations or metrics.
    """
    if not records:
        raise ValueError("records is empty")
    problems = {r.problem for r in records}
    if len(problems) > 1:
        raise ValueError(f"records mix problems {sorted(problems)}; aggregate one problem at a time")
    groups: dict[str, list[BORecord]] = {}
    for r in records:
        groups.setdefault(r.surrogate, []).append(r)
    out = {}
    for name, runs in groups.items():
        lengths, metrics = {len(r.trace) for r in runs}, {r.metric for r in runs}
        if len(lengths) > 1 or len(metrics) > 1:
            raise ValueError(f"surrogate {name!r}: runs differ in length {sorted(lengths)} or metric {sorted(metrics)}")
        traces = torch.tensor([r.trace for r in runs], dtype=torch.float64)
        mean, se = _mean_se(traces)
        times = torch.tensor([r.time_per_iteration for r in runs], dtype=torch.float64)
        t_mean, t_se = _mean_se(times.unsqueeze(-1))
        fit = [t for r in runs for t in r.fit_time]
        acq = [t for r in runs for t in r.acq_time]
        out[name] = Aggregate(surrogate=name, problem=runs[0].problem, metric=runs[0].metric,
                              seeds=[r.seed for r in runs], mean=mean.tolist(), se=se.tolist(),
                              time_per_iteration=(float(t_mean), float(t_se)),
                              fit_time=sum(fit) / len(fit) if fit else math.nan,
                              acq_time=sum(acq) / len(acq) if acq else math.nan)
    return out
