"""`make drift` at smoke scale: PCM sweep points per trained cell, the figure and the table."""

from benchmarks import runner
from benchmarks.experiments import cells
from cacim_core.noise import parse
from figures import drift


def test_drift_smoke_run_and_render(tmp_path):
    written = runner.run("drift", "smoke", results=tmp_path, progress=False)
    assert len(written) == len(cells("drift", "smoke")) == 4
    for record in written:
        times = sorted(parse(p.noise).t for p in record.sweep)
        assert times == [1.0, 86400.0, 365 * 86400.0]
        for point in record.sweep:
            top1 = point.metrics["top1"]
            assert 0 <= top1.mean <= 100 and top1.n == 2  # two programmed chips per seed
    aware = [r for r in written if r.method == "lloyd_noise"]
    assert aware and all(r.options["quantizer_kwargs"]["noise"].startswith("pcm:") for r in aware)
    paths = drift.render(tmp_path, "smoke", tmp_path / "fig", tmp_path / "tab")
    assert {p.name for p in paths} == {"drift.png", "drift.pdf", "drift.md", "drift.csv"}
    text = (tmp_path / "tab" / "smoke" / "drift.md").read_text()
    assert "from 1 s to 1 day" in text and "n=2 seeds" in text
