"""Robustness curves from the results store: top-1 vs test-time weight noise, and vs ADC bits.

`python -m figures.robustness --scale proxy` writes figures/out/robustness.{png,pdf}, robustness_adc.{png,pdf}
and robustness.csv (every plotted point). Rows: Lloyd at each training noise and with HA-SGD; every quantizer
trained at the comparison noise. Columns: 3, 4, 8 levels. Bands: mean +- std over the noise draws (chips).
Reads only `results/robustness/<scale>/`; never trains.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.experiments.robustness import COMPARE_NOISE  # noqa: E402
from benchmarks.results import load_records  # noqa: E402

KEY = re.compile(r"^top1@noise(?P<delta>[0-9.e-]+)(?:/adc(?P<bits>\d+))?$")
AXES = {"noise": "test-time weight noise delta (%)", "adc": "ADC bits"}
ROWS = ("training noise / HA-SGD (lloyd)", f"quantizers, trained at {COMPARE_NOISE:.0%}")
CSV_HEADER = ["cell", "method", "levels", "noise_train", "noise_samples", "axis", "x", "top1", "top1_std"]


def label(record: dict[str, Any]) -> str:
    samples, epochs = record["recipe"]["noise_samples"], record["recipe"]["epochs"]
    if samples > 1:
        return f"HA-SGD L={samples}, train {record['noise_train']:.0%} ({epochs} ep)"
    return f"NATS train {record['noise_train']:.0%}"


def points(record: dict[str, Any], axis: str) -> list[tuple[float, float, float]]:
    """(x, mean, std) of one record's sweep along `axis`, sorted by x."""
    out = []
    for key, mean in record["metrics"].items():
        match = KEY.match(key)
        if match is None or (match["bits"] is None) != (axis == "noise"):
            continue
        x = 100 * float(match["delta"]) if axis == "noise" else int(match["bits"])
        out.append((x, mean, record["metrics"][key.replace("top1@", "top1_std@")]))
    return sorted(out)


def panels(records: list[dict[str, Any]]) -> dict[tuple[int, int], list[tuple[str, dict[str, Any]]]]:
    """(row, levels) -> [(legend, record)]: row 0 training noise and HA-SGD (Lloyd), row 1 quantizers."""
    out: dict[tuple[int, int], list[tuple[str, dict[str, Any]]]] = {}
    for r in records:
        if r["method"] == "lloyd":
            out.setdefault((0, r["levels"]), []).append((label(r), r))
        if r["noise_train"] == COMPARE_NOISE and r["recipe"]["noise_samples"] == 1:
            out.setdefault((1, r["levels"]), []).append((r["method"], r))
    return out


def plot(records: list[dict[str, Any]], axis: str, scale: str, stem: Path) -> list[Path]:
    grid = panels(records)
    levels = sorted({v for _, v in grid})
    fig, axes = plt.subplots(2, len(levels), figsize=(4.2 * len(levels), 7.5), squeeze=False, sharey=True)
    for col, v in enumerate(levels):
        for row, title in enumerate(ROWS):
            ax = axes[row][col]
            for name, record in sorted(grid.get((row, v), []), key=lambda item: item[0]):
                curve = points(record, axis)
                if not curve:
                    continue
                xs, mean, std = zip(*curve, strict=True)
                line = ax.plot(xs, mean, marker="o", ms=3, label=name)[0]
                lo = [m - s for m, s in zip(mean, std, strict=True)]
                hi = [m + s for m, s in zip(mean, std, strict=True)]
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
            fp = [r["metrics"]["fp_top1"] for _, r in grid.get((row, v), [])]
            if fp:
                ax.axhline(fp[0], color="grey", ls="--", lw=1, label="float model")
            ax.set_title(f"{v} levels: {title}", fontsize=9)
            ax.set_xlabel(AXES[axis])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        axes[0][col].set_ylabel("top-1 (%)")
        axes[1][col].set_ylabel("top-1 (%)")
    first = records[0]
    what = "ADC output bits (test noise 2%)" if axis == "adc" else "test-time weight noise"
    fig.suptitle(
        f"Top-1 vs {what}: {first['model']} on {first['dataset']}, {scale} scale (measured here; "
        f"band: +-1 std over {first['trials']} noise draws)",
        fontsize=10,
    )
    fig.tight_layout()
    written = []
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.name}.tmp.{ext}")
        fig.savefig(tmp, dpi=130)
        os.replace(tmp, path)
        written.append(path)
    plt.close(fig)
    return written


def write_csv(records: list[dict[str, Any]], path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        for r in records:
            cell = [r["cell"], r["method"], r["levels"], r["noise_train"], r["recipe"]["noise_samples"]]
            for axis in AXES:
                for x, mean, std in points(r, axis):
                    writer.writerow([*cell, axis, x, f"{mean:.2f}", f"{std:.2f}"])
    os.replace(tmp, path)
    return path


def render(
    results: str | Path = "results", scale: str = "proxy", out: str | Path = "figures/out"
) -> list[Path]:
    records = load_records(results, experiment="robustness", scale=scale)
    if not records:
        raise FileNotFoundError(
            f"no robustness results at scale {scale} under {results}/: "
            f"run `make robustness SCALE={scale}` first"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = plot(records, "noise", scale, out / "robustness")
    written += plot(records, "adc", scale, out / "robustness_adc")
    written.append(write_csv(records, out / "robustness.csv"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m figures.robustness", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="proxy", choices=("smoke", "proxy", "paper"))
    parser.add_argument("--results", default="results")
    parser.add_argument("--out", default="figures/out")
    args = parser.parse_args(argv)
    try:
        for path in render(args.results, args.scale, args.out):
            print(path)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
