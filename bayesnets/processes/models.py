"""Neural processes: CNP, NP, ANP and the martingale posterior NP (MPNP).

All four map a context set ``{(x_i, y_i)}`` and target inputs to an :class:`NPPredictive`
(a uniform mixture over ``K`` function draws of Gaussians) and differ only in where the
functional uncertainty comes from:

======== ============================ =====================================================
model    deterministic path           function draws
======== ============================ =====================================================
CNP      mean of ``φ(x_i, y_i)``      none (``K = 1``)                  arXiv 1807.01613
NP       mean of ``φ(x_i, y_i)``      latent ``z ~ q(z | context)``     arXiv 1807.01622
ANP      target→context attention     latent ``z`` (self-attentive)     arXiv 1901.05761
MPNP     mean over context ∪ pseudo   generated pseudo-contexts         arXiv 2304.09431
======== ============================ =====================================================

Every model is built from the toolkit in :mod:`bayesnets.processes.encoders` and
:mod:`bayesnets.processes.decoders`; ``CNP(attentive=True)`` is the conditional ANP (CANP).

Training objectives, per task, normalised by the number of points (targets always include
the context, the NP-literature convention):

* CNP: ``-Σ_t log p(y_t | x_t, C)``;
* NP/ANP: the ELBO ``E_{q(z|C∪T)} Σ_t log p(y_t | x_t, C, z) - KL(q(z|C∪T) ‖ q(z|C))`` (negated);
* MPNP: ``-[log (1/K) Σ_k Π_t p(y_t | θ(C ∪ P_k)) + λ_a Σ_t log p(y_t | θ(C)) +
  λ_p (1/K) Σ_k Σ_t log p(y_t | θ(P_k))]`` with ``P_k`` generated pseudo-contexts (see :class:`MPNP`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from bayesnets.processes.data import TaskBatch
from bayesnets.processes.decoders import MIN_STD, GaussianDecoder
from bayesnets.processes.encoders import (
    AttentiveEncoder,
    LatentEncoder,
    PseudoContextGenerator,
    SetEncoder,
    mean_pool,
)
from bayesnets.processes.predictive import NPPredictive

__all__ = ["ANP", "CNP", "MPNP", "NP", "NeuralProcess"]

# Function draws per prediction at evaluation: the NP literature's GP benchmarks average the
# per-point likelihood over 50 draws (juho-lee/bnp, eval_num_samples=50).
NUM_EVAL_SAMPLES = 50


def _gaussian_log_prob(loc: Tensor, scale: Tensor, y: Tensor) -> Tensor:
    """``log N(y | loc, scale²)`` summed over outputs and points: ``[*s, *b, N, y_dim] -> [*s, *b]``."""
    return Normal(loc, scale, validate_args=False).log_prob(y).sum((-2, -1))


def _log_mean_exp(a: Tensor, dim: int = 0) -> Tensor:
    return torch.logsumexp(a, dim) - math.log(a.shape[dim])


class NeuralProcess(nn.Module, ABC):
    """Base class: input checks, :meth:`predict`, :meth:`loss`.

    Subclasses implement :meth:`_components` (the ``K`` Gaussians at the targets) and
    :meth:`_loss` (the per-task training objective).

    Args:
        x_dim: input features.
        y_dim: output features.
        num_samples: default number of function draws ``K`` in :meth:`predict`.
    """

    def __init__(self, x_dim: int, y_dim: int, num_samples: int) -> None:
        super().__init__()
        for name, v in (("x_dim", x_dim), ("y_dim", y_dim), ("num_samples", num_samples)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        self.x_dim, self.y_dim, self.num_samples = int(x_dim), int(y_dim), int(num_samples)

    # ---- checks -------------------------------------------------------------------------------
    def _reference(self) -> Tensor:
        return next(self.parameters())

    def _check_x(self, name: str, x: object) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape [N, {self.x_dim}] or [B, N, {self.x_dim}], "
                            f"got {type(x).__name__}")
        if x.dim() not in (2, 3):
            raise ValueError(f"{name} must have shape [N, x_dim] or [B, N, x_dim], got {tuple(x.shape)}; "
                             "for one feature use x.unsqueeze(-1)")
        return x

    def _check_y(self, name: str, y: object, x: Tensor, x_name: str) -> Tensor:
        if not isinstance(y, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
        if y.dim() == x.dim() - 1 and self.y_dim == 1:
            y = y.unsqueeze(-1)
        want = (*x.shape[:-1], self.y_dim)
        if y.shape != want:
            raise ValueError(f"{name} must have shape {want} (one row per row of {x_name}, y_dim={self.y_dim}), "
                             f"got {tuple(y.shape)}")
        return y

    def _finite(self, name: str, t: Tensor) -> Tensor:
        ref = self._reference()
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but the model is on {ref.device}; move one with .to()")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinite values; drop or impute those points")
        return t.to(ref.dtype)

    def check_inputs(self, context_x: Tensor, context_y: Tensor, target_x: Tensor,
                     target_y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor | None, bool]:
        """Validate and canonicalise inputs to ``[B, N, features]`` in the model's dtype.

        Accepts ``x`` as ``[N, x_dim]`` (one task) or ``[B, N, x_dim]``, ``y`` as ``[N]``/``[N, y_dim]``
        or ``[B, N]``/``[B, N, y_dim]`` (the 1-D forms when ``y_dim = 1``). The context may be
        empty (``N = 0``): the prediction is then the model's prior predictive.

        Returns:
            ``(context_x, context_y, target_x, target_y, unbatched)``.

        Raises:
            TypeError: a non-tensor or non-float input.
            ValueError: mismatched ranks, feature counts, rows or batch sizes; NaN/inf; wrong device.
        """
        cx, tx = self._check_x("context_x", context_x), self._check_x("target_x", target_x)
        if cx.dim() != tx.dim():
            raise ValueError(f"context_x and target_x must both be one task [N, x_dim] or both batched "
                             f"[B, N, x_dim], got shapes {tuple(cx.shape)} and {tuple(tx.shape)}")
        if cx.shape[-1] != tx.shape[-1]:
            raise ValueError(f"context_x and target_x must have the same number of features, got "
                             f"{cx.shape[-1]} (context_x {tuple(cx.shape)}) and {tx.shape[-1]} "
                             f"(target_x {tuple(tx.shape)})")
        if cx.shape[-1] != self.x_dim:
            raise ValueError(f"context_x and target_x must have x_dim={self.x_dim} features, got {cx.shape[-1]}")
        if cx.dim() == 3 and cx.shape[0] != tx.shape[0]:
            raise ValueError(f"context_x and target_x must hold the same number of tasks B, got "
                             f"{cx.shape[0]} and {tx.shape[0]}")
        cy = self._check_y("context_y", context_y, cx, "context_x")
        ty = None if target_y is None else self._check_y("target_y", target_y, tx, "target_x")
        unbatched = cx.dim() == 2
        out = [self._finite(n, t) for n, t in (("context_x", cx), ("context_y", cy), ("target_x", tx))]
        if ty is not None:
            out.append(self._finite("target_y", ty))
        if unbatched:
            out = [t.unsqueeze(0) for t in out]
        cx, cy, tx = out[:3]
        return cx, cy, tx, (out[3] if ty is not None else None), unbatched

    # ---- public API ---------------------------------------------------------------------------
    def predict(self, context_x: Tensor, context_y: Tensor, target_x: Tensor,
                num_samples: int | None = None) -> NPPredictive:
        """The predictive distribution at ``target_x`` given the context.

        Args:
            context_x: ``[Nc, x_dim]`` or ``[B, Nc, x_dim]`` (``Nc`` may be 0: prior predictive).
            context_y: ``[Nc]``/``[Nc, y_dim]`` or ``[B, Nc]``/``[B, Nc, y_dim]``.
            target_x: ``[Nt, x_dim]`` or ``[B, Nt, x_dim]``.
            num_samples: function draws ``K`` (default ``self.num_samples``; a CNP always uses 1).

        Returns:
            :class:`NPPredictive` with batch shape ``[(B,) Nt]`` and event shape ``[y_dim]``:
            ``.mean``, ``.stddev``, ``.sample(shape)``, ``.log_prob(y)``.
        """
        k = self.num_samples if num_samples is None else int(num_samples)
        if k < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        cx, cy, tx, _, unbatched = self.check_inputs(context_x, context_y, target_x)
        loc, scale = self._components(cx, cy, tx, k)
        if unbatched:
            loc, scale = loc.squeeze(1), scale.squeeze(1)
        return NPPredictive(loc, scale)

    def loss(self, batch: TaskBatch) -> Tensor:
        """The training objective averaged over the tasks of ``batch`` (a scalar, per point)."""
        if not isinstance(batch, TaskBatch):
            raise TypeError(f"batch must be a TaskBatch, got {type(batch).__name__}")
        cx, cy, tx, ty, _ = self.check_inputs(batch.context_x, batch.context_y, batch.target_x, batch.target_y)
        if cx.shape[0] == 0:
            raise ValueError("batch holds no tasks (B = 0)")
        x, y = torch.cat([cx, tx], dim=-2), torch.cat([cy, ty], dim=-2)
        return self._loss(cx, cy, x, y).mean()

    @abstractmethod
    def _components(self, cx: Tensor, cy: Tensor, tx: Tensor, num_samples: int) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` of shape ``[K, B, Nt, y_dim]`` for checked, batched inputs."""

    @abstractmethod
    def _loss(self, cx: Tensor, cy: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Per-task loss ``[B]`` (per point), with ``x``, ``y`` all points (context first)."""


class CNP(NeuralProcess):
    """Conditional neural process (Garnelo et al., 2018, arXiv 1807.01613).

    ``p(y | x, C) = N(μ(x, r), σ(x, r)²)`` with ``r`` the mean of the context representations
    (or, with ``attentive=True``, a target-specific attention read-out: the CANP).

    Args:
        x_dim: input features.
        y_dim: output features.
        hidden: representation and layer width.
        encoder_depth: linear layers of the point encoder.
        decoder_depth: linear layers of the decoder.
        attentive: use the ANP's attentive deterministic path.
        num_heads: attention heads (attentive only).
        min_std: lower bound on the predictive standard deviation.
    """

    def __init__(self, x_dim: int = 1, y_dim: int = 1, hidden: int = 128, encoder_depth: int = 3,
                 decoder_depth: int = 3, attentive: bool = False, num_heads: int = 4, min_std: float = MIN_STD) -> None:
        super().__init__(x_dim, y_dim, num_samples=1)
        self.deterministic = (AttentiveEncoder(x_dim, y_dim, hidden, encoder_depth, 2, num_heads) if attentive
                              else SetEncoder(x_dim, y_dim, hidden, encoder_depth))
        self.decoder = GaussianDecoder(x_dim, (hidden,), y_dim, hidden, decoder_depth, min_std)

    def _components(self, cx, cy, tx, num_samples):
        loc, scale = self.decoder(tx, self.deterministic(cx, cy, tx))
        return loc.unsqueeze(0), scale.unsqueeze(0)

    def _loss(self, cx, cy, x, y):
        loc, scale = self.decoder(x, self.deterministic(cx, cy, x))
        return -_gaussian_log_prob(loc, scale, y) / x.shape[-2]


class NP(NeuralProcess):
    """Latent-variable neural process (Garnelo et al., 2018, arXiv 1807.01622), trained with the ELBO.

    ``p(y_T | x_T, C) = ∫ Π_t N(y_t | μ(x_t, r, z), σ(x_t, r, z)²) q(z | C) dz``: a deterministic
    path ``r`` (mean pooling, or attention with ``attentive=True``) and a Gaussian latent path
    ``z`` whose encoder ``q(z | ·)`` serves as prior (given the context) and as approximate
    posterior (given context and targets) in the ELBO.

    Args:
        x_dim, y_dim, hidden, encoder_depth, decoder_depth, num_heads, min_std: as in :class:`CNP`.
        latent_dim: size of ``z`` (default ``hidden``).
        attentive: attentive deterministic path and self-attentive latent path (the ANP).
        num_samples: function draws ``K`` per prediction.
        num_train_samples: draws of ``z ~ q(z | C ∪ T)`` averaged in the ELBO's expected log-likelihood.
    """

    def __init__(self, x_dim: int = 1, y_dim: int = 1, hidden: int = 128, encoder_depth: int = 3,
                 decoder_depth: int = 3, latent_dim: int | None = None, attentive: bool = False, num_heads: int = 4,
                 num_samples: int = NUM_EVAL_SAMPLES, num_train_samples: int = 1, min_std: float = MIN_STD) -> None:
        super().__init__(x_dim, y_dim, num_samples)
        latent_dim = hidden if latent_dim is None else int(latent_dim)
        self_attention = 2 if attentive else 0  # two self-attention blocks per path, as in the ANP paper
        self.deterministic = (AttentiveEncoder(x_dim, y_dim, hidden, encoder_depth, self_attention, num_heads)
                              if attentive else SetEncoder(x_dim, y_dim, hidden, encoder_depth))
        self.latent = LatentEncoder(x_dim, y_dim, hidden, latent_dim, encoder_depth, self_attention, num_heads)
        self.decoder = GaussianDecoder(x_dim, (hidden, latent_dim), y_dim, hidden, decoder_depth, min_std)
        if int(num_train_samples) < 1:
            raise ValueError(f"num_train_samples must be >= 1, got {num_train_samples}")
        self.num_train_samples = int(num_train_samples)

    def _decode(self, cx: Tensor, cy: Tensor, tx: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder at ``tx [B, Nt, x_dim]`` for latent draws ``z [K, B, latent_dim]``: ``[K, B, Nt, y_dim]`` each."""
        return self.decoder(tx, self.deterministic(cx, cy, tx), z.unsqueeze(-2))

    def _components(self, cx, cy, tx, num_samples):
        z = self.latent(cx, cy).sample((num_samples,))
        return self._decode(cx, cy, tx, z)

    def _loss(self, cx, cy, x, y):
        prior, posterior = self.latent(cx, cy), self.latent(x, y)
        z = posterior.rsample((self.num_train_samples,))
        loc, scale = self._decode(cx, cy, x, z)
        expected_ll = _gaussian_log_prob(loc, scale, y).mean(0)
        kl = kl_divergence(posterior, prior).sum(-1)
        return -(expected_ll - kl) / x.shape[-2]


class ANP(NP):
    """Attentive neural process (Kim et al., 2019, arXiv 1901.05761): :class:`NP` with
    ``attentive=True`` (self-attention over the context in both paths, and a deterministic path
    in which every target attends to the context). Arguments as in :class:`NP`."""

    def __init__(self, x_dim: int = 1, y_dim: int = 1, hidden: int = 128, encoder_depth: int = 3,
                 decoder_depth: int = 3, latent_dim: int | None = None, num_heads: int = 4,
                 num_samples: int = NUM_EVAL_SAMPLES, num_train_samples: int = 1, min_std: float = MIN_STD) -> None:
        super().__init__(x_dim, y_dim, hidden, encoder_depth, decoder_depth, latent_dim, True, num_heads,
                         num_samples, num_train_samples, min_std)


class MPNP(NeuralProcess):
    """Martingale posterior neural process (Lee, Yun, Nam, Fong & Lee, ICLR 2023, arXiv 2304.09431).

    No latent variable: the uncertainty comes from an exchangeable generator of future data.
    Given the context representations ``S_c = {φ(x_i, y_i)}``, the
    :class:`~bayesnets.processes.encoders.PseudoContextGenerator` draws ``K`` pseudo-contexts
    ``P_k = {s̃_kj}_{j=1..m}`` in representation space; each gives a function parameter
    ``θ_k = mean(S_c ∪ P_k)`` (the deterministic NP encoder applied to observed plus imputed
    data, as in the martingale posterior's "θ of the completed data") and the predictive is the
    uniform mixture over ``k`` of ``N(μ(x, θ_k), σ(x, θ_k)²)``.

    The loss (per task, per point) adds three terms:
    ``L_marg = -log (1/K) Σ_k Π_t N(y_t | θ_k)`` (the mixture's joint likelihood of all targets),
    ``L_amort = -Σ_t log N(y_t | θ(S_c))`` (the encoder must summarise real data alone) and
    ``L_pseudo = -(1/K) Σ_k Σ_t log N(y_t | θ(P_k))`` (generated data alone must explain the
    function, as real data would), weighted ``1 : amortization_weight : pseudo_weight``. The
    default ``pseudo_weight = 0`` was chosen on validation sets (0.1 and 1 were worse there).

    Decisions not fixed by what could be read of the paper (its code is not public) are listed in
    ``docs/processes.md``: representation-space pseudo points, a fixed ``num_pseudo``, ISAB
    generator conditioned through its inducing points, and the loss weights.

    Args:
        x_dim, y_dim, hidden, encoder_depth, decoder_depth, num_heads, min_std: as in :class:`CNP`.
        num_pseudo: pseudo points ``m`` per pseudo-context.
        noise_dim: size of the generator's noise per pseudo point.
        num_inducing: inducing points of each ISAB layer.
        generator_layers: ISAB layers.
        num_samples: pseudo-contexts ``K`` per prediction.
        num_train_samples: pseudo-contexts ``K`` in the training loss.
        amortization_weight: weight of ``L_amort``.
        pseudo_weight: weight of ``L_pseudo``.
    """

    def __init__(self, x_dim: int = 1, y_dim: int = 1, hidden: int = 128, encoder_depth: int = 3,
                 decoder_depth: int = 3, num_pseudo: int = 20, noise_dim: int = 32, num_inducing: int = 16,
                 generator_layers: int = 2, num_heads: int = 4, num_samples: int = NUM_EVAL_SAMPLES,
                 num_train_samples: int = 4, amortization_weight: float = 1.0, pseudo_weight: float = 0.0,
                 min_std: float = MIN_STD) -> None:
        super().__init__(x_dim, y_dim, num_samples)
        for name, v in (("num_pseudo", num_pseudo), ("num_train_samples", num_train_samples)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if amortization_weight < 0 or pseudo_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got amortization_weight={amortization_weight}, "
                             f"pseudo_weight={pseudo_weight}")
        self.encoder = SetEncoder(x_dim, y_dim, hidden, encoder_depth)
        self.generator = PseudoContextGenerator(hidden, noise_dim, num_inducing, generator_layers, num_heads)
        self.decoder = GaussianDecoder(x_dim, (hidden,), y_dim, hidden, decoder_depth, min_std)
        self.num_pseudo, self.num_train_samples = int(num_pseudo), int(num_train_samples)
        self.amortization_weight, self.pseudo_weight = float(amortization_weight), float(pseudo_weight)

    def pseudo_contexts(self, context_x: Tensor, context_y: Tensor, num_sets: int) -> tuple[Tensor, Tensor]:
        """Context representations ``[B, Nc, hidden]`` and ``num_sets`` generated pseudo-contexts
        ``[num_sets, B, m, hidden]`` for batched ``context_x``/``context_y``."""
        s_c = self.encoder.points(context_x, context_y)
        noise = self.generator.sample_noise(s_c, num_sets, self.num_pseudo)
        return s_c, self.generator(s_c, noise)

    def _decode(self, tx: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        """``theta [*s, B, hidden]`` -> ``(loc, scale)`` at ``tx [B, Nt, x_dim]``: ``[*s, B, Nt, y_dim]``."""
        return self.decoder(tx, theta.unsqueeze(-2))

    @staticmethod
    def _theta(s_c: Tensor, pseudo: Tensor) -> Tensor:
        """``θ_k = mean(S_c ∪ P_k)``: ``[K, B, hidden]``."""
        total = s_c.sum(-2) + pseudo.sum(-2)
        return total / (s_c.shape[-2] + pseudo.shape[-2])

    def _components(self, cx, cy, tx, num_samples):
        s_c, pseudo = self.pseudo_contexts(cx, cy, num_samples)
        return self._decode(tx, self._theta(s_c, pseudo))

    def _loss(self, cx, cy, x, y):
        s_c, pseudo = self.pseudo_contexts(cx, cy, self.num_train_samples)
        joint = _gaussian_log_prob(*self._decode(x, self._theta(s_c, pseudo)), y)  # [K, B]
        loss = -_log_mean_exp(joint, 0)
        if self.amortization_weight:
            loss = loss - self.amortization_weight * _gaussian_log_prob(*self._decode(x, mean_pool(s_c)), y)
        if self.pseudo_weight:
            loss = loss - self.pseudo_weight * _gaussian_log_prob(*self._decode(x, pseudo.mean(-2)), y).mean(0)
        return loss / x.shape[-2]
