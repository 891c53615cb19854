"""The one core abstraction: a quantizer is a torch module with `fit` and a straight-through forward."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..registry import Registry


class Quantizer(nn.Module):
    """Maps weights onto a small set of values (`levels`) separated by `edges`.

    Subclasses implement `fit(w)` (set the levels from data) and `quantize(w)` (the hard mapping, which may
    use differentiable parameters). `forward` adds the straight-through estimator unless the subclass
    defines its own gradient inside `quantize` (set `custom_grad = True`).
    """

    custom_grad: bool = False
    #: q(q(w)) == q(w) holds; False where the forward re-normalises by statistics of its input
    #: (He & Fan, APoT), as their original code does.
    idempotent: bool = True
    #: Algorithm 1 re-fits it when the projection test fails (quantizers fitted from data, not learned).
    refit_by_projection: bool = False

    def __init__(self, levels: int) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.num_levels = int(levels)
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

    def quantize(self, w: Tensor) -> Tensor:
        """Nearest-cell mapping with the fitted levels and edges (ties go to the lower cell)."""
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(w) first")
        levels, edges = self._levels.to(w), self._edges.to(w)
        return levels[torch.bucketize(w, edges)]

    def forward(self, w: Tensor) -> Tensor:
        check_finite(w)
        if not self.fitted:
            self.fit(w)
        wq = self.quantize(w)
        if self.custom_grad:
            return wq
        return wq.detach() + (w - w.detach())

    def extra_repr(self) -> str:
        return f"levels={self.num_levels}"


def check_finite(w: Tensor) -> None:
    """NaN or inf anywhere makes the max or min non-finite: one reduction, no full-size mask."""
    if w.numel() and not torch.isfinite(torch.stack(torch.aminmax(w.detach()))).all():
        raise ValueError(
            "weights contain NaN or inf: fix the model (check the learning rate) before quantizing"
        )


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
