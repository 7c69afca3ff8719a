"""``BayesianNet``: any ``torch.nn.Module`` + a weight prior + a likelihood = a Pyro model.

The wrapped module is never mutated: its parameters are replaced at call time by
sampled values through ``torch.func.functional_call``, so conv nets, transformers and
the custom layers of :mod:`bayesnets.nn` work unchanged, and one code path serves the
Pyro model (``forward``), the fast log-density the engines use (``log_density``) and
vectorised prediction over posterior draws (``torch.func.vmap``).

Latent sites, in sampling order:

1. the weight prior's hyper sites (e.g. ``precision.0.weight``),
2. one site per parameter tensor, named as in ``module.named_parameters()``,
3. the likelihood's latent noise parameters (e.g. ``likelihood.scale``),

then the plated observation site ``obs``.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import biject_to
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.distributions import Transform
from torch.func import functional_call

from bayesnets.likelihoods import Likelihood
from inference.checks import check_init
from inference.data import check_data
from inference.posterior import OBS
from priors.weights import IIDGaussian, WeightPrior, forward_draws

__all__ = ["OBS", "BayesianNet"]



class BayesianNet(PyroModule):
    """A Bayesian neural network built from any ``nn.Module``.

    Args:
        module: the likelihood network; its output for ``x`` of shape ``[N, ...]`` must be
            ``[N, likelihood.num_outputs]``. Its current parameter values are only used for
            shapes (and as an optional start point).
        prior: weight prior (default ``IIDGaussian(1.0)``); bound to ``module``'s parameters.
        likelihood: observation model (see :mod:`bayesnets.likelihoods`).

    Example:
        >>> net = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 1))
        >>> model = BayesianNet(net, LayerwiseGaussian(1.0), Gaussian(scale=0.1))
        >>> posterior = NUTS(num_samples=200).fit(model, x, y)
    """

    def __init__(self, module: nn.Module, prior: WeightPrior | None = None,
                 likelihood: Likelihood | None = None) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        shapes = {name: p.shape for name, p in module.named_parameters()}
        if not shapes:
            raise ValueError(
                f"module ({type(module).__name__}) has no parameters: a BayesianNet puts priors on "
                "the module's parameters, so it needs at least one"
            )
        prior = IIDGaussian(1.0) if prior is None else prior
        if not isinstance(prior, WeightPrior):
            raise TypeError(f"prior must be a priors.weights.WeightPrior, got {type(prior).__name__}")
        if likelihood is None:
            raise ValueError("likelihood is required, e.g. likelihoods.Gaussian(scale=0.1)")
        if not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood must be a bayesnets.likelihoods.Likelihood, got {type(likelihood).__name__}")
        super().__init__()
        # Registered as submodules so .to()/.double()/state_dict reach them, but read
        # through the properties below: PyroModule's attribute hook would otherwise call
        # pyro.module() on them and put the unused module weights in Pyro's param store.
        self._modules.update(net=module, prior=prior, likelihood=likelihood)
        prior.bind(shapes)
        self.weight_shapes: dict[str, torch.Size] = dict(prior.shapes)
        self._transform_cache: dict[tuple[torch.dtype, torch.device], dict[str, Transform]] = {}
        like = self._like(None)
        clash = (set(prior.hyper_sites(like)) | set(likelihood.hyper_sites(like)) | {OBS}) & set(shapes)
        if clash:
            raise ValueError(f"module parameter names clash with model site names: {sorted(clash)}")

    @property
    def net(self) -> nn.Module:
        """The wrapped network (its own parameter values are not used by the model)."""
        return self._modules["net"]

    @property
    def prior(self) -> WeightPrior:
        return self._modules["prior"]  # type: ignore[return-value]

    @property
    def likelihood(self) -> Likelihood:
        return self._modules["likelihood"]  # type: ignore[return-value]

    # ----------------------------------------------------------------- helpers
    def _like(self, x: Tensor | None) -> Tensor:
        """A 0-d tensor carrying the floating dtype and device to compute in."""
        if x is not None:
            dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
            return torch.zeros((), dtype=dtype, device=x.device)
        p = next(self.net.parameters())
        return torch.zeros((), dtype=p.dtype, device=p.device)

    def site_priors(self, like: Tensor) -> dict[str, dist.Distribution]:
        """Priors of the sites that do not depend on other sites (hyper and noise sites)."""
        return {**self.prior.hyper_sites(like), **self.likelihood.hyper_sites(like)}

    def latent_shapes(self, like: Tensor | None = None) -> dict[str, torch.Size]:
        """Site name -> shape for every latent site, in sampling order."""
        like = self._like(None) if like is None else like
        out = {n: d.shape() for n, d in self.prior.hyper_sites(like).items()}
        out.update(self.weight_shapes)
        out.update({n: d.shape() for n, d in self.likelihood.hyper_sites(like).items()})
        return out

    def transforms(self, like: Tensor | None = None) -> dict[str, Transform]:
        """Bijections from unconstrained space to each constrained site (weights: none)."""
        like = self._like(None) if like is None else like
        key = (like.dtype, like.device)
        # Supports never change, so the bijections are built once per dtype/device (this
        # sits in every log_density call of every sampler).
        if key not in self._transform_cache:
            self._transform_cache[key] = {n: biject_to(d.support) for n, d in self.site_priors(like).items()}
        return self._transform_cache[key]

    def _split(self, params: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        weights = {n: params[n] for n in self.weight_shapes}
        rest = {n: v for n, v in params.items() if n not in self.weight_shapes}
        return weights, rest

    # ----------------------------------------------------------- validation
    def check_data(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Validate ``x`` (and ``y``) against this model; return ``y`` in canonical form.

        Checks the generic shape/NaN rules, that the module lives on ``x``'s device, and
        that a probe forward pass on two rows of ``x`` gives ``[2, num_outputs]``.

        Raises:
            ValueError: naming ``x``, ``y`` or ``module`` and the expected shape.
        """
        check_data(x, y)
        for name, t in list(self.net.named_parameters()) + list(self.net.named_buffers()):
            if t.device != x.device:
                raise ValueError(
                    f"module tensor {name!r} is on {t.device} but x is on {x.device}; "
                    f"move the model with model.to(x.device)"
                )
        like = self._like(x)
        probe = x[:2]
        weights = {n: p.detach().to(like) for n, p in self.net.named_parameters()}
        was_training = self.net.training
        try:
            # Eval mode: a shape probe must not update running statistics (BatchNorm, PowerNorm).
            self.net.eval()
            with torch.no_grad():
                f = functional_call(self.net, weights, (probe,))
        except (RuntimeError, TypeError, IndexError, ValueError) as err:
            raise ValueError(
                f"x of shape {tuple(x.shape)} does not fit the module ({type(self.net).__name__}): {err}"
            ) from err
        finally:
            self.net.train(was_training)
        if not isinstance(f, Tensor) or f.dim() != 2 or f.shape != (probe.shape[0], self.likelihood.num_outputs):
            got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(
                f"module output for x[:{probe.shape[0]}] must have shape [{probe.shape[0]}, "
                f"{self.likelihood.num_outputs}] (num_outputs of {type(self.likelihood).__name__}), got {got}"
            )
        if y is None:
            return x, None
        y = self.likelihood.check_target(y, x.shape[0])
        if y.is_floating_point():
            y = y.to(like.dtype)
        return x, y

    # ------------------------------------------------------------ Pyro model
    def forward(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> Tensor:
        """The Pyro model: sample every latent site, then observe ``y`` in a plate.

        Args:
            x: inputs ``[N, ...]``.
            y: targets ``[N]`` / ``[N, num_outputs]``, or None to sample them.
            num_data: total dataset size when ``x`` is a minibatch of ``B`` rows: the plate
                is then subsampled (size ``num_data``, these ``B`` rows), so Pyro scales the
                log-likelihood by ``num_data / B``, as :meth:`log_density` does.

        Returns:
            Network output ``f`` of shape ``[N, num_outputs]``.
        """
        like = self._like(x)
        hyper = {n: pyro.sample(n, d) for n, d in self.prior.hyper_sites(like).items()}
        weights = {n: pyro.sample(n, d) for n, d in self.prior.weight_dists(hyper, like).items()}
        noise = {n: pyro.sample(n, d) for n, d in self.likelihood.hyper_sites(like).items()}
        f = functional_call(self.net, weights, (x,))
        if num_data is None:
            plate = pyro.plate("data", x.shape[0])
        elif int(num_data) < x.shape[0]:
            raise ValueError(f"num_data ({num_data}) must be at least the number of rows of x ({x.shape[0]})")
        else:
            plate = pyro.plate("data", int(num_data), subsample=torch.arange(x.shape[0], device=x.device))
        with plate:
            pyro.sample(OBS, self.likelihood.dist(f, noise), obs=y)
        return f

    # ------------------------------------------------------- fast functional form
    def sample_prior(self, like: Tensor, sample_shape: torch.Size | tuple[int, ...] = ()) -> dict[str, Tensor]:
        """Ancestral draws of every latent site (constrained), ``[*sample_shape, *site_shape]``."""
        sample_shape = torch.Size(sample_shape)
        out = self.prior.sample(like, sample_shape)
        for n, d in self.likelihood.hyper_sites(like).items():
            out[n] = d.sample(sample_shape)
        return out

    def constrain(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map unconstrained values to the sites' supports (weights pass through)."""
        like = next(iter(params.values()))
        t = self.transforms(like)
        return {n: (t[n](v) if n in t else v) for n, v in params.items()}

    def unconstrain(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Inverse of :meth:`constrain`."""
        like = next(iter(params.values()))
        t = self.transforms(like)
        return {n: (t[n].inv(v) if n in t else v) for n, v in params.items()}

    def log_prior(self, params: Mapping[str, Tensor]) -> Tensor:
        """Log prior density of constrained values of all latent sites (one draw): a scalar."""
        like = next(iter(params.values()))
        lp = self.prior.log_prob(params)  # reads only its own sites
        for n, d in self.likelihood.hyper_sites(like).items():
            lp = lp + d.log_prob(params[n])
        return lp

    def forward_f(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Network output ``[N, num_outputs]`` for one draw of the weights."""
        weights, _ = self._split(params)
        return functional_call(self.net, weights, (x,))

    def log_likelihood(self, params: Mapping[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        """Pointwise log-likelihood ``[N]`` for one draw of constrained parameters."""
        _, rest = self._split(params)
        return self.likelihood.dist(self.forward_f(params, x), rest).log_prob(y)

    def log_density(self, params: Mapping[str, Tensor], x: Tensor, y: Tensor,
                    num_data: int | None = None) -> Tensor:
        """Log joint density in unconstrained space, Jacobians included (one draw).

        This is the negative of Pyro's potential energy for :meth:`forward`, computed
        without Pyro's tracing; batch over draws with ``torch.func.vmap``.

        Args:
            params: unconstrained value of every latent site (see :meth:`latent_shapes`).
            x: inputs ``[B, ...]`` (the full data, or a minibatch).
            y: targets for ``x`` (already checked by :meth:`check_data`).
            num_data: total dataset size N when ``x`` is a minibatch: the likelihood is
                rescaled by ``N / B`` (an unbiased estimate of the full-data term).

        Returns:
            A scalar tensor.
        """
        with pyro.validation_enabled(False):  # value checks are data-dependent: not vmap-able
            like = next(iter(params.values()))
            t = self.transforms(like)
            constrained = dict(params)
            log_jac = torch.zeros((), dtype=like.dtype, device=like.device)
            for n, tr in t.items():
                constrained[n] = tr(params[n])
                log_jac = log_jac + tr.log_abs_det_jacobian(params[n], constrained[n]).sum()
            ll = self.log_likelihood(constrained, x, y).sum()
            if num_data is not None:
                ll = ll * (num_data / x.shape[0])
            return self.log_prior(constrained) + log_jac + ll

    def init_params(self, like: Tensor, strategy: str = "prior") -> dict[str, Tensor]:
        """A start point in unconstrained space.

        Args:
            like: dtype/device reference (typically ``x``).
            strategy: ``"prior"`` (a draw from the prior), ``"module"`` (the module's
                current weights, prior draws for the other sites) or ``"zeros"``
                (unconstrained zeros; noise scales at 1).
        """
        like = self._like(like)
        if check_init(strategy, "strategy") == "zeros":
            shapes = self.latent_shapes(like)
            return {n: torch.zeros(s, dtype=like.dtype, device=like.device) for n, s in shapes.items()}
        with torch.no_grad():
            params = self.sample_prior(like)
            if strategy == "module":
                params.update({n: p.detach().to(like) for n, p in self.net.named_parameters()})
            return {n: v.detach() for n, v in self.unconstrain(params).items()}

    # -------------------------------------------------------- batched prediction
    def predict_f(self, params: Mapping[str, Tensor], x: Tensor, chunk_size: int | None = None) -> Tensor:
        """Network outputs for a batch of draws, vectorised with ``vmap``.

        Args:
            params: constrained draws, each ``[S, *site_shape]``.
            x: inputs ``[N, ...]``.
            chunk_size: draws per vectorised call (bounds memory); default all.

        Returns:
            ``f`` of shape ``[S, N, num_outputs]``.
        """
        weights, _ = self._split(params)
        return forward_draws(self.net, weights, x, chunk_size)

    def posterior_predictive(self, params: Mapping[str, Tensor], x: Tensor,
                             chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
        """Draws of ``f`` ``[S, N, num_outputs]`` and of ``y`` ``[S, N, ...]`` given parameter draws."""
        with torch.no_grad():
            f = self.predict_f(params, x, chunk_size)
            _, rest = self._split(params)
            y = self.likelihood.dist(f, rest).sample()
        return f, y

    def pointwise_log_likelihood(self, params: Mapping[str, Tensor], x: Tensor, y: Tensor,
                                 chunk_size: int | None = None) -> Tensor:
        """``log p(y_n | params_s)`` of shape ``[S, N]`` for a batch of constrained draws."""
        with torch.no_grad():
            f = self.predict_f(params, x, chunk_size)
            _, rest = self._split(params)
            return self.likelihood.dist(f, rest).log_prob(y)
