"""Fault injection for tests/test_faults.py: the one place that reads the CACIM_* test variables.

Every hook is a no-op unless its variable is set, so a normal run never pays for them:

CACIM_FAULT=<fault>         what to break, at which point of a run:
    kill_in_record_write    SIGKILL this process with a record's .tmp fsync'd, before its rename
    pause_in_record_write   sleep 3 s at that point (a signal then lands inside the write)
    enospc_record           the fsync of a record's .tmp fails with ENOSPC (disk full)
    kill_in_checkpoint_write  SIGKILL with a checkpoint's .tmp fsync'd, before its rename
    enospc_checkpoint       the fsync of a checkpoint's .tmp fails with ENOSPC (a cell's, or a float model's)
    enospc_claim            writing a claim's JSON fails with ENOSPC (the claim file already created)
    enospc_table            the fsync of a rendered table's .tmp fails with ENOSPC (tables.render)
    kill_in_training        SIGKILL this process as a cell starts training (a dead worker)
    pause_in_training       sleep 60 s as a cell starts training (a signal lands mid-cell)
CACIM_FAULT_CELL=<cell id>  fire only for this cell (default: every cell)
CACIM_FAULT_ONCE=<file>     fire once across processes: only the one that creates <file> fires
CACIM_FAULT_AFTER=<n>       let the first n matching hits of this process pass (e.g. the n-th checkpoint)
CACIM_CLAIM_DELAY_S=<s>     sleep between a cell's record check and its claim (widens the race window)
CACIM_CLAIM_GATE=<file>     at that point, write <file>.waiting and wait (up to 600 s) until <file> exists
CACIM_TRAIN_LOG=<file>      append "<cell id> <pid>" as each cell starts training (counts trainings)
CACIM_STALE_AFTER_S=<s>     the claims' heartbeat timeout (default 300 s; tests shorten it)
"""

from __future__ import annotations

import errno
import os
import signal
import time

FAULTS = {  # fault -> the point where it fires
    "kill_in_record_write": "record_rename",
    "pause_in_record_write": "record_rename",
    "enospc_record": "record_fsync",
    "kill_in_checkpoint_write": "checkpoint_rename",
    "enospc_checkpoint": "checkpoint_fsync",
    "enospc_claim": "claim_write",
    "enospc_table": "table_fsync",
    "kill_in_training": "training",
    "pause_in_training": "training",
}


def stale_after_s(default: float = 300.0) -> float:
    """Seconds without a heartbeat after which a claim is stale (taken over)."""
    return float(os.environ.get("CACIM_STALE_AFTER_S", default))


def claim_delay() -> None:
    """Hold a run between its record check and its claim: by time, or until a test opens the gate."""
    time.sleep(float(os.environ.get("CACIM_CLAIM_DELAY_S", 0)))
    gate = os.environ.get("CACIM_CLAIM_GATE")
    if gate:
        open(f"{gate}.waiting", "w").close()
        deadline = time.time() + 600
        while not os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.05)


def log_training(cell: str) -> None:
    log = os.environ.get("CACIM_TRAIN_LOG")
    if log:
        with open(log, "a") as f:  # O_APPEND: lines of racing processes do not interleave
            f.write(f"{cell} {os.getpid()}\n")


_passed: dict[str, int] = {}  # matching hits seen so far in this process, per point


def hit(point: str, cell: str, path: str = "") -> None:
    """Fire the configured fault if it belongs to `point` and `cell`; else do nothing."""
    fault = os.environ.get("CACIM_FAULT", "")
    if not fault:
        return
    if fault not in FAULTS:
        raise ValueError(f"CACIM_FAULT={fault}: unknown fault; use one of {', '.join(FAULTS)}")
    if FAULTS[fault] != point or os.environ.get("CACIM_FAULT_CELL", cell) != cell:
        return
    _passed[point] = _passed.get(point, 0) + 1
    if _passed[point] <= int(os.environ.get("CACIM_FAULT_AFTER", 0)):
        return
    once = os.environ.get("CACIM_FAULT_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if fault.startswith("kill_"):
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault.startswith("pause_"):
        time.sleep(3.0 if point.startswith("record") else 60.0)
    elif fault.startswith("enospc_"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
