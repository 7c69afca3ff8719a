"""Error regression: PV-RNN's online inference (Ahmadi & Tani 2019, arXiv 1811.01339).

At every new time step ``t`` a window over the latest ``W`` observations slides forward. Only
the window's adaptive vectors are optimised (the weights stay frozen) on the window's
weighted negative lower bound, starting from the state kept from before the window; then
the future is predicted by running on from the window's end with ``z`` drawn from the prior.
All sequences of a batch are regressed at once: the objective is a sum over sequences whose
terms share no adaptive vectors, and Adam acts elementwise, so each sequence follows the
same path it would alone (up to the random draws).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from bayesnets.pvrnn.model import PVRNN, reconstruction_error

__all__ = ["ErrorRegressionResult", "error_regression", "online_prediction_error"]

#: How the adaptive vector of a newly observed step starts: a copy of the previous step's
#: (LibPvrnn's default) or zeros (``q = N(0, I)``).
INIT_MODES = ("previous", "zero")


@dataclass
class ErrorRegressionResult:
    """Output of :func:`error_regression` on ``B`` sequences of ``T`` steps.

    Attributes:
        predictions: ``[B, T, horizon, X]``; ``predictions[:, t, k]`` predicts ``x_{t+1+k}``
            from ``x_0..x_t`` (entries past the end of the sequence are predictions all the same).
        window_error_before: ``[B, T]`` the window's mean reconstruction error at step ``t``
            before optimisation (posterior mean, newest vector freshly initialised).
        window_error_after: ``[B, T]`` the same after optimisation.
        mu, log_sigma: per layer, the adaptive vectors of the last window ``[B, W, Z_l]``.
    """

    predictions: Tensor
    window_error_before: Tensor
    window_error_after: Tensor
    mu: list[Tensor]
    log_sigma: list[Tensor]


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def error_regression(model: PVRNN, observations: Tensor, window: int, iterations: int, lr: float,
                     horizon: int = 1, meta_prior: float | Sequence[float] | None = None,
                     meta_prior_init: float | Sequence[float] | None = None, init: str = "previous",
                     sample: bool = True, progress: bool = False) -> ErrorRegressionResult:
    """Online prediction with error regression, vectorised over a batch of sequences.

    Args:
        model: a trained :class:`PVRNN` (left unchanged).
        observations: ``[B, T, X]``, revealed one step at a time.
        window: ``W``, how many of the latest steps are regressed (1 <= W <= T).
        iterations: Adam steps per time step (0: no regression, the vectors keep their initial values).
        lr: Adam learning rate on the adaptive vectors (Idei et al. use 0.09 with W = 10, 50 iterations).
        horizon: how many steps ahead to predict at each step.
        meta_prior, meta_prior_init: ``w`` and ``w1`` during regression (default: the model's).
        init: how a new step's vector starts, one of :data:`INIT_MODES`.
        sample: reparameterised posterior samples inside the optimisation (as in training); the
            window's state for prediction and the kept state always use the posterior mean.
        progress: tqdm bar over time steps.

    Returns:
        an :class:`ErrorRegressionResult`.

    Raises:
        ValueError: ``observations`` not ``[B, T, model.output_dim]``, ``window`` not in ``[1, T]``,
            bad ``iterations``/``lr``/``horizon``/``init``.
    """
    x = model.check_observations(observations)
    b, num_steps, _ = x.shape
    _check_int(window, "window", 1)
    if window > num_steps:
        raise ValueError(f"window ({window}) is longer than the sequences (T = {num_steps} steps in observations)")
    _check_int(iterations, "iterations", 0)
    _check_int(horizon, "horizon", 1)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if init not in INIT_MODES:
        raise ValueError(f"init must be one of {INIT_MODES}, got {init!r}")

    kept = model.initial_state(b)  # state just before the window's first step
    mu = [x.new_zeros(b, 0, z) for z in model.latent_sizes]
    log_sigma = [x.new_zeros(b, 0, z) for z in model.latent_sizes]
    predictions = x.new_empty(b, num_steps, horizon, model.output_dim)
    before, after = x.new_empty(b, num_steps), x.new_empty(b, num_steps)

    def window_error(start: int, pairs) -> tuple[Tensor, object]:
        roll = model.unroll(state=kept, posterior=pairs, sample=False)
        return reconstruction_error(x[:, start:t + 1], roll.output).mean(1), roll.state

    for t in tqdm(range(num_steps), desc="error regression", disable=not progress, leave=False):
        with torch.no_grad():
            if mu[0].shape[1] == window:  # slide: the oldest step leaves the window and is kept
                kept = model.infer_state([(m[:, :1], s[:, :1]) for m, s in zip(mu, log_sigma)], kept)
                mu, log_sigma = [m[:, 1:] for m in mu], [s[:, 1:] for s in log_sigma]
            fresh = init == "zero" or mu[0].shape[1] == 0
            mu = [torch.cat([m, m.new_zeros(b, 1, m.shape[-1]) if fresh else m[:, -1:]], 1) for m in mu]
            log_sigma = [torch.cat([s, s.new_zeros(b, 1, s.shape[-1]) if fresh else s[:, -1:]], 1)
                         for s in log_sigma]
            start = t + 1 - mu[0].shape[1]
            before[:, t] = window_error(start, list(zip(mu, log_sigma)))[0]

        params = [p.clone().requires_grad_(True) for p in (*mu, *log_sigma)]
        if iterations:
            opt = torch.optim.Adam(params, lr=lr)
            target = x[:, start:t + 1]
            for _ in range(iterations):
                with torch.enable_grad():
                    pairs = list(zip(params[:model.num_layers], params[model.num_layers:]))
                    roll = model.unroll(state=kept, posterior=pairs, sample=sample)
                    loss = model.negative_lower_bound(target, roll, meta_prior, meta_prior_init).sum()
                    # Gradients of the adaptive vectors only: the weights' .grad is never touched.
                    grads = torch.autograd.grad(loss, params)
                for p, g in zip(params, grads):
                    p.grad = g
                opt.step()

        with torch.no_grad():
            mu = [p.detach() for p in params[:model.num_layers]]
            log_sigma = [p.detach() for p in params[model.num_layers:]]
            after[:, t], end = window_error(start, list(zip(mu, log_sigma)))
            predictions[:, t] = model.unroll(horizon, end, sample=True).output
    return ErrorRegressionResult(predictions, before, after, mu, log_sigma)


def online_prediction_error(predictions: Tensor, observations: Tensor, start: int = 0) -> Tensor:
    """Mean squared error of online predictions against what came next.

    Args:
        predictions: ``[B, T, H, X]``, ``predictions[:, t, k]`` predicting ``x_{t+1+k}``.
        observations: ``[B, T, X]``.
        start: ignore predictions made before step ``start`` (warm-up).

    Returns:
        ``[H]``: for each lead ``k + 1``, the squared error averaged over output dimensions,
        sequences and every ``t >= start`` whose target lies inside the sequence.
    """
    if predictions.dim() != 4 or observations.dim() != 3 or predictions.shape[:2] != observations.shape[:2] \
            or predictions.shape[-1] != observations.shape[-1]:
        raise ValueError(f"predictions must be [B, T, H, X] matching observations [B, T, X], got "
                         f"{tuple(predictions.shape)} and {tuple(observations.shape)}")
    num_steps, horizon = observations.shape[1], predictions.shape[2]
    errors = []
    for k in range(horizon):
        last = num_steps - 1 - k  # predictions made at t < last have a target
        if last <= start:
            raise ValueError(
                f"no targets for lead {k + 1}: need T > start + {k + 1} (T = {num_steps}, start = {start})")
        pred = predictions[:, start:last, k]
        target = observations[:, start + 1 + k:num_steps]
        errors.append(reconstruction_error(target, pred).mean())
    return torch.stack(errors)
