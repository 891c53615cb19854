"""Robustness curves from the results store: top-1 vs test-time weight noise, ADC bits, stuck devices,
crossbar tile size, IR drop (line resistance, one figure per tile size) and input DAC bits.

`python -m figures.robustness --scale proxy` writes figures/out/<scale>/robustness.{png,pdf} (noise), one
robustness_<axis>.{png,pdf} per other axis (adc, stuck, tile, tile_adc, dac, and irdrop_<rows> per tile
size) and robustness.csv (every plotted point, its band, seeds and draws; an IR-drop point's x is the line
resistance in ohm, 0 the tile axis's point of the same tile and noise; a DAC point's x its bits, inf the
ADC axis's point without a DAC). Rows: Lloyd at each training noise and with HA-SGD; every quantizer
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
from benchmarks.metrics import fp_of
from benchmarks.results import atomic_write, load, seedless
from cacim_core import quantizers
from cacim_core.noise import GaussianNoise, parse, parts, spec_of
from figures import store, style

AXES = {
    "noise": "test-time weight noise delta (%)",
    "adc": "ADC bits",
    "stuck": "devices stuck (%)",
    "tile": "crossbar tile (rows = cols)",
    "tile_adc": "crossbar tile (rows = cols)",
    "dac": "input DAC bits",
    "irdrop": "line resistance (ohm per cell)",
}
CATEGORICAL = ("tile", "tile_adc", "dac", "irdrop")  # evenly spaced x, the reference point labelled
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


def circuit(spec: object) -> tuple[float | None, int | None, str]:
    """(IR-drop ohm, DAC bits, the spec without them) of a sweep point's noise; None where absent."""
    if not isinstance(spec, str):
        return None, None, spec_of(spec)
    built = parts(spec)
    wire = next((float(p.r) for p in built if p.name == "irdrop"), None)
    bits = next((int(p.bits) for p in built if p.name == "dac"), None)
    rest = "+".join(p.spec for p in built if p.name not in ("irdrop", "dac") and p.active)
    return wire, bits, rest or "none"


def _kind(axis: str) -> tuple[str, int | None]:
    """("irdrop", rows) for an IR-drop axis "irdrop_<rows>", else (axis, None)."""
    if axis.startswith("irdrop_"):
        return "irdrop", int(axis.removeprefix("irdrop_"))
    return axis, None


def axes(sweeps: pd.DataFrame) -> list[str]:
    """The plain axes, then one IR-drop axis per tile size the store has IR-drop points for."""
    wires = [t for spec, t in zip(sweeps["test_noise"], sweeps["tile"], strict=True) if circuit(spec)[0]]
    rows = sorted({int(t[0]) for t in wires if isinstance(t, tuple)})
    return [a for a in AXES if a != "irdrop"] + [f"irdrop_{r}" for r in rows]


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
    plain = pd.Series([circuit(v)[:2] == (None, None) for v in sweeps["test_noise"]], index=sweeps.index)
    tiled = sweeps[plain & sweeps["tile"].notna() & (sweeps["adc_bits"].isna() == (axis == "tile"))]
    found = {_condition(p) for _, p in tiled.iterrows()}
    if len(found) > 1:
        raise ValueError(f"the {axis} axis was measured at several test conditions {sorted(found, key=str)}")
    return found.pop() if found else None


def _circuit_points(top1: pd.DataFrame, axis: str) -> pd.DataFrame:
    """An IR-drop or DAC axis: its points and their reference (r = 0: the same tile and noise; no DAC: the
    same ADC and noise), which another axis measured; x the ohm or bits (inf: no DAC)."""
    kind, rows = _kind(axis)
    found = [circuit(v) for v in top1["test_noise"]]
    wire, bits, rest = ([f[i] for f in found] for i in range(3))
    top1 = top1.assign(wire=wire, dac=bits, rest=rest)
    if kind == "irdrop":
        tiled = pd.Series(
            [isinstance(t, tuple) and int(t[0]) == rows for t in top1["tile"]], index=top1.index
        )
        points = top1[tiled & top1["wire"].notna() & top1["dac"].isna()]
        refs = top1[tiled & top1["wire"].isna() & top1["dac"].isna()]
        x, ref_x = points["wire"], 0.0
    else:
        points = top1[top1["dac"].notna() & top1["wire"].isna() & top1["tile"].isna()]
        refs = top1[top1["dac"].isna() & top1["wire"].isna() & top1["tile"].isna()]
        x, ref_x = points["dac"], WHOLE
    conditions = set(zip(points["rest"], points["adc_bits"].fillna(-1), strict=True))
    if len(conditions) > 1:
        raise ValueError(f"the {axis} axis was measured at several test conditions {sorted(conditions)}")
    keep = [(r, a) in conditions for r, a in zip(refs["rest"], refs["adc_bits"].fillna(-1), strict=True)]
    return pd.concat([points.assign(x=x.astype(float)), refs[keep].assign(x=ref_x)])


def select(sweeps: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The top-1 sweep points of one axis, with their x."""
    top1 = sweeps[sweeps["metric"] == "top1"].copy()
    if _kind(axis)[0] in ("irdrop", "dac"):
        points = _circuit_points(top1, axis)
        return points if points["x"].ne(WHOLE if axis == "dac" else 0.0).any() else points.iloc[:0]
    top1 = top1[[circuit(v)[:2] == (None, None) for v in top1["test_noise"]]]
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
    top1["curve"] = [seedless(*key) for key in zip(top1["cell"], top1["init"], top1["seed"], strict=True)]
    rows = []
    for (curve, x), group in top1.groupby(["curve", "x"]):
        mean, spread, seeds = store.band(group["mean"].tolist(), float(group["std"].iloc[0]))
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
                "top1": mean,
                "band": spread,
                "seeds": seeds,
                "draws": int(first["n"]),
            }
        )
    return pd.DataFrame(rows)


def _title(sweeps: pd.DataFrame, axis: str) -> str:
    kind, rows = _kind(axis)
    if kind in ("irdrop", "dac"):
        points = _circuit_points(sweeps[sweeps["metric"] == "top1"], axis)
        first = points[points["x"] != (0.0 if kind == "irdrop" else WHOLE)].iloc[0]
        noise = first["rest"]
        model = parse(noise)
        if isinstance(model, GaussianNoise) and model.mean == 0:
            noise = f"{model.delta:.0%}"
        if kind == "irdrop":
            return f"IR drop on {rows}x{rows} tiles, first-order model (test noise {noise})"
        return f"input DAC bits (test noise {noise}, a {int(first['adc_bits'])}-bit ADC)"
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
    kind = _kind(axis)[0]
    if kind not in CATEGORICAL:
        return {x: x for x in xs}, []
    whole = {"dac": "no DAC"}.get(kind, "whole layer")
    names = ["ideal (0)" if kind == "irdrop" and x == 0 else whole if x == WHOLE else f"{x:g}" for x in xs]
    return {x: i for i, x in enumerate(xs)}, names


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
            ax.set_xlabel(AXES[_kind(axis)[0]])
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
    fp = float(load("robustness", scale, results)[fp_of("top1")].mean())
    out = Path(out) / scale  # per scale, like the tables: a smoke run never replaces proxy curves
    written, tables = [], []
    for axis in axes(sweeps):
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
