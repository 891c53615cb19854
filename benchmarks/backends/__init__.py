"""Backends: how one cell is trained and evaluated. The orchestrator (benchmarks/runner.py) needs two calls:

    prepare(cells, ctx)            check every input (data, weights, files) before the first cell trains
    finetune_and_evaluate(cell, ctx) -> Outcome | None   Algorithm 1 from the (cached) float model
    discard(cell, ctx)             drop the cell's checkpoints, once the runner has made its record durable

`torch_loop` runs classification cells (a `Recipe`), `mmengine` runs OpenMMLab cells (an `MMRecipe`).
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from benchmarks import faults
from benchmarks.experiments import Cell
from benchmarks.metrics import fp_of, gap_of, ptq_of
from benchmarks.results import Claim, Metric, SweepPoint, claim_holder


class SetupError(ValueError):
    """Bad input found before any training starts (one line, names the fix)."""


@dataclass
class Context:
    scale: str
    results: Path
    data: Path | None
    weights: Path | None
    progress: bool = True
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    reset_head: bool = False
    amp: bool = False  # bf16 autocast in training (off by default: the paper trained in fp32)
    channels_last: bool = False

    @property
    def precision(self) -> str:
        return ("bf16-autocast" if self.amp else "fp32") + ("+channels_last" if self.channels_last else "")

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class Outcome:
    """What a backend measured for one cell; the orchestrator turns it into a `Record`."""

    metrics: dict[str, Metric]
    dataset_fingerprint: str
    train_time_s: float
    resumed: bool = False
    refits: dict[str, int] = field(default_factory=dict)
    sweep: list[SweepPoint] = field(default_factory=list)


#: What a run's flags or a cell can ask for beyond a plain recipe: name -> (how the user asked, test). A
#: backend lists in `supports` the ones it carries out; `check_supported` refuses any other before any work,
#: so no record claims a precision, sweep or option its backend ignored.
REQUESTS: dict[str, tuple[str, Callable[[Cell, Context], bool]]] = {
    "amp": ("--amp", lambda cell, ctx: ctx.amp),
    "channels_last": ("--channels-last", lambda cell, ctx: ctx.channels_last),
    "reset_head": ("--reset-head", lambda cell, ctx: ctx.reset_head),
    "distributed": ("torchrun (world size > 1)", lambda cell, ctx: ctx.world > 1),
    "sweep": ("a sweep of read-out conditions", lambda cell, ctx: bool(cell.sweep)),
    "options": ("extra QuantConfig options", lambda cell, ctx: bool(cell.options)),
    "measured_eval": ("a measured-conductance evaluation", lambda cell, ctx: bool(cell.noise_eval_file)),
}


class Backend(Protocol):
    name: str
    supports: frozenset[str]  # keys of REQUESTS it carries out
    hints: dict[str, str]  # per request it refuses: what to do instead (optional)

    def prepare(self, cells: list[Cell], ctx: Context) -> None: ...

    def finetune_and_evaluate(self, cell: Cell, ctx: Context) -> Outcome | None: ...

    def discard(self, cell: Cell, ctx: Context) -> None: ...


def check_supported(backend: Backend, cells: list[Cell], ctx: Context) -> None:
    """One line before any work for the first thing a cell or the run asks of `backend` that it cannot do."""
    unknown = set(backend.supports) - set(REQUESTS)
    if unknown:
        raise KeyError(
            f"{backend.name} backend supports unknown requests {sorted(unknown)}; known: {list(REQUESTS)}"
        )
    for cell in cells:
        for key, (asked, test) in REQUESTS.items():
            if key not in backend.supports and test(cell, ctx):
                hint = backend.hints.get(key, "drop it for these cells")
                raise SetupError(f"{cell.id}: the {backend.name} backend cannot carry out {asked}: {hint}")


def produce_once(path: Path, ctx: Context, produce: Callable[[], None], poll_s: float = 5.0) -> None:
    """Make a shared artefact (a float model) exactly once across the runs sharing a store: claim it and
    `produce()` it, or wait while another live run holds the claim (a dead run's claim is taken over)."""
    told = False
    claim_file = path.with_name(f".{path.name}.claim")
    while not path.is_file():
        claim = Claim.take(claim_file) if ctx.world == 1 else None
        if claim is None and ctx.world == 1:
            if not told:
                print(f"waiting for float model {path.name}: {claim_holder(claim_file)}", file=sys.stderr)
                told = True
            time.sleep(min(poll_s, faults.stale_after_s() / 4))
            continue
        try:
            if not path.is_file():
                produce()
        finally:
            if claim is not None:
                claim.release()
        return


def recipe_hash(recipe: object) -> str:
    return hashlib.sha256(repr(recipe).encode()).hexdigest()[:8]


def trained_float_key(cell: Cell, fingerprint: str) -> str:
    """The store key of the float model trained for (model, data, float recipe, seed), in both backends:
    cells and experiments that share it share the model. Model names may hold spaces and "/"."""
    key = f"{cell.model}-{cell.dataset}-{fingerprint}-{recipe_hash(cell.fp_recipe)}-s{cell.seed}"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", key)


def gap_metrics(name: str, fp: float, result: Metric) -> dict[str, Metric]:
    """`name` (the quantized model), `fp_<name>` and `gap_<name>` = fp - quantized (same draws' spread)."""
    return {
        name: result,
        fp_of(name): Metric(fp),
        gap_of(name): Metric(fp - result.mean, result.std, result.n),
    }


def ptq_metrics(name: str, fp: float, ptq: float) -> dict[str, Metric]:
    """`ptq_<name>` (right after conversion, before fine-tuning) and `gap_ptq_<name>` = fp - ptq."""
    return {ptq_of(name): Metric(ptq), gap_of(name, "ptq"): Metric(fp - ptq)}


def backend_for(cell: Cell) -> Backend:
    if cell.backend == "sentence":  # the transformer track (benchmarks/experiments/transformers.py)
        from benchmarks.backends import sentence

        return sentence.BACKEND
    if cell.backend == "mmengine":
        from benchmarks.backends import mmengine

        return mmengine.BACKEND
    from benchmarks.backends import torch_loop

    return torch_loop.BACKEND
