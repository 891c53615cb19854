"""Weight-noise models: what a programmed analog weight looks like after it is written to the device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class GaussianNoise:
    """NATS noise (the paper's eq. 6): N(mean * m, (delta * m)^2) per weight, with m = max|W_q| of the layer.

    `mean` is a device mean shift (a systematic conductance drift), also relative to max|W_q|; the paper's
    noise has mean 0.
    """

    delta: float
    mean: float = 0.0

    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        scale = wq.detach().abs().max()
        eps = torch.randn(wq.shape, generator=generator, device=wq.device, dtype=wq.dtype)
        return (self.mean + self.delta * eps) * scale

    @property
    def active(self) -> bool:
        return self.delta > 0 or self.mean != 0
