"""``Posterior``: the one result type every engine returns.

Draws are stored per site as ``[chain, draw, *site_shape]`` tensors (constrained
space), with per-draw sample statistics (``diverging``, ``acceptance_rate``,
``step_size``, ``tree_depth``, ``n_steps``, ``lp``, ...; ArviZ's names) and
engine records (e.g. the ELBO trace). A posterior answers the same questions whatever
produced it: :meth:`Posterior.predict`, :meth:`Posterior.to_arviz`,
:meth:`Posterior.save` / :meth:`Posterior.load` (safetensors + JSON metadata, never
pickle).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Posterior", "Prediction", "import_arviz"]

_FORMAT = "bayesnets.posterior"
_VERSION = "1"
OBS = "obs"  # same as bayesnets.bnn.OBS; kept here so inference does not import models


def import_arviz() -> Any:
    """Import ArviZ without its package-level migration notice (it is about ArviZ 1.0's
    API, which this package handles; users cannot act on it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")
        import arviz

    return arviz


@dataclass
class Prediction:
    """Posterior predictive draws at new inputs.

    Attributes:
        f: network outputs ``[chain, draw, N, num_outputs]`` (None for models that do not
            expose them).
        y: observation draws ``[chain, draw, N, ...]``.
    """

    f: Tensor | None
    y: Tensor

    def _pick(self, of: str) -> Tensor:
        if of not in ("f", "y"):
            raise ValueError(f"of must be 'f' or 'y', got {of!r}")
        t = self.f if of == "f" else self.y
        if t is None:
            raise ValueError("this model gives no draws of f; use of='y'")
        t = t.flatten(0, 1)
        return t if t.is_floating_point() else t.to(torch.get_default_dtype())

    def mean(self, of: str = "f") -> Tensor:
        """Posterior mean over all chains and draws, ``[N, ...]``."""
        return self._pick(of).mean(0)

    def std(self, of: str = "f") -> Tensor:
        """Posterior standard deviation over all chains and draws, ``[N, ...]``."""
        return self._pick(of).std(0)

    def quantile(self, q: float | Tensor, of: str = "y") -> Tensor:
        """Quantiles over all draws: ``[len(q), N, ...]`` (``[N, ...]`` for a float ``q``)."""
        t = self._pick(of)
        return torch.quantile(t, torch.as_tensor(q, dtype=t.dtype, device=t.device), dim=0)


class Posterior:
    """Draws from a posterior, their sample statistics, and what is needed to use them.

    Args:
        samples: site name -> constrained draws ``[chain, draw, *site_shape]``.
        stats: per-draw statistics ``[chain, draw]`` and engine records (any shape).
        model: the model the draws belong to (needed for :meth:`predict` and the
            log-likelihood; not saved).
        data: the ``(x, y)`` the posterior was conditioned on, if any.
        attrs: JSON-serialisable metadata (engine name and settings, timings).
    """

    def __init__(self, samples: Mapping[str, Tensor], stats: Mapping[str, Tensor] | None = None,
                 model: Any = None, data: tuple[Tensor, Tensor | None] | None = None,
                 attrs: Mapping[str, Any] | None = None) -> None:
        if not samples:
            raise ValueError("samples must hold at least one site")
        shapes = {n: tuple(v.shape[:2]) for n, v in samples.items()}
        first = next(iter(shapes.values()))
        if len(first) < 2 or any(s != first for s in shapes.values()):
            raise ValueError(f"every site in samples must be [chain, draw, ...] with the same chain and "
                             f"draw counts, got {shapes}")
        self.samples: dict[str, Tensor] = dict(samples)
        self.stats: dict[str, Tensor] = dict(stats or {})
        self.model = model
        self.data = data
        self.attrs: dict[str, Any] = dict(attrs or {})

    # ------------------------------------------------------------- accessors
    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.samples.values())).shape[1]

    def __getitem__(self, name: str) -> Tensor:
        return self.samples[name]

    def __repr__(self) -> str:
        sites = ", ".join(f"{n}{list(v.shape[2:])}" for n, v in list(self.samples.items())[:6])
        more = "" if len(self.samples) <= 6 else f", ... ({len(self.samples)} sites)"
        return (f"Posterior(chains={self.num_chains}, draws={self.num_draws}, sites=[{sites}{more}], "
                f"engine={self.attrs.get('engine', '?')})")

    def flat(self) -> dict[str, Tensor]:
        """Draws with chains and draws merged: ``[chain * draw, *site_shape]``."""
        return {n: v.flatten(0, 1) for n, v in self.samples.items()}

    def per_draw_stats(self) -> dict[str, Tensor]:
        """The statistics shaped ``[chain, draw]`` (what ArviZ calls sample_stats)."""
        cd = (self.num_chains, self.num_draws)
        return {n: v for n, v in self.stats.items() if tuple(v.shape) == cd}

    def _unflat(self, t: Tensor) -> Tensor:
        return t.reshape(self.num_chains, self.num_draws, *t.shape[1:])

    def _need_model(self, what: str) -> Any:
        if self.model is None:
            raise ValueError(f"{what} needs the model: pass model= to Posterior.load or set posterior.model")
        return self.model

    # ------------------------------------------------------------ prediction
    def predict(self, x: Tensor, chunk_size: int | None = None) -> Prediction:
        """Posterior predictive draws at ``x``, vectorised over draws where the model allows.

        Args:
            x: inputs ``[N, ...]``.
            chunk_size: draws per vectorised call (bounds memory).

        Returns:
            A :class:`Prediction` with ``f`` ``[chain, draw, N, num_outputs]`` and ``y``.
        """
        model = self._need_model("predict")
        flat = self.flat()
        if hasattr(model, "posterior_predictive"):
            if hasattr(model, "check_data"):
                model.check_data(x)
            f, y = model.posterior_predictive(flat, x, chunk_size=chunk_size)
            return Prediction(self._unflat(f), self._unflat(y))
        from pyro.infer import Predictive

        out = Predictive(model, posterior_samples=flat, return_sites=[OBS])(x)
        return Prediction(None, self._unflat(out[OBS]))

    def log_likelihood(self, chunk_size: int | None = None) -> Tensor:
        """Pointwise log-likelihood of the conditioning data, ``[chain, draw, N]``."""
        model = self._need_model("log_likelihood")
        if self.data is None or self.data[1] is None:
            raise ValueError("this posterior holds no observed data (data=(x, y)) to evaluate")
        x, y = self.data
        flat = self.flat()
        if hasattr(model, "pointwise_log_likelihood"):
            return self._unflat(model.pointwise_log_likelihood(flat, x, y, chunk_size=chunk_size))
        from pyro import poutine

        rows = []
        with torch.no_grad():
            for i in range(self.num_chains * self.num_draws):
                draw = {n: v[i] for n, v in flat.items()}
                tr = poutine.trace(poutine.condition(model, data=draw)).get_trace(x, y)
                node = tr.nodes[OBS]
                rows.append(node["fn"].log_prob(node["value"]))
        return self._unflat(torch.stack(rows))

    # ----------------------------------------------------------------- ArviZ
    def to_arviz(self, posterior_predictive: bool = False, log_likelihood: bool = True) -> Any:
        """Convert to ArviZ ``InferenceData``.

        Groups: ``posterior``, ``sample_stats`` (per-draw stats), ``log_likelihood``
        (pointwise, variable ``obs``, when the model and data are known),
        ``posterior_predictive`` (draws of ``y`` at the training inputs, when asked) and
        ``observed_data``. Works with ``az.summary``, ``az.rhat``, ``az.ess``, ``az.loo``
        and ``az.plot_trace``.
        """
        az = import_arviz()

        def np_(t: Tensor) -> Any:
            return t.detach().cpu().numpy()

        kwargs: dict[str, Any] = {
            "posterior": {n: np_(v) for n, v in self.samples.items()},
            "attrs": {"engine": str(self.attrs.get("engine", "")), "inference_library": "bayesnets"},
        }
        stats = {n: np_(v.bool() if n == "diverging" else v) for n, v in self.per_draw_stats().items()}
        if stats:
            kwargs["sample_stats"] = stats
        dims: dict[str, list[str]] = {}
        if self.data is not None and self.data[1] is not None:
            # One dims entry serves every group holding "obs"; extra trailing dims of a
            # multi-output y get ArviZ's automatic names.
            dims[OBS] = ["obs_id"]
            kwargs["observed_data"] = {OBS: np_(self.data[1])}
            if self.model is not None and log_likelihood:
                kwargs["log_likelihood"] = {OBS: np_(self.log_likelihood())}
            if self.model is not None and posterior_predictive:
                kwargs["posterior_predictive"] = {OBS: np_(self.predict(self.data[0]).y)}
        kwargs["dims"] = dims
        return az.from_dict(**kwargs)

    # -------------------------------------------------------------- save/load
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write draws, stats, data and attrs to a safetensors file (no pickle).

        The model is not saved: pass it to :meth:`load` to predict again.
        """
        from safetensors.torch import save_file

        tensors: dict[str, Tensor] = {}
        for group, d in (("samples", self.samples), ("stats", self.stats)):
            for n, v in d.items():
                tensors[f"{group}/{n}"] = v.detach().cpu().contiguous().clone()
        if self.data is not None:
            tensors["data/x"] = self.data[0].detach().cpu().contiguous().clone()
            if self.data[1] is not None:
                tensors["data/y"] = self.data[1].detach().cpu().contiguous().clone()
        try:
            attrs = json.dumps(self.attrs)
        except TypeError as err:
            raise ValueError(f"posterior.attrs must be JSON-serialisable to save: {err}") from err
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "attrs": attrs,
            "samples": json.dumps(list(self.samples)),
            "stats": json.dumps(list(self.stats)),
        }
        save_file(tensors, os.fspath(path), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: Any = None,
             device: str | torch.device | None = None) -> Posterior:
        """Read a posterior written by :meth:`save`.

        Args:
            path: the safetensors file.
            model: the model to attach (for :meth:`predict` and the log-likelihood).
            device: where to put the tensors (default: CPU).
        """
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt", device=str(device or "cpu")) as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{path} is not a bayesnets posterior file (format={meta.get('format')!r})")
            samples = {n: fh.get_tensor(f"samples/{n}") for n in json.loads(meta["samples"])}
            stats = {n: fh.get_tensor(f"stats/{n}") for n in json.loads(meta["stats"])}
            keys = set(fh.keys())
            data = None
            if "data/x" in keys:
                data = (fh.get_tensor("data/x"), fh.get_tensor("data/y") if "data/y" in keys else None)
        return cls(samples, stats, model=model, data=data, attrs=json.loads(meta["attrs"]))
