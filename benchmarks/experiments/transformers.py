"""The transformer track: all-MiniLM-L6-v2 (real pretrained weights) with every Linear and Embedding weight
quantized, sentence-embedding fidelity to the float model (benchmarks/text.py), PTQ and a short noise-aware
fine-tune by distillation, then the same model on the device models (a sweep per cell).

A cell: quantize the float encoder (levels fitted on each layer's weights) -> PTQ fidelity (noise-free) ->
`steps` Adam steps distilling to the float model's embeddings of the seed's distillation sentences (loss
1 - cosine, straight-through estimator, fresh NATS noise of delta `noise_train` in every forward, Algorithm
1's re-fit check after each step) -> fidelity on the seed's retrieval set under `trials` seeded chips of the
evaluation noise, and at every sweep condition. Seeds draw the data split (benchmarks.text.split), the
batches and the noise; the float model is the same pretrained one at every seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from benchmarks.experiments import Cell, Condition, Row, Setup, expand, register_experiment

ARCH = "minilm_l6"
MODEL = "all-MiniLM-L6-v2"
LEVELS = (3, 4, 8)
#: quantizers per level count: GDQ (lloyd) and fitted grids of the registry; a plugin gets lloyd's cells
#: (--methods). lqnet is left out (per channel, it would fit one basis per embedding row, i.e. per token).
METHODS = {3: ("lloyd", "uniform", "log2"), 4: ("lloyd", "uniform", "log2"), 8: ("lloyd", "uniform", "log2")}
NATS = 0.02  # the NATS delta of the noise-aware rows (trained and evaluated at it)
PCM_TIMES = (("1s", 1.0), ("1d", 86400.0), ("1y", 365 * 86400.0))
#: the device models every noise-aware lloyd/uniform cell is read on (no retraining): Gaussian, PCM drift with
#: and without global drift compensation at 1 s / 1 day / 1 year, 1% stuck devices, 64 x 64 tiles with a 6-bit
#: ADC each (at the NATS delta)
DEVICE_SWEEP = (
    Condition(0.0),
    Condition(0.05),
    *(Condition(f"pcm:t={t:g}") for _, t in PCM_TIMES),
    *(Condition(f"pcm:t={t:g},compensation=false") for _, t in PCM_TIMES),
    Condition("stuck:gmin=0.005,gmax=0.005"),
    Condition(NATS, 6, (64, 64)),
)


@dataclass(frozen=True)
class DistillRecipe:
    """PTQ, then `steps` Adam steps of distillation to the float embeddings on `train_sentences` sentences;
    fidelity measured on `eval_sentences` others, each cut to `max_length` tokens."""

    steps: int
    batch_size: int
    lr: float
    train_sentences: int
    eval_sentences: int
    max_length: int
    refit_threshold: float | None = 0.1
    k: int = 10  # nearest-neighbour agreement@k
    backend: ClassVar[str] = "sentence"


SETUPS = {
    "proxy": Setup(
        {ARCH: MODEL},
        "stdlib-docstrings",
        DistillRecipe(steps=6, batch_size=16, lr=2e-4, train_sentences=96, eval_sentences=96, max_length=32),
        fp_recipe=None,
        trials=3,
        seeds=(0, 1, 2),
    ),
    "smoke": Setup(
        {ARCH: MODEL},
        "stdlib-docstrings",
        DistillRecipe(steps=2, batch_size=8, lr=2e-4, train_sentences=16, eval_sentences=24, max_length=16),
        fp_recipe=None,
        trials=2,
    ),
}
SETUPS["paper"] = replace(
    SETUPS["proxy"],
    recipe=DistillRecipe(
        steps=200, batch_size=32, lr=1e-4, train_sentences=512, eval_sentences=512, max_length=128
    ),
    trials=10,
    seeds=(0, 1, 2, 3, 4),
)


def rows(scale: str) -> list[Row]:
    if scale == "smoke":  # every code path (PTQ, NATS fine-tune, first/last, the device sweep) in seconds
        return [Row("lloyd", 3), Row("lloyd", 8), Row("log2", 3), Row("lloyd", 3, noise=NATS)]
    if scale == "proxy":  # what a loaded 2-core CPU runs in about half an hour (3 seeds)
        return [
            *(Row(m, v) for v in (3, 8) for m in METHODS[v]),
            Row("lloyd", 4),
            Row("lloyd", 3, noise=NATS),
        ]
    plain = [Row(m, v) for v in LEVELS for m in METHODS[v]]
    noisy = [Row(m, v, noise=NATS) for v in (3, 8) for m in ("lloyd", "uniform")]
    policies = [Row("lloyd", 3, first_last=p) for p in ("fp", "8bit")]
    return plain + noisy + policies


def swept(cell: Cell, scale: str) -> Cell:
    """The noise-aware cells carry the device sweep (smoke: a short one): read out on each device model."""
    if not cell.noise_train:
        return cell
    sweep = DEVICE_SWEEP if scale != "smoke" else (Condition("pcm:t=86400"), Condition(NATS, 6, (64, 64)))
    return replace(cell, sweep=sweep)


@register_experiment("transformers")
def cells(scale: str) -> list[Cell]:
    return [swept(c, scale) for c in expand("transformers", SETUPS[scale], rows(scale))]
