"""`make bench-cell`'s breakdown on smoke cells: every part there, the parts add up to the instrumented run's
process time, and the cells per CPU-hour printed are 3600 over the CPU-s per cell printed."""

import re

import pytest

from benchmarks.backends import torch_loop
from benchmarks.cellbench import (
    CELL_PARTS,
    FLOAT_PARTS,
    NETWORKS,
    TRAIN_PARTS,
    breakdown,
    chosen_cell,
    mix_line,
    render,
)
from benchmarks.experiments import cells


def printed(pattern: str, text: str) -> tuple[float, ...]:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in {text!r}"
    return tuple(float(g) for g in found.groups())


@pytest.mark.parametrize(
    ("experiment", "arch"),
    # Table 1's noisy cell runs every part but BN re-estimation; Table 3's (which has it) are ~5 s each more
    [NETWORKS[0], *(pytest.param(*n, marks=pytest.mark.slow) for n in NETWORKS[1:])],
)
def test_breakdown_adds_up_to_the_cell(experiment, arch, tmp_path):
    cell, listed = chosen_cell(experiment, arch, "smoke"), cells(experiment, "smoke")
    backend = torch_loop.TorchLoop()
    b = breakdown(cell, listed, backend=backend)
    assert set(b.cpu) == set(CELL_PARTS) and set(b.wall) == set(CELL_PARTS)
    assert set(b.float_cpu) == set(FLOAT_PARTS) and set(b.float_wall) == set(FLOAT_PARTS)
    for seconds in (b.cpu, b.wall, b.float_cpu, b.float_wall, b.quantizer_cpu):
        assert all(s >= 0 for s in seconds.values()), seconds
    ran = [*TRAIN_PARTS, "clean evaluation", "final evaluation", "conversion (quantize_model)"]
    assert all(b.cpu[p] > 0 for p in ran) and all(b.float_cpu[p] > 0 for p in TRAIN_PARTS[:4])
    assert 0 < b.quantizer_cpu["forward"] < b.cpu["forward"]
    # smoke: the whole recipe ran (max_batches per epoch), nothing scaled
    assert b.steps == (cell.max_batches * cell.recipe.epochs,) * 2
    assert b.float_steps == (cell.max_batches * cell.fp_recipe.epochs,) * 2
    assert b.draws == (cell.trials if cell.noise_eval else 1)
    assert b.shared_by == sum((c.model, c.seed) == (cell.model, cell.seed) for c in listed)

    parts = sum(b.cpu.values()) + sum(b.float_cpu.values())
    assert parts == pytest.approx(b.measured_cpu, rel=0.05)  # the parts partition the instrumented run
    # (whether instrumenting changes the cost is a timing question: `make bench-cell`, not a test)

    text = render(b)
    total, rate = printed(r"this cell alone: 3600 / ([\d.]+) = ([\d.]+) cells per CPU-hour", text)
    assert total == pytest.approx(b.total_cpu, rel=1e-3)
    assert printed(r"\*\*cell total\*\* \| \*\*([\d.]+)\*\*", text)[0] == pytest.approx(total, abs=0.005)
    assert rate == pytest.approx(3600 / total, rel=1e-3)

    mean, line = mix_line(experiment, listed, {c.arch: b for c in listed})  # b stands in for every network
    shown, rate = printed(
        r"mean [\d.]+ CPU-s per cell -> 3600 / ([\d.]+) = ([\d.]+) cells per CPU-hour", line
    )
    assert shown == pytest.approx(mean, rel=1e-3) and rate == pytest.approx(3600 / shown, rel=1e-3)


def test_a_path_trains_the_way_it_names(monkeypatch):
    """`--paths channels_last` runs the cell and its float model in channels_last (the flag `make table3`
    would pass), and an unknown path is refused before any work."""
    from benchmarks import cellbench

    cell, listed = chosen_cell(*NETWORKS[0], "smoke"), cells(NETWORKS[0][0], "smoke")
    seen = []
    real_train = torch_loop.train

    def train(model, recipe, data, seed, ckpt, ctx, *args, **kwargs):
        seen.append(ctx.channels_last)
        return real_train(model, recipe, data, seed, ckpt, ctx, *args, **kwargs)

    monkeypatch.setattr(torch_loop, "train", train)
    b = breakdown(cell, listed, backend=torch_loop.TorchLoop(), path="channels_last")
    assert seen == [True, True]  # the float model and the cell
    assert sum(b.cpu.values()) + sum(b.float_cpu.values()) == pytest.approx(b.measured_cpu, rel=0.05)
    with pytest.raises(ValueError, match="unknown path 'nhwc'; known: fp32, channels_last"):
        breakdown(cell, listed, path="nhwc")
    assert set(cellbench.PATHS) == {"fp32", "channels_last"}
