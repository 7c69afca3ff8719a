"""``Fit``: what every trainer returns — the fitted module, its per-step history, a record.

A :class:`Fit` saves to one safetensors file (never pickle): the module's ``state_dict``, the
history, any named extras a subclass declares (modules or tensors, e.g. PV-RNN's adaptive
vectors), and the JSON-friendly ``attrs`` (trainer, settings, seed, seconds, ...) as metadata.
Loading needs a module of the same architecture to load into, unless the subclass knows how
to build one from its ``attrs`` (a PFN's, from its config).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FORMAT", "Fit"]

#: ``format`` entry of a saved fit's metadata.
FORMAT = "bayesnets.training.fit"


def _state(value: nn.Module | Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(value, nn.Module):
        return value.state_dict()
    if isinstance(value, Tensor):
        return {"": value}
    return dict(value)


@dataclass
class Fit:
    """The result of ``Trainer.fit``.

    Attributes:
        module: the fitted module (trained in place: the same object the trainer was given,
            or the one it built).
        history: per-step metrics, ``name -> [num_steps]`` (always ``"loss"``, the objective
            minimised; NaN at steps skipped for non-finite values).
        attrs: JSON-friendly record: ``trainer``, its ``settings()``, ``seed``, ``seconds``, ...

    Subclasses name their extra fields in :attr:`extras` (each an ``nn.Module``, a tensor or a
    dict of tensors) so that :meth:`save` and :meth:`load` carry them.
    """

    module: nn.Module
    history: dict[str, Tensor] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    #: Names of the subclass's extra fields that travel with :meth:`save`.
    extras: ClassVar[tuple[str, ...]] = ()

    @property
    def loss(self) -> Tensor:
        """The per-step loss ``[num_steps]`` (``history["loss"]``)."""
        return self.history["loss"]

    @property
    def losses(self) -> list[float]:
        """Deprecated: the loss history as a list; use ``fit.history["loss"]``."""
        import warnings

        warnings.warn("Fit.losses is deprecated; use fit.history['loss'] (a tensor)", DeprecationWarning,
                      stacklevel=2)
        return self.history["loss"].tolist()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write the fit as safetensors (module state, history, extras; ``attrs`` as JSON metadata)."""
        tensors = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        tensors.update({f"history.{k}": v for k, v in self.history.items()})
        for name in self.extras:
            tensors.update({f"{name}.{k}" if k else name: v for k, v in _state(getattr(self, name)).items()})
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {"format": FORMAT, "class": type(self).__name__, "attrs": json.dumps(self.attrs)}
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path, module: nn.Module | None = None, **extras: Any) -> Fit:
        """Read a fit written by :meth:`save`.

        Args:
            module: a module of the saved one's architecture to load the state into (its
                device and dtype are kept); optional where the class builds one from ``attrs``.
            extras: for each extra field, an object to load into (optional where the class
                builds it, see :meth:`build_extra`).

        Raises:
            ValueError: the file is not a saved fit.
        """
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a saved bayesnets fit (format {meta.get('format')!r})")
        attrs = json.loads(meta["attrs"])
        tensors = load_file(str(path))

        def part(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}

        module = cls.build_module(attrs) if module is None else module
        ref = next(iter(module.state_dict().values()), None)
        state = part("module")
        module.load_state_dict({k: v.to(ref.device) if ref is not None else v for k, v in state.items()})
        history = part("history")
        fields: dict[str, Any] = {}
        for name in cls.extras:
            saved = part(name) if name not in tensors else tensors[name]
            target = extras.get(name)
            if target is None:
                fields[name] = cls.build_extra(name, module, saved, attrs)
            elif isinstance(target, nn.Module):
                target.load_state_dict(saved)
                fields[name] = target
            else:
                fields[name] = saved
        return cls(module, history, attrs, **fields)

    @classmethod
    def build_module(cls, attrs: Mapping[str, Any]) -> nn.Module:
        """A fresh module of the saved architecture (subclasses that can, override)."""
        raise TypeError(f"{cls.__name__}.load needs the module to load into: {cls.__name__}.load(path, module=...)")

    @classmethod
    def build_extra(cls, name: str, module: nn.Module, saved: Any, attrs: Mapping[str, Any]) -> Any:
        """The extra field ``name`` rebuilt from its saved tensors (default: the tensors themselves)."""
        return saved

    # ------------------------------------------------------------------ plots
    def plot(self, metrics: list[str] | None = None, smooth: int = 1) -> Figure:
        """The history of each metric against the step, one panel each (a matplotlib figure,
        never shown); ``smooth`` > 1 overlays a running mean over that many steps."""
        import matplotlib.pyplot as plt

        names = list(self.history) if metrics is None else list(metrics)
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3), squeeze=False)
        for ax, name in zip(axes[0], names):
            values = self.history[name].double()
            ax.plot(values.numpy(), lw=0.8, alpha=0.5 if smooth > 1 else 1.0)
            if smooth > 1 and values.numel() >= smooth:
                kernel = torch.ones(1, 1, smooth, dtype=values.dtype) / smooth
                avg = torch.nn.functional.conv1d(values.nan_to_num().view(1, 1, -1), kernel).flatten()
                ax.plot(range(smooth - 1, values.numel()), avg.numpy(), lw=1.5)
            ax.set_xlabel("step")
            ax.set_title(name)
        fig.tight_layout()
        return fig
