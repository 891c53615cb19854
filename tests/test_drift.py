"""`make drift` at smoke scale: PCM sweep points per trained cell, the figure and the table."""

import pytest

from benchmarks import runner
from benchmarks.experiments import cells
from cacim_core.noise import parse
from figures import drift


@pytest.mark.slow
def test_drift_smoke_run_and_render(tmp_path):
    written = runner.run("drift", "smoke", runner.RunOptions(results=tmp_path, progress=False))
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


def test_versus_is_the_paired_t_interval_by_seed():
    """lloyd_noise minus lloyd+NATS at one day, compensated, paired by seed: against scipy's paired t."""
    import pandas as pd
    from scipy import stats

    aware, nats = [90.0, 88.5, 91.0, 89.0], [89.0, 88.0, 89.5, 88.7]
    rows = [
        dict(method=m, noise_train=n, levels=4, t=drift.DAY, compensation=True, seed=s, mean=v)
        for m, n, values in (("lloyd_noise", 0.0, aware), ("lloyd", 0.02, nats))
        for s, v in enumerate(values)
    ]
    rows.append({**rows[0], "compensation": False, "mean": 10.0})  # uncompensated points are not compared
    lines = drift.versus(pd.DataFrame(rows))
    assert len(lines) == 2 and lines[1].startswith("Top-1 differences (A minus B): family of 1 test, Holm")
    diffs = [a - b for a, b in zip(aware, nats, strict=True)]
    lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=sum(diffs) / 4, scale=stats.sem(diffs))
    p = stats.ttest_rel(aware, nats).pvalue
    assert lines[0].startswith("lloyd_noise (NATS 0%) vs lloyd (NATS 2%), 4L, 1 day(s): ")
    assert p > 0.05  # scipy: 0.055, so the verdict must be inconclusive, with its power
    assert (
        f"inconclusive: +{sum(diffs) / 4:.2f} pt (95% CI {lo:+.2f}..{hi:+.2f}, n=4 seeds); power" in lines[0]
    )
