"""Figure 3: our models trained and evaluated with weight noise vs other methods without noise.

The six pairs are the paper's (tables-clean.md, Figure 3). `cells` adds the noisy Lloyd cells that Table 3
and the delta search lack (`make fig3-results`); figures/fig3.py reads the pairs and the records.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.experiments import Cell, Row, cells, expand, register_experiment
from benchmarks.experiments.table3 import SETUPS


@dataclass(frozen=True)
class Pair:
    """One bar pair: our noisy model vs another method's noise-free one, at the same model and levels."""

    model: str  # model family in the records ("resnet18", "resnet50", "ssd")
    model_label: str
    levels: int
    noise: float  # delta our model was trained and evaluated with
    other: str  # the other method's registry name
    other_first_last: str  # that method's policy in the paper's number ("fp" = the paper's '*')
    quoted_gap: float  # the paper's gap for the other method (percentage points)
    quoted_from: str
    metric: str  # "top1" or "mAP"
    experiments: tuple[str, ...]  # experiments whose records may fill this pair
    make_target: str


# Table 3, the delta search (3% noise on ternary ResNet-18b) and the extra noisy cells below
CLASSIFICATION = ("table3", "delta", "fig3")
DETECTION = ("table4",)
R18, R50 = ("resnet18", "ResNet-18b"), ("resnet50", "ResNet-50b")
# fmt: off
# (model, levels, our delta, other method, its first/last policy, its gap quoted from Table 3), paper order
TABLE3_PAIRS = (
    (R18, 3, 0.03, "hefan", "quantize", 3.9),
    (R18, 8, 0.01, "lqnet", "fp",       1.0),
    (R50, 3, 0.01, "hefan", "quantize", 2.1),
    (R50, 4, 0.01, "lqnet", "fp",       1.3),
    (R18, 4, 0.02, "lqnet", "fp",       2.3),
)
PAIRS = (
    *(
        Pair(*model, levels, delta, other, rule, gap, "paper: Table 3, ImageNet", "top1",
             CLASSIFICATION, "make fig3-results")
        for model, levels, delta, other, rule, gap in TABLE3_PAIRS
    ),
    Pair("ssd", "SSD", 3, 0.01, "yang", "quantize", 1.5, "paper: Table 4, VOC07", "mAP",
         DETECTION, "make table4"),
)
# fmt: on
ARCHS = {"resnet18": "resnet18b", "resnet50": "resnet50b"}  # model family -> Table 3 arch


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
