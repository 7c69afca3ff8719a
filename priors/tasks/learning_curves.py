"""The LC-PFN learning-curve prior (Adriaensen, Rakotoarison, Müller, Hutter, NeurIPS 2023, arXiv:2310.20447, §3.2).

A curve of ``m`` epochs (``t = 1..m``, ``m = 100`` in the paper) is a weighted sum of three
parametric families,

    f(t) = w_pow3 * pow3(t) + w_janoschek * janoschek(t) + w_ilog2 * ilog2(t),

    pow3(t)      = c - a * t^(-alpha)
    janoschek(t) = alpha - (alpha - beta) * exp(-kappa * t^delta)
    ilog2(t)     = c - a / log(t + 1)

with unnormalised weights ``w ~ U(0, 1)`` and the paper's parameter priors (Table 1, the
"peaked" prior of the official code; see :data:`PARAMETERS`). Observations are
``y_t = f(t) + sigma * eps_t`` with ``log sigma ~ N(-4, 1)`` (the released code's noise
prior, which its README declares the correct one; the paper's text says ``log sigma^2 ~ N(-8, 2)``).

Rejection rule (on the noise-free curve): a draw is kept only if ``f(m) > f(1)``, every
``f(t)`` lies in ``[0, 1]`` and none is NaN; the noisy ``y`` may leave ``[0, 1]``. Rejected
draws are redrawn entirely (weights, parameters and noise level), so the prior is the
product prior truncated to that set.

Right-censoring: a curve is observed up to a cut-off ``T'`` drawn uniformly from
``{1, ..., m - 1}`` (the official code's ``get_uniform_single_eval_pos_sampler(m, min_len=1)``);
the PFN sees ``{(t, y_t)}_{t <= T'}`` and predicts every later epoch. :func:`draw_cutoffs`
and :meth:`LearningCurvePrior.sample_censored` draw it; PFN training realises the same
censoring through :func:`bayesnets.pfn.train.train_pfn` with ``num_test=None,
split_weighting="uniform"`` (one cut-off per batch, as in the paper's code), because the
curves come out in epoch order.

Everything is vectorised over candidate curves: each round draws a block of candidates,
keeps the valid ones in draw order, and repeats until the batch is full. All randomness
comes from the ``generator``, so a seed fixes the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution, LogNormal, Uniform

from priors.tasks import TaskPrior
from priors.tasks.sampling import normal, randint, uniform

__all__ = ["CURVE_LENGTH", "PARAMETERS", "CensoredCurves", "LearningCurvePrior", "ParameterPrior", "censor",
           "curve_mean", "draw_cutoffs", "epochs", "ilog2", "is_valid", "janoschek", "parameter_distributions", "pow3"]

# Paper §3.2 / official code ``seq_len=100``: prior curves have 100 epochs.
CURVE_LENGTH = 100
# Candidates drawn per round, as a multiple of the curves still missing. The acceptance rate of
# the rejection rule is ~0.2 (0.205 measured on 200k draws), so one round usually suffices.
_OVERSAMPLE = 6
# Give up after this many rounds: only a prior whose acceptance rate is near zero gets here.
_MAX_ROUNDS = 200


@dataclass(frozen=True)
class ParameterPrior:
    """Prior of one scalar parameter: ``U(a, b)`` (``kind="uniform"``) or ``LogNormal(a, b)``
    (``kind="lognormal"``: ``log x ~ N(a, b^2)``, ``b`` the standard deviation)."""

    kind: str
    a: float
    b: float

    def distribution(self, like: Tensor) -> Distribution:
        """The torch distribution on ``like``'s device and dtype."""
        a = torch.tensor(self.a, dtype=like.dtype, device=like.device)
        b = torch.tensor(self.b, dtype=like.dtype, device=like.device)
        return Uniform(a, b) if self.kind == "uniform" else LogNormal(a, b)

    def draw(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        """``n`` draws ``[n]`` from ``generator``."""
        if self.kind == "uniform":
            return self.a + (self.b - self.a) * uniform((n,), generator, like)
        return torch.exp(self.a + self.b * normal((n,), generator, like))


# Paper Table 1 = the official code's "peaked" priors (lcpfn/curves.py); weights U(0, 1)
# (lcpfn/domhan_prior.py ``prior_weights``); noise std exp(N(-4, 1)) (``var_lnloc=-4, var_lnscale=1``).
PARAMETERS: dict[str, ParameterPrior] = {
    "w_pow3": ParameterPrior("uniform", 0.0, 1.0),
    "w_janoschek": ParameterPrior("uniform", 0.0, 1.0),
    "w_ilog2": ParameterPrior("uniform", 0.0, 1.0),
    "pow3_c": ParameterPrior("uniform", 0.0, 1.25),
    "pow3_a": ParameterPrior("uniform", -0.6, 0.6),
    "pow3_alpha": ParameterPrior("lognormal", 0.0, 2.0),
    "janoschek_alpha": ParameterPrior("uniform", 0.0, 1.0),
    "janoschek_beta": ParameterPrior("uniform", 0.0, 2.0),
    "janoschek_kappa": ParameterPrior("lognormal", -2.0, 1.0),
    "janoschek_delta": ParameterPrior("lognormal", 0.0, 0.5),
    "ilog2_c": ParameterPrior("uniform", 0.0, 1.0),
    "ilog2_a": ParameterPrior("uniform", -0.5, 0.5),
    "sigma": ParameterPrior("lognormal", -4.0, 1.0),
}


def parameter_distributions(like: Tensor) -> dict[str, Distribution]:
    """Every parameter's (untruncated) prior as a torch distribution, in :data:`PARAMETERS` order."""
    return {name: p.distribution(like) for name, p in PARAMETERS.items()}


def pow3(t: Tensor, c: Tensor, a: Tensor, alpha: Tensor) -> Tensor:
    """``c - a * t^(-alpha)``; parameters ``[...]``, epochs ``t`` ``[T]`` -> ``[..., T]``."""
    return c[..., None] - a[..., None] * t ** (-alpha[..., None])


def janoschek(t: Tensor, alpha: Tensor, beta: Tensor, kappa: Tensor, delta: Tensor) -> Tensor:
    """``alpha - (alpha - beta) * exp(-kappa * t^delta)``; ``[...]`` and ``[T]`` -> ``[..., T]``."""
    alpha = alpha[..., None]
    return alpha - (alpha - beta[..., None]) * torch.exp(-kappa[..., None] * t ** delta[..., None])


def ilog2(t: Tensor, c: Tensor, a: Tensor) -> Tensor:
    """``c - a / log(t + 1)``; ``[...]`` and ``[T]`` -> ``[..., T]``."""
    return c[..., None] - a[..., None] / torch.log(t + 1)


def curve_mean(params: dict[str, Tensor], t: Tensor) -> Tensor:
    """The noise-free curve ``f(t)`` for parameters ``[...]`` (names of :data:`PARAMETERS`) at epochs ``t`` ``[T]``.

    Returns:
        ``[..., T]``.
    """
    p = params
    return (p["w_pow3"][..., None] * pow3(t, p["pow3_c"], p["pow3_a"], p["pow3_alpha"])
            + p["w_janoschek"][..., None] * janoschek(t, p["janoschek_alpha"], p["janoschek_beta"],
                                                      p["janoschek_kappa"], p["janoschek_delta"])
            + p["w_ilog2"][..., None] * ilog2(t, p["ilog2_c"], p["ilog2_a"]))


def is_valid(f: Tensor) -> Tensor:
    """The rejection rule on noise-free curves ``f`` ``[..., m]``: ``f(m) > f(1)``, all of ``f``
    in ``[0, 1]``, no NaN. Returns bool ``[...]``."""
    return (f[..., -1] > f[..., 0]) & ((f >= 0) & (f <= 1)).all(-1) & ~torch.isnan(f).any(-1)


def epochs(length: int, like: Tensor) -> Tensor:
    """Epoch indices ``1..length`` ``[length]`` on ``like``'s device and dtype."""
    return torch.arange(1, int(length) + 1, dtype=like.dtype, device=like.device)


def draw_cutoffs(batch_size: int, length: int, generator: torch.Generator | None, like: Tensor,
                 min_observed: int = 1) -> Tensor:
    """Right-censoring cut-offs ``T'`` uniform on ``{min_observed, ..., length - 1}``: int64 ``[batch_size]``.

    The official code's ``get_uniform_single_eval_pos_sampler(length, min_len=1)``: at least one
    epoch is observed and at least one is left to predict.
    """
    if not 1 <= int(min_observed) <= int(length) - 1:
        raise ValueError(f"min_observed must be in [1, length - 1 = {int(length) - 1}], got {min_observed}")
    return randint(int(min_observed), int(length), (int(batch_size),), generator, like)


def censor(x: Tensor, y: Tensor, cutoff: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Split curves at one cut-off: ``(train_x, train_y, test_x, test_y)`` = epochs ``<= cutoff`` and the rest.

    Args:
        x: ``[B, m, 1]`` epochs in order; y: ``[B, m]``.
        cutoff: observed epochs ``T'`` with ``1 <= T' < m``.
    """
    m = x.shape[1]
    if not 1 <= int(cutoff) < m:
        raise ValueError(f"cutoff must be in [1, {m - 1}] for curves of {m} epochs, got {cutoff}")
    c = int(cutoff)
    return x[:, :c], y[:, :c], x[:, c:], y[:, c:]


class CensoredCurves(NamedTuple):
    """Prior curves with a right-censoring cut-off per curve.

    Attributes:
        x: ``[B, m, 1]`` epochs ``1..m``; y: ``[B, m]`` noisy observations.
        cutoff: int64 ``[B]``: curve ``b`` is observed at epochs ``1..cutoff[b]``.
        observed: bool ``[B, m]``, ``True`` where ``t <= cutoff`` (the rest is to be predicted).
    """

    x: Tensor
    y: Tensor
    cutoff: Tensor
    observed: Tensor


class LearningCurvePrior(TaskPrior):
    """LC-PFN's prior over learning curves (the module docstring has the model).

    ``sample(batch_size, seq_len)`` returns ``x`` ``[B, seq_len, 1]`` = epochs ``1..seq_len``
    (float, in order) and ``y`` ``[B, seq_len]`` noisy curve values; the rejection rule is
    applied over the ``seq_len`` epochs drawn (``seq_len = 100`` in the paper).

    Args:
        noise_loc, noise_scale: ``log sigma ~ N(noise_loc, noise_scale^2)`` (code: -4, 1).
        noisy: targets are the noisy ``y`` (the paper's ``noisy_target=True``); ``False`` gives
            the noise-free ``f``.
    """

    def __init__(self, noise_loc: float = -4.0, noise_scale: float = 1.0, noisy: bool = True) -> None:
        super().__init__(max_features=1)
        if not float(noise_scale) > 0:
            raise ValueError(f"noise_scale must be positive, got {noise_scale!r}")
        self.noise_loc, self.noise_scale, self.noisy = float(noise_loc), float(noise_scale), bool(noisy)
        self.parameters_prior = {**PARAMETERS, "sigma": ParameterPrior("lognormal", self.noise_loc, self.noise_scale)}

    def settings(self) -> dict[str, Any]:
        return dict(noise_loc=self.noise_loc, noise_scale=self.noise_scale, noisy=self.noisy)

    def draw(self, batch_size: int, seq_len: int, num_features: int,
             generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        x, y, _ = self.sample_with_parameters(batch_size, seq_len, generator)
        return x, y

    def sample_parameters(self, batch_size: int, length: int = CURVE_LENGTH,
                          generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw accepted parameter sets from the truncated prior: name -> ``[batch_size]``, plus
        ``"f"`` ``[batch_size, length]``, the noise-free curves."""
        if int(batch_size) < 1 or int(length) < 2:
            raise ValueError(f"batch_size must be >= 1 and length >= 2, got {batch_size} and {length}")
        like = self._anchor
        t = epochs(length, like)
        kept: list[dict[str, Tensor]] = []
        have = 0
        for _ in range(_MAX_ROUNDS):
            n = (int(batch_size) - have) * _OVERSAMPLE
            cand = {name: p.draw(n, generator, like) for name, p in self.parameters_prior.items()}
            cand["f"] = curve_mean(cand, t)
            ok = is_valid(cand["f"])
            kept.append({k: v[ok] for k, v in cand.items()})
            have += int(ok.sum())
            if have >= batch_size:
                return {k: torch.cat([d[k] for d in kept])[:batch_size] for k in cand}
        raise RuntimeError(f"the rejection rule kept only {have} of {batch_size} curves in {_MAX_ROUNDS} rounds; "
                           "the noise-free curves almost never satisfy f(m) > f(1) and 0 <= f <= 1")

    def sample_with_parameters(self, batch_size: int, seq_len: int = CURVE_LENGTH,
                               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Like :meth:`sample`, also returning the parameters (see :meth:`sample_parameters`).

        Returns:
            ``(x [B, seq_len, 1], y [B, seq_len], params)``.
        """
        params = self.sample_parameters(batch_size, seq_len, generator)
        f = params["f"]
        y = f + params["sigma"][:, None] * normal(tuple(f.shape), generator, f) if self.noisy else f
        x = epochs(seq_len, f).expand(int(batch_size), -1).unsqueeze(-1)
        return x, y, params

    def sample_censored(self, batch_size: int, seq_len: int = CURVE_LENGTH,
                        generator: torch.Generator | None = None, min_observed: int = 1) -> CensoredCurves:
        """Curves with one random right-censoring cut-off each (:func:`draw_cutoffs`)."""
        x, y = self.sample(batch_size, seq_len, generator=generator)
        cutoff = draw_cutoffs(batch_size, seq_len, generator, self._anchor, min_observed)
        observed = torch.arange(1, seq_len + 1, device=x.device) <= cutoff[:, None]
        return CensoredCurves(x, y, cutoff, observed)
