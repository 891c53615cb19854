"""Multi-level baselines with learned parameters: LQ-Net, APoT, LSQ, LG-LSQ (weights only)."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from .base import LearnedQuantizer, Quantizer, check_weights, nearest, register, work_dtype
from .grid import best_scale, uniform_grid
from .lloyd import atoms

NORM_PPF_0_75 = 0.6745  # the official LQ-Nets constant: the 75% quantile of N(0, 1)


@register("lqnet")
class LQNet(Quantizer):
    """LQ-Nets (Zhang et al., 2018), weights: levels {B v : B in {-1, +1}^K}, one basis v per output channel.

    As the official code (microsoft/LQ-Nets, `learned_quantization.py: QuantizedWeight`): per output channel
    (`per_channel=False`: one basis per layer, our earlier simplification), init v_j = 2^j * 0.6745 *
    sqrt(2 / n) / 2^(K-1) with n = k*k*C_out (`init="qem"`: then QEM to convergence on the weights), basis
    fitted by QEM, not by gradient: after every optimizer step (`after_step`, called by `refit_check`)
    v* = (B^T B + 1e-4 I)^-1 (B^T w + 1e-4 v) and v <- 0.9 v + 0.1 v*. The official graph updates v after the
    forward that used it, on that forward's weights; here it is updated on the weights after the step, which
    the next forward uses (one weight update apart). Identity straight-through gradient.
    Fitted kind with its own update rule: Algorithm 1 does not re-fit it. `levels`: (channels, 2^K).
    """

    refit_by_projection = False

    def __init__(
        self,
        levels: int,
        ridge: float = 1e-4,
        momentum: float = 0.9,
        per_channel: bool = True,
        init: str = "official",
    ) -> None:
        bits = round(math.log2(levels))
        if 2**bits != levels:
            raise ValueError(
                f"lqnet has 2^K levels (4, 8, ...): got {levels}; for 3 levels use ttq/twn/hefan"
            )
        if init not in ("official", "qem"):
            raise ValueError(f"lqnet init must be 'official' or 'qem', got {init!r}")
        super().__init__(levels)
        self.bits, self.ridge, self.momentum = bits, ridge, momentum
        self.per_channel, self.init = per_channel, init
        self.register_buffer("basis", torch.zeros(0, bits))
        self.register_buffer("codes", torch.tensor(list(itertools.product([-1.0, 1.0], repeat=bits))))

    @property
    def levels(self) -> Tensor:
        """(channels, 2^K) levels, sorted along the last dimension (channels = 1 if not per channel)."""
        return self._levels

    @property
    def edges(self) -> Tensor:
        return self._edges

    @property
    def fitted(self) -> bool:
        return self.basis.numel() > 0

    def _rows(self, w: Tensor) -> Tensor:
        """The weights as (channels, weights per channel), in a dtype fit for the solve."""
        x = w.detach().to(work_dtype(w.dtype))
        return x.reshape(x.shape[0], -1) if self.per_channel and x.dim() > 1 else x.reshape(1, -1)

    def _assign(self, rows: Tensor) -> Tensor:
        """Index of the nearest code per weight, (channels, n)."""
        values = self.basis.to(rows) @ self.codes.to(rows).T  # (C, L)
        sorted_values, order = values.sort(dim=1)
        edges = (sorted_values[:, 1:] + sorted_values[:, :-1]) / 2
        return order.gather(1, torch.searchsorted(edges.contiguous(), rows.contiguous()))

    def _qem_target(self, rows: Tensor) -> Tensor:
        """One QEM step per channel: v* = (B^T B + ridge I)^-1 (B^T w + ridge v), by sums per code."""
        channels, count_levels = rows.shape[0], len(self.codes)
        idx = self._assign(rows)
        count = torch.zeros(channels, count_levels, dtype=rows.dtype, device=rows.device)
        total = torch.zeros_like(count)
        count.scatter_add_(1, idx, torch.ones_like(rows))
        total.scatter_add_(1, idx, rows)
        codes = self.codes.to(torch.float64)
        btb = torch.einsum("lk,cl,lj->ckj", codes, count.double(), codes)
        btw = total.double() @ codes
        eye = torch.eye(self.bits, dtype=torch.float64, device=rows.device)
        rhs = btw + self.ridge * self.basis.double()
        solution, _ = torch.linalg.solve_ex(btb + self.ridge * eye, rhs)  # solve_ex: no host sync for checks
        return solution.to(self.basis.dtype)

    def _sync_levels(self) -> None:
        values, _ = (self.basis @ self.codes.T).sort(dim=1)
        self._levels = values
        self._edges = (values[:, 1:] + values[:, :-1]) / 2

    @torch.no_grad()
    def fit(self, w: Tensor, iters: int = 100) -> None:
        check_weights(w)
        rows = self._rows(w)
        fan = w.numel() / w.shape[1] if w.dim() > 1 else w.numel()  # official n = k * k * C_out
        base = NORM_PPF_0_75 * math.sqrt(2.0 / fan) / 2 ** (self.bits - 1)
        init = base * 2.0 ** torch.arange(self.bits, dtype=torch.float64)
        self.basis = init.to(device=w.device, dtype=self._levels.dtype).repeat(rows.shape[0], 1)
        if self.init == "qem":
            for _ in range(iters):
                new = self._qem_target(rows)
                done = torch.allclose(new, self.basis, rtol=1e-7, atol=0)
                self.basis = new
                if done:
                    break
        self._sync_levels()

    @torch.no_grad()
    def after_step(self, w: Tensor) -> None:
        target = self._qem_target(self._rows(w))
        self.basis.mul_(self.momentum).add_((1 - self.momentum) * target)
        self._sync_levels()

    def quantize(self, w: Tensor) -> Tensor:
        rows = w.reshape(self._levels.shape[0], -1)
        levels, edges = self._levels.to(w), self._edges.to(w)
        idx = torch.searchsorted(edges.contiguous(), rows.contiguous())
        return levels.gather(1, idx).reshape(w.shape)


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
class APoT(LearnedQuantizer):
    """Additive Powers-of-Two (Li et al., 2020), weights, as the official code (yhhhli/APoT_Quantization).

    b bits give 2^b - 1 levels, so `levels` v uses b = floor(log2(v + 1)): v=3 and v=4 -> uniform ternary
    (their "2-bit"; `effective_levels` is 3), v=7 and v=8 -> 7 APoT levels. Weights are standardised with
    detached mean and std, clipped at the learned alpha (init 3.0) and snapped to alpha * {+-APoT}; alpha's
    gradient is sign(x) beyond the clip and q - x inside; its learning rate is 0.2x the weights' (official
    CIFAR `main.py`: 2e-2 vs 0.1). Weight gradient: at 2 bits not clipped (both official 2-bit paths); above
    2 bits zero outside +-alpha (the ImageNet `apot_quantization`; their CIFAR `_pq` never clips).
    Simplification: the result is scaled back by the std (the official code returns the standardised
    weights, relying on the next BN). q(q(w)) != q(w) in general.
    """

    idempotent = False
    lr_scale = 0.2

    def __init__(self, levels: int) -> None:
        super().__init__(levels)
        self.bits = int(math.floor(math.log2(levels + 1)))
        mags = apot_magnitudes(self.bits)
        self.register_buffer("grid", torch.cat([-mags.flip(0)[:-1], mags]))
        self.effective_levels = len(self.grid)
        self.own_weight_grad = self.bits > 2
        self.alpha = nn.Parameter(torch.tensor(3.0))

    def init_from(self, w: Tensor) -> None:
        self.alpha.fill_(3.0)

    def statistics(self, w: Tensor) -> Tensor:
        x = w.detach().to(work_dtype(w.dtype))
        return torch.stack([x.mean(), x.std().clamp_min(1e-12)])

    def levels_for(self, stats: Tensor) -> tuple[Tensor, Tensor]:
        std, alpha = stats[1], self.alpha.to(stats)
        levels = std * alpha * self.grid.to(stats)
        return levels, (levels[1:] + levels[:-1]) / 2

    def quantize(self, w: Tensor) -> Tensor:
        wc = w.to(work_dtype(w.dtype))
        mean, std = self.statistics(wc)
        alpha = self.alpha.to(wc)
        x = ((wc - mean) / std / alpha).clamp(-1, 1)
        snapped = nearest(x.detach(), self.grid.to(wc))
        return (std * alpha * (snapped + (x - x.detach()))).to(w.dtype)


@register("lsq")
class LSQ(LearnedQuantizer):
    """Learned Step Size Quantization (Esser et al., 2020): w^ = s * round(clip(w / s, -Qn, Qp)).

    Step s learned with gradient scale 1 / sqrt(N * Qp), init 2 mean|w| / sqrt(Qp); weight gradient is the
    clipped straight-through estimator. Odd v gives a symmetric grid (Qn = Qp = (v-1)/2), even v the
    two's-complement one (Qn = v/2, Qp = v/2 - 1).
    """

    own_weight_grad = True

    def __init__(self, levels: int) -> None:
        if levels < 3:
            raise ValueError("lsq needs levels >= 3 (Qp must be positive)")
        super().__init__(levels)
        self.qn, self.qp = levels // 2, (levels - 1) // 2
        self.step = nn.Parameter(torch.tensor(1.0))

    def init_from(self, w: Tensor) -> None:
        self.step.fill_(2 * float(w.to(work_dtype(w.dtype)).abs().mean()) / math.sqrt(self.qp))

    def levels_for(self, stats: Tensor) -> tuple[Tensor, Tensor]:
        step = self.step.to(work_dtype(self.step.dtype))
        levels = step * torch.arange(-self.qn, self.qp + 1, dtype=step.dtype, device=step.device)
        return levels, (levels[1:] + levels[:-1]) / 2

    def quantize(self, w: Tensor) -> Tensor:
        wc = w.to(work_dtype(w.dtype))
        g = 1.0 / math.sqrt(w.numel() * self.qp)
        step = self.step.to(wc)
        step = step.detach() + (step * g - (step * g).detach())  # value: step; gradient: scaled by g
        x = (wc / step).clamp(-self.qn, self.qp)
        return ((x.round().detach() + (x - x.detach())) * step).to(w.dtype)


def arctan_soft_round(x: Tensor, sharpness: float) -> Tensor:
    """ASR: floor(x) + 1/2 + atan(a (x - floor(x) - 1/2)) / (2 atan(a / 2)).

    Continuous, increasing by exactly 1 per unit (so its mean slope is STE's 1), slope > 0 everywhere (never a
    zero gradient), steepest at the rounding thresholds; round(x) as a -> inf, the identity as a -> 0.
    """
    base = torch.floor(x.detach())
    return base + 0.5 + torch.atan(sharpness * (x - base - 0.5)) / (2 * math.atan(sharpness / 2))


@register("lglsq")
class LGLSQ(LearnedQuantizer):
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

    own_weight_grad = True

    def __init__(self, levels: int, sharpness: float = 4.0) -> None:
        super().__init__(levels)
        if sharpness <= 0:
            raise ValueError(f"lglsq sharpness must be > 0, got {sharpness}")
        self.half = (levels - 1) / 2
        self.offset = 0.0 if levels % 2 else 0.5
        self.sharpness = sharpness
        self.step = nn.Parameter(torch.tensor(1.0))

    def init_from(self, w: Tensor) -> None:
        cnt, s1, _ = atoms(w)
        amax = float(w.abs().max())
        step = best_scale(cnt, s1 / cnt, uniform_grid(self.num_levels), top=amax / self.half) if amax else 1.0
        self.step.fill_(step)

    def levels_for(self, stats: Tensor) -> tuple[Tensor, Tensor]:
        step = self.step.to(work_dtype(self.step.dtype))
        levels = step * torch.as_tensor(uniform_grid(self.num_levels), dtype=step.dtype, device=step.device)
        return levels, (levels[1:] + levels[:-1]) / 2

    def quantize(self, w: Tensor) -> Tensor:
        wc = w.to(work_dtype(w.dtype))
        g = 1.0 / math.sqrt(w.numel() * self.half)
        step = self.step.to(wc)
        step = step.detach() + (step * g - (step * g).detach())  # value: step; gradient: scaled by g
        x = (wc / step).clamp(-self.half - 0.5, self.half + 0.5) - self.offset
        hard = torch.round(x.detach()).clamp(-self.half - self.offset, self.half - self.offset)
        soft = arctan_soft_round(x, self.sharpness)
        return ((hard + (soft - soft.detach()) + self.offset) * step).to(w.dtype)
