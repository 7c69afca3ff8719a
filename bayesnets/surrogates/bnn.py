"""BNN surrogates: posterior draws of a Bayesian MLP as a BoTorch ensemble model.

Li, Rudner & Wilson (arXiv 2305.20028) fit fully stochastic BNNs by HMC, SGHMC and VI and read
the draws' function values as the surrogate's posterior. Here every draw is one member of
BoTorch's ``EnsembleModel``: ``posterior(X)`` returns an ``EnsemblePosterior`` over the members'
outputs and ``get_sampler`` hands acquisition functions an ``IndexSampler``, whose base samples
are member indices fixed by its seed. The paper's own posterior picked random members with
``np.random.randint`` at every call, so its acquisition surface changed between evaluations; with
fixed indices it is deterministic, and multi-start L-BFGS can optimise it.

Multi-output data (``train_Y`` ``[n, m]``, e.g. two objectives for qEHVI) is fitted by **one**
network with ``m`` outputs and one shared noise scale on the standardised outcomes: the outputs
share features, and one fit costs what one single-output fit costs.
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from botorch.acquisition.objective import PosteriorTransform
from botorch.models.ensemble import EnsembleModel
from botorch.models.transforms.input import InputTransform
from botorch.models.transforms.outcome import OutcomeTransform, Standardize
from botorch.posteriors.ensemble import EnsemblePosterior
from torch import Tensor, nn

from bayesnets.bnn import BayesianNet
from bayesnets.likelihoods import Gaussian
from bayesnets.surrogates.data import check_train_data
from bayesnets.surrogates.wrapping import fit_input_transform
from inference.checks import canonical_kwargs
from inference.density import FlatView
from inference.engine import Engine
from inference.hmc import NUTS, BatchedHMC
from inference.posterior import Posterior
from inference.sgmcmc import AdaptiveSGHMC
from inference.vi import SVI
from priors.weights import LayerwiseGaussian

__all__ = ["ACTIVATIONS", "INFERENCE", "BNNSurrogate", "NetEnsembleModel",
           "make_engine", "mlp"]

#: Hidden activations by name (the paper's networks are tanh MLPs).
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}

#: Width and hidden layers of the default MLP. The paper used 128 x 3 for the synthetic problems;
#: 50 x 2 keeps an HMC fit within a few times a GP fit on a CPU (issue 12's 5x budget; see
#: docs/surrogates.md for the timings) while being wide enough for the 2-10-D problems.
DEFAULT_WIDTH, DEFAULT_DEPTH = 50, 2
#: Prior of the noise scale on standardised outcomes: LogNormal with median 0.05 and log-sd 0.5
#: (the paper fixed the noise variance per problem; BO objectives are nearly noiseless). With a
#: looser LogNormal(log 0.1, 1) the MAP ensemble and HMC explained 10 points of a 1-D hump as
#: noise (fitted noise scale 0.5-0.9, a flat mean).
NOISE_PRIOR_MEDIAN, NOISE_PRIOR_LOG_SD = 0.05, 0.5
#: Prior scale of weights before the 1/sqrt(fan_in) division, and of biases. Inputs are in the
#: unit cube, where a first-layer weight of scale 2 changes a unit's pre-activation by about one
#: across the data and tanh units are then nearly linear: a hump over half the cube was not
#: fitted (relative training RMSE 0.84 by HMC); with 4 it was (0.01, tests/bayesnets/surrogates).
WEIGHT_SCALE, BIAS_SCALE = 4.0, 1.0
#: Prior scale of the read-out weights (before the 1/sqrt(width) division); it bounds the
#: outputs' prior standard deviation by about sqrt(OUTPUT_SCALE² + BIAS_SCALE²) on standardised
#: outcomes. The hidden layers' scale: a smaller one (an amplitude like a GP's output scale)
#: makes members of a five-point fit disagree less at the cube's corners but doubles the
#: held-out error where standardised values are heavy-tailed (tuned with
#: ``benchmarks/surrogate_fit.py``; the trade-off is measured in docs/bo.md).
OUTPUT_SCALE = WEIGHT_SCALE
#: Seed offset of the observation-noise base samples (kept apart from the fit's seed).
NOISE_SEED_OFFSET = 7919


def mlp(in_features: int, out_features: int, width: int = DEFAULT_WIDTH, depth: int = DEFAULT_DEPTH,
        activation: str = "tanh") -> nn.Sequential:
    """A fully connected ``in -> width (x depth) -> out`` network with ``activation`` between layers."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if int(width) < 1 or int(depth) < 1:
        raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
    layers: list[nn.Module] = []
    n_in = in_features
    for _ in range(int(depth)):
        layers += [nn.Linear(n_in, int(width)), ACTIVATIONS[activation]()]
        n_in = int(width)
    layers.append(nn.Linear(n_in, out_features))
    return nn.Sequential(*layers)


class NetEnsembleModel(EnsembleModel):
    """Base of the network surrogates: a BayesianNet fitted by an engine, its draws kept as members.

    The draws' weights are stored flat in the buffer
    ``draws`` ``[S, D]``, each draw's noise scale in ``noise_scale`` ``[S]``, and the transformed
    training data in ``fitted_X`` / ``fitted_Y``, so ``.to(device)`` and ``.to(dtype)`` move them.

    Args:
        train_X: ``[n, d]`` inputs (in the unit cube for BO).
        train_Y: ``[n, m]`` raw outcomes.
        engine: the inference engine (its own seed set by the caller).
        width, depth, activation: the MLP.
        weight_scale, bias_scale, output_scale: the ``LayerwiseGaussian`` prior (hidden weights
            ``N(0, weight_scale² / fan_in)``, read-out weights ``N(0, output_scale² / width)``,
            biases ``N(0, bias_scale²)``).
        noise: a fixed noise standard deviation on the standardised outcomes, or ``None`` to
            infer it under a LogNormal prior (median ``NOISE_PRIOR_MEDIAN``).
        num_draws: members kept (evenly thinned from all draws); ``None`` keeps all.
        input_transform: optional BoTorch input transform (e.g. ``Normalize``).
        outcome_transform: default ``Standardize(m)``; pass ``None`` explicitly through
            ``standardize=False`` to fit raw outcomes.
        standardize: use the default ``Standardize(m)`` when ``outcome_transform`` is not given.
        seed: seeds the engine.
        progress: the engine's progress bar.
    """

    def __init__(self, train_X: Tensor, train_Y: Tensor, *, engine: Engine, width: int = DEFAULT_WIDTH,
                 depth: int = DEFAULT_DEPTH,
                 activation: str = "tanh", weight_scale: float = WEIGHT_SCALE, bias_scale: float = BIAS_SCALE,
                 output_scale: float = OUTPUT_SCALE, noise: float | None = None, num_draws: int | None = None,
                 input_transform: InputTransform | None = None, outcome_transform: OutcomeTransform | None = None,
                 standardize: bool = True, seed: int = 0, progress: bool = False) -> None:
        super().__init__()
        check_train_data(train_X, train_Y)
        if num_draws is not None and int(num_draws) < 1:
            raise ValueError(f"num_draws must be a positive int or None, got {num_draws}")
        m = train_Y.shape[-1]
        self._num_outputs = m
        self.seed = int(seed)
        X = fit_input_transform(train_X, input_transform)
        if input_transform is not None:
            self.input_transform = input_transform
        if outcome_transform is None and standardize:
            outcome_transform = Standardize(m=m)
        Y = train_Y
        if outcome_transform is not None:
            outcome_transform.train()
            Y, _ = outcome_transform(train_Y)
            outcome_transform.eval()
            self.outcome_transform = outcome_transform
        if noise is None:
            scale: Any = dist.LogNormal(math.log(NOISE_PRIOR_MEDIAN), NOISE_PRIOR_LOG_SD)
        else:
            scale = float(noise)
        net = mlp(X.shape[-1], m, width, depth, activation).to(X)
        prior = LayerwiseGaussian(weight_scale, bias_scale, output_scale=output_scale)
        self.bnn = BayesianNet(net, prior, Gaussian(scale, num_outputs=m))
        self.bnn.to(X)
        posterior = engine.fit(self.bnn, X, Y, progress=progress)  # BatchedHMC takes the MLP fast path itself
        self._store(posterior, X, num_draws)
        # Not ``train_inputs``: BoTorch would then call ``set_train_data`` (a GPyTorch method) when
        # an input transform is present.
        self.register_buffer("fitted_X", X.detach())
        self.register_buffer("fitted_Y", Y.detach())
        self.fit_stats = {k: v for k, v in posterior.attrs.items() if isinstance(v, (int, float, str, bool))}

    def _store(self, posterior: Posterior, X: Tensor, num_draws: int | None) -> None:
        samples = {n: v.reshape(-1, *v.shape[2:]) for n, v in posterior.samples.items()}
        total = next(iter(samples.values())).shape[0]
        keep = total if num_draws is None else min(int(num_draws), total)
        # evenly spaced over the flattened [chain, draw] axis, so every chain contributes
        idx = torch.linspace(0, total - 1, keep, device=X.device).round().long()
        self.view = FlatView(self.bnn.weight_shapes)
        self.register_buffer("draws", self.view.ravel({n: samples[n][idx] for n in self.view.shapes}).to(X))
        site = self.bnn.likelihood.site_name("scale")
        if site in samples:
            noise = samples[site][idx].to(X)
        else:
            noise = self.bnn.likelihood.value("scale", {}, X).expand(keep).clone()
        self.register_buffer("noise_scale", noise)

    @property
    def ensemble_size(self) -> int:
        """Number of members ``S``."""
        return self.draws.shape[0]

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size([])

    def forward(self, X: Tensor) -> Tensor:
        """Members' outputs at ``X`` ``[*batch, n, d]`` (already input-transformed): ``[*batch, S, n, m]``."""
        d = self.fitted_X.shape[-1]
        if X.dim() < 2 or X.shape[-1] != d:
            raise ValueError(f"X must have shape [*batch, n, d] with d = {d}, got {tuple(X.shape)}")
        batch, n = X.shape[:-2], X.shape[-2]
        params = self.view.unravel(self.draws.to(X))
        f = self.bnn.predict_f(params, X.reshape(-1, d))  # [S, prod(batch) * n, m]
        return f.reshape(f.shape[0], *batch, n, self._num_outputs).movedim(0, -3)

    def posterior(self, X: Tensor, output_indices: list[int] | None = None,
                  posterior_transform: PosteriorTransform | None = None, observation_noise: bool | Tensor = False,
                  **kwargs: Any) -> EnsemblePosterior:
        """Ensemble posterior at ``X`` ``[*batch, q, d]``: values ``[*batch, S, q, m]``.

        Args:
            X: query points.
            output_indices: outputs to keep (default all).
            posterior_transform: e.g. a ``ScalarizedPosteriorTransform``.
            observation_noise: ``True`` adds each member's Gaussian noise to its outputs, with
                standard-normal base draws fixed by the model's seed (so repeated calls at the
                same ``X`` agree and sample-average approximation stays deterministic).
        """
        if isinstance(observation_noise, Tensor):
            raise ValueError("observation_noise must be a bool: the noise is the model's own (inferred per draw)")
        if not isinstance(X, Tensor) or not bool(torch.isfinite(X).all()):
            raise ValueError("X must be a finite tensor of shape [*batch, q, d]")
        self.eval()
        Xt = self.transform_inputs(X)
        values = self.forward(Xt)
        if observation_noise:
            gen = torch.Generator(device=values.device).manual_seed(self.seed + NOISE_SEED_OFFSET)
            z = torch.randn(values.shape, generator=gen, dtype=values.dtype, device=values.device)
            values = values + self.noise_scale.to(values).reshape(-1, 1, 1) * z
        if hasattr(self, "outcome_transform"):
            values, _ = self.outcome_transform.untransform(values, X=Xt)
        if output_indices is not None:
            values = values[..., output_indices]
        post = EnsemblePosterior(values=values)
        return posterior_transform(post, X=X) if posterior_transform is not None else post


#: Engines behind ``BNNSurrogate(inference=...)``, with defaults sized for one BO iteration.
INFERENCE = ("hmc", "nuts", "sghmc", "svi")

#: BatchedHMC defaults: 16 chains, each started from a prior draw moved by 100 Adam steps up the
#: log joint (``pretrain_steps``, the pre-training of arXiv 2305.20028), then 30 warm-up
#: transitions and 5 kept = 80 members, at most 6 leapfrog steps per transition, on a
#: one-hidden-layer net (``HMC_NET``). On a CPU the batched gradient costs about the same for 4 or
#: 16 chains (it is bound by per-operation overhead), so many short chains buy members almost for
#: free and the gradient count (at most 100 + 35 x 6 = 310) sets the cost; sized for issue 12's
#: budget of 5x the GP per BO iteration, tuned with ``benchmarks/surrogate_fit.py`` on Branin and
#: Hartmann-6 (held-out error and fit time in docs/surrogates.md). Raise ``max_num_steps`` or
#: ``num_warmup`` for a closer fit.
HMC_DEFAULTS = {"num_chains": 16, "num_warmup": 30, "num_samples": 5, "max_num_steps": 6,
                "pretrain_steps": 100, "pretrain_lr": 0.05}
#: The HMC surrogate's network unless ``width``/``depth`` are given: one hidden layer halves the
#: gradient's cost against two, at the same held-out error on Hartmann-6 (above).
HMC_NET = {"depth": 1}
#: Pyro NUTS runs chains one after another and pays Pyro's per-gradient overhead: one chain of
#: 50 + 50 with trees of depth <= 5 keeps a fit to tens of seconds (docs/surrogates.md).
NUTS_DEFAULTS = {"num_chains": 1, "num_warmup": 50, "num_samples": 50, "max_tree_depth": 5}
#: AdaptiveSGHMC as BOHAMIANN in the paper (mdecay 0.05) with a shorter run: 4 chains, 1000
#: burn-in iterations, 25 draws each thinned by 20; full batches up to 64 rows. Step 3e-3, not
#: the paper's 1e-2: at 1e-2 the chains settled where the noise explains the data (noise scale
#: 0.94 on a 1-D hump); 3e-3 fitted it (relative RMSE 0.02) and 1e-3 mixed too slowly (0.27).
SGHMC_DEFAULTS = {"num_chains": 4, "num_warmup": 1000, "num_samples": 25, "thinning": 20, "step_size": 3e-3,
                  "momentum_decay": 0.05}
#: Mean-field SVI: 1000 Adam steps from lr 0.05 (decaying to 0.005), guide scales starting at
#: 0.01 (at Pyro's 0.1 the weight noise hid the data: relative training RMSE 0.58 on a 1-D
#: hump), 100 draws from the guide.
SVI_DEFAULTS = {"guide": "normal", "num_steps": 1000, "lr": 0.05, "init_scale": 0.01, "num_samples": 100}
#: Largest minibatch SGHMC uses by default (smaller data sets use full batches).
SGHMC_MAX_BATCH = 64


class BNNSurrogate(NetEnsembleModel):
    """A Bayesian MLP fitted by HMC, NUTS, SGHMC or SVI; its posterior draws are the members.

    Args:
        train_X: ``[n, d]`` inputs; train_Y: ``[n, m]`` raw outcomes.
        inference: ``"hmc"`` (:class:`~inference.hmc.BatchedHMC`), ``"nuts"`` (Pyro NUTS),
            ``"sghmc"`` (:class:`~inference.sgmcmc.AdaptiveSGHMC`) or ``"svi"`` (:class:`~inference.vi.SVI`).
        engine_options: overrides of the engine's defaults (``HMC_DEFAULTS`` etc.).
        seed: seeds the engine.
        **kwargs: network, prior and transforms, as :class:`NetEnsembleModel`.

    Example:
        >>> model = BNNSurrogate(train_X, train_Y, inference="hmc")
        >>> acqf = qLogExpectedImprovement(model, best_f=train_Y.max())
    """

    def __init__(self, train_X: Tensor, train_Y: Tensor, inference: str = "hmc",
                 engine_options: dict[str, Any] | None = None, seed: int = 0, **kwargs: Any) -> None:
        check_train_data(train_X, train_Y)
        engine = make_engine(inference, train_X.shape[0], seed, engine_options)
        if inference == "hmc":
            kwargs = {**HMC_NET, **kwargs}
        super().__init__(train_X, train_Y, engine=engine, seed=seed, **kwargs)
        self.inference = inference


def make_engine(inference: str, num_data: int, seed: int, options: dict[str, Any] | None = None) -> Engine:
    """The engine called ``inference`` with this module's defaults, overridden by ``options``."""
    if inference not in INFERENCE:
        raise ValueError(f"inference must be one of {INFERENCE}, got {inference!r}")
    engine, defaults = {"hmc": (BatchedHMC, HMC_DEFAULTS), "nuts": (NUTS, NUTS_DEFAULTS),
                        "sghmc": (AdaptiveSGHMC, SGHMC_DEFAULTS), "svi": (SVI, SVI_DEFAULTS)}[inference]
    # old option names (num_burnin=) must not meet the defaults' new ones
    opts = {**canonical_kwargs(engine, options or {}), "seed": int(seed)}
    if inference == "sghmc":
        batch = None if num_data <= SGHMC_MAX_BATCH else SGHMC_MAX_BATCH
        defaults = {**defaults, "batch_size": batch}
    return engine(**{**defaults, **opts})
