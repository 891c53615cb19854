"""`make bench-cell`: one real proxy-scale cell of each network of Tables 1 and 3, broken into its parts,
and what they add up to: cells per CPU-hour (issue 26, part 1: measure before cutting).

The cell is the suite's own (`benchmarks.experiments.cells(table, "proxy")`), run by the torch loop's own
code: `float_model`, then `TorchLoop.finetune_and_evaluate` (build, `quantize_model`, `train`, PTQ and noisy
evaluation, BN re-estimation). Nothing of the recipe is re-implemented here: the functions `torch_loop` calls
(its loader, `ha_sgd_backward`, the optimizer, `refit_check`, `accuracy`, `noisy_evaluate`, ...) are wrapped
for the run with timers, and the parametrizations get forward hooks. Each part is charged the CPU seconds
(`time.process_time()`, this process; torch at 1 thread, no loader workers on in-memory data: the suite's
proxy workers) and wall seconds spent in it and not in a part nested inside it; what is left over is "setup
and bookkeeping", so the parts of a run add up to its process time.

Training runs `--steps` steps of every epoch (`Cell.max_batches`) and its parts are scaled to the recipe's
steps; evaluation, BN re-estimation, checkpoints and setup run whole. The float model (8 epochs) is trained
the same way and charged to each cell as its share: the cells of the experiment that start from it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

from benchmarks.backends import Context, torch_loop
from benchmarks.experiments import CONTROL, Cell, cells
from cacim_core.convert import QuantizedWeight

#: the measured cell per network: (experiment, arch); a Lloyd 4-level cell, every layer quantized, seed 0,
#: with training noise where the experiment has one (Table 1 does, Table 3 has no noisy rows)
NETWORKS = (("table1", "resnet20"), ("table3", "resnet18b"), ("table3", "resnet50b"))
TRAIN_PARTS = ("data loading + augmentation", "forward", "backward", "optimizer step", "refit_check")
CELL_PARTS = (
    *TRAIN_PARTS,
    "conversion (quantize_model)",
    "checkpoint saves",
    "clean evaluation",
    "BN re-estimation",
    "final evaluation",
    "setup and bookkeeping",
)
FLOAT_PARTS = (*TRAIN_PARTS[:4], "checkpoint saves", "clean evaluation", "setup and bookkeeping")
#: the training paths the bench can put side by side (`--paths`): name -> the run's Context fields (the
#: `make table3` flags); each changes how a cell computes, never its recipe
PATHS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "channels_last": {"channels_last": True},
}
QUANTIZER = "quantizer + noise"  # the parametrizations' forward, inside the part that ran them
REST = "setup and bookkeeping"


class Meter:
    """Exclusive CPU and wall seconds per (phase, part): time in a part entered inside another is charged to
    the inner one only, so a phase's parts add up to the process time of the phase."""

    def __init__(self) -> None:
        self.cpu: dict[tuple[str, str], float] = defaultdict(float)
        self.wall: dict[tuple[str, str], float] = defaultdict(float)
        self.count: Counter[tuple[str, str]] = Counter()
        self.inner_cpu: dict[tuple[str, str], float] = defaultdict(float)  # QUANTIZER, inclusive
        self.stack: list[tuple[str, str]] = []
        self.phase = ""
        self._mark = (0.0, 0.0)
        self._hook_start: list[float] = []

    def _charge(self) -> None:
        now = (time.process_time(), time.perf_counter())
        if self.stack:
            self.cpu[self.stack[-1]] += now[0] - self._mark[0]
            self.wall[self.stack[-1]] += now[1] - self._mark[1]
        self._mark = now

    def enter(self, part: str) -> None:
        self._charge()
        self.stack.append((self.phase, part))
        self.count[self.stack[-1]] += 1

    def exit(self) -> None:
        self._charge()
        self.stack.pop()

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        self.enter(name)
        try:
            yield
        finally:
            self.exit()

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            with self.part(name):
                return fn(*args, **kwargs)

        return run

    def in_part(self, name: str) -> bool:
        return bool(self.stack) and self.stack[-1][1] == name

    def hook_quantizers(self, model: nn.Module) -> None:
        """Time every parametrization's forward (quantizer and noise draw), inside whichever part runs it."""

        def start(*_: object) -> None:
            self._hook_start.append(time.process_time())

        def stop(*_: object) -> None:
            self.inner_cpu[self.stack[-1]] += time.process_time() - self._hook_start.pop()

        for module in model.modules():
            if isinstance(module, QuantizedWeight):
                module.register_forward_pre_hook(start)
                module.register_forward_hook(stop)


class TimedLoader:
    """A training loader whose batches are charged to data loading (`train` reads `sampler` and len)."""

    def __init__(self, loader: Any, meter: Meter) -> None:
        self.loader, self.meter, self.sampler = loader, meter, loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)
        while True:
            with self.meter.part(TRAIN_PARTS[0]):
                batch = next(batches, None)
            if batch is None:
                return
            yield batch


@contextmanager
def instrumented(meter: Meter, eval_batches: int | None) -> Iterator[None]:
    """torch_loop's collaborators wrapped with timers for the block. `eval_batches`: how much of the test set
    every evaluation reads, the measured cell's own (a shortened training must not shorten evaluation)."""
    names = ("make_loader", "make_optimizer", "quantize_model", "accuracy", "ha_sgd_backward")
    real = {name: getattr(torch_loop, name) for name in names}

    def make_loader(*args: Any, **kwargs: Any) -> Any:
        loader = real["make_loader"](*args, **kwargs)
        return TimedLoader(loader, meter) if kwargs.get("train") else loader

    def backward(model: nn.Module, loss_fn: Callable[[nn.Module], Any], samples: int = 1) -> float:
        with meter.part("backward"):  # ha_sgd_backward's forwards are charged to "forward"
            return real["ha_sgd_backward"](model, meter.timed("forward", loss_fn), samples)

    def make_optimizer(*args: Any) -> torch.optim.Optimizer:
        optimizer = real["make_optimizer"](*args)
        optimizer.register_step_pre_hook(lambda *_: meter.enter("optimizer step"))
        optimizer.register_step_post_hook(lambda *_: meter.exit())
        return optimizer

    def quantize_model(model: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        with meter.part("conversion (quantize_model)"):
            real["quantize_model"](model, *args, **kwargs)
        meter.hook_quantizers(model)
        return model

    def accuracy(model: nn.Module, dataset: Any, ctx: Context, max_batches: int | None = None) -> Any:
        if meter.in_part("final evaluation"):  # one chip of noisy_evaluate
            return real["accuracy"](model, dataset, ctx, eval_batches)
        with meter.part("clean evaluation"):
            return real["accuracy"](model, dataset, ctx, eval_batches)

    wrapped = {
        "make_loader": make_loader,
        "ha_sgd_backward": backward,
        "make_optimizer": make_optimizer,
        "quantize_model": quantize_model,
        "accuracy": accuracy,
        "refit_check": meter.timed("refit_check", torch_loop.refit_check),
        "save_checkpoint": meter.timed("checkpoint saves", torch_loop.save_checkpoint),
        "noisy_evaluate": meter.timed("final evaluation", torch_loop.noisy_evaluate),
        "reestimate_bn": meter.timed("BN re-estimation", torch_loop.reestimate_bn),
        "calibration_batches": meter.timed("BN re-estimation", torch_loop.calibration_batches),
    }
    with ExitStack() as stack:
        for name, fn in wrapped.items():
            stack.enter_context(mock.patch.object(torch_loop, name, fn))
        yield


@dataclass
class Breakdown:
    """One cell's parts over its whole recipe, CPU and wall seconds (training parts scaled up)."""

    cell: Cell
    cpu: dict[str, float]  # the cell's own parts (CELL_PARTS)
    wall: dict[str, float]
    quantizer_cpu: dict[str, float]  # QUANTIZER inside each part that ran the parametrizations (included)
    float_cpu: dict[str, float]  # the float model's whole training (FLOAT_PARTS), before sharing
    float_wall: dict[str, float]
    shared_by: int  # cells of the experiment that start from that float model
    steps: tuple[int, int]  # training steps measured, steps of the recipe (the cell)
    float_steps: tuple[int, int]
    draws: int  # chips of the final evaluation
    measured_cpu: float  # process time of the two runs as they ran (unscaled, float model unshared)

    @property
    def float_share(self) -> float:
        return sum(self.float_cpu.values()) / self.shared_by

    @property
    def total_cpu(self) -> float:
        """CPU-s per cell: its own parts and its share of the float model."""
        return sum(self.cpu.values()) + self.float_share


def chosen_cell(experiment: str, arch: str, scale: str) -> Cell:
    """The experiment's Lloyd 4-level cell of `arch`, every layer quantized, seed 0; the noisy one if any."""
    candidates = [
        c
        for c in cells(experiment, scale)
        if (c.arch, c.method, c.levels, c.first_last, c.seed) == (arch, "lloyd", 4, "quantize", 0)
    ]
    return max(candidates, key=lambda c: c.noise_train)


def float_siblings(cell: Cell, listed: list[Cell]) -> int:
    """Cells of `listed` that fine-tune the float model `cell` does (`trained_float_key`'s fields)."""
    key = (cell.model, cell.dataset, cell.fp_recipe, cell.seed)
    return sum((c.model, c.dataset, c.fp_recipe, c.seed) == key for c in listed)


def breakdown(
    cell: Cell,
    listed: list[Cell],
    steps: int | None = None,
    backend: torch_loop.TorchLoop | None = None,
    path: str = "fp32",
) -> Breakdown:
    """Run `cell` (its float model first, in a scratch store) with every part timed. `steps`: training steps
    per epoch actually run, scaled up to the recipe's (None: the whole recipe, as a smoke cell's). `listed`:
    the experiment's cells (the float model's share). `backend` keeps the data set loaded between calls.
    `path`: one of PATHS, how the float model and the cell train."""
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; known: {', '.join(PATHS)}")
    if steps is not None and cell.max_batches is not None:
        raise ValueError(f"{cell.id} already runs {cell.max_batches} batches per epoch: pass steps=None")
    backend = backend or torch_loop.TorchLoop()
    measured = cell if steps is None else replace(cell, max_batches=steps)
    meter = Meter()
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(
            scale="cellbench", results=Path(tmp), data=None, weights=None, progress=False, **PATHS[path]
        )
        data = backend._bundle(cell.dataset, ctx)
        cpu0 = time.process_time()
        with instrumented(meter, cell.max_batches and 1):
            meter.phase = "float"
            with meter.part(REST):
                torch_loop.float_model(measured, data, ctx)
            meter.phase = "cell"
            with meter.part(REST):
                backend.finetune_and_evaluate(measured, ctx)
        measured_cpu = time.process_time() - cpu0

    def factors(phase: str, epochs: int, batch: int) -> tuple[dict[str, float], tuple[int, int]]:
        """Per part, recipe / measured for the training parts (1 for the rest); and (steps run, recipe's)."""
        per_epoch = min(len(data.train) // batch, cell.max_batches or len(data.train))
        done = meter.count[(phase, "optimizer step")]
        if steps is None:
            return {}, (done, done)
        fetched = meter.count[(phase, TRAIN_PARTS[0])]  # one more per epoch: the fetch that ends it
        out = {p: epochs * per_epoch / done for p in TRAIN_PARTS[1:]}
        return {TRAIN_PARTS[0]: epochs * (per_epoch + 1) / fetched, **out}, (done, epochs * per_epoch)

    def scale(phase: str, parts: tuple[str, ...], by: dict[str, float], seconds: dict) -> dict[str, float]:
        return {p: seconds[(phase, p)] * by.get(p, 1.0) for p in parts}

    by, cell_steps = factors("cell", cell.recipe.epochs, cell.recipe.batch_size)
    by_float, float_steps = factors("float", cell.fp_recipe.epochs, cell.fp_recipe.batch_size)
    draws = cell.trials if cell.noise_eval > 0 or cell.noise_eval_file else 1
    return Breakdown(
        cell,
        scale("cell", CELL_PARTS, by, meter.cpu),
        scale("cell", CELL_PARTS, by, meter.wall),
        {p: s for p, s in scale("cell", CELL_PARTS, by, meter.inner_cpu).items() if s > 0},
        scale("float", FLOAT_PARTS, by_float, meter.cpu),
        scale("float", FLOAT_PARTS, by_float, meter.wall),
        float_siblings(cell, listed),
        cell_steps,
        float_steps,
        draws,
        measured_cpu,
    )


def estimate_cpu(cell: Cell, measured: Breakdown) -> float:
    """CPU-s of another cell of the measured cell's network: the same training, setup and float share (other
    quantizers' own costs taken as Lloyd's); its own final evaluation (its chips, or one clean pass); the
    control arm without PTQ evaluation, conversion, refit_check and the parametrizations' forward."""
    cpu = measured.cpu
    noisy = cell.noise_eval > 0 or bool(cell.noise_eval_file)
    per_draw = (
        cpu["final evaluation"] / measured.draws if noisy and measured.draws > 1 else cpu["clean evaluation"]
    )
    own = sum(cpu.values()) - cpu["final evaluation"] + (cell.trials if noisy else 1) * per_draw
    if cell.method == CONTROL:
        quantizer = measured.quantizer_cpu.get("forward", 0.0)
        own -= cpu["clean evaluation"] + cpu["conversion (quantize_model)"] + cpu["refit_check"] + quantizer
    return own + measured.float_share  # every seed's float model is shared by as many cells


def render(b: Breakdown) -> str:
    """The markdown table of one breakdown: per part CPU-s and wall s per cell, and the share of CPU."""
    cell, total = b.cell, b.total_cpu
    chip = b.cpu["final evaluation"] / b.draws
    final = f"{b.draws} noisy chips x {chip:.2f} CPU-s" if b.draws > 1 else "1 draw, no noise"
    labels = {"final evaluation": f"final evaluation: {final}", "clean evaluation": "clean evaluation (PTQ)"}
    rows = []
    for part in CELL_PARTS:
        rows.append((labels.get(part, part), b.cpu[part], b.wall[part]))
        if part in b.quantizer_cpu:
            rows.append((f"&nbsp;&nbsp;of which {QUANTIZER} (included above)", b.quantizer_cpu[part], None))
    float_total, float_wall = sum(b.float_cpu.values()), sum(b.float_wall.values())
    rows.append(
        (f"float model: 1/{b.shared_by} of {float_total:.1f} CPU-s", b.float_share, float_wall / b.shared_by)
    )
    wall_total = sum(b.wall.values()) + float_wall / b.shared_by
    (done, recipe), (fdone, frecipe) = b.steps, b.float_steps
    lines = [
        f"\n## {cell.arch} ({cell.model} on {cell.dataset}): {cell.experiment} cell {cell.id}\n",
        f"training parts: {done} of the recipe's {recipe} steps run, x{recipe / max(done, 1):.2f} (float "
        f"model: {fdone} of {frecipe}); evaluation ({'one batch' if cell.max_batches else 'all test images'})"
        f", BN re-estimation, checkpoints and setup run whole; torch threads: {torch.get_num_threads()}\n",
        "| part | CPU-s per cell | wall s | % of cell CPU |",
        "|---|---|---|---|",
        *(
            f"| {name} | {cpu:.2f} | {'' if wall is None else f'{wall:.2f}'} | {100 * cpu / total:.1f}% |"
            for name, cpu, wall in rows
        ),
        f"| **cell total** | **{total:.2f}** | {wall_total:.2f} | 100% |",
        "",
        f"this cell alone: 3600 / {total:.4g} = {3600 / total:.1f} cells per CPU-hour",
        "ms per training step, this cell (its float model, same network and batches): "
        + ", ".join(
            f"{p} {1e3 * b.cpu[p] / recipe:.1f} ({1e3 * b.float_cpu[p] / frecipe:.1f})"
            for p in TRAIN_PARTS[:4]
        )
        + f", refit_check {1e3 * b.cpu['refit_check'] / recipe:.1f}",
        "float model (shared by {n} cells of {e}): {parts}".format(
            n=b.shared_by,
            e=cell.experiment,
            parts=", ".join(f"{p} {s:.2f}" for p, s in b.float_cpu.items()) + " CPU-s",
        ),
    ]
    return "\n".join(lines)


def mix_line(experiment: str, listed: list[Cell], measured: dict[str, Breakdown]) -> tuple[float, str]:
    """Mean estimated CPU-s per cell over the experiment's cells (`estimate_cpu` from the breakdown of each
    cell's network) and the line stating it with the cells per CPU-hour it makes."""
    seconds = [estimate_cpu(c, measured[c.arch]) for c in listed]
    mean = sum(seconds) / len(seconds)
    noisy = sum(c.noise_eval > 0 for c in listed)
    controls = sum(c.method == CONTROL for c in listed)
    return mean, (
        f"{experiment}: {len(listed)} cells ({noisy} noisy, {controls} control), mean {mean:.2f} CPU-s per "
        f"cell -> 3600 / {mean:.4g} = {3600 / mean:.1f} cells per CPU-hour"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=64, help="training steps run per epoch (scaled up)")
    parser.add_argument("--scale", choices=("proxy", "smoke"), default="proxy", help="smoke: a quick look")
    parser.add_argument(
        "--paths",
        default="fp32",
        help=f"comma-separated training paths, measured interleaved in one run, the first the baseline "
        f"({', '.join(PATHS)})",
    )
    args = parser.parse_args()
    paths = args.paths.split(",")
    unknown = [p for p in paths if p not in PATHS]
    if unknown or len(set(paths)) != len(paths):
        parser.error(f"--paths: give distinct names of {', '.join(PATHS)}; got {args.paths!r}")
    torch.set_num_threads(1)  # as each of the suite's two proxy workers
    steps = None if args.scale == "smoke" else args.steps
    backend = torch_loop.TorchLoop()
    start = time.process_time(), time.perf_counter()
    measured: dict[str, dict[str, dict[str, Breakdown]]] = defaultdict(lambda: defaultdict(dict))
    for i, (experiment, arch) in enumerate(NETWORKS):
        cell = chosen_cell(experiment, arch, args.scale)
        if cell.dataset not in backend.bundles:
            load = time.process_time()
            backend._bundle(cell.dataset, Context(args.scale, Path("."), None, None))
            load = time.process_time() - load
            print(
                f"\ndata set {cell.dataset} loaded: {load:.1f} CPU-s, once per worker process (not per cell)"
            )
        # the paths alternate their order network by network, so a slow drift of the machine is not
        # charged to one of them
        for path in paths if i % 2 == 0 else paths[::-1]:
            b = breakdown(cell, cells(experiment, args.scale), steps, backend, path)
            measured[path][experiment][arch] = b
            print(f"\n### path: {path}" if len(paths) > 1 else "", render(b), flush=True)
    rates: dict[str, dict[str, float]] = defaultdict(dict)
    print()
    for path in paths:
        for experiment, by_arch in measured[path].items():
            mean, line = mix_line(experiment, cells(experiment, args.scale), by_arch)
            rates[path][experiment] = 3600 / mean
            print(f"[{path}] {line}" if len(paths) > 1 else line)
    print(
        "\nestimate per cell: the measured cell of its network with its own final evaluation (chips or one "
        "clean pass); the control without PTQ evaluation, conversion, refit_check and parametrizations; "
        "other quantizers as Lloyd; a float model charged to its experiment's cells only (not table1_ft4x's)"
    )
    names = {"table1": "Table 1", "table3": "Table 3"}
    for path in paths:
        label = f"[{path}] " if len(paths) > 1 else ""
        print(
            f"{label}cells per CPU-hour: "
            + ", ".join(f"{r:.1f} ({names[e]})" for e, r in rates[path].items())
        )
    base = paths[0]
    for path in paths[1:]:
        print(
            f"{path} vs {base}, cells per CPU-hour in this run: "
            + ", ".join(f"x{rates[path][e] / rates[base][e]:.3f} ({names[e]})" for e in rates[base])
        )
    cpu, wall = time.process_time() - start[0], time.perf_counter() - start[1]
    print(f"bench: {cpu:.0f} CPU-s, {wall:.0f} s wall")


if __name__ == "__main__":
    main()
