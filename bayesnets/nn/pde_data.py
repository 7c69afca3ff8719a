"""Small 2-D PDE data sets for neural operators: Poisson and Darcy flow on the unit square.

Both problems live on the ``n x n`` interior nodes of a uniform grid with spacing
``h = 1 / (n + 1)`` and zero Dirichlet boundary values (the ring of nodes just outside the
grid) — the same convention as a 3x3 convolution with zero padding, so a convolutional
operator sees the boundary condition through its padding.

* :func:`poisson_data`: ``-Laplace(u) = f`` with ``f`` a Gaussian random field; solved
  exactly (to rounding) for the 5-point Laplacian by a discrete sine transform.
* :func:`darcy_data`: ``-div(a grad u) = 1`` with a piecewise-constant coefficient
  ``a in {12, 3}`` (a thresholded Gaussian random field, as in the FNO/MgNO Darcy benchmark
  of Li et al., arXiv:2010.08895); 5-point finite volumes with harmonic face averages,
  solved by batched Jacobi-preconditioned conjugate gradients.

Random fields are ``N(0, (-Laplace + tau^2)^{-alpha})`` drawn in the sine basis. Everything
is plain torch: pass ``like`` (any tensor) to get data in its dtype and on its device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "DARCY_CONTRAST",
    "darcy_data",
    "darcy_operator",
    "gaussian_random_field",
    "laplacian_5pt",
    "poisson_data",
    "sine_transform",
]

#: Coefficient values of the Darcy benchmark (high, low), Li et al. arXiv:2010.08895.
DARCY_CONTRAST = (12.0, 3.0)


def _like(like: Tensor | None) -> tuple[torch.dtype, torch.device]:
    if like is None:
        return torch.get_default_dtype(), torch.device("cpu")
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    return dtype, like.device


def _check_grid(n: int, num: int) -> None:
    if int(n) < 2:
        raise ValueError(f"n (grid size) must be >= 2, got {n}")
    if int(num) < 1:
        raise ValueError(f"num (number of samples) must be >= 1, got {num}")


def _sine_matrix(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Orthonormal DST-I matrix ``[n, n]`` (symmetric, its own inverse)."""
    k = torch.arange(1, n + 1, dtype=torch.float64)
    s = math.sqrt(2.0 / (n + 1)) * torch.sin(math.pi * k[:, None] * k[None, :] / (n + 1))
    return s.to(dtype=dtype, device=device)


def sine_transform(x: Tensor) -> Tensor:
    """Orthonormal 2-D discrete sine transform (type I) over the last two dims, ``[..., n, n]``.

    It diagonalises the 5-point Dirichlet Laplacian and is its own inverse.
    """
    if x.dim() < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must have shape [..., n, n], got {tuple(x.shape)}")
    s = _sine_matrix(x.shape[-1], x.dtype, x.device)
    return s @ x @ s


def _laplacian_eigenvalues(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Eigenvalues ``[n, n]`` of ``-Laplace_h`` (5-point, Dirichlet, spacing ``1/(n+1)``)."""
    h = 1.0 / (n + 1)
    k = torch.arange(1, n + 1, dtype=dtype, device=device)
    lam = (4.0 / h**2) * torch.sin(math.pi * k * h / 2) ** 2
    return lam[:, None] + lam[None, :]


def laplacian_5pt(u: Tensor) -> Tensor:
    """The unscaled 5-point stencil ``4 u_ij - (sum of the 4 neighbours)``, zero outside.

    ``laplacian_5pt(u) / h^2`` is ``-Laplace_h(u)``. Shapes ``[..., n, m] -> [..., n, m]``.
    """
    if u.dim() < 2:
        raise ValueError(f"u must have shape [..., n, m], got {tuple(u.shape)}")
    p = F.pad(u, (1, 1, 1, 1))
    return 4 * u - p[..., :-2, 1:-1] - p[..., 2:, 1:-1] - p[..., 1:-1, :-2] - p[..., 1:-1, 2:]


def gaussian_random_field(num: int, n: int, alpha: float = 2.0, tau: float = 3.0,
                          generator: torch.Generator | None = None, like: Tensor | None = None) -> Tensor:
    """Draws of ``N(0, (-Laplace + tau^2)^{-alpha})`` on the ``n x n`` grid, ``[num, n, n]``.

    The covariance operator is taken with Dirichlet boundaries (sine basis); larger
    ``alpha`` gives smoother fields, ``tau`` sets the length scale (``~ 1/tau``). Fields are
    scaled to unit pointwise variance averaged over the grid.
    """
    _check_grid(n, num)
    dtype, device = _like(like)
    xi = torch.randn(num, n, n, generator=generator, dtype=torch.float64).to(dtype=dtype, device=device)
    # Continuum eigenvalues pi^2 (k^2 + l^2) of -Laplace on the unit square.
    k = torch.arange(1, n + 1, dtype=dtype, device=device)
    eig = math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2)
    coeff = (eig + tau**2) ** (-alpha / 2)
    # The transform is orthonormal, so the grid-averaged variance is sum(coeff^2) / n^2.
    coeff = coeff * (n / coeff.pow(2).sum().sqrt())
    return sine_transform(xi * coeff)


def poisson_data(num: int, n: int, alpha: float = 2.0, tau: float = 3.0, generator: torch.Generator | None = None,
                 like: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Pairs ``(f, u)`` with ``-Laplace_h(u) = f`` (5-point, zero Dirichlet), each ``[num, 1, n, n]``.

    ``f`` is a Gaussian random field (:func:`gaussian_random_field`); ``u`` is the exact
    discrete solution (sine-transform solve), so ``laplacian_5pt(u) = h^2 f`` to rounding.
    """
    f = gaussian_random_field(num, n, alpha, tau, generator, like)
    u = sine_transform(sine_transform(f) / _laplacian_eigenvalues(n, f.dtype, f.device))
    return f.unsqueeze(1), u.unsqueeze(1)


_NEIGHBOURS = ((slice(None, -2), slice(1, -1)), (slice(2, None), slice(1, -1)),
               (slice(1, -1), slice(None, -2)), (slice(1, -1), slice(2, None)))


def _face_coefficients(a: Tensor) -> list[Tensor]:
    """Harmonic means of ``a`` across the 4 faces of each cell (boundary faces: the cell's own ``a``)."""
    ap = F.pad(a, (1, 1, 1, 1), mode="replicate")
    return [2 * a * ap[..., r, c] / (a + ap[..., r, c]) for r, c in _NEIGHBOURS]


def darcy_operator(a: Tensor, u: Tensor) -> Tensor:
    """``h^2 (-div(a grad u))`` by 5-point finite volumes (harmonic face averages), zero Dirichlet.

    Shapes: ``a``, ``u`` ``[..., n, n]`` -> ``[..., n, n]``.
    """
    if a.shape != u.shape:
        raise ValueError(f"a and u must have the same shape [..., n, n], got {tuple(a.shape)} and {tuple(u.shape)}")
    return _apply_faces(_face_coefficients(a), u)


def _apply_faces(faces: list[Tensor], u: Tensor) -> Tensor:
    up = F.pad(u, (1, 1, 1, 1))
    out = torch.zeros_like(u)
    for face, (r, c) in zip(faces, _NEIGHBOURS):
        out = out + face * (u - up[..., r, c])
    return out


def _batched_cg(apply: Callable[[Tensor], Tensor], b: Tensor, diag: Tensor, tol: float, max_iter: int) -> Tensor:
    """Jacobi-preconditioned conjugate gradients for SPD ``apply``, batched over dim 0."""
    x = torch.zeros_like(b)
    r = b.clone()
    z = r / diag
    p = z.clone()
    rz = (r * z).flatten(1).sum(1)
    b_norm = b.flatten(1).norm(dim=1)
    for _ in range(max_iter):
        if bool((r.flatten(1).norm(dim=1) <= tol * b_norm).all()):
            return x
        ap = apply(p)
        step = rz / (p * ap).flatten(1).sum(1)
        x = x + step.view(-1, 1, 1) * p
        r = r - step.view(-1, 1, 1) * ap
        z = r / diag
        rz_new = (r * z).flatten(1).sum(1)
        p = z + (rz_new / rz).view(-1, 1, 1) * p
        rz = rz_new
    raise RuntimeError(f"Darcy CG did not reach tol={tol} in {max_iter} iterations; raise max_iter")


def darcy_data(num: int, n: int, contrast: tuple[float, float] = DARCY_CONTRAST, alpha: float = 2.0,
               tau: float = 3.0, tol: float = 1e-8, max_iter: int = 5000, generator: torch.Generator | None = None,
               like: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Pairs ``(a, u)`` with ``-div(a grad u) = 1`` on the unit square, each ``[num, 1, n, n]``.

    ``a`` is ``contrast[0]`` where a Gaussian random field is ``>= 0`` and ``contrast[1]``
    elsewhere. Solved to relative residual ``tol`` (use float64 ``like`` for tight ``tol``).
    """
    _check_grid(n, num)
    hi, lo = (float(c) for c in contrast)
    if not (hi > 0 and lo > 0):
        raise ValueError(f"contrast values must be positive, got {contrast}")
    field = gaussian_random_field(num, n, alpha, tau, generator, like)
    a = torch.where(field >= 0, torch.full_like(field, hi), torch.full_like(field, lo))
    h = 1.0 / (n + 1)
    rhs = torch.full_like(a, h**2)
    faces = _face_coefficients(a)  # fixed during the solve: computed once
    diag = sum(faces)  # the operator's diagonal
    u = _batched_cg(lambda v: _apply_faces(faces, v), rhs, diag, tol, max_iter)
    return a.unsqueeze(1), u.unsqueeze(1)
