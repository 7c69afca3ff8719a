"""NNGP and NTK kernels of infinitely wide fully-connected networks, as GPyTorch kernels.

A network with ``depth`` hidden layers, activation ``φ``, weights ``N(0, σ_w² / fan_in)`` and
biases ``N(0, σ_b²)`` becomes, as every hidden width goes to infinity, a Gaussian process whose
covariance (the NNGP kernel, Neal 1996; Lee et al., arXiv 1711.00165) follows::

    Σ^0(x, x') = σ_w² x·x' / d + σ_b²
    Σ^l(x, x') = σ_w² E[φ(u) φ(v)] + σ_b²,       (u, v) ~ N(0, Σ^{l-1} on {x, x'})

Trained by gradient descent in the NTK parametrisation, the same network follows kernel gradient
descent with the neural tangent kernel (Jacot et al., arXiv 1806.07572)::

    Θ^0 = Σ^0,     Θ^l = Σ^l + σ_w² E[φ'(u) φ'(v)] · Θ^{l-1}

Both kernels are returned for the output layer (after ``depth`` hidden layers). The Gaussian
expectations come from :mod:`priors.dual_activations` (closed forms for ReLU / leaky ReLU /
``|x|`` / erf, polar Gauss quadrature for anything else). ``σ_w²`` and ``σ_b²`` are learnable,
constrained-positive hyperparameters with one value per kernel batch. With ``depth`` and the
ReLU activation, :class:`NNGPKernel` equals BoTorch's ``InfiniteWidthBNNKernel`` for the same
variances (up to its ``acos_eps`` clamp), and is faster (``benchmarks/kernels.py``).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch
from gpytorch.constraints import Interval, Positive
from gpytorch.kernels import Kernel
from gpytorch.priors import Prior
from torch import Tensor

from priors.dual_activations import ArcCosine, DualActivation, _safe_sqrt, as_dual

__all__ = ["NNGPKernel", "NTKKernel"]

#: Entries per row block in the no-grad arc-cosine CPU path with one torch thread: the block and
#: its two work buffers stay in a core's L2 cache through all layers (fastest of 2^13..2^16 for
#: 2000 x 2000 Grams, benchmarks/kernels.py).
BLOCK_ENTRIES = 1 << 16
#: The same with several threads: below ATen's parallel grain size (32768 elements) every op runs
#: single-threaded, and our own threads share the blocks (no intra-op barrier waits).
PARALLEL_BLOCK_ENTRIES = 1 << 14


def _check_variance(value: float | Tensor, name: str, allow_zero: bool) -> Tensor:
    value = torch.as_tensor(value, dtype=torch.get_default_dtype() if not torch.is_tensor(value) else None)
    if not torch.isfinite(value).all() or (value < 0).any() or (not allow_zero and (value == 0).any()):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be finite and {bound}, got {value.tolist()!r}")
    return value


class _WideNetworkKernel(Kernel):
    """Shared machinery of :class:`NNGPKernel` and :class:`NTKKernel` (``_ntk`` selects the output)."""

    has_lengthscale = False
    _ntk = False

    def __init__(
        self,
        depth: int = 3,
        activation: str | DualActivation | object = "relu",
        weight_variance: float | Tensor = 1.0,
        bias_variance: float | Tensor = 0.1,
        *,
        batch_shape: torch.Size | None = None,
        active_dims: tuple[int, ...] | None = None,
        weight_variance_constraint: Interval | None = None,
        bias_variance_constraint: Interval | None = None,
        weight_variance_prior: Prior | None = None,
        bias_variance_prior: Prior | None = None,
        **activation_kwargs,
    ) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth (number of hidden layers) must be an integer >= 1, got {depth!r}")
        super().__init__(batch_shape=batch_shape, active_dims=active_dims)
        self.depth = depth
        self.dual = as_dual(activation, **activation_kwargs)
        wv = _check_variance(weight_variance, "weight_variance", allow_zero=False)
        bv = _check_variance(bias_variance, "bias_variance", allow_zero=True)
        self._register_variance("weight_variance", weight_variance_constraint, weight_variance_prior)
        self.weight_variance = wv
        # A zero bias variance means a bias-free network: no bias parameter at all, since a
        # positivity transform cannot reach 0 (P14 and critical ReLU nets have no biases).
        self.has_bias = bool((bv > 0).any())
        if self.has_bias:
            self._register_variance("bias_variance", bias_variance_constraint, bias_variance_prior)
            self.bias_variance = bv
        elif bias_variance_prior is not None or bias_variance_constraint is not None:
            raise ValueError("bias_variance=0 builds a bias-free kernel; it takes no bias prior or constraint")

    def _register_variance(self, name: str, constraint: Interval | None, prior: Prior | None) -> None:
        """A ``[*batch_shape, 1, 1]`` raw parameter ``raw_<name>``, its constraint and optional prior."""
        self.register_parameter(f"raw_{name}", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1, 1)))
        self.register_constraint(f"raw_{name}", constraint or Positive())
        if prior is not None:
            self.register_prior(
                f"{name}_prior", prior, lambda m: getattr(m, name), lambda m, v: _set_variance(m, v, name)
            )

    # ------------------------------------------------------------------ hyperparameters
    @property
    def weight_variance(self) -> Tensor:
        """``σ_w²``, shape ``[*batch_shape, 1, 1]``."""
        return self.raw_weight_variance_constraint.transform(self.raw_weight_variance)

    @weight_variance.setter
    def weight_variance(self, value: float | Tensor) -> None:
        _set_variance(self, value, "weight_variance")

    @property
    def bias_variance(self) -> Tensor:
        """``σ_b²``, shape ``[*batch_shape, 1, 1]`` (zeros for a bias-free kernel)."""
        if not self.has_bias:
            return torch.zeros_like(self.raw_weight_variance)
        return self.raw_bias_variance_constraint.transform(self.raw_bias_variance)

    @bias_variance.setter
    def bias_variance(self, value: float | Tensor) -> None:
        if not self.has_bias:
            raise ValueError("this kernel was built with bias_variance=0 (bias-free); build a new one to add biases")
        _set_variance(self, value, "bias_variance")

    # ------------------------------------------------------------------ evaluation
    def __call__(self, x1: Tensor, x2: Tensor | None = None, diag: bool = False, **params):
        for name, x in (("x1", x1), ("x2", x2)):
            if x is not None and x.dim() < 2:
                raise ValueError(
                    f"{name} must have shape [..., n, d] (a batch of n points of dimension d), got shape "
                    f"{list(x.shape)}; use x.unsqueeze(-1) for n scalar inputs"
                )
        return super().__call__(x1, x2, diag=diag, **params)

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params) -> Tensor:
        """Kernel matrix ``[..., n1, n2]`` (or its diagonal ``[..., n1]`` when ``diag``)."""
        if last_dim_is_batch:
            raise ValueError(f"last_dim_is_batch is not supported by {type(self).__name__}")
        if x1.shape[-1] != x2.shape[-1]:
            raise ValueError(f"x1 and x2 must have the same last dimension d, got {x1.shape[-1]} and {x2.shape[-1]}")
        if diag:
            return self._diag(x1)
        wv, bv = self.weight_variance, self.bias_variance
        symmetric = x1 is x2 or (x1.shape == x2.shape and torch.equal(x1, x2))
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x1, x2, wv, bv))
        if isinstance(self.dual, ArcCosine) and not needs_grad:
            return self._gram_inplace(x1, x2, wv, bv, symmetric)
        gram = self._gram(x1, x2, wv, bv)
        if symmetric:
            # The correlation at x = x' is 1 only up to rounding, and arccos amplifies a rounding
            # error ε to sqrt(2ε) in the NTK's derivative map; the diagonal recursion is exact.
            gram = gram.diagonal_scatter(self._diag(x1).expand(gram.shape[:-1]), dim1=-2, dim2=-1)
        return gram

    def _input_variances(self, x: Tensor, wv: Tensor, bv: Tensor) -> Tensor:
        """``Σ⁰(x, x)`` as ``[..., n, 1]``."""
        return wv * x.square().sum(-1, keepdim=True) / x.shape[-1] + bv

    def _diag(self, x: Tensor) -> Tensor:
        wv, bv = self.weight_variance, self.bias_variance
        k = self._input_variances(x, wv, bv)
        theta = k
        for _ in range(self.depth):
            e, ed = self.dual.diag(k, deriv=self._ntk)
            k_next = wv * e + bv
            theta = k_next + wv * ed * theta if self._ntk else k_next
            k = k_next
        return theta.squeeze(-1)

    def _gram(self, x1: Tensor, x2: Tensor, wv: Tensor, bv: Tensor) -> Tensor:
        """Differentiable recursion (autograd through every layer)."""
        k11 = self._input_variances(x1, wv, bv)
        k22 = self._input_variances(x2, wv, bv).mT
        k12 = wv * (x1 @ x2.mT) / x1.shape[-1] + bv
        theta = k12
        for _ in range(self.depth):
            e, ed = self.dual.cross(k12, k11, k22, deriv=self._ntk)
            k12_next = wv * e + bv
            theta = k12_next + wv * ed * theta if self._ntk else k12_next
            k12 = k12_next
            k11 = wv * self.dual.diag(k11)[0] + bv
            k22 = wv * self.dual.diag(k22)[0] + bv
        return theta

    @torch.no_grad()
    def _gram_inplace(self, x1: Tensor, x2: Tensor, wv: Tensor, bv: Tensor, symmetric: bool) -> Tensor:
        """Arc-cosine recursion without autograd, in place.

        On CPU the Gram is cut into row blocks of fewer than :data:`BLOCK_ENTRIES` entries, each run
        through every layer while it sits in cache; the blocks go to ``torch.get_num_threads()``
        Python threads (torch releases the GIL, and ops this small run single-threaded, so no
        intra-op barrier waits on a busy machine). When ``x1`` and ``x2`` are the same points only
        the upper block triangle is computed and mirrored. On GPUs the whole matrix is one block.
        """
        dual = self.dual
        assert isinstance(dual, ArcCosine)
        d = x1.shape[-1]
        n1, n2 = x1.shape[-2], x2.shape[-2]
        batch = torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2], wv.shape[:-2])
        # per-layer standard deviations of the two inputs: [depth][..., n1, 1] and [..., 1, n2]
        k11 = self._input_variances(x1, wv, bv)
        k22 = self._input_variances(x2, wv, bv).mT
        s1, s2 = [], []
        for _ in range(self.depth):
            s1.append(_safe_sqrt(k11))
            s2.append(_safe_sqrt(k22))
            k11 = wv * dual.diag(k11)[0] + bv
            k22 = wv * dual.diag(k22)[0] + bv
        out = torch.empty(*batch, n1, n2, dtype=x1.dtype, device=x1.device)
        out.copy_(torch.matmul(x1, x2.mT))
        out.mul_(wv / d).add_(bv)
        theta = out.clone() if self._ntk else None
        result = theta if theta is not None else out
        on_cpu = x1.device.type == "cpu"
        threads = torch.get_num_threads() if on_cpu else 1
        per_row = max(n2, 1) * max(math.prod(batch), 1)
        block = BLOCK_ENTRIES if threads == 1 else PARALLEL_BLOCK_ENTRIES
        rows = max(1, min(n1, block // per_row)) if on_cpu else n1
        starts = list(range(0, n1, rows))

        def run_blocks(block_starts: list[int]) -> None:
            scratch = torch.empty(*batch, rows, n2, dtype=x1.dtype, device=x1.device)
            deriv = torch.empty_like(scratch) if theta is not None else None
            for start in block_starts:
                stop = min(start + rows, n1)
                col0 = start if symmetric else 0
                k = out[..., start:stop, col0:]
                th = theta[..., start:stop, col0:] if theta is not None else None
                sc = scratch[..., : stop - start, : n2 - col0]
                dd = deriv[..., : stop - start, : n2 - col0] if deriv is not None else None
                for layer in range(self.depth):
                    dual.cross_(k, s1[layer][..., start:stop, :], s2[layer][..., col0:], dd, sc)
                    k.mul_(wv).add_(bv)
                    if th is not None:
                        th.mul_(dd).mul_(wv).add_(k)
                if symmetric:  # mirror this block row into the lower triangle (no other block reads it)
                    result[..., stop:, start:stop] = result[..., start:stop, stop:].mT

        workers = min(threads, len(starts))
        if workers <= 1:
            run_blocks(starts)
        else:
            # interleave blocks so that long (upper) and short (lower) triangle rows are shared evenly
            with ThreadPoolExecutor(workers) as pool:
                for future in [pool.submit(run_blocks, starts[i::workers]) for i in range(workers)]:
                    future.result()
        if symmetric:
            torch.diagonal(result, dim1=-2, dim2=-1).copy_(self._diag(x1))  # exact, as in forward()
        return result

    def extra_repr(self) -> str:
        return f"depth={self.depth}, activation={self.dual!r}, has_bias={self.has_bias}"


def _set_variance(kernel: _WideNetworkKernel, value: float | Tensor, name: str) -> None:
    raw = getattr(kernel, f"raw_{name}")
    if not torch.is_tensor(value):  # a Python float in the parameter's dtype, not rounded to the default one
        value = torch.as_tensor(value, dtype=raw.dtype, device=raw.device)
    value = _check_variance(value, name, allow_zero=False).to(raw)
    constraint = getattr(kernel, f"raw_{name}_constraint")
    kernel.initialize(**{f"raw_{name}": constraint.inverse_transform(value.expand_as(raw))})


class NNGPKernel(_WideNetworkKernel):
    """Covariance of an infinitely wide fully-connected network's output at initialisation.

    Args:
        depth: number of hidden layers (>= 1).
        activation: ``"relu"``, ``"leaky_relu"``, ``"abs"``, ``"erf"`` (closed forms), ``"tanh"``,
            ``"gelu"``, ``"sin"``, ... or any elementwise callable (Gauss quadrature), or a
            :class:`~priors.dual_activations.DualActivation`.
        weight_variance: initial ``σ_w²`` (> 0); scalar or ``[*batch_shape]``-broadcastable.
        bias_variance: initial ``σ_b²`` (>= 0); 0 builds a bias-free kernel without that parameter.
        batch_shape: one pair of hyperparameters per batch entry.
        active_dims: input dimensions to use.
        weight_variance_constraint, bias_variance_constraint: default ``Positive()``.
        weight_variance_prior, bias_variance_prior: optional GPyTorch priors.
        **activation_kwargs: ``negative_slope`` for leaky ReLU, ``num_radial``/``num_angular``
            for quadrature.

    Example:
        >>> from gpytorch.kernels import ScaleKernel
        >>> covar = ScaleKernel(NNGPKernel(depth=3, activation="erf"))
    """


class NTKKernel(_WideNetworkKernel):
    """Neural tangent kernel (NTK parametrisation) of an infinitely wide fully-connected network.

    Gradient descent on the squared loss trains the infinitely wide network as kernel regression
    with this kernel (arXiv 1806.07572); see :func:`priors.empirical_ntk.ntk_regression`.
    Arguments as :class:`NNGPKernel`.
    """

    _ntk = True
