"""The orchestrator: iterate an experiment's cells, skip finished ones, claim, run the cell's backend, write
its record. One for every table and figure result set; backends in benchmarks/backends/.

Several runs may share one store (`--workers N` here, other machines on a shared filesystem): a cell is
trained by whoever claims it first (benchmarks.results.Claim); a stale claim (dead process, no heartbeat)
is taken over and the cell resumes from its checkpoint.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from benchmarks.backends import Backend, Context, Outcome, SetupError, backend_for
from benchmarks.experiments import CONTROL, Cell, Condition, cells
from benchmarks.results import (
    Claim,
    Record,
    claim_path,
    code_version,
    now_iso,
    read_record,
    record_path,
    write_record,
)
from cacim_core import registry
from cacim_core.measured import MeasuredConductances
from cacim_core.quantizers.base import QUANTIZERS

# plugin file -> sha256 of its source, stamped on records; spawned workers reload plugins by file
PLUGINS: dict[str, str] = {}


def load_plugin(name: str) -> None:
    """Import a user module by name or file path (`cacim_core.registry.load_plugin`); remember its source."""
    try:
        module = registry.load_plugin(name)
    except ImportError as exc:
        raise SetupError(str(exc)) from exc
    digest = hashlib.sha256(inspect.getsource(module).encode()).hexdigest()[:12]
    PLUGINS[str(Path(module.__file__).resolve())] = digest


def source_hash(method: str) -> str:
    """sha256 of the source of the module defining the quantizer class (its helpers included); "" for the
    control arm, which has no quantizer (its code is the train loop's, stamped by code_version)."""
    if method == CONTROL:
        return ""
    cls = QUANTIZERS.get(method)
    return hashlib.sha256(inspect.getsource(sys.modules[cls.__module__]).encode()).hexdigest()[:12]


def init_distributed(ctx: Context) -> None:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE set); else stay single."""
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if ctx.device.type == "cuda" and local_rank >= torch.cuda.device_count():
        raise SetupError(
            f"rank {local_rank} has no GPU ({torch.cuda.device_count()} visible): launch fewer "
            "processes per node (torchrun --nproc_per_node) or pass --device cpu"
        )
    if ctx.device.type == "cuda":
        torch.cuda.set_device(local_rank)
        ctx.device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl" if ctx.device.type == "cuda" else "gloo")
    ctx.rank, ctx.world = dist.get_rank(), dist.get_world_size()


def make_record(cell: Cell, outcome: Outcome, ctx: Context) -> Record:
    return Record(
        experiment=cell.experiment,
        cell=cell.id,
        scale=ctx.scale,
        seed=cell.seed,
        arch=cell.arch,
        model=cell.model,
        dataset=cell.dataset,
        method=cell.method,
        levels=cell.levels,
        first_last=cell.first_last,
        noise_train=cell.noise_train,
        noise_eval=cell.noise_eval,
        metrics=outcome.metrics,
        init=cell.init,
        noise_eval_file=cell.noise_eval_file,
        options=dict(cell.options),
        sweep=outcome.sweep,
        refits=outcome.refits,
        dataset_fingerprint=outcome.dataset_fingerprint,
        code_version=code_version(),
        source_hash=source_hash(cell.method) + "".join(f"+{h}" for h in PLUGINS.values()),
        recipe=_declared(cell),
        device=str(ctx.device),
        precision=ctx.precision,
        world_size=ctx.world,
        wall_time_s=round(outcome.train_time_s, 2),
        resumed=outcome.resumed,
        finished_at=now_iso(),
    )


def _declared(cell: Cell) -> dict:
    """The cell's recipe as its record stores it (JSON round trip: tuples become lists)."""
    return json.loads(json.dumps(asdict(cell.recipe), default=str))


def plan(cells: list[Cell], ctx: Context) -> tuple[list[Cell], list[Cell], list[tuple[Cell, str]]]:
    """Split cells into (to run, finished, stale with why): stale ones were finished by other code, with
    another recipe, or without sweep points the cell now lists (a new robustness axis must not be skipped
    silently)."""
    todo, finished, stale = [], [], []
    for cell in cells:
        path = record_path(ctx.results, cell.experiment, ctx.scale, cell.id)
        if not path.is_file():
            todo.append(cell)
            continue
        record = read_record(path)
        missing = {tuple(Condition(*c)) for c in cell.sweep} - {p.condition for p in record.sweep}
        why = ""
        if (record.recipe, record.model, record.dataset) != (_declared(cell), cell.model, cell.dataset):
            why = "another recipe/model/dataset"
        elif record.source_hash and record.source_hash.split("+")[0] != source_hash(cell.method):
            why = f"the source of quantizer {cell.method!r} changed"
        elif missing:
            why = f"its record lacks {len(missing)} of the cell's {len(cell.sweep)} sweep points"
        if why:
            stale.append((cell, why))
        else:
            finished.append(cell)
    return todo, finished, stale


def run(
    experiment: str,
    scale: str = "proxy",
    data: str | Path | None = None,
    weights: str | Path | None = None,
    results: str | Path = "results",
    methods: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
    rerun_stale: bool = False,
    seeds: list[int] | None = None,
    workers: int = 1,
    device: str | None = None,
    reset_head: bool = False,
    launcher: Launcher | None = None,
    amp: bool = False,
    channels_last: bool = False,
) -> list[Record]:
    """Run every unfinished cell of `experiment` at `scale`; returns the records this process wrote."""
    code_version()  # the code as loaded now, before any later commit
    try:
        todo = cells(experiment, scale, methods, seeds)
    except (ValueError, KeyError) as exc:
        raise SetupError(str(exc).strip("'\"")) from exc
    if not todo:
        raise SetupError(f"no cell of {experiment} uses methods {methods}")
    data_root = Path(data) if data else None
    if weights is None and data_root is not None and scale == "paper":
        weights = data_root / "weights"
    if device == "cuda" and not torch.cuda.is_available():
        raise SetupError("--device cuda: no CUDA device is visible here; use --device cpu")
    if device == "cpu" and torch.cuda.is_available() and any(c.backend == "mmengine" for c in todo):
        raise SetupError(
            "--device cpu: mmengine picks CUDA whenever it is visible; hide the GPUs with "
            "CUDA_VISIBLE_DEVICES= to run OpenMMLab cells on the CPU"
        )
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ctx = Context(
        scale,
        Path(results),
        data_root,
        Path(weights) if weights else None,
        progress,
        device=chosen,
        reset_head=reset_head,
        amp=amp,
        channels_last=channels_last,
    )
    if chosen.type == "cuda":
        torch.backends.cudnn.benchmark = True
    init_distributed(ctx)
    unfinished, finished, stale = plan(todo, ctx)
    if stale and not (force or rerun_stale):
        listing = "; ".join(f"{c.id} ({why})" for c, why in stale[:5])
        more = f" and {len(stale) - 5} more" if len(stale) > 5 else ""
        raise SetupError(
            f"{len(stale)} finished cell(s) are stale: {listing}{more}; "
            "recompute them with --rerun-stale (or --force for every cell)"
        )
    pending = todo if force else unfinished + [c for c, _ in stale]
    overwrite = {c.id for c in (todo if force else [c for c, _ in stale])}
    groups: dict[Backend, list[Cell]] = {}
    for cell in pending:  # every input is checked before the first cell trains
        groups.setdefault(backend_for(cell), []).append(cell)
        if cell.noise_eval_file:  # a bad conductance file fails before any training
            MeasuredConductances.from_csv(cell.noise_eval_file)
    for backend, group in groups.items():
        backend.prepare(group, ctx)
    if ctx.main:
        print(
            f"{experiment} [{scale}]: {len(todo)} cells, {len(finished)} already finished, "
            f"{len(stale)} stale, {len(pending)} to run",
            file=sys.stderr,
        )
    if launcher is not None:
        return _run_submitit(pending, overwrite, ctx, launcher)
    if workers > 1 and ctx.world == 1:
        return _run_parallel(pending, overwrite, ctx, workers)
    return _run_cells(pending, overwrite, ctx, f"{experiment} [{scale}]")


def _claim(cell: Cell, ctx: Context, overwrite: set[str], since: float) -> tuple[Claim | None, str]:
    """("mine", claim) to train it, ("done", None) when another run finished it, ("busy", None) while
    another live run holds it. Rank 0 decides; under torchrun every rank gets its answer."""
    claim, state = None, "mine"
    if ctx.main:
        path = record_path(ctx.results, cell.experiment, ctx.scale, cell.id)
        # finished by another run; a cell to overwrite counts only once a record newer than this run exists
        if path.is_file() and (cell.id not in overwrite or path.stat().st_mtime >= since):
            state = "done"
        else:
            claim = Claim.take(claim_path(ctx.results, cell.experiment, ctx.scale, cell.id))
            state = "busy" if claim is None else "mine"
    if ctx.world > 1:
        box = [state]
        dist.broadcast_object_list(box, src=0)
        state = box[0]
    return claim, state


def _run_cells(
    pending: list[Cell],
    overwrite: set[str],
    ctx: Context,
    desc: str,
    since: float | None = None,
    poll_s: float = 5.0,
) -> list[Record]:
    """Train every pending cell nobody else holds; then wait for the cells other runs hold, taking over a
    claim that goes stale (its run died): a run returns when all its cells are finished."""
    since = time.time() if since is None else since
    written = []
    bar = tqdm(total=len(pending), desc=desc, disable=not (ctx.progress and ctx.main))
    waiting = list(pending)
    while waiting:
        busy = []
        for cell in waiting:
            claim, state = _claim(cell, ctx, overwrite, since)
            if state == "busy":
                busy.append(cell)
                continue
            bar.update()
            if state == "done":
                continue
            try:
                outcome = backend_for(cell).finetune_and_evaluate(cell, ctx)
                if outcome is not None and ctx.main:
                    record = make_record(cell, outcome, ctx)
                    write_record(ctx.results, record, overwrite=cell.id in overwrite)
                    written.append(record)
                    print(f"{cell.experiment} [{ctx.scale}] {cell.id}: " + _summary(record), file=sys.stderr)
            finally:
                if claim is not None:
                    claim.release()
        if busy == waiting:
            time.sleep(poll_s)  # every remaining cell is held by another live run
        waiting = busy
    bar.close()
    if ctx.world > 1:
        dist.destroy_process_group()
    return written


def _summary(record: Record) -> str:
    gaps = [k for k in record.metrics if k.startswith("gap_") and not k.startswith("gap_ptq")]
    shown = (gaps or [k for k in record.metrics if not k.endswith("_clean")])[:2]  # no float model: no gap
    parts = [f"{k} {m.mean:.2f} ± {m.std:.2f} (n={m.n})" for k, m in record.metrics.items() if k in shown]
    return ", ".join(parts) + f" ({record.wall_time_s:.0f} s)"


def _worker(
    pending: list[Cell],
    overwrite: set[str],
    ctx: Context,
    threads: int,
    index: int,
    plugins: list[str],
    since: float,
) -> list[Record]:
    torch.set_num_threads(threads)
    for name in plugins:  # a spawned process starts bare: register the plugin's quantizers again
        load_plugin(name)
    ctx = replace(ctx, progress=False)
    if ctx.device.type == "cuda" and torch.cuda.device_count() > 1:
        ctx.device = torch.device("cuda", index % torch.cuda.device_count())
    rotated = pending[index:] + pending[:index]  # workers start on different cells
    return _run_cells(rotated, overwrite, ctx, f"worker {index}", since)


@dataclass(frozen=True)
class Launcher:
    """submitit, one job per cell: kind "slurm" (a cluster) or "local" (LocalExecutor, for tests)."""

    kind: str = "slurm"
    gpus_per_cell: int = 1
    partition: str | None = None
    time_min: int = 24 * 60
    folder: str = ""  # default: <results>/.submitit


def _cell_job(cell: Cell, overwrite: set[str], ctx: Context, plugins: list[str], since: float, gpus: int):
    """What one submitit job runs: one cell; with several GPUs, DDP across the job's tasks."""
    if gpus > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export()  # RANK, WORLD_SIZE, MASTER_ADDR ... for init_distributed
        init_distributed(ctx)
    return _worker([cell], overwrite, ctx, torch.get_num_threads(), 0, plugins, since)


def _run_submitit(pending: list[Cell], overwrite: set[str], ctx: Context, launcher: Launcher) -> list[Record]:
    """Submit one job per cell and wait; claims still guard every cell (jobs may be requeued or doubled)."""
    import submitit

    folder = launcher.folder or str(ctx.results / ".submitit" / "%j")
    if launcher.kind == "local":
        executor: submitit.Executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=launcher.time_min)
    elif launcher.kind == "slurm":
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(
            timeout_min=launcher.time_min,
            gpus_per_node=launcher.gpus_per_cell,
            tasks_per_node=launcher.gpus_per_cell,
            cpus_per_task=8,
            slurm_partition=launcher.partition,
        )
    else:
        raise SetupError(f"--launcher must be slurm or local, got {launcher.kind!r}")
    since = time.time()
    with executor.batch():
        jobs = [
            executor.submit(_cell_job, cell, overwrite, ctx, list(PLUGINS), since, launcher.gpus_per_cell)
            for cell in pending
        ]
    print(f"submitted {len(jobs)} job(s) to {launcher.kind}; logs in {folder}", file=sys.stderr)
    return [record for job in jobs for record in (job.result() or [])]


def _run_parallel(pending: list[Cell], overwrite: set[str], ctx: Context, workers: int) -> list[Record]:
    """N worker processes over one store; the claims decide who trains which cell."""
    free_cores = len(os.sched_getaffinity(0)) - round(os.getloadavg()[0])  # not busy with other processes
    threads = max(1, free_cores // workers)
    print(f"{workers} workers, {threads} torch thread(s) each", file=sys.stderr)
    started = time.time()
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(_worker, pending, overwrite, ctx, threads, i, list(PLUGINS), started)
            for i in range(workers)
        ]
        written = [record for f in futures for record in f.result()]
    print(f"{len(written)} cells in {time.time() - started:.0f} s", file=sys.stderr)
    return written
