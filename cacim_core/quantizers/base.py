"""The one core abstraction: a quantizer is a torch module of one of two kinds, fitted or learned.

- Fitted (`Quantizer`): `fit(w)` sets the levels from data (Lloyd, uniform, log2, a user's grid). Algorithm 1
  re-fits it when the projection test fails, unless the class sets `refit_by_projection = False`.
- Learned (`LearnedQuantizer`): the levels are a read-only function of its parameters (LSQ's step, TTQ's
  Wp/Wn), and of statistics of the weights where the authors' rule says so (APoT's std); `fit(w)` only
  initialises the parameters, the optimizer trains them, Algorithm 1 never re-fits them.

`forward` mutates nothing. Between optimizer steps, state that follows its own rule (LQ-Net's moving basis)
is updated in `after_step(w)`, which `training.refit_check` calls after every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..registry import Registry

_HALF = (torch.float16, torch.bfloat16)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are computed in float32 (statistics, solves, erf); float32/float64 as they are."""
    return torch.float32 if dtype in _HALF else dtype


#: the most decision thresholds `Quantizer.quantize` resolves by a chain of selects (8 levels)
SELECT_CHAIN = 7


class Quantizer(nn.Module):
    """Fitted kind: maps weights onto `levels` (set by `fit`) with decision thresholds `edges`.

    Subclasses implement `fit(w)` and call `set_levels`. `forward(w)` = `quantize(w)` on the detached weights
    plus the identity straight-through gradient to w, so any parameter used inside `quantize` gets its
    gradient from autograd. A rule that defines the weights' own gradient (LSQ's clipped STE) sets
    `own_weight_grad = True`; `quantize` then receives w itself and its autograd is the whole gradient.
    """

    kind: ClassVar[str] = "fitted"
    #: Algorithm 1 re-fits a fitted quantizer whose projection test fails; False opts out (LQ-Net's QEM).
    refit_by_projection: bool = True
    #: quantize(w) defines the gradient to w too (else: identity straight-through).
    own_weight_grad: bool = False
    #: q(q(w)) == q(w) holds; False where the forward re-normalises by statistics of its input
    #: (He & Fan, APoT), as their original code does.
    idempotent: bool = True
    #: Optimizer settings of the quantizer's own parameters (see `param_groups`): learning rate as a
    #: multiple of the model's, weight decay (None: the model's).
    lr_scale: float = 1.0
    weight_decay: float | None = None
    #: the name `@register` gave the class (the name records and tables use)
    registered_name: ClassVar[str]
    _levels: Tensor
    _edges: Tensor

    def __init__(self, levels: int) -> None:
        super().__init__()
        check_levels_arg(levels)
        self.num_levels = int(levels)
        #: the number of levels the method really has (APoT's "4 levels" are 3); tables print this one
        self.effective_levels = int(levels)
        self.register_buffer("_levels", torch.zeros(0))
        self.register_buffer("_edges", torch.zeros(0))

    @property
    def levels(self) -> Tensor:
        """Sorted 1-D tensor of the values quantized weights can take."""
        return self._levels

    @property
    def edges(self) -> Tensor:
        """Sorted 1-D tensor of the len(levels) - 1 decision thresholds."""
        return self._edges

    def set_levels(self, levels: Tensor, edges: Tensor | None = None) -> None:
        """Store fitted levels (and edges, default midpoints); called by `fit` and `after_step` only."""
        levels = levels.detach().flatten().sort().values
        if edges is None:
            edges = (levels[1:] + levels[:-1]) / 2
        self._levels = levels
        self._edges = edges.detach().to(levels)

    @property
    def fitted(self) -> bool:
        return self._levels.numel() > 0

    def fit(self, w: Tensor) -> None:
        raise NotImplementedError

    def after_step(self, w: Tensor) -> None:
        """State update between optimizer steps (no-op here); `refit_check` calls it after every step."""

    def quantize(self, w: Tensor) -> Tensor:
        """Nearest-cell mapping with the fitted levels and edges (ties go to the lower cell).

        Up to `SELECT_CHAIN` edges, one vectorised compare-and-select per edge, which gives each weight its
        level's own value (exact, like the lookup) at 1.5-2x the speed of bucketize + gather on CPU
        (`make bench`); beyond that, bucketize. No host sync either way (the levels stay on the device)."""
        levels, edges = self._levels.to(w), self._edges.to(w)
        if len(edges) == 0 or len(edges) > SELECT_CHAIN:
            return levels[torch.bucketize(w, edges)]
        q = torch.where(w > edges[0], levels[1], levels[0])
        for j in range(1, len(edges)):
            q = torch.where(w > edges[j], levels[j + 1], q)
        return q

    def forward(self, w: Tensor) -> Tensor:
        if not self.fitted:
            raise RuntimeError(
                f"{type(self).__name__} is not fitted: call fit(w) first (quantize_model does it for you)"
            )
        if self.own_weight_grad:
            return self.quantize(w)
        return self.quantize(w.detach()) + (w - w.detach())

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Torch optimizer groups for this quantizer's trainable parameters, with its declared settings."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return []
        decay = weight_decay if self.weight_decay is None else self.weight_decay
        return [{"params": params, "lr": lr * self.lr_scale, "weight_decay": decay}]

    def extra_repr(self) -> str:
        return f"levels={self.num_levels}"


class LearnedQuantizer(Quantizer):
    """Learned kind: levels a read-only function of parameters (and of `statistics(w)` where the rule says).

    Override `quantize(w)`; without `own_weight_grad`, it sees detached weights and its parameters get
    their gradient from autograd, while w gets the identity straight-through gradient. `fit(w)` checks the
    weights, calls `init_from(w)` (set the parameters from data; default: keep them) and records
    `statistics(w)`, from which `levels_for` gives `levels` and `edges`. Never re-fitted by Algorithm 1.
    """

    kind: ClassVar[str] = "learned"
    refit_by_projection = False
    fit_stats: Tensor

    def __init__(self, levels: int) -> None:
        super().__init__(levels)
        self.register_buffer("fit_stats", torch.zeros(0))
        self._is_fitted = False
        self.register_load_state_dict_post_hook(_mark_fitted)

    @property
    def fitted(self) -> bool:
        return self._is_fitted

    def fit(self, w: Tensor) -> None:
        check_weights(w)
        with torch.no_grad():
            w = w.detach()
            self.init_from(w)
            self.fit_stats = self.statistics(w)
        self._is_fitted = True

    def init_from(self, w: Tensor) -> None:
        """Initialise the parameters from the weights (default: leave them as constructed)."""

    def statistics(self, w: Tensor) -> Tensor:
        """1-D tensor of the weight statistics the levels depend on besides the parameters (default none)."""
        return w.new_zeros(0)

    def levels_for(self, stats: Tensor) -> tuple[Tensor, Tensor]:
        """(levels, edges) for the parameters and these statistics; a subclass defines it to expose levels."""
        raise NotImplementedError(f"{type(self).__name__} does not define levels_for(stats)")

    @property
    def levels(self) -> Tensor:
        """Levels for the weights of the last fit, in the quantizer's dtype."""
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(w) first")
        with torch.no_grad():
            return self.levels_for(self.fit_stats)[0].to(self._levels.dtype)

    @property
    def edges(self) -> Tensor:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(w) first")
        with torch.no_grad():
            return self.levels_for(self.fit_stats)[1].to(self._levels.dtype)


def _mark_fitted(module: nn.Module, incompatible_keys: object) -> None:
    module.__dict__["_is_fitted"] = True  # a plain attribute; the hook's type says Module


def check_weights(w: Tensor) -> None:
    """At fit: weights must be non-empty and finite (one reduction, no full-size mask); never per forward."""
    if w.numel() == 0:
        raise ValueError("cannot fit a quantizer on an empty tensor: pass the layer's weights")
    if not torch.isfinite(torch.stack(torch.aminmax(w.detach()))).all():
        raise ValueError(
            "weights contain NaN or inf: fix the model (check the learning rate) before quantizing"
        )


def check_levels_arg(levels: object, what: str = "levels") -> None:
    """`levels` is an int >= 2 (3.5 must not silently become 3, nor "4" fail deep inside a fit)."""
    if isinstance(levels, bool) or not isinstance(levels, int):
        raise TypeError(f"{what} must be an int >= 2, got {levels!r} ({type(levels).__name__})")
    if levels < 2:
        raise ValueError(f"{what} must be >= 2, got {levels}")


def fit_checked(quantizer: Quantizer, w: Tensor, name: str = "") -> None:
    """`quantizer.fit(w)`, then its contract: exactly `effective_levels` finite, sorted levels (one row per
    channel for a per-channel quantizer), or as many as the weights have distinct values when that is
    fewer (a zero-initialised layer, e.g. a DCN's conv_offset). A plugin whose fit set 5 levels where 3
    were asked would otherwise run, and its records say 3."""
    quantizer.fit(w)
    levels = quantizer.levels.detach()
    where = f" on layer {name!r}" if name else ""
    kind = type(quantizer).__name__
    asked, got = quantizer.effective_levels, levels.shape[-1] if levels.dim() else 0
    if levels.dim() not in (1, 2) or (got != asked and not (got < asked and got >= w.unique().numel())):
        raise ValueError(
            f"{kind}.fit{where} set {got} levels (shape {tuple(levels.shape)}) where {asked} were asked: "
            "fit must give exactly that many (a method with fewer distinct levels declares it in "
            "effective_levels, as APoT does)"
        )
    if not torch.isfinite(levels).all():
        raise ValueError(f"{kind}.fit{where} set non-finite levels {levels.tolist()}: fix its fit")
    if levels.shape[-1] > 1 and not bool((levels[..., 1:] >= levels[..., :-1]).all()):
        raise ValueError(f"{kind}.fit{where} set unsorted levels {levels.tolist()}: set_levels sorts them")


def _check_quantizer(cls: object) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
        raise TypeError(f"{cls!r} must subclass cacim_core.quantizers.Quantizer")


QUANTIZERS: Registry[type[Quantizer]] = Registry("quantizer", check=_check_quantizer)


def register(name: str) -> Callable[[type[Quantizer]], type[Quantizer]]:
    """Class decorator: `@register("mine")` makes `build("mine", levels=...)` and every table know it."""

    def wrap(cls: type[Quantizer]) -> type[Quantizer]:
        QUANTIZERS.register(name)(cls)
        cls.registered_name = name
        return cls

    return wrap


def names() -> list[str]:
    return QUANTIZERS.names()


def build(name: str, levels: int, **kwargs) -> Quantizer:
    return QUANTIZERS.get(name)(levels=levels, **kwargs)


def nearest(w: Tensor, values: Tensor) -> Tensor:
    """Nearest value of a sorted 1-D `values` for each element of w (helper for grid quantizers)."""
    edges = (values[1:] + values[:-1]) / 2
    return values[torch.bucketize(w, edges)]


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Split a (quantized) model's trainable parameters into torch optimizer groups.

    The model's own weights get (lr, weight_decay); each quantizer's parameters get the settings its class
    declares (`lr_scale`, `weight_decay`: He & Fan's threshold without decay, APoT's alpha at its own lr),
    merged into one group per distinct setting.
    """
    merged: dict[tuple[float, float], list[Tensor]] = {}
    owned: set[int] = set()
    for module in model.modules():
        if isinstance(module, Quantizer):
            for group in module.param_groups(lr, weight_decay):
                new = [p for p in group["params"] if id(p) not in owned]  # a quantizer inside a quantizer
                merged.setdefault((group["lr"], group["weight_decay"]), []).extend(new)
                owned.update(id(p) for p in new)
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in owned]
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}] if rest else []
    return groups + [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in merged.items()]
