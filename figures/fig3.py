"""Figure 3: gap of our models trained and evaluated with weight noise vs other methods without noise.

The six pairs are the paper's (tables-clean.md, Figure 3). Our bars come from measured records (mean with a
95% CI over seeds; one seed: ± std over its noise draws). The other method's bar is measured where we ran
that baseline at the same scale, else the paper's number, hatched and labelled "quoted from paper".
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from benchmarks.experiments.fig3 import PAIRS, Pair
from benchmarks.results import Record, load_records
from figures import store, style
from figures.context import Context, Missing, Rendered


@dataclass(frozen=True)
class Bar:
    label: str
    method: str
    value: float | None
    std: float = 0.0
    quoted: bool = False
    dataset: str | None = None
    n: int = 0  # training seeds behind a measured bar


def noisy_bar(pair: Pair, records: list[Record], method: str = "lloyd") -> Bar:
    """`method` (ours: lloyd) trained and evaluated with noise: the record with the paper's delta, else any
    noisy one (its delta shown)."""
    noisy = [
        r
        for r in store.select(records, method=method, levels=pair.levels, model=pair.model)
        if r.experiment in pair.experiments
        and r.noise_train > 0
        and r.noise_eval > 0
        and not r.noise_eval_file
    ]
    exact = [r for r in noisy if abs(r.noise_train - pair.noise) < 1e-9]
    found = store.gap(exact or noisy, pair.metric)
    who = "Ours" if method == "lloyd" else style.label(method)
    name = f"{pair.levels}L {pair.model_label} | {who} w/ {pair.noise:.0%} noise"
    if found is None:
        return Bar(name, method, None)
    delta = found.record.noise_train
    if not exact:
        name = f"{pair.levels}L {pair.model_label} | {who} w/ {delta:.0%} noise (paper: {pair.noise:.0%})"
    return Bar(name, method, found.value, found.std, dataset=found.record.dataset, n=found.n)


def other_bar(pair: Pair, records: list[Record], dataset: str | None) -> Bar:
    """The other method without noise: measured on our bar's dataset if present, else the paper's (quoted)."""
    clean = [
        r
        for r in store.select(
            records, method=pair.other, levels=pair.levels, model=pair.model, first_last=pair.other_first_last
        )
        if r.experiment in pair.experiments
        and r.noise_train == 0
        and r.noise_eval == 0
        and (dataset is None or r.dataset == dataset)  # a gap on other data is no comparison
    ]
    found = store.gap(clean, pair.metric)
    star = "*" if pair.other_first_last == "fp" else ""
    name = f"{pair.levels}L {pair.model_label} | {style.label(pair.other)}{star} w/o noise"
    if found is None:
        return Bar(f"{name} ({pair.quoted_from})", pair.other, pair.quoted_gap, quoted=True)
    return Bar(name, pair.other, found.value, found.std, n=found.n)


def plot(bars: list[Bar], scale: str, per_pair: int = 2) -> Figure:
    """Horizontal bar groups in the paper's order (`per_pair` bars each); hatched bars are quoted, missing
    ones say so."""
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(bars) + 1.2), layout="constrained")
    positions = [i + 0.6 * (i // per_pair) for i in range(len(bars))][::-1]  # a gap between the pairs
    for y, bar in zip(positions, bars, strict=True):
        if bar.value is None:
            ax.text(0, y, " not measured yet", va="center", fontsize=7, color="#777777")
            continue
        ax.barh(
            y,
            bar.value,
            xerr=bar.std or None,
            color=style.color(bar.method),
            capsize=2,
            hatch=style.QUOTED_HATCH if bar.quoted else None,
            edgecolor="white" if bar.quoted else None,
        )
    ax.set_yticks(positions, [bar.label for bar in bars])
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("top-1 accuracy or mAP gap, FP - quantized (percentage points; lower is better)")
    methods = list(dict.fromkeys(bar.method for bar in bars))
    handles = [Patch(color=style.color(m), label=style.label(m)) for m in methods]
    handles.append(
        Patch(facecolor="#CCCCCC", edgecolor="white", hatch=style.QUOTED_HATCH, label=style.QUOTED_LABEL)
    )
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    ax.set_title(
        f"Ours with weight noise vs others without noise\n(solid: measured at {scale} scale, "
        f"error bars: {store.error_bars(bar.n for bar in bars if bar.n)}; hatched: quoted from the paper)"
    )
    return fig


def render(ctx: Context) -> Rendered:
    records = load_records(ctx.results, scale=ctx.scale)
    experiments = {e for pair in PAIRS for e in pair.experiments}
    trained_noisy = [
        r for r in records if r.experiment in experiments and r.noise_train > 0 and r.noise_eval > 0
    ]
    methods, absent = store.drawn_methods(trained_noisy, ctx.methods)
    missing = Missing()
    for method in absent:
        missing.add(f"{ctx.scale} records of {method} with noise", "make fig3-results", method)
    bars, measured = [], False
    for pair in PAIRS:
        noisy = [noisy_bar(pair, records, method) for method in methods]
        measured |= any(bar.value is not None for bar in noisy)
        for bar in noisy:
            if bar.value is None:
                what = f"{ctx.scale} record: {bar.method} {pair.levels}L {pair.model_label} with noise"
                missing.add(what, pair.make_target, bar.method)
        # the baseline is compared on the data of the first measured noisy bar
        dataset = next((bar.dataset for bar in noisy if bar.value is not None), None)
        bars += [*noisy, other_bar(pair, records, dataset)]
    if not measured:
        return Rendered(None, missing)
    return Rendered(plot(bars, ctx.scale, len(methods) + 1), missing)
