"""Runner plugin: the cells Figure 3 needs beyond Table 3 and the delta search (ours with 1-2% noise).

`python -m benchmarks run fig3 --plugin figures.experiments --scale proxy` (what `make fig3-results` runs,
after the delta search). Cells reuse Table 3's setups, so they share its cached float models.
"""

from __future__ import annotations

from benchmarks.experiments import Cell, Row, cells, expand, register_experiment
from benchmarks.experiments.table3 import SETUPS

from figures.fig3 import CLASSIFICATION, PAIRS

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
