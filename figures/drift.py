"""Accuracy vs time after programming on PCM (`make drift`): one panel per level count, one line per
quantizer and training noise, solid with drift compensation and dashed without; band: 95% CI over seeds
(each seed a trained model; its chips' noise draws averaged first). Also writes the table of the same points.

    python -m figures.drift --scale proxy   # figures/out/<scale>/drift.png, tables/out/<scale>/drift.md

Reads only `results/drift/<scale>/`; never trains.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from benchmarks.results import atomic_write
from benchmarks.stats import MARGIN, PairedTest, paired_test, t_interval, verdicts
from cacim_core.noise import parse
from figures import store, style

DAY = 86_400.0

KEYS = ["method", "levels", "noise_train", "compensation"]


def per_seed(results: str | Path, scale: str) -> pd.DataFrame:
    """Top-1 per (cell, seed, compensation, t), the chips (noise draws) of a seed already averaged."""
    sweeps = store.sweeps("drift", scale, results)
    sweeps = sweeps[sweeps["metric"] == "top1"].copy()
    models = [parse(spec) for spec in sweeps["test_noise"]]
    sweeps["t"] = [m.t for m in models]
    sweeps["compensation"] = [m.compensation for m in models]
    return sweeps


def points(sweeps: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, levels, training noise, compensation, t): top-1 mean and 95% CI over seeds."""
    rows = []
    keys = [*KEYS, "t"]
    for key, group in sweeps.groupby(keys):
        interval = t_interval(group.groupby("seed")["mean"].mean().tolist())
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "top1": interval.mean,
                "ci95": interval.half,
                "seeds": interval.n,
                "chips": int(group["n"].max()),
            }
        )
    return pd.DataFrame(rows)


def day_loss(sweeps: pd.DataFrame) -> list[str]:
    """Top-1 lost between 1 s and 1 day after programming, paired by seed, as a t interval per curve."""
    lines = []
    for key, group in sweeps.groupby(KEYS):
        at = {t: g.set_index("seed")["mean"] for t, g in group.groupby("t")}
        if 1.0 not in at or DAY not in at:
            continue
        loss = t_interval((at[1.0] - at[DAY]).dropna().tolist())
        method, levels, noise, comp = key
        ci = f"± {loss.half:.2f} (95% CI, n={loss.n} seeds)" if loss.n >= 2 else "(one seed, no interval)"
        lines.append(
            f"{method} {levels}L, NATS {noise:.0%}, {'with' if comp else 'without'} compensation: "
            f"loses {loss.mean:.2f} pt {ci} from 1 s to 1 day"
        )
    return lines


#: (method, training noise) pairs compared with drift compensation, paired by seed: the noise-aware Lloyd
#: against Lloyd with and without NATS (issue: "measure it honestly against lloyd + NATS"), Lloyd against the
#: uniform and log2 grids.
VERSUS = (
    (("lloyd_noise", 0.0), ("lloyd", 0.0)),
    (("lloyd_noise", 0.0), ("lloyd", 0.02)),
    (("lloyd", 0.0), ("uniform", 0.0)),
    (("lloyd", 0.0), ("log2", 0.0)),
)


def versus(
    sweeps: pd.DataFrame, times: tuple[float, ...] = (DAY, 365 * DAY), margin: float = MARGIN
) -> list[str]:
    """Top-1 of A minus B at each level and time, with compensation, paired by seed: one Holm family of
    verdicts (`benchmarks.stats`), its description last."""
    comp = sweeps[sweeps["compensation"]]
    by = {k: g.set_index("seed")["mean"] for k, g in comp.groupby(["method", "noise_train", "levels", "t"])}
    named: list[tuple[str, str, str, PairedTest]] = []
    for (a, na), (b, nb) in VERSUS:
        for levels in sorted(comp["levels"].unique()):
            for t in times:
                if (a, na, levels, t) not in by or (b, nb, levels, t) not in by:
                    continue
                test = paired_test(by[(a, na, levels, t)].to_dict(), by[(b, nb, levels, t)].to_dict(), margin)
                la, lb = f"{a} (NATS {na:.0%})", f"{b} (NATS {nb:.0%})"
                named.append((f"{la} vs {lb}, {levels}L, {t / DAY:g} day(s)", la, lb, test))
    results = verdicts([t for *_, t in named], lower_is_better=False)
    lines = [f"{name}: {v.sentence(la, lb)}" for (name, la, lb, _), v in zip(named, results, strict=True)]
    if results:
        lines.append(f"Top-1 differences (A minus B): {results[0].family.describe()}.")
    return lines


def plot(frame: pd.DataFrame, scale: str, path_stem: Path) -> list[Path]:
    """Rows: with / without drift compensation (each its own y range: compensated curves differ by tenths
    of a point, uncompensated ones fall to chance); columns: level counts. Colour: quantizer; dashed:
    trained with NATS."""
    levels = sorted(frame["levels"].unique())
    comps = sorted(frame["compensation"].unique(), reverse=True)
    fig, axes = plt.subplots(
        len(comps), len(levels), figsize=(4.6 * len(levels), 3.6 * len(comps)), squeeze=False, sharey="row"
    )
    for row, comp in zip(axes, comps, strict=True):
        for ax, v in zip(row, levels, strict=True):
            part = frame[(frame["levels"] == v) & (frame["compensation"] == comp)]
            for (method, noise), curve in part.groupby(["method", "noise_train"]):
                curve = curve.sort_values("t")
                color = style.color(method)
                ax.plot(
                    curve["t"],
                    curve["top1"],
                    ls="--" if noise else "-",
                    marker="o",
                    ms=3,
                    color=color,
                    label=f"{style.label(method)}, NATS {noise:.0%}",
                )
                band = curve["ci95"].fillna(0)
                ax.fill_between(
                    curve["t"], curve["top1"] - band, curve["top1"] + band, color=color, alpha=0.12
                )
            ax.set_xscale("log")
            ax.set_title(f"{v} levels, {'with' if comp else 'without'} drift compensation", fontsize=9)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("top-1 (%)")
    for ax in axes[-1]:
        ax.set_xlabel("time after programming (s)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=7, frameon=False)
    seeds, chips = int(frame["seeds"].max()), int(frame["chips"].max())
    band = f"95% CI over {seeds} seeds" if seeds >= 2 else "one seed: no interval"
    fig.suptitle(
        f"PCM drift (Joshi et al. 2020 model), {scale} scale, measured here; band: {band}, "
        f"{chips} chips per seed",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return style.save(fig, path_stem.parent, path_stem.name)


def render(
    results: str | Path = "results",
    scale: str = "proxy",
    figures_out: str | Path = "figures/out",
    tables_out: str | Path = "tables/out",
) -> list[Path]:
    sweeps = per_seed(results, scale)
    frame = points(sweeps)
    written = plot(frame, scale, Path(figures_out) / scale / "drift")
    table = frame.assign(t=frame["t"].map(lambda t: f"{t:g} s"))
    text = (
        f"# Accuracy vs time after programming on PCM ({scale} scale, measured here)\n\n"
        "top-1 mean ± 95% CI half-width over training seeds (chips averaged within a seed).\n\n"
        + table.to_markdown(index=False, floatfmt=".2f")
        + "\n\n"
        + "".join(f"- {line}\n" for line in day_loss(sweeps))
        + "\nTop-1 of A minus B with drift compensation, paired by training seed:\n\n"
        + "".join(f"- {line}\n" for line in versus(sweeps))
    )
    written.append(atomic_write(Path(tables_out) / scale / "drift.md", text))
    written.append(atomic_write(Path(tables_out) / scale / "drift.csv", frame.to_csv(index=False)))
    return written


def main(argv: list[str] | None = None) -> int:
    return style.cli(render, "python -m figures.drift", __doc__, argv, tables=True)


if __name__ == "__main__":
    sys.exit(main())
