"""Runner plugin: the experiments behind Figures 3 and 4(b), on Table 3's setups (sharing its float models).

- fig3: our noisy Lloyd cells that Table 3 and the delta search lack (`make fig3-results`).
- fig4b: ResNet-18b at 4 and 8 levels; A) NATS-trained, Gaussian-evaluated; B) NATS-trained, evaluated on
  the measured-conductance model; C) trained without noise, evaluated on it (`make fig4b-results`). B and C
  need the runner to evaluate with `cacim_core.measured.MeasuredNoise` (a Cell field `noise_eval_file`);
  until it has one, listing fig4b fails with a one-line error saying so.
"""

from __future__ import annotations

import dataclasses
import os

from benchmarks.experiments import Cell, Row, cells, expand, register_experiment
from benchmarks.experiments.table3 import SETUPS
from figures.context import DEFAULT_CONDUCTANCES
from figures.fig3 import CLASSIFICATION, PAIRS
from figures.fig4 import SIMULATED_DELTA

ARCHS = {"resnet18": "resnet18b", "resnet50": "resnet50b"}  # Figure 3 model family -> Table 3 arch


@register_experiment("fig3")
def fig3_cells(scale: str) -> list[Cell]:
    """Our noisy Lloyd cell for each classification pair the delta search does not already cover."""
    covered = {(c.arch, c.levels, c.noise_train) for c in cells("delta", scale)}
    rows = [
        Row("lloyd", pair.levels, noise=pair.noise, archs=(ARCHS[pair.model],))
        for pair in PAIRS
        if pair.experiments == CLASSIFICATION and (ARCHS[pair.model], pair.levels, pair.noise) not in covered
    ]
    return expand("fig3", SETUPS[scale], rows)


FIG4B_LEVELS = (4, 8)


@register_experiment("fig4b")
def fig4b_cells(scale: str) -> list[Cell]:
    """A, B and C of Figure 4(b) for ResNet-18b; the conductance file comes from $CONDUCTANCES if set."""
    if "noise_eval_file" not in {field.name for field in dataclasses.fields(Cell)}:
        raise ValueError(
            "fig4b needs the runner to evaluate with measured conductances (Cell.noise_eval_file -> "
            "cacim_core.measured.MeasuredNoise); that is not in benchmarks.runner yet"
        )
    conductances = os.environ.get("CONDUCTANCES") or str(DEFAULT_CONDUCTANCES)
    setup = SETUPS[scale]
    rows = [
        Row("lloyd", levels, noise=noise, archs=("resnet18b",))
        for levels in FIG4B_LEVELS
        for noise in (SIMULATED_DELTA, 0.0)
    ]
    listed = []
    for cell in expand("fig4b", setup, rows):
        measured = dataclasses.replace(
            cell, noise_eval=0.0, noise_eval_file=conductances, trials=setup.trials
        )
        listed += [cell, measured] if cell.noise_train > 0 else [measured]
    return listed
