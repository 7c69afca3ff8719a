"""Scalable neural network kernels (SNNK) and universal random features (URF).

Sehanobish, Choromanski, Zhao, Dubey and Likhosherstov, "Scalable Neural Network Kernels",
ICLR 2024, arXiv:2310.13225 (P6).

An SNNK layer replaces a feed-forward layer ``y_j = f(w_j . x + b_j)`` by a dot product
``y_j = Phi(x) . Psi(w_j, b_j)`` of *input features* ``Phi`` (no trainable parameters,
fixed random projections kept as buffers) and *parameter features* ``Psi``; the trainable
weights are the matrix ``Psi(W)`` ``[out, F]``, initialised from a (pretrained) ``W``.

Feature kinds:

* ``"relu"`` — ``Phi(x) = ReLU(G x~) / sqrt(m)``, ``Psi(w) = ReLU(G w~) / sqrt(m)`` with
  ``x~ = [x, 1]``, ``w~ = [w, b]``; ``Phi(x) . Psi(w)`` estimates the order-1 arc-cosine
  kernel ``|x~||w~| (sin t + (pi - t) cos t) / (2 pi)`` (``t`` the angle between them).
* ``"cos"``, ``"sin"``, ``"urf"`` — universal random features: write the activation as a
  Fourier integral ``f(z) = int tau(xi) exp(2 pi i xi z) dxi``, draw ``omega_k = 2 pi xi_k``
  with ``xi_k ~ p`` and ``g_k ~ N(0, I)``, and use
  ``exp(u . v) = E_g[exp(g . u - u . u / 2) exp(g . v - v . v / 2)]`` with
  ``u = i omega x``, ``v = w``::

      Phi_k(x)    = exp(i omega_k g_k . x + omega_k^2 |x|^2 / 2) / sqrt(m)
      Psi_k(w, b) = c_k exp(i omega_k b) exp(g_k . w - |w|^2 / 2) / sqrt(m),  c_k = tau(xi_k)/p(xi_k)

  so that ``f(w . x + b) = E[Re sum_k Phi_k(x) Psi_k(w, b)]`` (unbiased). The complex dot
  product is stored as a real one of ``2m`` features ``[Re Phi, Im Phi] . [Re Psi, -Im Psi]``.
  ``cos`` and ``sin`` have point-mass spectra (``omega = +-1``); ``"urf"`` takes any
  spectrum as ``(omega, c)``. The estimator's variance grows like ``exp(|x|^2 + |w|^2)``, so
  inputs and weights should have norms of order one (the official code rescales them).

**Bundling** (:meth:`BundledSNNK.from_mlp`): in ``f2(W2 f1(W1 x + b1) + b2)`` the first
layer becomes ``M1 Phi1(x)`` (``M1 = Psi1(W1, b1)``), so the second sees the linear map
``(W2 M1) Phi1(x)`` and becomes ``Psi2(W2 M1, b2) Phi2(Phi1(x))``, and so on: a deep
network collapses into a fixed random feature chain and a *single* trainable matrix. The
fully bundled network is linear in that matrix, so its mean-squared-error optimum has a
closed form (:meth:`BundledSNNK.fit_mse`, no backpropagation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bayesnets.nn.random_features import fit_readout_

__all__ = ["KINDS", "BundledSNNK", "SNNKFeatures", "SNNKLinear", "orthogonal_gaussian"]

#: Feature kinds: the arc-cosine ReLU-SNNK and the URF activations.
KINDS = ("relu", "cos", "sin", "urf")


def orthogonal_gaussian(num_rows: int, dim: int, generator: torch.Generator | None = None,
                        dtype: torch.dtype | None = None) -> Tensor:
    """Orthogonal random features matrix ``[num_rows, dim]``.

    Blocks of ``dim`` exactly orthogonal rows (QR of a Gaussian matrix), each row rescaled
    to the norm of an independent Gaussian vector, so every row is marginally
    ``N(0, I_dim)`` while rows within a block are orthogonal (lower-variance kernel
    estimates; Yu et al., arXiv:1610.09072, as used by SNNK's official code).
    """
    blocks = []
    for _ in range(math.ceil(num_rows / dim)):
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        # LAPACK's QR fixes the signs of diag(R), which skews Q's columns; undoing that makes Q
        # Haar-distributed (Mezzadri, arXiv:math-ph/0609050).
        q = q * torch.sign(torch.diagonal(r))
        blocks.append(q.T)
    rows = torch.cat(blocks, 0)[:num_rows]
    norms = torch.randn(num_rows, dim, generator=generator, dtype=torch.float64).norm(dim=1, keepdim=True)
    return (rows * norms).to(dtype or torch.get_default_dtype())


def _spectrum(kind: str, num_features: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Angular frequencies ``omega`` ``[m]`` and weights ``c = tau/p`` ``[m, 2]`` (real, imag)."""
    sign = torch.randint(0, 2, (num_features,), generator=generator).to(torch.get_default_dtype()) * 2 - 1
    coef = torch.zeros(num_features, 2)
    if kind == "cos":  # cos z = (e^{iz} + e^{-iz}) / 2, each half drawn with probability 1/2
        coef[:, 0] = 1.0
    else:  # sin z = (e^{iz} - e^{-iz}) / (2i): c = -i at omega = +1, +i at omega = -1
        coef[:, 1] = -sign
    return sign, coef


class SNNKFeatures(nn.Module):
    """The input map ``Phi`` and parameter map ``Psi`` of one SNNK layer (all buffers).

    Args:
        in_features: input dimension ``d``.
        num_features: number of random projections ``m`` (the feature dimension is ``m``
            for ``"relu"`` and ``2m`` for the URF kinds).
        kind: ``"relu"``, ``"cos"``, ``"sin"`` or ``"urf"`` (see the module docstring).
        orthogonal: orthogonal random projections (:func:`orthogonal_gaussian`).
        spectrum: for ``kind="urf"``: ``(omega [m], c [m] complex)`` — angular frequencies
            drawn from ``p`` and the weights ``tau(xi)/p(xi)``.
        generator: torch generator for the random draws.
    """

    def __init__(self, in_features: int, num_features: int, kind: str = "relu", orthogonal: bool = True,
                 spectrum: tuple[Tensor, Tensor] | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if int(in_features) < 1 or int(num_features) < 1:
            raise ValueError(f"in_features and num_features must be >= 1, got {in_features}, {num_features}")
        self.in_features, self.num_features, self.kind = int(in_features), int(num_features), kind
        dim = self.in_features + (1 if kind == "relu" else 0)  # ReLU-SNNK carries the bias as x~ = [x, 1]
        if orthogonal:
            proj = orthogonal_gaussian(self.num_features, dim, generator)
        else:
            proj = torch.randn(self.num_features, dim, generator=generator)
        self.register_buffer("projection", proj)
        if kind == "relu":
            return
        if kind == "urf":
            if spectrum is None:
                raise ValueError("kind='urf' needs spectrum=(omega [num_features], c [num_features] complex)")
            omega, c = spectrum
            if omega.shape != (self.num_features,) or c.shape != (self.num_features,):
                raise ValueError(
                    f"spectrum must be (omega, c) of shapes [{self.num_features}], got "
                    f"{tuple(omega.shape)} and {tuple(c.shape)}"
                )
            c = torch.as_tensor(c, dtype=torch.complex128)
            coef = torch.stack([c.real, c.imag], -1).to(torch.get_default_dtype())
            omega = omega.to(torch.get_default_dtype())
        else:
            if spectrum is not None:
                raise ValueError(f"spectrum is only used with kind='urf', not {kind!r}")
            omega, coef = _spectrum(kind, self.num_features, generator)
        self.register_buffer("omega", omega)
        self.register_buffer("coef", coef)

    @property
    def out_dim(self) -> int:
        """Dimension ``F`` of ``Phi(x)`` and of each row of ``Psi``."""
        return self.num_features if self.kind == "relu" else 2 * self.num_features

    def _check(self, t: Tensor, name: str) -> None:
        if t.dim() < 1 or t.shape[-1] != self.in_features:
            raise ValueError(f"{name} must have shape [..., {self.in_features}], got {tuple(t.shape)}")

    def input_features(self, x: Tensor) -> Tensor:
        """``Phi(x)``: ``[..., in_features] -> [..., F]``."""
        self._check(x, "x")
        scale = self.num_features ** -0.5
        if self.kind == "relu":
            proj = x @ self.projection[:, :-1].T + self.projection[:, -1]
            return F.relu(proj) * scale
        z = (x @ self.projection.T) * self.omega
        amp = torch.exp(0.5 * self.omega**2 * x.pow(2).sum(-1, keepdim=True)) * scale
        return torch.cat([amp * torch.cos(z), amp * torch.sin(z)], -1)

    def param_features(self, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """``Psi(w, b)`` for every row: ``weight [out, in_features], bias [out] -> [out, F]``."""
        self._check(weight, "weight")
        if bias is None:
            bias = weight.new_zeros(weight.shape[:-1])
        if bias.shape != weight.shape[:-1]:
            raise ValueError(f"bias must have shape {tuple(weight.shape[:-1])}, got {tuple(bias.shape)}")
        scale = self.num_features ** -0.5
        if self.kind == "relu":
            return F.relu(weight @ self.projection[:, :-1].T + bias.unsqueeze(-1) * self.projection[:, -1]) * scale
        r = torch.exp(weight @ self.projection.T - 0.5 * weight.pow(2).sum(-1, keepdim=True)) * scale
        phase = bias.unsqueeze(-1) * self.omega
        cr, ci = self.coef[:, 0], self.coef[:, 1]
        re = cr * torch.cos(phase) - ci * torch.sin(phase)  # Re(c e^{i omega b})
        im = cr * torch.sin(phase) + ci * torch.cos(phase)  # Im(c e^{i omega b})
        return torch.cat([r * re, -r * im], -1)


class SNNKLinear(nn.Module):
    """An SNNK layer: ``y = Phi(x) @ weight^T`` with ``weight = Psi(W, b)`` trainable.

    For the URF kinds it approximates ``f(x W^T + b)`` (``f`` = cos / sin / the given
    spectrum); for ``"relu"`` it is the arc-cosine-kernel layer of the paper. The random
    projections are buffers (fixed, no prior inside a
    :class:`~bayesnets.bnn.BayesianNet`); the only parameter is ``weight`` ``[out, F]``.

    Args:
        in_features, out_features: as in ``nn.Linear``.
        num_features: random projections ``m``.
        kind, orthogonal, spectrum, generator: as in :class:`SNNKFeatures`.
        bias: whether the layer being replaced has a bias (drawn like ``nn.Linear``'s and
            folded into ``Psi``).

    Shapes:
        ``forward``: ``[..., in_features] -> [..., out_features]``.
    """

    def __init__(self, in_features: int, out_features: int, num_features: int, kind: str = "relu",
                 orthogonal: bool = True, bias: bool = True, spectrum: tuple[Tensor, Tensor] | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.features = SNNKFeatures(in_features, num_features, kind, orthogonal, spectrum, generator)
        init = nn.Linear(in_features, out_features, bias=bias)  # nn.Linear's default init for W, b
        self.out_features = int(out_features)
        self.weight = nn.Parameter(self._psi(init.weight.detach(), None if init.bias is None else init.bias.detach()))

    def _psi(self, weight: Tensor, bias: Tensor | None) -> Tensor:
        return self.features.param_features(weight.to(self.features.projection), None if bias is None
                                            else bias.to(self.features.projection))

    @classmethod
    def from_linear(cls, linear: nn.Linear, kind: str = "relu", num_features: int = 256, orthogonal: bool = True,
                    spectrum: tuple[Tensor, Tensor] | None = None,
                    generator: torch.Generator | None = None) -> SNNKLinear:
        """The SNNK replacement of a (pretrained) ``linear`` followed by the activation."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, num_features, kind, orthogonal,
                    linear.bias is not None, spectrum, generator).to(linear.weight)
        with torch.no_grad():
            layer.weight.copy_(layer._psi(linear.weight, linear.bias))
        return layer

    def forward(self, x: Tensor) -> Tensor:
        return self.features.input_features(x) @ self.weight.T


class BundledSNNK(nn.Module):
    """A bundled SNNK network: a fixed random feature chain and one trainable linear map.

    ``f(x) = Phi_L(... Phi_1(x)) @ weight^T + bias``. Build it from an MLP with
    :meth:`from_mlp` (weights carried through the bundling recursion) and/or fit it in
    closed form with :meth:`fit_mse`.

    Args:
        stages: the feature maps ``Phi_1, ..., Phi_L``; stage ``k`` takes ``stages[k-1].out_dim``
            inputs.
        out_features: output dimension.
    """

    def __init__(self, stages: Sequence[SNNKFeatures], out_features: int) -> None:
        super().__init__()
        if not stages:
            raise ValueError("stages must hold at least one SNNKFeatures")
        for k in range(1, len(stages)):
            if stages[k].in_features != stages[k - 1].out_dim:
                raise ValueError(
                    f"stage {k} takes {stages[k].in_features} inputs but stage {k - 1} gives {stages[k - 1].out_dim}"
                )
        self.stages = nn.ModuleList(stages)
        dim = stages[-1].out_dim
        self.weight = nn.Parameter(torch.zeros(int(out_features), dim, dtype=stages[-1].projection.dtype))
        self.bias = nn.Parameter(torch.zeros(int(out_features), dtype=stages[-1].projection.dtype))

    @classmethod
    def from_mlp(cls, linears: Sequence[nn.Linear], kinds: str | Sequence[str], num_features: int | Sequence[int],
                 output: nn.Linear | None = None, orthogonal: bool = True,
                 generator: torch.Generator | None = None) -> BundledSNNK:
        """Bundle ``f_L(W_L ... f_1(W_1 x + b_1) ... + b_L)`` (then ``output``, if given).

        Args:
            linears: the hidden layers' ``nn.Linear`` maps, in order.
            kinds: each hidden layer's SNNK kind (one string for all).
            num_features: random projections per stage (one int for all).
            output: a final linear layer without activation, absorbed into the trainable map.
            orthogonal, generator: as in :class:`SNNKFeatures`.
        """
        if not linears:
            raise ValueError("linears must hold at least one nn.Linear")
        kinds = [kinds] * len(linears) if isinstance(kinds, str) else list(kinds)
        sizes = [int(num_features)] * len(linears) if isinstance(num_features, int) else list(num_features)
        if len(kinds) != len(linears) or len(sizes) != len(linears):
            raise ValueError(f"kinds and num_features need one entry per linear ({len(linears)})")
        ref = linears[0].weight.detach()
        for k in range(1, len(linears)):
            if linears[k].in_features != linears[k - 1].out_features:
                raise ValueError(f"linears[{k}] takes {linears[k].in_features} inputs, linears[{k - 1}] gives "
                                 f"{linears[k - 1].out_features}")
        stages: list[SNNKFeatures] = []
        carry: Tensor | None = None  # M_{k-1} [out_{k-1}, F_{k-1}]
        with torch.no_grad():
            for lin, kind, m in zip(linears, kinds, sizes):
                # Layer k sees the previous stage's features through the linear map W_k M_{k-1}.
                weight = lin.weight.detach() if carry is None else lin.weight.detach() @ carry
                stage = SNNKFeatures(weight.shape[1], m, kind, orthogonal, generator=generator).to(ref)
                bias = None if lin.bias is None else lin.bias.detach()
                carry = stage.param_features(weight, bias)  # M_k [out_k, F_k]
                stages.append(stage)
            if output is not None:
                if output.in_features != linears[-1].out_features:
                    raise ValueError(f"output takes {output.in_features} inputs, the last linear gives "
                                     f"{linears[-1].out_features}")
                final_w = output.weight.detach() @ carry
                final_b = output.bias.detach() if output.bias is not None else final_w.new_zeros(final_w.shape[0])
            else:
                final_w, final_b = carry, carry.new_zeros(carry.shape[0])
        net = cls(stages, final_w.shape[0]).to(ref)
        with torch.no_grad():
            net.weight.copy_(final_w)
            net.bias.copy_(final_b)
        return net

    def features(self, x: Tensor) -> Tensor:
        """The feature chain ``Phi_L(... Phi_1(x))``: ``[..., in] -> [..., F_L]``."""
        for stage in self.stages:
            x = stage.input_features(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x) @ self.weight.T + self.bias

    @torch.no_grad()
    def fit_mse(self, x: Tensor, y: Tensor, lam: float = 0.0) -> BundledSNNK:
        """Closed-form (ridge) least-squares fit of ``weight`` and ``bias`` (no backpropagation).

        Args:
            x: inputs ``[N, in]``; y: targets ``[N]`` (one output) or ``[N, out_features]``.
            lam: ridge penalty on ``weight``.

        Returns:
            ``self``.
        """
        fit_readout_(self.features(x), y, self.weight, self.bias, lam)
        return self
