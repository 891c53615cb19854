"""Mapping quantized weights onto memristor conductances (the paper's section 4.4).

Each weight is a differential pair G = G+ - G-; one device of the pair sits at the reference conductance
Gref and the other carries |G|: a positive weight puts Gref on the negative device, and vice versa.
Per layer the weights are normalised by max|W| and multiplied by the usable range g_max - g_ref.
The read-out side lives here too: a b-bit ADC that digitises each crossbar layer's output. Large layers
are split into crossbar tiles (`QuantConfig.tile`, or `set_tile` on a quantized model): each tile has its
own conductance scale (its noise is drawn with the tile's max|W_q|, `tiled_noise`) and its own ADC on its
partial sums, added digitally.
The write-in side too: a DAC on each analog layer's input (`DAC`), whose bits come from the active noise
spec's "dac:bits=b" part (`cacim_core.circuit.DACInput`) and whose range `calibrate_adc` sets with the ADCs'.
Also here: the `stuck` noise model (cells stuck at G_min or G_max).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .noise import NoiseModel, register

if TYPE_CHECKING:
    from .convert import QuantizedWeight

Tile = tuple[int, int]


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

    def to_weight(self, g_plus: Tensor, g_minus: Tensor | float, w_max: float | Tensor) -> Tensor:
        """Weights read back from a (possibly measured) pair of conductances."""
        return (g_plus - g_minus) / self.scale * w_max


@register("stuck")
@dataclass(frozen=True)
class StuckNoise(NoiseModel):
    """Stuck cells: each device of each differential pair is stuck at g_min with probability `gmin`, at
    g_max with probability `gmax` (independently per device, one draw per programmed chip), else it holds
    its programmed conductance (`ConductanceMap.pair`). A device meant to sit at g_ref = g_min and stuck
    there is harmless; one stuck at g_max turns its weight into a full-scale error.
    """

    gmin: float = 0.0
    gmax: float = 0.0
    device: ConductanceMap = field(default=ConductanceMap(), metadata={"spec": False})

    def __post_init__(self) -> None:
        if not (0 <= self.gmin <= 1 and 0 <= self.gmax <= 1 and self.gmin + self.gmax <= 1):
            raise ValueError(
                f"stuck: fractions gmin={self.gmin}, gmax={self.gmax} must be in [0, 1], sum <= 1"
            )

    @property
    def active(self) -> bool:
        return self.gmin > 0 or self.gmax > 0

    def masks(
        self, shape: torch.Size, generator: torch.Generator | None, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """(stuck at g_min, stuck at g_max) for the (2, *shape) devices, G+ then G-: one uniform each."""
        u = torch.rand((2, *shape), generator=generator, device=device, dtype=torch.float64)
        return u < self.gmin, (u >= self.gmin) & (u < self.gmin + self.gmax)

    @torch.no_grad()
    def __call__(self, wq: Tensor, generator: torch.Generator | None = None) -> Tensor:
        w = wq.detach()
        w_max = w.abs().max()
        if w_max == 0:
            return torch.zeros_like(w)
        g = torch.stack(self.device.pair(w, w_max))
        low, high = self.masks(w.shape, generator, w.device)
        g = torch.where(low, torch.full_like(g, self.device.g_min), g)
        g = torch.where(high, torch.full_like(g, self.device.g_max), g)
        return self.device.to_weight(g[0], g[1], w_max) - w


class ADC(nn.Module):
    """A b-bit ADC on a crossbar layer's output: a symmetric uniform grid of 2^b - 1 codes over [-r, r].

    Mid-tread (zero is a code) like a signed integer ADC with its most negative code unused. The range r is
    calibrated (`calibrate_adc`) as the mean over batches of the `quantile` of |output|; outputs beyond it
    saturate. Straight-through gradient (identity), so a model can also be trained with its ADCs in place.
    The layer output includes its bias (with `bias_range_match` the bias is a crossbar column too).
    """

    range: Tensor
    batches: Tensor

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
        #: a host-side copy of "batches > 0", so that a forward reads no device value (no host sync on a GPU)
        self.calibrated = False
        self.register_load_state_dict_post_hook(_loaded_calibration)

    @property
    def steps(self) -> int:
        """Positive codes: 2^(b-1) - 1."""
        return 2 ** (self.bits - 1) - 1

    @torch.no_grad()
    def observe(self, y: Tensor) -> None:
        _fold_range(self, y)

    def forward(self, y: Tensor) -> Tensor:
        if self.observing:
            self.observe(y)
            return y
        if not self.calibrated:
            raise RuntimeError(
                "ADC range is not calibrated: call cacim_core.device.calibrate_adc(model, batches) first"
            )
        r = self.range.to(y).clamp_min(torch.finfo(y.dtype).tiny)
        codes = torch.round(y.detach().clamp(-r, r) / r * self.steps)
        return y + (codes * (r / self.steps) - y).detach()

    def extra_repr(self) -> str:
        return f"bits={self.bits}, range={float(self.range):.4g}"


@torch.no_grad()
def _fold_range(converter: ADC | DAC, x: Tensor) -> None:
    """Fold one batch's |x| quantile into the running mean that sets an ADC's or a DAC's range."""
    a = x.detach().abs().flatten().float()
    if a.numel() > 1 << 24:  # torch.quantile's input limit: a fixed strided subsample
        a = a[:: a.numel() // (1 << 23) + 1]
    stat = torch.quantile(a, converter.quantile).to(converter.range)
    n = converter.batches
    converter.range.mul_(n / (n + 1)).add_(stat / (n + 1))
    converter.batches += 1
    converter.calibrated = True


def _loaded_calibration(module: nn.Module, incompatible_keys: object) -> None:
    batches = cast(Tensor, module.batches)
    module.__dict__["calibrated"] = bool(batches > 0)  # a checkpoint's ADC brings its range


class DAC(nn.Module):
    """The input DAC of an analog layer: a uniform grid over a calibrated range, straight-through gradient.

    The range r is calibrated like the ADC's (mean over batches of the `quantile` of |x|); inputs that were
    all >= 0 in calibration (after a ReLU) get the unsigned grid of 2^b codes on [0, r] (step r / (2^b - 1)),
    others the signed mid-tread grid of 2^(b-1) - 1 codes each side of 0 on [-r, r] (like `ADC`); beyond
    the range an input saturates. The bits are given per call (the active noise spec's DAC part), so one
    calibration serves every DAC resolution of a sweep. Buffers are not persistent: recalibrate after load.
    """

    range: Tensor
    low: Tensor
    batches: Tensor

    def __init__(self, quantile: float = 0.999) -> None:
        super().__init__()
        if not 0 < quantile <= 1:
            raise ValueError(f"DAC quantile must be in (0, 1], got {quantile}")
        self.quantile = quantile
        self.register_buffer("range", torch.zeros(()), persistent=False)
        self.register_buffer("low", torch.zeros(()), persistent=False)  # smallest input seen
        self.register_buffer("batches", torch.zeros((), dtype=torch.long), persistent=False)
        self.observing = False
        #: host-side "batches > 0" and "low < 0", set in calibration: a forward reads no device value
        self.calibrated = self.signed = False

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        self.low.copy_(torch.minimum(self.low, x.detach().min().to(self.low)))
        self.signed = bool(self.low < 0)
        _fold_range(self, x)

    def forward(self, x: Tensor, bits: int) -> Tensor:
        if not self.calibrated:
            raise RuntimeError(
                "DAC range is not calibrated: call cacim_core.device.calibrate_adc(model, batches) first"
            )
        steps = 2 ** (bits - 1) - 1 if self.signed else 2**bits - 1
        if steps < 1:
            raise ValueError(f"a DAC on signed inputs needs bits >= 2, got dac:bits={bits}")
        r = self.range.to(x).clamp_min(torch.finfo(x.dtype).tiny)
        low = -r if self.signed else torch.zeros_like(r)
        codes = torch.round(torch.maximum(torch.minimum(x.detach(), r), low) / r * steps)
        return x + (codes * (r / steps) - x).detach()

    def extra_repr(self) -> str:
        return f"range={float(self.range):.4g}, signed={self.signed}"


def input_bits(layer: nn.Module) -> int | None:
    """The DAC bits of the noise a layer's forward sees now (as `QuantizedWeight.perturb` picks it)."""
    for p in _params(layer):
        if not getattr(p, "analog", False):
            continue
        p = cast("QuantizedWeight", p)  # only a QuantizedWeight is analog
        if p.eval_noise is not None and not p.training:
            noise = p.eval_noise[0]
        else:
            noise = p.noise if p.training else None
        return getattr(noise, "input_bits", None)
    return None


def _dac_hook(module: nn.Module, inputs: tuple) -> tuple | None:
    dac = cast("DAC | None", module._modules.get("dac"))
    if dac is None or not inputs[0].is_floating_point():  # an Embedding's indices are no analog input
        return None
    if dac.observing:
        dac.observe(inputs[0])
        return None
    bits = input_bits(module)
    return None if bits is None else (dac(inputs[0], bits), *inputs[1:])


def _adc_hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    adc = module._modules.get("adc")
    if adc is not None:
        return adc(output)
    tile_adcs = cast("TileADCs | None", module._modules.get("tile_adcs"))
    if tile_adcs is not None:
        return tiled_forward(module, inputs[0], tile_adcs.tile, cast("list[ADC]", list(tile_adcs)))
    return output


class TileADCs(nn.ModuleList):
    """The ADCs of a tiled layer, one per (column block, row block), column-block major."""

    def __init__(self, adcs: Iterable[ADC], tile: Tile) -> None:
        super().__init__(adcs)
        self.tile = tile


def attach_adc(layer: nn.Module, bits: int | None, quantile: float = 0.999) -> None:
    """Put fresh (uncalibrated) b-bit ADCs on `layer`'s output, replacing any; bits=None removes them.

    A layer quantized with `QuantConfig.tile` gets one ADC per tile on its partial sums (`tiled_forward`).
    Either way the layer gets the converter hooks and a fresh input DAC (`DAC`, used only when the noise
    spec has a "dac:bits=b" part), calibrated with the ADCs by `calibrate_adc`.
    """
    layer._modules.pop("adc", None)
    layer._modules.pop("tile_adcs", None)
    device = next(layer.parameters()).device
    layer.dac = DAC(quantile).to(device=device)
    if _dac_hook not in layer._forward_pre_hooks.values():
        layer.register_forward_pre_hook(_dac_hook)
    if bits is None:
        return
    tile = next((cast(Tile, p.tile) for p in _params(layer) if getattr(p, "tile", None) is not None), None)
    if tile is None:
        layer.adc = ADC(bits, quantile).to(device=device)
    else:
        if getattr(layer, "groups", 1) != 1 or not isinstance(
            layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
        ):
            raise ValueError(
                f"per-tile ADCs need a Linear or a groups=1 Conv layer, got {layer!r}; drop tile or adc_bits"
            )
        shape = _weight_shape(layer)
        rows, cols = _blocks(shape[0], tile[0]), _blocks(math.prod(shape[1:]), tile[1])
        adcs = [ADC(bits, quantile) for _ in range(len(rows) * len(cols))]
        layer.tile_adcs = TileADCs(adcs, tile).to(device=device)
    if _adc_hook not in layer._forward_hooks.values():
        layer.register_forward_hook(_adc_hook)


# ------------------------------------------------------------------------------------------------ tiles


def check_tile(tile: Tile | None) -> Tile | None:
    """A tile size as (rows, cols) of positive ints, or None (one tile per layer); else an error."""
    if tile is None:
        return None
    if len(tile) != 2 or not all(isinstance(n, int) and n > 0 for n in tile):
        raise ValueError(f"tile must be (rows, cols) of positive ints or None, got {tile!r}")
    return (tile[0], tile[1])


def set_tile(model: nn.Module, tile: Tile | None) -> int:
    """Map every analog quantized layer of a trained model onto tiles of at most `tile` (None: one per layer).

    Nothing is refitted: the levels stay per layer, and only the chip changes, so one trained model can be
    evaluated at several tile sizes. Noise is drawn per tile from the next draw on; a layer with ADCs gets
    fresh ones for the new tiling (same bits and quantile), to be calibrated (`calibrate_adc`) before use.
    Returns how many layers.
    """
    tile = check_tile(tile)
    layers = [m for m in model.modules() if any(getattr(p, "analog", False) for p in _params(m))]
    for layer in layers:
        for p in _params(layer):
            if getattr(p, "analog", False):
                cast("QuantizedWeight", p).tile = tile
        adc = cast("ADC | None", layer._modules.get("adc")) or next(
            iter(cast("Iterable[ADC]", layer._modules.get("tile_adcs", ()))), None
        )
        if adc is not None:
            attach_adc(layer, adc.bits, adc.quantile)
    return len(layers)


def _blocks(size: int, block: int) -> list[tuple[int, int]]:
    return [(start, min(start + block, size)) for start in range(0, size, block)]


def _weight_shape(layer: nn.Module) -> torch.Size:
    """The weight's shape without running the parametrization (which would draw training noise)."""
    plist = getattr(getattr(layer, "parametrizations", None), "weight", None)
    return plist.original.shape if plist is not None else cast(Tensor, layer.weight).shape


def tiled_noise(
    noise: Callable[[Tensor, torch.Generator | None], Tensor],
    wq: Tensor,
    tile: Tile,
    generator: torch.Generator | None,
) -> Tensor:
    """Noise drawn tile by tile on the (out, in * k * k) view, each tile with its own scale (its max|W_q|).

    Tiles are visited row block by row block, column blocks inside; one tile covering the whole matrix
    draws exactly what `noise(wq, generator)` draws.
    """
    matrix = wq.reshape(wq.shape[0], -1)
    out = torch.empty_like(matrix)
    for r0, r1 in _blocks(matrix.shape[0], tile[0]):
        for c0, c1 in _blocks(matrix.shape[1], tile[1]):
            out[r0:r1, c0:c1] = noise(matrix[r0:r1, c0:c1], generator)
    return out.reshape(wq.shape)


def _partial(layer: nn.Module, x: Tensor, w: Tensor, c0: int, c1: int, bias: Tensor | None) -> Tensor:
    """The layer's output from crossbar rows c0..c1 of the (out, in * k * k) view only (+ bias if given)."""
    if isinstance(layer, nn.Linear):
        return F.linear(x[..., c0:c1], w[:, c0:c1], bias)
    kernel = math.prod(w.shape[2:])
    ch0, ch1 = c0 // kernel, -(-c1 // kernel)
    wb = w[:, ch0:ch1]
    if c0 != ch0 * kernel or c1 != ch1 * kernel:  # the block cuts through a channel's kernel
        mask = torch.zeros((ch1 - ch0) * kernel, device=w.device, dtype=w.dtype)
        mask[c0 - ch0 * kernel : c1 - ch0 * kernel] = 1
        wb = wb * mask.reshape(1, ch1 - ch0, *w.shape[2:])
    return cast("nn.Conv1d | nn.Conv2d | nn.Conv3d", layer)._conv_forward(x[:, ch0:ch1], wb, bias)


def tiled_forward(layer: nn.Module, x: Tensor, tile: Tile, adcs: list[ADC]) -> Tensor:
    """Forward of a tiled layer: per tile, the partial sum of its rows (inputs) is digitised by the tile's
    ADC; partial sums are added digitally. The bias enters the last column block's analog sum (a bias row
    on that tile), so a single tile reproduces the untiled ADC'd layer exactly.
    """
    w, bias = cast(Tensor, layer.weight), cast("Tensor | None", layer.bias)
    rows, cols = _blocks(w.shape[0], tile[0]), _blocks(w[0].numel(), tile[1])
    dim = -1 if isinstance(layer, nn.Linear) else 1
    total = None
    for j, (c0, c1) in enumerate(cols):
        part = _partial(layer, x, w, c0, c1, bias if j == len(cols) - 1 else None)
        pieces = [adcs[j * len(rows) + i](part.narrow(dim, r0, r1 - r0)) for i, (r0, r1) in enumerate(rows)]
        part = torch.cat(pieces, dim)
        total = part if total is None else total + part
    return cast(Tensor, total)  # None only for a layer without inputs (no column block)


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
    """Set every ADC's range from the model's outputs on `batches` (inputs only), in eval mode, noise-free,
    and every input DAC's from the layers' inputs on the same forwards.

    Call after quantize_model (or set_adc) and again after training has moved the weights. Returns how many
    batches were seen; an empty iterable is an error, as an ADC without a range cannot convert.
    """
    adcs = [m for m in model.modules() if isinstance(m, (ADC, DAC))]
    if not adcs:
        raise ValueError("model has no ADC: set QuantConfig.adc_bits or call cacim_core.device.set_adc")
    was_training = model.training
    model.eval()
    for adc in adcs:
        adc.range.zero_()
        adc.batches.zero_()
        adc.observing, adc.calibrated = True, False
        if isinstance(adc, DAC):
            adc.low.zero_()
            adc.signed = False
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
