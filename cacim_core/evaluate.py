"""Monte-Carlo evaluation under weight noise: a draw is one programmed chip, fixed for the whole test set."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .convert import quantized_layers
from .noise import GaussianNoise


@contextlib.contextmanager
def weight_noise(
    model: nn.Module, delta: float | None = None, seed: int = 0, mean: float = 0.0
) -> Iterator[nn.Module]:
    """Within the block, eval-mode forwards see one seeded noise sample per quantized layer.

    delta=None uses each layer's own noise model (none if it was trained without noise); a number replaces it
    on every analog layer with Gaussian noise of that relative std and relative mean shift `mean` (a device
    drift; e.g. to test a noise-free-trained model under 2% noise shifted by +1%); digital 8-bit layers
    stay noise-free.
    Each layer draws from its own generator seeded by (seed, layer index), so the draw does not depend on
    the order layers run in; the noisy weights are computed once and cached for the whole block.
    """
    if delta is None and mean != 0:
        raise ValueError("weight_noise: a mean shift needs delta (pass delta=0.0 for a pure shift)")
    layers = quantized_layers(model)
    try:
        for index, (_, module, p) in enumerate(layers):
            if delta is None:
                noise = p.noise
            else:
                replacement = GaussianNoise(delta, mean)
                noise = replacement if replacement.active and p.analog else None
            device = module.parametrizations.weight.original.device
            generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + index)
            p.eval_noise = (noise, generator)
        with parametrize.cached():
            yield model
    finally:
        for _, _, p in layers:
            p.eval_noise = None


@dataclass
class NoisyResult:
    mean: dict[str, float]
    std: dict[str, float]
    values: dict[str, list[float]]


def noisy_evaluate(
    model: nn.Module,
    metric_fn: Callable[[nn.Module], float | dict[str, float]],
    draws: int = 5,
    seed: int = 0,
    delta: float | None = None,
    mean: float = 0.0,
) -> NoisyResult:
    """Mean and sample std (ddof=1) of metric_fn(model) over `draws` seeded noise draws, in eval mode.

    delta and mean as in `weight_noise`. Without any active noise every draw is identical, so the metric is
    computed once (std 0).
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if delta is None:
        noisy = any(p.noise is not None for _, _, p in quantized_layers(model))
    else:
        noisy = GaussianNoise(delta, mean).active
    was_training = model.training
    model.eval()
    values: dict[str, list[float]] = {}
    try:
        with torch.no_grad():
            for draw in range(draws if noisy else 1):
                with weight_noise(model, delta, seed + draw, mean):
                    out = metric_fn(model)
                for key, value in (out if isinstance(out, dict) else {"value": out}).items():
                    values.setdefault(key, []).append(float(value))
    finally:
        model.train(was_training)
    mean = {k: sum(v) / len(v) for k, v in values.items()}
    std = {
        k: math.sqrt(sum((x - mean[k]) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
        for k, v in values.items()
    }
    return NoisyResult(mean, std, values)
