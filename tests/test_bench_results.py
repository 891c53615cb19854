import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest
import torch

from benchmarks.results import (
    Claim,
    Metric,
    Record,
    RecordExistsError,
    SweepPoint,
    checkpoint_path,
    load,
    load_checkpoint,
    load_records,
    record_path,
    save_checkpoint,
    write_record,
)


def make_record(
    cell: str = "c1", experiment: str = "table1", scale: str = "smoke", top1: float = 90.0, **fields
) -> Record:
    metrics = {"top1": Metric(top1), "fp_top1": Metric(95.0), "gap_top1": Metric(95.0 - top1)}
    base = dict(
        experiment=experiment,
        cell=cell,
        scale=scale,
        seed=0,
        arch="resnet20",
        model="resnet20_narrow",
        dataset="digits8",
        method="lloyd",
        levels=3,
        first_last="quantize",
        noise_train=0.0,
        noise_eval=0.0,
        metrics=metrics,
        refits={"conv1": 1},
        dataset_fingerprint="abc",
        code_version="test",
        wall_time_s=1.0,
        finished_at="now",
    )
    return Record(**{**base, **fields})


def test_write_load_and_refuse_overwrite(tmp_path):
    path = write_record(tmp_path, make_record("b"))
    write_record(tmp_path, make_record("a", scale="proxy"))
    assert path == record_path(tmp_path, "table1", "smoke", "b")
    assert [r.cell for r in load_records(tmp_path)] == ["a", "b"]  # sorted by (experiment, scale, cell)
    assert [r.cell for r in load_records(tmp_path, scale="proxy")] == ["a"]
    with pytest.raises(RecordExistsError, match="--force"):
        write_record(tmp_path, make_record("b", top1=10.0))
    assert json.loads(path.read_text())["metrics"]["top1"]["mean"] == 90.0
    write_record(tmp_path, make_record("b", top1=10.0), overwrite=True)
    assert load_records(tmp_path, scale="smoke")[0].metrics["top1"] == Metric(10.0, 0.0, 1)
    assert not list(path.parent.glob("*.tmp"))


def test_record_round_trips_and_files_keep_the_umask(tmp_path):
    record = make_record(sweep=[SweepPoint(0.02, 4, {"top1": Metric(80.0, 1.5, 5)})], options={"adc_bits": 6})
    old = os.umask(0o022)
    try:
        path = write_record(tmp_path, record)
        ckpt = tmp_path / "_float" / "m.pt"
        save_checkpoint(ckpt, {"w": torch.ones(2)})  # float models and checkpoints are shared results too
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp alone would leave 0600
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o644
    assert torch.equal(load_checkpoint(ckpt)["w"], torch.ones(2))
    assert load_records(tmp_path) == [record]


def test_unreadable_record_is_one_line_naming_the_fix(tmp_path):
    path = record_path(tmp_path, "table1", "smoke", "bad")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="delete it and rerun"):
        load_records(tmp_path)


def test_schema1_record_is_one_line_naming_the_command_that_recomputes_it(tmp_path):
    """Records written before the typed store (flat metrics, no "schema") are recomputed, not converted."""
    path = write_record(tmp_path, make_record("c", experiment="robustness"))
    old = json.loads(path.read_text())
    del old["schema"]
    old["metrics"] = {"top1": 80.0, "top1_std": 0.5, "top1@noise0.04": 70.0}
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError) as error:
        load_records(tmp_path)
    message = str(error.value)
    assert "\n" not in message and "schema 1, this code reads schema 2" in message
    assert "delete it and rerun `python -m benchmarks run robustness --scale smoke`" in message


def test_load_gives_one_row_per_cell_and_seed(tmp_path):
    for seed in (0, 1):
        write_record(
            tmp_path, make_record(f"c-s{seed}", seed=seed, top1=80.0 + seed, options={"adc_bits": 6})
        )
    frame = load("table1", scale="smoke", root=tmp_path)
    assert list(frame["seed"]) == [0, 1] and list(frame["top1"]) == [80.0, 81.0]
    assert list(frame["gap_top1"]) == [15.0, 14.0] and list(frame["top1_n"]) == [1, 1]
    assert list(frame["opt_adc_bits"]) == [6, 6] and set(frame["method"]) == {"lloyd"}
    assert list(frame["precision"]) == ["fp32", "fp32"] and list(frame["world_size"]) == [1, 1]
    assert load("nothing", root=tmp_path).empty


def test_claims_exclude_a_second_run_and_stale_ones_are_taken_over(tmp_path):
    path = tmp_path / "claims" / "cell.json"
    first = Claim.take(path)
    assert first is not None and Claim.take(path) is None  # a live claim of this process
    first.release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    taken = Claim.take(path)  # its process is gone: stale
    assert taken is not None and json.loads(path.read_text())["pid"] == os.getpid()
    taken.release()
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    assert Claim.take(path) is None  # another host's claim with a fresh heartbeat
    old = time.time() - 10_000
    os.utime(path, (old, old))
    assert Claim.take(path) is not None  # ... and without a heartbeat for too long


def test_checkpoint_roundtrip(tmp_path):
    path = checkpoint_path(tmp_path, "t", "smoke", "c")
    assert load_checkpoint(path) is None
    save_checkpoint(path, {"epoch": 3, "w": torch.arange(4)})
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.arange(4))


def test_code_version_is_read_once_per_process(monkeypatch):
    """A commit made while a long run goes on must not be stamped on records of the code loaded before."""
    import subprocess

    from benchmarks import results

    answers = iter(["aaaaaaaaaaaa\n", "", "bbbbbbbbbbbb\n", " M cacim_core/noise.py\n"])
    monkeypatch.setattr(
        results.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, next(answers), "")
    )
    results.code_version.cache_clear()
    try:
        assert results.code_version() == "aaaaaaaaaaaa"
        assert results.code_version() == "aaaaaaaaaaaa"  # the tree changed meanwhile; the record does not
    finally:
        results.code_version.cache_clear()


def test_seedless_ids_group_the_seeds_of_one_cell_and_nothing_else():
    """Figures group a cell's seeds by its id without the seed, cut where Cell.id puts it (after the init)."""
    from dataclasses import replace

    from benchmarks.experiments import cells
    from benchmarks.results import seedless

    every = {replace(c, seed=0).id: replace(c, seed=0) for c in cells("table1", "smoke")}  # seed 0 of each
    groups: dict[str, set] = {}
    for cell in every.values():
        for seed in (0, 1, 12):
            seeded = replace(cell, seed=seed)
            groups.setdefault(seedless(seeded.id, seeded.init, seed), set()).add(seeded.id)
    assert len(groups) == len(every) > 5  # one group per cell
    assert all(len(g) == 3 for g in groups.values())  # holding its three seeds
    with pytest.raises(ValueError, match="not an id of seed 3"):
        seedless(next(iter(every)), "pretrained", 3)
