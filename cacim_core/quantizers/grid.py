"""Fixed-shape grids with one scale: uniform (MSE-optimal or max-abs step) and powers of two (INQ-style)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import Quantizer, check_weights, register
from .lloyd import atoms


def uniform_grid(levels: int) -> np.ndarray:
    """Symmetric unit-step grid: {-1, 0, 1} for 3 levels, {-1.5, -0.5, 0.5, 1.5} for 4."""
    return np.arange(levels) - (levels - 1) / 2


def log2_grid(levels: int) -> np.ndarray:
    """Sign-symmetric powers of two with largest magnitude 1; zero is a level when `levels` is odd.

    {0, +-1, +-1/2, ...} for odd levels (INQ); an even count cannot be symmetric with zero, so it is
    {+-1, +-1/2, ...} without zero.
    """
    mags = 2.0 ** -np.arange(levels // 2)
    grid = np.concatenate([-mags, mags] + ([np.zeros(1)] if levels % 2 else []))
    return np.sort(grid)


def best_scale(
    cnt: np.ndarray, pos: np.ndarray, grid: np.ndarray, top: float, candidates: int = 256
) -> float:
    """Scale s minimising the weighted MSE of quantizing `pos` to s * grid: a coarse scan, then a fine one."""

    def mse(scales: np.ndarray) -> np.ndarray:
        out = np.empty(len(scales))
        for i, s in enumerate(scales):
            g = s * grid
            q = g[np.clip(np.searchsorted((g[1:] + g[:-1]) / 2, pos), 0, len(g) - 1)]
            out[i] = np.dot(cnt, (pos - q) ** 2)
        return out

    if top <= 0:
        return 1.0
    scan = np.linspace(top / candidates, top, candidates)
    s0 = scan[np.argmin(mse(scan))]
    step = top / candidates
    fine = np.linspace(max(s0 - step, step / 16), s0 + step, 65)
    return float(fine[np.argmin(mse(fine))])


class _GridQuantizer(Quantizer):
    """levels = scale * grid(levels); subclasses give the grid and the largest useful scale."""

    refit_by_projection = True

    def __init__(self, levels: int, scale: str = "mse") -> None:
        super().__init__(levels)
        if scale not in ("mse", "maxabs"):
            raise ValueError(f"scale must be 'mse' or 'maxabs', got {scale!r}")
        self.scale_rule = scale

    def grid(self) -> np.ndarray:
        raise NotImplementedError

    @torch.no_grad()
    def fit(self, w: Tensor) -> None:
        check_weights(w)
        grid = self.grid()
        amax = float(w.detach().abs().max())
        maxabs = amax / grid.max() if amax > 0 else 1.0
        if self.scale_rule == "maxabs":
            scale = maxabs
        else:
            cnt, s1, _ = atoms(w)
            scale = best_scale(cnt, s1 / cnt, grid, top=maxabs)
        self.set_levels(torch.as_tensor(scale * grid, dtype=w.dtype, device=w.device))


@register("uniform")
class Uniform(_GridQuantizer):
    """Symmetric uniform quantizer whose step minimises the MSE on the layer (Max, 1960, "Quantizing for
    minimum distortion", the optimum uniform quantizer; here by a scan on the layer's own weights).

    Not LAQ (Hou & Kwok, 2018): LAQ's loss-aware step weights the error by Adam's second moment and is
    re-solved every step; this one is fitted on the weights alone (`scale="maxabs"`: step from max|w|).
    """

    def grid(self) -> np.ndarray:
        return uniform_grid(self.num_levels)


@register("uniform_maxabs")
class UniformMaxAbs(Uniform):
    """Symmetric uniform quantizer whose outermost levels are +-max|w| (no clipping): the symmetric linear
    quantizer of Krishnamoorthi (2018), "Quantizing deep convolutional networks for efficient inference",
    with a max-abs range; used for the 8-bit digital first/last layers.
    """

    def __init__(self, levels: int) -> None:
        super().__init__(levels, scale="maxabs")


@register("log2")
class Log2(_GridQuantizer):
    """Powers-of-two (log) quantizer, INQ-style (Zhou et al., 2017): levels {0, +-a 2^-j}.

    Simplification: INQ restricts a to a power of two (2^floor(log2(4 max|w| / 3))); in analog hardware the
    scale is free, so by default a minimises the MSE; `scale="maxabs"` puts the largest level at max|w|.
    INQ's training (quantize and freeze a growing fraction of the largest weights, retrain the rest) is
    absent: this is the level set with our straight-through fine-tuning, not INQ's procedure.
    """

    def grid(self) -> np.ndarray:
        return log2_grid(self.num_levels)
