"""`python -m benchmarks plan`: the bill of a run (cells, float models, steps, images, GPU-hours)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.__main__ import main
from benchmarks.experiments import cells
from benchmarks.plan import THROUGHPUT, bill, render


def test_paper_table3_bill_counts_every_cell_and_step(tmp_path) -> None:
    frame = bill("table3", "paper", tmp_path).set_index("model")
    listed = cells("table3", "paper")
    for model in ("resnet18b", "resnet50b"):
        mine = [c for c in listed if c.model == model]
        steps = 90 * math.ceil(1_281_167 / 64)  # the paper's 90 epochs at batch 64 over ImageNet's train set
        assert frame.loc[model, "cells"] == len(mine)
        assert frame.loc[model, "float models"] == 0  # torchvision's weights: nothing to train
        assert frame.loc[model, "steps"] == len(mine) * steps
        assert frame.loc[model, "train images"] == len(mine) * steps * 64
        assert math.isnan(frame.loc[model, "GPU-hours"])
    assert "unknown" in render(frame.reset_index(), "table3", "paper", 8)


def test_methods_and_seeds_are_billed_as_run_lists_them(tmp_path) -> None:
    """A method the table lacks copies lloyd's cells (as `run` does); --seeds replaces the scale's seeds."""
    frame = bill("table3", "paper", tmp_path, methods=["lloyd", "uniform_maxabs"], seeds=[0, 1, 2])
    lloyd = sum(c.method == "lloyd" for c in cells("table3", "paper"))
    assert frame["cells"].sum() == 2 * lloyd * 3


def test_gpu_hours_come_from_the_measured_throughput(tmp_path) -> None:
    (tmp_path / THROUGHPUT).parent.mkdir(parents=True)
    rates = [{"model": "resnet18b", "device": "cuda:0", "images_per_s": 2000.0}]
    (tmp_path / THROUGHPUT).write_text(json.dumps(rates))
    frame = bill("table3", "paper", tmp_path).set_index("model")
    r18 = frame.loc["resnet18b"]
    assert r18["GPU-hours"] == pytest.approx(r18["train images"] / 2000.0 / 3600)
    assert math.isnan(frame.loc["resnet50b", "GPU-hours"])  # not measured: unknown, never guessed


def test_smoke_bill_counts_float_models_and_capped_batches(tmp_path) -> None:
    listed = cells("table1", "smoke")
    (row,) = bill("table1", "smoke", tmp_path).to_dict("records")
    recipe, fp = listed[0].recipe, listed[0].fp_recipe
    assert row["float models"] == len({c.seed for c in listed}) == 1
    assert row["steps"] == len(listed) * recipe.epochs * 2 + fp.epochs * 2  # max_batches=2 per epoch


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "nope"], "unknown method(s) nope"),
        (["--seeds", "0,x"], "--seeds takes comma-separated integers"),
        (["--plugin", "no_such_module"], "cannot import plugin"),
    ],
)
def test_plan_errors_are_one_line(args, message, capsys) -> None:
    assert main(["plan", "table3", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
