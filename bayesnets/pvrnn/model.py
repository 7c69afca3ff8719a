"""PV-RNN: the predictive-coding-inspired variational RNN (Ahmadi & Tani 2019, arXiv 1811.01339).

A stack of multiple-timescale RNN (MTRNN) layers, each with a stochastic latent ``z^l_t``.
There is no encoder: the approximate posterior of every training sequence and time step is
a free *adaptive vector* ``A_t = (A^mu_t, A^sigma_t)`` with ``mu^q = tanh(A^mu)`` and
``sigma^q = exp(A^sigma)``, and data reach it only through back-propagated prediction error.
The prior of ``z^l_t`` is a small network on the layer's previous deterministic state
(``N(0, I)`` at the first step of a sequence). Layer ``l`` (0 = next to the output, the last
one = top) updates as a leaky integrator with time constant ``tau_l``::

    h_t = (1 - 1/tau) h_{t-1} + (1/tau) (W_dd d_{t-1} + W_zd z_t + W_hd d^{l+1}_t + b),   d_t = tanh(h_t)

the top layer first at each step, and the output is ``x_hat_t = W_out d^0_t``.

Training minimises the negative lower bound, weighted by the meta-prior ``w``::

    sum_t [ ||x_t - x_hat_t||^2 / dim(x) + sum_l w_l KL(q(z^l_t) || p(z^l_t)) / dim(z^l) ]

with a separate weight ``w1`` at ``t = 1`` (the conventions of the authors' lab library
LibPvrnn: reconstruction error averaged over output dimensions, KL averaged over latent
dimensions). Error regression (online inference) lives in
:mod:`bayesnets.pvrnn.error_regression`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from inference.checks import renamed_kwargs
from inference.seeding import base_seed, seeded
from inference.training.fit import Fit
from inference.training.trainer import Trainer

__all__ = [
    "PVRNN",
    "AdaptiveVectors",
    "MTRNNLayer",
    "PVRNNFit",
    "PVRNNTrainer",
    "Rollout",
    "State",
    "check_sequences",
    "gaussian_kl",
    "reconstruction_error",
    "train_pvrnn",
]


# ------------------------------------------------------------------ shared numerics
def reconstruction_error(x: Tensor, x_hat: Tensor) -> Tensor:
    """Squared error averaged over the output dimensions (LibPvrnn's convention).

    Args:
        x, x_hat: ``[..., X]``.

    Returns:
        ``[...]``.
    """
    return (x - x_hat).pow(2).mean(-1)


def gaussian_kl(mu_q: Tensor, log_sigma_q: Tensor, mu_p: Tensor, log_sigma_p: Tensor) -> Tensor:
    """``KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2))`` per dimension, from log standard deviations.

    ``log(sigma_p/sigma_q) + ((mu_p - mu_q)^2 + sigma_q^2) / (2 sigma_p^2) - 1/2``; all inputs broadcast.
    """
    return (log_sigma_p - log_sigma_q
            + 0.5 * ((mu_p - mu_q).pow(2) + torch.exp(2 * log_sigma_q)) * torch.exp(-2 * log_sigma_p) - 0.5)


def check_sequences(x: object, output_dim: int, name: str = "observations") -> Tensor:
    """Validate a batch of sequences ``[B, T, output_dim]``.

    Raises:
        TypeError: ``x`` is not a floating tensor.
        ValueError: wrong rank, wrong last dimension, empty, or non-finite values.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, T, {output_dim}], got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.dim() != 3 or x.shape[-1] != output_dim:
        raise ValueError(
            f"{name} must have shape [B, T, {output_dim}] (batch, time, output_dim={output_dim}), "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): need B >= 1 sequences of T >= 1 steps")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _per_layer(value: float | Sequence[float], num_layers: int, name: str) -> tuple[float, ...]:
    values = (value,) * num_layers if isinstance(value, (int, float)) else tuple(value)
    if len(values) != num_layers:
        raise ValueError(f"{name} needs one value per layer ({num_layers}), got {len(values)}")
    if any(not float(v) >= 0 for v in values):
        raise ValueError(f"{name} must be non-negative, got {values}")
    return tuple(float(v) for v in values)


# ------------------------------------------------------------------------- state
class State(NamedTuple):
    """The deterministic state of every layer (bottom to top) before time step ``t``.

    Attributes:
        h: per layer, internal (pre-tanh) states ``[B, H_l]``.
        d: per layer, outputs ``d = tanh(h)`` ``[B, H_l]``.
        t: absolute time index of the next step (0 = start of the sequence, whose prior is ``N(0, I)``).
    """

    h: tuple[Tensor, ...]
    d: tuple[Tensor, ...]
    t: int

    def repeat(self, n: int) -> State:
        """Each sequence's state repeated ``n`` times (``[B, H] -> [B * n, H]``, sample-major per sequence)."""
        return State(tuple(h.repeat_interleave(n, 0) for h in self.h),
                     tuple(d.repeat_interleave(n, 0) for d in self.d), self.t)


class Rollout(NamedTuple):
    """What :meth:`PVRNN.unroll` computed over ``T`` steps.

    Attributes:
        output: predictions ``x_hat`` ``[B, T, X]``.
        kl: ``KL(q || p) / dim(z^l)`` per step and layer ``[B, T, L]`` (zeros when sampling the prior).
        z: per layer, the latent values used ``[B, T, Z_l]``.
        prior_mu, prior_log_sigma: per layer, the prior's parameters ``[B, T, Z_l]``.
        state: the state after the last step.
        t0: absolute time index of the first step.
    """

    output: Tensor
    kl: Tensor
    z: tuple[Tensor, ...]
    prior_mu: tuple[Tensor, ...]
    prior_log_sigma: tuple[Tensor, ...]
    state: State
    t0: int


# ------------------------------------------------------------------------ layers
class MTRNNLayer(nn.Module):
    """One PV-RNN level: a leaky-integrator (multiple-timescale) RNN layer with a stochastic latent.

    Args:
        hidden_size: deterministic units ``H``.
        latent_size: stochastic units ``Z``.
        tau: time constant (>= 1); ``tau = 1`` is a plain tanh RNN update.
        top_down_size: units of the layer above, or None for the top layer.
    """

    def __init__(self, hidden_size: int, latent_size: int, tau: float, top_down_size: int | None = None) -> None:
        super().__init__()
        for name, v in (("hidden_size", hidden_size), ("latent_size", latent_size)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not float(tau) >= 1.0:
            raise ValueError(f"tau must be >= 1 (1 = plain RNN update), got {tau!r}")
        self.hidden_size, self.latent_size, self.tau = hidden_size, latent_size, float(tau)
        self.recurrent = nn.Linear(hidden_size, hidden_size)  # W_dd and the bias b
        self.latent = nn.Linear(latent_size, hidden_size, bias=False)  # W_zd
        self.top_down = None if top_down_size is None else nn.Linear(top_down_size, hidden_size, bias=False)
        self.prior = nn.Linear(hidden_size, 2 * latent_size)  # (mu, log sigma) of p(z_t | d_{t-1})

    def update(self, h: Tensor, d: Tensor, latent_drive: Tensor, d_above: Tensor | None) -> tuple[Tensor, Tensor]:
        """One leaky-integrator step.

        Args:
            h, d: previous internal state and output ``[B, H]``.
            latent_drive: ``W_zd z_t`` ``[B, H]``.
            d_above: the upper layer's output at this step ``[B, H_above]`` (None for the top layer).

        Returns:
            ``(h_t, d_t)``, each ``[B, H]``.
        """
        drive = self.recurrent(d) + latent_drive
        if self.top_down is not None:
            drive = drive + self.top_down(d_above)
        # (1 - 1/tau) h + drive / tau: at tau = 1 the first term is exactly 0 * h, a plain RNN.
        h = (1.0 - 1.0 / self.tau) * h + drive / self.tau
        return h, torch.tanh(h)

    def prior_params(self, d_prev: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu^p, log sigma^p)`` of ``z_t`` from ``d_{t-1}`` ``[..., H]``; each ``[..., Z]``."""
        mu, log_sigma = self.prior(d_prev).split(self.latent_size, dim=-1)
        return torch.tanh(mu), log_sigma


class AdaptiveVectors(nn.Module):
    """The approximate posterior of PV-RNN: one free vector pair per sequence, step and layer.

    ``mu^q = tanh(A^mu)``, ``sigma^q = exp(A^sigma)``. Made by :meth:`PVRNN.adaptive_vectors`;
    zero-initialised (``q = N(0, I)``, the first step's prior).

    Attributes:
        mu: per layer, ``A^mu`` ``[B, T, Z_l]``.
        log_sigma: per layer, ``A^sigma`` ``[B, T, Z_l]``.
    """

    def __init__(self, mu: Sequence[Tensor], log_sigma: Sequence[Tensor]) -> None:
        super().__init__()
        self.mu = nn.ParameterList([nn.Parameter(m) for m in mu])
        self.log_sigma = nn.ParameterList([nn.Parameter(s) for s in log_sigma])

    def pairs(self) -> list[tuple[Tensor, Tensor]]:
        """``[(A^mu, A^sigma)]`` per layer, the ``posterior`` argument of :meth:`PVRNN.unroll`."""
        return list(zip(self.mu, self.log_sigma))

    def select(self, index: Tensor | slice | int, steps: slice = slice(None)) -> list[tuple[Tensor, Tensor]]:
        """The pairs of some sequences (``index``) and time steps (``steps``), detached."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return [(m[index, steps].detach(), s[index, steps].detach()) for m, s in self.pairs()]


# ------------------------------------------------------------------------- model
class PVRNN(nn.Module):
    """Predictive-coding-inspired variational RNN (Ahmadi & Tani 2019, arXiv 1811.01339).

    Args:
        output_dim: dimension ``X`` of the observations.
        hidden_sizes: deterministic units per layer, bottom (next to the output) to top.
        latent_sizes: stochastic units per layer, same order.
        taus: time constants per layer, same order (slower layers on top, e.g. ``(2, 8)``).
        meta_prior: ``w``, the KL weight for ``t > 1``; a float or one per layer.
        meta_prior_init: ``w1``, the KL weight at ``t = 1`` (default: ``meta_prior``).

    Example:
        >>> model = PVRNN(2, hidden_sizes=(24, 8), latent_sizes=(2, 1), taus=(2, 8), meta_prior=0.01)
        >>> fit = train_pvrnn(model, x_train, num_steps=2000, lr=1e-2)    # x_train [N, T, 2]
        >>> samples = model.generate(100, num_samples=5, like=x_train)    # [5, 100, 2]
        >>> result = error_regression(model, x_test, window=10, iterations=30, lr=0.05)
    """

    def __init__(self, output_dim: int, hidden_sizes: Sequence[int], latent_sizes: Sequence[int],
                 taus: Sequence[float], meta_prior: float | Sequence[float] = 1.0,
                 meta_prior_init: float | Sequence[float] | None = None) -> None:
        super().__init__()
        if not isinstance(output_dim, int) or output_dim < 1:
            raise ValueError(f"output_dim must be a positive int, got {output_dim!r}")
        hidden_sizes, latent_sizes, taus = tuple(hidden_sizes), tuple(latent_sizes), tuple(taus)
        if not hidden_sizes or not len(hidden_sizes) == len(latent_sizes) == len(taus):
            raise ValueError(
                "hidden_sizes, latent_sizes and taus need one entry per layer (at least one layer), got lengths "
                f"{len(hidden_sizes)}, {len(latent_sizes)}, {len(taus)}"
            )
        self.output_dim, self.num_layers = output_dim, len(hidden_sizes)
        self.latent_sizes = latent_sizes
        above = (*hidden_sizes[1:], None)
        self.layers = nn.ModuleList(
            [MTRNNLayer(h, z, tau, a) for h, z, tau, a in zip(hidden_sizes, latent_sizes, taus, above)]
        )
        self.readout = nn.Linear(hidden_sizes[0], output_dim)
        self.meta_prior = _per_layer(meta_prior, self.num_layers, "meta_prior")
        init = meta_prior if meta_prior_init is None else meta_prior_init
        self.meta_prior_init = _per_layer(init, self.num_layers, "meta_prior_init")

    # ------------------------------------------------------------------ helpers
    def _like(self) -> Tensor:
        return self.readout.weight

    def check_observations(self, observations: object, name: str = "observations") -> Tensor:
        """:func:`check_sequences` against this model's ``output_dim``, plus a device check."""
        x = check_sequences(observations, self.output_dim, name)
        if x.device != self._like().device:
            raise ValueError(f"{name} is on {x.device} but the model is on {self._like().device}; "
                             f"move the model with model.to({name}.device)")
        return x

    def initial_state(self, batch_size: int) -> State:
        """``h_0 = d_0 = 0`` for every layer, at ``t = 0``."""
        zeros = tuple(self._like().new_zeros(batch_size, layer.hidden_size) for layer in self.layers)
        return State(zeros, zeros, 0)

    def adaptive_vectors(self, num_sequences: int, num_steps: int) -> AdaptiveVectors:
        """Zero-initialised adaptive vectors ``[num_sequences, num_steps, Z_l]`` on the model's device/dtype."""
        like = self._like()
        zeros = [like.new_zeros(num_sequences, num_steps, z) for z in self.latent_sizes]
        return AdaptiveVectors(zeros, [z.clone() for z in zeros])

    def _check_posterior(self, posterior: Sequence[tuple[Tensor, Tensor]], batch: int | None) -> tuple[int, int]:
        if len(posterior) != self.num_layers:
            raise ValueError(f"posterior needs one (A_mu, A_sigma) pair per layer ({self.num_layers}), "
                             f"got {len(posterior)}")
        b, t = posterior[0][0].shape[:2]
        for i, ((mu, ls), z) in enumerate(zip(posterior, self.latent_sizes)):
            if mu.shape != (b, t, z) or ls.shape != (b, t, z):
                raise ValueError(f"posterior layer {i} must be two tensors of shape [{b}, {t}, {z}], "
                                 f"got {tuple(mu.shape)} and {tuple(ls.shape)}")
        if batch is not None and b != batch:
            raise ValueError(f"posterior has {b} sequences but the state has {batch}")
        return b, t

    # ------------------------------------------------------------------ dynamics
    def unroll(self, num_steps: int | None = None, state: State | None = None,
               posterior: Sequence[tuple[Tensor, Tensor]] | None = None, sample: bool = True,
               batch_size: int | None = None) -> Rollout:
        """Run the network forward.

        With ``posterior`` (per layer ``(A^mu, A^sigma)`` ``[B, T, Z_l]``), ``z`` comes from the
        approximate posterior; the posterior does not depend on the state, so all ``z`` and their
        input drives are computed up front and the prior and KL after the loop, in batch.
        Without it, ``z`` is drawn from the prior step by step (free-running generation).

        Args:
            num_steps: steps ``T`` (default: the posterior's length; required without one).
            state: start state (default: :meth:`initial_state`, ``t = 0``).
            posterior: adaptive vectors, or None to sample the prior.
            sample: draw ``z = mu + sigma * eps``; False uses the mean (posterior or prior).
            batch_size: ``B`` when neither ``state`` nor ``posterior`` gives it.

        Returns:
            a :class:`Rollout`.
        """
        batch = None if state is None else state.h[0].shape[0]
        if posterior is not None:
            batch, length = self._check_posterior(posterior, batch)
            if num_steps is not None and num_steps != length:
                raise ValueError(f"num_steps ({num_steps}) differs from the posterior's length ({length})")
            num_steps = length
        if batch is None:
            batch = batch_size
        if batch is None or num_steps is None:
            raise ValueError("unroll needs num_steps and a batch size (from state, posterior or batch_size)")
        if state is None:
            state = self.initial_state(batch)
        return (self._unroll_prior if posterior is None else self._unroll_posterior)(num_steps, state, posterior,
                                                                                      sample)

    def _prior_or_unit(self, layer: MTRNNLayer, d_prev: Tensor, t: int) -> tuple[Tensor, Tensor]:
        if t == 0:  # the first step's prior is N(0, I)
            zero = d_prev.new_zeros(d_prev.shape[0], layer.latent_size)
            return zero, zero
        return layer.prior_params(d_prev)

    def _unroll_posterior(self, num_steps: int, state: State, posterior, sample: bool) -> Rollout:
        zs, drives = [], []
        for layer, (a_mu, a_ls) in zip(self.layers, posterior):
            z = torch.tanh(a_mu)
            if sample:
                z = z + torch.exp(a_ls) * torch.randn_like(a_ls)
            zs.append(z)
            drives.append(layer.latent(z))  # [B, T, H]
        h, d = list(state.h), list(state.d)
        ds: list[list[Tensor]] = [[x] for x in d]  # d_{t-1} for every step, then the last
        for t in range(num_steps):
            for i in reversed(range(self.num_layers)):
                above = d[i + 1] if i + 1 < self.num_layers else None
                h[i], d[i] = self.layers[i].update(h[i], d[i], drives[i][:, t], above)
                ds[i].append(d[i])
        prior_mu, prior_ls, kls = [], [], []
        for i, layer in enumerate(self.layers):
            d_prev = torch.stack(ds[i][:-1], 1)  # [B, T, H]
            mu_p, ls_p = layer.prior_params(d_prev)
            if state.t == 0:
                mask = torch.ones_like(mu_p[:1, :, :1])
                mask[:, 0] = 0.0
                mu_p, ls_p = mu_p * mask, ls_p * mask
            prior_mu.append(mu_p)
            prior_ls.append(ls_p)
            a_mu, a_ls = posterior[i]
            kls.append(gaussian_kl(torch.tanh(a_mu), a_ls, mu_p, ls_p).mean(-1))
        output = self.readout(torch.stack(ds[0][1:], 1))
        return Rollout(output, torch.stack(kls, -1), tuple(zs), tuple(prior_mu), tuple(prior_ls),
                       State(tuple(h), tuple(d), state.t + num_steps), state.t)

    def _unroll_prior(self, num_steps: int, state: State, posterior, sample: bool) -> Rollout:
        h, d = list(state.h), list(state.d)
        zs, mus, lss = ([[] for _ in self.layers] for _ in range(3))
        outs = []
        for t in range(num_steps):
            d_prev = list(d)
            for i in reversed(range(self.num_layers)):
                layer = self.layers[i]
                mu_p, ls_p = self._prior_or_unit(layer, d_prev[i], state.t + t)
                z = mu_p + torch.exp(ls_p) * torch.randn_like(ls_p) if sample else mu_p
                above = d[i + 1] if i + 1 < self.num_layers else None
                h[i], d[i] = layer.update(h[i], d[i], layer.latent(z), above)
                zs[i].append(z)
                mus[i].append(mu_p)
                lss[i].append(ls_p)
            outs.append(d[0])
        output = self.readout(torch.stack(outs, 1))
        stack = lambda xs: tuple(torch.stack(x, 1) for x in xs)  # noqa: E731
        kl = output.new_zeros(output.shape[0], num_steps, self.num_layers)
        return Rollout(output, kl, stack(zs), stack(mus), stack(lss),
                       State(tuple(h), tuple(d), state.t + num_steps), state.t)

    # ------------------------------------------------------------------ objective
    def kl_weights(self, t0: int, num_steps: int, like: Tensor, meta_prior: float | Sequence[float] | None = None,
                   meta_prior_init: float | Sequence[float] | None = None) -> Tensor:
        """The meta-prior per step and layer ``[T, L]``: ``w1`` at absolute ``t = 0``, ``w`` after."""
        w = self.meta_prior if meta_prior is None else _per_layer(meta_prior, self.num_layers, "meta_prior")
        w1 = self.meta_prior_init if meta_prior_init is None else _per_layer(
            meta_prior_init, self.num_layers, "meta_prior_init")
        weights = like.new_tensor(w).expand(num_steps, -1).clone()
        if t0 == 0:
            weights[0] = like.new_tensor(w1)
        return weights

    def negative_lower_bound(self, observations: Tensor, rollout: Rollout,
                             meta_prior: float | Sequence[float] | None = None,
                             meta_prior_init: float | Sequence[float] | None = None) -> Tensor:
        """The paper's weighted negative lower bound of each sequence, summed over time.

        Args:
            observations: ``[B, T, X]``, aligned with ``rollout``.
            rollout: from :meth:`unroll` with a posterior.
            meta_prior, meta_prior_init: override the model's ``w`` and ``w1`` (e.g. during error regression).

        Returns:
            ``[B]``.
        """
        rec = reconstruction_error(observations, rollout.output)  # [B, T]
        w = self.kl_weights(rollout.t0, rec.shape[1], rec, meta_prior, meta_prior_init)
        return rec.sum(1) + (rollout.kl * w).sum((1, 2))

    # ------------------------------------------------------------------ use
    def generate(self, num_steps: int, num_samples: int = 1, state: State | None = None, sample: bool = True) -> Tensor:
        """Free-running generation from the prior.

        Args:
            num_steps: steps to generate.
            num_samples: prior sample paths per start state.
            state: start state ``[B]`` (default: the zero state at ``t = 0``, ``B = 1``); e.g. the
                state after inferring a sequence's first steps (:meth:`infer_state`).
            sample: False follows the prior mean (deterministic).

        Returns:
            ``[num_samples, num_steps, X]`` without ``state``, else ``[B, num_samples, num_steps, X]``.
        """
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        squeeze = state is None
        state = self.initial_state(1) if state is None else state
        batch = state.h[0].shape[0]
        out = self.unroll(num_steps, state.repeat(num_samples), sample=sample).output
        out = out.reshape(batch, num_samples, num_steps, self.output_dim)
        return out[0] if squeeze else out

    def infer_state(self, posterior: Sequence[tuple[Tensor, Tensor]], state: State | None = None) -> State:
        """The state after running through ``posterior``'s steps at the posterior mean."""
        return self.unroll(state=state, posterior=posterior, sample=False).state

    def predict(self, state: State, horizon: int = 1, num_samples: int = 1, sample: bool = True) -> Tensor:
        """Multi-step prediction from ``state`` by sampling the prior.

        Returns:
            ``[B, num_samples, horizon, X]``; ``horizon = 1`` is one-step prediction.
        """
        return self.generate(horizon, num_samples, state, sample)


# ------------------------------------------------------------------------ training
#: Adam step size of the paper and of LibPvrnn.
LEARNING_RATE = 1e-3
#: Full-batch steps unless told otherwise (the paper trains for ~10^5 epochs).
NUM_STEPS = 2000


class _FullBatchTrainer(Trainer):
    """Full-batch training of a sequence model on its weighted negative lower bound, one step per
    epoch: what :class:`PVRNNTrainer` and the VRNN baseline's trainer share, so that both train
    alike (default Adam, lr 1e-3; ``weight_decay`` on the network's weights only)."""

    def __init__(self, num_steps: int = NUM_STEPS, *, lr: float = LEARNING_RATE, **loop: Any) -> None:
        super().__init__(num_steps, lr=lr, **loop)
        if self.batch_size is not None:
            raise ValueError(f"batch_size must be None: {type(self).__name__} trains on all sequences at every "
                             f"step, got batch_size={self.batch_size}")

    def _run(self, model: nn.Module, modules: nn.Module | Mapping[str, nn.Module], loss: Callable[[], Tensor],
             params: list[dict[str, Any]] | None, reseed: bool, progress: bool, desc: str,
             ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The loop on ``loss()``, seeded by the trainer's ``seed`` (``reseed``) or on torch's global
        stream as it stands (the one-call functions' historical behaviour); ``(history, attrs)``."""
        seed = base_seed(self.seed) if reseed else None
        like = next(model.parameters())
        model.train()
        with seeded(seed, like=like) if seed is not None else contextlib.nullcontext():
            result = self._optimize(modules, loss, params=params, progress=progress, desc=desc)
        model.eval()
        return result.history, self._record(result, seed)  # type: ignore[arg-type]


@dataclass
class PVRNNFit(Fit):
    """Result of :class:`PVRNNTrainer` and :func:`train_pvrnn`: the fitted PV-RNN, its history
    and the training sequences' adaptive vectors.

    Attributes:
        module: the trained :class:`PVRNN`.
        history: ``history["loss"]`` ``[num_steps]``: at every training step, the weighted negative
            lower bound averaged over sequences and time steps.
        attrs: trainer, settings, seed, seconds, ...
        adaptive: the training sequences' adaptive vectors ``[N, T, Z_l]`` (their approximate posterior).

    ``PVRNNFit.load(path, module=PVRNN(...))`` rebuilds the adaptive vectors from the saved tensors.
    """

    adaptive: AdaptiveVectors = field(kw_only=True)

    extras = ("adaptive",)

    @classmethod
    def build_extra(cls, name: str, module: nn.Module, saved: Any, attrs: Mapping[str, Any]) -> Any:
        """:class:`AdaptiveVectors` from the saved ``mu.<l>`` and ``log_sigma.<l>`` tensors, on the model's device."""
        if name != "adaptive":
            return super().build_extra(name, module, saved, attrs)
        if not isinstance(module, PVRNN):
            raise TypeError(f"PVRNNFit.load needs a PVRNN module, got {type(module).__name__}")
        device = module.readout.weight.device
        layers = range(module.num_layers)
        missing = [k for i in layers for k in (f"mu.{i}", f"log_sigma.{i}") if k not in saved]
        if missing:
            raise ValueError(f"the saved fit has no adaptive vectors {missing} for this "
                             f"{module.num_layers}-layer PVRNN")
        return AdaptiveVectors([saved[f"mu.{i}"].to(device) for i in layers],
                               [saved[f"log_sigma.{i}"].to(device) for i in layers])


class PVRNNTrainer(_FullBatchTrainer):
    """Fit a PV-RNN's weights and the adaptive vectors of its training sequences jointly, full batch.

    Each step unrolls the model over all sequences with ``z`` sampled from the adaptive vectors
    and minimises the paper's weighted negative lower bound, averaged over sequences and steps
    (Ahmadi & Tani 2019, arXiv 1811.01339). Weights and adaptive vectors share the learning
    rate; ``weight_decay`` applies to the weights only (the adaptive vectors are a posterior,
    held to the prior by the KL term already). Both are trained parameters: both are
    checkpointed (as ``model`` and ``adaptive``).

    Args:
        num_steps: full-batch steps (epochs).
        lr: learning rate (the paper and LibPvrnn: Adam, 1e-3, for very many epochs).
        weight_decay: on the network's weights only.
        Other arguments as for :class:`~inference.training.trainer.Trainer` (default optimiser Adam).

    Example:
        >>> fit = PVRNNTrainer(num_steps=600, lr=1e-2, seed=0).fit(model, x_train)   # x_train [N, T, X]
        >>> fit.adaptive, fit.history["loss"]                                      # [600]
    """

    def fit(self, model: PVRNN, sequences: Tensor, progress: bool = True, *,
            adaptive: AdaptiveVectors | None = None) -> PVRNNFit:
        """Train ``model`` (in place) and the adaptive vectors of ``sequences``.

        Args:
            model: the :class:`PVRNN`.
            sequences: ``[N, T, X]``.
            progress: tqdm bar.
            adaptive: continue from these vectors ``[N, T, Z_l]`` (trained in place; default: fresh zeros).

        Returns:
            A :class:`PVRNNFit`.
        """
        return self._fit(model, sequences, progress, adaptive, reseed=True)

    def _fit(self, model: PVRNN, sequences: Tensor, progress: bool, adaptive: AdaptiveVectors | None,
             reseed: bool) -> PVRNNFit:
        if not isinstance(model, PVRNN):
            raise TypeError(f"model must be a PVRNN, got {type(model).__name__}")
        x = model.check_observations(sequences, "sequences")
        n, t, _ = x.shape
        if adaptive is None:
            adaptive = model.adaptive_vectors(n, t)
        elif not isinstance(adaptive, AdaptiveVectors):
            raise TypeError(f"adaptive must be AdaptiveVectors (e.g. a PVRNNFit's .adaptive), got "
                            f"{type(adaptive).__name__}")
        model._check_posterior(adaptive.pairs(), n)
        if adaptive.mu[0].shape[1] != t:
            raise ValueError(f"adaptive vectors cover {adaptive.mu[0].shape[1]} steps but sequences have {t}")
        groups = [{"params": list(model.parameters()), "weight_decay": self.weight_decay},
                  {"params": list(adaptive.parameters()), "weight_decay": 0.0}]

        def loss() -> Tensor:
            rollout = model.unroll(posterior=adaptive.pairs(), sample=True)
            return model.negative_lower_bound(x, rollout).mean() / t

        history, attrs = self._run(model, {"model": model, "adaptive": adaptive}, loss, groups, reseed, progress,
                                   "PV-RNN")
        return PVRNNFit(model, history, attrs, adaptive=adaptive)


@renamed_kwargs(num_epochs="num_steps")
def train_pvrnn(model: PVRNN, sequences: Tensor, num_steps: int = NUM_STEPS, lr: float = LEARNING_RATE,
                weight_decay: float = 0.0, adaptive: AdaptiveVectors | None = None, progress: bool = True,
                seed: int | None = None) -> PVRNNFit:
    """Fit the weights and the adaptive vectors of ``sequences`` jointly by full-batch Adam:
    :class:`PVRNNTrainer` in one call.

    Args:
        model: the PV-RNN (trained in place).
        sequences: ``[N, T, X]``.
        num_steps: Adam steps (``num_epochs`` before; the paper and LibPvrnn use Adam, lr 1e-3,
            for very many epochs).
        lr: Adam learning rate, for weights and adaptive vectors alike.
        weight_decay: applied to the weights only.
        adaptive: continue from these vectors ``[N, T, Z_l]`` (default: fresh zeros).
        progress: tqdm bar.
        seed: seeds the fit as :class:`PVRNNTrainer`'s ``seed`` does (the caller's random state is
            restored). ``None`` (the default) keeps this function's behaviour from before the
            trainer: training draws from torch's global stream as it stands and leaves it
            advanced, so a script that seeds torch before building its model gets the same numbers.

    Returns:
        a :class:`PVRNNFit` (``fit.history["loss"]``; the deprecated ``fit.losses`` still gives a list).
    """
    trainer = PVRNNTrainer(num_steps, lr=lr, weight_decay=weight_decay, seed=seed)
    return trainer._fit(model, sequences, progress, adaptive, reseed=seed is not None)
