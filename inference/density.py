"""One adapter from models to log densities on ``[chains, D]`` unconstrained points.

Engines that move many chains (or ensemble members) at once work on one flat vector per
chain; models speak in dicts of named tensors. This module is where the two meet, for every
engine that needs it (:class:`~inference.hmc.BatchedHMC`, the SG-MCMC engines,
:class:`~inference.ensembles.DeepEnsemble`):

* :class:`FlatView` ravels ``{name: [*batch, *shape]}`` into ``[*batch, D]`` and back.
* :func:`make_potential` builds a :class:`Potential` from a model and one probe batch:
  ``potential(z, x, y, per_chain)`` returns ``(grad [C, D], log_density [C])`` at ``z``
  ``[C, D]``, on data shared by all chains (``[B, ...]``) or one batch per chain
  (``[C, B, ...]``); ``potential.bind(x, y)`` fixes the data (a
  :data:`~inference.integrators.GradAndValue`, what :func:`~inference.hmc.run_batched_hmc`
  takes); ``init``, ``constrain``, ``unconstrain`` and ``view`` do the rest.

Three ways to the log density, by model (``Potential.path``):

* ``"mlp"``: a :class:`~bayesnets.bnn.BayesianNet` whose network is an MLP (an
  ``nn.Sequential`` of ``nn.Linear`` layers and :data:`ELEMENTWISE_ACTIVATIONS`), on shared
  ``[N, d]`` inputs: the network runs as one ``baddbmm`` per layer over ``[C, N, width]``
  (the same density as ``log_density``, to rounding; several times faster). Per-chain
  batches of such a model take the ``"vmap"`` way.
* ``"vmap"``: any model with the functional form (``log_density(params, x, y, num_data=)``,
  ``init_params``, ``constrain``, ``latent_shapes``), vectorised over chains with
  ``torch.func.vmap``.
* ``"trace"``: any other Pyro model ``model(x, y)``, through Pyro's trace (``poutine.condition``
  + ``trace``, with the Jacobians of the unconstraining bijections), vectorised with ``vmap``
  when the model allows it, else chain after chain with a warning. Its observations must be
  scaled by ``num_data / B`` on a minibatch (a subsampled plate, or a ``num_data`` keyword, which
  is then passed ``num_data``); global latent sites only.

Two ways to the gradient (``gradient=``): ``"sum"`` (default), one reverse pass of the sum over
chains through the vectorised forward pass (rows do not interact, so it is every chain's own
gradient; one chain skips ``vmap`` on the ``"vmap"`` path), about 1.6x faster than
``"vmap"``, ``torch.func.vmap(torch.func.grad_and_value(.))``, per-chain functional gradients.
The MLP form always takes the first. Engines keep the choices their earlier releases made,
so fixed-seed draws stay bit-identical: BatchedHMC ``gradient="vmap"`` with the MLP form,
SG-MCMC and ensembles ``gradient="sum"`` without it (``mlp=False``).
"""

from __future__ import annotations

import inspect
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn
from torch.func import vmap

from inference.checks import check_choice
from inference.engine import float_like, has_fast_density
from inference.integrators import GradAndValue

__all__ = [
    "ELEMENTWISE_ACTIVATIONS",
    "GRADIENTS",
    "FlatView",
    "Potential",
    "autograd_grad_and_value",
    "make_potential",
]

#: Parameter-free modules that act elementwise, so they apply unchanged to ``[chains, N, width]``
#: (what the ``"mlp"`` path accepts between ``nn.Linear`` layers).
ELEMENTWISE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.Tanh, nn.ReLU, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.CELU, nn.SELU, nn.LeakyReLU, nn.Softplus,
    nn.Mish, nn.Softsign, nn.Hardtanh, nn.ReLU6, nn.Identity,
)

#: How a :class:`Potential` takes gradients: one backward pass of the sum over chains, or
#: ``vmap`` over per-chain ``grad_and_value``.
GRADIENTS = ("sum", "vmap")

#: Relative tolerance when checking that a Pyro model's plate scales the minibatch by N / B.
SCALE_RTOL = 1e-6


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


def autograd_grad_and_value(log_density: Callable[[Tensor], Tensor]) -> GradAndValue:
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


class Potential(ABC):
    """Log density and its gradient for ``[chains, D]`` unconstrained parameters of one model.

    Built by :func:`make_potential`. The flat layout ``view`` may be replaced by another
    :class:`FlatView` of the same sites (every method reads it on use).

    Attributes:
        view: the flat layout of the model's latent sites.
        path: ``"mlp"``, ``"vmap"`` or ``"trace"``: how shared data is evaluated (module docstring).
        gradient: ``"sum"`` or ``"vmap"`` (:data:`GRADIENTS`).
    """

    path: str

    def __init__(self, view: FlatView, gradient: str) -> None:
        self.view = view
        self.gradient = check_choice(gradient, "gradient", GRADIENTS)

    @abstractmethod
    def log_density(self, z: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
        """One chain's log density (0-d) at unconstrained ``z`` ``[D]`` on one batch ``(x, y)``;
        written for ``vmap`` over chains."""

    @abstractmethod
    def init(self, num_chains: int, strategy: str, like: Tensor) -> Tensor:
        """Start points ``[num_chains, D]`` (unconstrained) by ``strategy`` (``"prior"``,
        ``"module"`` or ``"zeros"``, as the model allows), in ``like``'s dtype and device."""

    @abstractmethod
    def constrain(self, z: Tensor) -> dict[str, Tensor]:
        """``[*batch, D]`` unconstrained -> constrained site values ``{name: [*batch, *shape]}``."""

    @abstractmethod
    def unconstrain(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """Constrained values of some sites ``{name: [*batch, *shape]}`` -> unconstrained."""

    def __call__(self, z: Tensor, x: Tensor, y: Tensor | None = None,
                 per_chain: bool = False) -> tuple[Tensor, Tensor]:
        """``(grad [C, D], value [C])`` at ``z`` ``[C, D]``; ``x``/``y`` are ``[C, B, ...]`` when
        ``per_chain`` (one batch per chain), else ``[B, ...]`` shared by all chains."""
        return self._vmap(z, x, y, per_chain)

    def bind(self, x: Tensor, y: Tensor | None = None, per_chain: bool = False) -> GradAndValue:
        """``z -> self(z, x, y, per_chain)``: the data fixed (for :func:`~inference.hmc.run_batched_hmc`,
        :func:`~inference.hmc.ascend`)."""
        return lambda z: self(z, x, y, per_chain)

    def _vmap(self, z: Tensor, x: Tensor, y: Tensor | None, per_chain: bool,
              **vmap_options: Any) -> tuple[Tensor, Tensor]:
        """:meth:`log_density` of every chain by ``vmap``, and its gradient by :attr:`gradient`."""
        dim = 0 if per_chain else None
        in_dims = (0, dim, dim if y is not None else None)
        if self.gradient == "vmap":
            return vmap(torch.func.grad_and_value(self.log_density), in_dims=in_dims, **vmap_options)(z, x, y)
        batched = vmap(self.log_density, in_dims=in_dims, **vmap_options)
        return autograd_grad_and_value(lambda w: batched(w, x, y))(z)


def _mlp_layers(model: Any, x: Tensor) -> list[tuple[str, nn.Module]] | None:
    """``(name, module)`` of each layer when ``model`` is a BayesianNet whose network is an MLP
    and ``x`` is ``[N, d]`` floating point (what the ``"mlp"`` path needs); else None."""
    net = getattr(model, "net", None)
    needs = ("weight_shapes", "transforms", "log_prior", "likelihood", "latent_shapes")
    if (not isinstance(net, nn.Sequential) or not all(hasattr(model, a) for a in needs)
            or not all(isinstance(m, (nn.Linear, *ELEMENTWISE_ACTIVATIONS)) for m in net)
            or not any(isinstance(m, nn.Linear) for m in net) or x.dim() != 2 or not x.is_floating_point()):
        return None
    return [(str(i), m) for i, m in enumerate(net)]


class _DensityPotential(Potential):
    """Through the model's own ``log_density`` (``"vmap"``), or batched matmuls for an MLP
    BayesianNet on shared data (``"mlp"``)."""

    def __init__(self, model: Any, x: Tensor, num_data: int | None, likelihood_only: bool, mlp: bool,
                 gradient: str) -> None:
        super().__init__(FlatView(model.latent_shapes(float_like(x))), gradient)
        self.model = model
        self.num_data = num_data
        self.likelihood_only = likelihood_only
        self._layers = _mlp_layers(model, x) if mlp else None
        self._transforms = model.transforms(x) if self._layers is not None else {}
        self.path = "vmap" if self._layers is None else "mlp"

    def log_density(self, z: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
        params = self.view.unravel(z)
        if not self.likelihood_only:
            return self.model.log_density(params, x, y, num_data=self.num_data)
        with pyro.validation_enabled(False):  # data-dependent checks cannot run under vmap
            ll = self.model.log_likelihood(self.model.constrain(params), x, y).sum()
        return ll if self.num_data is None else ll * (self.num_data / x.shape[0])

    def _mlp_log_density(self, z: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """``[C, D] -> [C]`` on shared ``[N, d]`` inputs, the network as one ``baddbmm`` per layer.

        The same log density as ``model.log_density`` row by row (a test checks values and
        gradients). The gradient is nearly all of an HMC run's time: on 2 shared CPU cores (1
        thread, float64, 40 points) a 6-50-50-1 net's gradient for 4 chains took 2.5 ms against
        4.4 ms by ``vmap``.
        """
        model, chains = self.model, z.shape[0]
        # value checks are data-dependent (and reject the wild points a step-size search visits)
        with pyro.validation_enabled(False):
            params = self.view.unravel(z)
            constrained = dict(params)
            log_jac = z.new_zeros(chains)
            for n, tr in self._transforms.items():
                constrained[n] = tr(params[n])
                log_jac = log_jac + tr.log_abs_det_jacobian(params[n], constrained[n]).reshape(chains, -1).sum(-1)
            h = x.expand(chains, *x.shape)
            for name, module in self._layers or ():
                if isinstance(module, nn.Linear):
                    weight = constrained[f"{name}.weight"].mT
                    bias = constrained.get(f"{name}.bias")
                    h = torch.bmm(h, weight) if bias is None else torch.baddbmm(bias.unsqueeze(-2), h, weight)
                else:
                    h = module(h)
            rest = {n: v for n, v in constrained.items() if n not in model.weight_shapes}
            ll = model.likelihood.dist(h, rest).log_prob(y).sum(-1)
            if self.num_data is not None:
                ll = ll * (self.num_data / x.shape[0])
            if self.likelihood_only:
                return ll
            return model.log_prior(constrained) + log_jac + ll

    def __call__(self, z: Tensor, x: Tensor, y: Tensor | None = None,
                 per_chain: bool = False) -> tuple[Tensor, Tensor]:
        if y is None:
            raise ValueError(f"y is required to condition {type(self.model).__name__} on data")
        if self._layers is not None and not per_chain:
            return autograd_grad_and_value(lambda w: self._mlp_log_density(w, x, y))(z)
        if z.shape[0] == 1 and self.gradient == "sum":  # one chain: no vmap overhead at all
            return autograd_grad_and_value(lambda w: self.log_density(
                w[0], x[0] if per_chain else x, y[0] if per_chain else y).unsqueeze(0))(z)
        return self._vmap(z, x, y, per_chain)

    def init(self, num_chains: int, strategy: str, like: Tensor) -> Tensor:
        return torch.stack([self.view.ravel(self.model.init_params(like, strategy=strategy))
                            for _ in range(num_chains)])

    def constrain(self, z: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return self.model.constrain(self.view.unravel(z))

    def unconstrain(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        with torch.no_grad():
            return self.model.unconstrain(params)


def _accepts_num_data(model: Any) -> bool:
    try:
        return "num_data" in inspect.signature(model).parameters
    except (TypeError, ValueError):
        return False


class _TracePotential(Potential):
    """Through Pyro's trace of a generic model: vectorised over chains with ``vmap`` when the
    model allows it (most do), else one chain after another."""

    path = "trace"

    def __init__(self, model: Any, x: Tensor, y: Tensor | None, num_data: int, likelihood_only: bool,
                 gradient: str) -> None:
        self.model = model
        self._probe = (x, y)
        self.kwargs = {"num_data": num_data} if _accepts_num_data(model) else {}
        self.likelihood_only = likelihood_only
        trace = poutine.trace(model).get_trace(x, y, **self.kwargs)
        shapes: dict[str, torch.Size] = {}
        self.transforms = {}
        scales = []
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if site["is_observed"]:
                scales.append(float(site["scale"]) if not isinstance(site["scale"], Tensor)
                              else float(site["scale"].max()))
                continue
            if site["fn"].support.is_discrete:
                raise ValueError(f"site {name!r} is discrete: these engines need continuous latent sites "
                                 "(marginalise it out or use an enumeration-aware engine)")
            for frame in site["cond_indep_stack"]:
                if frame.full_size is not None and frame.full_size != frame.size:
                    raise ValueError(f"site {name!r} is a local latent variable inside the subsampled plate "
                                     f"{frame.name!r}; only global latent sites are supported")
            shapes[name] = site["value"].shape
            self.transforms[name] = biject_to(site["fn"].support)
        if not shapes:
            raise ValueError("the model has no latent sample sites to infer")
        batch = x.shape[0]
        if batch < num_data and not any(math.isclose(s, num_data / batch, rel_tol=SCALE_RTOL) for s in scales):
            raise ValueError(
                f"the model's observations are not scaled by N / B = {num_data}/{batch} on a minibatch: declare "
                f"them in a subsampled plate, e.g. pyro.plate('data', {num_data}, subsample_size=len(x)), or give "
                "the model a num_data keyword (it is passed N)"
            )
        super().__init__(FlatView(shapes), gradient)
        self._vectorise = True

    def init(self, num_chains: int, strategy: str, like: Tensor) -> Tensor:
        check_choice(strategy, "init for a model without log_density", ("prior", "zeros"))
        if strategy == "zeros":
            return torch.zeros(num_chains, self.view.size, dtype=like.dtype, device=like.device)
        rows = []
        for _ in range(num_chains):
            tr = poutine.trace(self.model).get_trace(*self._probe, **self.kwargs)
            vals = {n: self.transforms[n].inv(tr.nodes[n]["value"]).detach() for n in self.view.shapes}
            rows.append(self.view.ravel(vals))
        return torch.stack(rows).to(like)

    def log_density(self, z: Tensor, x: Tensor, y: Tensor | None) -> Tensor:
        u = self.view.unravel(z)
        constrained = {n: t(u[n]) for n, t in self.transforms.items()}
        tr = poutine.trace(poutine.condition(self.model, data=constrained)).get_trace(x, y, **self.kwargs)
        if self.likelihood_only:
            return tr.log_prob_sum(site_filter=lambda _, site: site["is_observed"])
        lp = tr.log_prob_sum()
        for n, t in self.transforms.items():
            lp = lp + t.log_abs_det_jacobian(u[n], constrained[n]).sum()
        return lp

    def __call__(self, z: Tensor, x: Tensor, y: Tensor | None = None,
                 per_chain: bool = False) -> tuple[Tensor, Tensor]:
        if self._vectorise:
            try:
                # Value checks are data-dependent and cannot run under vmap; the first trace
                # in __init__ ran them with validation on.
                with pyro.validation_enabled(False):
                    return self._vmap(z, x, y, per_chain, randomness="different")
            except (RuntimeError, NotImplementedError, ValueError, TypeError, IndexError) as err:
                # Data-dependent control flow or in-place updates in the model: loop instead.
                self._vectorise = False
                warnings.warn(f"vmap over chains failed for this Pyro model ({err}); running chains one by one",
                              RuntimeWarning, stacklevel=3)

        def looped(w: Tensor) -> Tensor:
            return torch.stack([self.log_density(w[c], x[c] if per_chain else x,
                                                 (y[c] if per_chain else y) if y is not None else None)
                                for c in range(w.shape[0])])

        return autograd_grad_and_value(looped)(z)

    def constrain(self, z: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            u = self.view.unravel(z)
            return {n: t(u[n]) for n, t in self.transforms.items()}

    def unconstrain(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        with torch.no_grad():
            return {n: self.transforms[n].inv(v) for n, v in params.items()}


def make_potential(model: Any, x: Tensor, y: Tensor | None = None, num_data: int | None = None,
                   likelihood_only: bool = False, *, mlp: bool = True, gradient: str = "sum") -> Potential:
    """The :class:`Potential` of ``model`` for batches like ``(x, y)`` out of ``num_data`` rows.

    Args:
        model: a model with the functional form (``log_density``, ``init_params``, ``constrain``,
            ``latent_shapes``; the ``"vmap"`` or ``"mlp"`` path) or any Pyro model (``"trace"``).
        x, y: one (checked) batch, used to read the model's sites, to recognise an MLP, and to
            check that a Pyro model scales its observations by ``num_data / len(x)``.
        num_data: the dataset size ``N`` when batches are minibatches (their log-likelihood is
            rescaled by ``N / B``); ``None``: no rescaling (``x`` is all the data).
        likelihood_only: the log-likelihood alone (maximum likelihood) instead of the log joint
            in unconstrained space.
        mlp: take the ``"mlp"`` path for an MLP BayesianNet on shared data.
        gradient: ``"sum"`` or ``"vmap"`` (module docstring).

    Raises:
        ValueError: a Pyro model with discrete or local latent sites, none at all, or unscaled
            observations on a minibatch; an unknown ``gradient``.
    """
    if has_fast_density(model):
        return _DensityPotential(model, x, num_data, likelihood_only, mlp, gradient)
    return _TracePotential(model, x, y, x.shape[0] if num_data is None else num_data, likelihood_only, gradient)
