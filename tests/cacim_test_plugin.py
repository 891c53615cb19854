"""A user plugin as `--plugin` imports it: registers a quantizer and a slow experiment (kill/resume test)."""

import torch

from benchmarks.experiments import Cell, Recipe, register_experiment
from cacim_core import quantizers


@quantizers.register("maxabs_grid")
class MaxAbsGrid(quantizers.Quantizer):
    """Evenly spaced levels over [-max|w|, max|w|]: a user's own method, joined to the tables by name."""

    refit_by_projection = True

    def fit(self, w: torch.Tensor) -> None:
        m = w.detach().abs().max()
        self.set_levels(torch.linspace(-1.0, 1.0, self.num_levels, dtype=w.dtype, device=w.device) * m)


@register_experiment("killtest")
def killtest(scale: str, epochs: int = 15) -> list[Cell]:
    """One smoke cell with many short epochs, so a kill lands between checkpoints."""
    recipe = Recipe(epochs=epochs, batch_size=64, lr=0.01)
    return [
        Cell(
            "killtest",
            "resnet20",
            "resnet20_narrow",
            "digits8",
            "lloyd",
            3,
            recipe,
            Recipe(epochs=1, batch_size=64, lr=0.1),
            noise_train=0.02,
            noise_eval=0.02,
            trials=2,
            max_batches=2,
        )
    ]


@register_experiment("slowkilltest")
def slowkilltest(scale: str) -> list[Cell]:
    """killtest's cell for long enough (400 short epochs) that a second run finds it held and waits."""
    from dataclasses import replace

    return [replace(cell, experiment="slowkilltest") for cell in killtest(scale, epochs=400)]


@register_experiment("mmkilltest")
def mmkilltest(scale: str) -> list[Cell]:
    """Table 4's first smoke cell with a 40-iteration fine-tune (a checkpoint every 4): room for a kill."""
    from dataclasses import replace

    from benchmarks.experiments import table4

    cell = table4.cells("smoke")[0]
    return [
        replace(
            cell, experiment="mmkilltest", recipe=replace(cell.recipe, phase=table4.multistep(40, 1e-4, 1))
        )
    ]
