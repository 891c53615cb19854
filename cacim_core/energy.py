"""Energy and latency of one inference on the crossbar, from counts (NeuroSim-style) and one cited cost table.

Counts per analog layer and per tile (`count`): cell MACs (tile rows x columns x output positions), input
bit-pulses driven onto the rows ("DAC bits") and ADC conversions. The inputs are bit-serial, as in
DNN+NeuroSim V1.3 (`numReadPulse` = input bits): each input bit is one read of the whole array and one
conversion per output column, the partial results shift-added digitally. One ADC per output column (the
differential pair's two columns subtracted before it, as `device.ADC` digitises the layer's output), the
tiles of a layer in parallel, layers one after the other.

Costs (`COSTS`, every number read from DNN+NeuroSim V1.3, github.com/neurosim/DNN_NeuroSim_V1.3, commit
388f421, `Inference_pytorch/NeuroSIM/`): a SAR ADC conversion of b bits on a column of resistance R costs
    E = [(0.7213 b + 3.3041) uW + 0.084273 W * exp(-2.311 log10(R * 0.5 V / V_read))] * (b + 1) ns
and takes (b + 1) ns (`SarADC.cpp`, `GetColumnPower` and `CalculateLatency`, 22 nm HP); R is the parallel
resistance of the column's cells, all rows on (an upper bound on the column current; NeuroSim uses the rows
an input activates), so the conversion energy holds the column's read current too. V_read = 0.5 V
(`Param.cpp`, `readVoltage`). Left out, for want of a per-operation number in a source read here: a
multi-bit DAC (NeuroSim has none: 1-bit row pulses), the row drivers and decoders, the digital shift-add
and accumulation, buffers and interconnect (NeuroSim computes all of them from circuit models, not
constants), and leakage. So `estimate` is the ADC-and-array part of the read energy, not a chip's total.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from .convert import float_weight, quantized_layers
from .device import ADC, DAC, ConductanceMap, _blocks

NEUROSIM = "DNN+NeuroSim V1.3 (neurosim/DNN_NeuroSim_V1.3 @388f421)"


@dataclass(frozen=True)
class Cost:
    value: float
    unit: str
    source: str


COSTS: dict[str, Cost] = {
    "adc_power_per_bit": Cost(0.7213e-6, "W per bit", f"{NEUROSIM} SarADC.cpp GetColumnPower, 22 nm HP"),
    "adc_power_offset": Cost(3.3041e-6, "W", f"{NEUROSIM} SarADC.cpp GetColumnPower, 22 nm HP"),
    "adc_column_coefficient": Cost(0.084273, "W", f"{NEUROSIM} SarADC.cpp GetColumnPower, 22 nm HP"),
    "adc_column_exponent": Cost(-2.311, "per decade of R (ohm)", f"{NEUROSIM} SarADC.cpp GetColumnPower"),
    "adc_time_per_step": Cost(1e-9, "s per (bits + 1)", f"{NEUROSIM} SarADC.cpp CalculateLatency"),
    "read_voltage": Cost(0.5, "V", f"{NEUROSIM} Param.cpp readVoltage"),
}


def conversion_energy(bits: int, column_resistance: float) -> float:
    """Joules of one b-bit SAR conversion on a column of `column_resistance` ohm (NeuroSim's formula)."""
    c = {k: v.value for k, v in COSTS.items()}
    resistance = column_resistance * 0.5 / c["read_voltage"]  # NeuroSim's fit is at 0.5 V
    power = c["adc_power_per_bit"] * bits + c["adc_power_offset"]
    power += c["adc_column_coefficient"] * math.exp(c["adc_column_exponent"] * math.log10(resistance))
    return power * conversion_time(bits)


def conversion_time(bits: int) -> float:
    return (bits + 1) * COSTS["adc_time_per_step"].value


@dataclass(frozen=True)
class LayerCounts:
    """What one inference (one sample) asks of one analog layer; tiles as crossbar (outputs, inputs)."""

    name: str
    inputs: int  # crossbar rows: in * k * k
    outputs: int  # crossbar columns: out channels
    tiles: tuple[tuple[int, int], ...]
    positions: int  # output positions per sample (H x W of a conv, 1 for a Linear on a vector)
    input_bits: int  # bit-serial read pulses per input vector
    adc_bits: int

    @property
    def macs_per_tile(self) -> list[int]:
        return [o * i * self.positions for o, i in self.tiles]

    @property
    def macs(self) -> int:
        return sum(self.macs_per_tile)

    @property
    def dac_bits(self) -> int:
        """Input bit-pulses driven onto tile rows: each tile's rows, every position, every input bit."""
        return self.positions * self.input_bits * sum(i for _, i in self.tiles)

    @property
    def adc_conversions(self) -> int:
        return self.positions * self.input_bits * sum(o for o, _ in self.tiles)


@dataclass(frozen=True)
class Estimate:
    layers: list[LayerCounts]
    energy_j: list[float]  # per layer
    latency_s: list[float]

    @property
    def energy(self) -> float:
        return sum(self.energy_j)

    @property
    def latency(self) -> float:
        return sum(self.latency_s)

    def line(self) -> str:
        """One line to print beside an accuracy."""
        conversions = sum(c.adc_conversions for c in self.layers)
        return (
            f"{self.energy * 1e9:.3g} nJ, {self.latency * 1e6:.3g} us per inference (ADC + array read, "
            f"{conversions} conversions, {sum(c.macs for c in self.layers)} MACs; NeuroSim V1.3 costs)"
        )


def _adc_bits(layer: nn.Module, default: int | None) -> int:
    adc = layer._modules.get("adc") or next(
        iter(cast(Iterable[ADC], layer._modules.get("tile_adcs", ()))), None
    )
    if isinstance(adc, ADC):
        return adc.bits
    if default is None:
        raise ValueError("energy: a layer has no ADC; pass adc_bits= (or quantize with QuantConfig.adc_bits)")
    return default


@torch.no_grad()
def count(
    model: nn.Module, example_input: torch.Tensor, input_bits: int = 8, adc_bits: int | None = None
) -> list[LayerCounts]:
    """Counts of every analog quantized layer for one forward of `example_input` (batch of 1 or more)."""
    if not (isinstance(input_bits, int) and input_bits >= 1):
        raise ValueError(f"energy: input_bits must be an int >= 1 (bit-serial pulses), got {input_bits!r}")
    mvm = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # an Embedding is a row read, not an MVM: not counted
    layers = [(n, m, p) for n, m, p in quantized_layers(model) if p.analog and isinstance(m, mvm)]
    if not layers:
        raise ValueError("energy: the model has no analog quantized Conv/Linear layer; call quantize_model")
    positions: dict[str, int] = {}

    def seen(name: str, module: nn.Module, out: torch.Tensor) -> None:
        positions.setdefault(name, out.numel() // (out.shape[0] * _outputs(module)))

    hooks = [m.register_forward_hook(lambda mod, _, y, n=n: seen(n, mod, y)) for n, m, _ in layers]
    was_training = model.training
    converters = [m for m in model.modules() if isinstance(m, (ADC, DAC))]
    saved = [(m.observing, {k: b.clone() for k, b in m.named_buffers()}) for m in converters]
    try:
        model.eval()
        for m in converters:  # a pass-through forward: the shapes need no calibrated converter
            m.observing = True
        model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
        for m, (observing, buffers) in zip(converters, saved, strict=True):
            m.observing = observing
            for k, b in buffers.items():
                getattr(m, k).copy_(b)
        model.train(was_training)
    out = []
    for name, module, p in layers:
        shape = float_weight(module).shape
        outputs, inputs = shape[0], math.prod(shape[1:])
        tile = p.tile or (outputs, inputs)
        tiles = tuple(
            (o1 - o0, i1 - i0) for o0, o1 in _blocks(outputs, tile[0]) for i0, i1 in _blocks(inputs, tile[1])
        )
        if name not in positions:
            raise ValueError(f"energy: layer {name} did not run in the forward of example_input")
        out.append(
            LayerCounts(
                name, inputs, outputs, tiles, positions[name], input_bits, _adc_bits(module, adc_bits)
            )
        )
    return out


def _outputs(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else cast(int, module.out_channels)


@torch.no_grad()
def estimate(
    model: nn.Module,
    example_input: torch.Tensor,
    input_bits: int = 8,
    adc_bits: int | None = None,
    device: ConductanceMap | None = None,
) -> Estimate:
    """Energy and latency of one inference: every conversion costed with its own column's resistance."""
    device = device or ConductanceMap()
    counts = count(model, example_input, input_bits, adc_bits)
    modules = {n: (m, p) for n, m, p in quantized_layers(model)}
    energies, latencies = [], []
    for c in counts:
        module, p = modules[c.name]
        wq = p.clean(float_weight(module)).reshape(c.outputs, -1).double()
        g_plus, g_minus = device.pair(wq, wq.abs().max().clamp_min(1e-30))
        total = g_plus + g_minus  # uS, both columns of each pair
        tile = p.tile or (c.outputs, c.inputs)
        per_vector = 0.0
        for o0, o1 in _blocks(c.outputs, tile[0]):
            for i0, i1 in _blocks(c.inputs, tile[1]):
                column_g = total[o0:o1, i0:i1].sum(1) * 1e-6  # S
                per_vector += sum(conversion_energy(c.adc_bits, 1 / float(g)) for g in column_g)
        energies.append(per_vector * c.positions * c.input_bits)
        latencies.append(conversion_time(c.adc_bits) * c.positions * c.input_bits)
    return Estimate(counts, energies, latencies)


def table() -> str:
    """The cost table as Markdown, every number with its source."""
    rows = ["| cost | value | unit | source |", "|---|---|---|---|"]
    rows += [f"| {k} | {v.value:g} | {v.unit} | {v.source} |" for k, v in COSTS.items()]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """`python -m cacim_core.energy --model resnet20_narrow --input-size 16 --tile 64 --adc-bits 4`."""
    parser = argparse.ArgumentParser(prog="python -m cacim_core.energy", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default="resnet20_narrow", help="a benchmark model name (benchmarks.models)"
    )
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--input-size", type=int, default=16)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--method", default="lloyd")
    parser.add_argument("--first-last", default="quantize")
    parser.add_argument("--tile", type=int, default=None, help="square tile size (default: one per layer)")
    parser.add_argument("--adc-bits", type=int, default=5, help="NeuroSim's default levelOutput 32: 5 bits")
    parser.add_argument("--input-bits", type=int, default=8)
    args = parser.parse_args(argv)
    from benchmarks.models import build_model  # the benchmark suite's model registry, only for this CLI

    from .convert import QuantConfig, quantize_model

    torch.manual_seed(0)
    model = build_model(args.model, args.classes, args.input_size)
    tile = (args.tile, args.tile) if args.tile else None
    config = QuantConfig(args.method, args.levels, first_last=args.first_last, tile=tile)
    quantize_model(model, config)
    x = torch.zeros(1, args.channels, args.input_size, args.input_size)
    result = estimate(model, x, args.input_bits, args.adc_bits)
    print(table())
    print("\n| layer | tiles | MACs | DAC bits | ADC conversions | energy (nJ) | latency (us) |")
    print("|---|---|---|---|---|---|---|")
    for c, e, t in zip(result.layers, result.energy_j, result.latency_s, strict=True):
        cells = [
            c.name,
            len(c.tiles),
            c.macs,
            c.dac_bits,
            c.adc_conversions,
            f"{e * 1e9:.4g}",
            f"{t * 1e6:.4g}",
        ]
        print("| " + " | ".join(str(x) for x in cells) + " |")
    print(
        f"\n{args.model}, {args.levels} levels, tile {tile}, {args.adc_bits}-bit ADC, "
        f"{args.input_bits}-bit inputs: {result.line()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
