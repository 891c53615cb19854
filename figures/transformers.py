"""The transformer track's figure, from the results store: all-MiniLM-L6-v2 sentence-embedding fidelity.

`python -m figures.transformers --scale proxy` writes figures/out/<scale>/transformers.{png,pdf} and
transformers.csv (every plotted point, its band and n). Left: nearest-neighbour agreement@10 with the float
model vs levels, per quantizer, right after quantization (PTQ, dashed) and after the noise-aware distillation
(solid), every layer quantized, noise-free rows. Right: the NATS-trained cells read on each device model of
their sweep (Gaussian, PCM drift with/without compensation, stuck cells, tiles with ADCs). Bands and error
bars: 95% CI over seeds (several seeds), else +-1 std over one run's noise draws. Reads only
`results/transformers/<scale>/`; never trains.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from benchmarks.experiments.transformers import PCM_TIMES
from benchmarks.metrics import ptq_of
from benchmarks.results import atomic_write, load, load_sweeps
from figures import store, style

METRIC = "nn10"


POINT = ["panel", "method", "levels", "x", "stage", "value", "band", "seeds"]


def level_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """One point per (method, levels, stage): PTQ and fine-tuned NN@10, noise-free all-quantized rows."""
    plain = frame[(frame["noise_train"] == 0) & (frame["first_last"] == "quantize")]
    rows = []
    for (method, levels), group in plain.groupby(["method", "levels"]):
        for stage, column in (("PTQ", ptq_of(METRIC)), ("fine-tuned", METRIC)):
            mean, band, seeds = store.band(group[column].tolist(), float(group[f"{column}_std"].iloc[0]))
            rows.append(
                {
                    "panel": "levels",
                    "method": method,
                    "levels": levels,
                    "x": str(levels),
                    "stage": stage,
                    "value": mean,
                    "band": band,
                    "seeds": seeds,
                }  # fmt: skip
            )
    return pd.DataFrame(rows, columns=POINT)


def _condition(point: pd.Series) -> str:
    """A sweep point's label: its noise spec, ADC bits and tile."""
    noise = point["test_noise"]
    if not isinstance(noise, str):
        text = f"gaussian {float(noise):.0%}"
    else:
        text = noise.replace("compensation=false", "no comp")
        for label, seconds in PCM_TIMES:  # "pcm:t=3.1536e+07" reads as "pcm 1y"
            text = text.replace(f"pcm:t={seconds:g}", f"pcm {label}")
    if not pd.isna(point["adc_bits"]):
        text += f", ADC {int(point['adc_bits'])} b"
    if point["tile"] is not None and not (isinstance(point["tile"], float) and pd.isna(point["tile"])):
        text += f", tile {point['tile'][0]}x{point['tile'][1]}"
    return text


def device_points(sweeps: pd.DataFrame) -> pd.DataFrame:
    """One point per (method, levels, condition) of the sweep: NN@10 over seeds."""
    chosen = sweeps[sweeps["metric"] == METRIC].copy()
    if chosen.empty:
        return pd.DataFrame(columns=[*POINT, "draws"])
    chosen["x"] = [_condition(p) for _, p in chosen.iterrows()]
    rows = []
    for (method, levels, x), group in chosen.groupby(["method", "levels", "x"], sort=False):
        mean, band, seeds = store.band(group["mean"].tolist(), float(group["std"].iloc[0]))
        rows.append(
            {
                "panel": "device",
                "method": method,
                "levels": levels,
                "x": x,
                "stage": "fine-tuned (NATS)",
                "value": mean,
                "band": band,
                "seeds": seeds,
                "draws": int(group["n"].max()),
            }  # fmt: skip
        )
    return pd.DataFrame(rows)


def render(
    results: str | Path = "results", scale: str = "proxy", out: str | Path = "figures/out"
) -> list[Path]:
    frame = load("transformers", scale, results)
    if frame.empty:
        raise FileNotFoundError(
            f"no transformers records at scale {scale}: run `make transformers SCALE={scale}`"
        )
    levels, device = level_curves(frame), device_points(load_sweeps("transformers", scale, results))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1.6]})
    for method, group in levels.groupby("method"):
        for stage, style_ in (("PTQ", "--"), ("fine-tuned", "-")):
            g = group[group["stage"] == stage].sort_values("levels")
            left.errorbar(g["levels"], g["value"], yerr=g["band"], ls=style_, marker="o", ms=3, capsize=2,
                          color=style.color(method), label=f"{method} {stage}")  # fmt: skip
    left.set_xticks(sorted(levels["levels"].unique()))
    left.set_xlabel("levels")
    left.set_ylabel("NN@10 agreement with float (%)")
    left.set_title("every Linear and Embedding quantized, noise-free", fontsize=9)
    left.grid(alpha=0.3)
    left.legend(fontsize=6)
    if not device.empty:
        labels = list(dict.fromkeys(device["x"]))
        curves = list(device.groupby(["method", "levels"]))
        width = 0.8 / len(curves)
        for i, ((method, v), g) in enumerate(curves):
            xs = [labels.index(x) + (i - (len(curves) - 1) / 2) * width for x in g["x"]]
            shade = 0.5 + 0.5 * (v == min(device["levels"]))
            right.bar(xs, g["value"], width, yerr=g["band"], capsize=2, color=style.color(method),
                      alpha=shade, label=f"{method} {v}L, NATS-trained")  # fmt: skip
        right.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=7)
        right.set_ylabel("NN@10 agreement with float (%)")
        right.set_title("the NATS-trained models on the device models (no retraining)", fontsize=9)
        right.grid(alpha=0.3, axis="y")
        right.legend(fontsize=6)
    if levels.empty:
        left.text(0.5, 0.5, "no noise-free rows in the store", ha="center", transform=left.transAxes)
    seeds = int(max([*levels["seeds"], *device["seeds"], 0]))
    band = f"95% CI over {seeds} seeds" if seeds >= 2 else "+-1 std over one run's noise draws"
    first = frame.iloc[0]
    fig.suptitle(
        f"{first['model']} on {first['dataset']} (fingerprint {first['dataset_fingerprint']}), {scale} "
        f"scale: measured here; bars/bands: {band}",
        fontsize=9,
    )
    fig.tight_layout()
    folder = Path(out) / scale
    written = style.save(fig, folder, "transformers")
    table = pd.concat([levels, device]).to_csv(index=False, float_format="%.3f")
    return written + [atomic_write(folder / "transformers.csv", table)]


def main(argv: list[str] | None = None) -> int:
    return style.cli(render, "python -m figures.transformers", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
