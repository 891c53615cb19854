"""Figure 4: weights on (measured) memristor conductances, paper section 4.4.

(a) differential conductance of one layer at 4 levels (section 4.4 mapping): simulated noise
    (relative Gaussian, delta = 2%, the paper's equivalent of 0.32 uS) vs the empirical model built from a
    conductance file (`--conductances`, default: the shipped, generated example).
(b) top-1 gap (ResNet-18b) and mAP gap (SSD) at 4 and 8 levels for A) simulated weights trained with NATS,
    B) measured weights trained with NATS, C) measured weights trained without NATS, read from the records
    of experiment `fig4b`.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from benchmarks.experiments.fig4b import SIMULATED_DELTA
from benchmarks.layers import Layer, load_layer
from benchmarks.results import Record, load_records
from cacim_core import quantizers
from cacim_core.device import ConductanceMap
from cacim_core.measured import MeasuredConductances
from figures import store, style
from figures.context import Context, Missing, Rendered

LEVELS = 4
SEED = 0
BINS = 160
EXPERIMENT = "fig4b"


#: Figure 4(b)'s weight types: key -> legend label
WEIGHT_TYPES = {
    "simulated": "A) simulated weights, trained w/ NATS",
    "measured": "B) measured weights, trained w/ NATS",
    "measured_no_nats": "C) measured weights, trained w/o NATS",
}


@dataclass(frozen=True)
class Group:
    """One group of bars in Figure 4(b)."""

    family: str
    label: str
    metric: str
    levels: int


GROUPS = tuple(
    Group(family, f"{levels}L {label}", metric, levels)
    for family, label, metric in (("resnet18", "ResNet-18b", "top1"), ("ssd", "SSD", "mAP"))
    for levels in (4, 8)
)
MAKE_TARGET = "make fig4b-results"  # produces every group's records


def layer_conductances(layer: Layer, levels: int = LEVELS) -> Tensor:
    """Lloyd-quantize the layer and map it onto differential conductances G (uS) with the section 4.4 rule."""
    quantizer = quantizers.build("lloyd", levels=levels)
    with torch.no_grad():
        quantizer.fit(layer.weight)
        return ConductanceMap().differential(quantizer(layer.weight)).flatten().double()


def weight_type(record: Record) -> str | None:
    """A, B or C of Figure 4(b) from a record's training and evaluation noise fields."""
    if record.noise_eval_file:
        return "measured" if record.noise_train > 0 else "measured_no_nats"
    if record.noise_train > 0 and record.noise_eval > 0:
        return "simulated"
    return None


def is_generated(path: object) -> bool:
    """The shipped example file says GENERATED in its header; measured files are labelled as measured."""
    with open(str(path)) as handle:
        head = [line for line in (handle.readline() for _ in range(5)) if line.startswith("#")]
    return any("GENERATED" in line for line in head)


def plot_distribution(
    ax: Axes, g: Tensor, measured: MeasuredConductances, generated: bool, source: str
) -> None:
    gen = torch.Generator().manual_seed(SEED)
    sigma = SIMULATED_DELTA * g.abs().max().item()
    simulated = g + sigma * torch.randn(g.shape, generator=gen, dtype=g.dtype)
    sampled = g + measured.sample_deviation(g, gen)
    edges = np.linspace(
        min(simulated.min(), sampled.min()).item(), max(simulated.max(), sampled.max()).item(), BINS
    )
    kind = "example file, generated not measured" if generated else "measured"
    labels = {
        "simulated": f"simulated: Gaussian, sigma = {sigma:.2f} uS (delta = {SIMULATED_DELTA:.0%})",
        "measured": f"measured model ({kind}): sigma = {measured.std.mean().item():.2f} uS",
    }
    for key, values in (("simulated", simulated), ("measured", sampled)):
        color = style.WEIGHT_TYPE_COLORS[key]
        ax.hist(values.numpy(), bins=edges, histtype="stepfilled", alpha=0.45, color=color, label=labels[key])
    for level in g.unique().tolist():
        ax.axvline(level, color="black", linestyle=":", linewidth=0.7)
    ax.set_xlabel("differential conductance G = G+ - G- (uS)")
    ax.set_ylabel("number of weights")
    source = textwrap.fill(source, 70)  # checkpoint names are long; keep the title inside panel (a)
    ax.set_title(f"(a) {LEVELS}-level Lloyd weights on conductances (dotted: targets)\n{source}", fontsize=8)
    ax.legend(loc="upper center", frameon=False, fontsize=7, bbox_to_anchor=(0.5, -0.2))


def gap_table(
    records: list[Record], methods: Sequence[str] = ("lloyd",)
) -> dict[tuple[str, str, str], store.Gap | None]:
    """(group label, method, weight type) -> gap of the newest matching fig4b record, or None."""
    table = {}
    for group in GROUPS:
        for method in methods:
            cell = store.select(records, model=group.family, levels=group.levels, method=method)
            for wtype in WEIGHT_TYPES:
                same = [r for r in cell if weight_type(r) == wtype]
                table[group.label, method, wtype] = store.gap(same, group.metric)
    return table


def plot_gaps(ax: Axes, table: dict[tuple[str, str, str], store.Gap | None], scale: str) -> None:
    """Bars per weight type in groups of (model and levels, method)."""
    columns = list(dict.fromkeys((label, method) for label, method, _ in table))
    several = len({method for _, method in columns}) > 1
    width = 0.8 / len(WEIGHT_TYPES)
    for offset, wtype in enumerate(WEIGHT_TYPES):
        for x, (label, method) in enumerate(columns):
            found = table[label, method, wtype]
            position = x + (offset - (len(WEIGHT_TYPES) - 1) / 2) * width
            if found is None:
                ax.text(
                    position, 0, "n/a", ha="center", va="bottom", fontsize=6, rotation=90, color="#777777"
                )
                continue
            ax.bar(
                position,
                found.value,
                width,
                yerr=found.std or None,
                capsize=2,
                color=style.WEIGHT_TYPE_COLORS[wtype],
            )
    ax.axhline(0, color="black", linewidth=0.6)
    ticks = [f"{label}\n{style.label(method)}" if several else label for label, method in columns]
    ax.set_xticks(range(len(columns)), ticks, fontsize=7 if several else None)
    ax.set_xlim(-0.5, len(columns) - 0.5)
    ax.set_ylabel("top-1 or mAP gap (pp; lower is better)")
    bars = store.error_bars(found.n for found in table.values() if found is not None)
    ax.set_title(f"(b) measured at {scale} scale\nerror bars: {bars}")
    if all(found is None for found in table.values()):
        ax.text(
            0.5, 0.5, f"no {EXPERIMENT} records at {scale} scale yet", ha="center", transform=ax.transAxes
        )
    handles = [Patch(color=style.WEIGHT_TYPE_COLORS[key], label=text) for key, text in WEIGHT_TYPES.items()]
    ax.legend(handles=handles, loc="upper center", frameon=False, fontsize=7, bbox_to_anchor=(0.5, -0.2))


def plot(
    layer: Layer,
    measured: MeasuredConductances,
    generated: bool,
    table: dict[tuple[str, str, str], store.Gap | None],
    scale: str,
) -> Figure:
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(9.0, 3.4), layout="constrained")
    plot_distribution(ax_a, layer_conductances(layer), measured, generated, layer.source)
    plot_gaps(ax_b, table, scale)
    return fig


def render(ctx: Context) -> Rendered:
    measured = MeasuredConductances.from_csv(ctx.conductances)  # bad user input fails before any work
    missing = Missing()
    layer = load_layer(ctx.checkpoint, "first", ctx.results, ctx.scale)
    if layer.synthetic:
        missing.add("trained proxy checkpoint (Figure 4(a) used a synthetic layer)", "make table3")
    generated = is_generated(ctx.conductances)
    if generated:
        print(
            f"note: {ctx.conductances} is generated from the paper's statistics, not measured; "
            "pass --conductances FILE with real measurements",
            file=sys.stderr,
        )
    records = load_records(ctx.results, EXPERIMENT, ctx.scale)
    methods, absent = store.drawn_methods(records, ctx.methods)
    for method in absent:
        missing.add(f"{ctx.scale} {EXPERIMENT} records of {method}", MAKE_TARGET, method)
    table = gap_table(records, methods)
    for (label, method, wtype), found in table.items():
        if found is None:
            what = f"{ctx.scale} {EXPERIMENT} record: {label}, {method}, {WEIGHT_TYPES[wtype]}"
            missing.add(what, MAKE_TARGET, method)
    return Rendered(plot(layer, measured, generated, table, ctx.scale), missing)
