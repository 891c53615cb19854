"""Experiments as data: each table module declares its cells for every scale; `cells(name, scale)` lists them.

A cell is one trained-and-evaluated model (one record in the results store). A scale picks the models,
data, training recipe, number of noise draws and seeds; the rows (method, levels, first/last policy,
noise) are the same at every scale.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

SCALES = ("smoke", "proxy", "paper")


@dataclass(frozen=True)
class Schedule:
    """Learning-rate factor per epoch: step `milestones` [(epoch, x factor)], then x `every[2]` every
    `every[1]` epochs from epoch `every[0]` on."""

    milestones: tuple[tuple[int, float], ...] = ()
    every: tuple[int, int, float] | None = None

    def factor(self, epoch: int) -> float:
        f = 1.0
        for at, gamma in self.milestones:
            if epoch >= at:
                f *= gamma
        if self.every is not None:
            start, period, gamma = self.every
            if epoch >= start:
                f *= gamma ** (1 + (epoch - start) // period)
        return f


@dataclass(frozen=True)
class Recipe:
    """How a model is trained (the paper's hyper-parameters at paper scale)."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"  # sgd (momentum) | adam
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Schedule = field(default_factory=Schedule)
    refit_threshold: float = 0.1  # Algorithm 1's T
    loss: str = "ce"  # ce | squared_hinge (Hou & Kwok's L2-SVM loss)
    noise_samples: int = 1  # HA-SGD: gradient averaged over this many weight-noise draws per step (1: NATS)


@dataclass(frozen=True)
class Setup:
    """What a scale means for one experiment: networks (paper arch -> registry name), data, recipes."""

    models: dict[str, str]
    dataset: str
    recipe: Recipe
    fp_recipe: Recipe | None  # trains the float model when no file is supplied; None: the user supplies it
    trials: int  # noise draws at evaluation for noisy cells
    seeds: tuple[int, ...] = (0,)
    max_batches: int | None = None  # smoke only: batches per training epoch; evaluation uses one batch


@dataclass(frozen=True)
class Cell:
    experiment: str
    arch: str  # the paper's network name (resnet20, vgg_like, resnet18b, resnet50b)
    model: str  # the registry name used at this scale
    dataset: str
    method: str
    levels: int
    recipe: Recipe
    fp_recipe: Recipe | None
    first_last: str = "quantize"  # quantize | fp (the paper's *) | 8bit (the paper's +)
    noise_train: float = 0.0  # NATS delta during fine-tuning
    noise_eval: float = 0.0  # delta of the evaluation draws
    init: str = "pretrained"  # pretrained: Algorithm 1 from a float model; scratch: random init
    seed: int = 0
    trials: int = 1
    max_batches: int | None = None
    options: tuple[tuple[str, Any], ...] = ()  # more QuantConfig fields by name, e.g. (("adc_bits", 6),)
    sweep: tuple[tuple[float, int | None], ...] = ()  # more evaluations: (test noise delta, ADC bits | None)

    @property
    def id(self) -> str:
        noise = f"n{self.noise_train * 100:g}" + (f"e{self.noise_eval * 100:g}" if self.noise_eval else "")
        extra = "".join(f"-{k}={v}" for k, v in self.options)
        if self.recipe.noise_samples != 1:
            extra += f"-L{self.recipe.noise_samples}e{self.recipe.epochs}"
        base = f"{self.arch}-{self.method}-{self.levels}L-{self.first_last}-{noise}-{self.init}-s{self.seed}"
        return base + extra


def sweep_key(metric: str, delta: float, adc_bits: int | None) -> str:
    """Metric name of one sweep point in a record, e.g. top1@noise0.04 or top1_std@noise0.02/adc4."""
    return f"{metric}@noise{delta:g}" + (f"/adc{adc_bits}" if adc_bits is not None else "")


@dataclass(frozen=True)
class Row:
    """One (method, levels, policy, noise) combination of a table; expanded over archs and seeds."""

    method: str
    levels: int
    first_last: str = "quantize"
    noise: float = 0.0  # trained and evaluated with this delta
    init: str = "pretrained"
    archs: tuple[str, ...] | None = None  # None: every arch of the experiment
    all_seeds: bool = True  # False: only the first seed (a baseline measured once)


def expand(experiment: str, setup: Setup, rows: list[Row]) -> list[Cell]:
    cells = []
    for row in rows:
        for arch in row.archs or tuple(setup.models):
            for seed in setup.seeds if row.all_seeds else setup.seeds[:1]:
                cells.append(
                    Cell(
                        experiment=experiment,
                        arch=arch,
                        model=setup.models[arch],
                        dataset=setup.dataset,
                        method=row.method,
                        levels=row.levels,
                        recipe=setup.recipe,
                        fp_recipe=setup.fp_recipe,
                        first_last=row.first_last,
                        noise_train=row.noise,
                        noise_eval=row.noise,
                        init=row.init,
                        seed=seed,
                        trials=setup.trials if row.noise else 1,
                        max_batches=setup.max_batches,
                    )
                )
    return cells


EXPERIMENTS = ("table1", "table2", "table3", "delta", "robustness")
_EXTRA: dict[str, Callable[[str], list[Cell]]] = {}


def register_experiment(name: str) -> Callable[[Callable[[str], list[Cell]]], Callable[[str], list[Cell]]]:
    """Plugins add experiments: `@register_experiment("mine")` on a function scale -> list[Cell]."""

    def wrap(fn: Callable[[str], list[Cell]]) -> Callable[[str], list[Cell]]:
        _EXTRA[name] = fn
        return fn

    return wrap


def experiment_names() -> list[str]:
    return [*EXPERIMENTS, *sorted(_EXTRA)]


def cells(name: str, scale: str, methods: list[str] | None = None) -> list[Cell]:
    """The cells of an experiment at a scale; `methods` filters them, and a method the table does not list
    (e.g. a plugin's quantizer) is run on every cell of our own method (lloyd), so it joins the table."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    if name in _EXTRA:
        listed = _EXTRA[name](scale)
    elif name in EXPERIMENTS:
        listed = importlib.import_module(f"benchmarks.experiments.{name}").cells(scale)
    else:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(experiment_names())}")
    if not methods:
        return listed
    known = {c.method for c in listed}
    chosen = [c for c in listed if c.method in methods]
    for method in methods:
        if method not in known:
            chosen += [replace(c, method=method) for c in listed if c.method == "lloyd"]
    return chosen
