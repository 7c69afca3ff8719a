"""Random-feature networks with a least-squares output layer, and bandlimited random weights.

Li, Sonoda, Cao, Wang and Liang, "How Powerful are Shallow Neural Networks with Bandlimited
Random Weights?", ICML 2023, arXiv:2008.08427 (P5).

A depth-2 random network ``f(x) = sum_j c_j sigma(a_j . x - b_j) + c_0`` keeps its hidden
parameters ``(a_j, b_j)`` frozen at a draw from a *bounded* domain ``[-lambda, lambda]``
(the bandwidth) and fits only the output weights ``c`` by (ridge) least squares. The paper's
point: when the target's ridgelet spectrum has mass outside the parameter domain, the error
has a strictly positive floor that more hidden units cannot remove, so ``lambda`` has to
match the target's frequency content. :func:`bandwidth_error` measures that floor.

:func:`ridge_solve` is the closed-form least-squares fit shared with the fully bundled SNNK
network of :mod:`bayesnets.nn.snnk`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ACTIVATIONS", "BandlimitedRandomFeatures", "bandwidth_error", "fit_readout_", "ridge_solve"]

#: Activations by name for the hidden layer.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "gelu": F.gelu,
    "sin": torch.sin,
}


def _activation(activation: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} or a callable, got {activation!r}")
    return ACTIVATIONS[activation]


def ridge_solve(features: Tensor, targets: Tensor, lam: float = 0.0,
                fit_intercept: bool = True) -> tuple[Tensor, Tensor]:
    """Closed-form ridge regression ``argmin ||Phi beta + c - Y||^2 + lam ||beta||^2``.

    Solved as an ordinary least-squares problem on the augmented system
    ``[Phi; sqrt(lam) I] beta = [Y; 0]`` (QR-based ``lstsq``), which keeps the
    conditioning of ``Phi`` rather than squaring it as the normal equations would; random
    features with a tiny ridge (``1e-8``) need that. The intercept is not penalised
    (features and targets are centred first).

    Args:
        features: ``Phi`` of shape ``[N, M]``.
        targets: ``Y`` of shape ``[N]`` or ``[N, K]``.
        lam: ridge penalty ``>= 0``. With ``lam = 0`` on CUDA, ``Phi`` must have full
            column rank (CUDA's ``lstsq`` has only the QR driver).
        fit_intercept: also fit ``c`` (else ``c = 0``).

    Returns:
        ``(beta, c)`` of shapes ``[M, K]`` and ``[K]`` (``[M]`` and ``[]`` for 1-D targets).
    """
    if features.dim() != 2:
        raise ValueError(f"features must have shape [N, M], got {tuple(features.shape)}")
    if targets.dim() not in (1, 2) or targets.shape[0] != features.shape[0]:
        raise ValueError(
            f"targets must have shape [N] or [N, K] with N = {features.shape[0]} (rows of features), "
            f"got {tuple(targets.shape)}"
        )
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    squeeze = targets.dim() == 1
    y = targets.unsqueeze(-1) if squeeze else targets
    y = y.to(features.dtype)
    if fit_intercept:
        phi_mean, y_mean = features.mean(0), y.mean(0)
        phi, y = features - phi_mean, y - y_mean
    else:
        phi = features
    if lam > 0:
        m = phi.shape[1]
        eye = torch.eye(m, dtype=phi.dtype, device=phi.device) * lam**0.5
        phi = torch.cat([phi, eye], 0)
        y = torch.cat([y, y.new_zeros(m, y.shape[1])], 0)
    beta = torch.linalg.lstsq(phi, y).solution
    c = (y_mean - phi_mean @ beta) if fit_intercept else y.new_zeros(y.shape[1])
    return (beta.squeeze(-1), c.squeeze(-1)) if squeeze else (beta, c)


@torch.no_grad()
def fit_readout_(features: Tensor, y: Tensor, weight: Tensor, bias: Tensor, lam: float = 0.0) -> None:
    """Set a linear readout ``features @ weight^T + bias`` to the ridge fit of ``y`` (in place).

    Args:
        features: ``[N, F]``.
        y: targets ``[N, out]``, or ``[N]`` when ``out == 1``.
        weight, bias: the readout's ``[out, F]`` and ``[out]`` tensors, overwritten.
        lam: ridge penalty on ``weight`` (not ``bias``).
    """
    out = weight.shape[0]
    if y.dim() == 1 and out == 1:
        y = y.unsqueeze(-1)
    if y.dim() != 2 or y.shape != (features.shape[0], out):
        raise ValueError(f"y must have shape [{features.shape[0]}, {out}] (or [{features.shape[0]}] for one output), "
                         f"got {tuple(y.shape)}")
    beta, c = ridge_solve(features, y, lam)
    weight.copy_(beta.T)
    bias.copy_(c)


class BandlimitedRandomFeatures(nn.Module):
    """Depth-2 random network with hidden weights from a bounded domain (arXiv:2008.08427).

    ``f(x) = output(sigma(x a^T - b))`` with ``a`` ``[num_features, in_features]`` and ``b``
    ``[num_features]`` drawn once from ``U[-bandwidth, bandwidth]`` (``dist="uniform"``, the
    bounded domain of the paper) or ``N(0, bandwidth^2)`` (``dist="normal"``, unbounded, for
    comparison) and kept as **buffers**: they never train and, inside a
    :class:`~bayesnets.bnn.BayesianNet`, get no prior. Only the output layer is a parameter;
    fit it in closed form with :meth:`fit_ridge` (or give it a prior: Bayesian linear
    regression on random features).

    Args:
        in_features: input dimension ``d``.
        num_features: number of hidden units ``N``.
        bandwidth: half-width ``lambda`` of the hidden-parameter domain.
        out_features: output dimension.
        activation: ``"tanh"``, ``"sigmoid"``, ``"relu"``, ``"gelu"``, ``"sin"`` or a callable.
        dist: ``"uniform"`` or ``"normal"``.
        generator: torch generator for the hidden draw (CPU), for reproducibility.

    Shapes:
        ``forward``: ``[N, in_features] -> [N, out_features]``.
    """

    def __init__(self, in_features: int, num_features: int, bandwidth: float, out_features: int = 1,
                 activation: str | Callable[[Tensor], Tensor] = "tanh", dist: str = "uniform",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if int(in_features) < 1 or int(num_features) < 1 or int(out_features) < 1:
            raise ValueError(
                f"in_features, num_features and out_features must be >= 1, got "
                f"{in_features}, {num_features}, {out_features}"
            )
        if not float(bandwidth) > 0:
            raise ValueError(f"bandwidth must be positive, got {bandwidth}")
        if dist not in ("uniform", "normal"):
            raise ValueError(f"dist must be 'uniform' or 'normal', got {dist!r}")
        self.in_features, self.num_features = int(in_features), int(num_features)
        self.bandwidth, self.dist = float(bandwidth), dist
        self.act = _activation(activation)
        shape = (self.num_features, self.in_features + 1)
        if dist == "uniform":
            ab = (torch.rand(shape, generator=generator) * 2 - 1) * self.bandwidth
        else:
            ab = torch.randn(shape, generator=generator) * self.bandwidth
        self.register_buffer("hidden_weight", ab[:, :-1].contiguous())
        self.register_buffer("hidden_bias", ab[:, -1].contiguous())
        self.output = nn.Linear(self.num_features, int(out_features))

    def features(self, x: Tensor) -> Tensor:
        """Hidden activations ``sigma(x a^T - b)``: ``[N, in_features] -> [N, num_features]``."""
        if x.dim() != 2 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape [N, {self.in_features}], got {tuple(x.shape)}")
        return self.act(x @ self.hidden_weight.T - self.hidden_bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.features(x))

    @torch.no_grad()
    def fit_ridge(self, x: Tensor, y: Tensor, lam: float = 1e-8) -> BandlimitedRandomFeatures:
        """Set the output layer to the ridge least-squares fit on ``(x, y)``.

        Args:
            x: inputs ``[N, in_features]``.
            y: targets ``[N]`` (``out_features == 1``) or ``[N, out_features]``.
            lam: ridge penalty on the output weights (not the intercept).

        Returns:
            ``self``.
        """
        fit_readout_(self.features(x), y, self.output.weight, self.output.bias, lam)
        return self


def bandwidth_error(target: Callable[[Tensor], Tensor], bandwidths: Sequence[float], x_train: Tensor,
                    x_test: Tensor, num_features: int = 500, lam: float = 1e-8,
                    activation: str | Callable[[Tensor], Tensor] = "tanh", dist: str = "uniform",
                    num_repeats: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """Test mean squared error of the ridge-fitted random network as the bandwidth changes.

    For each bandwidth, ``num_repeats`` random networks are drawn, fitted by
    :meth:`BandlimitedRandomFeatures.fit_ridge` on ``(x_train, target(x_train))`` and scored
    on ``x_test``. A bandwidth too small for the target's frequencies leaves an error floor
    that does not fall as ``num_features`` grows (arXiv:2008.08427).

    Args:
        target: ``x [N, d] -> y [N]`` or ``[N, K]``.
        bandwidths: the ``lambda`` values to try.
        x_train: ``[N, d]``; ``x_test``: ``[M, d]``.
        num_features, lam, activation, dist: as in :class:`BandlimitedRandomFeatures`.
        num_repeats: random networks per bandwidth (their test MSEs are averaged).
        generator: torch generator for the hidden draws.

    Returns:
        Test MSE per bandwidth, ``[len(bandwidths)]`` (dtype/device of ``x_train``).
    """
    if x_train.dim() != 2 or x_test.dim() != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(
            f"x_train and x_test must have shapes [N, d] and [M, d], got {tuple(x_train.shape)} "
            f"and {tuple(x_test.shape)}"
        )
    if int(num_repeats) < 1:
        raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
    y_train, y_test = target(x_train), target(x_test)
    out = 1 if y_train.dim() == 1 else y_train.shape[1]
    errors = torch.zeros(len(bandwidths), dtype=x_train.dtype, device=x_train.device)
    for i, lam_b in enumerate(bandwidths):
        for _ in range(int(num_repeats)):
            net = BandlimitedRandomFeatures(x_train.shape[1], num_features, lam_b, out, activation, dist,
                                            generator=generator).to(x_train)
            net.fit_ridge(x_train, y_train, lam)
            with torch.no_grad():
                pred = net(x_test)
            errors[i] += (pred.reshape(y_test.shape) - y_test).pow(2).mean() / num_repeats
    return errors
