"""Width parametrisations (SP, NTK, mean-field, μP) and criticality for networks built from ``nn.Linear``.

**abc-parametrisations** (Yang & Hu, "Feature learning in infinite-width neural networks",
arXiv 2011.14522): layer ``l`` of width ``n`` has ``W^l = n^{-a_l} w^l`` with
``w^l ~ N(0, n^{-2 b_l})`` and SGD learning rate ``η n^{-c}``. Layers come in three kinds — input
(finite fan-in, wide fan-out), hidden (both wide) and output (wide fan-in, finite fan-out) —
and biases behave like input weights. We apply a parametrisation in its equivalent ``a = 0`` form:
the effective weight ``W`` is initialised with standard deviation ``∝ m^{-(a+b)}`` and trained
with a per-tensor learning rate ``∝ m^{-(2a+c)}`` (SGD) or ``∝ m^{-(a+c)}`` (Adam, whose update
does not scale with the gradient), where ``m = n / n_base`` is the width multiplier against a
*base* model. At the base width every parametrisation is the standard one, so hyperparameters
tuned there transfer across widths under μP (Tensor Programs V, arXiv 2203.03466). Which
dimensions are "wide" is read off by comparing parameter shapes with the base model.

**Criticality** (Roberts, Yaida & Hanin, "The principles of deep learning theory",
arXiv 2106.10165): with ``W ~ N(0, C_W / fan_in)`` and ``b ~ N(0, C_b)`` the preactivation
variance follows ``K^{l+1} = C_b + C_W ⟨σ²⟩_{K^l}``; at a fixed point ``K*`` the parallel and
perpendicular susceptibilities ``χ_∥ = C_W d⟨σ²⟩/dK`` and ``χ_⊥ = C_W ⟨σ'²⟩`` are both 1 at
criticality, so signals neither explode nor vanish with depth. The leading finite-width
correction is the four-point vertex ``V^{l+1} = C_W² (⟨σ⁴⟩ - ⟨σ²⟩²) + χ_∥² V^l``: the
excess kurtosis of a unit in layer ``l`` is ``3 V^l / (n (K^l)²)``, of order depth / width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from scipy.optimize import brentq
from torch import Tensor, nn

from inference.checks import renamed_kwargs
from inference.seeding import seeded
from inference.training.loop import optimize
from priors.dual_activations import ArcCosine, DualActivation, as_dual, gaussian_expectation

__all__ = [
    "AbcParametrization",
    "CoordCheck",
    "Criticality",
    "ParamScaling",
    "ParametrizationPlan",
    "coord_check",
    "critical_init",
    "init_critical_",
    "kernel_recursion",
    "output_kurtosis",
    "parametrize",
    "relu_output_kurtosis",
    "susceptibilities",
]

KINDS = ("input", "hidden", "output")
OPTIMIZERS = ("sgd", "adam")


# ---------------------------------------------------------------------------------------------
# abc-parametrisations
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AbcParametrization:
    """An abc-parametrisation with one exponent per layer kind (input, hidden, output).

    Attributes:
        a: multiplier exponents ``(a_in, a_hidden, a_out)``: ``W = n^{-a} w``.
        b: initialisation exponents: ``w ~ N(0, n^{-2b})``.
        c: learning-rate exponent: ``lr = η n^{-c}``.
        optimizer: ``"sgd"`` or ``"adam"``: how ``a`` and ``c`` combine into the effective
            learning rate. The stability / feature-learning theory (:meth:`r`) is TP4's, for SGD.
        name: label.
    """

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    c: float
    optimizer: str = "sgd"
    name: str = "custom"

    def __post_init__(self) -> None:
        if len(self.a) != 3 or len(self.b) != 3:
            raise ValueError(f"a and b must have 3 entries (input, hidden, output), got a={self.a!r}, b={self.b!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")

    # the four named parametrisations (Table 1 of arXiv 2011.14522; Adam μP from arXiv 2203.03466)
    @classmethod
    def standard(cls, optimizer: str = "sgd") -> AbcParametrization:
        """SP: PyTorch's default scaling, one learning rate for all layers."""
        return cls((0.0, 0.0, 0.0), (0.0, 0.5, 0.5), 0.0, optimizer, "sp")

    @classmethod
    def ntk(cls, optimizer: str = "sgd") -> AbcParametrization:
        """NTK parametrisation: ``W = w / sqrt(fan_in)`` with ``w ~ N(0, 1)``."""
        return cls((0.0, 0.5, 0.5), (0.0, 0.0, 0.0), 0.0, optimizer, "ntk")

    @classmethod
    def mean_field(cls, optimizer: str = "sgd") -> AbcParametrization:
        """Mean-field parametrisation: readout ``1/n``, learning rate ``η n`` (hidden layers as NTK)."""
        return cls((0.0, 0.5, 1.0), (0.0, 0.0, 0.0), -1.0, optimizer, "mf")

    @classmethod
    def mup(cls, optimizer: str = "sgd") -> AbcParametrization:
        """Maximal-update parametrisation μP for the given optimizer.

        SGD: ``a = (-½, 0, ½)``, ``b = ½``, ``c = 0``. Adam: the representative with
        ``a = (0, 1, 1)``, ``b = (0, -½, 0)``, ``c = 0``, i.e. init variances ``(1, 1/n, 1/n²)·``
        and learning rates ``(η, η/n, η/n)`` (Table 3 of arXiv 2203.03466).
        """
        if optimizer == "adam":
            return cls((0.0, 1.0, 1.0), (0.0, -0.5, 0.0), 0.0, "adam", "mup")
        return cls((-0.5, 0.0, 0.5), (0.5, 0.5, 0.5), 0.0, optimizer, "mup")

    @classmethod
    def named(cls, name: str, optimizer: str = "sgd") -> AbcParametrization:
        """``"sp"``, ``"ntk"``, ``"mf"`` or ``"mup"``."""
        makers = {"sp": cls.standard, "ntk": cls.ntk, "mf": cls.mean_field, "mup": cls.mup}
        if name not in makers:
            raise ValueError(f"parametrization must be one of {sorted(makers)}, got {name!r}")
        return makers[name](optimizer)

    # exponents of the width multiplier for the effective (a = 0) weights
    def init_exponent(self, kind: str) -> float:
        """``e`` with effective init std ``∝ m^{e}``: ``-(a + b)``."""
        i = KINDS.index(kind)
        return -(self.a[i] + self.b[i])

    def lr_exponent(self, kind: str) -> float:
        """``e`` with effective learning rate ``∝ m^{e}``: ``-(2a + c)`` for SGD, ``-(a + c)`` for Adam."""
        i = KINDS.index(kind)
        return -((2.0 if self.optimizer == "sgd" else 1.0) * self.a[i] + self.c)

    def r(self, num_hidden: int = 2) -> float:
        """TP4's ``r = min(a_out + b_out, 2 a_out + c) + c - 1 + min_{l <= L} (2 a_l + 1[l = 1])``.

        Args:
            num_hidden: number of hidden layers ``L``; with ``L = 1`` there are no hidden-to-hidden layers.
        """
        a_in, a_hid, a_out = self.a
        first = min(self.a[2] + self.b[2], 2 * a_out + self.c)
        inner = 2 * a_in + 1 if num_hidden < 2 else min(2 * a_in + 1, 2 * a_hid)
        return first + self.c - 1 + inner

    def is_stable(self, num_hidden: int = 2) -> bool:
        """TP4 stability: stable initialisation (``a_in + b_in = 0``, ``a_hid + b_hid = ½``,
        ``a_out + b_out >= ½``), ``r >= 0``, and ``2 a_out + c >= 1`` (the readout's own update
        moves the output by ``O(1)``, not ``O(n^{1 - 2a_out - c})``)."""
        tol = 1e-12
        return (
            abs(self.a[0] + self.b[0]) < tol
            and (num_hidden < 2 or abs(self.a[1] + self.b[1] - 0.5) < tol)
            and self.a[2] + self.b[2] >= 0.5 - tol
            and 2 * self.a[2] + self.c >= 1.0 - tol
            and self.r(num_hidden) >= -tol
        )

    def is_trivial(self) -> bool:
        """``a_out + b_out > ½`` and ``2 a_out + c > 1``: the output neither starts nor moves at ``Θ(1)``."""
        return self.a[2] + self.b[2] > 0.5 + 1e-12 and 2 * self.a[2] + self.c > 1.0 + 1e-12

    def is_feature_learning(self, num_hidden: int = 2) -> bool:
        """Stable, nontrivial and ``r = 0``: features move by Θ(1) in the infinite-width limit."""
        return self.is_stable(num_hidden) and not self.is_trivial() and abs(self.r(num_hidden)) < 1e-12

    def is_kernel_regime(self, num_hidden: int = 2) -> bool:
        """Stable, nontrivial and ``r > 0``: the infinite-width limit trains as kernel gradient descent."""
        return self.is_stable(num_hidden) and not self.is_trivial() and self.r(num_hidden) > 1e-12


@dataclass(frozen=True)
class ParamScaling:
    """How one parameter tensor is scaled. ``kind`` is input/hidden/output/bias/fixed."""

    kind: str
    width_mult: float
    init_std: float | None
    lr_mult: float


@dataclass
class ParametrizationPlan:
    """Result of :func:`parametrize`: per-parameter scalings and the optimizer groups they imply."""

    model: nn.Module
    parametrization: AbcParametrization
    scalings: dict[str, ParamScaling] = field(default_factory=dict)

    def param_groups(self, lr: float, **group_options) -> list[dict]:
        """Optimizer parameter groups with ``lr * lr_mult`` each (one group per distinct multiplier).

        Args:
            lr: the base learning rate (the one tuned at the base width).
            **group_options: extra keys copied into every group (e.g. ``weight_decay``).
        """
        groups: dict[float, list[Tensor]] = {}
        params = dict(self.model.named_parameters())
        for name, scaling in self.scalings.items():
            if params[name].requires_grad:
                groups.setdefault(scaling.lr_mult, []).append(params[name])
        return [{"params": ps, "lr": lr * mult, **group_options} for mult, ps in sorted(groups.items())]


def _wide_dims(shape: torch.Size, base: torch.Size | None, width: int | None, base_width: int | None) -> list[bool]:
    if base is not None:
        if len(base) != len(shape):
            raise ValueError(f"base model parameter has shape {list(base)}, model has {list(shape)}")
        return [s != b for s, b in zip(shape, base)]
    return [s == width and width != base_width for s in shape]


def _base_size(size: int, wide: bool, base_shape_size: int | None, width: int | None, base_width: int | None) -> int:
    if not wide:
        return size
    if base_shape_size is not None:
        return base_shape_size
    return base_width


def parametrize(
    model: nn.Module,
    base_model: nn.Module | None = None,
    *,
    parametrization: str | AbcParametrization = "mup",
    optimizer: str = "adam",
    width: int | None = None,
    base_width: int | None = None,
    weight_gain: float = 1.0,
    zero_readout: bool = False,
    reinit: bool = True,
) -> ParametrizationPlan:
    """Apply an abc-parametrisation to every ``nn.Linear`` of ``model`` and return its learning-rate plan.

    Wide dimensions are those whose size differs from the base model's (``base_model``, built
    with the same code at the base width), or, without a base model, those equal to ``width``
    (with ``base_width`` the base size). ``nn.Linear`` weights ``[out, in]`` are *input* (only
    ``out`` wide), *hidden* (both), *output* (only ``in``) or *fixed*; every other tensor with a
    wide dimension (biases, norm gains, embeddings) is vector-like and follows the input rule;
    the rest is fixed (learning rate ``lr``, untouched).

    At the base width (``m = 1``) weights are ``N(0, weight_gain² / fan_in)`` (biases 0), i.e.
    the standard parametrisation. Attention logits of transformers need μP's ``1/d_head``
    scaling inside the attention op; that is not an ``nn.Linear`` property and is left to the model.

    Args:
        model: the network to (re)initialise.
        base_model: the same architecture at the base width (only its shapes are read).
        parametrization: ``"sp"``, ``"ntk"``, ``"mf"``, ``"mup"`` or an :class:`AbcParametrization`.
        optimizer: ``"sgd"`` or ``"adam"`` (picks the learning-rate rule and μP's representative).
        width, base_width: alternative to ``base_model``.
        weight_gain: ``σ`` of the base-width initialisation.
        zero_readout: initialise output-layer weights to 0 (recommended with μP).
        reinit: re-draw weights; ``False`` only computes the plan.

    Returns:
        A :class:`ParametrizationPlan`; ``plan.param_groups(lr)`` feeds ``torch.optim.SGD``/``Adam``.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    abc = (
        parametrization
        if isinstance(parametrization, AbcParametrization)
        else (AbcParametrization.named(parametrization, optimizer))
    )
    if abc.optimizer != optimizer:
        raise ValueError(f"parametrization was built for {abc.optimizer!r} but optimizer={optimizer!r}")
    if base_model is None and (width is None or base_width is None):
        raise ValueError("give base_model (same architecture at the base width), or width and base_width")
    base_shapes = dict(base_model.named_parameters()) if base_model is not None else {}
    linear_weights = {f"{n}.weight" if n else "weight": m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    plan = ParametrizationPlan(model, abc)
    for name, param in model.named_parameters():
        base = base_shapes.get(name)
        if base_model is not None and base is None:
            raise ValueError(f"parameter {name!r} is missing from base_model")
        wide = _wide_dims(param.shape, base.shape if base is not None else None, width, base_width)
        if name in linear_weights:
            out_wide, in_wide = wide[0], wide[1]
            kind = {(True, False): "input", (True, True): "hidden", (False, True): "output"}.get(
                (out_wide, in_wide), "fixed"
            )
            dim = 1 if kind in ("hidden", "output") else 0
            size = param.shape[dim]
            base_size = _base_size(size, True, base.shape[dim] if base is not None else None, width, base_width)
            mult = size / base_size if kind != "fixed" else 1.0
            fan_in_base = (
                param.shape[1]
                if not in_wide
                else _base_size(param.shape[1], True, base.shape[1] if base is not None else None, width, base_width)
            )
            if kind == "fixed":
                std, lr_mult = weight_gain / math.sqrt(param.shape[1]), 1.0
            else:
                std = weight_gain / math.sqrt(fan_in_base) * mult ** abc.init_exponent(kind)
                lr_mult = mult ** abc.lr_exponent(kind)
            if kind == "output" and zero_readout:
                std = 0.0
            plan.scalings[name] = ParamScaling(kind, mult, std, lr_mult)
        elif any(wide):
            # not an nn.Linear weight: matrix-like (two wide dims, e.g. attention in_proj_weight)
            # trains as hidden, vector-like (one wide dim: biases, gains, embeddings) as input.
            # Its initialisation is left to the module.
            i = wide.index(True) if sum(wide) == 1 else len(wide) - 1 - wide[::-1].index(True)
            size = param.shape[i]
            mult = size / _base_size(size, True, base.shape[i] if base is not None else None, width, base_width)
            kind = "hidden" if sum(wide) >= 2 else "bias"
            rule = "hidden" if kind == "hidden" else "input"
            plan.scalings[name] = ParamScaling(kind, mult, None, mult ** abc.lr_exponent(rule))
        else:
            plan.scalings[name] = ParamScaling("fixed", 1.0, None, 1.0)
    if reinit:
        with torch.no_grad():
            for module_name, module in model.named_modules():
                if not isinstance(module, nn.Linear):
                    continue
                prefix = f"{module_name}." if module_name else ""
                module.weight.normal_(0.0, 1.0).mul_(plan.scalings[prefix + "weight"].init_std)
                if module.bias is not None:
                    module.bias.zero_()
    return plan


# ---------------------------------------------------------------------------------------------
# coordinate check
# ---------------------------------------------------------------------------------------------
@dataclass
class CoordCheck:
    """Activation statistics per layer, width and step.

    Attributes:
        widths: the widths checked.
        size: ``{layer: Tensor [len(widths), steps + 1]}`` RMS of the layer's output.
        change: ``{layer: Tensor [len(widths), steps + 1]}`` RMS of ``h_t - h_0``.
    """

    widths: list[int]
    size: dict[str, Tensor]
    change: dict[str, Tensor]

    def slopes(self, metric: str = "change", step: int = -1) -> dict[str, float]:
        """Least-squares slope of ``log(metric)`` against ``log(width)`` at one step, per layer.

        About 0 means the layer's coordinates are width-independent (μP); positive means they
        blow up with width, negative that they vanish.
        """
        table = {"change": self.change, "size": self.size}[metric]
        logw = torch.tensor(self.widths, dtype=torch.float64).log()
        logw = logw - logw.mean()
        out = {}
        for layer, values in table.items():
            y = values[:, step].double().clamp_min(1e-300).log()
            out[layer] = float(((y - y.mean()) * logw).sum() / logw.square().sum())
        return out

    def plot(self, metric: str = "change"):
        """Log-log plot of ``metric`` against width, one panel per step after the first; returns the figure."""
        import matplotlib.pyplot as plt

        table = {"change": self.change, "size": self.size}[metric]
        steps = next(iter(table.values())).shape[1]
        first = 1 if metric == "change" else 0
        fig, axes = plt.subplots(1, steps - first, figsize=(3.2 * (steps - first), 3), squeeze=False)
        for j, ax in enumerate(axes[0], start=first):
            for layer, values in table.items():
                ax.loglog(self.widths, values[:, j].numpy(), marker="o", label=layer)
            ax.set_title(f"step {j}")
            ax.set_xlabel("width")
        axes[0][0].set_ylabel(f"RMS {metric}")
        axes[0][-1].legend(fontsize="small")
        fig.tight_layout()
        return fig


def _coord_stats(make_model: Callable[[int], nn.Module], width: int, base_width: int, seed: int, x: Tensor,
                 y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor], parametrization: str | AbcParametrization,
                 optimizer: str, lr: float, num_steps: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """One model's RMS output size and RMS change since step 0 of every ``nn.Linear``, at steps
    ``0..num_steps`` (the last after the final update)."""
    outputs: dict[str, Tensor] = {}
    first: dict[str, Tensor] = {}
    size: dict[str, list[float]] = {}
    change: dict[str, list[float]] = {}

    def forward(model: nn.Module) -> Tensor:
        loss = loss_fn(model(x), y)
        for n, h in outputs.items():
            first.setdefault(n, h)
            size.setdefault(n, []).append(float(h.square().mean().sqrt()))
            change.setdefault(n, []).append(float((h - first[n]).square().mean().sqrt()))
        return loss

    with seeded(seed, x):
        model = make_model(width).to(device=x.device, dtype=x.dtype)
        base = make_model(base_width)
        plan = parametrize(model, base, parametrization=parametrization, optimizer=optimizer)
        hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: outputs.__setitem__(n, out.detach()))
                 for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        try:
            if num_steps:
                optimize(model, lambda: forward(model), num_steps, params=plan.param_groups(lr), optimizer=optimizer,
                         lr=lr, progress=False, desc="coord check")
            with torch.no_grad():
                forward(model)  # the outputs after the last step
        finally:
            for hook in hooks:
                hook.remove()
    return size, change


@renamed_kwargs(steps="num_steps")
def coord_check(
    make_model: Callable[[int], nn.Module],
    widths: Sequence[int],
    x: Tensor,
    y: Tensor,
    *,
    base_width: int | None = None,
    parametrization: str | AbcParametrization = "mup",
    optimizer: str = "adam",
    lr: float = 1e-2,
    num_steps: int = 3,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    seeds: Iterable[int] = (0,),
    progress: bool = False,
) -> CoordCheck:
    """Train one model per width for a few steps and record every ``nn.Linear`` output's scale.

    Under μP the RMS change of every layer's output after a few steps is flat in the width;
    under SP with a fixed learning rate it grows with width (arXiv 2011.14522, 2203.03466).

    Args:
        make_model: ``width -> nn.Module``.
        widths: widths to check (increasing).
        x, y: one batch, reused at every step.
        base_width: width of the base model (default ``widths[0]``).
        parametrization, optimizer, lr: as :func:`parametrize`; ``optimizer`` is SGD or Adam.
        num_steps: optimizer steps (the old name ``steps`` still works, with a DeprecationWarning).
        loss_fn: default mean squared error.
        seeds: statistics are averaged over one model per seed.
        progress: show a tqdm bar.

    Returns:
        A :class:`CoordCheck`.
    """
    from tqdm.auto import tqdm

    widths = [int(w) for w in widths]
    if len(widths) < 2:
        raise ValueError(f"widths must list at least two widths, got {widths!r}")
    base_width = widths[0] if base_width is None else base_width
    loss_fn = loss_fn or (lambda out, target: (out - target).square().mean())
    seeds = list(seeds)
    size: dict[str, list[list[float]]] = {}
    change: dict[str, list[list[float]]] = {}
    for width in tqdm(widths, disable=not progress, desc="coord check"):
        per_seed_size, per_seed_change = [], []
        for seed in seeds:
            s_stats, c_stats = _coord_stats(make_model, width, base_width, seed, x, y, loss_fn, parametrization,
                                            optimizer, lr, num_steps)
            per_seed_size.append(s_stats)
            per_seed_change.append(c_stats)
        for table, per_seed in ((size, per_seed_size), (change, per_seed_change)):
            for layer in per_seed[0]:
                mean = torch.tensor([s[layer] for s in per_seed]).mean(0)
                table.setdefault(layer, []).append(mean.tolist())
    return CoordCheck(
        widths,
        {k: torch.tensor(v) for k, v in size.items()},
        {k: torch.tensor(v) for k, v in change.items()},
    )


# ---------------------------------------------------------------------------------------------
# criticality
# ---------------------------------------------------------------------------------------------
#: Derivatives below this count as zero when classifying an activation's universality class.
CLASS_TOL = 1e-9
#: Log-spaced search range for a non-zero critical fixed point K* (GELU's is ~4, SiLU's ~15).
K_SEARCH = (1e-3, 1e3, 241)


def kernel_recursion(
    activation: str | DualActivation | Callable, C_W: float, C_b: float, depth: int, K0: float | Tensor = 1.0
) -> Tensor:
    """Infinite-width preactivation variances ``K^0 .. K^depth`` with ``K^{l+1} = C_b + C_W ⟨σ²⟩_{K^l}``.

    Args:
        activation: name, :class:`~priors.dual_activations.DualActivation` or callable.
        C_W, C_b: weight and bias variances (weights ``N(0, C_W / fan_in)``).
        depth: number of layers to iterate (>= 1).
        K0: first-layer preactivation variance(s), float or ``[...]`` tensor.

    Returns:
        ``[depth + 1, ...]`` float64 variances.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    _check_variances(C_W, C_b)
    dual = as_dual(activation)
    k = torch.as_tensor(K0, dtype=torch.float64)
    out = [k]
    for _ in range(depth):
        k = C_b + C_W * dual.diag(k)[0]
        out.append(k)
    return torch.stack(out)


def susceptibilities(
    activation: str | DualActivation | Callable, K: float | Tensor, C_W: float
) -> tuple[Tensor, Tensor]:
    """``(χ_∥, χ_⊥) = (C_W d⟨σ²⟩_K/dK, C_W ⟨σ'²⟩_K)``; ``d⟨σ²⟩/dK = ⟨σ'² + σ σ''⟩`` (Gaussian integration by parts)."""
    dual = as_dual(activation)
    k = torch.as_tensor(K, dtype=torch.float64)
    chi_perp = C_W * dual.diag(k, deriv=True)[1]
    if isinstance(dual, ArcCosine):  # σσ'' = 0 almost everywhere and ⟨σ²⟩ is linear in K
        return chi_perp, chi_perp
    second = _second_derivative(dual)
    chi_par = chi_perp + C_W * gaussian_expectation(lambda x: dual.activation(x) * second(x), k)
    return chi_par, chi_perp


def _second_derivative(dual: DualActivation) -> Callable[[Tensor], Tensor]:
    def second(x: Tensor) -> Tensor:
        return torch.func.jvp(dual.derivative, (x,), (torch.ones_like(x),))[1]

    return second


@dataclass(frozen=True)
class Criticality:
    """Critical initialisation hyperparameters.

    Attributes:
        C_W: weight variance (``W ~ N(0, C_W / fan_in)``).
        C_b: bias variance.
        K_star: the critical fixed point of the variance map (``None`` for scale-invariant
            activations, which are critical at every ``K``).
        universality: ``"scale_invariant"`` (ReLU family), ``"K*=0"`` (tanh, sin, erf) or
            ``"K*>0"`` (GELU, SiLU: critical at a non-zero fixed point).
    """

    C_W: float
    C_b: float
    K_star: float | None
    universality: str


def _check_variances(C_W: float, C_b: float) -> None:
    if not (math.isfinite(C_W) and C_W > 0):
        raise ValueError(f"C_W must be a finite positive number, got {C_W!r}")
    if not (math.isfinite(C_b) and C_b >= 0):
        raise ValueError(f"C_b must be a finite non-negative number, got {C_b!r}")


def critical_init(activation: str | DualActivation | Callable) -> Criticality:
    """Critical ``(C_W, C_b)`` at which ``χ_∥ = χ_⊥ = 1`` (arXiv 2106.10165, chapter 5).

    * ReLU / leaky ReLU / ``|x|`` (scale-invariant): ``C_b = 0``, ``C_W = 2 / (1 + α²)``.
    * ``σ(0) = 0``, ``σ'(0) ≠ 0``, ``σ''(0) = 0`` (tanh, erf, sin): ``K* = 0``, ``C_b = 0``,
      ``C_W = 1 / σ'(0)²``.
    * otherwise (GELU, SiLU, ...): ``χ_∥ = χ_⊥`` requires ``⟨σ σ''⟩_{K*} = 0``; we find the root
      ``K* > 0`` numerically, then ``C_W = 1/⟨σ'²⟩_{K*}`` and ``C_b = K* - C_W ⟨σ²⟩_{K*}`` (the
      fixed point of the variance map). Raises ``ValueError`` when no root gives ``C_b >= 0``.
    """
    dual = as_dual(activation)
    if isinstance(dual, ArcCosine):
        return Criticality(2.0 / (1.0 + dual.negative_slope**2), 0.0, None, "scale_invariant")
    zero = torch.zeros(1, dtype=torch.float64)
    second = _second_derivative(dual)
    s0, s1, s2 = (float(f(zero)[0]) for f in (dual.activation, dual.derivative, second))
    if abs(s0) < CLASS_TOL and abs(s2) < CLASS_TOL and abs(s1) > CLASS_TOL:
        return Criticality(1.0 / s1**2, 0.0, 0.0, "K*=0")

    def gap(k: float) -> float:
        kk = torch.tensor([k], dtype=torch.float64)
        return float(gaussian_expectation(lambda x: dual.activation(x) * second(x), kk)[0])

    lo, hi, num = K_SEARCH
    grid = torch.logspace(math.log10(lo), math.log10(hi), num, dtype=torch.float64)
    values = gaussian_expectation(lambda x: dual.activation(x) * second(x), grid)
    for i in range(num - 1):
        if values[i] * values[i + 1] < 0:
            k_star = brentq(gap, float(grid[i]), float(grid[i + 1]), xtol=1e-14, rtol=1e-13)
            k = torch.tensor([k_star], dtype=torch.float64)
            e_sq, e_dsq = dual.diag(k, deriv=True)
            c_w = 1.0 / float(e_dsq[0])
            c_b = k_star - c_w * float(e_sq[0])
            if c_b >= 0:
                return Criticality(c_w, c_b, k_star, "K*>0")
    raise ValueError(
        f"no critical initialisation with C_b >= 0 found for {dual!r}: <σσ''>_K has no suitable root in "
        f"K in [{lo}, {hi}]"
    )


def init_critical_(model: nn.Module, activation: str | DualActivation | Callable) -> Criticality:
    """Re-draw every ``nn.Linear`` of ``model`` at criticality: ``W ~ N(0, C_W / fan_in)``, ``b ~ N(0, C_b)``."""
    crit = critical_init(activation)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, math.sqrt(crit.C_W / module.in_features))
                if module.bias is not None:
                    module.bias.normal_(0.0, 1.0).mul_(math.sqrt(crit.C_b))
    return crit


def output_kurtosis(
    activation: str | DualActivation | Callable, C_W: float, C_b: float, depth: int, width: int, K0: float = 1.0
) -> float:
    """Leading-order (in depth/width) excess kurtosis of one output preactivation.

    The output is layer ``depth + 1`` after ``depth`` hidden layers of ``width`` units. With
    ``V^1 = 0`` and ``V^{l+1} = C_W² (⟨σ⁴⟩ - ⟨σ²⟩²)_{K^l} + χ_∥(K^l)² V^l`` the excess kurtosis is
    ``3 V^{L+1} / (width · (K^{L+1})²)`` (arXiv 2106.10165, eq. 4.90 and §5.4).

    Args:
        activation, C_W, C_b: as :func:`kernel_recursion`.
        depth: hidden layers ``L``.
        width: hidden width ``n``.
        K0: first-layer preactivation variance.
    """
    dual = as_dual(activation)
    ks = kernel_recursion(dual, C_W, C_b, depth, K0)
    v = torch.zeros((), dtype=torch.float64)
    for k in ks[:-1]:
        fourth = gaussian_expectation(lambda x: dual.activation(x) ** 4, k)
        second = dual.diag(k)[0]
        chi_par, _ = susceptibilities(dual, k, C_W)
        v = C_W**2 * (fourth - second**2) + chi_par**2 * v
    return float(3.0 * v / (width * ks[-1] ** 2))


#: ReLU with C_W = 2: per-layer ratio E[X²]/E[X]² = 1 + RELU_VERTEX/n for X = Σ_j relu(g_j)²,
#: since Var(relu(g)²)/E[relu(g)²]² = (3/2 - 1/4)/(1/4) = 5.
RELU_VERTEX = 5.0


def relu_output_kurtosis(depth: int, width: int, exact: bool = False) -> float:
    """Excess kurtosis of the output of a critical ReLU net (``C_W = 2``, ``C_b = 0``, Gaussian weights).

    Leading order: ``15 L / n`` (depth-to-width ratio; arXiv 2106.10165 §5.4). Exact at finite
    width: ``3 [(1 + 5/n)^L - 1]`` — the output is Gaussian given the last hidden layer, with a
    variance that is a product of ``L`` independent factors ``(2/n) Σ_j relu(g_j)²``.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}")
    if exact:
        return 3.0 * ((1.0 + RELU_VERTEX / width) ** depth - 1.0)
    return 3.0 * RELU_VERTEX * depth / width
