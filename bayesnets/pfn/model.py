"""The prior-data fitted network (PFN; Müller et al., arXiv:2112.10510, §4 and App. E).

A transformer over a whole dataset at once, without positional encodings, so it is
invariant to the order of the training points. Train tokens are ``enc_x(x) + enc_y(y)``,
test tokens ``enc_x(x)``. In every layer the train tokens attend to the train tokens and
each test token attends to the train tokens only — never to another test token — so the
prediction at one test point does not depend on the other test points. This is the
paper's attention mask (in the form of the ``pfns`` library, where test tokens do not
attend to themselves either). Because every query's allowed keys are exactly the train
tokens, the keys and values are computed from the train tokens alone and
:func:`torch.nn.functional.scaled_dot_product_attention` runs without a mask (flash kernels
apply); a boolean key mask is passed only for ragged train sets (``train_sizes``), where
padded train slots must be ignored.

Layers are pre-LayerNorm (stabler than the paper's post-LN for small, quickly trained
models) with zero-initialised output projections so each layer starts as the identity
(as the paper's code does). The head is ``Linear -> GELU -> Linear`` giving either the
logits of a :class:`~bayesnets.pfn.bar.BarDistribution` (regression) or class logits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.distributions import Categorical

from bayesnets.pfn.bar import BarDistribution, fit_borders
from bayesnets.pfn.weights import weights_file

__all__ = ["PFN", "PFNConfig", "PFNLayer"]

_FORMAT = "bayesnets.pfn"


@dataclass
class PFNConfig:
    """Architecture of a :class:`PFN`.

    Attributes:
        max_features: most input features supported (fewer are zero-padded).
        emsize: token width.
        nlayers: transformer layers.
        nhead: attention heads (``emsize`` must divide by it).
        nhid: hidden width of each layer's feed-forward block and of the head.
        num_buckets: buckets of the bar-distribution head (regression).
        num_classes: if set, a classification head with this many classes instead.
        dropout: dropout rate (0 in the paper).
    """

    max_features: int = 5
    emsize: int = 128
    nlayers: int = 4
    nhead: int = 4
    nhid: int = 256
    num_buckets: int = 1000
    num_classes: int | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_features", "emsize", "nlayers", "nhead", "nhid"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PFNConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.emsize % self.nhead:
            raise ValueError(f"PFNConfig.emsize ({self.emsize}) must be divisible by nhead ({self.nhead})")
        if self.num_classes is None and self.num_buckets < 2:
            raise ValueError(f"PFNConfig.num_buckets must be >= 2, got {self.num_buckets}")
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"PFNConfig.num_classes must be >= 2, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"PFNConfig.dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PFNConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown PFNConfig fields {sorted(unknown)}")
        return cls(**d)


class PFNLayer(nn.Module):
    """Pre-LN transformer layer whose keys and values come from the train tokens only."""

    def __init__(self, emsize: int, nhead: int, nhid: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.nhead, self.dropout = nhead, dropout
        self.norm1, self.norm2 = nn.LayerNorm(emsize), nn.LayerNorm(emsize)
        self.q = nn.Linear(emsize, emsize)
        self.kv = nn.Linear(emsize, 2 * emsize)
        self.out = nn.Linear(emsize, emsize)
        self.ff1, self.ff2 = nn.Linear(emsize, nhid), nn.Linear(nhid, emsize)
        for lin in (self.out, self.ff2):  # each layer starts as the identity (paper's code)
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, h: Tensor, n_train: int, key_mask: Tensor | None = None) -> Tensor:
        """``h`` ``[B, n_train + m, E]`` (train tokens first) -> same shape.

        ``key_mask`` (``[B, 1, 1, n_train]`` bool, True = attend) hides padded train slots.
        """
        b, s, e = h.shape
        a = self.norm1(h)
        q = self.q(a).view(b, s, self.nhead, -1).transpose(1, 2)
        k, v = self.kv(a[:, :n_train]).view(b, n_train, 2, self.nhead, -1).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)
        h = h + F.dropout(self.out(o.transpose(1, 2).reshape(b, s, e)), p, self.training)
        ff = self.ff2(F.dropout(F.gelu(self.ff1(self.norm2(h))), p, self.training))
        return h + F.dropout(ff, p, self.training)


class PFN(nn.Module):
    """Prior-data fitted network: ``predict(train_x, train_y, test_x)`` approximates the
    posterior predictive of the prior it was trained on, in one forward pass.

    Args:
        config: architecture (:class:`PFNConfig`).

    Buffers (set by :meth:`fit_to_prior_sample` before training): ``borders`` ``[K + 1]``
    of the bar distribution, and fixed input standardisations ``x_loc``, ``x_scale``,
    ``y_loc``, ``y_scale`` (scalars).
    """

    def __init__(self, config: PFNConfig | None = None) -> None:
        super().__init__()
        self.config = config or PFNConfig()
        c = self.config
        self.regression = c.num_classes is None
        self.num_outputs = c.num_buckets if self.regression else int(c.num_classes)
        self.register_buffer("borders", torch.linspace(-3.0, 3.0, c.num_buckets + 1) if self.regression
                             else torch.zeros(0))
        for name, value in (("x_loc", 0.0), ("x_scale", 1.0), ("y_loc", 0.0), ("y_scale", 1.0)):
            self.register_buffer(name, torch.tensor(value))
        self.x_encoder = nn.Linear(c.max_features, c.emsize)
        self.y_encoder = nn.Linear(1, c.emsize)
        self.layers = nn.ModuleList(PFNLayer(c.emsize, c.nhead, c.nhid, c.dropout) for _ in range(c.nlayers))
        self.norm = nn.LayerNorm(c.emsize)
        self.head = nn.Sequential(nn.Linear(c.emsize, c.nhid), nn.GELU(), nn.Linear(c.nhid, self.num_outputs))

    # ------------------------------------------------------------------ set-up from the prior
    @torch.no_grad()
    def fit_to_prior_sample(self, x: Tensor, y: Tensor) -> None:
        """Fit the bucket borders (equal prior mass) and the input standardisations to a
        sample ``x`` ``[B, S, d]``, ``y`` ``[B, S]`` from the task prior."""
        xf, yf = x.float(), y.float()
        self.x_loc.fill_(xf.mean())
        self.x_scale.fill_(xf.std().clamp_min(1e-6))
        self.y_loc.fill_(yf.mean())
        self.y_scale.fill_(yf.std().clamp_min(1e-6))
        if self.regression:
            self.borders.copy_(fit_borders(yf, self.config.num_buckets).to(self.borders))

    # ------------------------------------------------------------------ forward
    def forward(self, train_x: Tensor, train_y: Tensor, test_x: Tensor, train_sizes: Tensor | None = None) -> Tensor:
        """Output logits at the test points.

        Args:
            train_x: ``[B, n, d]`` with ``1 <= d <= max_features``.
            train_y: ``[B, n]`` (float targets or class labels).
            test_x: ``[B, m, d]``.
            train_sizes: optional ``[B]`` int counts for ragged train sets: dataset ``b``
                uses its first ``train_sizes[b]`` train slots (each >= 1; the rest is padding).

        Returns:
            ``[B, m, num_buckets]`` (regression) or ``[B, m, num_classes]`` logits.
        """
        self._check_shapes(train_x, train_y, test_x)
        b, n, d = train_x.shape
        dtype = self.x_encoder.weight.dtype
        pad = self.config.max_features - d
        xs = torch.cat([train_x, test_x], dim=1).to(dtype)
        xs = F.pad((xs - self.x_loc) / self.x_scale, (0, pad))  # padded features are exactly 0
        h = self.x_encoder(xs)
        ys = ((train_y.to(dtype) - self.y_loc) / self.y_scale).unsqueeze(-1)
        h = torch.cat([h[:, :n] + self.y_encoder(ys), h[:, n:]], dim=1)
        key_mask = None
        if train_sizes is not None:
            if train_sizes.shape != (b,):
                raise ValueError(f"train_sizes must have shape [{b}], got {tuple(train_sizes.shape)}")
            key_mask = (torch.arange(n, device=h.device) < train_sizes.to(h.device)[:, None])[:, None, None, :]
        for layer in self.layers:
            h = layer(h, n, key_mask)
        return self.head(self.norm(h[:, n:]))

    def _check_shapes(self, train_x: Tensor, train_y: Tensor, test_x: Tensor) -> None:
        for name, t, dims in (("train_x", train_x, 3), ("train_y", train_y, 2), ("test_x", test_x, 3)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != dims:
                raise ValueError(f"{name} must be {dims}-D ([batch, points{', features' if dims == 3 else ''}]), "
                                 f"got shape {tuple(t.shape)}")
        b, n, d = train_x.shape
        if n == 0:
            raise ValueError("the train set is empty: a PFN needs at least one training point (n >= 1)")
        if not 1 <= d <= self.config.max_features:
            raise ValueError(f"train_x has {d} features; this PFN supports 1 to {self.config.max_features}")
        if train_y.shape != (b, n):
            raise ValueError(f"train_y must have shape [batch, n] = {[b, n]}, got {tuple(train_y.shape)}")
        if test_x.shape[0] != b or test_x.shape[2] != d:
            raise ValueError(f"test_x must have shape [batch={b}, m, features={d}] like train_x, "
                             f"got {tuple(test_x.shape)}")

    # ------------------------------------------------------------------ prediction
    def distribution(self, logits: Tensor) -> BarDistribution | Categorical:
        """Predictive distribution from head outputs ``[..., num_outputs]``."""
        if self.regression:
            return BarDistribution(logits, self.borders.to(logits))
        return Categorical(logits=logits)

    def predict(self, train_x: Tensor, train_y: Tensor, test_x: Tensor) -> BarDistribution | Categorical:
        """Posterior predictive at ``test_x`` given one or a batch of training sets.

        Args:
            train_x: ``[n, d]`` or ``[B, n, d]``.
            train_y: ``[n]`` or ``[B, n]``.
            test_x: ``[m, d]`` or ``[B, m, d]``.

        Returns:
            A distribution with batch shape ``[m]`` (or ``[B, m]``): a
            :class:`~bayesnets.pfn.bar.BarDistribution` (``mean``, ``variance``, ``quantile``,
            ``log_prob``, ``cdf``, ``sample``) for regression, a ``Categorical`` for
            classification. Computed in ``train_x``'s floating dtype; gradients flow to
            ``test_x`` (wrap in ``torch.no_grad()`` when none are needed).
        """
        single = isinstance(train_x, Tensor) and train_x.dim() == 2
        if single:
            if not (isinstance(train_y, Tensor) and isinstance(test_x, Tensor)):
                raise TypeError("train_y and test_x must be torch.Tensors")
            if train_y.dim() != 1 or test_x.dim() != 2:
                raise ValueError(f"with train_x [n, d], train_y must be [n] and test_x [m, d]; got train_y "
                                 f"{tuple(train_y.shape)}, test_x {tuple(test_x.shape)}")
            train_x, train_y, test_x = train_x[None], train_y[None], test_x[None]
        elif isinstance(train_x, Tensor) and train_x.dim() != 3:
            raise ValueError(f"train_x must be [n, d] or [batch, n, d] (use x.unsqueeze(-1) for one feature), "
                             f"got shape {tuple(train_x.shape)}")
        self._check_shapes(train_x, train_y, test_x)
        for name, t in (("train_x", train_x), ("train_y", train_y), ("test_x", test_x)):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or infinite values")
        logits = self(train_x, train_y, test_x)
        if train_x.is_floating_point():
            logits = logits.to(train_x.dtype)
        if single:
            logits = logits[0]
        return self.distribution(logits)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, metadata: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> None:
        """Write weights and config as safetensors (``metadata`` is stored as JSON alongside);
        ``dtype`` (e.g. ``torch.float16``) shrinks the file. Buffers (bucket borders, input
        standardisations) stay float32: in float16, narrow buckets' borders would merge."""
        buffers = {k for k, _ in self.named_buffers()}
        tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() and k not in buffers else v)
                   .detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"format": _FORMAT, "config": json.dumps(asdict(self.config)), "metadata": json.dumps(metadata or {})}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> PFN:
        """Read a PFN written by :meth:`save` (float32 weights; never unpickles)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a bayesnets PFN file (format {meta.get('format')!r})")
        model = cls(PFNConfig.from_dict(json.loads(meta["config"])))
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
        model.load_state_dict(state)
        model.metadata = json.loads(meta.get("metadata", "{}"))
        return model

    @classmethod
    def pretrained(cls, name: str = "gp") -> PFN:
        """A PFN shipped with the package (no network; float32, eval mode, on the CPU — move it
        with ``.to(device)``); :mod:`bayesnets.pfn.pretrained` lists what each one is."""
        with weights_file(name) as path:
            return cls.load(path).eval()
