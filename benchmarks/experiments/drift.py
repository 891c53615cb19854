"""Accuracy vs time after programming on PCM (Joshi et al. 2020 statistics, cacim_core.pcm): Lloyd, the
noise-aware Lloyd, uniform and log2 at 3/4/8 levels, trained with and without NATS, each evaluated at 1 s,
1 h, 1 day, 1 month and 1 year, with and without global drift compensation (`make drift`).

`lloyd_noise` places its levels for the PCM model read one day after programming with compensation
(the middle of the evaluated range); the other quantizers see only their training noise.
"""

from __future__ import annotations

from dataclasses import replace

from benchmarks.experiments import Cell, Condition, Recipe, Row, expand, register_experiment
from benchmarks.experiments.table1 import SETUPS as TABLE1
from cacim_core.pcm import TIMES

METHODS = ("lloyd", "lloyd_noise", "uniform", "log2")
LEVELS = (3, 4, 8)
TRAIN_NOISES = (0.0, 0.02)
AWARE_OF = "pcm:t=86400,compensation=true"
SWEEP = tuple(
    Condition(f"pcm:t={t:g},compensation={str(c).lower()}") for t in TIMES.values() for c in (True, False)
)

SETUPS = {
    "paper": replace(TABLE1["paper"], seeds=(0, 1, 2)),
    "proxy": replace(TABLE1["proxy"], seeds=(0, 1, 2)),
    "smoke": replace(TABLE1["smoke"], fp_recipe=Recipe(epochs=1, batch_size=64, lr=0.1), seeds=(0, 1)),
}


@register_experiment("drift")
def cells(scale: str) -> list[Cell]:
    setup = SETUPS[scale]
    methods, levels, noises = (
        (("lloyd", "lloyd_noise"), (4,), (0.0,)) if scale == "smoke" else (METHODS, LEVELS, TRAIN_NOISES)
    )
    sweep = SWEEP[::4] if scale == "smoke" else SWEEP  # smoke: 1 s, 1 day, 1 year, with compensation
    listed = []
    for cell in expand("drift", setup, [Row(m, v, noise=n) for m in methods for v in levels for n in noises]):
        options = (("quantizer_kwargs", {"noise": AWARE_OF}),) if cell.method == "lloyd_noise" else ()
        listed.append(replace(cell, sweep=sweep, trials=setup.trials, options=options))
    return listed
