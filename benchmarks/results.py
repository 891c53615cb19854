"""The results store: one JSON record per finished cell, written atomically, plus resumable checkpoints.

Layout: ``<root>/<experiment>/<scale>/<cell_id>.json`` (finished cells) and
``<root>/<experiment>/<scale>/.ckpt/<cell_id>.pt`` (the last finished epoch of an interrupted cell).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

REQUIRED_FIELDS = (
    "experiment",
    "cell",
    "scale",
    "model",
    "dataset",
    "method",
    "levels",
    "noise_train",
    "noise_eval",
    "first_last",
    "seed",
    "trials",
    "metrics",
    "refits",
    "dataset_fingerprint",
    "code_version",
    "wall_time_s",
    "finished_at",
)


class RecordExistsError(FileExistsError):
    """A finished record is never overwritten silently."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_path(root: str | Path, experiment: str, scale: str, cell_id: str) -> Path:
    return Path(root) / experiment / scale / f"{cell_id}.json"


def checkpoint_path(root: str | Path, experiment: str, scale: str, cell_id: str) -> Path:
    return Path(root) / experiment / scale / ".ckpt" / f"{cell_id}.pt"


def is_finished(root: str | Path, experiment: str, scale: str, cell_id: str) -> bool:
    return record_path(root, experiment, scale, cell_id).is_file()


def write_record(root: str | Path, record: dict[str, Any], overwrite: bool = False) -> Path:
    """Write one finished cell; refuses to replace an existing record unless `overwrite` is asked for."""
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise ValueError(f"record for cell {record.get('cell')!r} lacks fields: {', '.join(missing)}")
    path = record_path(root, record["experiment"], record["scale"], record["cell"])
    if path.exists() and not overwrite:
        raise RecordExistsError(
            f"{path} already holds a finished result; delete it (or pass --force) to recompute it"
        )
    _atomic_write_bytes(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    return path


def load_records(
    root: str | Path = "results", experiment: str | None = None, scale: str | None = None
) -> list[dict[str, Any]]:
    """Every finished record under `root`, optionally filtered, sorted by (experiment, scale, cell)."""
    root = Path(root)
    if not root.is_dir():
        return []
    pattern = f"{experiment or '*'}/{scale or '*'}/*.json"
    records = []
    for path in sorted(root.glob(pattern)):
        with open(path) as f:
            records.append(json.load(f))
    return sorted(records, key=lambda r: (r["experiment"], r["scale"], r["cell"]))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then an atomic rename: a kill leaves the previous checkpoint whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


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
