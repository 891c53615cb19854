"""End-to-end: every table at smoke scale, resume after SIGKILL, plugins, CLI errors, paper recipes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bench_fixtures import write_cifar, write_imagenet

from benchmarks.__main__ import main
from benchmarks.backends.torch_loop import make_optimizer
from benchmarks.data import load_data, make_loader
from benchmarks.experiments import CONTROL, cells
from benchmarks.models import build_model
from benchmarks.results import checkpoint_path, load_records
from cacim_core import QuantConfig, quantize_model
from tables.render import load_spec, render

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("table", ["table1", "table2", "table3", "delta"])
@pytest.mark.slow
def test_smoke_table_runs_renders_and_skips_finished(table, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["run", table, "--scale", "smoke", "--results", str(results), "--no-progress"]) == 0
    records = load_records(results, table, "smoke")
    assert sorted(r.cell for r in records) == sorted(c.id for c in cells(table, "smoke"))
    for r in records:
        m = r.metrics
        assert 0 <= m["top1"].mean <= 100
        assert m["gap_top1"].mean == pytest.approx(m["fp_top1"].mean - m["top1"].mean)
        # the control arm has no quantized layer, so no re-fit counts
        assert bool(r.refits) == (r.method != CONTROL) and all(v >= 0 for v in r.refits.values())
        assert (m["top1"].n > 1) == (r.noise_eval > 0)
    md, _, out_csv = render(load_spec(table), "smoke", results, tmp_path / "out")
    text = md.read_text()
    assert "[smoke, " in text and "(paper, quoted)" in text
    ours = [line for line in text.splitlines() if line.startswith(("| Ours", "| delta"))]
    assert ours and not any("not run" in line for line in ours)
    capsys.readouterr()
    assert main(["run", table, "--scale", "smoke", "--results", str(results), "--no-progress"]) == 0
    assert f"{len(records)} already finished, 0 stale, 0 to run" in capsys.readouterr().err


def _run_cli(args: list[str], results: Path, **env: str) -> subprocess.Popen:
    """`benchmarks run` in a subprocess (extra environment variables: benchmarks.faults' hooks)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "run", *args, "--results", str(results), "--no-progress"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_sigkill_then_resume_writes_the_record_once(tmp_path):
    results = tmp_path / "results"
    (cell,) = cells("killtest", "smoke") if "killtest" in sys.modules else _plugin_cells()
    ckpt = checkpoint_path(results, "killtest", "smoke", cell.id)
    proc = _run_cli(["killtest", "--scale", "smoke", "--plugin", "cacim_test_plugin"], results)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file() and torch.load(ckpt, weights_only=False)["epoch"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=False)["epoch"]
    assert 3 <= killed_at < cell.recipe.epochs and load_records(results) == []

    proc = _run_cli(["killtest", "--scale", "smoke", "--plugin", "cacim_test_plugin"], results)
    assert proc.wait(timeout=300) == 0, proc.communicate()[1].decode()[-2000:]
    files = list((results / "killtest" / "smoke").glob("*.json"))
    assert len(files) == 1 and not ckpt.exists()
    (record,) = load_records(results)
    assert record.resumed and record.metrics["top1"].n == 2

    # A third run finds the cell finished and leaves the record untouched.
    before = files[0].read_bytes()
    proc = _run_cli(["killtest", "--scale", "smoke", "--plugin", "cacim_test_plugin"], results)
    assert proc.wait(timeout=120) == 0 and files[0].read_bytes() == before
    assert "1 already finished, 0 stale, 0 to run" in proc.communicate()[1].decode()


def _plugin_cells():
    import cacim_test_plugin  # noqa: F401  (registers the experiment)

    return cells("killtest", "smoke")


def test_plugin_quantizer_joins_table(tmp_path):
    results = tmp_path / "results"
    args = [
        "run",
        "table1",
        "--scale",
        "smoke",
        "--methods",
        "maxabs_grid",
        "--plugin",
        "cacim_test_plugin",
        "--results",
        str(results),
        "--no-progress",
    ]
    assert main(args) == 0
    records = load_records(results)
    assert {r.method for r in records} == {"maxabs_grid"}
    assert sorted((r.levels, r.noise_train) for r in records) == [
        (3, 0.0),
        (3, 0.01),
        (4, 0.0),
        (4, 0.01),
    ]
    md, _, _ = render(load_spec("table1"), "smoke", results, tmp_path / "out")
    rows = [line.split("|")[1].strip() for line in md.read_text().splitlines() if "(plugin)" in line]
    assert rows == [
        "maxabs_grid 3L (plugin)",
        "maxabs_grid 3L w/ 1% noise (plugin)",
        "maxabs_grid 4L (plugin)",
        "maxabs_grid 4L w/ 1% noise (plugin)",
    ]
    assert not any("not run" in line for line in md.read_text().splitlines() if "(plugin)" in line)


def test_cli_errors_are_one_line(tmp_path, capsys):
    def error(args: list[str]) -> str:
        assert main([*args, "--results", str(tmp_path / "r"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err

    assert "unknown method(s) nope" in error(["run", "table1", "--scale", "smoke", "--methods", "nope"])
    assert "--reset-head retrains" in error(["run", "table1", "--scale", "smoke", "--reset-head"])
    for plugin in (str(tmp_path / "nope.py"), "no_such_module"):
        assert "cannot import plugin" in error(["run", "table1", "--scale", "smoke", "--plugin", plugin])
    assert "cifar-10-batches-py" in error(["run", "table1", "--scale", "paper"])
    assert "unknown experiment" in error(["run", "table9", "--scale", "smoke"])
    write_imagenet(tmp_path / "imagenet")
    assert "resnet18-*.pth" in error(
        ["run", "table3", "--scale", "paper", "--data", str(tmp_path / "imagenet")]
    )
    assert not (tmp_path / "r").exists() or load_records(tmp_path / "r") == []


PAPER_LR = {  # the schedules of tables-clean.md: epoch -> learning rate
    "table1": {0: 0.1, 79: 0.1, 80: 0.01, 119: 0.01, 120: 0.001, 160: 0.0005, 199: 0.0005},
    "table2": {0: 0.002, 14: 0.002, 15: 0.001, 30: 0.0005, 199: 0.002 * 0.5**13},
    "table3": {0: 1e-4, 29: 1e-4, 30: 2e-5, 40: 4e-6, 44: 4e-6, 45: 2e-6, 50: 1e-6, 89: 4e-6 * 0.5**9},
}


@pytest.mark.parametrize("table", ["table1", "table2", "table3", "delta"])
@pytest.mark.slow
def test_paper_recipe_builds(table, tmp_path):
    """Model, quantizer, optimizer, schedule and data pipeline at paper scale, on tiny files; no training."""
    paper = cells(table, "paper")
    data_root = write_cifar(tmp_path) if paper[0].dataset.startswith("cifar10") else write_imagenet(tmp_path)
    data = load_data(paper[0].dataset, data_root)
    recipe = paper[0].recipe
    assert all(c.recipe == recipe for c in paper)
    for epoch, lr in PAPER_LR.get(table, PAPER_LR["table3"]).items():
        assert recipe.lr * recipe.schedule.factor(epoch) == pytest.approx(lr, rel=1e-9)
    assert recipe.epochs == {"table1": 200, "table2": 200}.get(table, 90)
    assert recipe.batch_size == {"table1": 128, "table2": 50}.get(table, 64)
    assert recipe.refit_threshold == {"table1": 1.5}.get(table, 0.1)
    assert (recipe.optimizer, recipe.loss) == (
        ("adam", "squared_hinge") if table == "table2" else ("sgd", "ce")
    )
    if table == "table3":
        assert {(c.arch, c.levels, c.first_last) for c in paper if c.method == "lloyd"} == {
            (a, v, f) for a in ("resnet18b", "resnet50b") for v in (3, 4, 8) for f in ("quantize", "fp")
        }
    if table == "delta":
        assert sorted(c.noise_train for c in paper) == [0.01, 0.02, 0.03, 0.04]
    cell = paper[0]
    model = build_model(cell.model, data.num_classes, data.input_size)
    quantize_model(
        model,
        QuantConfig(
            method=cell.method,
            levels=cell.levels,
            noise=cell.noise_train,
            first_last=cell.first_last,
            refit_threshold=recipe.refit_threshold,
        ),
    )
    optimizer = make_optimizer(recipe, model)
    assert optimizer.defaults["lr"] == recipe.lr and optimizer.defaults["weight_decay"] == recipe.weight_decay
    x, y = next(
        iter(
            make_loader(
                data.train, recipe.batch_size, train=True, seed=0, epoch=0, device=torch.device("cpu")
            )
        )
    )
    assert x.shape[1:] == (3, data.input_size, data.input_size) and x.shape[0] == min(
        recipe.batch_size, len(data.train)
    )
    if data.input_size == 32:  # the 224-px ResNets are only built; a CIFAR batch also runs forward
        assert model.eval()(x[:2]).shape == (2, data.num_classes)


def _one_twn_cell(results) -> list[str]:
    """CLI arguments of the smallest smoke run: Table 2's single TWN cell."""
    cell = ["run", "table2", "--scale", "smoke", "--methods", "twn"]
    return [*cell, "--results", str(results), "--no-progress"]


def test_stale_record_is_reported_not_skipped(tmp_path, capsys):
    args = _one_twn_cell(tmp_path)
    assert main(args) == 0
    (path,) = (tmp_path / "table2" / "smoke").glob("*.json")
    record = json.loads(path.read_text())
    record["recipe"]["epochs"] += 1
    path.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(args) == 2
    assert "another recipe" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert json.loads(path.read_text())["recipe"]["epochs"] == record["recipe"]["epochs"] - 1


@pytest.mark.slow
def test_torchrun_ddp_two_processes(tmp_path):
    """Under torchrun each process joins the group (gloo on CPU), DDP trains, rank 0 alone writes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29531",
        "-m",
        "benchmarks",
        "run",
        "table2",
        "--scale",
        "smoke",
        "--methods",
        "twn",
        "--results",
        str(tmp_path),
        "--no-progress",
        "--device",
        "cpu",  # gloo on CPU whatever GPUs the machine has
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = load_records(tmp_path)
    assert record.world_size == 2 and record.method == "twn" and 0 <= record.metrics["top1"].mean <= 100
    assert not list((tmp_path / "table2" / "smoke" / ".ckpt").glob("*.pt"))


def test_validation_split_keeps_the_last_epoch_at_the_best_validation_accuracy(tmp_path, monkeypatch):
    """Hou & Kwok's protocol (Table 2): the model kept is the last epoch whose validation accuracy is >= the
    best so far, not the last epoch."""
    from benchmarks.backends import Context, torch_loop
    from benchmarks.data import DataBundle, TensorImages
    from benchmarks.experiments import Recipe

    images, labels = torch.randn(64, 3, 8, 8), torch.arange(64) % 10
    data = DataBundle(
        TensorImages(images, labels),
        TensorImages(images, labels),
        10,
        8,
        "f",
        val=TensorImages(images, labels),
    )
    model = build_model("resnet20_narrow", 10, 8)
    seen, scores = [], iter([50.0, 70.0, 70.0, 60.0])

    def fake_accuracy(m, dataset, ctx, max_batches=None):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"top1": next(scores), "top5": 100.0}

    monkeypatch.setattr(torch_loop, "accuracy", fake_accuracy)
    ctx = Context("smoke", tmp_path, None, None, progress=False)
    torch_loop.train(
        model, Recipe(epochs=4, batch_size=16, lr=0.1), data, 0, tmp_path / "c.pt", ctx, False, "t"
    )
    kept = model.state_dict()
    assert all(torch.equal(kept[k], seen[2][k]) for k in kept)  # epoch 3: ties the best (70) and is later
    assert not all(torch.equal(kept[k], seen[3][k]) for k in kept if kept[k].is_floating_point())


@pytest.mark.slow
def test_two_runs_on_one_store_train_each_cell_once(tmp_path):
    """Two CLI runs started together share the store: every cell is trained by exactly one of them."""
    results = tmp_path / "results"
    args = ["table1", "--scale", "smoke", "--methods", "uniform,log2"]
    procs = [_run_cli(args, results) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    trained = [
        line.split()[2].rstrip(":")
        for err in errs
        for line in err.splitlines()
        if line.startswith("table1 [smoke] ")
    ]
    expected = sorted(c.id for c in cells("table1", "smoke", ["uniform", "log2"]))
    assert sorted(trained) == expected  # each once, none twice
    assert sorted(r.cell for r in load_records(results)) == expected


@pytest.mark.slow
def test_killed_run_is_finished_by_the_run_beside_it(tmp_path):
    """B finds the cell held by A and waits; A is SIGKILLed mid-cell; B takes the dead claim over and
    resumes the cell from A's checkpoint."""
    results = tmp_path / "results"
    import cacim_test_plugin

    (cell,) = cacim_test_plugin.slowkilltest("smoke")
    ckpt = checkpoint_path(results, "slowkilltest", "smoke", cell.id)
    args = ["slowkilltest", "--scale", "smoke", "--plugin", "cacim_test_plugin"]
    first = _run_cli(args, results)
    deadline = time.time() + 120
    while time.time() < deadline and not (
        ckpt.is_file() and torch.load(ckpt, weights_only=False)["epoch"] >= 2
    ):
        time.sleep(0.05)
    second = _run_cli(args, results)
    for line in iter(second.stderr.readline, b""):  # B has planned its cells: it now finds the claim held
        if b"to run" in line:
            break
    time.sleep(1.0)
    assert first.poll() is None and second.poll() is None, "the cell finished before the kill: make it longer"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert second.wait(timeout=600) == 0, second.communicate()[1].decode()[-2000:]
    (record,) = load_records(results)
    assert record.resumed and not ckpt.exists()


@pytest.mark.slow
def test_workers_and_submitit_local_launcher(tmp_path, capsys):
    results = tmp_path / "results"
    base = ["run", "table1", "--scale", "smoke", "--results", str(results), "--no-progress"]
    assert main([*base, "--methods", "uniform", "--workers", "2"]) == 0
    assert "2 workers" in capsys.readouterr().err
    assert sorted(r.method for r in load_records(results)) == ["uniform", "uniform"]
    assert main([*base, "--methods", "log2", "--launcher", "local", "--time", "10"]) == 0
    assert "submitted 2 job(s) to local" in capsys.readouterr().err
    assert sorted(r.method for r in load_records(results)) == ["log2", "log2", "uniform", "uniform"]


def test_bf16_autocast_and_channels_last_are_recorded(tmp_path):
    args = _one_twn_cell(tmp_path)
    assert main([*args, "--amp", "bf16", "--channels-last"]) == 0
    (record,) = load_records(tmp_path)
    assert record.precision == "bf16-autocast+channels_last" and 0 <= record.metrics["top1"].mean <= 100
