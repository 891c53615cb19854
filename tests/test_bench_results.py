import json

import pytest
import torch

from benchmarks.results import (
    RecordExistsError,
    checkpoint_path,
    load_checkpoint,
    load_records,
    record_path,
    save_checkpoint,
    write_record,
)


def make_record(
    cell: str = "c1", experiment: str = "table1", scale: str = "smoke", top1: float = 90.0
) -> dict:
    return {
        "experiment": experiment,
        "cell": cell,
        "scale": scale,
        "arch": "resnet20",
        "model": "resnet20_narrow",
        "dataset": "digits8",
        "method": "lloyd",
        "levels": 3,
        "noise_train": 0.0,
        "noise_eval": 0.0,
        "first_last": "quantize",
        "seed": 0,
        "trials": 1,
        "init": "pretrained",
        "metrics": {"top1": top1, "fp_top1": 95.0, "gap_top1": 95.0 - top1},
        "refits": {"conv1": 1},
        "dataset_fingerprint": "abc",
        "code_version": "test",
        "wall_time_s": 1.0,
        "finished_at": "now",
    }


def test_write_load_and_refuse_overwrite(tmp_path):
    path = write_record(tmp_path, make_record("b"))
    write_record(tmp_path, make_record("a", scale="proxy"))
    assert path == record_path(tmp_path, "table1", "smoke", "b")
    assert [r["cell"] for r in load_records(tmp_path)] == ["a", "b"]  # sorted by (experiment, scale, cell)
    assert [r["cell"] for r in load_records(tmp_path, scale="proxy")] == ["a"]
    with pytest.raises(RecordExistsError, match="--force"):
        write_record(tmp_path, make_record("b", top1=10.0))
    assert json.loads(path.read_text())["metrics"]["top1"] == 90.0
    write_record(tmp_path, make_record("b", top1=10.0), overwrite=True)
    assert json.loads(path.read_text())["metrics"]["top1"] == 10.0
    assert not list(path.parent.glob("*.tmp"))


def test_incomplete_record_is_rejected(tmp_path):
    record = make_record()
    del record["metrics"]
    with pytest.raises(ValueError, match="metrics"):
        write_record(tmp_path, record)
    assert load_records(tmp_path) == []


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
