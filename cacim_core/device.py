"""Mapping quantized weights onto memristor conductances (the paper's section 4.4).

Each weight is a differential pair G = G+ - G-; one device of the pair sits at the reference conductance
Gref and the other carries |G|: a positive weight puts Gref on the negative device, and vice versa.
Per layer the weights are normalised by max|W| and multiplied by the usable range g_max - g_ref.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ConductanceMap:
    g_min: float = 2.1  # uS, lowest programmable conductance
    g_max: float = 17.85  # uS
    g_ref: float = 2.1  # uS, shared reference conductance of every pair

    def __post_init__(self) -> None:
        if not self.g_min <= self.g_ref < self.g_max:
            raise ValueError(f"need g_min <= g_ref < g_max, got {self.g_min}, {self.g_ref}, {self.g_max}")

    @property
    def scale(self) -> float:
        """Conductance of the largest |weight| (15.75 uS for the paper's device)."""
        return self.g_max - self.g_ref

    def differential(self, wq: Tensor, w_max: float | Tensor | None = None) -> Tensor:
        """G = wq / max|wq| * scale, in uS."""
        w_max = wq.abs().max() if w_max is None else w_max
        return wq / w_max * self.scale

    def pair(self, wq: Tensor, w_max: float | Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(G+, G-) in uS for each weight."""
        g = self.differential(wq, w_max)
        ref = torch.full_like(g, self.g_ref)
        return torch.where(g >= 0, ref + g, ref), torch.where(g >= 0, ref, ref - g)

    def to_weight(self, g_plus: Tensor, g_minus: Tensor, w_max: float | Tensor) -> Tensor:
        """Weights read back from a (possibly measured) pair of conductances."""
        return (g_plus - g_minus) / self.scale * w_max
