"""The delta search of section 4: ternary ResNet-18b trained (NATS) and evaluated with delta = 1..4%."""

from benchmarks.experiments import Cell, Row, expand, register_experiment
from benchmarks.experiments.table3 import SETUPS

ROWS = [Row("lloyd", 3, noise=delta / 100, archs=("resnet18b",)) for delta in (1, 2, 3, 4)]


@register_experiment("delta")
def cells(scale: str) -> list[Cell]:
    return expand("delta", SETUPS[scale], ROWS)
