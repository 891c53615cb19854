"""Read-only access to the results store for the figures: finding records and reading their metrics.

Figures never train. They read records (schema in the project notes) and report which inputs are missing
and which `make` target produces them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


def load_records(
    root: str | Path = "results", experiment: str | None = None, scale: str | None = None
) -> list[dict]:
    """Records of the store; uses `benchmarks.results.load_records` when that module exists."""
    try:
        from benchmarks.results import load_records as store_loader
    except ImportError:
        return _read_json_records(Path(root), experiment, scale)
    return store_loader(root=str(root), experiment=experiment, scale=scale)


def _read_json_records(root: Path, experiment: str | None, scale: str | None) -> list[dict]:
    """Fallback reader of `results/<experiment>/<scale>/<cell_id>.json` (until the store module lands)."""
    if not root.exists():
        return []
    pattern = f"{experiment or '*'}/{scale or '*'}/*.json"
    records = []
    for path in sorted(root.glob(pattern)):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); delete it and rerun the experiment") from exc
        records.append(record)
    return records


def model_family(name: str) -> str:
    """Normalised model family ('resnet18', 'resnet50', 'ssd', ...) so proxy and paper names match."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    for family in ("resnet18", "resnet50", "resnet20", "ssd", "pspnet", "vgg"):
        if family in key:
            return family
    return key


def is_noise(value: object) -> bool:
    """True for a nonzero numeric noise level or a named noise model such as 'measured'."""
    if isinstance(value, str):
        return value not in ("", "0", "none")
    return value is not None and float(value) > 0


def is_measured_noise(value: object) -> bool:
    """Noise given by the empirical (measured conductance) model rather than a relative delta."""
    return isinstance(value, str) and value.startswith("measured")


@dataclass(frozen=True)
class Gap:
    """One gap in percentage points (FP minus quantized), with its std over noise draws (0 if none)."""

    value: float
    std: float
    record: dict


def gap(record: dict, metric: str) -> Gap | None:
    """The `metric` gap of a record: `gap_<metric>` if stored, else `fp_<metric> - <metric>`."""
    metrics = record.get("metrics", {})
    if f"gap_{metric}" in metrics:
        value = metrics[f"gap_{metric}"]
        std = metrics.get(f"gap_{metric}_std", metrics.get(f"{metric}_std", 0.0))
    elif metric in metrics and f"fp_{metric}" in metrics:
        value = metrics[f"fp_{metric}"] - metrics[metric]
        std = metrics.get(f"{metric}_std", 0.0)
    else:
        return None
    if value is None or not math.isfinite(float(value)):
        return None
    return Gap(float(value), float(std or 0.0), record)


def select(records: Iterable[dict], **wanted: object) -> list[dict]:
    """Records whose fields equal every `wanted` value ('model' compares families; floats with tolerance)."""
    chosen = []
    for record in records:
        if all(_field_matches(record, key, value) for key, value in wanted.items()):
            chosen.append(record)
    return chosen


def _field_matches(record: dict, key: str, value: object) -> bool:
    if key not in record:
        return False
    have = record[key]
    if key == "model":
        return model_family(str(have)) == model_family(str(value))
    if isinstance(value, float) and isinstance(have, int | float):
        return math.isclose(float(have), value, abs_tol=1e-9)
    return have == value


def latest(records: list[dict]) -> dict | None:
    """The most recently finished record (several seeds/reruns of one cell: show the newest)."""
    if not records:
        return None
    return max(records, key=lambda record: str(record.get("finished_at", "")))
