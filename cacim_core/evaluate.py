"""Monte-Carlo evaluation under weight noise: a draw is one programmed chip, fixed for the whole test set."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from . import noise as noises
from .convert import float_weight, quantized_layers
from .noise import NoiseModel

OWN = None  # `noise=None`: each layer keeps the noise model it was quantized with


def resolve(noise: object = OWN) -> tuple[bool, NoiseModel | None]:
    """(replace the layers' own noise?, the replacement): `noise=None` keeps each layer's own noise model,
    any other spec (`cacim_core.noise.parse`) is parsed once here and replaces it."""
    if noise is None:
        return False, None
    return True, noises.parse(noise)


def chip_key(seed: int, draw: int, layer: int) -> int:
    """The generator seed of one layer of one programmed chip: a hash of (seed, draw, layer).

    Keys such as `seed + draw` made seed 1's chips 1-5 overlap seed 0's 0-4, so intervals over seeds were
    too narrow; numpy's SeedSequence mixes the three integers into independent 63-bit keys.
    """
    if min(seed, draw, layer) < 0:
        raise ValueError(f"seed, draw and layer must be >= 0, got {seed}, {draw}, {layer}")
    return int(np.random.SeedSequence((seed, draw, layer)).generate_state(1, np.uint64)[0] >> np.uint64(1))


@contextlib.contextmanager
def weight_noise(
    model: nn.Module,
    noise: object = OWN,
    seed: int = 0,
    *,
    draw: int = 0,
) -> Iterator[nn.Module]:
    """Within the block, eval-mode forwards see one seeded noise sample per quantized layer (one chip).

    noise=None uses each layer's own noise model (none if it was trained without noise); any other spec
    (`cacim_core.noise.parse`: 0 for noise-free, a delta, "pcm:t=86400", a noise object, ...) replaces it on
    every analog layer; digital 8-bit layers stay noise-free.
    Chip `draw` of training seed `seed`: each layer draws from its own generator keyed by
    `chip_key(seed, draw, layer index)`, so the draw does not depend on the order layers run in and no two
    (seed, draw) pairs share a chip; the noisy weights are computed once and cached for the whole block.
    """
    replace, replacement = resolve(noise)
    layers = quantized_layers(model)
    if replace and replacement is not None and getattr(replacement, "input_bits", None) is not None:
        if not any(hasattr(module, "dac") for _, module, p in layers if p.analog):
            raise ValueError(
                f"noise {replacement.spec!r} has an input DAC but the model has none: call "
                "cacim_core.device.set_adc(model, bits or None), then calibrate_adc(model, batches)"
            )
    try:
        for index, (_, module, p) in enumerate(layers):
            layer_noise = (replacement if p.analog else None) if replace else p.noise
            device = float_weight(module).device
            generator = torch.Generator(device=device).manual_seed(chip_key(seed, draw, index))
            p.eval_noise = (layer_noise, generator)
        with parametrize.cached():
            yield model
    finally:
        for _, _, p in layers:
            p.eval_noise = None


@dataclass
class NoisyResult:
    """Per metric: mean and sample std over `n` draws (programmed chips), and the draws' values."""

    mean: dict[str, float]
    std: dict[str, float]
    values: dict[str, list[float]]
    n: int


def noisy_evaluate(
    model: nn.Module,
    metric_fn: Callable[[nn.Module], float | dict[str, float]],
    draws: int = 5,
    seed: int = 0,
    noise: object = OWN,
) -> NoisyResult:
    """Mean and sample std (ddof=1) of metric_fn(model) over `draws` seeded noise draws, in eval mode.

    noise as in `weight_noise`, parsed once here. Without any
    active noise every draw is identical, so the metric is computed once (std 0, n 1).
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1 (programmed chips), got {draws!r}")
    replace, replacement = resolve(noise)
    if replace:
        noisy = replacement is not None
    else:
        noisy = any(p.noise is not None for _, _, p in quantized_layers(model))
    spec = (0.0 if replacement is None else replacement) if replace else OWN  # parsed: pass the object
    was_training = model.training
    model.eval()
    values: dict[str, list[float]] = {}
    try:
        with torch.no_grad():
            for draw in range(draws if noisy else 1):
                with weight_noise(model, spec, seed, draw=draw):
                    out = metric_fn(model)
                for key, value in (out if isinstance(out, dict) else {"value": out}).items():
                    values.setdefault(key, []).append(float(value))
    finally:
        model.train(was_training)
    means = {k: sum(v) / len(v) for k, v in values.items()}
    std = {
        k: math.sqrt(sum((x - means[k]) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
        for k, v in values.items()
    }
    return NoisyResult(means, std, values, n=draws if noisy else 1)
