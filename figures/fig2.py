"""Figure 2: one layer's weights quantized by uniform, log2 and Lloyd (8 levels; `--methods` for others),
with each quantizer's MSE.

The paper quantizes the last FC layer of ResNet-18; here it is the last layer of a checkpoint (the trained
proxy model by default, or `--checkpoint PATH`), or a labelled synthetic layer when there is none.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from benchmarks.layers import Layer, load_layer
from cacim_core import quantizers
from figures import style
from figures.context import Context, Missing, Rendered

METHODS = ("uniform", "log2", "lloyd")
LEVELS = 8
BINS = 120


def quantization_mse(
    method: str, weight: torch.Tensor, levels: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Fit `method` on the weights; return its levels, edges and mean squared quantization error."""
    quantizer = quantizers.build(method, levels=levels)
    with torch.no_grad():
        quantizer.fit(weight)
        mse = (quantizer(weight) - weight).pow(2).mean().item()
    return quantizer.levels.detach().cpu(), quantizer.edges.detach().cpu(), mse


def plot(layer: Layer, levels: int = LEVELS, methods: tuple[str, ...] = METHODS) -> Figure:
    """One panel per quantizer: weight histogram, its levels (solid) and decision edges (dashed)."""
    values = layer.weight.flatten().numpy()
    fig, axes = plt.subplots(
        1, len(methods), figsize=(2.6 * len(methods), 2.9), sharey=True, layout="constrained"
    )
    low, high = np.quantile(values, [0.0005, 0.9995])
    for index, (ax, method) in enumerate(zip(axes, methods, strict=True)):
        q_levels, q_edges, mse = quantization_mse(method, layer.weight, levels)
        xmin, xmax = min(low, q_levels.min().item()), max(high, q_levels.max().item())
        xmin, xmax = xmin - 0.05 * (xmax - xmin), xmax + 0.05 * (xmax - xmin)
        ax.hist(values, bins=np.linspace(xmin, xmax, BINS), color="#BBBBBB", edgecolor="none")
        for edge in q_edges.tolist():
            ax.axvline(edge, color="#444444", linestyle="--", linewidth=0.7)
        for level in q_levels.tolist():
            ax.axvline(level, color=style.color(method), linewidth=1.4)
        ax.set_title(f"({chr(ord('a') + index)}) {style.label(method)}\nMSE = {mse:.3e}")
        ax.set_xlim(xmin, xmax)
        ax.set_xlabel("weight value (a.u.)")
    axes[0].set_ylabel("number of weights")
    handles = [
        Patch(color="#BBBBBB", label="float weights"),
        *(
            Line2D([], [], color=style.color(m), linewidth=1.4, label=f"{style.label(m)} levels")
            for m in methods
        ),
        Line2D([], [], color="#444444", linestyle="--", linewidth=0.7, label="decision edges"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(f"{levels}-level quantization of {layer.source} ({layer.weight.numel()} weights)")
    return fig


def render(ctx: Context) -> Rendered:
    methods = ctx.methods or METHODS
    for method in methods:  # an unknown name fails before any work, in one line
        quantizers.build(method, levels=LEVELS)
    layer = load_layer(ctx.checkpoint, "last", ctx.results, ctx.scale)
    missing = Missing()
    if layer.synthetic:
        missing.add("trained proxy checkpoint (Figure 2 used a synthetic layer)", "make table3")
    return Rendered(plot(layer, LEVELS, methods), missing)
