"""Fault injection on the store (benchmarks.faults): a kill or a full disk at the record write, a claim race,
an unreadable or foreign claim, SIGTERM/SIGINT mid-cell, a dead worker, a forked library worker. Each test
breaks a real CLI run at one point and checks what a rerun finds: nothing lost, nothing trained twice,
nothing hung."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_bench_runner import _run_cli as _cli

from benchmarks import runner
from benchmarks.experiments import cells
from benchmarks.results import Claim, checkpoint_path, claim_path, load_records, record_path

KILLTEST = ["killtest", "--scale", "smoke", "--plugin", "cacim_test_plugin"]


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    err = proc.communicate(timeout=timeout)[1].decode()
    return proc.returncode, err


def _cell():
    import cacim_test_plugin  # noqa: F401  (registers killtest)

    (cell,) = cells("killtest", "smoke")
    return cell


def _trainings(log: Path) -> list[str]:
    return log.read_text().split()[::2] if log.is_file() else []


@pytest.mark.slow
def test_kill_inside_the_record_write_loses_no_training(tmp_path):
    """SIGKILL with the record's .tmp fsync'd but not renamed: no record, but the checkpoint is still there,
    so the rerun resumes (no retraining), removes the dead writer's .tmp, and writes the record once."""
    results, cell = tmp_path / "results", _cell()
    code, err = _finish(_cli(KILLTEST, results, CACIM_FAULT="kill_in_record_write"))
    assert code == -signal.SIGKILL, err[-2000:]
    folder = record_path(results, "killtest", "smoke", cell.id).parent
    assert list(folder.glob("*.json")) == [] and len(list(folder.glob(".*.tmp"))) == 1
    assert checkpoint_path(results, "killtest", "smoke", cell.id).is_file()

    code, err = _finish(_cli(KILLTEST, results))
    assert code == 0, err[-2000:]
    assert "removed 1 .tmp file(s)" in err
    (record,) = load_records(results)
    assert record.resumed and record.metrics["top1"].n == 2
    assert (
        list(folder.glob(".*.tmp")) == []
        and not checkpoint_path(results, "killtest", "smoke", cell.id).exists()
    )


@pytest.mark.slow
def test_full_disk_at_the_record_is_one_line_and_resumable(tmp_path):
    """ENOSPC at the record's fsync: one line naming the fix, exit 2, no record, no .tmp, the checkpoint
    kept; after space is freed the rerun resumes from it."""
    results, cell = tmp_path / "results", _cell()
    code, err = _finish(_cli(KILLTEST, results, CACIM_FAULT="enospc_record"))
    assert code == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "no space left on the device" in last and "--results" in last and "Traceback" not in err
    folder = record_path(results, "killtest", "smoke", cell.id).parent
    assert list(folder.glob("*.json")) == [] and list(folder.glob(".*.tmp")) == []
    assert checkpoint_path(results, "killtest", "smoke", cell.id).is_file()
    assert not claim_path(results, "killtest", "smoke", cell.id).exists()  # released on the way out

    code, err = _finish(_cli(KILLTEST, results))
    assert code == 0, err[-2000:]
    (record,) = load_records(results)
    assert record.resumed


@pytest.mark.slow
def test_a_cell_finished_between_check_and_claim_is_not_trained_again(tmp_path):
    """Run A finds the record missing and is held before its claim; run B trains the cell and writes it;
    A then claims, sees the record, and neither trains nor fails (it used to train it a second time and
    stop with 'already holds a finished result')."""
    results, cell, log, gate = tmp_path / "results", _cell(), tmp_path / "trained", tmp_path / "gate"
    a = _cli(KILLTEST, results, CACIM_CLAIM_GATE=str(gate), CACIM_TRAIN_LOG=str(log))
    deadline = time.time() + 120
    while not Path(f"{gate}.waiting").exists() and a.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert Path(f"{gate}.waiting").exists(), _finish(a)[1][-2000:]
    code_b, err_b = _finish(_cli(KILLTEST, results, CACIM_TRAIN_LOG=str(log)))
    assert code_b == 0, err_b[-2000:]
    gate.touch()
    code_a, err_a = _finish(a)
    assert code_a == 0, err_a[-2000:]
    assert _trainings(log) == [cell.id]  # trained once, by B
    assert "already holds" not in err_a
    (record,) = load_records(results)
    assert record.cell == cell.id


@pytest.mark.slow
def test_an_unreadable_stale_claim_is_taken_over(tmp_path):
    """A run killed between creating its claim and writing it leaves a 0-byte claim: once it is older than
    the heartbeat timeout the next run takes it over (it used to wait forever in silence)."""
    results, cell = tmp_path / "results", _cell()
    claim = claim_path(results, "killtest", "smoke", cell.id)
    claim.parent.mkdir(parents=True)
    claim.touch()
    old = time.time() - 3600
    os.utime(claim, (old, old))
    code, err = _finish(_cli(KILLTEST, results), timeout=300)
    assert code == 0, err[-2000:]
    assert len(load_records(results)) == 1 and not claim.exists()


def test_claims_unit_fresh_unreadable_is_live_stale_is_taken(tmp_path):
    path = tmp_path / "c.json"
    path.touch()  # being written right now
    assert Claim.take(path, stale_after=60) is None
    old = time.time() - 120
    os.utime(path, (old, old))
    claim = Claim.take(path, stale_after=60)
    assert claim is not None and json.loads(path.read_text())["pid"] == os.getpid()
    claim.release()
    assert not path.exists()


@pytest.mark.slow
def test_a_waiting_run_says_who_holds_the_cell_and_takes_a_dead_heartbeat_over(tmp_path):
    """A claim from another host whose heartbeat stops once the run has planned: the waiting run names its
    holder and when it takes it over, then does so after the heartbeat timeout (5 s here)."""
    results, cell = tmp_path / "results", _cell()
    claim = claim_path(results, "killtest", "smoke", cell.id)
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "2026-01-01T00:00:00Z"}))
    stop = threading.Event()

    def beat() -> None:  # the other host's heartbeat, until the run has planned its cells
        while not stop.wait(0.5):
            os.utime(claim)

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    proc = _cli(KILLTEST, results, CACIM_STALE_AFTER_S="5")
    lines = []
    for line in iter(proc.stderr.readline, b""):
        lines.append(line.decode())
        if "to run" in lines[-1]:
            break
    stop.set()
    beating.join()
    code, err = _finish(proc)
    err = "".join(lines) + err
    assert code == 0, err[-2000:]
    waiting = [line for line in err.splitlines() if line.startswith("waiting for killtest [smoke]")]
    assert (
        len(waiting) == 1
        and "held by host elsewhere pid 1" in waiting[0]
        and "taking it over at" in waiting[0]
    ), err[-2000:]
    assert len(load_records(results)) == 1


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.slow
def test_sigterm_and_sigint_stop_with_one_line_and_release_the_claim(tmp_path, sig, code):
    results, cell = tmp_path / "results", _cell()
    claim = claim_path(results, "killtest", "smoke", cell.id)
    proc = _cli(KILLTEST, results, CACIM_FAULT="pause_in_training")
    deadline = time.time() + 120
    while not claim.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert claim.exists(), _finish(proc)[1][-2000:]
    time.sleep(0.5)
    proc.send_signal(sig)
    rc, err = _finish(proc, timeout=60)
    assert rc == code, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        f"interrupted by {signal.Signals(sig).name}: 0 of 1 cells done, rerun to resume"
    )
    assert "Traceback" not in err and not claim.exists()


@pytest.mark.slow
def test_a_dead_worker_is_reported_and_its_cell_taken_over(tmp_path):
    """--workers 2, and the first worker to start a cell is SIGKILLed: the run names it, the other worker
    trains that cell too, and every record is written once."""
    results, log = tmp_path / "results", tmp_path / "trained"
    args = ["table1", "--scale", "smoke", "--methods", "uniform", "--workers", "2"]
    env = {
        "CACIM_FAULT": "kill_in_training",
        "CACIM_FAULT_ONCE": str(tmp_path / "once"),
        "CACIM_TRAIN_LOG": str(log),
    }
    code, err = _finish(_cli(args, results, **env), timeout=600)
    assert code == 0, err[-2000:]
    died = [line for line in err.splitlines() if " died (signal SIGKILL) in " in line]
    assert len(died) == 1 and "the other workers take it over" in died[0], err[-2000:]
    expected = sorted(c.id for c in cells("table1", "smoke", ["uniform"]))
    assert sorted(r.cell for r in load_records(results)) == expected
    killed = died[0].split(" in ")[1].split(":")[0]
    assert killed in expected and _trainings(log).count(killed) == 2  # the dead one's try, then the takeover


def test_a_forked_child_of_a_run_dies_on_sigterm():
    """mmdet's eval_map forks a Pool inside a cell and its terminate() SIGTERMs and joins the workers: a
    forked child must die on SIGTERM as it would without our handlers (it used to hang Table 4's run)."""
    with runner._interruptible():
        pid = os.fork()
        if pid == 0:  # the child: an exception (our Interrupted) exits 3, a default SIGTERM kills it
            try:
                time.sleep(30)
            except BaseException:
                os._exit(3)
            os._exit(0)
        time.sleep(0.3)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_store_that_cannot_be_written_is_one_line_before_training(tmp_path, capsys):
    from benchmarks.__main__ import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", "table1", "--scale", "smoke", "--results", str(blocker), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file: pass a folder" in err[0]
    assert not list(tmp_path.glob("*/"))  # nothing created


@pytest.mark.slow
def test_an_unreadable_checkpoint_is_set_aside_and_the_cell_trained_again(tmp_path):
    """A truncated checkpoint (a disk fault) used to end the run with torch's traceback at every rerun: it
    is now set aside under another name (kept for a look), one warning line says so, and the cell trains
    from its start; the record is written once."""
    results, cell = tmp_path / "results", _cell()
    ckpt = checkpoint_path(results, "killtest", "smoke", cell.id)
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    code, err = _finish(_cli(KILLTEST, results))
    assert code == 0, err[-2000:]
    (line,) = [x for x in err.splitlines() if "unreadable" in x]
    assert str(ckpt) in line and "training it again from its start" in line and "Traceback" not in err
    (aside,) = ckpt.parent.glob(f"{ckpt.name}.unreadable-*")
    assert aside.read_bytes() == b"PK\x03\x04 truncated"
    (record,) = load_records(results)
    assert not record.resumed and record.metrics["top1"].n == 2


def _epoch(ckpt: Path) -> int:
    import torch

    return torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]


@pytest.mark.slow
def test_kill_inside_a_checkpoint_write_keeps_the_previous_one_and_resumes(tmp_path):
    """SIGKILL with the 4th epoch checkpoint's .tmp fsync'd but not renamed: the 3rd is whole on disk; the
    rerun removes the dead writer's .tmp, resumes from epoch 3 (training starts twice in all, never from 0
    again) and writes the record once."""
    results, cell, log = tmp_path / "results", _cell(), tmp_path / "train.log"
    ckpt = checkpoint_path(results, "killtest", "smoke", cell.id)
    faults = {
        "CACIM_FAULT": "kill_in_checkpoint_write",
        "CACIM_FAULT_CELL": cell.id,
        "CACIM_FAULT_AFTER": "3",
    }
    code, err = _finish(_cli(KILLTEST, results, CACIM_TRAIN_LOG=str(log), **faults))
    assert code == -signal.SIGKILL, err[-2000:]
    assert _epoch(ckpt) == 3 and len(list(ckpt.parent.glob(".*.tmp"))) == 1
    assert not record_path(results, "killtest", "smoke", cell.id).exists()

    code, err = _finish(_cli(KILLTEST, results, CACIM_TRAIN_LOG=str(log)))
    assert code == 0, err[-2000:]
    assert "removed 1 .tmp file(s)" in err and list(ckpt.parent.glob(".*.tmp")) == []
    (record,) = load_records(results)
    assert record.resumed and record.metrics["top1"].n == 2 and not ckpt.exists()
    assert _trainings(log) == [cell.id, cell.id]


@pytest.mark.slow
def test_full_disk_at_a_checkpoint_is_one_line_and_resumes_from_the_last_whole_one(tmp_path):
    """ENOSPC at the 3rd epoch checkpoint's fsync: one line naming the fix, exit 2, no record, no .tmp,
    the 2nd checkpoint kept byte for byte and the claim released; the rerun resumes from it."""
    results, cell = tmp_path / "results", _cell()
    ckpt = checkpoint_path(results, "killtest", "smoke", cell.id)
    faults = {"CACIM_FAULT": "enospc_checkpoint", "CACIM_FAULT_CELL": cell.id, "CACIM_FAULT_AFTER": "2"}
    code, err = _finish(_cli(KILLTEST, results, **faults))
    assert code == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "no space left on the device" in last and "--results" in last and "Traceback" not in err
    assert _epoch(ckpt) == 2 and list(ckpt.parent.glob(".*.tmp")) == []
    assert not record_path(results, "killtest", "smoke", cell.id).exists()
    assert not claim_path(results, "killtest", "smoke", cell.id).exists()

    code, err = _finish(_cli(KILLTEST, results))
    assert code == 0, err[-2000:]
    (record,) = load_records(results)
    assert record.resumed


@pytest.mark.slow
def test_full_disk_at_the_float_model_write_is_one_line_and_keeps_its_training(tmp_path):
    """ENOSPC as the trained float model is saved (its one-epoch checkpoint written just before): one line,
    exit 2, no float model file and no .tmp; the rerun finishes the float model from its checkpoint."""
    results = tmp_path / "results"
    floats = results / "_float" / "smoke"
    code, err = _finish(_cli(KILLTEST, results, CACIM_FAULT="enospc_checkpoint", CACIM_FAULT_AFTER="1"))
    assert code == 2, err[-2000:]
    assert "no space left on the device" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert [p.suffix for p in floats.iterdir()] == [".ckpt"]  # the float training's checkpoint only
    code, err = _finish(_cli(KILLTEST, results))
    assert code == 0, err[-2000:]
    assert sorted(p.suffix for p in floats.iterdir()) == [".pt"] and len(load_records(results)) == 1


@pytest.mark.slow
def test_a_resumed_cell_reads_its_checkpoint_once(tmp_path, monkeypatch):
    """A killed cell's checkpoint is read once on resume (it used to be read twice: a readability check,
    then the training loop), and the cell resumes from it."""
    from benchmarks.__main__ import main
    from benchmarks.backends import torch_loop

    results, cell = tmp_path / "results", _cell()
    code, err = _finish(_cli(KILLTEST, results, CACIM_FAULT="kill_in_record_write"))
    assert code == -signal.SIGKILL, err[-2000:]
    ckpt = checkpoint_path(results, "killtest", "smoke", cell.id)
    reads: list[Path] = []
    real = torch_loop.load_checkpoint
    monkeypatch.setattr(torch_loop, "load_checkpoint", lambda p: reads.append(Path(p)) or real(p))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    assert main(["run", *KILLTEST, "--results", str(results), "--no-progress"]) == 0
    assert reads.count(ckpt) == 1
    (record,) = load_records(results)
    assert record.resumed


@pytest.mark.slow
def test_full_disk_at_the_claim_leaves_no_claim_that_blocks_the_cell(tmp_path):
    """ENOSPC while the claim's JSON is written (the file already created): one line, exit 2, and no empty
    claim left behind (an unreadable claim blocks the cell until its heartbeat times out, 300 s): the
    rerun trains the cell at once."""
    results, cell = tmp_path / "results", _cell()
    code, err = _finish(_cli(KILLTEST, results, CACIM_FAULT="enospc_claim", CACIM_FAULT_CELL=cell.id))
    assert code == 2, err[-2000:]
    assert "no space left on the device" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not claim_path(results, "killtest", "smoke", cell.id).exists()
    assert not record_path(results, "killtest", "smoke", cell.id).exists()
    start = time.time()
    code, err = _finish(_cli(KILLTEST, results), timeout=120)
    assert code == 0 and "held by" not in err, err[-2000:]
    assert time.time() - start < 100 and len(load_records(results)) == 1


def test_full_disk_at_a_table_write_keeps_the_old_tables_whole(tmp_path, monkeypatch, capsys):
    """ENOSPC at the second of a table's three files (md staged, tex fails): one line naming the fix,
    exit 2, and the md, tex and csv already there unchanged (all three are staged before any rename), no
    .tmp left."""
    from benchmarks import faults
    from tables.render import main

    args = ["table1", "--scale", "smoke", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    folder = tmp_path / "out" / "smoke"
    old = {}
    for path in sorted(folder.glob("table1.*")):
        path.write_text(f"the previous {path.suffix} of this table\n")
        old[path.name] = path.read_bytes()
    assert sorted(old) == ["table1.csv", "table1.md", "table1.tex"]
    monkeypatch.setattr(faults, "_passed", {})
    monkeypatch.setenv("CACIM_FAULT", "enospc_table")
    monkeypatch.setenv("CACIM_FAULT_AFTER", "1")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "--out" in err
    assert {p.name: p.read_bytes() for p in folder.glob("table1.*")} == old
    assert list(folder.glob(".*.tmp")) == []


@pytest.mark.slow
def test_a_killed_submitit_job_is_one_line_and_the_others_are_kept(tmp_path):
    """--launcher local (submitit's LocalExecutor), one of two jobs SIGKILLed as its cell starts: the run
    waits for both, names the failed job's cell and log in one line (exit 2), keeps the other's record,
    and a rerun trains only the killed cell."""
    import cacim_test_plugin  # noqa: F401  (registers killtest)

    results, log = tmp_path / "results", tmp_path / "trained"
    kept, killed = (c.id for c in cells("killtest", "smoke", seeds=[0, 1]))
    args = [*KILLTEST, "--seeds", "0,1"]
    env = {"CACIM_FAULT": "kill_in_training", "CACIM_FAULT_CELL": killed, "CACIM_TRAIN_LOG": str(log)}
    code, err = _finish(_cli([*args, "--launcher", "local", "--time", "10"], results, **env), timeout=600)
    assert code == 2 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: 1 of 2 job(s) failed: {killed} (job ") and "rerun to resume" in last
    assert [r.cell for r in load_records(results)] == [kept]

    code, err = _finish(_cli(args, results, CACIM_TRAIN_LOG=str(log)), timeout=300)
    assert code == 0, err[-2000:]
    assert sorted(r.cell for r in load_records(results)) == sorted([kept, killed])
    assert sorted(_trainings(log)) == sorted([kept, killed, killed])  # the killed try, then the rerun
