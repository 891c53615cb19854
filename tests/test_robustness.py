"""The robustness experiment: spec, a smoke run through the runner, resume, and the rendered figures."""

import csv

import pytest

from benchmarks import runner
from benchmarks.experiments import cells
from benchmarks.experiments.robustness import ADC_BITS, QUANTIZERS, STUCK, TEST_NOISES
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
    assert [d for d, b in sweep if b is None and not isinstance(d, str)] == list(TEST_NOISES)
    assert [b for _, b in sweep if b is not None] == list(ADC_BITS)
    assert [d for d, _ in sweep if isinstance(d, str)] == [
        f"stuck:gmin={f / 2:g},gmax={f / 2:g}" for f in STUCK
    ]
    assert all(c.trials == 5 and c.sweep == sweep for c in listed)


def test_smoke_run_resume_and_figures(tmp_path):
    written = runner.run("robustness", "smoke", results=tmp_path, progress=False)
    assert len(written) == 4
    for record in written:
        for point in record.sweep:
            top1 = point.metrics["top1"]
            assert 0 <= top1.mean <= 100 and top1.std >= 0
            assert (top1.n == 1) == (point.noise == 0)  # a noise-free point is one deterministic draw
        assert (0.02, 3) in {(p.noise, p.adc_bits) for p in record.sweep}  # the ADC point
    assert {r.recipe["noise_samples"] for r in written} == {1, 2}
    assert runner.run("robustness", "smoke", results=tmp_path, progress=False) == []  # finished: skipped
    paths = robustness.render(tmp_path, "smoke", tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "robustness.png",
            "robustness.pdf",
            "robustness_adc.png",
            "robustness_adc.pdf",
            "robustness_stuck.png",
            "robustness_stuck.pdf",
            "robustness.csv",
        ]
    )
    assert all(p.stat().st_size > 1000 for p in paths if p.suffix != ".csv")
    with open(tmp_path / "out" / "robustness.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 4 and {r["axis"] for r in rows} == {"noise", "adc", "stuck"}


def test_render_without_results_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="make robustness SCALE=proxy"):
        robustness.render(tmp_path, "proxy", tmp_path / "out")
    assert robustness.main(["--scale", "proxy", "--results", str(tmp_path), "--out", str(tmp_path)]) == 2
