"""Read-only access to the results store for the figures: selecting typed records, their gaps, sweeps.

Figures never train. A bar is the mean over the training seeds of one cell (95% CI when there are several;
with one seed, the spread of its noise draws, labelled as such).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.metrics import gap_of
from benchmarks.results import Record, load_sweeps, seedless
from benchmarks.stats import t_interval


def model_family(name: str) -> str:
    """Normalised model family ('resnet18', 'resnet50', 'ssd', ...) so proxy and paper names match."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    for family in ("resnet18", "resnet50", "resnet20", "ssd", "pspnet", "vgg"):
        if family in key:
            return family
    return key


@dataclass(frozen=True)
class Gap:
    """One gap in percentage points (FP minus quantized): the mean over seeds and its uncertainty."""

    value: float
    std: float  # 95% CI half-width over seeds (n >= 2), else the std over one model's noise draws
    n: int  # training seeds
    record: Record  # the cell's first record (the fields its seeds share)


def band(means: list[float], one_run_std: float) -> tuple[float, float, int]:
    """(mean, band, seeds) of one cell's per-seed means: the 95% CI half-width over seeds when there are
    several, else `one_run_std`, the spread of that one model's noise draws (figures label which)."""
    interval = t_interval(means)
    return interval.mean, interval.half if interval.n >= 2 else one_run_std, interval.n


def gap(records: list[Record], metric: str) -> Gap | None:
    """The `metric` gap over the seeds of the most recently finished cell among `records` (several cells:
    show the newest); None when that cell has no finite gap."""
    cell = same_cell(records)
    key = gap_of(metric)
    values = [r.metrics[key] for r in cell if key in r.metrics]
    values = [m for m in values if math.isfinite(m.mean)]
    if not values:
        return None
    return Gap(*band([m.mean for m in values], values[0].std), cell[0])


def drawn_methods(records: Iterable[Record], wanted: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(drawn, absent): a figure draws lloyd (ours) and every other method with `records` (a plugin's copies
    of our cells, run with `METHODS=lloyd,mine PLUGIN=...`), or of `wanted` (--methods) lloyd and those
    with records; `absent` are the wanted ones without any, for the figure to report."""
    have = {r.method for r in records}
    if not wanted:
        return ["lloyd", *sorted(have - {"lloyd"})], []
    return [m for m in wanted if m in have or m == "lloyd"], [m for m in wanted if m not in have | {"lloyd"}]


def error_bars(seeds: Iterable[int]) -> str:
    """What the error bars are, from the seed counts of the drawn gaps (see `Gap.std`)."""
    counts = sorted(set(seeds))
    several = [n for n in counts if n > 1]
    if not several:
        return "std over noise draws (one seed)" if counts else "none"
    span = f"{several[0]}-{several[-1]}" if len(several) > 1 else f"{several[0]}"
    return f"95% CI over {span} seeds" + ("; one seed: std over noise draws" if 1 in counts else "")


def select(records: Iterable[Record], **wanted: object) -> list[Record]:
    """Records whose fields equal every `wanted` value ('model' compares families)."""
    return [r for r in records if all(_field_matches(r, key, value) for key, value in wanted.items())]


def _field_matches(record: Record, key: str, value: object) -> bool:
    have = getattr(record, key)
    if key == "model":
        return model_family(str(have)) == model_family(str(value))
    return have == value


def same_cell(records: list[Record]) -> list[Record]:
    """Every seed of the most recently finished cell among `records`."""
    if not records:
        return []
    newest = max(records, key=lambda r: r.finished_at)

    def key(r: Record) -> tuple[str, str]:
        return r.experiment, seedless(r.cell, r.init, r.seed)

    return [r for r in records if key(r) == key(newest)]


def sweeps(experiment: str, scale: str, results: str | Path):
    """`load_sweeps` as a DataFrame; FileNotFoundError naming the `make` target when the store has none."""
    found = load_sweeps(experiment, scale, results)
    if found.empty:
        raise FileNotFoundError(
            f"no {experiment} results at scale {scale} under {results}/: "
            f"run `make {experiment} SCALE={scale}` first"
        )
    return found
