"""Experiments as data: each module here registers a function scale -> list[Cell]; `cells(name, scale)`.

A cell is one trained-and-evaluated model at one seed (one record in the results store). Its recipe picks
the backend: a `Recipe` runs in the torch loop (classification), an `MMRecipe` in mmengine's Runner with
CacimHook (detection, segmentation). A scale picks the models, data, recipes, noise draws and seeds; the
rows (method, levels, first/last policy, noise) are the same at every scale.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.results import flat_option
from cacim_core.registry import Registry

SCALES = ("smoke", "proxy", "paper")
#: the control arm's method name: the float model fine-tuned with the quantized cells' recipe, no quantizer
CONTROL = "float"
BUILTIN = (
    "table1",
    "table2",
    "table3",
    "delta",
    "robustness",
    "drift",
    "table4",
    "table5",
    "fig3",
    "fig4b",
    "transformers",
)
EXPERIMENTS: Registry[Callable[[str], list[Cell]]] = Registry("experiment")


def register_experiment(name: str) -> Callable[[Callable[[str], list[Cell]]], Callable[[str], list[Cell]]]:
    """Plugins add experiments: `@register_experiment("mine")` on a function scale -> list[Cell]."""
    return EXPERIMENTS.register(name)


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
    """How a model is trained in the torch loop (the paper's hyper-parameters at paper scale)."""

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
    # after fine-tuning, BatchNorm running statistics re-estimated over this many unaugmented 128-image
    # training batches, noise-free (0: kept as training left them, the paper's). A 2-epoch proxy fine-tune
    # leaves stale statistics behind (table3_nobn: ResNet-50b 3L lloyd* seed 0 read 65.3% top-1 with them)
    bn_reestimate: int = 0

    def __repr__(self) -> str:
        """The dataclass repr without the fields added later that sit at their default (LATER_FIELDS), so
        that records and float models made before a field existed keep their recipe keys."""
        shown = [f for f in fields(self) if LATER_FIELDS.get(f.name, _UNSET) != getattr(self, f.name)]
        return f"Recipe({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in shown)})"

    def declared(self) -> dict:
        """The recipe as records store it (JSON round trip: tuples become lists), later fields at their
        default left out as in the repr."""
        plain = {k: v for k, v in asdict(self).items() if LATER_FIELDS.get(k, _UNSET) != v}
        return json.loads(json.dumps(plain, default=str))


_UNSET = object()
#: Recipe fields added after records existed, with their defaults (see Recipe.__repr__)
LATER_FIELDS: dict[str, Any] = {"bn_reestimate": 0}


@dataclass(frozen=True)
class MMRecipe:
    """How a model is trained in mmengine: a config file (benchmarks/openmmlab/configs) plus overrides."""

    config: str
    phase: dict[str, Any]  # schedule overrides (iterations, lr, param_scheduler)
    metrics: tuple[tuple[str, str, float], ...]  # (our name, mmengine metric key, factor to percent)
    data: Any = None  # a ShapesSpec: the generated VOC-format data; None: a real VOCdevkit under DATA
    extra: dict[str, Any] = field(default_factory=dict)  # applied to both phases (e.g. a smaller batch)
    tta: bool = False  # multi-scale + flip test (mmseg's tta_pipeline)


@dataclass(frozen=True)
class Setup:
    """What a scale means for one experiment: networks (paper arch -> registry name), data, recipes."""

    models: dict[str, str]
    dataset: str
    recipe: Recipe | MMRecipe
    # trains the float model when no file is supplied; None: the user's file (torch loop), or no float
    # phase at all (mmengine cells with init="init_cfg")
    fp_recipe: Recipe | MMRecipe | None
    trials: int  # noise draws at evaluation for noisy cells
    seeds: tuple[int, ...] = (0,)
    max_batches: int | None = None  # smoke only: batches per training epoch; evaluation uses one batch


class Condition(NamedTuple):
    """One more evaluation of a trained model (a sweep point): test noise (a delta or any noise spec), ADC
    bits (None: the cell's own), crossbar tile (None: the cell's own; `cacim_core.device.set_tile`)."""

    noise: float | str
    adc_bits: int | None = None
    tile: tuple[int, int] | None = None


@dataclass(frozen=True)
class Cell:
    experiment: str
    arch: str  # the paper's network name (resnet20, vgg_like, resnet18b, resnet50b, ssd300, pspnet)
    model: str  # the registry name (or config description) used at this scale
    dataset: str
    method: str
    levels: int
    recipe: Recipe | MMRecipe
    fp_recipe: Recipe | MMRecipe | None
    first_last: str = "quantize"  # quantize | fp (the paper's *) | 8bit (the paper's +)
    noise_train: float = 0.0  # NATS delta during fine-tuning
    noise_eval: float = 0.0  # delta of the evaluation draws
    # pretrained: Algorithm 1 from a float model; scratch: random init; init_cfg (mmengine): the config's own
    # init (its pretrained backbone), no float phase
    init: str = "pretrained"
    seed: int = 0
    trials: int = 1
    max_batches: int | None = None
    options: tuple[tuple[str, Any], ...] = ()  # more QuantConfig fields by name, e.g. (("adc_bits", 6),)
    sweep: tuple[Condition, ...] = ()  # more evaluations of the trained model, other test conditions
    noise_eval_file: str = ""  # evaluate on measured conductances (cacim_core.measured) instead of Gaussian

    @property
    def backend(self) -> str:
        """The recipe's own `backend` (e.g. the transformer track's "sentence"), else by recipe type."""
        return getattr(self.recipe, "backend", "mmengine" if isinstance(self.recipe, MMRecipe) else "torch")

    @property
    def id(self) -> str:
        noise = f"n{self.noise_train * 100:g}" + (f"e{self.noise_eval * 100:g}" if self.noise_eval else "")
        extra = "".join(f"-{k}={flat_option(v)}" for k, v in self.options)
        if isinstance(self.recipe, Recipe) and self.recipe.noise_samples != 1:
            extra += f"-L{self.recipe.noise_samples}e{self.recipe.epochs}"
        base = f"{self.arch}-{self.method}-{self.levels}L-{self.first_last}-{noise}-{self.init}-s{self.seed}"
        if self.noise_eval_file:
            extra += f"-measured={Path(self.noise_eval_file).stem}"
        return base + extra


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


#: the control arm of a table: per arch and seed, the float model fine-tuned with the quantized cells' recipe
#: and no quantizer (levels 0, no noise), so a gap against it is quantization alone (not more training)
CONTROL_ROW = Row(CONTROL, 0)
#: a table's recipe-sensitivity variants (label -> experiment): its claim rows and control rerun with
#: another proxy recipe; `make sensitivity TABLE=...` runs them, tables/sensitivity.py compares verdicts
SENSITIVITY = {"table1": {"fine-tune x4": "table1_ft4x", "data seed 1": "table1_data1"}}
#: a table's diagnosis run (experiment, what it changes): the same cells under one change of the proxy
#: protocol; a seed-spread note under the table gives what those seeds read there, when it has run
DIAGNOSES = {
    "table3": ("table3_nobn", "BatchNorm statistics as the fine-tune left them (the paper's protocol)"),
}


def stretch(recipe: Recipe, factor: int) -> Recipe:
    """`recipe` `factor` times as long: epochs, step milestones and the periodic schedule all scaled, so
    the learning rate follows the same shape over the longer run."""
    schedule = recipe.schedule
    every = None
    if schedule.every is not None:
        start, period, gamma = schedule.every
        every = (start * factor, period * factor, gamma)
    milestones = tuple((at * factor, gamma) for at, gamma in schedule.milestones)
    return replace(recipe, epochs=recipe.epochs * factor, schedule=Schedule(milestones, every))


def expand(experiment: str, setup: Setup, rows: list[Row]) -> list[Cell]:
    return [
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
        for row in rows
        for arch in row.archs or tuple(setup.models)
        for seed in (setup.seeds if row.all_seeds else setup.seeds[:1])
    ]


def _load_builtins() -> None:
    for name in BUILTIN:
        if name not in EXPERIMENTS:
            importlib.import_module(f"benchmarks.experiments.{name}")


def cells(
    name: str, scale: str, methods: list[str] | None = None, seeds: list[int] | None = None
) -> list[Cell]:
    """The cells of an experiment at a scale.

    `methods` filters them, and a method the table does not list (e.g. a plugin's quantizer) gets a copy of
    every cell of our own method (lloyd): same levels, layer policy, noise and recipe, so it joins the table.
    `seeds` replaces the scale's seeds (every row runs at each).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    _load_builtins()
    listed = EXPERIMENTS.get(name)(scale)
    if seeds:
        firsts = {replace(c, seed=0).id: c for c in listed}
        listed = [replace(c, seed=s) for c in firsts.values() for s in seeds]
    if not methods:
        return _registered(listed)
    known = {c.method for c in listed}
    chosen = [c for c in listed if c.method in methods]
    for method in methods:
        if method not in known and method != CONTROL:  # the control is no quantizer: never a lloyd copy
            chosen += [replace(c, method=method) for c in listed if c.method == "lloyd"]
    return _registered(chosen)


def _registered(listed: list[Cell]) -> list[Cell]:
    """`listed`, after checking that every method is a registered quantizer or the control (one line
    naming --plugin)."""
    from cacim_core import quantizers

    unknown = sorted({c.method for c in listed} - set(quantizers.names()) - {CONTROL})
    if unknown:
        raise ValueError(
            f"unknown method(s) {', '.join(unknown)}; registered: {', '.join(quantizers.names())} "
            f"and the control arm {CONTROL!r} (a plugin module can register more: --plugin MODULE_OR_FILE)"
        )
    return listed
