"""Multi-level baselines with learned parameters: LQ-Net, APoT, LSQ, LG-LSQ (weights only, one per layer)."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from .base import Quantizer, check_finite, nearest, register
from .grid import best_scale, uniform_grid
from .lloyd import atoms


@register("lqnet")
class LQNet(Quantizer):
    """LQ-Nets (Zhang et al., 2018): levels {B v : B in {-1, +1}^K}, basis v fitted by QEM, not by gradient.

    Every training forward runs one QEM step v* = (B^T B + 1e-4 I)^-1 (B^T w + 1e-4 v) and a moving average
    v <- 0.9 v + 0.1 v*, as the official code; `fit` runs QEM to convergence. Identity straight-through
    gradient. Simplification: one basis per layer (the paper learns one per output channel), so a layer has
    the same 2^K analog levels as every other method here.
    """

    def __init__(self, levels: int, ridge: float = 1e-4, momentum: float = 0.9) -> None:
        bits = round(math.log2(levels))
        if 2**bits != levels:
            raise ValueError(
                f"lqnet has 2^K levels (4, 8, ...): got {levels}; for 3 levels use ttq/twn/hefan"
            )
        super().__init__(levels)
        self.bits, self.ridge, self.momentum = bits, ridge, momentum
        self.register_buffer("basis", torch.zeros(bits))
        self.register_buffer("codes", torch.tensor(list(itertools.product([-1.0, 1.0], repeat=bits))))

    def _qem_target(self, w: Tensor) -> Tensor:
        codes = self.codes.to(w)
        values = codes @ self.basis.to(w)
        order = values.argsort()
        idx = order[torch.bucketize(w, ((values[order][1:] + values[order][:-1]) / 2))]
        count = torch.bincount(idx, minlength=len(codes)).to(w)
        total = torch.bincount(idx, weights=w, minlength=len(codes)).to(w)
        btb = codes.T @ (count[:, None] * codes)
        btw = codes.T @ total
        eye = torch.eye(self.bits, dtype=w.dtype, device=w.device)
        return torch.linalg.solve(btb + self.ridge * eye, btw + self.ridge * self.basis.to(w))

    def _sync_levels(self) -> None:
        self.set_levels(self.codes @ self.basis)

    @torch.no_grad()
    def fit(self, w: Tensor, iters: int = 100) -> None:
        check_finite(w)
        x = w.detach().flatten()
        scale = x.abs().mean() / (2**self.bits - 1)
        self.basis = (2.0 ** torch.arange(self.bits, dtype=x.dtype, device=x.device)) * scale
        for _ in range(iters):
            new = self._qem_target(x)
            done = torch.allclose(new, self.basis, rtol=1e-7, atol=0)
            self.basis = new
            if done:
                break
        self._sync_levels()

    def quantize(self, w: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                target = self._qem_target(w.detach().flatten())
                self.basis.mul_(self.momentum).add_((1 - self.momentum) * target.to(self.basis))
                self._sync_levels()
        return super().quantize(w)


def apot_magnitudes(bits: int) -> Tensor:
    """APoT's |level| set, normalised to max 1 (`build_power_value(B=bits-1)` of the official code)."""
    if bits == 2:
        return torch.tensor([0.0, 1.0])
    if bits == 3:
        terms = [[0.0, 2**-1, 2**-2, 2**-3]]
    elif bits == 4:
        terms = [[0.0, 2**-1, 2**-2, 2**-4], [0.0, 2**-3]]
    else:
        raise ValueError(f"apot supports 2, 3 or 4 bits (3, 7 or 15 levels), got {bits} bits")
    values = sorted({sum(c) for c in itertools.product(*terms)})
    return torch.tensor(values) / max(values)


@register("apot")
class APoT(Quantizer):
    """Additive Powers-of-Two (Li et al., 2020), CIFAR weight quantizer of the official code.

    b bits give 2^b - 1 levels, so `levels` v uses b = floor(log2(v + 1)): v=3 and v=4 -> uniform ternary
    (their "2-bit"), v=7 and v=8 -> 7 APoT levels. Weights are standardised with detached mean and std,
    clipped at the learned alpha (init 3.0) and snapped to alpha * {+-APoT}. Simplification: the result is
    scaled back by the std (the official code returns the standardised weights, relying on the next BN),
    and gradients flow through the clip as in their ImageNet code. q(q(w)) != q(w) in general.
    """

    idempotent = False
    custom_grad = True

    def __init__(self, levels: int) -> None:
        super().__init__(levels)
        self.bits = int(math.floor(math.log2(levels + 1)))
        mags = apot_magnitudes(self.bits)
        self.register_buffer("grid", torch.cat([-mags.flip(0)[:-1], mags]))
        self.alpha = nn.Parameter(torch.tensor(3.0))

    @property
    def fitted(self) -> bool:
        return True

    def fit(self, w: Tensor) -> None:
        check_finite(w)
        with torch.no_grad():
            self.alpha.fill_(3.0)
            self.quantize(w)

    def quantize(self, w: Tensor) -> Tensor:
        mean, std = w.detach().mean(), w.detach().std().clamp_min(1e-12)
        alpha = self.alpha.to(w)
        x = ((w - mean) / std / alpha).clamp(-1, 1)
        snapped = nearest(x.detach(), self.grid.to(w))
        self.set_levels(std * alpha.detach() * self.grid.to(w))
        return std * alpha * (snapped + (x - x.detach()))


@register("lsq")
class LSQ(Quantizer):
    """Learned Step Size Quantization (Esser et al., 2020): w^ = s * round(clip(w / s, -Qn, Qp)).

    Step s learned with gradient scale 1 / sqrt(N * Qp), init 2 mean|w| / sqrt(Qp); weight gradient is the
    clipped straight-through estimator. Odd v gives a symmetric grid (Qn = Qp = (v-1)/2), even v the
    two's-complement one (Qn = v/2, Qp = v/2 - 1).
    """

    custom_grad = True

    def __init__(self, levels: int) -> None:
        if levels < 3:
            raise ValueError("lsq needs levels >= 3 (Qp must be positive)")
        super().__init__(levels)
        self.qn, self.qp = levels // 2, (levels - 1) // 2
        self.step = nn.Parameter(torch.tensor(1.0))

    @torch.no_grad()
    def fit(self, w: Tensor) -> None:
        check_finite(w)
        self.step.fill_(2 * float(w.detach().abs().mean()) / math.sqrt(self.qp))
        self._sync_levels()

    def _sync_levels(self) -> None:
        grid = torch.arange(-self.qn, self.qp + 1, dtype=self.step.dtype, device=self.step.device)
        self.set_levels(self.step.detach() * grid)

    def quantize(self, w: Tensor) -> Tensor:
        g = 1.0 / math.sqrt(w.numel() * self.qp)
        step = self.step.to(w)
        step = step.detach() + (step * g - (step * g).detach())  # value: step; gradient: scaled by g
        x = (w / step).clamp(-self.qn, self.qp)
        self._sync_levels()
        return (x.round().detach() + (x - x.detach())) * step


def arctan_soft_round(x: Tensor, sharpness: float) -> Tensor:
    """ASR: floor(x) + 1/2 + atan(a (x - floor(x) - 1/2)) / (2 atan(a / 2)).

    Continuous, increasing by exactly 1 per unit (so its mean slope is STE's 1), slope > 0 everywhere (never a
    zero gradient), steepest at the rounding thresholds; round(x) as a -> inf, the identity as a -> 0.
    """
    base = torch.floor(x.detach())
    return base + 0.5 + torch.atan(sharpness * (x - base - 0.5)) / (2 * math.atan(sharpness / 2))


@register("lglsq")
class LGLSQ(Quantizer):
    """LG-LSQ (Lin et al., arXiv 2202.09009, 2022) for weights: w^ = s * clip-round(w / s) on a symmetric
    grid of v levels (integers for odd v, half-integers for even v, so 4 levels are s * {+-1/2, +-3/2}).

    The paper's equations are not available here; this follows its abstract, and each part is our reading:
    - ASR (arctangent soft round): the forward is the hard rounding; the backward uses the slope of
      `arctan_soft_round` (sharpness a, default 4) instead of STE's 1, up to the outer cells' far edges
      +-(Q + 1/2) s (so no weight that rounds to a level loses its gradient; LSQ cuts it at +-Q s), 0 beyond.
    - SSG (scaling simulated gradient): the step's gradient is that of s * ASR(clip(w / s)) with the hard
      value, i.e. round(x) - x ASR'(x) inside the range and +-Q beyond it (LSQ has round(x) - x), scaled
      by LSQ's g = 1 / sqrt(N Q).
    - MDE (minimise discretisation error): `fit` sets s to the minimiser of ||w - w^||^2 (a scan, as for
      `uniform`), not LSQ's 2 mean|w| / sqrt(Q).
    Simplifications: weights only (the paper also quantizes activations), one step per layer, fixed a.
    """

    custom_grad = True

    def __init__(self, levels: int, sharpness: float = 4.0) -> None:
        super().__init__(levels)
        if sharpness <= 0:
            raise ValueError(f"lglsq sharpness must be > 0, got {sharpness}")
        self.half = (levels - 1) / 2
        self.offset = 0.0 if levels % 2 else 0.5
        self.sharpness = sharpness
        self.step = nn.Parameter(torch.tensor(1.0))

    @torch.no_grad()
    def fit(self, w: Tensor) -> None:
        check_finite(w)
        cnt, s1, _ = atoms(w)
        amax = float(w.detach().abs().max())
        step = best_scale(cnt, s1 / cnt, uniform_grid(self.num_levels), top=amax / self.half) if amax else 1.0
        self.step.fill_(step)
        self._sync_levels()

    def _sync_levels(self) -> None:
        grid = torch.as_tensor(uniform_grid(self.num_levels), dtype=self.step.dtype, device=self.step.device)
        self.set_levels(self.step.detach() * grid)

    def quantize(self, w: Tensor) -> Tensor:
        g = 1.0 / math.sqrt(w.numel() * self.half)
        step = self.step.to(w)
        step = step.detach() + (step * g - (step * g).detach())  # value: step; gradient: scaled by g
        x = (w / step).clamp(-self.half - 0.5, self.half + 0.5) - self.offset
        hard = torch.round(x.detach()).clamp(-self.half - self.offset, self.half - self.offset)
        soft = arctan_soft_round(x, self.sharpness)
        self._sync_levels()
        return (hard + (soft - soft.detach()) + self.offset) * step
