"""`quantize_model(model, config)`: attach a quantizer and weight noise to every selected Conv/Linear layer.

One mechanism: a torch parametrization on `.weight`, so the float weights stay the trained parameters
(`parametrizations.weight.original`), every access of `.weight` returns the quantized (noisy) weights, and
any training loop (ours, mmengine's) works unchanged.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import quantizers
from .noise import GaussianNoise

LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
FIRST_LAST = ("quantize", "fp", "8bit")
NoiseFn = Callable[[Tensor, "torch.Generator | None"], Tensor]


@dataclass(frozen=True)
class QuantConfig:
    """Everything that decides how a model is quantized; one object, like torchao's configs.

    noise: NATS delta (sigma = noise * max|W_q|, fresh every training forward); noise_mean: device mean shift
    relative to max|W_q|; noise_fn: a custom noise model `(wq, generator) -> noise` (e.g. measured
    conductances) that replaces the Gaussian one. first_last: the paper's footnotes: "quantize" (no mark),
    "fp" (*, first and last layer stay float) or "8bit" (+, 255-level uniform, noise-free digital layers).
    include/exclude: fnmatch patterns on module names. refit_threshold: Algorithm 1's T (None: never re-fit);
    projection: "ratio" (<Wq,W>/||Wq||^2, the default: exactly 1 right after a Lloyd fit) or "cosine".
    """

    method: str = "lloyd"
    levels: int = 4
    noise: float = 0.0
    noise_mean: float = 0.0
    noise_fn: NoiseFn | None = None
    first_last: str = "quantize"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    quantizer_kwargs: dict = field(default_factory=dict)
    refit_threshold: float | None = 0.1
    projection: str = "ratio"

    def __post_init__(self) -> None:
        if self.first_last not in FIRST_LAST:
            raise ValueError(f"first_last must be one of {FIRST_LAST}, got {self.first_last!r}")
        if self.projection not in ("ratio", "cosine"):
            raise ValueError(f"projection must be 'ratio' or 'cosine', got {self.projection!r}")
        if self.noise < 0:
            raise ValueError(f"noise is a relative std and must be >= 0, got {self.noise}")
        if self.method not in quantizers.names():
            raise KeyError(f"unknown quantizer {self.method!r}; registered: {', '.join(quantizers.names())}")

    def noise_model(self) -> NoiseFn | None:
        if self.noise_fn is not None:
            return self.noise_fn
        model = GaussianNoise(self.noise, self.noise_mean)
        return model if model.active else None


class QuantizedWeight(nn.Module):
    """The parametrization: W -> quantizer(W) (+ noise in training, or in eval inside `weight_noise`)."""

    def __init__(self, quantizer: quantizers.Quantizer, noise: NoiseFn | None, config: QuantConfig) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.noise = noise
        self.refit_threshold = config.refit_threshold
        self.projection = config.projection
        self.register_buffer("refits", torch.zeros((), dtype=torch.long))
        self.eval_noise: tuple[NoiseFn | None, torch.Generator | None] | None = None

    def forward(self, w: Tensor) -> Tensor:
        wq = self.quantizer(w)
        if self.eval_noise is not None and not self.training:
            noise, generator = self.eval_noise
            return wq if noise is None else wq + noise(wq, generator)
        if self.training and self.noise is not None:
            return wq + self.noise(wq, None)
        return wq

    @torch.no_grad()
    def clean(self, w: Tensor) -> Tensor:
        """Noise-free quantized weights, without side effects on learned quantizer state."""
        was_training = self.quantizer.training
        self.quantizer.eval()
        try:
            return self.quantizer.quantize(w)
        finally:
            self.quantizer.train(was_training)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def quantize_model(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Quantize `model` in place and return it; each layer's quantizer is fitted on its current weights."""
    if quantized_layers(model):
        raise ValueError(
            "model is already quantized: call quantize_model once (export() gives plain weights)"
        )
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    if not layers:
        raise ValueError("model has no Conv or Linear layer to quantize")
    ends = {layers[0][0], layers[-1][0]}
    selected = 0
    for name, module in layers:
        if config.include and not _matches(name, config.include):
            continue
        if _matches(name, config.exclude):
            continue
        if name in ends and config.first_last == "fp":
            continue
        if name in ends and config.first_last == "8bit":
            quantizer, noise = quantizers.build("uniform_maxabs", levels=255), None
        else:
            quantizer = quantizers.build(config.method, levels=config.levels, **config.quantizer_kwargs)
            noise = config.noise_model()
        weight = module.weight.detach()
        quantizer.to(device=weight.device, dtype=weight.dtype)
        quantizer.fit(weight)
        parametrize.register_parametrization(module, "weight", QuantizedWeight(quantizer, noise, config))
        selected += 1
    if selected == 0:
        raise ValueError("no layer matched: check QuantConfig.include/exclude against model.named_modules()")
    return model


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module, QuantizedWeight]]:
    """(name, layer, parametrization) for every quantized layer, in module order."""
    out = []
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, QuantizedWeight):
                    out.append((name, module, p))
    return out


def float_weight(module: nn.Module) -> Tensor:
    """The trained float weights behind a quantized layer."""
    return module.parametrizations.weight.original


@torch.no_grad()
def export(model: nn.Module) -> nn.Module:
    """Replace every parametrization by a plain weight holding the noise-free quantized values (in place)."""
    for _, module, p in quantized_layers(model):
        wq = p.clean(float_weight(module))
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        module.weight.copy_(wq)
    return model
