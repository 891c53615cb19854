"""Figure 4(b): ResNet-18b (torch loop) and SSD (mmengine) at 4 and 8 levels, each as
A) NATS-trained, Gaussian-evaluated; B) NATS-trained, evaluated on measured conductances; C) trained without
noise, evaluated on them. SSD cells fine-tune from Table 4's float SSD (same float recipe: same cache)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from benchmarks.experiments import Cell, Row, expand, register_experiment, table3, table4

LEVELS = (4, 8)
SIMULATED_DELTA = 0.02  # the paper's measured std 0.32 uS ~ 0.02 * |G|max (section 4.4)
# Generated from the paper's statistics by figures/data/make_example_conductances.py: not measured.
DEFAULT_CONDUCTANCES = Path(__file__).resolve().parents[2] / "figures" / "data" / "example_conductances.csv"


def conductances() -> str:
    """$CONDUCTANCES (a user's measured file), else the shipped example."""
    return os.environ.get("CONDUCTANCES") or str(DEFAULT_CONDUCTANCES)


@register_experiment("fig4b")
def fig4b_cells(scale: str) -> list[Cell]:
    listed = []
    for setups, arch in ((table3.SETUPS, "resnet18b"), (table4.SETUPS, "ssd300")):
        setup = setups[scale]
        rows = [Row("lloyd", v, noise=n, archs=(arch,)) for v in LEVELS for n in (SIMULATED_DELTA, 0.0)]
        for cell in expand("fig4b", setup, rows):
            measured = dataclasses.replace(
                cell, noise_eval=0.0, noise_eval_file=conductances(), trials=setup.trials
            )
            listed += [cell, measured] if cell.noise_train > 0 else [measured]
    return listed
