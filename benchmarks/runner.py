"""The orchestrator: iterate an experiment's cells, skip finished ones, claim, run the cell's backend, write
its record. One for every table and figure result set; backends in benchmarks/backends/.

Several runs may share one store (`--workers N` here, other machines on a shared filesystem): a cell is
trained by whoever claims it first (benchmarks.results.Claim); a stale claim (dead process, no heartbeat)
is taken over and the cell resumes from its checkpoint.

Durability: a record is written atomically (fsync'd, its folder fsync'd) before the cell's checkpoint is
dropped, so a kill or a full disk at any point loses at most the work since the last checkpoint. SIGTERM
and SIGINT let the current record write finish, release the claims and exit 143 / 130 with one line; a
dead worker is reported and the other workers take its cell over.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import hashlib
import inspect
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from benchmarks import faults
from benchmarks.backends import Backend, Context, Outcome, SetupError, backend_for, check_supported
from benchmarks.experiments import CONTROL, Cell, Condition, Recipe, cells
from benchmarks.metrics import MetricName
from benchmarks.results import (
    Claim,
    Record,
    cell_dir,
    claim_holder,
    claim_info,
    claim_path,
    code_version,
    now_iso,
    read_record,
    record_path,
    sweep_litter,
    write_record,
)
from cacim_core import registry
from cacim_core.measured import MeasuredConductances
from cacim_core.quantizers.base import QUANTIZERS

# plugin file -> sha256 of its source, stamped on records; spawned workers reload plugins by file
PLUGINS: dict[str, str] = {}


class StoreError(SetupError):
    """The results store cannot be written (full disk, read-only, a file where a folder belongs)."""


class Interrupted(BaseException):  # noqa: N818  (not an error: a user's SIGINT or a scheduler's SIGTERM)
    """Raised by the SIGINT/SIGTERM handler; unwinds through the `finally`s that release claims."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass
class _SignalState:
    depth: int = 0  # > 0 inside `_finishing()`: a signal waits until the block is done
    pending: int = 0
    owner: int = 0  # the pid that installed the handlers
    previous: dict[int, object] = field(default_factory=dict)  # the handlers they replaced


_SIGNALS = _SignalState()


def _on_signal(signum: int, frame: object) -> None:
    if os.getpid() != _SIGNALS.owner:  # a forked child that missed the at-fork reset: die as it would
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _SIGNALS.depth:
        _SIGNALS.pending = signum
        return
    raise Interrupted(signum)


def _restore_in_child() -> None:
    """A library's forked workers (mmdet's eval_map Pool, DataLoader workers) get the handlers they would
    have had without us: Pool.terminate() SIGTERMs its workers and joins them, and a worker that turned
    SIGTERM into our `Interrupted` could hang that join forever."""
    if _SIGNALS.previous and threading.current_thread() is threading.main_thread():
        for sig, handler in _SIGNALS.previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        _SIGNALS.previous = {}


os.register_at_fork(after_in_child=_restore_in_child)


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` while the block runs (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _SIGNALS.depth, _SIGNALS.pending, _SIGNALS.owner = 0, 0, os.getpid()
    _SIGNALS.previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in _SIGNALS.previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        _SIGNALS.previous = {}


@contextlib.contextmanager
def _finishing() -> Iterator[None]:
    """A block a signal must not cut: a claim being taken, a record being written and its checkpoint
    dropped. A signal that arrives meanwhile is raised when the block is done."""
    _SIGNALS.depth += 1
    try:
        yield
    finally:
        _SIGNALS.depth -= 1
    if not _SIGNALS.depth and _SIGNALS.pending:
        signum, _SIGNALS.pending = _SIGNALS.pending, 0
        raise Interrupted(signum)


# errno -> what to do about it; ENOSPC and EDQUOT whatever the path, the others for paths in the store
STORE_FIXES = {
    errno.ENOSPC: "no space left on the device: free space or pass another --results; a rerun resumes "
    "from the last checkpoint",
    errno.EDQUOT: "disk quota exceeded: free space or pass another --results; a rerun resumes from the "
    "last checkpoint",
    errno.EROFS: "read-only filesystem: pass a writable folder to --results",
    errno.EACCES: "permission denied: pass a folder you can write to --results",
    errno.EPERM: "permission denied: pass a folder you can write to --results",
    errno.ENOTDIR: "a file stands where a folder belongs: pass a folder to --results",
    errno.EEXIST: "a file stands where a folder belongs: pass a folder to --results",
}


def _store_error(exc: OSError, root: Path) -> StoreError | None:
    """The one-line StoreError for a write failure of the store; None for any other OSError."""
    where = Path(exc.filename) if exc.filename else None
    in_store = where is None or where.resolve().is_relative_to(root.resolve())
    if exc.errno not in STORE_FIXES or (exc.errno not in (errno.ENOSPC, errno.EDQUOT) and not in_store):
        return None
    return StoreError(f"cannot write {where or root}: {STORE_FIXES[exc.errno]}")


def check_store(root: Path) -> None:
    """The store must be a writable folder: found before any training, not at the first record."""
    if root.exists() and not root.is_dir():
        raise StoreError(f"--results {root} is a file: pass a folder (it is created if missing)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(
            dir=root, prefix=f".probe~{socket.gethostname()}~{os.getpid()}~", suffix=".tmp"
        )
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        error = _store_error(exc, root)
        if error is None:
            raise
        raise error from None


def check_data(data: str | Path | None) -> Path | None:
    """`--data` must name an existing folder: checked before any work, whether or not the table reads it."""
    if not data:
        return None
    root = Path(data)
    if not root.exists():
        raise SetupError(f"--data {data}: no such folder (pass the dataset root; README)")
    if not root.is_dir():
        raise SetupError(f"--data {data}: not a folder (pass the dataset root, not a file; README)")
    return root


def load_plugin(name: str) -> None:
    """Import a user module by name or file path (`cacim_core.registry.load_plugin`); remember its source."""
    try:
        module = registry.load_plugin(name)
    except ImportError as exc:
        raise SetupError(str(exc)) from exc
    PLUGINS[str(Path(module.__file__).resolve())] = module_tree_hash(Path(module.__file__))


def module_tree_hash(path: Path) -> str:
    """sha256 of a plugin file and of every module it imports from its own folder, transitively: editing a
    helper module the plugin imports changes the hash (records made before it become stale)."""
    path, root = path.resolve(), path.resolve().parent
    seen: dict[Path, bytes] = {}
    todo = [path]
    while todo:
        here = todo.pop()
        if here in seen or not here.is_file():
            continue
        seen[here] = here.read_bytes()
        try:
            tree = ast.parse(seen[here])
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [(a.name, 0) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "", node.level)] + [
                    (f"{node.module}.{a.name}" if node.module else a.name, node.level) for a in node.names
                ]
            else:
                continue
            for dotted, level in names:
                base = here.parent if level else root
                for _ in range(max(level - 1, 0)):
                    base = base.parent
                stem = base.joinpath(*dotted.split(".")) if dotted else base
                todo += [stem.with_suffix(".py"), stem / "__init__.py"]
    digest = hashlib.sha256()
    for file in sorted(seen):
        digest.update(str(file.relative_to(root) if file.is_relative_to(root) else file).encode())
        digest.update(seen[file])
    return digest.hexdigest()[:12]


def source_hash(method: str) -> str:
    """sha256 of the source of the module defining the quantizer class (its helpers included); "" for the
    control arm, which has no quantizer (its code is the train loop's, stamped by code_version)."""
    if method == CONTROL:
        return ""
    module = sys.modules[QUANTIZERS.get(method).__module__]
    file = Path(module.__file__ or "").resolve()
    if not file.is_relative_to(Path(registry.__file__).resolve().parent):  # a plugin's: its module tree
        return module_tree_hash(file)
    return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()[:12]


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


#: The Record fields copied from its Cell as they are (both dataclasses name them; the schema is written
#: once in each, and this is their intersection, not a third list). Converted, not copied: `options` (pairs
#: -> dict), `sweep` (conditions -> measured points), `recipe` (-> its declared dict).
FROM_CELL = tuple(
    f.name
    for f in fields(Record)
    if f.name in {g.name for g in fields(Cell)} - {"options", "sweep", "recipe"}
)


def make_record(cell: Cell, outcome: Outcome, ctx: Context) -> Record:
    return Record(
        **{name: getattr(cell, name) for name in FROM_CELL},
        cell=cell.id,
        scale=ctx.scale,
        metrics=outcome.metrics,
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
    """The cell's recipe as its record stores it (`Recipe.declared`; an MMRecipe as its JSON round trip)."""
    if isinstance(cell.recipe, Recipe):
        return cell.recipe.declared()
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


@dataclass(frozen=True)
class Launcher:
    """submitit, one job per cell: kind "slurm" (a cluster) or "local" (LocalExecutor, for tests)."""

    kind: str = "slurm"
    gpus_per_cell: int = 1
    partition: str | None = None
    time_min: int = 24 * 60
    folder: str = ""  # default: <results>/.submitit

    def __post_init__(self) -> None:
        if self.kind not in ("slurm", "local"):
            raise SetupError(f"--launcher must be slurm or local, got {self.kind!r}")
        if self.gpus_per_cell < 1:
            raise SetupError(f"--gpus-per-cell must be >= 1, got {self.gpus_per_cell}")
        if self.time_min <= 0:
            raise SetupError(f"--time must be > 0 minutes per job, got {self.time_min}")


@dataclass(frozen=True)
class RunOptions:
    """How one run trains, beyond its experiment and scale: built once from the command line
    (`benchmarks.__main__`) or by a caller, and checked when built, so a bad value fails before any work.
    Which of them a backend carries out is its own declaration (`backends.REQUESTS`)."""

    results: str | Path = "results"
    data: str | Path | None = None
    weights: str | Path | None = None  # default at paper scale: <data>/weights
    methods: list[str] | None = None  # None: the table's
    seeds: list[int] | None = None  # None: the scale's
    force: bool = False  # recompute and overwrite every finished cell
    rerun_stale: bool = False  # recompute the cells whose code or recipe changed
    progress: bool = True
    workers: int = 1  # worker processes on this machine
    device: str | None = None  # None: cuda when visible
    reset_head: bool = False
    amp: bool = False  # bf16 autocast in training
    channels_last: bool = False
    launcher: Launcher | None = None  # submitit, one job per cell

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise SetupError(f"--workers must be >= 1, got {self.workers}")
        if self.device not in (None, "cpu", "cuda"):
            raise SetupError(f"--device must be cpu or cuda, got {self.device!r}")


def run(
    experiment: str, scale: str = "proxy", options: RunOptions | None = None, only: list[Cell] | None = None
) -> list[Record]:
    """Run every unfinished cell of `experiment` at `scale` (or of `only`: a two-stage design's second
    stage) with `options`; returns the records this process wrote."""
    opt = options or RunOptions()
    code_version()  # the code as loaded now, before any later commit
    try:
        todo = cells(experiment, scale, opt.methods, opt.seeds) if only is None else only
    except (ValueError, KeyError) as exc:
        raise SetupError(str(exc).strip("'\"")) from exc
    if not todo:
        raise SetupError(f"no cell of {experiment} uses methods {opt.methods}")
    data_root = check_data(opt.data)
    weights = opt.weights
    if weights is None and data_root is not None and scale == "paper":
        weights = data_root / "weights"
    device = opt.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SetupError("--device cuda: no CUDA device is visible here; use --device cpu")
    if device == "cpu" and torch.cuda.is_available() and any(c.backend == "mmengine" for c in todo):
        raise SetupError(
            "--device cpu: mmengine picks CUDA whenever it is visible; hide the GPUs with "
            "CUDA_VISIBLE_DEVICES= to run OpenMMLab cells on the CPU"
        )
    check_store(Path(opt.results))
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ctx = Context(
        scale,
        Path(opt.results),
        data_root,
        Path(weights) if weights else None,
        opt.progress,
        device=chosen,
        reset_head=opt.reset_head,
        amp=opt.amp,
        channels_last=opt.channels_last,
    )
    if chosen.type == "cuda":
        torch.backends.cudnn.benchmark = True
    init_distributed(ctx)
    if ctx.main:
        _sweep(experiment, ctx)
    unfinished, finished, stale = plan(todo, ctx)
    force = opt.force
    if stale and not (force or opt.rerun_stale):
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
        check_supported(backend, group, ctx)
        backend.prepare(group, ctx)
    if ctx.main:
        print(
            f"{experiment} [{scale}]: {len(todo)} cells, {len(finished)} already finished, "
            f"{len(stale)} stale, {len(pending)} to run",
            file=sys.stderr,
        )
    with _interruptible():
        try:
            if opt.launcher is not None:
                return _run_submitit(pending, overwrite, ctx, opt.launcher)
            if opt.workers > 1 and ctx.world == 1:
                return _run_parallel(pending, overwrite, ctx, opt.workers)
            return _run_cells(pending, overwrite, ctx, f"{experiment} [{scale}]")
        except Interrupted as stop:
            done = sum(record_path(ctx.results, c.experiment, scale, c.id).is_file() for c in todo)
            if ctx.main:
                name = signal.Signals(stop.signum).name
                print(
                    f"interrupted by {name}: {done} of {len(todo)} cells done, rerun to resume",
                    file=sys.stderr,
                )
            raise SystemExit(128 + stop.signum) from None
        except OSError as exc:
            error = _store_error(exc, ctx.results)
            if error is None:
                raise
            raise error from None


def _sweep(experiment: str, ctx: Context) -> None:
    """Remove the .tmp files of dead writers and the stale claims (finished cells' too) dead runs left."""
    here = cell_dir(ctx.results, experiment, ctx.scale)
    floats = ctx.results / "_float" / ctx.scale
    tmps, claims = sweep_litter([here, here / ".ckpt", here / ".claims", floats])
    if tmps or claims:
        print(f"removed {tmps} .tmp file(s) and {claims} stale claim(s) left by dead runs", file=sys.stderr)


def _claim(cell: Cell, ctx: Context, overwrite: set[str], since: float) -> tuple[Claim | None, str]:
    """(claim, "mine") to train it, (None, "done") when another run finished it, (None, "busy") while
    another live run holds it. Rank 0 decides; under torchrun every rank gets its answer."""
    claim, state = None, "mine"
    if ctx.main:
        path = record_path(ctx.results, cell.experiment, ctx.scale, cell.id)

        def finished() -> bool:  # a cell to overwrite counts only once a record newer than this run exists
            return path.is_file() and (cell.id not in overwrite or path.stat().st_mtime >= since)

        if finished():
            state = "done"
        else:
            faults.claim_delay()
            claim = Claim.take(claim_path(ctx.results, cell.experiment, ctx.scale, cell.id))
            if claim is None:
                state = "busy"
            elif finished():  # another run finished it between the check and the claim: checked again
                claim.release()
                claim, state = None, "done"
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
) -> list[Record]:
    """Train every pending cell nobody else holds; then wait for the cells other runs hold, taking over a
    claim that goes stale (its run died): a run returns when all its cells are finished. The record is
    durable before the cell's checkpoint goes: a kill between the two leaves a checkpoint to resume from."""
    since = time.time() if since is None else since
    written = []
    told: set[str] = set()  # cells whose holder the user has been told about
    bar = tqdm(total=len(pending), desc=desc, disable=not (ctx.progress and ctx.main))
    waiting = list(pending)
    while waiting:
        busy = []
        for cell in waiting:
            with _finishing():
                claim, state = _claim(cell, ctx, overwrite, since)
            if state == "busy":
                busy.append(cell)
                continue
            bar.update()
            if state == "done":
                continue
            try:
                if ctx.main:
                    faults.log_training(cell.id)
                    faults.hit("training", cell.id)
                backend = backend_for(cell)
                outcome = backend.finetune_and_evaluate(cell, ctx)
                if outcome is not None and ctx.main:
                    with _finishing():
                        record = make_record(cell, outcome, ctx)
                        write_record(ctx.results, record, overwrite=cell.id in overwrite)
                        backend.discard(cell, ctx)
                        written.append(record)
                    print(f"{cell.experiment} [{ctx.scale}] {cell.id}: " + _summary(record), file=sys.stderr)
            finally:
                if claim is not None:
                    claim.release()
        if busy == waiting:  # every remaining cell is held by another live run
            for cell in busy if ctx.main else []:
                if cell.id not in told:
                    told.add(cell.id)
                    holder = claim_holder(claim_path(ctx.results, cell.experiment, ctx.scale, cell.id))
                    print(f"waiting for {cell.experiment} [{ctx.scale}] {cell.id}: {holder}", file=sys.stderr)
            time.sleep(min(5.0, faults.stale_after_s() / 4))
        waiting = busy
    bar.close()
    if ctx.world > 1:
        dist.destroy_process_group()
    return written


def _summary(record: Record) -> str:
    names = {k: MetricName.parse(k) for k in record.metrics}
    gaps = [k for k, name in names.items() if name.headline]
    shown = (gaps or [k for k, name in names.items() if not name.clean])[:2]  # no float model: no gap
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
    else:  # slurm (Launcher checks its kind)
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(
            timeout_min=launcher.time_min,
            gpus_per_node=launcher.gpus_per_cell,
            tasks_per_node=launcher.gpus_per_cell,
            cpus_per_task=8,
            slurm_partition=launcher.partition,
        )
    since = time.time()
    with executor.batch():
        jobs = [
            executor.submit(_cell_job, cell, overwrite, ctx, list(PLUGINS), since, launcher.gpus_per_cell)
            for cell in pending
        ]
    print(f"submitted {len(jobs)} job(s) to {launcher.kind}; logs in {folder}", file=sys.stderr)
    records, failed = [], []
    for cell, job in zip(pending, jobs, strict=True):
        try:
            records += job.result() or []
        except Exception as exc:  # submitit's FailedJobError / UncompletedJobError: killed, timed out, raised
            failed.append((cell, job, exc))
    if failed:  # every job was waited for: the finished cells' records are in the store
        cell, job, exc = failed[0]
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = (lines[-1] if lines else type(exc).__name__)[:200]
        more = f" and {len(failed) - 1} more" if len(failed) > 1 else ""
        raise SetupError(
            f"{len(failed)} of {len(jobs)} job(s) failed: {cell.id} (job {job.job_id}: {why}; log "
            f"{job.paths.stderr}){more}; {len(records)} finished cell(s) kept; rerun to resume the rest"
        )
    return records


def _worker_main(conn: multiprocessing.connection.Connection, *args: object) -> None:
    """A spawned worker: its records (or its error) go back through `conn`; a signal ends it quietly (the
    main process prints the one line)."""
    with _interruptible():
        try:
            conn.send(("records", _worker(*args)))  # type: ignore[arg-type]
        except Interrupted as stop:
            sys.exit(128 + stop.signum)
        except Exception as exc:  # a SetupError, a full disk: the main process reports it
            conn.send(("error", exc))


def _held_by(pid: int | None, pending: list[Cell], ctx: Context) -> list[str]:
    """The cells whose claim names `pid` on this host (a dead worker's, before anyone takes them over)."""
    held = []
    for cell in pending:
        info = claim_info(claim_path(ctx.results, cell.experiment, ctx.scale, cell.id)) or {}
        if (info.get("host"), info.get("pid")) == (socket.gethostname(), pid):
            held.append(cell.id)
    return held


def _run_parallel(pending: list[Cell], overwrite: set[str], ctx: Context, workers: int) -> list[Record]:
    """N worker processes over one store; the claims decide who trains which cell. A worker that dies
    (OOM killer, SIGKILL) is reported in one line; the others take its cell over from its checkpoint."""
    free_cores = len(os.sched_getaffinity(0)) - round(os.getloadavg()[0])  # not busy with other processes
    threads = max(1, free_cores // workers)
    print(f"{workers} workers, {threads} torch thread(s) each", file=sys.stderr)
    started = time.time()
    spawn = multiprocessing.get_context("spawn")
    procs, conns = {}, {}
    for i in range(workers):
        conns[i], send = spawn.Pipe(duplex=False)
        args = (send, pending, overwrite, ctx, threads, i, list(PLUGINS), started)
        procs[i] = spawn.Process(target=_worker_main, args=args, name=f"cacim worker {i}")
        procs[i].start()
        send.close()
    written: list[Record] = []
    answered: set[int] = set()
    failure: BaseException | None = None
    live = set(procs)
    try:
        while live:
            listening = [conns[i] for i in live if i not in answered] + [procs[i].sentinel for i in live]
            multiprocessing.connection.wait(listening)
            for i in sorted(live):
                if i not in answered and conns[i].poll():
                    answered.add(i)
                    try:
                        kind, payload = conns[i].recv()
                    except EOFError:  # closed without an answer: it died
                        continue
                    if kind == "records":
                        written += payload
                    else:
                        failure = failure or payload
                if procs[i].is_alive():
                    continue
                procs[i].join()
                live.discard(i)
                code = procs[i].exitcode
                if code != 0 and failure is None:
                    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                    held = ", ".join(_held_by(procs[i].pid, pending, ctx)) or "no cell"
                    then = "the other workers take it over" if live else "rerun to resume it"
                    print(f"worker {i} (pid {procs[i].pid}) died ({how}) in {held}: {then}", file=sys.stderr)
            if failure is not None:
                break
    finally:
        _stop_workers([procs[i] for i in live])
    if failure is not None:
        raise failure
    left = [c.id for c in pending if not record_path(ctx.results, c.experiment, ctx.scale, c.id).is_file()]
    if left:
        print(f"{len(left)} cell(s) left unfinished by dead workers: rerun to resume", file=sys.stderr)
        raise SystemExit(1)
    print(f"{len(written)} cells in {time.time() - started:.0f} s", file=sys.stderr)
    return written


def _stop_workers(procs: list[multiprocessing.Process]) -> None:
    """SIGTERM: each worker lets its record write finish and releases its claims; SIGKILL after 60 s."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
            proc.join()
