"""Section 5.1 as a table: what a method's levels cost per weight in a digital system vs analog CIM.

For each quantizer and level count, fitted on one real layer (the Figure 2 layer), three storage options:

- digital, no codebook: the levels must be decodable by arithmetic alone. Either they lie on an affine
  fixed-point grid (w = scale * code + offset; uniform quantizers need ceil(log2 v) bits, {1, 2, 4, 6}
  needs the 6-point grid 1..6, so 3 bits) or they are signed powers of two (decoded by a shift, INQ-style).
  The smallest grid is searched whose rounding keeps the layer's MSE within MSE_TOLERANCE of the exact
  levels; past MAX_GRID_BITS the levels need floating point (FLOAT_BITS).
- digital, codebook: ceil(log2 v) bits of index per weight plus a stored table of CODEBOOK_VALUE_BITS per
  level (per layer, or per output channel for per-channel methods), amortised over the layer's weights,
  and one table look-up per weight read.
- analog CIM: one differential conductance pair per weight whatever the level values; no codebook.

`python -m tables.digital_cost [--checkpoint PATH | --results DIR --scale S] [--out tables/out]` writes
`digital_cost.md`.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.experiments import SCALES
from benchmarks.layers import Layer, load_layer
from benchmarks.results import atomic_write
from cacim_core import quantizers
from cacim_core.quantizers.base import QUANTIZERS
from cacim_core.registry import load_installed_plugins, load_plugin

LEVEL_COUNTS = (3, 4, 8)
CODEBOOK_VALUE_BITS = 32  # one float32 per stored level
MSE_TOLERANCE = 0.01  # a fixed-point grid may raise the layer's quantization MSE by at most 1%
MAX_GRID_BITS = 16
FLOAT_BITS = 32
PAPER_EXAMPLE = (1.0, 2.0, 4.0, 6.0)  # section 5.1, Figure 5
SNAP_RTOL = 1e-5  # float32 roundoff is ~1e-7 relative; distinct levels are far further apart


@dataclass(frozen=True)
class Cost:
    """Bits per weight of one quantized layer under the three storage options."""

    distinct_levels: int  # per group (layer or output channel)
    groups: int
    direct_bits: int
    direct_rule: str
    index_bits: int
    codebook_bits_per_weight: float

    @property
    def codebook_total(self) -> float:
        return self.index_bits + self.codebook_bits_per_weight


def index_bits(levels: int) -> int:
    return max(1, math.ceil(math.log2(levels)))


def is_power_of_two_set(levels: np.ndarray, rtol: float = 1e-6) -> bool:
    """Levels of the form s * {0, +-2^-e}: decodable from sign + exponent by a shift, no table needed."""
    nonzero = np.abs(levels[np.abs(levels) > rtol * np.abs(levels).max()])
    exponents = np.log2(nonzero / nonzero.max())
    return bool(np.allclose(exponents, np.round(exponents), atol=1e-6))


def grid_bits(weights: np.ndarray, quantized: np.ndarray) -> int | None:
    """Fewest bits of an affine grid holding the levels of `quantized` within the MSE tolerance, else None.

    Cell statistics make each candidate grid O(levels): the SSE of a cell whose level l moves to r is
    sse + 2 (l - r) sum(w - l) + n (l - r)^2 (weights keep their cells, an upper bound on the true MSE).
    """
    levels, cell = np.unique(quantized, return_inverse=True)
    if len(levels) == 1:
        return 0
    count = np.bincount(cell, minlength=len(levels)).astype(np.float64)
    residual = weights - levels[cell]
    first = np.bincount(cell, weights=residual, minlength=len(levels))
    sse = np.bincount(cell, weights=residual**2, minlength=len(levels)).sum()
    budget = sse * (1 + MSE_TOLERANCE) + 1e-30
    low, span = levels[0], levels[-1] - levels[0]
    for bits in range(1, MAX_GRID_BITS + 1):  # grids of 2^(bits-1)+1 .. 2^bits points, fewest bits first
        steps = np.arange(max(len(levels) - 1, 2 ** (bits - 1)), 2**bits)[:, None]
        if len(steps) == 0:
            continue
        moved = levels - (low + np.round((levels - low) / span * steps) * span / steps)
        if ((2 * moved * first + count * moved**2).sum(axis=1) + sse <= budget).any():
            return bits
    return None


def snap(values: np.ndarray, rtol: float = SNAP_RTOL) -> np.ndarray:
    """Merge values that differ only by float roundoff (e.g. w + (q(w) - w) in a straight-through forward)."""
    unit = rtol * max(np.abs(values).max(), 1e-30)
    return np.round(values / unit) * unit


def digital_cost(weight: torch.Tensor, quantized: torch.Tensor, levels: int) -> Cost:
    """Costs of storing `quantized` (a `levels`-level quantizer's output for `weight`) digitally."""
    w = weight.detach().double().reshape(weight.shape[0], -1).numpy()
    q = snap(quantized.detach().double().reshape(weight.shape[0], -1).numpy())
    layer_levels = np.unique(q)
    per_channel = len(layer_levels) > levels  # more values than levels: one level set per output channel
    groups = [(w[i], q[i]) for i in range(len(q))] if per_channel else [(w.ravel(), q.ravel())]
    distinct = max(len(np.unique(gq)) for _, gq in groups)
    if all(is_power_of_two_set(np.unique(gq)) for _, gq in groups):
        direct, rule = index_bits(distinct), "sign + power-of-two exponent"
    else:
        bits = [grid_bits(gw, gq) for gw, gq in groups]
        direct, rule = (FLOAT_BITS, "float32") if None in bits else (max(bits), "affine fixed-point grid")
    table_bits = sum(len(np.unique(gq)) for _, gq in groups) * CODEBOOK_VALUE_BITS
    return Cost(distinct, len(groups), direct, rule, index_bits(distinct), table_bits / q.size)


def method_cost(method: str, levels: int, weight: torch.Tensor) -> Cost | str:
    """The cost for a fitted quantizer, or why the method has no `levels`-level variant."""
    try:
        quantizer = quantizers.build(method, levels=levels)
        with torch.no_grad():
            quantizer.fit(weight)
            quantized = quantizer(weight)
    except (ValueError, NotImplementedError) as exc:
        return f"n/a ({str(exc).splitlines()[0]})"
    return digital_cost(weight, quantized, levels)


def render(layer: Layer, methods: list[str]) -> str:
    """The Markdown table: one row per method and level count, plus the paper's worked example."""
    example = torch.tensor(PAPER_EXAMPLE).repeat(1000).reshape(1, -1)
    example_cost = digital_cost(example, example, len(PAPER_EXAMPLE))
    header = [
        "# Section 5.1: bits per weight, digital vs analog (computed)",
        "",
        f"Weights: {layer.source}, {layer.weight.numel()} values; each method fitted on them "
        "(`python -m tables.digital_cost`).",
        f"Digital without codebook: affine fixed-point grid or sign + power-of-two code, the fewest bits "
        f"that keep the layer's MSE within {MSE_TOLERANCE:.0%} of the exact levels "
        f"(float{FLOAT_BITS} beyond {MAX_GRID_BITS} bits). Codebook: ceil(log2 v) index bits + "
        f"{CODEBOOK_VALUE_BITS}-bit table entries amortised per weight, and a look-up on every read. "
        "Analog CIM: one differential conductance pair per weight for any level values, no codebook.",
        "",
        "| method | levels | distinct levels (groups) | digital, no codebook: bits/weight | decoding "
        "| digital, codebook: index + table = bits/weight | analog CIM |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [_row("paper example {1, 2, 4, 6}", 4, example_cost)]
    rows += [
        _row(m, levels, method_cost(m, levels, layer.weight)) for m in methods for levels in LEVEL_COUNTS
    ]
    return "\n".join(header + rows) + "\n"


def _row(method: str, levels: int, cost: Cost | str) -> str:
    if isinstance(cost, str):
        return f"| {method} | {levels} | {cost} | - | - | - | - |"
    groups = "layer" if cost.groups == 1 else f"{cost.groups} channels"
    return (
        f"| {method} | {levels} | {cost.distinct_levels} ({groups}) "
        f"| {cost.direct_bits} | {cost.direct_rule} "
        f"| {cost.index_bits} + {cost.codebook_bits_per_weight:.4f} = {cost.codebook_total:.4f} "
        "| 1 pair, no codebook |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tables.digital_cost", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--checkpoint", type=Path, help="state_dict .pt (default: newest float model in --results)"
    )
    parser.add_argument("--results", type=Path, default=Path("results"), help="results store root")
    parser.add_argument("--scale", default="proxy", choices=SCALES)
    parser.add_argument("--layer", default="last", help="'first', 'last' or a weight name in the checkpoint")
    parser.add_argument("--out", type=Path, default=Path("tables/out"))
    parser.add_argument("--methods", default="", help="comma-separated (default: every registered quantizer)")
    parser.add_argument("--plugin", action="append", default=[], help="module or .py file to import first")
    args = parser.parse_args(argv)
    try:
        load_installed_plugins()  # pip-installed plugin packages (entry-point group `cacim.plugins`)
        for plugin in args.plugin:
            load_plugin(plugin)
        methods = [m for m in args.methods.split(",") if m]
        for method in methods:
            QUANTIZERS.get(method)  # an unknown name: one line listing the registered ones
        layer = load_layer(args.checkpoint, args.layer, args.results, args.scale)
    except (ImportError, KeyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {str(exc).strip(chr(34) + chr(39))}", file=sys.stderr)
        return 2
    text = render(layer, methods or [name for name in quantizers.names() if name != "lloyd_exact"])
    target = atomic_write(args.out / args.scale / "digital_cost.md", text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
