"""Flat views of a model's latent sites, for engines that work on ``[chains, D]`` vectors.

Samplers and optimisers are simplest on one flat vector per chain; models speak in
dicts of named tensors. :class:`FlatView` converts between the two (with any leading
batch dims), and :func:`batched_potential` turns a model's ``log_density`` into a
function of ``[chains, D]`` that returns the log density and its gradient for every
chain in one vectorised call (``torch.func.vmap`` over ``grad_and_value``).
:func:`mlp_potential` is the same function, written batched, for the common special case of
a multilayer perceptron (one ``baddbmm`` per layer over ``[chains, N, width]``): several
times faster, and ``None`` for any other network so that callers fall back to
:func:`batched_potential`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

__all__ = ["ELEMENTWISE_ACTIVATIONS", "FlatView", "autograd_value_and_grad", "batched_potential", "mlp_potential"]

#: Parameter-free modules that act elementwise, so they apply unchanged to ``[chains, N, width]``
#: (what :func:`mlp_potential` accepts between ``nn.Linear`` layers).
ELEMENTWISE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.Tanh, nn.ReLU, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.CELU, nn.SELU, nn.LeakyReLU, nn.Softplus,
    nn.Mish, nn.Softsign, nn.Hardtanh, nn.ReLU6, nn.Identity,
)


class FlatView:
    """Ravel a dict of tensors ``name -> [*batch, *shape]`` into ``[*batch, D]`` and back.

    Args:
        shapes: site name -> event shape, in a fixed order (the order of the flat vector).
    """

    def __init__(self, shapes: Mapping[str, torch.Size]) -> None:
        if not shapes:
            raise ValueError("shapes must name at least one site")
        self.shapes = {n: torch.Size(s) for n, s in shapes.items()}
        self.sizes = [math.prod(s) for s in self.shapes.values()]
        self.size = sum(self.sizes)

    def ravel(self, params: Mapping[str, Tensor]) -> Tensor:
        """``{name: [*batch, *shape]}`` -> ``[*batch, D]`` (sites in this view's order)."""
        parts = []
        for name, shape in self.shapes.items():
            if name not in params:
                raise ValueError(f"params lacks site {name!r}")
            v = params[name]
            batch = v.shape[: v.dim() - len(shape)]
            if v.shape[v.dim() - len(shape):] != shape:
                raise ValueError(f"site {name!r} must end in shape {tuple(shape)}, got {tuple(v.shape)}")
            parts.append(v.reshape((*batch, -1)))
        return torch.cat(parts, -1)

    def unravel(self, flat: Tensor) -> dict[str, Tensor]:
        """``[*batch, D]`` -> ``{name: [*batch, *shape]}`` (views, no copies)."""
        if flat.shape[-1] != self.size:
            raise ValueError(f"flat must have last dimension {self.size}, got shape {tuple(flat.shape)}")
        batch = flat.shape[:-1]
        out = {}
        for (name, shape), piece in zip(self.shapes.items(), flat.split(self.sizes, -1)):
            out[name] = piece.reshape(batch + shape)
        return out


def batched_potential(model: Any, x: Tensor, y: Tensor | None, view: FlatView | None = None,
                      num_data: int | None = None) -> tuple[FlatView, Callable[[Tensor], tuple[Tensor, Tensor]]]:
    """Log density and gradient of a model for many chains at once.

    Args:
        model: a model with ``log_density(params, x, y, num_data=None)`` and
            ``latent_shapes(like)`` (e.g. :class:`bayesnets.bnn.BayesianNet`).
        x, y: the (already checked) data.
        view: the flat layout to use (default: the model's latent sites in order).
        num_data: passed to ``log_density`` for minibatch rescaling.

    Returns:
        ``(view, fn)`` where ``fn(z)`` takes ``z`` of shape ``[chains, D]`` (unconstrained)
        and returns ``(grad [chains, D], log_density [chains])``.
    """
    if view is None:
        like = x if x.is_floating_point() else torch.zeros(())
        view = FlatView(model.latent_shapes(like))

    def one(z: Tensor) -> Tensor:
        return model.log_density(view.unravel(z), x, y, num_data=num_data)

    return view, vmap(grad_and_value(one))


def mlp_potential(model: Any, x: Tensor, y: Tensor | None, view: FlatView | None = None,
                  num_data: int | None = None) -> tuple[FlatView, Callable[[Tensor], tuple[Tensor, Tensor]]] | None:
    """:func:`batched_potential` for a BayesianNet whose network is an MLP, by batched matmuls.

    The same log density as ``model.log_density`` row by row (a test checks values and
    gradients), but the network runs as one ``baddbmm`` per layer over ``[chains, N, width]``
    instead of ``vmap`` over ``functional_call``, and the gradient is one backward pass of the
    sum over chains (rows do not interact; :func:`autograd_value_and_grad`). The gradient is
    nearly all of an HMC run's time: on 2 shared CPU cores (1 thread, float64, 40 points) a
    6-50-50-1 net's gradient for 4 chains took 2.5 ms against 4.4 ms by ``vmap``.

    Args:
        model: a :class:`bayesnets.bnn.BayesianNet` (``net``, ``weight_shapes``,
            ``transforms``, ``log_prior``, ``likelihood``, ``latent_shapes``).
        x: ``[N, d]`` inputs (already checked); y: targets in the likelihood's canonical shape.
        view: the flat layout (default: the model's latent sites in order).
        num_data: total dataset size when ``x`` is a minibatch (the likelihood is rescaled by
            ``num_data / N``, as ``log_density`` does).

    Returns:
        ``(view, fn)`` with ``fn(z [chains, D]) -> (grad [chains, D], log_density [chains])``,
        or ``None`` when the model is not an MLP BayesianNet (its ``net`` is not an
        ``nn.Sequential`` of ``nn.Linear`` layers and :data:`ELEMENTWISE_ACTIVATIONS`, or ``x``
        is not ``[N, d]``): then use :func:`batched_potential`.
    """
    net = getattr(model, "net", None)
    needs = ("weight_shapes", "transforms", "log_prior", "likelihood", "latent_shapes")
    if (not isinstance(net, nn.Sequential) or not all(hasattr(model, a) for a in needs)
            or not all(isinstance(m, (nn.Linear, *ELEMENTWISE_ACTIVATIONS)) for m in net)
            or not any(isinstance(m, nn.Linear) for m in net) or x.dim() != 2 or not x.is_floating_point()):
        return None
    if view is None:
        view = FlatView(model.latent_shapes(x))
    transforms = model.transforms(x)
    layers = [(str(i), m) for i, m in enumerate(net)]
    scale = None if num_data is None else num_data / x.shape[0]

    def log_density(z: Tensor) -> Tensor:
        chains = z.shape[0]
        # value checks are data-dependent (and reject the wild points a step-size search visits)
        with pyro.validation_enabled(False):
            params = view.unravel(z)
            constrained = dict(params)
            log_jac = z.new_zeros(chains)
            for n, tr in transforms.items():
                constrained[n] = tr(params[n])
                log_jac = log_jac + tr.log_abs_det_jacobian(params[n], constrained[n]).reshape(chains, -1).sum(-1)
            h = x.expand(chains, *x.shape)
            for name, module in layers:
                if isinstance(module, nn.Linear):
                    weight = constrained[f"{name}.weight"].mT
                    bias = constrained.get(f"{name}.bias")
                    h = torch.bmm(h, weight) if bias is None else torch.baddbmm(bias.unsqueeze(-2), h, weight)
                else:
                    h = module(h)
            rest = {n: v for n, v in constrained.items() if n not in model.weight_shapes}
            ll = model.likelihood.dist(h, rest).log_prob(y).sum(-1)
            if scale is not None:
                ll = ll * scale
            return model.log_prior(constrained) + log_jac + ll

    return view, autograd_value_and_grad(log_density)


def autograd_value_and_grad(log_density: Callable[[Tensor], Tensor]) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """Gradient of a batched log density ``[chains, D] -> [chains]`` by one backward pass of
    the sum (exact per chain when rows do not interact).

    Plain autograd, not ``torch.func.grad``: on the 2-core test machine the latter's dispatch
    cost about 1 ms more per call for a 6-50-50-1 MLP (3.6 against 2.5 ms for 4 chains), and
    ``make_fx`` traces either.

    Returns:
        ``fn(z [chains, D]) -> (grad [chains, D], log_density [chains])``.

    Raises:
        ValueError: when ``log_density`` does not return one value per chain.
    """

    def fn(z: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            lp = log_density(zz)
            if not isinstance(lp, Tensor) or tuple(lp.shape) != (z.shape[0],):
                got = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
                raise ValueError(f"log_density must map [chains, D] to [chains] = [{z.shape[0]}], got {got}")
            (g,) = torch.autograd.grad(lp.sum(), zz)
        return g.detach(), lp.detach()

    return fn
