"""Mapping quantized weights onto memristor conductances (the paper's section 4.4).

Each weight is a differential pair G = G+ - G-; one device of the pair sits at the reference conductance
Gref and the other carries |G|: a positive weight puts Gref on the negative device, and vice versa.
Per layer the weights are normalised by max|W| and multiplied by the usable range g_max - g_ref.
The read-out side lives here too: a b-bit ADC that digitises each crossbar layer's output.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ConductanceMap:
    g_min: float = 2.1  # uS, lowest programmable conductance
    g_max: float = 17.85  # uS
    g_ref: float = 2.1  # uS, shared reference conductance of every pair

    def __post_init__(self) -> None:
        if not self.g_min <= self.g_ref < self.g_max:
            raise ValueError(f"need g_min <= g_ref < g_max, got {self.g_min}, {self.g_ref}, {self.g_max}")

    @property
    def scale(self) -> float:
        """Conductance of the largest |weight| (15.75 uS for the paper's device)."""
        return self.g_max - self.g_ref

    def differential(self, wq: Tensor, w_max: float | Tensor | None = None) -> Tensor:
        """G = wq / max|wq| * scale, in uS."""
        w_max = wq.abs().max() if w_max is None else w_max
        return wq / w_max * self.scale

    def pair(self, wq: Tensor, w_max: float | Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(G+, G-) in uS for each weight."""
        g = self.differential(wq, w_max)
        ref = torch.full_like(g, self.g_ref)
        return torch.where(g >= 0, ref + g, ref), torch.where(g >= 0, ref, ref - g)

    def to_weight(self, g_plus: Tensor, g_minus: Tensor, w_max: float | Tensor) -> Tensor:
        """Weights read back from a (possibly measured) pair of conductances."""
        return (g_plus - g_minus) / self.scale * w_max


class ADC(nn.Module):
    """A b-bit ADC on a crossbar layer's output: a symmetric uniform grid of 2^b - 1 codes over [-r, r].

    Mid-tread (zero is a code) like a signed integer ADC with its most negative code unused. The range r is
    calibrated (`calibrate_adc`) as the mean over batches of the `quantile` of |output|; outputs beyond it
    saturate. Straight-through gradient (identity), so a model can also be trained with its ADCs in place.
    The layer output includes its bias (with `bias_range_match` the bias is a crossbar column too).
    """

    def __init__(self, bits: int, quantile: float = 0.999) -> None:
        super().__init__()
        if bits < 2:
            raise ValueError(f"ADC bits must be >= 2 (a signed ADC), got {bits}")
        if not 0 < quantile <= 1:
            raise ValueError(f"ADC quantile must be in (0, 1], got {quantile}")
        self.bits, self.quantile = int(bits), quantile
        self.register_buffer("range", torch.zeros(()))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))
        self.observing = False

    @property
    def steps(self) -> int:
        """Positive codes: 2^(b-1) - 1."""
        return 2 ** (self.bits - 1) - 1

    @torch.no_grad()
    def observe(self, y: Tensor) -> None:
        """Fold one batch's |y| quantile into the running mean that sets the range."""
        a = y.detach().abs().flatten().float()
        if a.numel() > 1 << 24:  # torch.quantile's input limit: a fixed strided subsample
            a = a[:: a.numel() // (1 << 23) + 1]
        stat = torch.quantile(a, self.quantile).to(self.range)
        self.range.mul_(self.batches / (self.batches + 1)).add_(stat / (self.batches + 1))
        self.batches += 1

    def forward(self, y: Tensor) -> Tensor:
        if self.observing:
            self.observe(y)
            return y
        if self.batches == 0:
            raise RuntimeError(
                "ADC range is not calibrated: call cacim_core.device.calibrate_adc(model, batches) first"
            )
        r = self.range.to(y).clamp_min(torch.finfo(y.dtype).tiny)
        codes = torch.round(y.detach().clamp(-r, r) / r * self.steps)
        return y + (codes * (r / self.steps) - y).detach()

    def extra_repr(self) -> str:
        return f"bits={self.bits}, range={float(self.range):.4g}"


def _adc_hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    adc = module._modules.get("adc")
    return output if adc is None else adc(output)


def attach_adc(layer: nn.Module, bits: int | None, quantile: float = 0.999) -> None:
    """Put a fresh (uncalibrated) b-bit ADC on `layer`'s output, replacing any; bits=None removes it."""
    layer._modules.pop("adc", None)
    if bits is None:
        return
    layer.adc = ADC(bits, quantile).to(device=next(layer.parameters()).device)
    if _adc_hook not in layer._forward_hooks.values():
        layer.register_forward_hook(_adc_hook)


def set_adc(model: nn.Module, bits: int | None, quantile: float = 0.999) -> int:
    """Re-equip every analog quantized layer with a b-bit ADC (None: remove); returns how many layers."""
    layers = [m for m in model.modules() if any(getattr(p, "analog", False) for p in _params(m))]
    for layer in layers:
        attach_adc(layer, bits, quantile)
    return len(layers)


def _params(module: nn.Module) -> list[nn.Module]:
    """The weight parametrizations of a module (empty for plain layers), without importing convert."""
    plist = getattr(getattr(module, "parametrizations", None), "weight", None)
    return list(plist) if plist is not None else []


@torch.no_grad()
def calibrate_adc(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Set every ADC's range from the model's outputs on `batches` (inputs only), in eval mode, noise-free.

    Call after quantize_model (or set_adc) and again after training has moved the weights. Returns how many
    batches were seen; an empty iterable is an error, as an ADC without a range cannot convert.
    """
    adcs = [m for m in model.modules() if isinstance(m, ADC)]
    if not adcs:
        raise ValueError("model has no ADC: set QuantConfig.adc_bits or call cacim_core.device.set_adc")
    was_training = model.training
    model.eval()
    for adc in adcs:
        adc.range.zero_()
        adc.batches.zero_()
        adc.observing = True
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += 1
    finally:
        for adc in adcs:
            adc.observing = False
        model.train(was_training)
    if seen == 0:
        raise ValueError("calibrate_adc got no batches: pass a few input batches of the training data")
    return seen
