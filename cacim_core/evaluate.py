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
def weight_noise(model: nn.Module, delta: float | None = None, seed: int = 0) -> Iterator[nn.Module]:
    """Within the block, eval-mode forwards see one seeded noise sample per quantized layer.

    delta=None uses each layer's own noise model (none if it was trained without noise); a number replaces it
    with Gaussian noise of that relative std (e.g. to test a noise-free-trained model under 2% noise).
    Each layer draws from its own generator seeded by (seed, layer index), so the draw does not depend on
    the order layers run in; the noisy weights are computed once and cached for the whole block.
    """
    layers = quantized_layers(model)
    try:
        for index, (_, module, p) in enumerate(layers):
            if delta is None:
                noise = p.noise
            else:
                noise = GaussianNoise(delta) if delta > 0 else None
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
) -> NoisyResult:
    """Mean and sample std (ddof=1) of metric_fn(model) over `draws` seeded noise draws, in eval mode.

    Without any active noise every draw is identical, so the metric is computed once (std 0).
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    noisy = any(p.noise is not None for _, _, p in quantized_layers(model)) if delta is None else delta > 0
    was_training = model.training
    model.eval()
    values: dict[str, list[float]] = {}
    try:
        with torch.no_grad():
            for draw in range(draws if noisy else 1):
                with weight_noise(model, delta, seed + draw):
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
