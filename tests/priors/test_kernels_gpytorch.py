"""NNGP and NTK kernels through GPyTorch's own kernel test suite (``BaseKernelTestCase``).

The base class checks batch shapes (batch data with unbatched, batched and doubly batched
kernels), ``diag=True`` against the full matrix's diagonal, ``active_dims`` (list and range),
kernel indexing ``kernel[idx]`` after ``expand_batch``, pickling, and dtype/device moves. Each
class below runs it on one configuration: activation with a closed form (ReLU, erf) or through
quadrature (by name and as a plain callable), with and without bias, NNGP and NTK. Batched
kernels get distinct hyperparameters per batch entry, so that indexing a kernel is tested
against the right entry rather than against identical copies.

``BAYESNETS_DEVICE`` (as in ``tests/conftest.py``) moves every kernel and every data set the
base class builds to that device.
"""

from __future__ import annotations

import math
import os
import unittest
from typing import ClassVar

import torch
from gpytorch.test.base_kernel_test_case import BaseKernelTestCase

from priors.kernels import NNGPKernel, NTKKernel

# The same device as the root conftest's `device` fixture (unittest classes cannot take fixtures).
DEVICE = torch.device(os.environ.get("BAYESNETS_DEVICE", "cpu"))


def _softsign(x: torch.Tensor) -> torch.Tensor:
    """A plain callable activation (no name, no closed form): goes through the quadrature path.

    Module level, so that a kernel holding it can be pickled."""
    return x / (1.0 + x.abs())


class _WideKernelCase(BaseKernelTestCase):
    """Shared configuration; subclasses set the kernel class and its constructor arguments."""

    seed = 0
    kernel_class: ClassVar[type] = NNGPKernel
    kernel_kwargs: ClassVar[dict] = {}

    def create_kernel_no_ard(self, **kwargs):
        kernel = self.kernel_class(**{"depth": 2, **self.kernel_kwargs, **kwargs})
        batch_shape = kernel.batch_shape
        if len(batch_shape) > 0:
            # distinct σ_w², σ_b² per batch entry: kernel[idx] must pick the right one
            steps = torch.arange(math.prod(batch_shape), dtype=torch.get_default_dtype()).reshape(*batch_shape, 1, 1)
            kernel.weight_variance = 1.0 + 0.5 * steps
            if kernel.has_bias:
                kernel.bias_variance = 0.05 + 0.1 * steps
        return kernel.to(DEVICE)

    # no create_kernel_ard: the kernels have no lengthscale, hence no ARD; the base class then
    # returns early from its two ARD tests (NotImplementedError), which pass vacuously.

    def create_data_no_batch(self):
        return super().create_data_no_batch().to(DEVICE)

    def create_data_single_batch(self):
        return super().create_data_single_batch().to(DEVICE)

    def create_data_double_batch(self):
        return super().create_data_double_batch().to(DEVICE)

    def test_kernel_dtype_device(self):
        # The base test asserts that a freshly created kernel sits on the CPU; ours go to DEVICE.
        if DEVICE.type != "cpu":
            self.skipTest(f"base test assumes kernels are created on the CPU; BAYESNETS_DEVICE={DEVICE}")
        super().test_kernel_dtype_device()


class _QuadratureCase(_WideKernelCase):
    """Quadrature activations: a coarse rule and fewer points per batch, for speed only.

    The base tests compare a kernel with itself across batch shapes, indexing and active_dims,
    not with the exact expectation, so the rule's accuracy does not matter here (the default
    rule's is tested in test_kernels.py and test_dual_activations.py). Batch shapes stay the base
    class's; only the doubly batched data has 10 points per batch instead of 50 (the default rule
    with autograd took ~10-30 s per test on those)."""

    quadrature_kwargs: ClassVar[dict] = {"num_radial": 8, "num_angular": 4}

    def create_kernel_no_ard(self, **kwargs):
        return super().create_kernel_no_ard(**{**self.quadrature_kwargs, **kwargs})

    def create_data_double_batch(self):
        return torch.randn(3, 2, 10, 2, device=DEVICE)  # base: (3, 2, 50, 2)


class _NoGradCase(_WideKernelCase):
    """Every base test under ``torch.no_grad()``: arc-cosine kernels then take their in-place
    blocked path (``_gram_inplace``) instead of the autograd recursion the other classes test."""

    def setUp(self):
        super().setUp()
        self._no_grad = torch.no_grad()
        self._no_grad.__enter__()

    def tearDown(self):
        self._no_grad.__exit__(None, None, None)
        super().tearDown()


#: One test class per configuration: name -> (kernel, base case, constructor arguments).
CONFIGURATIONS: dict[str, tuple[type, type, dict]] = {
    "NNGPReLU": (NNGPKernel, _WideKernelCase, {"activation": "relu", "weight_variance": 1.7, "bias_variance": 0.2}),
    "NNGPReLUNoBias": (NNGPKernel, _WideKernelCase, {"activation": "relu", "weight_variance": 2.0,
                                                     "bias_variance": 0.0}),
    "NNGPReLUNoGrad": (NNGPKernel, _NoGradCase, {"activation": "relu", "weight_variance": 1.7, "bias_variance": 0.2}),
    "NNGPErf": (NNGPKernel, _WideKernelCase, {"activation": "erf", "weight_variance": 1.5, "bias_variance": 0.1}),
    "NNGPTanhQuadrature": (NNGPKernel, _QuadratureCase, {"activation": "tanh", "weight_variance": 1.5,
                                                         "bias_variance": 0.1}),
    "NNGPCallableQuadratureNoBias": (NNGPKernel, _QuadratureCase, {"activation": _softsign, "weight_variance": 1.5,
                                                                   "bias_variance": 0.0}),
    "NTKReLU": (NTKKernel, _WideKernelCase, {"activation": "relu", "weight_variance": 1.7, "bias_variance": 0.2}),
    "NTKReLUNoBias": (NTKKernel, _WideKernelCase, {"activation": "relu", "weight_variance": 2.0,
                                                   "bias_variance": 0.0}),
    "NTKReLUNoGradNoBias": (NTKKernel, _NoGradCase, {"activation": "relu", "weight_variance": 2.0,
                                                     "bias_variance": 0.0}),
    "NTKLeakyReLUNoGrad": (NTKKernel, _NoGradCase, {"activation": "leaky_relu", "negative_slope": 0.2,
                                                    "weight_variance": 1.7, "bias_variance": 0.2}),
    "NTKErf": (NTKKernel, _WideKernelCase, {"activation": "erf", "weight_variance": 1.5, "bias_variance": 0.1}),
    "NTKTanhQuadrature": (NTKKernel, _QuadratureCase, {"activation": "tanh", "weight_variance": 1.5,
                                                       "bias_variance": 0.1}),
    "NTKCallableQuadratureNoBias": (NTKKernel, _QuadratureCase, {"activation": _softsign, "weight_variance": 1.5,
                                                                 "bias_variance": 0.0}),
}

for _name, (_kernel, _base, _kwargs) in CONFIGURATIONS.items():
    # module-level classes named Test*, which pytest collects as unittest cases
    globals()[f"Test{_name}"] = type(f"Test{_name}", (_base, unittest.TestCase),
                                     {"kernel_class": _kernel, "kernel_kwargs": _kwargs, "__module__": __name__})


def _relu_depth_one_by_hand(x: list[float], y: list[float], wv: float, bv: float) -> tuple[float, float]:
    """NNGP and NTK of one ReLU hidden layer for one pair, in Python floats (Cho & Saul; Jacot et al.)."""
    d = len(x)
    k12 = wv * sum(a * b for a, b in zip(x, y)) / d + bv
    k11 = wv * sum(a * a for a in x) / d + bv
    k22 = wv * sum(b * b for b in y) / d + bv
    theta = math.acos(max(-1.0, min(1.0, k12 / math.sqrt(k11 * k22))))
    nngp = wv / (2 * math.pi) * math.sqrt(k11 * k22) * (math.sin(theta) + (math.pi - theta) * math.cos(theta)) + bv
    ntk = nngp + wv * (math.pi - theta) / (2 * math.pi) * k12
    return nngp, ntk


def test_relu_depth_one_equals_the_hand_computed_closed_form(tkwargs):
    """Depth-1 ReLU NNGP and NTK, with and without autograd, against scalar formulas and exact anchors.

    (test_kernels.py checks the NNGP against BoTorch and Monte Carlo, the NTK only statistically.)"""
    points = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8], [0.0, 0.0], [2.0, -1.0]]
    x = torch.tensor(points, **tkwargs)
    wv, bv = 1.7, 0.3
    expected = torch.tensor([[_relu_depth_one_by_hand(p, q, wv, bv) for q in points] for p in points], **tkwargs)
    for cls, which in ((NNGPKernel, 0), (NTKKernel, 1)):
        kernel = cls(depth=1, activation="relu").to(**tkwargs)
        kernel.weight_variance, kernel.bias_variance = wv, bv  # after .to(): exact in float64
        with torch.no_grad():
            inplace = kernel(x).to_dense()
        autograd = kernel(x).to_dense().detach()
        for gram in (inplace, autograd):
            assert torch.allclose(gram, expected[..., which], rtol=1e-12, atol=1e-12), cls.__name__
    # Bias-free, σ_w² = 2, unit vectors in d = 2 (Σ⁰ = x·x'): Σ¹ = J(θ)/π and Θ¹ = Σ¹ + (π - θ)/π · x·x',
    # so equal points give (1, 2), orthogonal ones (1/π, 1/π), antipodal ones (0, 0).
    unit = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], **tkwargs)
    nngp = NNGPKernel(depth=1, weight_variance=2.0, bias_variance=0.0).to(**tkwargs)(unit).to_dense().detach()
    ntk = NTKKernel(depth=1, weight_variance=2.0, bias_variance=0.0).to(**tkwargs)(unit).to_dense().detach()
    assert torch.allclose(nngp[0], torch.tensor([1.0, 1 / math.pi, 0.0], **tkwargs), atol=1e-12)
    assert torch.allclose(ntk[0], torch.tensor([2.0, 1 / math.pi, 0.0], **tkwargs), atol=1e-12)
