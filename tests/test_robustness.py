"""The robustness experiment: spec, a smoke run through the runner, resume, and the rendered figures."""

import csv
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import runner
from benchmarks.backends import SetupError
from benchmarks.experiments import Cell, Condition, cells, register_experiment
from benchmarks.experiments.robustness import (
    ADC_BITS,
    ADC_NOISE,
    DAC_ADC_BITS,
    DAC_BITS,
    IR_WIRES,
    QUANTIZERS,
    STUCK,
    TEST_NOISES,
    TILE_ADC_BITS,
    TILE_NOISE,
    TILES,
    dac,
    irdrop,
)
from benchmarks.results import Record, load_sweeps, write_record
from cacim_core import quantizers
from figures import robustness


def test_proxy_spec_covers_the_grid():
    listed = cells("robustness", "proxy")
    assert len({c.id for c in listed}) == len(listed)
    assert {c.levels for c in listed} == {3, 4, 8}
    for levels, methods in QUANTIZERS.items():
        assert set(methods) <= set(quantizers.names())
        assert {c.method for c in listed if c.levels == levels} == set(methods)
    lloyd3 = [c for c in listed if c.method == "lloyd" and c.levels == 3]
    assert {c.noise_train for c in lloyd3} == {0.0, 0.02, 0.05, 0.10}
    ha = [c for c in lloyd3 if c.recipe.noise_samples > 1]
    assert sorted(c.recipe.epochs * c.recipe.noise_samples for c in ha) == [4, 16]  # equal compute; steps
    sweep = listed[0].sweep
    circuit = [c for c in sweep if isinstance(c.noise, str) and "+" in c.noise]
    assert circuit == [Condition(irdrop(TILE_NOISE, r), tile=(t, t)) for t in TILES for r in IR_WIRES] + [
        Condition(dac(ADC_NOISE, b), DAC_ADC_BITS) for b in DAC_BITS
    ]
    assert Condition(ADC_NOISE, DAC_ADC_BITS) in sweep  # the DAC axis's "no DAC" point
    sweep = tuple(c for c in sweep if c not in circuit)
    untiled = [c for c in sweep if c.tile is None]
    assert [c.noise for c in untiled if c.adc_bits is None and not isinstance(c.noise, str)] == list(
        TEST_NOISES
    )
    assert [c.adc_bits for c in untiled if c.adc_bits is not None] == list(ADC_BITS)
    assert [c.noise for c in sweep if isinstance(c.noise, str)] == [
        f"stuck:gmin={f / 2:g},gmax={f / 2:g}" for f in STUCK
    ]
    tiled = [c for c in sweep if c.tile is not None]
    assert tiled == [Condition(TILE_NOISE, None, (t, t)) for t in TILES] + [
        Condition(ADC_NOISE, TILE_ADC_BITS, (t, t)) for t in TILES
    ]
    assert {c._replace(tile=None) for c in tiled} <= set(untiled)  # the whole layer: measured once, untiled
    assert all(c.trials == 5 and c.sweep == listed[0].sweep for c in listed)


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record]]:
    """The smoke robustness run, once for the tests that read it."""
    store = tmp_path_factory.mktemp("robustness")
    return store, runner.run("robustness", "smoke", runner.RunOptions(results=store, progress=False))


def test_smoke_run_resume_and_figures(smoke_store, tmp_path):
    store, written = smoke_store
    assert len(written) == 4
    for record in written:
        for point in record.sweep:
            top1 = point.metrics["top1"]
            assert 0 <= top1.mean <= 100 and top1.std >= 0
            assert (top1.n == 1) == (point.noise == 0)  # a noise-free point is one deterministic draw
        assert (0.02, 3) in {(p.noise, p.adc_bits) for p in record.sweep}  # the ADC point
        assert {p.condition for p in record.sweep if p.tile} == {
            (0.05, None, (64, 64)),
            (0.02, 3, (64, 64)),
            (irdrop(0.05, 1.0), None, (64, 64)),
        }
    assert {r.recipe["noise_samples"] for r in written} == {1, 2}
    assert (
        runner.run("robustness", "smoke", runner.RunOptions(results=store, progress=False)) == []
    )  # finished: skipped
    paths = robustness.render(store, "smoke", tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "robustness.png",
            "robustness.pdf",
            "robustness_adc.png",
            "robustness_adc.pdf",
            "robustness_stuck.png",
            "robustness_stuck.pdf",
            "robustness_tile.png",
            "robustness_tile.pdf",
            "robustness_tile_adc.png",
            "robustness_tile_adc.pdf",
            "robustness_dac.png",
            "robustness_dac.pdf",
            "robustness_irdrop_64.png",
            "robustness_irdrop_64.pdf",
            "robustness.csv",
        ]
    )
    assert all(p.stat().st_size > 1000 for p in paths if p.suffix != ".csv")
    assert {p.parent for p in paths} == {tmp_path / "out" / "smoke"}  # outputs are per scale
    with open(tmp_path / "out" / "smoke" / "robustness.csv") as f:
        rows = list(csv.DictReader(f))
    # per curve: noise 0 and 5%, ADC 3 bits, 2% stuck, each tile axis at 64 and the whole layer, IR drop
    # at 0 and 1 ohm on 64-row tiles, the DAC at 3 bits and none
    axes = {"noise", "adc", "stuck", "tile", "tile_adc", "irdrop_64", "dac"}
    assert len(rows) == 4 * 12 and {r["axis"] for r in rows} == axes
    for axis in ("tile", "tile_adc"):
        here = [r for r in rows if r["axis"] == axis]
        assert sorted({r["x"] for r in here}) == ["64.000", "inf"]
        assert all(r["seeds"] == "1" and r["draws"] == "2" and float(r["band"]) >= 0 for r in here)
    # the whole layer of a tile axis is the untiled point of the same condition: one measurement, two axes
    top1 = {(r["curve"], r["axis"], r["x"]): r["top1"] for r in rows}
    for curve in {r["curve"] for r in rows}:
        assert top1[(curve, "tile", "inf")] == top1[(curve, "noise", "5.000")]
        assert top1[(curve, "tile_adc", "inf")] == top1[(curve, "adc", "3.000")]
        assert top1[(curve, "irdrop_64", "0.000")] == top1[(curve, "tile", "64.000")]
        assert top1[(curve, "dac", "inf")] == top1[(curve, "adc", "3.000")]
        assert {x for c, a, x in top1 if c == curve and a == "dac"} == {"3.000", "inf"}
        assert {x for c, a, x in top1 if c == curve and a == "irdrop_64"} == {"0.000", "1.000"}


def test_tile_figure_draws_the_tile_axis(smoke_store, tmp_path):
    """One panel per (family, levels) with the tile sizes evenly spaced and the whole layer last."""
    sweeps = load_sweeps("robustness", "smoke", smoke_store[0])
    written, points = robustness.plot(sweeps, 90.0, "tile", "smoke", tmp_path / "tile")
    assert {p.suffix for p in written} == {".png", ".pdf"}
    assert sorted(points["x"].unique()) == [64.0, robustness.WHOLE]
    assert robustness._positions(points, "tile") == ({64.0: 0, robustness.WHOLE: 1}, ["64", "whole layer"])
    assert "test noise 5%" in robustness._title(sweeps, "tile")
    assert "3-bit ADC per tile" in robustness._title(sweeps, "tile_adc")
    assert "64x64 tiles" in robustness._title(sweeps, "irdrop_64")
    assert "3-bit ADC" in robustness._title(sweeps, "dac")
    points = robustness.curves(sweeps, "dac")
    assert robustness._positions(points, "dac") == ({3.0: 0, robustness.WHOLE: 1}, ["3", "no DAC"])


IDENTITY_SWEEP = [
    Condition(0.05),
    Condition(0.05, tile=(512, 512)),  # larger than every layer of resnet20_narrow (at most 32 x 288)
    Condition(0.05, tile=(32, 288)),  # exactly the largest layer
    Condition(ADC_NOISE, 3),
    Condition(ADC_NOISE, 3, (512, 512)),
    Condition(ADC_NOISE, 3, (8, 8)),  # real tiles: not the whole layer
]


@register_experiment("robustness_tile_identity")
def tile_identity(scale: str) -> list[Cell]:
    """The smoke Lloyd cell, evaluated whole-layer and on tiles at least as large as every layer."""
    cell = next(
        c for c in cells("robustness", "smoke") if c.method == "lloyd" and c.recipe.noise_samples == 1
    )
    return [replace(cell, experiment="robustness_tile_identity", sweep=tuple(IDENTITY_SWEEP))]


def test_tiles_as_large_as_every_layer_equal_the_whole_layer_bitwise(tmp_path):
    """Through the runner and the torch loop: same noise seed, same ADC calibration, same numbers."""
    (record,) = runner.run(
        "robustness_tile_identity", "smoke", runner.RunOptions(results=tmp_path, progress=False)
    )
    at = {p.condition: p.metrics for p in record.sweep}
    assert len(at) == len(IDENTITY_SWEEP)
    whole, adc = at[(0.05, None, None)], at[(ADC_NOISE, 3, None)]
    assert at[(0.05, None, (512, 512))] == whole and at[(0.05, None, (32, 288))] == whole
    assert at[(ADC_NOISE, 3, (512, 512))] == adc
    assert at[(ADC_NOISE, 3, (8, 8))] != adc
    assert whole["top1"].n == 2  # noisy: two chips, the same two at every tile size

    IDENTITY_SWEEP.append(Condition(0.05, tile=(64, 64)))  # the spec gains a point the record lacks
    try:
        with pytest.raises(SetupError, match="lacks 1 of the cell's 7 sweep points"):
            runner.run(
                "robustness_tile_identity", "smoke", runner.RunOptions(results=tmp_path, progress=False)
            )
    finally:
        IDENTITY_SWEEP.pop()


def test_render_without_results_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="make robustness SCALE=proxy"):
        robustness.render(tmp_path, "proxy", tmp_path / "out")
    assert robustness.main(["--scale", "proxy", "--results", str(tmp_path), "--out", str(tmp_path)]) == 2


def test_records_from_before_the_tile_axis_still_render(smoke_store, tmp_path, capsys):
    """A store written before the tile axis draws the other axes and names the command that adds it."""
    for record in smoke_store[1]:
        write_record(tmp_path, replace(record, sweep=[p for p in record.sweep if p.tile is None]))
    names = {p.name for p in robustness.render(tmp_path, "smoke", tmp_path / "out")}
    assert "robustness_stuck.png" in names and not any("tile" in n for n in names)
    err = capsys.readouterr().err
    assert "no tile sweep points" in err and "make robustness SCALE=smoke RERUN_STALE=1" in err
