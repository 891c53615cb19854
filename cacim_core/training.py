"""Training helpers: Algorithm 1's projection test (when to re-fit) and HA-SGD's averaged gradient."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .convert import float_weight, quantized_layers


def projection(wq: Tensor, w: Tensor, kind: str = "ratio") -> float:
    """Projection of W_q on W: <Wq,W>/||Wq||^2 ("ratio", 1 right after a Lloyd fit) or their cosine.

    The OCR garbles the paper's formula; "ratio" is the reading consistent with Lloyd (each level is the mean
    of its cell, so <Wq, W - Wq> = 0 at a fit); the cosine is < 1 even at a fresh ternary fit (~0.9).
    """
    wq, w = wq.detach().double().flatten(), w.detach().double().flatten()
    dot = float(wq @ w)
    if kind == "ratio":
        norm = float(wq @ wq)
        return dot / norm if norm > 0 else float("inf")
    if kind == "cosine":
        norm = float(wq.norm() * w.norm())
        return dot / norm if norm > 0 else 0.0
    raise ValueError(f"projection kind must be 'ratio' or 'cosine', got {kind!r}")


@torch.no_grad()
def refit_check(model: nn.Module, threshold: float | None = None) -> int:
    """Re-fit every layer whose |projection - 1| > T; returns how many were re-fitted. Call after each step.

    Applies to quantizers fitted from data (`refit_by_projection`: lloyd, uniform, log2); learned baselines
    (TTQ, LQ-Net, APoT, LSQ, He & Fan) follow their own update rules. `threshold` overrides the config's T.
    """
    count = 0
    for _, module, p in quantized_layers(model):
        limit = p.refit_threshold if threshold is None else threshold
        if limit is None or not p.quantizer.refit_by_projection:
            continue
        w = float_weight(module)
        if abs(projection(p.clean(w), w, p.projection) - 1) > limit:
            p.quantizer.fit(w)
            p.refits += 1
            count += 1
    return count


def refit_counts(model: nn.Module) -> dict[str, int]:
    """Re-fits per layer since quantize_model (the paper: from a pretrained model, usually none)."""
    return {name: int(p.refits) for name, _, p in quantized_layers(model)}


def ha_sgd_backward(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], samples: int = 1) -> float:
    """HA-SGD (the analog-NVM poster's Algorithm 1): accumulate into .grad the mean of `samples` gradients,
    each through a fresh weight-noise draw, on one mini-batch; returns the mean loss.

    Call between optimizer.zero_grad() and optimizer.step(); loss_fn(model) runs the forward on the batch.
    samples=1 is plain NATS. It minimises E_noise[J(w + noise)] with a gradient whose noise variance shrinks
    as 1/samples, at samples times the compute of a step. BatchNorm running statistics and LQ-Net's moving
    basis see every forward, as they would in `samples` ordinary steps.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not model.training:
        raise ValueError("ha_sgd_backward needs model.train(): eval-mode forwards draw no weight noise")
    total = 0.0
    for _ in range(samples):
        loss = loss_fn(model)
        (loss / samples).backward()
        total += float(loss.detach())
    return total / samples
