"""Ternary baselines: TTQ, TWN and He & Fan's truncated-Gaussian ternary (weights only).

All three recompute their threshold from the weights in every forward, so they are the learned kind: levels
a read-only function of the parameters and of the weights' statistics (`levels` reports them for the
weights of the last `fit`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import LearnedQuantizer, register, work_dtype


def _require_three(name: str, levels: int) -> None:
    if levels != 3:
        raise ValueError(f"{name} is a ternary method: use levels=3 (got {levels})")


def _ternary(neg: Tensor, pos: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    return torch.stack([-neg, torch.zeros_like(pos), pos]).flatten(), torch.stack([lo, hi]).flatten()


@register("ttq")
class TTQ(LearnedQuantizer):
    """Trained Ternary Quantization (Zhu et al., 2016): levels {-Wn, 0, +Wp} with learned Wp, Wn.

    As the official code (czhu95/ternarynet, `ternary.py: tw_ternarize`): threshold 0.05 * max|w| on the raw
    weights; Wp and Wn in the weights' raw units; dL/dWp = sum of g over the positive set, dL/dWn = minus the
    sum over the negative set; the float weights get g * Wp (resp. Wn) outside the zero band and g inside
    it. Simplification: Wp and Wn start at the mean of the kept positive / negative weights, not at 1.0.
    """

    own_weight_grad = True

    def __init__(self, levels: int = 3, threshold: float = 0.05) -> None:
        _require_three("ttq", levels)
        super().__init__(levels)
        self.threshold = threshold
        self.wp = nn.Parameter(torch.tensor(1.0))
        self.wn = nn.Parameter(torch.tensor(1.0))

    def init_from(self, w: Tensor) -> None:
        w = w.to(work_dtype(w.dtype))
        amax = w.abs().max()
        pos, neg = w[w > self.threshold * amax], -w[w < -self.threshold * amax]
        self.wp.fill_(pos.mean() if pos.numel() else amax)
        self.wn.fill_(neg.mean() if neg.numel() else amax)

    def statistics(self, w: Tensor) -> Tensor:
        return w.detach().to(work_dtype(w.dtype)).abs().max().reshape(1)

    def levels_for(self, stats: Tensor) -> tuple[Tensor, Tensor]:
        delta = self.threshold * stats[0]
        return _ternary(self.wn.to(stats), self.wp.to(stats), -delta, delta)

    def quantize(self, w: Tensor) -> Tensor:
        wc = w.to(work_dtype(w.dtype))
        delta = self.threshold * wc.detach().abs().max()
        pos, neg = (wc > delta).to(wc), (wc < -delta).to(wc)
        wp, wn = self.wp.to(wc), self.wn.to(wc)
        out = wp * pos - wn * neg
        scale = wp.detach() * pos + wn.detach() * neg + (1 - pos - neg)
        return (out + (scale * wc - (scale * wc).detach())).to(w.dtype)


@register("twn")
class TWN(LearnedQuantizer):
    """Ternary Weight Networks (Li et al., 2016): threshold 0.7 * mean|w|, scale = mean |w| of kept weights.

    Identity straight-through gradient, no clipping, scale not learned (as the paper and caffe-twns): no
    parameters, the levels follow the weights.
    """

    def __init__(self, levels: int = 3) -> None:
        _require_three("twn", levels)
        super().__init__(levels)

    def statistics(self, w: Tensor) -> Tensor:
        """(delta, alpha) without a host sync: alpha is a masked mean, 0 if nothing is kept."""
        a = w.detach().to(work_dtype(w.dtype)).abs()
        delta = 0.7 * a.mean()
        kept = (a > delta).to(a)
        return torch.stack([delta, (a * kept).sum() / kept.sum().clamp_min(1)])

    def levels_for(self, stats: Tensor) -> tuple[Tensor, Tensor]:
        delta, alpha = stats
        return _ternary(alpha, alpha, -delta, delta)

    def quantize(self, w: Tensor) -> Tensor:
        delta, alpha = self.statistics(w)
        wc = w.to(delta.dtype)
        return (alpha * torch.sign(wc) * (wc.abs() > delta)).to(w.dtype)


@register("hefan")
class HeFan(LearnedQuantizer):
    """He & Fan (2019) ternary: thresholds mu +- Delta, level alpha = mean of N(mu, sigma^2) above mu + Delta.

    Delta = min(|delta|, 3 sigma) with delta learned (init 0.05 * max|w|), mu and sigma the layer's mean and
    std recomputed every forward (so q(q(w)) != q(w) in general); the 3 sigma bound is a constant, no gradient
    flows through it (hardtanh with `.item()` bounds in the official code). Gradient: identity to the
    weights (their "gradient correctness", dW^/dW = 1) plus the paths through mu and sigma in alpha; delta
    learns through alpha only, its gradient clamped to +-`grad_clip` as the official training script
    (`main_dc.py`) does, and without weight decay (its own optimizer there). Without that clamp the last
    layer's delta ran to the 3 sigma ceiling within 3 proxy epochs (larger alpha means larger logits, which
    lowers cross-entropy), zeroing 99% of the classifier (gap 44 pt vs 2.6 with first/last in float).
    Spec: the first author's `tern_threshold_trainable_5.py` (elliothe/tern_repo).
    """

    own_weight_grad = True
    idempotent = False
    weight_decay = 0.0

    def __init__(self, levels: int = 3, grad_clip: float = 1e-3) -> None:
        _require_three("hefan", levels)
        super().__init__(levels)
        self.grad_clip = grad_clip
        self.delta = nn.Parameter(torch.tensor(0.0))

    def init_from(self, w: Tensor) -> None:
        self.delta.fill_(0.05 * w.to(work_dtype(w.dtype)).abs().max())

    def statistics(self, w: Tensor) -> Tensor:
        x = w.detach().to(work_dtype(w.dtype))
        return torch.stack([x.mean(), x.std().clamp_min(1e-12)])

    def _alpha(self, mu: Tensor, sigma: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
        """(Delta, alpha): the capped threshold and the truncated-Gaussian mean above mu + Delta."""
        big = delta.abs().clamp(max=3 * sigma.detach())
        z = big / sigma
        pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return big, mu + sigma * pdf / torch.special.ndtr(-z)

    def levels_for(self, stats: Tensor) -> tuple[Tensor, Tensor]:
        mu, sigma = stats
        big, alpha = self._alpha(mu, sigma, self.delta.to(stats))
        return _ternary(alpha, alpha, mu - big, mu + big)

    def quantize(self, w: Tensor) -> Tensor:
        wc = w.to(work_dtype(w.dtype))
        mu, sigma = wc.mean(), wc.std().clamp_min(1e-12)
        delta = self.delta.to(wc).clone()  # a fresh node per forward: the hook must not pile up on the leaf
        if delta.requires_grad:
            delta.register_hook(lambda g: g.clamp(-self.grad_clip, self.grad_clip))
        big, alpha = self._alpha(mu, sigma, delta)
        ternary = ((wc > mu + big).to(wc) - (wc < mu - big).to(wc)).detach()
        return (alpha * ternary + (wc - wc.detach())).to(w.dtype)
