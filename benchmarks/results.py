"""The results store: typed records (one JSON per finished cell and seed), checkpoints, claims, and `load`.

Layout under a root (default `results/`):
``<experiment>/<scale>/<cell_id>.json``         a finished cell (a `Record`), atomic, never replaced silently;
``<experiment>/<scale>/.ckpt/<cell_id>.pt``     the last checkpoint of an interrupted cell (torch loop);
``<experiment>/<scale>/.work/<cell_id>/``       an mmengine cell's work_dir (its own checkpoints, logs);
``<experiment>/<scale>/.claims/<cell_id>.json`` who is training a cell now (host, pid, heartbeat);
``_float/<scale>/<key>.pt``                     float models, shared by every cell that starts from them.

Everything that reads results (tables, figures, `compare`) goes through `load_records` or `load`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from benchmarks import faults

SCHEMA = 2


class RecordExistsError(FileExistsError):
    """A finished record is never overwritten silently."""


@dataclass(frozen=True)
class Metric:
    """One measured number: mean and sample std over `n` noise draws of one trained model (n=1: one pass)."""

    mean: float
    std: float = 0.0
    n: int = 1


@dataclass(frozen=True)
class SweepPoint:
    """The same trained model evaluated under other test conditions (robustness curves)."""

    noise: float | str  # a Gaussian delta, or a noise spec (cacim_core.noise.parse), e.g. "pcm:t=3600"
    adc_bits: int | None
    metrics: dict[str, Metric]
    tile: tuple[int, int] | None = None  # crossbar tile (rows, cols) it was evaluated on; None: the cell's

    @property
    def condition(self) -> tuple[float | str, int | None, tuple[int, int] | None]:
        """What was varied, comparable with a cell's `Condition`."""
        return (self.noise, self.adc_bits, self.tile)


@dataclass
class Record:
    """Everything needed to reproduce one finished cell at one seed, and what it measured."""

    experiment: str
    cell: str
    scale: str
    seed: int
    arch: str
    model: str
    dataset: str
    method: str
    levels: int | None
    first_last: str
    noise_train: float
    noise_eval: float
    metrics: dict[str, Metric]
    noise_eval_file: str = ""
    init: str = "pretrained"
    options: dict[str, Any] = field(default_factory=dict)
    sweep: list[SweepPoint] = field(default_factory=list)
    refits: dict[str, int] = field(default_factory=dict)
    dataset_fingerprint: str = ""
    code_version: str = ""
    source_hash: str = ""  # the quantizer class's source (and the plugin module's): a changed one is stale
    recipe: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "fp32"  # training arithmetic: fp32, bf16-autocast, +channels_last
    world_size: int = 1
    wall_time_s: float = 0.0
    resumed: bool = False
    finished_at: str = ""
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        if data.get("schema") != SCHEMA:  # schema 1 (flat metrics) predates the typed store
            raise ValueError(f"schema {data.get('schema', 1)}, this code reads schema {SCHEMA}")
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["metrics"] = {k: Metric(**m) for k, m in data["metrics"].items()}
        data["sweep"] = [
            SweepPoint(
                p["noise"],
                p["adc_bits"],
                {k: Metric(**m) for k, m in p["metrics"].items()},
                tuple(p["tile"]) if p.get("tile") is not None else None,  # JSON gives a list
            )
            for p in data.get("sweep", [])
        ]
        return cls(**data)


# ---------------------------------------------------------------- paths and atomic writes
def atomic_write(path: str | Path, data: bytes | memoryview | str, kind: str = "") -> Path:
    """Write via a temporary file, fsync, rename and fsync the folder: after a crash the file is whole or
    absent, never half-written, and a durable one survives a power cut. The file gets the user's umask
    (mkstemp would give 0600). The .tmp is named after its writer (host, pid): the next run removes those
    of dead writers (`sweep_litter`). `kind` ("record", "checkpoint") names benchmarks.faults' points."""
    return atomic_write_all({Path(path): data}, kind)[0]


def atomic_write_all(files: dict[Path, bytes | memoryview | str], kind: str = "") -> list[Path]:
    """`atomic_write` for a set of files that belong together (a table's md, tex and csv): every .tmp is
    written and fsync'd before the first rename, so a failure (a full disk) leaves the old set whole."""
    owner = f"~{socket.gethostname()}~{os.getpid()}~"
    umask = os.umask(0)
    os.umask(umask)
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{owner}", suffix=".tmp")
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                if kind:
                    faults.hit(f"{kind}_fsync", path.stem, tmp)
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~umask)
        for tmp, path in staged:
            if kind:
                faults.hit(f"{kind}_rename", path.stem, tmp)
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for folder in {path.parent for _, path in staged}:
        _fsync_dir(folder)
    return [path for _, path in staged]


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (its directory entry); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def _tmp_is_dead(path: Path, stale_after: float) -> bool:
    """A writer's .tmp left by a dead process (same host, pid gone) or older than `stale_after`."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    parts = path.name.split("~")  # .<name>~<host>~<pid>~<random>.tmp; older names carry no owner
    if len(parts) >= 4 and parts[-3] == socket.gethostname() and parts[-2].isdigit():
        if not _pid_alive(int(parts[-2])):
            return True
    return age > stale_after


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    return True


def sweep_litter(folders: Iterable[Path], stale_after: float | None = None) -> tuple[int, int]:
    """Remove what dead runs left in `folders`: their writes' .tmp files and their stale claims (a claim is
    taken over, then released: the takeover protocol guards against a live run's fresh claim). Returns
    (tmp files removed, claims released)."""
    stale_after = faults.stale_after_s() if stale_after is None else stale_after
    tmps = claims = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp"):
            if _tmp_is_dead(path, stale_after):
                path.unlink(missing_ok=True)
                tmps += 1
        for path in folder.glob("*.json" if folder.name == ".claims" else ".*.claim"):
            if _claim_is_stale(path, stale_after) is not None:
                claim = Claim.take(path, stale_after)
                if claim is not None:
                    claim.release()
                    claims += 1
    return tmps, claims


def cell_dir(root: str | Path, experiment: str, scale: str) -> Path:
    return Path(root) / experiment / scale


def record_path(root: str | Path, experiment: str, scale: str, cell_id: str) -> Path:
    return cell_dir(root, experiment, scale) / f"{cell_id}.json"


def checkpoint_path(root: str | Path, experiment: str, scale: str, cell_id: str) -> Path:
    return cell_dir(root, experiment, scale) / ".ckpt" / f"{cell_id}.pt"


def work_dir(root: str | Path, experiment: str, scale: str, cell_id: str) -> Path:
    return cell_dir(root, experiment, scale) / ".work" / cell_id


def float_path(root: str | Path, scale: str, key: str) -> Path:
    return Path(root) / "_float" / scale / f"{key}.pt"


def is_finished(root: str | Path, experiment: str, scale: str, cell_id: str) -> bool:
    return record_path(root, experiment, scale, cell_id).is_file()


# ---------------------------------------------------------------- records
def write_record(root: str | Path, record: Record, overwrite: bool = False) -> Path:
    """Write one finished cell; refuses to replace an existing record unless `overwrite` is asked for."""
    if not isinstance(record, Record):
        raise TypeError(f"write_record takes a Record, got {type(record).__name__}")
    path = record_path(root, record.experiment, record.scale, record.cell)
    if path.exists() and not overwrite:
        raise RecordExistsError(
            f"{path} already holds a finished result; delete it (or pass --force) to recompute it"
        )
    return atomic_write(path, record.to_json(), kind="record")


def read_record(path: Path) -> Record:
    """One record file, checked as `check_file` checks it; ValueError (path, problem, fix) when it is bad."""
    record, bad = check_file(Path(path))
    if bad is not None:
        raise ValueError(str(bad))
    return record  # type: ignore[return-value]


def seedless(cell_id: str, init: str, seed: int) -> str:
    """A cell id without its seed: what the seeds of one cell share. `Cell.id` puts the seed right after the
    init, so the cut is anchored there; an id of another layout (hand-written, older) loses its whole
    "-s<seed>" segment, never a "-s<seed>" that is the start of a longer one."""
    marker = f"-{init}-s{seed}"
    if marker in cell_id:
        return cell_id.replace(marker, f"-{init}", 1)
    cut, n = re.subn(rf"-s{seed}(?=-|$)", "", cell_id, count=1)
    if not n:
        raise ValueError(f"cell id {cell_id!r} has no '-s{seed}': it is not an id of seed {seed}")
    return cut


# ---------------------------------------------------------------- the one record validator
@dataclass(frozen=True)
class BadFile:
    """One file of the store that is not a readable, well-placed record: where, what is wrong, the fix."""

    path: Path
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}; {self.fix}"


class StoreError(ValueError):
    """Every bad file under the part of the store that was asked for, listed at once (nothing was read).
    One bad file is one line; several are a count, then one line each."""

    def __init__(self, bad: list[BadFile]) -> None:
        self.bad = bad
        hint = "tables.render and compare take --skip-bad to leave them out"
        if len(bad) == 1:
            super().__init__(f"{bad[0]} ({hint})")
            return
        head = (
            f"{len(bad)} bad record files in the store, nothing was read from it: fix or delete each ({hint})"
        )
        super().__init__("\n".join([head, *(f"  {b}" for b in bad)]))


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,), "list": (list,),
}  # fmt: skip


def _type_problem(name: str, value: Any, annotation: str) -> str:
    """ "" when `value` fits the field's annotation ("int", "float", "int | None", "dict[str, Metric]"...)."""
    kind, _, rest = annotation.partition(" | ")
    if rest == "None" and value is None:
        return ""
    expected = _TYPES.get(kind.split("[")[0])
    fits = isinstance(value, expected or object) and (bool in (expected or ()) or not isinstance(value, bool))
    if expected is None or fits:
        return ""
    return f"field {name!r} is {_short(value)} ({type(value).__name__}), not {annotation}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _metric_problem(where: str, metrics: Any) -> str:
    """ "" when every metric is {mean: number, std: number, n: int >= 1} (a string mean broke pandas)."""
    if not isinstance(metrics, dict):
        return f"{where} is {_short(metrics)}, not a dict of metrics"
    for name, m in metrics.items():
        if not isinstance(m, dict) or "mean" not in m:
            return f"{where} {name!r} is {_short(m)}, not {{mean, std, n}}"
        for key, value in m.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if key not in ("mean", "std", "n"):
                return f"{where} {name!r} has an unknown entry {key!r}"
            if not number or (key == "n" and (not isinstance(value, int) or value < 1)):
                kind = "an integer >= 1" if key == "n" else "a number"
                return f"{where} {name!r} {key} is {_short(value)} ({type(value).__name__}), not {kind}"
    return ""


def _content_problem(data: Any) -> str:
    """ "" when `data` (a parsed JSON file) is a schema-2 record whose fields have their declared types."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not a record"
    if data.get("schema") != SCHEMA:
        return f"schema {data.get('schema', 1)}, this code reads schema {SCHEMA}"
    declared = {f.name: f for f in fields(Record)}
    required = [n for n, f in declared.items() if f.default is MISSING and f.default_factory is MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    for name, value in data.items():
        if name in declared and (problem := _type_problem(name, value, str(declared[name].type))):
            return problem
    if problem := _metric_problem("metric", data["metrics"]):
        return problem
    for point in data.get("sweep", []):
        metrics = point.get("metrics") if isinstance(point, dict) else point
        if problem := _metric_problem("sweep metric", metrics):
            return problem
    return ""


def check_file(path: Path) -> tuple[Record | None, BadFile | None]:
    """(the record, None) for a good file; (None, why and the fix) for a bad one. A good file parses, has
    the current schema and typed fields, and sits where its own fields say: <experiment>/<scale>/<cell>.json
    with the cell id's seed equal to its seed (a misfiled record is never taken for another cell)."""
    experiment, scale = path.parent.parent.name, path.parent.name
    rerun = f"delete it and rerun `python -m benchmarks run {experiment} --scale {scale}`"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        return None, BadFile(path, f"unreadable record ({type(exc).__name__}: {exc.strerror or exc})", rerun)
    except json.JSONDecodeError as exc:
        return None, BadFile(path, f"unreadable record (not valid JSON, truncated? {exc})", rerun)
    if problem := _content_problem(data):
        return None, BadFile(path, f"unreadable record ({problem})", rerun)
    try:
        record = Record.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        return None, BadFile(path, f"unreadable record ({type(exc).__name__}: {exc})", rerun)
    home = path.parent.parent.parent / record.experiment / record.scale / f"{record.cell}.json"
    if (record.experiment, record.scale) != (experiment, scale):
        where = f"a {record.scale}-scale record of {record.experiment} in the {experiment}/{scale} folder"
        return None, BadFile(path, where, f"move it to {home} (or delete it)")
    if record.cell != path.stem:
        return None, BadFile(
            path, f"its cell is {record.cell!r}, not the file's name", f"rename it to {home} (or delete it)"
        )
    named = re.findall(r"-s(\d+)(?=-|$)", record.cell)  # ids made by Cell.id name their seed once
    if named and named[0] != str(record.seed):
        return None, BadFile(
            path, f"seed {record.seed}, but its cell id names another seed (a duplicate row)", rerun
        )
    return record, None


def _identity(record: Record) -> tuple:
    """What makes two records the same cell at the same seed (every field a cell id is made of)."""
    return (
        record.experiment, record.scale, record.arch, record.model, record.dataset, record.method,
        record.levels, record.first_last, record.noise_train, record.noise_eval, record.noise_eval_file,
        record.init, json.dumps(record.options, sort_keys=True, default=str),
        json.dumps(record.recipe, sort_keys=True, default=str), record.seed,
    )  # fmt: skip


def scan(
    root: str | Path = "results", experiment: str | None = None, scale: str | None = None
) -> tuple[list[Record], list[BadFile]]:
    """Every record file under `root` (optionally one experiment, one scale), checked: (good records sorted
    by experiment, scale, cell; bad files sorted by path). Two files holding the same cell and seed are
    both bad (a table would count that seed twice)."""
    paths = sorted(Path(root).glob(f"{experiment or '*'}/{scale or '*'}/*.json"))  # none under a missing root
    good: dict[Path, Record] = {}
    bad: list[BadFile] = []
    for path in paths:
        if path.parent.parent.name.startswith(("_", ".")) or path.parent.name.startswith(("_", ".")):
            continue  # _float/, _bench/, .submitit/: not records
        record, problem = check_file(path)
        if problem is not None:
            bad.append(problem)
        else:
            good[path] = record  # type: ignore[assignment]
    holders: dict[tuple, list[Path]] = {}
    for path, record in good.items():
        holders.setdefault(_identity(record), []).append(path)
    for same in (ps for ps in holders.values() if len(ps) > 1):
        for path in same:
            others = ", ".join(p.name for p in same if p != path)
            seed = good.pop(path).seed
            bad.append(BadFile(path, f"seed {seed} of the same cell as {others}", "delete one of them"))
    records = sorted(good.values(), key=lambda r: (r.experiment, r.scale, r.cell))
    return records, sorted(bad, key=lambda b: str(b.path))


_REPORTED: set[Path] = set()  # a CLI loads one store more than once (check first, then render): say it once


def load_records(
    root: str | Path = "results",
    experiment: str | None = None,
    scale: str | None = None,
    skip_bad: bool = False,
) -> list[Record]:
    """Every good record under `root`, optionally filtered, sorted by (experiment, scale, cell).

    A bad file (`scan`) raises StoreError listing every one; `skip_bad` leaves them out instead and says
    which on stderr."""
    records, bad = scan(root, experiment, scale)
    if bad and not skip_bad:
        raise StoreError(bad)
    fresh = [b for b in bad if b.path not in _REPORTED]
    if fresh:
        _REPORTED.update(b.path for b in fresh)
        lines = [f"left out {len(fresh)} bad record file(s) (--skip-bad):", *(f"  {b}" for b in fresh)]
        print("\n".join(lines), file=sys.stderr)
    return records


#: Record fields that are not one scalar column of `load`'s frame: metrics become `<name>`, `<name>_std`,
#: `<name>_n`; options `opt_<name>`; refits their sum.
_NOT_COLUMNS = frozenset({"metrics", "options", "sweep", "refits", "recipe", "resumed", "schema"})
#: The frame's cell columns, in the Record's field order: the schema is the Record, written once.
CELL_COLUMNS = tuple(f.name for f in fields(Record) if f.name not in _NOT_COLUMNS)
#: What `load_sweeps` adds to the cell columns, one row per (sweep point, metric).
SWEEP_COLUMNS = ("noise_samples", "test_noise", "adc_bits", "tile", "metric", "mean", "std", "n")


def load(
    experiment: str | None = None,
    scale: str | None = None,
    root: str | Path = "results",
    skip_bad: bool = False,
):
    """One row per finished cell and seed: the cell's fields, then `<metric>` (mean), `<metric>_std` and
    `<metric>_n` for every metric, and one `opt_<name>` column per extra QuantConfig option. Bad files:
    `load_records`."""
    import pandas as pd

    rows = []
    for r in load_records(root, experiment, scale, skip_bad):
        row: dict[str, Any] = {c: getattr(r, c) for c in CELL_COLUMNS}
        row["refits"] = sum(r.refits.values())  # Algorithm 1's re-fits after the initial fit, all layers
        row.update({f"opt_{k}": flat_option(v) for k, v in r.options.items()})
        for name, m in r.metrics.items():
            row.update({name: m.mean, f"{name}_std": m.std, f"{name}_n": m.n})
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else list(CELL_COLUMNS))


def flat_option(value: Any) -> Any:
    """A dict option as "k=v,..." (a DataFrame cell must be hashable for groupby and compare; cell ids)."""
    return ",".join(f"{k}={v}" for k, v in sorted(value.items())) if isinstance(value, dict) else value


def load_sweeps(experiment: str, scale: str, root: str | Path = "results", skip_bad: bool = False):
    """Long form of every sweep point: cell fields, test noise, ADC bits, tile, metric, mean, std, n."""
    import pandas as pd

    rows = []
    for r in load_records(root, experiment, scale, skip_bad):
        base = {c: getattr(r, c) for c in CELL_COLUMNS}
        base["noise_samples"] = r.recipe.get("noise_samples", 1)
        for p in r.sweep:
            for name, m in p.metrics.items():
                rows.append(
                    {
                        **base,
                        "test_noise": p.noise,
                        "adc_bits": p.adc_bits,
                        "tile": p.tile,
                        "metric": name,
                        "mean": m.mean,
                        "std": m.std,
                        "n": m.n,
                    }
                )
    return pd.DataFrame(rows, columns=None if rows else [*CELL_COLUMNS, *SWEEP_COLUMNS])


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save through `atomic_write`: a kill leaves the previous checkpoint whole, the umask is kept."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getbuffer(), kind="checkpoint")


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none. One that cannot be read (a disk fault: our
    own writes are atomic) is set aside as <name>.unreadable-<UTC time>, with one warning line, and None
    comes back: that cell or float model trains again from its start (a checkpoint holds no finished
    result)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        os.replace(path, aside)
        print(
            f"warning: checkpoint {path} is unreadable ({type(exc).__name__}): set aside as {aside.name}; "
            "training it again from its start",
            file=sys.stderr,
        )
        return None


# ---------------------------------------------------------------- claims: two runs never train one cell twice
class Claim:
    """An exclusive claim file (host, pid, since) on one cell; a heartbeat thread keeps its mtime fresh.

    `Claim.take(path)` creates the file with O_EXCL (one atomic primitive: exactly one contender wins) and
    returns None while another live process holds it. A stale claim (same host and its pid gone, or no
    heartbeat for `stale_after` seconds, unreadable ones included) is taken over: the cell then resumes from
    its checkpoint. A claim says nothing about the record: the caller re-checks that after taking it.
    """

    def __init__(self, path: Path, heartbeat_s: float) -> None:
        self.path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True)

    @classmethod
    def take(cls, path: Path, stale_after: float | None = None) -> Claim | None:
        stale_after = faults.stale_after_s() if stale_after is None else stale_after
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                judged = _claim_is_stale(path, stale_after)
                if judged is None and path.exists():
                    return None  # a live claim
                if judged is not None and not _remove_stale(path, judged):
                    return None  # it turned fresh while we looked: a live claim
                continue
            try:
                with os.fdopen(fd, "w") as f:
                    faults.hit("claim_write", path.stem, str(path))
                    json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": now_iso()}, f)
            except BaseException:  # a full disk: an empty claim of ours would block the cell for stale_after
                path.unlink(missing_ok=True)
                raise
            claim = cls(path, heartbeat_s=stale_after / 10)
            claim._thread.start()
            return claim
        return None

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                os.utime(self.path)
            except FileNotFoundError:  # moved aside for a moment by a contender's takeover check
                continue

    def release(self) -> None:
        """Stop the heartbeat and remove the claim, unless another run took it over meanwhile."""
        self._stop.set()
        info = claim_info(self.path)
        if info is not None and (info.get("host"), info.get("pid")) == (socket.gethostname(), os.getpid()):
            self.path.unlink(missing_ok=True)


def claim_info(path: Path) -> dict[str, Any] | None:
    """The claim's JSON, or None when it is gone, empty or unreadable (a writer died between create and
    write, or a disk filled)."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _claim_is_stale(path: Path, stale_after: float) -> tuple[int, int] | None:
    """The stale claim's identity (inode, mtime) when its process is gone (same host) or its heartbeat is
    older than `stale_after` (any host, and any unreadable claim); None while it is live or gone."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    identity = (st.st_ino, st.st_mtime_ns)
    info = claim_info(path)
    if info is not None and info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        if not _pid_alive(info["pid"]):
            return identity
    return identity if time.time() - st.st_mtime > stale_after else None


def _remove_stale(path: Path, judged: tuple[int, int]) -> bool:
    """Move the claim judged stale aside and delete it. A rename wins for one contender only; if what moved
    is not the file judged stale (a contender's fresh claim, or a new heartbeat), it is put back."""
    grave = path.with_name(f".{path.name}.stale.{os.getpid()}")
    try:
        os.replace(path, grave)
    except FileNotFoundError:
        return True  # another contender removed it: the next O_EXCL decides
    st = grave.stat()
    if (st.st_ino, st.st_mtime_ns) == judged:
        grave.unlink(missing_ok=True)
        return True
    try:
        os.link(grave, path)
    except FileExistsError:
        pass
    grave.unlink(missing_ok=True)
    return False


def claim_holder(path: Path, stale_after: float | None = None) -> str:
    """Who holds a claim, since when, and when a waiting run takes it over: one line for the user."""
    stale_after = faults.stale_after_s() if stale_after is None else stale_after
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return "released"
    info = claim_info(path)
    at = time.strftime("%H:%M:%SZ", time.gmtime(mtime + stale_after))
    if info is None:
        return f"held by an unreadable claim {path.name}; taking it over at {at} unless it is rewritten"
    host, pid = info.get("host", "?"), info.get("pid", "?")
    exits = f" (or as soon as pid {pid} exits)" if host == socket.gethostname() else ""
    return (
        f"held by host {host} pid {pid} since {info.get('since', '?')}; taking it over at {at} if its "
        f"heartbeat stops{exits}"
    )


def claim_path(root: str | Path, experiment: str, scale: str, cell_id: str) -> Path:
    return cell_dir(root, experiment, scale) / ".claims" / f"{cell_id}.json"


# ---------------------------------------------------------------- provenance
def fingerprint_files(paths: Iterable[Path], hash_contents: bool = True) -> str:
    """sha256 over relative names, sizes and (optionally) contents: identifies the exact data used."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        h.update(p.name.encode())
        h.update(str(p.stat().st_size).encode())
        if hash_contents:
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


@functools.cache
def code_version() -> str:
    """git commit of the code that produced a record ("+dirty" when the tree has local edits).

    Read once per process, when a run starts (runners call it first): a commit made while a long run
    goes on must not be stamped on records that the older, already-loaded code produced.
    """
    here = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return "cacim-" + version("cacim")
        except PackageNotFoundError:
            return "unknown"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
