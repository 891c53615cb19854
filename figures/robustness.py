"""Robustness curves from the results store: top-1 vs test-time weight noise, ADC bits, stuck devices and
crossbar tile size.

`python -m figures.robustness --scale proxy` writes figures/out/<scale>/robustness.{png,pdf} (noise), one
robustness_<axis>.{png,pdf} per other axis (adc, stuck, tile, tile_adc) and robustness.csv (every plotted
point, its band, seeds and draws). Rows: Lloyd at each training noise and with HA-SGD; every quantizer
trained at the comparison noise. Columns: 3, 4, 8 levels. Bands: 95% CI over seeds, or +- std over one
run's noise draws (chips). The tile axes put the whole layer (the untiled point of the same test condition)
beside the tiled points; in the CSV its x is inf, a tile's x its rows (= cols).
Reads only `results/robustness/<scale>/`; never trains.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from benchmarks.experiments.robustness import COMPARE_NOISE
from benchmarks.results import atomic_write, load
from benchmarks.stats import t_interval
from cacim_core import quantizers
from cacim_core.noise import parse
from figures import store, style

AXES = {
    "noise": "test-time weight noise delta (%)",
    "adc": "ADC bits",
    "stuck": "devices stuck (%)",
    "tile": "crossbar tile (rows = cols)",
    "tile_adc": "crossbar tile (rows = cols)",
}
WHOLE = float("inf")  # the tile axes' x for the whole layer (no tiling)
ROWS = ("training noise / HA-SGD (lloyd)", f"quantizers, trained at {COMPARE_NOISE:.0%}")


def label(cell: pd.Series) -> str:
    found = re.search(r"-L(\d+)e(\d+)", cell["curve"])
    if found:
        return f"HA-SGD L={found[1]}, train {cell['noise_train']:.0%} ({found[2]} ep)"
    return f"NATS train {cell['noise_train']:.0%}"


def _stuck_percent(spec: object) -> float | None:
    """Percent of devices stuck for a stuck-cell sweep point, None for any other point."""
    model = parse(spec) if isinstance(spec, str) else None
    return 100 * (model.gmin + model.gmax) if model is not None and hasattr(model, "gmax") else None


def _method_label(method: str, levels: int) -> str:
    """The method, and the level count it really uses where that differs (APoT's 2^b - 1)."""
    used = quantizers.build(method, int(levels)).effective_levels if method in quantizers.names() else levels
    return method if used == levels else f"{method} ({used} levels used)"


def _condition(point: pd.Series) -> tuple[str, int | None]:
    """A point's test noise and ADC bits, comparable across rows (pandas turns a missing ADC into NaN)."""
    return str(point["test_noise"]), None if pd.isna(point["adc_bits"]) else int(point["adc_bits"])


def tile_condition(sweeps: pd.DataFrame, axis: str) -> tuple[str, int | None] | None:
    """The one (test noise, ADC bits) of the tile axis (`tile`: no ADC, `tile_adc`: with one); None if the
    store has no such points (records from before the tile axis)."""
    tiled = sweeps[sweeps["tile"].notna() & (sweeps["adc_bits"].isna() == (axis == "tile"))]
    found = {_condition(p) for _, p in tiled.iterrows()}
    if len(found) > 1:
        raise ValueError(f"the {axis} axis was measured at several test conditions {sorted(found, key=str)}")
    return found.pop() if found else None


def select(sweeps: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The top-1 sweep points of one axis, with their x."""
    top1 = sweeps[sweeps["metric"] == "top1"].copy()
    top1["stuck"] = [_stuck_percent(v) for v in top1["test_noise"]]
    untiled = top1["tile"].isna()
    if axis == "stuck":
        return top1[top1["stuck"].notna() & untiled].assign(x=top1["stuck"])
    if axis in ("tile", "tile_adc"):
        condition = tile_condition(top1, axis)
        top1 = top1[[_condition(p) == condition for _, p in top1.iterrows()]]
        return top1.assign(x=[WHOLE if t is None else float(t[0]) for t in top1["tile"]])
    top1 = top1[top1["stuck"].isna() & untiled & (top1["adc_bits"].isna() == (axis == "noise"))]
    return top1.assign(x=top1["test_noise"].astype(float) * 100 if axis == "noise" else top1["adc_bits"])


def curves(sweeps: pd.DataFrame, axis: str) -> pd.DataFrame:
    """One point per (cell without seed, x): mean over seeds, band = 95% CI over seeds (several seeds) or
    the std over one model's noise draws (one seed)."""
    top1 = select(sweeps, axis)
    top1["curve"] = [c.replace(f"-s{s}", "", 1) for c, s in zip(top1["cell"], top1["seed"], strict=True)]
    rows = []
    for (curve, x), group in top1.groupby(["curve", "x"]):
        interval = t_interval(group["mean"].tolist())
        band = interval.half if interval.n >= 2 else float(group["std"].iloc[0])
        first = group.iloc[0]
        rows.append(
            {
                "curve": curve,
                "method": first["method"],
                "levels": first["levels"],
                "noise_train": first["noise_train"],
                "noise_samples": first["noise_samples"],
                "axis": axis,
                "x": x,
                "top1": interval.mean,
                "band": band,
                "seeds": interval.n,
                "draws": int(first["n"]),
            }
        )
    return pd.DataFrame(rows)


def _title(sweeps: pd.DataFrame, axis: str) -> str:
    if axis not in ("tile", "tile_adc"):
        return {
            "adc": "ADC output bits (test noise 2%)",
            "noise": "test-time weight noise",
            "stuck": "stuck devices (half at g_min, half at g_max)",
        }[axis]
    noise, bits = tile_condition(sweeps, axis)
    try:
        noise = f"{float(noise):.0%}"
    except ValueError:  # a noise spec, shown as it is
        pass
    adc = f", a {bits}-bit ADC per tile" if bits is not None else ""
    return f"crossbar tile size (test noise {noise}{adc})"


def _positions(points: pd.DataFrame, axis: str) -> tuple[dict[float, float], list[str]]:
    """x -> where it is drawn, and tick labels: evenly spaced tile sizes with the whole layer last."""
    xs = sorted(points["x"].unique())
    if axis not in ("tile", "tile_adc"):
        return {x: x for x in xs}, []
    return {x: i for i, x in enumerate(xs)}, ["whole layer" if x == WHOLE else f"{x:g}" for x in xs]


def plot(
    sweeps: pd.DataFrame, fp: float, axis: str, scale: str, stem: Path
) -> tuple[list[Path], pd.DataFrame]:
    points = curves(sweeps, axis)
    where, ticks = _positions(points, axis)
    levels = sorted(points["levels"].unique())
    fig, axes = plt.subplots(2, len(levels), figsize=(4.2 * len(levels), 7.5), squeeze=False, sharey=True)
    for col, v in enumerate(levels):
        for row, title in enumerate(ROWS):
            ax = axes[row][col]
            here = points[points["levels"] == v]
            if row == 0:
                here = here[here["method"] == "lloyd"]
            else:
                here = here[(here["noise_train"] == COMPARE_NOISE) & (here["noise_samples"] == 1)]
            for _curve, c in here.groupby("curve"):  # sorted by curve
                c = c.sort_values("x")
                name = label(c.iloc[0]) if row == 0 else _method_label(c.iloc[0]["method"], v)
                x = c["x"].map(where)
                line = ax.plot(x, c["top1"], marker="o", ms=3, label=name)[0]
                ax.fill_between(
                    x, c["top1"] - c["band"], c["top1"] + c["band"], color=line.get_color(), alpha=0.2
                )
            ax.axhline(fp, color="grey", ls="--", lw=1, label="float model")
            if ticks:
                ax.set_xticks(range(len(ticks)), ticks)
            ax.set_title(f"{v} levels: {title}", fontsize=9)
            ax.set_xlabel(AXES[axis])
            ax.set_ylabel("top-1 (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    seeds, draws = int(points["seeds"].max()), int(points["draws"].max())
    band = (
        f"band: 95% CI over {seeds} seeds"
        if seeds >= 2
        else f"band: +-1 std over {draws} noise draws of one run"
    )
    first = sweeps.iloc[0]
    title = _title(sweeps, axis)
    fig.suptitle(
        f"Top-1 vs {title}: {first['model']} on {first['dataset']}, {scale} scale (measured here; {band})",
        fontsize=10,
    )
    fig.tight_layout()
    return style.save(fig, stem.parent, stem.name), points


def render(
    results: str | Path = "results", scale: str = "proxy", out: str | Path = "figures/out"
) -> list[Path]:
    sweeps = store.sweeps("robustness", scale, results)
    fp = float(load("robustness", scale, results)["fp_top1"].mean())
    out = Path(out) / scale  # per scale, like the tables: a smoke run never replaces proxy curves
    written, tables = [], []
    for axis in AXES:
        if select(sweeps, axis).empty:  # records from before this axis: the others are still drawn
            print(
                f"robustness: no {axis} sweep points at scale {scale}; recompute the records with "
                f"`make robustness SCALE={scale} RERUN_STALE=1`",
                file=sys.stderr,
            )
            continue
        stem = "robustness" if axis == "noise" else f"robustness_{axis}"
        more, points = plot(sweeps, fp, axis, scale, out / stem)
        written += more
        tables.append(points)
    table = pd.concat(tables).to_csv(index=False, float_format="%.3f")  # columns in the order `curves` gives
    return written + [atomic_write(out / "robustness.csv", table)]


def main(argv: list[str] | None = None) -> int:
    return style.cli(render, "python -m figures.robustness", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
