"""Training helpers: Algorithm 1's projection test (when to re-fit) and HA-SGD's averaged gradient."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .convert import float_weight, quantized_layers
from .quantizers.base import fit_checked


def projection_terms(wq: Tensor, w: Tensor) -> Tensor:
    """(<Wq,W>, ||Wq||^2, ||W||^2) as one float64 tensor on the weights' device, without a host sync.

    The dot products run in float32 (no float64 copy of the weights); only the three scalars are float64.
    """
    wq = wq.detach().flatten().float()
    w = w.detach().flatten().float()
    return torch.stack([wq @ w, wq @ wq, w @ w]).double()


def projection_from_terms(terms: Tensor, kind: str = "ratio") -> Tensor:
    """Projection of W_q on W from `projection_terms` (stacked: (..., 3)): ratio or cosine, vectorised."""
    dot, qq, ww = terms.unbind(-1)
    if kind == "ratio":
        return torch.where(qq > 0, dot / qq, torch.full_like(dot, float("inf")))
    if kind == "cosine":
        norm = (qq * ww).sqrt()
        return torch.where(norm > 0, dot / norm, torch.zeros_like(dot))
    raise ValueError(f"projection kind must be 'ratio' or 'cosine', got {kind!r}")


def projection(wq: Tensor, w: Tensor, kind: str = "ratio") -> float:
    """Projection of W_q on W: <Wq,W>/||Wq||^2 ("ratio", 1 right after a Lloyd fit) or their cosine.

    The OCR garbles the paper's formula; "ratio" is the reading consistent with Lloyd (each level is the mean
    of its cell, so <Wq, W - Wq> = 0 at a fit); the cosine is < 1 even at a fresh ternary fit (~0.9).
    """
    return float(projection_from_terms(projection_terms(wq, w), kind))


@torch.no_grad()
def refit_check(model: nn.Module, threshold: float | None = None) -> int:
    """Algorithm 1 after an optimizer step: re-fit every layer whose |projection - 1| > T; returns how many.

    First every quantizer's `after_step` runs (LQ-Net's moving basis). Then the projection test of all
    fitted quantizers that take it (`refit_by_projection`; learned ones never) is one batched reduction and
    one host sync, whatever the depth; it doubles as the training-time finite check (a NaN or inf weight
    raises, naming the layer). `threshold` overrides the config's T.
    """
    layers = quantized_layers(model)
    for _, module, p in layers:
        p.quantizer.after_step(float_weight(module))
    tested = [
        (name, module, p, p.refit_threshold if threshold is None else threshold)
        for name, module, p in layers
        if p.quantizer.kind == "fitted"
        and p.quantizer.refit_by_projection
        and (p.refit_threshold if threshold is None else threshold) is not None
    ]
    if not tested:
        return 0
    device = float_weight(tested[0][1]).device
    terms = torch.stack(
        [projection_terms(p.clean(float_weight(m)), float_weight(m)).to(device) for _, m, p, _ in tested]
    ).cpu()  # the one host sync; the test itself runs on the (layers, 3) scalars, on the host
    ratio, cosine = projection_from_terms(terms, "ratio"), projection_from_terms(terms, "cosine")
    is_ratio = torch.tensor([p.projection == "ratio" for _, _, p, _ in tested])
    limits = torch.tensor([limit for *_, limit in tested], dtype=torch.float64)
    fails = ((torch.where(is_ratio, ratio, cosine) - 1).abs() > limits).tolist()
    bad = (~torch.isfinite(terms).all(dim=1)).tolist()
    count = 0
    for (name, module, p, _), fail, non_finite in zip(tested, fails, bad, strict=True):
        if non_finite:
            raise ValueError(
                f"layer {name!r} has NaN or inf weights: lower the learning rate or clip gradients"
            )
        if fail:
            fit_checked(p.quantizer, float_weight(module), name)
            p.refits += 1
            count += 1
    return count


def refit(model: nn.Module) -> int:
    """Fit every fitted quantizer (lloyd, uniform, ...) on its layer's current float weights; returns how
    many. For an EMA copy before it is evaluated or saved: an EMA averages the float weights, and the level
    buffers too if it averages buffers (or keeps the copy's first levels if not), so its levels are not those
    of its own weights. Learned quantizers (LSQ, TTQ) are left alone: their parameters are averaged as any
    parameter. Not an Algorithm 1 re-fit: `refit_counts` does not count it."""
    fitted = [(n, m, p) for n, m, p in quantized_layers(model) if p.quantizer.kind == "fitted"]
    for name, module, p in fitted:
        fit_checked(p.quantizer, float_weight(module), name)
    return len(fitted)


def refit_counts(model: nn.Module) -> dict[str, int]:
    """Re-fits per layer since quantize_model (the paper: from a pretrained model, usually none)."""
    return {name: int(p.refits) for name, _, p in quantized_layers(model)}


def ha_sgd_backward(model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], samples: int = 1) -> float:
    """HA-SGD (the analog-NVM poster's Algorithm 1): accumulate into .grad the mean of `samples` gradients,
    each through a fresh weight-noise draw, on one mini-batch; returns the mean loss.

    Call between optimizer.zero_grad() and optimizer.step(); loss_fn(model) runs the forward on the batch.
    samples=1 is plain NATS. It minimises E_noise[J(w + noise)] with a gradient whose noise variance shrinks
    as 1/samples, at samples times the compute of a step. BatchNorm running statistics see every forward, as
    they would in `samples` ordinary steps; LQ-Net's moving basis moves once per step (`refit_check`).
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
