"""LC-PFN: Bayesian learning-curve extrapolation in one forward pass (Adriaensen et al., NeurIPS 2023,
arXiv:2310.20447).

A :class:`~bayesnets.pfn.model.PFN` trained on curves from :class:`priors.tasks.LearningCurvePrior`
(weighted pow3 + Janoschek + ilog2 curves on epochs ``1..100`` with values in ``[0, 1]``,
observed up to a random cut-off) gives the posterior predictive of every later epoch of a
partial curve. :class:`LCPFN` wraps it for practitioners:

* ``LCPFN.pretrained()`` loads the shipped weights (``bayesnets/pfn/weights/lcpfn.safetensors``;
  safetensors, no network; training record in ``docs/lcpfn.md`` and in the file's metadata);
* :meth:`LCPFN.predict` -> :class:`LCPrediction` (quantiles, mean, log-density of future values);
* :meth:`LCPFN.predictive_stop` -> :class:`StopDecision`: the probability that the run beats the
  best value so far by the horizon, and whether to stop (Domhan et al.'s criterion: stop when
  it is below ``1 - confidence``);
* :class:`CurveTransform`: the documented map from a metric to the prior's scale (accuracies in
  ``[0, 1]`` or percent, losses) and back, so predictions come out in the metric's units;
* :func:`plot_extrapolation`: observed points, predictive median, 50 % and 90 % bands.

The prior's curves rise overall (``f(100) > f(1)``) and stay in ``[0, 1]``: feed "higher is
better" values on that scale. Curves longer than 100 epochs must be subsampled (the paper takes
every 2nd epoch of NAS-Bench-201 and every 14th of WMT).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bayesnets.pfn.bar import BarDistribution
from bayesnets.pfn.model import PFN
from bayesnets.pfn.pretrained import load_pretrained

__all__ = ["DEFAULT_QUANTILES", "LCPFN", "CurveTransform", "LCPrediction", "StopDecision", "plot_extrapolation"]

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# How far outside [0, 1] normalised values may go. Under the prior, 0.3% of curves leave
# [-0.5, 1.5] (pure-noise curves with noise sd >~ 0.2; measured on 200k draws): a warning.
# Leaving [-2, 3] needs noise sd >~ 0.7 (prior probability ~1e-4) and a 3-sigma draw: the
# curve was not normalised (percentages, raw losses), an error.
_WARN_SLACK, _ERROR_SLACK = 0.5, 2.0


@dataclass(frozen=True)
class CurveTransform:
    """Affine map between a metric and the prior's scale ``u`` in ``[0, 1]``, higher is better.

    * accuracy-like (``higher_is_better=True``): ``u = (v - lower) / (upper - lower)``;
    * loss-like (``higher_is_better=False``): ``u = (upper - v) / (upper - lower)``.

    Build with :meth:`accuracy` (``[0, 1]`` by default, ``upper=100`` for percent) or
    :meth:`loss` (``lower=0``, ``upper`` = the largest loss observed unless given). Quantiles are
    mapped back monotonically (a loss's ``q``-quantile is the ``1 - q`` quantile on the ``u``
    scale), the mean exactly (the map is affine), and log-densities get the Jacobian
    ``-log(upper - lower)``.

    Attributes:
        lower, upper: metric values mapped to the ends of ``[0, 1]``.
        higher_is_better: ``True`` for accuracies, ``False`` for losses.
    """

    lower: float = 0.0
    upper: float = 1.0
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lower) and math.isfinite(self.upper) and self.upper > self.lower):
            raise ValueError(f"CurveTransform needs finite lower < upper, got lower={self.lower}, upper={self.upper}")

    @classmethod
    def accuracy(cls, lower: float = 0.0, upper: float = 1.0) -> CurveTransform:
        """For metrics to maximise on ``[lower, upper]`` (``upper=100`` for percentages)."""
        return cls(float(lower), float(upper), True)

    @classmethod
    def loss(cls, curve: Any = None, lower: float = 0.0, upper: float | None = None) -> CurveTransform:
        """For metrics to minimise: ``lower`` (default 0) maps to 1, ``upper`` to 0.

        Args:
            curve: the observed losses; ``upper`` defaults to their maximum.
            lower: the best reachable loss (0 for cross-entropy or squared error).
            upper: the worst loss considered (a value at or above the first epochs' losses).
        """
        if upper is None:
            if curve is None:
                raise ValueError("CurveTransform.loss needs the observed curve or an explicit upper")
            upper = float(torch.as_tensor(curve, dtype=torch.float64).max())
        return cls(float(lower), float(upper), False)

    @property
    def scale(self) -> float:
        return self.upper - self.lower

    def to_unit(self, values: Tensor) -> Tensor:
        """Metric -> prior scale."""
        u = (values - self.lower) / self.scale
        return u if self.higher_is_better else 1.0 - u

    def from_unit(self, u: Tensor) -> Tensor:
        """Prior scale -> metric (inverse of :meth:`to_unit`)."""
        return self.lower + self.scale * (u if self.higher_is_better else 1.0 - u)

    def unit_level(self, q: Tensor) -> Tensor:
        """The quantile level on the prior scale that gives the metric's level ``q``."""
        return q if self.higher_is_better else 1.0 - q


IDENTITY = CurveTransform()


@dataclass
class LCPrediction:
    """Posterior predictive of future epochs (:meth:`LCPFN.predict`), in the metric's units.

    Attributes:
        epochs: ``[T]`` predicted epochs ``n + 1 .. horizon``.
        unit: the predictive on the prior's scale (:class:`~bayesnets.pfn.bar.BarDistribution`,
            batch shape ``[T]`` or ``[B, T]``).
        transform: the :class:`CurveTransform` between metric and prior scale.
    """

    epochs: Tensor
    unit: BarDistribution
    transform: CurveTransform = IDENTITY

    def quantile(self, q: float | Tensor | tuple[float, ...] = DEFAULT_QUANTILES) -> Tensor:
        """Predictive quantiles: ``[Q, *batch, T]`` (``[*batch, T]`` for a float ``q``)."""
        qs = torch.as_tensor(q, dtype=self.unit.logits.dtype, device=self.unit.logits.device)
        if bool(((qs <= 0) | (qs >= 1)).any()):
            raise ValueError(f"quantile levels must be in (0, 1), got {q}")
        level = self.transform.unit_level(qs)
        shaped = level.reshape(-1, *([1] * len(self.unit.batch_shape)))
        out = self.transform.from_unit(self.unit.icdf(shaped))
        return out[0] if qs.dim() == 0 else out

    @property
    def mean(self) -> Tensor:
        """Predictive mean ``[*batch, T]``."""
        return self.transform.from_unit(self.unit.mean)

    @property
    def median(self) -> Tensor:
        return self.quantile(0.5)

    def log_prob(self, values: Tensor) -> Tensor:
        """Log predictive density of future metric values ``[*batch, T]`` (per epoch, Jacobian included)."""
        v = torch.as_tensor(values, dtype=self.unit.logits.dtype, device=self.unit.logits.device)
        num = self.unit.batch_shape[-1]
        if v.shape[-1:] != (num,):
            raise ValueError(f"values must hold the {num} predicted epochs {int(self.epochs[0])}.."
                             f"{int(self.epochs[-1])} (shape [..., {num}]), got shape {tuple(v.shape)}")
        return self.unit.log_prob(self.transform.to_unit(v)) - math.log(self.transform.scale)

    def prob_better_than(self, value: float | Tensor) -> Tensor:
        """``P(metric at each epoch is better than value)``: above it for accuracies, below for losses."""
        v = torch.as_tensor(value, dtype=self.unit.logits.dtype, device=self.unit.logits.device)
        return 1.0 - self.unit.cdf(self.transform.to_unit(v))


@dataclass
class StopDecision:
    """Result of :meth:`LCPFN.predictive_stop`.

    Attributes:
        prob_improve: ``P(value at horizon is better than best_so_far)`` (a tensor: ``[]`` or ``[B]``).
        stop: ``prob_improve < 1 - confidence`` (bool tensor of the same shape).
        horizon, confidence: the settings used.
    """

    prob_improve: Tensor
    stop: Tensor
    horizon: int
    confidence: float


def _as_curves(curve: Any) -> tuple[Tensor, bool]:
    """A float64 ``[B, n]`` tensor from a 1-D or 2-D array-like; also whether the input was 1-D."""
    t = torch.as_tensor(curve)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"curve must hold numbers, got dtype {t.dtype}")
    if t.dim() not in (1, 2):
        raise ValueError(f"curve must be [n] or [batch, n] (equal-length curves), got shape {tuple(t.shape)}")
    if t.shape[-1] == 0:
        raise ValueError("curve is empty: at least one observed epoch is needed")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("curve contains NaN or infinite values")
    return (t if t.dim() == 2 else t[None]).to(torch.float64), t.dim() == 1


class LCPFN:
    """Learning-curve extrapolation with a PFN trained on the LC-PFN prior.

    Args:
        pfn: a :class:`~bayesnets.pfn.model.PFN` trained on :class:`priors.tasks.LearningCurvePrior`.
        length: the longest curve (epochs) it was trained on; default from its training record, else 100.
    """

    def __init__(self, pfn: PFN, length: int | None = None) -> None:
        if not isinstance(pfn, PFN) or not pfn.regression:
            raise TypeError("pfn must be a regression PFN (bayesnets.pfn.PFN with a bar-distribution head)")
        record = getattr(pfn, "metadata", {}).get("training", {})
        self.pfn = pfn.eval()
        self.length = int(length if length is not None else record.get("seq_len", 100))

    @classmethod
    def pretrained(cls, name: str = "lcpfn") -> LCPFN:
        """The shipped LC-PFN (CPU, float32; see ``docs/lcpfn.md`` for how it was trained)."""
        return cls(load_pretrained(name))

    @property
    def metadata(self) -> dict[str, Any]:
        return getattr(self.pfn, "metadata", {})

    def to(self, device: torch.device | str) -> LCPFN:
        self.pfn.to(device)
        return self

    @torch.no_grad()
    def predict(self, curve: Any, horizon: int | None = None, transform: CurveTransform | None = None
                ) -> LCPrediction:
        """Posterior predictive of epochs ``n + 1 .. horizon`` given epochs ``1..n``.

        Args:
            curve: observed values ``[n]`` (or ``[B, n]`` for equal-length curves), epoch 1 first.
            horizon: last epoch to predict, ``n < horizon <= length`` (default ``length``, 100).
            transform: metric -> prior scale (default: identity, i.e. values already in ``[0, 1]``,
                higher is better).

        Returns:
            :class:`LCPrediction` with batch shape ``[T]`` (or ``[B, T]``), ``T = horizon - n``.
        """
        transform = IDENTITY if transform is None else transform
        if not isinstance(transform, CurveTransform):
            raise TypeError(f"transform must be a CurveTransform, got {type(transform).__name__}")
        y, single = _as_curves(curve)
        b, n = y.shape
        horizon = self.length if horizon is None else int(horizon)
        if n > self.length:
            raise ValueError(f"curve has {n} epochs; this LC-PFN supports at most {self.length} "
                             f"(subsample longer curves)")
        if not n < horizon <= self.length:
            raise ValueError(f"horizon must satisfy len(curve)={n} < horizon <= {self.length}, got {horizon}")
        device = self.pfn.borders.device
        u = transform.to_unit(y).to(device)
        lo, hi = float(u.min()), float(u.max())
        if lo < -_WARN_SLACK or hi > 1 + _WARN_SLACK:
            msg = (f"curve values map to [{lo:.3g}, {hi:.3g}] on the prior's [0, 1] scale; normalise them with a "
                   "CurveTransform (e.g. CurveTransform.accuracy(upper=100) for percentages, "
                   "CurveTransform.loss(curve) for losses)")
            if lo < -_ERROR_SLACK or hi > 1 + _ERROR_SLACK:
                raise ValueError(msg)
            warnings.warn(msg + " if they are not normalised yet", UserWarning, stacklevel=2)
        t = torch.arange(1, horizon + 1, dtype=torch.float64, device=device)
        train_x = t[:n].expand(b, n).unsqueeze(-1)
        test_x = t[n:].expand(b, horizon - n).unsqueeze(-1)
        dist = self.pfn.predict(train_x, u, test_x)
        if single:
            dist = BarDistribution(dist.logits[0], dist.borders)
        return LCPrediction(t[n:], dist, transform)

    def predictive_stop(self, curve: Any, best_so_far: float | Tensor, horizon: int | None = None,
                        confidence: float = 0.95, transform: CurveTransform | None = None) -> StopDecision:
        """Should this run stop? (Domhan et al. 2015's criterion with LC-PFN's predictive.)

        Args:
            curve: observed values ``[n]`` (or ``[B, n]``).
            best_so_far: the best final value of earlier runs (metric units; ``[B]`` or a float).
            horizon: the epoch the runs are compared at (default: ``length``).
            confidence: stop when ``P(value at horizon beats best_so_far) < 1 - confidence``.
            transform: metric -> prior scale (see :meth:`predict`).

        Returns:
            :class:`StopDecision`.
        """
        if not 0.0 < float(confidence) < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        pred = self.predict(curve, horizon, transform)
        at_horizon = BarDistribution(pred.unit.logits[..., -1, :], pred.unit.borders)  # batch shape [] or [B]
        best = torch.as_tensor(best_so_far, dtype=torch.float64, device=pred.unit.logits.device)
        if best.dim() > 0 and best.shape != at_horizon.batch_shape:
            raise ValueError(f"best_so_far must be a number or have shape {list(at_horizon.batch_shape)} (one per "
                             f"curve), got shape {tuple(best.shape)}")
        p = 1.0 - at_horizon.cdf(pred.transform.to_unit(best))
        return StopDecision(p, p < 1.0 - float(confidence), int(pred.epochs[-1]), float(confidence))


def plot_extrapolation(curve: Any, prediction: LCPrediction, ax: Any = None, title: str | None = None) -> Any:
    """Observed points, predictive median and 50 % / 90 % bands of one curve.

    Args:
        curve: the observed values ``[n]`` (metric units).
        prediction: :meth:`LCPFN.predict` of that curve (batch shape ``[T]``).
        ax: matplotlib axes to draw on (default: a new figure).
        title: axes title.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    if len(prediction.unit.batch_shape) != 1:
        raise ValueError("plot_extrapolation draws one curve: predict a 1-D curve")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    y = torch.as_tensor(curve, dtype=torch.float64).cpu()
    q = prediction.quantile((0.05, 0.25, 0.5, 0.75, 0.95)).cpu()
    t = prediction.epochs.cpu()
    ax.fill_between(t, q[0], q[4], alpha=0.2, color="C0", lw=0, label="90% band")
    ax.fill_between(t, q[1], q[3], alpha=0.4, color="C0", lw=0, label="50% band")
    ax.plot(t, q[2], color="C0", label="median")
    ax.plot(torch.arange(1, len(y) + 1), y, "k.", ms=4, label="observed")
    ax.set_xlabel("epoch")
    ax.set_ylabel("value")
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return fig
